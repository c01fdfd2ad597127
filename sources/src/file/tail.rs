//! The tailer: follows every matched file through renames, truncations, deletions and
//! restarts, and turns their bytes into lines handed to a [`LineHandler`]. It knows nothing of
//! events' fields, so other sources (`kubernetes_logs`) can reuse it with their own handler.
//!
//! It runs on one dedicated OS thread ([`Tailer::run`]): file reads are blocking system calls,
//! and a thread keeps them off the async workers. It hands [`ReadBatch`]es (events plus the
//! file positions they complete) to a callback that blocks while the pipeline is full, so
//! backpressure stops the reads.
//!
//! # The life of a file
//!
//! Files are known by `(device, inode)` while open (an open file's inode cannot be reused), and
//! by their content [`Fingerprint`] across closes and restarts:
//!
//! ```text
//!                       fingerprinted, slot free
//!   Discovered ───────────────────────────────────▶ Reading ◀──────┐ back in the glob
//!     ▲   │ too short / a copy of a file being read   │  │  ▲        │
//!     │   └─ (waits, checked again when it grows)     │  │  └ reopen ┤
//!     │                                               │  ▼          │
//!     │   truncated or rewritten (offset back to 0)   │ Parked (handle closed to honour
//!     └───────────────────────────────────────────────┤         max_open_files or ignore_older)
//!                                                      ▼
//!                   no longer in the glob (renamed away) or deleted
//!                                                  Draining ── read to EOF, then no new data
//!                                                      │        for rotate_wait ──▶ released
//!                                 a gzip file read to its end ──▶ Closed (never read again)
//! ```
//!
//! Positions: the offset recorded for a fingerprint is the end of the last line whose event
//! was emitted (never past a multiline group still held, nor into an oversized line being
//! skipped). Each [`ReadBatch`] carries the positions it completes; the source applies them to
//! the checkpoints when the batch is done (delivered, with acknowledgements).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use flate2::read::MultiGzDecoder;
use weir_pipeline::codec::Frame;
use weir_pipeline::event::{Event, MAX_BATCH_EVENTS};
use weir_pipeline::metrics::ComponentMetrics;

use super::checkpoint::{self, Checkpoints};
use super::discovery::{Discovery, WalkError};
use super::fingerprint::{self, Fingerprint, Fingerprinter, Strategy};
use super::lines::{CharsetConfig, LineSplitter};
use super::watch::{self, Change, Watcher};

/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes read from one file before the others get a turn.
const PASS_BUDGET: u64 = 1024 * 1024;
/// Idle polling: the first sleep after a pass that read nothing, doubled up to the maximum.
const MIN_IDLE: Duration = Duration::from_millis(10);
const MAX_IDLE: Duration = Duration::from_millis(250);
/// The pause after a pass that read every file to its end: the minimum, plus this much per
/// file that had new data, at most [`MAX_IDLE`]. Each file with new data costs a read and a
/// fingerprint check per pass; the pause bounds how often that happens however many files
/// are written (210 ms with 100 busy files, about 480 reads a second), while a single busy
/// file is still looked at about every 12 ms. Measured on `files-100` (release, 100 files
/// at 10 MiB/s): 3.6% of a core at 150 us per file (25 ms, 4,000 reads a second), 2.2-2.5%
/// at 1 ms, 1.7-1.8% at 2 ms.
const BUSY_PAUSE: Duration = Duration::from_millis(10);
const BUSY_PAUSE_PER_FILE: Duration = Duration::from_micros(2000);
/// While files wait for a slot, a file open this long is closed to let them in.
const PREEMPT_AFTER: Duration = Duration::from_secs(2);
/// Rotations of one file (names that extend its name) examined to find files rotated away
/// unread, newest first.
const MAX_RECOVERY_CANDIDATES: usize = 256;
/// The counter of bytes given up on (a file gone before it was read to its end).
pub const UNREAD_BYTES: &str = "file_unread_bytes_total";
/// How long a file that could not be removed (`remove_after_secs`) waits before the next try.
const REMOVE_RETRY: Duration = Duration::from_secs(30);

/// What the tailer needs to know (built from the source's options).
#[derive(Debug, Clone)]
pub struct TailConfig {
    pub discovery: Discovery,
    pub glob_cooldown: Duration,
    /// Start files found at the very first start (no checkpoint file) at their end.
    pub read_from_end: bool,
    pub fingerprinter: Fingerprinter,
    pub delimiter: u8,
    pub max_line_bytes: usize,
    pub charset: CharsetConfig,
    pub ignore_older: Option<Duration>,
    pub max_open_files: usize,
    pub rotate_wait: Duration,
    pub remove_after: Option<Duration>,
}

/// The file a line comes from, as the handler sees it.
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub path: PathBuf,
    /// The path as bytes, ready to be an event field (cloning is a reference count).
    pub path_value: Bytes,
}

impl FileInfo {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            path_value: Bytes::from(path.to_string_lossy().into_owned()),
        }
    }
}

/// Turns lines into events. One `State` per file holds what spans lines (a multiline group).
pub trait LineHandler: Send {
    type State: Default + Send;
    /// One line (without its delimiter) starting at byte `start` of the file, read at `at`
    /// (the lines of one read share its time).
    fn line(
        &mut self,
        st: &mut Self::State,
        file: &FileInfo,
        line: Bytes,
        start: u64,
        at: ReadTime,
        out: &mut Vec<Event>,
    );
    /// Time passes: emit what waited too long.
    fn tick(&mut self, st: &mut Self::State, file: &FileInfo, now: Instant, out: &mut Vec<Event>);
    /// No more lines will follow (the file is released or was truncated): emit what is held.
    fn flush(&mut self, st: &mut Self::State, file: &FileInfo, out: &mut Vec<Event>);
    /// The start offset of the oldest line held, not yet in an event.
    fn held_from(st: &Self::State) -> Option<u64>;
    /// Forget what is held (the file will be read again from [`LineHandler::held_from`]).
    fn discard(st: &mut Self::State);
}

/// When a chunk of a file was read: one clock read for all of its lines.
#[derive(Debug, Clone, Copy)]
pub struct ReadTime {
    pub wall: chrono::DateTime<chrono::Utc>,
    pub mono: Instant,
}

impl ReadTime {
    pub fn now() -> Self {
        Self {
            wall: chrono::Utc::now(),
            mono: Instant::now(),
        }
    }
}

/// A position reached in one file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub fingerprint: Fingerprint,
    pub offset: u64,
    /// The content was read to its end and never grows (gzip): never read it again.
    pub done: bool,
}

/// What the tailer hands over: events, and the positions that are reached once they (and
/// every batch before them) are done. A batch may have positions and no events (lines that
/// were skipped, a file that starts at its end).
#[derive(Debug, Default)]
pub struct ReadBatch {
    pub events: Vec<Event>,
    pub positions: Vec<Position>,
}

type Key = (u64, u64);

/// Why a file is waiting in [`FileState::Discovered`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Not looked at yet, or its size changed since it was: try to open it.
    Check,
    /// Its head is incomplete (no fingerprint yet) at this size.
    TooShort(u64),
    /// Its content is the same as a file being read (a copy): looked at every discovery.
    Copy,
}

/// The state of one file (see the module docs).
enum FileState {
    Discovered(Wait),
    Reading(Reader),
    Draining {
        reader: Reader,
        since: Instant,
    },
    Parked {
        size: u64,
        mtime: Option<SystemTime>,
        reopen: bool,
    },
    Closed {
        size: u64,
    },
}

enum Input {
    Plain(File),
    Gzip(Box<MultiGzDecoder<File>>),
}

