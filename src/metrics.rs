//! The operator's window: Prometheus metrics on `/metrics`, liveness on
//! `/healthz`, and readiness on `/readyz` (503 once draining, so a load
//! balancer stops sending new clients before the listeners close).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::context::{ListenerCtx, LogLimiter, Shared};
use crate::endpoint::Endpoint;
use crate::error::Error;
use crate::listener::accept_next;
use crate::stats::{LATENCY_BUCKETS, Snapshot};

/// Scrapers and probes are few. Past this many open connections, more
/// wait in the kernel's queue, where they cost the server no descriptor:
/// a flood of idle connections here cannot starve the stamp listeners.
const MAX_CONNECTIONS: usize = 32;
/// A request's headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// However busy, a connection is closed after this long; scrapers simply
/// connect again, and an idle keep-alive connection cannot hold its place.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Binds and registers the metrics listener, if one is asked for.
pub async fn bind(
    endpoint: Option<&Endpoint>,
    handed_over: Option<std::os::fd::OwnedFd>,
) -> Result<Option<(SocketAddr, TcpListener)>, Error> {
    let Some(endpoint) = endpoint else {
        return Ok(None);
    };
    let listen_error = |reason| Error::Listen {
        endpoint: endpoint.to_string(),
        reason,
    };
    let (addr, listener) = match handed_over {
        Some(fd) => {
            let listener = std::net::TcpListener::from(fd);
            listener.set_nonblocking(true).map_err(listen_error)?;
            (listener.local_addr().map_err(listen_error)?, listener)
        }
        None => crate::listener::bind::bind_tcp(endpoint).await?,
    };
    let listener = TcpListener::from_std(listener).map_err(listen_error)?;
    Ok(Some((addr, listener)))
}

/// Serves HTTP until the server's tasks are aborted (after the drain), so
/// that /readyz answers 503 while connections drain; or until the socket
/// was handed to a process that took over, which answers from then on.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, tracker: TaskTracker) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let accept_log = LogLimiter::default();
    loop {
        // A permit before the accept, as mini-redis does.
        let permit = tokio::select! {
            _ = shared.metrics_stop.cancelled() => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let Some((stream, _)) =
            accept_next(&listener, &shared.metrics_stop, &shared.stats, &accept_log).await
        else {
            return;
        };
        let shared = shared.clone();
        tracker.spawn(async move {
            serve_connection(stream, shared).await;
            drop(permit);
        });
    }
}

async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    let abort = shared.abort.clone();
    let service = service_fn(move |request| respond(request, shared.clone()));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let connection = http.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = tokio::time::timeout(CONNECTION_LIFETIME, connection) => {}
        _ = abort.cancelled() => {}
    }
}

