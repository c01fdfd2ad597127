//! Configuration: loading TOML files into a [`Config`], and validating its graph.
//!
//! ```toml
//! data_dir = "./weir-data"
//! [api]
//! address = "127.0.0.1:8686"
//! [sources.in]
//! type = "my_source"
//! [transforms.parse]
//! type = "my_transform"
//! inputs = ["in"]
//! [sinks.out]
//! type = "my_sink"
//! inputs = ["parse"]
//! ```
//!
//! Every error names the file, line and column, the component and the field, and suggests the
//! nearest valid name. [`load`] collects all errors it can find instead of stopping at the first.

mod client;
mod error;
mod graph;
mod interpolate;
pub mod listener;
mod load;
mod redact;
pub mod schema;
mod secret;
mod unit_test;
mod units;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use client::{NatsAuthConfig, TlsClientConfig};
pub use error::{ConfigError, ConfigErrors, Location};
pub use graph::{resolve_graph, resolve_graph_holding, tcp_ports, Graph, OutputId};
pub use interpolate::interpolate;
pub use listener::{ServerAuthConfig, ServerAuthStrategy, TlsServerConfig};
pub use load::{load_files, load_str, ConfigSource};
pub use redact::{RedactError, Redactor};
pub use secret::{Secret, REDACTED};
pub use unit_test::{
    ExtractFrom, Located, TestCondition, TestConditionType, TestInput, TestInputType, TestOutput,
    UnitTest,
};
pub use units::{Concurrency, Count, Secs, SecsOrZero, MAX_CONCURRENCY, MAX_SECS};

use crate::component::{SinkConfig, SourceConfig, TransformConfig};
use crate::vocabulary::{ComponentKind, OnFailure, WhenFull};

/// `[api]`: Weir's own HTTP API (`/health`, `/metrics`, `/api/graph`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Serve the API. Default: `true`.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Listen address. Default: `127.0.0.1:8686` (loopback only; set `0.0.0.0:8686` for a
    /// health probe from outside the pod's network namespace).
    #[serde(default = "default_api_address")]
    pub address: SocketAddr,
    /// Serve HTTPS: `crt_file` and `key_file` (required), `ca_file` to require client
    /// certificates signed by it (mutual TLS); the `tls` table shared by every server, see
    /// docs/configuration.md. Default: none (plain HTTP).
    #[serde(default)]
    pub tls: Option<TlsServerConfig>,
    /// Require a token: `auth.strategy = "bearer"` and `auth.token`. Requests without it
    /// are answered 401 (`/health` too when `health_requires_auth`). Default: none (no
    /// authentication).
    #[serde(default)]
    pub auth: Option<ServerAuthConfig>,
    /// With `auth`: `/health` needs the token too. Default: `false` (a kubelet probe sends
    /// no token; `/health` tells only whether the components run).
    #[serde(default)]
    pub health_requires_auth: bool,
    /// The most connections served at once; more wait (in the kernel's accept queue)
    /// until one closes. Default: 64.
    #[serde(default = "default_small_connections")]
    pub max_connections: Count,
    /// A connection with no request in progress is closed after this many seconds without
    /// a new request (for HTTP/1.1 this also bounds the time to send a request's headers).
    /// Default: 60.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: Secs,
    /// A request's body must arrive whole within this many seconds of its headers.
    /// Default: 30.
    #[serde(default = "default_request_read_timeout")]
    pub request_read_timeout_secs: Secs,
    /// Serve the same API over NATS request/reply as well (`[api.nats]`, see docs/api.md):
    /// for agents that cannot be reached but can reach a NATS server. Served whether or not
    /// `enabled` (which is about the HTTP listener). Default: none.
    #[serde(default)]
    pub nats: Option<ApiNatsConfig>,
}

impl ApiConfig {
    /// Whether the API is served at all: over HTTP (`enabled`) or over NATS (`[api.nats]`).
    pub fn serves(&self) -> bool {
        self.enabled || self.nats.is_some()
    }
}

