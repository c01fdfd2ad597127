//! The bounded queue in front of every transform and sink, sized in events, not batches.
//!
//! A sender takes as many permits from a semaphore as its batch has events (capped at the
//! capacity, so one oversized batch still fits) and the receiver gives them back when it takes
//! the batch. With `when_full = "block"` a full buffer makes the sender wait (backpressure); with
//! `drop_newest` the incoming batch is dropped, counted as discarded, and its events are
//! finalized as errored so an acknowledging source knows.

use std::sync::Arc;

use tokio::sync::{mpsc, Semaphore};

use crate::event::EventBatch;
use crate::finalization::EventStatus;
use crate::metrics::{BufferGauge, ComponentMetrics};
use crate::vocabulary::WhenFull;

mod fanout;

pub use fanout::Fanout;

/// The pipeline downstream has gone (shutdown finished, or every consumer stopped).
#[derive(Debug, thiserror::Error)]
#[error("the downstream components have stopped")]
pub struct ClosedError;

#[derive(Debug)]
struct Shared {
    sem: Semaphore,
    capacity: usize,
}

impl BufferGauge for Shared {
    fn events(&self) -> usize {
        self.capacity.saturating_sub(self.sem.available_permits())
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Creates a buffer of `max_events` for the component whose `metrics` are given.
pub fn buffer(
    max_events: usize,
    when_full: WhenFull,
    metrics: Arc<ComponentMetrics>,
) -> (BufferSender, BufferReceiver) {
    let capacity = max_events.clamp(1, Semaphore::MAX_PERMITS);
    let shared = Arc::new(Shared {
        sem: Semaphore::new(capacity),
        capacity,
    });
    metrics.set_buffer(shared.clone());
    let (tx, rx) = mpsc::unbounded_channel();
    (
        BufferSender {
            shared: shared.clone(),
            tx,
            when_full,
            metrics,
        },
        BufferReceiver { shared, rx },
    )
}

/// The sending side; cloned into every upstream fan-out.
#[derive(Debug, Clone)]
pub struct BufferSender {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<(EventBatch, u32)>,
    when_full: WhenFull,
    metrics: Arc<ComponentMetrics>,
}

impl BufferSender {
    /// Queues a batch: waits for room (`block`) or drops it when full (`drop_newest`).
    pub async fn send(&self, mut batch: EventBatch) -> Result<(), ClosedError> {
        let n = batch.len().clamp(1, self.shared.capacity) as u32;
        match self.when_full {
            WhenFull::Block => match self.shared.sem.acquire_many(n).await {
                Ok(p) => p.forget(),
                Err(_) => {
                    batch.finalize(EventStatus::Errored);
                    return Err(ClosedError);
                }
            },
            WhenFull::DropNewest => match self.shared.sem.try_acquire_many(n) {
                Ok(p) => p.forget(),
                Err(tokio::sync::TryAcquireError::NoPermits) => {
                    self.metrics.add_discarded(batch.len() as u64);
                    self.metrics.error(
                        "buffer_full",
                        batch.len() as u64,
                        &format_args!(
                            "buffer full ({} events): dropped {} events (when_full = \"drop_newest\")",
                            self.shared.capacity,
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
            },
        }
        self.tx.send((batch, n)).map_err(|e| {
            let (mut batch, n) = e.0;
            self.shared.sem.add_permits(n as usize);
            batch.finalize(EventStatus::Errored);
            ClosedError
        })
    }
}

/// The receiving side, owned by the component that reads the buffer.
#[derive(Debug)]
pub struct BufferReceiver {
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<(EventBatch, u32)>,
}

impl BufferReceiver {
    /// The next batch, or `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<EventBatch> {
        let (batch, n) = self.rx.recv().await?;
        self.shared.sem.add_permits(n as usize);
        Some(batch)
    }

    /// Events queued right now.
    pub fn len(&self) -> usize {
        self.shared.events()
    }

    /// Whether no event is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for BufferReceiver {
    fn drop(&mut self) {
        // Wake senders waiting for room: nobody will make any.
        self.shared.sem.close();
        self.rx.close();
        while let Ok((mut batch, _)) = self.rx.try_recv() {
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
}
