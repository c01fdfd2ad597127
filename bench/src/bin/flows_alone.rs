//! `flows_alone`: the `flow_to_topology` transform alone, in process, under the allocator the
//! `weir` binary uses (mimalloc), so the time freeing the flows (the transform consumes them)
//! costs what it costs in the product. `weir-bench flows` runs it; it can run by itself:
//!
//! ```sh
//! flows_alone FILE [COUNT] [RUNS] [CODEC]    # a file of `hubble observe -o jsonpb` lines
//! ```
//!
//! Each run takes the first COUNT lines (default 200,000) in batches of 1000. A batch is
//! decoded by the product's decoder for CODEC (`hubble_jsonpb`, the default: flows in typed
//! form; or `json`: a tree of fields per flow), as the `stdin` source calls it, timed apart, then fed to `FlowToTopology`
//! (`window_secs = 0`), timed; the final flush is timed with the transform. Decoding batch by
//! batch is what the pipeline does, and holds one batch in memory rather than every flow.
//! Prints one line per run on stderr, then on stdout the medians:
//! `flows N transform_flows_per_sec X decode_flows_per_sec Y`.

// This is benchmark code: a failed unwrap()/expect() is a failed run, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use weir_pipeline::codec::Decoder;
use weir_pipeline::component::{Transform, TransformOutput};
use weir_pipeline::event::EventBatch;
use weir_pipeline::metrics::ComponentMetrics;
use weir_transforms::flow_to_topology::{FlowToTopology, FlowToTopologyConfig};

/// The `weir` binary's allocator (src/main.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH: usize = 1000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One run: (transform time, decode time).
fn run(text: &Bytes, lines: &[(usize, usize)], codec: Decoder) -> Result<(Duration, Duration)> {
    let cfg = FlowToTopologyConfig {
        window_secs: 0,
        ..Default::default()
    };
    let mut t = FlowToTopology::new(cfg, ComponentMetrics::detached("map"));
    let mut out = TransformOutput::default();
    let (mut transform, mut decode) = (Duration::ZERO, Duration::ZERO);
    for chunk in lines.chunks(BATCH) {
        let started = Instant::now();
        let mut events = Vec::with_capacity(chunk.len());
        let now = chrono::Utc::now();
        for &(from, to) in chunk {
            codec.decode_at(text.slice(from..to), &None, now, &mut events)?;
        }
        let batch = EventBatch::new(events);
        let decoded = Instant::now();
        t.transform(batch, &mut out);
        transform += decoded.elapsed();
        decode += decoded - started;
    }
    let started = Instant::now();
    t.flush(&mut out);
    transform += started.elapsed();
    std::hint::black_box(&out);
    if out.default.len() != 1 {
        bail!(
            "the transform alone emitted {} events, expected one map",
            out.default.len()
        );
    }
    Ok((transform, decode))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(path) = args.first() else {
        bail!("usage: flows_alone FILE [COUNT] [RUNS] [hubble_jsonpb|json]");
    };
    let number = |i: usize, default: usize| -> Result<usize> {
        args.get(i).map_or(Ok(default), |v| {
            v.parse()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("expected a positive integer, got {v:?}"))
        })
    };
    let (count, runs) = (number(1, 200_000)?, number(2, 3)?);
    let codec = match args.get(3).map(String::as_str) {
        None | Some("hubble_jsonpb") => weir_records::flow::HubbleJsonpb::decoder(),
        Some("json") => Decoder::Json,
        Some(other) => bail!("unknown codec {other:?}: expected hubble_jsonpb or json"),
    };
    let text = Bytes::from(std::fs::read(path).with_context(|| format!("cannot read {path}"))?);
    let mut lines = Vec::with_capacity(count);
    let mut at = 0;
    for end in memchr::memchr_iter(b'\n', &text).take(count) {
        lines.push((at, end));
        at = end + 1;
    }
    let n = lines.len() as f64;
    let (mut transform, mut decode) = (Vec::new(), Vec::new());
    for i in 1..=runs {
        let (t, d) = run(&text, &lines, codec)?;
        eprintln!(
            "  transform alone run {i}/{runs}: {:.3} s, {:.0} flows/s (decoding: {:.3} s, {:.0} flows/s)",
            t.as_secs_f64(),
            n / t.as_secs_f64(),
            d.as_secs_f64(),
            n / d.as_secs_f64()
        );
        transform.push(n / t.as_secs_f64());
        decode.push(n / d.as_secs_f64());
    }
    println!(
        "flows {} transform_flows_per_sec {:.0} decode_flows_per_sec {:.0}",
        lines.len(),
        median(transform),
        median(decode)
    );
    Ok(())
}
