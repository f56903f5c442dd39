//! The inetd family end to end: echo, discard, chargen, daytime and time on
//! TCP, UDP and Unix sockets, checked against the RFCs, against rdate and
//! nc, and byte for byte against xinetd's built-in services.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{
    ServeProcess, free_tcp_port, have_tool, rfc864_lines, round_trip, socket_path, start,
    tsecho_bin,
};
use tsecho::ServerHandle;

fn read_exactly(addr: SocketAddr, len: usize) -> Vec<u8> {
    let mut conn = common::connect(addr);
    let mut buf = vec![0; len];
    conn.read_exact(&mut buf).unwrap();
    buf
}

fn udp_ask(server: SocketAddr, request: &[u8]) -> Vec<u8> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    sock.send_to(request, server).unwrap();
    let mut buf = vec![0; 65_536];
    let (n, from) = sock.recv_from(&mut buf).unwrap();
    assert_eq!(from, server);
    buf.truncate(n);
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chargen_stream_is_the_rfc_864_sample() {
    let server = start(&["chargen+tcp://127.0.0.1:0"]).await;
    let addr = server.tcp_addr().unwrap();
    // Three whole cycles of 95 lines and a bit: the rotation wraps correctly.
    let len = 3 * 95 * 74 + 100;
    let got = tokio::task::spawn_blocking(move || read_exactly(addr, len))
        .await
        .unwrap();
    assert_eq!(got, rfc864_lines(3 * 95 + 2)[..len]);
}

#[tokio::test]
async fn chargen_datagram_holds_pattern_bounded_by_the_request() {
    let server = start(&["chargen+udp://127.0.0.1:0"]).await;
    let addr = server.udp_addr().unwrap();
    let rfc = rfc864_lines(7);
    let reply = tokio::task::spawn_blocking(move || udp_ask(addr, b""))
        .await
        .unwrap();
    assert_eq!(reply, rfc[..74], "an empty request gets one line");
    let reply = tokio::task::spawn_blocking(move || udp_ask(addr, &[b'x'; 300]))
        .await
        .unwrap();
    assert_eq!(reply, rfc[..300], "no bigger than the request");
    let reply = tokio::task::spawn_blocking(move || udp_ask(addr, &[b'x'; 2000]))
        .await
        .unwrap();
    assert_eq!(reply, rfc[..512], "at most 512 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_returns_every_byte_on_every_transport() {
    let gram = socket_path("echo-gram");
    let stream = socket_path("echo-stream");
    let server = start(&[
        "echo+tcp://127.0.0.1:0",
        "echo+udp://[::1]:0",
        &format!("echo+unix://{}", stream.display()),
        &format!("echo+unixgram://{}", gram.display()),
    ])
    .await;
    let tcp = server.tcp_addr().unwrap();
    let payload: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    let expected = payload.clone();
    let got = tokio::task::spawn_blocking(move || round_trip(tcp, &payload))
        .await
        .unwrap();
    assert_eq!(got, expected);

    let udp = server.udp_addr().unwrap();
    let sock = tokio::net::UdpSocket::bind("[::1]:0").await.unwrap();
    sock.send_to(b"no newline \0\xff", udp).await.unwrap();
    let mut buf = vec![0; 1024];
    let (n, _) = common::within(sock.recv_from(&mut buf)).await.unwrap();
    assert_eq!(&buf[..n], b"no newline \0\xff");

    let mut conn = common::connect_unix(&stream);
    conn.write_all(b"unix bytes").unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    conn.read_to_end(&mut out).unwrap();
    assert_eq!(out, b"unix bytes");

    let me = socket_path("echo-client");
    let sock = std::os::unix::net::UnixDatagram::bind(&me).unwrap();
    sock.send_to(b"unix datagram", &gram).unwrap();
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"unix datagram");
    let _ = std::fs::remove_file(&me);
}

