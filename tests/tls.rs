//! TLS listeners against clients nobody here wrote (openssl s_client,
//! gnutls-cli, ncat, socat, python's ssl), mutual TLS, and hostile peers.
//! Certificates are made when the tests run (common/pki.rs).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;
#[path = "common/pki.rs"]
mod pki;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};

use common::{READ_DEADLINE, ServeProcess, connect, have_tool, split_ctime_stamp, tsecho_bin};
use pki::Pki;

/// Starts `tool`, types `line` into it, and returns the first line it
/// prints that ends with the line's text (the reply), or None when the
/// tool ends without one. The tool is killed afterwards.
fn converse(tool: &mut Command, line: &str) -> Option<String> {
    let mut child = tool
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(line.as_bytes()).unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let wanted = line.trim_end().to_string();
    let (send, reply) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for printed in stdout.lines() {
            let Ok(printed) = printed else { break };
            if printed.ends_with(&wanted) {
                let _ = send.send(printed);
                break;
            }
        }
    });
    let reply = reply.recv_timeout(READ_DEADLINE).ok();
    drop(stdin);
    let _ = child.kill();
    let _ = child.wait();
    reply
}

/// A stamped reply: `[ctime] message`.
fn assert_stamped(reply: Option<String>, message: &str, tool: &str) {
    let reply = reply.unwrap_or_else(|| panic!("{tool}: no reply"));
    let (time, rest) = split_ctime_stamp(reply.as_bytes());
    assert_eq!(time.len(), 24, "{tool}: {reply:?}");
    assert_eq!(rest, message.trim_end().as_bytes(), "{tool}: {reply:?}");
}

fn python_client(pki: &Pki, addr: SocketAddr, cert: Option<&str>) -> Command {
    let script = r#"
import socket, ssl, sys
host, port, ca, cert = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
context = ssl.create_default_context(cafile=ca)
if cert:
    context.load_cert_chain(cert + ".pem", cert + ".key")
s = context.wrap_socket(socket.create_connection((host, port)), server_hostname="localhost")
s.sendall(sys.stdin.buffer.readline())
data = b""
while not data.endswith(b"\n"):
    chunk = s.recv(1024)
    if not chunk:
        break
    data += chunk
sys.stdout.buffer.write(data)
sys.stdout.flush()
"#;
    let mut command = Command::new("python3");
    command.args([
        "-c",
        script,
        &addr.ip().to_string(),
        &addr.port().to_string(),
        &pki.path("ca.pem"),
        &cert.map_or(String::new(), |c| pki.path(c)),
    ]);
    command
}

/// The CA-signed server certificate, with /metrics for the counters.
fn serve_tls(pki: &Pki, extra: &[&str]) -> ServeProcess {
    let mut args = vec!["--metrics", "tcp://127.0.0.1:0"];
    args.extend_from_slice(extra);
    pki::serve_tls(&pki.path("server.pem"), &pki.path("server.key"), &args)
}

/// The value of one /metrics sample whose line starts with `prefix`.
pub fn metric(server: &mut ServeProcess, prefix: &str) -> u64 {
    let base = server.metrics_base();
    let mut conn = connect(base.trim_start_matches("http://"));
    conn.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    body.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no {prefix} in {body}"))
        .parse()
        .unwrap()
}

/// Pass: each outside client verifies tsecho's certificate against the CA
/// and gets `[ctime] message` back, over TLS 1.3 (and 1.2 for openssl).
#[test]
fn outside_tls_clients_get_stamped_replies() {
    let pki = Pki::new("clients");
    let mut server = serve_tls(&pki, &[]);
    let addr = server.addr(0);
    let (port, ca) = (addr.port().to_string(), pki.path("ca.pem"));
    let target = format!("localhost:{port}");
    if have_tool("openssl") {
        for version in ["-tls1_3", "-tls1_2"] {
            let mut openssl = Command::new("openssl");
            openssl.args(["s_client", "-quiet", "-verify_return_error", version]);
            openssl.args([
                "-connect",
                &target,
                "-servername",
                "localhost",
                "-CAfile",
                &ca,
            ]);
            let line = format!("hello from openssl {version}\n");
            assert_stamped(converse(&mut openssl, &line), &line, "openssl");
        }
    }
    if have_tool("gnutls-cli") {
        let mut gnutls = Command::new("gnutls-cli");
        gnutls.args([
            &format!("--x509cafile={ca}"),
            &format!("--port={port}"),
            "localhost",
        ]);
        let line = "hello from gnutls\n";
        assert_stamped(converse(&mut gnutls, line), line, "gnutls-cli");
    }
    if have_tool("ncat") {
        let mut ncat = Command::new("ncat");
        ncat.args([
            "--ssl",
            "--ssl-verify",
            "--ssl-trustfile",
            &ca,
            "localhost",
            &port,
        ]);
        let line = "hello from ncat\n";
        assert_stamped(converse(&mut ncat, line), line, "ncat");
    }
    if have_tool("socat") {
        let mut socat = Command::new("socat");
        socat.args(["-", &format!("OPENSSL:{target},cafile={ca}")]);
        let line = "hello from socat\n";
        assert_stamped(converse(&mut socat, line), line, "socat");
    }
    if have_tool("python3") {
        let line = "hello from python\n";
        let reply = converse(&mut python_client(&pki, addr, None), line);
        assert_stamped(reply, line, "python3");
    }
    // Sessions are counted per version: openssl's -tls1_2 was one.
    if have_tool("openssl") {
        assert_eq!(sessions(&mut server, "TLSv1.2"), 1);
        assert!(sessions(&mut server, "TLSv1.3") >= 1);
    }
}

