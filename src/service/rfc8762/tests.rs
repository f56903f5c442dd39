//! Written from RFC 8762's packet diagrams (§4.2.1, §4.3.1), with byte
//! offsets spelled out rather than taken from the module.

use super::*;

/// 2026-11-25 09:05:03.5 UTC.
fn t(nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(1_795_597_503, nanos)
}

fn clock() -> ClockQuality {
    ClockQuality {
        synchronised: true,
        error: Duration::from_micros(100),
        tai_offset: 37,
    }
}

#[test]
fn ntp_timestamps_count_from_1900_in_binary_fractions() {
    let bytes = Format::Ntp.encode(t(500_000_000), 0);
    assert_eq!(
        &bytes[..4],
        &(1_795_597_503u32 + 2_208_988_800).to_be_bytes()
    );
    assert_eq!(&bytes[4..], &0x8000_0000u32.to_be_bytes());
    assert_eq!(Format::Ntp.decode(&bytes, 0, t(0)), t(500_000_000));
}

#[test]
fn ptp_timestamps_count_tai_seconds_from_1970_and_nanoseconds() {
    let bytes = Format::Ptp.encode(t(123_456_789), 37);
    assert_eq!(&bytes[..4], &(1_795_597_503u32 + 37).to_be_bytes());
    assert_eq!(&bytes[4..], &123_456_789u32.to_be_bytes());
    assert_eq!(Format::Ptp.decode(&bytes, 37, t(0)), t(123_456_789));
}

#[test]
fn error_estimate_never_has_a_zero_multiplier_and_covers_the_error() {
    let field = error_estimate(clock(), Format::Ntp);
    assert_eq!(field & 0x8000, 0x8000, "S: synchronised");
    assert_eq!(field & 0x4000, 0, "Z: NTP");
    assert_ne!(field & 0xff, 0);
    let stated = stated_error(field);
    assert!(
        stated >= Duration::from_micros(100) && stated < Duration::from_micros(102),
        "{stated:?}"
    );
    let exact = ClockQuality {
        error: Duration::ZERO,
        synchronised: false,
        tai_offset: 0,
    };
    assert_eq!(error_estimate(exact, Format::Ptp), 0x4001);
}

fn sender_packet(len: usize, z: bool) -> Vec<u8> {
    let mut p = vec![0u8; len];
    p[0..4].copy_from_slice(&0xdead_beefu32.to_be_bytes()); // Sequence Number
    p[4..12].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]); // Timestamp
    p[12..14].copy_from_slice(&if z { 0xc001u16 } else { 0x8001u16 }.to_be_bytes());
    for (i, b) in p.iter_mut().enumerate().skip(44) {
        *b = i as u8; // padding, reflected as it came
    }
    p
}

#[test]
fn a_stateless_reflection_puts_every_field_at_its_offset() {
    for len in [44, 1000] {
        let request = sender_packet(len, false);
        let received = Received {
            at: t(250_000_000),
            ttl: Some(64),
            sequence: None,
        };
        let mut out = Vec::new();
        assert!(reflect(&request, received, clock(), &mut out));
        assert_eq!(out.len(), len, "as long as the sender's");
        assert_eq!(
            &out[0..4],
            &0xdead_beefu32.to_be_bytes(),
            "stateless: copied"
        );
        assert_eq!(
            &out[4..12],
            &Format::Ntp.encode(t(250_000_000), 0),
            "T3 not before T2"
        );
        assert_eq!(out[12] & 0xc0, 0x80, "S set, Z clear: NTP");
        assert_eq!(&out[14..16], &[0, 0], "MBZ");
        assert_eq!(
            &out[16..24],
            &Format::Ntp.encode(t(250_000_000), 0),
            "Receive Timestamp"
        );
        assert_eq!(
            &out[24..28],
            &0xdead_beefu32.to_be_bytes(),
            "Session-Sender Sequence Number"
        );
        assert_eq!(
            &out[28..36],
            &[1, 2, 3, 4, 5, 6, 7, 8],
            "Session-Sender Timestamp"
        );
        assert_eq!(
            &out[36..38],
            &0x8001u16.to_be_bytes(),
            "Session-Sender Error Estimate"
        );
        assert_eq!(&out[38..40], &[0, 0], "MBZ");
        assert_eq!(out[40], 64, "Ses-Sender TTL");
        assert_eq!(&out[41..44], &[0, 0, 0], "MBZ");
        assert_eq!(&out[44..], &request[44..], "padding as it came");
        write_transmit_time(&mut out, t(750_000_000), 0);
        assert_eq!(&out[4..12], &Format::Ntp.encode(t(750_000_000), 0), "T3");
    }
}

#[test]
fn stateful_sequence_and_ptp_on_request() {
    let request = sender_packet(44, true);
    let received = Received {
        at: t(0),
        ttl: None,
        sequence: Some(5),
    };
    let mut out = Vec::new();
    assert!(reflect(&request, received, clock(), &mut out));
    assert_eq!(
        &out[0..4],
        &5u32.to_be_bytes(),
        "the reflector's own sequence"
    );
    assert_eq!(out[12] & 0x40, 0x40, "Z set: PTPv2 asked for");
    assert_eq!(&out[16..20], &(1_795_597_503u32 + 37).to_be_bytes());
    assert_eq!(out[40], 255, "no TTL known: no hops claimed");
}

#[test]
fn short_packets_are_not_reflected() {
    let received = Received {
        at: t(0),
        ttl: None,
        sequence: None,
    };
    assert!(!reflect(&[0; 43], received, clock(), &mut Vec::new()));
}

#[test]
fn the_sender_reads_back_what_the_reflector_wrote() {
    let request = test_packet(9, t(100), clock(), Format::Ntp, 44);
    let received = Received {
        at: t(200_000),
        ttl: Some(255),
        sequence: Some(3),
    };
    let mut reply = Vec::new();
    reflect(&request, received, clock(), &mut reply);
    write_transmit_time(&mut reply, t(300_000), 0);
    let r = read_reflected(&reply, 0, t(0)).unwrap();
    assert_eq!((r.sequence, r.sender_sequence, r.sender_ttl), (3, 9, 255));
    let near = |a: SystemTime, b: SystemTime| {
        a.duration_since(b).unwrap_or_else(|e| e.duration()) < Duration::from_nanos(2)
    };
    assert!(
        near(r.sent, t(100)) && near(r.received, t(200_000)) && near(r.transmitted, t(300_000))
    );
    assert!(r.reflector_synchronised);
}