async fn respond(
    request: Request<Incoming>,
    shared: Arc<Shared>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let draining = shared.shutdown.is_cancelled();
    let unready = draining || shared.unready.is_cancelled();
    let (status, content_type, body) = match request.uri().path() {
        "/metrics" => (
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            exposition(
                &shared.stats.snapshot(),
                shared.gate.open(),
                draining,
                &shared.listeners(),
            ) + &tls_exposition(&shared)
                + &fault_exposition(&shared)
                + &reload_exposition(&shared),
        ),
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/readyz" if unready => (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            if draining { "draining\n" } else { "stopping\n" }.to_string(),
        ),
        "/readyz" => (StatusCode::OK, "text/plain", "ready\n".to_string()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = content_type.parse() {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    Ok(response)
}

/// The counters in Prometheus text format (version 0.0.4).
pub fn exposition(
    s: &Snapshot,
    open: usize,
    draining: bool,
    listeners: &[Arc<ListenerCtx>],
) -> String {
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        // Counters end in _total, and in this format the family is named
        // exactly as its samples.
        let suffix = if kind == "counter" { "_total" } else { "" };
        let _ = writeln!(out, "# HELP tsecho_{name}{suffix} {help}");
        let _ = writeln!(out, "# TYPE tsecho_{name}{suffix} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "tsecho_{name}{suffix}{labels} {value}");
        }
    };
    metric(
        "connections_open",
        "gauge",
        "Stream connections open now.",
        &[("", open as u64)],
    );
    metric(
        "connections_accepted",
        "counter",
        "Stream connections accepted.",
        &[("", s.connections_accepted)],
    );
    metric(
        "connections_rejected",
        "counter",
        "Connections closed at once by a limit.",
        &[
            ("{reason=\"max_connections\"}", s.connections_rejected_max),
            ("{reason=\"per_ip\"}", s.connections_rejected_per_ip),
        ],
    );
    metric(
        "connections_closed_by_timeout",
        "counter",
        "Connections closed by a timeout.",
        &[
            ("{reason=\"idle\"}", s.closed_idle_timeout),
            ("{reason=\"line\"}", s.closed_line_timeout),
            ("{reason=\"write\"}", s.closed_write_timeout),
        ],
    );
    metric(
        "accept_errors",
        "counter",
        "Failed accepts.",
        &[("", s.accept_errors)],
    );
    metric(
        "proxy_rejected",
        "counter",
        "Connections closed over the PROXY protocol, by reason.",
        &[
            ("{reason=\"untrusted\"}", s.proxy_rejected_untrusted),
            ("{reason=\"malformed\"}", s.proxy_rejected_malformed),
        ],
    );
    metric(
        "stream_replies",
        "counter",
        "Replies sent on streams.",
        &[("", s.stream_replies)],
    );
    metric(
        "datagram_replies",
        "counter",
        "Datagrams answered.",
        &[("", s.datagram_replies)],
    );
    metric(
        "datagram_replies_truncated",
        "counter",
        "Datagram replies cut to fit.",
        &[("", s.datagram_replies_truncated)],
    );
    metric(
        "datagrams_dropped",
        "counter",
        "Datagrams not answered, by reason.",
        &[
            (
                "{reason=\"reflector_port\"}",
                s.datagrams_dropped_reflector_port,
            ),
            ("{reason=\"loop\"}", s.datagrams_dropped_loop),
            ("{reason=\"rate_limit\"}", s.datagrams_dropped_rate_limit),
            ("{reason=\"byte_budget\"}", s.datagrams_dropped_byte_budget),
        ],
    );
    metric(
        "datagrams_slipped",
        "counter",
        "Datagrams over the rate answered anyway.",
        &[("", s.datagrams_slipped)],
    );
    metric(
        "received_bytes",
        "counter",
        "Bytes read from clients.",
        &[("", s.bytes_in)],
    );
    metric(
        "sent_bytes",
        "counter",
        "Bytes written to clients.",
        &[("", s.bytes_out)],
    );
    metric(
        "draining",
        "gauge",
        "1 while shutting down.",
        &[("", u64::from(draining))],
    );
    write_per_listener(&mut out, listeners);
    out
}

/// Per listener and service: connections, replies, and the reply-latency
/// histogram (from the read that brought a request to the write of its
/// reply).
fn write_per_listener(out: &mut String, listeners: &[Arc<ListenerCtx>]) {
    let labels = |l: &ListenerCtx| format!("listener=\"{}\",service=\"{}\"", l.name, l.service);
    let _ = writeln!(
        out,
        "# HELP tsecho_listener_connections_accepted_total Connections accepted, per listener."
    );
    let _ = writeln!(
        out,
        "# TYPE tsecho_listener_connections_accepted_total counter"
    );
    for l in listeners {
        let n = l.stats.connections_accepted();
        let _ = writeln!(
            out,
            "tsecho_listener_connections_accepted_total{{{}}} {n}",
            labels(l)
        );
    }
    let _ = writeln!(
        out,
        "# HELP tsecho_listener_replies_total Replies sent, per listener."
    );
    let _ = writeln!(out, "# TYPE tsecho_listener_replies_total counter");
    for l in listeners {
        let n = l.stats.replies();
        let _ = writeln!(out, "tsecho_listener_replies_total{{{}}} {n}", labels(l));
    }
    let _ = writeln!(
        out,
        "# HELP tsecho_reply_latency_seconds From the read that brought a request to the write of its reply."
    );
    let _ = writeln!(out, "# TYPE tsecho_reply_latency_seconds histogram");
    for l in listeners {
        let (buckets, sum) = l.stats.latency();
        let labels = labels(l);
        for (bound, count) in LATENCY_BUCKETS.iter().zip(&buckets) {
            let _ = writeln!(
                out,
                "tsecho_reply_latency_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
            );
        }
        let total = buckets.last().copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "tsecho_reply_latency_seconds_bucket{{{labels},le=\"+Inf\"}} {total}"
        );
        let _ = writeln!(out, "tsecho_reply_latency_seconds_sum{{{labels}}} {sum}");
        let _ = writeln!(
            out,
            "tsecho_reply_latency_seconds_count{{{labels}}} {total}"
        );
    }
}

