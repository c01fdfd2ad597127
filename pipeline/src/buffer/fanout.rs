use std::sync::Arc;

use super::{BufferSender, ClosedError};
use crate::event::EventBatch;
use crate::finalization::EventStatus;
use crate::metrics::ComponentMetrics;
use crate::tap::TapSlot;

/// Delivers one output's batches to every consumer. The batch is cloned only when there is
/// more than one consumer (the last one gets the original). A full consumer makes the whole
/// fan-out wait: backpressure reaches the producer. A clone sends to the same consumers (a
/// supervisor keeps one, so a restarting producer does not close its consumers' input).
#[derive(Debug, Clone)]
pub struct Fanout {
    consumers: Vec<(Arc<str>, BufferSender)>,
    producer: Arc<ComponentMetrics>,
    /// Every consumer this output had has stopped.
    orphaned: bool,
    /// Where taps (`weir tap`) attach: checked once per batch.
    tap: Arc<TapSlot>,
}

impl Fanout {
    /// A fan-out from `producer` to each of `consumers` (id and buffer).
    pub fn new(consumers: Vec<(Arc<str>, BufferSender)>, producer: Arc<ComponentMetrics>) -> Self {
        let tap = TapSlot::new(&producer.id, None);
        Self {
            consumers,
            producer,
            orphaned: false,
            tap,
        }
    }

    /// Sets the slot taps attach to (one per output, shared by the fan-out's clones).
    pub fn with_tap(mut self, tap: Arc<TapSlot>) -> Self {
        self.tap = tap;
        self
    }

    /// The number of consumers.
    pub fn len(&self) -> usize {
        self.consumers.len()
    }

    /// Whether nobody reads this output.
    pub fn is_empty(&self) -> bool {
        self.consumers.is_empty()
    }

    /// Sends to every live consumer. A consumer that has stopped is removed (its copy is
    /// finalized as errored); when none is left the error says so.
    pub async fn send(&mut self, mut batch: EventBatch) -> Result<(), ClosedError> {
        if self.orphaned {
            batch.finalize(EventStatus::Errored);
            return Err(ClosedError);
        }
        // The one cost of taps while nobody taps: a relaxed load per batch.
        if self.tap.is_active() {
            self.tap.publish(&batch);
        }
        if self.consumers.is_empty() {
            // An output nobody reads (e.g. an unused route): counted, not silent, and done
            // (as a filter's drop is).
            self.producer.add_discarded(batch.len() as u64);
            batch.finalize(EventStatus::Delivered);
            return Ok(());
        }
        let n = self.consumers.len();
        // Estimated once for every consumer (a clone shares the strings of the original, so
        // this counts them once per copy: on the safe side).
        let bytes = batch.estimated_bytes();
        let mut batch = Some(batch);
        let mut dead = Vec::new();
        for (i, (id, tx)) in self.consumers.iter().enumerate() {
            let b = if i + 1 == n {
                batch.take().unwrap_or_default()
            } else {
                batch.as_ref().cloned().unwrap_or_default()
            };
            if tx.send_sized(b, bytes).await.is_err() {
                tracing::error!(component = %self.producer.id, consumer = %id, "downstream component has stopped; no longer sending to it");
                dead.push(i);
            }
        }
        for i in dead.into_iter().rev() {
            self.consumers.remove(i);
        }
        if let Some(mut b) = batch {
            b.finalize(EventStatus::Errored);
        }
        if self.consumers.is_empty() {
            self.orphaned = true;
            return Err(ClosedError);
        }
        Ok(())
    }
}
