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
//! Series are spread over `request.concurrency` shards by hash; each shard sends its requests one
//! after the other, so the samples of one series always arrive in timestamp order (a sample
//! whose timestamp is not after the last one sent for its series is moved 1 ms after it). A
//! request is retried with exponential backoff and jitter, holding its shard (and so,
//! through the buffer, the sources: backpressure, not loss, unless `request.retry_attempts`
//! is set), on connection errors, timeouts, 5xx, 429, and also 401, 403, 404, 407 and 408
//! (honouring `Retry-After` up to `request.retry_max_duration_secs`): the toolkit's refusal
//! policy, the same for every sink ([`crate::toolkit::retry`]). The remote write
//! specification says a 4xx other than 429 must not be retried; Weir deliberately retries
//! those that are about credentials or routes, not the data (`request.reject_statuses =
//! [401, 403, 404]` restores the specification's behaviour). A 413 splits the request in
//! halves (recursively; one series still too large is rejected). Any other 4xx is not
//! retried: it is counted and logged with the server's message; a 400 for a request of
//! several series is split in halves and resent, so that one bad series does not take the
//! others with it. Events are acknowledged when the requests holding their samples got a
//! 2xx (`Rejected` when the receiver refused them).

use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use weir_connect::tls::{ClientTls, TlsClientConfig};
use weir_pipeline::component::{Sink, SinkConfig, SinkContext, SinkInput};
use weir_pipeline::config::{Concurrency, Count, Secret, Secs};
use weir_pipeline::event::Event;
use weir_pipeline::finalization::{EventStatus, FinalizerSet};
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use super::common::{
    check_buckets_quantiles, default_buckets, default_expire, default_quantiles, Aggregator, Entry,
    SeriesKey,
};
use super::http::{Client, Endpoint};
use super::request::{labels_for, Batch, Compressor, SeriesLabels};
use crate::http::snippet;
use crate::toolkit::batch::{estimated_bytes, BatchLimits};
use crate::toolkit::request::unless_stopped;
use crate::toolkit::split::halves;
use crate::toolkit::{
    BatchConfig, BatchDefaults, FailureReporter, RefusalPolicy, RequestConfig, RequestDefaults,
    Retries, Verdict, Wait,
};
use weir_pipeline::shutdown::ShutdownToken;

/// The prometheus_remote_write sink's `batch` defaults (per shard): 1000 events, 10000000
/// bytes (estimated from the metrics' names and tags), 1 second.
#[derive(Debug)]
pub struct RemoteWriteBatch;

impl BatchDefaults for RemoteWriteBatch {
    const MAX_EVENTS: Count = Count::of(1000);
    const MAX_BYTES: Count = Count::of(10_000_000);
    const TIMEOUT: Secs = Secs::from_secs(1);
}

/// The prometheus_remote_write sink's `request` defaults: 4 shards, 30 seconds per request,
/// retries from 0.1 to 30 seconds apart, forever.
#[derive(Debug)]
pub struct RemoteWriteRequest;

impl RequestDefaults for RemoteWriteRequest {
    const CONCURRENCY: Concurrency = Concurrency::of(4);
    const TIMEOUT: Secs = Secs::from_secs(30);
}

/// `auth`: credentials sent with every request.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(tag = "strategy", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    /// `Authorization: Basic base64(user:password)`.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: Secret,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token.
        token: Secret,
    },
}

fn default_max_series() -> Count {
    Count::of(100_000)
}

