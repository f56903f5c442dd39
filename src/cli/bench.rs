//! `tsecho bench`: a load generator for stamp and echo-like servers.
//!
//! Every request is `<conn>:<seq>|` in hex, filler, and a newline, exactly
//! `--size` bytes; a reply is correct when it ends with its request, which
//! holds for stamp, echo and any server that only prefixes. Closed loop by
//! default (each connection keeps `--pipeline` requests outstanding); with
//! `--rate` the load is open loop and latency runs from each request's
//! intended send time, so a stalled server cannot hide its stall
//! (no coordinated omission).

use std::collections::BTreeMap;
use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args as ClapArgs;
use hdrhistogram::Histogram;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;

use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tsecho::Endpoint;
use tsecho::client::{ClientStream, Connector, DatagramSocket};
use tsecho::fault::PreciseTimer;
use tsecho::tls::client::ClientTlsArgs;

use super::bench_end::End;
use super::bench_replies::Replies;
use super::bench_request::{answers, seq_of_reply, write_request};
use super::bench_results::{
    Interval, Recorder, Seconds, encode, lag_json, micros, new_histogram, write_hdr_log,
};
use super::parse_duration;

#[derive(Debug, Clone, ClapArgs)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    /// Server URL: tcp://HOST:PORT, tls://HOST:PORT, udp://HOST:PORT,
    /// unix:///path, unixgram:///path.
    #[arg(required = true)]
    url: Option<String>,
    /// Connections (or UDP sockets).
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Requests outstanding per connection (closed loop), or datagrams in
    /// flight per socket.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Bytes per request, newline included.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// How long to measure.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: Duration,
    /// Stop after this many measured replies instead (still bounded by --duration).
    #[arg(long)]
    requests: Option<u64>,
    /// Load before measuring starts.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Open loop: requests per second over all connections.
    #[arg(long)]
    rate: Option<f64>,
    /// A datagram unanswered this long counts as lost and is replaced.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    loss_timeout: Duration,
    /// Runtime threads [default: the CPUs this process may use].
    #[arg(long)]
    threads: Option<usize>,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Start the load at this instant (RFC 3339, e.g.
    /// 2026-12-03T15:00:00Z), after connecting: workers on many machines
    /// given the same instant measure the same seconds.
    #[arg(long, value_name = "RFC3339", value_parser = parse_instant)]
    start_at: Option<SystemTime>,
    /// Also write the run as one self-contained HTML page (SVG charts).
    #[arg(long, value_name = "FILE.html")]
    report: Option<std::path::PathBuf>,
    /// Also write each second's latencies as an HdrHistogram interval log.
    #[arg(long, value_name = "FILE")]
    hdr_log: Option<std::path::PathBuf>,
    /// Streams: a new connection (and TLS handshake) for every request,
    /// closed after its reply: measures connections per second.
    #[arg(long, conflicts_with_all = ["rate", "pipeline"])]
    reconnect: bool,
    #[command(flatten)]
    tls: ClientTlsArgs,
}

#[derive(Debug, Clone, clap::Subcommand)]
enum BenchCommand {
    /// Combine the --json results of many runs: counts add, percentiles
    /// are exact, intervals line up on wall-clock seconds.
    Merge(super::bench_merge::MergeArgs),
}

/// Counters every connection task updates. Replies and their bytes are
/// counted per thread instead (see `Recorder`); `replies` here only counts
/// toward `--requests`.
#[derive(Default)]
struct Counters {
    replies: AtomicU64,
    errors: AtomicU64,
    mismatches: AtomicU64,
    lost: AtomicU64,
    late: AtomicU64,
}

struct Run {
    args: Args,
    endpoint: Endpoint,
    /// Opens stream connections; TLS settings read once.
    connector: Connector,
    /// Event loops the connections are dealt out among.
    threads: usize,
    measuring: AtomicBool,
    /// When measuring began, by both clocks (the wall clock in Unix
    /// nanoseconds): replies are filed under the wall-clock second they
    /// came in, with integer arithmetic only.
    measured_from: OnceLock<(Instant, u64)>,
    /// Connections wait for this before sending (--start-at).
    go: CancellationToken,
    /// Ends every connection: those waiting on the server, and those not.
    end: End,
    counters: Counters,
    seconds: Seconds,
    /// Errors and losses per wall-clock second.
    failures: std::sync::Mutex<BTreeMap<u64, u64>>,
}

