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
                        // `\` is one byte, so the next character starts at `i + 1`; it may
                        // be several bytes long (`\é`), and is taken whole.
                        let Some(c) = s[i + 1..].chars().next() else {
                            break;
                        };
                        val.push(match c {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            c => c,
                        });
                        i += 1 + c.len_utf8();
                    }
                    b'"' => {
                        closed = true;
                        break;
                    }
                    _ => {
                        let Some(c) = s[i..].chars().next() else {
                            break;
                        };
                        val.push(c);
                        i += c.len_utf8();
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

    #[test]
    fn an_escaped_multibyte_character_is_taken_whole() {
        let m = parse(&Bytes::from("k=\"\\é\" a=\"x\\\"é\\n\"".to_string())).unwrap();
        assert_eq!(m["k"], Value::Bytes(Bytes::from("é")));
        assert_eq!(m["a"], Value::Bytes(Bytes::from("x\"é\n")));
        // A backslash at the very end: unterminated, an error, not a panic.
        assert!(parse(&Bytes::from_static(b"k=\"\\")).is_err());
    }

    /// Random lines made of logfmt's special characters, ASCII and multi-byte characters:
    /// every one parses or gives an error, none panics.
    #[test]
    fn no_line_panics() {
        const PIECES: [&str; 12] = [
            "k", "=", "\"", "\\", " ", "é", "€", "😀", "n", "\t", "a=b", "\\é",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut line = String::new();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = x % 16;
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                line.push_str(PIECES[(x % PIECES.len() as u64) as usize]);
            }
            let _ = parse(&Bytes::from(line));
        }
    }
}
