//! A server spread over several single-threaded runtimes, one copy of each
//! TCP and UDP socket per runtime (SO_REUSEPORT): every copy serves, and
//! the shared port still refuses a second server.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpStream, UdpSocket};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tsecho::{Server, Shards};

const RUNTIMES: usize = 3;
/// Enough clients that the kernel's hash gives every copy some: a copy
/// nobody served would leave about a third of them unanswered.
const CLIENTS: usize = 150;
const PATIENCE: Duration = Duration::from_secs(10);

/// Sockets bound to `port` in a /proc/net table, in state `state` (hex).
fn sockets_on_port(table: &str, port: u16, state: &str) -> usize {
    let port = format!(":{port:04X}");
    std::fs::read_to_string(table)
        .unwrap()
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[1].ends_with(&port) && fields[3] == state
        })
        .count()
}

async fn ask_tcp(addr: SocketAddr, n: usize) -> String {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(format!("client {n}\n").as_bytes())
        .await
        .unwrap();
    let mut reply = String::new();
    common::within(BufReader::new(conn).read_line(&mut reply))
        .await
        .unwrap();
    reply
}

async fn ask_udp(addr: SocketAddr, n: usize) -> String {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.connect(addr).await.unwrap();
    sock.send(format!("datagram {n}").as_bytes()).await.unwrap();
    let mut buf = [0; 256];
    let len = common::within(sock.recv(&mut buf)).await.unwrap();
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

/// Pass: three copies of the TCP listener and of the UDP socket are bound,
/// and 150 connections and 150 datagram sockets (spread by the kernel over
/// the copies) are all answered.
#[test]
fn every_copy_of_a_spread_listener_serves() {
    let shards = Shards::start(RUNTIMES).unwrap();
    shards.block_on(async {
        let server = Server::builder()
            .listen("tcp://127.0.0.1:0")
            .unwrap()
            .listen("udp://127.0.0.1:0")
            .unwrap()
            .spread_over(shards.handles())
            .start()
            .await
            .unwrap();
        let tcp = server.tcp_addr().unwrap();
        let udp = server.udp_addr().unwrap();
        assert_eq!(sockets_on_port("/proc/net/tcp", tcp.port(), "0A"), RUNTIMES);
        assert_eq!(sockets_on_port("/proc/net/udp", udp.port(), "07"), RUNTIMES);

        let mut clients = JoinSet::new();
        for n in 0..CLIENTS {
            clients.spawn(async move { (n, ask_tcp(tcp, n).await, ask_udp(udp, n).await) });
        }
        let mut answered = 0;
        while let Some(done) = timeout(PATIENCE, clients.join_next()).await.unwrap() {
            let (n, line, datagram) = done.unwrap();
            assert!(line.ends_with(&format!("] client {n}\n")), "{line:?}");
            assert!(
                datagram.ends_with(&format!("] datagram {n}")),
                "{datagram:?}"
            );
            answered += 1;
        }
        assert_eq!(answered, CLIENTS);
        assert_eq!(server.stats().stream_replies, CLIENTS as u64);
        assert_eq!(server.stats().datagram_replies, CLIENTS as u64);
        server.shutdown().await;
    });
}

/// Pass: the copies share the port among themselves only. A second
/// server, spread or not, is refused it ("address in use"), and a spread
/// server is refused a port an ordinary one holds.
#[test]
fn a_spread_port_is_still_in_use_for_others() {
    let shards = Shards::start(2).unwrap();
    shards.block_on(async {
        for transport in ["tcp", "udp"] {
            let spread = Server::builder()
                .listen(&format!("{transport}://127.0.0.1:0"))
                .unwrap()
                .spread_over(shards.handles())
                .start()
                .await
                .unwrap();
            let taken = format!("{}", spread.listeners()[0].endpoint);
            for runtimes in [shards.handles(), Vec::new()] {
                let err = Server::builder()
                    .listen(&taken)
                    .unwrap()
                    .spread_over(runtimes)
                    .start()
                    .await
                    .err()
                    .expect("a second server must not share the port");
                assert!(err.to_string().ends_with("address already in use"), "{err}");
            }
            drop(spread);

            let plain = Server::builder()
                .listen(&format!("{transport}://127.0.0.1:0"))
                .unwrap()
                .start()
                .await
                .unwrap();
            let taken = format!("{}", plain.listeners()[0].endpoint);
            let err = Server::builder()
                .listen(&taken)
                .unwrap()
                .spread_over(shards.handles())
                .start()
                .await
                .err()
                .expect("a spread server must not join an ordinary one");
            assert!(err.to_string().ends_with("address already in use"), "{err}");
        }
    });
}
