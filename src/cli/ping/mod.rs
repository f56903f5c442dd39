//! `tsecho ping`: round trips to a server, and how far its clock is from
//! ours. It speaks tsecho's lines (stamp, echo), sockperf's messages and
//! STAMP (`rfc8762+udp://`, as a Session-Sender): `offset.rs` works out
//! the clock offset, `probes.rs` what is sent and which probe a reply
//! answers, `report.rs` what is printed.

mod offset;
mod probes;
mod report;

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime};

use clap::Args as ClapArgs;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Interest};
use tsecho::ancillary;
use tsecho::client::{ClientStream, Connector, DatagramSocket};
use tsecho::error::EX_TEMPFAIL;
use tsecho::service::{rfc8762, sockperf};
use tsecho::tls::client::ClientTlsArgs;
use tsecho::{Endpoint, ServiceKind};

use super::parse_duration;
use probes::{Answer, Prober, Style};
use report::{Outcome, Report};

#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Server URL: tcp://HOST:PORT, tls://HOST:PORT, udp://HOST:PORT,
    /// unix:///path, unixgram:///path; with a service prefix, echo+...,
    /// sockperf+tcp://, sockperf+udp://, or rfc8762+udp:// (a STAMP
    /// reflector).
    #[arg(default_value = tsecho::settings::DEFAULT_URL)]
    url: String,
    /// Probes to send.
    #[arg(short = 'c', long, default_value_t = 5)]
    count: u32,
    /// Time between probes.
    #[arg(short = 'i', long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// How long to wait for each reply (and for the connection).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    timeout: Duration,
    /// Print one JSON object with every figure instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

/// Where probes go and replies come from.
enum Channel {
    Stream(BufReader<Box<dyn ClientStream>>, Style),
    Datagram(DatagramSocket),
}

/// A reply as it came, with the TTL it arrived with (UDP).
struct Reply {
    bytes: Vec<u8>,
    ttl: Option<u8>,
}

impl Channel {
    async fn send(&mut self, probe: &[u8]) -> std::io::Result<()> {
        match self {
            Channel::Stream(stream, _) => stream.get_mut().write_all(probe).await,
            Channel::Datagram(sock) => sock.send(probe).await.map(drop),
        }
    }

    /// The next reply: a line, a sockperf message, or a datagram.
    async fn receive(&mut self) -> std::io::Result<Reply> {
        let mut bytes = Vec::new();
        let mut ttl = None;
        match self {
            Channel::Stream(stream, Style::Sockperf) => {
                bytes.resize(sockperf::HEADER_LEN, 0);
                stream.read_exact(&mut bytes).await?;
                let length = sockperf::stated_length(&bytes).unwrap_or(sockperf::HEADER_LEN);
                let length = length.clamp(sockperf::HEADER_LEN, sockperf::MAX_MESSAGE);
                let header = bytes.len();
                bytes.resize(length, 0);
                stream.read_exact(&mut bytes[header..]).await?;
            }
            Channel::Stream(stream, _) => {
                if stream.read_until(b'\n', &mut bytes).await? == 0 {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "server closed the connection",
                    ));
                }
            }
            Channel::Datagram(DatagramSocket::Udp(sock)) => {
                bytes.resize(65_536, 0);
                let fd = sock.as_raw_fd();
                let (n, received) = sock
                    .async_io(Interest::READABLE, || {
                        ancillary::recv_with_info(fd, &mut bytes)
                    })
                    .await?;
                bytes.truncate(n);
                ttl = received.ttl;
            }
            Channel::Datagram(sock) => {
                bytes.resize(65_536, 0);
                let n = sock.recv(&mut bytes).await?;
                bytes.truncate(n);
            }
        }
        Ok(Reply { bytes, ttl })
    }
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let endpoint: Endpoint = args.url.parse()?;
    let runtime = super::single_thread_runtime()?;
    runtime.block_on(ping(args, endpoint))
}

