//! The bounded queue in front of every transform and sink, sized in events (not batches) and in
//! bytes.
//!
//! A sender takes as many permits from one semaphore as its batch has events, and as many from a
//! second as the batch's estimated bytes ([`EventBatch::estimated_bytes`], computed once per
//! batch); both are capped at the capacity, so one oversized batch still fits when the buffer is
//! empty (it takes all of it). The receiver gives them back when it takes the batch. With
//! `when_full = "block"` a full buffer makes the sender wait (backpressure); with `drop_newest`
//! the incoming batch is dropped, counted as discarded, and its events are finalized as errored
//! so an acknowledging source knows. Every buffer also adds what it holds to the pipeline's
//! [`MemoryBudget`], which pauses the sources when the process-wide limit is reached.

use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

use crate::event::EventBatch;
use crate::finalization::EventStatus;
use crate::memory::MemoryBudget;
use crate::metrics::{BufferGauge, ComponentMetrics};
use crate::vocabulary::WhenFull;

pub mod disk;
mod fanout;

pub use disk::{DiskError, DiskOptions, Fsync};
pub use fanout::{Fanout, Routes};

/// The most bytes a buffer can be sized to (a semaphore takes at most `u32::MAX` permits at once).
pub const MAX_BUFFER_BYTES: usize = u32::MAX as usize;

/// The pipeline downstream has gone (shutdown finished, or every consumer stopped).
#[derive(Debug, thiserror::Error)]
#[error("the downstream components have stopped")]
pub struct ClosedError;

#[derive(Debug)]
struct Shared {
    sem: Semaphore,
    capacity: usize,
    bytes: Semaphore,
    max_bytes: usize,
    memory: Arc<MemoryBudget>,
}

impl BufferGauge for Shared {
    fn events(&self) -> usize {
        self.capacity.saturating_sub(self.sem.available_permits())
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn bytes(&self) -> usize {
        self.max_bytes
            .saturating_sub(self.bytes.available_permits())
    }
    fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

/// A buffer's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// At most this many events (at least 1).
    pub max_events: usize,
    /// At most this many bytes, as estimated (at least 1, at most [`MAX_BUFFER_BYTES`]).
    pub max_bytes: usize,
    /// What a full buffer does.
    pub when_full: WhenFull,
}

/// What travels in the channel: the batch, the event and byte permits it holds, and the bytes
/// it added to the memory budget.
type Queued = (EventBatch, u32, u32, u64);

/// Creates a buffer of `max_events` (and no byte limit, outside any memory budget) for the
/// component whose `metrics` are given: for tests and tools. The runtime uses [`bounded`].
pub fn buffer(
    max_events: usize,
    when_full: WhenFull,
    metrics: Arc<ComponentMetrics>,
) -> (BufferSender, BufferReceiver) {
    let limits = Limits {
        max_events,
        max_bytes: MAX_BUFFER_BYTES,
        when_full,
    };
    bounded(limits, MemoryBudget::unlimited(), metrics)
}

/// Creates a buffer for the component whose `metrics` are given, counting what it holds in
/// `memory`.
pub fn bounded(
    limits: Limits,
    memory: Arc<MemoryBudget>,
    metrics: Arc<ComponentMetrics>,
) -> (BufferSender, BufferReceiver) {
    let capacity = limits.max_events.clamp(1, Semaphore::MAX_PERMITS);
    let max_bytes = limits.max_bytes.clamp(1, MAX_BUFFER_BYTES);
    let shared = Arc::new(Shared {
        sem: Semaphore::new(capacity),
        capacity,
        bytes: Semaphore::new(max_bytes),
        max_bytes,
        memory,
    });
    metrics.set_buffer(shared.clone());
    let (tx, rx) = mpsc::unbounded_channel();
    (
        BufferSender {
            inner: SenderKind::Memory(MemorySender {
                shared: shared.clone(),
                tx,
                when_full: limits.when_full,
                metrics,
            }),
        },
        BufferReceiver {
            inner: ReceiverKind::Memory(MemoryReceiver { shared, rx }),
        },
    )
}

/// Opens a sink's disk buffer (see [`disk`]): batches are acknowledged to their sources once
/// on disk, and kept across restarts until the sink delivers them.
pub fn on_disk(
    options: DiskOptions,
    metrics: Arc<ComponentMetrics>,
) -> Result<(BufferSender, BufferReceiver), DiskError> {
    let (tx, rx) = disk::open(options, metrics)?;
    Ok((
        BufferSender {
            inner: SenderKind::Disk(tx),
        },
        BufferReceiver {
            inner: ReceiverKind::Disk(Box::new(rx)),
        },
    ))
}

/// The sending side; cloned into every upstream fan-out.
#[derive(Debug, Clone)]
pub struct BufferSender {
    inner: SenderKind,
}

#[derive(Debug, Clone)]
enum SenderKind {
    Memory(MemorySender),
    Disk(disk::DiskSender),
}

impl BufferSender {
    /// Queues a batch: waits for room (`block`) or drops it when full (`drop_newest`).
    pub async fn send(&self, batch: EventBatch) -> Result<(), ClosedError> {
        let bytes = batch.estimated_bytes();
        self.send_sized(batch, bytes).await
    }

