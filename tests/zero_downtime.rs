//! Zero downtime: reloading the config file on SIGHUP, handing the
//! listening sockets to a new process (`--control`, `--takeover`) under
//! load, the shutdown delay, and what every signal does to the process and
//! its socket files.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{ConfigFile, ServeProcess, curl, have_tool, metric, socket_path, tsecho_bin};

/// One line over a new connection: the reply.
fn ask_tcp(addr: SocketAddr, line: &str) -> String {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    ask_on(&mut conn, line)
}

/// One line over an open connection: the reply.
fn ask_on(conn: &mut TcpStream, line: &str) -> String {
    conn.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(conn.try_clone().unwrap())
        .read_line(&mut reply)
        .unwrap();
    reply
}

/// `tsecho client URL` with `input` piped in.
fn client(url: &str, input: &[u8]) -> std::process::Output {
    common::run_with_input(Command::new(tsecho_bin()).args(["client", url]), input)
}

/// `2026-12-03T10:09:49+00:00` rather than `Thu Dec  3 10:09:49 2026`.
fn is_rfc3339_stamp(reply: &str) -> bool {
    reply.len() > 21 && reply.as_bytes()[5] == b'-' && reply.as_bytes()[11] == b'T'
}

fn is_ctime_stamp(reply: &str) -> bool {
    reply.len() > 26 && reply.as_bytes()[4] == b' ' && reply.as_bytes()[25] == b']'
}

/// The address in a "listening on URL" log line.
fn address_in(line: &str) -> SocketAddr {
    let url = line.split("listening on ").nth(1).unwrap();
    let url = url.split_whitespace().next().unwrap();
    url.split_once("://").unwrap().1.parse().unwrap()
}

/// Pass: after SIGHUP, connections opened before keep being served and
/// their next replies are in the new format, new connections too, the
/// listener added answers; a broken file then changes nothing, is logged
/// with its file and line, and counted.
#[test]
fn reload_applies_format_and_listeners_and_a_broken_file_changes_nothing() {
    let config = ConfigFile::new(
        "reload",
        "listen = [\"tcp://127.0.0.1:0\", \"udp://127.0.0.1:0\"]\nmetrics = \"tcp://127.0.0.1:0\"\n",
    );
    let mut server = ServeProcess::start(&["--config", config.path()], 2);
    let base = server.metrics_base();
    let (tcp, udp) = (server.addr(0), server.addr(1));
    let mut before = TcpStream::connect(tcp).unwrap();
    before
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert!(is_ctime_stamp(&ask_on(&mut before, "before")));

    config.write(
        "listen = [\"tcp://127.0.0.1:0\", \"udp://127.0.0.1:0\", \"echo+tcp://127.0.0.1:0\"]\n\
         metrics = \"tcp://127.0.0.1:0\"\nformat = \"rfc3339\"\n",
    );
    server.signal("HUP");
    let added = server.wait_for_log("listening on echo+tcp://");
    server.wait_for_log("configuration reloaded from");
    let old_conn_reply = ask_on(&mut before, "same connection");
    assert!(is_rfc3339_stamp(&old_conn_reply), "{old_conn_reply:?}");
    assert!(old_conn_reply.ends_with("] same connection\n"));
    assert!(is_rfc3339_stamp(&ask_tcp(tcp, "new connection")));
    assert_eq!(ask_tcp(address_in(&added), "echoed"), "echoed\n");
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(b"datagram", udp).unwrap();
    let mut buf = [0; 200];
    let n = sock.recv(&mut buf).unwrap();
    assert!(is_rfc3339_stamp(&String::from_utf8_lossy(&buf[..n])));

    config.write("format = \"ctime\"\nlisten = 7\n");
    server.signal("HUP");
    let failed = server.wait_for_log("failed, nothing changed");
    assert!(
        failed.contains(&format!("{}:2:", config.path())),
        "{failed}"
    );
    assert!(is_rfc3339_stamp(&ask_on(&mut before, "still served")));
    let (_, body) = curl(&format!("{base}/metrics"));
    assert_eq!(
        metric(&body, "tsecho_config_reloads_total{result=\"ok\"}"),
        1
    );
    assert_eq!(
        metric(&body, "tsecho_config_reloads_total{result=\"error\"}"),
        1
    );
}

