//! The Prometheus sinks against real servers: a real Prometheus (Debian `prometheus`, with
//! the remote write receiver) and a real VictoriaMetrics (`victoria-metrics`), both started
//! here on ephemeral loopback ports with temporary data directories. Values are read back
//! through their Prometheus query API (`/api/v1/query`).
//!
//! The receiver is stopped in the middle of the stream and started again on the same port
//! and data directory 20 seconds later, as the issue asks: the sink holds and retries while
//! nothing listens (its retry backoff is capped at 0.5 s here, so it retries many times in
//! the gap), and nothing is lost or sent twice.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use weir_pipeline::buffer::buffer;
use weir_pipeline::component::{SinkConfig, SinkContext, SinkInput};
use weir_pipeline::event::{EventBatch, Metric, MetricKind, MetricValue};
use weir_pipeline::finalization::{BatchNotifier, EventStatus};
use weir_pipeline::metrics::{ComponentMetrics, MetricsRegistry};
use weir_pipeline::vocabulary::WhenFull;

use crate::harness::{
    find_program, free_addr, http_get, make_certs, require, sigterm, wait_until, wait_with_timeout,
    weir,
};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Prometheus,
    Victoria,
}

/// The receiver's program, if installed; else the test is skipped (a failure under CI).
fn installed(kind: Kind) -> Option<PathBuf> {
    let name = match kind {
        Kind::Prometheus => "prometheus",
        Kind::Victoria => "victoria-metrics",
    };
    require(name, find_program(name, &[]))
}

/// A real receiver process.
struct Server {
    kind: Kind,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    scrape: Option<SocketAddr>,
    /// Scrape over HTTPS, verifying with this CA file.
    scrape_ca: Option<PathBuf>,
    child: Option<Child>,
}

impl Server {
    fn start(kind: Kind, scrape: Option<SocketAddr>) -> Self {
        Self::start_with(kind, scrape, None)
    }

