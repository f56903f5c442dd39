//! The `tsecho` binary end to end: `serve` and `client` as a user runs them,
//! and outside clients nobody here wrote (python's socket module written
//! the way the seed's clients are, nc, socat).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{ServeProcess, have_tool, socket_path, split_ctime_stamp, tsecho_bin};

/// Runs a command with `input` on stdin and returns its output.
fn run_with_input(program: &str, args: &[&str], input: &[u8]) -> Output {
    common::run_with_input(Command::new(program).args(args), input)
}

fn stamped_lines(stdout: &[u8]) -> Vec<Vec<u8>> {
    stdout
        .split_inclusive(|&b| b == b'\n')
        .map(|line| split_ctime_stamp(line).1.to_vec())
        .collect()
}

#[test]
fn piped_client_prints_one_stamped_line_per_input_line() {
    let server = ServeProcess::start(&["--listen", "tcp://127.0.0.1:0"], 1);
    let url = format!("tcp://{}", server.addr(0));
    let out = run_with_input(tsecho_bin(), &["client", &url], b"a\nb\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stamped_lines(&out.stdout),
        [b"a\n".to_vec(), b"b\n".to_vec()]
    );
}

/// Pass: when the server closes first (daytime answers and closes), the
/// piped client prints the reply and ends although its stdin stays open;
/// it used to wait for stdin's end.
#[test]
fn piped_client_ends_when_the_server_closes_with_stdin_still_open() {
    let server = ServeProcess::start(&["-l", "daytime+tcp://127.0.0.1:0"], 1);
    let mut client = Command::new(tsecho_bin())
        .args(["client", &format!("tcp://{}", server.addr(0))])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let _open_stdin = client.stdin.take();
    let (done, ended) = std::sync::mpsc::channel();
    let mut stdout = client.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut printed = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut printed);
        let _ = done.send(printed);
    });
    let printed = ended.recv_timeout(common::READ_DEADLINE);
    let _ = client.kill();
    let printed = printed.expect("the client kept running after the server closed");
    assert!(printed.ends_with("\r\n"), "{printed:?}");
    assert!(client.wait().unwrap().success());
}

/// Pass: `tsecho ping | head -1`: once its reader has gone, ping ends with
/// the status of a C tool killed by SIGPIPE (141), without a panic.
#[test]
fn ping_into_a_closed_pipe_ends_quietly() {
    let server = ServeProcess::start(&["-l", "tcp://127.0.0.1:0"], 1);
    let mut ping = Command::new(tsecho_bin())
        .args(["ping", &format!("tcp://{}", server.addr(0))])
        .args(["--count", "50", "--interval", "10ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(ping.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // The reader is dropped here: the next line ping prints meets a closed pipe.
    assert!(first.starts_with("PING "), "{first}");
    let out = ping.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}

#[test]
fn piped_client_over_udp_unix_and_unixgram() {
    let stream_path = socket_path("cli-stream");
    let gram_path = socket_path("cli-gram");
    let server = ServeProcess::start(
        &[
            "--listen",
            "udp://127.0.0.1:0",
            "--listen",
            &format!("unix://{}", stream_path.display()),
            "--listen",
            &format!("unixgram://{}", gram_path.display()),
        ],
        3,
    );
    let urls = [
        format!("udp://{}", server.addr(0)),
        format!("unix://{}", stream_path.display()),
        format!("unixgram://{}", gram_path.display()),
    ];
    for url in &urls {
        let out = run_with_input(tsecho_bin(), &["client", url], b"one\ntwo\n");
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines = stamped_lines(&out.stdout);
        assert_eq!(lines, [b"one\n".to_vec(), b"two\n".to_vec()], "{url}");
    }
}

#[test]
fn datagram_line_never_answered_is_reported_and_fails() {
    // A UDP port nobody listens on: every try is refused or times out.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    drop(sock);
    let url = format!("udp://127.0.0.1:{port}");
    let out = run_with_input(
        tsecho_bin(),
        &["client", &url, "--timeout", "100ms", "--retries", "1"],
        b"lost\n",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no reply from") && stderr.contains("\"lost\""),
        "{stderr}"
    );
}

#[test]
fn client_connection_refused_names_address_and_reason() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let out = run_with_input(
        tsecho_bin(),
        &["client", &format!("tcp://127.0.0.1:{port}")],
        b"",
    );
    assert_eq!(out.status.code(), Some(69));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        format!("tsecho: cannot connect to tcp://127.0.0.1:{port}: connection refused")
    );
}

/// An unknown host is 68 (EX_NOHOST), as the README says; a UDP server
/// that is not there (ICMP port unreachable) is refused, 69, like TCP.
#[test]
fn client_unknown_host_and_refused_udp_have_their_own_exit_codes() {
    let out = run_with_input(
        tsecho_bin(),
        &["client", "tcp://no-such-host.invalid:21567"],
        b"",
    );
    assert_eq!(out.status.code(), Some(68));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "tsecho: cannot connect to tcp://no-such-host.invalid:21567: unknown host \"no-such-host.invalid\""
    );

    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("udp://127.0.0.1:{port}");
    let out = run_with_input(tsecho_bin(), &["client", &url, "--retries", "0"], b"hi\n");
    assert_eq!(out.status.code(), Some(69));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        format!("tsecho: no reply from {url} to \"hi\": connection refused")
    );
}

