//! The stamp service end to end over real loopback sockets, driven by
//! tokio clients in the test process.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{socket_path, split_ctime_stamp, start, start_with};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket, UnixDatagram, UnixStream};
use tsecho::framing::Framing;
use tsecho::{Options, Transport};

/// Reads the whole reply stream until the server closes it.
async fn replies_until_eof<S: tokio::io::AsyncRead + Unpin>(stream: S) -> Vec<Vec<u8>> {
    let mut reader = BufReader::new(stream);
    let mut replies = Vec::new();
    loop {
        let mut reply = Vec::new();
        if common::within(reader.read_until(b'\n', &mut reply))
            .await
            .unwrap()
            == 0
        {
            return replies;
        }
        replies.push(reply);
    }
}

async fn exchange_tcp(addr: std::net::SocketAddr, input: &[u8]) -> Vec<Vec<u8>> {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(input).await.unwrap();
    conn.shutdown().await.unwrap();
    replies_until_eof(conn).await
}

#[tokio::test]
async fn tcp_lines_keep_their_own_newlines_on_ipv4_and_ipv6() {
    for url in ["tcp://127.0.0.1:0", "tcp://[::1]:0"] {
        let server = start(&[url]).await;
        let replies = exchange_tcp(server.tcp_addr().unwrap(), b"one\r\ntwo\nlast").await;
        let messages: Vec<&[u8]> = replies.iter().map(|r| split_ctime_stamp(r).1).collect();
        assert_eq!(messages, [&b"one\r\n"[..], b"two\n", b"last"], "{url}");
        server.shutdown().await;
    }
}

#[tokio::test]
async fn nul_and_invalid_utf8_pass_through_unchanged() {
    let server = start(&["tcp://127.0.0.1:0"]).await;
    let replies = exchange_tcp(server.tcp_addr().unwrap(), b"\0\xff\xfe\x80 ok\n").await;
    assert_eq!(split_ctime_stamp(&replies[0]).1, b"\0\xff\xfe\x80 ok\n");
}

#[tokio::test]
async fn over_long_line_is_answered_in_stamped_pieces() {
    let options = Options {
        framing: Framing::Lines { max_line: 4 },
        ..Options::default()
    };
    let server = start_with(&["tcp://127.0.0.1:0"], options).await;
    let mut conn = TcpStream::connect(server.tcp_addr().unwrap())
        .await
        .unwrap();
    conn.write_all(b"abcdefghij\n").await.unwrap();
    conn.shutdown().await.unwrap();
    let mut all = Vec::new();
    common::within(conn.read_to_end(&mut all)).await.unwrap();
    let text = String::from_utf8(all).unwrap();
    let pieces: Vec<&str> = text.split('[').skip(1).map(|p| &p[26..]).collect();
    assert_eq!(pieces, ["abcd", "efgh", "ij\n"]);
}

#[tokio::test]
async fn raw_framing_answers_each_read_like_the_seed() {
    let options = Options {
        framing: Framing::Raw { chunk: 1024 },
        ..Options::default()
    };
    let server = start_with(&["tcp://127.0.0.1:0"], options).await;
    let mut conn = TcpStream::connect(server.tcp_addr().unwrap())
        .await
        .unwrap();
    conn.write_all(b"no newline").await.unwrap();
    let mut buf = vec![0; 1024];
    let n = common::within(conn.read(&mut buf)).await.unwrap();
    assert_eq!(split_ctime_stamp(&buf[..n]).1, b"no newline");
}

#[tokio::test]
async fn half_closed_client_still_gets_every_reply() {
    let server = start(&["tcp://127.0.0.1:0"]).await;
    let input: Vec<u8> = (0..2000)
        .flat_map(|i| format!("line {i}\n").into_bytes())
        .collect();
    let replies = exchange_tcp(server.tcp_addr().unwrap(), &input).await;
    assert_eq!(replies.len(), 2000);
    for (i, reply) in replies.iter().enumerate() {
        assert_eq!(split_ctime_stamp(reply).1, format!("line {i}\n").as_bytes());
    }
}

#[tokio::test]
async fn udp_answers_every_datagram_including_empty_ones() {
    for url in ["udp://127.0.0.1:0", "udp://[::1]:0"] {
        let server = start(&[url]).await;
        let addr = server.udp_addr().unwrap();
        let local = if addr.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        };
        let sock = UdpSocket::bind(local).await.unwrap();
        sock.connect(addr).await.unwrap();
        let mut buf = vec![0; 65536];
        for message in [&b"hello"[..], b"", b"\0\xff"] {
            sock.send(message).await.unwrap();
            let n = common::within(sock.recv(&mut buf)).await.unwrap();
            assert_eq!(split_ctime_stamp(&buf[..n]).1, message, "{url}");
        }
        assert_eq!(server.stats().datagram_replies, 3);
    }
}

