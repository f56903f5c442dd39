//! TLS in operation: certificates reloaded under open connections, HAProxy
//! in front (terminating TLS, re-encrypting to tsecho, and passing TLS
//! through with a PROXY header), and every service over tls://.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;
#[path = "common/pki.rs"]
mod pki;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Haproxy, ServeProcess, free_tcp_port, have_tool, within};
use pki::Pki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tsecho::client::Connector;
use tsecho::tls::TlsSettings;
use tsecho::tls::client::ClientTlsArgs;

/// A python ssl client kept open: it prints the server certificate's
/// SHA-256 first, then one reply per line it is given. Source address
/// 127.0.0.9, so that a proxy in between can be told from the client.
struct Session {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    fingerprint: String,
}

const SESSION: &str = r#"
import hashlib, socket, ssl, sys
host, port, ca, proxy = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
context = ssl.create_default_context(cafile=ca)
raw = socket.create_connection((host, port), source_address=("127.0.0.9", 0))
if proxy:
    src = raw.getsockname()
    raw.sendall(f"PROXY TCP4 {src[0]} {host} {src[1]} {port}\r\n".encode())
s = context.wrap_socket(raw, server_hostname="localhost")
print(hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest(), flush=True)
reader = s.makefile("rb")
for line in sys.stdin.buffer:
    s.sendall(line)
    sys.stdout.buffer.write(reader.readline())
    sys.stdout.flush()
"#;

impl Session {
    fn open(pki: &Pki, addr: SocketAddr, proxy_header: bool) -> Session {
        let mut child = Command::new("python3")
            .args([
                "-c",
                SESSION,
                &addr.ip().to_string(),
                &addr.port().to_string(),
            ])
            .arg(pki.path("ca.pem"))
            .arg(if proxy_header { "1" } else { "" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let input = child.stdin.take().unwrap();
        let mut output = BufReader::new(child.stdout.take().unwrap());
        let fingerprint = read_line(&mut output).trim_end().to_string();
        assert_eq!(fingerprint.len(), 64, "no session: {fingerprint:?}");
        Session {
            child,
            input,
            output,
            fingerprint,
        }
    }

    fn ask(&mut self, line: &str) -> String {
        self.input.write_all(line.as_bytes()).unwrap();
        self.input.flush().unwrap();
        read_line(&mut self.output)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line of a child's output; a child that hangs fails the test.
fn read_line(output: &mut BufReader<ChildStdout>) -> String {
    let (send, got) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut line = String::new();
            let _ = output.read_line(&mut line);
            let _ = send.send(line);
        });
        got.recv_timeout(common::READ_DEADLINE)
            .expect("no line from the client")
    })
}

/// SHA-256 of a PEM file's first certificate, as python prints it.
fn fingerprint_of(pki: &Pki, name: &str) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(pki.path(name))
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    text.trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase()
}

/// Pass: after the files are replaced and SIGHUP sent, new connections
/// get the new certificate while one opened before keeps being answered
/// on its session; a change of the files alone is picked up too; a broken
/// file is refused and the certificate in use kept.
#[test]
fn certificates_reload_without_dropping_a_connection() {
    if !have_tool("python3") || !have_tool("openssl") {
        return;
    }
    let pki = Pki::new("reload");
    let (cert, key) = (pki.path("server.pem"), pki.path("server.key"));
    let mut server = pki::serve_tls(&cert, &key, &[]);
    let addr = server.addr(0);
    let (first, second) = (
        fingerprint_of(&pki, "server.pem"),
        fingerprint_of(&pki, "server2.pem"),
    );
    let mut before = Session::open(&pki, addr, false);
    assert_eq!(before.fingerprint, first);

    pki.write("server.pem", &pki.read("server2.pem"));
    pki.write("server.key", &pki.read("server2.key"));
    server.signal("HUP");
    server.wait_for_log("TLS certificates reloaded");
    assert_eq!(Session::open(&pki, addr, false).fingerprint, second);
    assert!(before.ask("still here\n").ends_with("] still here\n"));

    // A broken certificate is refused; the one in use stays.
    pki.write("server.pem", "-----BEGIN CERTIFICATE-----\nbroken\n");
    server.signal("HUP");
    server.wait_for_log("TLS reload failed");
    assert_eq!(Session::open(&pki, addr, false).fingerprint, second);

    // Written back without a signal: the file watch reloads it.
    pki.write("server.pem", &pki.read("server2.pem"));
    server.wait_for_log("TLS certificates reloaded");
    assert!(before.ask("and still\n").ends_with("] and still\n"));
}

