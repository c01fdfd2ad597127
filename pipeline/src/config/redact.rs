//! Hiding the secrets of a component's table by its schema: [`Redactor`] walks a table as
//! parsed from the TOML text together with the JSON Schema of its component type (the one
//! `weir generate-docs` writes), and replaces every value whose schema is [`Secret`]'s with
//! `**REDACTED**`. It never guesses from key names: a credential is a [`Secret`] in the
//! config struct, so the schema says where each one is.
//!
//! A table the schema does not describe (a key in no `properties` or `additionalProperties`,
//! a value of a type, `const` or `enum` the schema refuses) is not matched, and the
//! caller must show nothing of it: a place the schema does not know could hold a secret.
//! Choices (`anyOf`, `oneOf`: an `Option`, an enum) are walked branch by branch and every
//! branch's redactions are kept, so a value is hidden if any reading of it is a secret.

use serde_json::{Map, Value};
use thiserror::Error;

use super::schema::{config_schema, definition_name, SECRET_REF};
use super::REDACTED;
use crate::component::Registry;
use crate::vocabulary::ComponentKind;

/// How many `$ref`s may be followed without entering a value (a loop of references).
const MAX_REFS: usize = 32;

/// Why a table cannot be shown.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RedactError {
    /// No schema for this component type in this build.
    #[error("no schema for {kind} type `{type_name}`")]
    UnknownType {
        /// `source`, `transform` or `sink`.
        kind: &'static str,
        /// The `type`.
        type_name: String,
    },
    /// The schema does not describe the value at `path`.
    #[error("the schema does not describe `{path}`")]
    Unmatched {
        /// Where, as dotted keys (`tls.key_pass`, `metrics[0]`).
        path: String,
    },
}

/// The schemas of every component type of a build, to redact their tables.
#[derive(Debug, Clone)]
pub struct Redactor {
    definitions: Map<String, Value>,
}

impl Redactor {
    /// The schemas of the registry's component types.
    pub fn new(registry: &Registry) -> Self {
        let definitions = match config_schema(registry) {
            Value::Object(mut root) => match root.remove("definitions") {
                Some(Value::Object(d)) => d,
                _ => Map::new(),
            },
            _ => Map::new(),
        };
        Self { definitions }
    }

    /// A redactor over the given definitions (`#/definitions/NAME`), for tests of schemas
    /// written by hand.
    pub fn from_definitions(definitions: Map<String, Value>) -> Self {
        Self { definitions }
    }

    /// Replaces every secret of `table`, the table of a component of this kind and type
    /// (with its common keys `type`, `inputs`, ...), by `**REDACTED**`. On an error, `table`
    /// may be half redacted: show none of it.
    pub fn redact(
        &self,
        kind: ComponentKind,
        type_name: &str,
        table: &mut toml::Value,
    ) -> Result<(), RedactError> {
        let Some(schema) = self.definitions.get(&definition_name(kind, type_name)) else {
            return Err(RedactError::UnknownType {
                kind: kind.as_str(),
                type_name: type_name.to_string(),
            });
        };
        self.redact_value(table, schema)
    }

    /// Redacts `value` against `schema` (which may refer to this redactor's definitions).
    pub fn redact_value(&self, value: &mut toml::Value, schema: &Value) -> Result<(), RedactError> {
        let mut path = Vec::new();
        match self.walk(value, schema, &mut path, 0) {
            Ok(()) => Ok(()),
            Err(at) => Err(RedactError::Unmatched { path: at }),
        }
    }

