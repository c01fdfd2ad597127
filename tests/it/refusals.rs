//! The refusal policy of the sinks (the toolkit's, the same for every sink), end to end: the
//! real `weir` binary reading JSON lines on stdin, and doubles that speak the sinks' wire
//! protocols (the Elasticsearch `_bulk` double of [`crate::elasticsearch`], an OTLP/HTTP
//! receiver decoding OTLP/JSON).
//!
//! - an endpoint that refuses the credentials (401) for a while, then accepts: every event is
//!   delivered exactly once, and the log says so once, then at most once a period (30 s),
//!   not at every retry;
//! - an endpoint that refuses bodies over a size (413): the batches are split until they fit;
//!   one document too large even alone is rejected with its size.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::elasticsearch::{Double, Flavor};
use crate::harness::{spawn_with_stdin, wait_with_timeout, weir, write_config};

/// How often a sink that keeps failing logs it (the toolkit's `REPORT_PERIOD`).
const PERIOD_SECS: u64 = 30;

/// `{"seq":i,"msg":"..."}` for `seqs`.
fn lines(seqs: impl Iterator<Item = usize>) -> String {
    let mut s = String::new();
    for i in seqs {
        s.push_str(&format!(
            "{{\"seq\":{i},\"msg\":\"line {i} of the refusal tests\"}}\n"
        ));
    }
    s
}

/// Runs weir with `sink` (a `[sinks.out]` table reading `in`) fed `input` on stdin, until it
/// exits (stdin closed, everything settled).
async fn run_weir(dir: &Path, sink: &str, input: String) -> Output {
    let cfg = write_config(
        dir,
        "weir.toml",
        &format!(
            r#"
data_dir = "{data}"
[api]
enabled = false
[sources.in]
type = "stdin"
decoding.codec = "json"
{sink}
"#,
            data = dir.display()
        ),
    );
    tokio::task::spawn_blocking(move || {
        let mut child = spawn_with_stdin(weir().args(["run", "--config"]).arg(&cfg));
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.as_bytes()).unwrap();
        drop(stdin);
        wait_with_timeout(child, Duration::from_secs(240))
    })
    .await
    .unwrap()
}

/// How many times each `seq` was stored.
fn counts(seqs: impl Iterator<Item = i64>) -> BTreeMap<i64, usize> {
    let mut m = BTreeMap::new();
    for s in seqs {
        *m.entry(s).or_default() += 1;
    }
    m
}

/// Every seq of `0..n` exactly once, nothing else.
fn assert_exactly_once(counts: &BTreeMap<i64, usize>, n: usize) {
    let missing: Vec<_> = (0..n as i64).filter(|s| !counts.contains_key(s)).collect();
    let twice: Vec<_> = counts.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        missing.is_empty(),
        "{} lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(twice.is_empty(), "stored twice: {twice:?}");
    assert_eq!(counts.len(), n);
}

