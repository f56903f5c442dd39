//! What TLS adds to one reply, without sockets: a 64-byte request and its
//! reply through rustls's buffered API (client and server in memory, the
//! API tokio-rustls uses), against the AEAD work alone (one AES-256-GCM
//! seal and one open per side). The difference is what a leaner record
//! path (rustls's unbuffered API) could take away; docs/benchmarks.md.

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

/// A client and a server connection, past their handshake.
fn connected() -> (ClientConnection, ServerConnection) {
    let provider = tsecho::tls::provider();
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
        .and_then(|p| p.self_signed(&key))
        .expect("certificate");
    let der = PrivateKeyDer::try_from(key.serialize_der()).expect("key");
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            b.with_no_client_auth()
                .with_single_cert(vec![cert.der().clone()], der)
        })
        .expect("server config");
    let mut roots = RootCertStore::empty();
    roots.add(cert.der().clone()).expect("root");
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("client config")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").expect("name");
    let mut c = ClientConnection::new(Arc::new(client), name).expect("client");
    let mut s = ServerConnection::new(Arc::new(server)).expect("server");
    let mut wire = Vec::new();
    while c.is_handshaking() || s.is_handshaking() || c.wants_write() || s.wants_write() {
        wire.clear();
        while c.wants_write() {
            c.write_tls(&mut wire).expect("client write");
        }
        s.read_tls(&mut &wire[..]).expect("server read");
        s.process_new_packets().expect("server process");
        wire.clear();
        while s.wants_write() {
            s.write_tls(&mut wire).expect("server write");
        }
        c.read_tls(&mut &wire[..]).expect("client read");
        c.process_new_packets().expect("client process");
    }
    (c, s)
}

fn record_cost(c: &mut Criterion) {
    let mut group = c.benchmark_group("tls_64_byte_request_and_reply");
    group.throughput(Throughput::Elements(1));
    let (mut client, mut server) = connected();
    let (mut wire, mut buf) = (Vec::new(), [0u8; 256]);
    group.bench_function("rustls_buffered_both_sides", |b| {
        b.iter(|| {
            client.writer().write_all(&[b'x'; 64]).expect("write");
            wire.clear();
            client.write_tls(&mut wire).expect("client tls");
            server.read_tls(&mut &wire[..]).expect("server read");
            server.process_new_packets().expect("server process");
            let n = server.reader().read(&mut buf).expect("server plaintext");
            server.writer().write_all(&buf[..n]).expect("reply");
            wire.clear();
            server.write_tls(&mut wire).expect("server tls");
            client.read_tls(&mut &wire[..]).expect("client read");
            client.process_new_packets().expect("client process");
            black_box(client.reader().read(&mut buf).expect("client plaintext"))
        })
    });
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7; 32]).expect("key"));
    let mut record = Vec::with_capacity(128);
    let mut counter = 0u64;
    group.bench_function("aead_seal_and_open_one_side", |b| {
        b.iter(|| {
            counter += 1;
            let mut nonce = [0; 12];
            nonce[4..].copy_from_slice(&counter.to_be_bytes());
            let aad = Aad::from([23, 3, 3, 0, 81]);
            record.clear();
            record.extend_from_slice(&[b'x'; 65]);
            key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), aad, &mut record)
                .expect("seal");
            let opened = key
                .open_in_place(Nonce::assume_unique_for_key(nonce), aad, &mut record)
                .expect("open");
            black_box(opened.len())
        })
    });
    group.finish();
}

criterion_group!(benches, record_cost);
criterion_main!(benches);
