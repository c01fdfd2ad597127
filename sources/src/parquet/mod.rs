//! `parquet`: replays Parquet files (a list, a directory or a glob; Hive-partitioned
//! directories work) as events, in path order, then ends, so `weir run` exits after draining:
//! offline jobs are plain commands.
//!
//! - [`discover`]: which files, and the time their partition directories cover;
//! - [`read`]: the reader thread (row-group pruning by statistics, resume points, decoding);
//! - [`values`]: Arrow columns to event values, and the metrics long format to metrics;
//! - [`progress`]: the terminal progress bar.
//!
//! This file holds the options and the async loop: it forwards batches and, with `resume`,
//! keeps a checkpoint (per file, how many rows were delivered) that advances only when the
//! sinks acknowledge, so a killed replay continues where it was without losing rows.

pub mod discover;
pub mod progress;
pub mod read;
pub mod values;

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use weir_pipeline::component::{Output, Source, SourceConfig, SourceContext};
use weir_pipeline::event::{EventBatch, MAX_BATCH_EVENTS};
use weir_pipeline::finalization::{BatchNotifier, BatchStatusReceiver, EventStatus};
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use discover::{parse_time, TimeRange};
use read::{Chunk, Plan};

/// `type = "parquet"`: reads Parquet files as events (logs, or metrics for files in the
/// metrics long format written by the `parquet` sink) and ends when they are read.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParquetSourceConfig {
    /// Files, directories (every `*.parquet` file below them) or glob patterns
    /// (`/data/logs/**/*.parquet`; `*` does not cross `/`, `**` does). Hidden files and files
    /// starting with `_` are skipped when walking. Relative paths are relative to the working
    /// directory. A glob that matches nothing is not an error: the source simply ends. Required (at
    /// least one).
    pub paths: Vec<String>,
    /// Only rows at or after this time (RFC 3339 or `YYYY-MM-DD`). Default: unset.
    #[serde(default)]
    pub start_time: Option<String>,
    /// Only rows before this time (RFC 3339 or `YYYY-MM-DD`). Default: unset.
    #[serde(default)]
    pub end_time: Option<String>,
    /// The top-level timestamp column the time range applies to. Default: `timestamp`.
    #[serde(default = "default_timestamp_field")]
    pub timestamp_field: String,
    /// Emit null columns as `null` fields. By default they are left out (Parquet cannot tell a null
    /// from a missing field; sparse events come back as they were written). Default: false.
    #[serde(default)]
    pub keep_nulls: bool,
    /// Add each `key=value` directory part of a file's path as a string field (fields the row
    /// already has are not replaced). Default: false.
    #[serde(default)]
    pub partition_fields: bool,
    /// Rows per batch of events. Default: 1000.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Progress bar on stderr (files, rows, rows/s, ETA): `auto` draws it only when stderr is a
    /// terminal, `always` also into a pipe or file, `never` not at all. Default: `auto`.
    #[serde(default)]
    pub progress: ProgressMode,
    /// Keep in `data_dir/<id>/parquet-checkpoint.json` how many rows of each file were delivered
    /// (advanced on acknowledgement) and skip them on the next run: a killed replay continues, a
    /// finished one reads nothing again. Needs `acknowledgements = true`. Default: false.
    #[serde(default)]
    pub resume: bool,
}

fn default_timestamp_field() -> String {
    "timestamp".to_string()
}

fn default_batch_size() -> usize {
    MAX_BATCH_EVENTS
}

/// When the progress bar is drawn.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ProgressMode {
    #[default]
    Auto,
    Always,
    Never,
}

/// How far one file was delivered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileProgress {
    /// Rows before this position were delivered (or filtered out).
    pub rows_done: u64,
    /// The whole file was delivered.
    pub complete: bool,
}

/// The resume checkpoint, by canonical file path.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Checkpoint {
    files: BTreeMap<String, FileProgress>,
}

