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
//! The loop: events are encoded into one NDJSON body (action line + document line each) until
//! `batch.max_bytes` or `batch.max_events` is reached or `batch.timeout_secs` passes since the
//! first one, then the body is POSTed to `<endpoint>/_bulk`. The answer is parsed per item:
//! successes are acknowledged, 429/5xx items are sent again (only them) after a backoff,
//! other failures (a 400 `mapper_parsing_exception`...) are counted, logged with the
//! server's reason, written to the dead-letter file if one is set, and finalized as Rejected.
//! A failed request (connection error, 429, 5xx, a body that is not a bulk response) is
//! retried whole, moving to the next endpoint. The batch is held meanwhile, so the buffer
//! fills and backpressure reaches the sources: nothing is dropped unless `max_retries` is set.

pub mod bulk;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use weir_pipeline::component::{Sink, SinkConfig, SinkContext, SinkInput};
use weir_pipeline::config::DataType;
use weir_pipeline::event::{parse_path, Event, FieldPath, Value};
use weir_pipeline::finalization::EventStatus;
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::retry::Backoff;
use weir_pipeline::template::{event_time, Template};
use weir_pipeline::BoxError;

use crate::http::{
    build_client, gzip, header_map, positive_secs as secs, retriable_status, retry_after, snippet,
    TlsConfig,
};
pub use bulk::BulkAction;
use bulk::{parse_response, write_action, ItemOutcome};

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
    /// TLS for `https://` endpoints. Default: the built-in roots.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
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
    /// `{"status":400,"reason":"…","action":{…},"document":{…}}`. Default: none (counted and
    /// logged only).
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
}

impl ClusterVersion {
    /// Elasticsearch 6 and older want a `_type` on every action.
    fn doc_type(self) -> Option<&'static str> {
        (!self.opensearch && self.major < 7).then_some("_doc")
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
    let major = number
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .ok_or_else(|| format!("`GET /`: version.number `{number}` is not a version"))?;
    Ok(ClusterVersion {
        opensearch: ver["distribution"].as_str() == Some("opensearch"),
        major,
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
        let client = build_client(self.tls.as_ref(), timeout, false)?;
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
            let mut u = format!("{e}/_bulk");
            if let Some(p) = &self.pipeline {
                let mut q = reqwest::Url::parse("http://x/").map_err(|e| e.to_string())?;
                q.query_pairs_mut().append_pair("pipeline", p);
                u.push('?');
                u.push_str(q.query().unwrap_or_default());
            }
            bulk_url.push(u);
        }
        let mut sink = EsSink {
            client,
            endpoints,
            bulk_url,
            current: 0,
            auth,
            headers,
            target,
            action: match self.mode {
                Mode::Bulk => self.bulk_action,
                Mode::DataStream => BulkAction::Create,
            },
            data_stream: self.mode == Mode::DataStream,
            id_key,
            gzip: self.compression == Compression::Gzip,
            batch: self.batch.clone(),
            batch_timeout,
            backoff,
            max_retries: self.max_retries,
            version: self.api_version.map(|major| ClusterVersion {
                opensearch: false,
                major,
            }),
            dead_letter,
            metrics: cx.metrics,
        };
        if self.healthcheck {
            match sink.healthcheck().await {
                Ok(v) => {
                    tracing::info!(component = %cx.id, opensearch = v.opensearch, major = v.major, "cluster reachable");
                    if sink.data_stream && !v.opensearch && v.major < 7 {
                        return Err(format!(
                            "`mode = \"data_stream\"` needs Elasticsearch 7.9 or later; the cluster is {}",
                            v.major
                        )
                        .into());
                    }
                    if self.api_version.is_none() {
                        sink.version = Some(v);
                    }
                }
                Err(e) => {
                    tracing::warn!(component = %cx.id, "health check failed, starting anyway (requests are retried): {e}")
                }
            }
        }
        Ok(Box::new(sink))
    }

    fn input(&self) -> DataType {
        DataType::ALL
    }
}

enum Auth {
    None,
    Basic(String, Option<String>),
    ApiKey(String),
}

enum Target {
    Index(Template),
    DataStream(Template, Template, Template),
}

/// One document of the batch being built: its event (for finalization) and its two lines in
/// the body.
struct Item {
    event: Event,
    range: Range<usize>,
}

