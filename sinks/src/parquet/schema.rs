//! Which Arrow schema a file gets, and the type rules that decide when a new file is needed.
//!
//! Three ways, chosen per sink:
//! - **auto**: the schema is inferred from the events. Objects become structs (fields sorted by
//!   name), arrays lists, strings `utf8`, integers `int64`, floats `float64`, booleans `bool`,
//!   timestamps `timestamp[ns, UTC]`. A value with no type (null, an object holding only nulls,
//!   the elements of an empty array) adds no column. A later value that needs more
//!   ([`Fit::Widens`]: a new field, a float where an integer was) widens the schema; one that
//!   cannot be stored ([`Fit::Conflicts`]: a string where an integer was) changes it.
//! - **explicit**: columns from the config ([`ColumnSpec`]).
//! - **metrics**: the fixed long format of [`metrics_schema`].

use std::cmp::Ordering;
use std::sync::Arc;

use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit};
use weir_pipeline::event::{FieldPath, ObjectMap, Value};
use weir_pipeline::vrl::path::OwnedSegment;

/// The Arrow type of every timestamp the sink writes.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some(Arc::from("UTC")))
}

/// `list<t>` with nullable elements named `item` (the name every reader expects).
pub fn list_of(t: DataType) -> DataType {
    DataType::List(Arc::new(Field::new("item", t, true)))
}

/// How a value relates to a column's type. Ordered: the worst part of a value decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fit {
    /// Stored as is (an integer in a float column counts: it converts exactly enough).
    Fits,
    /// Storable after a compatible change: a new nullable column or struct field, int -> float,
    /// a list whose element type was unknown.
    Widens,
    /// Not storable in this type (a string where an integer was).
    Conflicts,
}

/// How `v` fits a column of type `t`.
pub fn fit(v: &Value, t: &DataType) -> Fit {
    match (v, t) {
        (Value::Null, _) => Fit::Fits,
        (Value::Object(_), _) if !is_typed(v) => Fit::Fits,
        (_, DataType::Null) => Fit::Widens,
        (Value::Bytes(_) | Value::String(_) | Value::Regex(_), DataType::Utf8) => Fit::Fits,
        (Value::Integer(_), DataType::Int64 | DataType::Float64) => Fit::Fits,
        (Value::Float(_), DataType::Float64) => Fit::Fits,
        (Value::Float(_), DataType::Int64) => Fit::Widens,
        (Value::Boolean(_), DataType::Boolean) => Fit::Fits,
        (Value::Timestamp(_), DataType::Timestamp(..)) => Fit::Fits,
        (Value::Object(m), DataType::Struct(fields)) => fit_object(m, fields, None),
        (Value::Array(items), DataType::List(f)) => items
            .iter()
            .map(|i| fit(i, f.data_type()))
            .max()
            .unwrap_or(Fit::Fits),
        _ => Fit::Conflicts,
    }
}

/// How the fields of an object fit a struct's (or the file's top-level) fields, which are
/// sorted by name. `reserved` is a top-level name the sink uses itself (the unmatched column):
/// an event field of that name never gets a column.
pub fn fit_object(m: &ObjectMap, fields: &Fields, reserved: Option<&str>) -> Fit {
    let mut worst = Fit::Fits;
    // Both are sorted by name: one merge pass (usually one comparison per field).
    let mut at = 0;
    for (k, v) in m {
        let k = k.as_str();
        if reserved == Some(k) {
            continue;
        }
        let mut found = None;
        while let Some(f) = fields.get(at) {
            match f.name().as_str().cmp(k) {
                std::cmp::Ordering::Less => at += 1,
                std::cmp::Ordering::Equal => {
                    found = Some(f);
                    at += 1;
                    break;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        let f = match found {
            Some(f) => fit(v, f.data_type()),
            None if is_typed(v) => Fit::Widens,
            None => Fit::Fits,
        };
        worst = worst.max(f);
        if worst == Fit::Conflicts {
            break;
        }
    }
    worst
}

/// The field called `name` in fields sorted by name.
pub fn find<'a>(fields: &'a Fields, name: &str) -> Option<&'a FieldRef> {
    fields
        .binary_search_by(|f| f.name().as_str().cmp(name))
        .ok()
        .map(|i| &fields[i])
}

/// Whether a value carries a type (see [`infer`]), without building it.
pub fn is_typed(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Object(m) => m.values().any(is_typed),
        _ => true,
    }
}

