//! `prometheus_exporter`: serves the metrics it receives on `/metrics` for Prometheus to scrape.
//!
//! ```toml
//! [sinks.prom]
//! type = "prometheus_exporter"
//! inputs = ["to_metrics"]
//! address = "127.0.0.1:9598"
//! ```
//!
//! What it receives is aggregated per series (name plus tags, see [`super::common`]):
//!
//! - incremental counters (and gauges) are added to a running total; absolute ones replace it;
//! - histograms with the same buckets are merged (incremental) or replaced (absolute);
//!   `Distribution` samples of the histogram statistic are binned into `buckets`;
//! - summaries: the last one received; `Distribution` samples of the summary statistic are
//!   kept (the latest [`MAX_SUMMARY_SAMPLES`]) and rendered as the `quantiles`;
//! - sets are rendered as a gauge of the number of distinct values.
//!
//! A series not updated for `expire_metrics_secs` is dropped (checked every
//! `flush_period_secs`). Metric and label names are sanitised to Prometheus' rules (invalid
//! characters become `_`, a leading digit gets a `_` prefix, `:` is not allowed in label
//! names); label values are escaped. A series whose name already has another type is counted
//! as a `type_conflict` error and left out of the output.
//!
//! `/metrics` answers in the text exposition format 0.0.4, or in OpenMetrics 1.0 when the
//! scraper's `Accept` header asks for `application/openmetrics-text`. In OpenMetrics a counter
//! sample must end in `_total`: a counter named so is typed `counter`, any other counter is
//! typed `unknown`, so that its series keeps the same name in both formats.
//!
//! The endpoint is served by the server stack every listener shares (`weir_connect::server`):
//! HTTPS with `tls` (mutual TLS with `tls.ca_file`), a bearer token with `auth`, at most
//! `max_connections` scrapers at once, idle and read timeouts, and request bodies of at most
//! 64 KiB.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::Full;
use serde::Deserialize;
use weir_connect::server::{
    service_fn, BearerToken, Limits, Protocol, Server, ServerBody, SMALL_REQUEST_BYTES,
};
use weir_connect::tls::{tokio_rustls, ServerTls, TlsServerConfig};
use weir_pipeline::component::{Resource, Sink, SinkConfig, SinkContext, SinkInput};
use weir_pipeline::config::{
    default_idle_timeout, default_request_read_timeout, default_small_connections, Count, Secs,
    ServerAuthConfig,
};
use weir_pipeline::event::Event;
use weir_pipeline::finalization::EventStatus;
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

pub use super::common::MAX_SUMMARY_SAMPLES;
use super::common::{
    check_buckets_quantiles, default_buckets, default_expire, default_quantiles, expand, fmt_f64,
    AbsorbError, Aggregator, Extra, SeriesKey, Stored, Suffix,
};

fn default_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9598))
}
fn default_flush() -> Secs {
    Secs::from_secs(60)
}

