//! # weir-sinks: where events go
//!
//! Each sink is one file (or one folder when large): a config struct (the TOML options,
//! documented field by field) implementing [`weir_pipeline::component::SinkConfig`], and the
//! loop that pulls batches from its buffer, delivers them and finalizes them (the
//! acknowledgement a source waits for).
//!
//! - [`console`]: stdout/stderr as json, text or logfmt;
//! - [`file`]: files whose path is templated by fields and time, JSON lines, size rotation;
//! - [`nats`]: NATS subjects templated by fields, core (fire-and-forget) or JetStream (PubAck
//!   awaited, retried with the same message id);
//! - [`kafka`]: Kafka topics templated by fields, with keys, headers and compression;
//!   acknowledged from delivery reports, retriable failures produced again;
//! - [`elasticsearch`]: Elasticsearch/OpenSearch `_bulk`, per-item retries and dead letters;
//! - [`otlp`]: traces, metrics and logs to OpenTelemetry backends over OTLP/gRPC or HTTP;
//! - [`blackhole`]: counts and drops (benchmarks, tests);
//! - [`parquet`]: Parquet files under a templated (Hive-partitioned) directory, for offline
//!   analysis and replay;
//! - [`prometheus`]: `prometheus_exporter` (serves `/metrics` for scraping) and
//!   `prometheus_remote_write` (remote write 1.0 to Prometheus, VictoriaMetrics, Mimir...).
//!
//! What the batching and request-sending sinks share (the `batch` and `request` tables, the
//! batching stage, retries and what is retriable) is the [`toolkit`].
//!
//! Call [`register`] to add them all to a registry.

#[cfg(feature = "blackhole")]
pub mod blackhole;
#[cfg(feature = "console")]
pub mod console;
#[cfg(feature = "elasticsearch")]
pub mod elasticsearch;
#[cfg(feature = "file")]
pub mod file;
#[cfg(feature = "http-client")]
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "otlp")]
pub mod otlp;
#[cfg(feature = "parquet")]
pub mod parquet;
#[cfg(feature = "prometheus")]
pub mod prometheus;
pub mod toolkit;

use weir_pipeline::component::Registry;

/// Adds every sink type this build has (one cargo feature each) to `registry`.
#[allow(unused_variables)] // a build with none of them registers nothing
pub fn register(registry: &mut Registry) {
    #[cfg(feature = "console")]
    registry.add_sink::<console::ConsoleConfig>(
        "console",
        "Writes events to stdout or stderr as json, text or logfmt",
    );
    #[cfg(feature = "file")]
    registry.add_sink::<file::FileSinkConfig>(
        "file",
        "Writes events to files named by a field/time template, with size rotation",
    );
    #[cfg(feature = "nats")]
    registry.add_sink::<nats::NatsSinkConfig>(
        "nats",
        "Publishes events to NATS subjects (core, or JetStream with PubAck acknowledgements)",
    );
    #[cfg(feature = "kafka")]
    registry.add_sink::<kafka::KafkaSinkConfig>(
        "kafka",
        "Produces events to Kafka topics (keys, headers, compression; acknowledged by delivery reports)",
    );
    #[cfg(feature = "blackhole")]
    registry.add_sink::<blackhole::BlackholeConfig>(
        "blackhole",
        "Counts and discards events (benchmarks, tests), with an optional periodic report",
    );
    #[cfg(feature = "elasticsearch")]
    registry.add_sink::<elasticsearch::ElasticsearchConfig>(
        "elasticsearch",
        "Indexes events into Elasticsearch or OpenSearch (_bulk, data streams, partial failures)",
    );
    #[cfg(feature = "otlp")]
    registry.add_sink::<otlp::OtlpSinkConfig>(
        "otlp",
        "Sends traces, metrics and logs over OTLP/gRPC or OTLP/HTTP (protobuf, JSON)",
    );
    #[cfg(feature = "parquet")]
    registry.add_sink::<parquet::ParquetSinkConfig>(
        "parquet",
        "Writes events to Parquet files (inferred, explicit or metrics schema), Hive partitions",
    );
    #[cfg(feature = "prometheus_exporter")]
    registry.add_sink::<prometheus::PrometheusExporterConfig>(
        "prometheus_exporter",
        "Serves the metrics it receives on /metrics for Prometheus to scrape (text or OpenMetrics)",
    );
    #[cfg(feature = "prometheus_remote_write")]
    registry.add_sink::<prometheus::RemoteWriteConfig>(
        "prometheus_remote_write",
        "Sends metrics with the Prometheus remote write protocol (Prometheus, VictoriaMetrics, Mimir)",
    );
}