#[tokio::test]
async fn largest_udp_datagram_gets_a_reply_cut_to_fit() {
    let server = start(&["udp://127.0.0.1:0"]).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(server.udp_addr().unwrap()).await.unwrap();
    let request = vec![b'x'; 65_507];
    sock.send(&request).await.unwrap();
    let mut buf = vec![0; 70_000];
    let n = common::within(sock.recv(&mut buf)).await.unwrap();
    assert_eq!(n, 65_507);
    let (_, message) = split_ctime_stamp(&buf[..n]);
    assert_eq!(message, &request[..65_507 - 27]);
    assert_eq!(server.stats().datagram_replies_truncated, 1);
}

#[tokio::test]
async fn unix_stream_and_datagram_sockets_are_served() {
    let stream_path = socket_path("stream");
    let gram_path = socket_path("gram");
    let server = start(&[
        &format!("unix://{}", stream_path.display()),
        &format!("unixgram://{}", gram_path.display()),
    ])
    .await;

    let mut conn = UnixStream::connect(&stream_path).await.unwrap();
    conn.write_all(b"over unix\n").await.unwrap();
    conn.shutdown().await.unwrap();
    let replies = replies_until_eof(conn).await;
    assert_eq!(split_ctime_stamp(&replies[0]).1, b"over unix\n");

    let client_path = socket_path("client");
    let sock = UnixDatagram::bind(&client_path).unwrap();
    sock.connect(&gram_path).unwrap();
    sock.send(b"datagram").await.unwrap();
    let mut buf = vec![0; 1024];
    let n = common::within(sock.recv(&mut buf)).await.unwrap();
    assert_eq!(split_ctime_stamp(&buf[..n]).1, b"datagram");
    let _ = std::fs::remove_file(&client_path);

    server.shutdown().await;
    assert!(!stream_path.exists(), "socket file removed on shutdown");
    assert!(!gram_path.exists(), "socket file removed on shutdown");
}

#[tokio::test]
async fn abstract_unix_socket_is_served() {
    let name = format!("tsecho-test-{}", std::process::id());
    let server = start(&[&format!("unix://@{name}")]).await;
    let mut conn = tsecho::client::connect_stream(
        &format!("unix://@{name}").parse().unwrap(),
        Duration::from_secs(3),
    )
    .await
    .unwrap();
    conn.write_all(b"abstract\n").await.unwrap();
    conn.shutdown().await.unwrap();
    let replies = replies_until_eof(conn).await;
    assert_eq!(split_ctime_stamp(&replies[0]).1, b"abstract\n");
    drop(server);
}

