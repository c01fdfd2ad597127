use std::sync::Arc;

use super::Event;
use crate::finalization::{BatchNotifier, EventStatus};

/// The largest number of events a source puts in one batch.
pub const MAX_BATCH_EVENTS: usize = 1000;

/// A batch of events: the unit every channel carries. Never a single event per send.
#[derive(Debug, Clone, Default)]
pub struct EventBatch {
    /// The events, in order.
    pub events: Vec<Event>,
}

impl EventBatch {
    /// A batch of `events`.
    pub fn new(events: Vec<Event>) -> Self {
        Self { events }
    }

    /// An empty batch with room for `n` events.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            events: Vec::with_capacity(n),
        }
    }

    /// The number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether it holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Appends an event.
    pub fn push(&mut self, e: impl Into<Event>) {
        self.events.push(e.into());
    }

    /// The events, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Event> {
        self.events.iter()
    }

    /// Attaches `notifier` to every event of the batch (the source asked for acknowledgements).
    pub fn attach_notifier(&mut self, notifier: &Arc<BatchNotifier>) {
        for e in &mut self.events {
            e.metadata_mut().notifier = Some(Arc::clone(notifier));
        }
    }

    /// Records `status` for every event of the batch. Consecutive events of the same source
    /// batch share a notifier, so this touches each notifier once per run, not once per event.
    pub fn finalize(&self, status: EventStatus) {
        let mut last: Option<&Arc<BatchNotifier>> = None;
        for e in &self.events {
            if let Some(n) = &e.metadata().notifier {
                if last.is_some_and(|l| Arc::ptr_eq(l, n)) {
                    continue;
                }
                n.update(status);
                last = Some(n);
            }
        }
    }
}

impl IntoIterator for EventBatch {
    type Item = Event;
    type IntoIter = std::vec::IntoIter<Event>;
    fn into_iter(self) -> Self::IntoIter {
        self.events.into_iter()
    }
}

impl From<Vec<Event>> for EventBatch {
    fn from(events: Vec<Event>) -> Self {
        Self { events }
    }
}
