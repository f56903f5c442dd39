//! Daytime (RFC 867): the time as one line of text with CRLF.

use std::time::SystemTime;

use crate::clock::Stamper;

/// Appends the daytime line, `Wed Nov 25 09:05:03 2026\r\n` by default.
pub fn write_line(stamper: &mut Stamper, at: SystemTime, out: &mut Vec<u8>) {
    out.extend_from_slice(stamper.text(at));
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{TimeFormat, TimeStyle};
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn ctime_line_with_crlf() {
        let style = TimeStyle {
            format: TimeFormat::Ctime,
            utc: true,
        };
        let mut stamper = Stamper::new(Arc::new(style));
        let mut out = Vec::new();
        write_line(
            &mut stamper,
            UNIX_EPOCH + Duration::from_secs(1_795_597_503),
            &mut out,
        );
        assert_eq!(out, b"Wed Nov 25 09:05:03 2026\r\n");
    }
}
