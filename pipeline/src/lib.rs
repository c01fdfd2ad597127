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
//! - [`buffer`]: the bounded queue in front of every transform and sink, and the fan-out that
//!   feeds several of them; below the component contracts, which wrap them.
//! - [`metrics`]: Weir's own per-component counters, read by the API and by any component
//!   that reports them as events.
//! - [`tap`]: copies of the events leaving an output for someone watching (`weir tap`),
//!   costing one atomic load per batch while nobody does.
//! - [`codec`]: framing (newline), the core's decoders (`bytes`, `json`, `logfmt`,
//!   `syslog`) and encoders (`json`, `text`, `logfmt`, `folded`), and the
//!   [`codec::FrameDecoder`] contract through which component crates register more decoders.
//! - [`template`]: `{{ field }}` and strftime templates for paths, topics, index names.
//! - [`retry`]: exponential backoff with jitter.
//! - [`vocabulary`]: the words every module shares ([`vocabulary::DataType`],
//!   [`vocabulary::ComponentKind`], [`vocabulary::WhenFull`]); a leaf that imports nothing
//!   of the crate.
//!
//! It does not know any concrete component or external system: components live in
//! `weir-sources`, `weir-sources-ebpf`, `weir-transforms` and `weir-sinks`; record types that
//! a producer and a consumer share (flows, stack samples) in `weir-records`; connection code
//! components share (the one TLS table, HTTP and gRPC clients, Kafka, NATS) in
//! `weir-connect`. All of them depend on this crate, never the other way.

// Every public item of the core is documented (CI turns the warning into an error).
#![warn(missing_docs)]

pub mod buffer;
pub mod codec;
pub mod component;
pub mod config;
pub mod event;
pub mod finalization;
pub mod memory;
pub mod metrics;
pub mod retry;
pub mod shutdown;
pub mod tap;
pub mod template;
pub mod topology;
pub mod vocabulary;

/// The error type components return from their build and run steps.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

pub use vrl;
