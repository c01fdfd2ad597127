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
//! `batch.max_events` is reached or `batch.timeout_secs` passes since the first one (the
//! toolkit's batching stage), then the body is POSTed to `<endpoint>/_bulk`, asking
//! (`filter_path`) for only the status and error of each item. `request.concurrency`
//! requests are in flight at once (default 1, which keeps the documents in order); the next
//! batch is encoded meanwhile (`send.rs`). The answer is parsed per item: successes are acknowledged, 429/5xx items are
//! sent again (only them) after a backoff, other failures (a 400
//! `mapper_parsing_exception`...) are counted, logged with the server's reason, sent as new log
//! events to the `dead_letter` output (when something reads it; the sink waits while its
//! consumer is full) and to the dead-letter file if one is set, and finalized as Rejected. A failed request (connection
//! error, 429, 5xx, a body that is not a bulk response) is retried whole, moving to the next
//! endpoint. The batch is held meanwhile, so the buffer fills and backpressure reaches the
//! sources: nothing is dropped unless `request.retry_attempts` is set.

pub mod bulk;
mod send;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use weir_pipeline::component::{Output, Sink, SinkConfig, SinkContext, SinkInput};
use weir_pipeline::config::{Concurrency, Count, Secret, Secs};
use weir_pipeline::event::{parse_path, Event, FieldPath, Value};
use weir_pipeline::finalization::EventStatus;
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::template::{event_time, Template};
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use crate::http::{build_client, header_map, snippet, ClientTls, TlsClientConfig};
use crate::toolkit::batch::{self, BatchLimits};
use crate::toolkit::{BatchConfig, BatchDefaults, RequestConfig, RequestDefaults};
pub use bulk::BulkAction;
use bulk::{write_action, write_document};
use send::{Auth, Batch, Item, Sender};

/// How documents are written.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Into `index`, with `bulk_action`.
    #[default]
    Bulk,
    /// Into the data stream `<type>-<dataset>-<namespace>`, always `create`, with `@timestamp`.
    DataStream,
}

/// `data_stream`: the three parts of the data stream's name (each a template).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DataStreamConfig {
    /// The type part of the name (a template). Default: `logs`.
    #[serde(default = "default_ds_type", rename = "type")]
    pub kind: String,
    /// The dataset part (a template). Default: `generic`.
    #[serde(default = "default_ds_dataset")]
    pub dataset: String,
    /// The namespace part (a template). Default: `default`.
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
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Basic authentication user. Default: none.
    #[serde(default)]
    pub user: Option<String>,
    /// Basic authentication password. Default: none.
    #[serde(default)]
    pub password: Option<Secret>,
    /// An API key (the base64 `encoded` value Elasticsearch returns for `id:api_key`), sent as
    /// `Authorization: ApiKey …`. Not together with `user`. Default: none.
    #[serde(default)]
    pub api_key: Option<Secret>,
}

/// The elasticsearch sink's `batch` defaults: 10000 documents, 10000000 bytes of NDJSON
/// body (before compression), 1 second.
#[derive(Debug)]
pub struct EsBatch;

impl BatchDefaults for EsBatch {
    const MAX_EVENTS: Count = Count::of(10_000);
    const MAX_BYTES: Count = Count::of(10_000_000);
    const TIMEOUT: Secs = Secs::from_secs(1);
}

/// The elasticsearch sink's `request` defaults: one request in flight (documents keep their
/// order), 60 seconds per request, retries from 0.1 to 30 seconds apart, forever.
#[derive(Debug)]
pub struct EsRequest;

impl RequestDefaults for EsRequest {
    const CONCURRENCY: Concurrency = Concurrency::of(1);
    const TIMEOUT: Secs = Secs::from_secs(60);
}

fn default_index() -> String {
    "weir-%Y.%m.%d".into()
}
fn default_true() -> bool {
    true
}

/// Request body compression.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

