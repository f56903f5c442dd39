//! Helpers shared by the end-to-end tests: starting servers (in process or
//! as the real binary), checking stamps, and finding outside tools.

#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
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

/// The real binary running `serve`, killed when dropped. Its log is read
/// by a thread of its own and waited for with READ_DEADLINE, so a server
/// that hangs fails the test instead of hanging it.
pub struct ServeProcess {
    pub child: Child,
    pub listening: Vec<String>,
    /// The log read so far.
    log: String,
    /// The log's lines, as the reader thread gets them.
    lines: std::sync::mpsc::Receiver<String>,
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
        let net = format!("--net=/proc/{}/ns/net", self.child.id());
        run_with_input(
            Command::new("nsenter")
                .arg(net)
                .arg(tsecho_bin())
                .args(args),
            input,
        )
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
        Self::spawn_until(command, "listening on ", expected)
    }

    /// Any command (another tool, or tsecho with its own environment), as
    /// a server: waits for `expected` log lines containing `marker`.
    pub fn start_command(command: &mut Command, marker: &str, expected: usize) -> ServeProcess {
        Self::spawn_until(command, marker, expected)
            .unwrap_or_else(|log| panic!("{command:?} exited before {marker:?}: {log}"))
    }

    fn spawn_until(
        command: &mut Command,
        marker: &str,
        expected: usize,
    ) -> Result<ServeProcess, String> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = ServeProcess {
            child,
            listening: Vec::new(),
            log: String::new(),
            lines,
        };
        while server.listening.len() < expected {
            let Some(line) = server.next_line() else {
                let _ = server.child.kill();
                return Err(std::mem::take(&mut server.log));
            };
            if let Some(at) = line.find(marker) {
                server
                    .listening
                    .push(line[at + marker.len()..].trim().to_string());
            }
        }
        Ok(server)
    }

    /// The next line of the log: None at its end. Panics past READ_DEADLINE.
    fn next_line(&mut self) -> Option<String> {
        use std::sync::mpsc::RecvTimeoutError;
        match self.lines.recv_timeout(READ_DEADLINE) {
            Ok(line) => {
                if !self.log.is_empty() {
                    self.log.push('\n');
                }
                self.log += &line;
                Some(line)
            }
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "the server logged nothing for {READ_DEADLINE:?}: {}",
                    self.log
                )
            }
        }
    }

    /// The address of the n-th listener, from its log line.
    pub fn addr(&self, n: usize) -> SocketAddr {
        let line = &self.listening[n];
        let url = line.split_whitespace().next().unwrap();
        let (_, addr) = url.split_once("://").unwrap();
        let addr = addr.split('?').next().unwrap();
        addr.parse().unwrap()
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// `http://ADDR` of the server's /metrics listener, from its log.
    pub fn metrics_base(&mut self) -> String {
        let marker = "metrics on http://";
        let line = match self.log_so_far().lines().find(|l| l.contains(marker)) {
            Some(line) => line.to_string(),
            None => self.wait_for_log(marker),
        };
        line[line.find("http://").unwrap()..]
            .trim()
            .trim_end_matches("/metrics")
            .to_string()
    }

    /// Everything the server logged so far, as read.
    pub fn log_so_far(&self) -> &str {
        &self.log
    }

    /// Reads the log until a line contains `marker`; returns that line.
    pub fn wait_for_log(&mut self, marker: &str) -> String {
        loop {
            match self.next_line() {
                Some(line) if line.contains(marker) => return line,
                Some(_) => {}
                None => panic!("server log ended without {marker:?}: {}", self.log),
            }
        }
    }

    /// Kills the server and returns all it logged.
    pub fn kill_and_log(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.rest_of_stderr();
        std::mem::take(&mut self.log)
    }

    /// The rest of the log, up to the server's exit (call after signalling
    /// it to stop).
    pub fn rest_of_stderr(&mut self) -> String {
        let mut rest = Vec::new();
        while let Some(line) = self.next_line() {
            rest.push(line);
        }
        rest.join("\n")
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `command` with `input` on stdin: its output. The input is
/// written from a thread of its own, so a command that prints much before
/// reading all of it cannot block on a full pipe.
pub fn run_with_input(command: &mut Command, input: &[u8]) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output
}

/// GET with curl: the status code and the body.
pub fn curl(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-w", "\n%{http_code}", url])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

/// A TOML file in the temp directory, removed when dropped (a failing
/// test included).
pub struct ConfigFile(std::path::PathBuf);

impl ConfigFile {
    pub fn new(name: &str, text: &str) -> Self {
        let file = ConfigFile(socket_path(name).with_extension("toml"));
        file.write(text);
        file
    }

    pub fn write(&self, text: &str) {
        std::fs::write(&self.0, text).unwrap();
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn metric(body: &str, name: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{name} missing in:\n{body}"))
        .parse()
        .unwrap()
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

/// HAProxy in the foreground with the configuration given, written to a
/// file of its own; stopped, and the file removed, when dropped.
pub struct Haproxy {
    child: Child,
    config: PathBuf,
}

impl Haproxy {
    /// `name` keeps the configuration files of tests running at once apart.
    pub fn start(config: &str, name: &str) -> Haproxy {
        let path =
            std::env::temp_dir().join(format!("tsecho-haproxy-{name}-{}.cfg", std::process::id()));
        std::fs::write(&path, config).unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Haproxy {
            child,
            config: path,
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// The RFC 864 stream, built here from the RFC's words rather than taken
/// from the code under test: 72-character lines over the 95 printable
/// characters, line n starting one character after line n-1, the first at
/// `!`, each ending in CRLF.
pub fn rfc864_lines(count: usize) -> Vec<u8> {
    let ring: Vec<u8> = (b' '..=b'~').collect();
    assert_eq!(ring.len(), 95);
    let mut out = Vec::new();
    for n in 0..count {
        out.extend((0..72).map(|i| ring[(1 + n + i) % ring.len()]));
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Sends `input`, half-closes, and reads until the server closes.
pub fn round_trip(addr: SocketAddr, input: &[u8]) -> Vec<u8> {
    let mut conn = connect(addr);
    let mut writer = conn.try_clone().unwrap();
    let input = input.to_vec();
    let sender = std::thread::spawn(move || {
        writer.write_all(&input).unwrap();
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut out = Vec::new();
    conn.read_to_end(&mut out).unwrap();
    sender.join().unwrap();
    out
}

/// `kill -STOP` returns once the signal is sent; a thread already running
/// on the other CPU may still read for a moment. Stopped means every
/// thread of the process shows state T.
pub fn wait_until_stopped(pid: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
        let all_stopped = tasks.flatten().all(|task| {
            let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
            let state = stat.rsplit(')').next().unwrap_or_default().trim_start();
            state.starts_with('T') || state.starts_with('t')
        });
        if all_stopped {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the server never stopped"
        );
        std::thread::yield_now();
    }
}
