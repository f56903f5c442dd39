//! The io_uring engine (`--io uring`) through the real binary: the same
//! bytes as epoll for every service, kernel receive times, the drain, and
//! bounded memory for clients that never read. The rest of the suite runs
//! over it too when `TSECHO_IO=uring` is set (CI does both).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    ServeProcess, proc_status_kib, rfc864_lines, round_trip, skip, split_ctime_stamp,
    wait_until_stopped,
};

/// io_uring can be switched off for the whole machine (and is, in some
/// sandboxes); then these tests skip, unless CI demands them.
fn uring_allowed() -> bool {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|v| v.trim() != "0")
        .unwrap_or(false);
    if disabled {
        if std::env::var("TSECHO_REQUIRE_INTEROP").as_deref() == Ok("1") {
            panic!("io_uring is required (TSECHO_REQUIRE_INTEROP=1) but disabled here");
        }
        skip("io_uring is disabled on this machine (kernel.io_uring_disabled)");
    }
    !disabled
}

fn serve_uring(listen: &[&str], extra: &[&str]) -> ServeProcess {
    let mut args = vec!["--io", "uring", "--threads", "1"];
    for url in listen {
        args.extend(["--listen", url]);
    }
    args.extend(extra);
    ServeProcess::start(&args, listen.len())
}

#[test]
fn every_service_gives_the_same_bytes_over_io_uring() {
    if !uring_allowed() {
        return;
    }
    let server = serve_uring(
        &[
            "tcp://127.0.0.1:0",
            "echo+tcp://127.0.0.1:0",
            "discard+tcp://127.0.0.1:0",
            "chargen+tcp://127.0.0.1:0",
            "daytime+tcp://127.0.0.1:0",
            "time+tcp://127.0.0.1:0",
        ],
        &[],
    );
    // Stamp: each line keeps its own ending; a line longer than one
    // receive buffer (4 KiB) comes back whole.
    let long = "x".repeat(10_000);
    let input = format!("one\r\ntwo\n{long}\nlast without newline");
    let replies = round_trip(server.addr(0), input.as_bytes());
    let lines: Vec<&[u8]> = replies
        .split_inclusive(|&b| b == b'\n')
        .map(|reply| split_ctime_stamp(reply).1)
        .collect();
    assert_eq!(lines[0], b"one\r\n");
    assert_eq!(lines[1], b"two\n");
    assert!(
        lines[2] == format!("{long}\n").as_bytes(),
        "the long line changed"
    );
    assert_eq!(lines[3], b"last without newline");

    // Echo: a megabyte of every byte value, unchanged.
    let bytes: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 256) as u8).collect();
    assert!(
        round_trip(server.addr(1), &bytes) == bytes,
        "echo changed the bytes"
    );

    // Discard: nothing back, then a clean close.
    assert!(round_trip(server.addr(2), &bytes).is_empty());

    // Chargen: the RFC 864 lines, read while they stream.
    let mut chargen = common::connect(server.addr(3));
    let mut got = vec![0; 74 * 200];
    chargen.read_exact(&mut got).unwrap();
    assert!(
        got == rfc864_lines(200),
        "chargen's lines differ from RFC 864"
    );
    drop(chargen);

    // Daytime and time: one answer each, then the server closes.
    let daytime = round_trip(server.addr(4), b"");
    assert!(
        daytime.ends_with(b"\r\n") && daytime.len() > 20,
        "{daytime:?}"
    );
    let time = round_trip(server.addr(5), b"");
    assert_eq!(time.len(), 4);
    let seconds = u64::from(u32::from_be_bytes(time[..].try_into().unwrap()));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2_208_988_800;
    assert!(
        seconds.abs_diff(now) <= 2,
        "time says {seconds}, now is {now}"
    );
}