impl Run {
    fn count(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn is_measuring(&self) -> bool {
        self.measuring.load(Ordering::Relaxed)
    }

    fn end(&self) {
        self.end.end();
    }

    fn has_ended(&self) -> bool {
        self.end.has_ended()
    }

    /// The wall-clock second `at` falls in.
    fn unix_second(&self, at: Instant) -> u64 {
        let Some((instant, wall_nanos)) = self.measured_from.get() else {
            return 0;
        };
        let since = at.saturating_duration_since(*instant).as_nanos() as u64;
        wall_nanos.saturating_add(since) / 1_000_000_000
    }

    /// Counts errors or losses, also under their second.
    fn failed(&self, counter: &AtomicU64, n: u64) {
        self.count(counter, n);
        if n > 0 && self.is_measuring() {
            let second = self.unix_second(Instant::now());
            if let Ok(mut failures) = self.failures.lock() {
                *failures.entry(second).or_default() += n;
            }
        }
    }

    /// Open loop: notes how late the request due at `due` is leaving.
    fn sending_late(&self, due: Instant) {
        if self.is_measuring() {
            let late = due.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
            Recorder::send_lag_here(late);
        }
    }

    /// Records one reply, read at `now`; `answers`: whether it ends with
    /// its request.
    fn reply(&self, reply: &[u8], answers: bool, since: Instant, now: Instant) {
        if !self.is_measuring() {
            return;
        }
        if let Some(cap) = self.args.requests {
            let done = self.counters.replies.fetch_add(1, Ordering::Relaxed) + 1;
            if done >= cap {
                self.end();
            }
            if done > cap {
                // Came in with the reply that made the count.
                return;
            }
        }
        if !answers {
            self.count(&self.counters.mismatches, 1);
        }
        let nanos = now
            .saturating_duration_since(since)
            .as_nanos()
            .min(u128::from(u64::MAX)) as u64;
        Recorder::record_here(nanos, reply.len(), self.unix_second(now), &self.seconds);
    }
}

/// How long before a request is due the sender stops sleeping and spins,
/// for requests `interval` apart: a wake-up from a timer after an idle
/// stretch comes late, and that lateness would be counted as the server's.
/// Measured on this project's VM at 100 requests/s: a lead of 100 us left
/// requests 64-68 us late at the median, 500 us left them 3 us late, and
/// 2 ms did no better. A quarter of the interval at most, so that at high
/// rates the sender spends at most a quarter of its time spinning.
fn spin_lead(interval: Duration) -> Duration {
    (interval / 4).min(Duration::from_micros(500))
}

/// Open loop: when each request of one connection is due. The
/// connections' schedules interleave, so that `--rate` requests a second
/// leave evenly spaced rather than in bursts of `--conns` at once.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    start: Instant,
    interval: Duration,
    lead: Duration,
}

impl Schedule {
    fn new(run: &Run, conn: usize, rate: f64) -> Self {
        let conns = run.args.conns.max(1);
        let interval = Duration::from_secs_f64(conns as f64 / rate.max(1e-3));
        let offset = interval.mul_f64(conn as f64 / conns as f64);
        // The spin holds up the thread's other connections: its lead is
        // bounded by how far apart the thread's requests are due.
        let on_this_thread = conns.div_ceil(run.threads.max(1));
        let lead = spin_lead(interval / on_this_thread as u32);
        Schedule {
            start: Instant::now() + offset,
            interval,
            lead,
        }
    }

    fn due(&self, seq: u64) -> Instant {
        self.start + self.interval.mul_f64(seq as f64)
    }

