//! Test support: checks that the demo's stand-in events have the fields, and the kinds of
//! values, of the events of the source type they stand in for, as its page documents them.

use weir_pipeline::event::{ObjectMap, Value};

/// The kind of a field's value.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Str,
    StrOrNull,
    Int,
    IntOrNull,
    Float,
    Bool,
    Time,
    /// An array of strings.
    Strs,
}

impl Kind {
    fn holds(self, v: &Value) -> bool {
        match (self, v) {
            (Self::Str | Self::StrOrNull, Value::Bytes(_) | Value::String(_))
            | (Self::Int | Self::IntOrNull, Value::Integer(_))
            | (Self::Float, Value::Float(_))
            | (Self::Bool, Value::Boolean(_))
            | (Self::Time, Value::Timestamp(_))
            | (Self::StrOrNull | Self::IntOrNull, Value::Null) => true,
            (Self::Strs, Value::Array(a)) => a
                .iter()
                .all(|s| matches!(s, Value::Bytes(_) | Value::String(_))),
            _ => false,
        }
    }
}

/// Asserts that `m` has exactly the fields of `common` and `extra`, each of its kind.
pub fn check_shape(m: &ObjectMap, common: &[(&str, Kind)], extra: &[(&str, Kind)]) {
    let mut want: Vec<&str> = common.iter().chain(extra).map(|f| f.0).collect();
    want.sort_unstable();
    let mut have: Vec<&str> = m.keys().map(|k| k.as_str()).collect();
    have.sort_unstable();
    assert_eq!(have, want, "fields of {m:?}");
    for (name, kind) in common.iter().chain(extra) {
        assert!(kind.holds(&m[*name]), "`{name}` is not {kind:?}: {m:?}");
    }
}

/// The field names listed in the first column of the tables under `section` of
/// `docs/components/PAGE` (up to the next section), sorted.
pub fn documented_fields(page: &str, section: &str) -> Vec<String> {
    let path = format!("{}/../docs/components/{page}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find(&format!("\n{section}\n")).unwrap() + section.len() + 2;
    let body = &text[start..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    let mut names = Vec::new();
    for line in body.lines() {
        let Some(first) = line.strip_prefix("| ").and_then(|l| l.split(" |").next()) else {
            continue;
        };
        for name in first.split(", ") {
            if let Some(n) = name.strip_prefix('`').and_then(|n| n.strip_suffix('`')) {
                names.push(n.to_string());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}
