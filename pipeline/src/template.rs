//! Templates for paths, subjects, topics and index names: `{{ field.path }}` parts filled from
//! the event, and strftime `%Y-%m-%d` parts from the event's time.
//!
//! The time is the event's `timestamp` field when it is a timestamp, else its ingest time, else
//! now, so a replayed archive lands in the partitions of its own dates.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::event::{parse_path, Event, FieldPath, Value};

#[derive(Debug, Clone)]
enum Part {
    Literal(String),
    /// Literal text with strftime specifiers.
    Time(String),
    Field(String, FieldPath),
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// Why a template could not be rendered for an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template `{template}`: field `{field}` is missing from the event")]
    /// A field the template names is not in the event.
    MissingField {
        /// The template, as written.
        template: String,
        /// The missing field.
        field: String,
    },
}

impl Template {
    /// Parses `text`; an unclosed `{{` or a bad field path is an error.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(literal(&rest[..open]));
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| format!("template `{text}`: `{{{{` without a closing `}}}}`"))?;
            let name = after[..close].trim();
            if name.is_empty() {
                return Err(format!("template `{text}`: empty `{{{{ }}}}`"));
            }
            let path = parse_path(name).map_err(|e| format!("template `{text}`: {e}"))?;
            parts.push(Part::Field(name.to_string(), path));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            parts.push(literal(rest));
        }
        Ok(Self {
            source: text.to_string(),
            parts,
        })
    }

    /// Whether rendering depends on the event at all.
    pub fn is_dynamic(&self) -> bool {
        self.parts.iter().any(|p| !matches!(p, Part::Literal(_)))
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Renders for `event` into `out` (cleared first).
    pub fn render_into(&self, event: &Event, out: &mut String) -> Result<(), TemplateError> {
        out.clear();
        for p in &self.parts {
            match p {
                Part::Literal(s) => out.push_str(s),
                Part::Time(fmt) => {
                    let t = event_time(event);
                    let _ = write!(out, "{}", t.format(fmt));
                }
                Part::Field(name, path) => {
                    // A log's field is read in place (no copy per event).
                    let v: Option<std::borrow::Cow<'_, Value>> = match event {
                        Event::Log(l) => l.get(path).map(std::borrow::Cow::Borrowed),
                        Event::Metric(m) => metric_field(m, name).map(std::borrow::Cow::Owned),
                        Event::Trace(s) => (name == "name")
                            .then(|| std::borrow::Cow::Owned(Value::from(s.name.as_str()))),
                    };
                    match v.as_deref() {
                        Some(Value::Bytes(b)) => out.push_str(&String::from_utf8_lossy(b)),
                        Some(Value::Null) | None => {
                            return Err(TemplateError::MissingField {
                                template: self.source.clone(),
                                field: name.clone(),
                            })
                        }
                        Some(other) => out.push_str(&other.to_string_lossy()),
                    }
                }
            }
        }
        Ok(())
    }

    /// Renders for `event`.
    pub fn render(&self, event: &Event) -> Result<String, TemplateError> {
        let mut s = String::new();
        self.render_into(event, &mut s)?;
        Ok(s)
    }
}

fn literal(s: &str) -> Part {
    if s.contains('%') {
        Part::Time(s.to_string())
    } else {
        Part::Literal(s.to_string())
    }
}

fn metric_field(m: &crate::event::Metric, name: &str) -> Option<Value> {
    match name {
        "name" => Some(Value::from(m.name.as_str())),
        "namespace" => m.namespace.as_deref().map(Value::from),
        _ => name
            .strip_prefix("tags.")
            .and_then(|t| m.tags.get(t))
            .map(|v| Value::from(v.as_str())),
    }
}

/// The time an event is filed under.
pub fn event_time(event: &Event) -> DateTime<Utc> {
    match event {
        Event::Log(l) => match l.get_field("timestamp") {
            Some(Value::Timestamp(t)) => *t,
            _ => l.metadata.ingest_time.unwrap_or_else(Utc::now),
        },
        Event::Metric(m) => m.timestamp.unwrap_or_else(Utc::now),
        Event::Trace(s) => DateTime::from_timestamp_nanos(s.start_time_unix_nano as i64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::LogEvent;
    use chrono::TimeZone;

    #[test]
    fn renders_fields_and_time() {
        let t = Template::parse("/data/{{ k8s.namespace }}/dt=%Y-%m-%d/{{app}}.log").unwrap();
        let mut l = LogEvent::default();
        l.insert(&parse_path("k8s.namespace").unwrap(), "shop");
        l.insert_field("app", "cart");
        l.insert_field(
            "timestamp",
            Value::Timestamp(Utc.with_ymd_and_hms(2024, 3, 9, 1, 2, 3).unwrap()),
        );
        assert_eq!(
            t.render(&Event::Log(l.clone())).unwrap(),
            "/data/shop/dt=2024-03-09/cart.log"
        );
        l.remove(&parse_path("app").unwrap());
        assert!(matches!(
            t.render(&Event::Log(l)),
            Err(TemplateError::MissingField { field, .. }) if field == "app"
        ));
        assert!(Template::parse("a{{b").is_err());
    }
}
