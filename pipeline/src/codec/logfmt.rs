//! logfmt (`key=value key2="quoted value"`). Hand-written because the format is a few lines of
//! grammar and the crates.io parsers are unmaintained; this one borrows from the frame.

use std::fmt::Write as _;

use bytes::Bytes;

use crate::event::{KeyString, ObjectMap, Value};

/// Parses a logfmt line. Bare keys (`debug`) become `true`. Values stay strings.
pub fn parse(frame: &Bytes) -> Result<ObjectMap, String> {
    let s = std::str::from_utf8(frame).map_err(|e| format!("invalid UTF-8: {e}"))?;
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = ObjectMap::new();
    while i < b.len() {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let ks = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            if b[i] == b'"' {
                return Err(format!("unexpected `\"` in a key at byte {i}"));
            }
            i += 1;
        }
        let key = &s[ks..i];
        if i >= b.len() || b[i] != b'=' {
            out.insert(KeyString::from(key), Value::Boolean(true));
            continue;
        }
        i += 1;
        if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut val = String::new();
            let mut closed = false;
            let start = i;
            let mut escaped = false;
            while i < b.len() {
                match b[i] {
                    b'\\' if i + 1 < b.len() => {
                        escaped = true;
                        match b[i + 1] {
                            b'n' => val.push('\n'),
                            b't' => val.push('\t'),
                            b'r' => val.push('\r'),
                            c => val.push(c as char),
                        }
                        i += 2;
                    }
                    b'"' => {
                        closed = true;
                        break;
                    }
                    _ => {
                        let ch_len = utf8_len(b[i]);
                        val.push_str(&s[i..(i + ch_len).min(b.len())]);
                        i += ch_len;
                    }
                }
            }
            if !closed {
                return Err(format!("unterminated quoted value for key `{key}`"));
            }
            let v = if escaped {
                Bytes::from(val)
            } else {
                frame.slice(start..i)
            };
            i += 1;
            out.insert(KeyString::from(key), Value::Bytes(v));
        } else {
            let vs = i;
            while i < b.len() && !b[i].is_ascii_whitespace() {
                i += 1;
            }
            out.insert(KeyString::from(key), Value::Bytes(frame.slice(vs..i)));
        }
    }
    Ok(out)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// Writes an object as logfmt; nested objects flatten to dotted keys.
pub fn write(map: &ObjectMap, out: &mut Vec<u8>) {
    let mut s = String::new();
    let mut first = true;
    write_prefixed(map, "", &mut s, &mut first);
    out.extend_from_slice(s.as_bytes());
}

fn write_prefixed(map: &ObjectMap, prefix: &str, s: &mut String, first: &mut bool) {
    for (k, v) in map {
        let key = if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        };
        if let Value::Object(inner) = v {
            write_prefixed(inner, &key, s, first);
            continue;
        }
        if !*first {
            s.push(' ');
        }
        *first = false;
        s.push_str(&key);
        s.push('=');
        let text = match v {
            Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            other => other.to_string_lossy().into_owned(),
        };
        if text.is_empty() || text.contains([' ', '"', '=', '\n', '\t', '\\']) {
            s.push('"');
            for c in text.chars() {
                match c {
                    '"' => s.push_str("\\\""),
                    '\\' => s.push_str("\\\\"),
                    '\n' => s.push_str("\\n"),
                    '\t' => s.push_str("\\t"),
                    c => {
                        let _ = s.write_char(c);
                    }
                }
            }
            s.push('"');
        } else {
            s.push_str(&text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let line = Bytes::from_static(br#"level=info msg="hello \"world\"" debug dur=3ms"#);
        let m = parse(&line).unwrap();
        assert_eq!(m["level"], Value::Bytes(Bytes::from_static(b"info")));
        assert_eq!(
            m["msg"],
            Value::Bytes(Bytes::from_static(b"hello \"world\""))
        );
        assert_eq!(m["debug"], Value::Boolean(true));
        let mut out = Vec::new();
        write(&m, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"debug=true dur=3ms level=info msg="hello \"world\"""#
        );
        assert!(parse(&Bytes::from_static(b"a=\"open")).is_err());
    }
}
