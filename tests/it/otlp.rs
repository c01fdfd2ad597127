//! The `otlp` source and sink end to end, with a real OpenTelemetry SDK as the client.
//!
//! ```text
//! send.py (opentelemetry-sdk, OTLP gRPC and HTTP exporters)
//!    |--------------------------------------------> receiver.py :reference (what was sent)
//!    v
//! weir A: otlp source --> otlp sink (gRPC, gzip) ----> receiver.py :direct
//!                     |-> otlp sink (gRPC, TLS with a custom CA) --> receiver.py :tls
//!                     \-> otlp sink (HTTP JSON, gzip) --> weir B: otlp source (HTTP)
//!                                                        --> otlp sink (gRPC) --> receiver.py :via_b
//! ```
//!
//! `receiver.py` is built from the official OTLP protobufs (`opentelemetry-proto` + `grpcio`);
//! `compare.py` checks every span, log record and metric point, field by field. The Python
//! packages are installed by `scripts/install-test-deps.sh`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::harness::{
    free_addr, python_modules, require, sigterm, wait_until, wait_with_timeout, weir, write_config,
};

fn script(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/it/otlp")
        .join(name)
}

/// The OpenTelemetry SDK and protobufs in Python, or the test is skipped (a failure under CI).
fn otel_python() -> Option<()> {
    let modules = [
        "grpc",
        "opentelemetry.sdk",
        "opentelemetry.proto",
        "opentelemetry.exporter.otlp.proto.grpc",
        "opentelemetry.exporter.otlp.proto.http",
    ];
    require("the OpenTelemetry SDK for Python", python_modules(&modules))
}

fn python() -> Command {
    let mut c = Command::new("python3");
    c.env("PYTHONDONTWRITEBYTECODE", "1");
    c
}