    /// [`send`](Self::send) for a batch whose estimated bytes are known (a fan-out computes
    /// them once for all its consumers).
    pub async fn send_sized(&self, batch: EventBatch, bytes: usize) -> Result<(), ClosedError> {
        match &self.inner {
            SenderKind::Memory(m) => m.send_sized(batch, bytes).await,
            SenderKind::Disk(d) => d.send(batch).await.map_err(|_| ClosedError),
        }
    }
}

/// A buffer in memory.
#[derive(Debug, Clone)]
struct MemorySender {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Queued>,
    when_full: WhenFull,
    metrics: Arc<ComponentMetrics>,
}

impl MemorySender {
    async fn send_sized(&self, mut batch: EventBatch, bytes: usize) -> Result<(), ClosedError> {
        let s = &self.shared;
        let n = batch.len().clamp(1, s.capacity) as u32;
        let b = bytes.clamp(1, s.max_bytes) as u32;
        match self.when_full {
            WhenFull::Block => {
                // Always events first, then bytes: every sender waits in the same order, and a
                // drained buffer gives back every permit, so the first waiter always gets in.
                let got = match s.sem.acquire_many(n).await {
                    Ok(p) => {
                        p.forget();
                        match s.bytes.acquire_many(b).await {
                            Ok(p) => {
                                p.forget();
                                true
                            }
                            Err(_) => {
                                s.sem.add_permits(n as usize);
                                false
                            }
                        }
                    }
                    Err(_) => false,
                };
                if !got {
                    batch.finalize(EventStatus::Errored);
                    return Err(ClosedError);
                }
            }
            WhenFull::DropNewest => {
                let room = match s.sem.try_acquire_many(n) {
                    Ok(events) => match s.bytes.try_acquire_many(b) {
                        Ok(bytes) => {
                            events.forget();
                            bytes.forget();
                            Ok(())
                        }
                        // The event permits go back as `events` drops.
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                };
                match room {
                    Ok(()) => {}
                    Err(tokio::sync::TryAcquireError::NoPermits) => {
                        self.metrics.add_discarded(batch.len() as u64);
                        self.metrics.error(
                            "buffer_full",
                            batch.len() as u64,
                            &format_args!(
                                "buffer full ({} events, {} bytes): dropped {} events (when_full = \"drop_newest\")",
                                s.capacity,
                                s.max_bytes,
                                batch.len()
                            ),
                        );
                        batch.finalize(EventStatus::Errored);
                        return Ok(());
                    }
                    Err(tokio::sync::TryAcquireError::Closed) => {
                        batch.finalize(EventStatus::Errored);
                        return Err(ClosedError);
                    }
                }
            }
        }
        s.memory.add(bytes as u64);
        self.tx.send((batch, n, b, bytes as u64)).map_err(|e| {
            let (mut batch, n, b, bytes) = e.0;
            s.sem.add_permits(n as usize);
            s.bytes.add_permits(b as usize);
            s.memory.sub(bytes);
            batch.finalize(EventStatus::Errored);
            ClosedError
        })
    }
}

/// The receiving side, owned by the component that reads the buffer.
#[derive(Debug)]
pub struct BufferReceiver {
    inner: ReceiverKind,
}

#[derive(Debug)]
enum ReceiverKind {
    Memory(MemoryReceiver),
    Disk(Box<disk::DiskReceiver>),
}

impl BufferReceiver {
    /// The next batch, or `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<EventBatch> {
        match &mut self.inner {
            ReceiverKind::Memory(m) => {
                let (batch, n, b, bytes) = m.rx.recv().await?;
                let s = &m.shared;
                s.sem.add_permits(n as usize);
                s.bytes.add_permits(b as usize);
                s.memory.sub(bytes);
                Some(batch)
            }
            ReceiverKind::Disk(d) => d.recv().await,
        }
    }