#[tokio::test]
async fn stale_unix_socket_file_is_replaced_but_a_live_one_is_refused() {
    let path = socket_path("stale");
    let url = format!("unix://{}", path.display());
    // A socket file whose server is gone.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let server = start(&[&url]).await;

    let err = tsecho::Server::builder()
        .listen(&url)
        .unwrap()
        .start()
        .await
        .err()
        .expect("a live socket must not be taken over");
    assert!(err.to_string().ends_with("address already in use"), "{err}");
    assert_eq!(err.exit_code(), 69);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_each_get_five_hundred_replies_in_order() {
    let server = start(&["tcp://127.0.0.1:0"]).await;
    let addr = server.tcp_addr().unwrap();
    let clients: Vec<_> = (0..200)
        .map(|c| {
            tokio::spawn(async move {
                let conn = TcpStream::connect(addr).await.unwrap();
                let (reader, mut writer) = conn.into_split();
                let send = tokio::spawn(async move {
                    for i in 0..500 {
                        writer
                            .write_all(format!("client {c} line {i}\n").as_bytes())
                            .await
                            .unwrap();
                    }
                    writer.shutdown().await.unwrap();
                });
                let replies = replies_until_eof(reader).await;
                send.await.unwrap();
                assert_eq!(replies.len(), 500, "client {c}");
                for (i, reply) in replies.iter().enumerate() {
                    assert_eq!(
                        split_ctime_stamp(reply).1,
                        format!("client {c} line {i}\n").as_bytes()
                    );
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(server.stats().stream_replies, 200 * 500);
    assert_eq!(server.stats().connections_accepted, 200);
}

#[tokio::test]
async fn other_formats_and_utc() {
    let options = Options {
        time: tsecho::clock::TimeStyle {
            format: "unix".parse().unwrap(),
            utc: true,
        },
        ..Options::default()
    };
    let server = start_with(&["tcp://127.0.0.1:0"], options).await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let replies = exchange_tcp(server.tcp_addr().unwrap(), b"x\n").await;
    let text = String::from_utf8(replies[0].clone()).unwrap();
    let secs: u64 = text[1..text.find(']').unwrap()].parse().unwrap();
    assert!(secs >= before && secs <= before + 5, "{text}");
    assert!(text.ends_with("] x\n"));
}

#[tokio::test]
async fn shutdown_answers_complete_lines_and_then_closes() {
    let server = start(&["tcp://127.0.0.1:0"]).await;
    let mut conn = TcpStream::connect(server.tcp_addr().unwrap())
        .await
        .unwrap();
    // Wait for the server to have answered once, so the connection is served.
    conn.write_all(b"first\n").await.unwrap();
    let mut reader = BufReader::new(conn);
    let mut reply = Vec::new();
    common::within(reader.read_until(b'\n', &mut reply))
        .await
        .unwrap();
    reader
        .get_mut()
        .write_all(b"second\nthird\npartial")
        .await
        .unwrap();
    server.shutdown().await;
    let rest = replies_until_eof(reader).await;
    let messages: Vec<&[u8]> = rest.iter().map(|r| split_ctime_stamp(r).1).collect();
    assert_eq!(messages, [&b"second\n"[..], b"third\n"]);
}

/// Pass: connections the kernel had completed, but the server had not yet
/// accepted, when the shutdown came are still accepted and answered, over
/// TCP and Unix alike: closing the listener with them queued would reset
/// clients whose `connect` had succeeded. The test's runtime is the
/// server's and does not run between the connects and the shutdown, so
/// the accept loop cannot have taken them in the ordinary way.
#[tokio::test]
async fn shutdown_serves_the_connections_still_in_the_accept_queue() {
    use std::io::{Read, Write};
    let path = socket_path("queued");
    let unix_url = format!("unix://{}", path.display());
    for url in ["tcp://127.0.0.1:0", &unix_url] {
        let server = start(&[url]).await;
        let mut queued: Vec<Box<dyn Read>> = Vec::new();
        for i in 0..3 {
            let line = format!("queued {i}\n");
            if let Some(addr) = server.tcp_addr() {
                let mut conn = std::net::TcpStream::connect(addr).unwrap();
                conn.write_all(line.as_bytes()).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                queued.push(Box::new(conn));
            } else {
                let mut conn = std::os::unix::net::UnixStream::connect(&path).unwrap();
                conn.write_all(line.as_bytes()).unwrap();
                conn.set_read_timeout(Some(Duration::from_secs(10)))
                    .unwrap();
                queued.push(Box::new(conn));
            }
        }
        server.shutdown().await;
        for (i, mut conn) in queued.into_iter().enumerate() {
            let mut reply = Vec::new();
            let read = conn.read_to_end(&mut reply);
            assert!(read.is_ok(), "{url}, connection {i}: {read:?}");
            assert_eq!(
                split_ctime_stamp(&reply).1,
                format!("queued {i}\n").as_bytes(),
                "{url}"
            );
        }
    }
}

#[tokio::test]
async fn bound_addresses_are_reported_per_transport() {
    let server = start(&["tcp://127.0.0.1:0", "udp://127.0.0.1:0"]).await;
    let tcp = server.addr(Transport::Tcp).unwrap();
    let udp = server.addr(Transport::Udp).unwrap();
    assert_ne!(tcp.port(), 0);
    assert_ne!(udp.port(), 0);
    assert_eq!(server.listeners().len(), 2);
    assert_eq!(
        server.listeners()[0].endpoint.to_string(),
        format!("tcp://{tcp}")
    );
}

/// Pass: on a wildcard address, the reply leaves from the address the
/// request was sent to, so a connected UDP client (which only accepts
/// datagrams from its peer) gets it; IPv4 wildcard and dual-stack alike.
#[tokio::test]
async fn udp_on_a_wildcard_replies_from_the_address_the_request_came_to() {
    for url in ["udp://0.0.0.0:0", "udp://:0"] {
        let server = start(&[url]).await;
        let port = server.udp_addr().unwrap().port();
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        sock.connect(("127.0.0.2", port)).await.unwrap();
        sock.send(b"multi-homed").await.unwrap();
        let mut buf = [0; 128];
        let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{url}: no reply accepted from 127.0.0.2"))
            .unwrap();
        assert_eq!(split_ctime_stamp(&buf[..n]).1, b"multi-homed", "{url}");
    }
}

/// Pass: UDP sockets are served by threads blocked in a receive; shutting
/// the server down wakes them (the test would hang otherwise), and the
/// port is free again once `shutdown` returns. Dropping a second server
/// without `shutdown` frees its port too.
#[tokio::test]
async fn shutdown_wakes_the_udp_threads_and_frees_the_port() {
    for graceful in [true, false] {
        let server = start(&["udp://127.0.0.1:0"]).await;
        let addr = server.udp_addr().unwrap();
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"before", addr).await.unwrap();
        let mut buf = [0; 64];
        let (len, _) = common::within(client.recv_from(&mut buf)).await.unwrap();
        assert!(buf[..len].ends_with(b"] before"));
        if graceful {
            tokio::time::timeout(Duration::from_secs(10), server.shutdown())
                .await
                .expect("shutdown waits for the UDP thread, which must wake");
        } else {
            drop(server);
        }
        // The thread may still be finishing after a drop: the port comes
        // free as it does.
        let rebound = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match std::net::UdpSocket::bind(addr) {
                    Ok(sock) => return sock,
                    Err(_) if !graceful => tokio::task::yield_now().await,
                    Err(e) => panic!("port still held after shutdown: {e}"),
                }
            }
        })
        .await
        .expect("the port must come free");
        drop(rebound);
    }
}
