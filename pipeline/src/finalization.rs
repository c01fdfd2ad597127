//! End-to-end acknowledgements.
//!
//! A source that asked for acknowledgements creates one [`BatchNotifier`] per batch it sends and
//! attaches it to every event ([`crate::event::EventBatch::attach_notifier`]). Each event holds an
//! `Arc` to it, so fan-out (cloning events to several consumers) naturally extends the wait to
//! every sink that received a copy. A sink records the outcome of what it handled
//! ([`EventStatus`]); the worst status wins. When the last copy of the last event is dropped,
//! the notifier sends the final [`BatchStatus`] to the source's [`BatchStatusReceiver`].
//!
//! An event dropped by a transform (filtered out, sampled away) simply goes away without a
//! status: dropping counts as done, so its batch can still be acknowledged as delivered.

#![warn(missing_docs)] // every public item documented (CI: clippy -D warnings)

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// The outcome a sink records for events it handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum EventStatus {
    /// Written to its destination.
    Delivered = 0,
    /// Could not be delivered; a retry might succeed (the sink gave up, or a buffer dropped it).
    Errored = 1,
    /// The destination refused it for good (a mapping error, a 400).
    Rejected = 2,
}

/// The status a source learns for one of its batches: the worst status any copy of any of its
/// events received.
pub type BatchStatus = EventStatus;

/// Shared by every event of one source batch; see the module docs.
#[derive(Debug)]
pub struct BatchNotifier {
    status: AtomicU8,
    tx: Mutex<Option<oneshot::Sender<BatchStatus>>>,
}

impl BatchNotifier {
    /// A notifier and the receiver its source awaits.
    pub fn new_with_receiver() -> (Arc<Self>, BatchStatusReceiver) {
        let (tx, rx) = oneshot::channel();
        (
            Arc::new(Self {
                status: AtomicU8::new(EventStatus::Delivered as u8),
                tx: Mutex::new(Some(tx)),
            }),
            BatchStatusReceiver { rx },
        )
    }

    /// Records a status; the worst one wins.
    pub fn update(&self, status: EventStatus) {
        self.status.fetch_max(status as u8, Ordering::AcqRel);
    }

    fn current(&self) -> BatchStatus {
        match self.status.load(Ordering::Acquire) {
            0 => EventStatus::Delivered,
            1 => EventStatus::Errored,
            _ => EventStatus::Rejected,
        }
    }
}

impl Drop for BatchNotifier {
    fn drop(&mut self) {
        let status = self.current();
        let tx = match self.tx.get_mut() {
            Ok(tx) => tx.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(tx) = tx {
            // The source may have stopped waiting; nothing to do then.
            let _ = tx.send(status);
        }
    }
}

/// What a source awaits to learn the fate of one batch.
#[derive(Debug)]
pub struct BatchStatusReceiver {
    rx: oneshot::Receiver<BatchStatus>,
}

impl BatchStatusReceiver {
    /// Waits for the batch's final status. If the notifier vanished without sending (it cannot,
    /// short of a panic elsewhere), the batch counts as errored so the source does not advance.
    pub async fn wait(self) -> BatchStatus {
        self.rx.await.unwrap_or(EventStatus::Errored)
    }

    /// Non-blocking check, for sources that poll many outstanding batches.
    pub fn try_recv(&mut self) -> Option<BatchStatus> {
        match self.rx.try_recv() {
            Ok(s) => Some(s),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(EventStatus::Errored),
        }
    }
}

impl std::future::Future for BatchStatusReceiver {
    type Output = BatchStatus;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx)
            .poll(cx)
            .map(|r| r.unwrap_or(EventStatus::Errored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventBatch, LogEvent};

    #[tokio::test]
    async fn worst_status_wins_and_arrives_after_last_copy_drops() {
        let (n, rx) = BatchNotifier::new_with_receiver();
        let mut batch =
            EventBatch::new(vec![LogEvent::default().into(), LogEvent::default().into()]);
        batch.attach_notifier(&n);
        drop(n);
        let copy = batch.clone();
        batch.finalize(EventStatus::Delivered);
        drop(batch);
        let mut rx = rx;
        assert_eq!(rx.try_recv(), None, "a copy is still in flight");
        copy.finalize(EventStatus::Rejected);
        drop(copy);
        assert_eq!(rx.wait().await, EventStatus::Rejected);
    }

    #[tokio::test]
    async fn dropped_events_count_as_delivered() {
        let (n, rx) = BatchNotifier::new_with_receiver();
        let mut batch = EventBatch::new(vec![LogEvent::default().into()]);
        batch.attach_notifier(&n);
        drop(n);
        drop(batch);
        assert_eq!(rx.wait().await, EventStatus::Delivered);
    }
}