struct Reader {
    input: Input,
    buf: BytesMut,
    splitter: LineSplitter,
    /// Offset (in the content) of the end of what was read into `buf`.
    read_offset: u64,
    /// The start of an oversized line being skipped.
    skipping_from: Option<u64>,
    at_eof: bool,
    /// The last read before `at_eof` was set brought data: the next look reads first.
    growing: bool,
    last_data: Instant,
    opened: Instant,
}

impl Reader {
    fn consumed(&self) -> u64 {
        self.read_offset - self.buf.len() as u64
    }

    fn is_gzip(&self) -> bool {
        matches!(self.input, Input::Gzip(_))
    }
}

struct Watched<S> {
    key: Key,
    info: FileInfo,
    fp: Option<Fingerprint>,
    state: FileState,
    handler: S,
    /// The discovery round that last saw it at a matched path.
    seen: u64,
    last_opened: Option<Instant>,
    /// It was truncated while it had this fingerprint: if it comes back with the same one, the
    /// new content starts at 0 anyway.
    truncated_from: Option<Fingerprint>,
    warned_copy: bool,
    /// `remove_after_secs`: removing it failed; not tried again before this.
    remove_retry_at: Option<Instant>,
    /// Its size when last looked at (what is lost if it goes away unopened).
    size: u64,
}

impl<S: Default> Watched<S> {
    fn new(key: Key, path: &Path, seen: u64, size: u64) -> Self {
        Self {
            key,
            info: FileInfo::new(path),
            fp: None,
            state: FileState::Discovered(Wait::Check),
            handler: S::default(),
            seen,
            last_opened: None,
            truncated_from: None,
            warned_copy: false,
            remove_retry_at: None,
            size,
        }
    }
}

impl<S> Watched<S> {
    fn reader(&mut self) -> Option<&mut Reader> {
        match &mut self.state {
            FileState::Reading(r) | FileState::Draining { reader: r, .. } => Some(r),
            _ => None,
        }
    }

    fn is_open(&self) -> bool {
        matches!(
            self.state,
            FileState::Reading(_) | FileState::Draining { .. }
        )
    }
}

/// The downstream is gone.
struct Closed;

type SendFn<'a> = &'a mut dyn FnMut(ReadBatch) -> bool;

/// Everything but the file table, so a file and the rest can be borrowed at once.
struct Ctx<H: LineHandler> {
    cfg: TailConfig,
    handler: H,
    metrics: Arc<ComponentMetrics>,
    checkpoints: Arc<Mutex<Checkpoints>>,
    /// The emitted position of each fingerprint (the checkpoint before acknowledgement).
    positions: HashMap<Fingerprint, u64>,
    /// Fingerprints of gzip contents read to their end.
    done: HashSet<Fingerprint>,
    /// Which open (or parked) file holds each fingerprint.
    owners: HashMap<Fingerprint, Key>,
    out: ReadBatch,
    /// Where each fingerprint's position is in `out.positions`.
    out_index: HashMap<Fingerprint, usize>,
    /// Where every read lands first (see `read_some`).
    scratch: Vec<u8>,
    /// A file stopped at [`PASS_BUDGET`] during this pass: it has more to read now.
    more: bool,
}

/// Follows the files of one source; see the module docs.
pub struct Tailer<H: LineHandler> {
    cx: Ctx<H>,
    files: HashMap<Key, Watched<H::State>>,
    generation: u64,
    last_discovery: Option<Instant>,
    /// Wall-clock time of the last discovery, to recognise files born since.
    last_discovery_wall: Option<SystemTime>,
    first_start: bool,
    /// Directory events, when inotify is available (else the passes alone find files).
    watcher: Option<Watcher>,
    changes: Vec<Change>,
}

fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn lock(c: &Mutex<Checkpoints>) -> std::sync::MutexGuard<'_, Checkpoints> {
    match c.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl<H: LineHandler> Ctx<H> {
    /// The position of `w` now: the end of its last emitted line.
    fn safe_offset(w: &Watched<H::State>) -> Option<u64> {
        let r = match &w.state {
            FileState::Reading(r) | FileState::Draining { reader: r, .. } => r,
            _ => return None,
        };
        let mut off = r.consumed();
        if let Some(s) = r.skipping_from {
            off = off.min(s);
        }
        if let Some(h) = H::held_from(&w.handler) {
            off = off.min(h);
        }
        Some(off)
    }

    fn record(&mut self, fp: Fingerprint, offset: u64, done: bool) {
        if !done && self.positions.get(&fp) == Some(&offset) {
            return;
        }
        self.positions.insert(fp, offset);
        if done {
            self.done.insert(fp);
        }
        let p = Position {
            fingerprint: fp,
            offset,
            done,
        };
        // The whole batch's positions are applied at once, in order: the latest one per
        // fingerprint is the one that counts.
        match self
            .out_index
            .get(&fp)
            .and_then(|&i| self.out.positions.get_mut(i))
        {
            Some(q) => *q = p,
            None => {
                self.out_index.insert(fp, self.out.positions.len());
                self.out.positions.push(p);
            }
        }
    }

    fn record_file(&mut self, w: &Watched<H::State>) {
        if let (Some(fp), Some(off)) = (w.fp, Self::safe_offset(w)) {
            self.record(fp, off, false);
        }
    }

    /// Counts and logs `bytes` of `path` that will never be read.
    fn unread(&self, path: &Path, bytes: u64, why: &str) {
        self.metrics.add_counter(UNREAD_BYTES, None, bytes);
        self.metrics.error(
            "unread",
            1,
            &format_args!("{}: {bytes} bytes were not read: {why}", path.display()),
        );
    }

    fn cut(&mut self, send: SendFn<'_>) -> Result<(), Closed> {
        if self.out.events.is_empty() && self.out.positions.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.out);
        self.out_index.clear();
        self.out.events.reserve(MAX_BATCH_EVENTS);
        self.metrics.add_received(batch.events.len() as u64, 0);
        if send(batch) {
            Ok(())
        } else {
            Err(Closed)
        }
    }

    /// Opens `w` at its position. Returns whether it is now open.
    fn open(&mut self, w: &mut Watched<H::State>, now: Instant, initial: bool) -> bool {
        let path = w.info.path.clone();
        let mut file = match open_noatime(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return false,
            Err(e) => {
                self.metrics.error(
                    "io",
                    1,
                    &format_args!(
                        "cannot open {}: {e}; retrying at the next discovery",
                        path.display()
                    ),
                );
                w.state = FileState::Discovered(Wait::TooShort(u64::MAX));
                return false;
            }
        };
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(_) => return false,
        };
        if (meta.dev(), meta.ino()) != w.key {
            // The path was rotated between discovery and now: the next discovery sorts it out.
            w.state = FileState::Discovered(Wait::Check);
            return false;
        }
        let size = meta.len();
        let gzip = fingerprint::is_gzip(&file).unwrap_or(false);
        let fp = match self.cfg.fingerprinter.compute(&file, gzip) {
            Ok(Some(fp)) => fp,
            Ok(None) => {
                w.state = FileState::Discovered(Wait::TooShort(size));
                return false;
            }
            Err(e) => {
                self.metrics.error(
                    "io",
                    1,
                    &format_args!("cannot read the head of {}: {e}", path.display()),
                );
                w.state = FileState::Discovered(Wait::TooShort(size));
                return false;
            }
        };
        if let Some(old) = w.fp.filter(|old| *old != fp) {
            // The content changed while the file was closed (rewritten, or an inode reused).
            if self.owners.get(&old) == Some(&w.key) {
                self.owners.remove(&old);
            }
            w.fp = None;
        }
        if let Some(owner) = self.owners.get(&fp) {
            if *owner != w.key {
                if !w.warned_copy {
                    w.warned_copy = true;
                    tracing::info!(
                        component = %self.metrics.id,
                        path = %path.display(),
                        fingerprint = %fp,
                        "file has the same fingerprint as a file being read (a copy, e.g. copytruncate); it is read from where that one stops, once that one changes or goes away. If these are different files, set fingerprint.lines, fingerprint.ignored_header_bytes or strategy = \"device_and_inode\""
                    );
                }
                w.state = FileState::Discovered(Wait::Copy);
                return false;
            }
        }
        w.warned_copy = false;
        self.owners.insert(fp, w.key);
        w.fp = Some(fp);
        lock(&self.checkpoints).touch(fp, &path, w.key.0, w.key.1, unix_now());
        if gzip && self.done.contains(&fp) {
            w.state = FileState::Closed { size };
            return false;
        }
        let mut offset = if w.truncated_from.take() == Some(fp) {
            0
        } else if let Some(p) = self.positions.get(&fp) {
            *p
        } else if initial && self.cfg.read_from_end {
            if gzip {
                u64::MAX
            } else {
                size
            }
        } else {
            0
        };
        if !gzip && offset > size {
            tracing::info!(component = %self.metrics.id, path = %path.display(), offset, size, "file is shorter than its checkpoint (truncated while weir was stopped): reading it from its start");
            offset = 0;
        }
        let head = fingerprint::read_head(&file, gzip, 0, 4).unwrap_or_default();
        let (charset, bom) = self.cfg.charset.detect(&head);
        if offset < bom {
            offset = bom;
        }
        if charset != super::lines::Charset::Utf8 && offset % 2 == 1 && offset != u64::MAX {
            offset += 1;
        }
        let (input, read_offset) = if gzip {
            let mut d = MultiGzDecoder::new(file);
            match fingerprint::skip(&mut d, offset) {
                Ok(n) => (Input::Gzip(Box::new(d)), n),
                Err(e) => {
                    self.metrics.error(
                        "io",
                        1,
                        &format_args!("cannot decompress {}: {e}; it is not read", path.display()),
                    );
                    w.state = FileState::Closed { size };
                    return false;
                }
            }
        } else {
            if let Err(e) = file.seek(SeekFrom::Start(offset)) {
                self.metrics.error(
                    "io",
                    1,
                    &format_args!("cannot seek in {}: {e}", path.display()),
                );
                w.state = FileState::Discovered(Wait::TooShort(size));
                return false;
            }
            (Input::Plain(file), offset)
        };
        self.record(fp, read_offset, false);
        w.last_opened = Some(now);
        w.state = FileState::Reading(Reader {
            input,
            buf: BytesMut::new(),
            splitter: LineSplitter::new(charset, self.cfg.delimiter, self.cfg.max_line_bytes),
            read_offset,
            skipping_from: None,
            at_eof: false,
            growing: false,
            last_data: now,
            opened: now,
        });
        true
    }

    /// Frames and hands on every complete line in `w`'s buffer.
    fn drain_buffer(
        &mut self,
        w: &mut Watched<H::State>,
        at: ReadTime,
        send: SendFn<'_>,
    ) -> Result<(), Closed> {
        loop {
            let Some(r) = w.reader() else {
                return Ok(());
            };
            let before = r.buf.len();
            let frame = r.splitter.next_frame(&mut r.buf);
            let start = r.read_offset - before as u64;
            let frame = match frame {
                Some(f) => f,
                None => {
                    if r.buf.len() < before && r.skipping_from.is_none() {
                        r.skipping_from = Some(start);
                    }
                    return Ok(());
                }
            };
            let skipped_from = r.skipping_from.take();
            match frame {
                Frame::Line(line) => {
                    self.handler.line(
                        &mut w.handler,
                        &w.info,
                        line,
                        start,
                        at,
                        &mut self.out.events,
                    );
                }
                Frame::Oversized { bytes } => self.metrics.error(
                    "oversized",
                    1,
                    &format_args!(
                        "{}: the line at offset {} is {bytes} bytes, over max_line_bytes ({}); skipped",
                        w.info.path.display(),
                        skipped_from.unwrap_or(start),
                        self.cfg.max_line_bytes
                    ),
                ),
            }
            if self.out.events.len() >= MAX_BATCH_EVENTS {
                self.record_file(w);
                self.cut(send)?;
            }
        }
    }

    /// Reads what `w` has (up to the pass budget). Returns the bytes read.
    fn read_some(
        &mut self,
        w: &mut Watched<H::State>,
        send: SendFn<'_>,
    ) -> Result<Outcome, Closed> {
        let Some(fp) = w.fp else {
            return Ok(Outcome::Read(0));
        };
        let strategy = self.cfg.fingerprinter.strategy();
        let Some(r) = w.reader() else {
            return Ok(Outcome::Read(0));
        };
        let scratch = &mut self.scratch;
        if scratch.len() < READ_CHUNK {
            scratch.resize(READ_CHUNK, 0);
        }
        // What a read made before the loop below already put in `scratch`.
        let mut first: Option<usize> = None;
        if r.at_eof {
            if let Input::Plain(f) = &mut r.input {
                if r.growing {
                    // The file had new data at the last look, so it most likely has more:
                    // read first, and look at its size only when nothing comes. A growing
                    // file costs a read and the fingerprint check instead of a stat, the
                    // check and the read; an idle file still costs one stat.
                    let n = loop {
                        match f.read(&mut scratch[..]) {
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            // Reported by the read below, once the size was looked at.
                            Err(_) => break 0,
                            Ok(n) => break n,
                        }
                    };
                    if n > 0 {
                        if strategy == Strategy::Checksum {
                            // New data after a pause: is it still the same content (a file
                            // truncated and rewritten past our offset between two looks)?
                            // If not, what was just read belongs to the new content and is
                            // dropped: the file is read again from its start.
                            if let Ok(now_fp) = self.cfg.fingerprinter.compute(f, false) {
                                if now_fp != Some(fp) {
                                    let size = f.metadata().map_or(0, |m| m.len());
                                    return Ok(Outcome::Truncated(size));
                                }
                            }
                        }
                        first = Some(n);
                    } else {
                        r.growing = false;
                    }
                }
                if first.is_none() {
                    let meta = match f.metadata() {
                        Ok(m) => m,
                        Err(_) => return Ok(Outcome::Deleted),
                    };
                    if meta.len() < r.read_offset {
                        return Ok(Outcome::Truncated(meta.len()));
                    }
                    if meta.len() == r.read_offset {
                        return Ok(if meta.nlink() == 0 {
                            Outcome::Deleted
                        } else {
                            Outcome::Read(0)
                        });
                    }
                    if strategy == Strategy::Checksum {
                        // New data after a pause: check it is still the same content (a
                        // file truncated and rewritten past our offset between two looks).
                        if let Ok(now_fp) = self.cfg.fingerprinter.compute(f, false) {
                            if now_fp != Some(fp) {
                                return Ok(Outcome::Truncated(meta.len()));
                            }
                        }
                    }
                }
            }
        }
        let mut total = 0u64;
        loop {
            let Some(r) = w.reader() else {
                return Ok(Outcome::Read(total));
            };
            // Read into the shared scratch buffer (zeroed once), then append what came: a
            // file's own buffer only grows by what was read. Zeroing a 64 KiB buffer for each
            // read was a fifth of tailing 100 files written a few lines at a time.
            let scratch = &mut self.scratch;
            let asked = scratch.len();
            let res = match (first.take(), &mut r.input) {
                (Some(n), _) => Ok(n),
                (None, Input::Plain(f)) => f.read(&mut scratch[..]),
                (None, Input::Gzip(d)) => d.read(&mut scratch[..]),
            };
            let n = match res {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                    continue;
                }
                Err(e) if r.is_gzip() => {
                    // A stream cut short (still being compressed, by logrotate for instance)
                    // or corrupt: what was read is kept, and the file is read again from
                    // there when it changes, not marked as done.
                    let at = r.read_offset;
                    self.metrics.error(
                        "io",
                        1,
                        &format_args!(
                            "cannot read {} at uncompressed offset {at}: {e}; it is read again from there when the file changes",
                            w.info.path.display()
                        ),
                    );
                    return Ok(Outcome::GzipIncomplete);
                }
                Err(e) => {
                    let at = r.read_offset;
                    self.metrics.error(
                        "io",
                        1,
                        &format_args!("cannot read {} at offset {at}: {e}", w.info.path.display()),
                    );
                    return Ok(Outcome::Read(total));
                }
            };
            if n == READ_CHUNK && r.buf.capacity() - r.buf.len() < n {
                // A file read in bulk gets room for several chunks at once.
                r.buf.reserve(4 * READ_CHUNK);
            }
            r.buf.extend_from_slice(&scratch[..n]);
            if n == 0 {
                r.at_eof = true;
                r.growing = false;
                if r.buf.is_empty() {
                    // Idle files keep no buffer.
                    r.buf = BytesMut::new();
                }
                let gz = r.is_gzip();
                return Ok(if gz {
                    Outcome::GzipEnd
                } else {
                    Outcome::Read(total)
                });
            }
            r.at_eof = false;
            r.growing = true;
            r.read_offset += n as u64;
            let at = ReadTime::now();
            r.last_data = at.mono;
            total += n as u64;
            self.metrics.add_received_bytes(n as u64);
            self.drain_buffer(w, at, send)?;
            self.record_file(w);
            if total >= PASS_BUDGET {
                self.more = true;
                return Ok(Outcome::Read(total));
            }
            // A regular file that gave less than was asked for is at its end: the read that
            // would return 0 is left out (a third of the reads of files written a few lines
            // at a time). The next pass reads it first (it is `growing`) and checks its
            // fingerprint before using what comes, as after any end.
            if n < asked {
                if let Some(r) = w.reader() {
                    if !r.is_gzip() {
                        r.at_eof = true;
                        if r.buf.is_empty() {
                            r.buf = BytesMut::new();
                        }
                        return Ok(Outcome::Read(total));
                    }
                }
            }
        }
    }

    /// Lets go of `w` for good: what is buffered is emitted (the last line without a
    /// delimiter too), and its final position recorded.
    fn release(&mut self, w: &mut Watched<H::State>, done: bool) {
        if let Some(r) = w.reader() {
            let before = r.buf.len();
            let start = r.read_offset - before as u64;
            r.skipping_from = None;
            let last = r.splitter.finish(&mut r.buf);
            match last {
                Some(Frame::Line(line)) => {
                    self.handler.line(
                        &mut w.handler,
                        &w.info,
                        line,
                        start,
                        ReadTime::now(),
                        &mut self.out.events,
                    )
                }
                Some(Frame::Oversized { bytes }) => self.metrics.error(
                    "oversized",
                    1,
                    &format_args!(
                        "{}: the last line, at offset {start}, is {bytes} bytes, over max_line_bytes; skipped",
                        w.info.path.display()
                    ),
                ),
                None => {}
            }
        }
        self.handler
            .flush(&mut w.handler, &w.info, &mut self.out.events);
        if let (Some(fp), Some(off)) = (w.fp, Self::safe_offset(w)) {
            self.record(fp, off, done);
        }
        if let Some(fp) = w.fp {
            if self.owners.get(&fp) == Some(&w.key) && !done {
                self.owners.remove(&fp);
            }
        }
    }

    /// `w` was truncated or rewritten: what was held of the old content is emitted, and the
    /// file is read again from its start as a new content.
    fn truncated(&mut self, w: &mut Watched<H::State>, size: u64, now: Instant) {
        let old = Self::safe_offset(w).unwrap_or(0);
        tracing::info!(component = %self.metrics.id, path = %w.info.path.display(), offset = old, size, "file was truncated or rewritten: reading it again from its start");
        self.handler
            .flush(&mut w.handler, &w.info, &mut self.out.events);
        if let Some(fp) = w.fp {
            if let Some(r) = w.reader() {
                r.buf.clear();
                r.skipping_from = None;
            }
            let off = Self::safe_offset(w).unwrap_or(0);
            self.record(fp, off, false);
            if self.owners.get(&fp) == Some(&w.key) {
                self.owners.remove(&fp);
            }
        }
        w.truncated_from = w.fp.take();
        w.state = FileState::Discovered(Wait::Check);
        self.open(w, now, false);
    }

    /// Closes `w`'s handle to make room, keeping its place; reopened when it changes.
    fn park(&mut self, w: &mut Watched<H::State>) {
        let Some(off) = Self::safe_offset(w) else {
            return;
        };
        H::discard(&mut w.handler);
        if let Some(fp) = w.fp {
            self.record(fp, off, false);
        }
        let reader = match &w.state {
            FileState::Reading(r) | FileState::Draining { reader: r, .. } => Some(r),
            _ => None,
        };
        let gzip = reader.is_some_and(|r| r.is_gzip());
        let (size, mtime) = match reader {
            Some(Reader {
                input: Input::Plain(f),
                ..
            }) if matches!(w.state, FileState::Reading(_)) => f
                .metadata()
                .map(|m| (m.len(), m.modified().ok()))
                .unwrap_or((u64::MAX, None)),
            Some(Reader {
                input: Input::Gzip(d),
                ..
            }) => d
                .get_ref()
                .metadata()
                .map(|m| (m.len(), m.modified().ok()))
                .unwrap_or((u64::MAX, None)),
            _ => (u64::MAX, None),
        };
        // A gzip file's offset counts uncompressed bytes: it waits for the file to change.
        w.state = FileState::Parked {
            size,
            mtime,
            reopen: !gzip && off < size,
        };
    }
}