/// `type = "prometheus_exporter"`.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PrometheusExporterConfig {
    /// Where `/metrics` is served. Claimed exclusively (checked against other components and the
    /// API). Default: `127.0.0.1:9598`.
    #[serde(default = "default_address")]
    pub address: SocketAddr,
    /// Drop a series that has not been updated for this many seconds. Default: 300.
    #[serde(default = "default_expire")]
    pub expire_metrics_secs: Secs,
    /// How often expired series are removed, in seconds. Default: 60.
    #[serde(default = "default_flush")]
    pub flush_period_secs: Secs,
    /// Upper bounds that `Distribution` samples of the histogram statistic are binned into (a
    /// `+Inf` bucket is added). Strictly ascending.
    #[serde(default = "default_buckets")]
    pub buckets: Vec<f64>,
    /// The quantiles rendered for `Distribution` samples of the summary statistic (nearest rank
    /// over the last 10,000 samples).
    #[serde(default = "default_quantiles")]
    pub quantiles: Vec<f64>,
    /// Serve HTTPS: `crt_file` and `key_file` (required), `ca_file` to ask scrapers for a
    /// certificate signed by it (mutual TLS); the `tls` table shared by every server, see
    /// docs/configuration.md. Default: plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsServerConfig>,
    /// Require a token: `auth.strategy = "bearer"` and `auth.token` (Prometheus:
    /// `authorization.credentials` of the scrape job). Scrapes without it are answered 401.
    /// Default: none (no authentication).
    #[serde(default)]
    pub auth: Option<ServerAuthConfig>,
    /// The most connections served at once; more wait (in the kernel's accept queue)
    /// until one closes. Default: 64.
    #[serde(default = "default_small_connections")]
    pub max_connections: Count,
    /// A connection with no request in progress is closed after this many seconds without
    /// a new request (this also bounds the time to send a request's headers). Default: 60.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: Secs,
    /// A request's body must arrive whole within this many seconds of its headers.
    /// Default: 30.
    #[serde(default = "default_request_read_timeout")]
    pub request_read_timeout_secs: Secs,
    /// At most this many series held (and served), at least 1. Past it, a metric of a new
    /// series is dropped, counted as discarded and as a `series_limit` error, and rejected,
    /// until series expire (`expire_metrics_secs`); the series held go on updating.
    /// Default: 100000.
    #[serde(default = "default_max_series")]
    pub max_series: Count,
}

/// The default of `max_series`.
pub const DEFAULT_MAX_SERIES: usize = 100_000;

fn default_max_series() -> Count {
    Count::of(DEFAULT_MAX_SERIES)
}

impl Default for PrometheusExporterConfig {
    fn default() -> Self {
        Self {
            address: default_address(),
            expire_metrics_secs: default_expire(),
            flush_period_secs: default_flush(),
            buckets: default_buckets(),
            quantiles: default_quantiles(),
            tls: None,
            max_series: default_max_series(),
            auth: None,
            max_connections: default_small_connections(),
            idle_timeout_secs: default_idle_timeout(),
            request_read_timeout_secs: default_request_read_timeout(),
        }
    }
}

#[async_trait]
impl SinkConfig for PrometheusExporterConfig {
    async fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BoxError> {
        let expire = self.expire_metrics_secs.duration();
        let flush = self.flush_period_secs.duration();
        let buckets = check_buckets_quantiles(&self.buckets, &self.quantiles)?;
        let tls = TlsServerConfig::acceptor(self.tls.as_ref(), &[b"http/1.1"])?;
        let auth = BearerToken::from_config(self.auth.as_ref())?;
        let limits = Limits {
            max_connections: self.max_connections.get(),
            idle_timeout: self.idle_timeout_secs.duration(),
            request_read_timeout: self.request_read_timeout_secs.duration(),
            max_request_bytes: SMALL_REQUEST_BYTES,
        };
        let listener = tokio::net::TcpListener::bind(self.address)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", self.address))?;
        Ok(Box::new(Exporter {
            listener,
            tls,
            auth,
            limits,
            expire,
            flush,
            store: Arc::new(Mutex::new(Store {
                agg: Aggregator::new(buckets, self.quantiles.clone())
                    .with_max_series(self.max_series.get()),
                metrics: Arc::clone(&cx.metrics),
                over: 0,
            })),
        }))
    }

    fn input(&self) -> DataType {
        DataType::METRIC
    }

    fn resources(&self) -> Vec<Resource> {
        vec![Resource::Tcp(self.address)]
    }

    fn check_environment(&self) -> Result<(), BoxError> {
        BearerToken::from_config(self.auth.as_ref())?;
        Ok(TlsServerConfig::check(self.tls.as_ref())?)
    }
}

/// The aggregated series, shared by the sink loop and the HTTP handler.
struct Store {
    agg: Aggregator,
    metrics: Arc<ComponentMetrics>,
    /// Metrics of new series refused since the last [`Store::report_over`].
    over: u64,
}

fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

