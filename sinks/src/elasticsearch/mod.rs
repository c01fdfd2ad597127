//! `elasticsearch`: events to Elasticsearch or OpenSearch through the `_bulk` API.
//!
//! ```toml
//! [sinks.es]
//! type = "elasticsearch"
//! inputs = ["k8s_logs"]
//! endpoints = ["https://es-1:9200", "https://es-2:9200"]
//! index = "logs-{{ kubernetes.namespace }}-%Y.%m.%d"
//! id_key = "uid"
//! compression = "gzip"
//! auth.api_key = "…"
//! tls.ca_file = "/etc/weir/es-ca.pem"
//! ```
//!
//! Written with `reqwest` (rustls) rather than the official `elasticsearch` crate: that crate's
//! 9.x line is an alpha, it wraps the same `reqwest` and adds `url`/`serde_with` layers, and its
//! bulk helper serialises through its own body types, while all this sink needs is one POST of
//! NDJSON bytes it writes itself (cheaply, into one buffer) and a per-item parse of the answer.
//!
//! The loop: events are encoded into one NDJSON body (action line + document line each,
//! written straight into the buffer: no allocation per event) until `batch.max_bytes` or
//! `batch.max_events` is reached or `batch.timeout_secs` passes since the first one, then the
//! body is POSTed to `<endpoint>/_bulk`, asking (`filter_path`) for only the status and error
//! of each item. One request is in flight at a time; the next batch is encoded meanwhile
//! (`send.rs`). The answer is parsed per item: successes are acknowledged, 429/5xx items are
//! sent again (only them) after a backoff, other failures (a 400
//! `mapper_parsing_exception`...) are counted, logged with the server's reason, sent as new log
//! events to the `dead_letter` output (when something reads it; the sink waits while its
//! consumer is full) and to the dead-letter file if one is set, and finalized as Rejected. A failed request (connection
//! error, 429, 5xx, a body that is not a bulk response) is retried whole, moving to the next
//! endpoint. The batch is held meanwhile, so the buffer fills and backpressure reaches the
//! sources: nothing is dropped unless `max_retries` is set.

pub mod bulk;
mod send;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use weir_pipeline::component::{Output, Sink, SinkConfig, SinkContext, SinkInput};
use weir_pipeline::event::{parse_path, Event, FieldPath, Value};
use weir_pipeline::finalization::EventStatus;
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::template::{event_time, Template};
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use crate::http::{build_client, header_map, positive_secs as secs, snippet, TlsClientConfig};
pub use bulk::BulkAction;
use bulk::{write_action, write_document};
use send::{Auth, Batch, Item, Sender};

/// How documents are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Into `index`, with `bulk_action`.
    #[default]
    Bulk,
    /// Into the data stream `<type>-<dataset>-<namespace>`, always `create`, with `@timestamp`.
    DataStream,
}

/// `data_stream`: the three parts of the data stream's name (each a template).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DataStreamConfig {
    /// Default: `logs`.
    #[serde(default = "default_ds_type", rename = "type")]
    pub kind: String,
    /// Default: `generic`.
    #[serde(default = "default_ds_dataset")]
    pub dataset: String,
    /// Default: `default`.
    #[serde(default = "default_ds_namespace")]
    pub namespace: String,
}

impl Default for DataStreamConfig {
    fn default() -> Self {
        Self {
            kind: default_ds_type(),
            dataset: default_ds_dataset(),
            namespace: default_ds_namespace(),
        }
    }
}

fn default_ds_type() -> String {
    "logs".into()
}
fn default_ds_dataset() -> String {
    "generic".into()
}
fn default_ds_namespace() -> String {
    "default".into()
}

/// `auth`: either `user` + `password` (basic) or `api_key`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Basic authentication user. Default: none.
    #[serde(default)]
    pub user: Option<String>,
    /// Basic authentication password. Default: none.
    #[serde(default)]
    pub password: Option<String>,
    /// An API key, the base64 `id:api_key` Elasticsearch returns as `encoded`; sent as
    /// `Authorization: ApiKey <api_key>`. Default: none.
    #[serde(default)]
    pub api_key: Option<String>,
}

