//! `weir generate-docs [--check]`: the parts of the documentation made from the code.
//!
//! - `docs/schemas/config.schema.json`: the JSON Schema of a configuration file
//!   ([`weir_pipeline::config::schema::config_schema`]), for editors.
//! - In each `docs/*.md` and `docs/components/*.md`, the options table between
//!   `<!-- options:begin type=NAME kind=KIND -->` and `<!-- options:end -->`: one row per
//!   option of the component type (`kind` is `source`, `transform` or `sink`), nested options
//!   flattened (`batch.max_events`), from the type's config struct: its doc comments, serde
//!   names and defaults. `kind=config` renders a part of the file's top level (`type=api`,
//!   `type=buffer`, `type=tests`), `kind=codec` a codec option (`type=decoding`,
//!   `type=encoding`). Everything outside the markers is left as it is.
//!
//! With `--check`, nothing is written: the files that would change are listed and the exit
//! code is 1. The end-to-end test `docs::generated_docs_are_up_to_date` runs that.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use weir_pipeline::codec::{DecodingConfig, EncodingConfig};
use weir_pipeline::component::{Registry, SchemaFn};
use weir_pipeline::config::schema::{component_schema, config_schema};
use weir_pipeline::config::{ApiConfig, BufferConfig, UnitTest};

use crate::registry::registry;

/// The command that rewrites what this module makes (for messages).
pub const REGENERATE: &str = "cargo run -- generate-docs";

const BEGIN: &str = "<!-- options:begin";
const END: &str = "<!-- options:end";

/// What went wrong: a file unreadable or a marker that names no known type.
#[derive(Debug)]
struct DocError(String);

/// Runs the command against the docs directory `docs`. Returns the exit code.
pub fn generate_docs(docs: &Path, check: bool) -> u8 {
    match run(docs, check) {
        Ok(stale) if stale.is_empty() => {
            if check {
                println!("ok: the generated documentation is up to date");
            }
            crate::exit::OK
        }
        Ok(stale) => {
            for f in &stale {
                if check {
                    println!("stale: {}", f.display());
                } else {
                    println!("wrote: {}", f.display());
                }
            }
            if check {
                eprintln!(
                    "error: {} generated file{} out of date with the code; run `{REGENERATE}` \
                     (or `weir generate-docs`) and commit the result",
                    stale.len(),
                    if stale.len() == 1 { " is" } else { "s are" }
                );
                crate::exit::FAILED
            } else {
                crate::exit::OK
            }
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("error: {}", e.0);
            }
            crate::exit::FAILED
        }
    }
}

/// Regenerates everything in memory; writes what changed unless `check`. Returns the files
/// that differ (written, or stale with `check`).
fn run(docs: &Path, check: bool) -> Result<Vec<PathBuf>, Vec<DocError>> {
    let reg = registry();
    let mut errors = Vec::new();
    let mut outputs: Vec<(PathBuf, String)> = Vec::new();

    let schema = config_schema(&reg);
    match serde_json::to_string_pretty(&schema) {
        Ok(s) => outputs.push((docs.join("schemas/config.schema.json"), s + "\n")),
        Err(e) => errors.push(DocError(format!("cannot serialise the schema: {e}"))),
    }

    let mut pages = Vec::new();
    for dir in [docs.to_path_buf(), docs.join("components")] {
        match std::fs::read_dir(&dir) {
            Ok(rd) => {
                for entry in rd.flatten() {
                    let p = entry.path();
                    if p.extension().is_some_and(|e| e == "md") {
                        pages.push(p);
                    }
                }
            }
            Err(e) => errors.push(DocError(format!("cannot read {}: {e}", dir.display()))),
        }
    }
    pages.sort();

    let mut documented = BTreeSet::new();
    for page in &pages {
        let text = match std::fs::read_to_string(page) {
            Ok(t) => t,
            Err(e) => {
                errors.push(DocError(format!("cannot read {}: {e}", page.display())));
                continue;
            }
        };
        match rewrite_page(&text, &reg, &mut documented) {
            Ok(new) => outputs.push((page.clone(), new)),
            Err(e) => errors.push(DocError(format!("{}: {e}", page.display()))),
        }
    }
    for (kind, name) in registered(&reg) {
        if !documented.contains(&(kind.to_string(), name.to_string())) {
            errors.push(DocError(format!(
                "the {kind} type `{name}` has no options table: add \
                 `{BEGIN} type={name} kind={kind} -->` ... `{END} -->` to its page under {}",
                docs.join("components").display()
            )));
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let mut changed = Vec::new();
    for (path, new) in outputs {
        let old = std::fs::read_to_string(&path).ok();
        if old.as_deref() == Some(new.as_str()) {
            continue;
        }
        if !check {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| {
                    vec![DocError(format!("cannot create {}: {e}", parent.display()))]
                })?;
            }
            std::fs::write(&path, new)
                .map_err(|e| vec![DocError(format!("cannot write {}: {e}", path.display()))])?;
        }
        changed.push(path);
    }
    Ok(changed)
}

