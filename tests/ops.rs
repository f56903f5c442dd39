//! Operating tsecho: metrics and health endpoints scraped with curl (and
//! checked by promtool), JSON logs, systemd readiness notifications, and
//! socket activation by systemd-socket-activate.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    ConfigFile, ServeProcess, curl, free_tcp_port, have_tool, metric, socket_path,
    split_ctime_stamp, tsecho_bin,
};

#[test]
fn metrics_count_what_was_sent_and_readyz_turns_503_while_draining() {
    if !have_tool("curl") {
        return;
    }
    let mut server = ServeProcess::start(
        &[
            "-l",
            "tcp://127.0.0.1:0",
            "-l",
            "udp://127.0.0.1:0",
            "--metrics",
            "tcp://127.0.0.1:0",
        ],
        2,
    );
    let base = server.metrics_base();

    let mut conn = common::connect(server.addr(0));
    conn.write_all(b"one\ntwo\nthree\n").unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    for _ in 0..3 {
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
    }
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    udp.send_to(b"dgram", server.addr(1)).unwrap();
    udp.recv(&mut [0; 128]).unwrap();

    let (code, body) = curl(&format!("{base}/metrics"));
    assert_eq!(code, 200);
    assert_eq!(metric(&body, "tsecho_stream_replies_total"), 3);
    assert_eq!(metric(&body, "tsecho_datagram_replies_total"), 1);
    assert_eq!(metric(&body, "tsecho_received_bytes_total"), 14 + 5);
    assert_eq!(metric(&body, "tsecho_connections_open"), 1);
    let tcp = format!("listener=\"tcp://{}\",service=\"stamp\"", server.addr(0));
    let udp = format!("listener=\"udp://{}\",service=\"stamp\"", server.addr(1));
    assert_eq!(
        metric(&body, &format!("tsecho_listener_replies_total{{{tcp}}}")),
        3
    );
    assert_eq!(
        metric(&body, &format!("tsecho_listener_replies_total{{{udp}}}")),
        1
    );
    assert_eq!(
        metric(
            &body,
            &format!("tsecho_listener_connections_accepted_total{{{tcp}}}")
        ),
        1
    );
    assert_eq!(
        metric(
            &body,
            &format!("tsecho_reply_latency_seconds_count{{{tcp}}}")
        ),
        3
    );
    assert_eq!(
        metric(
            &body,
            &format!("tsecho_reply_latency_seconds_bucket{{{tcp},le=\"+Inf\"}}")
        ),
        3
    );
    assert_eq!(
        metric(
            &body,
            &format!("tsecho_reply_latency_seconds_count{{{udp}}}")
        ),
        1
    );
    if have_tool("promtool") {
        let mut check = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        check
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = check.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(curl(&format!("{base}/healthz")).0, 200);
    assert_eq!(curl(&format!("{base}/readyz")).0, 200);

    // Our connection stays open, so the drain lingers over it a moment.
    server.signal("TERM");
    server.wait_for_log("stopping: draining");
    let (code, body) = curl(&format!("{base}/readyz"));
    assert_eq!((code, body.trim()), (503, "draining"));
    drop(conn);
    assert!(server.child.wait().unwrap().success());
}

/// Every line the server logs from start to stop is a JSON object.
#[test]
fn json_logs_are_one_object_per_line() {
    let mut server = ServeProcess::start(&["-l", "tcp://127.0.0.1:0", "--log-format", "json"], 1);
    server.signal("TERM");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status}");
    server.rest_of_stderr();
    let log = server.log_so_far().to_string();
    let records: Vec<serde_json::Value> = log
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
        })
        .collect();
    let messages: Vec<&str> = records
        .iter()
        .map(|r| r["fields"]["message"].as_str().unwrap())
        .collect();
    assert!(
        messages[0].starts_with("listening on tcp://127.0.0.1:"),
        "{messages:?}"
    );
    assert!(messages.contains(&"stopped"), "{messages:?}");
    assert!(records.iter().all(|r| r["level"].is_string()), "{log}");
}

/// A metrics endpoint that cannot be bound fails the start as a whole:
/// the Unix socket files bound before it are removed again.
#[tokio::test]
async fn failed_metrics_bind_removes_the_socket_files_already_made() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let path = common::socket_path("all-or-nothing");
    let options = tsecho::Options {
        metrics: Some(
            format!("tcp://{}", taken.local_addr().unwrap())
                .parse()
                .unwrap(),
        ),
        ..tsecho::Options::default()
    };
    let started = tsecho::Server::builder()
        .listen(&format!("unix://{}", path.display()))
        .unwrap()
        .options(options)
        .start()
        .await;
    let err = started.err().expect("the metrics port is taken");
    assert!(err.to_string().contains("address already in use"), "{err}");
    assert!(!path.exists(), "{} was left behind", path.display());
}

