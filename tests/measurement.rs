//! Measurement-grade time: kernel receive timestamps, the STAMP reflector
//! and sender (RFC 8762), the sockperf reflector, and ping's offsets.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{ServeProcess, connect};

fn unix_us(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

/// The microseconds in `[1795597503123456] ...`.
fn stamp_us(reply: &[u8]) -> i64 {
    let text = std::str::from_utf8(reply).unwrap();
    let inner = &text[1..text.find(']').unwrap()];
    inner.parse().unwrap()
}

/// The test: data sent while the server is stopped (SIGSTOP) and
/// read 300 ms later is stamped with its arrival by the kernel clock, and
/// with the late read by the user clock.
#[test]
fn kernel_stamps_tell_when_data_came_while_the_server_was_stopped() {
    for clock in ["kernel", "user"] {
        let server = ServeProcess::start(
            &[
                "--listen",
                "tcp://127.0.0.1:0",
                "--listen",
                "udp://127.0.0.1:0",
                "--format",
                "unix-us",
                "--stamp-clock",
                clock,
            ],
            2,
        );
        let tcp = connect(server.addr(0));
        let mut lines = BufReader::new(tcp.try_clone().unwrap());
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.connect(server.addr(1)).unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // One round trip each first: the connection is accepted and the
        // UDP thread is waiting.
        (&tcp).write_all(b"warm\n").unwrap();
        lines.read_line(&mut String::new()).unwrap();
        udp.send(b"warm").unwrap();
        udp.recv(&mut [0; 64]).unwrap();

        server.signal("STOP");
        let sent = unix_us(SystemTime::now());
        (&tcp).write_all(b"while stopped\n").unwrap();
        udp.send(b"while stopped").unwrap();
        std::thread::sleep(Duration::from_millis(300));
        server.signal("CONT");

        let mut reply = String::new();
        lines.read_line(&mut reply).unwrap();
        let tcp_late = stamp_us(reply.as_bytes()) - sent;
        let mut buf = [0; 64];
        let n = udp.recv(&mut buf).unwrap();
        let udp_late = stamp_us(&buf[..n]) - sent;
        if clock == "kernel" {
            for (what, late) in [("tcp", tcp_late), ("udp", udp_late)] {
                assert!(
                    (-1_000..5_000).contains(&late),
                    "{what}: kernel stamp {late} µs from the send"
                );
            }
        } else {
            for (what, late) in [("tcp", tcp_late), ("udp", udp_late)] {
                assert!(late >= 300_000, "{what}: user stamp only {late} µs late");
            }
        }
    }
}

/// Seconds since 1900 and a binary fraction, read as Unix microseconds.
fn ntp_us(bytes: &[u8]) -> i64 {
    let seconds = i64::from(u32::from_be_bytes(bytes[..4].try_into().unwrap()));
    let fraction = u64::from(u32::from_be_bytes(bytes[4..8].try_into().unwrap()));
    (seconds - 2_208_988_800) * 1_000_000 + ((fraction * 1_000_000) >> 32) as i64
}

fn stamp_reflector(url: &str) -> (ServeProcess, UdpSocket) {
    let server = ServeProcess::start(&["--listen", url], 1);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(server.addr(0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (server, sock)
}

/// A Session-Sender packet as RFC 8762 §4.2.1 draws it: sequence at 0,
/// timestamp at 4, error estimate at 12, zeroes to byte 44, then padding.
fn sender_packet(sequence: u32, len: usize) -> (Vec<u8>, i64) {
    let mut p = vec![0u8; len];
    p[0..4].copy_from_slice(&sequence.to_be_bytes());
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let fraction = ((u64::from(now.subsec_nanos()) << 32) / 1_000_000_000) as u32;
    p[4..8].copy_from_slice(&((now.as_secs() + 2_208_988_800) as u32).to_be_bytes());
    p[8..12].copy_from_slice(&fraction.to_be_bytes());
    p[12..14].copy_from_slice(&0x0001u16.to_be_bytes()); // unsynchronised, NTP, 2^-32 s
    for (i, b) in p.iter_mut().enumerate().skip(44) {
        *b = (i % 251) as u8;
    }
    (p, now.as_micros() as i64)
}

#[test]
fn stamp_reflector_fills_every_field_of_rfc_8762() {
    let (_server, sock) = stamp_reflector("rfc8762+udp://127.0.0.1:0");
    // Our packets leave with TTL 255, so the reflector must see 255 on
    // loopback (no router between).
    socket2::SockRef::from(&sock).set_ttl_v4(255).unwrap();
    for (sequence, len) in [(7u32, 44usize), (8, 1000)] {
        let (packet, t1) = sender_packet(sequence, len);
        sock.send(&packet).unwrap();
        let mut reply = [0u8; 2048];
        let n = sock.recv(&mut reply).unwrap();
        let t4 = unix_us(SystemTime::now());
        let reply = &reply[..n];
        assert_eq!(n, len, "the reflected packet is as long as the sender's");
        assert_eq!(&reply[0..4], &sequence.to_be_bytes(), "stateless: copied");
        let (t3, t2) = (ntp_us(&reply[4..12]), ntp_us(&reply[16..24]));
        assert!(
            t1 - 1_000 <= t2 && t2 <= t3 && t3 <= t4 + 1_000,
            "{t1} {t2} {t3} {t4}"
        );
        assert!(t4 - t1 < 10_000, "within 10 ms of our clock");
        assert_eq!(reply[12] & 0x40, 0, "Z: NTP, as the sender asked");
        assert_ne!(reply[13], 0, "the multiplier is never zero");
        assert_eq!(&reply[14..16], &[0, 0]);
        assert_eq!(&reply[24..28], &sequence.to_be_bytes());
        assert_eq!(&reply[28..36], &packet[4..12], "the sender's timestamp");
        assert_eq!(
            &reply[36..38],
            &packet[12..14],
            "the sender's error estimate"
        );
        assert_eq!(&reply[38..40], &[0, 0]);
        assert_eq!(reply[40], 255, "the TTL our packet arrived with");
        assert_eq!(&reply[41..44], &[0, 0, 0]);
        assert_eq!(&reply[44..], &packet[44..]);
    }
    // Shorter than the unauthenticated packet: no reply; the next is answered.
    sock.send(&[0; 43]).unwrap();
    sock.send(&sender_packet(9, 44).0).unwrap();
    let mut reply = [0u8; 64];
    sock.recv(&mut reply).unwrap();
    assert_eq!(&reply[0..4], &9u32.to_be_bytes());
}

#[test]
fn a_stateful_reflector_numbers_each_session_on_its_own() {
    let (server, first) = stamp_reflector("rfc8762+udp://127.0.0.1:0?mode=stateful");
    let second = UdpSocket::bind("127.0.0.1:0").unwrap();
    second.connect(server.addr(0)).unwrap();
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut seen = Vec::new();
    for (sock, sender_sequence) in [
        (&first, 100u32),
        (&first, 101),
        (&second, 500),
        (&first, 102),
    ] {
        sock.send(&sender_packet(sender_sequence, 44).0).unwrap();
        let mut reply = [0u8; 64];
        sock.recv(&mut reply).unwrap();
        assert_eq!(&reply[24..28], &sender_sequence.to_be_bytes());
        seen.push(u32::from_be_bytes(reply[0..4].try_into().unwrap()));
    }
    assert_eq!(seen, [0, 1, 0, 2]);
}

/// The number after `name` on the first line of sockperf's output that
/// holds `line`.
fn sockperf_field(text: &str, line: &str, name: &str) -> f64 {
    let found = text.lines().find(|l| l.contains(line));
    let found = found.unwrap_or_else(|| panic!("no {line:?} in: {text}"));
    let after = &found[found.find(line).unwrap()..];
    let after = &after[after.find(name).unwrap() + name.len()..];
    let number = after.trim_start().split([' ', ';']).next().unwrap();
    number
        .parse()
        .unwrap_or_else(|_| panic!("{number:?} in {found}"))
}

/// The Debian sockperf client against our reflector, TCP and UDP, at the
/// message sizes the issue names.
#[test]
fn sockperf_ping_pong_runs_against_tsecho_unchanged() {
    if !common::have_tool("sockperf") {
        return;
    }
    let server = ServeProcess::start(
        &[
            "--listen",
            "sockperf+tcp://127.0.0.1:0",
            "--listen",
            "sockperf+udp://127.0.0.1:0",
        ],
        2,
    );
    for (n, tcp) in [(0, true), (1, false)] {
        let addr = server.addr(n);
        for size in ["14", "1400"] {
            let mut command = std::process::Command::new("sockperf");
            command.args(["ping-pong", "-i", &addr.ip().to_string(), "-p"]);
            command.args([&addr.port().to_string(), "-t", "1", "--msg-size", size]);
            if tcp {
                command.arg("--tcp");
            }
            let out = command.output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{text}");
            let valid = sockperf_field(&text, "[Valid Duration]", "SentMessages=");
            let received = sockperf_field(&text, "[Valid Duration]", "ReceivedMessages=");
            assert!(
                valid > 100.0 && received == valid,
                "tcp={tcp} size={size}: {text}"
            );
            assert_eq!(
                sockperf_field(&text, "dropped messages", "dropped messages ="),
                0.0
            );
            let p99 = sockperf_field(&text, "percentile 99.000", "=");
            assert!(p99 > 0.0 && p99 < 50_000.0, "p99 {p99} µs: {text}");
        }
    }
}