    /// When to stop sleeping for request `seq` and spin.
    fn wake(&self, seq: u64) -> Instant {
        let due = self.due(seq);
        due.checked_sub(self.lead).unwrap_or(due)
    }
}

fn spin_until(due: Instant) {
    while Instant::now() < due {
        std::hint::spin_loop();
    }
}

pub fn run(args: Args) -> anyhow::Result<i32> {
    let url = match (&args.command, &args.url) {
        (Some(BenchCommand::Merge(merge)), _) => return super::bench_merge::run(merge.clone()),
        (None, Some(url)) => url,
        (None, None) => bail!("a server URL is needed"),
    };
    let endpoint: Endpoint = url.parse()?;
    if args.size < 24 {
        bail!("--size must be at least 24 bytes to hold the request header");
    }
    if args.conns == 0 || args.pipeline == 0 {
        bail!("--conns and --pipeline must be at least 1");
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // As serve does: one single-threaded event loop per thread, the
    // connections dealt out among them, nothing shared but counters.
    let shards = tsecho::Shards::start(threads.max(1)).context("starting the threads")?;
    let connector = Connector::new(&endpoint, Duration::from_secs(5), &args.tls)?;
    let run = Arc::new(Run {
        args,
        endpoint,
        connector,
        threads,
        measuring: AtomicBool::new(false),
        measured_from: OnceLock::new(),
        go: CancellationToken::new(),
        end: End::default(),
        counters: Counters::default(),
        seconds: Seconds::default(),
        failures: Default::default(),
    });
    let report = shards.block_on(drive(run.clone(), shards.handles()))?;
    if let Some(path) = &run.args.hdr_log {
        write_hdr_log(path, report.started, &report.seconds)?;
    }
    let result = report.json(&run);
    if let Some(path) = &run.args.report {
        super::bench_report::write(path, &result)?;
    }
    if run.args.json {
        say!("{result}");
    } else {
        report.print(&run);
    }
    Ok(if report.replies == 0 {
        tsecho::error::EX_UNAVAILABLE
    } else if report.interrupted {
        // As a shell reports a command ended by SIGINT.
        130
    } else {
        0
    })
}

struct Report {
    hist: Histogram<u64>,
    replies: u64,
    /// Open loop: how late requests left (see `Recorder::send_lag`).
    send_lag: Histogram<u64>,
    rx_bytes: u64,
    secs: f64,
    /// When measuring began, by the wall clock.
    started: SystemTime,
    seconds: BTreeMap<u64, Histogram<u64>>,
    /// Ctrl-C ended it before --duration: what was measured so far.
    interrupted: bool,
    /// CPU cores this process used while measuring (as lineload reports).
    client_cpu: f64,
}

async fn drive(run: Arc<Run>, threads: Vec<tokio::runtime::Handle>) -> anyhow::Result<Report> {
    let datagram = run.endpoint.transport.is_datagram();
    // Caught from the start, so that a Ctrl-C at any moment ends the run
    // with what it measured rather than killing it.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("catching Ctrl-C")?;
    let mut interrupted = false;
    let mut tasks = Vec::with_capacity(run.args.conns);
    for conn in 0..run.args.conns {
        let run = run.clone();
        let thread = &threads[conn % threads.len()];
        tasks.push(thread.spawn(async move {
            let result = if datagram {
                datagram_conn(conn, &run).await
            } else {
                stream_conn(conn, &run).await
            };
            if let Err(e) = result {
                run.failed(&run.counters.errors, 1);
                if !run.args.json {
                    eprintln!("tsecho: connection {conn}: {e:#}");
                }
            }
        }));
    }
    if let Some(at) = run.args.start_at {
        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            () = run.end.wait() => {}
            _ = sigint.recv() => interrupted = true,
        }
    }
    run.go.cancel();
    if !interrupted {
        tokio::select! {
            _ = tokio::time::sleep(run.args.warmup) => {}
            () = run.end.wait() => {}
            _ = sigint.recv() => interrupted = true,
        }
    }
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let wall_nanos = started_wall
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let _ = run.measured_from.set((started, wall_nanos));
    run.measuring.store(true, Ordering::Relaxed);
    let progress =
        !run.args.json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let ticker = tokio::spawn(show_progress(run.clone(), started, progress));
    if !interrupted {
        tokio::select! {
            _ = tokio::time::sleep(run.args.duration) => {}
            () = run.end.wait() => {}
            _ = sigint.recv() => interrupted = true,
        }
    }
    run.measuring.store(false, Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    let client_cpu = (cpu_seconds() - cpu_before) / secs.max(1e-9);
    run.end();
    ticker.abort();
    if progress {
        // The table starts on a line of its own, not after the progress.
        eprint!("\r\x1b[2K");
    }
    for task in tasks {
        task.await.context("connection task")?;
    }
    let (mut hist, mut send_lag, mut rx_bytes) = (new_histogram(), new_histogram(), 0);
    for thread in &threads {
        let seen = run.clone();
        let recorder = thread
            .spawn(async move { Recorder::take_here(&seen.seconds) })
            .await
            .context("collecting a thread's results")?;
        hist.add(&recorder.all).context("merging histograms")?;
        send_lag
            .add(&recorder.send_lag)
            .context("merging histograms")?;
        rx_bytes += recorder.rx_bytes;
    }
    Ok(Report {
        replies: hist.len(),
        hist,
        send_lag,
        rx_bytes,
        secs,
        started: started_wall,
        seconds: run.seconds.take(),
        interrupted,
        client_cpu,
    })
}

/// CPU time this process has used, user and system, in seconds.
fn cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |usage| {
        let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        seconds(usage.user_time()) + seconds(usage.system_time())
    })
}