struct EsSink {
    client: reqwest::Client,
    endpoints: Vec<String>,
    bulk_url: Vec<String>,
    current: usize,
    auth: Auth,
    headers: reqwest::header::HeaderMap,
    target: Target,
    action: BulkAction,
    data_stream: bool,
    id_key: Option<FieldPath>,
    gzip: bool,
    batch: BatchConfig,
    batch_timeout: Duration,
    backoff: (Duration, Duration),
    max_retries: Option<u32>,
    version: Option<ClusterVersion>,
    dead_letter: Option<File>,
    metrics: Arc<ComponentMetrics>,
}

/// How one request went.
enum Sent {
    /// A bulk response, one outcome per document.
    Items(Vec<ItemOutcome>),
    /// Try the whole request again (connection error, 429, 5xx, unusable response).
    Retry(String, Option<Duration>),
    /// The whole request was refused (400, 401, 413...): the reason.
    Refused(u16, String),
}

impl EsSink {
    fn request(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self
            .client
            .request(method, url)
            .headers(self.headers.clone());
        match &self.auth {
            Auth::None => r,
            Auth::Basic(u, p) => r.basic_auth(u, p.as_ref()),
            Auth::ApiKey(k) => r.header(reqwest::header::AUTHORIZATION, format!("ApiKey {k}")),
        }
    }

    /// `GET /` on each endpoint until one answers.
    async fn healthcheck(&mut self) -> Result<ClusterVersion, String> {
        let mut errors = Vec::new();
        for i in 0..self.endpoints.len() {
            let idx = (self.current + i) % self.endpoints.len();
            let url = format!("{}/", self.endpoints[idx]);
            let res = self
                .request(reqwest::Method::GET, &url)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            match res {
                Ok(r) if r.status().is_success() => {
                    let body = r.bytes().await.map_err(|e| format!("{url}: {e}"))?;
                    self.current = idx;
                    return parse_root(&body).map_err(|e| format!("{url}: {e}"));
                }
                Ok(r) => errors.push(format!("{url}: HTTP {}", r.status())),
                Err(e) => errors.push(format!("{url}: {e}")),
            }
        }
        Err(errors.join("; "))
    }

    /// Encodes `event` as an action line and a document line at the end of `buf`.
    fn encode(&self, event: &Event, buf: &mut Vec<u8>, scratch: &mut String) -> Result<(), String> {
        let start = buf.len();
        match &self.target {
            Target::Index(t) => t.render_into(event, scratch).map_err(|e| e.to_string())?,
            Target::DataStream(k, d, n) => {
                let mut s = String::new();
                k.render_into(event, scratch).map_err(|e| e.to_string())?;
                d.render_into(event, &mut s).map_err(|e| e.to_string())?;
                scratch.push('-');
                scratch.push_str(&s);
                n.render_into(event, &mut s).map_err(|e| e.to_string())?;
                scratch.push('-');
                scratch.push_str(&s);
            }
        }
        let id = match (&self.id_key, event) {
            (Some(k), Event::Log(l)) => match l.get(k) {
                Some(v @ (Value::Bytes(_) | Value::String(_))) => {
                    v.to_str_lossy().map(|s| s.into_owned())
                }
                Some(Value::Null) | None => None,
                Some(v) => Some(v.to_string_lossy().into_owned()),
            },
            _ => None,
        };
        let doc_type = self.version.and_then(ClusterVersion::doc_type);
        write_action(buf, self.action, scratch, id.as_deref(), doc_type);
        let doc_start = buf.len();
        let res = match event {
            Event::Log(l) => serde_json::to_writer(&mut *buf, l.value()),
            other => serde_json::to_writer(&mut *buf, &other.to_json_value()),
        };
        if let Err(e) = res {
            buf.truncate(start);
            return Err(format!("cannot encode the document: {e}"));
        }
        if buf.get(doc_start) != Some(&b'{') {
            buf.truncate(start);
            return Err("the event is not an object, so it is not a document".into());
        }
        if self.data_stream
            && event
                .as_log()
                .is_none_or(|l| l.get_field("@timestamp").is_none())
        {
            // Splice `"@timestamp":"…",` in after the opening brace.
            let ts = event_time(event).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            let mut ins = Vec::with_capacity(ts.len() + 16);
            ins.extend_from_slice(b"\"@timestamp\":");
            let _ = serde_json::to_writer(&mut ins, &ts);
            if buf.len() > doc_start + 2 {
                ins.push(b',');
            }
            buf.splice(doc_start + 1..doc_start + 1, ins);
        }
        buf.push(b'\n');
        Ok(())
    }