/// `batch`: when a bulk request is sent.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchConfig {
    /// Send when the NDJSON body reaches this many bytes (before compression).
    /// Default: 10000000.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: usize,
    /// Send when this many documents are waiting. Default: 10000.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Send at the latest this long after the first waiting document. Default: 1.
    #[serde(default = "default_batch_timeout")]
    pub timeout_secs: f64,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_bytes: default_max_bytes(),
            max_events: default_max_events(),
            timeout_secs: default_batch_timeout(),
        }
    }
}

fn default_max_bytes() -> usize {
    10_000_000
}
fn default_max_events() -> usize {
    10_000
}
fn default_batch_timeout() -> f64 {
    1.0
}
fn default_index() -> String {
    "weir-%Y.%m.%d".into()
}
fn default_true() -> bool {
    true
}
fn default_request_timeout() -> f64 {
    60.0
}
fn default_backoff_initial() -> f64 {
    0.1
}
fn default_backoff_max() -> f64 {
    30.0
}

/// Request body compression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

/// `type = "elasticsearch"`: see the module docs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// Base URLs of the cluster's nodes (`http://host:9200`, `https://host:9200/prefix`).
    /// Requests go to the first; on a connection error, 429 or 5xx the next one is tried.
    /// Required, at least one.
    pub endpoints: Vec<String>,
    /// `bulk` or `data_stream`. Default: `bulk`.
    #[serde(default)]
    pub mode: Mode,
    /// `bulk` mode: `index` or `create`. Default: `index`.
    #[serde(default = "default_action")]
    pub bulk_action: BulkAction,
    /// `bulk` mode: the index, a template of fields and time
    /// (`logs-{{ kubernetes.namespace }}-%Y.%m.%d`). Default: `weir-%Y.%m.%d`.
    #[serde(default = "default_index")]
    pub index: String,
    /// `data_stream` mode: the data stream's name parts. Default: `logs-generic-default`.
    #[serde(default)]
    pub data_stream: DataStreamConfig,
    /// A field whose value becomes the document `_id` (idempotent retries). Default: none
    /// (Elasticsearch assigns ids).
    #[serde(default)]
    pub id_key: Option<String>,
    /// An ingest pipeline to run the documents through (`?pipeline=`). Default: none.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// `none` or `gzip` (the request body). Default: `none`.
    #[serde(default)]
    pub compression: Compression,
    /// Authentication. Default: none.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// TLS for `https://` endpoints (`ca_file`, `crt_file`, `key_file`,
    /// `verify_certificate`, `verify_hostname`, `server_name`: the `tls` table shared by every
    /// component, see docs/configuration.md). Default: the built-in (webpki) roots.
    #[serde(default)]
    pub tls: Option<TlsClientConfig>,
    /// Extra HTTP headers on every request. Default: none.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Batching.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Check the cluster (`GET /`) at start and detect its version. Default: true.
    #[serde(default = "default_true")]
    pub healthcheck: bool,
    /// The Elasticsearch major version to assume when it cannot be detected (6 adds
    /// `_type: _doc` to actions). Default: detected, else 8.
    #[serde(default)]
    pub api_version: Option<u32>,
    /// Timeout of one request, in seconds. Default: 60.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: f64,
    /// First retry delay, in seconds (doubling, jittered). Default: 0.1.
    #[serde(default = "default_backoff_initial")]
    pub retry_initial_backoff_secs: f64,
    /// Longest retry delay, in seconds. Default: 30.
    #[serde(default = "default_backoff_max")]
    pub retry_max_backoff_secs: f64,
    /// Give up on a document after this many attempts: it is finalized as Errored, counted
    /// and dead-lettered. Default: none (retry until delivered; backpressure meanwhile).
    #[serde(default)]
    pub max_retries: Option<u32>,
    /// A file where refused documents are appended as JSON lines
    /// `{"status":400,"reason":"…","action":{…},"document":{…}}`, besides the `dead_letter`
    /// output. Default: none.
    #[serde(default)]
    pub dead_letter_file: Option<PathBuf>,
}

fn default_action() -> BulkAction {
    BulkAction::Index
}

/// What `GET /` said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterVersion {
    pub opensearch: bool,
    pub major: u32,
    pub minor: u32,
}

