//! `--report FILE.html`: a run (or a merge) as one self-contained page,
//! drawn in SVG by hand: no script, no fetch, nothing to install to see
//! it. Drawn from the same JSON object that `--json` prints, so a report
//! of a merge is made exactly as one of a single run.
//!
//! The latency plot is HdrHistogram's percentile distribution on its
//! "nines" axis (x = log10(1 / (1 - p)): 90% at 1, 99% at 2, 99.9% at 3),
//! one point per percentile it reports, and the page lists the same
//! points in a table.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::Value;

use super::bench_results::decode;

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 260.0;
const MARGIN: f64 = 56.0;
/// HdrHistogram's default for percentile distributions.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

pub fn write(path: &Path, result: &Value) -> anyhow::Result<()> {
    let html = render(result)?;
    std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))
}

/// The percentiles the report plots: (percentile, microseconds), up to
/// but not including 100%, which has no place on a nines axis.
pub fn percentiles(hist: &Histogram<u64>) -> Vec<(f64, f64)> {
    hist.iter_quantiles(TICKS_PER_HALF_DISTANCE)
        .map(|v| {
            (
                v.quantile_iterated_to(),
                v.value_iterated_to() as f64 / 1000.0,
            )
        })
        .filter(|(q, _)| *q < 1.0)
        .collect()
}

fn nines(quantile: f64) -> f64 {
    (1.0 / (1.0 - quantile)).log10()
}