    /// Sends one body to the current endpoint.
    async fn send(&mut self, body: &[u8], count: usize) -> Sent {
        let url = self.bulk_url[self.current].clone();
        let payload = if self.gzip { gzip(body) } else { body.to_vec() };
        let mut req = self
            .request(reqwest::Method::POST, &url)
            .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson");
        if self.gzip {
            req = req.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        let len = payload.len() as u64;
        let resp = match req.body(payload).send().await {
            Ok(r) => r,
            Err(e) => {
                self.rotate();
                return Sent::Retry(format!("POST {url}: {}", error_chain(&e)), None);
            }
        };
        let status = resp.status().as_u16();
        let after = retry_after(resp.headers(), self.backoff.1);
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => {
                self.rotate();
                return Sent::Retry(
                    format!("POST {url}: reading the response: {}", error_chain(&e)),
                    None,
                );
            }
        };
        self.metrics.add_sent_bytes(len);
        if (200..300).contains(&status) {
            return match parse_response(&body, count, self.action == BulkAction::Create) {
                Ok(o) => Sent::Items(o),
                Err(e) => {
                    self.metrics.error(
                        "bulk_response",
                        1,
                        &format_args!("POST {url}: {e}; the documents will be sent again"),
                    );
                    Sent::Retry(format!("POST {url}: unusable bulk response"), None)
                }
            };
        }
        let msg = format!("POST {url}: HTTP {status}: {}", snippet(&body, 300));
        if retriable_status(status) {
            self.rotate();
            Sent::Retry(msg, after)
        } else {
            Sent::Refused(status, msg)
        }
    }

    fn rotate(&mut self) {
        self.current = (self.current + 1) % self.endpoints.len();
    }

    /// Writes a refused document to the dead-letter file.
    fn dead_letter(&mut self, status: u16, reason: &str, lines: &[u8]) {
        let Some(f) = &mut self.dead_letter else {
            return;
        };
        let lines = lines.strip_suffix(b"\n").unwrap_or(lines);
        let (action, doc) = match memchr::memchr(b'\n', lines) {
            Some(i) => (&lines[..i], &lines[i + 1..]),
            None => (lines, &b"null"[..]),
        };
        let mut out = Vec::with_capacity(lines.len() + reason.len() + 64);
        out.extend_from_slice(b"{\"status\":");
        out.extend_from_slice(status.to_string().as_bytes());
        out.extend_from_slice(b",\"reason\":");
        let _ = serde_json::to_writer(&mut out, reason);
        out.extend_from_slice(b",\"action\":");
        out.extend_from_slice(action);
        out.extend_from_slice(b",\"document\":");
        out.extend_from_slice(doc);
        out.extend_from_slice(b"}\n");
        if let Err(e) = f.write_all(&out) {
            self.metrics.error(
                "dead_letter",
                1,
                &format_args!("cannot write to the dead-letter file: {e}"),
            );
        }
    }

