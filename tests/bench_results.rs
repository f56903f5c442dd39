//! `tsecho bench` results that combine exactly: the full histogram in
//! `--json`, `tsecho bench merge`, and `--start-at` lining workers up.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::process::Command;

use base64::Engine as _;
use common::{ServeProcess, tsecho_bin};
use hdrhistogram::Histogram;
use hdrhistogram::serialization::Deserializer;

/// `tsecho ARGS`, which must succeed, and the JSON object it printed.
fn json_of(command: &mut Command) -> serde_json::Value {
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn bench(url: &str, extra: &[&str]) -> serde_json::Value {
    json_of(
        Command::new(tsecho_bin())
            .args(["bench", url, "--conns", "4", "--warmup", "0s", "--json"])
            .args(extra),
    )
}

fn histogram(result: &serde_json::Value) -> Histogram<u64> {
    let text = result["histogram"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap();
    Deserializer::new().deserialize(&mut &bytes[..]).unwrap()
}

fn merge(files: &[&std::path::Path]) -> serde_json::Value {
    json_of(
        Command::new(tsecho_bin())
            .args(["bench", "merge", "--json"])
            .args(files),
    )
}

fn save(name: &str, result: &serde_json::Value) -> std::path::PathBuf {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}.json", std::process::id()));
    std::fs::write(&path, result.to_string()).unwrap();
    path
}

const QUANTILES: [(&str, f64); 4] = [
    ("p50_us", 0.5),
    ("p90_us", 0.9),
    ("p99_us", 0.99),
    ("p999_us", 0.999),
];

#[test]
fn merged_percentiles_equal_one_histogram_of_all_samples() {
    let server = ServeProcess::start(&["--listen", "tcp://127.0.0.1:0"], 1);
    let url = format!("tcp://{}", server.addr(0));
    let a = bench(&url, &["--duration", "1s"]);
    let b = bench(&url, &["--duration", "1s", "--pipeline", "4"]);
    let (pa, pb) = (save("merge-a", &a), save("merge-b", &b));

    let mut all = histogram(&a);
    all.add(histogram(&b)).unwrap();
    let merged = merge(&[&pa, &pb]);
    let merged_hist = histogram(&merged);
    assert_eq!(merged_hist, all);
    assert_eq!(merged["replies"].as_u64().unwrap(), all.len());
    for (key, q) in QUANTILES {
        assert_eq!(
            merged[key].as_f64().unwrap(),
            all.value_at_quantile(q) as f64 / 1000.0,
            "{key}"
        );
    }
    assert_eq!(
        merged["min_us"].as_f64().unwrap(),
        all.min() as f64 / 1000.0
    );
    assert_eq!(
        merged["max_us"].as_f64().unwrap(),
        all.max() as f64 / 1000.0
    );
    // The seconds add up to the whole.
    let per_second: u64 = merged["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["replies"].as_u64().unwrap())
        .sum();
    assert_eq!(per_second, all.len());
    assert_eq!(merged["workers"].as_array().unwrap().len(), 2);

    // With itself: every count doubles, every percentile stays.
    let twice = merge(&[&pa, &pa]);
    let twice_hist = histogram(&twice);
    assert_eq!(twice_hist.len(), 2 * histogram(&a).len());
    for (key, _) in QUANTILES {
        assert_eq!(twice[key], a[key], "{key}");
    }
    for (x, y) in histogram(&a)
        .iter_recorded()
        .zip(twice_hist.iter_recorded())
    {
        assert_eq!(2 * x.count_at_value(), y.count_at_value());
    }
}

/// Open-loop workers' send lags merge as exactly as their latencies; a
/// closed-loop worker beside them adds none.
#[test]
fn merged_send_lag_is_the_sum_of_the_workers_lags() {
    let server = ServeProcess::start(&["--listen", "tcp://127.0.0.1:0"], 1);
    let url = format!("tcp://{}", server.addr(0));
    let open = ["--rate", "400", "--duration", "0.5s"];
    let (a, b) = (bench(&url, &open), bench(&url, &open));
    let closed = bench(&url, &["--duration", "0.3s"]);
    assert!(closed["send_lag"].is_null(), "{closed}");
    let lag = |result: &serde_json::Value| histogram(&result["send_lag"]);
    let mut all = lag(&a);
    all.add(lag(&b)).unwrap();
    assert!(all.len() > 100, "{a}");

    let files = [
        save("lag-a", &a),
        save("lag-b", &b),
        save("lag-closed", &closed),
    ];
    let merged = merge(&files.iter().map(|p| p.as_path()).collect::<Vec<_>>());
    assert_eq!(lag(&merged), all);
    for (key, q) in [("p50_us", 0.5), ("p99_us", 0.99)] {
        assert_eq!(
            merged["send_lag"][key].as_f64().unwrap(),
            all.value_at_quantile(q) as f64 / 1000.0,
            "{key}"
        );
    }
}

#[test]
fn workers_given_the_same_start_measure_the_same_seconds() {
    let server = ServeProcess::start(&["--listen", "tcp://127.0.0.1:0"], 1);
    let url = format!("tcp://{}", server.addr(0));
    // Half past a second, 2-3 s ahead: both runs' ends fall mid-second,
    // far from a boundary, so they count the same seconds.
    let now = chrono::Utc::now().timestamp();
    let at = chrono::DateTime::from_timestamp(now + 2, 500_000_000).unwrap();
    let at = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let spawn = || {
        Command::new(tsecho_bin())
            .args(["bench", &url, "--conns", "2", "--warmup", "0s"])
            .args(["--duration", "2s", "--json", "--start-at", &at])
            .output()
            .unwrap()
    };
    let (first, second) = std::thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().unwrap(), b.join().unwrap())
    });
    let parse = |out: &std::process::Output| -> serde_json::Value {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let (a, b) = (parse(&first), parse(&second));
    let start = |r: &serde_json::Value| r["start_unix"].as_f64().unwrap();
    assert!(
        (start(&a) - start(&b)).abs() < 0.05,
        "{} vs {}",
        start(&a),
        start(&b)
    );
    let wanted = chrono::DateTime::parse_from_rfc3339(&at)
        .unwrap()
        .timestamp_millis() as f64
        / 1e3;
    assert!(
        (start(&a) - wanted).abs() < 0.05,
        "started {} for {wanted}",
        start(&a)
    );
    let seconds = |r: &serde_json::Value| -> Vec<u64> {
        r["intervals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["second"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(seconds(&a), seconds(&b));
}

#[test]
fn merge_refuses_what_is_not_a_bench_result() {
    let path = save("merge-bad", &serde_json::json!({"replies": 3}));
    let out = Command::new(tsecho_bin())
        .args(["bench", "merge"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("histogram"), "{err}");
}

/// An echo server of the test's own. `answered(i)` is called once the
/// `i`th line (from 0) of a connection has been echoed.
fn line_echo_server(answered: impl Fn(usize) + Clone + Send + 'static) -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let answered = answered.clone();
            std::thread::spawn(move || {
                let mut writer = conn.try_clone().unwrap();
                let mut line = Vec::new();
                let mut reader = BufReader::new(conn);
                let mut lines = 0;
                while reader.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                    if writer.write_all(&line).is_err() {
                        return;
                    }
                    line.clear();
                    answered(lines);
                    lines += 1;
                }
            });
        }
    });
    addr
}