impl Store {
    fn absorb(&mut self, mut m: weir_pipeline::event::Metric, now: Instant) -> bool {
        let key = SeriesKey::of(&mut m);
        match self.agg.absorb(key, m, now, |_, _| ()) {
            Ok(_) => true,
            Err(AbsorbError::SeriesLimit(..)) => {
                // Counted once per batch ([`Store::report_over`]), not per metric.
                self.over += 1;
                false
            }
            Err(e) => {
                self.metrics.error(e.kind(), 1, &e);
                false
            }
        }
    }

    /// Counts (and logs, at a limited rate) the metrics of new series refused since the last
    /// call.
    fn report_over(&mut self) {
        if self.over > 0 {
            let n = std::mem::take(&mut self.over);
            self.metrics.error(
                "series_limit",
                n,
                &format_args!(
                    "{n} metrics of new series dropped: max_series ({}) series are held already",
                    self.agg.max_series
                ),
            );
        }
    }

    /// Every series in the text exposition format, or OpenMetrics 1.0 with `openmetrics`.
    fn render(&self, openmetrics: bool) -> String {
        let mut out = String::with_capacity(self.agg.series.len() * 64);
        let mut types: BTreeMap<&str, &'static str> = BTreeMap::new();
        let mut conflicts = 0;
        let mut family: Option<&str> = None;
        // Sorted: the series of a family together, in a stable order.
        let mut series: Vec<_> = self.agg.series.iter().collect();
        series.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (key, e) in series {
            let ty = e.value.type_name();
            if *types.entry(&key.name).or_insert(ty) != ty {
                conflicts += 1;
                continue;
            }
            if family != Some(key.name.as_str()) {
                family = Some(&key.name);
                let (fam, shown) = match (openmetrics, &e.value) {
                    (true, Stored::Counter(_)) => match key.name.strip_suffix("_total") {
                        Some(f) if !f.is_empty() => (f, "counter"),
                        _ => (key.name.as_str(), "unknown"),
                    },
                    _ => (key.name.as_str(), ty),
                };
                let _ = writeln!(out, "# TYPE {fam} {shown}");
            }
            let reserved = e.value.reserved_label();
            expand(
                &e.value,
                &self.agg.quantiles,
                |suffix: Suffix, extra: Option<Extra>, v| {
                    out.push_str(&key.name);
                    out.push_str(suffix.as_str());
                    let mut first = true;
                    let mut sep = |out: &mut String| {
                        out.push(if first { '{' } else { ',' });
                        first = false;
                    };
                    for (k, val) in &key.tags {
                        if reserved == Some(k.as_str()) {
                            continue;
                        }
                        sep(&mut out);
                        out.push_str(k);
                        out.push_str("=\"");
                        escape_label(val, &mut out);
                        out.push('"');
                    }
                    if let Some(x) = extra {
                        sep(&mut out);
                        let _ = write!(
                            out,
                            "{}=\"{}\"",
                            x.name(),
                            fmt_label_number(x.value(), openmetrics)
                        );
                    }
                    if !first {
                        out.push('}');
                    }
                    out.push(' ');
                    out.push_str(&fmt_f64(v));
                    out.push('\n');
                },
            );
        }
        if openmetrics {
            out.push_str("# EOF\n");
        }
        if conflicts > 0 {
            self.metrics.error(
                "type_conflict",
                conflicts,
                &format!("{conflicts} series left out: their name already has another type"),
            );
        }
        out
    }
}

/// `le` and `quantile` values; OpenMetrics wants them as floats (`1.0`, not `1`).
fn fmt_label_number(v: f64, openmetrics: bool) -> String {
    if openmetrics && v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.1}")
    } else {
        fmt_f64(v)
    }
}

struct Exporter {
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    auth: Option<BearerToken>,
    limits: Limits,
    expire: Duration,
    flush: Duration,
    store: Arc<Mutex<Store>>,
}

