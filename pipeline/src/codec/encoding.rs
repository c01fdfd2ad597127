use std::io::Write as _;

use serde::{Deserialize, Serialize};

use super::logfmt;
use crate::event::{Event, MetricValue, Value};

/// `encoding = { codec = "..." }`: how a sink writes each event.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EncodingConfig {
    /// `json` (default: the whole event as one JSON object), `text` (the `message` field as
    /// is; events without one are written as JSON), `logfmt` (nested keys dotted) or `folded`
    /// (`<stack> <count>`, folded-stack lines).
    #[serde(default)]
    pub codec: Encoder,
}

impl Default for EncodingConfig {
    fn default() -> Self {
        Self {
            codec: Encoder::Json,
        }
    }
}

/// An encoder.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Encoder {
    /// One JSON object per event (the default).
    #[default]
    Json,
    /// A log's `message` field as plain text; other events in a plain text form.
    Text,
    /// `key=value` pairs (logfmt).
    Logfmt,
    /// `<stack> <count>` from the `stack` and `count` fields (what a stack folder emits): the
    /// text format of FlameGraph's and inferno's tools.
    Folded,
}

/// An event the encoder cannot encode.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// Serialising as JSON failed.
    #[error("cannot encode event as JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The event is not what `folded` encodes (why given).
    #[error("the `folded` encoding needs a log with a string `stack` and a non-negative integer `count` (a folded stack); {0}")]
    NotFolded(&'static str),
}

impl Encoder {
    /// Appends one encoded event to `out`, without a trailing newline.
    pub fn encode(self, event: &Event, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match (self, event) {
            (Encoder::Json, Event::Log(l)) => l.write_json(out)?,
            (Encoder::Json, Event::Metric(m)) => serde_json::to_writer(&mut *out, m)?,
            (Encoder::Json, Event::Trace(s)) => serde_json::to_writer(&mut *out, s)?,
            (Encoder::Text, Event::Log(l)) => match l.get_field("message") {
                Some(Value::Bytes(b)) => out.extend_from_slice(b),
                Some(other) => out.extend_from_slice(other.to_string_lossy().as_bytes()),
                None => serde_json::to_writer(&mut *out, l.value())?,
            },
            (Encoder::Text, Event::Metric(m)) => {
                let _ = write!(out, "{}", m.full_name());
                if !m.tags.is_empty() {
                    let tags: Vec<String> =
                        m.tags.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                    let _ = write!(out, "{{{}}}", tags.join(","));
                }
                match &m.value {
                    MetricValue::Counter { value } | MetricValue::Gauge { value } => {
                        let _ = write!(out, " {value}");
                    }
                    other => {
                        out.push(b' ');
                        serde_json::to_writer(&mut *out, other)?;
                    }
                }
            }
            (Encoder::Text, Event::Trace(s)) => {
                let _ = write!(out, "{} {}", hex(&s.trace_id), s.name);
            }
            (Encoder::Logfmt, Event::Log(l)) => match l.as_map() {
                Some(m) => logfmt::write(m, out),
                None => out.extend_from_slice(l.value().to_string_lossy().as_bytes()),
            },
            (Encoder::Folded, Event::Log(l)) => {
                let stack = match l.get_field("stack") {
                    Some(Value::Bytes(b)) => &b[..],
                    Some(Value::String(s)) => s.as_bytes(),
                    Some(_) => return Err(EncodeError::NotFolded("`stack` is not a string")),
                    None => return Err(EncodeError::NotFolded("`stack` is missing")),
                };
                if stack.is_empty() || stack.contains(&b'\n') {
                    return Err(EncodeError::NotFolded("`stack` is empty or spans lines"));
                }
                let count = match l.get_field("count") {
                    Some(Value::Integer(n)) if *n >= 0 => *n,
                    Some(_) => {
                        return Err(EncodeError::NotFolded(
                            "`count` is not a non-negative integer",
                        ))
                    }
                    None => return Err(EncodeError::NotFolded("`count` is missing")),
                };
                out.extend_from_slice(stack);
                let _ = write!(out, " {count}");
            }
            (Encoder::Folded, Event::Metric(_)) => {
                return Err(EncodeError::NotFolded("a metric was given"))
            }
            (Encoder::Folded, Event::Trace(_)) => {
                return Err(EncodeError::NotFolded("a trace was given"))
            }
            (Encoder::Logfmt, other) => {
                let v = other.to_json_value();
                let s = serde_json::to_vec(&v)?;
                let parsed = super::json::parse_json_value(&bytes::Bytes::from(s))?;
                if let Value::Object(m) = parsed {
                    logfmt::write(&m, out);
                }
            }
        }
        Ok(())
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{LogEvent, Metric, MetricKind};
    use bytes::Bytes;

    #[test]
    fn encodes_logs_and_metrics() {
        let mut l = LogEvent::from_message(Bytes::from_static(b"hi there"), None);
        l.insert_field("n", Value::Integer(1));
        let e = Event::Log(l);
        let mut out = Vec::new();
        Encoder::Json.encode(&e, &mut out).unwrap();
        assert_eq!(out, br#"{"message":"hi there","n":1}"#);
        out.clear();
        Encoder::Text.encode(&e, &mut out).unwrap();
        assert_eq!(out, b"hi there");
        out.clear();
        Encoder::Logfmt.encode(&e, &mut out).unwrap();
        assert_eq!(out, br#"message="hi there" n=1"#);
        out.clear();
        let m = Metric::new(
            "up",
            MetricKind::Absolute,
            MetricValue::Gauge { value: 1.0 },
        )
        .with_tag("a", "b");
        Encoder::Text.encode(&Event::from(m), &mut out).unwrap();
        assert_eq!(out, br#"up{a="b"} 1"#);
    }

    #[test]
    fn encodes_folded_stacks_and_rejects_anything_else() {
        let mut l = LogEvent::default();
        l.insert_field("stack", Value::Bytes(Bytes::from_static(b"a;b\xff;c")));
        l.insert_field("count", Value::Integer(42));
        let mut out = Vec::new();
        Encoder::Folded
            .encode(&Event::Log(l.clone()), &mut out)
            .unwrap();
        assert_eq!(out, b"a;b\xff;c 42");
        let mut neg = l.clone();
        neg.insert_field("count", Value::Integer(-1));
        assert!(Encoder::Folded.encode(&Event::Log(neg), &mut out).is_err());
        let mut multi = l.clone();
        multi.insert_field("stack", "a\nb");
        assert!(Encoder::Folded
            .encode(&Event::Log(multi), &mut out)
            .is_err());
        let msg = LogEvent::from_message(Bytes::from_static(b"hi"), None);
        let err = Encoder::Folded
            .encode(&Event::Log(msg), &mut out)
            .unwrap_err();
        assert!(err.to_string().contains("`stack` is missing"), "{err}");
        let m = Metric::new(
            "up",
            MetricKind::Absolute,
            MetricValue::Gauge { value: 1.0 },
        );
        assert!(Encoder::Folded.encode(&Event::from(m), &mut out).is_err());
    }
}
