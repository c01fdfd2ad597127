//! # weir-sources: where events come from
//!
//! Each source is one file: a config struct (the TOML options, documented field by field) that
//! implements [`weir_pipeline::component::SourceConfig`], and the async loop it builds.
//!
//! - [`demo`]: realistic synthetic logs (JSON, Apache, syslog, logfmt) at a rate or a count;
//! - [`stdin`]: lines from standard input, decoded by any codec;
//! - [`internal_metrics`]: Weir's own per-component metrics as metric events;
//! - [`parquet`]: Parquet files (a list, a directory or a glob) replayed as events, then the
//!   source ends (offline jobs).
//!
//! Call [`register`] to add them all to a registry.

pub mod demo;
pub mod internal_metrics;
pub mod parquet;
pub mod stdin;

use weir_pipeline::component::Registry;

/// Adds every source of this crate to `registry`.
pub fn register(registry: &mut Registry) {
    registry.add_source::<demo::DemoConfig>(
        "demo",
        "Realistic synthetic logs (json, apache_common, syslog, logfmt) at a rate or a count",
    );
    registry.add_source::<stdin::StdinConfig>(
        "stdin",
        "Lines from standard input, decoded with bytes/json/logfmt/syslog",
    );
    registry.add_source::<internal_metrics::InternalMetricsConfig>(
        "internal_metrics",
        "Weir's own per-component metrics (events, bytes, errors, buffers, latency)",
    );
    registry.add_source::<parquet::ParquetSourceConfig>(
        "parquet",
        "Parquet files (list, directory or glob; Hive partitions) replayed as events, then ends",
    );
}
