//! Measurement-grade time: kernel receive timestamps, the STAMP reflector
//! and sender (RFC 8762), the sockperf reflector, and ping's offsets.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::UdpSocket;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{ServeProcess, connect, wait_until_stopped};

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
        wait_until_stopped(server.child.id());
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

fn tsecho(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(common::tsecho_bin())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The relay, as a fault: every reply comes after its probe gave
/// up. Each is reported late; none is credited to the probe then waiting,
/// so no offset is made up from them.
#[test]
fn ping_reports_late_replies_and_credits_them_to_no_other_probe() {
    let server = ServeProcess::start(
        &[
            "--listen",
            "udp://127.0.0.1:0?delay=600ms",
            "--listen",
            "tcp://127.0.0.1:0?delay=600ms",
            "--format",
            "unix-us",
        ],
        2,
    );
    for url in [
        format!("udp://{}", server.addr(0)),
        format!("tcp://{}", server.addr(1)),
    ] {
        // Reply k is due at 0.4 k + 0.6 s, in a later probe's wait; the
        // last probe gives up at 1.6 s, so two are seen even on a slow CI.
        let (ok, text, _) = tsecho(&["ping", &url, "-c", "4", "-i", "10ms", "--timeout", "400ms"]);
        assert!(!ok, "nothing was answered in time: {text}");
        assert!(
            text.contains("4 probes sent, 0 answered, 100% loss"),
            "{text}"
        );
        assert!(text.matches("late reply from").count() >= 2, "{text}");
        assert!(!text.lines().any(|l| l.starts_with("reply from")), "{text}");
        assert!(!text.contains("clock offset"), "{text}");
    }
}

/// `one, two, three` through a UDP path that delays each reply past the
/// client's timeout: each line is printed with its own reply, in order,
/// and the extra replies of the resends are reported, not printed. Each
/// reply is due 100 ms into its line's second wait of 500 ms.
#[test]
fn the_udp_client_prints_each_line_with_its_own_reply() {
    let server = ServeProcess::start(&["--listen", "udp://127.0.0.1:0?delay=600ms"], 1);
    let url = format!("udp://{}", server.addr(0));
    let out = common::run_with_input(
        std::process::Command::new(common::tsecho_bin()).args([
            "client",
            &url,
            "--timeout",
            "500ms",
            "--retries",
            "1",
        ]),
        b"one\ntwo\nthree\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ends: Vec<&str> = stdout
        .lines()
        .map(|l| l.rsplit(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(ends, ["one", "two", "three"], "{stdout}\n{stderr}");
    assert!(
        stderr.contains("another reply to \"one\", ignored"),
        "{stderr}"
    );
}

/// Against echo and sockperf, whose replies hold no time: round trips,
/// and a plain statement that there is no offset.
#[test]
fn ping_without_timestamps_reports_round_trips_and_no_offset() {
    let server = ServeProcess::start(
        &[
            "--listen",
            "echo+udp://127.0.0.1:0",
            "--listen",
            "sockperf+tcp://127.0.0.1:0",
            "--listen",
            "sockperf+udp://127.0.0.1:0",
        ],
        3,
    );
    let urls = [
        format!("echo+udp://{}", server.addr(0)),
        format!("sockperf+tcp://{}", server.addr(1)),
        format!("sockperf+udp://{}", server.addr(2)),
    ];
    for url in urls {
        let (ok, text, _) = tsecho(&["ping", &url, "-c", "3", "-i", "10ms"]);
        assert!(ok, "{text}");
        assert!(
            text.contains("3 probes sent, 3 answered, 0% loss"),
            "{text}"
        );
        assert!(
            text.contains("no clock offset: the replies carry no timestamp"),
            "{text}"
        );
    }
}

/// A STAMP reflector written here from RFC 8762, whose clock runs 2.5 s
/// ahead and which holds each packet 5 ms: the sender leaves the 5 ms out
/// of the round trip, finds the offset and counts the hops.
#[test]
fn the_stamp_sender_measures_against_an_independent_reflector() {
    let reflector = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket2::SockRef::from(&reflector).set_ttl_v4(253).unwrap(); // 2 hops back
    let addr = reflector.local_addr().unwrap();
    let ahead = Duration::from_millis(2_500);
    let ntp = move |t: SystemTime| {
        let d = (t + ahead).duration_since(UNIX_EPOCH).unwrap();
        let fraction = ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000) as u32;
        let mut b = ((d.as_secs() + 2_208_988_800) as u32)
            .to_be_bytes()
            .to_vec();
        b.extend(fraction.to_be_bytes());
        b
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..3 {
            let (n, from) = reflector.recv_from(&mut buf).unwrap();
            let t2 = SystemTime::now();
            std::thread::sleep(Duration::from_millis(5));
            let mut r = vec![0u8; n];
            r[0..4].copy_from_slice(&buf[0..4]);
            r[12..14].copy_from_slice(&0x8001u16.to_be_bytes());
            r[16..24].copy_from_slice(&ntp(t2));
            r[24..36].copy_from_slice(&buf[0..12]);
            r[36..38].copy_from_slice(&buf[12..14]);
            r[40] = 250; // 5 hops on the way out
            r[4..12].copy_from_slice(&ntp(SystemTime::now()));
            reflector.send_to(&r, from).unwrap();
        }
    });
    let url = format!("rfc8762+udp://{addr}");
    let (ok, text, err) = tsecho(&["ping", &url, "-c", "3", "-i", "10ms", "--json"]);
    assert!(ok, "{text}{err}");
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["answered"], 3, "{report}");
    let offset = report["offset_s"].as_f64().unwrap();
    let uncertainty = report["offset_uncertainty_s"].as_f64().unwrap();
    assert!((offset - 2.5).abs() <= uncertainty + 1e-6, "{report}");
    assert!(
        report["reflector_residence_ms"]["min"].as_f64().unwrap() >= 5.0,
        "{report}"
    );
    assert!(report["rtt_ms"]["min"].as_f64().unwrap() < 5.0, "{report}");
    assert_eq!(report["hops_forward"], 5, "{report}");
    assert_eq!(report["hops_backward"], 2, "{report}");
    assert_eq!(report["loss_percent"], 0.0, "{report}");
}

/// libfaketime itself, preloaded the way the `faketime` command does it.
/// The command forks the program and waits: killing it, as a test's
/// server is killed, left the server running after the test.
fn libfaketime() -> Option<std::path::PathBuf> {
    let mut dirs = vec![
        std::path::PathBuf::from("/usr/lib/faketime"),
        std::path::PathBuf::from("/usr/local/lib/faketime"),
    ];
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        dirs.extend(entries.flatten().map(|entry| entry.path().join("faketime")));
    }
    dirs.into_iter()
        .map(|dir| dir.join("libfaketime.so.1"))
        .find(|lib| lib.exists())
}

