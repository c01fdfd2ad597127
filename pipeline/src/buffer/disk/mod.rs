//! A sink's buffer on disk (`buffer.type = "disk"`), under `data_dir/buffers/<sink id>/`.
//!
//! ```text
//! senders ──encode──▶ writer ──append──▶ 00000000000000000007.seg ─┐   (segments: framed,
//!   (the batch's holds wait for the group commit task's next sync   │    checksummed records,
//!    with `fsync = "batch"`; acknowledged once written otherwise)    ▼    see `format`)
//!                                                     reader ──decode──▶ sink
//!                                                        │
//!                         ack task ◀── the sink's outcome of each record, in order
//!                            └─▶ `ack` file (the next record to deliver), fully delivered
//!                                segments deleted, room given back to the writer
//! ```
//!
//! - **Durable, then acknowledged.** A batch's events are finalized `Delivered` to their
//!   source once their records are written (and synced, per the fsync policy: with `batch`, by
//!   group commit, see `writer::GroupCommit`; a failed sync finalizes them `Errored`): from then on
//!   the buffer owns them. The events the reader hands the sink carry a notifier of the
//!   buffer's own; the ack task advances the acknowledged position past a record only when
//!   the sink has finalized it, persists that position (`ack`, written atomically) and
//!   deletes the segments wholly before it. At start, reading resumes there.
//! - **A record the sink did not deliver** (`Errored`: the sink failed or gave up) is read
//!   again, with everything after it, after a second, while the pipeline runs; once the
//!   senders are gone (shutdown) the position stays there and the next start replays it.
//! - **Corruption never stops it.** A record that does not check is skipped to the next that
//!   does; a torn tail, a zeroed page, a missing segment, a damaged header likewise. Lost
//!   records (from the gap in sequence numbers, at least one per damaged stretch) and bytes
//!   are counted (`weir_buffer_corrupted_records_total`, `weir_buffer_corrupted_bytes_total`)
//!   and logged (at a bounded rate). Only a segment of another format version stops the
//!   start, with a message, so that an older Weir never misreads what a newer one wrote.
//! - **Bounded.** On disk: `max_size` bytes of segments (a batch waits, or with
//!   `drop_newest` is dropped and counted, while they are full; the segment being written is
//!   always allowed, so an oversized batch still passes an empty buffer). An event larger
//!   than a record can be (an eighth of `max_size`, at most 128 MiB) is refused at the door
//!   (`oversized`, finalized `Rejected`). In memory: the record being written and the one
//!   being read; the reader reads only when the sink asks.
//! - **Disk full** (or any write error): the partial write is cut off again (`set_len`), the
//!   error counted (`disk_full`, `io`) and logged, and the write retried every second: the
//!   senders wait (back-pressure) until space returns.

mod codec;
mod format;
mod reader;
mod writer;

pub use reader::DiskReceiver;
use reader::*;
use writer::*;
pub use writer::{DiskSender, ReaderGone};

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Notify};

use crate::event::{Event, EventBatch};
use crate::finalization::{BatchNotifier, BatchStatusReceiver, EventStatus};
use crate::metrics::{BufferGauge, ComponentMetrics};
use crate::vocabulary::WhenFull;

use format::{AckPosition, Read, RECORD_HEADER, SEGMENT_HEADER};

/// The smallest `max_size` of a disk buffer.
pub const MIN_DISK_BYTES: u64 = 256 << 10;
/// The largest segment file.
const MAX_SEGMENT: u64 = 128 << 20;
/// How long the senders wait between attempts to write after an error (a full disk).
const RETRY_WRITE: Duration = Duration::from_secs(1);
/// How long the reader waits before reading again what the sink did not deliver.
const REPLAY_DELAY: Duration = Duration::from_secs(1);

/// When the writer syncs what it wrote.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fsync {
    /// After every batch, before the batch is acknowledged to its source.
    Batch,
    /// Every so often (the batch is acknowledged once written to the page cache).
    Interval(Duration),
}

/// A disk buffer's settings.
#[derive(Debug, Clone)]
pub struct DiskOptions {
    /// Its folder (`data_dir/buffers/<sink id>`).
    pub dir: PathBuf,
    /// At most this many bytes of segments.
    pub max_bytes: u64,
    /// What a full buffer does.
    pub when_full: WhenFull,
    /// When writes are synced.
    pub fsync: Fsync,
    /// Reported as the buffer's event capacity (a disk buffer is bounded in bytes only).
    pub max_events: usize,
}

/// Why a disk buffer cannot open.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// The folder or a file cannot be used.
    #[error("disk buffer {dir}: {source}")]
    Io {
        /// The buffer's folder.
        dir: PathBuf,
        /// What failed.
        source: io::Error,
    },
    /// A segment of another format version.
    #[error(
        "disk buffer {dir}: segment {segment} was written in format version {version}, this Weir reads versions {} to {}: \
         drain it with the Weir that wrote it, or move the folder away to start empty",
        format::OLDEST_READABLE,
        format::VERSION
    )]
    Version {
        /// The buffer's folder.
        dir: PathBuf,
        /// The segment's id.
        segment: u64,
        /// Its version.
        version: u32,
    },
}

