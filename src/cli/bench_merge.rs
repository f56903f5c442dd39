//! `tsecho bench merge RESULT.json...`: one result from the `--json`
//! output of many runs (workers on many machines, pods of a Job). The
//! histograms add, so every merged percentile is exact; the per-second
//! intervals add second by second, on the wall clock; counts add; the
//! merged rate is the replies over the span from the first worker's start
//! to the last one's end. Open-loop workers' send lags add the same way.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args as ClapArgs;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::bench_results::{
    Interval, decode, encode, lag_json, micros, new_histogram, new_second_histogram,
};

#[derive(Debug, Clone, ClapArgs)]
pub struct MergeArgs {
    /// Files holding `tsecho bench --json` output, one JSON object per
    /// line (`-` reads standard input).
    #[arg(required = true, value_name = "RESULT.json")]
    files: Vec<PathBuf>,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the merge as one self-contained HTML page (SVG charts).
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
}

/// One worker's result, as `tsecho bench --json` wrote it.
struct Worker {
    fields: Value,
    hist: Histogram<u64>,
    /// Open loop only.
    send_lag: Option<Histogram<u64>>,
    /// An open-loop result from before `send_lag` carried its histogram.
    send_lag_unknown: bool,
    start: f64,
    secs: f64,
}

/// What the workers add up to.
struct Merged {
    hist: Histogram<u64>,
    send_lag: Histogram<u64>,
    seconds: BTreeMap<u64, (Histogram<u64>, u64)>,
    start: f64,
    end: f64,
}

pub fn run(args: MergeArgs) -> anyhow::Result<i32> {
    let mut workers = Vec::new();
    for file in &args.files {
        let text = read(file)?;
        for (n, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let worker = parse_worker(line)
                .with_context(|| format!("{}, result {}", file.display(), n + 1))?;
            workers.push(worker);
        }
    }
    if workers.is_empty() {
        bail!("no results in {:?}", args.files);
    }
    if workers.iter().any(|w| w.send_lag_unknown) {
        eprintln!(
            "tsecho: a result's send_lag has no histogram (an older tsecho bench): the merge leaves send lag out"
        );
    }
    let merged = merge(&workers)?;
    let result = summary(&workers, &merged);
    if let Some(path) = &args.report {
        super::bench_report::write(path, &result)?;
    }
    if args.json {
        say!("{result}");
    } else {
        print(&result, &workers);
    }
    Ok(0)
}

fn read(file: &PathBuf) -> anyhow::Result<String> {
    let mut text = String::new();
    if file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    }
    Ok(text)
}

fn parse_worker(line: &str) -> anyhow::Result<Worker> {
    let fields: Value = serde_json::from_str(line).context("not JSON")?;
    let text = |key: &str| fields[key].as_str().map(str::to_owned);
    let number = |key: &str| fields[key].as_f64();
    let hist = decode(&text("histogram").context("no \"histogram\": not tsecho bench --json")?)?;
    let lag = &fields["send_lag"];
    let send_lag = match lag["histogram"].as_str() {
        Some(text) => Some(decode(text).context("send_lag")?),
        None => None,
    };
    let send_lag_unknown = send_lag.is_none() && !lag.is_null();
    Ok(Worker {
        start: number("start_unix").context("no \"start_unix\"")?,
        secs: number("secs").context("no \"secs\"")?,
        hist,
        send_lag,
        send_lag_unknown,
        fields,
    })
}

fn merge(workers: &[Worker]) -> anyhow::Result<Merged> {
    let mut merged = Merged {
        hist: new_histogram(),
        send_lag: new_histogram(),
        seconds: BTreeMap::new(),
        start: f64::INFINITY,
        end: f64::NEG_INFINITY,
    };
    for worker in workers {
        merged.hist.add(&worker.hist).context("adding histograms")?;
        if let Some(lag) = &worker.send_lag {
            merged.send_lag.add(lag).context("adding send lags")?;
        }
        merged.start = merged.start.min(worker.start);
        merged.end = merged.end.max(worker.start + worker.secs);
        let intervals: Vec<Interval> =
            serde_json::from_value(worker.fields["intervals"].clone()).unwrap_or_default();
        for interval in intervals {
            let (hist, errors) = merged
                .seconds
                .entry(interval.second)
                .or_insert_with(|| (new_second_histogram(), 0));
            hist.add(decode(&interval.histogram)?)
                .context("adding interval histograms")?;
            *errors += interval.errors;
        }
    }
    Ok(merged)
}