/// The type of a value; `None` when it carries none (null, an object of nulls).
pub fn infer(v: &Value) -> Option<DataType> {
    Some(match v {
        Value::Null => return None,
        Value::Bytes(_) | Value::String(_) | Value::Regex(_) => DataType::Utf8,
        Value::Integer(_) => DataType::Int64,
        Value::Float(_) => DataType::Float64,
        Value::Boolean(_) => DataType::Boolean,
        Value::Timestamp(_) => timestamp_type(),
        Value::Object(m) => DataType::Struct(infer_object(m, None)?),
        Value::Array(items) => {
            let mut elem = DataType::Null;
            for i in items {
                if let Some(t) = infer(i) {
                    // Mixed element types: the first one wins; the others do not fit and the
                    // sink keeps such arrays as unmatched.
                    elem = merge(&elem, &t, Resolve::KeepOld).0;
                }
            }
            list_of(elem)
        }
    })
}

/// The struct fields of an object, sorted by name; `None` when no field has a type.
pub fn infer_object(m: &ObjectMap, reserved: Option<&str>) -> Option<Fields> {
    let fields: Vec<Field> = m
        .iter()
        .filter(|(k, _)| reserved != Some(k.as_str()))
        .filter_map(|(k, v)| infer(v).map(|t| Field::new(k.as_str(), t, true)))
        .collect();
    // ObjectMap iterates in key order, so the fields are already sorted.
    (!fields.is_empty()).then(|| Fields::from(fields))
}

/// What to do when two types conflict while merging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolve {
    /// Keep the old type (values of the new one will not fit and are counted as unmatched).
    KeepOld,
    /// Take the new type (the schema changes; a new file starts).
    TakeNew,
}

/// Merges `new` into `old`. Returns the merged type and whether a conflict was resolved.
pub fn merge(old: &DataType, new: &DataType, resolve: Resolve) -> (DataType, bool) {
    match (old, new) {
        _ if old == new => (old.clone(), false),
        (DataType::Null, t) | (t, DataType::Null) => (t.clone(), false),
        (DataType::Int64, DataType::Float64) | (DataType::Float64, DataType::Int64) => {
            (DataType::Float64, false)
        }
        (DataType::Struct(a), DataType::Struct(b)) => {
            let (f, c) = merge_fields(a, b, resolve);
            (DataType::Struct(f), c)
        }
        (DataType::List(a), DataType::List(b)) => {
            let (t, c) = merge(a.data_type(), b.data_type(), resolve);
            (list_of(t), c)
        }
        _ => match resolve {
            Resolve::KeepOld => (old.clone(), true),
            Resolve::TakeNew => (new.clone(), true),
        },
    }
}

/// Merges two field lists sorted by name into one sorted list (all fields nullable).
pub fn merge_fields(old: &Fields, new: &Fields, resolve: Resolve) -> (Fields, bool) {
    let mut out: Vec<FieldRef> = Vec::with_capacity(old.len().max(new.len()));
    let mut conflict = false;
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        let ord = match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) => a.name().cmp(b.name()),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match ord {
            Ordering::Less => {
                out.push(old[i].clone());
                i += 1;
            }
            Ordering::Greater => {
                out.push(new[j].clone());
                j += 1;
            }
            Ordering::Equal => {
                let (t, c) = merge(old[i].data_type(), new[j].data_type(), resolve);
                conflict |= c;
                if &t == old[i].data_type() {
                    out.push(old[i].clone());
                } else {
                    out.push(Arc::new(Field::new(old[i].name(), t, true)));
                }
                i += 1;
                j += 1;
            }
        }
    }
    (Fields::from(out), conflict)
}

