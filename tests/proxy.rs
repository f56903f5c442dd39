//! Behind a load balancer: the PROXY protocol (v1 and v2) by hand, and real
//! HAProxy in front of three tsecho instances.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Haproxy, ServeProcess, free_tcp_port, have_tool, start_with};
use socket2::{Domain, Socket, Type};
use tsecho::Options;

fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::new(source.parse().unwrap(), 0).into())
        .unwrap();
    sock.connect(&to.into()).unwrap();
    let stream: TcpStream = sock.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

fn read_all(mut conn: TcpStream) -> String {
    let mut out = String::new();
    let _ = conn.read_to_string(&mut out);
    out
}

fn proxied_options() -> Options {
    Options {
        reply_template: Some(std::sync::Arc::new(
            "{peer} [{time}] {msg}".parse().unwrap(),
        )),
        proxy_trusted: vec!["127.0.0.1/32".parse().unwrap()],
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_v1_and_v2_headers_name_the_real_client() {
    let server = start_with(&["proxy+tcp://127.0.0.1:0"], proxied_options()).await;
    let addr = server.tcp_addr().unwrap();
    let replies = tokio::task::spawn_blocking(move || {
        let mut v1 = connect_from("127.0.0.1", addr);
        v1.write_all(b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 21567\r\nvia v1\n")
            .unwrap();
        v1.shutdown(std::net::Shutdown::Write).unwrap();
        let mut v2 = connect_from("127.0.0.1", addr);
        let mut header = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
        header.extend_from_slice(&[198, 51, 100, 9, 10, 0, 0, 1, 0x9c, 0x41, 0x54, 0x3f]);
        header.extend_from_slice(b"via v2\n");
        v2.write_all(&header).unwrap();
        v2.shutdown(std::net::Shutdown::Write).unwrap();
        (read_all(v1), read_all(v2))
    })
    .await
    .unwrap();
    assert!(
        replies.0.starts_with("192.0.2.7:40000 [") && replies.0.ends_with("] via v1\n"),
        "{replies:?}"
    );
    assert!(
        replies.1.starts_with("198.51.100.9:40001 [") && replies.1.ends_with("] via v2\n"),
        "{replies:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_untrusted_proxy_connections_are_closed_and_counted() {
    let server = start_with(&["proxy+tcp://127.0.0.1:0"], proxied_options()).await;
    let addr = server.tcp_addr().unwrap();
    let (malformed, untrusted) = tokio::task::spawn_blocking(move || {
        let mut bad = connect_from("127.0.0.1", addr);
        bad.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let mut stranger = connect_from("127.0.0.2", addr);
        let _ = stranger.write_all(b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 21567\r\nhi\n");
        (read_all(bad), read_all(stranger))
    })
    .await
    .unwrap();
    assert_eq!((malformed.as_str(), untrusted.as_str()), ("", ""));
    let stats = server.stats();
    assert_eq!(stats.proxy_rejected_malformed, 1);
    assert_eq!(stats.proxy_rejected_untrusted, 1);
    assert_eq!(stats.stream_replies, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_header_that_never_comes_is_given_up_after_3_s() {
    let server = start_with(&["proxy+tcp://127.0.0.1:0"], proxied_options()).await;
    let addr = server.tcp_addr().unwrap();
    let waited = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let silent = connect_from("127.0.0.1", addr);
        assert_eq!(read_all(silent), "");
        started.elapsed()
    })
    .await
    .unwrap();
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(8),
        "{waited:?}"
    );
    assert_eq!(server.stats().proxy_rejected_malformed, 1);
}

/// One line through the balancer from 127.0.0.9: (instance, peer) of the reply.
fn ask_through(frontend: SocketAddr, line: &str) -> Option<(String, String)> {
    let mut conn = connect_from("127.0.0.9", frontend);
    conn.write_all(line.as_bytes()).ok()?;
    let mut reply = String::new();
    BufReader::new(conn).read_line(&mut reply).ok()?;
    let mut words = reply.split_whitespace();
    let (host, peer) = (words.next()?.to_string(), words.next()?.to_string());
    reply
        .ends_with(&format!("] {line}"))
        .then_some((host, peer))
}

/// Pass: three instances behind HAProxy (send-proxy and send-proxy-v2, with
/// health checks) each see the real client address; after one is stopped,
/// new connections are all served by the other two.
#[test]
fn three_instances_behind_haproxy_see_the_client_and_survive_a_stop() {
    if !have_tool("haproxy") {
        return;
    }
    let template = "{host} {peer} [{time}] {msg}";
    let instances: Vec<ServeProcess> = (1..=3)
        .map(|n| {
            ServeProcess::start(
                &[
                    "-l",
                    "proxy+tcp://127.0.0.1:0",
                    "--proxy-trusted",
                    "127.0.0.1",
                    "--reply-template",
                    template,
                    "--instance",
                    &format!("t{n}"),
                    "--drain-timeout",
                    "1s",
                ],
                1,
            )
        })
        .collect();
    let frontend = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let servers: String = instances
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let proxy = if i == 1 {
                "send-proxy-v2"
            } else {
                "send-proxy"
            };
            format!(
                "  server t{} {} {proxy} check check-send-proxy inter 100ms fall 1 rise 1\n",
                i + 1,
                s.addr(0)
            )
        })
        .collect();
    let config = format!(
        "global\n  maxconn 1000\ndefaults\n  mode tcp\n  timeout connect 1s\n  timeout client 10s\n  timeout server 10s\n  retries 3\n  option redispatch\nfrontend fe\n  bind {frontend}\n  default_backend be\nbackend be\n  balance roundrobin\n{servers}"
    );
    let _haproxy = Haproxy::start(&config, "proxy");
    // Ready once every instance has answered through the balancer.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 3 {
        assert!(Instant::now() < deadline, "instances seen: {seen:?}");
        if TcpStream::connect(frontend).is_err() {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        if let Some((host, peer)) = ask_through(frontend, "hello\n") {
            assert!(peer.starts_with("127.0.0.9:"), "{host} saw {peer}");
            seen.insert(host);
        }
    }

    let mut stopped = instances;
    let t2 = stopped.remove(1);
    t2.signal("TERM");
    let mut t2 = t2;
    assert!(t2.child.wait().unwrap().success());
    let mut served = std::collections::BTreeMap::new();
    for i in 0..30 {
        let (host, peer) = ask_through(frontend, &format!("after stop {i}\n"))
            .expect("served after one instance stopped");
        assert!(peer.starts_with("127.0.0.9:"));
        *served.entry(host).or_insert(0) += 1;
    }
    eprintln!("after stopping t2: {served:?}");
    assert!(!served.contains_key("t2"));
    assert_eq!(served.len(), 2, "{served:?}");
}