/// Every registered type as (kind, name).
fn registered(reg: &Registry) -> Vec<(&'static str, &'static str)> {
    let mut v = Vec::new();
    v.extend(reg.sources.keys().map(|n| ("source", *n)));
    v.extend(reg.transforms.keys().map(|n| ("transform", *n)));
    v.extend(reg.sinks.keys().map(|n| ("sink", *n)));
    v
}

/// The schema function a marker names.
fn schema_fn(reg: &Registry, kind: &str, name: &str) -> Option<SchemaFn> {
    match kind {
        "source" => reg.sources.get(name).map(|t| t.schema),
        "transform" => reg.transforms.get(name).map(|t| t.schema),
        "sink" => reg.sinks.get(name).map(|t| t.schema),
        "config" => match name {
            "api" => Some(<ApiConfig as schemars::JsonSchema>::json_schema),
            "buffer" => Some(<BufferConfig as schemars::JsonSchema>::json_schema),
            "tests" => Some(<UnitTest as schemars::JsonSchema>::json_schema),
            _ => None,
        },
        "codec" => match name {
            "decoding" => Some(<DecodingConfig as schemars::JsonSchema>::json_schema),
            "encoding" => Some(<EncodingConfig as schemars::JsonSchema>::json_schema),
            _ => None,
        },
        _ => None,
    }
}

/// Replaces the content of every marker block of a page; records the types it documents.
fn rewrite_page(
    text: &str,
    reg: &Registry,
    documented: &mut BTreeSet<(String, String)>,
) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut lines = text.split_inclusive('\n').enumerate();
    while let Some((i, line)) = lines.next() {
        out.push_str(line);
        let trimmed = line.trim();
        if trimmed.starts_with(END) {
            return Err(format!(
                "line {}: `{END} -->` without a begin marker",
                i + 1
            ));
        }
        if !trimmed.starts_with(BEGIN) {
            continue;
        }
        let (kind, name, prefix) =
            parse_marker(trimmed).map_err(|e| format!("line {}: {e}", i + 1))?;
        let Some(schema) = schema_fn(reg, &kind, &name) else {
            return Err(format!(
                "line {}: no {kind} type `{name}` in this build (`weir list` shows them)",
                i + 1
            ));
        };
        if !documented.insert((kind.clone(), name.clone()))
            && matches!(kind.as_str(), "source" | "transform" | "sink")
        {
            return Err(format!(
                "line {}: a second options table for the {kind} `{name}`",
                i + 1
            ));
        }
        // Skip the old content up to the end marker.
        let mut end = None;
        for (_, l) in lines.by_ref() {
            if l.trim().starts_with(END) {
                end = Some(l);
                break;
            }
            if l.trim().starts_with(BEGIN) {
                break;
            }
        }
        let Some(end) = end else {
            return Err(format!("line {}: no `{END} -->` after this marker", i + 1));
        };
        out.push('\n');
        out.push_str(&render_table(&component_schema(schema), &prefix));
        out.push('\n');
        out.push_str(end);
    }
    Ok(out)
}

/// `<!-- options:begin type=NAME kind=KIND [prefix=P] -->` -> (kind, name, prefix).
fn parse_marker(line: &str) -> Result<(String, String, String), String> {
    let inner = line
        .trim_start_matches(BEGIN)
        .trim_end()
        .trim_end_matches("-->");
    let (mut kind, mut name, mut prefix) = (None, None, String::new());
    for tok in inner.split_whitespace() {
        match tok.split_once('=') {
            Some(("type", v)) => name = Some(v.to_string()),
            Some(("kind", v)) => kind = Some(v.to_string()),
            Some(("prefix", v)) => prefix = v.to_string(),
            _ => return Err(format!("unknown marker attribute `{tok}`")),
        }
    }
    match (kind, name) {
        (Some(k), Some(n)) => Ok((k, n, prefix)),
        _ => Err("the marker needs `type=NAME kind=source|transform|sink`".into()),
    }
}

