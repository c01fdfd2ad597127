//! The reader thread: plans every file (row groups to read after the time range and the
//! resume point), then reads them in path order and hands batches of events to the async side.
//!
//! Reads are blocking file I/O and decoding is CPU work, so they run on a dedicated thread;
//! a small bounded channel carries [`Chunk`]s, so backpressure reaches the reads.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_schema::{DataType, TimeUnit};
use chrono::Utc;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
    RowSelector,
};
use parquet::file::statistics::Statistics;
use weir_pipeline::event::{Event, EventMetadata, LogEvent, Value};
use weir_pipeline::metrics::ComponentMetrics;

use super::discover::{discover, partition_range, partition_values, TimeRange};
use super::values::{is_metrics_shape, timestamp_nanos, Columns, MetricRows};
use super::FileProgress;

/// What to read.
pub struct Plan {
    pub patterns: Vec<String>,
    pub range: Option<TimeRange>,
    pub timestamp_field: String,
    pub keep_nulls: bool,
    pub hive_fields: bool,
    pub batch_size: usize,
    pub progress: bool,
    pub source_id: Arc<str>,
    /// Resume: how far each file was delivered in an earlier run.
    pub done: BTreeMap<String, FileProgress>,
}

/// Events of one file, up to a position in it.
pub struct Chunk {
    pub events: Vec<Event>,
    /// The file's checkpoint key (its canonical path).
    pub file: Arc<str>,
    /// Every row before this position of the file has been read (emitted or filtered out).
    pub raw_end: u64,
    /// The file has been read to its end.
    pub file_done: bool,
}

/// One file, planned: which row groups and rows to read.
pub(crate) struct FilePlan {
    path: PathBuf,
    key: Arc<str>,
    meta: ArrowReaderMetadata,
    row_groups: Vec<usize>,
    selectors: Vec<RowSelector>,
    /// (first raw row, rows) of each stretch read, in order.
    stretches: Vec<(u64, u64)>,
    total_rows: u64,
    rows_to_read: u64,
    partitions: Vec<(String, String)>,
}

/// Reads everything `plan` names, sending chunks on `tx` until done or `tx` closes.
pub fn run(plan: Plan, metrics: Arc<ComponentMetrics>, tx: tokio::sync::mpsc::Sender<Chunk>) {
    let (files, problems) = discover(&plan.patterns);
    for p in problems {
        metrics.error("discover", 1, &p);
    }
    let mut planned = Vec::new();
    let mut pruned_files = 0;
    for path in files {
        let key: Arc<str> = std::fs::canonicalize(&path)
            .unwrap_or_else(|_| path.clone())
            .to_string_lossy()
            .into();
        let start_row = match plan.done.get(&*key) {
            Some(p) if p.complete => continue,
            Some(p) => p.rows_done,
            None => 0,
        };
        if let (Some(range), Some(part)) = (plan.range, partition_range(&path)) {
            if !range.overlaps_inclusive(part.start, part.end - 1) {
                pruned_files += 1;
                continue;
            }
        }
        match guarded(|| plan_file(&plan, path.clone(), key, start_row)) {
            Ok(fp) => planned.push(fp),
            Err(e) => metrics.error("read", 1, &format_args!("{}: {e}", path.display())),
        }
    }
    let total_rows: u64 = planned.iter().map(|f| f.rows_to_read).sum();
    tracing::info!(
        files = planned.len(),
        rows = total_rows,
        skipped_by_partition = pruned_files,
        "parquet: reading"
    );
    let bar = plan
        .progress
        .then(|| super::progress::bar(total_rows, planned.len()));
    let n_files = planned.len();
    for (i, fp) in planned.into_iter().enumerate() {
        let path = fp.path.clone();
        if let Ok(m) = std::fs::metadata(&path) {
            metrics.add_received_bytes(m.len());
        }
        match guarded(|| read_file(&plan, fp, &metrics, &tx, bar.as_ref())) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => metrics.error("read", 1, &format_args!("{}: {e}", path.display())),
        }
        if let Some(b) = &bar {
            b.set_message(format!("files {}/{n_files}", i + 1));
        }
    }
    if let Some(b) = bar {
        super::progress::finish(b);
    }
}