    /// Walks `value` with `schema`; on a mismatch, the path of the value not described.
    fn walk(
        &self,
        value: &mut toml::Value,
        schema: &Value,
        path: &mut Vec<String>,
        refs: usize,
    ) -> Result<(), String> {
        let node = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Object(node) => node,
            _ => return Err(path_text(path)),
        };
        let mut result = Ok(());
        let mut keep = |r: Result<(), String>| {
            if result.is_ok() {
                result = r;
            }
        };
        if let Some(Value::String(r)) = node.get("$ref") {
            if r == SECRET_REF {
                *value = toml::Value::String(REDACTED.to_string());
                return Ok(());
            }
            let target = r
                .strip_prefix("#/definitions/")
                .or_else(|| r.strip_prefix("#/$defs/"))
                .and_then(|name| self.definitions.get(name));
            keep(match target {
                Some(t) if refs < MAX_REFS => self.walk(value, t, path, refs + 1),
                _ => Err(path_text(path)),
            });
        }
        if let Some(Value::Array(all)) = node.get("allOf") {
            for b in all {
                keep(self.walk(value, b, path, refs + 1));
            }
        }
        for choice in ["anyOf", "oneOf"] {
            if let Some(Value::Array(branches)) = node.get(choice) {
                // Every branch is walked (each may redact); one must describe the value.
                let mut first_err = None;
                let mut any = false;
                for b in branches {
                    match self.walk(value, b, path, refs + 1) {
                        Ok(()) => any = true,
                        Err(e) => {
                            first_err.get_or_insert(e);
                        }
                    }
                }
                if !any {
                    keep(Err(first_err.unwrap_or_else(|| path_text(path))));
                }
            }
        }
        if let Some(types) = node.get("type") {
            if !type_allows(types, value) {
                keep(Err(path_text(path)));
            }
        }
        let allowed = |v: &Value| scalar_equals(v, value);
        if node.get("const").is_some_and(|c| !allowed(c))
            || node
                .get("enum")
                .and_then(Value::as_array)
                .is_some_and(|e| !e.iter().any(allowed))
        {
            keep(Err(path_text(path)));
        }
        match value {
            toml::Value::Table(table) => {
                let describes = ["properties", "patternProperties", "additionalProperties"]
                    .iter()
                    .any(|k| node.contains_key(*k));
                if describes {
                    for (key, v) in table.iter_mut() {
                        path.push(key.clone());
                        let r = match property_schema(node, key) {
                            Some(s) => self.walk(v, s, path, 0),
                            None => Err(path_text(path)),
                        };
                        path.pop();
                        keep(r);
                    }
                }
            }
            toml::Value::Array(items) => match node.get("items") {
                Some(Value::Array(tuple)) => {
                    for (i, v) in items.iter_mut().enumerate() {
                        path.push(format!("[{i}]"));
                        let r = match tuple.get(i) {
                            Some(s) => self.walk(v, s, path, 0),
                            None => Err(path_text(path)),
                        };
                        path.pop();
                        keep(r);
                    }
                }
                Some(s) => {
                    for (i, v) in items.iter_mut().enumerate() {
                        path.push(format!("[{i}]"));
                        let r = self.walk(v, s, path, 0);
                        path.pop();
                        keep(r);
                    }
                }
                None => {}
            },
            _ => {}
        }
        result
    }
}

/// The schema of `key` in an object schema: its property, or the additional properties'
/// schema (`false` or absent: none). `patternProperties` is not read (Weir's schemas have
/// none): a key only a pattern describes is not matched.
fn property_schema<'a>(node: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if let Some(s) = node
        .get("properties")
        .and_then(Value::as_object)
        .and_then(|p| p.get(key))
    {
        return Some(s);
    }
    match node.get("additionalProperties") {
        Some(Value::Bool(false)) | None => None,
        Some(s) => Some(s),
    }
}

/// Whether a JSON Schema `type` (a name or a list of names) admits a TOML value.
fn type_allows(types: &Value, value: &toml::Value) -> bool {
    let admits = |t: &str| match value {
        toml::Value::String(_) | toml::Value::Datetime(_) => t == "string",
        toml::Value::Integer(_) => t == "integer" || t == "number",
        toml::Value::Float(_) => t == "number",
        toml::Value::Boolean(_) => t == "boolean",
        toml::Value::Array(_) => t == "array",
        toml::Value::Table(_) => t == "object",
    };
    match types {
        Value::String(t) => admits(t),
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(admits),
        _ => true,
    }
}

/// Whether a JSON value equals a TOML scalar (a table or an array: never, so a `const`
/// object or list is not matched).
fn scalar_equals(json: &Value, value: &toml::Value) -> bool {
    match (json, value) {
        (Value::String(a), toml::Value::String(b)) => a == b,
        (Value::Bool(a), toml::Value::Boolean(b)) => a == b,
        (Value::Number(a), toml::Value::Integer(b)) => a.as_i64() == Some(*b),
        (Value::Number(a), toml::Value::Float(b)) => a.as_f64() == Some(*b),
        _ => false,
    }
}

