//! Helpers shared by the end-to-end tests: starting servers (in process or
//! as the real binary), checking stamps, and finding outside tools.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use tsecho::{Options, Server, ServerHandle};

/// A TCP port free on loopback right now, for outside programs (xinetd,
/// HAProxy, systemd-socket-activate) that must be told a port rather than
/// bind port 0 themselves.
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How long any test read may wait: a regression that stops a reply
/// fails the test instead of hanging CI.
pub const READ_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// A TCP connection whose reads fail after READ_DEADLINE.
pub fn connect(addr: impl std::net::ToSocketAddrs) -> std::net::TcpStream {
    let conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(READ_DEADLINE)).unwrap();
    conn
}

/// A Unix stream connection whose reads fail after READ_DEADLINE.
pub fn connect_unix(path: impl AsRef<std::path::Path>) -> std::os::unix::net::UnixStream {
    let conn = std::os::unix::net::UnixStream::connect(path).unwrap();
    conn.set_read_timeout(Some(READ_DEADLINE)).unwrap();
    conn
}

/// An awaited read, failed after READ_DEADLINE instead of hanging.
pub async fn within<T>(read: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(READ_DEADLINE, read)
        .await
        .expect("no reply within the read deadline")
}

/// True when an outside tool is on PATH. When it is missing the test skips
/// with a printed reason, unless CI demands it with TSECHO_REQUIRE_INTEROP=1.
pub fn have_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("TSECHO_REQUIRE_INTEROP").as_deref() == Ok("1") {
            panic!("{tool} is required (TSECHO_REQUIRE_INTEROP=1) but not installed");
        }
        skip(&format!("{tool} is not installed"));
    }
    found
}

/// Says that the calling test skips, and why, where it shows: straight on
/// stderr (libtest captures only the print macros, so this is seen in a
/// plain `cargo test`), and as a line of target/tmp/skipped.log, which CI
/// counts and prints.
pub fn skip(reason: &str) {
    use std::io::Write;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let line = format!("SKIPPED {test}: {reason}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("skipped.log");
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = file.write_all(line.as_bytes());
    }
}

pub fn tsecho_bin() -> &'static str {
    env!("CARGO_BIN_EXE_tsecho")
}

pub async fn start(urls: &[&str]) -> ServerHandle {
    start_with(urls, Options::default()).await
}

pub async fn start_with(urls: &[&str], options: Options) -> ServerHandle {
    let mut server = Server::builder().options(options);
    for url in urls {
        server = server.listen(url).unwrap();
    }
    server.start().await.unwrap()
}