/// `type = "prometheus_remote_write"`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemoteWriteConfig {
    /// The receiver's URL, `http://` or `https://`, e.g.
    /// `http://127.0.0.1:9090/api/v1/write` (Prometheus) or
    /// `http://127.0.0.1:8428/api/v1/write` (VictoriaMetrics). Required.
    pub endpoint: String,
    /// Sent as the `X-Scope-OrgID` header (the tenant of Mimir, Cortex, Loki-style receivers).
    /// Default: none (not sent).
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// `{ strategy = "basic", user = "...", password = "..." }` or
    /// `{ strategy = "bearer", token = "..." }`. Default: none.
    #[serde(default)]
    pub auth: Option<Auth>,
    /// At most this many series held (the state of counters, histograms and summaries kept
    /// to send them), at least 1. Past it, a metric of a new series is dropped, counted as
    /// discarded and as a `series_limit` error, and rejected, until series expire
    /// (`expire_metrics_secs`); the series held go on updating. Default: 100000.
    #[serde(default = "default_max_series")]
    pub max_series: Count,
    /// Send the credentials (`auth`) over a connection without TLS. Default: false: a
    /// component with credentials and a plain `http://` endpoint does not start.
    #[serde(default)]
    pub allow_plaintext_credentials: bool,
    /// TLS for an `https://` endpoint (`ca_file`, `crt_file`, `key_file`,
    /// `verify_certificate`, `verify_hostname`, `server_name`: the `tls` table shared by
    /// every component, see docs/configuration.md). Default: the built-in (webpki) roots.
    #[serde(default)]
    pub tls: Option<TlsClientConfig>,
    /// When a shard's request is sent: `max_events` (default 1000), `max_bytes` (estimated
    /// from the metrics' names and tags; default 10000000), `timeout_secs` (default 1: what
    /// is pending is sent at least this often).
    #[serde(default)]
    pub batch: BatchConfig<RemoteWriteBatch>,
    /// How requests are sent: `concurrency` (the number of shards series are spread over;
    /// each shard sends in order; default 4), `timeout_secs` (default 30),
    /// `retry_initial_backoff_secs` (default 0.1), `retry_max_duration_secs` (default 30; a
    /// `Retry-After` is capped to it), `retry_attempts` (default: unset, retry until
    /// delivered; the events of a request given up are finalized as errored).
    /// `retry_statuses` and `reject_statuses` (default: none) change which HTTP statuses
    /// are retried (401, 403, 404, 407, 408, 429, 5xx), split (413) or rejected (other 4xx).
    #[serde(default)]
    pub request: RequestConfig<RemoteWriteRequest>,
    /// Forget a series (its running total starts again from zero) when it has not been
    /// updated for this many seconds. Default: 300.
    #[serde(default = "default_expire")]
    pub expire_metrics_secs: Secs,
    /// Upper bounds of the buckets `Distribution` histogram samples are binned into (a
    /// `+Inf` bucket is added). Default: Prometheus' `[0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    /// 0.5, 1, 2.5, 5, 10]`.
    #[serde(default = "default_buckets")]
    pub buckets: Vec<f64>,
    /// The quantiles sent for `Distribution` samples of the summary statistic (nearest rank over
    /// the last 10,000 samples), between 0 and 1.
    #[serde(default = "default_quantiles")]
    pub quantiles: Vec<f64>,
}

struct Settings {
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    request: RequestConfig<RemoteWriteRequest>,
    metrics: Arc<ComponentMetrics>,
    policy: RefusalPolicy,
    reporter: FailureReporter,
    stop: ShutdownToken,
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
        if self.auth.is_some() {
            weir_connect::plaintext_credentials(
                "`auth`",
                &self.endpoint,
                self.endpoint.starts_with("https://"),
                self.allow_plaintext_credentials,
            )?;
        }
        let buckets = check_buckets_quantiles(&self.buckets, &self.quantiles)?;
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
            Some(Auth::Basic { user, password }) => headers.push((
                http::header::AUTHORIZATION,
                weir_connect::http::basic_auth(user, password.expose())?,
            )),
            Some(Auth::Bearer { token }) => headers.push(header(
                "authorization",
                &format!("Bearer {}", token.expose()),
                "auth",
            )?),
            None => {}
        }
        Ok(Box::new(RemoteWrite {
            endpoint,
            aggregator: Aggregator::new(buckets, self.quantiles.clone())
                .with_max_series(self.max_series.get()),
            limits: self.batch.limits(),
            concurrency: self.request.concurrency(),
            expire: self.expire_metrics_secs.duration(),
            settings: Arc::new(Settings {
                headers,
                request: self.request.clone(),
                policy: self.request.policy(),
                reporter: FailureReporter::new(cx.metrics.clone()),
                stop: cx.stop.clone(),
                metrics: cx.metrics,
            }),
        }))
    }

    fn input(&self) -> DataType {
        DataType::METRIC
    }

    fn check_environment(&self) -> Result<(), BoxError> {
        Ok(TlsClientConfig::check(self.tls.as_ref())?)
    }
}

struct RemoteWrite {
    endpoint: Endpoint,
    /// Every series, with its encoded labels.
    aggregator: Aggregator<Option<Arc<SeriesLabels>>>,
    limits: BatchLimits,
    concurrency: usize,
    expire: Duration,
    settings: Arc<Settings>,
}

/// What a shard collects until it sends.
struct Pending {
    batch: Batch,
    notifiers: FinalizerSet,
    events: u64,
    /// Estimated, for `batch.max_bytes`.
    bytes: usize,
}

