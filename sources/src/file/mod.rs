//! `file`: follows log files matched by globs, through rotations and restarts, without losing
//! or repeating lines.
//!
//! The work is split by concern:
//! - [`discovery`]: which paths match `include` and not `exclude` (polled every
//!   `glob_minimum_cooldown_ms`);
//! - [`fingerprint`]: what makes two paths the same file content;
//! - [`tail`]: the per-file state machine and the reading thread (reusable by other sources
//!   through its [`tail::LineHandler`] trait);
//! - [`lines`]: line splitting in UTF-8 or UTF-16;
//! - [`multiline`]: joining lines into one event;
//! - [`handler`]: lines to events with their fields;
//! - [`checkpoint`]: positions on disk.
//!
//! This module holds the options and the async side: it forwards the tailer's batches
//! downstream and, when the batches are done (delivered, with acknowledgements on), advances
//! the checkpoints and writes them to `<data_dir>/<source id>/checkpoints.json` once a second,
//! at shutdown, and right after acknowledgements that were held downstream (a window of an
//! `aggregate`) arrive.

pub mod checkpoint;
pub mod discovery;
pub mod fingerprint;
mod handler;
pub mod lines;
pub mod multiline;
pub mod tail;
pub mod watch;

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use weir_pipeline::codec::{DecodingConfig, DEFAULT_MAX_LINE_BYTES};
use weir_pipeline::component::{Output, Source, SourceConfig, SourceContext};
use weir_pipeline::config::SecsOrZero;
use weir_pipeline::event::EventBatch;
use weir_pipeline::finalization::{BatchNotifier, BatchStatusReceiver, EventStatus};
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use checkpoint::{CheckpointError, Checkpoints};
use discovery::Discovery;
use fingerprint::{Fingerprint, FingerprintConfig, Fingerprinter};
use lines::CharsetConfig;
use multiline::{Multiline, MultilineConfig};
use tail::{Position, ReadBatch, TailConfig, Tailer};

/// How often checkpoints are written (when they changed).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// An acknowledgement that took this long was held downstream (a transform's window, a sink's
/// batch): those arrive together, and the checkpoints are written right after them rather
/// than at the next [`CHECKPOINT_INTERVAL`], so a crash in between does not read again what
/// was just delivered (a whole window, counted twice).
const HELD_ACK: Duration = Duration::from_millis(250);
/// The least time between two such prompt writes.
const PROMPT_SAVE_GAP: Duration = Duration::from_millis(100);
/// Batches sent and not yet acknowledged before the source stops reading. Windowed transforms
/// hold the acknowledgements of a window's inputs until it is emitted, so this bounds how much
/// one window can take in (4,096 batches of up to 1,000 lines); an outstanding batch costs its
/// positions and a receiver (about 100 bytes), the events themselves are bounded by buffers.
const MAX_OUTSTANDING_BATCHES: usize = 4096;
/// Checkpoints of files not seen for this long are forgotten.
const CHECKPOINT_MAX_AGE_SECS: i64 = checkpoint::MAX_AGE_SECS;

/// `read_from`: where a file first seen starts.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ReadFrom {
    #[default]
    Beginning,
    End,
}

/// `line_delimiter`: one byte, or `"\r\n"` (read as `"\n"`, the `\r` is removed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(try_from = "String", into = "String")]
pub struct Delimiter(pub u8);

impl TryFrom<String> for Delimiter {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.as_bytes() {
            [b] => Ok(Delimiter(*b)),
            b"\r\n" => Ok(Delimiter(b'\n')),
            _ => Err(format!(
                "line_delimiter {s:?} is not supported: use a single byte (\"\\n\", \"\\u0000\", \";\") or \"\\r\\n\""
            )),
        }
    }
}

impl From<Delimiter> for String {
    fn from(d: Delimiter) -> String {
        char::from(d.0).to_string()
    }
}

impl Default for Delimiter {
    fn default() -> Self {
        Delimiter(b'\n')
    }
}

