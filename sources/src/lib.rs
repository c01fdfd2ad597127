//! # weir-sources: where events come from
//!
//! Each source is one file: a config struct (the TOML options, documented field by field) that
//! implements [`weir_pipeline::component::SourceConfig`], and the async loop it builds.
//!
//! - [`demo`]: realistic synthetic logs (JSON, Apache, syslog, logfmt) at a rate or a count;
//! - [`stdin`]: lines from standard input, decoded by any codec;
//! - [`file`]: log files matched by globs, followed through rotation, checkpointed (a folder:
//!   its tailer is reusable by other file-based sources);
//! - [`nats`]: NATS subscriptions (queue groups) and JetStream durable pull consumers that
//!   acknowledge each message after delivery;
//! - [`kafka`]: Kafka topics (names or regexes) in a consumer group, committing per partition
//!   only the offsets whose events were delivered;
//! - [`host_metrics`]: the machine's CPU, memory, disks, filesystems, network, TCP sockets,
//!   processes, users, uptime and cgroups, from `/proc`, named like node_exporter's metrics;
//! - [`kubernetes_logs`]: container logs of this node (CRI or Docker files under
//!   `/var/log/pods`), with pod metadata from the path and the Kubernetes API;
//! - [`internal_metrics`]: Weir's own per-component metrics as metric events;
//! - [`perf`]: stack samples (`perf script`, `perf record`) and counters (`perf stat`);
//! - [`hubble`]: Cilium Hubble network flows over gRPC, shaped like `hubble observe -o jsonpb`;
//! - [`otlp`]: OpenTelemetry traces, metrics and logs over OTLP/gRPC and OTLP/HTTP;
//! - [`parquet`]: Parquet files (a list, a directory or a glob) replayed as events, then the
//!   source ends (offline jobs).
//!
//! Call [`register`] to add them all to a registry.

#[cfg(feature = "demo")]
pub mod demo;
#[cfg(feature = "file")]
pub mod file;
#[cfg(feature = "host_metrics")]
pub mod host_metrics;
#[cfg(feature = "hubble")]
pub mod hubble;
#[cfg(feature = "internal_metrics")]
pub mod internal_metrics;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "kubernetes_logs")]
pub mod kubernetes_logs;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "otlp")]
pub mod otlp;
#[cfg(feature = "parquet")]
pub mod parquet;
#[cfg(feature = "perf")]
pub mod perf;
#[cfg(feature = "stdin")]
pub mod stdin;

use weir_pipeline::component::Registry;

/// Adds every source type this build has (one cargo feature each) to `registry`.
#[allow(unused_variables)] // a build with none of them registers nothing
pub fn register(registry: &mut Registry) {
    #[cfg(feature = "demo")]
    registry.add_source::<demo::DemoConfig>(
        "demo",
        "Realistic synthetic logs (json, apache_common, syslog, logfmt) at a rate or a count",
    );
    #[cfg(feature = "otlp")]
    registry.add_source::<otlp::OtlpSourceConfig>(
        "otlp",
        "OpenTelemetry traces, metrics and logs over OTLP/gRPC (4317) and OTLP/HTTP (4318)",
    );
    #[cfg(feature = "file")]
    registry.add_source::<file::FileSourceConfig>(
        "file",
        "Lines of files matched by globs, followed through rotation, checkpointed, multiline",
    );
    #[cfg(feature = "kubernetes_logs")]
    registry.add_source::<kubernetes_logs::KubernetesLogsConfig>(
        "kubernetes_logs",
        "Container logs of this node (CRI or Docker), partial lines joined, pod metadata",
    );
    #[cfg(feature = "stdin")]
    registry.add_source::<stdin::StdinConfig>(
        "stdin",
        "Lines from standard input, decoded with bytes/json/logfmt/syslog",
    );
    #[cfg(feature = "nats")]
    registry.add_source::<nats::NatsSourceConfig>(
        "nats",
        "NATS subscriptions (queue groups) or JetStream durable consumers, acked after delivery",
    );
    #[cfg(feature = "kafka")]
    registry.add_source::<kafka::KafkaSourceConfig>(
        "kafka",
        "Kafka topics in a consumer group, offsets committed per partition after delivery",
    );
    #[cfg(feature = "hubble")]
    registry.add_source::<hubble::HubbleConfig>(
        "hubble",
        "Cilium Hubble network flows (Relay or a node), shaped like `hubble observe -o jsonpb`",
    );
    #[cfg(feature = "host_metrics")]
    registry.add_source::<host_metrics::HostMetricsConfig>(
        "host_metrics",
        "Machine metrics from /proc (cpu, memory, disk, filesystem, network, tcp, processes, \
         users, uptime, cgroup v2) with node_exporter names",
    );
    #[cfg(feature = "internal_metrics")]
    registry.add_source::<internal_metrics::InternalMetricsConfig>(
        "internal_metrics",
        "Weir's own per-component metrics (events, bytes, errors, buffers, latency)",
    );
    #[cfg(feature = "perf")]
    registry.add_source::<perf::PerfConfig>(
        "perf",
        "Stack samples from `perf script`/`perf record`, counters from `perf stat`",
    );
    #[cfg(feature = "parquet")]
    registry.add_source::<parquet::ParquetSourceConfig>(
        "parquet",
        "Parquet files (list, directory or glob; Hive partitions) replayed as events, then ends",
    );
}