impl ClusterVersion {
    /// Elasticsearch 6 and older want a `_type` on every action; 7 and OpenSearch 1 accept
    /// one (deprecated), 8 and OpenSearch 2 refuse it, so only 6 gets one.
    fn doc_type(self) -> Option<&'static str> {
        (!self.opensearch && self.major < 7).then_some("_doc")
    }

    /// Data streams came with Elasticsearch 7.9 (and every OpenSearch).
    fn has_data_streams(self) -> bool {
        self.opensearch || (self.major, self.minor) >= (7, 9)
    }
}

impl std::fmt::Display for ClusterVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = if self.opensearch {
            "OpenSearch"
        } else {
            "Elasticsearch"
        };
        write!(f, "{name} {}.{}", self.major, self.minor)
    }
}

/// Parses the `GET /` document of Elasticsearch or OpenSearch.
pub fn parse_root(body: &[u8]) -> Result<ClusterVersion, String> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("`GET /` did not answer JSON ({e}): {}", snippet(body, 200)))?;
    let ver = &v["version"];
    let number = ver["number"]
        .as_str()
        .ok_or_else(|| format!("`GET /` has no version.number: {}", snippet(body, 200)))?;
    let mut parts = number.split('.').map(|p| p.parse::<u32>().ok());
    let (Some(Some(major)), minor) = (parts.next(), parts.next().flatten()) else {
        return Err(format!(
            "`GET /`: version.number `{number}` is not a version"
        ));
    };
    Ok(ClusterVersion {
        opensearch: ver["distribution"].as_str() == Some("opensearch"),
        major,
        minor: minor.unwrap_or(0),
    })
}

#[async_trait]
impl SinkConfig for ElasticsearchConfig {
    async fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BoxError> {
        if self.endpoints.is_empty() {
            return Err("`endpoints` needs at least one URL".into());
        }
        let mut endpoints = Vec::new();
        for e in &self.endpoints {
            let u = reqwest::Url::parse(e).map_err(|err| format!("`endpoints`: `{e}`: {err}"))?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(format!("`endpoints`: `{e}` must be http:// or https://").into());
            }
            TlsClientConfig::check_scheme(self.tls.as_ref(), "endpoints", e)?;
            endpoints.push(e.trim_end_matches('/').to_string());
        }
        let tpl = |what: &str, t: &str| {
            Template::parse(t).map_err(|e| BoxError::from(format!("`{what}`: {e}")))
        };
        let target = match self.mode {
            Mode::Bulk => Target::Index(tpl("index", &self.index)?),
            Mode::DataStream => Target::DataStream(
                tpl("data_stream.type", &self.data_stream.kind)?,
                tpl("data_stream.dataset", &self.data_stream.dataset)?,
                tpl("data_stream.namespace", &self.data_stream.namespace)?,
            ),
        };
        let id_key = match &self.id_key {
            Some(k) => Some(parse_path(k).map_err(|e| format!("`id_key`: {e}"))?),
            None => None,
        };
        if self.batch.max_bytes == 0 || self.batch.max_events == 0 {
            return Err("`batch.max_bytes` and `batch.max_events` must be at least 1".into());
        }
        let timeout = secs("request_timeout_secs", self.request_timeout_secs)?;
        let batch_timeout = secs("batch.timeout_secs", self.batch.timeout_secs)?;
        let backoff = (
            secs(
                "retry_initial_backoff_secs",
                self.retry_initial_backoff_secs,
            )?,
            secs("retry_max_backoff_secs", self.retry_max_backoff_secs)?,
        );
        let headers = header_map(&self.headers)?;
        let auth = match &self.auth {
            None => Auth::None,
            Some(AuthConfig {
                user: Some(u),
                password,
                api_key: None,
            }) => Auth::Basic(u.clone(), password.clone()),
            Some(AuthConfig {
                user: None,
                password: None,
                api_key: Some(k),
            }) => Auth::ApiKey(k.clone()),
            Some(_) => return Err("`auth`: set either `user` (and `password`) or `api_key`".into()),
        };
        let client = build_client(self.tls.as_ref(), timeout)?;
        let dead_letter = match &self.dead_letter_file {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("`dead_letter_file` {}: {e}", p.display()))?;
                }
                Some(
                    OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(p)
                        .map_err(|e| format!("`dead_letter_file` {}: {e}", p.display()))?,
                )
            }
            None => None,
        };
        let mut bulk_url = Vec::new();
        for e in &endpoints {
            let mut q = reqwest::Url::parse("http://x/").map_err(|e| e.to_string())?;
            q.query_pairs_mut()
                .append_pair("filter_path", bulk::FILTER_PATH);
            if let Some(p) = &self.pipeline {
                q.query_pairs_mut().append_pair("pipeline", p);
            }
            bulk_url.push(format!("{e}/_bulk?{}", q.query().unwrap_or_default()));
        }
        let metrics = cx.metrics;
        let mut sender = Sender {
            outputs: cx.outputs,
            id: cx.id.clone(),
            client,
            endpoints,
            bulk_url,
            current: 0,
            auth,
            headers,
            gzip: self.compression == Compression::Gzip,
            action: match self.mode {
                Mode::Bulk => self.bulk_action,
                Mode::DataStream => BulkAction::Create,
            },
            backoff,
            max_retries: self.max_retries,
            dead_letter,
            metrics: metrics.clone(),
        };
        let mut encoder = Encoder {
            target,
            action: sender.action,
            data_stream: self.mode == Mode::DataStream,
            id_key,
            index_per_second: self.mode == Mode::Bulk && index_is_per_second(&self.index),
            version: self.api_version.map(|major| ClusterVersion {
                opensearch: false,
                major,
                minor: 0,
            }),
        };
        if self.healthcheck {
            match sender.healthcheck().await {
                Ok(v) => {
                    tracing::info!(component = %cx.id, version = %v, "cluster reachable");
                    if encoder.data_stream && !v.has_data_streams() {
                        return Err(format!(
                            "`mode = \"data_stream\"` needs Elasticsearch 7.9 or later, or OpenSearch; the cluster is {v}"
                        )
                        .into());
                    }
                    if self.api_version.is_none() {
                        encoder.version = Some(v);
                    }
                }
                Err(e) => {
                    tracing::warn!(component = %cx.id, "health check failed, starting anyway (requests are retried): {e}")
                }
            }
        }
        Ok(Box::new(EsSink {
            encoder,
            sender,
            batch: self.batch.clone(),
            batch_timeout,
            metrics,
        }))
    }

    fn input(&self) -> DataType {
        DataType::ALL
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::named(DEAD_LETTER_OUTPUT, DataType::LOG)]
    }

    fn check_environment(&self) -> Result<(), BoxError> {
        Ok(TlsClientConfig::check(self.tls.as_ref())?)
    }
}