/// The warning lines of the failure reporter (one per period at most).
fn failure_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains("error_kind=\"request_failed\""))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_answering_401_for_30_s_loses_nothing_and_says_so_once_a_period() {
    const N: usize = 5000;
    const OUTAGE_SECS: u64 = 30;
    let dir = tempfile::tempdir().unwrap();
    let double = Double::of(Flavor::Es8);
    double.lock().unauthorized_until = Some(Instant::now() + Duration::from_secs(OUTAGE_SECS));
    let addr = double.clone().start().await;
    let out = run_weir(
        dir.path(),
        &format!(
            r#"
[sinks.out]
type = "elasticsearch"
inputs = ["in"]
endpoints = ["http://{addr}"]
index = "logs"
auth.user = "weir"
auth.password = "expired"
allow_plaintext_credentials = true
batch.max_events = 500
# Waits of at most 2 s: the sink notices the recovery soon after it.
request.retry_max_duration_secs = 2
"#
        ),
        lines(0..N),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let st = double.lock();
    assert!(
        st.unauthorized >= 3,
        "retried while refused: {}",
        st.unauthorized
    );
    let stored = counts(st.stored.iter().map(|(_, d)| d["seq"].as_i64().unwrap()));
    assert_exactly_once(&stored, N);
    let failures = failure_lines(&stderr);
    let most = OUTAGE_SECS.div_ceil(PERIOD_SECS) as usize + 1;
    assert!(
        !failures.is_empty() && failures.len() <= most,
        "{} failure lines for {} refused requests (at most {most}):\n{stderr}",
        failures.len(),
        st.unauthorized
    );
    // A clear line: the endpoint, the status, the server's reason.
    assert!(
        failures[0].contains(&format!("POST http://{addr}/_bulk"))
            && failures[0].contains("HTTP 401")
            && failures[0].contains("security_exception"),
        "{}",
        failures[0]
    );
    assert!(
        stderr.contains("requests succeed again after"),
        "the recovery is said:\n{stderr}"
    );
    assert!(!stderr.contains("refused:"), "nothing rejected:\n{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_answering_413_gets_everything_in_smaller_requests() {
    const N: usize = 5000;
    const MAX_BODY: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let double = Double::of(Flavor::Es8);
    double.lock().max_body = Some(MAX_BODY);
    let addr = double.clone().start().await;
    // One document too large even alone, in the middle.
    let big = format!(
        "{{\"seq\":{N},\"msg\":\"{}\"}}\n",
        "x".repeat(MAX_BODY + 5000)
    );
    let input = lines(0..N / 2) + &big + &lines(N / 2..N);
    let out = run_weir(
        dir.path(),
        &format!(
            r#"
[sinks.out]
type = "elasticsearch"
inputs = ["in"]
endpoints = ["http://{addr}"]
index = "logs"
batch.max_events = 2000
"#
        ),
        input,
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code().is_some(), "{stderr}");
    let st = double.lock();
    assert!(st.too_large >= 1, "batches over the limit were sent first");
    assert!(st.largest_accepted <= MAX_BODY);
    let stored = counts(st.stored.iter().map(|(_, d)| d["seq"].as_i64().unwrap()));
    assert!(!stored.contains_key(&(N as i64)), "the big one is rejected");
    assert_exactly_once(&stored, N);
    let rejected: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("too large for the endpoint, even alone"))
        .collect();
    assert_eq!(rejected.len(), 1, "{stderr}");
    // Its size is named (the document, with its action line).
    let size: usize = rejected[0]
        .split("a document of ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(size > MAX_BODY, "{}", rejected[0]);
    assert!(
        failure_lines(&stderr).is_empty(),
        "a 413 is not an outage:\n{stderr}"
    );
}

/// An OTLP/HTTP receiver (OTLP/JSON logs) that answers 401 until `until`, then stores the
/// `seq` attribute of every log record.
async fn otlp_receiver(until: Instant) -> (SocketAddr, Arc<Mutex<(usize, Vec<i64>)>>) {
    let state: Arc<Mutex<(usize, Vec<i64>)>> = Arc::default();
    let s = state.clone();
    let app = axum::Router::new().route(
        "/v1/logs",
        axum::routing::post(move |body: axum::body::Bytes| {
            let s = s.clone();
            async move {
                let mut st = s.lock().unwrap();
                if Instant::now() < until {
                    st.0 += 1;
                    return (
                        axum::http::StatusCode::UNAUTHORIZED,
                        "invalid bearer token".to_string(),
                    );
                }
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                for rl in v["resourceLogs"].as_array().unwrap() {
                    for sl in rl["scopeLogs"].as_array().unwrap() {
                        for r in sl["logRecords"].as_array().unwrap() {
                            let seq = r["attributes"]
                                .as_array()
                                .unwrap()
                                .iter()
                                .find(|a| a["key"] == "seq")
                                .map(|a| &a["value"]["intValue"])
                                .unwrap();
                            // OTLP/JSON writes 64-bit integers as strings.
                            let seq = seq
                                .as_i64()
                                .or_else(|| seq.as_str().and_then(|s| s.parse().ok()))
                                .unwrap();
                            st.1.push(seq);
                        }
                    }
                }
                (axum::http::StatusCode::OK, "{}".to_string())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_answering_401_loses_nothing() {
    const N: usize = 5000;
    let dir = tempfile::tempdir().unwrap();
    let (addr, state) = otlp_receiver(Instant::now() + Duration::from_secs(6)).await;
    let out = run_weir(
        dir.path(),
        &format!(
            r#"
[sinks.out]
type = "otlp"
inputs = ["in"]
protocol = "http"
encoding = "json"
endpoint = "http://{addr}"
request.retry_max_duration_secs = 1
"#
        ),
        lines(0..N),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let st = state.lock().unwrap();
    assert!(st.0 >= 3, "retried while refused: {}", st.0);
    assert_exactly_once(&counts(st.1.iter().copied()), N);
    let failures = failure_lines(&stderr);
    assert_eq!(failures.len(), 1, "one line within a period:\n{stderr}");
    assert!(
        failures[0].contains("HTTP 401") && failures[0].contains("invalid bearer token"),
        "{}",
        failures[0]
    );
}