/// Pass: with `--tls-client-auth optional`, a client without a certificate
/// is served with `{client_cert}` empty, one with a certificate shows its
/// subject, and `{sni}` is the name the client asked for.
#[test]
fn optional_client_auth_serves_both_and_shows_the_name_asked_for() {
    let pki = Pki::new("optional");
    let ca = pki.path("ca.pem");
    let server = serve_tls(
        &pki,
        &[
            "--tls-client-ca",
            &ca,
            "--tls-client-auth",
            "optional",
            "--reply-template",
            "{sni}|{client_cert}| {msg}",
        ],
    );
    let url = format!("tls://127.0.0.1:{}", server.addr(0).port());
    let mut anonymous = Command::new(tsecho_bin());
    anonymous.args(["client", &url, "--ca", &ca, "--sni", "localhost"]);
    let reply = converse(&mut anonymous, "anonymous\n").expect("served without a certificate");
    assert_eq!(reply, "localhost|| anonymous");
    let mut alice = Command::new(tsecho_bin());
    alice.args(["client", &url, "--ca", &ca, "--sni", "localhost"]);
    alice.args([
        "--cert",
        &pki.path("client.pem"),
        "--key",
        &pki.path("client.key"),
    ]);
    let reply = converse(&mut alice, "alice\n").expect("served with a certificate");
    assert!(
        reply.starts_with("localhost|") && reply.contains("CN=alice"),
        "{reply}"
    );
    assert!(reply.ends_with("| alice"), "{reply}");
}

/// Pass: tsecho's own client verifies the server: the right CA is served,
/// a CA that did not sign it and a name the certificate does not carry
/// (`--sni`) are refused with exit 76 and the reason, and `--insecure`
/// is served with a warning.
#[test]
fn our_client_verifies_the_server_and_says_why_not() {
    let pki = Pki::new("verify");
    let server = serve_tls(&pki, &[]);
    let url = format!("tls://localhost:{}", server.addr(0).port());
    let run = |extra: &[&str]| {
        let mut command = Command::new(tsecho_bin());
        command.args(["client", &url]).args(extra);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
        child.wait_with_output().unwrap()
    };
    let (ca, rogue) = (pki.path("ca.pem"), pki.path("rogue-client.pem"));
    let cases: [(&[&str], Option<i32>, &str); 4] = [
        (&["--ca", &ca], Some(0), ""),
        (&["--ca", &rogue], Some(76), "invalid peer certificate"),
        (
            &["--ca", &ca, "--sni", "elsewhere.example"],
            Some(76),
            "invalid peer certificate",
        ),
        (&["--insecure"], Some(0), "not verified"),
    ];
    for (extra, code, said) in cases {
        let out = run(extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), code, "{extra:?}: {stderr}");
        assert!(stderr.contains(said), "{extra:?}: {stderr}");
    }
}

