//! The sending side: encodes batches into records and appends them to the segment being
//! written (see the module docs for the whole picture), and the group commit that syncs them.

use super::*;
use crate::finalization::Finalizer;

/// The segment being written.
#[derive(Debug)]
pub(super) struct Writer {
    pub(super) file: Arc<File>,
    pub(super) segment: u64,
    pub(super) len: u64,
    pub(super) next_seq: u64,
    /// A failed write could not be cut off: the next write starts a new segment.
    pub(super) broken: bool,
    /// Written since the last sync (interval policy: the segment is synced before the next
    /// one is started).
    pub(super) dirty: bool,
    /// A segment was created since the group commit last heard (its folder entry is not
    /// synced yet).
    pub(super) created: bool,
}

/// Records encoded from one batch: `bytes` holds each record (header space, then payload);
/// `records` their ends and event counts.
#[derive(Debug, Default)]
pub(super) struct Encoded {
    pub(super) bytes: Vec<u8>,
    pub(super) records: Vec<(usize, u32)>,
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
            // Into the page cache only: the group commit task (`fsync = "batch"`) or the
            // interval task syncs it.
            let res = self.file.write_all_at(&enc.bytes[start..end], self.len);
            self.dirty = true;
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
        // Interval policy: what was written is synced when its segment is closed. Batch
        // policy: the group commit syncs every segment written since its last sync, and the
        // folder, before it acknowledges anything (no sync here, under the writer's lock).
        let batch = sh.fsync == Fsync::Batch;
        if self.dirty && !batch {
            self.file.sync_data()?;
            self.dirty = false;
        }
        let id = self.segment + 1;
        let file = match create_segment(&sh.dir, id, false) {
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
                create_segment(&sh.dir, id, false)?
            }
        };
        self.created = true;
        self.file = Arc::new(file);
        self.segment = id;
        self.len = SEGMENT_HEADER;
        self.broken = false;
        sh.disk_bytes.fetch_add(SEGMENT_HEADER, Ordering::Relaxed);
        sh.set_mark(id, SEGMENT_HEADER);
        Ok(())
    }
}

pub(super) fn fill_header(rec: &mut [u8], payload_len: usize, events: u32) {
    rec[0..4].copy_from_slice(b"WREC");
    rec[4..8].copy_from_slice(&(payload_len as u32).to_le_bytes());
    rec[20..24].copy_from_slice(&events.to_le_bytes());
}

/// Sets a record's sequence number and checksum (over length, sequence, events, payload).
pub(super) fn set_seq(rec: &mut [u8], seq: u64) {
    rec[12..20].copy_from_slice(&seq.to_le_bytes());
    let mut c = crc32fast::Hasher::new();
    c.update(&rec[4..8]);
    c.update(&rec[12..24]);
    c.update(&rec[RECORD_HEADER..]);
    let crc = c.finalize();
    rec[8..12].copy_from_slice(&crc.to_le_bytes());
}