/// The output refused documents are sent to (`inputs = ["my_es.dead_letter"]`).
pub const DEAD_LETTER_OUTPUT: &str = "dead_letter";

enum Target {
    Index(Template),
    DataStream(Template, Template, Template),
}

/// Whether an index template renders the same for every event within one second: only
/// time parts (no `{{ field }}`) and none finer than a second (`%f`, `%.3f`, `%+`...). The
/// sink then renders it once per second of event time instead of once per event.
fn index_is_per_second(template: &str) -> bool {
    if template.contains("{{") {
        return false;
    }
    let b = template.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            i += 1;
            // Flags, widths and the `.` of `%.3f`, then the specifier.
            while i < b.len() && matches!(b[i], b'-' | b'_' | b'0'..=b'9' | b'^' | b'#' | b'.') {
                if b[i] == b'.' {
                    return false;
                }
                i += 1;
            }
            if i < b.len() && matches!(b[i], b'f' | b'+') {
                return false;
            }
        }
        i += 1;
    }
    true
}

/// Strings reused from event to event while encoding.
#[derive(Default)]
struct Scratch {
    /// The index (or data stream) of the current event.
    index: String,
    /// A part of a data stream's name.
    part: String,
    /// The second of event time `index` was rendered for (per-second index templates).
    index_second: Option<i64>,
}

/// Events to documents: the index or data stream, the action line, the document.
struct Encoder {
    target: Target,
    action: BulkAction,
    data_stream: bool,
    id_key: Option<FieldPath>,
    /// See [`index_is_per_second`].
    index_per_second: bool,
    version: Option<ClusterVersion>,
}

