//! The words every part of Weir shares: what kind of events flow ([`DataType`]), what kind of
//! component something is ([`ComponentKind`]), what a full buffer does ([`WhenFull`]). A leaf:
//! it imports nothing of the crate, so the config, the events, the metrics and the runtime
//! can all use it without importing each other.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The event types a component accepts or produces (a small bit set).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DataType(u8);

impl DataType {
    /// Log events.
    pub const LOG: DataType = DataType(1);
    /// Metric events.
    pub const METRIC: DataType = DataType(2);
    /// Trace spans.
    pub const TRACE: DataType = DataType(4);
    /// Every type.
    pub const ALL: DataType = DataType(7);
    /// No type.
    pub const NONE: DataType = DataType(0);

    /// The types in either.
    pub const fn union(self, o: DataType) -> DataType {
        DataType(self.0 | o.0)
    }
    /// The types in both.
    pub const fn intersect(self, o: DataType) -> DataType {
        DataType(self.0 & o.0)
    }
    /// Whether no type is in it.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// Whether every type of `o` is in it.
    pub const fn contains(self, o: DataType) -> bool {
        self.0 & o.0 == o.0
    }
}

impl fmt::Debug for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if self.0 & 1 != 0 {
            parts.push("logs");
        }
        if self.0 & 2 != 0 {
            parts.push("metrics");
        }
        if self.0 & 4 != 0 {
            parts.push("traces");
        }
        if parts.is_empty() {
            parts.push("nothing");
        }
        f.write_str(&parts.join(" and "))
    }
}

/// What a sink's buffer does when it is full.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// The sender waits, so backpressure slows the upstream components down and nothing is lost.
    #[default]
    Block,
    /// The batch that does not fit is dropped whole, counted in the sink's `discarded` events,
    /// logged (rate-limited), and finalized as `Errored`.
    DropNewest,
}

/// What the runtime does when a component fails while the pipeline runs (it panics, or it
/// returns an error).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Build the component again from its configuration and start it, after a backoff that
    /// doubles from 1 s up to 60 s (reset once it has run for a minute). Its input buffer and
    /// its consumers stay; what it held is reported errored.
    #[default]
    Restart,
    /// Stop the whole pipeline (drain what can be drained, within the grace period) and exit
    /// non-zero, so a supervisor (Kubernetes, systemd) restarts the process.
    Exit,
}

impl OnFailure {
    /// `restart` or `exit`.
    pub fn as_str(self) -> &'static str {
        match self {
            OnFailure::Restart => "restart",
            OnFailure::Exit => "exit",
        }
    }
}

/// Whether a component is a source, a transform or a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    /// A source.
    Source,
    /// A transform.
    Transform,
    /// A sink.
    Sink,
}

impl ComponentKind {
    /// `source`, `transform` or `sink`.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::Source => "source",
            ComponentKind::Transform => "transform",
            ComponentKind::Sink => "sink",
        }
    }
    /// The configuration section: `sources`, `transforms` or `sinks`.
    pub fn section(self) -> &'static str {
        match self {
            ComponentKind::Source => "sources",
            ComponentKind::Transform => "transforms",
            ComponentKind::Sink => "sinks",
        }
    }
}
