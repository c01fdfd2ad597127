use std::sync::Arc;

use super::Event;
use crate::finalization::{BatchNotifier, EventStatus, Finalizer};

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

    /// The estimated memory the batch's events hold, in bytes ([`Event::estimated_bytes`]):
    /// what buffers and the process-wide memory limit count.
    pub fn estimated_bytes(&self) -> usize {
        self.events.iter().map(Event::estimated_bytes).sum()
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
            e.metadata_mut().notifier = Some(Finalizer::new(notifier));
        }
    }

    /// Records `status` for every event of the batch and releases their holds: their journey
    /// ends here (a sink delivered them, a transform dropped them on purpose). Consecutive
    /// events of the same source batch share a notifier, so this touches each notifier once
    /// per run, not once per event.
    pub fn finalize(&mut self, status: EventStatus) {
        finalize_events(&mut self.events, status);
    }
}

/// [`EventBatch::finalize`] for any run of events.
pub fn finalize_events(events: &mut [Event], status: EventStatus) {
    let mut last: Option<Finalizer> = None;
    for e in events {
        let Some(hold) = e.metadata_mut().notifier.take() else {
            continue;
        };
        let hold = match &last {
            Some(l) => match hold.merge_into(l) {
                Ok(()) => continue,
                Err(h) => h,
            },
            None => hold,
        };
        if let Some(prev) = last.replace(hold) {
            prev.finalize(status);
        }
    }
    if let Some(l) = last {
        l.finalize(status);
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