/// Syncs the segment being written every `every`, while anything holds the writer.
pub(super) async fn sync_every(
    writer: std::sync::Weak<tokio::sync::Mutex<Writer>>,
    every: Duration,
) {
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
pub(super) struct SendersGuard {
    pub(super) shared: Arc<Shared>,
    pub(super) writer: Arc<tokio::sync::Mutex<Writer>>,
    pub(super) commit: Option<Arc<GroupCommit>>,
}

impl Drop for SendersGuard {
    fn drop(&mut self) {
        if let Ok(mut w) = self.writer.try_lock() {
            if w.dirty && w.file.sync_data().is_ok() {
                w.dirty = false;
            }
        }
        if let Some(c) = &self.commit {
            c.lock().closed = true;
            c.wake.notify_one();
        }
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.data.notify_one();
    }
}

/// The sending side of a disk buffer.
#[derive(Debug, Clone)]
pub struct DiskSender {
    pub(super) shared: Arc<Shared>,
    pub(super) writer: Arc<tokio::sync::Mutex<Writer>>,
    /// `fsync = "batch"`: where written batches wait for the sync that covers them.
    pub(super) commit: Option<Arc<GroupCommit>>,
    pub(super) _guard: Arc<SendersGuard>,
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
        let events: u32 = enc.records.iter().map(|r| r.1).sum();
        sh.events.fetch_add(i64::from(events), Ordering::Relaxed);
        let Some(commit) = &self.commit else {
            drop(w);
            batch.finalize(EventStatus::Delivered);
            return Ok(());
        };
        // Written to the page cache: the batch is acknowledged once a sync covers it. Its
        // events go; only their holds (one per source batch, mostly) wait.
        {
            let mut st = commit.lock();
            st.register(&mut w, &mut batch.events);
        }
        drop(w);
        commit.wake.notify_one();
        drop(batch);
        // Bounded: past `MAX_WAITING` holds, the sender waits for a sync to take some.
        loop {
            let synced = commit.synced.notified();
            tokio::pin!(synced);
            synced.as_mut().enable();
            if commit.lock().waiting.len() <= MAX_WAITING {
                return Ok(());
            }
            synced.await;
        }
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
        let mut ctx = codec::Context::default();
        for (i, e) in batch.iter().enumerate() {
            let ev_start = enc.bytes.len();
            codec::encode_event_with(e, &mut enc.bytes, &mut ctx);
            let ev_len = enc.bytes.len() - ev_start;
            if ev_len > sh.max_payload {
                enc.bytes.truncate(ev_start);
                // What it remembered of this event is not in the record.
                ctx.new_record();
                refused.push((i, ev_len));
                continue;
            }
            if enc.bytes.len() - rec_start - RECORD_HEADER > sh.max_payload {
                // Close the record before this event; the event opens the next one, encoded
                // again without reference to the record before.
                enc.bytes.truncate(ev_start);
                enc.records.push((ev_start, events));
                rec_start = ev_start;
                enc.bytes.resize(rec_start + RECORD_HEADER, 0);
                ctx.new_record();
                let ev_start = enc.bytes.len();
                codec::encode_event_with(e, &mut enc.bytes, &mut ctx);
                events = 0;
                // Whole, it may be larger than it was as a difference.
                let ev_len = enc.bytes.len() - ev_start;
                if ev_len > sh.max_payload {
                    enc.bytes.truncate(ev_start);
                    ctx.new_record();
                    refused.push((i, ev_len));
                    continue;
                }
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

/// At most this many holds (one per source batch, mostly) wait for a sync before a sender
/// waits too.
pub(super) const MAX_WAITING: usize = 4096;

/// Group commit (`fsync = "batch"`): senders write their batches to the page cache and leave
/// their holds here; [`group_commit`] syncs whenever something written is not synced yet, and
/// then acknowledges every batch written before that sync started. One sync covers all the
/// batches written while the previous one ran.
#[derive(Debug, Default)]
pub(super) struct GroupCommit {
    state: Mutex<CommitState>,
    /// Something was written, or the senders are gone.
    pub(super) wake: Notify,
    /// A sync finished.
    pub(super) synced: Notify,
    /// Syncs done by [`group_commit`].
    pub(super) syncs: AtomicU64,
    /// Held by a test to hold syncs back.
    #[cfg(test)]
    pub(super) gate: Mutex<()>,
}

#[derive(Debug, Default)]
pub(super) struct CommitState {
    /// The segments written since the last sync began (none when that sync covers all).
    files: Vec<Arc<File>>,
    /// A segment was created since the last sync began: the folder is synced too.
    dir_dirty: bool,
    /// Records written (the next sequence number), and records durable.
    pub(super) written: u64,
    pub(super) durable: u64,
    /// Holds of written batches, by the sequence number after their last record.
    pub(super) waiting: std::collections::VecDeque<(u64, Finalizer)>,
    closed: bool,
}

impl GroupCommit {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, CommitState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl CommitState {
    /// Registers what `w` just wrote (under the writer's lock, so that sequence numbers and
    /// the file go together) and takes the holds of `events`.
    fn register(&mut self, w: &mut Writer, events: &mut [Event]) {
        if !self.files.last().is_some_and(|f| Arc::ptr_eq(f, &w.file)) {
            self.files.push(w.file.clone());
        }
        self.dir_dirty |= std::mem::take(&mut w.created);
        self.written = w.next_seq;
        let mut last: Option<&Finalizer> = None;
        for e in events {
            let Some(hold) = e.metadata_mut().notifier.take() else {
                continue;
            };
            // Consecutive events of one source batch share a hold.
            let hold = match last {
                Some(l) => match hold.merge_into(l) {
                    Ok(()) => continue,
                    Err(h) => h,
                },
                None => hold,
            };
            self.waiting.push_back((w.next_seq, hold));
            last = self.waiting.back().map(|(_, h)| h);
        }
    }
}

/// Syncs what the senders wrote and acknowledges their batches (see [`GroupCommit`]); ends
/// once the senders are gone and everything is synced.
pub(super) async fn group_commit(commit: Arc<GroupCommit>, sh: Arc<Shared>) {
    loop {
        let wake = commit.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let job = {
            let mut st = commit.lock();
            if st.written > st.durable {
                // Taken, not cloned: a segment deleted to free a full disk must not be kept
                // open here (the writer registers the file again with its next write).
                let files = std::mem::take(&mut st.files);
                let dir = std::mem::take(&mut st.dir_dirty);
                Some((files, dir, st.written))
            } else if st.closed {
                return;
            } else {
                None
            }
        };
        let Some((files, dir, target)) = job else {
            wake.await;
            continue;
        };
        let c = commit.clone();
        let folder = sh.dir.clone();
        let res = tokio::task::spawn_blocking(move || {
            #[cfg(test)]
            let _gate = c.gate.lock().unwrap_or_else(|p| p.into_inner());
            // Oldest first: a segment is durable before the next one's records.
            let r = files.iter().try_for_each(|f| f.sync_data()).and_then(|()| {
                if dir {
                    format::sync_dir(&folder)
                } else {
                    Ok(())
                }
            });
            c.syncs.fetch_add(1, Ordering::Relaxed);
            r
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
        let status = match &res {
            Ok(()) => EventStatus::Delivered,
            Err(e) => {
                // What the page cache held may or may not be on disk: the batches are not
                // acknowledged (their sources may send them again; the records stay and are
                // delivered too, so nothing is lost, some may come twice).
                sh.metrics.error(
                    "io",
                    1,
                    &format_args!(
                        "disk buffer {}: cannot sync: {e}; the batches written since the last sync are not acknowledged to their sources",
                        sh.dir.display()
                    ),
                );
                EventStatus::Errored
            }
        };
        let mut done = Vec::new();
        {
            let mut st = commit.lock();
            st.durable = st.durable.max(target);
            while st.waiting.front().is_some_and(|(seq, _)| *seq <= target) {
                if let Some((_, h)) = st.waiting.pop_front() {
                    done.push(h);
                }
            }
        }
        commit.synced.notify_waiters();
        for h in done {
            h.finalize(status);
        }
    }
}
