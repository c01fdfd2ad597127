//! `remote_write_send`: the `prometheus_remote_write` sink end to end in one process,
//! including its HTTP client: metric events into the sink's buffer, the sink aggregates,
//! encodes, compresses and POSTs them to a receiver on loopback that counts the requests and
//! answers 204 at once.
//!
//! Usage: `remote_write_send [SERIES] [ROUNDS] [BATCH] [RUNS]` (defaults 2000, 100, 1000, 3).
//! Each round is one gauge sample of each of SERIES series (a name and three labels);
//! `BATCH` is the sink's `batch.max_events` (a small one makes many small requests, which
//! is where the HTTP client's own cost shows). The sink runs with `request.concurrency = 4` on a
//! single-threaded runtime in its own thread, so that the CPU time of that thread is what
//! the sink and its HTTP client cost; the receiver runs in another thread.
//!
//! It prints events/s (wall), the sink thread's CPU nanoseconds per event and per request,
//! and the request count, for each run and the median.
//!
//! Only the sink's TOML options and the pipeline's public API are used, so the same bench
//! measures any version of the sink's client.

// This is benchmark code: a failed unwrap()/expect() is a failed run, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use weir_pipeline::buffer::buffer;
use weir_pipeline::component::{SinkConfig, SinkContext, SinkInput};
use weir_pipeline::event::{Event, EventBatch, Metric, MetricKind, MetricValue};
use weir_pipeline::metrics::{ComponentMetrics, MetricsRegistry};
use weir_pipeline::vocabulary::WhenFull;

const TS0: i64 = 1_700_000_000_000;

fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    bytes: AtomicU64,
    bad: AtomicU64,
}

async fn write(State(c): State<Arc<Counts>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let ok = headers
        .get("content-encoding")
        .is_some_and(|v| v == "snappy")
        && headers
            .get("x-prometheus-remote-write-version")
            .is_some_and(|v| v == "0.1.0");
    if !ok || body.is_empty() {
        c.bad.fetch_add(1, Ordering::Relaxed);
        return StatusCode::BAD_REQUEST;
    }
    c.requests.fetch_add(1, Ordering::Relaxed);
    c.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

/// Starts the receiver on its own thread and runtime.
fn receiver(counts: Arc<Counts>) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let _ = tx.send(l.local_addr().expect("addr"));
            let app = axum::Router::new()
                .route("/api/v1/write", axum::routing::post(write))
                .with_state(counts);
            axum::serve(l, app).await.expect("serve");
            Ok::<_, Infallible>(())
        })
    });
    rx.recv().expect("receiver address")
}

struct Run {
    secs: f64,
    cpu_ns: u64,
    events: u64,
    requests: u64,
}

fn one_run(addr: SocketAddr, counts: &Counts, series: usize, rounds: usize, batch: usize) -> Run {
    let template: Vec<Metric> = (0..series)
        .map(|i| {
            let mut m = Metric::new(
                format!("http_requests_{}_total", i % 50),
                MetricKind::Absolute,
                MetricValue::Gauge { value: i as f64 },
            );
            m.tags
                .insert("code".into(), ["200", "404", "500"][i % 3].into());
            m.tags
                .insert("method".into(), ["GET", "POST"][i % 2].into());
            m.tags
                .insert("instance".into(), format!("host-{}", i / 150));
            m
        })
        .collect();
    let before = counts.requests.load(Ordering::Relaxed);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (secs, cpu_ns, sent) = rt.block_on(async move {
        let cfg: weir_sinks::prometheus::RemoteWriteConfig =
            serde_json::from_value(serde_json::json!({
                "endpoint": format!("http://{addr}/api/v1/write"),
                "batch": { "max_events": batch },
                "request": { "concurrency": 4 },
            }))
            .expect("config");
        let metrics = ComponentMetrics::detached("rw");
        let data = std::env::temp_dir();
        let sink = cfg
            .build(SinkContext {
                id: Arc::from("rw"),
                data_dir: data,
                metrics: metrics.clone(),
                registry: Arc::new(MetricsRegistry::default()),
                outputs: Default::default(),
                stop: Default::default(),
            })
            .await
            .expect("build");
        let (tx, rx) = buffer(10_000, WhenFull::Block, metrics.clone());
        let cpu0 = thread_cpu_ns();
        let start = Instant::now();
        let task = tokio::spawn(sink.run(SinkInput::new(rx, metrics.clone())));
        for r in 0..rounds {
            let ts = chrono::DateTime::from_timestamp_millis(TS0 + r as i64 * 1000).expect("ts");
            for chunk in template.chunks(500) {
                let events: Vec<Event> = chunk
                    .iter()
                    .map(|m| {
                        let mut m = m.clone();
                        m.timestamp = Some(ts);
                        m.into()
                    })
                    .collect();
                tx.send(EventBatch::new(events)).await.expect("send");
            }
        }
        drop(tx);
        task.await.expect("join").expect("sink");
        let secs = start.elapsed().as_secs_f64();
        (secs, thread_cpu_ns() - cpu0, metrics.sent_events())
    });
    Run {
        secs,
        cpu_ns,
        events: sent,
        requests: counts.requests.load(Ordering::Relaxed) - before,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let series: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100);
    let batch: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let counts = Arc::new(Counts::default());
    let addr = receiver(counts.clone());
    let total = (series * rounds) as u64;
    println!(
        "series: {series}, rounds: {rounds}, batch.max_events: {batch}, events per run: {total}"
    );
    // Warm-up (connections, page faults), not reported.
    let _ = one_run(addr, &counts, series, rounds.min(5), batch);
    let mut results = Vec::new();
    for i in 0..runs {
        let r = one_run(addr, &counts, series, rounds, batch);
        assert_eq!(r.events, total, "every event sent");
        println!(
            "run {}: {:.0} events/s, {:.0} CPU ns/event, {:.0} CPU ns/request, {} requests",
            i + 1,
            r.events as f64 / r.secs,
            r.cpu_ns as f64 / r.events as f64,
            r.cpu_ns as f64 / r.requests.max(1) as f64,
            r.requests
        );
        results.push(r);
    }
    assert_eq!(
        counts.bad.load(Ordering::Relaxed),
        0,
        "no malformed request"
    );
    results.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    let m = &results[results.len() / 2];
    println!(
        "median: {:.0} events/s, {:.0} CPU ns/event, {:.0} CPU ns/request, {} requests, {:.1} body bytes/request",
        m.events as f64 / m.secs,
        m.cpu_ns as f64 / m.events as f64,
        m.cpu_ns as f64 / m.requests.max(1) as f64,
        m.requests,
        counts.bytes.load(Ordering::Relaxed) as f64
            / counts.requests.load(Ordering::Relaxed).max(1) as f64
    );
}
