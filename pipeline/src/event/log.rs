use std::any::Any;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::{EventMetadata, FieldPath, ObjectMap, Value};
use crate::codec::JsonDefaults;

/// A log's fields held as a typed Rust value instead of a tree of [`Value`]s.
///
/// A source whose records have a fixed schema (a profiler's stack sample, a network flow) can hand
/// its parsed record to the pipeline as is. A consumer that knows the type reads it without
/// any conversion ([`LogEvent::typed`]); everything else sees the same fields as a [`Value`]
/// tree, built by [`TypedLog::to_value`] the first time any of them is read, and only then.
/// The tree must be exactly the fields the source would have emitted without the typed form,
/// so that VRL programs, conditions and sinks cannot tell the difference.
pub trait TypedLog: Any + Send + Sync + std::fmt::Debug {
    /// The fields as a tree (the root is an object).
    fn to_value(&self) -> Value;

    /// Writes the fields as one JSON object, byte for byte what serialising
    /// [`to_value`](Self::to_value) would write (keys in order, values through the same
    /// serialiser), without building the tree. `None`: this type has no such writer, and the
    /// tree is serialised instead.
    fn write_json(&self, _out: &mut Vec<u8>) -> Option<serde_json::Result<()>> {
        None
    }

    /// The fields as the text of one JSON object, exactly as read, when this form is such a
    /// text and nothing else (a `json` line held lazily, with no fields added by its source).
    /// A consumer that parses JSON itself (a columnar writer) reads it instead of the tree,
    /// without knowing which type holds it.
    fn raw_json(&self) -> Option<&Bytes> {
        None
    }

    /// The fields as the text of one JSON object plus the fields its source adds where the
    /// text lacks them ([`JsonLog`](crate::codec::JsonLog)): what a disk buffer writes
    /// instead of the tree, and reads back into the same lazy form.
    fn lazy_json(&self) -> Option<(&Bytes, &dyn JsonDefaults)> {
        None
    }

    /// The memory this form holds, in bytes, estimated cheaply (buffers and the memory limit
    /// count it, see [`crate::event::size`]): at least the bytes of its strings. The default
    /// counts the value itself only; a form that holds text (a line, a protobuf) adds it.
    fn estimated_bytes(&self) -> usize {
        std::mem::size_of_val(self)
    }
}

/// The typed form of a log and, once somebody has asked for it, its tree of fields. One
/// allocation holds both; clones of the event share it.
#[derive(Debug)]
struct Typed<T: ?Sized> {
    tree: OnceLock<Value>,
    data: T,
}

/// A log event: a tree of fields (the root is an object) plus metadata.
///
/// The fields may instead be held in a typed form (see [`TypedLog`]); the accessors below
/// build the tree from it when first needed, and any change to the fields replaces the typed
/// form by the tree.
#[derive(Debug, Clone)]
pub struct LogEvent {
    /// The fields, unless `typed` holds them (then this is `Value::Null` and unused).
    value: Value,
    typed: Option<Arc<Typed<dyn TypedLog>>>,
    /// Acknowledgement and source information, travelling with the event.
    pub metadata: EventMetadata,
}

impl Default for LogEvent {
    fn default() -> Self {
        Self::from_map(ObjectMap::new())
    }
}

impl LogEvent {
    /// A log whose root is `value` (normally an object).
    pub fn from_value(value: Value, metadata: EventMetadata) -> Self {
        Self {
            value,
            typed: None,
            metadata,
        }
    }

    /// A log of the fields in `map`, with no metadata.
    pub fn from_map(map: ObjectMap) -> Self {
        Self::from_value(Value::Object(map), EventMetadata::default())
    }

    /// A log whose fields are held in typed form (see [`TypedLog`]).
    pub fn from_typed<T: TypedLog>(data: T, metadata: EventMetadata) -> Self {
        let typed: Arc<Typed<dyn TypedLog>> = Arc::new(Typed {
            tree: OnceLock::new(),
            data,
        });
        Self {
            value: Value::Null,
            typed: Some(typed),
            metadata,
        }
    }

    /// The typed form of the fields, if they are held as a `T` and nothing changed them since.
    pub fn typed<T: TypedLog>(&self) -> Option<&T> {
        let data: &dyn Any = &self.typed.as_ref()?.data;
        data.downcast_ref::<T>()
    }

    /// The fields' JSON text as read, when the typed form is one ([`TypedLog::raw_json`]).
    pub fn raw_json(&self) -> Option<&Bytes> {
        self.typed.as_ref()?.data.raw_json()
    }

    /// The fields' JSON text and its source's added fields, when the typed form is a lazily
    /// held JSON line that nothing changed since ([`TypedLog::lazy_json`]).
    pub fn lazy_json(&self) -> Option<(&Bytes, &dyn JsonDefaults)> {
        self.typed.as_ref()?.data.lazy_json()
    }

    /// The typed form's estimate plus its tree if one was built; `None` for a plain tree.
    pub(super) fn typed_estimate(&self) -> Option<usize> {
        let t = self.typed.as_ref()?;
        Some(t.data.estimated_bytes() + t.tree.get().map_or(0, super::size::value_bytes))
    }

    /// Replaces a typed form by its tree of fields, so that they can be changed.
    fn materialize(&mut self) {
        if let Some(mut t) = self.typed.take() {
            // A tree built by an earlier read is moved out when no clone of the event shares
            // it (a condition read the event, then a program changes it), copied otherwise.
            let owned = Arc::get_mut(&mut t).and_then(|t| t.tree.take());
            self.value = match owned {
                Some(tree) => tree,
                None => match t.tree.get() {
                    Some(tree) => tree.clone(),
                    None => t.data.to_value(),
                },
            };
        }
    }