/// The kernel's receive time reaches the reply through the ring's
/// `recvmsg` as it does through epoll's: a line sent while the server is
/// stopped is stamped with when it came, not when it was read.
#[test]
fn kernel_stamps_come_through_the_ring() {
    if !uring_allowed() {
        return;
    }
    let server = serve_uring(&["tcp://127.0.0.1:0"], &["--format", "unix-us"]);
    let tcp = common::connect(server.addr(0));
    let mut lines = BufReader::new(tcp.try_clone().unwrap());
    (&tcp).write_all(b"warm\n").unwrap();
    lines.read_line(&mut String::new()).unwrap();

    server.signal("STOP");
    wait_until_stopped(server.child.id());
    let sent = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    (&tcp).write_all(b"while stopped\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    server.signal("CONT");

    let mut reply = String::new();
    lines.read_line(&mut reply).unwrap();
    let stamp: i64 = reply[1..reply.find(']').unwrap()].parse().unwrap();
    let late = stamp - sent;
    assert!(
        (-1_000..5_000).contains(&late),
        "stamp {late} µs from the send"
    );
    assert!(reply.ends_with("] while stopped\n"), "{reply}");
}

/// Lines already sent when SIGTERM comes are answered before the close,
/// with the ring as with epoll.
#[test]
fn sigterm_answers_the_lines_already_sent() {
    if !uring_allowed() {
        return;
    }
    let server = serve_uring(&["tcp://127.0.0.1:0"], &["--drain-timeout", "5s"]);
    let mut conns: Vec<TcpStream> = (0..20).map(|_| common::connect(server.addr(0))).collect();
    for (c, conn) in conns.iter_mut().enumerate() {
        let lines: String = (0..50).map(|i| format!("c{c} n{i}\n")).collect();
        conn.write_all(lines.as_bytes()).unwrap();
    }
    // Each connection's first reply says its lines have arrived.
    let mut readers: Vec<BufReader<TcpStream>> = conns.into_iter().map(BufReader::new).collect();
    let mut first = Vec::new();
    for reader in &mut readers {
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line).unwrap();
        first.push(line);
    }
    server.signal("TERM");
    for (c, (mut reader, first)) in readers.into_iter().zip(first).enumerate() {
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        let mut replies = vec![first];
        replies.extend(rest.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec));
        assert_eq!(replies.len(), 50, "connection {c}");
        for (i, reply) in replies.iter().enumerate() {
            assert_eq!(
                split_ctime_stamp(reply).1,
                format!("c{c} n{i}\n").as_bytes()
            );
        }
    }
}

/// A request is answered in the buffer the kernel filled, and a line
/// that one read leaves unfinished is completed by the next: each reply
/// arrives before the next piece is sent, so every piece after the first
/// is read on its own, behind an unfinished line.
#[test]
fn a_line_split_between_reads_comes_back_whole() {
    if !uring_allowed() {
        return;
    }
    let server = serve_uring(&["tcp://127.0.0.1:0"], &[]);
    let mut conn = BufReader::new(common::connect(server.addr(0)));
    let mut next_line = |piece: &[u8]| {
        conn.get_mut().write_all(piece).unwrap();
        let mut reply = Vec::new();
        conn.read_until(b'\n', &mut reply).unwrap();
        split_ctime_stamp(&reply).1.to_vec()
    };
    assert_eq!(next_line(b"first\nsec"), b"first\n");
    assert_eq!(next_line(b"ond\r\nthi"), b"second\r\n");
    assert_eq!(next_line(b"rd\nfourth\nfif"), b"third\n");
    assert_eq!(next_line(b""), b"fourth\n");
    assert_eq!(next_line(b"th\n"), b"fifth\n");
}

/// The timers are the shard runtime's, on another thread than the ring
/// that serves the connections: an idle connection and an unfinished line
/// are still closed by their timeouts, and a client that keeps talking is
/// not.
#[test]
fn timeouts_reach_connections_on_the_ring_thread() {
    if !uring_allowed() {
        return;
    }
    let server = serve_uring(
        &["tcp://127.0.0.1:0"],
        &["--idle-timeout", "1s", "--line-timeout", "1s"],
    );
    let mut idle = common::connect(server.addr(0));
    let mut unfinished = common::connect(server.addr(0));
    unfinished.write_all(b"no end yet").unwrap();
    let mut talking = BufReader::new(common::connect(server.addr(0)));
    // Twice the idle timeout, a line each 100 ms: never idle that long.
    for i in 0..20 {
        let line = format!("line {i}\n");
        talking.get_mut().write_all(line.as_bytes()).unwrap();
        let mut reply = Vec::new();
        talking.read_until(b'\n', &mut reply).unwrap();
        assert_eq!(split_ctime_stamp(&reply).1, line.as_bytes());
        std::thread::sleep(Duration::from_millis(100));
    }
    for (name, conn) in [("idle", &mut idle), ("unfinished line", &mut unfinished)] {
        let mut rest = Vec::new();
        // Closed by the server well before the reads' own deadline.
        let closed = conn.read_to_end(&mut rest);
        assert!(closed.is_ok(), "{name}: {closed:?}");
        assert!(rest.is_empty(), "{name} got {rest:?}");
    }
    let line = b"still here\n";
    talking.get_mut().write_all(line).unwrap();
    let mut reply = Vec::new();
    talking.read_until(b'\n', &mut reply).unwrap();
    assert_eq!(split_ctime_stamp(&reply).1, line);
}

