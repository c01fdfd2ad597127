//! `prometheus_exporter`: serves the metrics it receives on `/metrics` for Prometheus to scrape.
//!
//! ```toml
//! [sinks.prom]
//! type = "prometheus_exporter"
//! inputs = ["to_metrics"]
//! address = "127.0.0.1:9598"
//! ```
//!
//! What it receives is aggregated per series (name plus tags):
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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use weir_pipeline::component::{Resource, Sink, SinkConfig, SinkContext, SinkInput};
use weir_pipeline::config::DataType;
use weir_pipeline::event::{
    Bucket, Event, Metric, MetricKind, MetricValue, Quantile, StatisticKind,
};
use weir_pipeline::finalization::EventStatus;
use weir_pipeline::metrics::{render_prometheus, ComponentMetrics};
use weir_pipeline::BoxError;

/// How many samples of one summary series are kept for its quantiles.
pub const MAX_SUMMARY_SAMPLES: usize = 10_000;

/// Prometheus' default histogram buckets.
const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn default_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9598))
}
fn default_expire() -> f64 {
    300.0
}
fn default_flush() -> f64 {
    60.0
}
fn default_buckets() -> Vec<f64> {
    DEFAULT_BUCKETS.to_vec()
}
fn default_quantiles() -> Vec<f64> {
    vec![0.5, 0.9, 0.99]
}

/// `type = "prometheus_exporter"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrometheusExporterConfig {
    /// The address to serve `/metrics` on. Default: `127.0.0.1:9598`.
    #[serde(default = "default_address")]
    pub address: SocketAddr,
    /// Drop a series that has not been updated for this many seconds. Default: 300.
    #[serde(default = "default_expire")]
    pub expire_metrics_secs: f64,
    /// How often expired series are removed, in seconds. Default: 60.
    #[serde(default = "default_flush")]
    pub flush_period_secs: f64,
    /// Upper bounds of the buckets `Distribution` histogram samples are binned into (a `+Inf`
    /// bucket is added). Default: Prometheus' `[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
    /// 2.5, 5, 10]`.
    #[serde(default = "default_buckets")]
    pub buckets: Vec<f64>,
    /// The quantiles rendered for `Distribution` summary samples. Default: `[0.5, 0.9, 0.99]`.
    #[serde(default = "default_quantiles")]
    pub quantiles: Vec<f64>,
}

impl Default for PrometheusExporterConfig {
    fn default() -> Self {
        Self {
            address: default_address(),
            expire_metrics_secs: default_expire(),
            flush_period_secs: default_flush(),
            buckets: default_buckets(),
            quantiles: default_quantiles(),
        }
    }
}

fn positive(name: &str, v: f64) -> Result<Duration, BoxError> {
    if v > 0.0 && v.is_finite() {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("`{name}` must be a positive number of seconds").into())
    }
}

#[async_trait]
impl SinkConfig for PrometheusExporterConfig {
    async fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BoxError> {
        let expire = positive("expire_metrics_secs", self.expire_metrics_secs)?;
        let flush = positive("flush_period_secs", self.flush_period_secs)?;
        if self.buckets.iter().any(|b| b.is_nan()) || self.buckets.windows(2).any(|w| w[0] >= w[1])
        {
            return Err("`buckets` must be strictly ascending numbers".into());
        }
        if self.quantiles.iter().any(|q| !(0.0..=1.0).contains(q)) {
            return Err("`quantiles` must be between 0 and 1".into());
        }
        let mut buckets = self.buckets.clone();
        if buckets.last() != Some(&f64::INFINITY) {
            buckets.push(f64::INFINITY);
        }
        let listener = tokio::net::TcpListener::bind(self.address)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", self.address))?;
        Ok(Box::new(Exporter {
            listener,
            expire,
            flush,
            store: Arc::new(Mutex::new(Store {
                series: BTreeMap::new(),
                buckets,
                quantiles: self.quantiles.clone(),
                metrics: Arc::clone(&cx.metrics),
            })),
        }))
    }

    fn input(&self) -> DataType {
        DataType::METRIC
    }

    fn resources(&self) -> Vec<Resource> {
        vec![Resource::Tcp(self.address)]
    }
}