/// One line on a terminal, rewritten every second: the last second's
/// rate and p99, errors so far, time left.
async fn show_progress(run: Arc<Run>, started: Instant, enabled: bool) {
    if !enabled {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let elapsed = started.elapsed();
        let second = run.unix_second(Instant::now()).saturating_sub(1);
        let (replies, p99) = match run.seconds.replies_and_p99_us(second) {
            Some((replies, p99)) => (replies, format!("{p99:.0} us")),
            None => (0, "-".to_string()),
        };
        eprint!(
            "\r\x1b[2K  {replies:>10} req/s  p99 {p99}  errors {}  {:.0} s left",
            run.counters.errors.load(Ordering::Relaxed) + run.counters.lost.load(Ordering::Relaxed),
            run.args.duration.saturating_sub(elapsed).as_secs_f64()
        );
    }
}

/// A stream connection, closed or open loop.
async fn stream_conn(conn: usize, run: &Run) -> anyhow::Result<()> {
    if run.args.reconnect {
        return reconnect_loop(conn, run).await;
    }
    let stream = run.connector.connect().await?;
    run.go.cancelled().await;
    match run.args.rate {
        None => closed_loop(conn, run, stream).await,
        Some(rate) => open_loop(conn, run, Schedule::new(run, conn, rate), stream).await,
    }
}

/// `--reconnect`: connect (and shake hands), send one request, read its
/// reply, close; latency runs from the connect to the reply.
async fn reconnect_loop(conn: usize, run: &Run) -> anyhow::Result<()> {
    run.go.cancelled().await;
    let (mut request, mut reply) = (Vec::new(), Vec::new());
    let mut replies = Replies::new(run.args.size);
    let ended = run.end.wait();
    tokio::pin!(ended);
    for seq in 0.. {
        request.clear();
        write_request(conn, seq, run.args.size, &mut request);
        let started = Instant::now();
        replies.clear();
        let once = async {
            let mut stream = run.connector.connect().await?;
            stream.write_all(&request).await?;
            loop {
                if replies.fill(&mut stream).await? == 0 {
                    bail!("server closed the connection");
                }
                if let Some(line) = replies.next_line() {
                    reply.clear();
                    reply.extend_from_slice(line);
                    break;
                }
            }
            let _ = stream.shutdown().await;
            Ok(())
        };
        tokio::select! {
            biased;
            () = &mut ended => break,
            done = once => done?,
        }
        run.reply(&reply, reply.ends_with(&request), started, Instant::now());
    }
    Ok(())
}