/// The threads of this process named as ring threads are.
fn ring_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "tsecho-ring")
        .count()
}

/// A library user's runtime (multi-threaded, as `#[tokio::main]` makes)
/// serves over a ring thread, and when it ends, its ring thread ends too
/// and takes the connections with it, as the runtime's own tasks would be:
/// the client sees the connection closed.
#[test]
fn a_runtime_that_ends_ends_its_ring_thread_and_connections() {
    if !uring_allowed() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (mut conn, handle) = runtime.block_on(async {
        let options = tsecho::Options {
            io: tsecho::uring::IoEngine::Uring,
            ..Default::default()
        };
        let server = common::start_with(&["tcp://127.0.0.1:0"], options).await;
        let addr = server.tcp_addr().unwrap();
        let conn = tokio::task::spawn_blocking(move || {
            let mut conn = common::connect(addr);
            conn.write_all(b"hello\n").unwrap();
            let mut reply = Vec::new();
            BufReader::new(&mut conn)
                .read_until(b'\n', &mut reply)
                .unwrap();
            assert_eq!(split_ctime_stamp(&reply).1, b"hello\n");
            conn
        });
        (conn.await.unwrap(), server)
    });
    assert_eq!(ring_threads(), 1);
    drop(runtime);
    let mut rest = Vec::new();
    let closed = conn.read_to_end(&mut rest);
    assert!(
        closed.is_ok()
            || closed
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "{closed:?}"
    );
    let deadline = Instant::now() + common::READ_DEADLINE;
    while ring_threads() > 0 {
        assert!(
            Instant::now() < deadline,
            "the ring thread outlived its runtime"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(handle);
}

/// Clients that send and never read cost each at most the output budget
/// twice (the replies the kernel is still to send, copied for the ring,
/// and the next ones), the 16 KiB queue and a little bookkeeping, beside
/// the ring thread's 1 MiB of receive buffers; others are served meanwhile.
#[test]
fn clients_that_never_read_stay_bounded_over_io_uring() {
    if !uring_allowed() {
        return;
    }
    const CLIENTS: usize = 300;
    const PER_CLIENT: usize = 256 * 1024;
    let server = serve_uring(&["tcp://127.0.0.1:0"], &[]);
    let pid = server.child.id();
    let rss_before = proc_status_kib(pid, "VmRSS");
    let flood = b"never reading this reply back..\n".repeat(2048);
    let mut stalled: Vec<(TcpStream, usize)> = (0..CLIENTS)
        .map(|_| {
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.set_recv_buffer_size(8 * 1024).unwrap();
            sock.connect(&server.addr(0).into()).unwrap();
            sock.set_nonblocking(true).unwrap();
            (sock.into(), 0)
        })
        .collect();
    let mut quiet_passes = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while quiet_passes < 3 && Instant::now() < deadline {
        let mut progress = 0;
        for (conn, sent) in &mut stalled {
            while *sent < PER_CLIENT {
                let Ok(n) = conn.write(&flood[..flood.len().min(PER_CLIENT - *sent)]) else {
                    break;
                };
                *sent += n;
                progress += n;
            }
        }
        quiet_passes = if progress == 0 { quiet_passes + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut normal = common::connect(server.addr(0));
    let mut reader = BufReader::new(normal.try_clone().unwrap());
    for i in 0..200 {
        normal
            .write_all(format!("normal {i}\n").as_bytes())
            .unwrap();
        let mut reply = Vec::new();
        reader.read_until(b'\n', &mut reply).unwrap();
        assert_eq!(
            split_ctime_stamp(&reply).1,
            format!("normal {i}\n").as_bytes()
        );
    }
    let growth = proc_status_kib(pid, "VmHWM").saturating_sub(rss_before);
    let bound = 8 * 1024 + CLIENTS * (2 * 32 + 16 + 8);
    eprintln!(
        "{CLIENTS} non-reading clients over io_uring: RSS grew by {growth} KiB (bound {bound} KiB)"
    );
    assert!(growth < bound as u64, "grew by {growth} KiB");
}