enum Outcome {
    Read(u64),
    Truncated(u64),
    Deleted,
    GzipEnd,
    /// A gzip stream ended early or is corrupt: parked until the file changes.
    GzipIncomplete,
}

impl<H: LineHandler> Tailer<H> {
    /// A tailer starting from `checkpoints` (their offsets are where files resume).
    pub fn new(
        cfg: TailConfig,
        handler: H,
        metrics: Arc<ComponentMetrics>,
        checkpoints: Arc<Mutex<Checkpoints>>,
    ) -> Self {
        let (positions, done, first_start) = {
            let c = lock(&checkpoints);
            (
                c.entries().map(|e| (e.fingerprint, e.offset)).collect(),
                c.entries()
                    .filter(|e| e.done)
                    .map(|e| e.fingerprint)
                    .collect(),
                !c.existed(),
            )
        };
        Self {
            cx: Ctx {
                cfg,
                handler,
                metrics,
                checkpoints,
                positions,
                done,
                owners: HashMap::new(),
                out: ReadBatch::default(),
                out_index: HashMap::new(),
                scratch: Vec::new(),
                more: false,
            },
            files: HashMap::new(),
            generation: 0,
            last_discovery: None,
            last_discovery_wall: None,
            first_start,
            watcher: None,
            changes: Vec::new(),
        }
        .with_watcher()
    }

    fn with_watcher(mut self) -> Self {
        match Watcher::new() {
            Ok(w) => self.watcher = Some(w),
            Err(e) => {
                tracing::info!(component = %self.cx.metrics.id, "inotify is not available ({e}): new files are found by the discovery passes only");
            }
        }
        let dirs: Vec<PathBuf> = self
            .cx
            .cfg
            .discovery
            .include()
            .iter()
            .filter_map(|p| watch::fixed_dir(p))
            .collect();
        for d in dirs {
            self.watch_dir(&d);
        }
        self
    }

