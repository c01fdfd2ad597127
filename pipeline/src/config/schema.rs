//! The JSON Schema of a whole configuration file, made from the registered component types.
//!
//! `weir generate-docs` writes it to `docs/schemas/config.schema.json`, for editors (taplo, Even
//! Better TOML) to complete and check Weir's TOML. Each `[sources.ID]`, `[transforms.ID]` and
//! `[sinks.ID]` table is a `oneOf` over the component types of its kind, told apart by `type`;
//! each branch is the type's own options (its config struct, with its doc comments as
//! descriptions) plus the common keys Weir handles itself (`type`, `inputs`, `buffer`,
//! `acknowledgements`, see `load.rs`).
//!
//! The schema is draft-07, the newest draft that editors' TOML tooling reads everywhere.

use schemars::generate::SchemaSettings;
use schemars::{Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::{ApiConfig, BufferConfig, ComponentKind, Secret, UnitTest};
use crate::component::{Registry, SchemaFn};

/// What may be written for `type`, `inputs`, `buffer` and `acknowledgements`: the keys the loader
/// takes out of a component's table before the component's own options are parsed.
fn common_keys(kind: ComponentKind, type_name: &str, buffer: &Value) -> Vec<(&'static str, Value)> {
    let mut keys = vec![(
        "type",
        json!({
            "description": format!("The component type: `{type_name}`."),
            "const": type_name,
        }),
    )];
    match kind {
        ComponentKind::Source => keys.push((
            "acknowledgements",
            json!({
                "description": "Hold back the source's progress (offsets, checkpoints) until every \
                    sink that received its events has delivered them. Default: on for every \
                    source that can (the configuration guide lists them); \
                    `false` opts out; `true` on a source that cannot is an error.",
                "type": "boolean",
            }),
        )),
        ComponentKind::Transform | ComponentKind::Sink => {
            keys.push((
                "inputs",
                json!({
                    "description": "What this component reads: component ids, `id.output` for a \
                        named output, or globs (`app_*`).",
                    "type": "array",
                    "items": { "type": "string" },
                    "minItems": 1,
                }),
            ));
            if kind == ComponentKind::Sink {
                keys.push(("buffer", buffer.clone()));
            }
        }
    }
    keys.push((
        "on_failure",
        json!({
            "description": "What happens when the component fails while the pipeline runs (it \
                panics or returns an error): `restart` builds it again and starts it after a \
                backoff (1 s doubling to 60 s), its input buffer and consumers kept; `exit` \
                stops the pipeline and exits non-zero, for a supervisor to restart the process.",
            "enum": ["restart", "exit"],
            "default": "restart",
        }),
    ));
    keys
}

/// Adds the common keys to a component type's schema: to its properties, or to each branch when
/// the type is a choice of shapes (`oneOf`/`anyOf` of objects).
fn add_common(schema: &mut Value, common: &[(&'static str, Value)]) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if obj.contains_key("properties") || obj.get("type") == Some(&json!("object")) {
        let props = obj
            .entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(props) = props.as_object_mut() {
            for (k, v) in common {
                props.insert((*k).to_string(), v.clone());
            }
        }
        let required = obj
            .entry("required")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Some(required) = required.as_array_mut() {
            for k in ["type", "inputs"] {
                if common.iter().any(|(c, _)| *c == k) && !required.contains(&json!(k)) {
                    required.insert(0, json!(k));
                }
            }
        }
        return;
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(Value::Array(branches)) = obj.get_mut(key) {
            for b in branches {
                add_common(b, common);
            }
        }
    }
}

/// Where the schema of a whole configuration refers to [`Secret`]'s schema: every credential
/// option is this reference (or a choice or list of it), which is how [`super::Redactor`]
/// finds them. [`config_schema`] defines `Secret` before any other type, so no other type
/// of the same name can take it.
pub const SECRET_REF: &str = "#/definitions/Secret";

/// The definition name of a component type's schema: `source.file`, `sink.file`.
pub fn definition_name(kind: ComponentKind, type_name: &str) -> String {
    format!("{}.{type_name}", kind.as_str())
}

/// The JSON Schema (draft-07) of a configuration file of a build with these component types.
pub fn config_schema(registry: &Registry) -> Value {
    let mut gen = SchemaSettings::draft07().into_generator();
    // First, so that `Secret` is the name of [`Secret`] (another type named so gets `Secret2`).
    let secret = gen.subschema_for::<Secret>().to_value();
    debug_assert_eq!(secret, json!({ "$ref": SECRET_REF }));
    let api = gen.subschema_for::<ApiConfig>().to_value();
    let buffer = gen.subschema_for::<BufferConfig>().to_value();
    let test = gen.subschema_for::<UnitTest>().to_value();

    let mut components = Map::new();
    let mut section = |gen: &mut SchemaGenerator,
                       kind: ComponentKind,
                       types: &mut dyn Iterator<Item = (&'static str, SchemaFn)>|
     -> Value {
        let mut branches = Vec::new();
        for (name, schema) in types {
            let mut s = schema(gen).to_value();
            add_common(&mut s, &common_keys(kind, name, &buffer));
            let def = definition_name(kind, name);
            branches.push(json!({ "$ref": format!("#/definitions/{def}") }));
            components.insert(def, s);
        }
        json!({
            "description": format!(
                "The {}s, as `[{}.ID]` tables. An ID is letters, digits, `_` and `-`.",
                kind.as_str(),
                kind.section()
            ),
            "type": "object",
            "propertyNames": { "pattern": "^[A-Za-z0-9_-]+$" },
            "additionalProperties": { "oneOf": branches },
        })
    };
    let sources = section(
        &mut gen,
        ComponentKind::Source,
        &mut registry.sources.values().map(|t| (t.name, t.schema)),
    );
    let transforms = section(
        &mut gen,
        ComponentKind::Transform,
        &mut registry.transforms.values().map(|t| (t.name, t.schema)),
    );
    let sinks = section(
        &mut gen,
        ComponentKind::Sink,
        &mut registry.sinks.values().map(|t| (t.name, t.schema)),
    );

    let mut definitions = gen.take_definitions(false);
    definitions.append(&mut components);
    let mut root = Map::new();
    root.insert(
        "$schema".into(),
        json!("http://json-schema.org/draft-07/schema#"),
    );
    let Value::Object(mut body) = json!({
        "title": "Weir configuration",
        "description": "A Weir pipeline: sources, transforms and sinks, with `data_dir` and \
            `[api]`. Generated by `weir generate-docs` from the component types of this build.",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "data_dir": {
                "description": "Where components keep state (checkpoints), in \
                    `<data_dir>/<component id>/`. Created at start; must be writable.",
                "type": "string",
                "default": "./weir-data",
            },
            "memory_limit": {
                "description": "The memory Weir may use, in bytes: sources pause while the \
                    buffered events take more than half of it, or while the resident memory is \
                    over it. Default: 80% of the cgroup's memory limit when there is one, else \
                    none. 0: no limit.",
                "type": "integer",
                "minimum": 0,
            },
            "api": api,
            "sources": sources,
            "transforms": transforms,
            "sinks": sinks,
            "tests": {
                "description": "Unit tests of the transforms (`[[tests]]`), run by `weir test` \
                    and ignored by every other command.",
                "type": "array",
                "items": test,
            },
        },
    }) else {
        return Value::Object(root);
    };
    root.append(&mut body);
    root.insert("definitions".into(), Value::Object(definitions));
    let mut schema = Schema::from(root);
    for t in gen.transforms_mut() {
        t.transform(&mut schema);
    }
    schema.to_value()
}

/// The schema of one component type's own options, every nested type inlined (for the
/// options tables of `docs/components/`).
pub fn component_schema(schema: SchemaFn) -> Value {
    let mut gen = SchemaSettings::draft07()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let mut s = schema(&mut gen);
    // Recursive types stay references: keep what they point to.
    let definitions = gen.take_definitions(false);
    if !definitions.is_empty() {
        s.insert("definitions".into(), Value::Object(definitions));
    }
    for t in gen.transforms_mut() {
        t.transform(&mut s);
    }
    s.to_value()
}

/// The schema of a sink's `buffer` table, inlined.
pub fn buffer_schema() -> Value {
    component_schema(<BufferConfig as schemars::JsonSchema>::json_schema)
}

/// The schema of one `[[tests]]` entry, inlined.
pub fn unit_test_schema() -> Value {
    component_schema(<UnitTest as schemars::JsonSchema>::json_schema)
}

/// The schema of `[api]`, inlined.
pub fn api_schema() -> Value {
    component_schema(<ApiConfig as schemars::JsonSchema>::json_schema)
}