#[test]
fn address_in_use_is_one_line_and_exit_code_69() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = holder.local_addr().unwrap();
    let out = Command::new(tsecho_bin())
        .args(["serve", "--listen", &format!("tcp://{addr}")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        format!("tsecho: cannot listen on tcp://{addr}: address already in use")
    );
}

#[test]
fn bad_listen_url_is_a_usage_error() {
    let out = Command::new(tsecho_bin())
        .args(["serve", "--listen", "sctp://:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("tsecho: invalid endpoint"));
}

#[test]
fn default_serve_listens_on_tcp_and_udp_21567_all_interfaces() {
    // In a network namespace of its own, where 21567 is surely free.
    let Some(server) = ServeProcess::start_isolated(&[], 2) else {
        return;
    };
    assert_eq!(
        server.listening,
        ["tcp://[::]:21567 (stamp)", "udp://[::]:21567 (stamp)"]
    );
    let out = server.run_beside(&["client"], b"default\n");
    assert_eq!(stamped_lines(&out.stdout), [b"default\n".to_vec()]);
}

#[test]
fn python_clients_written_like_the_seed() {
    if !have_tool("python3") {
        return;
    }
    let server = ServeProcess::start(
        &[
            "--listen",
            "tcp://127.0.0.1:0",
            "--listen",
            "udp://127.0.0.1:0",
        ],
        2,
    );
    let script = r#"
import sys
from socket import *
tcp_port, udp_port = int(sys.argv[1]), int(sys.argv[2])
BUFSIZ = 1024

tcpCliSock = socket(AF_INET, SOCK_STREAM)
tcpCliSock.connect(('127.0.0.1', tcp_port))
for data in [b'hello\n', b'world\n']:
    tcpCliSock.sendall(data)
    reply = tcpCliSock.recv(BUFSIZ)
    print(reply.decode('utf-8'), end='')
tcpCliSock.close()

udpCliSock = socket(AF_INET, SOCK_DGRAM)
udpCliSock.settimeout(5)
udpCliSock.sendto(b'datagram', ('127.0.0.1', udp_port))
data, addr = udpCliSock.recvfrom(BUFSIZ)
print(data.decode('utf-8'))
udpCliSock.close()
"#;
    let tcp = server.addr(0).port().to_string();
    let udp = server.addr(1).port().to_string();
    let out = Command::new("python3")
        .args(["-c", script, &tcp, &udp])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = stamped_lines(&out.stdout);
    assert_eq!(
        lines,
        [
            b"hello\n".to_vec(),
            b"world\n".to_vec(),
            b"datagram\n".to_vec()
        ]
    );
}

#[test]
fn nc_over_tcp_and_udp() {
    if !have_tool("nc") {
        return;
    }
    let server = ServeProcess::start(
        &[
            "--listen",
            "tcp://127.0.0.1:0",
            "--listen",
            "udp://127.0.0.1:0",
        ],
        2,
    );
    let tcp = server.addr(0);
    let out = run_with_input(
        "nc",
        &["-N", "127.0.0.1", &tcp.port().to_string()],
        b"via nc\r\nsecond\n",
    );
    assert_eq!(
        stamped_lines(&out.stdout),
        [b"via nc\r\n".to_vec(), b"second\n".to_vec()]
    );

    let udp = server.addr(1);
    // nc -u has no end of conversation: -w bounds it once the reply is in.
    let out = run_with_input(
        "nc",
        &["-u", "-w", "1", "127.0.0.1", &udp.port().to_string()],
        b"via nc udp\n",
    );
    assert_eq!(stamped_lines(&out.stdout), [b"via nc udp\n".to_vec()]);
}

#[test]
fn socat_over_unix_stream_and_datagram() {
    if !have_tool("socat") {
        return;
    }
    let stream_path = socket_path("socat-stream");
    let gram_path = socket_path("socat-gram");
    let client_path = socket_path("socat-client");
    let _server = ServeProcess::start(
        &[
            "--listen",
            &format!("unix://{}", stream_path.display()),
            "--listen",
            &format!("unixgram://{}", gram_path.display()),
        ],
        2,
    );
    let out = run_with_input(
        "socat",
        &[
            "-t",
            "5",
            "-",
            &format!("UNIX-CONNECT:{}", stream_path.display()),
        ],
        b"via socat\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stamped_lines(&out.stdout), [b"via socat\n".to_vec()]);

    let out = run_with_input(
        "socat",
        &[
            "-t",
            "1",
            "-",
            &format!(
                "UNIX-SENDTO:{},bind={}",
                gram_path.display(),
                client_path.display()
            ),
        ],
        b"socat datagram\n",
    );
    let _ = std::fs::remove_file(&client_path);
    assert_eq!(stamped_lines(&out.stdout), [b"socat datagram\n".to_vec()]);
}

#[test]
fn interactive_client_prompts_and_prints_replies() {
    if !have_tool("python3") {
        return;
    }
    let server = ServeProcess::start(&["--listen", "tcp://127.0.0.1:0"], 1);
    // Runs the client on a pseudo-terminal, types a line, then the last
    // keystroke: an empty line ends with 0, Ctrl-C with 130 (128 + SIGINT).
    let script = r#"
import os, pty, sys, select, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], 'client', sys.argv[2]])
out = b''
def read_until(token, start=0, limit=10):
    global out
    deadline = time.time() + limit
    while out.find(token, start) < 0 and time.time() < deadline:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                out += os.read(fd, 4096)
            except OSError:
                break
    return out.find(token, start)
assert read_until(b'> ') >= 0, out
os.write(fd, b'typed line\r')
reply = read_until(b'] typed line')
assert reply >= 0, out
# The next prompt means the editor owns the terminal again; a Ctrl-C typed
# before that is the terminal's SIGINT, not a keystroke the client reads.
assert read_until(b'> ', reply) >= 0, out
os.write(fd, sys.argv[3].encode())
deadline = time.time() + 10
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.time() > deadline:
        os.kill(pid, 9)
        sys.exit('the client did not end: ' + out.decode('utf-8', 'replace'))
    select.select([fd], [], [], 0.05)
sys.stdout.write(out.decode('utf-8', 'replace'))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let url = format!("tcp://{}", server.addr(0));
    for (last_key, expected_code) in [("\r", 0), ("\x03", 130)] {
        let out = Command::new("python3")
            .args(["-c", script, tsecho_bin(), &url, last_key])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(expected_code),
            "{last_key:?}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let reply = stdout.lines().find(|l| l.contains("] typed line")).unwrap();
        let at = reply.find('[').unwrap();
        split_ctime_stamp(&reply.as_bytes()[at..]);
    }
}