/// TLS listeners: sessions by protocol version, failed handshakes by
/// reason, and certificate reloads; nothing without a tls:// listener.
fn tls_exposition(shared: &Shared) -> String {
    let mut out = String::new();
    let listeners = shared.listeners();
    let tls_listeners: Vec<_> = listeners
        .iter()
        .filter_map(|l| Some((l, l.tls.as_ref()?)))
        .collect();
    if tls_listeners.is_empty() {
        return out;
    }
    let mut family = |name: &str, help: &str, rows: Vec<(String, u64)>| {
        let _ = writeln!(out, "# HELP tsecho_{name} {help}");
        let _ = writeln!(out, "# TYPE tsecho_{name} counter");
        for (labels, value) in rows {
            let _ = writeln!(out, "tsecho_{name}{{{labels}}} {value}");
        }
    };
    let listener = |l: &ListenerCtx| format!("listener=\"{}\",service=\"{}\"", l.name, l.service);
    family(
        "tls_connections_total",
        "TLS sessions established, per listener and protocol version.",
        tls_listeners
            .iter()
            .flat_map(|(l, c)| {
                c.established()
                    .map(|(v, n)| (format!("{},version=\"{v}\"", listener(l)), n))
            })
            .collect(),
    );
    family(
        "tls_handshake_failures_total",
        "TLS handshakes that failed, per listener and reason.",
        tls_listeners
            .iter()
            .flat_map(|(l, c)| {
                c.failures()
                    .map(|(r, n)| (format!("{},reason=\"{r}\"", listener(l)), n))
                    .collect::<Vec<_>>()
            })
            .collect(),
    );
    if let Some(tls) = shared.tls.get() {
        use std::sync::atomic::Ordering::Relaxed;
        family(
            "tls_certificate_reloads_total",
            "Certificate reloads (SIGHUP or changed files), by result.",
            vec![
                ("result=\"ok\"".into(), tls.reloads.ok.load(Relaxed)),
                ("result=\"error\"".into(), tls.reloads.error.load(Relaxed)),
            ],
        );
    }
    out
}

/// The faults listeners injected, by kind.
fn fault_exposition(shared: &Shared) -> String {
    let listeners = shared.listeners();
    let labels = |l: &ListenerCtx| format!("listener=\"{}\",service=\"{}\"", l.name, l.service);
    let faulty = listeners
        .iter()
        .filter_map(|l| Some((labels(l), &l.faults.as_ref()?.counts)));
    crate::fault::counters::exposition(faulty)
}

/// Configuration reloads (SIGHUP), by result.
fn reload_exposition(shared: &Shared) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let reloads = &shared.config_reloads;
    format!(
        "# HELP tsecho_config_reloads_total Configuration reloads (SIGHUP), by result.\n\
         # TYPE tsecho_config_reloads_total counter\n\
         tsecho_config_reloads_total{{result=\"ok\"}} {}\n\
         tsecho_config_reloads_total{{result=\"error\"}} {}\n",
        reloads.ok.load(Relaxed),
        reloads.error.load(Relaxed)
    )
}
