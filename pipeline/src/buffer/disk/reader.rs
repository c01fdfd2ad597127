//! The receiving side: reads records back for the sink, in order, and the ack task that
//! persists what the sink delivered and deletes finished segments.

use super::*;

/// Where the reader is.
#[derive(Debug)]
pub(super) struct ReadState {
    pub(super) segment: u64,
    pub(super) file: Option<File>,
    /// The segment's length once it is no longer written.
    pub(super) limit: Option<u64>,
    pub(super) pos: u64,
    /// The sequence number of the next record, when known.
    pub(super) expected: Option<u64>,
    /// Lost records already counted since the last good record.
    pub(super) counted: u64,
    pub(super) generation: u64,
}

/// One step of the reader.
pub(super) enum Step {
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
pub(super) enum AckMsg {
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
    pub(super) shared: Arc<Shared>,
    pub(super) state: Option<ReadState>,
    pub(super) acks: mpsc::UnboundedSender<AckMsg>,
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

    /// Events written and not yet delivered (those of earlier runs included).
    pub fn len(&self) -> usize {
        self.shared.events()
    }

    /// Whether no event waits for the sink.
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
pub(super) async fn ack_task(
    sh: Arc<Shared>,
    mut ack: AckPosition,
    mut rx: mpsc::UnboundedReceiver<AckMsg>,
) {
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

pub(super) fn delete_before(sh: &Shared, segment: u64) {
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