pub fn render(result: &Value) -> anyhow::Result<String> {
    let text = result["histogram"]
        .as_str()
        .context("no histogram in the result")?;
    let hist = decode(text)?;
    let points = percentiles(&hist);
    let intervals = result["intervals"].as_array().cloned().unwrap_or_default();
    let series = |key: &str| -> Vec<f64> {
        intervals
            .iter()
            .map(|i| i[key].as_f64().unwrap_or(0.0))
            .collect()
    };
    let seconds: Vec<f64> = (0..intervals.len()).map(|i| i as f64).collect();
    let mut page = String::new();
    let title = format!(
        "tsecho bench: {}",
        escape(result["url"].as_str().unwrap_or("?"))
    );
    let _ = write!(
        page,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}svg{{background:#fff}}</style>\
         </head><body><h1>{title}</h1>"
    );
    if result["interrupted"] == Value::Bool(true) {
        page += "<p><strong>Interrupted:</strong> what was measured until Ctrl-C.</p>";
    }
    page += &summary_table(result);
    let x_ticks: Vec<(f64, String)> = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"]
        .iter()
        .enumerate()
        .map(|(i, label)| (i as f64, label.to_string()))
        .take_while(|(x, _)| {
            points
                .last()
                .is_none_or(|p| *x <= nines(p.0).ceil().max(1.0))
        })
        .collect();
    let xs: Vec<f64> = points.iter().map(|p| nines(p.0)).collect();
    let ys: Vec<f64> = points.iter().map(|p| p.1).collect();
    page += "<h2>Latency by percentile</h2>";
    page += &chart("percentile-curve", &xs, &ys, &x_ticks, "percentile", "µs");
    let time_ticks = (0..intervals.len())
        .step_by((intervals.len() / 10).max(1))
        .map(|i| (i as f64, format!("{i} s")))
        .collect::<Vec<_>>();
    page += "<h2>Replies in each wall-clock second</h2>\
             <p>The first and last seconds are partly outside the run.</p>";
    page += &chart(
        "replies",
        &seconds,
        &series("replies"),
        &time_ticks,
        "time",
        "replies/s",
    );
    page += "<h2>p99 per second</h2>";
    page += &chart(
        "p99",
        &seconds,
        &series("p99_us"),
        &time_ticks,
        "time",
        "µs",
    );
    page += "<h2>Errors and losses per second</h2>";
    page += &chart(
        "errors",
        &seconds,
        &series("errors"),
        &time_ticks,
        "time",
        "errors",
    );
    page += &percentile_table(&points);
    if let Some(workers) = result["workers"].as_array() {
        page += &workers_table(workers);
    }
    page += "</body></html>\n";
    Ok(page)
}

fn summary_table(result: &Value) -> String {
    let mut rows = String::from("<h2>Settings and totals</h2><table>");
    for key in [
        "url",
        "merged",
        "conns",
        "pipeline",
        "size",
        "rate",
        "reconnect",
        "warmup",
        "secs",
        "replies",
        "rps",
        "p50_us",
        "p90_us",
        "p99_us",
        "p999_us",
        "max_us",
        "errors",
        "mismatches",
        "lost",
        "late",
        "client_cpu",
    ] {
        let value = &result[key];
        if value.is_null() {
            continue;
        }
        let shown = match value {
            Value::Number(n) if n.is_f64() => format!("{:.3}", n.as_f64().unwrap_or(0.0)),
            Value::String(s) => escape(s),
            other => other.to_string(),
        };
        let _ = write!(rows, "<tr><th>{key}</th><td>{shown}</td></tr>");
    }
    rows + "</table>"
}

fn percentile_table(points: &[(f64, f64)]) -> String {
    let mut table = format!(
        "<h2>Percentiles ({} points)</h2><table id=\"percentiles\"><tr><th>percentile</th><th>µs</th></tr>",
        points.len()
    );
    for (q, us) in points {
        let _ = write!(
            table,
            "<tr class=\"pct\"><td>{:.5}%</td><td>{us:.1}</td></tr>",
            q * 100.0
        );
    }
    table + "</table>"
}

fn workers_table(workers: &[Value]) -> String {
    let mut table = String::from(
        "<h2>Workers</h2><table id=\"workers\"><tr><th>#</th><th>url</th><th>start (unix)</th>\
         <th>secs</th><th>replies</th><th>req/s</th><th>p50 µs</th><th>p99 µs</th><th>errors</th></tr>",
    );
    for (i, w) in workers.iter().enumerate() {
        let n = |key: &str| w[key].as_f64().unwrap_or(0.0);
        let _ = write!(
            table,
            "<tr><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.2}</td><td>{:.0}</td><td>{:.0}</td>\
             <td>{:.1}</td><td>{:.1}</td><td>{:.0}</td></tr>",
            i + 1,
            escape(w["url"].as_str().unwrap_or("?")),
            n("start_unix"),
            n("secs"),
            n("replies"),
            n("rps"),
            n("p50_us"),
            n("p99_us"),
            n("errors")
        );
    }
    table + "</table>"
}

/// A line chart: axes from 0 to the largest value, ticks on x as given,
/// four on y, and the points as one polyline whose `data-points` says
/// how many it has.
fn chart(
    id: &str,
    xs: &[f64],
    ys: &[f64],
    x_ticks: &[(f64, String)],
    x_label: &str,
    y_label: &str,
) -> String {
    let x_max = xs
        .iter()
        .chain(x_ticks.iter().map(|t| &t.0))
        .copied()
        .fold(1e-9, f64::max);
    // Counts that stayed at zero still get a readable axis.
    let y_max = ys.iter().copied().fold(1.0, f64::max) * 1.05;
    let (plot_w, plot_h) = (WIDTH - 2.0 * MARGIN, HEIGHT - 2.0 * MARGIN);
    let x_at = |x: f64| MARGIN + x / x_max * plot_w;
    let y_at = |y: f64| HEIGHT - MARGIN - y / y_max * plot_h;
    let mut svg = format!(
        "<svg id=\"{id}-chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-size=\"11\">"
    );
    let (left, bottom, right) = (MARGIN, HEIGHT - MARGIN, WIDTH - MARGIN);
    let _ = write!(
        svg,
        "<line x1=\"{left}\" y1=\"{bottom}\" x2=\"{right}\" y2=\"{bottom}\" stroke=\"#444\"/>\
         <line x1=\"{left}\" y1=\"{MARGIN}\" x2=\"{left}\" y2=\"{bottom}\" stroke=\"#444\"/>"
    );
    for (x, label) in x_ticks {
        let px = x_at(*x);
        let _ = write!(
            svg,
            "<line x1=\"{px:.1}\" y1=\"{MARGIN}\" x2=\"{px:.1}\" y2=\"{bottom}\" stroke=\"#eee\"/>\
             <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            bottom + 16.0,
            escape(label)
        );
    }
    for i in 0..=4 {
        let y = y_max * f64::from(i) / 4.0;
        let py = y_at(y);
        let _ = write!(
            svg,
            "<line x1=\"{left}\" y1=\"{py:.1}\" x2=\"{right}\" y2=\"{py:.1}\" stroke=\"#eee\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 4.0,
            py + 4.0,
            short(y)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
         <text x=\"14\" y=\"{:.1}\" transform=\"rotate(-90 14 {:.1})\" text-anchor=\"middle\">{}</text>",
        WIDTH / 2.0,
        HEIGHT - 12.0,
        escape(x_label),
        HEIGHT / 2.0,
        HEIGHT / 2.0,
        escape(y_label)
    );
    let points: Vec<String> = xs
        .iter()
        .zip(ys)
        .map(|(x, y)| format!("{:.1},{:.1}", x_at(*x), y_at(*y)))
        .collect();
    let _ = write!(
        svg,
        "<polyline id=\"{id}\" data-points=\"{}\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"{}\"/></svg>",
        points.len(),
        points.join(" ")
    );
    svg
}

fn short(value: f64) -> String {
    match value {
        v if v >= 1e6 => format!("{:.1}M", v / 1e6),
        v if v >= 1e4 => format!("{:.0}k", v / 1e3),
        v if v >= 100.0 => format!("{v:.0}"),
        v => format!("{v:.1}"),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::bench_results::{encode, new_histogram};

    #[test]
    fn the_curve_has_a_point_per_reported_percentile() {
        let mut hist = new_histogram();
        for v in 1..=10_000u64 {
            hist.record(v * 1000).unwrap();
        }
        let result =
            serde_json::json!({"url": "tcp://<x>:1", "histogram": encode(&hist), "intervals": []});
        let page = render(&result).unwrap();
        let n = percentiles(&hist).len();
        assert!(n > 20);
        assert!(page.contains(&format!("id=\"percentile-curve\" data-points=\"{n}\"")));
        assert_eq!(page.matches("class=\"pct\"").count(), n);
        assert!(page.contains("tcp://&lt;x&gt;:1") && !page.contains("<x>"));
        assert!(
            !page.contains("<script") && !page.contains("http://")
                || page.contains("xmlns=\"http://www.w3.org/2000/svg\"")
        );
    }
}