/// HAProxy in TCP mode with `sections` (frontends and backends).
fn haproxy(sections: &str) -> Haproxy {
    Haproxy::start(
        &format!(
            "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n{sections}"
        ),
        "tls",
    )
}

/// A session through a proxy that is still starting: retried until it
/// answers, within the read deadline.
fn session_through(pki: &Pki, addr: SocketAddr, proxy_header: bool, line: &str) -> String {
    let deadline = Instant::now() + common::READ_DEADLINE;
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            let mut session = Session::open(pki, addr, proxy_header);
            return session.ask(line);
        }
        assert!(Instant::now() < deadline, "{addr} never answered");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Pass: HAProxy terminating TLS and sending PROXY v2 to a plain tsecho
/// listener, HAProxy re-encrypting to a tls:// tsecho backend that it
/// verifies, and HAProxy passing TLS through with a PROXY header to
/// proxy+tls://: each reply names the real client (127.0.0.9).
#[test]
fn haproxy_terminates_reencrypts_and_passes_tls_through() {
    if !have_tool("haproxy") || !have_tool("python3") {
        return;
    }
    let pki = Pki::new("haproxy");
    let (cert, key, ca) = (
        pki.path("server.pem"),
        pki.path("server.key"),
        pki.path("ca.pem"),
    );
    // HAProxy wants the key in the same file as the chain.
    pki.write(
        "combined.pem",
        &(pki.read("server.pem") + &pki.read("server.key")),
    );
    let server = ServeProcess::start(
        &[
            "-l",
            "proxy+tcp://127.0.0.1:0",
            "-l",
            "tls://127.0.0.1:0",
            "-l",
            "proxy+tls://127.0.0.1:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--proxy-trusted",
            "127.0.0.1",
            "--reply-template",
            "{peer} {tls_version} [{time}] {msg}",
        ],
        3,
    );
    let ports: Vec<u16> = (0..3).map(|_| free_tcp_port()).collect();
    let combined = pki.path("combined.pem");
    let frontends = format!(
        "frontend terminate\n  bind 127.0.0.1:{} ssl crt {combined}\n  default_backend plain\n\
         frontend plaintext\n  bind 127.0.0.1:{}\n  default_backend encrypted\n\
         frontend passthrough\n  bind 127.0.0.1:{}\n  default_backend passed\n",
        ports[0], ports[1], ports[2]
    );
    let backends = format!(
        "backend plain\n  server t {} send-proxy-v2\n\
         backend encrypted\n  server t {} ssl verify required ca-file {ca} sni str(localhost)\n\
         backend passed\n  server t {} send-proxy\n",
        server.addr(0),
        server.addr(1),
        server.addr(2)
    );
    let _haproxy = haproxy(&(frontends + &backends));
    let front = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));

    let terminated = session_through(&pki, front(0), false, "terminated\n");
    assert!(terminated.starts_with("127.0.0.9:"), "{terminated}");
    assert!(terminated.ends_with("] terminated\n"), "{terminated}");

    let passed = session_through(&pki, front(2), false, "passed through\n");
    assert!(passed.starts_with("127.0.0.9:"), "{passed}");
    assert!(passed.contains(" TLSv1.3 ["), "{passed}");

    // Re-encrypted: the client speaks plain TCP to HAProxy, which verifies
    // tsecho's certificate against the CA.
    let deadline = Instant::now() + common::READ_DEADLINE;
    let reply = loop {
        if let Ok(mut conn) = std::net::TcpStream::connect(front(1)) {
            conn.set_read_timeout(Some(common::READ_DEADLINE)).unwrap();
            conn.write_all(b"re-encrypted\n").unwrap();
            let mut reply = String::new();
            let _ = BufReader::new(conn).read_line(&mut reply);
            if !reply.is_empty() {
                break reply;
            }
        }
        assert!(Instant::now() < deadline, "HAProxy never answered");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(reply.contains(" TLSv1.3 ["), "{reply}");
    assert!(reply.ends_with("] re-encrypted\n"), "{reply}");
}