/// `type = "elasticsearch"`: see the module docs.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// Base URLs of the cluster's nodes (`http://es-1:9200`, `https://es:9200/prefix`). Requests go
    /// to the current one; after a connection error, a 429 or a 5xx the next one is used (failover,
    /// round robin). Required, at least one.
    pub endpoints: Vec<String>,
    /// How documents are written. Default: `bulk`.
    #[serde(default)]
    pub mode: Mode,
    /// `bulk` mode: the action of each document. Default: `index`.
    #[serde(default = "default_action")]
    pub bulk_action: BulkAction,
    /// `bulk` mode: the index, a template with `{{ field.path }}` parts and strftime parts from the
    /// event's time, e.g. `logs-{{ kubernetes.namespace }}-%Y.%m.%d`. See
    /// [templates](file.md#path-templates). Default: `weir-%Y.%m.%d`.
    #[serde(default = "default_index")]
    pub index: String,
    /// `data_stream` mode: the three parts of the data stream's name, each a template. Default:
    /// `logs-generic-default`.
    #[serde(default)]
    pub data_stream: DataStreamConfig,
    /// A field (path) whose value becomes the document `_id`, so that a retry does not index a
    /// document twice. Events without the field get an id assigned by Elasticsearch. Default: none
    /// (Elasticsearch assigns ids).
    #[serde(default)]
    pub id_key: Option<String>,
    /// An ingest pipeline to run the documents through (`?pipeline=`). Default: none.
    #[serde(default)]
    pub pipeline: Option<String>,
    /// Compression of the request body (`Content-Encoding: gzip`): `none` or `gzip`. Default:
    /// `none`.
    #[serde(default)]
    pub compression: Compression,
    /// Authentication: `user` and `password` (basic), or `api_key`, not both. Default: none.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// TLS for `https://` endpoints (`ca_file`, `crt_file`, `key_file`,
    /// `verify_certificate`, `verify_hostname`, `server_name`: the `tls` table shared by every
    /// component, see docs/configuration.md). Default: the built-in (webpki) roots.
    #[serde(default)]
    pub tls: Option<TlsClientConfig>,
    /// Extra HTTP headers on every request. Default: none.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Send the credentials (`auth`, and `headers` that carry them: `authorization`, `*key*`, `*token*`) over a connection without TLS. Default: false: a
    /// component with credentials and a plain `http://` endpoint does not start.
    #[serde(default)]
    pub allow_plaintext_credentials: bool,
    /// When a bulk request is sent: `max_events` documents (default 10000), `max_bytes` of
    /// NDJSON body before compression (default 10000000), `timeout_secs` after the first
    /// waiting document (default 1).
    #[serde(default)]
    pub batch: BatchConfig<EsBatch>,
    /// How bulk requests are sent: `concurrency` (default 1: documents keep their order),
    /// `timeout_secs` (default 60), `retry_initial_backoff_secs` (default 0.1),
    /// `retry_max_duration_secs` (default 30), `retry_attempts` (default: unset, retry
    /// until delivered; a document given up is finalized as errored, counted and
    /// dead-lettered).
    /// `retry_statuses` and `reject_statuses` (default: none) change which HTTP statuses
    /// are retried (401, 403, 404, 407, 408, 429, 5xx), split (413) or rejected (other 4xx).
    #[serde(default)]
    pub request: RequestConfig<EsRequest>,
    /// `GET /` at start: logs the cluster's version and uses it (see below). A failed check is
    /// logged and the sink starts anyway. Default: true.
    #[serde(default = "default_true")]
    pub healthcheck: bool,
    /// The Elasticsearch major version to assume instead of detecting it (6 adds `_type: _doc` to
    /// actions). Default: detected, else 8.
    #[serde(default)]
    pub api_version: Option<u32>,
    /// A file where refused documents are appended as JSON lines
    /// `{"status":400,"reason":"…","action":{…},"document":{…}}` (see below), besides the
    /// `dead_letter` output. Default: none.
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
        let timeout = self.request.timeout();
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
        if !matches!(auth, Auth::None) || weir_connect::http::carries_credentials(&self.headers) {
            weir_connect::plaintext_credentials(
                "`auth` (or a credential in `headers`)",
                &self.endpoints.join(", "),
                self.endpoints.iter().all(|e| e.starts_with("https://")),
                self.allow_plaintext_credentials,
            )?;
        }
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
            dead_letter_connected: cx.outputs.is_connected(DEAD_LETTER_OUTPUT),
            outputs: tokio::sync::Mutex::new(cx.outputs),
            id: cx.id.clone(),
            client,
            endpoints,
            bulk_url,
            current: std::sync::atomic::AtomicUsize::new(0),
            auth,
            headers,
            gzip: self.compression == Compression::Gzip,
            action: match self.mode {
                Mode::Bulk => self.bulk_action,
                Mode::DataStream => BulkAction::Create,
            },
            request: self.request.clone(),
            dead_letter: std::sync::Mutex::new(dead_letter),
            policy: self.request.policy(),
            reporter: crate::toolkit::FailureReporter::new(metrics.clone()),
            stop: cx.stop.clone(),
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
            keep_events: sender.dead_letter_connected,
            encoder,
            sender: Arc::new(sender),
            limits: self.batch.limits(),
            concurrency: self.request.concurrency(),
            scratch: Scratch::default(),
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
    sender: Arc<Sender>,
    limits: BatchLimits,
    concurrency: usize,
    scratch: Scratch,
    /// Whether dead letters go anywhere (fixed when the graph is built): items keep their
    /// event only then.
    keep_events: bool,
    metrics: Arc<ComponentMetrics>,
}

impl batch::Encoder for EsSink {
    type Batch = Batch;

    fn encode(&mut self, mut event: Event, building: &mut Batch) {
        let start = building.body.len();
        match self
            .encoder
            .encode(&event, &mut building.body, &mut self.scratch)
        {
            Ok(()) => building.items.push(Item::new(
                event,
                start..building.body.len(),
                self.keep_events,
            )),
            Err(e) => {
                self.metrics.error("encode", 1, &e);
                event.finalize(EventStatus::Rejected);
            }
        }
    }

    fn events(b: &Batch) -> usize {
        b.items.len()
    }

    fn bytes(b: &Batch) -> usize {
        b.body.len()
    }
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

#[async_trait]
impl Sink for EsSink {
    /// The toolkit's batching stage: encodes events into a batch while earlier batches are
    /// being sent (`request.concurrency` at once; with 1, the documents keep their order),
    /// and sends a batch when it is full, when `batch.timeout_secs` has passed since its
    /// first document, or at the end of input.
    async fn run(mut self: Box<Self>, mut input: SinkInput) -> Result<(), BoxError> {
        let sender = Arc::clone(&self.sender);
        let (limits, concurrency) = (self.limits, self.concurrency);
        batch::run(&mut input, limits, concurrency, &mut *self, |b| {
            Arc::clone(&sender).flush(b)
        })
        .await;
        sender.flush_dead_letters();
        Ok(())
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