/// The fields whose type changed incompatibly from `old` to `new` (`a.b: Int64 -> Utf8`);
/// empty when `new` only widens `old`.
pub fn incompatible_changes(old: &Fields, new: &Fields) -> Vec<String> {
    let mut out = Vec::new();
    diff_fields("", old, new, &mut out);
    out
}

fn diff_fields(prefix: &str, old: &Fields, new: &Fields, out: &mut Vec<String>) {
    for o in old.iter() {
        let path = if prefix.is_empty() {
            o.name().clone()
        } else {
            format!("{prefix}.{}", o.name())
        };
        match find(new, o.name()) {
            // A field that disappeared is still readable as null: not a conflict.
            None => {}
            Some(n) => diff_type(&path, o.data_type(), n.data_type(), out),
        }
    }
}

fn diff_type(path: &str, old: &DataType, new: &DataType, out: &mut Vec<String>) {
    match (old, new) {
        _ if old == new => {}
        (DataType::Null, _) | (DataType::Int64, DataType::Float64) => {}
        (DataType::Struct(a), DataType::Struct(b)) => diff_fields(path, a, b, out),
        (DataType::List(a), DataType::List(b)) => {
            diff_type(&format!("{path}[]"), a.data_type(), b.data_type(), out)
        }
        _ => out.push(format!("{path}: {old} -> {new}")),
    }
}

/// The type of an explicitly configured column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    String,
    Int64,
    Float64,
    Bool,
    Timestamp,
    /// Any value, stored as its JSON text in a `utf8` column.
    Json,
    List(Box<ColumnType>),
}

impl ColumnType {
    /// Parses `string`, `int64` (`int`), `float64` (`float`, `double`), `bool` (`boolean`),
    /// `timestamp`, `json` or `list<T>`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        Ok(match t {
            "string" | "utf8" => ColumnType::String,
            "int64" | "int" | "integer" => ColumnType::Int64,
            "float64" | "float" | "double" => ColumnType::Float64,
            "bool" | "boolean" => ColumnType::Bool,
            "timestamp" => ColumnType::Timestamp,
            "json" => ColumnType::Json,
            _ => match t.strip_prefix("list<").and_then(|r| r.strip_suffix('>')) {
                Some(inner) => ColumnType::List(Box::new(Self::parse(inner)?)),
                None => {
                    return Err(format!(
                        "unknown column type `{s}` (expected string, int64, float64, bool, \
                         timestamp, json or list<T>)"
                    ))
                }
            },
        })
    }

    pub fn arrow(&self) -> DataType {
        match self {
            ColumnType::String | ColumnType::Json => DataType::Utf8,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Timestamp => timestamp_type(),
            ColumnType::List(t) => list_of(t.arrow()),
        }
    }
}

/// One configured column: its name, type, nullability and the event field it comes from.
#[derive(Debug, Clone)]
pub struct ColumnSpec {
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
    pub path: FieldPath,
}

/// Which parts of an event the explicit columns consume; the rest is unmatched.
#[derive(Debug, Default)]
pub struct PathTree {
    children: std::collections::BTreeMap<String, PathNode>,
}

#[derive(Debug)]
enum PathNode {
    /// The whole value at this path is consumed.
    Leaf,
    Inner(PathTree),
}

impl PathTree {
    /// Builds the tree of the columns' paths. Paths must be field names only (no `[0]`).
    pub fn new(columns: &[ColumnSpec]) -> Result<Self, String> {
        let mut root = PathTree::default();
        for c in columns {
            let mut node = &mut root;
            let n = c.path.segments.len();
            if n == 0 {
                return Err(format!("column `{}`: the path is empty", c.name));
            }
            for (i, seg) in c.path.segments.iter().enumerate() {
                let OwnedSegment::Field(name) = seg else {
                    return Err(format!(
                        "column `{}`: array indexes are not supported in `path`",
                        c.name
                    ));
                };
                let last = i + 1 == n;
                let entry = node
                    .children
                    .entry(name.as_str().to_string())
                    .or_insert_with(|| {
                        if last {
                            PathNode::Leaf
                        } else {
                            PathNode::Inner(PathTree::default())
                        }
                    });
                match entry {
                    PathNode::Leaf => break,
                    PathNode::Inner(t) if last => {
                        // A column takes the whole object: its parts are consumed too.
                        *t = PathTree::default();
                        *entry = PathNode::Leaf;
                        break;
                    }
                    PathNode::Inner(t) => node = t,
                }
            }
        }
        Ok(root)
    }

