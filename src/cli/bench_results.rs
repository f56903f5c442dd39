//! What `tsecho bench` keeps of a run, losslessly: the latency histogram
//! and one histogram per wall-clock second, so that runs from many
//! processes or machines combine exactly (`tsecho bench merge`): counts
//! add, and every percentile of the merge equals that of one histogram
//! built from all the samples.
//!
//! Histograms travel as HdrHistogram's V2 compressed encoding in base64,
//! the form its own tools and interval logs use.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};

/// Latencies in nanoseconds, from 1 ns to a minute, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// A second's latencies as the run keeps them: 2 significant digits (1%),
/// a tenth of the memory of the run's own histogram, since a long run
/// keeps one for every second.
pub fn new_second_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 2).expect("valid histogram bounds")
}

/// The histograms of each wall-clock second, shared by every connection.
#[derive(Debug, Default)]
pub struct Seconds(Mutex<BTreeMap<u64, Histogram<u64>>>);

impl Seconds {
    fn add(&self, second: u64, hist: &Histogram<u64>) {
        if let Ok(mut seconds) = self.0.lock() {
            let slot = seconds.entry(second).or_insert_with(new_second_histogram);
            let _ = slot.add(hist);
        }
    }

    /// Replies and p99 of one second so far, for the progress line.
    pub fn replies_and_p99_us(&self, second: u64) -> Option<(u64, f64)> {
        let seconds = self.0.lock().ok()?;
        seconds.get(&second).map(|h| (h.len(), micros(h, 0.99)))
    }

    pub fn take(&self) -> BTreeMap<u64, Histogram<u64>> {
        self.0
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }
}

/// One thread's latencies: the seconds already over, and the current
/// second's, handed to the shared `Seconds` once it is over (a lock per
/// thread per second, not per reply).
///
/// Every connection on a thread records into its thread's recorder. One
/// per connection made 50 connections keep 50 pairs of histograms of about
/// 230 KiB, and recording into them was the costliest user-space function
/// of the client (perf: 2.2% of its CPU, half of it cache misses).
#[derive(Debug)]
pub struct Recorder {
    pub all: Histogram<u64>,
    second: Histogram<u64>,
    current: Option<u64>,
    /// Reply bytes received while measuring.
    pub rx_bytes: u64,
    /// Open loop: how late each request left after it was due. Latency
    /// counts from the due time, so this is the part of every latency
    /// that is the load generator's, not the server's.
    pub send_lag: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            all: new_histogram(),
            second: new_histogram(),
            current: None,
            rx_bytes: 0,
            send_lag: new_histogram(),
        }
    }
}

thread_local! {
    static THIS_THREAD: RefCell<Recorder> = RefCell::new(Recorder::default());
}

impl Recorder {
    /// Records one reply on the calling thread's recorder.
    pub fn record_here(nanos: u64, reply_len: usize, unix_second: u64, seconds: &Seconds) {
        THIS_THREAD.with_borrow_mut(|here| {
            here.rx_bytes += reply_len as u64;
            here.record(nanos, unix_second, seconds);
        });
    }

    /// Records how late a request left, on the calling thread's recorder.
    pub fn send_lag_here(nanos: u64) {
        THIS_THREAD.with_borrow_mut(|here| here.send_lag.saturating_record(nanos.max(1)));
    }

    /// The calling thread's recorder, every second handed over.
    pub fn take_here(seconds: &Seconds) -> Recorder {
        let mut here = THIS_THREAD.take();
        here.flush(seconds);
        here
    }

    pub fn record(&mut self, nanos: u64, unix_second: u64, seconds: &Seconds) {
        if self.current != Some(unix_second) {
            self.flush(seconds);
            self.current = Some(unix_second);
        }
        self.second.saturating_record(nanos.max(1));
    }

    pub fn flush(&mut self, seconds: &Seconds) {
        if let Some(second) = self.current.take()
            && !self.second.is_empty()
        {
            seconds.add(second, &self.second);
            // Cannot fail: both have the same bounds.
            let _ = self.all.add(&self.second);
            self.second.reset();
        }
    }
}

pub fn encode(hist: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    // Serialising into memory cannot fail but for a histogram too large
    // to encode, which these bounds exclude.
    let _ = V2DeflateSerializer::new().serialize(hist, &mut bytes);
    BASE64.encode(bytes)
}

pub fn decode(text: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = BASE64.decode(text).context("histogram: not base64")?;
    let hist: Histogram<u64> = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .context("histogram: not an HdrHistogram V2 encoding")?;
    Ok(hist)
}

