//! End-to-end acknowledgements.
//!
//! A source that asked for acknowledgements creates one [`BatchNotifier`] per batch it sends and
//! attaches a [`Finalizer`] (a hold on that notifier) to every event
//! ([`crate::event::EventBatch::attach_notifier`]). Fan-out clones events, and with them their
//! holds, so the wait extends to every sink that received a copy. Whoever ends an event's
//! journey says how it ended ([`EventStatus`]) by finalizing its hold; the worst status wins.
//! When the last hold is released, the notifier sends the final [`BatchStatus`] to the source's
//! [`BatchStatusReceiver`].
//!
//! Every event ends with an explicit outcome. A hold dropped without one (a panicking sink or
//! transform, a batch lost in a queue that closed) counts as [`EventStatus::Errored`], so the
//! source keeps the batch for a replay; nothing is reported delivered that was not. Components
//! that drop events on purpose (`filter`, `sample`, an output nobody reads) finalize them as
//! delivered: done. Components that fold events into new ones (windows, metrics made from
//! logs) move the holds onto what they make ([`FinalizerSet`], [`BatchNotifier::chained`]), so
//! the source hears back only when the output is delivered.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// How an event's journey ended. Ordered from best to worst; the worst status recorded for
/// any event of a batch is the batch's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum EventStatus {
    /// Written to its destination, or dropped on purpose (a filter): done.
    Delivered = 0,
    /// The destination refused it for good (a mapping error, a 400): a verdict on the event,
    /// so the source moves past it.
    Rejected = 1,
    /// Not delivered, and a replay might succeed (a sink gave up or stopped, a buffer dropped
    /// it, a component failed with it in hand). Worse than rejected: a source must not move
    /// past a batch that has one.
    Errored = 2,
}

/// The status a source learns for one of its batches: the worst status any copy of any of its
/// events received.
pub type BatchStatus = EventStatus;

/// Shared by every event of one source batch; see the module docs.
#[derive(Debug)]
pub struct BatchNotifier {
    status: AtomicU8,
    target: Mutex<Option<Target>>,
}

/// Who hears the final status.
#[derive(Debug)]
enum Target {
    /// The source that made the batch.
    Source(oneshot::Sender<BatchStatus>),
    /// The holds of the events a transform folded into this batch's events.
    Parents(Vec<Finalizer>),
}

impl BatchNotifier {
    /// A notifier and the receiver its source awaits.
    pub fn new_with_receiver() -> (Arc<Self>, BatchStatusReceiver) {
        let (tx, rx) = oneshot::channel();
        (
            Arc::new(Self {
                status: AtomicU8::new(EventStatus::Delivered as u8),
                target: Mutex::new(Some(Target::Source(tx))),
            }),
            BatchStatusReceiver { rx },
        )
    }

    /// A notifier for events made from other events (a window's aggregates): when its last
    /// hold is released, its final status finalizes every one of `parents`.
    pub fn chained(parents: Vec<Finalizer>) -> Arc<Self> {
        Arc::new(Self {
            status: AtomicU8::new(EventStatus::Delivered as u8),
            target: Mutex::new(Some(Target::Parents(parents))),
        })
    }

    /// Records a status; the worst one wins.
    fn update(&self, status: EventStatus) {
        self.status.fetch_max(status as u8, Ordering::AcqRel);
    }

    fn current(&self) -> BatchStatus {
        match self.status.load(Ordering::Acquire) {
            0 => EventStatus::Delivered,
            1 => EventStatus::Rejected,
            _ => EventStatus::Errored,
        }
    }
}

impl Drop for BatchNotifier {
    fn drop(&mut self) {
        let status = self.current();
        let target = match self.target.get_mut() {
            Ok(t) => t.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        match target {
            // The source may have stopped waiting; nothing to do then.
            Some(Target::Source(tx)) => {
                let _ = tx.send(status);
            }
            Some(Target::Parents(parents)) => {
                for p in parents {
                    p.finalize(status);
                }
            }
            None => {}
        }
    }
}

/// One event's hold on its batch's [`BatchNotifier`]. Release it with [`Finalizer::finalize`];
/// dropped without a status it records [`EventStatus::Errored`] (see the module docs). Cloning
/// makes another hold, which needs its own outcome.
#[derive(Debug, Clone)]
pub struct Finalizer(Option<Arc<BatchNotifier>>);

impl Finalizer {
    /// A hold on `notifier`.
    pub fn new(notifier: &Arc<BatchNotifier>) -> Self {
        Self(Some(Arc::clone(notifier)))
    }

    /// Records `status` without releasing the hold (an event marked rejected while the rest of
    /// its batch goes on; the worst status wins).
    pub fn record(&self, status: EventStatus) {
        if let Some(n) = &self.0 {
            n.update(status);
        }
    }

    /// Records `status` and releases the hold.
    pub fn finalize(mut self, status: EventStatus) {
        if let Some(n) = self.0.take() {
            n.update(status);
        }
    }