#[tokio::test]
async fn discard_reads_everything_and_answers_nothing() {
    let server = start(&["discard+tcp://127.0.0.1:0", "discard+udp://127.0.0.1:0"]).await;
    let tcp = server.tcp_addr().unwrap();
    let got = tokio::task::spawn_blocking(move || round_trip(tcp, &[b'z'; 1 << 20]))
        .await
        .unwrap();
    assert!(got.is_empty());
    assert_eq!(server.stats().bytes_in, 1 << 20);
    assert_eq!(server.stats().bytes_out, 0);
}

#[tokio::test]
async fn daytime_is_one_ctime_line_with_crlf_then_close() {
    let server = start(&["daytime+tcp://127.0.0.1:0", "daytime+udp://127.0.0.1:0"]).await;
    let tcp = server.tcp_addr().unwrap();
    let udp = server.udp_addr().unwrap();
    let (line, datagram) = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        common::connect(tcp).read_to_end(&mut out).unwrap();
        (out, udp_ask(udp, b"\n"))
    })
    .await
    .unwrap();
    for reply in [&line, &datagram] {
        let text = std::str::from_utf8(reply).unwrap();
        let time = text.strip_suffix("\r\n").expect("CRLF-terminated");
        assert_eq!(time.len(), 24);
        chrono::NaiveDateTime::parse_from_str(time, "%a %b %e %H:%M:%S %Y").unwrap();
    }
}

fn rfc868_now() -> u32 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    (unix + 2_208_988_800) as u32
}

#[tokio::test]
async fn time_is_four_big_endian_bytes_on_streams_and_any_datagram() {
    let path = socket_path("time");
    let server = start(&[
        "time+tcp://127.0.0.1:0",
        "time+udp://127.0.0.1:0",
        &format!("time+unix://{}", path.display()),
    ])
    .await;
    let tcp = server.tcp_addr().unwrap();
    let udp = server.udp_addr().unwrap();
    let (stream, datagram, unix) = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        common::connect(tcp).read_to_end(&mut out).unwrap();
        let mut unix = Vec::new();
        common::connect_unix(&path).read_to_end(&mut unix).unwrap();
        (out, udp_ask(udp, b""), unix)
    })
    .await
    .unwrap();
    for reply in [stream, datagram, unix] {
        let seconds = u32::from_be_bytes(reply.try_into().expect("exactly 4 bytes"));
        assert!(seconds.wrapping_sub(rfc868_now()).wrapping_add(5) <= 10);
    }
}

fn spawn_rdate(args: &[&str]) -> Output {
    Command::new("rdate").args(args).output().unwrap()
}