struct EsSink {
    encoder: Encoder,
    sender: Sender,
    batch: BatchConfig,
    batch_timeout: Duration,
    metrics: Arc<ComponentMetrics>,
}

impl Encoder {
    /// Encodes `event` as an action line and a document line at the end of `buf`. Allocates
    /// nothing per event (the strings in `scratch` are reused).
    fn encode(
        &self,
        event: &Event,
        buf: &mut Vec<u8>,
        scratch: &mut Scratch,
    ) -> Result<(), String> {
        let start = buf.len();
        match &self.target {
            Target::Index(t) if self.index_per_second => {
                let second = event_time(event).timestamp();
                if scratch.index_second != Some(second) {
                    t.render_into(event, &mut scratch.index)
                        .map_err(|e| e.to_string())?;
                    scratch.index_second = Some(second);
                }
            }
            Target::Index(t) => t
                .render_into(event, &mut scratch.index)
                .map_err(|e| e.to_string())?,
            Target::DataStream(k, d, n) => {
                let part = &mut scratch.part;
                k.render_into(event, &mut scratch.index)
                    .map_err(|e| e.to_string())?;
                d.render_into(event, part).map_err(|e| e.to_string())?;
                scratch.index.push('-');
                scratch.index.push_str(part);
                n.render_into(event, part).map_err(|e| e.to_string())?;
                scratch.index.push('-');
                scratch.index.push_str(part);
            }
        }
        let id: Option<Cow<'_, str>> = match (&self.id_key, event) {
            (Some(k), Event::Log(l)) => match l.get(k) {
                Some(v @ (Value::Bytes(_) | Value::String(_))) => v.to_str_lossy(),
                Some(Value::Null) | None => None,
                Some(v) => Some(v.to_string_lossy()),
            },
            _ => None,
        };
        let doc_type = self.version.and_then(ClusterVersion::doc_type);
        write_action(buf, self.action, &scratch.index, id.as_deref(), doc_type);
        let doc_start = buf.len();
        let res = match event {
            Event::Log(l) => {
                let ts = (self.data_stream && l.get_field("@timestamp").is_none())
                    .then(|| event_time(event));
                write_document(buf, l.value(), ts)
            }
            // Metrics and spans in a data stream need an `@timestamp` too (rare: through
            // their JSON form).
            other if self.data_stream => {
                let mut v = other.to_json_value();
                if let Some(o) = v.as_object_mut() {
                    let ts = event_time(other).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
                    o.insert("@timestamp".into(), ts.into());
                }
                serde_json::to_writer(&mut *buf, &v)
            }
            Event::Metric(m) => serde_json::to_writer(&mut *buf, m),
            Event::Trace(t) => serde_json::to_writer(&mut *buf, t),
        };
        if let Err(e) = res {
            buf.truncate(start);
            return Err(format!("cannot encode the document: {e}"));
        }
        if buf.get(doc_start) != Some(&b'{') {
            buf.truncate(start);
            return Err("the event is not an object, so it is not a document".into());
        }
        buf.push(b'\n');
        Ok(())
    }
}

/// The batch being sent, which owns the sender until it is done.
type Sending = Pin<Box<dyn Future<Output = (Sender, Batch)> + Send>>;

