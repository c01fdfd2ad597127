//! # weir-pipeline: the core every Weir component stands on
//!
//! This crate holds what is shared by all sources, transforms and sinks, and nothing that is
//! specific to one of them:
//!
//! - [`event`]: the event model ([`event::Event`]: `Log`, `Metric`, `Trace`), travelling in
//!   [`event::EventBatch`]es, with field paths (`.a.b[0]`) and typed values.
//! - [`finalization`]: end-to-end acknowledgements. A source that can replay attaches a
//!   [`finalization::BatchNotifier`] to its events and learns, per batch, whether every sink that
//!   received them delivered them.
//! - [`config`]: TOML loading (several files, `${VAR}` interpolation), errors with
//!   `file:line:col`, and validation of the graph before anything starts.
//! - [`component`]: the three traits a component implements ([`component::SourceConfig`],
//!   [`component::TransformConfig`], [`component::SinkConfig`]) and the [`component::Registry`]
//!   the binary fills.
//! - [`topology`]: the runtime. One tokio task per component, bounded buffers of batches between
//!   them (backpressure by default), fan-out, graceful shutdown.
//! - [`metrics`]: Weir's own per-component counters, read by the API and `internal_metrics`.
//! - [`codec`]: framing (newline), decoding (`bytes`, `json`, `logfmt`, `syslog`, `hubble_jsonpb`) and encoding
//!   (`json`, `text`, `logfmt`) shared by all components.
//! - [`flow`]: a network flow (Hubble's) in typed form, [`flow::FlowLog`], made by the
//!   `hubble_jsonpb` codec and the `hubble` source and read by `flow_to_topology` without
//!   building the tree of its fields.
//! - [`template`]: `{{ field }}` and strftime templates for paths, topics, index names.
//! - [`retry`]: exponential backoff with jitter for sinks.
//! - `nats` (feature `nats`): the NATS connection options (servers, auth, TLS, reconnects)
//!   shared by the `nats` source and sink.
//! - `kafka` (feature `kafka`): the Kafka client options (brokers, TLS, SASL, librdkafka
//!   pass-through) shared by the `kafka` source and sink.
//!
//! It does not know any concrete component: those live in `weir-sources`, `weir-transforms`
//! and `weir-sinks`, which depend on this crate, never the other way.

pub mod codec;
pub mod component;
pub mod config;
pub mod event;
pub mod finalization;
pub mod flow;
pub mod grpc_status;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod metrics;
#[cfg(feature = "nats")]
pub mod nats;
pub mod retry;
pub mod shutdown;
pub mod template;
pub mod topology;

/// The error type components return from their build and run steps.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

pub use vrl;
