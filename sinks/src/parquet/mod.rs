//! `parquet`: events to Parquet files on local disk, for offline analysis (DuckDB, pandas,
//! Spark) and for replay with the `parquet` source.
//!
//! - [`schema`]: which Arrow schema a file gets (inferred, configured, or the metrics long
//!   format) and when a change of schema needs a new file;
//! - [`convert`]: batches of events to Arrow `RecordBatch`es (raw `json` lines parsed straight
//!   into the columns when they fit the schema);
//! - [`encoding`]: per-column encodings of a file, chosen from a sample of its first rows;
//! - [`writer`]: partitions, files (tmp, fsync, rename), rolling and acknowledgements.
//!
//! This file holds the user-facing options and the build step.

pub mod convert;
pub mod encoding;
pub mod schema;
pub mod writer;

use std::sync::Arc;

use arrow_schema::{Field, Schema};
use async_trait::async_trait;
use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use serde::{Deserialize, Serialize};
use weir_pipeline::component::{Sink, SinkConfig, SinkContext};
use weir_pipeline::config::{Count, Secs};
use weir_pipeline::event::parse_path;
use weir_pipeline::template::Template;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use crate::toolkit::{BatchConfig, BatchDefaults};
use schema::{metrics_schema, ColumnSpec, ColumnType, PathTree};
use writer::{Limits, Mode, ParquetSink};

/// `type = "parquet"`: writes events to Parquet files under a templated directory.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParquetSinkConfig {
    /// Directory template: `{{ field.path }}` parts and strftime parts (`%Y-%m-%d`) from the
    /// event's `timestamp` (or ingest time), e.g. `/data/logs/dt=%Y-%m-%d/hour=%H/` (Hive-style
    /// partitions). Files inside are named `part-<start time>-<uuid>.parquet`. Required.
    /// Events missing a field of the template are rejected and counted.
    pub path: String,
    /// `auto` (default: inferred from the events), `explicit` (the `columns` below) or
    /// `metrics` (the fixed long format for metric events).
    #[serde(default)]
    pub schema: SchemaKind,
    /// The columns of `schema = "explicit"`, in file order. Default: none.
    #[serde(default)]
    pub columns: Vec<ColumnConfig>,
    /// What happens to fields that do not fit the schema (always counted as
    /// `unmatched_field` errors): `drop` (default) or `json` (kept, as one JSON object per
    /// row, in the `unmatched_column`).
    #[serde(default)]
    pub unmatched: Unmatched,
    /// Name of the column that holds unmatched fields with `unmatched = "json"`.
    /// Default: `_unmatched`.
    #[serde(default = "default_unmatched_column")]
    pub unmatched_column: String,
    /// `zstd` (default), `snappy`, `gzip`, `lz4` (LZ4_RAW) or `none`.
    #[serde(default)]
    pub compression: CompressionKind,
    /// Compression level: zstd 1-22, gzip 0-9; an error for the other codecs. Default: zstd 1 (the
    /// fastest), gzip 6.
    #[serde(default)]
    pub compression_level: Option<i32>,
    /// Rows per row group (the unit readers skip using statistics). Default: 131072.
    #[serde(default = "default_row_group_size")]
    pub row_group_size: Count,
    /// When a file is complete and rolls (a batch is a file): `max_events` rows (default
    /// 1000000), `max_bytes` of file (written plus buffered, estimated; default 134217728,
    /// 128 MiB), `timeout_secs` after it was opened (default 300; acknowledgements wait for
    /// the roll, so this bounds how long a source waits for its checkpoint).
    #[serde(default)]
    pub batch: BatchConfig<ParquetBatch>,
    /// Most files open at once (one per partition); opening another closes the oldest.
    /// Default: 32.
    #[serde(default = "default_max_open_files")]
    pub max_open_files: Count,
}

/// The zstd level when `compression_level` is not set: level 1 is the fastest; higher levels
/// cost much more CPU per event for a few percent of size.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

fn default_unmatched_column() -> String {
    "_unmatched".to_string()
}
fn default_row_group_size() -> Count {
    Count::of(128 * 1024)
}
fn default_max_open_files() -> Count {
    Count::of(32)
}

/// The parquet sink's `batch` defaults (a batch is a file): 1000000 rows, 128 MiB, 300
/// seconds.
#[derive(Debug)]
pub struct ParquetBatch;

impl BatchDefaults for ParquetBatch {
    const MAX_EVENTS: Count = Count::of(1_000_000);
    const MAX_BYTES: Count = Count::of(128 * 1024 * 1024);
    const TIMEOUT: Secs = Secs::from_secs(300);
}

/// How the sink gets its schema.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum SchemaKind {
    /// Inferred from the events, widened as they change.
    #[default]
    Auto,
    /// The configured `columns`.
    Explicit,
    /// The metrics long format (metric events only).
    Metrics,
}

/// What to do with fields that do not fit the schema.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Unmatched {
    /// Count them and leave them out.
    #[default]
    Drop,
    /// Count them and keep them as JSON text in the unmatched column.
    Json,
}

/// The compression codec of the column chunks.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CompressionKind {
    #[default]
    Zstd,
    Snappy,
    Gzip,
    Lz4,
    None,
}

