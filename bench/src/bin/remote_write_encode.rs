//! `remote_write_encode`: how fast the `prometheus_remote_write` sink turns samples into
//! request bodies, on one core, next to a baseline measured in the same run: serialising the
//! same samples as JSON lines with serde_json.
//!
//! Usage: `remote_write_encode [SERIES] [ROUNDS]` (defaults 10000 and 200). Each round has
//! one sample of each of SERIES series (a name and three labels, as a typical
//! `http_requests_total{code,method,instance}`), and makes one request of them.
//!
//! Two comparisons, each side doing the same work on the same samples:
//!
//! 1. **samples -> body** (the goal of issue #4): the sink's encode path, with the series
//!    already known (their labels encoded when first seen): record each sample in a batch,
//!    write the `WriteRequest`, snappy-compress it; against serde_json writing each sample
//!    as `{"name":..,"tags":{..},"value":..,"timestamp":..}`.
//! 2. **events -> body**: everything the sink does per metric event, from the event on:
//!    the series key (name and tags moved out of the event), the running total, then the
//!    same as 1; against serde_json writing each event (`Metric`'s own `Serialize`).
//!    The events are built before each round, outside the timing, for both sides.
//!
//! Both sides call the sink's code (`weir_sinks::prometheus`), not a copy of it.

// This is benchmark code: a failed unwrap()/expect() is a failed run, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use weir_pipeline::event::{Metric, MetricKind, MetricValue};
use weir_sinks::prometheus::common::{Aggregator, Entry, SeriesKey, Stored};
use weir_sinks::prometheus::request::{labels_for, Batch, Compressor, SeriesLabels};

/// One sample as a JSON line (borrowing, as a sink serialising events would).
#[derive(serde::Serialize)]
struct Line<'a> {
    name: &'a str,
    tags: &'a BTreeMap<String, String>,
    value: f64,
    timestamp: i64,
}

const TS0: i64 = 1_700_000_000_000;

fn series(n: usize) -> Vec<SeriesKey> {
    (0..n)
        .map(|i| SeriesKey {
            name: format!("http_requests_{}_total", i % 50),
            tags: BTreeMap::from([
                ("code".to_string(), ["200", "404", "500"][i % 3].to_string()),
                ("method".to_string(), ["GET", "POST"][i % 2].to_string()),
                ("instance".to_string(), format!("host-{}", i / 150)),
            ]),
        })
        .collect()
}

/// The time of one request: write the batch, compress it (as the sink's flush and sender
/// do). Returns the compressed size.
fn finish(batch: &mut Batch, snappy: &mut Compressor) -> usize {
    let (mut raw, mut starts) = (Vec::new(), Vec::new());
    batch.encode(&[], &mut raw, &mut starts);
    let body = snappy.compress(&raw).expect("snappy");
    black_box(&starts);
    black_box(body).len()
}

/// 1. samples -> body. Returns (time, compressed bytes).
fn encode_samples(keys: &[SeriesKey], rounds: usize) -> (Duration, usize) {
    // The series as the sink holds them once seen: labels encoded, last time sent.
    let mut known: Vec<(Arc<SeriesLabels>, i64)> = keys
        .iter()
        .map(|k| {
            let mut cache = None;
            let l = labels_for(&mut cache, k, &Stored::Counter(0.0), &[], 1).clone();
            (l, i64::MIN)
        })
        .collect();
    let mut batch = Batch::new();
    let mut snappy = Compressor::default();
    let mut bytes = 0;
    let start = Instant::now();
    for r in 0..rounds {
        for (i, (labels, last)) in known.iter_mut().enumerate() {
            let value = Stored::Counter((i + r) as f64);
            let _ = batch.record(labels, last, TS0 + r as i64, &value, &[]);
        }
        bytes += finish(&mut batch, &mut snappy);
    }
    (start.elapsed(), bytes)
}

fn json_samples(keys: &[SeriesKey], rounds: usize) -> (Duration, usize) {
    let mut out = Vec::new();
    let mut bytes = 0;
    let start = Instant::now();
    for r in 0..rounds {
        out.clear();
        for (i, k) in keys.iter().enumerate() {
            let line = Line {
                name: &k.name,
                tags: &k.tags,
                value: (i + r) as f64,
                timestamp: TS0 + r as i64,
            };
            serde_json::to_writer(&mut out, &line).expect("json");
            out.push(b'\n');
        }
        bytes += out.len();
        black_box(&out);
    }
    (start.elapsed(), bytes)
}

