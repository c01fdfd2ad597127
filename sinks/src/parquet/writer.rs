//! The sink loop: events are grouped by their rendered directory (the partition), turned into
//! Arrow batches and written to that directory's open file.
//!
//! A file's life: **Open** (`.part-<start>-<uuid>.parquet.tmp`, hidden so that Spark, pyarrow and
//! DuckDB globs skip it) -> **Writing** (row groups appended; the acknowledgements of every event
//! in it are held) -> **Finishing** (footer written, fsync, rename to `part-<start>-<uuid>.parquet`,
//! fsync of the directory) -> **Closed** (the held acknowledgements are released as delivered).
//! A file rolls when it reaches `batch.max_events` rows or `batch.max_bytes`, when it is
//! `batch.timeout_secs` old, when
//! its schema changes, when too many files are open, and at shutdown. A file that fails is
//! **Abandoned**: its tmp file is removed and its events are reported errored, so an
//! acknowledging source replays them.

use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::RecordBatch;
use arrow_schema::{Field, Fields, Schema, SchemaRef};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use weir_pipeline::component::{Sink, SinkInput};
use weir_pipeline::event::{Event, EventBatch, LogEvent, Metric};
use weir_pipeline::finalization::{EventStatus, Finalizer};
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::retry::Backoff;
use weir_pipeline::template::Template;
use weir_pipeline::BoxError;

use super::convert::{
    convert_auto, convert_auto_fast, convert_explicit, convert_metrics, Converted,
};
use super::encoding::{file_properties, SAMPLE_ROWS};
use super::schema::{
    fit_object, incompatible_changes, infer_object, merge_fields, ColumnSpec, Fit, PathTree,
    Resolve,
};

/// A file that could not be finished, with the notifiers of the events it held.
type FinishError = (FileError, Vec<Finalizer>);

/// How many times one batch may be cut into pieces of different schemas (a field flipping
/// between types on every event would otherwise make a file per event). Past this, values of
/// the other type are kept as unmatched.
const MAX_SCHEMA_CUTS_PER_BATCH: usize = 4;

/// What the sink's schema is, resolved from the config.
pub enum Mode {
    Auto {
        unmatched_column: Option<String>,
    },
    Explicit {
        columns: Vec<ColumnSpec>,
        tree: PathTree,
        schema: SchemaRef,
        unmatched_column: bool,
    },
    Metrics {
        schema: SchemaRef,
    },
}

/// When files roll.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_rows: u64,
    pub max_bytes: u64,
    pub max_age: Duration,
    pub max_open_files: usize,
}

/// One file being written.
struct OpenFile {
    /// The event columns (auto mode; empty otherwise).
    fields: Fields,
    schema: SchemaRef,
    writer: ArrowWriter<File>,
    tmp: PathBuf,
    final_path: PathBuf,
    rows: u64,
    opened: Instant,
    /// The acknowledgements of every event in the file, released after the rename.
    notifiers: Vec<Finalizer>,
}

