//! PROXY protocol listeners: the load balancer's header names the real
//! client, which is then what limits, logs and `{peer}` see. Only trusted
//! peers may send one; the header is read before anything else (before a
//! TLS handshake, as HAProxy sends it in TCP mode).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use crate::context::{ListenerCtx, Shared};
use crate::proxy_protocol::{self, Header, Parsed};
use crate::stats::Stats;
use crate::transport::{ByteStream, Upgrade};

/// How long a PROXY protocol header may take to arrive.
const PROXY_HEADER_TIMEOUT: Duration = Duration::from_secs(3);

pub fn is_trusted(shared: &Shared, ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    shared
        .config()
        .options
        .proxy_trusted
        .iter()
        .any(|net| net.contains(&ip))
}

/// A connection from a trusted load balancer: its header read, then served
/// as the client it names.
pub async fn serve_proxied<S: ByteStream, U: Upgrade<S>>(
    mut sock: S,
    peer: Option<SocketAddr>,
    upgrade: U,
    listener: Arc<ListenerCtx>,
    shared: Arc<Shared>,
) {
    let header = tokio::time::timeout(PROXY_HEADER_TIMEOUT, read_header(&mut sock)).await;
    let (client, early_input) = match header {
        Ok(Ok((Header::Proxied { source }, rest))) => (Some(source), rest),
        Ok(Ok((Header::Local, rest))) => (peer, rest),
        Ok(Err(e)) => {
            tracing::debug!("PROXY header refused: {e}");
            Stats::add(&shared.stats.local().proxy_rejected_malformed, 1);
            return;
        }
        Err(_) => {
            Stats::add(&shared.stats.local().proxy_rejected_malformed, 1);
            return;
        }
    };
    if let Some(connection) = super::admit(sock, &upgrade, client, early_input, &listener, &shared)
    {
        connection.await;
    }
}

/// Reads a PROXY protocol header and returns it with whatever client
/// bytes followed it in the same reads.
async fn read_header<S: ByteStream>(sock: &mut S) -> io::Result<(Header, Vec<u8>)> {
    let mut buf = vec![0; proxy_protocol::V2_MAX];
    let mut len = 0;
    loop {
        match proxy_protocol::parse(&buf[..len]) {
            Parsed::Done(header, used) => {
                buf.truncate(len);
                buf.drain(..used);
                return Ok((header, buf));
            }
            Parsed::Invalid(reason) => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, reason));
            }
            Parsed::Incomplete if len == buf.len() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "PROXY header too long",
                ));
            }
            Parsed::Incomplete => {}
        }
        match sock.read(&mut buf[len..]).await? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => len += n,
        }
    }
}