/// Runs `f`, turning a panic into the file's error. The Parquet library panics on some corrupt
/// files instead of returning an error (found by `fuzz_parquet_files`: "Decoder for dict should
/// have been set" in parquet 60); one bad file must cost that file only, never the source.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(format!(
            "the Parquet reader failed on this file: {}",
            weir_pipeline::topology::panic_message(&*p)
        ))
    })
}

pub(crate) fn plan_file(
    plan: &Plan,
    path: PathBuf,
    key: Arc<str>,
    start_row: u64,
) -> Result<FilePlan, String> {
    let file = File::open(&path).map_err(|e| e.to_string())?;
    let meta = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
        .map_err(|e| format!("not a readable Parquet file: {e}"))?;
    let ts = timestamp_leaf(&meta, &plan.timestamp_field);
    let mut row_groups = Vec::new();
    let mut selectors = Vec::new();
    let mut stretches = Vec::new();
    let mut raw = 0u64;
    for (i, rg) in meta.metadata().row_groups().iter().enumerate() {
        let n = rg.num_rows().max(0) as u64;
        let rg_start = raw;
        raw += n;
        if rg_start + n <= start_row {
            continue;
        }
        if let (Some(range), Some((leaf, unit))) = (plan.range, ts) {
            if let Some(Statistics::Int64(s)) = rg.column(leaf).statistics() {
                if let (Some(lo), Some(hi)) = (s.min_opt(), s.max_opt()) {
                    if !range.overlaps_inclusive(to_nanos(*lo, unit), to_nanos(*hi, unit)) {
                        continue;
                    }
                }
            }
        }
        let skip = start_row.saturating_sub(rg_start);
        row_groups.push(i);
        if skip > 0 {
            selectors.push(RowSelector::skip(skip as usize));
        }
        selectors.push(RowSelector::select((n - skip) as usize));
        stretches.push((rg_start + skip, n - skip));
    }
    Ok(FilePlan {
        partitions: if plan.hive_fields {
            partition_values(&path)
        } else {
            Vec::new()
        },
        path,
        key,
        meta,
        row_groups,
        selectors,
        rows_to_read: stretches.iter().map(|s| s.1).sum(),
        stretches,
        total_rows: raw,
    })
}

#[cfg(test)]
impl FilePlan {
    pub fn row_groups(&self) -> &[usize] {
        &self.row_groups
    }
}

/// The leaf column index and unit of a top-level timestamp column called `name`.
fn timestamp_leaf(meta: &ArrowReaderMetadata, name: &str) -> Option<(usize, TimeUnit)> {
    let unit = match meta.schema().field_with_name(name).ok()?.data_type() {
        DataType::Timestamp(u, _) => *u,
        _ => return None,
    };
    let descr = meta.metadata().file_metadata().schema_descr();
    (0..descr.num_columns())
        .find(|&i| descr.column(i).path().parts() == [name])
        .map(|i| (i, unit))
}

fn to_nanos(v: i64, unit: TimeUnit) -> i64 {
    match unit {
        TimeUnit::Second => v.saturating_mul(1_000_000_000),
        TimeUnit::Millisecond => v.saturating_mul(1_000_000),
        TimeUnit::Microsecond => v.saturating_mul(1_000),
        TimeUnit::Nanosecond => v,
    }
}

/// Advances through the stretches of raw rows read, returning the raw position after `n` more
/// rows.
struct Cursor {
    stretches: Vec<(u64, u64)>,
    idx: usize,
    used: u64,
}

impl Cursor {
    fn advance(&mut self, mut n: u64) -> u64 {
        let mut pos = 0;
        while let Some(&(start, len)) = self.stretches.get(self.idx) {
            let take = n.min(len - self.used);
            self.used += take;
            n -= take;
            pos = start + self.used;
            if self.used == len {
                self.idx += 1;
                self.used = 0;
            }
            if n == 0 {
                break;
            }
        }
        pos
    }
}