fn path_text(path: &[String]) -> String {
    let mut s = String::new();
    for p in path {
        if !s.is_empty() && !p.starts_with('[') {
            s.push('.');
        }
        s.push_str(p);
    }
    if s.is_empty() {
        s.push_str("(the table)");
    }
    s
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn redactor() -> Redactor {
        let Value::Object(defs) = json!({
            "Secret": { "type": "string" },
            "Tls": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "ca_file": { "type": ["string", "null"] },
                    "key_pass": { "anyOf": [{ "$ref": SECRET_REF }, { "type": "null" }] },
                },
            },
            "Auth": {
                "oneOf": [
                    {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {
                            "strategy": { "const": "basic", "type": "string" },
                            "user": { "type": "string" },
                            "password": { "allOf": [{ "$ref": SECRET_REF }] },
                        },
                    },
                    {
                        "type": "object",
                        "additionalProperties": false,
                        "properties": {
                            "strategy": { "const": "bearer", "type": "string" },
                            "token": { "allOf": [{ "$ref": SECRET_REF }] },
                        },
                    },
                ],
            },
            "sink.x": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "type": { "const": "x" },
                    "inputs": { "type": "array", "items": { "type": "string" } },
                    "endpoint": { "type": "string" },
                    "tls": { "anyOf": [{ "$ref": "#/definitions/Tls" }, { "type": "null" }] },
                    "auth": { "anyOf": [{ "$ref": "#/definitions/Auth" }, { "type": "null" }] },
                    "headers": { "type": "object", "additionalProperties": { "$ref": SECRET_REF } },
                    "upstreams": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": false,
                            "properties": {
                                "url": { "type": "string" },
                                "api_key": { "$ref": SECRET_REF },
                            },
                        },
                    },
                },
            },
        }) else {
            unreachable!()
        };
        Redactor::from_definitions(defs)
    }

    fn parse(text: &str) -> toml::Value {
        toml::Value::Table(toml::from_str(text).unwrap())
    }

    #[test]
    fn every_secret_the_schema_names_is_redacted_wherever_it_is() {
        let mut table = parse(
            r#"
type = "x"
inputs = ["a"]
endpoint = "https://${HOST}"
tls.ca_file = "ca.pem"
tls.key_pass = "pass-1"
auth.strategy = "basic"
auth.user = "weir"
auth.password = "pass-2"
headers.authorization = "Bearer pass-3"
headers.x-api-key = "${API_KEY}"
[[upstreams]]
url = "a"
api_key = "pass-4"
[[upstreams]]
url = "b"
api_key = "pass-5"
"#,
        );
        redactor()
            .redact(ComponentKind::Sink, "x", &mut table)
            .unwrap();
        let shown = toml::to_string(&table).unwrap();
        for s in [
            "pass-1",
            "pass-2",
            "pass-3",
            "pass-4",
            "pass-5",
            "${API_KEY}",
        ] {
            assert!(!shown.contains(s), "{s} shown:\n{shown}");
        }
        let expected = parse(
            r#"
type = "x"
inputs = ["a"]
endpoint = "https://${HOST}"
tls.ca_file = "ca.pem"
tls.key_pass = "**REDACTED**"
auth.strategy = "basic"
auth.user = "weir"
auth.password = "**REDACTED**"
headers.authorization = "**REDACTED**"
headers.x-api-key = "**REDACTED**"
[[upstreams]]
url = "a"
api_key = "**REDACTED**"
[[upstreams]]
url = "b"
api_key = "**REDACTED**"
"#,
        );
        assert_eq!(table, expected);
    }

    #[test]
    fn the_secret_reference_is_the_secret_schema() {
        let Value::Object(root) = config_schema(&Registry::default()) else {
            panic!("not an object");
        };
        let name = SECRET_REF.trim_start_matches("#/definitions/");
        let mut gen = schemars::SchemaGenerator::default();
        let secret = <super::super::Secret as schemars::JsonSchema>::json_schema(&mut gen);
        assert_eq!(root["definitions"][name], secret.to_value());
    }

    #[test]
    fn a_table_the_schema_does_not_describe_is_refused() {
        let r = redactor();
        for (text, path) in [
            ("type = \"x\"\ntoken = \"t\"", "token"),
            ("type = \"x\"\ntls.key_password = \"t\"", "tls.key_password"),
            (
                "type = \"x\"\nauth.strategy = \"bearer\"\nauth.password = \"t\"",
                "auth",
            ),
            ("type = \"x\"\nendpoint = { url = \"t\" }", "endpoint"),
            (
                "type = \"x\"\nupstreams = [{ url = \"a\", key = \"t\" }]",
                "upstreams[0].key",
            ),
        ] {
            let mut table = parse(text);
            let err = r.redact(ComponentKind::Sink, "x", &mut table).unwrap_err();
            let RedactError::Unmatched { path: at } = &err else {
                panic!("{text}: {err}");
            };
            assert!(at.starts_with(path), "{text}: {at}");
        }
        assert_eq!(
            r.redact(ComponentKind::Source, "x", &mut parse("type = \"x\"")),
            Err(RedactError::UnknownType {
                kind: "source",
                type_name: "x".into()
            })
        );
    }
}