#[test]
fn sd_notify_reports_ready_watchdog_and_stopping() {
    let path = socket_path("notify");
    let notify = UnixDatagram::bind(&path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut child = Command::new(tsecho_bin())
        .args(["serve", "-l", "tcp://127.0.0.1:0"])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0; 256];
    let received = |buf: &mut [u8]| {
        let n = notify.recv(buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(received(&mut buf).starts_with("READY=1"));
    assert_eq!(received(&mut buf), "WATCHDOG=1");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    loop {
        let message = received(&mut buf);
        if message.starts_with("STOPPING=1") {
            break;
        }
        assert_eq!(message, "WATCHDOG=1");
    }
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_file(&path);
}

/// systemd-socket-activate binds, prints "Listening on ...", and execs
/// tsecho with the socket as fd 3 when the first client arrives.
fn socket_activated(extra: &[&str], port: u16) -> ServeProcess {
    ServeProcess::start_command(
        Command::new("systemd-socket-activate").args(extra).args([
            "-l",
            &format!("127.0.0.1:{port}"),
            tsecho_bin(),
            "serve",
        ]),
        "Listening on",
        1,
    )
}

#[test]
fn socket_activation_over_tcp_and_udp_with_named_services() {
    if !have_tool("systemd-socket-activate") {
        return;
    }
    let port = free_tcp_port();
    let tcp = socket_activated(&[], port);
    let mut conn = common::connect(("127.0.0.1", port));
    conn.write_all(b"activated\n").unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).unwrap();
    assert_eq!(split_ctime_stamp(&reply).1, b"activated\n");
    drop(tcp);

    let port = free_tcp_port();
    let udp = socket_activated(&["--datagram", "--fdname=echo"], port);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(b"echoed", SocketAddr::from(([127, 0, 0, 1], port)))
        .unwrap();
    let mut buf = [0; 64];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        b"echoed",
        "the fd name selected the echo service"
    );
    drop(udp);
}

#[test]
fn version_completions_and_man_page() {
    let out = Command::new(tsecho_bin())
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8(out.stdout).unwrap();
    assert!(
        version.starts_with("tsecho 0.") && version.contains("(git "),
        "{version}"
    );

    let out = Command::new(tsecho_bin())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains("_tsecho") && script.contains("--listen"));
    if have_tool("bash") {
        let path = socket_path("completion").with_extension("bash");
        std::fs::write(&path, &script).unwrap();
        let syntax = Command::new("bash").arg("-n").arg(&path).status().unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(syntax.success(), "bash -n rejects the completion script");
    }

    let out = Command::new(tsecho_bin()).arg("man").output().unwrap();
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH tsecho"),
        "{}",
        &page[..200.min(page.len())]
    );
}

fn first_reply(server: &ServeProcess) -> String {
    let mut conn = common::connect(server.addr(0));
    conn.write_all(b"x\n").unwrap();
    let mut reply = String::new();
    BufReader::new(conn).read_line(&mut reply).unwrap();
    reply
}

/// Pass: a config file sets listeners and options; the environment
/// overrides the file and a flag overrides both.
#[test]
fn config_file_with_env_and_flag_precedence() {
    let file = ConfigFile::new(
        "config",
        "listen = [\"tcp://127.0.0.1:0\"]\nformat = \"unix\"\nutc = true\n",
    );
    let config = file.path();

    let from_file = ServeProcess::start(&["--config", config], 1);
    let reply = first_reply(&from_file);
    let stamp = &reply[1..reply.find(']').unwrap()];
    assert!(stamp.parse::<u64>().is_ok(), "file says unix: {reply}");

    let from_env = ServeProcess::start_command(
        Command::new(tsecho_bin())
            .args(["serve", "--config", config])
            .env("TSECHO_FORMAT", "rfc3339"),
        "listening on ",
        1,
    );
    let reply = first_reply(&from_env);
    assert!(
        reply.starts_with("[20") && reply.contains("T") && reply.contains("Z]"),
        "env says rfc3339: {reply}"
    );

    let flagged = ServeProcess::start(&["--config", config, "--format", "ctime"], 1);
    common::split_ctime_stamp(first_reply(&flagged).as_bytes());

    let out = Command::new(tsecho_bin())
        .args(["check-config", config])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("format = \"unix\"  # config file"), "{text}");
    assert!(text.contains("utc = \"true\"  # config file"), "{text}");
}