/// A unique path for a Unix socket in the temp directory.
pub fn socket_path(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    std::env::temp_dir().join(format!(
        "tsecho-test-{}-{}-{name}.sock",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Splits `[time] message` and checks the time is ctime-shaped.
pub fn split_ctime_stamp(reply: &[u8]) -> (String, &[u8]) {
    assert_eq!(reply.first(), Some(&b'['), "reply {reply:?} has no stamp");
    let close = reply
        .windows(2)
        .position(|w| w == b"] ")
        .unwrap_or_else(|| panic!("reply {:?} has no '] '", String::from_utf8_lossy(reply)));
    let time = std::str::from_utf8(&reply[1..close]).unwrap().to_string();
    chrono::NaiveDateTime::parse_from_str(&time, "%a %b %e %H:%M:%S %Y")
        .unwrap_or_else(|e| panic!("{time:?} is not ctime: {e}"));
    assert_eq!(time.len(), 24, "{time:?}");
    (time, &reply[close + 2..])
}

/// The real binary running `serve`, killed when dropped.
pub struct ServeProcess {
    pub child: Child,
    pub listening: Vec<String>,
    /// The log up to the last "listening on" line, as read.
    log: String,
    /// None once `log_reader` took it.
    stderr: Option<BufReader<std::process::ChildStderr>>,
}

impl ServeProcess {
    /// Starts `tsecho serve ARGS` and waits for `expected` "listening on" lines.
    pub fn start(args: &[&str], expected: usize) -> ServeProcess {
        Self::try_start(args, expected)
            .unwrap_or_else(|log| panic!("server exited before listening: {log}"))
    }

    /// As `start`, but a server that exits early gives back its log.
    pub fn try_start(args: &[&str], expected: usize) -> Result<ServeProcess, String> {
        Self::spawn(Command::new(tsecho_bin()).arg("serve").args(args), expected)
    }

    /// As `start`, in a network namespace of its own (`unshare -n`, as
    /// root), so that fixed ports such as the default 21567 are free
    /// whatever else runs on the machine. None (the test skips) where
    /// namespaces cannot be made.
    pub fn start_isolated(args: &[&str], expected: usize) -> Option<ServeProcess> {
        let probe = Command::new("unshare")
            .args(["-n", "true"])
            .stderr(Stdio::null())
            .status();
        if !probe.is_ok_and(|s| s.success()) {
            if std::env::var("TSECHO_REQUIRE_INTEROP").as_deref() == Ok("1") {
                panic!("unshare -n is required (TSECHO_REQUIRE_INTEROP=1) but fails here");
            }
            skip("cannot make a network namespace (unshare -n needs root)");
            return None;
        }
        let script = "ip link set lo up && exec \"$0\" serve \"$@\"";
        let mut command = Command::new("unshare");
        command
            .args(["-n", "sh", "-c", script, tsecho_bin()])
            .args(args);
        Some(
            Self::spawn(&mut command, expected)
                .unwrap_or_else(|log| panic!("server exited before listening: {log}")),
        )
    }

    /// Runs `tsecho ARGS` in the server's network namespace with `input`
    /// on stdin (for a server from `start_isolated`).
    pub fn run_beside(&self, args: &[&str], input: &[u8]) -> std::process::Output {
        use std::io::Write;
        let net = format!("--net=/proc/{}/ns/net", self.child.id());
        let mut child = Command::new("nsenter")
            .arg(net)
            .arg(tsecho_bin())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// As `start`, with the server's open-file limit lowered to `limit`.
    pub fn start_with_file_limit(limit: u32, args: &[&str], expected: usize) -> ServeProcess {
        let script = format!("ulimit -n {limit} && exec \"$0\" serve \"$@\"");
        let mut command = Command::new("sh");
        command.args(["-c", &script, tsecho_bin()]).args(args);
        Self::spawn(&mut command, expected)
            .unwrap_or_else(|log| panic!("server exited before listening: {log}"))
    }

    fn spawn(command: &mut Command, expected: usize) -> Result<ServeProcess, String> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut listening = Vec::new();
        let mut log = String::new();
        while listening.len() < expected {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap() == 0 {
                let _ = child.wait();
                return Err(log);
            }
            log += &line;
            if let Some(at) = line.find("listening on ") {
                listening.push(line[at + 13..].trim().to_string());
            }
        }
        Ok(ServeProcess {
            child,
            listening,
            log: log.trim_end().to_string(),
            stderr: Some(stderr),
        })
    }

    /// The address of the n-th listener, from its log line.
    pub fn addr(&self, n: usize) -> SocketAddr {
        let line = &self.listening[n];
        let url = line.split_whitespace().next().unwrap();
        let (_, addr) = url.split_once("://").unwrap();
        addr.parse().unwrap()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The log read while waiting for the listeners.
    pub fn log_so_far(&self) -> &str {
        &self.log
    }

    /// Reads the log until a line contains `marker`; returns that line.
    pub fn wait_for_log(&mut self, marker: &str) -> String {
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            if self.stderr().read_line(&mut line).unwrap() == 0 {
                panic!("server log ended without {marker:?}: {seen}");
            }
            if line.contains(marker) {
                return line;
            }
            seen += &line;
        }
    }

    /// Reads the rest of the log on a thread, so the server never blocks
    /// on a full pipe; join it after the server has ended.
    pub fn log_reader(&mut self) -> std::thread::JoinHandle<String> {
        let mut stderr = self.stderr.take().expect("the log is read once");
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
            rest
        })
    }

    fn stderr(&mut self) -> &mut BufReader<std::process::ChildStderr> {
        self.stderr.as_mut().expect("the log went to log_reader")
    }

    pub fn rest_of_stderr(&mut self) -> String {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(self.stderr(), &mut rest);
        rest
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `/proc/PID/status` memory figure (VmRSS, VmHWM) in KiB.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