/// `[api.nats]`: the API over NATS request/reply. A request to `weir.<node>.api.<name>` is
/// answered as the HTTP API answers `/api/<name>` (`health` and `metrics`: `/health`,
/// `/metrics`); authorization is the NATS server's, by subject (docs/api.md).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiNatsConfig {
    /// Server URL(s), comma separated: `nats://127.0.0.1:4222`, `tls://nats.example:4222`.
    pub url: String,
    /// This agent's name in the subjects (`weir.<node>.api.>`), as one subject token: `.`,
    /// `*`, `>` and whitespace are replaced by `_` (`weir tap --node` does the same). Default:
    /// the host name (in Kubernetes, set it from the node name: `node = "${NODE_NAME}"`).
    #[serde(default)]
    pub node: Option<String>,
    /// How to authenticate to the NATS server (`user`/`password`, `token`, `nkey_seed` or
    /// `credentials_file`), as the `nats` source and sink do. Default: none.
    #[serde(default)]
    pub auth: NatsAuthConfig,
    /// TLS to the NATS server: the `tls` table shared by every client (docs/configuration.md).
    /// Default: off (on for `tls://` URLs, or when a `tls` option is set).
    #[serde(default)]
    pub tls: Option<TlsClientConfig>,
    /// Send the credentials (`auth.password`, `auth.token`) over a connection without TLS.
    /// Default: false.
    #[serde(default)]
    pub allow_plaintext_credentials: bool,
    /// The connection name the NATS server shows. Default: `weir-api-<node>`.
    #[serde(default)]
    pub connection_name: Option<String>,
    /// The most requests served at once (a tap counts until it ends); more are answered
    /// 503. Default: 64.
    #[serde(default = "default_small_connections")]
    pub max_requests: Count,
}

fn default_true() -> bool {
    true
}

fn default_api_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8686))
}

/// The default `max_connections` of the API and `prometheus_exporter`.
pub fn default_small_connections() -> Count {
    Count::of(listener::DEFAULT_SMALL_SERVER_CONNECTIONS)
}

/// The default `idle_timeout_secs` of every server.
pub fn default_idle_timeout() -> Secs {
    Secs::from_secs(listener::DEFAULT_IDLE_TIMEOUT_SECS)
}

/// The default `request_read_timeout_secs` of every server.
pub fn default_request_read_timeout() -> Secs {
    Secs::from_secs(listener::DEFAULT_REQUEST_READ_TIMEOUT_SECS)
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            address: default_api_address(),
            tls: None,
            auth: None,
            health_requires_auth: false,
            max_connections: default_small_connections(),
            idle_timeout_secs: default_idle_timeout(),
            request_read_timeout_secs: default_request_read_timeout(),
            nats: None,
        }
    }
}

/// A sink's input buffer (`[sinks.ID.buffer]`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BufferConfig {
    /// The buffer kind: `memory`, or `disk` (under `data_dir/buffers/<sink id>/`, kept across
    /// restarts; see docs/configuration.md#disk-buffers). Default: `memory`.
    #[serde(default = "default_buffer_type", rename = "type")]
    pub kind: BufferType,
    /// Capacity in events (not batches). It must be at least 1. A batch larger than the capacity
    /// takes the whole buffer. A disk buffer is bounded by `max_size` only. Default: 2000.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Capacity in bytes. In memory, as estimated from the events (their strings plus a small
    /// overhead per field, see docs/configuration.md#memory): the buffer is full when it holds
    /// `max_events` events or `max_size` bytes, whichever comes first; from 1 to 4294967295
    /// (4 GiB). On disk, the bytes of its segment files; at least 262144 (256 KiB), and an
    /// event larger than an eighth of it (at most 128 MiB) is refused. A batch larger than the
    /// capacity takes the whole buffer when it is empty. Default: 16777216 (16 MiB).
    #[serde(default = "default_max_size")]
    pub max_size: usize,
    /// What a full buffer does. Default: `block`.
    #[serde(default)]
    pub when_full: WhenFull,
    /// Disk buffers: when writes are synced to disk. `batch`: every batch is synced before it
    /// is acknowledged to its source (a power loss loses nothing acknowledged); one sync
    /// covers every batch written while the previous sync ran (group commit); `interval`: every
    /// `fsync_interval_secs` (a power loss can lose what was written in the last interval, though
    /// its sources were told it was kept). A crash of Weir alone loses nothing either way.
    /// Default: `batch`.
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// Disk buffers with `fsync = "interval"`: seconds between syncs. Default: 1.
    #[serde(default = "default_fsync_interval")]
    pub fsync_interval_secs: Secs,
}

/// The kind of a sink buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BufferType {
    /// Batches held in memory.
    Memory,
    /// Batches written to segment files under `data_dir/buffers/<sink id>/`.
    Disk,
}

/// When a disk buffer syncs its writes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// After every batch, before the batch is acknowledged.
    #[default]
    Batch,
    /// Every `fsync_interval_secs`.
    Interval,
}

fn default_fsync_interval() -> Secs {
    Secs::from_secs(1)
}

fn default_buffer_type() -> BufferType {
    BufferType::Memory
}

