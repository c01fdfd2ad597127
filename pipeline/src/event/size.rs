//! What an event costs in memory, estimated cheaply: the bytes of its strings plus a fixed
//! overhead per field, not an exact count of its allocations. Buffers are bounded by it
//! (`buffer.max_size`) and the process-wide `memory_limit` adds it up.
//!
//! A log held in a typed form costs what the form says ([`TypedLog::estimated_bytes`]): a
//! `json` line read lazily is its text, so the estimate is O(1) and builds no tree. A tree is
//! walked once (no allocation, no lock); the walk stops counting below [`MAX_DEPTH`] levels.

use std::mem::size_of;

use super::{Event, LogEvent, Metric, MetricValue, Span, Value};

/// What every node of a tree is counted for besides its own bytes: the value itself and its
/// share of the map or array that holds it.
const NODE: usize = 48;
/// Nesting below this is not walked (what is below is counted as one node).
const MAX_DEPTH: usize = 32;

/// The estimated bytes of a value tree.
pub fn value_bytes(v: &Value) -> usize {
    value_bytes_at(v, 0)
}

fn value_bytes_at(v: &Value, depth: usize) -> usize {
    NODE + match v {
        Value::Bytes(b) => b.len(),
        Value::Regex(r) => r.as_str().len(),
        Value::Object(m) if depth < MAX_DEPTH => m
            .iter()
            .map(|(k, v)| k.len() + value_bytes_at(v, depth + 1))
            .sum(),
        Value::Array(a) if depth < MAX_DEPTH => {
            a.iter().map(|v| value_bytes_at(v, depth + 1)).sum()
        }
        _ => 0,
    }
}

impl LogEvent {
    /// The estimated memory this log holds, in bytes (see [`crate::event::size`]).
    pub fn estimated_bytes(&self) -> usize {
        size_of::<Event>()
            + match self.typed_estimate() {
                Some(n) => n,
                None => value_bytes(self.value()),
            }
    }
}

impl Metric {
    /// The estimated memory this metric holds, in bytes.
    pub fn estimated_bytes(&self) -> usize {
        let tags: usize = self
            .tags
            .iter()
            .map(|(k, v)| NODE + k.len() + v.len())
            .sum();
        let value = match &self.value {
            MetricValue::Counter { .. } | MetricValue::Gauge { .. } => 0,
            MetricValue::Set { values } => values.iter().map(|v| NODE + v.len()).sum(),
            MetricValue::Distribution { samples, .. } => samples.len() * 16,
            MetricValue::AggregatedHistogram { buckets, .. } => buckets.len() * 16,
            MetricValue::AggregatedSummary { quantiles, .. } => quantiles.len() * 16,
        };
        size_of::<Event>()
            + size_of::<Metric>()
            + self.name.len()
            + self.namespace.as_ref().map_or(0, String::len)
            + tags
            + value
    }
}

impl Span {
    /// The estimated memory this span holds, in bytes.
    pub fn estimated_bytes(&self) -> usize {
        let attrs = |m: &std::collections::BTreeMap<String, Value>| -> usize {
            m.iter().map(|(k, v)| k.len() + value_bytes(v)).sum()
        };
        let events: usize = self
            .events
            .iter()
            .map(|e| NODE + e.name.len() + attrs(&e.attributes))
            .sum();
        let links: usize = self
            .links
            .iter()
            .map(|l| NODE + l.trace_state.len() + attrs(&l.attributes))
            .sum();
        size_of::<Event>()
            + size_of::<Span>()
            + self.trace_state.len()
            + self.name.len()
            + self.status.message.len()
            + self.scope_name.len()
            + self.scope_version.len()
            + attrs(&self.attributes)
            + attrs(&self.resource)
            + events
            + links
    }
}

impl Event {
    /// The estimated memory this event holds, in bytes: what buffers and the process-wide
    /// memory limit count. Cheap (no allocation; a lazily read JSON line is O(1)).
    pub fn estimated_bytes(&self) -> usize {
        match self {
            Event::Log(l) => l.estimated_bytes(),
            Event::Metric(m) => m.estimated_bytes(),
            Event::Trace(s) => s.estimated_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventBatch, MetricKind};

    #[test]
    fn a_line_costs_about_its_length() {
        let small = Event::from(LogEvent::from_message("x".into(), None)).estimated_bytes();
        let big: Event = LogEvent::from_message(vec![b'a'; 1 << 20].into(), None).into();
        let big = big.estimated_bytes();
        assert!(small < 512, "{small}");
        assert!((1 << 20) < big && big < (1 << 20) + 512, "{big}");
        let batch = EventBatch::new(vec![
            LogEvent::from_message(vec![b'a'; 1000].into(), None).into(),
            Metric::new("m", MetricKind::Absolute, MetricValue::Gauge { value: 1.0 })
                .with_tag("k", "v")
                .into(),
        ]);
        assert!(batch.estimated_bytes() > 1000);
    }

    #[test]
    fn deep_trees_are_walked_only_so_far() {
        let mut v = Value::Bytes("leaf".into());
        for _ in 0..1_000 {
            v = Value::Array(vec![v]);
        }
        assert!(value_bytes(&v) <= (MAX_DEPTH + 1) * NODE);
    }
}
