//! `prometheus_remote_write`: sends metrics to a Prometheus remote write 1.0 receiver
//! (Prometheus with `--web.enable-remote-write-receiver`, VictoriaMetrics, Mimir, Thanos
//! receive, Cortex...).
//!
//! ```toml
//! [sinks.prom]
//! type = "prometheus_remote_write"
//! inputs = ["to_metrics"]
//! endpoint = "http://127.0.0.1:9090/api/v1/write"
//! ```
//!
//! Every metric is first folded into its series (sanitised name plus labels, see
//! [`super::common`]): incremental values are added to a running total so that the receiver
//! gets absolute values, as Prometheus expects; a series not updated for
//! `expire_metrics_secs` is forgotten. Each update becomes one sample at the metric's
//! timestamp (or now): histograms as cumulative `_bucket{le}` (with `+Inf`), `_sum` and
//! `_count`; summaries as `{quantile}`, `_sum`, `_count`; sets as a gauge of their size.
//!
//! Series are spread over `concurrency` shards by hash; each shard sends its requests one
//! after the other, so the samples of one series always arrive in timestamp order (a sample
//! whose timestamp is not after the last one sent for its series is moved 1 ms after it). A
//! request is retried with exponential backoff and jitter, holding its shard (and so,
//! through the buffer, the sources: backpressure, not loss), on connection errors, timeouts,
//! 5xx and 429 (honouring `Retry-After`). Any other 4xx is not retried: it is counted and
//! logged with the server's message; a 400 for a request of several series is split in
//! halves and resent, so that one bad series does not take the others with it. Events are
//! acknowledged when the requests holding their samples got a 2xx (`Rejected` when the
//! receiver refused them).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use weir_pipeline::component::{Sink, SinkConfig, SinkContext, SinkInput};
use weir_pipeline::config::DataType;
use weir_pipeline::event::Event;
use weir_pipeline::finalization::{BatchNotifier, EventStatus};
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::retry::Backoff;
use weir_pipeline::BoxError;

use super::common::{
    check_buckets_quantiles, default_buckets, default_expire, default_quantiles, expand,
    positive_secs, Aggregator, Extra, SeriesKey, Stored, Suffix,
};
use super::http::{base64, Client, Endpoint, TlsConfig};
use super::proto::{self, Label, Sample, TimeSeries, WriteRequest};

/// The NaN Prometheus uses for ordinary NaN values (its staleness marker is another NaN,
/// which must never be sent by accident).
const NORMAL_NAN: u64 = 0x7ff8_0000_0000_0001;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

fn default_batch_events() -> usize {
    1000
}
fn default_batch_timeout() -> f64 {
    1.0
}
fn default_concurrency() -> usize {
    4
}
fn default_request_timeout() -> f64 {
    30.0
}
fn default_initial_backoff() -> f64 {
    0.1
}
fn default_max_backoff() -> f64 {
    30.0
}

/// `auth`: credentials sent with every request.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// `Authorization: Basic base64(user:password)`.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: String,
    },
}