/// One request for a shard's sender: an encoded (not yet compressed) `WriteRequest`.
struct Request {
    raw: Vec<u8>,
    /// Where each `TimeSeries` starts in `raw` (a run of them is a request too).
    starts: Vec<usize>,
    notifiers: FinalizerSet,
    events: u64,
}

impl Request {
    /// The bytes of series `range`: a `WriteRequest` of their own.
    fn part(&self, range: &Range<usize>) -> &[u8] {
        let at = |i: usize| self.starts.get(i).copied().unwrap_or(self.raw.len());
        &self.raw[at(range.start)..at(range.end)]
    }
}

struct Shard {
    pending: Pending,
    tx: mpsc::Sender<Request>,
}

/// Records the new value of a series (just absorbed) in its shard's batch (the shard
/// comes with the series' labels). Returns the shard.
fn record(
    shards: &mut [Shard],
    key: &SeriesKey,
    entry: &mut Entry<Option<Arc<SeriesLabels>>>,
    ts: i64,
    quantiles: &[f64],
) -> usize {
    let Entry {
        value,
        last_ts,
        ext,
        ..
    } = entry;
    let labels = labels_for(ext, key, value, quantiles, shards.len());
    let s = labels.shard;
    shards[s]
        .pending
        .batch
        .record_series(labels, key, last_ts, ts, value, quantiles);
    s
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
                pending: Pending {
                    batch: Batch::new(),
                    notifiers: FinalizerSet::default(),
                    events: 0,
                    bytes: 0,
                },
                tx,
            });
            let client = Client::new(self.endpoint.clone());
            workers.push(tokio::spawn(sender(client, rx, Arc::clone(&self.settings))));
        }
        let quantiles = self.aggregator.quantiles.clone();
        let mut flush_tick = tokio::time::interval(self.limits.timeout);
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
                    for mut e in batch.events {
                        let size = estimated_bytes(&e);
                        let Event::Metric(mut m) = e else {
                            e.finalize(EventStatus::Rejected);
                            metrics.add_discarded(1);
                            continue;
                        };
                        let notifier = m.metadata.notifier.take();
                        let ts = m.timestamp.map_or(now_ms, |t| t.timestamp_millis());
                        let key = SeriesKey::of(&mut m);
                        let recorded = self.aggregator.absorb(key, *m, now, |key, entry| {
                            record(&mut shards, key, entry, ts, &quantiles)
                        });
                        let s = match recorded {
                            Ok(s) => s,
                            Err(err) => {
                                if let Some(n) = notifier {
                                    n.finalize(EventStatus::Rejected);
                                }
                                metrics.add_discarded(1);
                                metrics.error(err.kind(), 1, &err);
                                continue;
                            }
                        };
                        let p = &mut shards[s].pending;
                        p.notifiers.absorb(notifier);
                        p.events += 1;
                        p.bytes += size;
                        if self.limits.is_full(p.events as usize, p.bytes) && !full.contains(&s) {
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
    let p = &mut shard.pending;
    if p.events == 0 {
        return;
    }
    let mut raw = Vec::new();
    let mut starts = Vec::new();
    p.batch.encode(quantiles, &mut raw, &mut starts);
    let req = Request {
        raw,
        starts,
        notifiers: std::mem::take(&mut p.notifiers),
        events: std::mem::take(&mut p.events),
    };
    p.bytes = 0;
    if let Err(mpsc::error::SendError(req)) = shard.tx.send(req).await {
        // The sender stopped (it cannot, short of a panic): the events are not delivered.
        req.notifiers.finalize(EventStatus::Errored);
    }
}

/// A shard's sender: delivers its requests one after the other.
async fn sender(mut client: Client, mut rx: mpsc::Receiver<Request>, s: Arc<Settings>) {
    let mut snappy = Compressor::default();
    while let Some(req) = rx.recv().await {
        let status = deliver(&mut client, &req, &s, &mut snappy).await;
        match status {
            Outcome::Delivered | Outcome::Partial => s.metrics.add_sent(req.events),
            Outcome::Rejected | Outcome::GaveUp => s.metrics.add_discarded(req.events),
            Outcome::Stopped => s.metrics.error(
                "stopped",
                req.events,
                &format_args!(
                    "stopped while retrying: {} event(s) not delivered, left unacknowledged (errored)",
                    req.events
                ),
            ),
        }
        let st = match status {
            Outcome::Delivered => EventStatus::Delivered,
            Outcome::GaveUp | Outcome::Stopped => EventStatus::Errored,
            _ => EventStatus::Rejected,
        };
        req.notifiers.finalize(st);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    /// Some series were refused (a 400 for them), the others delivered.
    Partial,
    Rejected,
    /// Some requests were given up (`request.retry_attempts`).
    GaveUp,
    /// The sink was told to stop while retrying.
    Stopped,
}

/// The metric names of the first series of a request part, for an error message.
fn names_of(part: &[u8]) -> String {
    use prost::Message;
    let Ok(w) = super::proto::WriteRequest::decode(part) else {
        return String::new();
    };
    let names: Vec<&str> = w
        .timeseries
        .iter()
        .filter_map(|t| t.labels.iter().find(|l| l.name == "__name__"))
        .map(|l| l.value.as_str())
        .take(3)
        .collect();
    format!(
        "{}{}",
        names.join(", "),
        if w.timeseries.len() > 3 { ", ..." } else { "" }
    )
}

/// Sends a request until it gets an answer that is not worth retrying.
async fn deliver(
    client: &mut Client,
    req: &Request,
    s: &Settings,
    snappy: &mut Compressor,
) -> Outcome {
    // Runs of series still to send.
    let mut todo: Vec<Range<usize>> = Vec::with_capacity(1);
    todo.push(0..req.starts.len());
    let (mut ok, mut refused, mut gave_up) = (0usize, 0usize, 0usize);
    while let Some(range) = todo.pop() {
        if range.is_empty() {
            continue;
        }
        let body = match snappy.compress(req.part(&range)) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                s.metrics
                    .error("encode", 1, &format_args!("snappy compression failed: {e}"));
                refused += 1;
                continue;
            }
        };
        let mut retries = s.request.retries();
        loop {
            if s.stop.is_cancelled() {
                return Outcome::Stopped;
            }
            let sent = unless_stopped(
                client.post(&s.headers, body.clone(), s.request.timeout()),
                &s.stop,
            )
            .await;
            let (msg, after) = match sent {
                None => return Outcome::Stopped,
                Some(Ok(r)) if (200..300).contains(&r.status) => {
                    s.reporter.success();
                    s.metrics.add_sent_bytes(body.len() as u64);
                    ok += 1;
                    break;
                }
                Some(Ok(r)) => match s.policy.http(r.status) {
                    Verdict::Retry => (
                        format!(
                            "POST {}: HTTP {}: {}",
                            client.url(),
                            r.status,
                            snippet(r.body.as_bytes(), 300)
                        ),
                        r.retry_after,
                    ),
                    // Often one bad series (an out-of-order or too old sample): find it by
                    // halving, so that the others still get in. A 413: send the halves.
                    verdict
                        if (verdict == Verdict::Split || r.status == 400) && range.len() > 1 =>
                    {
                        s.reporter.success();
                        if let Ok((a, b)) = halves(range.clone()) {
                            todo.push(b);
                            todo.push(a);
                        }
                        break;
                    }
                    verdict => {
                        s.reporter.success();
                        let what = if verdict == Verdict::Split {
                            format!(
                                "one series of {} bytes is too large for the receiver, even alone",
                                req.part(&range).len()
                            )
                        } else {
                            format!("remote write refused {} series", range.len())
                        };
                        s.metrics.error(
                            "rejected",
                            range.len() as u64,
                            &format_args!(
                                "{what} ({}) with HTTP {}: {}",
                                names_of(req.part(&range)),
                                r.status,
                                r.body.trim()
                            ),
                        );
                        refused += 1;
                        break;
                    }
                },
                Some(Err(e)) => (e.to_string(), None),
            };
            s.reporter.failure(&msg);
            match retries.wait(after, &s.stop).await {
                Wait::Again => {}
                Wait::GaveUp => {
                    give_up(s, &msg, &retries, range.len());
                    gave_up += 1;
                    break;
                }
                Wait::Stopped => return Outcome::Stopped,
            }
        }
    }
    match (ok, refused, gave_up) {
        (_, _, 1..) => Outcome::GaveUp,
        (_, 0, 0) => Outcome::Delivered,
        (0, _, 0) => Outcome::Rejected,
        _ => Outcome::Partial,
    }
}

/// Counts and logs a request given up after `request.retry_attempts`.
fn give_up(s: &Settings, why: &str, retries: &Retries, series: usize) {
    s.metrics.error(
        "gave_up",
        1,
        &format_args!(
            "remote write gave up on {series} series after {} attempts: {why}",
            retries.failed()
        ),
    );
}