impl ParquetSourceConfig {
    fn time_range(&self) -> Result<Option<TimeRange>, String> {
        let ns = |s: &Option<String>, field: &str| -> Result<Option<i64>, String> {
            s.as_deref()
                .map(|s| {
                    parse_time(s)
                        .map_err(|e| format!("`{field}`: {e}"))?
                        .timestamp_nanos_opt()
                        .ok_or_else(|| format!("`{field}`: out of the nanosecond range"))
                })
                .transpose()
        };
        let start = ns(&self.start_time, "start_time")?;
        let end = ns(&self.end_time, "end_time")?;
        if start.is_none() && end.is_none() {
            return Ok(None);
        }
        let r = TimeRange {
            start: start.unwrap_or(i64::MIN),
            end: end.unwrap_or(i64::MAX),
        };
        if r.start >= r.end {
            return Err("`start_time` must be before `end_time`".into());
        }
        Ok(Some(r))
    }
}

#[async_trait]
impl SourceConfig for ParquetSourceConfig {
    async fn build(&self, cx: SourceContext) -> Result<Source, BoxError> {
        if self.paths.is_empty() {
            return Err("`paths` needs at least one file, directory or glob".into());
        }
        if self.batch_size == 0 {
            return Err("`batch_size` must be at least 1".into());
        }
        for p in &self.paths {
            if p.contains(['*', '?', '[', '{']) {
                globset::Glob::new(p).map_err(|e| format!("`paths`: bad glob `{p}`: {e}"))?;
            }
        }
        if self.resume && !cx.acknowledgements {
            return Err(
                "`resume = true` needs `acknowledgements = true` (the checkpoint advances on \
                 delivery)"
                    .into(),
            );
        }
        let range = self.time_range()?;
        let checkpoint_path = cx.data_dir.join(&*cx.id).join("parquet-checkpoint.json");
        let checkpoint = if self.resume {
            load_checkpoint(&checkpoint_path)?
        } else {
            Checkpoint::default()
        };
        let progress = match self.progress {
            ProgressMode::Auto => std::io::stderr().is_terminal(),
            ProgressMode::Always => true,
            ProgressMode::Never => false,
        };
        let plan = Plan {
            patterns: self.paths.clone(),
            range,
            timestamp_field: self.timestamp_field.clone(),
            keep_nulls: self.keep_nulls,
            hive_fields: self.partition_fields,
            batch_size: self.batch_size,
            progress,
            source_id: cx.id.clone(),
            done: checkpoint.files.clone(),
        };
        let resume = self.resume.then_some((checkpoint, checkpoint_path));
        Ok(Box::pin(run(plan, resume, cx)))
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::default_output(
            DataType::LOG.union(DataType::METRIC),
        )]
    }

    fn can_acknowledge(&self) -> bool {
        true
    }
}

fn load_checkpoint(path: &Path) -> Result<Checkpoint, String> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            format!(
                "checkpoint {} is unreadable ({e}); remove it to start over",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Checkpoint::default()),
        Err(e) => Err(format!("cannot read checkpoint {}: {e}", path.display())),
    }
}

/// Writes the checkpoint atomically: temp file, fsync, rename.
fn save_checkpoint(path: &Path, cp: &Checkpoint) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp: PathBuf = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(cp).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// A sent batch whose delivery the checkpoint waits for.
struct Pending {
    file: Arc<str>,
    raw_end: u64,
    file_done: bool,
    /// `None` for chunks without events (nothing to wait for, but they keep their place).
    rx: Option<BatchStatusReceiver>,
    status: Option<EventStatus>,
}

/// The checkpoint state of a resuming run.
struct Resume {
    checkpoint: Checkpoint,
    path: PathBuf,
    dirty: bool,
    /// Files with an undelivered batch: their position stays where it was for this run.
    stuck: BTreeMap<Arc<str>, ()>,
}