/// `type = "file"`: tails files matched by globs.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    /// Globs of the files to read: `*`, `?`, `[ab]`, `**` for any depth. Here `*` and `?` do not
    /// match `/`, and they do match a leading `.`. A relative glob is relative to the working
    /// directory. A glob that matches nothing (yet) is not an error. Required.
    pub include: Vec<String>,
    /// Globs of paths to leave out, matched against the full paths `include` found. Unlike in
    /// `include`, `*` and `?` here also match `/`: `"/var/log/*.gz"` also excludes
    /// `/var/log/old/a.gz`. Default: none.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// The globs are walked again at most this often, in milliseconds. Values under 10 are taken as
    /// 10. Default: 1000.
    #[serde(default = "default_cooldown")]
    pub glob_minimum_cooldown_ms: u64,
    /// Where files start when the source has no checkpoint file yet (its very first start):
    /// `beginning` or `end`. Files that appear later are always read from their beginning. See [the
    /// caveats](#reading-from-the-end). Default: `beginning`.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// How a file is recognised across renames and restarts. See [Fingerprints](#fingerprints).
    /// Default: `{ strategy = "checksum", lines = 1, bytes = 256, ignored_header_bytes = 0 }`.
    #[serde(default)]
    pub fingerprint: FingerprintConfig,
    /// Lines longer than this many bytes are skipped, up to the next delimiter, without being held
    /// in memory, and counted as `oversized` errors. It also bounds a multiline group. For UTF-16
    /// files, it counts UTF-16 bytes. Must be at least 1. Default: 1048576 (1 MiB).
    #[serde(default = "default_max_line")]
    pub max_line_bytes: usize,
    /// The line delimiter: a single byte, so one ASCII character (`"\n"`, `"\u0000"`, `";"`), or
    /// `"\r\n"`, which is read as `"\n"`. Any other string is a configuration error. Whatever the
    /// delimiter, a `\r` just before it is removed. Default: `"\n"`.
    #[serde(default)]
    pub line_delimiter: Delimiter,
    /// The files' encoding. UTF-16 lines are converted to UTF-8 (malformed units become U+FFFD). A
    /// byte order mark that agrees with the charset is skipped. Default: `auto`.
    #[serde(default)]
    pub charset: CharsetConfig,
    /// Files not modified for this many seconds are not opened when they are found. Open files that
    /// have read nothing for this long are closed until they change. Default: none.
    #[serde(default)]
    pub ignore_older_secs: Option<SecsOrZero>,
    /// The most files open at once. Others wait, and open files are closed to let them in (see
    /// [Open files](#open-files)). Must be at least 1. Default: 512.
    #[serde(default = "default_max_open")]
    pub max_open_files: usize,
    /// A file renamed out of the globs or deleted is read to its end, then kept open until it
    /// has had no new data for this long (a writer may still append), then released
    /// (milliseconds). Default: 5000.
    #[serde(default = "default_rotate_wait")]
    pub rotate_wait_ms: u64,
    /// Delete a file once it is read to its end, its checkpoint covers everything read, and it has
    /// not grown for this many seconds. See [Removing files](#removing-files). Default: none (never
    /// delete).
    #[serde(default)]
    pub remove_after_secs: Option<SecsOrZero>,
    /// Join consecutive lines into one event (stack traces). See [Multiline](#multiline). Default:
    /// none.
    #[serde(default)]
    pub multiline: Option<MultilineConfig>,
    /// How each line (or joined group) becomes events: `decoding.codec` is `bytes`, `json`,
    /// `logfmt`, `syslog` or `hubble_jsonpb`. See [codecs](codecs.md#decoding). Default: `{ codec =
    /// "bytes" }`.
    #[serde(default)]
    pub decoding: DecodingConfig,
}

pub(crate) fn default_cooldown() -> u64 {
    1000
}
pub(crate) fn default_max_line() -> usize {
    DEFAULT_MAX_LINE_BYTES
}
pub(crate) fn default_max_open() -> usize {
    512
}
pub(crate) fn default_rotate_wait() -> u64 {
    5000
}

impl FileSourceConfig {
    /// The tailer's configuration, or what is wrong with the options.
    pub fn tail_config(&self) -> Result<TailConfig, String> {
        let discovery = Discovery::new(&self.include, &self.exclude).map_err(|e| e.to_string())?;
        if self.max_open_files == 0 {
            return Err("`max_open_files` must be at least 1".into());
        }
        if self.max_line_bytes == 0 {
            return Err("`max_line_bytes` must be at least 1".into());
        }
        Ok(TailConfig {
            discovery,
            glob_cooldown: Duration::from_millis(self.glob_minimum_cooldown_ms.max(10)),
            read_from_end: self.read_from == ReadFrom::End,
            fingerprinter: Fingerprinter::new(&self.fingerprint, self.line_delimiter.0),
            delimiter: self.line_delimiter.0,
            max_line_bytes: self.max_line_bytes,
            charset: self.charset,
            ignore_older: self.ignore_older_secs.map(SecsOrZero::duration),
            max_open_files: self.max_open_files,
            rotate_wait: Duration::from_millis(self.rotate_wait_ms),
            remove_after: self.remove_after_secs.map(SecsOrZero::duration),
        })
    }
}