    /// Watches `dir` for new files; a failure (the watch limit) is reported once.
    fn watch_dir(&mut self, dir: &Path) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        match w.watch(dir) {
            Ok(()) => {}
            // Not there yet: watched once discovery finds a file in it.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                if w.first_failure() {
                    tracing::warn!(component = %self.cx.metrics.id, dir = %dir.display(), watched = w.watched(), "cannot watch the directory for new files ({e}; raise fs.inotify.max_user_watches if it is the limit): it and later ones are found by the discovery passes only");
                }
            }
        }
    }

    /// Reads the directory events: a file renamed from a matched path to one no glob matches
    /// is followed there (it may never have been seen by a discovery pass). Returns whether
    /// a discovery pass is due now (a new file at a matched path).
    fn poll_changes(&mut self, now: Instant) -> bool {
        let Some(w) = self.watcher.as_mut() else {
            return false;
        };
        let mut changes = std::mem::take(&mut self.changes);
        changes.clear();
        w.read(&mut changes);
        let mut due = false;
        let mut follow: Vec<PathBuf> = Vec::new();
        let disc = &self.cx.cfg.discovery;
        for c in &changes {
            match c {
                Change::Overflow => due = true,
                Change::Created(p) => due |= disc.matches(p),
                Change::Moved { from, to } => {
                    let to_matched = disc.matches(to);
                    due |= to_matched;
                    let Some(from) = from else { continue };
                    if let Some(f) = follow.iter_mut().find(|f| *f == from) {
                        // Renamed again (`app.log.1` -> `app.log.2`) before being looked at.
                        *f = to.clone();
                    } else if !to_matched && disc.matches(from) {
                        follow.push(to.clone());
                    }
                }
            }
        }
        self.changes = changes;
        for p in follow {
            if let Some(key) = self.adopt(&p, now) {
                if let Some(w) = self.files.get(&key) {
                    tracing::debug!(component = %self.cx.metrics.id, path = %w.info.path.display(), "file renamed away from a matched path: reading it to its end");
                }
            }
        }
        due
    }

    /// Starts reading the file at `p` (no glob matches it: it was rotated away) from its
    /// checkpoint or its start, until it has had no new data for `rotate_wait`. Returns its
    /// key if it is now read; a file too short to be recognised is given up on and counted.
    fn adopt(&mut self, p: &Path, now: Instant) -> Option<Key> {
        let meta = std::fs::metadata(p).ok()?;
        let key = (meta.dev(), meta.ino());
        if !meta.is_file() || self.files.contains_key(&key) {
            return None;
        }
        let mut w = Watched::new(key, p, self.generation, meta.len());
        if self.cx.open(&mut w, now, false) {
            to_draining(&mut w, now);
            self.files.insert(key, w);
            return Some(key);
        }
        if matches!(w.state, FileState::Discovered(Wait::TooShort(_))) && meta.len() > 0 {
            self.cx.unread(
                p,
                meta.len(),
                "it was rotated away before its first line was complete",
            );
        }
        None
    }

    /// Sleeps up to `d`, waking early when `stop` is set or a directory event arrives.
    fn sleep(&self, stop: &AtomicBool, d: Duration) {
        let Some(w) = &self.watcher else {
            sleep_unless(stop, d);
            return;
        };
        let step = Duration::from_millis(10);
        let mut left = d;
        while !left.is_zero() && !stop.load(Ordering::Acquire) {
            let s = left.min(step);
            if w.wait(s) {
                return;
            }
            left = left.saturating_sub(s);
        }
    }

    /// Runs until `stop` is set or `send` reports the downstream gone. On stop, what is held
    /// (multiline groups, lines without a delimiter yet) is not emitted: the positions stop
    /// before it, so the next start reads it again whole.
    pub fn run(mut self, stop: &AtomicBool, send: SendFn<'_>) {
        let mut idle = MIN_IDLE;
        loop {
            if stop.load(Ordering::Acquire) {
                let _ = self.cx.cut(send);
                return;
            }
            let now = Instant::now();
            let changed = self.poll_changes(now);
            let due = changed
                || self
                    .last_discovery
                    .is_none_or(|t| now.duration_since(t) >= self.cx.cfg.glob_cooldown);
            if due {
                let initial = self.last_discovery.is_none();
                let wall = SystemTime::now();
                self.discover(now, initial && self.first_start);
                if initial {
                    self.recover_rotated(now);
                }
                self.last_discovery = Some(now);
                self.last_discovery_wall = Some(wall);
            }
            self.cx.more = false;
            let (read, files_read) = match self.step(now, send) {
                Ok(r) => r,
                Err(Closed) => return,
            };
            if self.cx.cut(send).is_err() {
                return;
            }
            if read == 0 {
                self.sleep(stop, idle);
                idle = (idle * 2).min(MAX_IDLE);
            } else {
                idle = MIN_IDLE;
                if !self.cx.more {
                    // Every file was read to its end: what comes next is written after this
                    // pass. Going round again at once mostly looked at files with nothing new
                    // (half of the passes over 100 files written every 10 ms found nothing).
                    let per_file = u32::try_from(files_read).unwrap_or(u32::MAX);
                    let pause = BUSY_PAUSE
                        .saturating_add(BUSY_PAUSE_PER_FILE.saturating_mul(per_file))
                        .min(MAX_IDLE);
                    self.sleep(stop, pause);
                }
            }
        }
    }

    /// One pass over the open files, timers and slots. Returns the bytes read, and how many
    /// files had some.
    fn step(&mut self, now: Instant, send: SendFn<'_>) -> Result<(u64, usize), Closed> {
        let mut total = 0;
        let mut files_read = 0;
        let keys: Vec<Key> = self
            .files
            .iter()
            .filter(|(_, w)| w.is_open())
            .map(|(k, _)| *k)
            .collect();
        let mut waiting = false;
        for key in keys {
            let Some(mut w) = self.files.remove(&key) else {
                continue;
            };
            let outcome = self.cx.read_some(&mut w, send);
            let keep = match outcome {
                Err(e) => {
                    self.files.insert(key, w);
                    return Err(e);
                }
                Ok(Outcome::Read(n)) => {
                    total += n;
                    files_read += usize::from(n > 0);
                    self.after_read(&mut w, now)
                }
                Ok(Outcome::Truncated(size)) => {
                    self.cx.truncated(&mut w, size, now);
                    true
                }
                Ok(Outcome::Deleted) => {
                    if let FileState::Reading(_) = w.state {
                        to_draining(&mut w, now);
                    }
                    self.after_read(&mut w, now)
                }
                Ok(Outcome::GzipIncomplete) => {
                    self.cx.park(&mut w);
                    true
                }
                Ok(Outcome::GzipEnd) => {
                    self.cx.release(&mut w, true);
                    let size = std::fs::metadata(&w.info.path)
                        .map(|m| m.len())
                        .unwrap_or(0);
                    w.state = FileState::Closed { size };
                    true
                }
            };
            if matches!(w.state, FileState::Discovered(_)) {
                waiting = true;
            }
            if keep {
                self.files.insert(key, w);
            }
        }
        self.tick(now, send)?;
        if waiting {
            self.open_waiting(now, false);
        }
        Ok((total, files_read))
    }

    /// Timers of an open file that read nothing new: release a drained one, remove one that
    /// is done (`remove_after_secs`), park one left idle (`ignore_older_secs`). Returns
    /// whether to keep tracking it.
    fn after_read(&mut self, w: &mut Watched<H::State>, now: Instant) -> bool {
        let rotate_wait = self.cx.cfg.rotate_wait;
        let (remove_after, ignore_older) = (self.cx.cfg.remove_after, self.cx.cfg.ignore_older);
        match &w.state {
            FileState::Draining { reader, since } => {
                let quiet_since = (*since).max(reader.last_data);
                if reader.at_eof && now.duration_since(quiet_since) >= rotate_wait {
                    self.cx.release(w, false);
                    return false;
                }
            }
            FileState::Reading(reader) if reader.at_eof && !reader.is_gzip() => {
                let idle = now.duration_since(reader.last_data);
                if let (Some(after), Some(fp)) = (remove_after, w.fp) {
                    let done = lock(&self.cx.checkpoints)
                        .get(&fp)
                        .is_some_and(|e| e.offset >= reader.read_offset);
                    let retry_due = w.remove_retry_at.is_none_or(|t| now >= t);
                    if idle >= after && done && reader.buf.is_empty() && retry_due {
                        match std::fs::remove_file(&w.info.path) {
                            Ok(()) => {
                                tracing::info!(component = %self.cx.metrics.id, path = %w.info.path.display(), "file read, delivered and idle for remove_after_secs: removed");
                                self.cx.release(w, false);
                                return false;
                            }
                            Err(e) => {
                                // Counted once per attempt, and attempted again only after
                                // a while, not on every pass over the files.
                                w.remove_retry_at = Some(now + REMOVE_RETRY);
                                self.cx.metrics.error(
                                    "remove",
                                    1,
                                    &format_args!(
                                        "cannot remove {}: {e}; trying again in {} s",
                                        w.info.path.display(),
                                        REMOVE_RETRY.as_secs()
                                    ),
                                )
                            }
                        }
                    }
                }
                if ignore_older.is_some_and(|old| idle >= old) && H::held_from(&w.handler).is_none()
                {
                    self.cx.park(w);
                }
            }
            _ => {}
        }
        true
    }

    fn tick(&mut self, now: Instant, send: SendFn<'_>) -> Result<(), Closed> {
        for w in self.files.values_mut() {
            if !w.is_open() || H::held_from(&w.handler).is_none() {
                continue;
            }
            self.cx
                .handler
                .tick(&mut w.handler, &w.info, now, &mut self.cx.out.events);
            self.cx.record_file(w);
            if self.cx.out.events.len() >= MAX_BATCH_EVENTS {
                self.cx.cut(send)?;
            }
        }
        Ok(())
    }

    /// Walks the globs: new files are tracked, renamed ones followed, vanished ones drained.
    fn discover(&mut self, now: Instant, initial: bool) {
        self.generation += 1;
        let gen = self.generation;
        let mut errors: Vec<WalkError> = Vec::new();
        let paths = self.cx.cfg.discovery.scan(&mut errors);
        for e in errors {
            self.cx.metrics.error(
                "discovery",
                1,
                &format_args!("glob `{}`: {}", e.pattern, e.message),
            );
        }
        let unix = unix_now();
        // Paths where a new file appeared, or whose file was rotated away: a file may have
        // lived there and been rotated away entirely between two discoveries.
        let mut turned_over: Vec<PathBuf> = Vec::new();
        for path in paths {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let key = (meta.dev(), meta.ino());
            if let Some(w) = self.files.get_mut(&key) {
                w.seen = gen;
                w.size = meta.len();
                if w.info.path != path {
                    w.info = FileInfo::new(&path);
                }
                if let Some(fp) = w.fp {
                    lock(&self.cx.checkpoints).touch(fp, &path, key.0, key.1, unix);
                }
                match &mut w.state {
                    FileState::Draining { .. } => {
                        // Back at a matched path (renamed into the glob again).
                        let st = std::mem::replace(&mut w.state, FileState::Closed { size: 0 });
                        if let FileState::Draining { reader, .. } = st {
                            w.state = FileState::Reading(reader);
                        }
                    }
                    FileState::Parked {
                        size,
                        mtime,
                        reopen,
                    } => {
                        if meta.len() != *size || meta.modified().ok() != *mtime {
                            *reopen = true;
                        }
                    }
                    FileState::Discovered(wait) => {
                        if let Wait::TooShort(s) = wait {
                            if *s != meta.len() {
                                *wait = Wait::Check;
                            }
                        }
                    }
                    FileState::Closed { size } => {
                        if *size != meta.len() {
                            // A gzip file replaced in place: look at it again.
                            w.state = FileState::Discovered(Wait::Check);
                        }
                    }
                    FileState::Reading(_) => {}
                }
                continue;
            }
            if let Some(old) = self.cx.cfg.ignore_older {
                let age = meta
                    .modified()
                    .ok()
                    .and_then(|m| SystemTime::now().duration_since(m).ok());
                if age.is_some_and(|a| a > old) {
                    continue;
                }
            }
            if self.last_discovery_wall.is_some() {
                turned_over.push(path.clone());
            }
            if let Some(dir) = path.parent() {
                self.watch_dir(dir);
            }
            self.files
                .insert(key, Watched::new(key, &path, gen, meta.len()));
        }
        let gone: Vec<Key> = self
            .files
            .iter()
            .filter(|(_, w)| w.seen != gen)
            .map(|(k, _)| *k)
            .collect();
        for key in gone {
            let Some(mut w) = self.files.remove(&key) else {
                continue;
            };
            match w.state {
                FileState::Reading(_) => {
                    tracing::debug!(component = %self.cx.metrics.id, path = %w.info.path.display(), "file left the glob (rotated or deleted): reading it to its end");
                    turned_over.push(w.info.path.clone());
                    to_draining(&mut w, now);
                    self.files.insert(key, w);
                }
                FileState::Draining { .. } => {
                    self.files.insert(key, w);
                }
                _ => {
                    if let Some(fp) = w.fp {
                        if self.cx.owners.get(&fp) == Some(&key) {
                            self.cx.owners.remove(&fp);
                        }
                    }
                    self.lost_track(w, now);
                }
            }
        }
        self.open_waiting(now, initial);
        if let Some(since) = self.last_discovery_wall {
            turned_over.sort();
            turned_over.dedup();
            for p in turned_over {
                self.find_missed(&p, since, now);
            }
        }
    }

    /// Files born after the last discovery next to `path`, under a name that extends its
    /// name (`app.log.1`), that no glob matches and that are not known: files that lived at
    /// `path` and were rotated away before a discovery could see them (inotify, when it
    /// works, usually followed them already). They are read whole (or from their checkpoint,
    /// if they are copies of known content), then released.
    fn find_missed(&mut self, path: &Path, since: SystemTime, now: Instant) {
        for (p, meta) in rotations_of(path, &self.cx.cfg.discovery) {
            let key = (meta.dev(), meta.ino());
            if self.files.contains_key(&key) {
                continue;
            }
            let born = meta.created().or_else(|_| meta.modified());
            if born.map_or(true, |b| b < since) {
                continue;
            }
            if self.adopt(&p, now).is_some() {
                tracing::info!(component = %self.cx.metrics.id, path = %p.display(), was = %path.display(), "found a file rotated away before discovery saw it: reading it");
            }
        }
    }

    /// A file not opened (or parked, its handle closed) left the globs. If it was renamed
    /// next to where it was, it is read there; if it is gone, what was not read of it is
    /// counted and logged.
    fn lost_track(&mut self, w: Watched<H::State>, now: Instant) {
        let unread = match &w.state {
            FileState::Discovered(Wait::Copy) | FileState::Closed { .. } => return,
            FileState::Discovered(_) => w.size,
            // Only a plain file with data past its position is parked with `reopen` (a gzip
            // file's offset counts uncompressed bytes: not comparable to its size).
            FileState::Parked {
                size, reopen: true, ..
            } => {
                let off = w.fp.and_then(|fp| self.cx.positions.get(&fp).copied());
                off.map_or(0, |off| size.saturating_sub(off))
            }
            FileState::Parked { .. } => 0,
            _ => return,
        };
        for (p, meta) in rotations_of(&w.info.path, &self.cx.cfg.discovery) {
            if (meta.dev(), meta.ino()) == w.key {
                if self.adopt(&p, now).is_some() {
                    tracing::debug!(component = %self.cx.metrics.id, path = %p.display(), was = %w.info.path.display(), "file renamed away before it was read to its end: reading it there");
                    return;
                }
                break;
            }
        }
        if unread > 0 {
            self.cx.unread(
                &w.info.path,
                unread,
                "it was deleted (or moved where no glob matches) before it was read to its end",
            );
        }
    }

    /// Opens files waiting for a slot, closing idle ones (or ones that had a long turn) when
    /// `max_open_files` is reached.
    fn open_waiting(&mut self, now: Instant, initial: bool) {
        let mut candidates: Vec<(Option<Instant>, PathBuf, Key)> = self
            .files
            .values()
            .filter(|w| match &w.state {
                FileState::Discovered(Wait::TooShort(_)) => false,
                FileState::Discovered(_) => true,
                FileState::Parked { reopen, .. } => *reopen,
                _ => false,
            })
            .map(|w| (w.last_opened, w.info.path.clone(), w.key))
            .collect();
        if candidates.is_empty() {
            return;
        }
        candidates.sort();
        let mut open = self.files.values().filter(|w| w.is_open()).count();
        for (_, _, key) in candidates {
            if open >= self.cx.cfg.max_open_files && !self.park_one(now) {
                break;
            }
            let Some(mut w) = self.files.remove(&key) else {
                continue;
            };
            if w.is_open() {
                self.files.insert(key, w);
                continue;
            }
            if self.cx.open(&mut w, now, initial) {
                open += 1;
            } else {
                open = self.files.values().filter(|w| w.is_open()).count();
            }
            self.files.insert(key, w);
        }
    }

    /// Closes one open file to free a slot: one idle at its end if any, else one that has
    /// been open the longest (over [`PREEMPT_AFTER`]). Returns whether one was closed.
    fn park_one(&mut self, now: Instant) -> bool {
        let pick = |preempt: bool| {
            move |w: &&Watched<H::State>| match &w.state {
                FileState::Reading(r) if !r.is_gzip() => {
                    if preempt {
                        now.duration_since(r.opened) >= PREEMPT_AFTER
                    } else {
                        r.at_eof && H::held_from(&w.handler).is_none()
                    }
                }
                _ => false,
            }
        };
        let last_data = |w: &Watched<H::State>| match &w.state {
            FileState::Reading(r) => r.last_data,
            _ => now,
        };
        let key = self
            .files
            .values()
            .filter(pick(false))
            .min_by_key(|w| last_data(w))
            .or_else(|| {
                self.files
                    .values()
                    .filter(pick(true))
                    .min_by_key(|w| w.last_opened)
            })
            .map(|w| w.key);
        let Some(key) = key else {
            return false;
        };
        if let Some(mut w) = self.files.remove(&key) {
            self.cx.park(&mut w);
            self.files.insert(key, w);
        }
        true
    }

    /// At start: files rotated while weir was stopped. Next to every file the checkpoints
    /// know and every file the globs match, rotations (names that extend its name:
    /// `app.log.1`, `0.log.20240101-120000.gz`) no glob matches are looked at, by content:
    /// - a known content with an unread tail (or a gzip one not read to its end) is read
    ///   from its checkpoint;
    /// - an unknown content born since the source first started (and within the time the
    ///   checkpoints remember files) was never seen: created and rotated away while weir was
    ///   stopped, or between two passes before a crash. It is read whole.
    ///
    /// Both are then released once they have had no new data for `rotate_wait`.
    fn recover_rotated(&mut self, now: Instant) {
        let (existed, since, mut bases) = {
            let c = lock(&self.cx.checkpoints);
            let bases: Vec<PathBuf> = c
                .entries()
                .filter(|e| !e.path.as_os_str().is_empty())
                .map(|e| e.path.clone())
                .collect();
            (c.existed(), c.watching_since(), bases)
        };
        if !existed {
            // The very first start: older rotations predate this source.
            return;
        }
        bases.extend(self.files.values().map(|w| w.info.path.clone()));
        bases.sort();
        bases.dedup();
        // Remembered files: one modified since the oldest a checkpoint is kept has its entry.
        let remembered = unix_now() - checkpoint::MAX_AGE_SECS + 3600;
        let mut looked: HashSet<Key> = HashSet::new();
        for base in bases {
            for (p, meta) in rotations_of(&base, &self.cx.cfg.discovery) {
                let key = (meta.dev(), meta.ino());
                if self.files.contains_key(&key) || !looked.insert(key) {
                    continue;
                }
                let Ok(f) = File::open(&p) else {
                    continue;
                };
                let gzip = fingerprint::is_gzip(&f).unwrap_or(false);
                let Some(fp) = self.cx.cfg.fingerprinter.compute(&f, gzip).ok().flatten() else {
                    continue;
                };
                drop(f);
                let known = lock(&self.cx.checkpoints).get(&fp).cloned();
                let why = match known {
                    Some(e) if e.done || (!gzip && meta.len() <= e.offset) => continue,
                    Some(_) => {
                        "found a file rotated while weir was stopped: reading its unread tail"
                    }
                    None => {
                        let mtime = meta
                            .modified()
                            .ok()
                            .and_then(|m| m.duration_since(SystemTime::UNIX_EPOCH).ok())
                            .map_or(0, |d| d.as_secs() as i64);
                        if mtime < since || mtime < remembered {
                            continue;
                        }
                        "found a file weir never saw, rotated away while it was stopped or before it was killed: reading it whole"
                    }
                };
                if self.adopt(&p, now).is_some() {
                    let offset = self.cx.positions.get(&fp).copied().unwrap_or(0);
                    tracing::info!(component = %self.cx.metrics.id, path = %p.display(), was = %base.display(), offset, "{why}");
                }
            }
        }
    }
}