/// Each connection keeps `--pipeline` requests outstanding: it sends them,
/// handles every reply a read brings, and sends as many again. It reads
/// while it writes: requests larger than the socket buffers would
/// otherwise wait on a server waiting on us to read its replies.
async fn closed_loop(
    conn: usize,
    run: &Run,
    mut stream: Box<dyn ClientStream>,
) -> anyhow::Result<()> {
    let size = run.args.size;
    let mut outstanding = VecDeque::with_capacity(run.args.pipeline);
    let mut next_seq = 0u64;
    let mut out = Outgoing::with_capacity(size * run.args.pipeline);
    let mut replies = Replies::new(size);
    let ended = run.end.wait();
    tokio::pin!(ended);
    let mut to_send = run.args.pipeline;
    // Requests leave right after the read whose replies made room for
    // them: that read's clock reading serves as their send time too.
    let mut sent = Instant::now();
    while !run.has_ended() {
        for _ in 0..to_send {
            write_request(conn, next_seq, size, &mut out.bytes);
            outstanding.push_back((next_seq, sent));
            next_seq += 1;
        }
        to_send = 0;
        let n = tokio::select! {
            biased;
            n = poll_fn(|cx| out.poll_exchange(cx, &mut stream, &mut replies)) => n?,
            () = &mut ended => break,
        };
        if n == 0 {
            bail!("server closed the connection");
        }
        sent = Instant::now();
        while let Some(line) = replies.next_line() {
            let (seq, asked) = outstanding.pop_front().context("reply without a request")?;
            run.reply(line, answers(line, conn, seq, size), asked, sent);
            to_send += 1;
        }
    }
    Ok(())
}

/// Requests queued on a connection and how far they are written.
struct Outgoing {
    bytes: Vec<u8>,
    written: usize,
    /// All written, but TLS may still hold the last record back.
    unflushed: bool,
}

impl Outgoing {
    fn with_capacity(capacity: usize) -> Self {
        Outgoing {
            bytes: Vec::with_capacity(capacity),
            written: 0,
            unflushed: false,
        }
    }

    /// Writes what the stream takes of the queued requests, then reads:
    /// ready with the read's length, 0 when the server closed.
    fn poll_exchange(
        &mut self,
        cx: &mut std::task::Context<'_>,
        stream: &mut Box<dyn ClientStream>,
        replies: &mut Replies,
    ) -> Poll<std::io::Result<usize>> {
        while self.written < self.bytes.len() {
            let unsent = &self.bytes[self.written..];
            let Poll::Ready(n) = Pin::new(&mut **stream).poll_write(cx, unsent)? else {
                break;
            };
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
            if self.written == self.bytes.len() {
                self.bytes.clear();
                self.written = 0;
                self.unflushed = true;
            }
        }
        if self.unflushed && Pin::new(&mut **stream).poll_flush(cx)?.is_ready() {
            self.unflushed = false;
        }
        replies.poll_fill(cx, stream)
    }
}