/// Pass: with a client CA, no certificate and one from another CA are
/// refused and counted by reason, TLS 1.1 is refused, and a valid client
/// certificate is served with its subject in `{client_cert}`, as openssl
/// itself prints it.
#[test]
fn mutual_tls_refuses_what_it_must_and_shows_the_client() {
    let pki = Pki::new("mtls");
    let ca = pki.path("ca.pem");
    let mut server = serve_tls(
        &pki,
        &[
            "--tls-client-ca",
            &ca,
            "--reply-template",
            "{client_cert} {tls_version} [{time}] {msg}",
        ],
    );
    let addr = server.addr(0);
    let url = format!("tls://localhost:{}", addr.port());
    let client = |cert: Option<&str>| {
        let mut command = Command::new(tsecho_bin());
        command.args(["client", &url, "--ca", &ca]);
        if let Some(name) = cert {
            command.args(["--cert", &pki.path(&format!("{name}.pem"))]);
            command.args(["--key", &pki.path(&format!("{name}.key"))]);
        }
        command
    };
    assert_eq!(converse(&mut client(None), "no cert\n"), None);
    assert_eq!(converse(&mut client(Some("rogue-client")), "rogue\n"), None);
    let reply = converse(&mut client(Some("client")), "alice here\n").expect("alice is served");
    if have_tool("openssl") {
        let subject = Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
            .arg(pki.path("client.pem"))
            .output()
            .unwrap();
        let subject = String::from_utf8(subject.stdout).unwrap();
        let subject = subject.trim().trim_start_matches("subject=");
        assert!(
            reply.starts_with(&format!("{subject} TLSv1.3 [")),
            "{reply}"
        );
        let mut old = Command::new("openssl");
        old.args([
            "s_client",
            "-quiet",
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
        ]);
        old.args(["-connect", &addr.to_string()]);
        assert_eq!(converse(&mut old, "tls 1.1\n"), None);
        assert!(failures(&mut server, "incompatible") >= 1);
    }
    assert!(reply.contains("CN=alice"), "{reply}");
    assert_eq!(failures(&mut server, "no_client_cert"), 1);
    assert_eq!(failures(&mut server, "bad_client_cert"), 1);
}

/// A TLS counter of the server's one listener: `family` with one more
/// label (`reason="timeout"`, `version="TLSv1.3"`).
fn tls_count(server: &mut ServeProcess, family: &str, label: &str) -> u64 {
    let listener = server.listening[0]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    metric(
        server,
        &format!("tsecho_tls_{family}{{listener=\"{listener}\",service=\"stamp\",{label}}}"),
    )
}

fn failures(server: &mut ServeProcess, reason: &str) -> u64 {
    tls_count(
        server,
        "handshake_failures_total",
        &format!("reason=\"{reason}\""),
    )
}

fn sessions(server: &mut ServeProcess, version: &str) -> u64 {
    tls_count(
        server,
        "connections_total",
        &format!("version=\"{version}\""),
    )
}

/// Pass: plain text on a TLS port is closed (not left hanging), a client
/// that never finishes its handshake is closed after the timeout, and a
/// flood of handshakes past the cap is closed at once while a session
/// already established keeps being served.
#[test]
fn hostile_peers_are_closed_and_served_sessions_survive() {
    let pki = Pki::new("hostile");
    let mut server = serve_tls(
        &pki,
        &["--tls-handshake-timeout", "1s", "--tls-max-handshakes", "2"],
    );
    let addr = server.addr(0);
    let python = have_tool("python3");

    let mut plain = connect(addr);
    plain.write_all(b"hello in plain text\n").unwrap();
    let mut answer = Vec::new();
    plain.read_to_end(&mut answer).unwrap();
    assert!(!answer.windows(6).any(|w| w == b"hello "), "{answer:?}");

    // Two connections that never say a word hold both handshake places...
    let silent: Vec<TcpStream> = (0..2).map(|_| connect(addr)).collect();
    // ...so the next is closed at once (the read does not wait for the
    // one-second timeout to tell: it sees the end of the stream).
    let mut refused = connect(addr);
    let mut rest = Vec::new();
    refused.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    // The silent ones are closed by the handshake timeout.
    for mut conn in silent {
        let mut rest = Vec::new();
        conn.read_to_end(&mut rest).unwrap();
    }
    if python {
        let line = "still served\n";
        assert_stamped(
            converse(&mut python_client(&pki, addr, None), line),
            line,
            "python3",
        );
    }
    assert_eq!(failures(&mut server, "not_tls"), 1);
    assert_eq!(failures(&mut server, "busy"), 1);
    assert_eq!(failures(&mut server, "timeout"), 2);
}