fn sum(workers: &[Worker], key: &str) -> u64 {
    workers.iter().filter_map(|w| w.fields[key].as_u64()).sum()
}

/// The same one about a single run holds, with `workers` beside it.
fn summary(workers: &[Worker], merged: &Merged) -> Value {
    let h = &merged.hist;
    let secs = (merged.end - merged.start).max(1e-9);
    let replies = sum(workers, "replies");
    let size = workers[0].fields["size"].as_u64().unwrap_or(0);
    json!({
        "merged": workers.len(),
        "url": workers[0].fields["url"],
        "conns": sum(workers, "conns"),
        "size": size,
        "start_unix": merged.start,
        "secs": secs,
        "replies": replies,
        "rps": replies as f64 / secs,
        "mib_s": replies as f64 / secs * size as f64 / (1024.0 * 1024.0),
        "mean_us": h.mean() / 1000.0,
        "min_us": h.min() as f64 / 1000.0,
        "p50_us": micros(h, 0.5),
        "p90_us": micros(h, 0.9),
        "p99_us": micros(h, 0.99),
        "p999_us": micros(h, 0.999),
        "max_us": h.max() as f64 / 1000.0,
        "send_lag": if workers.iter().any(|w| w.send_lag_unknown) {
            Value::Null
        } else {
            lag_json(&merged.send_lag)
        },
        "errors": sum(workers, "errors"),
        "mismatches": sum(workers, "mismatches"),
        "lost": sum(workers, "lost"),
        "late": sum(workers, "late"),
        "histogram": encode(h),
        "intervals": merged
            .seconds
            .iter()
            .map(|(&second, (hist, errors))| Interval::of(second, hist, *errors))
            .collect::<Vec<_>>(),
        "workers": workers.iter().map(worker_row).collect::<Vec<_>>(),
    })
}

fn worker_row(worker: &Worker) -> Value {
    let f = &worker.fields;
    json!({
        "url": f["url"], "start_unix": worker.start, "secs": worker.secs,
        "replies": f["replies"], "rps": f["rps"], "p50_us": f["p50_us"],
        "p99_us": f["p99_us"], "max_us": f["max_us"], "errors": f["errors"],
    })
}

fn print(result: &Value, workers: &[Worker]) {
    let n = |key: &str| result[key].as_f64().unwrap_or(0.0);
    say!(
        "tsecho bench merge: {} results, {:.0} replies over {:.1} s",
        workers.len(),
        n("replies"),
        n("secs")
    );
    say!("  requests   {:>12.0} req/s", n("rps"));
    say!(
        "  latency    p50 {:.1} us  p90 {:.1} us  p99 {:.1} us  p99.9 {:.1} us  max {:.1} us",
        n("p50_us"),
        n("p90_us"),
        n("p99_us"),
        n("p999_us"),
        n("max_us")
    );
    let lag = &result["send_lag"];
    if lag.is_object() {
        let n = |key: &str| lag[key].as_f64().unwrap_or(0.0);
        say!(
            "  send lag   p50 {:.1} us  p99 {:.1} us  max {:.1} us",
            n("p50_us"),
            n("p99_us"),
            n("max_us")
        );
    }
    say!(
        "  errors {}  mismatches {}  lost {}  late {}",
        n("errors"),
        n("mismatches"),
        n("lost"),
        n("late")
    );
    say!("  worker  start (unix)       secs     replies       req/s    p50 us    p99 us");
    for (i, w) in workers.iter().enumerate() {
        let f = |key: &str| w.fields[key].as_f64().unwrap_or(0.0);
        say!(
            "  {:>6}  {:>14.3}  {:>7.2}  {:>10.0}  {:>10.0}  {:>8.1}  {:>8.1}",
            i + 1,
            w.start,
            w.secs,
            f("replies"),
            f("rps"),
            f("p50_us"),
            f("p99_us")
        );
    }
}