/// rdate's own reading of our clock, checked against ours.
fn assert_rdate_reads_now(out: Output) {
    assert!(
        out.status.success(),
        "rdate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    // `Wed Nov 25 14:49:50 UTC 2026`, in rdate's local zone: compare in UTC.
    let fields: Vec<&str> = text.split_whitespace().collect();
    let stamp = format!("{} {} {} {}", fields[1], fields[2], fields[3], fields[5]);
    let parsed = chrono::NaiveDateTime::parse_from_str(&stamp, "%b %d %H:%M:%S %Y").unwrap();
    let local = chrono::Local::now().naive_local();
    assert!(
        (local - parsed).num_seconds().abs() <= 5,
        "rdate printed {text:?}"
    );
}

#[tokio::test]
async fn rdate_reads_our_time_over_tcp_and_udp() {
    if !have_tool("rdate") {
        return;
    }
    let server = start(&["time+tcp://127.0.0.1:0", "time+udp://127.0.0.1:0"]).await;
    let tcp = server.tcp_addr().unwrap().port().to_string();
    let udp = server.udp_addr().unwrap().port().to_string();
    let (over_tcp, over_udp) = tokio::task::spawn_blocking(move || {
        (
            spawn_rdate(&["-p", "-o", &tcp, "127.0.0.1"]),
            spawn_rdate(&["-pu", "-o", &udp, "127.0.0.1"]),
        )
    })
    .await
    .unwrap();
    assert_rdate_reads_now(over_tcp);
    assert_rdate_reads_now(over_udp);
}

#[test]
fn nc_talks_to_echo_discard_daytime_and_chargen() {
    if !have_tool("nc") {
        return;
    }
    let server = ServeProcess::start(
        &[
            "-l",
            "echo+tcp://127.0.0.1:0",
            "-l",
            "discard+tcp://127.0.0.1:0",
            "-l",
            "daytime+udp://127.0.0.1:0",
            "-l",
            "chargen+tcp://127.0.0.1:0",
        ],
        4,
    );
    let port = |n: usize| server.addr(n).port().to_string();
    let nc = |args: &[&str], input: &[u8]| {
        let mut child = Command::new("nc")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap().stdout
    };
    assert_eq!(
        nc(&["-N", "127.0.0.1", &port(0)], b"echo me\r\n"),
        b"echo me\r\n"
    );
    assert_eq!(nc(&["-N", "127.0.0.1", &port(1)], b"into the void\n"), b"");
    let day = nc(&["-u", "-w", "1", "127.0.0.1", &port(2)], b"\n");
    assert!(day.ends_with(b"\r\n") && day.len() == 26, "{day:?}");

    // nc reads chargen until we have enough and hang up on it.
    let mut chargen = Command::new("nc")
        .args(["-d", "127.0.0.1", &port(3)])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = vec![0; 95 * 74];
    chargen
        .stdout
        .take()
        .unwrap()
        .read_exact(&mut lines)
        .unwrap();
    let _ = chargen.kill();
    let _ = chargen.wait();
    assert_eq!(lines, rfc864_lines(95));
}

/// xinetd running only its internal services, on 127.0.0.1, for comparison.
struct Xinetd {
    child: Child,
    dir: PathBuf,
}

impl Xinetd {
    /// Starts xinetd with (service, socket_type, port) entries and waits for
    /// its "Started working" log line.
    fn start(services: &[(&str, &str, u16)]) -> Xinetd {
        let dir = std::env::temp_dir().join(format!(
            "tsecho-xinetd-{}-{}",
            std::process::id(),
            services[0].2
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut conf = String::from(
            "defaults\n{\n\tinstances = UNLIMITED\n\tper_source = UNLIMITED\n\tcps = 1000000 1\n}\n",
        );
        for (name, socket_type, port) in services {
            let (protocol, wait) = if *socket_type == "stream" {
                ("tcp", "no")
            } else {
                ("udp", "yes")
            };
            conf += &format!(
                "service {name}\n{{\n\tdisable = no\n\ttype = INTERNAL UNLISTED\n\tid = {name}-{socket_type}\n\tsocket_type = {socket_type}\n\tprotocol = {protocol}\n\tport = {port}\n\tbind = 127.0.0.1\n\tuser = root\n\twait = {wait}\n}}\n"
            );
        }
        let conf_path = dir.join("xinetd.conf");
        let log = dir.join("xinetd.log");
        let _ = std::fs::remove_file(&log);
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new("xinetd")
            .arg("-dontfork")
            .arg("-f")
            .arg(&conf_path)
            .arg("-pidfile")
            .arg(dir.join("xinetd.pid"))
            .arg("-filelog")
            .arg(&log)
            .spawn()
            .unwrap();
        wait_for_log(&log, "Started working");
        Xinetd { child, dir }
    }
}

/// xinetd has no other readiness signal than its log line.
fn wait_for_log(log: &Path, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(text)
    {
        assert!(Instant::now() < deadline, "xinetd did not start: {log:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Xinetd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn chargen_echo_and_discard_match_xinetd_byte_for_byte() {
    if !have_tool("xinetd") {
        return;
    }
    let ports = [free_tcp_port(), free_tcp_port(), free_tcp_port()];
    let _xinetd = Xinetd::start(&[
        ("chargen", "stream", ports[0]),
        ("echo", "stream", ports[1]),
        ("discard", "stream", ports[2]),
    ]);
    let ours = ServeProcess::start(
        &[
            "-l",
            "chargen+tcp://127.0.0.1:0",
            "-l",
            "echo+tcp://127.0.0.1:0",
            "-l",
            "discard+tcp://127.0.0.1:0",
        ],
        3,
    );
    let theirs = |n: usize| SocketAddr::from(([127, 0, 0, 1], ports[n]));

    // xinetd's ring has 93 characters (no space, no `~`): the first 22 lines agree.
    let first_22 = 22 * 74;
    let xinetd_chargen = read_exactly(theirs(0), first_22);
    assert_eq!(read_exactly(ours.addr(0), first_22), xinetd_chargen);
    assert_eq!(xinetd_chargen, rfc864_lines(22));

    let input: Vec<u8> = (0..=255u8).cycle().take(50_000).collect();
    assert_eq!(
        round_trip(ours.addr(1), &input),
        round_trip(theirs(1), &input)
    );
    assert_eq!(
        round_trip(ours.addr(2), &input),
        round_trip(theirs(2), &input)
    );
    eprintln!("xinetd comparison: chargen 22 lines, echo and discard of 50,000 bytes agree");
}

/// Pass: a datagram from source port 7 or 19 (or 0 is impossible to send)
/// gets no reply and is counted; an ordinary port still gets its reply.
#[tokio::test]
async fn datagrams_from_reflecting_ports_are_dropped_and_counted() {
    let server = start(&["echo+udp://127.0.0.1:0", "chargen+udp://127.0.0.1:0"]).await;
    let listeners: Vec<SocketAddr> = server
        .listeners()
        .iter()
        .map(|l| match l.local {
            tsecho::listener::LocalAddr::Inet(a) => a,
            _ => unreachable!(),
        })
        .collect();
    let mut senders = Vec::new();
    for port in [7, 19] {
        match UdpSocket::bind(("127.0.0.1", port)) {
            Ok(sock) => senders.push(sock),
            Err(e) => {
                common::skip(&format!("cannot bind UDP port {port} ({e}); run as root"));
                return;
            }
        }
    }
    for sock in &senders {
        for target in &listeners {
            sock.send_to(b"reflect me", target).unwrap();
        }
    }
    // Datagrams on one socket are served in order: once an ordinary
    // client's reply is back, the earlier ones have been dealt with.
    let (a, b) = (listeners[0], listeners[1]);
    tokio::task::spawn_blocking(move || {
        udp_ask(a, b"ordinary");
        udp_ask(b, b"ordinary");
    })
    .await
    .unwrap();
    assert_eq!(server.stats().datagrams_dropped_reflector_port, 4);
    for sock in &senders {
        sock.set_nonblocking(true).unwrap();
        let mut buf = [0; 64];
        let err = sock.recv(&mut buf).unwrap_err();
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::WouldBlock,
            "no reply to a reflecting port"
        );
    }
}

/// Builds a UDP datagram from `from_port` to `to` and sends it through a
/// raw socket: the spoofed first packet between two servers.
fn send_spoofed_udp(from_port: u16, to: SocketAddr, payload: &[u8]) -> std::io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))?;
    let mut packet = Vec::with_capacity(8 + payload.len());
    packet.extend_from_slice(&from_port.to_be_bytes());
    packet.extend_from_slice(&to.port().to_be_bytes());
    packet.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    packet.extend_from_slice(&[0, 0]); // no checksum, allowed over IPv4
    packet.extend_from_slice(payload);
    raw.send_to(&packet, &to.into())?;
    Ok(())
}

async fn wait_until(server: &ServerHandle, done: impl Fn(&tsecho::stats::Snapshot) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done(&server.stats()) {
        assert!(
            Instant::now() < deadline,
            "stats never got there: {:?}",
            server.stats()
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Pass: two echo servers aimed at each other by one spoofed datagram
/// exchange one reply each, then the loop guard drops the bounce.
#[tokio::test]
async fn two_udp_echo_servers_aimed_at_each_other_do_not_loop() {
    let a = start(&["echo+udp://127.0.0.1:0"]).await;
    let b = start(&["stamp+udp://127.0.0.1:0"]).await;
    let (a_addr, b_addr) = (a.udp_addr().unwrap(), b.udp_addr().unwrap());
    if let Err(e) = send_spoofed_udp(b_addr.port(), a_addr, b"ping-pong") {
        common::skip(&format!("no raw socket to spoof with ({e}); run as root"));
        return;
    }
    wait_until(&a, |s| s.datagrams_dropped_loop == 1).await;
    // A dropped the bounce, so nothing is in flight any more.
    assert_eq!(a.stats().datagram_replies, 1);
    assert_eq!(b.stats().datagram_replies, 1);
}

#[test]
fn unknown_service_is_a_usage_error_listing_the_valid_names() {
    let out = Command::new(tsecho_bin())
        .args(["serve", "--listen", "gopher+tcp://:70"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stamp, echo, discard, chargen, daytime, time"),
        "{stderr}"
    );
}

#[test]
fn inetd_flag_binds_the_standard_set_shifted_by_the_base() {
    // In a network namespace of its own, where all twelve ports are free.
    let base = 20_000;
    let Some(server) = ServeProcess::start_isolated(&["--inetd", "--inetd-base", "20000"], 12)
    else {
        return;
    };
    let mut got = server.listening.clone();
    got.sort();
    let mut want: Vec<String> = [
        ("echo", 7),
        ("discard", 9),
        ("daytime", 13),
        ("chargen", 19),
        ("time", 37),
    ]
    .iter()
    .flat_map(|(name, port)| {
        let port = base + port;
        [
            format!("{name}+tcp://[::]:{port} ({name})"),
            format!("{name}+udp://[::]:{port} ({name})"),
        ]
    })
    .chain([
        "tcp://[::]:21567 (stamp)".to_string(),
        "udp://[::]:21567 (stamp)".to_string(),
    ])
    .collect();
    want.sort();
    assert_eq!(got, want);
}

/// A deterministic, non-repeating-looking byte stream to push through echo.
fn pattern_chunk(index: u64, chunk: &mut [u8]) {
    let mut x = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in chunk.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
}

/// Pass: 100 MiB sent through TCP echo come back identical, and the
/// server's peak memory stays under 64 MiB.
#[test]
fn hundred_mib_echo_round_trip_is_exact_with_bounded_server_memory() {
    const CHUNK: usize = 64 * 1024;
    const CHUNKS: u64 = 1600; // 100 MiB
    let server = ServeProcess::start(&["-l", "echo+tcp://127.0.0.1:0"], 1);
    let conn = common::connect(server.addr(0));
    let mut writer = conn.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let mut chunk = vec![0; CHUNK];
        for i in 0..CHUNKS {
            pattern_chunk(i, &mut chunk);
            writer.write_all(&chunk).unwrap();
        }
        writer.shutdown(std::net::Shutdown::Write).unwrap();
    });
    let mut reader = conn;
    let (mut expected, mut got) = (vec![0; CHUNK], vec![0; CHUNK]);
    for i in 0..CHUNKS {
        pattern_chunk(i, &mut expected);
        reader.read_exact(&mut got).unwrap();
        assert!(got == expected, "chunk {i} differs");
    }
    assert_eq!(reader.read(&mut got).unwrap(), 0, "nothing after the echo");
    sender.join().unwrap();
    let hwm = common::proc_status_kib(server.child.id(), "VmHWM");
    eprintln!("100 MiB echoed; server VmHWM {hwm} KiB");
    assert!(hwm < 64 * 1024, "server peak memory {hwm} KiB");
}
