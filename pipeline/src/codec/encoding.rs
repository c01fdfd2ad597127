use std::io::Write as _;

use serde::{Deserialize, Serialize};

use super::logfmt;
use crate::event::{Event, MetricValue, Value};

/// `encoding = { codec = "..." }`: how a sink writes each event.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EncodingConfig {
    /// `json` (default: the whole event as one JSON object), `text` (the `message` field as
    /// is; events without one are written as JSON) or `logfmt` (nested keys dotted).
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoder {
    #[default]
    Json,
    Text,
    Logfmt,
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot encode event as JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Encoder {
    /// Appends one encoded event to `out`, without a trailing newline.
    pub fn encode(self, event: &Event, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match (self, event) {
            (Encoder::Json, Event::Log(l)) => serde_json::to_writer(&mut *out, l.value())?,
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
        Encoder::Text.encode(&Event::Metric(m), &mut out).unwrap();
        assert_eq!(out, br#"up{a="b"} 1"#);
    }
}
