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
        udp.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
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