    fn start_with(kind: Kind, scrape: Option<SocketAddr>, scrape_ca: Option<PathBuf>) -> Self {
        let mut s = Server {
            kind,
            addr: free_addr(),
            dir: tempfile::tempdir().unwrap(),
            scrape,
            scrape_ca,
            child: None,
        };
        s.spawn();
        s
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn spawn(&mut self) {
        let data = self.dir.path().join("data");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = match self.kind {
            Kind::Prometheus => {
                let cfg = self.dir.path().join("prometheus.yml");
                let mut text = String::from("global:\n  scrape_interval: 1s\n");
                if let Some(t) = self.scrape {
                    let target = match &self.scrape_ca {
                        Some(_) => format!("localhost:{}", t.port()),
                        None => t.to_string(),
                    };
                    text.push_str(&format!(
                        "scrape_configs:\n  - job_name: weir\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{target}']\n"
                    ));
                    if let Some(ca) = &self.scrape_ca {
                        text.push_str(&format!(
                            "    scheme: https\n    tls_config:\n      ca_file: {}\n",
                            ca.display()
                        ));
                    }
                }
                std::fs::write(&cfg, text).unwrap();
                let mut c = Command::new("prometheus");
                c.arg(format!("--config.file={}", cfg.display()))
                    .arg(format!("--storage.tsdb.path={}", data.display()))
                    .arg(format!("--web.listen-address={}", self.addr))
                    .arg("--web.enable-remote-write-receiver")
                    .arg("--log.level=warn");
                c
            }
            Kind::Victoria => {
                let mut c = Command::new("victoria-metrics");
                c.arg(format!("-httpListenAddr={}", self.addr))
                    .arg(format!("-storageDataPath={}", data.display()))
                    .arg("-search.latencyOffset=0s")
                    // The samples here are 10 ms apart and minutes old: look back as far as
                    // Prometheus does instead of guessing staleness from their spacing.
                    .arg("-search.maxLookback=5m")
                    .arg("-search.disableCache")
                    .arg("-loggerLevel=WARN");
                c
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", self.kind));
        self.child = Some(child);
        let ready = match self.kind {
            Kind::Prometheus => "/-/ready",
            Kind::Victoria => "/health",
        };
        let addr = self.addr;
        assert!(
            wait_until(Duration::from_secs(30), || {
                http_get(addr, ready).is_ok_and(|(s, _)| s == 200)
            }),
            "{:?} did not become ready: {}",
            self.kind,
            std::fs::read_to_string(self.log_path()).unwrap_or_default()
        );
    }

    fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            sigterm(&c);
            let out = wait_with_timeout(c, Duration::from_secs(30));
            assert!(out.status.success() || out.status.code().is_none());
        }
    }

    fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    /// An instant query: (labels, value as the API prints it) per series.
    fn query(&self, q: &str) -> Vec<(BTreeMap<String, String>, String)> {
        let path = format!("/api/v1/query?query={}", urlencode(q));
        let (status, body) = http_get(self.addr, &path).unwrap();
        assert_eq!(status, 200, "{q}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{q}: {body}");
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                (labels, r["value"][1].as_str().unwrap().to_string())
            })
            .collect()
    }

    /// The single value of `q`, as a number.
    fn value(&self, q: &str) -> Option<f64> {
        let r = self.query(q);
        match r.as_slice() {
            [(_, v)] => Some(parse_value(v)),
            _ => None,
        }
    }

    /// Waits until `q` has one value equal to `want` (within 1e-9), failing with what it has.
    fn expect(&self, q: &str, want: f64) {
        let ok = wait_until(Duration::from_secs(20), || {
            self.value(q).is_some_and(|v| (v - want).abs() < 1e-9)
        });
        assert!(
            ok,
            "{:?}: {q} = {:?}, want {want}",
            self.kind,
            self.query(q)
        );
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn parse_value(v: &str) -> f64 {
    match v {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        n => n.parse().unwrap(),
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

const LINES: usize = 300;
/// How long the receiver stays down in the middle of the stream.
const RESTART_GAP: Duration = Duration::from_secs(20);

/// The pipeline: JSON lines on stdin -> timestamp from `ts` -> log_to_metric -> `sink`.
fn pipeline(api: SocketAddr, data: &std::path::Path, sink: &str) -> String {
    format!(
        r#"
data_dir = "{data}"
[api]
address = "{api}"

[sources.in]
type = "stdin"
decoding = {{ codec = "json" }}

[transforms.ts]
type = "remap"
inputs = ["in"]
source = '.timestamp = from_unix_timestamp!(int!(.ts), unit: "milliseconds")'

[transforms.m]
type = "log_to_metric"
inputs = ["ts"]

[[transforms.m.metrics]]
type = "counter"
field = "code"
name = "weir_t_requests_total"
tags = {{ code = "{{{{ code }}}}", "bad.label" = "x" }}

[[transforms.m.metrics]]
type = "gauge"
field = "seq"
name = "weir_t_seq"

[[transforms.m.metrics]]
type = "histogram"
field = "lat"
name = "weir_t_latency_seconds"
buckets = [0.1, 0.5, 1.0]

[[transforms.m.metrics]]
type = "summary"
field = "size"
name = "weir_t_size_bytes"

[[transforms.m.metrics]]
type = "gauge"
field = "seq"
name = "weir-t.bad name"

[sinks.out]
inputs = ["m"]
{sink}
"#,
        data = data.display()
    )
}

/// Line `i` of the stream: distinct, increasing timestamps 10 ms apart, starting 2 minutes ago.
fn line(base: i64, i: usize) -> String {
    let code = if i.is_multiple_of(3) { 500 } else { 200 };
    let lat = (i % 10) as f64 / 10.0 + 0.05;
    format!(
        "{{\"ts\":{},\"seq\":{i},\"code\":{code},\"lat\":{lat},\"size\":{}}}\n",
        base + 10 * i as i64,
        i + 1
    )
}

fn write_lines(stdin: &mut ChildStdin, base: i64, range: std::ops::Range<usize>) {
    let mut text = String::new();
    for i in range {
        text.push_str(&line(base, i));
    }
    stdin.write_all(text.as_bytes()).unwrap();
    stdin.flush().unwrap();
}

/// What the stream must leave in the receiver: exact values, every sample once.
fn check_stream(srv: &Server) {
    let n = LINES as f64;
    // Counters: running totals of the increments, one sample per line, none lost or doubled.
    srv.expect(r#"weir_t_requests_total{code="200",bad_label="x"}"#, 200.0);
    srv.expect(r#"weir_t_requests_total{code="500"}"#, 100.0);
    srv.expect(
        r#"count_over_time(weir_t_requests_total{code="200"}[1h])"#,
        200.0,
    );
    srv.expect(
        r#"count_over_time(weir_t_requests_total{code="500"}[1h])"#,
        100.0,
    );
    // The gauge: the last value; every sample present exactly once.
    srv.expect("weir_t_seq", n - 1.0);
    srv.expect("count_over_time(weir_t_seq[1h])", n);
    srv.expect("sum_over_time(weir_t_seq[1h])", n * (n - 1.0) / 2.0);
    // The invalid name, sanitised.
    srv.expect("weir_t_bad_name", n - 1.0);
    // The histogram: cumulative buckets including +Inf, sum and count.
    srv.expect(r#"weir_t_latency_seconds_bucket{le="0.1"}"#, 30.0);
    srv.expect(r#"weir_t_latency_seconds_bucket{le="0.5"}"#, 150.0);
    srv.expect(r#"weir_t_latency_seconds_bucket{le="1"}"#, 300.0);
    srv.expect(r#"weir_t_latency_seconds_bucket{le="+Inf"}"#, 300.0);
    srv.expect("weir_t_latency_seconds_count", n);
    srv.expect("count_over_time(weir_t_latency_seconds_count[1h])", n);
    srv.expect("weir_t_latency_seconds_sum", 150.0);
    // Rank 90 of 300 falls in (0.1, 0.5], which holds ranks 31..150: 0.1 + 0.4 * 60/120.
    srv.expect(
        "histogram_quantile(0.3, weir_t_latency_seconds_bucket)",
        0.3,
    );
    // The summary: nearest-rank quantiles of 1..=300.
    srv.expect(r#"weir_t_size_bytes{quantile="0.5"}"#, 150.0);
    srv.expect(r#"weir_t_size_bytes{quantile="0.9"}"#, 270.0);
    srv.expect(r#"weir_t_size_bytes{quantile="0.99"}"#, 297.0);
    srv.expect("weir_t_size_bytes_sum", n * (n + 1.0) / 2.0);
    srv.expect("weir_t_size_bytes_count", n);
    // Labels exactly as sent (no extra ones, sanitised names).
    let r = srv.query(r#"weir_t_requests_total{code="500"}"#);
    let labels: Vec<&str> = r[0].0.keys().map(String::as_str).collect();
    assert_eq!(labels, vec!["__name__", "bad_label", "code"], "{r:?}");
}

/// Streams the lines through the `weir` binary into the receiver, stopping the receiver in
/// the middle and starting it again.
fn stream_with_restart(kind: Kind) {
    let Some(_) = installed(kind) else { return };
    let mut srv = Server::start(kind, None);
    let data = tempfile::tempdir().unwrap();
    let sink = format!(
        "type = \"prometheus_remote_write\"\nendpoint = \"{}\"\nbatch.max_events = 40\nbatch.timeout_secs = 0.2\nrequest.retry_max_duration_secs = 0.5\nrequest.concurrency = 2\n",
        srv.write_url()
    );
    let cfg = crate::harness::write_config(
        data.path(),
        "weir.toml",
        &pipeline(free_addr(), data.path(), &sink),
    );
    let mut child = weir()
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let base = now_ms() - 120_000;
    write_lines(&mut stdin, base, 0..100);
    assert!(
        wait_until(Duration::from_secs(20), || srv
            .value("count_over_time(weir_t_seq[1h])")
            .is_some_and(|v| v > 0.0)),
        "nothing arrived before the restart"
    );
    srv.stop();
    write_lines(&mut stdin, base, 100..200);
    std::thread::sleep(RESTART_GAP);
    srv.spawn();
    write_lines(&mut stdin, base, 200..LINES);
    drop(stdin);
    let out = wait_with_timeout(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    check_stream(&srv);
    assert!(
        stderr.contains("retrying"),
        "the sink should have retried while the receiver was down: {stderr}"
    );
    let server_log = std::fs::read_to_string(srv.log_path()).unwrap();
    assert!(!stderr.contains("duplicate"), "{stderr}");
    assert!(!server_log.contains("duplicate"), "{server_log}");
    // Nothing refused by the receiver: only connection errors while it was down, and 503
    // from a receiver that listens but is still replaying its write-ahead log.
    assert!(!stderr.contains("error_kind=\"rejected\""), "{stderr}");
    for line in stderr
        .lines()
        .filter(|l| l.contains("error_kind=\"http_retry\""))
    {
        assert!(
            line.contains("HTTP 503"),
            "only 503 while starting: {stderr}"
        );
    }
}

#[test]
fn remote_write_to_prometheus_survives_a_restart() {
    stream_with_restart(Kind::Prometheus);
}

#[test]
fn remote_write_to_victoria_metrics_survives_a_restart() {
    stream_with_restart(Kind::Victoria);
}

fn gauge(name: &str, v: f64, ts: i64) -> Metric {
    Metric::new(name, MetricKind::Absolute, MetricValue::Gauge { value: v })
        .with_timestamp(chrono::DateTime::from_timestamp_millis(ts).unwrap())
}

/// Sends one batch (with an acknowledgement notifier) and returns its final status.
async fn send(tx: &weir_pipeline::buffer::BufferSender, metrics: Vec<Metric>) -> EventStatus {
    let (n, rx) = BatchNotifier::new_with_receiver();
    let mut b = EventBatch::new(metrics.into_iter().map(Into::into).collect());
    b.attach_notifier(&n);
    drop(n);
    tx.send(b).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), rx.wait())
        .await
        .expect("acknowledged")
}

/// NaN and infinities, invalid names, a sample Prometheus refuses with a 400 (too old) next
/// to good ones in the same request, acknowledgements after the 2xx.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_bad_input_and_acknowledgements() {
    let Some(_) = installed(Kind::Prometheus) else {
        return;
    };
    let srv = tokio::task::spawn_blocking(|| Server::start(Kind::Prometheus, None))
        .await
        .unwrap();
    let cfg: weir_sinks::prometheus::RemoteWriteConfig =
        serde_json::from_value(serde_json::json!({
            "endpoint": srv.write_url(),
            "batch": { "max_events": 1000, "timeout_secs": 0.2 },
            "request": { "concurrency": 1 },
            "tenant_id": "team-a",
            "auth": { "strategy": "bearer", "token": "t0k" },
            "allow_plaintext_credentials": true,
        }))
        .unwrap();
    let metrics = ComponentMetrics::detached("rw");
    let data = tempfile::tempdir().unwrap();
    let sink = cfg
        .build(SinkContext {
            id: Arc::from("rw"),
            data_dir: data.path().to_path_buf(),
            metrics: metrics.clone(),
            registry: Arc::new(MetricsRegistry::default()),
            outputs: Default::default(),
            stop: Default::default(),
        })
        .await
        .unwrap();
    let (tx, rx) = buffer(1000, WhenFull::Block, metrics.clone());
    let task = tokio::spawn(sink.run(SinkInput::new(rx, metrics.clone())));
    let now = now_ms();
    let status = send(
        &tx,
        vec![
            gauge("w-nan.gauge", f64::NAN, now).with_tag("bad.label", "v"),
            gauge("w_pos_inf", f64::INFINITY, now),
            gauge("w_neg_inf", f64::NEG_INFINITY, now),
            Metric::new(
                "w_ok_total",
                MetricKind::Incremental,
                MetricValue::Counter { value: 5.0 },
            ),
        ],
    )
    .await;
    assert_eq!(status, EventStatus::Delivered);
    // Three hours old: Prometheus refuses it ("out of bounds", HTTP 400). The fresh series
    // in the same request still gets in.
    let status = send(
        &tx,
        vec![
            gauge("w_stale", 1.0, now - 3 * 3600 * 1000),
            gauge("w_fresh", 7.0, now + 1),
        ],
    )
    .await;
    assert_eq!(status, EventStatus::Rejected);
    // An incremental NaN cannot join a running total: refused before sending.
    let status = send(
        &tx,
        vec![Metric::new(
            "w_ok_total",
            MetricKind::Incremental,
            MetricValue::Counter { value: f64::NAN },
        )],
    )
    .await;
    assert_eq!(status, EventStatus::Rejected);
    let status = send(
        &tx,
        vec![Metric::new(
            "w_ok_total",
            MetricKind::Incremental,
            MetricValue::Counter { value: 2.0 },
        )],
    )
    .await;
    assert_eq!(status, EventStatus::Delivered);
    drop(tx);
    task.await.unwrap().unwrap();
    let errors = metrics.errors();
    assert_eq!(errors.get("rejected"), Some(&1), "{errors:?}");
    assert_eq!(errors.get("invalid_value"), Some(&1), "{errors:?}");
    tokio::task::spawn_blocking(move || {
        let r = srv.query("w_nan_gauge");
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(r[0].0.get("bad_label").map(String::as_str), Some("v"));
        assert_eq!(r[0].1, "NaN");
        assert_eq!(srv.query("w_pos_inf")[0].1, "+Inf");
        assert_eq!(srv.query("w_neg_inf")[0].1, "-Inf");
        srv.expect("w_fresh", 7.0);
        srv.expect("w_ok_total", 7.0);
        assert!(srv.query("w_stale").is_empty());
        assert!(srv.query("count_over_time(w_stale[4h])").is_empty());
    })
    .await
    .unwrap();
}

/// A strict check of the text exposition format: every line is a `# TYPE` comment or a
/// sample `name{label="value",...} value` with valid names, correctly escaped values and a
/// number; every sample belongs to the family of the last `# TYPE`; no family twice; no
/// label twice; a final newline. Returns the samples.
fn parse_strict(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let name_ok = |n: &str, colon: bool| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic()
                    || c == '_'
                    || (colon && c == ':')
                    || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut families = std::collections::BTreeSet::new();
    let mut current: Option<(String, String)> = None;
    let mut out = Vec::new();
    assert!(text.ends_with('\n'), "no final newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect("TYPE name type");
            assert!(name_ok(name, true), "bad family name {name}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty),
                "bad type {ty}"
            );
            assert!(families.insert(name.to_string()), "family {name} twice");
            current = Some((name.to_string(), ty.to_string()));
            continue;
        }
        assert!(!line.starts_with('#'), "unexpected comment {line}");
        let (fam, ty) = current.clone().expect("sample before # TYPE");
        let name_end = line.find(['{', ' ']).expect("sample line");
        let name = &line[..name_end];
        assert!(name_ok(name, true), "bad metric name {name}");
        let suffixes: &[&str] = match ty.as_str() {
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["", "_sum", "_count"],
            _ => &[""],
        };
        assert!(
            suffixes.iter().any(|s| name == format!("{fam}{s}")),
            "{name} outside family {fam}"
        );
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(mut r) = rest.strip_prefix('{') {
            loop {
                if let Some(after) = r.strip_prefix('}') {
                    rest = after;
                    break;
                }
                let eq = r.find('=').expect("label =");
                let lname = &r[..eq];
                assert!(name_ok(lname, false), "bad label name {lname}");
                r = r[eq + 1..].strip_prefix('"').expect("label value quote");
                let mut value = String::new();
                let mut chars = r.char_indices();
                let end = loop {
                    let (i, c) = chars.next().expect("unterminated label value");
                    match c {
                        '\\' => match chars.next().expect("escape").1 {
                            'n' => value.push('\n'),
                            '\\' => value.push('\\'),
                            '"' => value.push('"'),
                            other => panic!("bad escape \\{other}"),
                        },
                        '"' => break i,
                        c => value.push(c),
                    }
                };
                assert!(
                    labels.insert(lname.to_string(), value).is_none(),
                    "label {lname} twice"
                );
                r = &r[end + 1..];
                if let Some(after) = r.strip_prefix(',') {
                    r = after;
                } else {
                    assert!(r.starts_with('}'), "expected , or }} in {line}");
                }
            }
        }
        let v = rest.strip_prefix(' ').expect("space before value");
        let value = match v {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            n => n.parse::<f64>().unwrap_or_else(|_| panic!("bad value {n}")),
        };
        if ty == "histogram" && name.ends_with("_bucket") {
            assert!(labels.contains_key("le"), "bucket without le: {line}");
        }
        out.push((name.to_string(), labels, value));
    }
    out
}

/// The exporter scraped by a real Prometheus; its text output parsed strictly.
#[test]
fn exporter_scraped_by_prometheus() {
    let Some(_) = installed(Kind::Prometheus) else {
        return;
    };
    let exporter = free_addr();
    let data = tempfile::tempdir().unwrap();
    let sink = format!("type = \"prometheus_exporter\"\naddress = \"{exporter}\"\n");
    let cfg = crate::harness::write_config(
        data.path(),
        "weir.toml",
        &pipeline(free_addr(), data.path(), &sink),
    );
    let mut child = weir()
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    write_lines(&mut stdin, now_ms() - 120_000, 0..LINES);
    // All lines are in once the gauge shows the last one.
    let done = wait_until(Duration::from_secs(30), || {
        http_get(exporter, "/metrics").is_ok_and(|(_, b)| b.contains("\nweir_t_seq 299\n"))
    });
    assert!(done, "{:?}", http_get(exporter, "/metrics"));
    let (status, text) = http_get(exporter, "/metrics").unwrap();
    assert_eq!(status, 200);
    let samples = parse_strict(&text);
    let get = |n: &str, l: &[(&str, &str)]| {
        let want: BTreeMap<String, String> = l
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        samples
            .iter()
            .find(|(sn, sl, _)| sn == n && *sl == want)
            .unwrap_or_else(|| panic!("{n} {l:?} not in\n{text}"))
            .2
    };
    assert_eq!(
        get(
            "weir_t_requests_total",
            &[("bad_label", "x"), ("code", "200")]
        ),
        200.0
    );
    assert_eq!(
        get("weir_t_latency_seconds_bucket", &[("le", "0.5")]),
        150.0
    );
    assert_eq!(get("weir_t_size_bytes", &[("quantile", "0.9")]), 270.0);
    assert_eq!(get("weir_t_bad_name", &[]), 299.0);
    // OpenMetrics when asked for.
    let mut s = std::net::TcpStream::connect(exporter).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.0\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n"
    )
    .unwrap();
    let mut om = String::new();
    std::io::Read::read_to_string(&mut s, &mut om).unwrap();
    assert!(om.contains("application/openmetrics-text"), "{om}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE weir_t_requests counter\n"), "{om}");
    // Scraped by Prometheus.
    let srv = Server::start(Kind::Prometheus, Some(exporter));
    srv.expect(
        r#"weir_t_requests_total{job="weir",code="200",bad_label="x"}"#,
        200.0,
    );
    srv.expect(r#"weir_t_requests_total{code="500"}"#, 100.0);
    srv.expect("weir_t_seq", 299.0);
    srv.expect(r#"weir_t_latency_seconds_bucket{le="+Inf"}"#, 300.0);
    srv.expect(
        "histogram_quantile(0.3, weir_t_latency_seconds_bucket)",
        0.3,
    );
    srv.expect(r#"weir_t_size_bytes{quantile="0.99"}"#, 297.0);
    srv.expect("weir_t_size_bytes_sum", 45150.0);
    drop(stdin);
    let out = wait_with_timeout(child, Duration::from_secs(30));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// TLS on both sides: the exporter serves HTTPS and a real Prometheus scrapes it, verifying
/// the certificate with the CA; the remote write client verifies the same server with the
/// CA (the exporter answers its POST with a 404, which this sink, told to reject 404s as the
/// remote write specification says, counts as refused: the TLS handshake and the HTTP
/// exchange happened) and refuses a server its CA did not sign.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_exporter_scraped_and_remote_write_client_verifies() {
    let Some(_) = installed(Kind::Prometheus) else {
        return;
    };
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(certs.path());
    let addr = free_addr();
    let data = tempfile::tempdir().unwrap();
    let cx = |id: &str, metrics: &Arc<ComponentMetrics>| SinkContext {
        id: Arc::from(id),
        data_dir: data.path().to_path_buf(),
        metrics: metrics.clone(),
        registry: Arc::new(MetricsRegistry::default()),
        outputs: Default::default(),
        stop: Default::default(),
    };
    let exporter: weir_sinks::prometheus::PrometheusExporterConfig =
        serde_json::from_value(serde_json::json!({
            "address": addr.to_string(),
            "tls": { "crt_file": cert, "key_file": key },
        }))
        .unwrap();
    let em = ComponentMetrics::detached("exp");
    let sink = exporter.build(cx("exp", &em)).await.unwrap();
    let (etx, erx) = buffer(100, WhenFull::Block, em.clone());
    let etask = tokio::spawn(sink.run(SinkInput::new(erx, em.clone())));
    assert_eq!(
        send(&etx, vec![gauge("w_tls", 42.0, now_ms())]).await,
        EventStatus::Delivered
    );
    let ca2 = ca.clone();
    tokio::task::spawn_blocking(move || {
        let srv = Server::start_with(Kind::Prometheus, Some(addr), Some(ca2));
        srv.expect(r#"w_tls{job="weir"}"#, 42.0);
        srv.expect(r#"up{job="weir"}"#, 1.0);
    })
    .await
    .unwrap();

    let endpoint = format!("https://localhost:{}/api/v1/write", addr.port());
    let rw = |ca: &PathBuf, max_backoff: f64| -> weir_sinks::prometheus::RemoteWriteConfig {
        serde_json::from_value(serde_json::json!({
            "endpoint": endpoint,
            "tls": { "ca_file": ca },
            "batch": { "timeout_secs": 0.1 },
            // A 404 is retried by default (a route problem is not a verdict on the data).
            "request": { "retry_max_duration_secs": max_backoff, "reject_statuses": [404] },
            "auth": { "strategy": "basic", "user": "u", "password": "p" },
        }))
        .unwrap()
    };
    let rm = ComponentMetrics::detached("rw");
    let sink = rw(&ca, 1.0).build(cx("rw", &rm)).await.unwrap();
    let (tx, rx) = buffer(100, WhenFull::Block, rm.clone());
    let task = tokio::spawn(sink.run(SinkInput::new(rx, rm.clone())));
    assert_eq!(
        send(&tx, vec![gauge("w_tls_rw", 1.0, now_ms())]).await,
        EventStatus::Rejected
    );
    drop(tx);
    task.await.unwrap().unwrap();
    assert_eq!(rm.errors().get("rejected"), Some(&1), "{:?}", rm.errors());
    assert_eq!(rm.errors().get("request_failed"), None, "{:?}", rm.errors());

    // A CA that did not sign the server's certificate: the handshake fails, and the sink
    // keeps retrying (holding the batch) instead of sending in the clear or dropping.
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = make_certs(other.path());
    let bm = ComponentMetrics::detached("rw2");
    let sink = rw(&other_ca, 0.2).build(cx("rw2", &bm)).await.unwrap();
    let (tx, rx) = buffer(100, WhenFull::Block, bm.clone());
    let task = tokio::spawn(sink.run(SinkInput::new(rx, bm.clone())));
    let (n, status) = BatchNotifier::new_with_receiver();
    let mut b = EventBatch::new(vec![gauge("w_tls_bad", 1.0, now_ms()).into()]);
    b.attach_notifier(&n);
    drop(n);
    tx.send(b).await.unwrap();
    let bm2 = bm.clone();
    let seen = tokio::time::timeout(Duration::from_secs(20), async move {
        // Every failed attempt is counted; the log says so once a period.
        let failures = || {
            bm2.counters()
                .iter()
                .find(|(n, _, _)| *n == "request_failures_total")
                .map_or(0, |c| c.2)
        };
        while failures() < 2 || !bm2.errors().contains_key("request_failed") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(seen.is_ok(), "{:?}", bm.errors());
    let mut status = status;
    assert_eq!(status.try_recv(), None, "the batch is held while retrying");
    task.abort();
    drop(etx);
    etask.await.unwrap().unwrap();
}