/// Reads one planned file. `Ok(false)`: the receiver is gone (shutdown), stop everything.
fn read_file(
    plan: &Plan,
    fp: FilePlan,
    metrics: &ComponentMetrics,
    tx: &tokio::sync::mpsc::Sender<Chunk>,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<bool, String> {
    let key = fp.key.clone();
    if !fp.row_groups.is_empty() {
        let file = File::open(&fp.path).map_err(|e| e.to_string())?;
        let metrics_shape = is_metrics_shape(fp.meta.schema());
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, fp.meta.clone())
            .with_row_groups(fp.row_groups.clone())
            .with_row_selection(RowSelection::from(fp.selectors.clone()))
            .with_batch_size(plan.batch_size)
            .build()
            .map_err(|e| e.to_string())?;
        let mut cursor = Cursor {
            stretches: fp.stretches.clone(),
            idx: 0,
            used: 0,
        };
        let mut reported_unsupported = false;
        for rb in reader {
            let rb = rb.map_err(|e| format!("cannot decode: {e}"))?;
            let raw_end = cursor.advance(rb.num_rows() as u64);
            let events = if metrics_shape {
                metric_events(plan, &rb, metrics)
            } else {
                log_events(plan, &fp, &rb, metrics, &mut reported_unsupported)
            };
            if let Some(b) = bar {
                b.inc(rb.num_rows() as u64);
            }
            metrics.add_received(events.len() as u64, 0);
            let chunk = Chunk {
                events,
                file: key.clone(),
                raw_end,
                file_done: false,
            };
            if tx.blocking_send(chunk).is_err() {
                return Ok(false);
            }
        }
    }
    let done = Chunk {
        events: Vec::new(),
        file: key,
        raw_end: fp.total_rows,
        file_done: true,
    };
    Ok(tx.blocking_send(done).is_ok())
}

fn in_range(plan: &Plan, ts: Option<i64>) -> bool {
    match plan.range {
        None => true,
        Some(r) => ts.is_some_and(|t| r.contains(t)),
    }
}

fn log_events(
    plan: &Plan,
    fp: &FilePlan,
    rb: &RecordBatch,
    metrics: &ComponentMetrics,
    reported_unsupported: &mut bool,
) -> Vec<Event> {
    let cols = Columns::new(rb, plan.keep_nulls);
    if !cols.unsupported.is_empty() && !*reported_unsupported {
        *reported_unsupported = true;
        metrics.error(
            "unsupported_type",
            cols.unsupported.len() as u64,
            &format_args!(
                "{}: columns left out: {}",
                fp.path.display(),
                cols.unsupported.join(", ")
            ),
        );
    }
    let ts = plan.range.and_then(|_| {
        cols.cols
            .iter()
            .find(|(k, _)| k.as_str() == plan.timestamp_field)
    });
    let meta = EventMetadata {
        source_id: Some(plan.source_id.clone()),
        ingest_time: Some(Utc::now()),
        notifier: None,
    };
    let mut out = Vec::with_capacity(rb.num_rows());
    for i in 0..rb.num_rows() {
        if plan.range.is_some() && !in_range(plan, ts.and_then(|(_, g)| timestamp_nanos(g, i))) {
            continue;
        }
        let mut m = cols.row(i, plan.keep_nulls);
        for (k, v) in &fp.partitions {
            if !m.contains_key(k.as_str()) {
                m.insert(k.as_str().into(), Value::from(v.as_str()));
            }
        }
        out.push(Event::Log(LogEvent::from_value(
            Value::Object(m),
            meta.clone(),
        )));
    }
    out
}

fn metric_events(plan: &Plan, rb: &RecordBatch, metrics: &ComponentMetrics) -> Vec<Event> {
    let rows = match MetricRows::new(rb) {
        Ok(r) => r,
        Err(e) => {
            metrics.error(
                "decode",
                rb.num_rows() as u64,
                &format_args!("metrics file: {e}"),
            );
            return Vec::new();
        }
    };
    let meta = EventMetadata {
        source_id: Some(plan.source_id.clone()),
        ingest_time: Some(Utc::now()),
        notifier: None,
    };
    let mut out = Vec::with_capacity(rb.num_rows());
    for i in 0..rb.num_rows() {
        match rows.metric(i) {
            Ok(mut m) => {
                if plan.range.is_some()
                    && !in_range(plan, m.timestamp.and_then(|t| t.timestamp_nanos_opt()))
                {
                    continue;
                }
                m.metadata = meta.clone();
                out.push(Event::from(m));
            }
            Err(e) => metrics.error("decode", 1, &e),
        }
    }
    out
}