/// A server with a certificate made for the test run.
fn self_signed() -> tsecho::Options {
    tsecho::Options {
        tls: TlsSettings {
            self_signed: true,
            ..TlsSettings::default()
        },
        ..tsecho::Options::default()
    }
}

/// The library's client, taking the self-signed certificate on trust.
fn insecure() -> ClientTlsArgs {
    ClientTlsArgs {
        insecure: true,
        ..ClientTlsArgs::default()
    }
}

/// Pass: echo, daytime, time, discard and chargen behave over tls:// as
/// over tcp://, through the library's own client.
#[tokio::test]
async fn every_service_works_over_tls() {
    let mut builder = tsecho::Server::builder().options(self_signed());
    for service in ["echo", "daytime", "time", "discard", "chargen"] {
        builder = builder
            .listen(&format!("{service}+tls://127.0.0.1:0"))
            .unwrap();
    }
    let server = builder.start().await.unwrap();
    let mut replies = Vec::new();
    for listening in server.listeners() {
        let connector =
            Connector::new(&listening.endpoint, Duration::from_secs(10), &insecure()).unwrap();
        let service = listening.endpoint.service;
        let mut conn = within(connector.connect()).await.unwrap();
        conn.write_all(b"ping\n").await.unwrap();
        if service == tsecho::ServiceKind::Discard {
            conn.shutdown().await.unwrap();
        }
        let mut reply = [0; 200];
        let mut got = 0;
        // Chargen never ends: a full buffer is enough. The others close.
        while got < reply.len() {
            match within(conn.read(&mut reply[got..])).await.unwrap() {
                0 => break,
                n => got += n,
            }
            if service == tsecho::ServiceKind::Echo && got == 5 {
                break;
            }
        }
        replies.push((service, reply[..got].to_vec()));
    }
    for (service, reply) in replies {
        match service {
            tsecho::ServiceKind::Echo => assert_eq!(reply, b"ping\n"),
            tsecho::ServiceKind::Daytime => assert!(reply.ends_with(b"\r\n"), "{reply:?}"),
            tsecho::ServiceKind::Time => assert_eq!(reply.len(), 4),
            tsecho::ServiceKind::Discard => assert!(reply.is_empty()),
            tsecho::ServiceKind::Chargen => assert_eq!(reply.len(), 200),
            other => panic!("{other:?}"),
        }
    }
    server.shutdown().await;
}

/// Pass: the drain promise holds over TLS: lines sent before the server
/// is told to stop are all answered, then the session ends cleanly.
#[tokio::test]
async fn a_draining_tls_listener_answers_every_line_it_received() {
    let server = tsecho::Server::builder()
        .options(self_signed())
        .listen("tls://127.0.0.1:0")
        .unwrap()
        .start()
        .await
        .unwrap();
    let endpoint = server.listeners()[0].endpoint.clone();
    let connector = Connector::new(&endpoint, Duration::from_secs(10), &insecure()).unwrap();
    let mut conn = within(connector.connect()).await.unwrap();
    conn.write_all(b"one\ntwo\nthree\n").await.unwrap();
    conn.flush().await.unwrap();
    let stopping = tokio::spawn(server.shutdown());
    let mut replies = Vec::new();
    within(conn.read_to_end(&mut replies)).await.unwrap();
    // Closed, so that the server need not linger for our end.
    drop(conn);
    within(stopping).await.unwrap();
    let replies = String::from_utf8(replies).unwrap();
    let lines: Vec<&str> = replies.lines().collect();
    assert_eq!(lines.len(), 3, "{replies}");
    for (line, sent) in lines.iter().zip(["one", "two", "three"]) {
        assert!(line.ends_with(&format!("] {sent}")), "{replies}");
    }
}