#[test]
fn config_errors_name_the_file_and_line() {
    let file = ConfigFile::new(
        "bad-config",
        "listen = [\"tcp://127.0.0.1:0\"]\n\nmax-line = \"lots\"\n",
    );
    let out = Command::new(tsecho_bin())
        .args(["check-config", file.path()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(&format!("{}:3: max-line", file.path())),
        "{stderr}"
    );

    file.write("listen = [\"tcp://127.0.0.1:0\"]\nnot-a-flag = 1\n");
    let out = Command::new(tsecho_bin())
        .args(["serve", "--config", file.path()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains(":2: unknown setting \"not-a-flag\""),
        "{stderr}"
    );
}

#[test]
fn log_connections_writes_one_json_line_per_closed_connection() {
    let mut server = ServeProcess::start(
        &[
            "-l",
            "tcp://127.0.0.1:0",
            "--log-connections",
            "--log-format",
            "json",
        ],
        1,
    );
    let mut conn = common::connect(server.addr(0));
    let me = conn.local_addr().unwrap();
    conn.write_all(b"one\ntwo\n").unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut replies = String::new();
    conn.read_to_string(&mut replies).unwrap();
    let line = server.wait_for_log("connection closed");
    let record: serde_json::Value = serde_json::from_str(&line).unwrap();
    let fields = &record["fields"];
    assert_eq!(fields["peer"], me.to_string());
    assert_eq!(fields["replies"], 2);
    assert_eq!(fields["bytes_in"], 8);
    assert_eq!(fields["bytes_out"].as_u64(), Some(replies.len() as u64));
    assert_eq!(fields["service"], "stamp");
    assert!(
        fields["listener"]
            .as_str()
            .unwrap()
            .starts_with("tcp://127.0.0.1:")
    );
}

/// The Kubernetes manifests against the API schemas (kubernetes-validate,
/// from PyPI, bundles them), strictly: unknown fields are errors.
#[test]
fn k8s_manifests_pass_schema_validation() {
    if !have_tool("kubernetes-validate") {
        return;
    }
    let manifests = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/k8s");
    let files: Vec<_> = std::fs::read_dir(manifests)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    assert!(files.len() >= 2);
    let out = Command::new("kubernetes-validate")
        .arg("--strict")
        .args(&files)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{report}");
    assert_eq!(report.matches("passed").count(), files.len(), "{report}");
}

/// `tsecho ARGS` with extra environment: (exit code, stdout, stderr).
fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(tsecho_bin())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Settings mistakes exit 64 with one line that names where the value came
/// from: the variable, or the file and line.
#[test]
fn settings_errors_are_one_line_naming_their_source() {
    let good_file = ConfigFile::new(
        "good-config",
        "listen = [\"tcp://127.0.0.1:0\"]\nlog-level = \"debug\"\nlog-format = \"json\"\n",
    );
    let good = good_file.path();
    let (code, stdout, stderr) = run_with_env(&["check-config", good], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("log-level = \"debug\"  # config file"),
        "{stdout}"
    );

    let bad_env = [("TSECHO_MAX_LINE", "abc")];
    for args in [&["check-config", good][..], &["serve", "--config", good]] {
        let (code, stdout, stderr) = run_with_env(args, &bad_env);
        assert_eq!(code, 64, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("tsecho: TSECHO_MAX_LINE=\"abc\": "),
            "{stderr}"
        );
    }

    let (code, _, stderr) = run_with_env(&["serve", "--threads", "0"], &[]);
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("at least 1"), "{stderr}");

    let bad = ConfigFile::new("bad-listen", "# listeners\nlisten = 21680\n");
    let (code, _, stderr) = run_with_env(&["check-config", bad.path()], &[]);
    assert_eq!(code, 64, "{stderr}");
    assert!(
        stderr.starts_with(&format!("tsecho: {}:2: listen: ", bad.path())),
        "{stderr}"
    );
}

/// A PROXY listener with nobody trusted would refuse everyone: say so.
#[test]
fn proxy_listener_without_trusted_peers_is_warned_about() {
    let server = ServeProcess::start(&["-l", "proxy+tcp://127.0.0.1:0"], 1);
    assert!(
        server.log_so_far().contains("--proxy-trusted is empty"),
        "{}",
        server.log_so_far()
    );
}