    /// For a clean stop, once the reader is done: waits (briefly) until what the sink
    /// settled is recorded, so that a disk buffer does not deliver it again at the next
    /// start. Nothing to do for a memory buffer.
    pub async fn settle(&self) {
        if let ReceiverKind::Disk(d) = &self.inner {
            d.settle().await;
        }
    }

    /// Events queued right now (a disk buffer: written this run and not yet delivered).
    pub fn len(&self) -> usize {
        match &self.inner {
            ReceiverKind::Memory(m) => m.shared.events(),
            ReceiverKind::Disk(d) => d.len(),
        }
    }

    /// Bytes queued right now: estimated in memory, or of the segments on disk.
    pub fn bytes(&self) -> usize {
        match &self.inner {
            ReceiverKind::Memory(m) => m.shared.bytes(),
            ReceiverKind::Disk(d) => d.bytes(),
        }
    }

    /// Whether no event is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A buffer in memory, read.
#[derive(Debug)]
struct MemoryReceiver {
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<Queued>,
}

impl Drop for MemoryReceiver {
    fn drop(&mut self) {
        // Wake senders waiting for room: nobody will make any.
        self.shared.sem.close();
        self.shared.bytes.close();
        self.rx.close();
        while let Ok((mut batch, _, _, bytes)) = self.rx.try_recv() {
            self.shared.memory.sub(bytes);
            batch.finalize(EventStatus::Errored);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::LogEvent;

    fn batch(n: usize) -> EventBatch {
        EventBatch::new((0..n).map(|_| LogEvent::default().into()).collect())
    }

    fn limits(max_events: usize, max_bytes: usize, when_full: WhenFull) -> Limits {
        Limits {
            max_events,
            max_bytes,
            when_full,
        }
    }

    #[tokio::test]
    async fn blocks_when_full_and_resumes() {
        let (tx, mut rx) = buffer(10, WhenFull::Block, ComponentMetrics::detached("t"));
        tx.send(batch(6)).await.unwrap();
        let tx2 = tx.clone();
        let pending = tokio::spawn(async move { tx2.send(batch(6)).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!pending.is_finished(), "second batch must wait for room");
        // The waiting sender may already hold part of its permits: the fill never exceeds the capacity.
        assert!(rx.len() <= 10);
        assert_eq!(rx.recv().await.unwrap().len(), 6);
        pending.await.unwrap().unwrap();
        assert_eq!(rx.recv().await.unwrap().len(), 6);
    }

    #[tokio::test]
    async fn drop_newest_counts_drops() {
        let m = ComponentMetrics::detached("t");
        let (tx, mut rx) = buffer(10, WhenFull::DropNewest, m.clone());
        tx.send(batch(8)).await.unwrap();
        tx.send(batch(5)).await.unwrap();
        assert_eq!(m.discarded_events(), 5);
        drop(tx);
        assert_eq!(rx.recv().await.unwrap().len(), 8);
        assert!(rx.recv().await.is_none());
    }

    /// A batch of `n` lines of `size` bytes each.
    fn lines(n: usize, size: usize) -> EventBatch {
        EventBatch::new(
            (0..n)
                .map(|_| LogEvent::from_message(vec![b'x'; size].into(), None).into())
                .collect(),
        )
    }

    #[tokio::test]
    async fn blocks_on_bytes_before_events() {
        let memory = MemoryBudget::unlimited();
        let (tx, mut rx) = bounded(
            limits(1000, 3 << 20, WhenFull::Block),
            memory.clone(),
            ComponentMetrics::detached("t"),
        );
        // Two 1 MiB lines fit in 3 MiB; the next two do not, whatever the event count.
        tx.send(lines(2, 1 << 20)).await.unwrap();
        assert!(
            rx.bytes() > 2 << 20 && rx.bytes() < 3 << 20,
            "{}",
            rx.bytes()
        );
        assert_eq!(memory.buffered() as usize, rx.bytes());
        let tx2 = tx.clone();
        let pending = tokio::spawn(async move { tx2.send(lines(2, 1 << 20)).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !pending.is_finished(),
            "the second batch must wait for bytes"
        );
        // (The waiting sender holds its 2 event permits already: 4 of 1000.)
        assert!(rx.len() <= 4, "room for events was never the limit");
        assert_eq!(rx.recv().await.unwrap().len(), 2);
        pending.await.unwrap().unwrap();
        assert_eq!(rx.recv().await.unwrap().len(), 2);
        assert_eq!(memory.buffered(), 0);
        assert_eq!(rx.bytes(), 0);
    }

    #[tokio::test]
    async fn an_oversized_batch_passes_an_empty_buffer() {
        let (tx, mut rx) = bounded(
            limits(1000, 1 << 20, WhenFull::Block),
            MemoryBudget::unlimited(),
            ComponentMetrics::detached("t"),
        );
        // 4 MiB into a 1 MiB buffer: it takes the whole buffer, and does not deadlock.
        tokio::time::timeout(
            std::time::Duration::from_secs(1),
            tx.send(lines(4, 1 << 20)),
        )
        .await
        .expect("an oversized batch must not wait on an empty buffer")
        .unwrap();
        assert_eq!(rx.bytes(), 1 << 20);
        // The next one waits until it is taken, then passes too.
        let tx2 = tx.clone();
        let pending = tokio::spawn(async move { tx2.send(lines(1, 10)).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!pending.is_finished());
        assert_eq!(rx.recv().await.unwrap().len(), 4);
        pending.await.unwrap().unwrap();
        assert_eq!(rx.recv().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn drop_newest_drops_on_bytes() {
        let m = ComponentMetrics::detached("t");
        let memory = MemoryBudget::unlimited();
        let (tx, mut rx) = bounded(
            limits(1000, 2 << 20, WhenFull::DropNewest),
            memory.clone(),
            m.clone(),
        );
        tx.send(lines(1, 1 << 20)).await.unwrap();
        tx.send(lines(1, 1 << 20)).await.unwrap();
        assert_eq!(m.discarded_events(), 1);
        assert_eq!(
            rx.len(),
            1,
            "the events of the dropped batch were given back"
        );
        drop(tx);
        assert_eq!(rx.recv().await.unwrap().len(), 1);
        assert!(rx.recv().await.is_none());
        assert_eq!(memory.buffered(), 0);
    }

    #[tokio::test]
    async fn a_dropped_receiver_gives_back_the_budget() {
        let memory = MemoryBudget::unlimited();
        let (tx, rx) = bounded(
            limits(1000, 8 << 20, WhenFull::Block),
            memory.clone(),
            ComponentMetrics::detached("t"),
        );
        tx.send(lines(3, 1000)).await.unwrap();
        assert!(memory.buffered() > 3000);
        drop(rx);
        assert_eq!(memory.buffered(), 0);
        assert!(tx.send(lines(1, 10)).await.is_err());
    }
}
