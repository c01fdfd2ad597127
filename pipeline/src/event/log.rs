use std::sync::Arc;

use bytes::Bytes;

use super::{EventMetadata, FieldPath, ObjectMap, Value};

/// A log event: a tree of fields (the root is an object) plus metadata.
#[derive(Debug, Clone)]
pub struct LogEvent {
    value: Value,
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
        Self { value, metadata }
    }

    pub fn from_map(map: ObjectMap) -> Self {
        Self {
            value: Value::Object(map),
            metadata: EventMetadata::default(),
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
        Self {
            value: Value::Object(map),
            metadata,
        }
    }

    pub fn value(&self) -> &Value {
        &self.value
    }

    pub fn value_mut(&mut self) -> &mut Value {
        &mut self.value
    }

    pub fn into_parts(self) -> (Value, EventMetadata) {
        (self.value, self.metadata)
    }

    pub fn get(&self, path: &FieldPath) -> Option<&Value> {
        self.value.get(path)
    }

    /// Gets a field by its top-level name, without parsing a path.
    pub fn get_field(&self, name: &str) -> Option<&Value> {
        match &self.value {
            Value::Object(m) => m.get(name),
            _ => None,
        }
    }

    pub fn insert(&mut self, path: &FieldPath, v: impl Into<Value>) -> Option<Value> {
        self.value.insert(path, v.into())
    }

    /// Sets a top-level field without parsing a path.
    pub fn insert_field(&mut self, name: &str, v: impl Into<Value>) {
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

    pub fn remove(&mut self, path: &FieldPath) -> Option<Value> {
        self.value.remove(path, false)
    }

    /// The fields as an object, if the root is one.
    pub fn as_map(&self) -> Option<&ObjectMap> {
        match &self.value {
            Value::Object(m) => Some(m),
            _ => None,
        }
    }
}
