use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{EventMetadata, Value};

/// The kind of a span, as in OTLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanKind {
    /// Not given (the default).
    #[default]
    Unspecified,
    /// An internal operation.
    Internal,
    /// Handling a request from a remote client.
    Server,
    /// A request to a remote server.
    Client,
    /// Sending a message to a broker.
    Producer,
    /// Receiving a message from a broker.
    Consumer,
}

/// The status of a span, as in OTLP.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SpanStatus {
    /// 0 unset, 1 ok, 2 error (the OTLP codes).
    pub code: i32,
    /// A description of the status (of an error, usually).
    pub message: String,
}

/// A timed event within a span (an exception, a log).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanEvent {
    /// When, in nanoseconds since the Unix epoch.
    pub time_unix_nano: u64,
    /// Its name.
    pub name: String,
    /// Its attributes.
    pub attributes: BTreeMap<String, Value>,
}

/// A link from a span to another span, in the same trace or not.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanLink {
    /// The linked span's trace id.
    pub trace_id: [u8; 16],
    /// The linked span's id.
    pub span_id: [u8; 8],
    /// The W3C `tracestate` of the link.
    pub trace_state: String,
    /// The link's attributes.
    pub attributes: BTreeMap<String, Value>,
}

/// A trace span, following the OTLP span model.
#[derive(Debug, Clone, Serialize)]
pub struct Span {
    /// The trace id.
    pub trace_id: [u8; 16],
    /// The span id.
    pub span_id: [u8; 8],
    /// The parent span's id; `None` for a root span.
    pub parent_span_id: Option<[u8; 8]>,
    /// The W3C `tracestate`.
    pub trace_state: String,
    /// The operation's name.
    pub name: String,
    /// The span's kind.
    pub kind: SpanKind,
    /// When it started, in nanoseconds since the Unix epoch.
    pub start_time_unix_nano: u64,
    /// When it ended, in nanoseconds since the Unix epoch.
    pub end_time_unix_nano: u64,
    /// The span's attributes.
    pub attributes: BTreeMap<String, Value>,
    /// Timed events within the span.
    pub events: Vec<SpanEvent>,
    /// Links to other spans.
    pub links: Vec<SpanLink>,
    /// How it ended.
    pub status: SpanStatus,
    /// Resource attributes (`service.name`, `k8s.pod.name`, ...).
    pub resource: BTreeMap<String, Value>,
    /// Instrumentation scope name and version.
    pub scope_name: String,
    /// The instrumentation scope's version.
    pub scope_version: String,
    /// Acknowledgement and source information, travelling with the event.
    #[serde(skip)]
    pub metadata: EventMetadata,
}

impl Span {
    /// A span of kind unspecified, with no attributes, events, links or times yet.
    pub fn new(trace_id: [u8; 16], span_id: [u8; 8], name: impl Into<String>) -> Self {
        Self {
            trace_id,
            span_id,
            parent_span_id: None,
            trace_state: String::new(),
            name: name.into(),
            kind: SpanKind::default(),
            start_time_unix_nano: 0,
            end_time_unix_nano: 0,
            attributes: BTreeMap::new(),
            events: Vec::new(),
            links: Vec::new(),
            status: SpanStatus::default(),
            resource: BTreeMap::new(),
            scope_name: String::new(),
            scope_version: String::new(),
            metadata: EventMetadata::default(),
        }
    }
}