/// Rotations of `path` no glob matches: files next to it whose name extends its name
/// (`app.log.1`, `app.log.2.gz`, `0.log.20240101-120000`), without temporary files
/// (`.tmp`, a gzip being written), newest first, at most [`MAX_RECOVERY_CANDIDATES`].
fn rotations_of(path: &Path, discovery: &Discovery) -> Vec<(PathBuf, std::fs::Metadata)> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Vec::new();
    };
    let name = name.as_encoded_bytes();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(PathBuf, std::fs::Metadata)> = rd
        .flatten()
        .filter(|e| {
            let n = e.file_name();
            let n = n.as_encoded_bytes();
            n.len() > name.len() && n.starts_with(name) && !n.ends_with(b".tmp")
        })
        .map(|e| e.path())
        .filter(|p| !discovery.matches(p))
        .filter_map(|p| {
            let m = std::fs::metadata(&p).ok()?;
            m.is_file().then_some((p, m))
        })
        .collect();
    out.sort_by_key(|(_, m)| std::cmp::Reverse(m.modified().ok()));
    out.truncate(MAX_RECOVERY_CANDIDATES);
    out
}

/// Opens `path` for reading without updating its access time when the kernel allows it (the
/// file is ours, or we have `CAP_FOWNER`), else as usual. A file being written has a newer
/// modification time than its access time, so with `relatime` every read would write its
/// inode: on 100 files written continuously, a tenth of the tailer's time went there.
fn open_noatime(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => File::open(path),
        r => r,
    }
}