/// Pass: under the load of 100 connections, every line a client had
/// written before SIGTERM is answered, in order, before the client sees
/// EOF; the server exits 0 within the drain timeout. The clients stop
/// writing once the signal is sent, as clients of a stopping server do
/// (one that never stops is served until the drain timeout).
#[test]
fn sigterm_during_load_loses_no_complete_line() {
    let mut server = ServeProcess::start(
        &["--listen", "tcp://127.0.0.1:0", "--drain-timeout", "5s"],
        1,
    );
    let addr = server.addr(0);
    let written: Vec<Arc<AtomicU64>> = (0..100).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let stop_writing = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = written
        .iter()
        .enumerate()
        .map(|(c, count)| {
            let count = count.clone();
            let stop_writing = stop_writing.clone();
            let conn = common::connect(addr);
            let mut writer = conn.try_clone().unwrap();
            std::thread::spawn(move || {
                let reader_conn = conn.try_clone().unwrap();
                let reader = std::thread::spawn(move || {
                    let mut replies = Vec::new();
                    let mut reader = BufReader::new(reader_conn);
                    loop {
                        let mut line = Vec::new();
                        match reader.read_until(b'\n', &mut line) {
                            Ok(0) | Err(_) => return replies,
                            Ok(_) => replies.push(line),
                        }
                    }
                });
                // Keep a few lines in flight until the server goes away.
                for i in 0.. {
                    if writer.write_all(format!("c{c} n{i}\n").as_bytes()).is_err() {
                        break;
                    }
                    count.store(i + 1, Ordering::SeqCst);
                    if reader.is_finished() || stop_writing.load(Ordering::SeqCst) {
                        break;
                    }
                    if i % 8 == 7 {
                        std::thread::yield_now();
                    }
                }
                let _ = writer.shutdown(std::net::Shutdown::Write);
                (c, reader.join().unwrap())
            })
        })
        .collect();
    // Let load build up: wait until every client has had lines accepted.
    while written.iter().any(|w| w.load(Ordering::SeqCst) < 50) {
        std::thread::yield_now();
    }
    let sent_before: Vec<u64> = written.iter().map(|w| w.load(Ordering::SeqCst)).collect();
    let signalled = Instant::now();
    server.signal("TERM");
    stop_writing.store(true, Ordering::SeqCst);
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(signalled.elapsed() < Duration::from_secs(6));
    let mut answered = 0;
    for client in clients {
        let (c, replies) = client.join().unwrap();
        answered += replies.len();
        assert!(
            replies.len() as u64 >= sent_before[c],
            "client {c}: {} replies for {} lines sent before SIGTERM",
            replies.len(),
            sent_before[c]
        );
        for (i, reply) in replies.iter().enumerate() {
            assert_eq!(
                split_ctime_stamp(reply).1,
                format!("c{c} n{i}\n").as_bytes()
            );
        }
    }
    eprintln!(
        "{} lines written before SIGTERM, {answered} answered",
        sent_before.iter().sum::<u64>()
    );
    let log = server.rest_of_stderr();
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn services_lists_every_service_with_its_rfc() {
    let out = Command::new(tsecho_bin()).arg("services").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "stamp", "echo", "RFC 862", "discard", "RFC 863", "chargen", "RFC 864", "daytime",
        "RFC 867", "time", "RFC 868",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}