    /// Copies the non-null parts of `m` that no column consumes into `out`.
    pub fn unconsumed(&self, m: &ObjectMap, out: &mut ObjectMap) {
        for (k, v) in m {
            if matches!(v, Value::Null) {
                continue;
            }
            match self.children.get(k.as_str()) {
                None => {
                    out.insert(k.clone(), v.clone());
                }
                Some(PathNode::Leaf) => {}
                Some(PathNode::Inner(t)) => match v {
                    Value::Object(inner) => {
                        let mut sub = ObjectMap::new();
                        t.unconsumed(inner, &mut sub);
                        if !sub.is_empty() {
                            out.insert(k.clone(), Value::Object(sub));
                        }
                    }
                    _ => {
                        out.insert(k.clone(), v.clone());
                    }
                },
            }
        }
    }
}

/// Column names of the metrics long format (the `parquet` source recognises the same shape).
pub mod metric_columns {
    pub const TIMESTAMP: &str = "timestamp";
    pub const NAME: &str = "name";
    pub const NAMESPACE: &str = "namespace";
    pub const TAGS: &str = "tags";
    pub const KIND: &str = "kind";
    pub const METRIC_TYPE: &str = "metric_type";
    pub const VALUE: &str = "value";
    pub const COUNT: &str = "count";
    pub const SUM: &str = "sum";
    pub const BUCKETS: &str = "buckets";
    pub const QUANTILES: &str = "quantiles";
    pub const SAMPLES: &str = "samples";
    pub const STATISTIC: &str = "statistic";
    pub const SET_VALUES: &str = "set_values";
}

/// The fields of a histogram bucket struct.
pub fn bucket_fields() -> Fields {
    Fields::from(vec![
        Field::new("upper_limit", DataType::Float64, false),
        Field::new("count", DataType::UInt64, false),
    ])
}

/// The fields of a summary quantile struct.
pub fn quantile_fields() -> Fields {
    Fields::from(vec![
        Field::new("quantile", DataType::Float64, false),
        Field::new("value", DataType::Float64, false),
    ])
}

/// The fields of a distribution sample struct.
pub fn sample_fields() -> Fields {
    Fields::from(vec![
        Field::new("value", DataType::Float64, false),
        Field::new("rate", DataType::UInt32, false),
    ])
}

/// The `map<utf8, utf8>` type of the `tags` column.
pub fn tags_type() -> DataType {
    let entries = Field::new(
        "entries",
        DataType::Struct(Fields::from(vec![
            Field::new("key", DataType::Utf8, false),
            Field::new("value", DataType::Utf8, true),
        ])),
        false,
    );
    DataType::Map(Arc::new(entries), false)
}