/// One row of an options table.
#[derive(Debug, PartialEq)]
struct Row {
    option: String,
    ty: String,
    default: String,
    description: String,
}

/// The markdown table of a component's options.
fn render_table(schema: &Value, prefix: &str) -> String {
    let mut t = Table {
        root: schema,
        rows: Vec::new(),
        expanded: Vec::new(),
    };
    t.walk_object(schema, prefix, "");
    let mut s = String::from("| option | type | default | description |\n|---|---|---|---|\n");
    for r in t.rows {
        let _ = writeln!(
            s,
            "| `{}` | {} | {} | {} |",
            r.option,
            cell(&r.ty),
            cell(&r.default),
            cell(&r.description)
        );
    }
    s
}

/// An options table being made.
struct Table<'a> {
    /// The component's schema (where `$ref`s point).
    root: &'a Value,
    rows: Vec<Row>,
    /// The nested tables already listed option by option, with their path: a second table
    /// of the same shape (`whitelist[]` and `blacklist[]`) refers to the first.
    expanded: Vec<(Value, String)>,
}

/// A nested table with at least this many options is listed once per component.
const DEDUPLICATE_FROM: usize = 4;

impl Table<'_> {
    /// Rows for the properties of an object schema (or of each branch of a tagged enum).
    fn walk_object(&mut self, schema: &Value, prefix: &str, condition: &str) {
        let root = self.root;
        let schema = normalise(root, schema);
        let Some(branches) = object_branches(root, &schema) else {
            self.walk_properties(&schema, prefix, condition);
            return;
        };
        // A tagged enum: the tag (a const in every branch) is one row listing its values;
        // the other properties say which tag value they belong to.
        let tag = tag_of(&branches);
        if let Some(tag) = &tag {
            let values: Vec<String> = branches
                .iter()
                .filter_map(|b| b.pointer(&format!("/properties/{tag}/const")))
                .map(json_inline)
                .collect();
            let docs: Vec<String> = branches
                .iter()
                .filter_map(|b| {
                    let v = b.pointer(&format!("/properties/{tag}/const"))?;
                    let d = b.get("description")?.as_str()?;
                    Some(format!("`{}`: {}", plain(v), clean(d)))
                })
                .collect();
            self.rows.push(Row {
                option: join(prefix, tag),
                ty: alternatives(&values),
                default: "required".into(),
                description: docs.join(" "),
            });
        }
        for b in &branches {
            let cond = match &tag {
                Some(tag) => b
                    .pointer(&format!("/properties/{tag}/const"))
                    .map(|v| format!("With `{tag} = {v}`: "))
                    .unwrap_or_default(),
                None => String::new(),
            };
            let mut b = b.clone();
            if let (Some(tag), Some(props)) =
                (&tag, b.get_mut("properties").and_then(Value::as_object_mut))
            {
                props.remove(tag);
            }
            self.walk_properties(&b, prefix, &cond);
        }
    }

    fn walk_properties(&mut self, schema: &Value, prefix: &str, condition: &str) {
        let Some(props) = schema.get("properties").and_then(Value::as_object) else {
            return;
        };
        let required: BTreeSet<&str> = schema
            .get("required")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for (name, prop) in props {
            let p = normalise(self.root, prop);
            let path = join(prefix, name);
            self.property_rows(&p, &path, required.contains(name.as_str()), condition);
        }
    }

    /// The row of one property, then the rows of its own options when it is a table (or a
    /// list of tables).
    fn property_rows(&mut self, p: &Value, path: &str, required: bool, condition: &str) {
        let root = self.root;
        let (description, doc_default) = split_default(&clean(
            p.get("description").and_then(Value::as_str).unwrap_or(""),
        ));
        let (description, doc_required) = split_required(&description);
        // The code's default is authoritative when it is a plain value; the doc comment's
        // "Default: ..." says what `none` or a table of defaults means.
        let mut kept_default = None;
        let default = match (p.get("default"), doc_default) {
            (Some(v), Some(d)) if !v.is_null() && !v.is_object() => {
                let (column, keep) = merge_default(v, &d);
                if keep {
                    kept_default = Some(d);
                }
                column
            }
            (Some(v), _) if !v.is_null() && !v.is_object() => render_default(v),
            (_, Some(d)) => code_if_literal(d),
            (Some(Value::Object(o)), None) if !o.is_empty() => String::new(),
            _ if required || doc_required => "required".into(),
            _ => "none".into(),
        };
        let mut description = format!("{condition}{description}");
        if let Some(d) = kept_default {
            description.push_str(&format!(" Default: {d}."));
        }
        if let Some(variants) =
            variant_docs(root, p).filter(|_| !names_every_value(root, p, &description))
        {
            if !description.is_empty() {
                description.push(' ');
            }
            description.push_str(&variants);
        }
        // Nested options: of a table, or of each entry of a list of tables.
        let nested = if p.get("properties").is_some() || object_branches(root, p).is_some() {
            Some((p.clone(), path.to_string()))
        } else {
            p.get("items")
                .map(|items| normalise(root, items))
                .filter(|i| i.get("properties").is_some() || object_branches(root, i).is_some())
                .map(|i| (i, format!("{path}[]")))
        };
        let mut expand = None;
        if let Some((schema, nested_path)) = nested {
            let shape = without_descriptions(&schema);
            let size = schema
                .get("properties")
                .and_then(Value::as_object)
                .map_or(DEDUPLICATE_FROM, Map::len);
            match self.expanded.iter().find(|(s, _)| *s == shape) {
                Some((_, first)) if size >= DEDUPLICATE_FROM => {
                    let what = if nested_path.ends_with("[]") {
                        "Each entry has"
                    } else {
                        "It has"
                    };
                    if !description.is_empty() {
                        description.push(' ');
                    }
                    description.push_str(&format!("{what} the options of `{first}` (above)."));
                }
                _ => {
                    self.expanded.push((shape, nested_path.clone()));
                    expand = Some((schema, nested_path));
                }
            }
        }
        self.rows.push(Row {
            option: path.to_string(),
            ty: type_text(root, p),
            default,
            description: description.trim().to_string(),
        });
        if let Some((schema, nested_path)) = expand {
            self.walk_object(&schema, &nested_path, "");
        }
    }
}