    /// Sends `items` (encoded in `buf`) until each is delivered or refused.
    async fn flush(&mut self, buf: &mut Vec<u8>, items: &mut Vec<Item>) {
        let mut backoff = Backoff::new(self.backoff.0, self.backoff.1);
        let mut attempts = 0u32;
        while !items.is_empty() {
            attempts += 1;
            let outcome = self.send(buf, items.len()).await;
            let give_up = self.max_retries.is_some_and(|m| attempts > m);
            let delay = match outcome {
                Sent::Items(outcomes) => {
                    let mut keep = Vec::new();
                    let mut delivered = 0u64;
                    let mut retry_reason = None;
                    for (item, o) in std::mem::take(items).into_iter().zip(outcomes) {
                        match o {
                            ItemOutcome::Ok => delivered += 1,
                            ItemOutcome::Retry(r) if !give_up => {
                                retry_reason.get_or_insert(r);
                                keep.push(item);
                            }
                            ItemOutcome::Retry(r) => {
                                self.give_up(&item, buf, &r, attempts);
                            }
                            ItemOutcome::Rejected { status, reason } => {
                                self.metrics.error(
                                    "rejected",
                                    1,
                                    &format_args!(
                                        "document refused (HTTP {status}), not retried: {reason}"
                                    ),
                                );
                                self.dead_letter(status, &reason, &buf[item.range.clone()]);
                                item.event.metadata().update_status(EventStatus::Rejected);
                            }
                        }
                    }
                    self.metrics.add_sent(delivered);
                    if keep.is_empty() {
                        items.clear();
                        buf.clear();
                        return;
                    }
                    self.metrics.add_counter(
                        "elasticsearch_retried_documents_total",
                        None,
                        keep.len() as u64,
                    );
                    self.metrics.error(
                        "retry",
                        1,
                        &format_args!(
                            "{} document(s) refused for now ({}), sending them again",
                            keep.len(),
                            retry_reason.unwrap_or_default()
                        ),
                    );
                    let mut nbuf = Vec::with_capacity(buf.len());
                    for it in &mut keep {
                        let start = nbuf.len();
                        nbuf.extend_from_slice(&buf[it.range.clone()]);
                        it.range = start..nbuf.len();
                    }
                    *buf = nbuf;
                    *items = keep;
                    None
                }
                Sent::Retry(msg, after) => {
                    self.metrics
                        .error("request", 1, &format_args!("{msg}; retrying"));
                    if give_up {
                        for it in std::mem::take(items) {
                            self.give_up(&it, buf, &msg, attempts);
                        }
                        buf.clear();
                        return;
                    }
                    after
                }
                Sent::Refused(status, msg) => {
                    self.metrics.error(
                        "rejected",
                        items.len() as u64,
                        &format_args!("{} document(s) refused: {msg}", items.len()),
                    );
                    for it in std::mem::take(items) {
                        self.dead_letter(status, &msg, &buf[it.range.clone()]);
                        it.event.metadata().update_status(EventStatus::Rejected);
                    }
                    buf.clear();
                    return;
                }
            };
            let d = backoff.next_delay();
            tokio::time::sleep(delay.map_or(d, |a| a.max(d))).await;
        }
        buf.clear();
    }

    fn give_up(&mut self, item: &Item, buf: &[u8], reason: &str, attempts: u32) {
        self.metrics.error(
            "gave_up",
            1,
            &format_args!("giving up on a document after {attempts} attempts: {reason}"),
        );
        self.dead_letter(0, reason, &buf[item.range.clone()]);
        item.event.metadata().update_status(EventStatus::Errored);
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[async_trait]
impl Sink for EsSink {
    async fn run(mut self: Box<Self>, mut input: SinkInput) -> Result<(), BoxError> {
        let mut buf: Vec<u8> = Vec::new();
        let mut items: Vec<Item> = Vec::new();
        let mut scratch = String::new();
        let mut deadline: Option<Instant> = None;
        let mut open = true;
        while open || !items.is_empty() {
            let flush_now = tokio::select! {
                b = input.next(), if open => match b {
                    Some(batch) => {
                        for event in batch {
                            let start = buf.len();
                            match self.encode(&event, &mut buf, &mut scratch) {
                                Ok(()) => items.push(Item { event, range: start..buf.len() }),
                                Err(e) => {
                                    self.metrics.error("encode", 1, &e);
                                    event.metadata().update_status(EventStatus::Rejected);
                                }
                            }
                        }
                        if !items.is_empty() && deadline.is_none() {
                            deadline = Some(Instant::now() + self.batch_timeout);
                        }
                        buf.len() >= self.batch.max_bytes || items.len() >= self.batch.max_events
                    }
                    None => {
                        open = false;
                        true
                    }
                },
                _ = sleep_until(deadline) => true,
            };
            if flush_now && !items.is_empty() {
                deadline = None;
                self.flush(&mut buf, &mut items).await;
            }
        }
        if let Some(f) = &mut self.dead_letter {
            let _ = f.flush();
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
                major: 8
            }
        );
        let os2 = br#"{"version":{"distribution":"opensearch","number":"2.11.0"}}"#;
        let v = parse_root(os2).unwrap();
        assert!(v.opensearch && v.major == 2 && v.doc_type().is_none());
        let es6 = br#"{"version":{"number":"6.8.23"}}"#;
        assert_eq!(parse_root(es6).unwrap().doc_type(), Some("_doc"));
        assert!(parse_root(b"nope").unwrap_err().contains("JSON"));
    }
}