/// One round of incremental counter events, one per series.
fn events(keys: &[SeriesKey], r: usize) -> Vec<Metric> {
    keys.iter()
        .enumerate()
        .map(|(i, k)| {
            let mut m = Metric::new(
                k.name.clone(),
                MetricKind::Incremental,
                MetricValue::Counter {
                    value: ((i + r) % 7) as f64,
                },
            )
            .with_timestamp(chrono::DateTime::from_timestamp_millis(TS0 + r as i64).expect("ts"));
            m.tags = k.tags.clone();
            m
        })
        .collect()
}

/// 2. events -> body, through the sink's aggregation.
fn encode_events(keys: &[SeriesKey], rounds: usize) -> (Duration, usize) {
    let mut agg: Aggregator<Option<Arc<SeriesLabels>>> = Aggregator::new(vec![], vec![]);
    let mut batch = Batch::new();
    let mut snappy = Compressor::default();
    let mut bytes = 0;
    let mut time = Duration::ZERO;
    let now = Instant::now();
    for r in 0..rounds {
        let ms = events(keys, r);
        let start = Instant::now();
        for mut m in ms {
            let ts = m.timestamp.map_or(0, |t| t.timestamp_millis());
            let key = SeriesKey::of(&mut m);
            // As the sink's `record`, with one shard.
            let _ = agg.absorb(key, m, now, |key, e| {
                let Entry {
                    value,
                    last_ts,
                    ext,
                    ..
                } = e;
                let labels = labels_for(ext, key, value, &[], 1);
                batch.record_series(labels, key, last_ts, ts, value, &[]);
            });
        }
        bytes += finish(&mut batch, &mut snappy);
        time += start.elapsed();
    }
    (time, bytes)
}

fn json_events(keys: &[SeriesKey], rounds: usize) -> (Duration, usize) {
    let mut out = Vec::new();
    let mut bytes = 0;
    let mut time = Duration::ZERO;
    for r in 0..rounds {
        let ms = events(keys, r);
        let start = Instant::now();
        out.clear();
        for m in &ms {
            serde_json::to_writer(&mut out, m).expect("json");
            out.push(b'\n');
        }
        bytes += out.len();
        black_box(&out);
        drop(ms);
        time += start.elapsed();
    }
    (time, bytes)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let keys = series(n);
    let samples = (n * rounds) as f64;
    // Warm-up: one round of each, unmeasured (page faults of the first buffers).
    let _ = (encode_samples(&keys, 1), json_samples(&keys, 1));
    let (rw, rw_bytes) = encode_samples(&keys, rounds);
    let (js, js_bytes) = json_samples(&keys, rounds);
    let (rwe, rwe_bytes) = encode_events(&keys, rounds);
    let (jse, jse_bytes) = json_events(&keys, rounds);
    let rate = |d: Duration| samples / d.as_secs_f64();
    let mut so = std::io::stdout().lock();
    let _ = writeln!(so, "series: {n}, rounds: {rounds}, samples: {}", n * rounds);
    let _ = writeln!(
        so,
        "| case | samples/s | bytes per sample | vs JSON |\n|---|---:|---:|---:|"
    );
    let row = |so: &mut std::io::StdoutLock, name: &str, d: Duration, b: usize, base: Duration| {
        let _ = writeln!(
            so,
            "| {name} | {:.0} | {:.1} | {:.2}x |",
            rate(d),
            b as f64 / samples,
            base.as_secs_f64() / d.as_secs_f64()
        );
    };
    row(
        &mut so,
        "1. remote write: samples -> protobuf + snappy",
        rw,
        rw_bytes,
        js,
    );
    row(
        &mut so,
        "1. baseline: samples -> serde_json lines",
        js,
        js_bytes,
        js,
    );
    row(
        &mut so,
        "2. remote write: events -> aggregate -> protobuf + snappy",
        rwe,
        rwe_bytes,
        jse,
    );
    row(
        &mut so,
        "2. baseline: events -> serde_json lines (`Metric`)",
        jse,
        jse_bytes,
        jse,
    );
}
