use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::{BufferSender, ClosedError};
use crate::event::EventBatch;
use crate::finalization::EventStatus;
use crate::metrics::ComponentMetrics;
use crate::tap::TapSlot;

/// Delivers one output's batches to every consumer. The batch is cloned only when there is
/// more than one consumer (the last one gets the original). A full consumer makes the whole
/// fan-out wait: backpressure reaches the producer. A clone sends to the same consumers (a
/// supervisor keeps one, so a restarting producer does not close its consumers' input).
///
/// The consumers live in a [`Routes`] table shared by the clones, which a reload edits (a
/// sink added or removed); each clone keeps a copy of the list and takes the table's again
/// when its version changed: one relaxed load per batch while nothing changes.
#[derive(Debug, Clone)]
pub struct Fanout {
    consumers: Vec<(Arc<str>, BufferSender)>,
    routes: Arc<Routes>,
    version: u64,
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
            routes: Arc::new(Routes {
                version: AtomicU64::new(0),
                list: Mutex::new(consumers.clone()),
            }),
            version: 0,
            consumers,
            producer,
            orphaned: false,
            tap,
        }
    }

    /// A fan-out sending to the consumers of an existing table (a source a reload rebuilt
    /// takes over its predecessor's outputs).
    pub fn from_routes(
        routes: Arc<Routes>,
        producer: Arc<ComponentMetrics>,
        tap: Arc<TapSlot>,
    ) -> Self {
        let version = routes.version.load(Ordering::Acquire);
        let consumers = routes.lock().clone();
        Self {
            consumers,
            routes,
            version,
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

    /// The slot taps attach to.
    pub fn tap(&self) -> Arc<TapSlot> {
        self.tap.clone()
    }

    /// The table of this output's consumers, for a reload to edit. Weak: the table (and the
    /// buffer senders in it) lives as long as the fan-out's clones, so that a producer that
    /// ends still closes its consumers' input.
    pub fn routes(&self) -> Weak<Routes> {
        Arc::downgrade(&self.routes)
    }

    /// Takes the table's list when it changed since this clone last looked.
    fn refresh(&mut self) {
        let v = self.routes.version.load(Ordering::Acquire);
        if v != self.version {
            self.consumers = self.routes.lock().clone();
            self.version = v;
            self.orphaned = false;
        }
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
        self.refresh();
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
        if !dead.is_empty() {
            let mut list = self.routes.lock();
            for i in dead.into_iter().rev() {
                let (id, _) = self.consumers.remove(i);
                list.retain(|(c, _)| *c != id);
            }
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

/// The consumers of one output, shared by its fan-out's clones and edited by a reload.
#[derive(Debug)]
pub struct Routes {
    version: AtomicU64,
    list: Mutex<Vec<(Arc<str>, BufferSender)>>,
}

impl Routes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Arc<str>, BufferSender)>> {
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends to `id` too from the next batch on (replacing its buffer if it had one).
    pub fn add(&self, id: Arc<str>, tx: BufferSender) {
        let mut list = self.lock();
        list.retain(|(c, _)| *c != id);
        list.push((id, tx));
        self.version.fetch_add(1, Ordering::Release);
    }

    /// Stops sending to `id` from the next batch on.
    pub fn remove(&self, id: &str) {
        let mut list = self.lock();
        list.retain(|(c, _)| &**c != id);
        self.version.fetch_add(1, Ordering::Release);
    }

    /// The buffer this output sends `id`, if it does.
    pub fn sender(&self, id: &str) -> Option<BufferSender> {
        self.lock()
            .iter()
            .find(|(c, _)| &**c == id)
            .map(|(_, tx)| tx.clone())
    }
}
