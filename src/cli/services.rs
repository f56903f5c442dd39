//! `tsecho services`: what each service does and where inetd puts it.

use std::io::Write;

use tsecho::Endpoint;
use tsecho::service::SERVICES;

/// The faults a listener URL may carry, where they apply, what they do.
const FAULTS: [(&str, &str, &str); 10] = [
    (
        "delay=D",
        "any",
        "each reply sent D after its request arrived",
    ),
    ("jitter=J", "any", "delay spread uniformly over [D-J, D+J]"),
    (
        "jitter-dist=normal",
        "any",
        "jitter as the standard deviation of a normal spread, cut at 0",
    ),
    (
        "drop=P",
        "datagram",
        "no reply, with probability P (1%, 0.5%)",
    ),
    ("duplicate=P", "datagram", "the reply sent twice"),
    (
        "reset=P",
        "stream",
        "the connection reset (RST) instead of the reply",
    ),
    ("close-after=N", "stream", "a clean close after N replies"),
    (
        "bandwidth=RATE",
        "stream",
        "replies leave at most RATE bytes/s per connection (64KiB)",
    ),
    ("stall=D", "stream", "no reading for D after each reply"),
    (
        "seed=N",
        "any",
        "the same random choices for the same input",
    ),
];

pub fn run(listeners: &[Endpoint]) {
    if !listeners.is_empty() {
        return describe(listeners);
    }
    // A closed pipe (| head) is not an error worth a panic.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<8} {:<9} {:<6} {:<75} DATAGRAM",
        "SERVICE", "RFC", "PORT", "STREAM"
    );
    for info in &SERVICES {
        let rfc = info
            .rfc
            .map(|n| format!("RFC {n}"))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<8} {:<9} {:<6} {:<75} {}",
            info.kind.name(),
            rfc,
            info.port,
            info.on_stream.unwrap_or("- (datagrams only)"),
            info.on_datagram
        );
    }
    faults(&mut out);
}

/// What each listener serves and injects: `tsecho services URL...`.
fn describe(listeners: &[Endpoint]) {
    let mut out = std::io::stdout().lock();
    for endpoint in listeners {
        let _ = writeln!(
            out,
            "{endpoint}\n  service: {}\n  faults:  {}",
            endpoint.service, endpoint.faults
        );
    }
}

/// The faults table, after the services.
fn faults(out: &mut impl Write) {
    let _ = writeln!(
        out,
        "\n{:<19} {:<9} FAULT (URL query parameter)",
        "PARAMETER", "ON"
    );
    for (key, on, what) in FAULTS {
        let _ = writeln!(out, "{key:<19} {on:<9} {what}");
    }
}