/// `type = "prometheus_remote_write"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// The receiver's URL, `http://` or `https://`, e.g.
    /// `http://127.0.0.1:9090/api/v1/write` (Prometheus) or
    /// `http://127.0.0.1:8428/api/v1/write` (VictoriaMetrics). Required.
    pub endpoint: String,
    /// Sent as the `X-Scope-OrgID` header (the tenant of Mimir, Cortex, Loki-style
    /// receivers). Default: not sent.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// `{ strategy = "basic", user = "...", password = "..." }` or
    /// `{ strategy = "bearer", token = "..." }`. Default: none.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// TLS options for an `https://` endpoint (`ca_file`, `cert_file`, `key_file`,
    /// `server_name`). Default: verify against the system's CA bundle.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Send a shard's request once it holds this many events. Default: 1000.
    #[serde(default = "default_batch_events")]
    pub batch_max_events: usize,
    /// Send what is pending at least this often, in seconds. Default: 1.
    #[serde(default = "default_batch_timeout")]
    pub batch_timeout_secs: f64,
    /// How many requests may be in flight at once (the number of shards series are spread
    /// over; each shard sends in order). Default: 4.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Give up on a request (and retry it) after this many seconds. Default: 30.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: f64,
    /// The first wait before a retry, in seconds; it doubles (with jitter) up to
    /// `retry_max_backoff_secs`. Default: 0.1.
    #[serde(default = "default_initial_backoff")]
    pub retry_initial_backoff_secs: f64,
    /// The longest wait between retries, in seconds. Default: 30.
    #[serde(default = "default_max_backoff")]
    pub retry_max_backoff_secs: f64,
    /// Forget a series (its running total starts again from zero) when it has not been
    /// updated for this many seconds. Default: 300.
    #[serde(default = "default_expire")]
    pub expire_metrics_secs: f64,
    /// Upper bounds of the buckets `Distribution` histogram samples are binned into (a
    /// `+Inf` bucket is added). Default: Prometheus' `[0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    /// 0.5, 1, 2.5, 5, 10]`.
    #[serde(default = "default_buckets")]
    pub buckets: Vec<f64>,
    /// The quantiles sent for `Distribution` summary samples. Default: `[0.5, 0.9, 0.99]`.
    #[serde(default = "default_quantiles")]
    pub quantiles: Vec<f64>,
}

struct Settings {
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    request_timeout: Duration,
    initial_backoff: Duration,
    max_backoff: Duration,
    metrics: Arc<ComponentMetrics>,
}

fn header(
    name: &'static str,
    value: &str,
    what: &str,
) -> Result<(http::HeaderName, http::HeaderValue), String> {
    let v = http::HeaderValue::from_str(value)
        .map_err(|_| format!("`{what}` cannot be sent in an HTTP header"))?;
    Ok((http::HeaderName::from_static(name), v))
}

#[async_trait]
impl SinkConfig for RemoteWriteConfig {
    async fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BoxError> {
        let endpoint = Endpoint::parse(&self.endpoint, self.tls.as_ref())?;
        let buckets = check_buckets_quantiles(&self.buckets, &self.quantiles)?;
        if self.batch_max_events == 0 {
            return Err("`batch_max_events` must be at least 1".into());
        }
        if self.concurrency == 0 || self.concurrency > 1024 {
            return Err("`concurrency` must be between 1 and 1024".into());
        }
        let batch_timeout = positive_secs("batch_timeout_secs", self.batch_timeout_secs)?;
        let expire = positive_secs("expire_metrics_secs", self.expire_metrics_secs)?;
        let initial_backoff = positive_secs(
            "retry_initial_backoff_secs",
            self.retry_initial_backoff_secs,
        )?;
        let max_backoff = positive_secs("retry_max_backoff_secs", self.retry_max_backoff_secs)?;
        let request_timeout = positive_secs("request_timeout_secs", self.request_timeout_secs)?;
        let mut headers = vec![
            header("content-encoding", "snappy", "")?,
            header("content-type", "application/x-protobuf", "")?,
            header("x-prometheus-remote-write-version", "0.1.0", "")?,
            header(
                "user-agent",
                concat!("weir/", env!("CARGO_PKG_VERSION")),
                "",
            )?,
        ];
        if let Some(t) = &self.tenant_id {
            headers.push(header("x-scope-orgid", t, "tenant_id")?);
        }
        match &self.auth {
            Some(Auth::Basic { user, password }) => headers.push(header(
                "authorization",
                &format!("Basic {}", base64(format!("{user}:{password}").as_bytes())),
                "auth",
            )?),
            Some(Auth::Bearer { token }) => {
                headers.push(header("authorization", &format!("Bearer {token}"), "auth")?)
            }
            None => {}
        }
        Ok(Box::new(RemoteWrite {
            endpoint,
            aggregator: Aggregator::new(buckets, self.quantiles.clone()),
            batch_max_events: self.batch_max_events,
            batch_timeout,
            concurrency: self.concurrency,
            expire,
            settings: Arc::new(Settings {
                headers,
                request_timeout,
                initial_backoff,
                max_backoff,
                metrics: cx.metrics,
            }),
        }))
    }

