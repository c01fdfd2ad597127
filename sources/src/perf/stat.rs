//! Parser of `perf stat -I <ms> -x,` output: each interval's counters become metrics.
//!
//! With `-x,` perf prints one CSV line per counter and interval:
//!
//! ```text
//!      0.100173082,215.98,msec,cpu-clock,215989754,100.00,2.160,CPUs utilized
//!      0.100173082,76,,context-switches,215988421,100.00,351.877,/sec
//!      0.100173082,<not supported>,,cycles,0,100.00,,
//! ```
//!
//! (interval end in seconds since perf started, value, unit, event, run time, % enabled,
//! derived metric, its unit). Without `-I` the first field is missing; both are accepted.
//!
//! Each counter becomes an incremental counter `perf_<event>` (the event name with every
//! character outside `[A-Za-z0-9_]` turned into `_`), tagged `event` (the name as perf printed
//! it) and `unit` (when perf gave one). `<not supported>` and `<not counted>` values emit
//! nothing; the caller is told once per event so it can say so.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use weir_pipeline::event::{Metric, MetricKind, MetricValue};

/// One parsed CSV line.
#[derive(Debug, Clone)]
pub enum StatLine {
    /// A counter value.
    Value(Metric),
    /// The counter could not be read in this interval (`<not supported>`, `<not counted>`):
    /// `first` is true the first time this event is seen so.
    Unavailable {
        event: String,
        reason: String,
        first: bool,
    },
    /// A comment or blank line.
    Nothing,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatError {
    #[error("line {line}: not a `perf stat -x,` counter line")]
    Malformed { line: u64 },
    #[error("line {line}: counter value `{value}` is not a number")]
    BadValue { line: u64, value: String },
}

/// Turns `perf stat -x,` lines into metrics.
#[derive(Debug)]
pub struct StatParser {
    /// When the interval times count from (perf's start).
    base: DateTime<Utc>,
    line_no: u64,
    unavailable: BTreeSet<String>,
}

/// `perf_<event>` with every character outside `[A-Za-z0-9_]` made `_`.
pub fn metric_name(event: &str) -> String {
    let mut name = String::with_capacity(event.len() + 5);
    name.push_str("perf_");
    for c in event.chars() {
        name.push(if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        });
    }
    while name.ends_with('_') && name.len() > 5 {
        name.pop();
    }
    name
}

impl StatParser {
    pub fn new(base: DateTime<Utc>) -> Self {
        Self {
            base,
            line_no: 0,
            unavailable: BTreeSet::new(),
        }
    }

    /// A new run of perf starts counting from now.
    pub fn restart(&mut self, base: DateTime<Utc>) {
        self.base = base;
    }

    pub fn parse_line(&mut self, line: &[u8]) -> Result<StatLine, StatError> {
        self.line_no += 1;
        let line_no = self.line_no;
        let Ok(text) = std::str::from_utf8(line) else {
            return Err(StatError::Malformed { line: line_no });
        };
        let text = text.trim();
        if text.is_empty() || text.starts_with('#') {
            return Ok(StatLine::Nothing);
        }
        let fields: Vec<&str> = text.split(',').collect();
        // Interval mode has a leading time; plain mode starts with the value.
        let (time, rest) = match fields.first().and_then(|f| f.trim().parse::<f64>().ok()) {
            Some(t) if fields.len() >= 4 && !is_value_like(fields[3]) => (Some(t), &fields[1..]),
            _ => (None, &fields[..]),
        };
        if rest.len() < 3 {
            return Err(StatError::Malformed { line: line_no });
        }
        let (value, unit, event) = (rest[0].trim(), rest[1].trim(), rest[2].trim());
        if event.is_empty() {
            return Err(StatError::Malformed { line: line_no });
        }
        if value.starts_with('<') {
            let first = self.unavailable.insert(event.to_string());
            return Ok(StatLine::Unavailable {
                event: event.to_string(),
                reason: value.trim_matches(|c| c == '<' || c == '>').to_string(),
                first,
            });
        }
        let Ok(v) = value.parse::<f64>() else {
            return Err(StatError::BadValue {
                line: line_no,
                value: value.chars().take(64).collect(),
            });
        };
        let mut m = Metric::new(
            metric_name(event),
            MetricKind::Incremental,
            MetricValue::Counter { value: v },
        )
        .with_tag("event", event);
        if !unit.is_empty() {
            m = m.with_tag("unit", unit);
        }
        let ts = match time {
            Some(t) if t.is_finite() && t >= 0.0 => {
                self.base + chrono::Duration::nanoseconds((t * 1e9) as i64)
            }
            _ => Utc::now(),
        };
        Ok(StatLine::Value(m.with_timestamp(ts)))
    }
}