/// The default capacity of a sink buffer, in events.
pub const DEFAULT_BUFFER_EVENTS: usize = 2000;
/// The capacity of a transform's input queue, in events.
pub const TRANSFORM_QUEUE_EVENTS: usize = 2000;
/// The default capacity of a sink buffer, in estimated bytes: 16 MiB.
pub const DEFAULT_BUFFER_BYTES: usize = 16 << 20;
/// The capacity of a transform's input queue, in estimated bytes: 16 MiB.
pub const TRANSFORM_QUEUE_BYTES: usize = 16 << 20;

fn default_max_events() -> usize {
    DEFAULT_BUFFER_EVENTS
}

fn default_max_size() -> usize {
    DEFAULT_BUFFER_BYTES
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            kind: BufferType::Memory,
            max_events: DEFAULT_BUFFER_EVENTS,
            max_size: DEFAULT_BUFFER_BYTES,
            when_full: WhenFull::Block,
            fsync: FsyncPolicy::Batch,
            fsync_interval_secs: default_fsync_interval(),
        }
    }
}

/// An `inputs` entry as written, with where it was written.
#[derive(Debug, Clone)]
pub struct InputRef {
    /// The entry, as written (`id` or `id.output`).
    pub text: String,
    /// Where it was written.
    pub location: Location,
}

/// A source of the configuration, parsed.
#[derive(Debug)]
pub struct SourceEntry {
    /// A digest of its table as parsed: a reload rebuilds the component when it changes.
    pub fingerprint: u64,
    /// Its `type`.
    pub type_name: String,
    /// Its options.
    pub config: Box<dyn SourceConfig>,
    /// Whether it holds back its progress until its events are delivered: the
    /// `acknowledgements` key, by default on for every source that can.
    pub acknowledgements: bool,
    /// What the runtime does when it fails.
    pub on_failure: OnFailure,
    /// Where its table starts.
    pub location: Location,
}

/// A transform of the configuration, parsed.
#[derive(Debug)]
pub struct TransformEntry {
    /// A digest of its table as parsed: a reload rebuilds the component when it changes.
    pub fingerprint: u64,
    /// Its `type`.
    pub type_name: String,
    /// Its options.
    pub config: Box<dyn TransformConfig>,
    /// Its `inputs`.
    pub inputs: Vec<InputRef>,
    /// What the runtime does when it fails.
    pub on_failure: OnFailure,
    /// Where its table starts.
    pub location: Location,
}

/// A sink of the configuration, parsed.
#[derive(Debug)]
pub struct SinkEntry {
    /// A digest of its table as parsed: a reload rebuilds the component when it changes.
    pub fingerprint: u64,
    /// Its `type`.
    pub type_name: String,
    /// Its options.
    pub config: Box<dyn SinkConfig>,
    /// Its `inputs`.
    pub inputs: Vec<InputRef>,
    /// Its input buffer.
    pub buffer: BufferConfig,
    /// What the runtime does when it fails.
    pub on_failure: OnFailure,
    /// Where its table starts.
    pub location: Location,
}

/// A whole pipeline, merged from one or more files.
#[derive(Debug, Default)]
pub struct Config {
    /// Where components keep state (checkpoints). Default: `./weir-data`.
    pub data_dir: PathBuf,
    /// The HTTP API (`[api]`).
    pub api: ApiConfig,
    /// `memory_limit`, in bytes: above it, sources pause (see [`crate::memory`]). `None`: not
    /// set, the cgroup's limit gives the default; `Some(0)`: no limit.
    pub memory_limit: Option<u64>,
    /// The sources, by id.
    pub sources: BTreeMap<String, SourceEntry>,
    /// The transforms, by id.
    pub transforms: BTreeMap<String, TransformEntry>,
    /// The sinks, by id.
    pub sinks: BTreeMap<String, SinkEntry>,
    /// The unit tests (`[[tests]]`), in the order written: run by `weir test`, ignored by
    /// everything else.
    pub tests: Vec<UnitTest>,
    /// The files it came from, for messages.
    pub files: Vec<Arc<str>>,
}

impl Config {
    /// The kind of a component id, if it exists.
    pub fn kind_of(&self, id: &str) -> Option<ComponentKind> {
        if self.sources.contains_key(id) {
            Some(ComponentKind::Source)
        } else if self.transforms.contains_key(id) {
            Some(ComponentKind::Transform)
        } else if self.sinks.contains_key(id) {
            Some(ComponentKind::Sink)
        } else {
            None
        }
    }

    /// The `type` of a component id, if it exists.
    pub fn type_of(&self, id: &str) -> Option<&str> {
        self.sources
            .get(id)
            .map(|e| e.type_name.as_str())
            .or_else(|| self.transforms.get(id).map(|e| e.type_name.as_str()))
            .or_else(|| self.sinks.get(id).map(|e| e.type_name.as_str()))
    }
}

/// The nearest of `candidates` to `word`, if it is near enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3) && *d < c.len().max(word.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}