/// Pass: a listener removed from the file stops accepting and its open
/// connection is drained (answered, then closed), while the others serve on.
#[test]
fn reload_removing_a_listener_drains_it() {
    let config = ConfigFile::new(
        "reload-remove",
        "listen = [\"tcp://127.0.0.1:0\", \"echo+tcp://127.0.0.1:0\"]\n",
    );
    let mut server = ServeProcess::start(&["--config", config.path()], 2);
    let (stamp, echo) = (server.addr(0), server.addr(1));
    let mut open = TcpStream::connect(echo).unwrap();
    open.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(ask_on(&mut open, "one"), "one\n");
    config.write("listen = [\"tcp://127.0.0.1:0\"]\n");
    server.signal("HUP");
    server.wait_for_log("stopped listening on echo+tcp://");
    server.wait_for_log("configuration reloaded from");
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut open, &mut rest).unwrap();
    assert_eq!(rest, "", "a drained connection ends cleanly");
    assert!(TcpStream::connect(echo).is_err());
    assert!(is_ctime_stamp(&ask_tcp(stamp, "still here")));
}

/// Pass: SIGHUP without --config is logged, and the server serves on.
#[test]
fn sighup_without_config_is_logged_and_the_server_lives() {
    let mut server = ServeProcess::start(&["--listen", "tcp://127.0.0.1:0"], 1);
    server.signal("HUP");
    server.wait_for_log("no --config file to read again");
    assert!(is_ctime_stamp(&ask_tcp(server.addr(0), "alive")));
    assert!(server.child.try_wait().unwrap().is_none());
}

/// Pass: SIGUSR1 and SIGUSR2 are logged and ignored; SIGQUIT stops the
/// server at once, exit 0, and its socket files are gone.
#[test]
fn user_signals_are_ignored_and_sigquit_removes_socket_files() {
    let stream = socket_path("quit-stream");
    let gram = socket_path("quit-gram");
    let mut server = ServeProcess::start(
        &[
            "--listen",
            &format!("unix://{}", stream.display()),
            "--listen",
            &format!("unixgram://{}", gram.display()),
        ],
        2,
    );
    for signal in ["USR1", "USR2"] {
        server.signal(signal);
        server.wait_for_log(&format!("SIG{signal} ignored"));
    }
    assert!(stream.exists() && gram.exists());
    server.signal("QUIT");
    server.rest_of_stderr();
    assert!(server.child.wait().unwrap().success());
    assert!(!stream.exists(), "the stream socket file is left behind");
    assert!(!gram.exists(), "the datagram socket file is left behind");
}

/// Pass: for the shutdown delay after SIGTERM, /readyz answers 503 and new
/// connections are still served; the drain comes no sooner than the delay.
#[test]
fn shutdown_delay_keeps_serving_with_readyz_503() {
    if !have_tool("curl") {
        return;
    }
    let mut server = ServeProcess::start(
        &[
            "--listen",
            "tcp://127.0.0.1:0",
            "--metrics",
            "tcp://127.0.0.1:0",
            "--shutdown-delay",
            "2s",
        ],
        1,
    );
    let base = server.metrics_base();
    assert_eq!(curl(&format!("{base}/readyz")).0, 200);
    let asked = Instant::now();
    server.signal("TERM");
    server.wait_for_log("before the drain; /readyz answers 503");
    assert_eq!(curl(&format!("{base}/readyz")).0, 503);
    assert!(is_ctime_stamp(&ask_tcp(server.addr(0), "during the delay")));
    server.wait_for_log("stopping: draining connections");
    assert!(
        asked.elapsed() >= Duration::from_secs(2),
        "drained after {:?}",
        asked.elapsed()
    );
    server.rest_of_stderr();
    assert!(server.child.wait().unwrap().success());
}

/// Pass: --takeover of a control socket nobody serves is one line, exit 69.
#[test]
fn takeover_without_a_server_is_one_line_and_exit_69() {
    let control = socket_path("nobody-control");
    let out = Command::new(tsecho_bin())
        .args(["serve", "--listen", "tcp://127.0.0.1:0", "--takeover"])
        .arg(&control)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot take over from"), "{stderr}");
}

