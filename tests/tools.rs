//! `tsecho bench` and `tsecho ping` against a real server: their output is
//! correct and parseable. No timings are asserted.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::process::Command;

use common::{ServeProcess, socket_path, tsecho_bin};

fn bench_json(url: &str, extra: &[&str]) -> serde_json::Value {
    let out = Command::new(tsecho_bin())
        .args([
            "bench",
            url,
            "--duration",
            "1",
            "--warmup",
            "0.2",
            "--conns",
            "4",
            "--json",
        ])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_clean_run(report: &serde_json::Value) {
    assert!(report["replies"].as_u64().unwrap() > 0, "{report}");
    for counter in ["errors", "mismatches", "lost"] {
        assert_eq!(report[counter].as_u64(), Some(0), "{counter} in {report}");
    }
    let p50 = report["p50_us"].as_f64().unwrap();
    let p99 = report["p99_us"].as_f64().unwrap();
    let max = report["max_us"].as_f64().unwrap();
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{report}");
    assert!(report["rps"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_reports_clean_runs_on_tcp_udp_and_unix() {
    let path = socket_path("bench");
    let server = ServeProcess::start(
        &[
            "-l",
            "tcp://127.0.0.1:0",
            "-l",
            "udp://127.0.0.1:0",
            "-l",
            &format!("unix://{}", path.display()),
        ],
        3,
    );
    let closed = bench_json(&format!("tcp://{}", server.addr(0)), &["--pipeline", "4"]);
    assert_clean_run(&closed);
    assert!(closed["send_lag"].is_null(), "{closed}");
    assert_clean_run(&bench_json(
        &format!("udp://{}", server.addr(1)),
        &["--pipeline", "4"],
    ));
    assert_clean_run(&bench_json(&format!("unix://{}", path.display()), &[]));
    let open = bench_json(&format!("tcp://{}", server.addr(0)), &["--rate", "2000"]);
    assert_clean_run(&open);
    assert_eq!(open["rate"].as_f64(), Some(2000.0));
    // How late requests left: reported for open loop, part of its latency.
    let lag = &open["send_lag"];
    let lag_p50 = lag["p50_us"].as_f64().unwrap();
    assert!(lag_p50 <= lag["max_us"].as_f64().unwrap(), "{open}");
    let open_udp = bench_json(&format!("udp://{}", server.addr(1)), &["--rate", "2000"]);
    assert_clean_run(&open_udp);
    assert!(open_udp["send_lag"]["p99_us"].is_f64(), "{open_udp}");
}

#[test]
fn bench_counts_replies_that_do_not_end_with_their_request() {
    // Raw framing answers pieces of 10 bytes: no reply line ends with its request.
    let server = ServeProcess::start(
        &[
            "-l",
            "tcp://127.0.0.1:0",
            "--framing",
            "raw",
            "--chunk",
            "10",
        ],
        1,
    );
    let report = bench_json(&format!("tcp://{}", server.addr(0)), &[]);
    assert!(report["mismatches"].as_u64().unwrap() > 0, "{report}");
}

#[test]
fn bench_table_has_the_summary_lines() {
    let server = ServeProcess::start(&["-l", "echo+tcp://127.0.0.1:0"], 1);
    let out = Command::new(tsecho_bin())
        .args([
            "bench",
            &format!("tcp://{}", server.addr(0)),
            "--duration",
            "0.5",
            "--warmup",
            "0",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "requests",
        "req/s",
        "MiB/s",
        "p50",
        "p99.9",
        "max",
        "mismatches 0",
    ] {
        assert!(text.contains(needle), "{needle} missing in:\n{text}");
    }
}

#[test]
fn ping_prints_probes_loss_and_clock_offset() {
    let server = ServeProcess::start(
        &[
            "-l",
            "tcp://127.0.0.1:0",
            "-l",
            "udp://127.0.0.1:0",
            "--format",
            "unix-us",
        ],
        2,
    );
    for url in [
        format!("tcp://{}", server.addr(0)),
        format!("udp://{}", server.addr(1)),
    ] {
        let out = Command::new(tsecho_bin())
            .args(["ping", &url, "-c", "3", "-i", "0.05"])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success(), "{text}");
        assert_eq!(text.matches("reply from").count(), 3, "{text}");
        assert!(
            text.contains("3 probes sent, 3 answered, 0% loss"),
            "{text}"
        );
        let offset_line = text
            .lines()
            .find(|l| l.starts_with("clock offset"))
            .unwrap();
        // Same machine, same clock: the offset is within its own uncertainty.
        let words: Vec<&str> = offset_line.split_whitespace().collect();
        let offset: f64 = words[2].parse().unwrap();
        let uncertainty: f64 = words[4].trim_start_matches('±').parse().unwrap();
        assert!(offset.abs() <= uncertainty + 1e-3, "{offset_line}");
    }
}

#[test]
fn ping_with_every_probe_lost_fails() {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    drop(sock);
    let out = Command::new(tsecho_bin())
        .args([
            "ping",
            &format!("udp://127.0.0.1:{port}"),
            "-c",
            "2",
            "-i",
            "0.05",
            "--timeout",
            "0.2",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("2 probes sent, 0 answered, 100% loss"),
        "{text}"
    );
}

/// Requests larger than the socket buffers, many in flight: the bench
/// reads replies while it writes, or it and an echo server that waits
/// for it to read would wait on each other until the run ends.
#[test]
fn bench_pipelines_requests_larger_than_the_socket_buffers() {
    let server = ServeProcess::start(&["-l", "echo+tcp://127.0.0.1:0"], 1);
    let report = bench_json(
        &format!("tcp://{}", server.addr(0)),
        &["--size", "1000000", "--pipeline", "16"],
    );
    assert_clean_run(&report);
}