    fn input(&self) -> DataType {
        DataType::METRIC
    }
}

struct RemoteWrite {
    endpoint: Endpoint,
    aggregator: Aggregator,
    batch_max_events: usize,
    batch_timeout: Duration,
    concurrency: usize,
    expire: Duration,
    settings: Arc<Settings>,
}

/// What a shard collects until it sends: per series, its values in timestamp order.
#[derive(Default)]
struct Pending {
    series: HashMap<SeriesKey, Vec<(i64, Stored)>>,
    notifiers: Vec<Arc<BatchNotifier>>,
    events: u64,
}

impl Pending {
    fn add_notifier(&mut self, n: Option<Arc<BatchNotifier>>) {
        if let Some(n) = n {
            if !self.notifiers.last().is_some_and(|l| Arc::ptr_eq(l, &n)) {
                self.notifiers.push(n);
            }
        }
    }
}

/// One request for a shard's sender.
struct Request {
    write: WriteRequest,
    notifiers: Vec<Arc<BatchNotifier>>,
    events: u64,
}

struct Shard {
    pending: Pending,
    tx: mpsc::Sender<Request>,
}

fn shard_of(key: &SeriesKey, n: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % n as u64) as usize
}

/// Records the series' new value as a sample at `ts` (ms), keeping the series' samples in
/// strictly increasing time order across requests.
fn record(slot: &mut Vec<(i64, Stored)>, last_ts: &mut i64, ts: i64, value: &Stored) {
    let mut ts = ts.max(*last_ts);
    match slot.last_mut() {
        // A summary's samples are costly to copy: one value per request is enough.
        Some((lts, v)) if *lts == ts || matches!(value, Stored::Samples { .. }) => {
            *lts = ts;
            *v = value.clone();
        }
        _ => {
            if ts == *last_ts {
                // A sample at this time was already sent with another value: a receiver
                // would reject the second one as a duplicate.
                ts = ts.saturating_add(1);
            }
            slot.push((ts, value.clone()));
        }
    }
    *last_ts = ts;
}

/// Builds the protobuf request from pending series: each value expanded to its samples (see
/// [`expand`]), one `TimeSeries` per expanded series with its samples in the given order.
pub fn build_request(
    series: impl IntoIterator<Item = (SeriesKey, Vec<(i64, Stored)>)>,
    quantiles: &[f64],
) -> WriteRequest {
    let mut out = Vec::new();
    for (key, snaps) in series {
        // The expanded series of this key, by (suffix, extra label).
        let first = out.len();
        let mut index: Vec<(Suffix, Option<u64>, bool)> = Vec::new();
        for (ts, value) in &snaps {
            expand(value, quantiles, |suffix, extra, v| {
                let id = (
                    suffix,
                    extra.map(|e| e.value().to_bits()),
                    matches!(extra, Some(Extra::Le(_))),
                );
                let i = match index.iter().position(|x| *x == id) {
                    Some(i) => i,
                    None => {
                        index.push(id);
                        out.push(TimeSeries {
                            labels: labels_of(&key, suffix, extra, value.reserved_label()),
                            samples: Vec::with_capacity(snaps.len()),
                        });
                        index.len() - 1
                    }
                };
                let value = if v.is_nan() {
                    f64::from_bits(NORMAL_NAN)
                } else {
                    v
                };
                out[first + i].samples.push(Sample {
                    value,
                    timestamp: *ts,
                });
            });
        }
    }
    WriteRequest { timeseries: out }
}