struct Killed(Vec<Child>);
impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn start_weir(dir: &Path, name: &str, toml: &str, ready: &[SocketAddr]) -> Child {
    let cfg = write_config(dir, name, toml);
    let child = weir()
        .args(["run", "--config"])
        .arg(cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir");
    for a in ready {
        assert!(
            wait_until(Duration::from_secs(20), || TcpStream::connect(a).is_ok()),
            "{name} listens on {a}"
        );
    }
    child
}

#[test]
fn sdk_spans_metrics_and_logs_arrive_intact_through_two_weirs() {
    let Some(()) = otel_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("received");
    std::fs::create_dir_all(&out).unwrap();
    let (reference, direct, via_b, tls) = (free_addr(), free_addr(), free_addr(), free_addr());
    let (ca, cert, key) = crate::harness::make_certs(dir.path());
    let receiver = python()
        .arg(script("receiver.py"))
        .arg(&out)
        .arg(format!("reference={}", reference.port()))
        .arg(format!("direct={}", direct.port()))
        .arg(format!("via_b={}", via_b.port()))
        .arg(format!(
            "tls={},{},{}",
            tls.port(),
            cert.display(),
            key.display()
        ))
        .stdout(Stdio::null())
        .spawn()
        .expect("python3 runs");
    let mut guard = Killed(vec![receiver]);
    assert!(
        wait_until(Duration::from_secs(30), || out.join("ready").exists()),
        "receiver.py starts (needs grpcio and opentelemetry-proto: pip, see scripts/install-test-deps.sh)"
    );

    let (a_grpc, a_http, b_http) = (free_addr(), free_addr(), free_addr());
    let b = start_weir(
        dir.path(),
        "b.toml",
        &format!(
            r#"
data_dir = "{data}/b"
[api]
enabled = false
[sources.otel]
type = "otlp"
grpc.enabled = false
http.address = "{b_http}"
[sinks.out]
type = "otlp"
inputs = ["otel.traces", "otel.metrics", "otel.logs"]
endpoint = "http://{via_b}"
batch.timeout_secs = 0.1
"#,
            data = dir.path().display()
        ),
        &[b_http],
    );
    guard.0.push(b);
    let a = start_weir(
        dir.path(),
        "a.toml",
        &format!(
            r#"
data_dir = "{data}/a"
[api]
enabled = false
[sources.otel]
type = "otlp"
grpc.address = "{a_grpc}"
http.address = "{a_http}"
acknowledgements = true
[sinks.direct]
type = "otlp"
inputs = ["otel.traces", "otel.metrics", "otel.logs"]
endpoint = "http://{direct}"
compression = "gzip"
headers.authorization = "Bearer t0ken"
allow_plaintext_credentials = true
batch.timeout_secs = 0.1
[sinks.tls]
type = "otlp"
inputs = ["otel.traces", "otel.metrics", "otel.logs"]
endpoint = "https://127.0.0.1:{tls_port}"
tls.ca_file = "{ca}"
batch.timeout_secs = 0.1
[sinks.to_b]
type = "otlp"
inputs = ["otel.traces", "otel.metrics", "otel.logs"]
protocol = "http"
encoding = "json"
compression = "gzip"
endpoint = "http://{b_http}"
batch.timeout_secs = 0.1
"#,
            data = dir.path().display(),
            tls_port = tls.port(),
            ca = ca.display(),
        ),
        &[a_grpc, a_http],
    );
    guard.0.push(a);

    for (proto, endpoint, tag) in [
        ("grpc", format!("http://{a_grpc}"), "run-grpc"),
        ("http", format!("http://{a_http}"), "run-http"),
    ] {
        let o = python()
            .arg(script("send.py"))
            .args([proto, &endpoint, &format!("http://{reference}"), tag])
            .output()
            .expect("send.py runs");
        assert!(
            o.status.success(),
            "send.py {proto}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !err.contains("Failed to export"),
            "the SDK's exports to Weir succeed ({proto}): {err}"
        );
    }
    let o = python()
        .arg(script("compare.py"))
        .arg(&out)
        .args(["30", "run-grpc,run-http", "direct", "via_b", "tls"])
        .output()
        .expect("compare.py runs");
    let report = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "compare.py:\n{report}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        report.contains("ok: 4 spans, 4 logs, 8 metric points"),
        "{report}"
    );

    for c in guard.0.drain(1..).rev() {
        sigterm(&c);
        let o = wait_with_timeout(c, Duration::from_secs(15));
        assert!(
            o.status.success(),
            "weir exits cleanly: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

/// A raw HTTP/1.1 POST, returning (status, body).
fn post(addr: SocketAddr, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn invalid_trace_id_length_is_refused_counted_and_logged() {
    let Some(()) = otel_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let (grpc, http, api) = (free_addr(), free_addr(), free_addr());
    let child = start_weir(
        dir.path(),
        "w.toml",
        &format!(
            r#"
data_dir = "{data}"
[api]
address = "{api}"
[sources.otel]
type = "otlp"
grpc.address = "{grpc}"
http.address = "{http}"
[sinks.null]
type = "blackhole"
inputs = ["otel.traces"]
"#,
            data = dir.path().display()
        ),
        &[grpc, http, api],
    );
    let guard = Killed(vec![child]);
    // OTLP/JSON: ids are hex; "abcd" is 2 bytes, not 16.
    let bad = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"abcd","spanId":"0102030405060708","name":"bad span","startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}"#;
    let (status, body) = post(http, "/v1/traces", "application/json", bad);
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("trace_id has 2 bytes, not 16") && body.contains("bad span"),
        "{body}"
    );
    // Garbage protobuf: refused too, the server keeps serving.
    let (status, body) = post(
        http,
        "/v1/traces",
        "application/x-protobuf",
        b"\xff\xff\xff",
    );
    assert_eq!(status, 400, "{body}");
    // gRPC, with the official protobufs: INVALID_ARGUMENT.
    let o = python()
        .arg("-c")
        .arg(format!(
            r#"
import grpc, sys
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as t, trace_service_pb2_grpc as g
from opentelemetry.proto.trace.v1 import trace_pb2
req = t.ExportTraceServiceRequest(resource_spans=[trace_pb2.ResourceSpans(scope_spans=[trace_pb2.ScopeSpans(spans=[
    trace_pb2.Span(trace_id=b"\x01" * 5, span_id=b"\x02" * 8, name="short id")])])])
try:
    g.TraceServiceStub(grpc.insecure_channel("{grpc}")).Export(req, timeout=10)
    print("accepted")
except grpc.RpcError as e:
    print(e.code().name, e.details())
"#
        ))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.starts_with("INVALID_ARGUMENT") && said.contains("trace_id has 5 bytes, not 16"),
        "{said}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let metrics = crate::harness::http_get(api, "/metrics").unwrap().1;
    let line = metrics
        .lines()
        .find(|l| {
            l.contains("component_errors_total") && l.contains("error_type=\"invalid_request\"")
        })
        .unwrap_or_else(|| panic!("an invalid_request counter:\n{metrics}"));
    assert!(line.trim_end().ends_with(" 3"), "{line}");
    let mut guard = guard;
    let c = guard.0.pop().unwrap();
    sigterm(&c);
    let o = wait_with_timeout(c, Duration::from_secs(15));
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(
        log.contains("invalid OTLP traces request") && log.contains("trace_id has 2 bytes"),
        "a clear log line: {log}"
    );
}

/// Backpressure: with the only sink stalled and its buffer full, an export is refused with
/// 429 (`RESOURCE_EXHAUSTED` over gRPC) instead of waiting forever, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pipeline_answers_429() {
    let dir = tempfile::tempdir().unwrap();
    let http = free_addr();
    let toml = format!(
        r#"
data_dir = "{data}"
[api]
enabled = false
[sources.otel]
type = "otlp"
grpc.enabled = false
http.address = "{http}"
accept_timeout_secs = 0.3
# What is measured is the answer when the buffers are full; with acknowledgements (the
# default) the export would wait for the stalled sink's delivery instead.
acknowledgements = false
[sinks.stuck]
type = "gated"
inputs = ["otel.logs"]
name = "otlp-bp"
stalled = true
buffer.max_events = 1
"#,
        data = dir.path().display()
    );
    let r = crate::testkit::full_registry();
    let config = weir_pipeline::config::load_str("t.toml", &toml, &r, &|_| None).unwrap();
    let graph = weir_pipeline::config::resolve_graph(&config, false).unwrap();
    let running = weir_pipeline::topology::start(config, &graph)
        .await
        .unwrap();
    let metrics = running.registry.get("otel").unwrap();
    let log =
        br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"hi"}}]}]}]}"#;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let s =
            tokio::task::spawn_blocking(move || post(http, "/v1/logs", "application/json", log).0)
                .await
                .unwrap();
        statuses.push(s);
        if s == 429 {
            break;
        }
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    assert!(
        statuses[..statuses.len() - 1].iter().all(|s| *s == 200),
        "{statuses:?}"
    );
    assert!(metrics
        .errors()
        .get("backpressure")
        .is_some_and(|n| *n >= 1));
    crate::testkit::state("otlp-bp").open_gate();
    // Once the sink moves again, exports are accepted again.
    let s = tokio::task::spawn_blocking(move || post(http, "/v1/logs", "application/json", log).0)
        .await
        .unwrap();
    assert_eq!(s, 200);
    running.shutdown_token().cancel();
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("drains");
}