    /// Whether `other` holds the same batch: one of the two can then be merged into the other.
    pub fn same_batch(&self, other: &Finalizer) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Releases this hold without a status, because `keeper` holds the same batch and will
    /// say the outcome for both. Returns `self` back when `keeper` holds another batch.
    pub fn merge_into(mut self, keeper: &Finalizer) -> Result<(), Finalizer> {
        if self.same_batch(keeper) {
            self.0 = None;
            Ok(())
        } else {
            Err(self)
        }
    }
}

impl Drop for Finalizer {
    fn drop(&mut self) {
        if let Some(n) = self.0.take() {
            n.update(EventStatus::Errored);
        }
    }
}

/// The holds of many events, one per batch, for a component that folds events into new
/// ones: it absorbs the holds of what goes in and hands them to what comes out
/// ([`FinalizerSet::into_finalizer`]). Events of one source batch arrive together, so a
/// hold equal to the last one is merged into it; the set grows by batches, not by events.
#[derive(Debug, Default)]
pub struct FinalizerSet {
    holds: Vec<Finalizer>,
}

impl FinalizerSet {
    /// Takes `hold` in (merged into the last one when it holds the same batch).
    pub fn absorb(&mut self, hold: Option<Finalizer>) {
        let Some(hold) = hold else { return };
        let hold = match self.holds.last() {
            Some(last) => match hold.merge_into(last) {
                Ok(()) => return,
                Err(h) => h,
            },
            None => hold,
        };
        self.holds.push(hold);
    }

    /// Takes every hold of `other` in.
    pub fn absorb_set(&mut self, other: FinalizerSet) {
        for h in other.holds {
            self.absorb(Some(h));
        }
    }

    /// Whether no hold is in the set.
    pub fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }

    /// The number of holds (distinct batches, mostly).
    pub fn len(&self) -> usize {
        self.holds.len()
    }

    /// One hold standing for all of them: attach clones of it to the events made from what
    /// was absorbed. `None` when the set is empty (nobody asked for acknowledgements).
    pub fn into_finalizer(mut self) -> Option<Finalizer> {
        match self.holds.len() {
            0 => None,
            1 => self.holds.pop(),
            _ => Some(Finalizer::new(&BatchNotifier::chained(std::mem::take(
                &mut self.holds,
            )))),
        }
    }

    /// Hands the holds to `events`, made from what was absorbed: each event gets a hold on
    /// one notifier standing for all of them ([`BatchNotifier::chained`] when there are
    /// several), so the sources hear back when those events are delivered. With no event to
    /// hand them to (the input made no output), the holds are released as delivered.
    pub fn attach_to(self, events: &mut [crate::event::Event]) {
        let Some((last, rest)) = events.split_last_mut() else {
            self.finalize(EventStatus::Delivered);
            return;
        };
        let Some(hold) = self.into_finalizer() else {
            return;
        };
        for e in rest {
            e.metadata_mut().notifier = Some(hold.clone());
        }
        last.metadata_mut().notifier = Some(hold);
    }

    /// Releases every hold with `status` (what was absorbed produced nothing to deliver).
    pub fn finalize(self, status: EventStatus) {
        for h in self.holds {
            h.finalize(status);
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

    fn batch_with(n: usize, notifier: &Arc<BatchNotifier>) -> EventBatch {
        let mut batch = EventBatch::new((0..n).map(|_| LogEvent::default().into()).collect());
        batch.attach_notifier(notifier);
        batch
    }

    #[tokio::test]
    async fn worst_status_wins_and_arrives_after_last_copy_is_finalized() {
        let (n, rx) = BatchNotifier::new_with_receiver();
        let mut batch = batch_with(2, &n);
        drop(n);
        let mut copy = batch.clone();
        batch.finalize(EventStatus::Delivered);
        drop(batch);
        let mut rx = rx;
        assert_eq!(rx.try_recv(), None, "a copy is still in flight");
        copy.finalize(EventStatus::Rejected);
        assert_eq!(rx.try_recv(), Some(EventStatus::Rejected));
        drop(copy);
    }

    #[tokio::test]
    async fn events_dropped_without_a_status_count_as_errored() {
        let (n, rx) = BatchNotifier::new_with_receiver();
        let batch = batch_with(3, &n);
        drop(n);
        drop(batch);
        assert_eq!(rx.wait().await, EventStatus::Errored);
    }

    #[tokio::test]
    async fn one_unfinalized_copy_makes_the_batch_errored() {
        let (n, rx) = BatchNotifier::new_with_receiver();
        let mut batch = batch_with(2, &n);
        drop(n);
        let copy = batch.clone();
        batch.finalize(EventStatus::Delivered);
        drop(copy); // a sink that panicked with it in hand
        assert_eq!(rx.wait().await, EventStatus::Errored);
    }

    #[tokio::test]
    async fn a_window_forwards_its_outcome_to_every_batch_it_folded() {
        let (n1, rx1) = BatchNotifier::new_with_receiver();
        let (n2, rx2) = BatchNotifier::new_with_receiver();
        let mut window = FinalizerSet::default();
        for b in [batch_with(3, &n1), batch_with(2, &n2)] {
            for mut e in b {
                window.absorb(e.metadata_mut().notifier.take());
            }
        }
        drop((n1, n2));
        assert_eq!(window.len(), 2, "one hold per batch, not per event");
        let mut out = EventBatch::new(vec![LogEvent::default().into(), LogEvent::default().into()]);
        window.attach_to(&mut out.events);
        let mut rx1 = rx1;
        assert_eq!(
            rx1.try_recv(),
            None,
            "the window's output is not delivered yet"
        );
        out.finalize(EventStatus::Delivered);
        assert_eq!(rx1.wait().await, EventStatus::Delivered);
        assert_eq!(rx2.wait().await, EventStatus::Delivered);
    }

    #[tokio::test]
    async fn a_window_lost_before_it_was_emitted_is_errored() {
        let (n, rx) = BatchNotifier::new_with_receiver();
        let mut window = FinalizerSet::default();
        for mut e in batch_with(2, &n) {
            window.absorb(e.metadata_mut().notifier.take());
        }
        drop(n);
        drop(window);
        assert_eq!(rx.wait().await, EventStatus::Errored);
    }
}