fn to_draining<S>(w: &mut Watched<S>, now: Instant) {
    let st = std::mem::replace(&mut w.state, FileState::Closed { size: 0 });
    w.state = match st {
        FileState::Reading(reader) => FileState::Draining { reader, since: now },
        other => other,
    };
}

fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let step = Duration::from_millis(10);
    let mut left = d;
    while !left.is_zero() && !stop.load(Ordering::Acquire) {
        let s = left.min(step);
        std::thread::sleep(s);
        left -= s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::file::fingerprint::FingerprintConfig;
    use crate::file::lines::CharsetConfig;
    use std::io::Write;

    /// Keeps the lines it is given.
    #[derive(Default)]
    struct Collect {
        lines: Vec<String>,
    }

    impl LineHandler for Collect {
        type State = ();
        fn line(
            &mut self,
            _: &mut (),
            _: &FileInfo,
            line: Bytes,
            _: u64,
            _: ReadTime,
            _: &mut Vec<Event>,
        ) {
            self.lines.push(String::from_utf8_lossy(&line).into_owned());
        }
        fn tick(&mut self, _: &mut (), _: &FileInfo, _: Instant, _: &mut Vec<Event>) {}
        fn flush(&mut self, _: &mut (), _: &FileInfo, _: &mut Vec<Event>) {}
        fn held_from(_: &()) -> Option<u64> {
            None
        }
        fn discard(_: &mut ()) {}
    }

    fn tailer(dir: &Path) -> Tailer<Collect> {
        let cfg = TailConfig {
            discovery: Discovery::new(&[format!("{}/*.log", dir.display())], &[]).unwrap(),
            glob_cooldown: Duration::from_secs(1),
            read_from_end: false,
            fingerprinter: Fingerprinter::new(&FingerprintConfig::default(), b'\n'),
            delimiter: b'\n',
            max_line_bytes: 1 << 20,
            charset: CharsetConfig::Auto,
            ignore_older: None,
            max_open_files: 16,
            rotate_wait: Duration::from_secs(5),
            remove_after: None,
        };
        let (cp, _) = Checkpoints::load(&dir.join("checkpoints"));
        Tailer::new(
            cfg,
            Collect::default(),
            ComponentMetrics::detached("in"),
            Arc::new(Mutex::new(cp)),
        )
    }

    fn lines(tag: &str, n: std::ops::Range<usize>) -> Vec<String> {
        n.map(|i| format!("{tag}-{i}")).collect()
    }

    fn text(lines: &[String]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    fn pass(t: &mut Tailer<Collect>) -> (u64, usize) {
        let mut send = |_: ReadBatch| true;
        t.cx.more = false;
        match t.step(Instant::now(), &mut send) {
            Ok(r) => r,
            Err(Closed) => panic!("the downstream is there"),
        }
    }

    #[test]
    fn a_growing_file_is_read_first_and_a_rewrite_past_its_offset_is_still_caught() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        let mut expected = lines("old", 0..10);
        std::fs::write(&log, text(&expected)).unwrap();
        let mut t = tailer(dir.path());
        t.discover(Instant::now(), true);
        assert_eq!(pass(&mut t).1, 1);
        // Appended: read first (the file had data at its last look), same content.
        let more = lines("old", 10..12);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(text(&more).as_bytes())
            .unwrap();
        pass(&mut t);
        expected.extend(more);
        assert_eq!(t.cx.handler.lines, expected);
        // Rewritten in place, longer than what was read: the read at the old offset brings
        // bytes of the new content, which the fingerprint check drops.
        let new = lines("new", 0..50);
        std::fs::write(&log, text(&new)).unwrap();
        pass(&mut t);
        assert_eq!(
            t.cx.handler.lines, expected,
            "nothing of the new content yet"
        );
        pass(&mut t);
        expected.extend(new);
        assert_eq!(
            t.cx.handler.lines, expected,
            "the new content, from its start"
        );
        // Idle: the read brings nothing, the size is looked at.
        assert_eq!(pass(&mut t), (0, 0));
        assert_eq!(pass(&mut t), (0, 0));
        // Truncated to something shorter, seen by the size check of an idle file.
        let short = lines("short", 0..2);
        std::fs::write(&log, text(&short)).unwrap();
        pass(&mut t);
        pass(&mut t);
        expected.extend(short);
        assert_eq!(t.cx.handler.lines, expected);
    }

    /// A file that never had a fingerprint (one incomplete line) and is then deleted: its
    /// bytes can never be read, and are counted.
    #[test]
    fn a_file_deleted_before_it_could_be_read_is_counted_as_unread() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("short.log");
        std::fs::write(&log, "no newline yet").unwrap();
        let kept = lines("kept", 0..3);
        std::fs::write(dir.path().join("kept.log"), text(&kept)).unwrap();
        let mut t = tailer(dir.path());
        t.discover(Instant::now(), true);
        pass(&mut t);
        assert_eq!(
            t.cx.handler.lines, kept,
            "the short file waits for its first line"
        );
        let unread = |t: &Tailer<Collect>| -> u64 {
            t.cx.metrics
                .counters()
                .iter()
                .filter(|(n, _, _)| *n == UNREAD_BYTES)
                .map(|c| c.2)
                .sum()
        };
        assert_eq!(unread(&t), 0);
        std::fs::remove_file(&log).unwrap();
        t.discover(Instant::now(), false);
        pass(&mut t);
        assert_eq!(unread(&t), "no newline yet".len() as u64);
        assert_eq!(t.cx.handler.lines, kept, "its neighbour is not disturbed");
    }

    #[test]
    fn a_pass_stopped_by_the_budget_asks_for_the_next_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let big = lines("big", 0..200_000);
        std::fs::write(dir.path().join("b.log"), text(&big)).unwrap();
        let mut t = tailer(dir.path());
        t.discover(Instant::now(), true);
        pass(&mut t);
        assert!(t.cx.more, "more to read");
        let mut passes = 1;
        while t.cx.handler.lines.len() < big.len() {
            pass(&mut t);
            passes += 1;
            assert!(passes < 100);
        }
        assert!(!t.cx.more, "read to its end");
        assert_eq!(t.cx.handler.lines, big);
    }

    /// The kubelet's scheme: `0.log` rotated to `0.log.<time>`, then compressed to
    /// `0.log.<time>.gz` (through a `.tmp` file), all while weir was down. At the next start
    /// the compressed rotation weir never saw is found by content and read whole; the
    /// half-written `.tmp` and a rotation older than the source's first start are not.
    #[test]
    fn a_compressed_rotation_never_seen_is_read_at_the_next_start() {
        use flate2::write::GzEncoder;
        let dir = tempfile::tempdir().unwrap();
        let old = lines("before-weir", 0..5);
        std::fs::write(dir.path().join("0.log.20200101-000000"), text(&old)).unwrap();
        // The file's time must be before the source's first start (seconds resolution).
        let past = std::time::SystemTime::now() - Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(dir.path().join("0.log.20200101-000000"))
            .unwrap()
            .set_modified(past)
            .unwrap();
        // A previous run: its checkpoint file exists (nothing in it).
        let cp_dir = dir.path().join("checkpoints");
        let (mut cp, _) = Checkpoints::load(&cp_dir);
        cp.set_dirty();
        crate::file::checkpoint::write_atomically(&cp_dir, &cp.snapshot()).unwrap();
        // While it was down: a whole file lived at 0.log, was rotated and compressed.
        let rotated = lines("rotated", 0..1000);
        let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text(&rotated).as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        std::fs::write(dir.path().join("0.log.20260301-120000.gz"), &gz).unwrap();
        std::fs::write(
            dir.path().join("0.log.20260301-130000.tmp"),
            &gz[..gz.len() / 2],
        )
        .unwrap();
        let current = lines("current", 0..10);
        std::fs::write(dir.path().join("0.log"), text(&current)).unwrap();

        let mut t = tailer(dir.path());
        t.discover(Instant::now(), false);
        t.recover_rotated(Instant::now());
        for _ in 0..10 {
            pass(&mut t);
        }
        let mut got = t.cx.handler.lines.clone();
        got.sort();
        let mut want: Vec<String> = rotated.iter().chain(&current).cloned().collect();
        want.sort();
        assert_eq!(got, want);
    }
}