/// An echo server that says when one connection has answered `n` lines:
/// the bench is then measuring (it runs with no warmup).
fn echo_server(n: usize) -> (std::net::SocketAddr, std::sync::mpsc::Receiver<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = line_echo_server(move |i| {
        if i + 1 == n {
            let _ = tx.send(());
        }
    });
    (addr, rx)
}

/// Open loop spreads `--rate` over the connections' schedules: with 4
/// connections at 20 requests a second, the connections' first requests
/// arrive about 50 ms apart (150 ms from first to last), not in one burst.
#[test]
fn open_loop_requests_of_many_connections_are_spaced_not_bursts() {
    use std::time::Instant;
    let (tx, first_lines) = std::sync::mpsc::channel();
    let addr = line_echo_server(move |i| {
        if i == 0 {
            let _ = tx.send(Instant::now());
        }
    });
    let result = bench(
        &format!("tcp://{addr}"),
        &["--rate", "20", "--duration", "0.5s", "--threads", "1"],
    );
    assert_eq!(result["errors"], 0, "{result}");
    let arrivals: Vec<Instant> = first_lines.try_iter().collect();
    assert_eq!(arrivals.len(), 4, "one first request per connection");
    let first = arrivals.iter().min().unwrap();
    let last = arrivals.iter().max().unwrap();
    let spread = last.duration_since(*first);
    assert!(
        spread >= std::time::Duration::from_millis(75),
        "the 4 connections' first requests arrived within {spread:?}"
    );
}

/// Ctrl-C keeps what was measured: the table (or --json) comes out,
/// marked as interrupted, with exit status 130.
#[test]
fn ctrl_c_prints_what_was_measured_so_far() {
    for json in [false, true] {
        let (addr, answered) = echo_server(200);
        let mut command = Command::new(tsecho_bin());
        command
            .args(["bench", &format!("tcp://{addr}"), "--conns", "1"])
            .args(["--warmup", "0s", "--duration", "60s"]);
        if json {
            command.arg("--json");
        }
        let child = command
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        answered
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap();
        let kill = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(130), "{stdout}");
        if json {
            let result: serde_json::Value = serde_json::from_str(&stdout).unwrap();
            assert_eq!(result["interrupted"], true);
            assert!(result["replies"].as_u64().unwrap() >= 1, "{result}");
            assert!(result["secs"].as_f64().unwrap() < 50.0);
        } else {
            assert!(
                stdout.starts_with("interrupted: what was measured"),
                "{stdout}"
            );
            assert!(stdout.contains("latency    p50"), "{stdout}");
        }
    }
}

