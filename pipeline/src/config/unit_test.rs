//! `[[tests]]`: unit tests of a configuration's transforms, in the shape of Vector's.
//!
//! ```toml
//! [[tests]]
//! name = "errors are routed"
//! [[tests.inputs]]
//! insert_at = "parse"
//! type = "raw"
//! value = '{"status": 503}'
//! [[tests.outputs]]
//! extract_from = "split.errors"
//! [[tests.outputs.conditions]]
//! type = "vrl"
//! source = 'assert_eq!(.status, 503)'
//! ```
//!
//! The loader parses them (so a malformed test is a located error for every command) and
//! keeps them in [`Config::tests`](super::Config::tests); `weir run` and `weir validate`
//! ignore them, `weir test` runs them. What they name (transforms, outputs) is checked by
//! `weir test`, which knows the graph.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::{Deserialize, Deserializer};

use super::Location;

/// A value and where it was written: its byte span in the (interpolated) text, and its
/// `file:line:col`, filled in by the loader.
#[derive(Debug, Clone)]
pub struct Located<T> {
    /// The value.
    pub value: T,
    /// Its byte span in the text it was read from.
    pub span: Range<usize>,
    /// Where it was written, once the loader has placed it.
    pub location: Option<Location>,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Located<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = toml::Spanned::<T>::deserialize(d)?;
        let span = spanned.span();
        Ok(Self {
            value: spanned.into_inner(),
            span,
            location: None,
        })
    }
}

impl<T: schemars::JsonSchema> schemars::JsonSchema for Located<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> std::borrow::Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(generator)
    }
}

impl<T> Located<T> {
    fn place(&mut self, at: &dyn Fn(&Range<usize>) -> Location) {
        self.location = Some(at(&self.span));
    }
}

/// One `[[tests]]` entry: events fed to a transform, and what must (or must not) come out
/// of the transforms downstream.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnitTest {
    /// The test's name, printed as `test NAME ... passed` (or `failed`). Required.
    pub name: String,
    /// One input event: the same as a single `[[tests.inputs]]` entry (Vector's shorthand).
    #[serde(default)]
    pub input: Option<TestInput>,
    /// The events fed to the transforms, in order (`[[tests.inputs]]`). A test needs at
    /// least one input, here or in `input`.
    #[serde(default)]
    pub inputs: Vec<TestInput>,
    /// What must come out, and the conditions it must meet (`[[tests.outputs]]`).
    #[serde(default)]
    pub outputs: Vec<TestOutput>,
    /// Transforms (`id`: any of their outputs) or named outputs (`id.name`) that must emit
    /// nothing during the test.
    #[serde(default)]
    pub no_outputs_from: Vec<Located<String>>,
    /// Where the test's table starts (set by the loader).
    #[serde(skip)]
    #[schemars(skip)]
    pub location: Option<Location>,
}

impl UnitTest {
    /// Every input: `input`, then `inputs`.
    pub fn all_inputs(&self) -> impl Iterator<Item = &TestInput> {
        self.input.iter().chain(self.inputs.iter())
    }

    /// Fills in the `file:line:col` of every located value.
    pub(crate) fn place(&mut self, at: &dyn Fn(&Range<usize>) -> Location) {
        for i in self.input.iter_mut().chain(self.inputs.iter_mut()) {
            i.insert_at.place(at);
            if let Some(s) = &mut i.source {
                s.place(at);
            }
        }
        for o in &mut self.outputs {
            o.extract_from.place(at);
            for c in &mut o.conditions {
                c.source.place(at);
            }
        }
        for n in &mut self.no_outputs_from {
            n.place(at);
        }
    }
}

/// How a test input is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TestInputType {
    /// A log whose `message` field is `value`.
    #[default]
    Raw,
    /// A log with the fields of `log_fields`.
    Log,
    /// A log built by the VRL program `source`, run on an empty event.
    Vrl,
}

