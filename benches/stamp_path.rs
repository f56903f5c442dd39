//! The per-reply work of the stamp service, without sockets: cut a read
//! into lines and stamp each into the output buffer, as the connection
//! loop does. Reported per reply (criterion's throughput in elements).

use std::hint::black_box;
use std::sync::Arc;
use std::time::SystemTime;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tsecho::clock::{Stamper, TimeFormat, TimeStyle};
use tsecho::framing::Lines;
use tsecho::service::stamp;

fn read_of_lines(line_len: usize, total: usize) -> Vec<u8> {
    let mut line = vec![b'x'; line_len - 1];
    line.push(b'\n');
    line.repeat(total / line_len)
}

fn stamp_lines(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_and_stamp");
    for (name, format) in [
        ("ctime", TimeFormat::Ctime),
        ("unix-ns", TimeFormat::UnixNs),
    ] {
        for line_len in [64, 1024] {
            let read = read_of_lines(line_len, 16 * 1024);
            let lines = read.len() / line_len;
            let mut stamper = Stamper::new(Arc::new(TimeStyle {
                format: format.clone(),
                utc: false,
            }));
            let mut out = Vec::with_capacity(64 * 1024);
            group.throughput(Throughput::Elements(lines as u64));
            group.bench_function(format!("{name}/{line_len}B"), |b| {
                b.iter(|| {
                    out.clear();
                    let now = SystemTime::now();
                    for line in Lines::new(black_box(&read), 64 * 1024, false) {
                        stamp::write_reply(stamper.text(now), line, &mut out);
                    }
                    black_box(out.len())
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, stamp_lines);
criterion_main!(benches);
