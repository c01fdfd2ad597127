//! JSON into [`Value`] without a detour through `serde_json::Value`.
//!
//! Strings without escapes are not copied: they become `Bytes` slices of the input frame, so a
//! decoded event points into the read buffer.
//!
//! Two parsers, one result:
//! - the fast path is `simd-json`'s tape (SIMD structural indexing; about twice the speed of
//!   serde_json on log lines), walked into [`Value`]s, with each object built in one go
//!   (sorted, then bulk-loaded into its `BTreeMap`) instead of key by key;
//! - serde_json is the reference: any frame the fast path does not take (it fails to parse,
//!   has control bytes, nests deeper than serde_json allows, or has numbers outside 64 bits) is
//!   parsed again by serde_json, which either accepts it the way it always did or gives the
//!   error with its line and column. So the fast path never accepts what serde_json rejects,
//!   and errors read the same as before.

use std::cell::RefCell;
use std::fmt;

use bytes::Bytes;
use ordered_float::NotNan;
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::event::{KeyString, ObjectMap, Value};

/// serde_json's default recursion limit: deeper documents take the serde_json path (and fail
/// there, as they always did).
const MAX_DEPTH: usize = 127;

/// Parses one JSON document from `frame`.
pub fn parse_json_value(frame: &Bytes) -> Result<Value, serde_json::Error> {
    if let Some(v) = FAST.with(|f| f.try_borrow_mut().ok().and_then(|mut f| f.parse(frame))) {
        return Ok(v);
    }
    parse_serde(frame)
}

/// The reference parser (also the fallback of the fast path).
///
/// The whole frame is checked for UTF-8 once with SIMD (`simdutf8`), then parsed as a `str`,
/// so serde_json does not validate every string again.
fn parse_serde(frame: &Bytes) -> Result<Value, serde_json::Error> {
    let text = match simdutf8::basic::from_utf8(frame) {
        Ok(t) => t,
        Err(_) => {
            // Let serde_json find and describe the bad byte (line and column).
            let mut de = serde_json::Deserializer::from_slice(frame);
            let v = ValueSeed { frame }.deserialize(&mut de)?;
            de.end()?;
            return Ok(v);
        }
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let v = ValueSeed { frame }.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

thread_local! {
    static FAST: RefCell<Fast> = RefCell::new(Fast::default());
}

/// The fast path's buffers, kept per thread so parsing a frame allocates nothing but the
/// values it returns.
struct Fast {
    buffers: simd_json::Buffers,
    /// simd-json unescapes strings in place, so it parses a copy of the frame.
    scratch: Vec<u8>,
    tape: Option<simd_json::Tape<'static>>,
}

impl Default for Fast {
    fn default() -> Self {
        Fast {
            buffers: simd_json::Buffers::new(4096),
            scratch: Vec::with_capacity(4096),
            tape: Some(simd_json::Tape(Vec::with_capacity(256))),
        }
    }
}

impl Fast {
    /// `None`: leave this frame to serde_json.
    fn parse(&mut self, frame: &Bytes) -> Option<Value> {
        if !plain(frame) {
            return None;
        }
        self.scratch.clear();
        self.scratch.extend_from_slice(frame);
        let base = self.scratch.as_ptr() as usize;
        let mut tape = self.tape.take()?.reset();
        let value = match simd_json::fill_tape(&mut self.scratch, &mut self.buffers, &mut tape) {
            Ok(()) => {
                let b = Builder {
                    nodes: &tape.0,
                    base,
                    frame,
                };
                b.value(0, 0).map(|(v, _)| v)
            }
            Err(_) => None,
        };
        self.tape = Some(tape.reset());
        value
    }
}

/// Whether the fast path may take `frame`: no control bytes (legal only as whitespace between
/// tokens, illegal inside strings; serde_json tells the two apart), no run of 18 or more
/// digits (dots allowed between them: simd-json skips its check of the byte after such long
/// numbers and accepts `1844674407370955161u`), no escaped UTF-16 surrogates.
fn plain(frame: &[u8]) -> bool {
    let mut control = false;
    let mut digits: u32 = 0;
    let mut long = false;
    for &b in frame {
        control |= b < 0x20;
        let digit = b.is_ascii_digit();
        digits = if digit {
            digits + 1
        } else if b == b'.' {
            digits
        } else {
            0
        };
        long |= digits >= 18;
    }
    // A `\u` escape of a UTF-16 surrogate (`\ud800`..`\udfff`): simd-json turns a lone one
    // into a NUL byte where serde_json refuses it, so serde_json decides.
    let surrogate = memchr::memmem::find_iter(frame, b"\\u").any(|at| {
        matches!(frame.get(at + 2), Some(b'd' | b'D'))
            && matches!(
                frame.get(at + 3),
                Some(b'8'..=b'9' | b'a'..=b'f' | b'A'..=b'F')
            )
    });
    !control && !long && !surrogate
}

/// Walks a simd-json tape into a [`Value`].
struct Builder<'t, 'i> {
    nodes: &'t [simd_json::Node<'i>],
    /// Where the parsed copy of the frame starts: a string's offset in the copy is its offset
    /// in the frame.
    base: usize,
    frame: &'t Bytes,
}

impl Builder<'_, '_> {
    /// The value at node `i` and the index of the node after it.
    fn value(&self, i: usize, depth: usize) -> Option<(Value, usize)> {
        use simd_json::{Node, StaticNode};
        Some(match *self.nodes.get(i)? {
            Node::String(s) => (Value::Bytes(self.string(s)?), i + 1),
            // simd-json reads `-0` as the integer 0, serde_json as the float -0.0.
            Node::Static(StaticNode::I64(0) | StaticNode::U64(0))
                if memchr::memmem::find(self.frame, b"-0").is_some() =>
            {
                return None
            }
            Node::Static(StaticNode::I64(x)) => (Value::Integer(x), i + 1),
            Node::Static(StaticNode::U64(x)) => (
                match i64::try_from(x) {
                    Ok(x) => Value::Integer(x),
                    Err(_) => Value::Float(NotNan::new(x as f64).ok()?),
                },
                i + 1,
            ),
            // serde_json refuses numbers out of range (`1e400`); so does this path.
            Node::Static(StaticNode::F64(x)) if x.is_finite() => {
                (Value::Float(NotNan::new(x).ok()?), i + 1)
            }
            Node::Static(StaticNode::F64(_)) => return None,
            Node::Static(StaticNode::Bool(x)) => (Value::Boolean(x), i + 1),
            Node::Static(StaticNode::Null) => (Value::Null, i + 1),
            Node::Array { len, .. } => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                let mut items = Vec::with_capacity(len);
                let mut j = i + 1;
                for _ in 0..len {
                    let (v, next) = self.value(j, depth + 1)?;
                    items.push(v);
                    j = next;
                }
                (Value::Array(items), j)
            }
            Node::Object { len, .. } => {
                if depth >= MAX_DEPTH {
                    return None;
                }
                let mut fields: Vec<(KeyString, Value)> = Vec::with_capacity(len);
                let mut j = i + 1;
                for _ in 0..len {
                    let Node::String(k) = *self.nodes.get(j)? else {
                        return None;
                    };
                    let (v, next) = self.value(j + 1, depth + 1)?;
                    fields.push((KeyString::from(k), v));
                    j = next;
                }
                // Sorted, duplicates resolved to the last one (as inserting one by one
                // would), then built leaf by leaf: no search per key.
                (Value::Object(ObjectMap::from_iter(fields)), j)
            }
        })
    }

    /// A string of the tape as bytes: a slice of the frame when it had no escapes, else a copy
    /// of the unescaped text.
    fn string(&self, s: &str) -> Option<Bytes> {
        let off = (s.as_ptr() as usize).checked_sub(self.base)?;
        let raw = self.frame.get(off..off + s.len())?;
        // An escape in the string would put a backslash inside these bytes: without one, the
        // frame holds the string exactly as parsed.
        Some(if memchr::memchr(b'\\', raw).is_none() {
            self.frame.slice(off..off + s.len())
        } else {
            Bytes::copy_from_slice(s.as_bytes())
        })
    }
}

