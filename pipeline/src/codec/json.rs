//! JSON into [`Value`] without a detour through `serde_json::Value`.
//!
//! Strings without escapes are not copied: they become slices of the input frame
//! (`Bytes::slice_ref`), so a decoded event points into the read buffer. The codec makes
//! them `Value::Bytes` ([`parse_json_value`]); VRL's `parse_json` makes `Value::String`
//! ([`parse_json_text`]), as VRL's own parser does.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use ordered_float::NotNan;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::event::{KeyString, ObjectMap, TypedLog, Value};

/// Parses one JSON document from `frame`.
///
/// The whole frame is checked for UTF-8 once with SIMD (`simdutf8`), then parsed as a `str`,
/// so serde_json does not validate every string again (that was 8 % of the JSON pipeline).
pub fn parse_json_value(frame: &Bytes) -> Result<Value, serde_json::Error> {
    let seed = ValueSeed {
        strings: AsBytes(frame),
    };
    let text = match simdutf8::basic::from_utf8(frame) {
        Ok(t) => t,
        Err(_) => {
            // Let serde_json find and describe the bad byte (line and column).
            let mut de = serde_json::Deserializer::from_slice(frame);
            let v = seed.deserialize(&mut de)?;
            de.end()?;
            return Ok(v);
        }
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let v = seed.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// [`parse_json_value`], and when the document is an object, `defaults`' fields are added to
/// it where it does not have them, in the same build of the map (no insert after).
pub fn parse_json_with<D: JsonDefaults>(
    frame: &Bytes,
    defaults: &D,
) -> Result<Value, serde_json::Error> {
    let seed = TopSeed {
        inner: ValueSeed {
            strings: AsBytes(frame),
        },
        defaults,
    };
    let text = match simdutf8::basic::from_utf8(frame) {
        Ok(t) => t,
        Err(_) => {
            let mut de = serde_json::Deserializer::from_slice(frame);
            let v = seed.deserialize(&mut de)?;
            de.end()?;
            return Ok(v);
        }
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let v = seed.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Parses one JSON document from `text` into exactly the value VRL's `parse_json` builds
/// (its `Deserialize` for `Value`: strings are `Value::String`, an integer beyond `i64` a
/// float, of duplicate keys the last wins), failing on the same inputs with the same errors
/// (the same deserializer, `serde_json::from_str`). Strings without escapes are slices of
/// `text`, not copies.
pub fn parse_json_text(text: &ByteString) -> Result<Value, serde_json::Error> {
    let seed = ValueSeed {
        strings: AsStrings(text),
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let v = seed.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// What [`check_json`] found at the top of a valid document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonShape {
    /// An object.
    Object,
    /// An array.
    Array,
    /// Any other value, by kind (`string`, `integer`, `float`, `boolean`, `null`).
    Other(&'static str),
}

/// Checks that `frame` is one JSON document, exactly as [`parse_json_value`] would parse it
/// (same deserializer, same calls: every number is converted and every escaped string
/// decoded, so it fails on the same inputs with the same error), without building anything.
pub fn check_json(frame: &[u8]) -> Result<JsonShape, serde_json::Error> {
    match simdutf8::basic::from_utf8(frame) {
        Ok(text) => {
            let mut de = serde_json::Deserializer::from_str(text);
            let shape = Check.deserialize(&mut de)?;
            de.end()?;
            Ok(shape)
        }
        Err(_) => {
            let mut de = serde_json::Deserializer::from_slice(frame);
            let shape = Check.deserialize(&mut de)?;
            de.end()?;
            Ok(shape)
        }
    }
}

/// The checking twin of [`ValueSeed`]: the same `deserialize_any` / `deserialize_str` calls,
/// visitors that keep nothing.
#[derive(Clone, Copy)]
struct Check;

impl<'de> DeserializeSeed<'de> for Check {
    type Value = JsonShape;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<JsonShape, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Check {
    type Value = JsonShape;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<JsonShape, E> {
        Ok(JsonShape::Other("boolean"))
    }
    fn visit_i64<E>(self, _: i64) -> Result<JsonShape, E> {
        Ok(JsonShape::Other("integer"))
    }
    fn visit_u64<E>(self, v: u64) -> Result<JsonShape, E> {
        Ok(JsonShape::Other(if i64::try_from(v).is_ok() {
            "integer"
        } else {
            "float"
        }))
    }
    fn visit_f64<E>(self, _: f64) -> Result<JsonShape, E> {
        Ok(JsonShape::Other("float"))
    }
    fn visit_borrowed_str<E>(self, _: &'de str) -> Result<JsonShape, E> {
        Ok(JsonShape::Other("string"))
    }
    fn visit_str<E>(self, _: &str) -> Result<JsonShape, E> {
        Ok(JsonShape::Other("string"))
    }
    fn visit_string<E>(self, _: String) -> Result<JsonShape, E> {
        Ok(JsonShape::Other("string"))
    }
    fn visit_unit<E>(self) -> Result<JsonShape, E> {
        Ok(JsonShape::Other("null"))
    }
    fn visit_none<E>(self) -> Result<JsonShape, E> {
        Ok(JsonShape::Other("null"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonShape, A::Error> {
        while seq.next_element_seed(self)?.is_some() {}
        Ok(JsonShape::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonShape, A::Error> {
        while map.next_key_seed(CheckKey)?.is_some() {
            map.next_value_seed(self)?;
        }
        Ok(JsonShape::Object)
    }
}

struct CheckKey;

impl<'de> DeserializeSeed<'de> for CheckKey {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for CheckKey {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
}

/// Fields a source adds to every event of a `json` line unless the line has them already
/// (the `file` source's `file`, `host`, `offset`, `timestamp`).
pub trait JsonDefaults: Send + Sync + std::fmt::Debug + 'static {
    /// Pushes every field, whatever the line has: the parser puts them before the line's
    /// own, and of duplicate keys the last wins, so the line's win.
    fn push(&self, fields: &mut Vec<(KeyString, Value)>);

    /// Inserts each field `m` does not have.
    fn fill(&self, m: &mut ObjectMap) {
        let mut fields = Vec::new();
        self.push(&mut fields);
        for (k, v) in fields {
            m.entry(k).or_insert(v);
        }
    }

    /// True when [`fill`](Self::fill) adds nothing whatever the line (the line's text is then
    /// the whole event).
    fn adds_nothing(&self) -> bool {
        false
    }
}

/// No fields added.
impl JsonDefaults for () {
    fn push(&self, _: &mut Vec<(KeyString, Value)>) {}

    fn fill(&self, _: &mut ObjectMap) {}

    fn adds_nothing(&self) -> bool {
        true
    }
}

/// A `json` line whose top-level value is an object, held as its checked bytes (a slice of
/// the read buffer) plus the source's [`JsonDefaults`]: the tree of fields is parsed the
/// first time something reads them ([`TypedLog`]), so an event that is only counted, routed
/// by a typed reader, or dropped never pays for it. The tree is exactly what the eager
/// decoder builds, as [`check_json`] accepted the line with the same parser.
#[derive(Debug)]
pub struct JsonLog<D: JsonDefaults = ()> {
    frame: Bytes,
    defaults: D,
    /// Set on one line in [`PROBE_EVERY`]: counts that line's tree being built.
    probe: Option<Arc<AtomicU64>>,
}

impl<D: JsonDefaults> JsonLog<D> {
    /// `frame` must have passed [`check_json`] as an [`JsonShape::Object`].
    pub(crate) fn checked(frame: Bytes, defaults: D, probe: Option<Arc<AtomicU64>>) -> Self {
        Self {
            frame,
            defaults,
            probe,
        }
    }

    /// The line as read.
    pub fn raw(&self) -> &Bytes {
        &self.frame
    }
}

impl<D: JsonDefaults> TypedLog for JsonLog<D> {
    fn to_value(&self) -> Value {
        if let Some(p) = &self.probe {
            p.fetch_add(1, Ordering::Relaxed);
        }
        match parse_json_with(&self.frame, &self.defaults) {
            Ok(v @ Value::Object(_)) => v,
            // Not reachable: the line was checked by the same parser. Should it ever
            // happen, the line is kept whole rather than lost.
            _ => {
                let mut m = ObjectMap::new();
                m.insert("message".into(), Value::Bytes(self.frame.clone()));
                self.defaults.fill(&mut m);
                Value::Object(m)
            }
        }
    }

    fn raw_json(&self) -> Option<&Bytes> {
        self.defaults.adds_nothing().then_some(&self.frame)
    }

    fn lazy_json(&self) -> Option<(&Bytes, &dyn JsonDefaults)> {
        Some((&self.frame, &self.defaults))
    }

    fn estimated_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.frame.len()
    }
}

/// One line in this many is held lazily whatever the mode, and counts whether its tree gets
/// built.
pub const PROBE_EVERY: u64 = 64;
/// Probes per decision.
const PROBE_WINDOW: u64 = 256;

/// Per source: whether `json` object lines are held lazily ([`JsonLog`]) or parsed at once.
///
/// Laziness pays when the tree is never built (events counted, dropped unread, or handed to a
/// typed reader), and costs a check on top of the parse when it is. So the source measures:
/// one line in [`PROBE_EVERY`] is always held lazily and counts, when its tree is built, in a
/// shared counter; every [`PROBE_WINDOW`] probes, if more than half of that window's probes
/// were built, the other lines are parsed at once, else held lazily. No per-line cost beyond
/// two counter updates in the source's own thread. It starts lazy.
#[derive(Debug, Default)]
pub struct JsonLaziness {
    built: Arc<AtomicU64>,
    lines: Cell<u64>,
    probes: Cell<u64>,
    built_before: Cell<u64>,
    eager: Cell<bool>,
}

impl JsonLaziness {
    /// A new measure, starting lazy.
    pub fn new() -> Self {
        Self::default()
    }

    /// A measure that parses the next lines at once (up to the next probe), for tests.
    #[cfg(test)]
    pub(crate) fn eager_for_tests() -> Self {
        let l = Self::default();
        l.lines.set(1);
        l.eager.set(true);
        l
    }

    /// Whether lines are parsed at once now (for tests and diagnostics).
    pub fn is_eager(&self) -> bool {
        self.eager.get()
    }

    /// For the next object line: whether to hold it lazily, and its probe if it is one.
    pub(crate) fn next(&self) -> (bool, Option<Arc<AtomicU64>>) {
        let n = self.lines.get();
        self.lines.set(n.wrapping_add(1));
        if !n.is_multiple_of(PROBE_EVERY) {
            return (!self.eager.get(), None);
        }
        let p = self.probes.get() + 1;
        if p == PROBE_WINDOW {
            let built = self.built.load(Ordering::Relaxed);
            let window = built.wrapping_sub(self.built_before.get());
            self.built_before.set(built);
            self.eager.set(window * 2 > PROBE_WINDOW);
            self.probes.set(0);
        } else {
            self.probes.set(p);
        }
        (true, Some(self.built.clone()))
    }
}

/// How the parser makes a string value: a slice of the input when the string is one (no
/// escapes), a copy otherwise.
trait Strings: Copy {
    fn borrowed(self, s: &str) -> Value;
    fn owned(self, s: String) -> Value;
}

/// Whether `part` lies within `whole` (a string the parser borrowed from its input, rather
/// than one it unescaped into a buffer of its own).
fn within(whole: &[u8], part: &[u8]) -> bool {
    let base = whole.as_ptr() as usize;
    let p = part.as_ptr() as usize;
    p >= base && p + part.len() <= base + whole.len()
}

/// Strings as `Value::Bytes` (the codec's events).
#[derive(Clone, Copy)]
struct AsBytes<'a>(&'a Bytes);

impl Strings for AsBytes<'_> {
    fn borrowed(self, s: &str) -> Value {
        if within(self.0, s.as_bytes()) {
            Value::Bytes(self.0.slice_ref(s.as_bytes()))
        } else {
            Value::Bytes(Bytes::copy_from_slice(s.as_bytes()))
        }
    }
    fn owned(self, s: String) -> Value {
        Value::Bytes(Bytes::from(s))
    }
}

/// Strings as `Value::String` (VRL's `parse_json`).
#[derive(Clone, Copy)]
struct AsStrings<'a>(&'a ByteString);

impl Strings for AsStrings<'_> {
    fn borrowed(self, s: &str) -> Value {
        if within(self.0.as_bytes(), s.as_bytes()) {
            Value::String(self.0.slice_ref(s))
        } else {
            Value::String(ByteString::from(s))
        }
    }
    fn owned(self, s: String) -> Value {
        Value::String(ByteString::from(s))
    }
}

#[derive(Clone, Copy)]
struct ValueSeed<S> {
    strings: S,
}

impl<'de, S: Strings> DeserializeSeed<'de> for ValueSeed<S> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, S: Strings> Visitor<'de> for ValueSeed<S> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Boolean(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Integer(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => Value::Integer(i),
            Err(_) => Value::Float(NotNan::new(v as f64).unwrap_or_default()),
        })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(NotNan::new(v).unwrap_or_default()))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Value, E> {
        Ok(self.strings.borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(self.strings.borrowed(v))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(self.strings.owned(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(4));
        while let Some(x) = seq.next_element_seed(self)? {
            v.push(x);
        }
        Ok(Value::Array(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        let fields = Vec::with_capacity(map.size_hint().unwrap_or(16));
        self.collect_map(map, fields)
    }
}

impl<S: Strings> ValueSeed<S> {
    /// The object of `map`'s fields after those already in `fields`. Collected, then sorted
    /// and built leaf by leaf (`BTreeMap::from_iter`), instead of a search and an insert per
    /// key: a quarter less time per log line. Of duplicate keys the last one wins, as with
    /// inserts.
    fn collect_map<'de, A: MapAccess<'de>>(
        self,
        mut map: A,
        mut fields: Vec<(KeyString, Value)>,
    ) -> Result<Value, A::Error> {
        while let Some(k) = map.next_key_seed(KeySeed)? {
            let v = map.next_value_seed(self)?;
            fields.push((k, v));
        }
        Ok(Value::Object(ObjectMap::from_iter(fields)))
    }
}

/// The top of a document: as [`ValueSeed`], except that an object starts with the
/// defaults' fields.
struct TopSeed<'d, S, D> {
    inner: ValueSeed<S>,
    defaults: &'d D,
}

impl<'de, S: Strings, D: JsonDefaults> DeserializeSeed<'de> for TopSeed<'_, S, D> {
    type Value = Value;
    fn deserialize<De: serde::Deserializer<'de>>(self, d: De) -> Result<Value, De::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, S: Strings, D: JsonDefaults> Visitor<'de> for TopSeed<'_, S, D> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.inner.visit_bool(v)
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.inner.visit_i64(v)
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.inner.visit_u64(v)
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.inner.visit_f64(v)
    }
    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Value, E> {
        self.inner.visit_borrowed_str(v)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.inner.visit_str(v)
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        self.inner.visit_string(v)
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.inner.visit_unit()
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.inner.visit_none()
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Value, A::Error> {
        self.inner.visit_seq(seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(16) + 4);
        self.defaults.push(&mut fields);
        self.inner.collect_map(map, fields)
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = KeyString;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<KeyString, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = KeyString;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E>(self, v: &str) -> Result<KeyString, E> {
        Ok(KeyString::from(v))
    }
    fn visit_string<E>(self, v: String) -> Result<KeyString, E> {
        Ok(KeyString::from(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_types_and_borrows_plain_strings() {
        let frame = Bytes::from_static(
            br#"{"s":"plain","e":"esc\"aped","i":-3,"u":18446744073709551615,"f":1.5,"b":true,"n":null,"a":[1,{"x":"y"}]}"#,
        );
        let v = parse_json_value(&frame).unwrap();
        let Value::Object(m) = v else {
            panic!("not an object")
        };
        assert_eq!(m["s"], Value::Bytes(Bytes::from_static(b"plain")));
        assert_eq!(m["e"], Value::Bytes(Bytes::from_static(b"esc\"aped")));
        assert_eq!(m["i"], Value::Integer(-3));
        assert!(matches!(m["u"], Value::Float(_)));
        assert_eq!(m["b"], Value::Boolean(true));
        assert_eq!(m["n"], Value::Null);
        assert!(matches!(&m["a"], Value::Array(a) if a.len() == 2));
    }

    #[test]
    fn objects_are_sorted_and_the_last_duplicate_wins() {
        let frame = Bytes::from_static(br#"{"z":1,"a":{"y":2,"b":3},"m":4,"a2":5,"z":6}"#);
        let Value::Object(m) = parse_json_value(&frame).unwrap() else {
            panic!("not an object")
        };
        let keys: Vec<&str> = m.keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, ["a", "a2", "m", "z"]);
        assert_eq!(m["z"], Value::Integer(6));
        let Value::Object(inner) = &m["a"] else {
            panic!("not an object")
        };
        assert_eq!(
            inner.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["b", "y"]
        );
    }

    #[test]
    fn text_strings_are_vrl_strings_sliced_from_the_text() {
        let text =
            ByteString::from_static(r#"{"p":"plain","e":"e\"s","u":"\u00e9t\u00e9","n":[1,"x"]}"#);
        let Value::Object(m) = parse_json_text(&text).unwrap() else {
            panic!("not an object")
        };
        let inside = |v: &Value| match v {
            Value::String(s) => within(text.as_bytes(), s.as_bytes()),
            other => panic!("not a string: {other:?}"),
        };
        assert_eq!(m["p"], Value::from("plain"));
        assert!(inside(&m["p"]), "a plain string is a slice");
        assert_eq!(m["e"], Value::from("e\"s"));
        assert!(!inside(&m["e"]), "an unescaped string is a copy");
        assert_eq!(m["u"], Value::from("\u{e9}t\u{e9}"));
        let Value::Array(a) = &m["n"] else {
            panic!("not an array")
        };
        assert_eq!(a[0], Value::Integer(1));
        assert!(inside(&a[1]));
        assert!(parse_json_text(&ByteString::from_static("{} x")).is_err());
    }

    #[test]
    fn rejects_trailing_garbage_and_invalid_utf8() {
        assert!(parse_json_value(&Bytes::from_static(b"{} x")).is_err());
        assert!(parse_json_value(&Bytes::from_static(b"{\"a\":\"\xff\"}")).is_err());
    }
}
