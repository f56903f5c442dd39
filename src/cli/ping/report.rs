//! What `tsecho ping` prints: a line per event as it happens and a summary
//! at the end, or (`--json`) one object with every figure.

use std::time::{Duration, SystemTime};

use serde_json::json;
use tsecho::Endpoint;
use tsecho::client::Opened;
use tsecho::service::rfc8762::SEND_TTL;

use super::offset::{Probe, combine, probe_from, probe_from_stamp, unix_seconds};
use super::probes::{Answer, Timing};

/// One answered probe, as received.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub answer: Answer,
    pub t1: SystemTime,
    pub t4: SystemTime,
    /// Our round trip, reflector's time included.
    pub rtt: Duration,
    /// The TTL the reply arrived with (UDP).
    pub ttl: Option<u8>,
}

/// A STAMP exchange's figures, in seconds.
#[derive(Debug, Clone, Copy)]
struct Directions {
    forward: f64,
    backward: f64,
    residence: f64,
    hops_forward: Option<u8>,
    hops_backward: Option<u8>,
}

#[derive(Debug)]
pub struct Report {
    name: String,
    json: bool,
    answered: Vec<(u32, Duration, Option<Probe>, Option<Directions>)>,
    late: u32,
    duplicates: u32,
    /// Replies that came after a reply to a later probe.
    reordered: u32,
    highest: Option<u32>,
    strangers: u32,
    zoneless: bool,
    untimed: bool,
    connect: Option<serde_json::Value>,
}

impl Report {
    pub fn new(endpoint: &Endpoint, json: bool) -> Self {
        if !json {
            say!("PING {endpoint}");
        }
        Report {
            name: endpoint.to_string(),
            json,
            answered: Vec::new(),
            late: 0,
            duplicates: 0,
            reordered: 0,
            highest: None,
            strangers: 0,
            zoneless: false,
            untimed: false,
            connect: None,
        }
    }

    fn line(&self, text: std::fmt::Arguments<'_>) {
        if !self.json {
            say!("{text}");
        }
    }

    /// The connection's set-up, apart from the round trips that follow.
    pub fn opened(&mut self, opened: Option<&Opened>) {
        let Some(opened) = opened else { return };
        self.connect = Some(json!({
            "connect_ms": ms(opened.connect),
            "tls_handshake_ms": opened.handshake.map(ms),
        }));
        match opened.handshake {
            Some(handshake) => self.line(format_args!(
                "connected in {:.3} ms, TLS handshake {:.3} ms",
                ms(opened.connect),
                ms(handshake)
            )),
            None => self.line(format_args!("connected in {:.3} ms", ms(opened.connect))),
        }
    }

    /// Notes the order replies come in, whatever they are counted as.
    pub fn arrived(&mut self, sequence: u32) {
        match self.highest {
            Some(highest) if sequence < highest => self.reordered += 1,
            _ => self.highest = Some(sequence),
        }
    }

    pub fn has_answer(&self, sequence: u32) -> bool {
        self.answered.iter().any(|(s, ..)| *s == sequence)
    }

    pub fn answer(&mut self, outcome: Outcome) {
        let seq = outcome.answer.sequence;
        let (probe, directions) = match outcome.answer.timing {
            Timing::Stamped(server) => {
                self.zoneless |= server.zoneless;
                (Some(probe_from(outcome.t1, outcome.rtt, server)), None)
            }
            Timing::Reflected(r) => {
                let probe = probe_from_stamp(outcome.t1, r.received, r.transmitted, outcome.t4);
                let directions = Directions {
                    forward: unix_seconds(r.received) - unix_seconds(outcome.t1),
                    backward: unix_seconds(outcome.t4) - unix_seconds(r.transmitted),
                    residence: unix_seconds(r.transmitted) - unix_seconds(r.received),
                    hops_forward: SEND_TTL.checked_sub(r.sender_ttl),
                    hops_backward: outcome.ttl.and_then(|ttl| SEND_TTL.checked_sub(ttl)),
                };
                (Some(probe), Some(directions))
            }
            Timing::Untimed => {
                self.untimed = true;
                (None, None)
            }
        };
        let rtt = probe.map_or(outcome.rtt, |p| p.rtt);
        self.answered.push((seq, rtt, probe, directions));
        let mut text = format!("reply from {}: seq={seq} time={:.3} ms", self.name, ms(rtt));
        if let Some(d) = directions {
            text += &format!(
                " (reflector held it {:.3} ms) forward={:.3} ms backward={:.3} ms",
                d.residence * 1e3,
                d.forward * 1e3,
                d.backward * 1e3
            );
            if let (Some(f), Some(b)) = (d.hops_forward, d.hops_backward) {
                text += &format!(" hops={f}/{b}");
            }
        }
        match probe {
            Some(p) => text += &format!(" offset={:+.6} s ±{:.6} s", p.offset(), p.uncertainty()),
            None => text += " (no timestamp in the reply)",
        }
        self.line(format_args!("{text}"));
    }