/// Why a file could not be written or finished.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("cannot finish {path}: {source}")]
    Finish {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("cannot sync or rename {path}: {source}")]
    Commit {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl OpenFile {
    fn create(
        dir: &Path,
        stem: &str,
        fields: Fields,
        schema: SchemaRef,
        props: WriterProperties,
    ) -> Result<Self, FileError> {
        let tmp = dir.join(format!(".{stem}.parquet.tmp"));
        let final_path = dir.join(format!("{stem}.parquet"));
        let create = |e| FileError::Create {
            path: tmp.clone(),
            source: e,
        };
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(create)?;
        }
        let file = File::create(&tmp).map_err(create)?;
        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            FileError::Write {
                path: tmp.clone(),
                source: e,
            }
        })?;
        Ok(Self {
            fields,
            schema,
            writer,
            tmp,
            final_path,
            rows: 0,
            opened: Instant::now(),
            notifiers: Vec::new(),
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<(), FileError> {
        self.writer.write(batch).map_err(|e| FileError::Write {
            path: self.tmp.clone(),
            source: e,
        })?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Bytes on disk plus the estimated encoded size of the row group in memory.
    fn size(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size()) as u64
    }

    fn hold(&mut self, notifiers: &[&Finalizer]) {
        for n in notifiers {
            if !self.notifiers.iter().rev().take(4).any(|h| h.same_batch(n)) {
                self.notifiers.push((*n).clone());
            }
        }
    }

    /// Footer, fsync, rename, fsync of the directory; then the held events count as delivered.
    /// Returns the final path and its size.
    fn finish(self) -> Result<(PathBuf, u64, u64), FinishError> {
        let OpenFile {
            writer,
            tmp,
            final_path,
            rows,
            notifiers,
            ..
        } = self;
        let commit = |e| FileError::Commit {
            path: tmp.clone(),
            source: e,
        };
        let result = writer
            .into_inner()
            .map_err(|e| FileError::Finish {
                path: tmp.clone(),
                source: e,
            })
            .and_then(|file| {
                file.sync_all().map_err(commit)?;
                let size = file.metadata().map_err(commit)?.len();
                drop(file);
                std::fs::rename(&tmp, &final_path).map_err(commit)?;
                if let Some(dir) = final_path.parent() {
                    let dir = if dir.as_os_str().is_empty() {
                        Path::new(".")
                    } else {
                        dir
                    };
                    File::open(dir).and_then(|d| d.sync_all()).map_err(commit)?;
                }
                Ok(size)
            });
        match result {
            Ok(size) => {
                // The rows are durable: these events are delivered.
                for n in notifiers {
                    n.finalize(EventStatus::Delivered);
                }
                Ok((final_path, size, rows))
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err((e, notifiers))
            }
        }
    }

    /// Gives up on the file: removes it and reports its events errored.
    fn abandon(self) {
        let _ = std::fs::remove_file(&self.tmp);
        for n in self.notifiers {
            n.finalize(EventStatus::Errored);
        }
    }
}

/// The running sink.
pub struct ParquetSink {
    pub template: Template,
    pub mode: Mode,
    pub props: WriterProperties,
    pub limits: Limits,
    pub metrics: Arc<ComponentMetrics>,
    files: HashMap<String, OpenFile>,
    /// Auto mode: the latest event columns, the starting point of a new partition's schema.
    last_fields: Fields,
    /// The start time of the last file, to keep names strictly increasing.
    last_start: Option<DateTime<Utc>>,
    /// Auto mode: string bytes per row of each column in the last batch (buffer sizes).
    string_sizes: Vec<usize>,
}

impl ParquetSink {
    pub fn new(
        template: Template,
        mode: Mode,
        props: WriterProperties,
        limits: Limits,
        metrics: Arc<ComponentMetrics>,
    ) -> Self {
        Self {
            template,
            mode,
            props,
            limits,
            metrics,
            files: HashMap::new(),
            last_fields: Fields::empty(),
            last_start: None,
            string_sizes: Vec::new(),
        }
    }

    /// Sorts a batch's events into partitions (rendered directories). Events that cannot be
    /// placed are rejected and counted.
    fn partition(&self, batch: &EventBatch) -> Vec<(String, Vec<usize>)> {
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        let mut dir = String::new();
        let want_metrics = matches!(self.mode, Mode::Metrics { .. });
        for (i, e) in batch.events.iter().enumerate() {
            let ok_type = match e {
                Event::Metric(_) => want_metrics,
                Event::Log(_) => !want_metrics,
                Event::Trace(_) => false,
            };
            if !ok_type {
                e.metadata().update_status(EventStatus::Rejected);
                self.metrics.error(
                    "unsupported_event",
                    1,
                    &format_args!(
                        "a {} event cannot be written with schema {}; rejected",
                        match e {
                            Event::Log(_) => "log",
                            Event::Metric(_) => "metric",
                            Event::Trace(_) => "trace",
                        },
                        if want_metrics {
                            "metrics"
                        } else {
                            "auto/explicit"
                        }
                    ),
                );
                continue;
            }
            if let Err(err) = self.template.render_into(e, &mut dir) {
                e.metadata().update_status(EventStatus::Rejected);
                self.metrics.error("template", 1, &err);
                continue;
            }
            match groups.iter_mut().find(|(d, _)| *d == dir) {
                Some((_, v)) => v.push(i),
                None => groups.push((dir.clone(), vec![i])),
            }
        }
        groups
    }

    async fn handle(&mut self, batch: EventBatch) {
        let started = Instant::now();
        for (dir, idx) in self.partition(&batch) {
            match &self.mode {
                Mode::Metrics { schema } => {
                    let schema = schema.clone();
                    let ms: Vec<&Metric> = idx
                        .iter()
                        .filter_map(|&i| match &batch.events[i] {
                            Event::Metric(m) => Some(&**m),
                            _ => None,
                        })
                        .collect();
                    let notifiers = notifiers_of(&batch, &idx);
                    match convert_metrics(&ms) {
                        Ok(rb) => {
                            self.write(&dir, Fields::empty(), &schema, rb, &notifiers)
                                .await
                        }
                        Err(e) => self.conversion_failed(&batch, &idx, &e),
                    }
                }
                Mode::Explicit { .. } => {
                    let logs = logs_of(&batch, &idx);
                    let notifiers = notifiers_of(&batch, &idx);
                    let Mode::Explicit {
                        columns,
                        tree,
                        schema,
                        unmatched_column,
                    } = &self.mode
                    else {
                        continue;
                    };
                    let schema = schema.clone();
                    match convert_explicit(&logs, columns, tree, &schema, *unmatched_column) {
                        Ok(c) => {
                            let rb = self.account(&batch, &idx, c);
                            self.write(&dir, Fields::empty(), &schema, rb, &notifiers)
                                .await
                        }
                        Err(e) => self.conversion_failed(&batch, &idx, &e),
                    }
                }
                Mode::Auto { .. } => self.handle_auto(&batch, &dir, &idx).await,
            }
        }
        self.metrics.observe_latency(started.elapsed());
        // The files written hold the acknowledgements of the rows they took (released when
        // each file is durable); the events' own holds are done here.
        let mut batch = batch;
        batch.finalize(EventStatus::Delivered);
    }

    async fn handle_auto(&mut self, batch: &EventBatch, dir: &str, idx: &[usize]) {
        let Mode::Auto { unmatched_column } = &self.mode else {
            return;
        };
        let unmatched_column = unmatched_column.clone();
        let logs = logs_of(batch, idx);
        let (base, base_schema) = match self.files.get(dir) {
            Some(f) => (f.fields.clone(), Some(f.schema.clone())),
            None => (self.last_fields.clone(), None),
        };
        // Usually every event fits the current schema: one pass, no trees of values. Else the
        // batch is cut by schema and converted from the events' values.
        let fast = if base.is_empty() {
            None
        } else {
            let schema =
                base_schema.unwrap_or_else(|| auto_schema(&base, unmatched_column.as_deref()));
            convert_auto_fast(
                &logs,
                &base,
                &schema,
                unmatched_column.as_deref(),
                // A templated path has read every event's fields (or time): the trees exist.
                !self.template.is_dynamic(),
                &mut self.string_sizes,
            )
        };
        let runs: Vec<(Range<usize>, Fields, Option<Converted>)> = match fast {
            Some(c) => vec![(0..logs.len(), base, Some(c))],
            None => segments(&logs, base, unmatched_column.as_deref())
                .into_iter()
                .map(|(range, fields)| (range, fields, None))
                .collect(),
        };
        for (range, fields, converted) in runs {
            let changes = incompatible_changes(&self.last_fields, &fields);
            if !changes.is_empty() {
                self.metrics.error(
                    "schema_change",
                    1,
                    &format_args!(
                        "{dir}: field types changed ({}); a new file starts with the new schema",
                        changes.join(", ")
                    ),
                );
            } else if fields != self.last_fields && !self.last_fields.is_empty() {
                tracing::info!(partition = %dir, "schema widened (new fields or int -> float); a new file starts");
            }
            self.last_fields = fields.clone();
            if fields.is_empty() && unmatched_column.is_none() {
                // Nothing typed to store (every field null or an empty object).
                continue;
            }
            let schema = match &converted {
                Some(c) => c.batch.schema(),
                None => auto_schema(&fields, unmatched_column.as_deref()),
            };
            let seg_idx = &idx[range.clone()];
            let notifiers = notifiers_of(batch, seg_idx);
            let converted = match converted {
                Some(c) => Ok(c),
                None => convert_auto(&logs[range], &fields, &schema, unmatched_column.is_some()),
            };
            match converted {
                Ok(c) => {
                    let rb = self.account(batch, seg_idx, c);
                    self.write(dir, fields, &schema, rb, &notifiers).await
                }
                Err(e) => self.conversion_failed(batch, seg_idx, &e),
            }
        }
    }

    /// Counts what a conversion left out and rejects the rows it refused.
    fn account(&self, batch: &EventBatch, idx: &[usize], c: Converted) -> RecordBatch {
        if c.unmatched > 0 {
            self.metrics.error(
                "unmatched_field",
                c.unmatched,
                &format_args!(
                    "{} field(s) did not fit the schema{}",
                    c.unmatched,
                    match &self.mode {
                        Mode::Auto {
                            unmatched_column: Some(col),
                        } => format!("; kept as JSON in column `{col}`"),
                        Mode::Explicit {
                            unmatched_column: true,
                            ..
                        } => "; kept as JSON in the unmatched column".to_string(),
                        _ => "; dropped (set `unmatched = \"json\"` to keep them)".to_string(),
                    }
                ),
            );
        }
        if c.invalid_utf8 > 0 {
            self.metrics.error(
                "invalid_utf8",
                c.invalid_utf8,
                &"strings that were not valid UTF-8 were written with replacement characters",
            );
        }
        if !c.rejected.is_empty() {
            for &r in &c.rejected {
                batch.events[idx[r]]
                    .metadata()
                    .update_status(EventStatus::Rejected);
            }
            self.metrics.error(
                "missing_required",
                c.rejected.len() as u64,
                &format_args!(
                    "{} event(s) had no usable value for a column with nullable = false; rejected",
                    c.rejected.len()
                ),
            );
        }
        c.batch
    }

    fn conversion_failed(&self, batch: &EventBatch, idx: &[usize], e: &dyn std::fmt::Display) {
        for &i in idx {
            batch.events[i]
                .metadata()
                .update_status(EventStatus::Rejected);
        }
        self.metrics.error(
            "encode",
            idx.len() as u64,
            &format_args!("cannot build Arrow columns for {} event(s): {e}", idx.len()),
        );
    }

    /// Writes `rb` to the partition's file, rolling as the limits say. Retries (with backoff,
    /// holding the input) until the rows are in a file.
    async fn write(
        &mut self,
        dir: &str,
        fields: Fields,
        schema: &SchemaRef,
        rb: RecordBatch,
        notifiers: &[&Finalizer],
    ) {
        if let Some(f) = self.files.get(dir) {
            if f.schema != *schema {
                if let Some(f) = self.files.remove(dir) {
                    self.close(f);
                }
            }
        }
        let total = rb.num_rows();
        let mut offset = 0;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        while offset < total {
            if !self.files.contains_key(dir) {
                if self.files.len() >= self.limits.max_open_files {
                    self.close_oldest();
                }
                let first = rb.slice(offset, (total - offset).min(SAMPLE_ROWS));
                match self.open(dir, fields.clone(), schema.clone(), &first) {
                    Ok(f) => {
                        self.files.insert(dir.to_string(), f);
                    }
                    Err(e) => {
                        self.metrics.error(
                            "io",
                            1,
                            &format_args!("{e}; retrying (the batch is held, upstream waits)"),
                        );
                        tokio::time::sleep(backoff.next_delay()).await;
                        continue;
                    }
                }
            }
            let Some(file) = self.files.get_mut(dir) else {
                continue;
            };
            let room = self.limits.max_rows.saturating_sub(file.rows).max(1) as usize;
            let take = room.min(total - offset);
            match file.write(&rb.slice(offset, take)) {
                Ok(()) => {
                    file.hold(notifiers);
                    self.metrics.add_sent(take as u64);
                    offset += take;
                    if file.rows >= self.limits.max_rows || file.size() >= self.limits.max_bytes {
                        if let Some(f) = self.files.remove(dir) {
                            self.close(f);
                        }
                    }
                }
                Err(e) => {
                    // The writer's state is unknown after a failed write: give up on that file
                    // (its earlier events are reported errored) and write these rows again into
                    // a new one.
                    self.metrics.error(
                        "io",
                        1,
                        &format_args!("{e}; the file is abandoned and its events reported errored"),
                    );
                    if let Some(f) = self.files.remove(dir) {
                        f.abandon();
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// Opens a new file in `dir`; `first` (the first rows it will get) decides its column
    /// encodings.
    fn open(
        &mut self,
        dir: &str,
        fields: Fields,
        schema: SchemaRef,
        first: &RecordBatch,
    ) -> Result<OpenFile, FileError> {
        let mut start = Utc::now();
        if let Some(last) = self.last_start {
            if start <= last {
                start = last + chrono::Duration::nanoseconds(1);
            }
        }
        self.last_start = Some(start);
        let stem = format!("part-{}-{}", start.format("%Y%m%dT%H%M%S%.9fZ"), uuid_v4());
        let props = file_properties(&self.props, first);
        OpenFile::create(Path::new(dir), &stem, fields, schema, props)
    }

    fn close(&self, f: OpenFile) {
        match blocking(|| f.finish()) {
            Ok((path, size, rows)) => {
                self.metrics.add_sent_bytes(size);
                tracing::debug!(path = %path.display(), rows, bytes = size, "parquet file written");
            }
            Err((e, notifiers)) => {
                for n in notifiers {
                    n.finalize(EventStatus::Errored);
                }
                self.metrics.error(
                    "io",
                    1,
                    &format_args!("{e}; its events are reported errored"),
                );
            }
        }
    }

    fn close_oldest(&mut self) {
        let oldest = self
            .files
            .iter()
            .min_by_key(|(_, f)| f.opened)
            .map(|(k, _)| k.clone());
        if let Some(f) = oldest.and_then(|k| self.files.remove(&k)) {
            self.close(f);
        }
    }

    fn close_aged(&mut self) {
        let max_age = self.limits.max_age;
        let aged: Vec<String> = self
            .files
            .iter()
            .filter(|(_, f)| f.opened.elapsed() >= max_age)
            .map(|(k, _)| k.clone())
            .collect();
        for k in aged {
            if let Some(f) = self.files.remove(&k) {
                self.close(f);
            }
        }
    }

    fn close_all(&mut self) {
        let all: Vec<String> = self.files.keys().cloned().collect();
        for k in all {
            if let Some(f) = self.files.remove(&k) {
                self.close(f);
            }
        }
    }
}

#[async_trait]
impl Sink for ParquetSink {
    async fn run(mut self: Box<Self>, mut input: SinkInput) -> Result<(), BoxError> {
        let tick_every = self
            .limits
            .max_age
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(10));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                b = input.next() => match b {
                    Some(batch) => self.handle(batch).await,
                    None => break,
                },
                _ = tick.tick() => self.close_aged(),
            }
        }
        self.close_all();
        Ok(())
    }
}

/// The schema of an auto-mode file: the event columns, then the unmatched column.
fn auto_schema(fields: &Fields, unmatched_column: Option<&str>) -> SchemaRef {
    let mut all: Vec<Arc<Field>> = fields.iter().cloned().collect();
    if let Some(name) = unmatched_column {
        all.push(Arc::new(Field::new(
            name,
            arrow_schema::DataType::Utf8,
            true,
        )));
    }
    Arc::new(Schema::new(all))
}

/// Cuts events into runs that share one schema. A run starts where an event's value conflicts
/// with the schema so far (an int field now holds a string); compatible changes (new fields,
/// int -> float) widen the current run's schema instead.
fn segments(
    logs: &[&LogEvent],
    base: Fields,
    reserved: Option<&str>,
) -> Vec<(Range<usize>, Fields)> {
    let mut out = Vec::new();
    let mut cur = base;
    let mut start = 0;
    let mut cuts = 0;
    for (i, e) in logs.iter().enumerate() {
        let Some(m) = e.as_map() else { continue };
        match fit_object(m, &cur, reserved) {
            Fit::Fits => {}
            Fit::Widens => {
                if let Some(new) = infer_object(m, reserved) {
                    cur = merge_fields(&cur, &new, Resolve::KeepOld).0;
                }
            }
            Fit::Conflicts => {
                let Some(new) = infer_object(m, reserved) else {
                    continue;
                };
                let resolve = if cuts < MAX_SCHEMA_CUTS_PER_BATCH {
                    Resolve::TakeNew
                } else {
                    Resolve::KeepOld
                };
                let (merged, _) = merge_fields(&cur, &new, resolve);
                if merged == cur {
                    continue;
                }
                if resolve == Resolve::TakeNew && incompatible_changes(&cur, &merged).is_empty() {
                    cur = merged;
                    continue;
                }
                if resolve == Resolve::KeepOld {
                    // Out of cuts: keep widening, the conflicting values become unmatched.
                    cur = merged;
                    continue;
                }
                if i > start {
                    out.push((start..i, cur));
                }
                cuts += 1;
                start = i;
                cur = merged;
            }
        }
    }
    if start < logs.len() || out.is_empty() {
        out.push((start..logs.len(), cur));
    }
    out
}

fn logs_of<'a>(batch: &'a EventBatch, idx: &[usize]) -> Vec<&'a LogEvent> {
    idx.iter()
        .filter_map(|&i| batch.events[i].as_log())
        .collect()
}

/// The distinct acknowledgement notifiers of some events (consecutive events usually share one).
fn notifiers_of<'a>(batch: &'a EventBatch, idx: &[usize]) -> Vec<&'a Finalizer> {
    let mut out: Vec<&Finalizer> = Vec::new();
    for &i in idx {
        if let Some(n) = &batch.events[i].metadata().notifier {
            // Consecutive events mostly share one; the search is over distinct batches only.
            if !out.iter().rev().any(|o| o.same_batch(n)) {
                out.push(n);
            }
        }
    }
    out
}

/// Runs blocking file work (fsync, rename) without stalling the other tasks on this worker.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// A random (version 4) UUID, for unique file names.
fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