/// Pass: a tls:// listener without a certificate, and unreadable
/// certificate files, stop the server before it binds, with exit code 78
/// (EX_CONFIG) and a line that names the problem.
#[test]
fn unusable_certificates_are_configuration_errors() {
    let pki = Pki::new("errors");
    pki.write("garbage.pem", "not a certificate\n");
    let (garbage, key) = (pki.path("garbage.pem"), pki.path("server.key"));
    for (args, expected) in [
        (vec!["-l", "tls://127.0.0.1:0"], "needs --tls-cert"),
        (
            vec![
                "-l",
                "tls://127.0.0.1:0",
                "--tls-cert",
                &garbage,
                "--tls-key",
                &key,
            ],
            "garbage.pem",
        ),
        (
            vec![
                "-l",
                "tls://127.0.0.1:0",
                "--tls-cert",
                &key,
                "--tls-key",
                &key,
            ],
            "no CERTIFICATE",
        ),
    ] {
        let out = Command::new(tsecho_bin())
            .arg("serve")
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

/// Pass: check-config reads the certificates too: a key that is not the
/// certificate's fails it (exit 78) before any server is started, and the
/// right pair passes.
#[test]
fn check_config_catches_a_key_that_is_not_the_certificates() {
    let pki = Pki::new("check");
    for (key, code) in [("server2.key", 78), ("server.key", 0)] {
        let config = format!(
            "listen = [\"tls://127.0.0.1:0\"]\ntls-cert = {:?}\ntls-key = {:?}\n",
            pki.path("server.pem"),
            pki.path(key)
        );
        pki.write("tsecho.toml", &config);
        let out = Command::new(tsecho_bin())
            .args(["check-config", &pki.path("tsecho.toml")])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{key}: {stderr}");
    }
}

/// Pass: keys of every kind the issue names load: RSA (PKCS#1, as
/// `openssl genrsa -traditional` writes it), ECDSA (SEC1) and Ed25519,
/// each made by openssl, each serving openssl s_client.
#[test]
fn rsa_ecdsa_and_ed25519_keys_made_by_openssl_serve() {
    if !have_tool("openssl") {
        return;
    }
    let pki = Pki::new("keys");
    for (kind, genkey) in [
        ("rsa", "genrsa -traditional -out"),
        ("ec", "ecparam -name prime256v1 -genkey -noout -out"),
        ("ed25519", "genpkey -algorithm ed25519 -out"),
    ] {
        let key = pki.path(&format!("{kind}.key"));
        let cert = pki.path(&format!("{kind}.pem"));
        let bits = if kind == "rsa" { "2048" } else { "" };
        let script = format!(
            "openssl {genkey} {key} {bits} && openssl req -x509 -key {key} -out {cert} -days 1 \
             -subj /CN=localhost -addext subjectAltName=DNS:localhost"
        );
        let made = Command::new("sh").args(["-c", &script]).output().unwrap();
        assert!(made.status.success(), "{kind}: {made:?}");
        let server = pki::serve_tls(&cert, &key, &[]);
        let mut openssl = Command::new("openssl");
        openssl.args([
            "s_client",
            "-quiet",
            "-verify_return_error",
            "-CAfile",
            &cert,
        ]);
        openssl.args(["-connect", &format!("localhost:{}", server.addr(0).port())]);
        let line = format!("signed with {kind}\n");
        assert_stamped(converse(&mut openssl, &line), &line, kind);
    }
}

/// Pass: `tsecho ping tls://` reports the handshake apart from the round
/// trips, and `tsecho bench --reconnect` over tls:// opens a session per
/// request, every reply correct.
#[test]
fn ping_reports_the_handshake_and_bench_reconnects_over_tls() {
    let pki = Pki::new("ping");
    let server = serve_tls(&pki, &[]);
    let url = format!("tls://localhost:{}", server.addr(0).port());
    let ca = pki.path("ca.pem");
    let ping = Command::new(tsecho_bin())
        .args([
            "ping",
            &url,
            "--ca",
            &ca,
            "--count",
            "2",
            "--interval",
            "10ms",
        ])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&ping.stdout);
    assert!(ping.status.success(), "{printed}");
    let setup = printed.lines().nth(1).unwrap_or_default();
    assert!(
        setup.starts_with("connected in ") && setup.contains(", TLS handshake "),
        "{printed}"
    );
    assert!(printed.contains("2 probes sent, 2 answered"), "{printed}");

    let bench = Command::new(tsecho_bin())
        .args(["bench", &url, "--ca", &ca, "--reconnect", "--conns", "2"])
        .args(["--duration", "1s", "--warmup", "0s", "--json"])
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&bench.stdout).unwrap();
    assert_eq!(report["reconnect"], true);
    assert!(report["replies"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["errors"], 0, "{report}");
    assert_eq!(report["mismatches"], 0, "{report}");

    // Kept connections, closed and open loop, over TLS too.
    for load in [["--pipeline", "4"], ["--rate", "400"]] {
        let bench = Command::new(tsecho_bin())
            .args(["bench", &url, "--ca", &ca, "--conns", "2"])
            .args(load)
            .args(["--duration", "0.5s", "--warmup", "0s", "--json"])
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&bench.stdout).unwrap();
        assert!(
            report["replies"].as_u64().unwrap() > 0,
            "{load:?}: {report}"
        );
        assert_eq!(report["errors"], 0, "{load:?}: {report}");
        assert_eq!(report["mismatches"], 0, "{load:?}: {report}");
    }
}