    pub fn late(&mut self, sequence: u32, after: Duration) {
        self.late += 1;
        self.line(format_args!(
            "late reply from {}: seq={sequence} after {:.3} ms, past its timeout: not counted",
            self.name,
            ms(after)
        ));
    }

    pub fn duplicate(&mut self, sequence: u32) {
        self.duplicates += 1;
        self.line(format_args!("duplicate reply: seq={sequence}"));
    }

    pub fn stranger(&mut self, reply: &[u8]) {
        self.strangers += 1;
        self.line(format_args!(
            "reply that answers none of our probes: {:?}",
            String::from_utf8_lossy(&reply[..reply.len().min(80)])
        ));
    }

    pub fn timed_out(&mut self, sequence: u32, timeout: Duration) {
        self.line(format_args!("seq={sequence}: no reply within {timeout:?}"));
    }

    pub fn failed(&mut self, sequence: u32, error: &std::io::Error) {
        self.line(format_args!("seq={sequence}: {error}"));
    }

    /// Prints the summary; returns the exit status.
    pub fn finish(self, sent: u32) -> i32 {
        let answered = self.answered.len() as u32;
        let loss = 100.0 * f64::from(sent.saturating_sub(answered)) / f64::from(sent.max(1));
        let rtts: Vec<f64> = self.answered.iter().map(|a| ms(a.1)).collect();
        let probes: Vec<Probe> = self.answered.iter().filter_map(|a| a.2).collect();
        let directions: Vec<Directions> = self.answered.iter().filter_map(|a| a.3).collect();
        let offset = (!probes.is_empty()).then(|| combine(&probes));
        if self.json {
            let summary = json!({
                "url": self.name,
                "sent": sent,
                "answered": answered,
                "loss_percent": loss,
                "late": self.late,
                "duplicates": self.duplicates,
                "reordered": self.reordered,
                "unmatched": self.strangers,
                "rtt_ms": stats(&rtts),
                "offset_s": offset.map(|o| o.offset()),
                "offset_uncertainty_s": offset.map(|o| o.uncertainty()),
                "offset_assumes_same_time_zone": self.zoneless,
                "forward_ms": stats(&directions.iter().map(|d| d.forward * 1e3).collect::<Vec<_>>()),
                "backward_ms": stats(&directions.iter().map(|d| d.backward * 1e3).collect::<Vec<_>>()),
                "reflector_residence_ms": stats(&directions.iter().map(|d| d.residence * 1e3).collect::<Vec<_>>()),
                "hops_forward": directions.last().and_then(|d| d.hops_forward),
                "hops_backward": directions.last().and_then(|d| d.hops_backward),
                "connection": self.connect,
            });
            say!("{summary}");
            return super::status(answered as usize);
        }
        say!("--- {} ping statistics ---", self.name);
        let mut counts = format!("{sent} probes sent, {answered} answered, {loss:.0}% loss");
        if self.late > 0 || self.duplicates > 0 || self.reordered > 0 {
            counts += &format!(
                ", {} late, {} duplicates, {} out of order",
                self.late, self.duplicates, self.reordered
            );
        }
        say!("{counts}");
        if let Some(s) = stats(&rtts) {
            say!(
                "rtt min/avg/max/mdev = {:.3}/{:.3}/{:.3}/{:.3} ms",
                s.min,
                s.avg,
                s.max,
                s.mdev
            );
        }
        for (name, values) in [
            (
                "forward",
                directions
                    .iter()
                    .map(|d| d.forward * 1e3)
                    .collect::<Vec<_>>(),
            ),
            (
                "backward",
                directions.iter().map(|d| d.backward * 1e3).collect(),
            ),
        ] {
            if let Some(s) = stats(&values) {
                say!(
                    "{name} delay min/avg/max = {:.3}/{:.3}/{:.3} ms (each includes the clock offset)",
                    s.min,
                    s.avg,
                    s.max
                );
            }
        }
        match offset {
            Some(o) => say!(
                "clock offset {:+.6} s ±{:.6} s (server minus local, from {} probes)",
                o.offset(),
                o.uncertainty(),
                probes.len()
            ),
            None if self.untimed => {
                say!("no clock offset: the replies carry no timestamp")
            }
            None => {}
        }
        if self.zoneless {
            say!("the offset assumes the server shows our time zone: its timestamps name none");
        }
        super::status(answered as usize)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Spread {
    min: f64,
    avg: f64,
    max: f64,
    mdev: f64,
}

/// min, avg, max and mdev of some figures; None for none.
fn stats(values: &[f64]) -> Option<Spread> {
    if values.is_empty() {
        return None;
    }
    let n = values.len() as f64;
    let avg = values.iter().sum::<f64>() / n;
    let mdev = (values.iter().map(|r| (r - avg).powi(2)).sum::<f64>() / n).sqrt();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some(Spread {
        min,
        avg,
        max,
        mdev,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_after_one_to_a_later_probe_is_out_of_order() {
        let endpoint: Endpoint = "udp://127.0.0.1:9".parse().unwrap();
        let mut report = Report::new(&endpoint, true);
        for sequence in [0, 2, 1, 3] {
            report.arrived(sequence);
        }
        assert_eq!(report.reordered, 1);
    }
}