/// One column of `schema = "explicit"`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// Column name. Required.
    pub name: String,
    /// `string`, `int64`, `float64`, `bool`, `timestamp` (ns, UTC), `json` (any value as JSON
    /// text) or `list<T>`. Required.
    #[serde(rename = "type")]
    pub ty: String,
    /// Whether the column may be null. With `false`, an event without a usable value is rejected
    /// and counted (`missing_required`). Default: true.
    #[serde(default = "default_true")]
    pub nullable: bool,
    /// The event field it comes from (`.a.b` or `a.b`). Default: the column name.
    #[serde(default)]
    pub path: Option<String>,
}

fn default_true() -> bool {
    true
}

impl ParquetSinkConfig {
    fn compression(&self) -> Result<Compression, String> {
        let level = self.compression_level;
        Ok(match self.compression {
            CompressionKind::Zstd => Compression::ZSTD(
                ZstdLevel::try_new(level.unwrap_or(DEFAULT_ZSTD_LEVEL))
                    .map_err(|e| format!("`compression_level`: {e}"))?,
            ),
            CompressionKind::Gzip => {
                let l = u32::try_from(level.unwrap_or(6))
                    .map_err(|_| "`compression_level` for gzip is 0-9".to_string())?;
                Compression::GZIP(
                    GzipLevel::try_new(l).map_err(|e| format!("`compression_level`: {e}"))?,
                )
            }
            other => {
                if level.is_some() {
                    return Err(format!(
                        "`compression_level` applies to zstd and gzip only, not {other:?}"
                    ));
                }
                match other {
                    CompressionKind::Snappy => Compression::SNAPPY,
                    CompressionKind::Lz4 => Compression::LZ4_RAW,
                    _ => Compression::UNCOMPRESSED,
                }
            }
        })
    }

    /// Resolves the schema options into a [`Mode`].
    pub fn mode(&self) -> Result<Mode, String> {
        let json = self.unmatched == Unmatched::Json;
        if json && self.unmatched_column.is_empty() {
            return Err("`unmatched_column` must not be empty".into());
        }
        if self.schema != SchemaKind::Explicit && !self.columns.is_empty() {
            return Err("`columns` is only used with `schema = \"explicit\"`".into());
        }
        Ok(match self.schema {
            SchemaKind::Auto => Mode::Auto {
                unmatched_column: json.then(|| self.unmatched_column.clone()),
            },
            SchemaKind::Metrics => {
                if json {
                    return Err(
                        "`unmatched = \"json\"` does not apply to `schema = \"metrics\"`".into(),
                    );
                }
                Mode::Metrics {
                    schema: metrics_schema(),
                }
            }
            SchemaKind::Explicit => {
                if self.columns.is_empty() {
                    return Err("`schema = \"explicit\"` needs at least one `columns` entry".into());
                }
                let mut specs = Vec::with_capacity(self.columns.len());
                let mut fields = Vec::with_capacity(self.columns.len() + 1);
                for c in &self.columns {
                    let ty = ColumnType::parse(&c.ty)
                        .map_err(|e| format!("column `{}`: {e}", c.name))?;
                    let path = parse_path(c.path.as_deref().unwrap_or(&c.name))
                        .map_err(|e| format!("column `{}`: {e}", c.name))?;
                    if fields.iter().any(|f: &Field| f.name() == &c.name)
                        || (json && c.name == self.unmatched_column)
                    {
                        return Err(format!("column `{}` is defined twice", c.name));
                    }
                    fields.push(Field::new(&c.name, ty.arrow(), c.nullable));
                    specs.push(ColumnSpec {
                        name: c.name.clone(),
                        ty,
                        nullable: c.nullable,
                        path,
                    });
                }
                if json {
                    fields.push(Field::new(
                        &self.unmatched_column,
                        arrow_schema::DataType::Utf8,
                        true,
                    ));
                }
                let tree = PathTree::new(&specs)?;
                Mode::Explicit {
                    columns: specs,
                    tree,
                    schema: Arc::new(Schema::new(fields)),
                    unmatched_column: json,
                }
            }
        })
    }

    /// The Parquet writer settings: compression, row groups, statistics and page indexes.
    pub fn writer_properties(&self) -> Result<WriterProperties, String> {
        Ok(WriterProperties::builder()
            .set_compression(self.compression()?)
            .set_max_row_group_row_count(Some(self.row_group_size.get()))
            // Page-level statistics: row-group min/max plus the column and offset indexes
            // (page index), so readers skip row groups and pages.
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_offset_index_disabled(false)
            .set_key_value_metadata(Some(vec![KeyValue::new(
                "weir.schema".to_string(),
                match self.schema {
                    SchemaKind::Auto => "auto",
                    SchemaKind::Explicit => "explicit",
                    SchemaKind::Metrics => "metrics/v1",
                }
                .to_string(),
            )]))
            .build())
    }
}

#[async_trait]
impl SinkConfig for ParquetSinkConfig {
    async fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BoxError> {
        let template = Template::parse(&self.path).map_err(|e| format!("`path`: {e}"))?;
        let props = self.writer_properties()?;
        let mode = self.mode()?;
        let limits = Limits {
            max_rows: self.batch.max_events.get() as u64,
            max_bytes: self.batch.max_bytes.get() as u64,
            max_age: self.batch.timeout_secs.duration(),
            max_open_files: self.max_open_files.get(),
        };
        Ok(Box::new(ParquetSink::new(
            template, mode, props, limits, cx.metrics,
        )))
    }

    fn input(&self) -> DataType {
        match self.schema {
            SchemaKind::Metrics => DataType::METRIC,
            _ => DataType::LOG,
        }
    }
}

#[cfg(test)]
mod tests;