/// One wall-clock second of a run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Interval {
    /// Unix time of the second's start.
    pub second: u64,
    pub replies: u64,
    pub errors: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub histogram: String,
}

impl Interval {
    pub fn of(second: u64, hist: &Histogram<u64>, errors: u64) -> Self {
        Interval {
            second,
            replies: hist.len(),
            errors,
            p50_us: micros(hist, 0.5),
            p99_us: micros(hist, 0.99),
            histogram: encode(hist),
        }
    }
}

pub fn micros(hist: &Histogram<u64>, quantile: f64) -> f64 {
    hist.value_at_quantile(quantile) as f64 / 1000.0
}

/// `send_lag` in `--json` (null in closed loop): how late open-loop
/// requests left, with its histogram so that `bench merge` can add the
/// workers' lags as exactly as their latencies.
pub fn lag_json(lag: &Histogram<u64>) -> serde_json::Value {
    if lag.is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::json!({
        "p50_us": micros(lag, 0.5),
        "p99_us": micros(lag, 0.99),
        "max_us": lag.max() as f64 / 1000.0,
        "histogram": encode(lag),
    })
}

/// Writes an HdrHistogram interval log (the format of its `jHiccup` and
/// `HistogramLogProcessor` tools): one line per second, tagged nothing.
pub fn write_hdr_log(
    path: &std::path::Path,
    start: SystemTime,
    seconds: &BTreeMap<u64, Histogram<u64>>,
) -> anyhow::Result<()> {
    use hdrhistogram::serialization::interval_log::IntervalLogWriterBuilder;
    let mut file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut serializer = V2DeflateSerializer::new();
    let mut log = IntervalLogWriterBuilder::new()
        .with_start_time(start)
        .with_base_time(start)
        .begin_log_with(&mut file, &mut serializer)
        .context("writing the interval log")?;
    let start_secs = start.duration_since(UNIX_EPOCH).unwrap_or_default();
    for (&second, hist) in seconds {
        let offset = Duration::from_secs(second).saturating_sub(start_secs);
        log.write_histogram(hist, offset, Duration::from_secs(1), None)
            .map_err(|e| anyhow::anyhow!("writing the interval log: {e:?}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_survives_encoding_exactly() {
        let mut h = new_histogram();
        for v in [1, 900, 45_000, 45_001, 3_000_000, 59_000_000_000] {
            h.record(v).unwrap();
        }
        let back = decode(&encode(&h)).unwrap();
        assert_eq!(back, h);
        assert!(decode("not base64!").is_err());
    }

    #[test]
    fn the_interval_log_reads_back_with_hdrhistograms_own_parser() {
        use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
        let start = UNIX_EPOCH + Duration::from_secs(1_795_597_503);
        let mut seconds = BTreeMap::new();
        for (second, value) in [(1_795_597_503u64, 1_000u64), (1_795_597_504, 2_000)] {
            let mut h = new_second_histogram();
            h.record(value).unwrap();
            seconds.insert(second, h);
        }
        let path = std::env::temp_dir().join(format!("tsecho-hlog-{}", std::process::id()));
        write_hdr_log(&path, start, &seconds).unwrap();
        let text = std::fs::read(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let mut intervals = Vec::new();
        for entry in IntervalLogIterator::new(&text) {
            if let LogEntry::Interval(h) = entry.unwrap() {
                let bytes = BASE64.decode(h.encoded_histogram()).unwrap();
                let hist: Histogram<u64> =
                    Deserializer::new().deserialize(&mut &bytes[..]).unwrap();
                intervals.push((h.start_timestamp(), hist.max()));
            }
        }
        assert_eq!(intervals.len(), 2);
        assert_eq!(intervals[1].0, Duration::from_secs(1));
        assert!(intervals[1].1 >= 2_000);
    }

    #[test]
    fn seconds_collect_what_each_thread_recorded() {
        let seconds = Seconds::default();
        let (mut a, mut b) = (Recorder::default(), Recorder::default());
        a.record(1_000, 10, &seconds);
        b.record(2_000, 10, &seconds);
        a.record(3_000, 11, &seconds);
        a.flush(&seconds);
        b.flush(&seconds);
        let taken = seconds.take();
        assert_eq!(taken[&10].len(), 2);
        assert_eq!(taken[&11].len(), 1);
        assert_eq!(a.all.len(), 2);
    }
}