/// Pass: a PROXY header and the ClientHello arriving in one segment (as
/// they do when a balancer forwards at once) both reach their reader: the
/// header names the client, the rest goes to the handshake. Before, the
/// ClientHello's first bytes were taken for plaintext and the handshake
/// hung (HAProxy's passthrough test failed one run in four).
#[test]
fn a_proxy_header_and_client_hello_in_one_write_are_both_read() {
    use std::io::Read;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let options = tsecho::Options {
        proxy_trusted: vec!["127.0.0.1/32".parse().unwrap()],
        reply_template: Some(std::sync::Arc::new("{peer} {msg}".parse().unwrap())),
        ..self_signed()
    };
    let server = runtime.block_on(async {
        tsecho::Server::builder()
            .options(options)
            .listen("proxy+tls://127.0.0.1:0")
            .unwrap()
            .start()
            .await
            .unwrap()
    });
    let addr = server.tls_addr().unwrap();
    let client_config = std::sync::Arc::new(insecure().config().unwrap());
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = rustls::ClientConnection::new(client_config, name).unwrap();
    let mut first = b"PROXY TCP4 192.0.2.7 127.0.0.1 4321 443\r\n".to_vec();
    tls.write_tls(&mut first).unwrap();
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(common::READ_DEADLINE)).unwrap();
    sock.write_all(&first).unwrap();
    let mut stream = rustls::StreamOwned::new(tls, sock);
    stream.write_all(b"one segment\n").unwrap();
    let mut reply = Vec::new();
    let mut byte = [0; 1];
    while !reply.ends_with(b"\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "{reply:?}");
        reply.push(byte[0]);
    }
    assert_eq!(reply, b"192.0.2.7:4321 one segment\n");
    drop(stream);
    runtime.block_on(server.shutdown());
}

/// Pass: a reload can bring the first tls:// listener (its certificates
/// loaded then), and a later reload naming other certificate files
/// serves them to new sessions while an older session keeps its replies.
#[test]
fn a_reload_adds_a_tls_listener_and_changes_its_certificate_files() {
    if !have_tool("python3") || !have_tool("openssl") {
        return;
    }
    let pki = Pki::new("config-reload");
    let config = common::ConfigFile::new("tls-config-reload", "listen = [\"tcp://127.0.0.1:0\"]\n");
    let mut server = ServeProcess::start(&["--config", config.path()], 1);
    let with_tls = |name: &str| {
        format!(
            "listen = [\"tcp://127.0.0.1:0\", \"tls://127.0.0.1:0\"]\n\
             tls-cert = \"{}\"\ntls-key = \"{}\"\n",
            pki.path(&format!("{name}.pem")),
            pki.path(&format!("{name}.key"))
        )
    };
    config.write(&with_tls("server"));
    server.signal("HUP");
    let line = server.wait_for_log("listening on tls://");
    server.wait_for_log("configuration reloaded from");
    let url = line.split("listening on tls://").nth(1).unwrap();
    let addr: SocketAddr = url.split_whitespace().next().unwrap().parse().unwrap();
    let mut before = Session::open(&pki, addr, false);
    assert_eq!(before.fingerprint, fingerprint_of(&pki, "server.pem"));

    config.write(&with_tls("server2"));
    server.signal("HUP");
    server.wait_for_log("configuration reloaded from");
    let after = Session::open(&pki, addr, false);
    assert_eq!(after.fingerprint, fingerprint_of(&pki, "server2.pem"));
    assert!(before.ask("kept\n").ends_with("] kept\n"));
}