fn labels_of(
    key: &SeriesKey,
    suffix: Suffix,
    extra: Option<Extra>,
    reserved: Option<&str>,
) -> Vec<Label> {
    let mut labels = Vec::with_capacity(key.tags.len() + 2);
    labels.push(Label {
        name: "__name__".into(),
        value: format!("{}{}", key.name, suffix.as_str()),
    });
    for (k, v) in &key.tags {
        if reserved == Some(k.as_str()) {
            continue;
        }
        labels.push(Label {
            name: k.clone(),
            value: v.clone(),
        });
    }
    if let Some(e) = extra {
        labels.push(Label {
            name: e.name().into(),
            value: super::common::fmt_f64(e.value()),
        });
    }
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    labels
}

#[async_trait]
impl Sink for RemoteWrite {
    async fn run(mut self: Box<Self>, mut input: SinkInput) -> Result<(), BoxError> {
        let metrics = Arc::clone(&self.settings.metrics);
        let mut shards = Vec::with_capacity(self.concurrency);
        let mut workers = Vec::with_capacity(self.concurrency);
        for _ in 0..self.concurrency {
            let (tx, rx) = mpsc::channel(1);
            shards.push(Shard {
                pending: Pending::default(),
                tx,
            });
            let client = Client::new(self.endpoint.clone());
            workers.push(tokio::spawn(sender(client, rx, Arc::clone(&self.settings))));
        }
        let quantiles = self.aggregator.quantiles.clone();
        let mut flush_tick = tokio::time::interval(self.batch_timeout);
        flush_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let expire_every = (self.expire / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
        let mut expire_tick = tokio::time::interval(expire_every);
        expire_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                batch = input.next() => {
                    let Some(batch) = batch else { break };
                    let now = Instant::now();
                    let now_ms = chrono::Utc::now().timestamp_millis();
                    let mut full = Vec::new();
                    for e in batch.events {
                        let Event::Metric(mut m) = e else {
                            e.metadata().update_status(EventStatus::Rejected);
                            metrics.add_discarded(1);
                            continue;
                        };
                        let notifier = m.metadata.notifier.take();
                        let ts = m.timestamp.map_or(now_ms, |t| t.timestamp_millis());
                        let key = Aggregator::key_of(&mut m);
                        let s = shard_of(&key, shards.len());
                        let entry = match self.aggregator.absorb(key.clone(), m, now) {
                            Ok(entry) => entry,
                            Err(err) => {
                                if let Some(n) = notifier {
                                    n.update(EventStatus::Rejected);
                                }
                                metrics.add_discarded(1);
                                metrics.error("invalid_value", 1, &err);
                                continue;
                            }
                        };
                        let p = &mut shards[s].pending;
                        let slot = p.series.entry(key).or_default();
                        record(slot, &mut entry.last_ts, ts, &entry.value);
                        p.add_notifier(notifier);
                        p.events += 1;
                        if p.events as usize >= self.batch_max_events && !full.contains(&s) {
                            full.push(s);
                        }
                    }
                    for s in full {
                        flush(&mut shards[s], &quantiles).await;
                    }
                }
                _ = flush_tick.tick() => {
                    for s in shards.iter_mut() {
                        flush(s, &quantiles).await;
                    }
                }
                _ = expire_tick.tick() => {
                    self.aggregator.expire(self.expire, Instant::now());
                }
            }
        }
        for s in shards.iter_mut() {
            flush(s, &quantiles).await;
        }
        drop(shards);
        for w in workers {
            w.await
                .map_err(|e| format!("a remote write sender failed: {e}"))?;
        }
        Ok(())
    }
}

