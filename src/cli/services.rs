//! `tsecho services`: what each service does and where inetd puts it.

use std::io::Write;

use tsecho::service::SERVICES;

pub fn run() {
    // A closed pipe (| head) is not an error worth a panic.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<8} {:<9} {:<6} {:<75} DATAGRAM",
        "SERVICE", "RFC", "PORT", "STREAM"
    );
    for info in &SERVICES {
        let rfc = info
            .rfc
            .map(|n| format!("RFC {n}"))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<8} {:<9} {:<6} {:<75} {}",
            info.kind.name(),
            rfc,
            info.port,
            info.on_stream,
            info.on_datagram
        );
    }
}
