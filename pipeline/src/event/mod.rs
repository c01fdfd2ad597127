//! The event model: [`Event`] is a [`LogEvent`], a [`Metric`] or a [`Span`]; events travel in
//! [`EventBatch`]es.
//!
//! Log fields are a tree of [`Value`]s (the same type VRL programs operate on, so VRL programs run
//! without converting). Strings are `Bytes`, so a decoder can point into its read buffer.

mod batch;
mod log;
mod metric;
pub mod size;
mod trace;

pub use batch::{finalize_events, EventBatch, MAX_BATCH_EVENTS};
pub use log::{LogEvent, TypedLog};
pub use metric::{Bucket, Metric, MetricKind, MetricValue, Quantile, Sample, StatisticKind};
pub use trace::{Span, SpanEvent, SpanKind, SpanLink, SpanStatus};
pub use vrl::value::{KeyString, ObjectMap, Value};

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::finalization::{EventStatus, Finalizer};

/// A field path such as `.a.b[0]` or `message`, parsed once.
pub type FieldPath = vrl::path::OwnedValuePath;

/// Parses a field path (`.a.b[0]`, `a.b`, `."key with.dots"`). A leading dot is optional.
pub fn parse_path(path: &str) -> Result<FieldPath, String> {
    let trimmed = path.trim();
    let with_dot;
    let text = if trimmed.starts_with('.') || trimmed.is_empty() {
        trimmed
    } else {
        with_dot = format!(".{trimmed}");
        &with_dot
    };
    vrl::path::parse_value_path(text).map_err(|e| format!("invalid field path `{path}`: {e}"))
}

/// What every event carries besides its data.
#[derive(Debug, Clone, Default)]
pub struct EventMetadata {
    /// The id of the source that produced the event.
    pub source_id: Option<Arc<str>>,
    /// When the source created the event.
    pub ingest_time: Option<DateTime<Utc>>,
    /// This event's hold on its source batch's notifier, set when the source asked for
    /// acknowledgements (see [`crate::finalization`]).
    pub notifier: Option<Finalizer>,
}

impl EventMetadata {
    /// Metadata for an event created now by `source_id`.
    pub fn new(source_id: Option<Arc<str>>) -> Self {
        Self::at(source_id, Utc::now())
    }

    /// Metadata for an event `source_id` took in at `ingest_time`. Sources that read many
    /// events at once (one `read` of many lines) stamp them all with the time of that read:
    /// one clock read per chunk instead of per event.
    pub fn at(source_id: Option<Arc<str>>, ingest_time: DateTime<Utc>) -> Self {
        Self {
            source_id,
            ingest_time: Some(ingest_time),
            notifier: None,
        }
    }

    /// Records this event's outcome in its batch's notifier, if any, keeping the hold (the
    /// batch is finalized later; the worst status wins).
    pub fn update_status(&self, status: EventStatus) {
        if let Some(n) = &self.notifier {
            n.record(status);
        }
    }

    /// For a copy of an event that a component keeps past the event's journey (a store of
    /// the latest values): drops the copy's hold without a status, as `original`, which holds
    /// the same batch, says the outcome.
    pub fn release_copy_of(&mut self, original: &EventMetadata) {
        if let (Some(copy), Some(orig)) = (self.notifier.take(), original.notifier.as_ref()) {
            // Same batch (a clone): merged silently. Otherwise `Err` returns the hold, and
            // dropping it records errored, which is then the truth.
            let _ = copy.merge_into(orig);
        }
    }

    /// Records this event's outcome and releases its hold: the event's journey ends here.
    pub fn finalize(&mut self, status: EventStatus) {
        if let Some(n) = self.notifier.take() {
            n.finalize(status);
        }
    }
}

/// One event.
#[derive(Debug, Clone)]
pub enum Event {
    /// A log: a tree of fields (or a typed form of one).
    Log(LogEvent),
    /// Boxed, like `Trace`: most events are logs, and a batch is a `Vec<Event>`, so an event
    /// is as small as a log (96 bytes) instead of as large as the largest kind (320).
    Metric(Box<Metric>),
    /// A trace span (boxed, for the same reason).
    Trace(Box<Span>),
}

impl Event {
    /// The metadata of the event, whatever its kind.
    pub fn metadata(&self) -> &EventMetadata {
        match self {
            Event::Log(e) => &e.metadata,
            Event::Metric(e) => &e.metadata,
            Event::Trace(e) => &e.metadata,
        }
    }

    /// The metadata of the event, for changes.
    pub fn metadata_mut(&mut self) -> &mut EventMetadata {
        match self {
            Event::Log(e) => &mut e.metadata,
            Event::Metric(e) => &mut e.metadata,
            Event::Trace(e) => &mut e.metadata,
        }
    }

    /// Records this event's outcome and releases its hold on its batch's notifier: its
    /// journey ends here (see [`crate::finalization`]).
    pub fn finalize(&mut self, status: EventStatus) {
        self.metadata_mut().finalize(status);
    }

    /// A copy for display only (a tap): the same data and source, without the event's hold
    /// on its batch's notifier, so watching an event never delays or changes its
    /// acknowledgement.
    pub fn display_copy(&self) -> Event {
        let mut copy = self.clone();
        copy.metadata_mut().release_copy_of(self.metadata());
        copy
    }

    /// The log, if the event is one.
    pub fn as_log(&self) -> Option<&LogEvent> {
        match self {
            Event::Log(l) => Some(l),
            _ => None,
        }
    }

    /// The log, for changes, if the event is one.
    pub fn as_log_mut(&mut self) -> Option<&mut LogEvent> {
        match self {
            Event::Log(l) => Some(l),
            _ => None,
        }
    }

    /// The data type of this event, for graph validation and routing.
    pub fn data_type(&self) -> crate::vocabulary::DataType {
        match self {
            Event::Log(_) => crate::vocabulary::DataType::LOG,
            Event::Metric(_) => crate::vocabulary::DataType::METRIC,
            Event::Trace(_) => crate::vocabulary::DataType::TRACE,
        }
    }

    /// A JSON view of the event (logs: their fields; metrics and spans: their serde form).
    pub fn to_json_value(&self) -> serde_json::Value {
        match self {
            Event::Log(l) => serde_json::to_value(l.value()).unwrap_or(serde_json::Value::Null),
            Event::Metric(m) => serde_json::to_value(m).unwrap_or(serde_json::Value::Null),
            Event::Trace(s) => serde_json::to_value(s).unwrap_or(serde_json::Value::Null),
        }
    }
}

impl From<LogEvent> for Event {
    fn from(l: LogEvent) -> Self {
        Event::Log(l)
    }
}

impl From<Metric> for Event {
    fn from(m: Metric) -> Self {
        Event::Metric(Box::new(m))
    }
}

impl From<Span> for Event {
    fn from(s: Span) -> Self {
        Event::Trace(Box::new(s))
    }
}