/// A Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`; anything else becomes `_`.
pub fn sanitize_metric_name(name: &str) -> String {
    sanitize(name, true)
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`; anything else becomes `_`.
pub fn sanitize_label_name(name: &str) -> String {
    sanitize(name, false)
}

fn sanitize(name: &str, colon: bool) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    for (i, c) in name.chars().enumerate() {
        let ok = c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
        if ok || (i > 0 && c.is_ascii_digit()) {
            out.push(c);
        } else if i == 0 && c.is_ascii_digit() {
            out.push('_');
            out.push(c);
        } else {
            out.push('_');
        }
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesKey {
    name: String,
    tags: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
enum Stored {
    Counter(f64),
    Gauge(f64),
    Histogram {
        buckets: Vec<Bucket>,
        count: u64,
        sum: f64,
    },
    Summary {
        quantiles: Vec<Quantile>,
        count: u64,
        sum: f64,
    },
    Samples {
        values: VecDeque<f64>,
        count: u64,
        sum: f64,
    },
    Set(BTreeSet<String>),
}

impl Stored {
    fn type_name(&self) -> &'static str {
        match self {
            Stored::Counter(_) => "counter",
            Stored::Gauge(_) | Stored::Set(_) => "gauge",
            Stored::Histogram { .. } => "histogram",
            Stored::Summary { .. } | Stored::Samples { .. } => "summary",
        }
    }
}

struct Entry {
    value: Stored,
    updated: Instant,
}

/// The aggregated series, shared by the sink loop and the HTTP handler.
struct Store {
    series: BTreeMap<SeriesKey, Entry>,
    buckets: Vec<f64>,
    quantiles: Vec<f64>,
    metrics: Arc<ComponentMetrics>,
}

impl Store {
    fn absorb(&mut self, m: Metric, now: Instant) {
        let key = SeriesKey {
            name: sanitize_metric_name(&m.full_name()),
            tags: m
                .tags
                .into_iter()
                .map(|(k, v)| (sanitize_label_name(&k), v))
                .collect(),
        };
        let incremental = m.kind == MetricKind::Incremental;
        let old = self.series.remove(&key).map(|e| e.value);
        let value = match (m.value, old) {
            (MetricValue::Counter { value }, Some(Stored::Counter(t))) if incremental => {
                Stored::Counter(t + value)
            }
            (MetricValue::Counter { value }, _) => Stored::Counter(value),
            (MetricValue::Gauge { value }, Some(Stored::Gauge(t))) if incremental => {
                Stored::Gauge(t + value)
            }
            (MetricValue::Gauge { value }, _) => Stored::Gauge(value),
            (MetricValue::Set { values }, Some(Stored::Set(mut s))) if incremental => {
                s.extend(values);
                Stored::Set(s)
            }
            (MetricValue::Set { values }, _) => Stored::Set(values),
            (
                MetricValue::AggregatedHistogram {
                    buckets,
                    count,
                    sum,
                },
                old,
            ) => match old {
                Some(Stored::Histogram {
                    buckets: mut b,
                    count: c,
                    sum: s,
                }) if incremental && same_limits(&b, &buckets) => {
                    for (x, y) in b.iter_mut().zip(&buckets) {
                        x.count += y.count;
                    }
                    Stored::Histogram {
                        buckets: b,
                        count: c + count,
                        sum: s + sum,
                    }
                }
                _ => Stored::Histogram {
                    buckets,
                    count,
                    sum,
                },
            },
            (
                MetricValue::AggregatedSummary {
                    quantiles,
                    count,
                    sum,
                },
                _,
            ) => Stored::Summary {
                quantiles,
                count,
                sum,
            },
            (
                MetricValue::Distribution {
                    samples,
                    statistic: StatisticKind::Histogram,
                },
                old,
            ) => {
                let (mut b, mut c, mut s) = match old {
                    Some(Stored::Histogram {
                        buckets,
                        count,
                        sum,
                    }) if incremental
                        && buckets.len() == self.buckets.len()
                        && buckets
                            .iter()
                            .zip(&self.buckets)
                            .all(|(x, y)| x.upper_limit == *y) =>
                    {
                        (buckets, count, sum)
                    }
                    _ => (
                        self.buckets
                            .iter()
                            .map(|l| Bucket {
                                upper_limit: *l,
                                count: 0,
                            })
                            .collect(),
                        0,
                        0.0,
                    ),
                };
                for smp in samples {
                    let rate = u64::from(smp.rate.max(1));
                    if let Some(bk) = b.iter_mut().find(|bk| smp.value <= bk.upper_limit) {
                        bk.count += rate;
                    }
                    c += rate;
                    s += smp.value * rate as f64;
                }
                Stored::Histogram {
                    buckets: b,
                    count: c,
                    sum: s,
                }
            }
            (
                MetricValue::Distribution {
                    samples,
                    statistic: StatisticKind::Summary,
                },
                old,
            ) => {
                let (mut v, mut c, mut s) = match old {
                    Some(Stored::Samples { values, count, sum }) if incremental => {
                        (values, count, sum)
                    }
                    _ => (VecDeque::new(), 0, 0.0),
                };
                for smp in samples {
                    let rate = smp.rate.max(1);
                    for _ in 0..rate.min(MAX_SUMMARY_SAMPLES as u32) {
                        if v.len() == MAX_SUMMARY_SAMPLES {
                            v.pop_front();
                        }
                        v.push_back(smp.value);
                    }
                    c += u64::from(rate);
                    s += smp.value * f64::from(rate);
                }
                Stored::Samples {
                    values: v,
                    count: c,
                    sum: s,
                }
            }
        };
        self.series.insert(
            key,
            Entry {
                value,
                updated: now,
            },
        );
    }

    fn expire(&mut self, older_than: Duration, now: Instant) {
        self.series
            .retain(|_, e| now.saturating_duration_since(e.updated) < older_than);
    }

    /// The text exposition of every series.
    fn render(&self) -> String {
        let mut out = Vec::with_capacity(self.series.len());
        let mut types: BTreeMap<&str, &'static str> = BTreeMap::new();
        let mut conflicts = 0;
        for (key, e) in &self.series {
            let ty = e.value.type_name();
            if *types.entry(&key.name).or_insert(ty) != ty {
                conflicts += 1;
                continue;
            }
            let value = match &e.value {
                Stored::Counter(v) => MetricValue::Counter { value: *v },
                Stored::Gauge(v) => MetricValue::Gauge { value: *v },
                Stored::Set(s) => MetricValue::Gauge {
                    value: s.len() as f64,
                },
                Stored::Histogram {
                    buckets,
                    count,
                    sum,
                } => {
                    let mut buckets = buckets.clone();
                    if buckets.last().map(|b| b.upper_limit) != Some(f64::INFINITY) {
                        // The +Inf bucket holds what the others do not.
                        let rest = count.saturating_sub(buckets.iter().map(|b| b.count).sum());
                        buckets.push(Bucket {
                            upper_limit: f64::INFINITY,
                            count: rest,
                        });
                    }
                    MetricValue::AggregatedHistogram {
                        buckets,
                        count: *count,
                        sum: *sum,
                    }
                }
                Stored::Summary {
                    quantiles,
                    count,
                    sum,
                } => MetricValue::AggregatedSummary {
                    quantiles: quantiles.clone(),
                    count: *count,
                    sum: *sum,
                },
                Stored::Samples { values, count, sum } => MetricValue::AggregatedSummary {
                    quantiles: quantiles_of(values, &self.quantiles),
                    count: *count,
                    sum: *sum,
                },
            };
            let mut m = Metric::new(key.name.clone(), MetricKind::Absolute, value);
            m.tags = key.tags.clone();
            out.push(m);
        }
        if conflicts > 0 {
            self.metrics.error(
                "type_conflict",
                conflicts,
                &format!("{conflicts} series left out: their name already has another type"),
            );
        }
        render_prometheus(&out)
    }
}

fn same_limits(a: &[Bucket], b: &[Bucket]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.upper_limit == y.upper_limit)
}

/// Nearest-rank quantiles of `values`.
fn quantiles_of(values: &VecDeque<f64>, qs: &[f64]) -> Vec<Quantile> {
    let mut sorted: Vec<f64> = values.iter().copied().collect();
    sorted.sort_by(f64::total_cmp);
    qs.iter()
        .map(|q| Quantile {
            quantile: *q,
            value: if sorted.is_empty() {
                f64::NAN
            } else {
                let rank = (q * sorted.len() as f64).ceil() as usize;
                sorted[rank.clamp(1, sorted.len()) - 1]
            },
        })
        .collect()
}

struct Exporter {
    listener: tokio::net::TcpListener,
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

#[async_trait]
impl Sink for Exporter {
    async fn run(self: Box<Self>, mut input: SinkInput) -> Result<(), BoxError> {
        let metrics = input.metrics().clone();
        let Exporter {
            listener,
            expire,
            flush,
            store,
        } = *self;
        let served = Arc::clone(&store);
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let store = Arc::clone(&served);
                async move {
                    let body = lock(&store).render();
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        body,
                    )
                }
            }),
        );
        let stop = tokio_util_token();
        let stop_rx = stop.1;
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop_rx.await;
                })
                .await
        });
        let mut tick = tokio::time::interval(flush);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                batch = input.next() => {
                    let Some(batch) = batch else { break };
                    let n = batch.len() as u64;
                    let now = Instant::now();
                    let mut not_metrics = 0;
                    {
                        let mut s = lock(&store);
                        for e in batch.events.iter().cloned() {
                            match e {
                                Event::Metric(m) => s.absorb(m, now),
                                _ => not_metrics += 1,
                            }
                        }
                    }
                    if not_metrics > 0 {
                        metrics.add_discarded(not_metrics);
                    }
                    metrics.add_sent(n - not_metrics);
                    batch.finalize(EventStatus::Delivered);
                }
                _ = tick.tick() => lock(&store).expire(expire, Instant::now()),
            }
        }
        let _ = stop.0.send(());
        match server.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(format!("serving /metrics: {e}").into()),
            Err(e) => Err(format!("the /metrics server task failed: {e}").into()),
        }
    }
}

fn tokio_util_token() -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::sync::oneshot::Receiver<()>,
) {
    tokio::sync::oneshot::channel()
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_pipeline::event::Sample;

    fn store() -> Store {
        Store {
            series: BTreeMap::new(),
            buckets: vec![1.0, 2.0, f64::INFINITY],
            quantiles: vec![0.5, 1.0],
            metrics: ComponentMetrics::detached("p"),
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
        s.absorb(m("1bad:name", abs, MetricValue::Gauge { value: f64::NAN }), now);
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
        let text = s.render();
        let samples = parse_strict(&text);
        let find = |n: &str, l: &[(&str, &str)]| {
            let want: BTreeMap<String, String> =
                l.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
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
        assert_eq!(samples.len(), 14);
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
        let text = s.render();
        assert!(text.contains("h_bucket{le=\"0.5\"} 3\nh_bucket{le=\"+Inf\"} 6\nh_sum 2\nh_count 6\n"), "{text}");
        s.absorb(m("c", MetricKind::Absolute, MetricValue::Counter { value: 10.0 }), t0);
        s.absorb(m("c", MetricKind::Absolute, MetricValue::Counter { value: 12.0 }), t0 + Duration::from_secs(5));
        assert!(s.render().contains("\nc 12\n"));
        s.expire(Duration::from_secs(3), t0 + Duration::from_secs(6));
        assert_eq!(s.render(), "# TYPE c counter\nc 12\n");
    }

    #[test]
    fn type_conflicts_are_left_out_and_counted() {
        let mut s = store();
        let now = Instant::now();
        s.absorb(m("x", MetricKind::Absolute, MetricValue::Gauge { value: 1.0 }), now);
        s.absorb(
            m("x", MetricKind::Absolute, MetricValue::Counter { value: 1.0 }).with_tag("a", "b"),
            now,
        );
        let text = s.render();
        parse_strict(&text);
        assert_eq!(text, "# TYPE x gauge\nx 1\n");
        assert_eq!(s.metrics.errors().get("type_conflict"), Some(&1));
    }

    #[test]
    fn sanitizes_names() {
        assert_eq!(sanitize_metric_name("a.b-c:d"), "a_b_c:d");
        assert_eq!(sanitize_metric_name("9lives"), "_9lives");
        assert_eq!(sanitize_label_name("a:b"), "a_b");
        assert_eq!(sanitize_label_name("é"), "_");
        assert_eq!(sanitize_label_name(""), "_");
    }
}