#[derive(Clone, Copy)]
struct ValueSeed<'a> {
    frame: &'a Bytes,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
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
        let bytes = v.as_bytes();
        let base = self.frame.as_ptr() as usize;
        let p = bytes.as_ptr() as usize;
        if p >= base && p + bytes.len() <= base + self.frame.len() {
            Ok(Value::Bytes(self.frame.slice_ref(bytes)))
        } else {
            Ok(Value::Bytes(Bytes::copy_from_slice(bytes)))
        }
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Bytes(Bytes::copy_from_slice(v.as_bytes())))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Bytes(Bytes::from(v)))
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
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut m = ObjectMap::new();
        while let Some(k) = map.next_key_seed(KeySeed)? {
            let v = map.next_value_seed(self)?;
            m.insert(k, v);
        }
        Ok(Value::Object(m))
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
    fn rejects_trailing_garbage_and_invalid_utf8() {
        assert!(parse_json_value(&Bytes::from_static(b"{} x")).is_err());
        assert!(parse_json_value(&Bytes::from_static(b"{\"a\":\"\xff\"}")).is_err());
    }

    /// The fast path's answer for `frame`, if it takes the frame.
    fn fast(frame: &[u8]) -> Option<Value> {
        FAST.with(|f| f.borrow_mut().parse(&Bytes::copy_from_slice(frame)))
    }

    /// Equal, but for floats that serde_json's default (not correctly rounded) parser may get
    /// one unit in the last place off.
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Float(x), Value::Float(y)) => {
                let (x, y) = (x.into_inner(), y.into_inner());
                x == y || (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs())
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.0 == q.0 && same(p.1, q.1))
            }
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
            }
            _ => a == b,
        }
    }

    /// The fast path never accepts what serde_json rejects, and never gives another value.
    fn agrees(frame: &[u8]) {
        let slow = parse_serde(&Bytes::copy_from_slice(frame));
        match (fast(frame), slow) {
            (Some(a), Ok(b)) => assert!(
                same(&a, &b),
                "{}: {a:?} != {b:?}",
                String::from_utf8_lossy(frame)
            ),
            (Some(a), Err(e)) => panic!(
                "fast path accepted {:?} as {a:?}; serde_json: {e}",
                String::from_utf8_lossy(frame)
            ),
            (None, _) => {}
        }
    }

    #[test]
    fn fast_path_takes_ordinary_lines() {
        let line = br#"{"timestamp":"2026-11-27T10:00:00Z","level":"info","status":200,"duration_ms":1.25,"ok":true,"tags":["a","b"],"user":{"id":7,"name":"x\"y"},"n":null}"#;
        let v = fast(line).expect("the fast path takes an ordinary line");
        assert_eq!(v, parse_serde(&Bytes::from_static(line)).unwrap());
    }

    #[test]
    fn fast_path_agrees_with_serde_json_on_edge_cases() {
        let deep_ok = format!("{}1{}", "[".repeat(100), "]".repeat(100));
        let deep_bad = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        let cases: Vec<&[u8]> = vec![
            b"0",
            b"-0",
            b"-0.0",
            b"1e400",
            b"-1e400",
            b"1.7976931348623157e308",
            b"5e-324",
            b"18446744073709551615",
            b"18446744073709551616",
            b"9223372036854775807",
            b"9223372036854775808",
            b"-9223372036854775808",
            b"-9223372036854775809",
            b"1E2",
            b"0.1",
            b"123456789012345678901234567890",
            b"01",
            b"1.",
            b".5",
            b"-",
            b"\"\\ud800\"",
            b"\"\\ud83d\\ude00\"",
            b"\"\\u0000\"",
            b"\"\\udc00\"",
            br#"{"a":1,"a":2}"#,
            b"[]",
            b"{}",
            br#"  {"a" : [1, {"b": null}] }  "#,
            br#""tab\tx""#,
            br#"{"k\"ey":"v"}"#,
            "{\"a\":\"\u{e9}\u{1F600}\"}".as_bytes(),
            deep_ok.as_bytes(),
            deep_bad.as_bytes(),
            b"true false",
            br#"{"a":1,}"#,
            b"[1,]",
            b"nul",
            b"\"abc",
            br#"{"a"}"#,
            b"\xef\xbb\xbf{}",
            b"\"a\tb\"",
            b"{\"a\":\"b\x01\"}",
            b"\t{\"a\":1}\r",
            b"{\"a\":\"\xff\"}",
            b"\"\\x\"",
            b"[1e5, 2.5E-3, -7.0e+2]",
            b"{\"a\":[{\"b\":[{\"c\":{}}]}]}",
            br#""\/\b\f\n\r\t\\""#,
            b"",
            b"   ",
        ];
        for c in cases {
            agrees(c);
        }
    }

    #[test]
    fn fast_path_agrees_with_serde_json_on_mutated_documents() {
        // Deterministic mutations of valid documents: flipped, dropped and duplicated bytes.
        let docs: [&[u8]; 3] = [
            br#"{"ts":"2026-11-27T10:00:00.123Z","level":"warn","code":-42,"ratio":0.125,"big":18446744073709551615,"esc":"a\"b\\c\u00e9","arr":[1,2.5,"x",null,true,{"k":[]}]}"#,
            br#"[{"a":1},{"b":"two"},{"c":[3,4,{"d":5e10}]}]"#,
            br#"{"msg":"GET /index.html HTTP/1.1","status":404,"bytes":0,"agent":"curl/8.0 (x86_64)"}"#,
        ];
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let alphabet = b"{}[]\":,\\0123456789.eE+-tfnrulas \x01\xff";
        for doc in docs {
            agrees(doc);
            for _ in 0..3000 {
                let mut d = doc.to_vec();
                for _ in 0..1 + next(3) {
                    let at = next(d.len());
                    match next(3) {
                        0 => d[at] = alphabet[next(alphabet.len())],
                        1 => {
                            d.remove(at);
                        }
                        _ => d.insert(at, d[at]),
                    }
                    if d.is_empty() {
                        break;
                    }
                }
                agrees(&d);
            }
        }
    }

    #[test]
    fn fast_path_parses_floats_exactly() {
        let mut seed: u64 = 42;
        for _ in 0..20000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let x = f64::from_bits(seed >> 2);
            if !x.is_finite() {
                continue;
            }
            for text in [
                format!("{x}"),
                format!("{x:e}"),
                format!("{:.3}", (seed % 100_000) as f64 / 7.0),
            ] {
                // serde_json's default float parsing may be off by one unit in the last place;
                // the fast path is correctly rounded, so it is held to Rust's own parser.
                if let Some(v) = fast(text.as_bytes()) {
                    let want: f64 = text.parse().unwrap();
                    assert_eq!(v, Value::Float(NotNan::new(want).unwrap()), "{text}");
                }
                assert!(parse_serde(&Bytes::from(text)).is_ok());
            }
        }
    }
}