/// One event fed to a transform (`[[tests.inputs]]`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestInput {
    /// The transform the event is fed to, as if one of its inputs had sent it. Required.
    pub insert_at: Located<String>,
    /// How the event is written. Default: `raw`.
    #[serde(rename = "type", default)]
    pub kind: TestInputType,
    /// For `type = "raw"`: the log's `message`.
    #[serde(default)]
    pub value: Option<String>,
    /// For `type = "log"`: the log's fields. A key is a field path (`a.b` is the field `b` of
    /// the object `a`; quote a key with dots as `'"a.b"'`); a value is any TOML value (a
    /// TOML date-time becomes a timestamp).
    #[serde(default)]
    pub log_fields: Option<BTreeMap<String, serde_json::Value>>,
    /// For `type = "vrl"`: a VRL program that builds the event from an empty one
    /// (`.message = "hello"`).
    #[serde(default)]
    pub source: Option<Located<String>>,
}

/// The outputs to read: one (`"id"`, `"id.name"`) or several.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum ExtractFrom {
    /// One output.
    One(String),
    /// Several outputs, read together.
    Many(Vec<String>),
}

impl ExtractFrom {
    /// The outputs named.
    pub fn names(&self) -> Vec<&str> {
        match self {
            ExtractFrom::One(s) => vec![s.as_str()],
            ExtractFrom::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// What must come out of one or more outputs (`[[tests.outputs]]`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestOutput {
    /// The transform output(s) to read: `id` (its default output), `id.name` (a named
    /// output, such as `route.errors` or `remap.dropped`), or a list of them. At least one
    /// event must come out of them. Required.
    pub extract_from: Located<ExtractFrom>,
    /// Conditions on the events that came out (`[[tests.outputs.conditions]]`): each must be
    /// met by at least one of them. None: any event will do.
    #[serde(default)]
    pub conditions: Vec<TestCondition>,
}

/// The kind of a test condition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TestConditionType {
    /// A VRL program, read-only, run on each event.
    #[default]
    Vrl,
}

/// A condition on an event that came out (`[[tests.outputs.conditions]]`).
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TestCondition {
    /// The kind of condition: `vrl`, the only one. Default: `vrl`.
    #[serde(rename = "type", default)]
    pub kind: TestConditionType,
    /// The VRL program, run on each event (a log's fields; a metric or span as its JSON
    /// form). It is met when it returns `true`; `assert!` and `assert_eq!` say why it is not
    /// (`assert_eq!(.status, 200, "not ok")`). Required.
    pub source: Located<String>,
}

impl TestInput {
    /// For `type = "log"`: the log's fields, each key a field path, TOML date-times made
    /// timestamps.
    pub fn log_fields_value(&self) -> Result<crate::event::Value, String> {
        let mut log = crate::event::LogEvent::default();
        for (key, value) in self.log_fields.iter().flatten() {
            let path = crate::event::parse_path(key)?;
            log.insert(&path, toml_json_to_value(value.clone()));
        }
        Ok(log.value().clone())
    }
}

/// The key under which TOML's serde form carries a date-time.
const TOML_DATETIME: &str = "$__toml_private_datetime";

/// A JSON value read from TOML as a log value: a TOML date-time (an object of one
/// [`TOML_DATETIME`] key) with an offset becomes a timestamp, one without stays text.
fn toml_json_to_value(v: serde_json::Value) -> crate::event::Value {
    use crate::event::Value;
    match v {
        serde_json::Value::Object(map) => {
            if map.len() == 1 {
                if let Some(serde_json::Value::String(s)) = map.get(TOML_DATETIME) {
                    return match chrono::DateTime::parse_from_rfc3339(s) {
                        Ok(t) => Value::Timestamp(t.with_timezone(&chrono::Utc)),
                        Err(_) => Value::from(s.as_str()),
                    };
                }
            }
            Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k.into(), toml_json_to_value(v)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            Value::Array(items.into_iter().map(toml_json_to_value).collect())
        }
        other => Value::from(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Value;

    #[test]
    fn log_fields_are_paths_and_datetimes_are_timestamps() {
        let input: TestInput = toml::from_str(
            "insert_at = 'x'\ntype = 'log'\n[log_fields]\n'a.b' = 1\nwhen = 1979-05-27T07:32:00Z\nday = 1979-05-27\n",
        )
        .unwrap();
        let v = input.log_fields_value().unwrap();
        let Value::Object(m) = &v else {
            panic!("{v:?}")
        };
        assert_eq!(m["a"], Value::from(serde_json::json!({"b": 1})));
        assert!(matches!(m["when"], Value::Timestamp(_)), "{v:?}");
        assert_eq!(m["day"], Value::from("1979-05-27"));
    }
}