impl Resume {
    fn apply(&mut self, p: Pending, metrics: &weir_pipeline::metrics::ComponentMetrics) {
        if self.stuck.contains_key(&p.file) {
            return;
        }
        match p.status.unwrap_or(EventStatus::Delivered) {
            EventStatus::Delivered => {
                let e = self.checkpoint.files.entry(p.file.to_string()).or_default();
                e.rows_done = e.rows_done.max(p.raw_end);
                e.complete |= p.file_done;
                self.dirty = true;
            }
            other => {
                metrics.error(
                    "delivery",
                    1,
                    &format_args!(
                        "{}: a batch was {other:?}; the checkpoint stays before it so the next \
                         run replays it",
                        p.file
                    ),
                );
                self.stuck.insert(p.file, ());
            }
        }
    }

    async fn save(&mut self, metrics: &weir_pipeline::metrics::ComponentMetrics) {
        if !self.dirty {
            return;
        }
        let path = self.path.clone();
        let cp = self.checkpoint.clone();
        let res = tokio::task::spawn_blocking(move || save_checkpoint(&path, &cp)).await;
        match res {
            Ok(Ok(())) => self.dirty = false,
            Ok(Err(e)) => metrics.error(
                "checkpoint",
                1,
                &format_args!("cannot write {}: {e}", self.path.display()),
            ),
            Err(e) => metrics.error("checkpoint", 1, &format_args!("checkpoint task: {e}")),
        }
    }
}

/// Waits for the oldest pending batch that still needs an acknowledgement.
async fn front_status(pending: &mut VecDeque<Pending>) -> EventStatus {
    match pending.front_mut().and_then(|p| p.rx.as_mut()) {
        Some(rx) => rx.await,
        None => std::future::pending().await,
    }
}

async fn run(
    plan: Plan,
    resume: Option<(Checkpoint, PathBuf)>,
    cx: SourceContext,
) -> Result<(), BoxError> {
    let SourceContext {
        out,
        shutdown,
        acknowledgements,
        metrics,
        ..
    } = cx;
    let mut out = Some(out);
    let mut resume = resume.map(|(checkpoint, path)| Resume {
        checkpoint,
        path,
        dirty: false,
        stuck: BTreeMap::new(),
    });
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(4);
    let thread_metrics = metrics.clone();
    std::thread::Builder::new()
        .name("weir-parquet".into())
        .spawn(move || read::run(plan, thread_metrics, tx))
        .map_err(|e| format!("cannot start the parquet reader thread: {e}"))?;

    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reading = true;
    loop {
        if !reading {
            // Nothing more to send: let downstream see the end so sinks flush (and
            // acknowledge what they hold).
            out = None;
            if pending.is_empty() || resume.is_none() {
                break;
            }
        }
        let waiting_ack = pending.front().is_some_and(|p| p.rx.is_some());
        tokio::select! {
            _ = shutdown.cancelled(), if reading => {
                reading = false;
                rx.close();
            }
            chunk = rx.recv(), if reading => match chunk {
                None => reading = false,
                Some(c) => {
                    let Some(sender) = out.as_mut() else { continue };
                    let mut batch = EventBatch::new(c.events);
                    let mut ack = None;
                    if acknowledgements && resume.is_some() && !batch.is_empty() {
                        let (n, r) = BatchNotifier::new_with_receiver();
                        batch.attach_notifier(&n);
                        ack = Some(r);
                    }
                    if sender.send(batch).await.is_err() {
                        reading = false;
                        rx.close();
                        continue;
                    }
                    if resume.is_some() {
                        pending.push_back(Pending {
                            file: c.file,
                            raw_end: c.raw_end,
                            file_done: c.file_done,
                            rx: ack,
                            status: None,
                        });
                    }
                }
            },
            s = front_status(&mut pending), if waiting_ack => {
                if let Some(p) = pending.front_mut() {
                    p.rx = None;
                    p.status = Some(s);
                }
            }
            _ = tick.tick() => {
                if let Some(r) = resume.as_mut() {
                    r.save(&metrics).await;
                }
            }
        }
        // Apply, in order, every batch at the front whose fate is known.
        while pending.front().is_some_and(|p| p.rx.is_none()) {
            if let (Some(p), Some(r)) = (pending.pop_front(), resume.as_mut()) {
                r.apply(p, &metrics);
            }
        }
    }
    drop(out);
    if let Some(r) = resume.as_mut() {
        r.save(&metrics).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