fn lock(store: &Mutex<Store>) -> std::sync::MutexGuard<'_, Store> {
    match store.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn respond(store: &Mutex<Store>, req: &hyper::Request<ServerBody>) -> hyper::Response<Full<Bytes>> {
    let mut resp = hyper::Response::new(Full::new(Bytes::new()));
    if req.uri().path() != "/metrics" {
        *resp.status_mut() = hyper::StatusCode::NOT_FOUND;
        *resp.body_mut() = Full::new(Bytes::from_static(b"only /metrics is served here\n"));
        return resp;
    }
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        *resp.status_mut() = hyper::StatusCode::METHOD_NOT_ALLOWED;
        return resp;
    }
    let openmetrics = req
        .headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let body = lock(store).render(openmetrics);
    *resp.body_mut() = Full::new(Bytes::from(body));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(if openmetrics { OPENMETRICS } else { TEXT }),
    );
    resp
}

/// Counts and logs what the listener refuses (a failed TLS handshake, a missing token, a
/// request over the limits), by kind.
fn refusals(metrics: &Arc<ComponentMetrics>) -> weir_connect::server::Report {
    let m = Arc::clone(metrics);
    Arc::new(move |kind: &'static str, e: &str| m.error(kind, 1, &e))
}

#[async_trait]
impl Sink for Exporter {
    async fn run(self: Box<Self>, mut input: SinkInput) -> Result<(), BoxError> {
        let metrics = input.metrics().clone();
        let Exporter {
            listener,
            tls,
            auth,
            limits,
            expire,
            flush,
            store,
        } = *self;
        let server = Server {
            protocol: Protocol::Http1,
            tls,
            auth,
            open_paths: Vec::new(),
            limits,
            report: refusals(&metrics),
        };
        let scrapes = Arc::clone(&store);
        let stop = weir_pipeline::shutdown::ShutdownToken::new();
        let server = tokio::spawn(server.serve(
            listener,
            service_fn(move |req| respond(&scrapes, &req)),
            stop.clone(),
        ));
        let mut tick = tokio::time::interval(flush);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                batch = input.next() => {
                    let Some(mut batch) = batch else { break };
                    let now = Instant::now();
                    let (mut sent, mut bad) = (0, 0);
                    {
                        let mut s = lock(&store);
                        for e in batch.events.iter() {
                            let ok = match e {
                                Event::Metric(m) => {
                                    // The store keeps the value, not the event: no hold.
                                    let mut copy = (**m).clone();
                                    copy.metadata.release_copy_of(&m.metadata);
                                    s.absorb(copy, now)
                                }
                                _ => false,
                            };
                            if ok {
                                sent += 1;
                            } else {
                                bad += 1;
                                e.metadata().update_status(EventStatus::Rejected);
                            }
                        }
                        s.report_over();
                    }
                    if bad > 0 {
                        metrics.add_discarded(bad as u64);
                    }
                    metrics.add_sent(sent as u64);
                    batch.finalize(EventStatus::Delivered);
                }
                _ = tick.tick() => {
                    lock(&store).agg.expire(expire, Instant::now());
                }
            }
        }
        stop.cancel();
        server.abort();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use weir_pipeline::event::{Bucket, Metric, MetricKind, MetricValue, Sample, StatisticKind};

    fn store() -> Store {
        Store {
            agg: Aggregator::new(vec![1.0, 2.0, f64::INFINITY], vec![0.5, 1.0]),
            metrics: ComponentMetrics::detached("p"),
            over: 0,
        }
    }

    /// A strict check of the text exposition format: every line is a `# TYPE`/`# HELP`
    /// comment or a sample `name{label="value",...} value` with valid names, escaped values, a
    /// parseable number; every sample belongs to the family of the last `# TYPE`; no family
    /// appears twice. Returns the samples as (name, labels, value).
    pub(crate) fn parse_strict(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
        let name_ok = |n: &str, colon: bool| {
            !n.is_empty()
                && n.chars().enumerate().all(|(i, c)| {
                    c.is_ascii_alphabetic()
                        || c == '_'
                        || (colon && c == ':')
                        || (i > 0 && c.is_ascii_digit())
                })
        };
        let mut families = BTreeSet::new();
        let mut current: Option<(String, String)> = None;
        let mut out = Vec::new();
        assert!(text.is_empty() || text.ends_with('\n'), "no final newline");
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
            if let Some(r) = rest.strip_prefix('{') {
                let mut r = r;
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
                            '\n' => panic!("raw newline in label value"),
                            c => value.push(c),
                        }
                    };
                    assert!(
                        labels.insert(lname.to_string(), value).is_none(),
                        "label {lname} twice"
                    );
                    r = &r[end + 1..];
                    r = r.strip_prefix(',').unwrap_or(r);
                }
            }
            let v = rest.strip_prefix(' ').expect("space before value");
            let value = match v {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                "NaN" => f64::NAN,
                n => n.parse::<f64>().unwrap_or_else(|_| panic!("bad value {n}")),
            };
            out.push((name.to_string(), labels, value));
        }
        out
    }

    fn m(name: &str, kind: MetricKind, value: MetricValue) -> Metric {
        Metric::new(name, kind, value)
    }

    #[test]
    fn aggregates_and_renders_valid_text() {
        let mut s = store();
        let now = Instant::now();
        let inc = MetricKind::Incremental;
        let abs = MetricKind::Absolute;
        for v in [1.0, 2.0, 4.5] {
            s.absorb(
                m("req", inc, MetricValue::Counter { value: v })
                    .with_namespace("app")
                    .with_tag("code", "200")
                    .with_tag("path\"odd", "a\"b\\c\nd"),
                now,
            );
        }
        s.absorb(m("temp.c", abs, MetricValue::Gauge { value: 3.0 }), now);
        s.absorb(m("temp.c", abs, MetricValue::Gauge { value: -1.5 }), now);
        s.absorb(
            m("1bad:name", abs, MetricValue::Gauge { value: f64::NAN }),
            now,
        );
        for v in [0.5, 1.5, 9.0, 0.7] {
            s.absorb(
                m(
                    "lat",
                    inc,
                    MetricValue::Distribution {
                        samples: vec![Sample { value: v, rate: 1 }],
                        statistic: StatisticKind::Histogram,
                    },
                ),
                now,
            );
        }
        for v in [3.0, 1.0, 2.0, 4.0] {
            s.absorb(
                m(
                    "sz",
                    inc,
                    MetricValue::Distribution {
                        samples: vec![Sample { value: v, rate: 1 }],
                        statistic: StatisticKind::Summary,
                    },
                ),
                now,
            );
        }
        s.absorb(
            m(
                "users",
                inc,
                MetricValue::Set {
                    values: BTreeSet::from(["a".into(), "b".into()]),
                },
            ),
            now,
        );
        s.absorb(
            m(
                "users",
                inc,
                MetricValue::Set {
                    values: BTreeSet::from(["b".into(), "c".into()]),
                },
            ),
            now,
        );
        let text = s.render(false);
        let samples = parse_strict(&text);
        let find = |n: &str, l: &[(&str, &str)]| {
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
            find("app_req", &[("code", "200"), ("path_odd", "a\"b\\c\nd")]),
            7.5
        );
        assert_eq!(find("temp_c", &[]), -1.5);
        assert!(find("_1bad:name", &[]).is_nan());
        assert_eq!(find("lat_bucket", &[("le", "1")]), 2.0);
        assert_eq!(find("lat_bucket", &[("le", "2")]), 3.0);
        assert_eq!(find("lat_bucket", &[("le", "+Inf")]), 4.0);
        assert_eq!(find("lat_count", &[]), 4.0);
        assert_eq!(find("lat_sum", &[]), 11.7);
        assert_eq!(find("sz", &[("quantile", "0.5")]), 2.0);
        assert_eq!(find("sz", &[("quantile", "1")]), 4.0);
        assert_eq!(find("sz_sum", &[]), 10.0);
        assert_eq!(find("users", &[]), 3.0);
        assert_eq!(samples.len(), 13);
        assert!(text.contains("# TYPE app_req counter\n"));
        assert!(text.contains("# TYPE lat histogram\n"));
        assert!(text.contains("# TYPE sz summary\n"));
    }

    #[test]
    fn histograms_merge_absolute_replaces_and_series_expire() {
        let mut s = store();
        let t0 = Instant::now();
        let h = |c: [u64; 2], kind| {
            m(
                "h",
                kind,
                MetricValue::AggregatedHistogram {
                    buckets: vec![
                        Bucket {
                            upper_limit: 0.5,
                            count: c[0],
                        },
                        Bucket {
                            upper_limit: f64::INFINITY,
                            count: c[1],
                        },
                    ],
                    count: c[0] + c[1],
                    sum: 1.0,
                },
            )
        };
        s.absorb(h([1, 0], MetricKind::Incremental), t0);
        s.absorb(h([2, 3], MetricKind::Incremental), t0);
        let text = s.render(false);
        assert!(
            text.contains("h_bucket{le=\"0.5\"} 3\nh_bucket{le=\"+Inf\"} 6\nh_sum 2\nh_count 6\n"),
            "{text}"
        );
        s.absorb(
            m(
                "c",
                MetricKind::Absolute,
                MetricValue::Counter { value: 10.0 },
            ),
            t0,
        );
        s.absorb(
            m(
                "c",
                MetricKind::Absolute,
                MetricValue::Counter { value: 12.0 },
            ),
            t0 + Duration::from_secs(5),
        );
        assert!(s.render(false).contains("\nc 12\n"));
        s.agg
            .expire(Duration::from_secs(3), t0 + Duration::from_secs(6));
        assert_eq!(s.render(false), "# TYPE c counter\nc 12\n");
    }

    #[test]
    fn type_conflicts_are_left_out_and_counted() {
        let mut s = store();
        let now = Instant::now();
        s.absorb(
            m("x", MetricKind::Absolute, MetricValue::Gauge { value: 1.0 }),
            now,
        );
        s.absorb(
            m(
                "x",
                MetricKind::Absolute,
                MetricValue::Counter { value: 1.0 },
            )
            .with_tag("a", "b"),
            now,
        );
        let text = s.render(false);
        parse_strict(&text);
        assert_eq!(text, "# TYPE x gauge\nx 1\n");
        assert_eq!(s.metrics.errors().get("type_conflict"), Some(&1));
    }

    #[test]
    fn new_series_past_max_series_are_refused_and_counted() {
        let mut s = store();
        s.agg.max_series = 2;
        let now = Instant::now();
        let user = |u: &str| {
            m(
                "hits",
                MetricKind::Incremental,
                MetricValue::Counter { value: 1.0 },
            )
            .with_tag("user", u)
        };
        assert!(s.absorb(user("a"), now));
        assert!(s.absorb(user("b"), now));
        assert!(!s.absorb(user("c"), now));
        assert!(!s.absorb(user("d"), now));
        // A series held goes on updating.
        assert!(s.absorb(user("a"), now));
        s.report_over();
        assert_eq!(s.metrics.errors().get("series_limit"), Some(&2));
        let text = s.render(false);
        parse_strict(&text);
        assert_eq!(
            text,
            "# TYPE hits counter\nhits{user=\"a\"} 2\nhits{user=\"b\"} 1\n"
        );
        // Once series expire, new ones are taken again.
        s.agg
            .expire(Duration::from_secs(1), now + Duration::from_secs(2));
        assert!(s.absorb(user("c"), now));
    }

    #[test]
    fn openmetrics_keeps_series_names_and_ends_with_eof() {
        let mut s = store();
        let now = Instant::now();
        let abs = MetricKind::Absolute;
        s.absorb(
            m("reqs_total", abs, MetricValue::Counter { value: 3.0 }),
            now,
        );
        s.absorb(m("hits", abs, MetricValue::Counter { value: 2.0 }), now);
        s.absorb(
            m(
                "h",
                abs,
                MetricValue::AggregatedHistogram {
                    buckets: vec![Bucket {
                        upper_limit: 1.0,
                        count: 1,
                    }],
                    count: 1,
                    sum: 0.5,
                },
            ),
            now,
        );
        assert_eq!(
            s.render(true),
            "# TYPE h histogram\nh_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} 1\nh_sum 0.5\nh_count 1\n\
             # TYPE hits unknown\nhits 2\n# TYPE reqs counter\nreqs_total 3\n# EOF\n"
        );
    }
}