#[async_trait]
impl SourceConfig for FileSourceConfig {
    async fn build(&self, cx: SourceContext) -> Result<Source, BoxError> {
        let tail_cfg = self.tail_config()?;
        let multiline = match &self.multiline {
            Some(m) => Some(Multiline::new(m, self.max_line_bytes)?),
            None => None,
        };
        let host = match hostname::get() {
            Ok(h) => Some(Bytes::from(h.to_string_lossy().into_owned())),
            Err(e) => {
                tracing::warn!(component = %cx.id, "cannot read the host name ({e}); events have no `host` field");
                None
            }
        };
        let handler = handler::FileLines::new(
            self.decoding.codec,
            cx.id.clone(),
            host,
            multiline,
            cx.metrics.clone(),
        );
        let (table, dir) = load_checkpoints(&cx)?;
        let tailer = Tailer::new(tail_cfg, handler, cx.metrics.clone(), table.clone());
        Ok(Box::pin(run(tailer, table, dir, cx)))
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::default_output(DataType::LOG)]
    }

    fn can_acknowledge(&self) -> bool {
        true
    }
}

/// Loads the checkpoints of the source `cx` (in `<data_dir>/<source id>/`), for a tailer.
pub(crate) fn load_checkpoints(
    cx: &SourceContext,
) -> Result<(Arc<Mutex<Checkpoints>>, PathBuf), BoxError> {
    let dir = cx.data_dir.join(&*cx.id);
    let (table, err) = Checkpoints::load(&dir);
    match err {
        Some(e @ CheckpointError::CreateDir { .. }) => return Err(e.to_string().into()),
        Some(e) => cx.metrics.error("checkpoint", 1, &e),
        None => {}
    }
    if !cx.acknowledgements {
        tracing::info!(component = %cx.id, "acknowledgements are off: checkpoints advance when lines are handed to the pipeline, so a crash can lose what was in flight; set `acknowledgements = true` on this source to advance them only after delivery");
    }
    Ok((Arc::new(Mutex::new(table)), dir))
}

fn lock(c: &Mutex<Checkpoints>) -> std::sync::MutexGuard<'_, Checkpoints> {
    match c.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// A batch sent downstream whose fate is not known yet.
struct Outstanding {
    /// `None` for a batch without events (positions only): done as soon as those before it.
    rx: Option<BatchStatusReceiver>,
    positions: Vec<Position>,
    /// When it was sent (with acknowledgements).
    sent: std::time::Instant,
}

/// Applies the positions of done batches and writes the checkpoints.
struct Progress {
    table: Arc<Mutex<Checkpoints>>,
    dir: PathBuf,
    metrics: Arc<ComponentMetrics>,
    /// Files with a batch that was not delivered: their checkpoint stays before it, so the
    /// next start reads those lines again.
    frozen: HashSet<Fingerprint>,
    started: std::time::Instant,
}

impl Progress {
    fn apply(&mut self, status: EventStatus, positions: Vec<Position>) {
        let now = chrono::Utc::now().timestamp();
        match status {
            // A rejection is final: reading the lines again would be rejected again.
            EventStatus::Delivered | EventStatus::Rejected => {
                let mut t = lock(&self.table);
                for p in positions {
                    if !self.frozen.contains(&p.fingerprint) {
                        t.set_offset(p.fingerprint, p.offset, p.done, now);
                    }
                }
            }
            EventStatus::Errored => {
                let t = lock(&self.table);
                let files: Vec<String> = positions
                    .iter()
                    .map(|p| {
                        t.get(&p.fingerprint)
                            .map(|e| e.path.display().to_string())
                            .unwrap_or_else(|| p.fingerprint.to_string())
                    })
                    .collect();
                drop(t);
                self.frozen.extend(positions.iter().map(|p| p.fingerprint));
                self.metrics.error(
                    "not_delivered",
                    1,
                    &format_args!(
                        "a batch of lines from {} was not delivered (a sink gave up or a buffer dropped it); the checkpoints of these files stay before it, so they are read again from there at the next start",
                        files.join(", ")
                    ),
                );
            }
        }
    }