async fn open(
    args: &Args,
    endpoint: &Endpoint,
    style: Style,
) -> anyhow::Result<(Channel, Option<tsecho::client::Opened>)> {
    if endpoint.transport.is_datagram() {
        let sock = DatagramSocket::connect(endpoint).await?;
        if let DatagramSocket::Udp(udp) = &sock
            && endpoint.service == ServiceKind::Rfc8762
        {
            // STAMP counts hops: ours leave with 255, and we read the
            // reflector's TTL as its packets arrive.
            let (fd, ipv6) = (udp.as_raw_fd(), udp.local_addr()?.is_ipv6());
            ancillary::set_outgoing_ttl(fd, rfc8762::SEND_TTL, ipv6)?;
            ancillary::enable_ttl_info(fd, ipv6)?;
        }
        return Ok((Channel::Datagram(sock), None));
    }
    let connector = Connector::new(endpoint, args.timeout, &args.tls)?;
    let (stream, opened) = connector.connect_timed().await?;
    Ok((Channel::Stream(BufReader::new(stream), style), Some(opened)))
}

async fn ping(args: Args, endpoint: Endpoint) -> anyhow::Result<i32> {
    let prober = Prober::new(endpoint.service, tsecho::system_clock::quality());
    let (mut channel, opened) = open(&args, &endpoint, prober.style).await?;
    let mut report = Report::new(&endpoint, args.json);
    report.opened(opened.as_ref());
    let mut next = Instant::now();
    let mut sent_at: Vec<(SystemTime, Instant)> = Vec::new();
    for sequence in 0..args.count {
        tokio::time::sleep_until(next.into()).await;
        next += args.interval;
        let sent = SystemTime::now();
        let started = Instant::now();
        sent_at.push((sent, started));
        if let Err(e) = channel.send(&prober.probe(sequence, sent)).await {
            report.failed(sequence, &e);
            continue;
        }
        let deadline = started + args.timeout;
        loop {
            let received = tokio::time::timeout_at(deadline.into(), channel.receive()).await;
            let reply = match received {
                Err(_) => {
                    report.timed_out(sequence, args.timeout);
                    break;
                }
                Ok(Err(e)) => {
                    report.failed(sequence, &e);
                    if channel_is_stream(&channel) {
                        return Ok(report.finish(args.count));
                    }
                    break;
                }
                Ok(Ok(reply)) => reply,
            };
            let (now, elapsed_at) = (SystemTime::now(), Instant::now());
            let Some(answer) = prober.answer(&reply.bytes, now) else {
                report.stranger(&reply.bytes);
                continue;
            };
            let Some(&(t1, sent_instant)) = sent_at.get(answer.sequence as usize) else {
                report.stranger(&reply.bytes);
                continue;
            };
            let rtt = elapsed_at.duration_since(sent_instant);
            let outcome = Outcome {
                answer,
                t1,
                t4: t1 + rtt,
                rtt,
                ttl: reply.ttl,
            };
            if answered(&mut report, outcome, sequence) {
                break;
            }
        }
    }
    Ok(report.finish(args.count))
}

/// Records a reply; true when it answers the probe now waiting.
fn answered(report: &mut Report, outcome: Outcome, waiting: u32) -> bool {
    let Answer { sequence, .. } = outcome.answer;
    report.arrived(sequence);
    if sequence == waiting && !report.has_answer(sequence) {
        report.answer(outcome);
        return true;
    }
    if report.has_answer(sequence) {
        report.duplicate(sequence);
    } else {
        report.late(sequence, outcome.rtt);
    }
    false
}

fn channel_is_stream(channel: &Channel) -> bool {
    matches!(channel, Channel::Stream(..))
}

/// The exit status: 0 when any probe was answered in time.
pub(super) fn status(answered: usize) -> i32 {
    if answered == 0 { EX_TEMPFAIL } else { 0 }
}