#[async_trait]
impl Sink for EsSink {
    /// Encodes events into a batch while the previous batch is being sent (one request in
    /// flight, so the documents keep their order), and sends a batch when it is full, when
    /// `batch.timeout_secs` has passed since its first document, or at the end of input.
    /// While the sender is busy and the next batch is full, input waits: backpressure.
    async fn run(self: Box<Self>, mut input: SinkInput) -> Result<(), BoxError> {
        let EsSink {
            encoder,
            sender,
            batch: limits,
            batch_timeout,
            metrics,
        } = *self;
        // Whether dead letters go anywhere is fixed when the graph is built.
        let keep_events = sender.outputs.is_connected(DEAD_LETTER_OUTPUT);
        let mut idle = Some(sender);
        let mut sending: Option<Sending> = None;
        let mut building = Batch::default();
        let mut spare: Option<Batch> = None;
        let mut scratch = Scratch::default();
        let mut deadline: Option<Instant> = None;
        let mut open = true;
        let is_full =
            |b: &Batch| b.body.len() >= limits.max_bytes || b.items.len() >= limits.max_events;
        loop {
            let due = !building.items.is_empty()
                && (is_full(&building) || !open || deadline.is_some_and(|d| d <= Instant::now()));
            if due {
                if let Some(s) = idle.take() {
                    let next = spare.take().unwrap_or_default();
                    let batch = std::mem::replace(&mut building, next);
                    deadline = None;
                    sending = Some(Box::pin(s.flush(batch)));
                }
            }
            // After the swap above: the batch just handed over no longer stops the input
            // (taking it from before the swap would keep the input shut until the request
            // in flight is answered, so nothing would be encoded meanwhile).
            let full = is_full(&building);
            if !open && building.items.is_empty() && sending.is_none() {
                break;
            }
            tokio::select! {
                b = input.next(), if open && !full => match b {
                    Some(batch) => {
                        for event in batch {
                            let start = building.body.len();
                            match encoder.encode(&event, &mut building.body, &mut scratch) {
                                Ok(()) => building.items.push(Item::new(
                                    event,
                                    start..building.body.len(),
                                    keep_events,
                                )),
                                Err(e) => {
                                    metrics.error("encode", 1, &e);
                                    event.metadata().update_status(EventStatus::Rejected);
                                }
                            }
                        }
                        if !building.items.is_empty() && deadline.is_none() {
                            deadline = Some(Instant::now() + batch_timeout);
                        }
                    }
                    None => open = false,
                },
                (s, done) = async {
                    match sending.as_mut() {
                        Some(f) => f.await,
                        None => std::future::pending().await,
                    }
                }, if sending.is_some() => {
                    tracing::debug!(component = %s.id, full, "bulk batch done");
                    sending = None;
                    idle = Some(s);
                    spare = Some(done);
                }
                _ = sleep_until(deadline), if deadline.is_some() && idle.is_some() => {}
            }
        }
        if let Some(s) = &mut idle {
            s.flush_dead_letters();
        }
        Ok(())
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_versions() {
        let es8 = br#"{"name":"n","cluster_name":"c","version":{"number":"8.15.0","build_flavor":"default"},"tagline":"You Know, for Search"}"#;
        assert_eq!(
            parse_root(es8).unwrap(),
            ClusterVersion {
                opensearch: false,
                major: 8,
                minor: 15
            }
        );
        let os2 = br#"{"version":{"distribution":"opensearch","number":"2.11.0"}}"#;
        let v = parse_root(os2).unwrap();
        assert!(v.opensearch && v.major == 2 && v.doc_type().is_none());
        let es6 = br#"{"version":{"number":"6.8.23"}}"#;
        assert_eq!(parse_root(es6).unwrap().doc_type(), Some("_doc"));
        assert!(parse_root(b"nope").unwrap_err().contains("JSON"));
        let es78 = parse_root(br#"{"version":{"number":"7.8.1"}}"#).unwrap();
        assert!(!es78.has_data_streams() && es78.doc_type().is_none());
        assert!(parse_root(br#"{"version":{"number":"7.9.0"}}"#)
            .unwrap()
            .has_data_streams());
        assert!(v.has_data_streams());
        assert_eq!(v.to_string(), "OpenSearch 2.11");
        assert!(parse_root(br#"{"version":{"number":"x.1"}}"#).is_err());
        let es9 = parse_root(
            br#"{"version":{"number":"9.1.0","build_flavor":"default","lucene_version":"10.2.2"}}"#,
        )
        .unwrap();
        assert!(!es9.opensearch && es9.major == 9 && es9.doc_type().is_none());
        assert!(es9.has_data_streams());
    }

    #[test]
    fn per_second_index_templates() {
        assert!(index_is_per_second("weir-%Y.%m.%d"));
        assert!(index_is_per_second("logs-%Y-%m-%dT%H:%M:%S"));
        assert!(index_is_per_second("static"));
        assert!(!index_is_per_second("logs-{{ ns }}-%Y"));
        assert!(!index_is_per_second("x-%f"));
        assert!(!index_is_per_second("x-%.3f"));
        assert!(!index_is_per_second("x-%3f"));
        assert!(!index_is_per_second("x-%+"));
    }
}