    /// A log with a single `message` field.
    pub fn from_message(message: Bytes, source_id: Option<Arc<str>>) -> Self {
        Self::from_message_with(message, EventMetadata::new(source_id))
    }

    /// A log with a single `message` field and the given metadata.
    pub fn from_message_with(message: Bytes, metadata: EventMetadata) -> Self {
        let mut map = ObjectMap::new();
        map.insert("message".into(), Value::Bytes(message));
        Self::from_value(Value::Object(map), metadata)
    }

    /// The fields (built from the typed form on first use, if they are held in one).
    pub fn value(&self) -> &Value {
        match &self.typed {
            Some(t) => t.tree.get_or_init(|| t.data.to_value()),
            None => &self.value,
        }
    }

    /// Appends the fields as one JSON object: straight from the typed form when it has a JSON
    /// writer and nobody has built the tree yet, else by serialising the tree.
    pub fn write_json(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        if let Some(t) = &self.typed {
            if t.tree.get().is_none() {
                if let Some(r) = t.data.write_json(out) {
                    return r;
                }
            }
        }
        serde_json::to_writer(out, self.value())
    }

    /// The root value, for changes (builds the tree from a typed form first).
    pub fn value_mut(&mut self) -> &mut Value {
        self.materialize();
        &mut self.value
    }

    /// The root value and the metadata (builds the tree from a typed form first).
    pub fn into_parts(mut self) -> (Value, EventMetadata) {
        self.materialize();
        (self.value, self.metadata)
    }

    /// Gets a field by path (`.a.b[0]`).
    pub fn get(&self, path: &FieldPath) -> Option<&Value> {
        self.value().get(path)
    }

    /// Gets a field by its top-level name, without parsing a path.
    pub fn get_field(&self, name: &str) -> Option<&Value> {
        match self.value() {
            Value::Object(m) => m.get(name),
            _ => None,
        }
    }

    /// Sets a field by path (`.a.b[0]`), returning the value it replaces.
    pub fn insert(&mut self, path: &FieldPath, v: impl Into<Value>) -> Option<Value> {
        self.materialize();
        self.value.insert(path, v.into())
    }

    /// Sets a top-level field without parsing a path.
    pub fn insert_field(&mut self, name: &str, v: impl Into<Value>) {
        self.materialize();
        if !matches!(self.value, Value::Object(_)) {
            let old = std::mem::replace(&mut self.value, Value::Object(ObjectMap::new()));
            if let Value::Object(m) = &mut self.value {
                m.insert("message".into(), old);
            }
        }
        if let Value::Object(m) = &mut self.value {
            m.insert(name.into(), v.into());
        }
    }

    /// Removes a field by path, returning it.
    pub fn remove(&mut self, path: &FieldPath) -> Option<Value> {
        self.materialize();
        self.value.remove(path, false)
    }

    /// The fields as an object, if the root is one.
    pub fn as_map(&self) -> Option<&ObjectMap> {
        match self.value() {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Sample {
        comm: &'static str,
        pid: i64,
    }

    impl TypedLog for Sample {
        fn to_value(&self) -> Value {
            let mut m = ObjectMap::new();
            m.insert("comm".into(), Value::from(self.comm));
            m.insert("pid".into(), Value::from(self.pid));
            Value::Object(m)
        }
    }

    #[derive(Debug)]
    struct Other;

    impl TypedLog for Other {
        fn to_value(&self) -> Value {
            Value::Null
        }
    }

    fn typed() -> LogEvent {
        LogEvent::from_typed(
            Sample {
                comm: "java",
                pid: 7,
            },
            EventMetadata::default(),
        )
    }

    #[test]
    fn typed_fields_read_as_a_tree_and_downcast() {
        let log = typed();
        assert_eq!(
            log.typed::<Sample>(),
            Some(&Sample {
                comm: "java",
                pid: 7
            })
        );
        assert_eq!(log.get_field("pid"), Some(&Value::from(7)));
        assert_eq!(log.get_field("comm"), Some(&Value::from("java")));
        assert_eq!(log.as_map().map(|m| m.len()), Some(2));
        // Reading did not give up the typed form.
        assert!(log.typed::<Sample>().is_some());
        assert!(log.typed::<Other>().is_none());
    }

    #[test]
    fn a_change_replaces_the_typed_form_by_the_changed_tree() {
        let mut log = typed();
        let copy = log.clone();
        log.insert_field("pid", 8);
        assert!(log.typed::<Sample>().is_none());
        assert_eq!(log.get_field("pid"), Some(&Value::from(8)));
        assert_eq!(log.get_field("comm"), Some(&Value::from("java")));
        // The clone taken before the change still has the typed form and the old value.
        assert_eq!(copy.typed::<Sample>().map(|s| s.pid), Some(7));
        assert_eq!(copy.get_field("pid"), Some(&Value::from(7)));
        let (value, _) = copy.into_parts();
        assert_eq!(
            value.as_object().and_then(|m| m.get("pid")),
            Some(&Value::from(7))
        );
    }

    #[test]
    fn value_mut_after_a_read_keeps_the_tree() {
        let mut log = typed();
        assert_eq!(log.get_field("pid"), Some(&Value::from(7)));
        if let Value::Object(m) = log.value_mut() {
            m.remove("comm");
        }
        assert_eq!(log.as_map().map(|m| m.len()), Some(1));
        assert!(log.typed::<Sample>().is_none());
    }
}