/// The sink retries a 503 (honouring `Retry-After`), then counts a partial success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_retries_503_and_counts_partial_success() {
    use std::sync::{Arc, Mutex};
    let bodies: Arc<Mutex<Vec<serde_json::Value>>> = Arc::default();
    let b = bodies.clone();
    let app = axum::Router::new().route(
        "/v1/logs",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let b = b.clone();
            async move {
                assert_eq!(headers["content-type"], "application/json");
                let mut all = b.lock().unwrap();
                all.push(serde_json::from_slice(&body).unwrap());
                if all.len() == 1 {
                    (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        [("retry-after", "0")],
                        "try later".to_string(),
                    )
                } else {
                    (
                        axum::http::StatusCode::OK,
                        [("content-type", "application/json")],
                        r#"{"partialSuccess":{"rejectedLogRecords":1,"errorMessage":"record too old"}}"#
                            .to_string(),
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dir = tempfile::tempdir().unwrap();
    let running = start_full(&format!(
        r#"
data_dir = "{data}"
[api]
enabled = false
[sources.src]
type = "counting"
name = "otlp-retry"
count = 3
batch = 3
acknowledgements = true
[sinks.out]
type = "otlp"
inputs = ["src"]
protocol = "http"
encoding = "json"
endpoint = "http://{addr}"
request.retry_initial_backoff_secs = 0.01
batch.timeout_secs = 0.05
"#,
        data = dir.path().display()
    ))
    .await;
    let metrics = running.registry.get("out").unwrap();
    tokio::time::timeout(Duration::from_secs(20), running.wait())
        .await
        .expect("drains");
    let bodies = bodies.lock().unwrap();
    assert_eq!(bodies.len(), 2, "sent again after the 503");
    for b in bodies.iter() {
        let records = b["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
            .as_array()
            .unwrap();
        assert_eq!(records.len(), 3, "{b}");
        assert_eq!(records[2]["attributes"][0]["key"], "seq");
    }
    assert_eq!(
        *crate::testkit::state("otlp-retry").statuses.lock().unwrap(),
        vec![weir_pipeline::finalization::EventStatus::Delivered]
    );
    let errors = metrics.errors();
    assert_eq!(errors.get("request_failed"), Some(&1), "{errors:?}");
    assert_eq!(errors.get("partial_success"), Some(&1), "{errors:?}");
    assert_eq!(metrics.sent_events(), 3);
}

/// Starts `toml` in process with every real component and the test ones.
async fn start_full(toml: &str) -> weir_pipeline::topology::RunningTopology {
    let r = crate::testkit::full_registry();
    let config = weir_pipeline::config::load_str("t.toml", toml, &r, &|_| None).unwrap();
    let graph = weir_pipeline::config::resolve_graph(&config, false).unwrap();
    weir_pipeline::topology::start(config, &graph)
        .await
        .unwrap()
}