/// A server whose clock libfaketime shifts (the user clock: libfaketime
/// shifts only the clock reads a process makes): ping's offset is within
/// its stated uncertainty of the shift, over TCP, UDP and STAMP.
#[test]
fn ping_finds_a_shifted_server_clock_within_its_uncertainty() {
    if !common::have_tool("faketime") {
        return;
    }
    let lib = libfaketime().expect("faketime is installed but libfaketime.so.1 is not");
    for shift in [2.5f64, -1.25] {
        let mut command = std::process::Command::new(common::tsecho_bin());
        command
            .env("LD_PRELOAD", &lib)
            .env("FAKETIME", format!("{shift:+}s"))
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .arg("serve")
            .args(["--stamp-clock", "user", "--format", "unix-us"])
            .args(["-l", "tcp://127.0.0.1:0", "-l", "udp://127.0.0.1:0"])
            .args(["-l", "rfc8762+udp://127.0.0.1:0"]);
        let server = ServeProcess::start_command(&mut command, "listening on ", 3);
        let urls = [
            format!("tcp://{}", server.addr(0)),
            format!("udp://{}", server.addr(1)),
            format!("rfc8762+udp://{}", server.addr(2)),
        ];
        for url in urls {
            let (ok, text, err) = tsecho(&["ping", &url, "-c", "3", "-i", "10ms", "--json"]);
            assert!(ok, "{url}: {text}{err}");
            let report: serde_json::Value = serde_json::from_str(&text).unwrap();
            let offset = report["offset_s"].as_f64().unwrap();
            let uncertainty = report["offset_uncertainty_s"].as_f64().unwrap();
            assert!(
                (offset - shift).abs() <= uncertainty + 1e-6,
                "{url}, shifted {shift}: {report}"
            );
        }
    }
}