/// A field that is a number or a `<not ...>` marker (so it is not an event name).
fn is_value_like(s: &str) -> bool {
    let s = s.trim();
    s.starts_with('<') || s.parse::<f64>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_lines_become_counters_with_units_and_times() {
        let base = DateTime::parse_from_rfc3339("2024-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut p = StatParser::new(base);
        let StatLine::Value(m) = p
            .parse_line(
                b"     0.100173082,215.98,msec,cpu-clock,215989754,100.00,2.160,CPUs utilized",
            )
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(m.name, "perf_cpu_clock");
        assert_eq!(m.value, MetricValue::Counter { value: 215.98 });
        assert_eq!(m.kind, MetricKind::Incremental);
        assert_eq!(m.tags["unit"], "msec");
        assert_eq!(m.tags["event"], "cpu-clock");
        assert_eq!(
            m.timestamp.unwrap(),
            base + chrono::Duration::nanoseconds(100_173_082)
        );
        let StatLine::Value(m) = p
            .parse_line(b"0.2,76,,context-switches,215988421,100.00,351.877,/sec")
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(m.name, "perf_context_switches");
        assert!(!m.tags.contains_key("unit"));
        // Without -I.
        let StatLine::Value(m) = p.parse_line(b"1234,,instructions:u,100,100.00,,").unwrap() else {
            panic!()
        };
        assert_eq!(m.name, "perf_instructions_u");
        assert_eq!(m.value, MetricValue::Counter { value: 1234.0 });
    }

    #[test]
    fn unavailable_counters_and_garbage() {
        let mut p = StatParser::new(Utc::now());
        let line = b"0.1,<not supported>,,cycles,0,100.00,,";
        let StatLine::Unavailable {
            event,
            reason,
            first,
        } = p.parse_line(line).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (event.as_str(), reason.as_str(), first),
            ("cycles", "not supported", true)
        );
        assert!(matches!(
            p.parse_line(b"0.2,<not counted>,,cycles,0,0.00,,").unwrap(),
            StatLine::Unavailable { first: false, .. }
        ));
        assert!(matches!(
            p.parse_line(b"# started on").unwrap(),
            StatLine::Nothing
        ));
        assert!(p.parse_line(b"\xff\xfe,\x00").is_err());
        assert!(matches!(
            p.parse_line(b"0.3,abc,,cycles,0,100.00,,"),
            Err(StatError::BadValue { line: 5, .. })
        ));
        assert!(p.parse_line(b"just text").is_err());
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;

    /// `perf stat -x,` lines (interval and plain mode, unsupported and uncounted events),
    /// mutated: the parser never panics.
    #[test]
    fn fuzz_perf_stat() {
        weir_testing::fuzz::Fuzz::new("perf_stat")
            .seed("     0.100173082,215.98,msec,cpu-clock,215989754,100.00,2.160,CPUs utilized")
            .seed("0.2,76,,context-switches,215988421,100.00,351.877,/sec")
            .seed("1234,,instructions:u,100,100.00,,")
            .seed("0.1,<not supported>,,cycles,0,100.00,,")
            .seed("0.2,<not counted>,,cycles,0,0.00,,")
            .seed("# started on Mon Dec  7 06:00:00 2026")
            .dict([
                ",",
                "<not counted>",
                "<not supported>",
                "msec",
                "%",
                "e+",
                ".",
            ])
            .run(|input| {
                let mut p = StatParser::new(Utc::now());
                for line in input.split(|&b| b == b'\n') {
                    let _ = p.parse_line(line);
                }
            });
    }
}