/// Pass: socket files get the mode and group their URL asks for; the
/// control socket is 0600 whatever the umask.
#[test]
fn socket_files_take_mode_and_group_from_the_url() {
    let stream = socket_path("mode-stream");
    let gram = socket_path("mode-gram");
    let control = socket_path("mode-control");
    // A group this process is not in, by number: root may give it away.
    let group = 65534;
    let server = ServeProcess::start(
        &[
            "--listen",
            &format!("unix://{}?mode=0660&group={group}", stream.display()),
            "--listen",
            &format!("unixgram://{}?mode=0620", gram.display()),
            "--control",
            &format!("unix://{}", control.display()),
        ],
        2,
    );
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&stream), 0o660);
    assert_eq!(std::fs::metadata(&stream).unwrap().gid(), group);
    assert_eq!(mode(&gram), 0o620);
    assert_eq!(mode(&control), 0o600);
    let out = client(&format!("unix://{}", stream.display()), b"x\n");
    drop(server);
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("] x\n"));
}

/// Pass: SIGHUP tells systemd RELOADING=1 with MONOTONIC_USEC, then READY=1.
#[test]
fn reload_is_announced_to_systemd() {
    let path = socket_path("notify-reload");
    let notify = UnixDatagram::bind(&path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let config = ConfigFile::new("notify-reload", "listen = [\"tcp://127.0.0.1:0\"]\n");
    let mut child = Command::new(tsecho_bin())
        .args(["serve", "--config", config.path()])
        .env("NOTIFY_SOCKET", &path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0; 256];
    let mut received = || {
        let n = notify.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(received().starts_with("READY=1"));
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    let reloading = received();
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading}"
    );
    let usec: u64 = reloading.lines().nth(1).unwrap()["MONOTONIC_USEC=".len()..]
        .parse()
        .unwrap();
    assert!(usec > 0);
    assert!(received().starts_with("READY=1"));
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&path);
}

/// Pass: a new process that cannot start (its extra listener's port is
/// taken) exits with an error, and the old one serves on untouched, its
/// socket file in place.
#[test]
fn a_takeover_that_fails_leaves_the_old_server_serving() {
    let control = socket_path("failed-takeover");
    let file = socket_path("failed-takeover-stream");
    let unix = format!("unix://{}", file.display());
    let control_url = format!("unix://{}", control.display());
    let old = ServeProcess::start(
        &[
            "--listen",
            "tcp://127.0.0.1:0",
            "--listen",
            &unix,
            "--control",
            &control_url,
        ],
        2,
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = format!("tcp://{}", taken.local_addr().unwrap());
    let out = Command::new(tsecho_bin())
        .args(["serve", "--listen", "tcp://127.0.0.1:0", "--listen", &unix])
        .args(["--listen", &busy, "--control", &control_url, "--takeover"])
        .arg(&control)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(69),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(file.exists() && control.exists());
    assert!(is_ctime_stamp(&ask_tcp(old.addr(0), "old one serves")));
    let reply = client(&unix, b"over unix\n");
    assert!(String::from_utf8_lossy(&reply.stdout).ends_with("] over unix\n"));
}

/// Counts of one load thread.
#[derive(Debug, Default)]
struct Counts {
    sent: u64,
    answered: u64,
    failed_connects: u64,
    unanswered: Vec<String>,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        self.sent += other.sent;
        self.answered += other.answered;
        self.failed_connects += other.failed_connects;
        self.unanswered.extend(other.unanswered);
    }
}