/// A schema without its own description and default (those of the property that holds it),
/// to compare the shapes of two nested tables.
fn without_descriptions(schema: &Value) -> Value {
    let mut s = schema.clone();
    if let Some(o) = s.as_object_mut() {
        o.remove("description");
        o.remove("default");
    }
    s
}

/// The property that is a `const` in every branch.
fn tag_of(branches: &[Value]) -> Option<String> {
    let first = branches.first()?.get("properties")?.as_object()?;
    first
        .iter()
        .find(|(k, _)| {
            branches
                .iter()
                .all(|b| b.pointer(&format!("/properties/{k}/const")).is_some())
        })
        .map(|(k, _)| k.clone())
}

/// Text fit for a table cell: one line, `|` escaped.
fn cell(s: &str) -> String {
    let one_line = s
        .split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("<br><br>");
    // GitHub's tables split cells at `|` even inside code spans.
    one_line.replace('|', "\\|")
}

/// Follows a `$ref` into the root's definitions, and unwraps a lone `allOf`.
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        if let Some(name) = r.strip_prefix("#/definitions/") {
            if let Some(def) = root.get("definitions").and_then(|d| d.get(name)) {
                return resolve(root, def);
            }
        }
    }
    schema
}

/// A property's schema with the null alternative of an `Option` removed, `allOf: [x]` and
/// `$ref` followed; the outer description and default are kept.
fn normalise(root: &Value, schema: &Value) -> Value {
    let schema = resolve(root, schema);
    let Some(obj) = schema.as_object() else {
        return schema.clone();
    };
    let mut out = obj.clone();
    // `type: ["string", "null"]`
    if let Some(Value::Array(types)) = out.get("type") {
        let non_null: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        out.insert(
            "type".into(),
            if non_null.len() == 1 {
                non_null[0].clone()
            } else {
                Value::Array(non_null)
            },
        );
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        let Some(Value::Array(branches)) = out.get(key).cloned() else {
            continue;
        };
        let non_null: Vec<Value> = branches
            .iter()
            .filter(|b| b.get("type") != Some(&Value::String("null".into())))
            .cloned()
            .collect();
        if non_null.len() == 1 && (key == "allOf" || non_null.len() < branches.len()) {
            out.remove(key);
            let inner = normalise(root, &non_null[0]);
            if let Some(inner) = inner.as_object() {
                for (k, v) in inner {
                    if !out.contains_key(k) {
                        out.insert(k.clone(), v.clone());
                    }
                }
            }
        } else if non_null.len() < branches.len() {
            out.insert(key.into(), Value::Array(non_null));
        }
    }
    Value::Object(out)
}