    /// Writes the checkpoints if they changed; returns whether it wrote (or tried to).
    async fn save(&self) -> bool {
        let bytes = {
            let mut t = lock(&self.table);
            if !t.is_dirty() {
                return false;
            }
            // Entries are not pruned right after start: the tailer first looks for files
            // rotated while weir was stopped, using them.
            if self.started.elapsed() > Duration::from_secs(60) {
                t.prune(chrono::Utc::now().timestamp(), CHECKPOINT_MAX_AGE_SECS);
            }
            t.snapshot()
        };
        let dir = self.dir.clone();
        let res =
            tokio::task::spawn_blocking(move || checkpoint::write_atomically(&dir, &bytes)).await;
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                lock(&self.table).set_dirty();
                self.metrics.error("checkpoint", 1, &e);
            }
            Err(e) => self.metrics.error(
                "checkpoint",
                1,
                &format_args!("writing checkpoints failed: {e}"),
            ),
        }
        true
    }
}

/// The status of the oldest outstanding batch if it is known already.
fn ready_status(pending: &mut VecDeque<Outstanding>) -> Option<EventStatus> {
    match pending.front_mut()? {
        Outstanding { rx: Some(rx), .. } => rx.try_recv(),
        Outstanding { rx: None, .. } => Some(EventStatus::Delivered),
    }
}

async fn next_status(pending: &mut VecDeque<Outstanding>) -> EventStatus {
    match pending.front_mut() {
        Some(Outstanding { rx: Some(rx), .. }) => rx.await,
        Some(Outstanding { rx: None, .. }) => EventStatus::Delivered,
        None => std::future::pending().await,
    }
}