/// The progress line shows on a terminal (a pseudo-terminal made by
/// script(1)) and never in piped output.
#[test]
fn progress_shows_on_a_terminal_only() {
    if !common::have_tool("script") {
        return;
    }
    let server = ServeProcess::start(&["--listen", "tcp://127.0.0.1:0"], 1);
    let url = format!("tcp://{}", server.addr(0));
    let args = format!(
        "{} bench {url} --conns 2 --warmup 0s --duration 2500ms",
        tsecho_bin()
    );
    let on_terminal = Command::new("script")
        .args(["-qec", &args, "/dev/null"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&on_terminal.stdout);
    assert!(on_terminal.status.success(), "{shown}");
    assert!(
        shown.contains("req/s  p99 ") && shown.contains(" s left"),
        "{shown}"
    );
    // The table starts on a line of its own.
    assert!(shown.contains("\r\x1b[2Ktsecho bench "), "{shown:?}");

    let piped = Command::new(tsecho_bin())
        .args([
            "bench",
            &url,
            "--conns",
            "2",
            "--warmup",
            "0s",
            "--duration",
            "1500ms",
        ])
        .output()
        .unwrap();
    let all = [piped.stdout, piped.stderr].concat();
    let all = String::from_utf8_lossy(&all);
    assert!(!all.contains(" s left") && !all.contains('\r'), "{all:?}");
}

/// Headless Chromium, as a user's browser would show a file: a screenshot,
/// or the DOM after the page loaded.
fn chromium(page: &std::path::Path, out: &str) -> std::process::Output {
    let profile = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "chromium-{}-{}",
        std::process::id(),
        page.display().to_string().len()
    ));
    Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
        ])
        .args(["--no-first-run", "--disable-background-networking"])
        .args([
            "--disable-component-update",
            "--disable-sync",
            "--window-size=900,1800",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(out)
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap()
}

fn screenshot_bytes(page: &std::path::Path) -> usize {
    let png = page.with_extension("png");
    let out = chromium(page, &format!("--screenshot={}", png.display()));
    assert!(png.exists(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::metadata(&png).unwrap().len() as usize
}

/// The report of a run and of a merge, in headless Chromium: the
/// screenshot is not blank (far larger than a blank page's), and the SVG
/// holds the percentile curve with one point per percentile the
/// histogram reports (HdrHistogram's distribution, 5 ticks per half).
#[test]
fn the_report_renders_in_headless_chromium() {
    if !common::have_tool("chromium") {
        return;
    }
    let server = ServeProcess::start(&["--listen", "tcp://127.0.0.1:0"], 1);
    let url = format!("tcp://{}", server.addr(0));
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let id = std::process::id();
    let run_page = dir.join(format!("report-run-{id}.html"));
    let run = bench(
        &url,
        &["--duration", "2s", "--report", run_page.to_str().unwrap()],
    );
    let other = bench(&url, &["--duration", "1s"]);
    let merge_page = dir.join(format!("report-merge-{id}.html"));
    let (pa, pb) = (save("report-a", &run), save("report-b", &other));
    json_of(
        Command::new(tsecho_bin())
            .args(["bench", "merge", "--json"])
            .args([&pa, &pb])
            .arg("--report")
            .arg(&merge_page),
    );
    let mut merged_hist = histogram(&run);
    merged_hist.add(histogram(&other)).unwrap();

    let blank = dir.join(format!("blank-{id}.html"));
    std::fs::write(&blank, "<!DOCTYPE html><html><body></body></html>").unwrap();
    let blank_size = screenshot_bytes(&blank);
    for (page, hist) in [(&run_page, histogram(&run)), (&merge_page, merged_hist)] {
        let size = screenshot_bytes(page);
        assert!(
            size > 4 * blank_size,
            "{size} bytes against {blank_size} for a blank page"
        );
        let dom = chromium(page, "--dump-dom");
        let dom = String::from_utf8_lossy(&dom.stdout);
        let reported = hist
            .iter_quantiles(5)
            .filter(|v| v.quantile_iterated_to() < 1.0)
            .count();
        let at = dom
            .find("id=\"percentile-curve\"")
            .expect("the percentile curve");
        let curve = &dom[at..dom[at..].find('>').map_or(dom.len(), |end| at + end)];
        let points = curve
            .split(" points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(points.split_whitespace().count(), reported, "{curve}");
        assert_eq!(dom.matches("class=\"pct\"").count(), reported);
    }
    assert!(
        std::fs::read_to_string(&merge_page)
            .unwrap()
            .contains("id=\"workers\"")
    );
}