/// `--rate`: requests leave on a schedule whatever the replies do, and
/// each one's latency runs from when it was due.
async fn open_loop(
    conn: usize,
    run: &Run,
    schedule: Schedule,
    stream: Box<dyn ClientStream>,
) -> anyhow::Result<()> {
    let size = run.args.size;
    let (mut reader, mut writer) = tokio::io::split(stream);
    let intended: Mutex<VecDeque<(u64, Instant)>> = Mutex::new(VecDeque::new());
    let send = async {
        let mut out = Vec::with_capacity(size);
        // tokio's timer rounds up to the millisecond: every request would
        // leave up to 1 ms late, and that lateness would count as latency.
        let mut timer = PreciseTimer::default();
        let ended = run.end.wait();
        tokio::pin!(ended);
        for seq in 0u64.. {
            let due = schedule.due(seq);
            tokio::select! {
                () = &mut ended => return Ok::<_, anyhow::Error>(()),
                () = timer.sleep_until(Some(schedule.wake(seq))) => {}
            }
            spin_until(due);
            out.clear();
            write_request(conn, seq, size, &mut out);
            intended.lock().await.push_back((seq, due));
            run.sending_late(due);
            writer.write_all(&out).await?;
        }
        Ok(())
    };
    let receive = async {
        let mut replies = Replies::new(size);
        let ended = run.end.wait();
        tokio::pin!(ended);
        loop {
            let n = tokio::select! {
                biased;
                () = &mut ended => return Ok::<_, anyhow::Error>(()),
                n = replies.fill(&mut reader) => n?,
            };
            if n == 0 {
                bail!("server closed the connection");
            }
            let now = Instant::now();
            while let Some(line) = replies.next_line() {
                let (seq, due) = intended
                    .lock()
                    .await
                    .pop_front()
                    .context("reply without a request")?;
                run.reply(line, answers(line, conn, seq, size), due, now);
            }
        }
    };
    let (sent, received) = tokio::join!(send, receive);
    sent?;
    received
}

/// A UDP or Unix datagram socket keeping `--pipeline` datagrams in flight
/// (or sending at `--rate`), replacing those unanswered after the loss timeout.
async fn datagram_conn(conn: usize, run: &Run) -> anyhow::Result<()> {
    let sock = DatagramSocket::connect(&run.endpoint).await?;
    run.go.cancelled().await;
    let size = run.args.size;
    let mut in_flight: HashMap<u64, Instant> = HashMap::new();
    let mut next_seq = 0u64;
    let mut buf = vec![0; 65_536];
    let mut out = Vec::with_capacity(size);
    let schedule = run.args.rate.map(|rate| Schedule::new(run, conn, rate));
    let mut timer = PreciseTimer::default();
    let ended = run.end.wait();
    tokio::pin!(ended);
    loop {
        // Closed loop: fill the window. Open loop: send what is due, or
        // due within the spin lead.
        loop {
            let due = match schedule {
                None if in_flight.len() < run.args.pipeline => Instant::now(),
                None => break,
                Some(schedule) if schedule.wake(next_seq) > Instant::now() => break,
                Some(schedule) => {
                    let due = schedule.due(next_seq);
                    spin_until(due);
                    run.sending_late(due);
                    due
                }
            };
            out.clear();
            write_request(conn, next_seq, size, &mut out);
            sock.send(&out).await?;
            in_flight.insert(next_seq, due);
            next_seq += 1;
        }
        let oldest = in_flight.values().min().copied();
        let wake = match (oldest, schedule) {
            (Some(t), None) => t + run.args.loss_timeout,
            (oldest, Some(schedule)) => {
                let next = schedule.wake(next_seq);
                oldest.map_or(next, |t| next.min(t + run.args.loss_timeout))
            }
            (None, None) => Instant::now(),
        };
        tokio::select! {
            biased;
            () = &mut ended => return Ok(()),
            received = sock.recv(&mut buf) => {
                let reply = &buf[..received?];
                let now = Instant::now();
                match seq_of_reply(reply, size).and_then(|seq| in_flight.remove(&seq).map(|t| (seq, t))) {
                    Some((seq, sent)) => run.reply(reply, answers(reply, conn, seq, size), sent, now),
                    None => run.count(&run.counters.late, 1),
                }
            }
            () = timer.sleep_until(Some(wake)) => {}
        }
        let now = Instant::now();
        let before = in_flight.len();
        in_flight.retain(|_, sent| now.duration_since(*sent) < run.args.loss_timeout);
        if run.is_measuring() {
            run.failed(&run.counters.lost, (before - in_flight.len()) as u64);
        }
    }
}

impl Report {
    fn micros(&self, quantile: f64) -> f64 {
        micros(&self.hist, quantile)
    }

    fn rps(&self) -> f64 {
        self.replies as f64 / self.secs.max(1e-9)
    }