/// Hands a shard's pending samples to its sender (waiting while it is busy: backpressure).
async fn flush(shard: &mut Shard, quantiles: &[f64]) {
    if shard.pending.events == 0 {
        return;
    }
    let p = std::mem::take(&mut shard.pending);
    let write = build_request(p.series, quantiles);
    let req = Request {
        write,
        notifiers: p.notifiers,
        events: p.events,
    };
    if let Err(mpsc::error::SendError(req)) = shard.tx.send(req).await {
        // The sender stopped (it cannot, short of a panic): the events are not delivered.
        for n in req.notifiers {
            n.update(EventStatus::Errored);
        }
    }
}

/// A shard's sender: delivers its requests one after the other.
async fn sender(mut client: Client, mut rx: mpsc::Receiver<Request>, s: Arc<Settings>) {
    let mut scratch = Vec::new();
    while let Some(req) = rx.recv().await {
        let status = deliver(&mut client, req.write, &s, &mut scratch).await;
        match status {
            Outcome::Delivered | Outcome::Partial => s.metrics.add_sent(req.events),
            Outcome::Rejected => s.metrics.add_discarded(req.events),
        }
        let st = match status {
            Outcome::Delivered => EventStatus::Delivered,
            _ => EventStatus::Rejected,
        };
        for n in req.notifiers {
            n.update(st);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    /// Some series were refused (a 400 for them), the others delivered.
    Partial,
    Rejected,
}

/// Sends a request until it gets an answer that is not worth retrying.
async fn deliver(
    client: &mut Client,
    write: WriteRequest,
    s: &Settings,
    scratch: &mut Vec<u8>,
) -> Outcome {
    let mut todo = vec![write];
    let (mut ok, mut refused) = (0usize, 0usize);
    while let Some(w) = todo.pop() {
        if w.timeseries.is_empty() {
            continue;
        }
        let body = match proto::encode(&w, scratch) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                s.metrics
                    .error("encode", 1, &format_args!("snappy compression failed: {e}"));
                refused += 1;
                continue;
            }
        };
        let mut backoff = Backoff::new(s.initial_backoff, s.max_backoff);
        loop {
            let wait = match client
                .post(&s.headers, body.clone(), s.request_timeout)
                .await
            {
                Ok(r) if (200..300).contains(&r.status) => {
                    s.metrics.add_sent_bytes(body.len() as u64);
                    ok += 1;
                    break;
                }
                Ok(r) if r.status == 429 || r.status >= 500 => {
                    let d = backoff.next_delay();
                    let wait = r.retry_after.map_or(d, |ra| ra.min(MAX_RETRY_AFTER).max(d));
                    s.metrics.error(
                        "http_retry",
                        1,
                        &format_args!(
                            "remote write got HTTP {}: {}; retrying in {wait:?} (the batch is held, upstream waits)",
                            r.status,
                            r.body.trim()
                        ),
                    );
                    wait
                }
                Ok(r) if r.status == 400 && w.timeseries.len() > 1 => {
                    // Often one bad series (an out-of-order or too old sample): find it by
                    // halving, so that the others still get in.
                    let mut a = w.timeseries;
                    let b = a.split_off(a.len() / 2);
                    todo.push(WriteRequest { timeseries: b });
                    todo.push(WriteRequest { timeseries: a });
                    break;
                }
                Ok(r) => {
                    let names: Vec<&str> = w
                        .timeseries
                        .iter()
                        .filter_map(|t| t.labels.iter().find(|l| l.name == "__name__"))
                        .map(|l| l.value.as_str())
                        .take(3)
                        .collect();
                    s.metrics.error(
                        "rejected",
                        w.timeseries.len() as u64,
                        &format_args!(
                            "remote write refused {} series ({}{}) with HTTP {}: {}",
                            w.timeseries.len(),
                            names.join(", "),
                            if w.timeseries.len() > 3 { ", ..." } else { "" },
                            r.status,
                            r.body.trim()
                        ),
                    );
                    refused += 1;
                    break;
                }
                Err(e) => {
                    let wait = backoff.next_delay();
                    s.metrics.error(
                        "connection",
                        1,
                        &format_args!(
                            "{e}; retrying in {wait:?} (the batch is held, upstream waits)"
                        ),
                    );
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
    match (ok, refused) {
        (_, 0) => Outcome::Delivered,
        (0, _) => Outcome::Rejected,
        _ => Outcome::Partial,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use weir_pipeline::event::{Bucket, Quantile};

    fn key(name: &str, tags: &[(&str, &str)]) -> SeriesKey {
        SeriesKey {
            name: name.into(),
            tags: tags
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn labels(ts: &TimeSeries) -> Vec<(String, String)> {
        ts.labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect()
    }

    #[test]
    fn samples_stay_in_time_order_and_never_repeat_a_timestamp() {
        let mut slot = Vec::new();
        let mut last = i64::MIN;
        record(&mut slot, &mut last, 100, &Stored::Counter(1.0));
        record(&mut slot, &mut last, 100, &Stored::Counter(2.0));
        record(&mut slot, &mut last, 90, &Stored::Counter(3.0));
        record(&mut slot, &mut last, 120, &Stored::Counter(4.0));
        let got: Vec<(i64, f64)> = slot
            .iter()
            .map(|(t, v)| match v {
                Stored::Counter(c) => (*t, *c),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(got, vec![(100, 3.0), (120, 4.0)]);
        // The next request: a sample at the time already sent moves 1 ms later.
        let mut slot = Vec::new();
        record(&mut slot, &mut last, 120, &Stored::Counter(5.0));
        assert_eq!(slot[0].0, 121);
    }

    #[test]
    fn maps_histograms_and_summaries() {
        let h = Stored::Histogram {
            buckets: vec![
                Bucket {
                    upper_limit: 0.5,
                    count: 1,
                },
                Bucket {
                    upper_limit: 1.0,
                    count: 2,
                },
            ],
            count: 4,
            sum: 6.0,
        };
        let s = Stored::Summary {
            quantiles: vec![Quantile {
                quantile: 0.5,
                value: f64::NAN,
            }],
            count: 2,
            sum: 3.0,
        };
        let req = build_request(
            vec![
                (
                    key("lat", &[("le", "user"), ("z", "1")]),
                    vec![(10, h.clone()), (20, h)],
                ),
                (key("sz", &[]), vec![(10, s)]),
            ],
            &[],
        );
        let got: Vec<_> = req
            .timeseries
            .iter()
            .map(|t| {
                (
                    labels(t),
                    t.samples
                        .iter()
                        .map(|s| (s.timestamp, s.value))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        let l = |n: &str, extra: Option<(&str, &str)>, z: bool| {
            let mut v = vec![("__name__".to_string(), n.to_string())];
            if let Some((a, b)) = extra {
                v.push((a.to_string(), b.to_string()));
            }
            if z {
                v.push(("z".into(), "1".into()));
            }
            v
        };
        assert_eq!(
            got[0],
            (
                l("lat_bucket", Some(("le", "0.5")), true),
                vec![(10, 1.0), (20, 1.0)]
            )
        );
        assert_eq!(got[1].0, l("lat_bucket", Some(("le", "1")), true));
        assert_eq!(got[1].1, vec![(10, 3.0), (20, 3.0)]);
        assert_eq!(got[2].0, l("lat_bucket", Some(("le", "+Inf")), true));
        assert_eq!(got[2].1, vec![(10, 4.0), (20, 4.0)]);
        assert_eq!(got[3].0, l("lat_sum", None, true));
        assert_eq!(
            got[4],
            (l("lat_count", None, true), vec![(10, 4.0), (20, 4.0)])
        );
        assert_eq!(got[5].0, l("sz", Some(("quantile", "0.5")), false));
        assert_eq!(got[5].1[0].1.to_bits(), NORMAL_NAN);
        assert_eq!(got[6].0, l("sz_sum", None, false));
        assert_eq!(got[7].0, l("sz_count", None, false));
        assert_eq!(got.len(), 8);
    }
}