/// The tagged-enum branches of a schema: `oneOf` of objects with properties.
fn object_branches(root: &Value, schema: &Value) -> Option<Vec<Value>> {
    let branches = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))?
        .as_array()?;
    let resolved: Vec<Value> = branches.iter().map(|b| normalise(root, b)).collect();
    resolved
        .iter()
        .all(|b| b.get("properties").is_some())
        .then_some(resolved)
}

/// The default column when the code has a default `v` and the doc comment says `Default: d`:
/// the code's value, with the doc's explanation when it adds one (`1048576 (1 MiB)`,
/// `[]` for "empty (any port)"). The bool is true when `d` says something else than the value
/// (`pseudo filesystems`): the sentence then stays in the description.
fn merge_default(v: &Value, d: &str) -> (String, bool) {
    let value = render_default(v);
    let plain_value = value.trim_matches('`');
    let bare = |s: &str| s.trim().trim_matches('`').trim_matches('"').to_string();
    let (head, tail) = match d.find(" (").filter(|_| d.ends_with(')')) {
        Some(i) => (&d[..i], &d[i..]),
        None => (d, ""),
    };
    let head = bare(head);
    let same = head == plain_value
        || head.trim_matches('"') == plain_value.trim_matches('"')
        || head
            .parse::<f64>()
            .ok()
            .zip(v.as_f64())
            .is_some_and(|(a, b)| a == b)
        || (matches!(head.as_str(), "empty" | "none" | "no" | "[]")
            && (v.as_array().is_some_and(Vec::is_empty) || v.as_str() == Some("")));
    if same {
        (format!("{value}{tail}"), false)
    } else {
        (value, true)
    }
}

/// A default from a doc comment: a bare number or boolean is put in backticks, prose is left.
fn code_if_literal(d: String) -> String {
    // "unset" is what the pages call "none".
    let d = match d.strip_prefix("unset") {
        Some(rest) => format!("none{rest}"),
        None => d,
    };
    let literal = d.parse::<f64>().is_ok() || d == "true" || d == "false";
    if literal {
        format!("`{d}`")
    } else {
        d
    }
}