    fn print(&self, run: &Run) {
        let a = &run.args;
        let c = &run.counters;
        if self.interrupted {
            say!(
                "interrupted: what was measured in {:.1} s of {:.1} s",
                self.secs,
                a.duration.as_secs_f64()
            );
        }
        let mode = match a.rate {
            Some(rate) => format!("open loop at {rate} req/s"),
            None if a.reconnect => "a new connection per request".into(),
            None => "closed loop".into(),
        };
        say!(
            "tsecho bench {}: {} connections, pipeline {}, {}-byte requests, {:.1} s measured after {:.1} s warmup, {mode}",
            run.endpoint,
            a.conns,
            a.pipeline,
            a.size,
            self.secs,
            a.warmup.as_secs_f64()
        );
        say!(
            "  requests   {:>12}  {:>12.0} req/s  {:>8.2} MiB/s",
            self.replies,
            self.rps(),
            self.rps() * a.size as f64 / (1024.0 * 1024.0)
        );
        say!(
            "  latency    p50 {:.1} us  p90 {:.1} us  p99 {:.1} us  p99.9 {:.1} us  max {:.1} us",
            self.micros(0.5),
            self.micros(0.9),
            self.micros(0.99),
            self.micros(0.999),
            self.hist.max() as f64 / 1000.0
        );
        if !self.send_lag.is_empty() {
            say!(
                "  send lag   p50 {:.1} us  p99 {:.1} us  max {:.1} us  (how late requests left; part of the latency above)",
                micros(&self.send_lag, 0.5),
                micros(&self.send_lag, 0.99),
                self.send_lag.max() as f64 / 1000.0
            );
        }
        say!(
            "  errors {}  mismatches {}  lost {}  late {}",
            c.errors.load(Ordering::Relaxed),
            c.mismatches.load(Ordering::Relaxed),
            c.lost.load(Ordering::Relaxed),
            c.late.load(Ordering::Relaxed)
        );
    }

    fn json(&self, run: &Run) -> serde_json::Value {
        let a = &run.args;
        let c = &run.counters;
        serde_json::json!({
            "url": run.endpoint.to_string(),
            "conns": a.conns,
            "pipeline": a.pipeline,
            "size": a.size,
            "rate": a.rate,
            "reconnect": a.reconnect,
            "warmup": a.warmup.as_secs_f64(),
            "secs": self.secs,
            "replies": self.replies,
            "rps": self.rps(),
            "mib_s": self.rps() * a.size as f64 / (1024.0 * 1024.0),
            "rx_mib_s": self.rx_bytes as f64 / self.secs.max(1e-9) / (1024.0 * 1024.0),
            "mean_us": self.hist.mean() / 1000.0,
            "p50_us": self.micros(0.5),
            "p90_us": self.micros(0.9),
            "p99_us": self.micros(0.99),
            "p999_us": self.micros(0.999),
            "max_us": self.hist.max() as f64 / 1000.0,
            "send_lag": lag_json(&self.send_lag),
            "errors": c.errors.load(Ordering::Relaxed),
            "mismatches": c.mismatches.load(Ordering::Relaxed),
            "lost": c.lost.load(Ordering::Relaxed),
            "late": c.late.load(Ordering::Relaxed),
            "interrupted": self.interrupted,
            "client_cpu": self.client_cpu,
            "start_unix": self.started.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64(),
            "histogram": encode(&self.hist),
            "intervals": self.intervals(run),
        })
    }

    /// Each wall-clock second measured, in order.
    fn intervals(&self, run: &Run) -> Vec<Interval> {
        let failures = run.failures.lock().map(|f| f.clone()).unwrap_or_default();
        self.seconds
            .iter()
            .map(|(&second, hist)| {
                Interval::of(second, hist, failures.get(&second).copied().unwrap_or(0))
            })
            .collect()
    }
}

/// An RFC 3339 instant, such as 2026-12-03T15:00:00Z.
fn parse_instant(text: &str) -> Result<SystemTime, String> {
    let at = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
        format!("{text:?} is not an RFC 3339 instant ({e}), e.g. 2026-12-03T15:00:00Z")
    })?;
    Ok(SystemTime::from(at))
}