/// The metrics long format: one row per metric.
pub fn metrics_schema() -> SchemaRef {
    use metric_columns::*;
    Arc::new(Schema::new(vec![
        Field::new(TIMESTAMP, timestamp_type(), true),
        Field::new(NAME, DataType::Utf8, false),
        Field::new(NAMESPACE, DataType::Utf8, true),
        Field::new(TAGS, tags_type(), false),
        Field::new(KIND, DataType::Utf8, false),
        Field::new(METRIC_TYPE, DataType::Utf8, false),
        Field::new(VALUE, DataType::Float64, true),
        Field::new(COUNT, DataType::UInt64, true),
        Field::new(SUM, DataType::Float64, true),
        Field::new(BUCKETS, list_of(DataType::Struct(bucket_fields())), true),
        Field::new(
            QUANTILES,
            list_of(DataType::Struct(quantile_fields())),
            true,
        ),
        Field::new(SAMPLES, list_of(DataType::Struct(sample_fields())), true),
        Field::new(STATISTIC, DataType::Utf8, true),
        Field::new(SET_VALUES, list_of(DataType::Utf8), true),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_pipeline::event::parse_path;

    fn obj(json: &str) -> ObjectMap {
        match serde_json::from_str::<Value>(json).unwrap() {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    #[test]
    fn infers_nested_structs_lists_and_skips_untyped_values() {
        let f = infer_object(
            &obj(r#"{"b":1,"a":{"y":"s","x":[1.5]},"n":null,"e":{},"l":[]}"#),
            None,
        )
        .unwrap();
        let names: Vec<_> = f.iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, ["a", "b", "l"]);
        assert_eq!(f[1].data_type(), &DataType::Int64);
        assert_eq!(f[2].data_type(), &list_of(DataType::Null));
        let DataType::Struct(a) = f[0].data_type() else {
            panic!()
        };
        assert_eq!(a[0].name(), "x");
        assert_eq!(a[0].data_type(), &list_of(DataType::Float64));
        assert_eq!(a[1].data_type(), &DataType::Utf8);
    }

    #[test]
    fn widening_and_conflicts_are_told_apart() {
        let fields = infer_object(&obj(r#"{"a":1,"s":{"x":1},"l":[]}"#), None).unwrap();
        assert_eq!(
            fit_object(&obj(r#"{"a":2,"s":{"x":3}}"#), &fields, None),
            Fit::Fits
        );
        assert_eq!(fit_object(&obj(r#"{"a":2.5}"#), &fields, None), Fit::Widens);
        assert_eq!(
            fit_object(&obj(r#"{"new":true}"#), &fields, None),
            Fit::Widens
        );
        assert_eq!(
            fit_object(&obj(r#"{"l":["x"]}"#), &fields, None),
            Fit::Widens
        );
        assert_eq!(
            fit_object(&obj(r#"{"s":{"y":"z"}}"#), &fields, None),
            Fit::Widens
        );
        assert_eq!(
            fit_object(&obj(r#"{"a":"x"}"#), &fields, None),
            Fit::Conflicts
        );
        assert_eq!(
            fit_object(&obj(r#"{"a":"x"}"#), &fields, Some("a")),
            Fit::Fits
        );

        let wider = infer_object(&obj(r#"{"a":2.5,"s":{"y":"z"}}"#), None).unwrap();
        let (merged, conflict) = merge_fields(&fields, &wider, Resolve::TakeNew);
        assert!(!conflict);
        assert!(incompatible_changes(&fields, &merged).is_empty());
        assert_eq!(find(&merged, "a").unwrap().data_type(), &DataType::Float64);

        let drift = infer_object(&obj(r#"{"a":"x"}"#), None).unwrap();
        let (changed, conflict) = merge_fields(&fields, &drift, Resolve::TakeNew);
        assert!(conflict);
        assert_eq!(find(&changed, "a").unwrap().data_type(), &DataType::Utf8);
        assert_eq!(
            incompatible_changes(&fields, &changed),
            vec!["a: Int64 -> Utf8".to_string()]
        );
    }

    #[test]
    fn column_types_parse() {
        assert_eq!(
            ColumnType::parse("list<int>").unwrap(),
            ColumnType::List(Box::new(ColumnType::Int64))
        );
        assert!(ColumnType::parse("decimal").is_err());
    }

    #[test]
    fn path_tree_reports_what_no_column_takes() {
        let spec = |name: &str, path: &str| ColumnSpec {
            name: name.into(),
            ty: ColumnType::String,
            nullable: true,
            path: parse_path(path).unwrap(),
        };
        let tree = PathTree::new(&[spec("pod", "k8s.pod"), spec("msg", "message")]).unwrap();
        let mut out = ObjectMap::new();
        tree.unconsumed(
            &obj(r#"{"message":"m","k8s":{"pod":"p","ns":"n"},"x":1,"z":null}"#),
            &mut out,
        );
        assert_eq!(
            serde_json::to_string(&out).unwrap(),
            r#"{"k8s":{"ns":"n"},"x":1}"#
        );
        assert!(PathTree::new(&[spec("a", "a[0]")]).is_err());
    }
}