/// Waits until the `n`-th tick of `interval` since `start`: a paced load.
fn pace(start: Instant, n: u64, interval: Duration) {
    let due = start + interval * n as u32;
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

/// The load's progress, shared by its threads and the test.
#[derive(Default)]
struct Progress {
    stop: AtomicBool,
    answered: AtomicU64,
}

impl Progress {
    fn answered(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
    }

    /// Returns once `more` replies came since now (the load runs through
    /// each upgrade rather than past all of them in a moment).
    fn wait_for(&self, more: u64) {
        let target = self.answered.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.answered.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < deadline,
                "the load stopped getting replies"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// New TCP connections at `per_second`, one line and its reply each.
fn tcp_load(addr: SocketAddr, per_second: u64, progress: Arc<Progress>) -> Counts {
    let mut counts = Counts::default();
    let start = Instant::now();
    let interval = Duration::from_secs(1) / per_second as u32;
    let mut n = 0;
    while !progress.stop.load(Ordering::Relaxed) {
        pace(start, n, interval);
        n += 1;
        let Ok(mut conn) = TcpStream::connect_timeout(&addr, Duration::from_secs(3)) else {
            counts.failed_connects += 1;
            continue;
        };
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let line = format!("connection {n}");
        counts.sent += 1;
        let mut reply = String::new();
        let asked = conn
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| BufReader::new(&conn).read_line(&mut reply));
        if asked.is_ok() && reply.ends_with(&format!("] {line}\n")) {
            counts.answered += 1;
            progress.answered();
        } else {
            counts
                .unanswered
                .push(format!("{line}: {asked:?} {reply:?}"));
        }
    }
    counts
}

/// Datagrams at `per_second` from one socket, each waited for.
fn udp_load(addr: SocketAddr, per_second: u64, id: usize, progress: Arc<Progress>) -> Counts {
    let mut counts = Counts::default();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let start = Instant::now();
    let interval = Duration::from_secs(1) / per_second as u32;
    let mut buf = [0; 256];
    let mut n = 0;
    while !progress.stop.load(Ordering::Relaxed) {
        pace(start, n, interval);
        n += 1;
        let message = format!("socket {id} datagram {n}");
        counts.sent += 1;
        let answered = sock
            .send(message.as_bytes())
            .and_then(|_| sock.recv(&mut buf));
        match answered {
            Ok(len) if buf[..len].ends_with(format!("] {message}").as_bytes()) => {
                counts.answered += 1;
                progress.answered();
            }
            other => counts.unanswered.push(format!("{message}: {other:?}")),
        }
    }
    counts
}

/// Pass: five upgrades in a row (each new process takes over from the one
/// before) under new TCP connections at ~500/s, each one line, and 4 UDP
/// sockets sending ~5,000 datagrams/s in all: no connect fails, every line
/// and every datagram is answered, every old process exits 0 within its
/// drain timeout.
#[test]
fn five_upgrades_under_load_lose_nothing() {
    let control = socket_path("upgrades-control");
    let control_url = format!("unix://{}", control.display());
    let (stream_file, gram_file) = (socket_path("upgrades-stream"), socket_path("upgrades-gram"));
    let stream_url = format!("unix://{}", stream_file.display());
    let gram_url = format!("unixgram://{}", gram_file.display());
    let args = [
        "--listen",
        "tcp://127.0.0.1:0",
        "--listen",
        "udp://127.0.0.1:0",
        "--listen",
        &stream_url,
        "--listen",
        &gram_url,
        "--control",
        &control_url,
        "--metrics",
        "tcp://127.0.0.1:0",
        "--drain-timeout",
        "5s",
    ];
    let mut current = ServeProcess::start(&args, 4);
    let (tcp, udp) = (current.addr(0), current.addr(1));
    let metrics = current.metrics_base();
    let progress = Arc::new(Progress::default());
    let mut load = Vec::new();
    let tcp_progress = progress.clone();
    load.push(std::thread::spawn(move || tcp_load(tcp, 500, tcp_progress)));
    for id in 0..4 {
        let udp_progress = progress.clone();
        load.push(std::thread::spawn(move || {
            udp_load(udp, 1250, id, udp_progress)
        }));
    }
    // TSECHO_UPGRADE_ROUNDS=50 makes it a soak (scripts/upgrade-soak.sh).
    let rounds: u64 = std::env::var("TSECHO_UPGRADE_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    for round in 0..rounds {
        progress.wait_for(2_000);
        let mut takeover_args = args.to_vec();
        takeover_args.extend(["--takeover", control.to_str().unwrap()]);
        let mut next = ServeProcess::start(&takeover_args, 4);
        assert_eq!((next.addr(0), next.addr(1)), (tcp, udp), "round {round}");
        assert_eq!(
            next.metrics_base(),
            metrics,
            "round {round}: /metrics moved"
        );
        next.wait_for_log("took over from process");
        let committed = Instant::now();
        current.rest_of_stderr();
        let status = current.child.wait().unwrap();
        assert!(status.success(), "round {round}: old process {status}");
        assert!(
            committed.elapsed() < Duration::from_secs(5),
            "round {round}: the old process took {:?} to drain",
            committed.elapsed()
        );
        current = next;
    }
    // Load on the last process too, then stop it. The Unix sockets came
    // along every time, their files in place.
    progress.wait_for(2_000);
    assert!(is_ctime_stamp(&ask_tcp(tcp, "after the upgrades")));
    if have_tool("curl") {
        assert_eq!(curl(&format!("{metrics}/readyz")).0, 200);
    }
    let out = client(&stream_url, b"unix stream\n");
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("] unix stream\n"));
    let gram_client = socket_path("upgrades-gram-client");
    let sock = UnixDatagram::bind(&gram_client).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(b"unix datagram", &gram_file).unwrap();
    let mut buf = [0; 128];
    let n = sock.recv(&mut buf).unwrap();
    assert!(buf[..n].ends_with(b"] unix datagram"));
    let _ = std::fs::remove_file(&gram_client);
    progress.stop.store(true, Ordering::Relaxed);
    let mut total = Counts::default();
    for thread in load {
        total.add(thread.join().unwrap());
    }
    eprintln!(
        "sent {}, answered {}, failed connects {}",
        total.sent, total.answered, total.failed_connects
    );
    assert_eq!(total.failed_connects, 0);
    assert!(total.unanswered.is_empty(), "{:?}", &total.unanswered);
    assert!(
        total.sent > 2_000 * (rounds + 1),
        "too little load: {}",
        total.sent
    );
    current.signal("TERM");
    current.rest_of_stderr();
    assert!(current.child.wait().unwrap().success());
    assert!(!control.exists(), "the control socket file is left behind");
    assert!(!stream_file.exists() && !gram_file.exists());
}

/// Pass: a server started by socket activation hands systemd's socket over
/// too: the new process serves it as inherited (and binds no defaults
/// beside it), the old one exits 0.
#[test]
fn takeover_hands_over_socket_activated_sockets() {
    if !have_tool("systemd-socket-activate") {
        return;
    }
    let port = common::free_tcp_port();
    let control = socket_path("activated-control");
    let control_url = format!("unix://{}", control.display());
    let mut old = ServeProcess::start_command(
        Command::new("systemd-socket-activate").args([
            "-l",
            &format!("127.0.0.1:{port}"),
            tsecho_bin(),
            "serve",
            "--control",
            &control_url,
        ]),
        "Listening on",
        1,
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    // The first connection starts it.
    assert!(is_ctime_stamp(&ask_tcp(addr, "activated")));
    old.wait_for_log("control socket on");
    let mut new = ServeProcess::start(
        &[
            "--control",
            &control_url,
            "--takeover",
            control.to_str().unwrap(),
        ],
        1,
    );
    assert_eq!(new.addr(0), addr);
    new.wait_for_log("took over from process");
    old.rest_of_stderr();
    assert!(old.child.wait().unwrap().success());
    assert!(is_ctime_stamp(&ask_tcp(addr, "served by the new process")));
    assert!(!new.log_so_far().contains(":21567"), "{}", new.log_so_far());
}

/// Pass: check-config makes the checks a reload makes: a socket file's
/// group that does not exist and a --control that is not unix:///path
/// fail it (nothing bound); a good file says it will do for a reload.
#[test]
fn check_config_tells_whether_a_reload_would_succeed() {
    let check = |config: &ConfigFile| {
        Command::new(tsecho_bin())
            .args(["check-config", config.path()])
            .output()
            .unwrap()
    };
    let file = socket_path("check-group");
    let config = ConfigFile::new(
        "check-reload",
        &format!(
            "listen = [\"unix://{}?group=no-such-group-tsecho\"]\n",
            file.display()
        ),
    );
    let out = check(&config);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "as serve would: {stderr}");
    assert!(stderr.contains("no-such-group-tsecho"), "{stderr}");
    assert!(!file.exists());

    config.write("listen = [\"tcp://127.0.0.1:0\"]\ncontrol = \"tcp://127.0.0.1:1\"\n");
    let out = check(&config);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unix:///path"));

    config.write("listen = [\"tcp://127.0.0.1:0\"]\nformat = \"rfc3339\"\n");
    let out = check(&config);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK, to start with or to reload"));
}