/// What the writer, the reader and the ack task share.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    max_payload: usize,
    when_full: WhenFull,
    fsync: Fsync,
    max_events: usize,
    metrics: Arc<ComponentMetrics>,
    /// The segment being written and how much of it is complete (the reader reads no
    /// further), under one lock so the two are never seen apart.
    mark: Mutex<(u64, u64)>,
    /// The oldest segment still on disk.
    oldest: AtomicU64,
    /// The acknowledged position (segment, offset).
    acked: Mutex<(u64, u64)>,
    /// Bytes of the segments on disk.
    disk_bytes: AtomicU64,
    /// Events written and not yet delivered, those of earlier runs included (the buffer
    /// gauge).
    events: AtomicI64,
    /// Every sender is gone.
    closed: AtomicBool,
    /// The receiver is gone.
    reader_gone: AtomicBool,
    /// New records were written (or the senders closed).
    data: Notify,
    /// Segments were deleted.
    space: Notify,
    /// Bumped when the reader must go back; records read before carry the old value.
    generation: AtomicU64,
    /// Where the reader must go back to.
    rewind: Mutex<Option<AckPosition>>,
}

impl Shared {
    fn mark(&self) -> (u64, u64) {
        *self.mark.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_mark(&self, segment: u64, committed: u64) {
        *self.mark.lock().unwrap_or_else(|p| p.into_inner()) = (segment, committed);
        self.data.notify_one();
    }

    fn corrupted(&self, records: u64, bytes: u64, what: &dyn std::fmt::Display) {
        self.metrics
            .add_counter("buffer_corrupted_records_total", None, records);
        self.metrics
            .add_counter("buffer_corrupted_bytes_total", None, bytes);
        // One line per damage found (each is found once, and each costs at least a record,
        // so there are never more lines than records): not rate-limited.
        tracing::warn!(
            component = %self.metrics.id,
            "disk buffer {}: {what}: skipped {records} record(s), {bytes} bytes (counted in weir_buffer_corrupted_records_total)",
            self.dir.display()
        );
    }
}

impl BufferGauge for Shared {
    fn events(&self) -> usize {
        self.events.load(Ordering::Relaxed).max(0) as usize
    }
    fn capacity(&self) -> usize {
        self.max_events
    }
    fn bytes(&self) -> usize {
        self.disk_bytes.load(Ordering::Relaxed) as usize
    }
    fn max_bytes(&self) -> usize {
        self.max_bytes as usize
    }
}

fn io_err(dir: &Path) -> impl Fn(io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        dir: dir.to_path_buf(),
        source,
    }
}