/// Runs `tailer` on its own thread and forwards its batches downstream, advancing the
/// checkpoints in `table` (saved to `dir`) as batches are done. Shared by the file-based
/// sources.
pub(crate) async fn run<H: tail::LineHandler + 'static>(
    tailer: Tailer<H>,
    table: Arc<Mutex<Checkpoints>>,
    dir: PathBuf,
    cx: SourceContext,
) -> Result<(), BoxError> {
    let SourceContext {
        id,
        out,
        shutdown,
        acknowledgements,
        metrics,
        ..
    } = cx;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<ReadBatch>(2);
    let stop = Arc::new(AtomicBool::new(false));
    let thread_stop = stop.clone();
    let thread = std::thread::Builder::new()
        .name(format!("weir-file-{id}"))
        .spawn(move || {
            let mut send = |b: ReadBatch| tx.blocking_send(b).is_ok();
            tailer.run(&thread_stop, &mut send);
        })
        .map_err(|e| format!("cannot start the file reader thread: {e}"))?;
    let mut progress = Progress {
        table,
        dir,
        metrics,
        frozen: HashSet::new(),
        started: std::time::Instant::now(),
    };
    let mut out = Some(out);
    let mut pending: VecDeque<Outstanding> = VecDeque::new();
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + CHECKPOINT_INTERVAL,
        CHECKPOINT_INTERVAL,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the checkpoints were last written.
    let mut last_save = tokio::time::Instant::now();
    let mut stopping = false;
    let mut input_done = false;
    loop {
        if input_done && pending.is_empty() {
            break;
        }
        tokio::select! {
            biased;
            // First: with acknowledgements arriving continuously and the reader always
            // having a batch ready, the branches below are always ready, and a periodic write
            // polled after them never ran (every kill -9 read everything again).
            _ = tick.tick() => {
                if progress.save().await {
                    last_save = tokio::time::Instant::now();
                }
            }
            status = next_status(&mut pending) => {
                let mut status = Some(status);
                let mut held = false;
                // Statuses come in runs (a window's inputs are acknowledged together):
                // apply every one known already, then write once if they were held.
                while let Some(s) = status {
                    let Some(o) = pending.pop_front() else { break };
                    held |= o.rx.is_some() && o.sent.elapsed() >= HELD_ACK;
                    progress.apply(s, o.positions);
                    status = ready_status(&mut pending);
                }
                if held {
                    if last_save.elapsed() >= PROMPT_SAVE_GAP {
                        if progress.save().await {
                            last_save = tokio::time::Instant::now();
                        }
                    } else {
                        // Written a moment ago: the next periodic write comes early instead.
                        tick.reset_at(last_save + PROMPT_SAVE_GAP);
                    }
                }
            }
            b = rx.recv(), if !input_done && pending.len() < MAX_OUTSTANDING_BATCHES => {
                let Some(batch) = b else {
                    // The reader finished (stopped): let the downstream drain, then wait for
                    // the last acknowledgements.
                    input_done = true;
                    out = None;
                    continue;
                };
                let ReadBatch { events, positions } = batch;
                let Some(o) = out.as_mut() else { continue };
                if events.is_empty() {
                    if pending.is_empty() {
                        progress.apply(EventStatus::Delivered, positions);
                    } else {
                        pending.push_back(Outstanding { rx: None, positions, sent: std::time::Instant::now() });
                    }
                    continue;
                }
                let mut batch = EventBatch::new(events);
                let rx_status = if acknowledgements {
                    let (n, r) = BatchNotifier::new_with_receiver();
                    batch.attach_notifier(&n);
                    Some(r)
                } else {
                    None
                };
                if o.send(batch).await.is_err() {
                    // Every consumer is gone: nothing more can be delivered.
                    stop.store(true, Ordering::Release);
                    input_done = true;
                    out = None;
                    rx.close();
                    pending.clear();
                    continue;
                }
                let sent = std::time::Instant::now();
                match rx_status {
                    Some(r) => pending.push_back(Outstanding { rx: Some(r), positions, sent }),
                    None if pending.is_empty() => progress.apply(EventStatus::Delivered, positions),
                    None => pending.push_back(Outstanding { rx: None, positions, sent }),
                }
            }
            _ = shutdown.cancelled(), if !stopping => {
                stopping = true;
                stop.store(true, Ordering::Release);
            }
        }
    }
    drop(rx);
    progress.save().await;
    let joined = tokio::task::spawn_blocking(move || thread.join()).await;
    if !matches!(joined, Ok(Ok(()))) {
        return Err("the file reader thread panicked".into());
    }
    if !stopping {
        tracing::debug!(component = %id, "file source stopped: the downstream is gone");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::Write;
    use weir_pipeline::buffer::{buffer, Fanout};
    use weir_pipeline::component::SourceSender;
    use weir_pipeline::metrics::MetricsRegistry;
    use weir_pipeline::shutdown::ShutdownToken;
    use weir_pipeline::vocabulary::WhenFull;

    /// Acknowledgements arrive continuously (each batch is acknowledged when the next one
    /// arrives) and the reader always has a batch ready: the checkpoints must still be
    /// written while the stream goes on, not only at its end. Before the periodic write was
    /// polled first, it never ran here until the input was exhausted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn checkpoints_are_written_while_acknowledgements_arrive_continuously() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.log");
        {
            // 40 MiB: about 400 batches, each held by the consumer for 10 ms (4 s), more
            // than the 1 s checkpoint interval whatever the machine's speed.
            let mut f = std::io::BufWriter::new(std::fs::File::create(&input).unwrap());
            for i in 0..400_000 {
                writeln!(f, "{i:09} {}", "x".repeat(93)).unwrap();
            }
        }
        let cfg: FileSourceConfig =
            toml::from_str(&format!("include = [\"{}\"]", input.display())).unwrap();
        let metrics = ComponentMetrics::detached("src");
        let (tx, mut rx) = buffer(1000, WhenFull::Block, metrics.clone());
        let out = SourceSender::new(
            Some(Fanout::new(vec![(Arc::from("sink"), tx)], metrics.clone())),
            BTreeMap::new(),
            metrics.clone(),
        );
        let shutdown = ShutdownToken::new();
        let cx = SourceContext {
            id: Arc::from("src"),
            out,
            shutdown: shutdown.clone(),
            acknowledgements: true,
            data_dir: dir.path().join("data"),
            metrics: metrics.clone(),
            registry: Arc::new(MetricsRegistry::default()),
        };
        let source = tokio::spawn(cfg.build(cx).await.unwrap());
        let checkpoints = dir.path().join("data/src").join(checkpoint::FILE_NAME);
        let mut held: Option<EventBatch> = None;
        let mut lines = 0usize;
        let mut written_at = None;
        while lines < 400_000 {
            let Some(b) = rx.recv().await else { break };
            lines += b.len();
            if let Some(mut prev) = held.take() {
                prev.finalize(EventStatus::Delivered);
            }
            if written_at.is_none() && checkpoints.exists() {
                written_at = Some(lines);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            held = Some(b);
        }
        if let Some(mut prev) = held.take() {
            prev.finalize(EventStatus::Delivered);
        }
        shutdown.cancel();
        source.await.unwrap().unwrap();
        assert_eq!(lines, 400_000);
        let at = written_at.expect("no checkpoint was written during the stream");
        assert!(at < 400_000, "the first checkpoint came at the end ({at})");
    }
}
