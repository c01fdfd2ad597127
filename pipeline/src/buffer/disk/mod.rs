//! A sink's buffer on disk (`buffer.type = "disk"`), under `data_dir/buffers/<sink id>/`.
//!
//! ```text
//! senders ──encode──▶ writer ──append──▶ 00000000000000000007.seg ─┐   (segments: framed,
//!   (the batch is acknowledged to its source once written, and      │    checksummed records,
//!    synced when `fsync = "batch"`)                                   ▼    see `format`)
//!                                                     reader ──decode──▶ sink
//!                                                        │
//!                         ack task ◀── the sink's outcome of each record, in order
//!                            └─▶ `ack` file (the next record to deliver), fully delivered
//!                                segments deleted, room given back to the writer
//! ```
//!
//! - **Durable, then acknowledged.** A batch's events are finalized `Delivered` to their
//!   source once their records are written (and synced, per the fsync policy): from then on
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
        "disk buffer {dir}: segment {segment} was written in format version {version}, this Weir reads version {}: \
         drain it with the Weir that wrote it, or move the folder away to start empty",
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
    /// Events written this run and not yet delivered (for the buffer gauge).
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
        if let Some(seq) = last_seq(&dir, last, max_payload).map_err(&err)? {
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
    let file = create_segment(&dir, active, opts.fsync).map_err(&err)?;
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
    if !segments.is_empty() {
        tracing::info!(
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
        events: AtomicI64::new(0),
        closed: AtomicBool::new(false),
        reader_gone: AtomicBool::new(false),
        data: Notify::new(),
        space: Notify::new(),
        generation: AtomicU64::new(0),
        rewind: Mutex::new(None),
    });
    metrics.set_buffer(shared.clone());
    let writer = Arc::new(tokio::sync::Mutex::new(Writer {
        file,
        segment: active,
        len: SEGMENT_HEADER,
        next_seq,
        broken: false,
        dirty: false,
    }));
    if let Fsync::Interval(every) = opts.fsync {
        tokio::spawn(sync_every(Arc::downgrade(&writer), every));
    }
    let (acks_tx, acks_rx) = mpsc::unbounded_channel();
    tokio::spawn(ack_task(shared.clone(), start, acks_rx));
    let guard = Arc::new(SendersGuard {
        shared: shared.clone(),
        writer: writer.clone(),
    });
    Ok((
        DiskSender {
            shared: shared.clone(),
            writer,
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

/// The sequence number of the last record of segment `id` that checks.
fn last_seq(dir: &Path, id: u64, max_payload: usize) -> io::Result<Option<u64>> {
    let f = File::open(format::segment_path(dir, id))?;
    let len = f.metadata()?.len();
    let mut pos = SEGMENT_HEADER;
    let mut last = None;
    loop {
        match format::read_at(&f, pos, len, max_payload)? {
            Read::Record(r) => {
                last = Some(r.seq);
                pos = r.end;
            }
            Read::Corrupt { next } => pos = next,
            Read::Incomplete => return Ok(last),
        }
    }
}

fn create_segment(dir: &Path, id: u64, fsync: Fsync) -> io::Result<File> {
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
            if fsync == Fsync::Batch {
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

/// The segment being written.
#[derive(Debug)]
struct Writer {
    file: File,
    segment: u64,
    len: u64,
    next_seq: u64,
    /// A failed write could not be cut off: the next write starts a new segment.
    broken: bool,
    /// Written since the last sync (interval policy).
    dirty: bool,
}

/// Records encoded from one batch: `bytes` holds each record (header space, then payload);
/// `records` their ends and event counts.
#[derive(Debug, Default)]
struct Encoded {
    bytes: Vec<u8>,
    records: Vec<(usize, u32)>,
}

impl Writer {
    /// Writes `enc.records[from..]`, starting new segments as needed; returns how many
    /// records were written, and the error that stopped it.
    fn write(&mut self, sh: &Shared, enc: &mut Encoded, from: usize) -> (usize, io::Result<()>) {
        let mut i = from;
        while i < enc.records.len() {
            let start = if i == 0 { 0 } else { enc.records[i - 1].0 };
            // The records of this batch that fit in the current segment.
            let mut j = i;
            while j < enc.records.len()
                && (j == i || self.len + (enc.records[j].0 - start) as u64 <= sh.segment_bytes)
            {
                j += 1;
            }
            let end = enc.records[j - 1].0;
            let fits = self.len + (end - start) as u64 <= sh.segment_bytes;
            if self.broken || (!fits && self.len > SEGMENT_HEADER) {
                if let Err(e) = self.roll(sh) {
                    return (i - from, Err(e));
                }
                continue;
            }
            // Sequence numbers are given now, in the order records reach the disk.
            let mut s = start;
            for &(e, events) in &enc.records[i..j] {
                fill_header(&mut enc.bytes[s..e], e - s - RECORD_HEADER, events);
                set_seq(&mut enc.bytes[s..e], self.next_seq);
                self.next_seq += 1;
                s = e;
            }
            let res = self
                .file
                .write_all_at(&enc.bytes[start..end], self.len)
                .and_then(|()| match sh.fsync {
                    Fsync::Batch => self.file.sync_data(),
                    Fsync::Interval(_) => {
                        self.dirty = true;
                        Ok(())
                    }
                });
            if let Err(e) = res {
                self.next_seq -= (j - i) as u64;
                // Cut off what was half written, so that the segment ends on a whole record
                // (if that fails, the reader skips the torn tail as corruption).
                let _ = self.file.set_len(self.len);
                // The next attempt starts a new segment: this one can then be deleted once
                // delivered, which gives the space back when the disk is full.
                self.broken = true;
                return (i - from, Err(e));
            }
            self.len += (end - start) as u64;
            sh.disk_bytes
                .fetch_add((end - start) as u64, Ordering::Relaxed);
            sh.set_mark(self.segment, self.len);
            i = j;
        }
        (i - from, Ok(()))
    }

    fn roll(&mut self, sh: &Shared) -> io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        let id = self.segment + 1;
        let file = match create_segment(&sh.dir, id, sh.fsync) {
            Ok(f) => f,
            Err(e) => {
                // A full disk, and this segment wholly delivered: it is all that can go, and
                // nothing needs it any more (the reader keeps its open handle).
                if *sh.acked.lock().unwrap_or_else(|p| p.into_inner()) != (self.segment, self.len) {
                    return Err(e);
                }
                let path = format::segment_path(&sh.dir, self.segment);
                std::fs::remove_file(&path)?;
                sh.disk_bytes.fetch_sub(
                    self.len.min(sh.disk_bytes.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
                create_segment(&sh.dir, id, sh.fsync)?
            }
        };
        self.file = file;
        self.segment = id;
        self.len = SEGMENT_HEADER;
        self.broken = false;
        sh.disk_bytes.fetch_add(SEGMENT_HEADER, Ordering::Relaxed);
        sh.set_mark(id, SEGMENT_HEADER);
        Ok(())
    }
}

fn fill_header(rec: &mut [u8], payload_len: usize, events: u32) {
    rec[0..4].copy_from_slice(b"WREC");
    rec[4..8].copy_from_slice(&(payload_len as u32).to_le_bytes());
    rec[20..24].copy_from_slice(&events.to_le_bytes());
}

/// Sets a record's sequence number and checksum (over length, sequence, events, payload).
fn set_seq(rec: &mut [u8], seq: u64) {
    rec[12..20].copy_from_slice(&seq.to_le_bytes());
    let mut c = crc32fast::Hasher::new();
    c.update(&rec[4..8]);
    c.update(&rec[12..24]);
    c.update(&rec[RECORD_HEADER..]);
    let crc = c.finalize();
    rec[8..12].copy_from_slice(&crc.to_le_bytes());
}

/// Syncs the segment being written every `every`, while anything holds the writer.
async fn sync_every(writer: std::sync::Weak<tokio::sync::Mutex<Writer>>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(w) = writer.upgrade() else { return };
        let Ok(mut g) = w.try_lock_owned() else {
            continue;
        };
        if g.dirty {
            let _ = tokio::task::spawn_blocking(move || {
                if g.file.sync_data().is_ok() {
                    g.dirty = false;
                }
            })
            .await;
        }
    }
}

/// Dropped with the last sender: the reader ends once it has read everything.
#[derive(Debug)]
struct SendersGuard {
    shared: Arc<Shared>,
    writer: Arc<tokio::sync::Mutex<Writer>>,
}

impl Drop for SendersGuard {
    fn drop(&mut self) {
        if let Ok(mut w) = self.writer.try_lock() {
            if w.dirty && w.file.sync_data().is_ok() {
                w.dirty = false;
            }
        }
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.data.notify_one();
    }
}

/// The sending side of a disk buffer.
#[derive(Debug, Clone)]
pub struct DiskSender {
    shared: Arc<Shared>,
    writer: Arc<tokio::sync::Mutex<Writer>>,
    _guard: Arc<SendersGuard>,
}

/// The reader is gone: nothing will read what is written.
#[derive(Debug)]
pub struct ReaderGone;

impl DiskSender {
    /// Writes a batch: its events are acknowledged to their sources once on disk. Waits for
    /// room (`block`) or drops the batch when the buffer is full (`drop_newest`); waits and
    /// retries while the disk refuses the write.
    pub async fn send(&self, mut batch: EventBatch) -> Result<(), ReaderGone> {
        let sh = &self.shared;
        if sh.reader_gone.load(Ordering::Relaxed) {
            batch.finalize(EventStatus::Errored);
            return Err(ReaderGone);
        }
        let mut enc = self.encode(&mut batch);
        if enc.records.is_empty() {
            return Ok(());
        }
        let need = enc.bytes.len() as u64;
        let mut w = self.writer.clone().lock_owned().await;
        // Room: the segments on disk plus this batch within `max_size`, or nothing on disk
        // but the segment being written (so an oversized batch passes an empty buffer).
        loop {
            let space = sh.space.notified();
            tokio::pin!(space);
            space.as_mut().enable();
            let used = sh.disk_bytes.load(Ordering::Relaxed);
            if used + need <= sh.max_bytes || sh.oldest.load(Ordering::Relaxed) >= w.segment {
                break;
            }
            if sh.when_full == WhenFull::DropNewest {
                sh.metrics.add_discarded(batch.len() as u64);
                sh.metrics.error(
                    "buffer_full",
                    0,
                    &format_args!(
                        "disk buffer full ({} of {} bytes): dropped {} events (when_full = \"drop_newest\")",
                        used,
                        sh.max_bytes,
                        batch.len()
                    ),
                );
                batch.finalize(EventStatus::Errored);
                return Ok(());
            }
            if sh.reader_gone.load(Ordering::Relaxed) {
                batch.finalize(EventStatus::Errored);
                return Err(ReaderGone);
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), space).await;
        }
        let mut done = 0;
        loop {
            let shared = self.shared.clone();
            let joined = tokio::task::spawn_blocking(move || {
                let (n, res) = w.write(&shared, &mut enc, done);
                (w, enc, n, res)
            })
            .await;
            let (back, e, n, res) = match joined {
                Ok(r) => r,
                Err(_) => {
                    batch.finalize(EventStatus::Errored);
                    return Err(ReaderGone);
                }
            };
            w = back;
            enc = e;
            done += n;
            match res {
                Ok(()) => break,
                Err(e) => {
                    let kind = if e.kind() == io::ErrorKind::StorageFull {
                        "disk_full"
                    } else {
                        "io"
                    };
                    sh.metrics.error(
                        kind,
                        1,
                        &format_args!(
                            "disk buffer {}: cannot write: {e}; holding the senders back and retrying every second",
                            sh.dir.display()
                        ),
                    );
                    if sh.reader_gone.load(Ordering::Relaxed) {
                        batch.finalize(EventStatus::Errored);
                        return Err(ReaderGone);
                    }
                    tokio::time::sleep(RETRY_WRITE).await;
                }
            }
        }
        drop(w);
        let events: u32 = enc.records.iter().map(|r| r.1).sum();
        sh.events.fetch_add(i64::from(events), Ordering::Relaxed);
        batch.finalize(EventStatus::Delivered);
        Ok(())
    }

    /// The batch as records, each at most `max_payload` bytes; an event larger than that is
    /// refused (counted, finalized `Rejected`) and left out.
    fn encode(&self, batch: &mut EventBatch) -> Encoded {
        let sh = &self.shared;
        let mut enc = Encoded::default();
        enc.bytes.reserve(batch.estimated_bytes() + RECORD_HEADER);
        let mut rec_start = 0;
        let mut events = 0u32;
        enc.bytes.resize(RECORD_HEADER, 0);
        let mut refused = Vec::new();
        for (i, e) in batch.iter().enumerate() {
            let ev_start = enc.bytes.len();
            codec::encode_event(e, &mut enc.bytes);
            let ev_len = enc.bytes.len() - ev_start;
            if ev_len > sh.max_payload {
                enc.bytes.truncate(ev_start);
                refused.push((i, ev_len));
                continue;
            }
            if enc.bytes.len() - rec_start - RECORD_HEADER > sh.max_payload {
                // Close the record before this event; the event opens the next one.
                let ev = enc.bytes.split_off(ev_start);
                enc.records.push((ev_start, events));
                rec_start = ev_start;
                enc.bytes.resize(rec_start + RECORD_HEADER, 0);
                enc.bytes.extend_from_slice(&ev);
                events = 0;
            }
            events += 1;
        }
        if events > 0 {
            enc.records.push((enc.bytes.len(), events));
        } else {
            enc.bytes.truncate(rec_start);
        }
        if !refused.is_empty() {
            let evs: &mut [Event] = &mut batch.events;
            for &(i, len) in &refused {
                evs[i].finalize(EventStatus::Rejected);
                sh.metrics.error(
                    "oversized",
                    1,
                    &format_args!(
                        "disk buffer {}: an event of {len} bytes is larger than a record can be ({} bytes, an eighth of buffer.max_size): refused",
                        sh.dir.display(),
                        sh.max_payload
                    ),
                );
            }
            sh.metrics.add_discarded(refused.len() as u64);
        }
        enc
    }
}

/// Where the reader is.
#[derive(Debug)]
struct ReadState {
    segment: u64,
    file: Option<File>,
    /// The segment's length once it is no longer written.
    limit: Option<u64>,
    pos: u64,
    /// The sequence number of the next record, when known.
    expected: Option<u64>,
    /// Lost records already counted since the last good record.
    counted: u64,
    generation: u64,
}

/// One step of the reader.
enum Step {
    Record {
        batch: EventBatch,
        start: AckPosition,
        end: AckPosition,
        events: u32,
    },
    /// Moved to another segment: the previous one is done with.
    Moved { to: AckPosition },
    /// Everything written has been read.
    Wait,
}

impl ReadState {
    fn position(&self) -> AckPosition {
        AckPosition {
            segment: self.segment,
            offset: self.pos,
            next_seq: self.expected.unwrap_or(0),
        }
    }

    fn move_on(&mut self, sh: &Shared, active: u64) -> io::Result<Step> {
        let next = format::list_segments(&sh.dir)?
            .into_iter()
            .find(|&id| id > self.segment)
            .unwrap_or(active)
            .min(active);
        self.segment = next;
        self.file = None;
        self.limit = None;
        self.pos = SEGMENT_HEADER;
        Ok(Step::Moved {
            to: self.position(),
        })
    }

    fn step(&mut self, sh: &Shared, active: u64, committed: u64) -> io::Result<Step> {
        loop {
            if self.file.is_none() {
                if self.segment > active {
                    return Ok(Step::Wait);
                }
                match File::open(format::segment_path(&sh.dir, self.segment)) {
                    Ok(f) => {
                        if format::check_header(&f, self.segment)? != format::Header::Ok {
                            let len = f.metadata()?.len();
                            self.counted += 1;
                            sh.corrupted(
                                1,
                                len,
                                &format_args!("segment {} has a damaged header", self.segment),
                            );
                            if self.segment == active {
                                return Ok(Step::Wait);
                            }
                            return self.move_on(sh, active);
                        }
                        self.pos = self.pos.max(SEGMENT_HEADER);
                        self.file = Some(f);
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound && self.segment < active => {
                        return self.move_on(sh, active);
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some(file) = &self.file else {
                return Ok(Step::Wait);
            };
            let limit = if self.segment == active {
                committed
            } else {
                match self.limit {
                    Some(l) => l,
                    None => {
                        let l = file.metadata()?.len();
                        self.limit = Some(l);
                        l
                    }
                }
            };
            match format::read_at(file, self.pos, limit, sh.max_payload)? {
                Read::Record(r) => {
                    let start = self.position();
                    if let Some(e) = self.expected {
                        if r.seq > e {
                            let missing = (r.seq - e).saturating_sub(self.counted);
                            if missing > 0 {
                                sh.corrupted(
                                    missing,
                                    0,
                                    &format_args!(
                                        "records {e} to {} are missing (a segment deleted?)",
                                        r.seq - 1
                                    ),
                                );
                            }
                        }
                    }
                    self.counted = 0;
                    self.pos = r.end;
                    self.expected = Some(r.seq + 1);
                    let mut reader = codec::Reader::new(r.payload);
                    let mut events = Vec::with_capacity(r.events as usize);
                    let mut failed = None;
                    while !reader.is_done() {
                        match reader.event() {
                            Ok(e) => events.push(e),
                            Err(e) => {
                                failed = Some(e);
                                break;
                            }
                        }
                    }
                    if let Some(e) = failed {
                        let lost = u64::from(r.events).saturating_sub(events.len() as u64);
                        sh.corrupted(
                            1,
                            0,
                            &format_args!("record {}: {e} ({lost} events lost)", r.seq),
                        );
                    }
                    return Ok(Step::Record {
                        batch: EventBatch::new(events),
                        start,
                        end: self.position(),
                        events: r.events,
                    });
                }
                Read::Corrupt { next } => {
                    self.counted += 1;
                    sh.corrupted(
                        1,
                        next - self.pos,
                        &format_args!(
                            "segment {} holds damaged bytes at offset {}",
                            self.segment, self.pos
                        ),
                    );
                    self.pos = next;
                }
                Read::Incomplete => {
                    if self.segment == active {
                        return Ok(Step::Wait);
                    }
                    if limit > self.pos {
                        self.counted += 1;
                        sh.corrupted(
                            1,
                            limit - self.pos,
                            &format_args!(
                                "segment {} ends with a torn record at offset {}",
                                self.segment, self.pos
                            ),
                        );
                    }
                    return self.move_on(sh, active);
                }
            }
        }
    }
}

/// What the ack task hears from the reader, in reading order.
enum AckMsg {
    /// A record handed to the sink (`status` `None`: nothing to wait for, a segment change).
    Record {
        generation: u64,
        start: AckPosition,
        end: AckPosition,
        events: u32,
        status: Option<BatchStatusReceiver>,
    },
    /// Answer once everything before is settled and persisted.
    Settle(oneshot::Sender<()>),
}

/// The receiving side of a disk buffer.
#[derive(Debug)]
pub struct DiskReceiver {
    shared: Arc<Shared>,
    state: Option<ReadState>,
    acks: mpsc::UnboundedSender<AckMsg>,
}

impl std::fmt::Debug for AckMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AckMsg")
    }
}

impl DiskReceiver {
    /// The next batch, or `None` once every sender is gone and everything was read.
    pub async fn recv(&mut self) -> Option<EventBatch> {
        let sh = self.shared.clone();
        loop {
            let rewind = sh.rewind.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let (Some(to), Some(st)) = (rewind, self.state.as_mut()) {
                st.segment = to.segment;
                st.pos = to.offset;
                st.file = None;
                st.limit = None;
                st.expected = Some(to.next_seq);
                st.counted = 0;
                st.generation = sh.generation.load(Ordering::SeqCst);
                tokio::time::sleep(REPLAY_DELAY).await;
            }
            let data = sh.data.notified();
            tokio::pin!(data);
            data.as_mut().enable();
            let closed = sh.closed.load(Ordering::SeqCst);
            let (active, committed) = sh.mark();
            let mut st = self.state.take()?;
            let shared = sh.clone();
            let (st, step) = match tokio::task::spawn_blocking(move || {
                let step = st.step(&shared, active, committed);
                (st, step)
            })
            .await
            {
                Ok(r) => r,
                Err(_) => return None,
            };
            let generation = st.generation;
            self.state = Some(st);
            match step {
                Ok(Step::Record {
                    mut batch,
                    start,
                    end,
                    events,
                }) => {
                    let (notifier, status) = BatchNotifier::new_with_receiver();
                    batch.attach_notifier(&notifier);
                    drop(notifier);
                    let _ = self.acks.send(AckMsg::Record {
                        generation,
                        start,
                        end,
                        events,
                        status: Some(status),
                    });
                    if batch.is_empty() {
                        continue;
                    }
                    return Some(batch);
                }
                Ok(Step::Moved { to }) => {
                    let _ = self.acks.send(AckMsg::Record {
                        generation,
                        start: to,
                        end: to,
                        events: 0,
                        status: None,
                    });
                }
                Ok(Step::Wait) => {
                    if closed && sh.mark() == (active, committed) {
                        return None;
                    }
                    let _ = tokio::time::timeout(Duration::from_secs(1), data).await;
                }
                Err(e) => {
                    sh.metrics.error(
                        "io",
                        1,
                        &format_args!(
                            "disk buffer {}: cannot read: {e}; retrying",
                            sh.dir.display()
                        ),
                    );
                    tokio::time::sleep(RETRY_WRITE).await;
                }
            }
        }
    }

    /// Waits (a few seconds at most) until the outcome of every batch handed out is known
    /// and the acknowledged position persisted: for a clean stop, so a restart does not
    /// deliver again what was delivered.
    pub async fn settle(&self) {
        let (tx, rx) = oneshot::channel();
        if self.acks.send(AckMsg::Settle(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> usize {
        self.shared.bytes()
    }

    /// Events written this run and not yet delivered.
    pub fn len(&self) -> usize {
        self.shared.events()
    }

    /// Whether no event written this run waits for the sink.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for DiskReceiver {
    fn drop(&mut self) {
        self.shared.reader_gone.store(true, Ordering::SeqCst);
        self.shared.space.notify_waiters();
    }
}

/// Advances the acknowledged position as the sink settles each record, in order; persists
/// it; deletes the segments wholly before it.
async fn ack_task(sh: Arc<Shared>, mut ack: AckPosition, mut rx: mpsc::UnboundedReceiver<AckMsg>) {
    let mut dirty = false;
    let mut frozen = false;
    let persist = |ack: AckPosition, dirty: &mut bool| {
        if *dirty {
            if let Err(e) = format::write_ack(&sh.dir, ack, false) {
                sh.metrics.error(
                    "io",
                    1,
                    &format_args!(
                        "disk buffer {}: cannot write the ack file: {e}",
                        sh.dir.display()
                    ),
                );
            }
            *dirty = false;
        }
    };
    loop {
        let msg = match rx.try_recv() {
            Ok(m) => m,
            Err(mpsc::error::TryRecvError::Empty) => {
                persist(ack, &mut dirty);
                match rx.recv().await {
                    Some(m) => m,
                    None => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        let (generation, start, end, events, status) = match msg {
            AckMsg::Settle(tx) => {
                persist(ack, &mut dirty);
                let _ = tx.send(());
                continue;
            }
            AckMsg::Record {
                generation,
                start,
                end,
                events,
                status,
            } => (generation, start, end, events, status),
        };
        if generation != sh.generation.load(Ordering::SeqCst) || frozen {
            continue;
        }
        let status = match status {
            Some(s) => s.await,
            None => EventStatus::Delivered,
        };
        if status == EventStatus::Errored {
            if sh.closed.load(Ordering::SeqCst) {
                frozen = true;
                tracing::warn!(buffer = %sh.dir.display(), "disk buffer: the sink did not deliver a record while stopping; it stays in the buffer for the next start");
            } else {
                sh.generation.fetch_add(1, Ordering::SeqCst);
                *sh.rewind.lock().unwrap_or_else(|p| p.into_inner()) = Some(start);
                sh.data.notify_one();
                sh.metrics.error(
                    "buffer_replay",
                    1,
                    &format_args!(
                        "disk buffer {}: the sink did not deliver a record; reading it again (and what follows) in a second",
                        sh.dir.display()
                    ),
                );
            }
            continue;
        }
        sh.events.fetch_sub(i64::from(events), Ordering::Relaxed);
        let before = ack.segment;
        ack = end;
        *sh.acked.lock().unwrap_or_else(|p| p.into_inner()) = (ack.segment, ack.offset);
        dirty = true;
        if ack.segment > before {
            // Sync the position before deleting, so that it is never older than what remains.
            // (When even that fails, the segments go all the same: a full disk needs the
            // room, and an old ack file only makes a restart count them as missing.)
            dirty = format::write_ack(&sh.dir, ack, true).is_err();
            delete_before(&sh, ack.segment);
        }
    }
    persist(ack, &mut dirty);
}

fn delete_before(sh: &Shared, segment: u64) {
    let ids = match format::list_segments(&sh.dir) {
        Ok(ids) => ids,
        Err(_) => return,
    };
    for id in ids.into_iter().filter(|&id| id < segment) {
        let path = format::segment_path(&sh.dir, id);
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if std::fs::remove_file(&path).is_ok() {
            sh.disk_bytes.fetch_sub(
                len.min(sh.disk_bytes.load(Ordering::Relaxed)),
                Ordering::Relaxed,
            );
        }
    }
    sh.oldest.store(segment, Ordering::Relaxed);
    sh.space.notify_waiters();
}

#[cfg(test)]
mod tests;