/// The documented variants of an enum of strings: "`a`: what a does. `b`: ...".
fn variant_docs(root: &Value, p: &Value) -> Option<String> {
    let branches = p.get("oneOf")?.as_array()?;
    let mut parts = Vec::new();
    for b in branches {
        let b = normalise(root, b);
        let values = enum_values(&b)?;
        if let Some(d) = b.get("description").and_then(Value::as_str) {
            let names: Vec<String> = values.iter().map(|v| format!("`{}`", plain(v))).collect();
            parts.push(format!("{}: {}", names.join(", "), clean(d)));
        }
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// Whether a description already names every value of an enum (`` `a` ``), so that the
/// values' own doc comments would repeat it.
fn names_every_value(root: &Value, p: &Value, description: &str) -> bool {
    let Some(branches) = p.get("oneOf").and_then(Value::as_array) else {
        return false;
    };
    branches
        .iter()
        .filter_map(|b| enum_values(&normalise(root, b)))
        .flatten()
        .all(|v| description.contains(&format!("`{}`", plain(&v))))
}

/// The values of an enum schema (`enum`, or `const`).
fn enum_values(s: &Value) -> Option<Vec<Value>> {
    if let Some(c) = s.get("const") {
        return Some(vec![c.clone()]);
    }
    s.get("enum")?.as_array().cloned()
}

/// The type column: `string`, `integer`, `float`, `bool`, `list of strings`, `table`,
/// `` `a`, `b` or `c` ``.
fn type_text(root: &Value, s: &Value) -> String {
    let s = normalise(root, s);
    if let Some(values) = enum_values(&s) {
        return alternatives(&values.iter().map(json_inline).collect::<Vec<_>>());
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(branches) = s.get(key).and_then(Value::as_array) {
            if object_branches(root, &s).is_some() {
                return "table".into();
            }
            let mut alts: Vec<String> = Vec::new();
            for b in branches {
                let t = type_text(root, b);
                if !alts.contains(&t) {
                    alts.push(t);
                }
            }
            // Enum values of several branches: one list.
            if alts.iter().all(|a| a.starts_with('`')) {
                let values: Vec<String> = branches
                    .iter()
                    .filter_map(|b| enum_values(&normalise(root, b)))
                    .flatten()
                    .map(|v| json_inline(&v))
                    .collect();
                return alternatives(&values);
            }
            return alts.join(" or ");
        }
    }
    match s.get("type") {
        Some(Value::String(t)) => match t.as_str() {
            "string" => "string".into(),
            "integer" => "integer".into(),
            "number" => "float".into(),
            "boolean" => "bool".into(),
            "array" => match s.get("items") {
                Some(items) => format!("list of {}", plural(&type_text(root, items))),
                None => "list".into(),
            },
            "object" => match s.get("additionalProperties") {
                Some(v @ Value::Object(_)) if s.get("properties").is_none() => {
                    format!("table of {}", plural(&type_text(root, v)))
                }
                _ => "table".into(),
            },
            other => other.to_string(),
        },
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .map(|t| type_text(root, &serde_json::json!({ "type": t })))
            .collect::<Vec<_>>()
            .join(" or "),
        _ => "any".into(),
    }
}

fn plural(t: &str) -> String {
    match t {
        "string" | "integer" | "float" | "bool" | "table" => format!("{t}s"),
        _ if t.starts_with('`') => format!("{t} values"),
        _ => t.to_string(),
    }
}

/// `a`, `a or b`, `a, b or c`.
fn alternatives(values: &[String]) -> String {
    match values {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A value as it is written in the docs: strings bare in backticks.
fn json_inline(v: &Value) -> String {
    format!("`{}`", plain(v))
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The default column for a value of the code.
fn render_default(v: &Value) -> String {
    match v {
        // Empty, blank or with control characters: as a quoted TOML string.
        Value::String(s) if s.trim().is_empty() || s.chars().any(char::is_control) => {
            format!("`{v}`")
        }
        Value::String(s) => format!("`{s}`"),
        Value::Array(a) if a.is_empty() => "`[]`".into(),
        Value::Array(a) => format!(
            "`[{}]`",
            a.iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => format!("`{other}`"),
    }
}

/// A doc comment made fit for a table: rustdoc links turned into their text.
fn clean(doc: &str) -> String {
    // [`Name`](crate::path) and [text](crate::path): keep the text.
    let mut out = String::with_capacity(doc.len());
    let mut rest = doc;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find(']') else {
            out.push_str(&rest[open..]);
            rest = "";
            break;
        };
        let text = &after[..close];
        let tail = &after[close + 1..];
        if let Some(target) = tail.strip_prefix('(').and_then(|t| t.split_once(')')) {
            let (url, tail2) = target;
            if url.contains("::") || url.starts_with("crate") || url.starts_with("Self") {
                out.push_str(text);
                rest = tail2;
                continue;
            }
            // A real link: kept as written.
            out.push('[');
            out.push_str(text);
            out.push_str("](");
            out.push_str(url);
            out.push(')');
            rest = tail2;
            continue;
        }
        if text.starts_with('`') && text.ends_with('`') && text.len() > 1 {
            // [`Name`]: an intra-doc link.
            out.push_str(text);
        } else {
            out.push('[');
            out.push_str(text);
            out.push(']');
        }
        rest = tail;
    }
    out.push_str(rest);
    // One paragraph per blank line of the doc comment; lines within one joined.
    out.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Splits the sentence `Default: X.` out of a description: (description without it, X).
fn split_default(desc: &str) -> (String, Option<String>) {
    let Some(start) = find_sentence(desc, "Default: ") else {
        return (desc.to_string(), None);
    };
    let body = &desc[start + "Default: ".len()..];
    let end = sentence_end(body);
    let value = body[..end].trim().to_string();
    let rest = body[end..].trim_start_matches('.');
    let mut d = desc[..start].trim_end().to_string();
    let rest = rest.trim();
    if !rest.is_empty() {
        if !d.is_empty() {
            d.push(' ');
        }
        d.push_str(rest);
    }
    (d, Some(value))
}

/// Splits a `Required.` (or `Required, ...`) sentence out of a description.
fn split_required(desc: &str) -> (String, bool) {
    let Some(start) = find_sentence(desc, "Required") else {
        return (desc.to_string(), false);
    };
    let body = &desc[start..];
    let end = sentence_end(body);
    let sentence = body[..end].trim();
    // Only the bare "Required." is dropped: "Required with `sasl`" says more.
    if sentence != "Required" {
        return (desc.to_string(), true);
    }
    let rest = body[end..].trim_start_matches('.').trim();
    let mut d = desc[..start].trim_end().to_string();
    if !rest.is_empty() {
        if !d.is_empty() {
            d.push(' ');
        }
        d.push_str(rest);
    }
    (d, true)
}

/// Where a sentence starting with `word` begins: at the start, or after `. `.
fn find_sentence(desc: &str, word: &str) -> Option<usize> {
    if desc.starts_with(word) {
        return Some(0);
    }
    let mut from = 0;
    while let Some(i) = desc[from..].find(word) {
        let at = from + i;
        let before = desc[..at].trim_end();
        if before.ends_with('.') || before.ends_with(".)") {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

/// The end of the first sentence of `s`: a `.` followed by whitespace or the end, outside
/// backticks and parentheses.
fn sentence_end(s: &str) -> usize {
    let bytes = s.as_bytes();
    let (mut code, mut depth) = (false, 0i32);
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'`' => code = !code,
            b'(' if !code => depth += 1,
            b')' if !code => depth -= 1,
            b'.' if !code
                && depth <= 0
                && bytes.get(i + 1).is_none_or(|n| n.is_ascii_whitespace()) =>
            {
                return i;
            }
            _ => {}
        }
    }
    s.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sentence_is_split_out() {
        assert_eq!(
            split_default("Timeout of one request, in seconds. Default: 60."),
            (
                "Timeout of one request, in seconds.".into(),
                Some("60".into())
            )
        );
        assert_eq!(
            split_default("Give up. Default: none (retry until delivered; backpressure). More."),
            (
                "Give up. More.".into(),
                Some("none (retry until delivered; backpressure)".into())
            )
        );
        assert_eq!(
            split_default("The index. Default: `weir-%Y.%m.%d`."),
            ("The index.".into(), Some("`weir-%Y.%m.%d`".into()))
        );
        assert_eq!(
            split_default("First delay. Default: 0.1."),
            ("First delay.".into(), Some("0.1".into()))
        );
        assert_eq!(
            split_default("No default here."),
            ("No default here.".into(), None)
        );
    }

    #[test]
    fn required_sentence_is_split_out() {
        assert_eq!(
            split_required("The group. Required."),
            ("The group.".into(), true)
        );
        assert_eq!(
            split_required("The metrics. Required, at least one."),
            ("The metrics. Required, at least one.".into(), true)
        );
    }

    #[test]
    fn rustdoc_links_become_text() {
        assert_eq!(
            clean("A [`FlowLog`](crate::flow::FlowLog) event, see [`Decoder`]."),
            "A `FlowLog` event, see `Decoder`."
        );
        assert_eq!(
            clean("See [codecs](codecs.md#decoding)."),
            "See [codecs](codecs.md#decoding)."
        );
    }

    #[test]
    fn only_the_marked_block_is_rewritten() {
        let reg = registry();
        let page = "# t\n\nProse.\n\n<!-- options:begin type=blackhole kind=sink -->\nold\n<!-- options:end -->\n\nMore prose.\n";
        let mut seen = BTreeSet::new();
        let out = rewrite_page(page, &reg, &mut seen).expect("rewrites");
        assert!(out.starts_with(
            "# t\n\nProse.\n\n<!-- options:begin type=blackhole kind=sink -->\n\n| option |"
        ));
        assert!(out.ends_with("|\n\n<!-- options:end -->\n\nMore prose.\n"));
        assert!(!out.contains("\nold\n"));
        assert!(seen.contains(&("sink".to_string(), "blackhole".to_string())));
        // Idempotent.
        assert_eq!(
            rewrite_page(&out, &reg, &mut BTreeSet::new()).expect("again"),
            out
        );
        // Unknown types and missing end markers are errors.
        assert!(rewrite_page(
            "<!-- options:begin type=nope kind=sink -->\n<!-- options:end -->\n",
            &reg,
            &mut BTreeSet::new()
        )
        .is_err());
        assert!(rewrite_page(
            "<!-- options:begin type=blackhole kind=sink -->\n",
            &reg,
            &mut BTreeSet::new()
        )
        .is_err());
    }
}