/// Opens (or creates) the disk buffer in `opts.dir`: checks its segments, finds where the
/// reader resumes and where the writer goes on, and starts a new segment to write. Must be
/// called within a tokio runtime (it starts the ack task).
pub fn open(
    opts: DiskOptions,
    metrics: Arc<ComponentMetrics>,
) -> Result<(DiskSender, DiskReceiver), DiskError> {
    let dir = opts.dir.clone();
    let dir_for_errors = opts.dir.clone();
    let err = io_err(&dir_for_errors);
    std::fs::create_dir_all(&dir).map_err(&err)?;
    let max_bytes = opts.max_bytes.max(MIN_DISK_BYTES);
    let segment_bytes = (max_bytes / 8).clamp(32 << 10, MAX_SEGMENT);
    let max_payload = (segment_bytes - SEGMENT_HEADER) as usize - RECORD_HEADER;

    let mut segments = format::list_segments(&dir).map_err(&err)?;
    for &id in &segments {
        let f = File::open(format::segment_path(&dir, id)).map_err(&err)?;
        if let format::Header::Version(version) = format::check_header(&f, id).map_err(&err)? {
            return Err(DiskError::Version {
                dir,
                segment: id,
                version,
            });
        }
    }
    let ack = match format::read_ack(&dir) {
        Ok(a) => a,
        Err(e) => {
            metrics.error(
                "buffer_corrupted",
                0,
                &format_args!(
                    "disk buffer {}: {e}: reading from the oldest record (some may be delivered twice)",
                    dir.display()
                ),
            );
            None
        }
    };
    // What was delivered before: gone.
    if let Some(a) = ack {
        for &id in segments.iter().filter(|&&id| id < a.segment) {
            std::fs::remove_file(format::segment_path(&dir, id)).map_err(&err)?;
        }
        segments.retain(|&id| id >= a.segment);
    }
    // The writer numbers on from the last record written (or the acknowledged position).
    let mut next_seq = ack.map_or(0, |a| a.next_seq);
    if let Some(&last) = segments.last() {
        if let (Some(seq), _) = scan(&dir, last, SEGMENT_HEADER, max_payload).map_err(&err)? {
            next_seq = next_seq.max(seq + 1);
        }
    }
    let active = segments
        .last()
        .map_or(0, |&l| l + 1)
        .max(ack.map_or(0, |a| a.segment + 1))
        .max(1);
    let mut disk_bytes = 0;
    for &id in &segments {
        disk_bytes += std::fs::metadata(format::segment_path(&dir, id))
            .map_err(&err)?
            .len();
    }
    let file = create_segment(&dir, active, opts.fsync == Fsync::Batch).map_err(&err)?;
    disk_bytes += SEGMENT_HEADER;
    let oldest = segments.first().copied().unwrap_or(active);
    let start = match ack {
        Some(a) if segments.first() == Some(&a.segment) => a,
        Some(a) => AckPosition {
            segment: oldest,
            offset: SEGMENT_HEADER,
            next_seq: a.next_seq,
        },
        None => AckPosition {
            segment: oldest,
            offset: SEGMENT_HEADER,
            next_seq: 0,
        },
    };
    // The events written before and not yet delivered: the buffer's gauge starts there. (A
    // record damaged after this count keeps its events in the gauge; it is counted corrupt.)
    let mut pending = 0u64;
    for &id in segments.iter().filter(|&&id| id >= start.segment) {
        let from = if id == start.segment {
            start.offset
        } else {
            SEGMENT_HEADER
        };
        pending += scan(&dir, id, from, max_payload).map_err(&err)?.1;
    }
    if !segments.is_empty() {
        tracing::info!(
            events = pending,
            buffer = %dir.display(),
            segments = segments.len(),
            bytes = disk_bytes,
            "disk buffer: resuming at segment {} offset {}",
            start.segment,
            start.offset
        );
    }

    let shared = Arc::new(Shared {
        dir,
        max_bytes,
        segment_bytes,
        max_payload,
        when_full: opts.when_full,
        fsync: opts.fsync,
        max_events: opts.max_events,
        metrics: metrics.clone(),
        mark: Mutex::new((active, SEGMENT_HEADER)),
        oldest: AtomicU64::new(oldest),
        acked: Mutex::new((start.segment, start.offset)),
        disk_bytes: AtomicU64::new(disk_bytes),
        events: AtomicI64::new(i64::try_from(pending).unwrap_or(i64::MAX)),
        closed: AtomicBool::new(false),
        reader_gone: AtomicBool::new(false),
        data: Notify::new(),
        space: Notify::new(),
        generation: AtomicU64::new(0),
        rewind: Mutex::new(None),
    });
    metrics.set_buffer(shared.clone());
    let writer = Arc::new(tokio::sync::Mutex::new(Writer {
        file: Arc::new(file),
        segment: active,
        len: SEGMENT_HEADER,
        next_seq,
        broken: false,
        dirty: false,
        created: false,
    }));
    if let Fsync::Interval(every) = opts.fsync {
        tokio::spawn(sync_every(Arc::downgrade(&writer), every));
    }
    let commit = (opts.fsync == Fsync::Batch).then(|| Arc::new(GroupCommit::default()));
    if let Some(c) = &commit {
        tokio::spawn(group_commit(c.clone(), shared.clone()));
    }
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    tokio::spawn(ack_task(shared.clone(), start, acks_rx));
    let guard = Arc::new(SendersGuard {
        shared: shared.clone(),
        writer: writer.clone(),
        commit: commit.clone(),
    });
    Ok((
        DiskSender {
            shared: shared.clone(),
            writer,
            commit,
            _guard: guard,
        },
        DiskReceiver {
            shared,
            state: Some(ReadState {
                segment: start.segment,
                file: None,
                limit: None,
                pos: start.offset,
                expected: (start.next_seq > 0 || ack.is_some()).then_some(start.next_seq),
                counted: 0,
                generation: 0,
            }),
            acks: acks_tx,
        },
    ))
}

/// Walks segment `id` from `from`: the sequence number of its last record that checks, and
/// how many events the records that check hold.
fn scan(dir: &Path, id: u64, from: u64, max_payload: usize) -> io::Result<(Option<u64>, u64)> {
    let f = File::open(format::segment_path(dir, id))?;
    let len = f.metadata()?.len();
    let mut pos = from;
    let (mut last, mut events) = (None, 0);
    loop {
        match format::read_at(&f, pos, len, max_payload)? {
            Read::Record(r) => {
                last = Some(r.seq);
                events += u64::from(r.events);
                pos = r.end;
            }
            Read::Corrupt { next } => pos = next,
            Read::Incomplete => return Ok((last, events)),
        }
    }
}

/// Creates segment `id` with its header, synced with its folder entry when `sync`.
fn create_segment(dir: &Path, id: u64, sync: bool) -> io::Result<File> {
    let path = format::segment_path(dir, id);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let written = f
        .write_all_at(&format::segment_header(id), 0)
        .and_then(|()| {
            if sync {
                f.sync_data()?;
                format::sync_dir(dir)?;
            }
            Ok(())
        });
    match written {
        Ok(()) => Ok(f),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests;
