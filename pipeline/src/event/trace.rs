use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{EventMetadata, Value};

/// The kind of a span, as in OTLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanKind {
    #[default]
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SpanStatus {
    /// 0 unset, 1 ok, 2 error (the OTLP codes).
    pub code: i32,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanEvent {
    pub time_unix_nano: u64,
    pub name: String,
    pub attributes: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanLink {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub trace_state: String,
    pub attributes: BTreeMap<String, Value>,
}

/// A trace span, following the OTLP span model.
#[derive(Debug, Clone, Serialize)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub trace_state: String,
    pub name: String,
    pub kind: SpanKind,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attributes: BTreeMap<String, Value>,
    pub events: Vec<SpanEvent>,
    pub links: Vec<SpanLink>,
    pub status: SpanStatus,
    /// Resource attributes (`service.name`, `k8s.pod.name`, ...).
    pub resource: BTreeMap<String, Value>,
    /// Instrumentation scope name and version.
    pub scope_name: String,
    pub scope_version: String,
    #[serde(skip)]
    pub metadata: EventMetadata,
}

impl Span {
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
