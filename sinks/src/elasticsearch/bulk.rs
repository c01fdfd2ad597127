//! The `_bulk` wire format: NDJSON action/document pairs out, per-item results back.
//!
//! Request: for each document one action line (`{"index":{"_index":"logs","_id":"7"}}` or
//! `create`) and one source line, each ending in `\n`. Response:
//! `{"took":3,"errors":true,"items":[{"index":{"_index":"logs","_id":"7","status":201,
//! "result":"created"}},{"create":{...,"status":400,"error":{"type":"...","reason":"..."}}}]}`,
//! one item per action, in request order.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Deserialize;
use weir_pipeline::event::Value;

use crate::toolkit::retry::{RefusalPolicy, Verdict};

/// The bulk action of each document.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BulkAction {
    /// Create or replace.
    Index,
    /// Create only; an existing `_id` is a conflict (409).
    Create,
}

impl BulkAction {
    pub fn as_str(self) -> &'static str {
        match self {
            BulkAction::Index => "index",
            BulkAction::Create => "create",
        }
    }
}

/// Writes one action line (with its newline) into `out`.
pub fn write_action(
    out: &mut Vec<u8>,
    action: BulkAction,
    index: &str,
    id: Option<&str>,
    doc_type: Option<&str>,
) {
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(action.as_str().as_bytes());
    out.extend_from_slice(b"\":{\"_index\":");
    write_json_str(out, index);
    if let Some(id) = id {
        out.extend_from_slice(b",\"_id\":");
        write_json_str(out, id);
    }
    if let Some(t) = doc_type {
        out.extend_from_slice(b",\"_type\":");
        write_json_str(out, t);
    }
    out.extend_from_slice(b"}}\n");
}

/// Writes `value` as a JSON document: the bytes `Value`'s own `Serialize` writes through
/// `serde_json`, but written straight into `out`: strings are escaped by [`write_json_str`]
/// and timestamps formatted on the stack instead of into a new `String` each. When
/// `timestamp` is given it is written first as `"@timestamp"` (data streams need one; the
/// caller checked the root has none).
pub fn write_document(
    out: &mut Vec<u8>,
    value: &Value,
    timestamp: Option<DateTime<Utc>>,
) -> Result<(), serde_json::Error> {
    match (value, timestamp) {
        (Value::Object(m), Some(ts)) => {
            out.extend_from_slice(b"{\"@timestamp\":");
            write_timestamp(out, &ts);
            for (k, v) in m {
                out.push(b',');
                write_json_str(out, k.as_str());
                out.push(b':');
                write_value(out, v)?;
            }
            out.push(b'}');
            Ok(())
        }
        (v, _) => write_value(out, v),
    }
}

/// One value, as `serde_json::to_writer(out, value)` writes it.
fn write_value(out: &mut Vec<u8>, value: &Value) -> Result<(), serde_json::Error> {
    match value {
        Value::Object(m) => {
            out.push(b'{');
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json_str(out, k.as_str());
                out.push(b':');
                write_value(out, v)?;
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, v)?;
            }
            out.push(b']');
        }
        Value::Timestamp(t) => write_timestamp(out, t),
        Value::Bytes(_) | Value::String(_) => match value.to_str_lossy() {
            Some(s) => write_json_str(out, &s),
            None => serde_json::to_writer(&mut *out, value)?,
        },
        // Numbers, booleans, null and regexes: as `serde_json` writes them.
        other => serde_json::to_writer(&mut *out, other)?,
    }
    Ok(())
}

fn write_timestamp(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    out.push(b'"');
    // RFC 3339 text has nothing to escape.
    out.extend_from_slice(rfc3339(t, &mut [0; RFC3339_MAX]).as_bytes());
    out.push(b'"');
}

/// The longest RFC 3339 text [`rfc3339`] writes (a 4-digit year and nanoseconds).
const RFC3339_MAX: usize = 30;

/// `t` as `to_rfc3339_opts(SecondsFormat::AutoSi, true)` writes it (`2026-11-27T10:00:00Z`,
/// with 3, 6 or 9 digits of fraction when there is one), into `buf`. Years outside
/// 0..=9999 fall back to chrono (never seen in logs; allocates).
fn rfc3339<'b>(t: &DateTime<Utc>, buf: &'b mut [u8; RFC3339_MAX]) -> &'b str {
    let year = t.year();
    if !(0..=9999).contains(&year) {
        let s = t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
        let n = s.len().min(RFC3339_MAX);
        buf[..n].copy_from_slice(&s.as_bytes()[..n]);
        return std::str::from_utf8(&buf[..n]).unwrap_or_default();
    }
    fn digits(buf: &mut [u8], mut v: u32) {
        for b in buf.iter_mut().rev() {
            *b = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    digits(&mut buf[0..4], year as u32);
    buf[4] = b'-';
    digits(&mut buf[5..7], t.month());
    buf[7] = b'-';
    digits(&mut buf[8..10], t.day());
    buf[10] = b'T';
    digits(&mut buf[11..13], t.hour());
    buf[13] = b':';
    digits(&mut buf[14..16], t.minute());
    buf[16] = b':';
    // A leap second (nanosecond >= 1e9) is written as second 60, as chrono does.
    let nanos = t.nanosecond();
    digits(&mut buf[17..19], t.second() + nanos / 1_000_000_000);
    let nanos = nanos % 1_000_000_000;
    let mut n = 19;
    let (frac, width) = if nanos == 0 {
        (0, 0)
    } else if nanos.is_multiple_of(1_000_000) {
        (nanos / 1_000_000, 3)
    } else if nanos.is_multiple_of(1_000) {
        (nanos / 1_000, 6)
    } else {
        (nanos, 9)
    };
    if width > 0 {
        buf[n] = b'.';
        digits(&mut buf[n + 1..n + 1 + width], frac);
        n += 1 + width;
    }
    buf[n] = b'Z';
    // Only ASCII digits and punctuation were written.
    std::str::from_utf8(&buf[..n + 1]).unwrap_or_default()
}

/// How `serde_json` escapes each byte of a string: 0 not at all, `u` as `\u00XX`, else as
/// a backslash and this byte. Bytes of multi-byte UTF-8 characters are never escaped.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `s` as a JSON string, byte for byte what `serde_json` writes.
///
/// `serde_json` copies each run between two escapes with its own `memcpy` call, which on a
/// document whose `message` is itself a line of JSON (a quote every few bytes) costs more
/// than the bytes; a byte-at-a-time loop is bound by its own chain of dependent stores. Here
/// eight bytes are looked at and stored at once (SWAR): a word with no quote, backslash or
/// control byte is copied whole; otherwise the bytes before the first such byte are kept and
/// that byte is escaped.
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = LO * b'"' as u64;
    const BACKSLASHES: u64 = LO * b'\\' as u64;
    const SPACES: u64 = LO * 0x20;
    let bytes = s.as_bytes();
    let start = out.len();
    // Room for the text, its quotes, a few escapes and an 8-byte store past the end; grown
    // below when escapes need more.
    let mut end = start + bytes.len() + bytes.len() / 8 + 24;
    out.resize(end, 0);
    out[start] = b'"';
    let mut j = start + 1;
    let mut i = 0;
    while i < bytes.len() {
        if end - j < 16 {
            end += (bytes.len() - i) + 64;
            out.resize(end, 0);
        }
        if let Some(chunk) = bytes.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let w = u64::from_le_bytes(word);
            let q = w ^ QUOTES;
            let b = w ^ BACKSLASHES;
            // The lowest flagged byte of each test is exact (a false positive can only sit
            // above a true one), so the lowest of the three is the first byte to escape.
            // Bytes >= 0x80 (UTF-8 sequences) are never flagged.
            let m = ((q.wrapping_sub(LO) & !q)
                | (b.wrapping_sub(LO) & !b)
                | (w.wrapping_sub(SPACES) & !w))
                & HI;
            out[j..j + 8].copy_from_slice(chunk);
            if m == 0 {
                i += 8;
                j += 8;
                continue;
            }
            let k = (m.trailing_zeros() / 8) as usize;
            i += k;
            j += k;
        }
        // `bytes[i]` needs an escape, or fewer than eight bytes are left.
        let c = bytes[i];
        match ESCAPE[c as usize] {
            0 => {
                out[j] = c;
                j += 1;
            }
            b'u' => {
                out[j..j + 6].copy_from_slice(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(c >> 4)],
                    HEX[usize::from(c & 0xf)],
                ]);
                j += 6;
            }
            e => {
                out[j] = b'\\';
                out[j + 1] = e;
                j += 2;
            }
        }
        i += 1;
    }
    out[j] = b'"';
    out.truncate(j + 1);
}

/// The `filter_path` the sink asks for: the server leaves out of its answer everything but
/// what [`parse_response`] reads (per item: status and error), which makes the answer to a
/// large bulk request several times smaller and cheaper to parse. Elasticsearch and
/// OpenSearch accept it on every REST call.
pub const FILTER_PATH: &str = "errors,items.*.status,items.*.error.type,items.*.error.reason";

/// A bulk response, as far as the sink needs it.
#[derive(Debug, Deserialize)]
pub struct BulkResponse {
    #[serde(default)]
    pub errors: bool,
    #[serde(default)]
    pub items: Vec<BulkItem>,
}

/// One item of a bulk response: `{"<action>": {"status": …, "error": {…}, …}}`. Read
/// without allocating unless the item carries an error.
#[derive(Debug)]
pub struct BulkItem {
    /// The action was `create`.
    pub create: bool,
    pub status: u16,
    pub error: Option<ItemError>,
}

#[derive(Debug, Deserialize)]
struct ItemBody {
    status: u16,
    #[serde(default)]
    error: Option<ItemError>,
}

#[derive(Debug, Deserialize)]
pub struct ItemError {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub reason: String,
}

/// The action name of an item, compared without copying it.
struct IsCreate(bool);

impl<'de> Deserialize<'de> for IsCreate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = IsCreate;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a bulk action name")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<IsCreate, E> {
                Ok(IsCreate(v == "create"))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for BulkItem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = BulkItem;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a bulk response item: an object with one action")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<BulkItem, A::Error> {
                let Some(IsCreate(create)) = m.next_key::<IsCreate>()? else {
                    return Err(serde::de::Error::custom("an empty item"));
                };
                let body: ItemBody = m.next_value()?;
                while m
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(BulkItem {
                    create,
                    status: body.status,
                    error: body.error,
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// What happened to one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    Ok,
    /// Send again (429, 5xx, 401/403/404... as the sink's refusal policy says).
    Retry(String),
    /// Refused for good (mapping error, 400...).
    Rejected(Refusal),
}

/// Why a document was refused for good, as the server said it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status of the item, or of the whole request; 0 when given up after
    /// `max_retries`.
    pub status: u16,
    /// The server's `error.type` (`mapper_parsing_exception`); empty when it gave none.
    pub error_type: String,
    /// The server's `error.reason`, or what went wrong.
    pub reason: String,
}

impl Refusal {
    /// A whole request refused: the `error` object of an Elasticsearch error answer
    /// (`{"error":{"type":"…","reason":"…"},"status":400}`), else `fallback` as the reason.
    pub fn of_request(status: u16, body: &[u8], fallback: &str) -> Refusal {
        #[derive(Deserialize)]
        struct Answer {
            error: ItemError,
        }
        match serde_json::from_slice::<Answer>(body) {
            Ok(Answer { error }) if !error.kind.is_empty() || !error.reason.is_empty() => Refusal {
                status,
                error_type: error.kind,
                reason: error.reason,
            },
            _ => Refusal {
                status,
                error_type: String::new(),
                reason: fallback.to_string(),
            },
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.error_type.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.error_type, self.reason)
        }
    }
}

/// Why a response could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ResponseError {
    #[error("the bulk response is not the expected JSON ({error}); body starts with: {snippet}")]
    NotJson { error: String, snippet: String },
    #[error("the bulk response has {got} items for {sent} documents")]
    ItemCount { got: usize, sent: usize },
}

/// Parses a 2xx bulk response into one outcome per document sent. `create_conflict_ok`: a
/// 409 on `create` means an earlier attempt already stored the document (ids are set). An
/// item's status is classified by the sink's refusal `policy` (a 413 for one document is a
/// rejection: it cannot be split).
pub fn parse_response(
    body: &[u8],
    sent: usize,
    create_conflict_ok: bool,
    policy: &RefusalPolicy,
) -> Result<Vec<ItemOutcome>, ResponseError> {
    if all_succeeded(body) == Some(sent) {
        return Ok(vec![ItemOutcome::Ok; sent]);
    }
    let r: BulkResponse = serde_json::from_slice(body).map_err(|e| ResponseError::NotJson {
        error: e.to_string(),
        snippet: crate::http::snippet(body, 200),
    })?;
    if !r.errors && r.items.is_empty() {
        // Some proxies strip `items`; `errors: false` alone says everything went in.
        return Ok(vec![ItemOutcome::Ok; sent]);
    }
    if r.items.len() != sent {
        return Err(ResponseError::ItemCount {
            got: r.items.len(),
            sent,
        });
    }
    Ok(r.items
        .into_iter()
        .map(|item| {
            let reason = || match &item.error {
                Some(e) => format!("{}: {}", e.kind, e.reason),
                None => format!("status {}", item.status),
            };
            match item.status {
                200..=299 => ItemOutcome::Ok,
                409 if create_conflict_ok && item.create => ItemOutcome::Ok,
                s if policy.http(s) == Verdict::Retry => ItemOutcome::Retry(reason()),
                s => ItemOutcome::Rejected(match item.error {
                    Some(e) => Refusal {
                        status: s,
                        error_type: e.kind,
                        reason: e.reason,
                    },
                    None => Refusal {
                        status: s,
                        error_type: String::new(),
                        reason: format!("status {s}"),
                    },
                }),
            }
        })
        .collect())
}

/// The number of items of a response that says, in the exact compact form Elasticsearch and
/// OpenSearch give to [`FILTER_PATH`], that every document went in:
/// `{"errors":false,"items":[{"index":{"status":201}},{"create":{"status":200}},…]}`. Such
/// an answer (the usual one) is read by comparing bytes instead of parsing each item; any
/// other answer gives `None` and goes through the parser.
fn all_succeeded(body: &[u8]) -> Option<usize> {
    let mut rest = body.strip_prefix(br#"{"errors":false,"items":["#)?;
    let mut n = 0;
    loop {
        let item = rest
            .strip_prefix(br#"{"index":{"status":20"#)
            .or_else(|| rest.strip_prefix(br#"{"create":{"status":20"#))?;
        let item = match item {
            [b'0' | b'1', b'}', b'}', tail @ ..] => tail,
            _ => return None,
        };
        n += 1;
        match item {
            [b',', tail @ ..] => rest = tail,
            b"]}" => return Some(n),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn action_lines_escape_and_carry_id_and_type() {
        let mut out = Vec::new();
        write_action(&mut out, BulkAction::Create, "logs-\"a\"", Some("1"), None);
        write_action(&mut out, BulkAction::Index, "i", None, Some("_doc"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"create\":{\"_index\":\"logs-\\\"a\\\"\",\"_id\":\"1\"}}\n{\"index\":{\"_index\":\"i\",\"_type\":\"_doc\"}}\n"
        );
    }

    #[test]
    fn a_refused_request_names_the_server_error() {
        let body = br#"{"error":{"root_cause":[{"type":"action_request_validation_exception","reason":"Validation Failed: 1: type is missing;"}],"type":"action_request_validation_exception","reason":"Validation Failed: 1: type is missing;"},"status":400}"#;
        let r = Refusal::of_request(400, body, "POST /_bulk: HTTP 400");
        assert_eq!(r.error_type, "action_request_validation_exception");
        assert_eq!(r.reason, "Validation Failed: 1: type is missing;");
        let r = Refusal::of_request(413, b"<html>too large</html>", "POST /_bulk: HTTP 413");
        assert_eq!((r.status, r.error_type.as_str()), (413, ""));
        assert_eq!(r.to_string(), "POST /_bulk: HTTP 413");
    }

    #[test]
    fn item_outcomes() {
        let body = br#"{"took":2,"errors":true,"items":[
            {"index":{"_index":"a","_id":"1","status":201,"result":"created"}},
            {"index":{"_index":"a","_id":"2","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"index":{"_index":"a","_id":"3","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [n]"}}},
            {"create":{"_index":"a","_id":"4","status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}}]}"#;
        let o = parse_response(body, 4, true, &RefusalPolicy::default()).unwrap();
        assert_eq!(o[0], ItemOutcome::Ok);
        assert!(matches!(&o[1], ItemOutcome::Retry(r) if r.contains("queue full")));
        let ItemOutcome::Rejected(r) = &o[2] else {
            panic!("{:?}", o[2])
        };
        assert_eq!(
            (r.status, r.error_type.as_str(), r.reason.as_str()),
            (400, "mapper_parsing_exception", "failed to parse field [n]")
        );
        assert_eq!(
            r.to_string(),
            "mapper_parsing_exception: failed to parse field [n]"
        );
        assert_eq!(o[3], ItemOutcome::Ok);
        assert!(matches!(
            parse_response(b"<html>", 1, false, &RefusalPolicy::default()),
            Err(ResponseError::NotJson { .. })
        ));
        assert!(matches!(
            parse_response(
                br#"{"errors":true,"items":[]}"#,
                1,
                false,
                &RefusalPolicy::default()
            ),
            Err(ResponseError::ItemCount { got: 0, sent: 1 })
        ));
        // What the server answers to `filter_path`.
        let filtered = br#"{"errors":true,"items":[{"index":{"status":201}},{"create":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}},{"index":{"status":503,"error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"}}}]}"#;
        let o = parse_response(filtered, 3, true, &RefusalPolicy::default()).unwrap();
        assert_eq!(o[0], ItemOutcome::Ok);
        assert_eq!(o[1], ItemOutcome::Ok);
        assert_eq!(
            o[2],
            ItemOutcome::Retry("unavailable_shards_exception: primary shard is not active".into())
        );
        assert!(parse_response(
            br#"{"errors":true,"items":[{}]}"#,
            1,
            false,
            &RefusalPolicy::default()
        )
        .is_err());
    }

    #[test]
    fn an_all_successful_response_is_read_without_parsing_items() {
        let ok = br#"{"errors":false,"items":[{"index":{"status":201}},{"create":{"status":200}},{"index":{"status":201}}]}"#;
        assert_eq!(all_succeeded(ok), Some(3));
        assert_eq!(
            parse_response(ok, 3, false, &RefusalPolicy::default()).unwrap(),
            vec![ItemOutcome::Ok; 3]
        );
        // The item count is still checked.
        assert!(matches!(
            parse_response(ok, 4, false, &RefusalPolicy::default()),
            Err(ResponseError::ItemCount { got: 3, sent: 4 })
        ));
        // Anything else goes through the parser: another status, other fields, spaces.
        let other = [
            &br#"{"errors":false,"items":[{"index":{"status":201}},{"index":{"status":409}}]}"#[..],
            br#"{"errors":false,"items":[{"index":{"status":202}}]}"#,
            br#"{"errors":false,"items":[{"index":{"status":201,"_id":"1"}}]}"#,
            br#"{"errors": false, "items": [{"index": {"status": 201}}]}"#,
            br#"{"errors":false,"items":[{"index":{"status":201}}]"#,
            br#"{"errors":false,"items":[]}"#,
        ];
        for body in other {
            assert_eq!(
                all_succeeded(body),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        let o = parse_response(other[0], 2, false, &RefusalPolicy::default()).unwrap();
        assert!(matches!(&o[1], ItemOutcome::Rejected(r) if r.status == 409));
    }

    #[test]
    fn documents_are_written_as_value_serialises_them() {
        use chrono::TimeZone;
        let mut obj = std::collections::BTreeMap::new();
        let ts = |s: i64, n: u32| Value::Timestamp(Utc.timestamp_opt(s, n).unwrap());
        obj.insert("a".into(), ts(1_764_000_000, 0));
        obj.insert("b".into(), ts(1_764_000_000, 120_000_000));
        obj.insert("c".into(), ts(1_764_000_000, 123_456_000));
        obj.insert("d".into(), ts(1_764_000_000, 123_456_789));
        obj.insert("e".into(), ts(-62_000_000_000, 5));
        obj.insert("f".into(), ts(253_402_300_800, 0));
        obj.insert("s".into(), Value::from("q\"uote\n"));
        // Every ASCII byte (the control characters, the quote, the backslash, DEL), some
        // UTF-8, a line of JSON, and bytes that are not UTF-8.
        let ascii: String = (0u8..128).map(char::from).collect();
        obj.insert("ascii".into(), Value::from(ascii.as_str()));
        obj.insert("k\u{1}e\"y\\".into(), Value::from("é ∑ 🦀\u{7f}"));
        obj.insert(
            "json".into(),
            Value::from(r#"{"a":"b\"c","n":1.5,"p":"C:\\x"}"#),
        );
        obj.insert(
            "lossy".into(),
            Value::Bytes(bytes::Bytes::from_static(b"a\xff\xfeb\"")),
        );
        obj.insert("empty".into(), Value::from(""));
        obj.insert("n".into(), Value::Integer(-42));
        obj.insert("x".into(), Value::from(serde_json::json!(0.1)));
        obj.insert("t".into(), Value::Boolean(true));
        obj.insert("o".into(), Value::Object(Default::default()));
        obj.insert("arr".into(), Value::Array(vec![]));
        obj.insert(
            "nested".into(),
            Value::Array(vec![ts(0, 1_000), Value::Integer(3), Value::Null]),
        );
        let v = Value::Object(obj);
        let mut ours = Vec::new();
        write_document(&mut ours, &v, None).unwrap();
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            serde_json::to_string(&v).unwrap()
        );
        // Every single byte and every pair of ASCII bytes, escaped as serde_json does.
        for a in 0u8..128 {
            for b in 0u8..128 {
                let s: String = [char::from(a), char::from(b)].iter().collect();
                let mut out = Vec::new();
                write_json_str(&mut out, &s);
                assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{s:?}");
            }
        }
        // Past eight bytes (the word-at-a-time path): each ASCII byte at each position of a
        // 19-byte string, between multi-byte characters, and strings made only of escapes
        // (the output grows six-fold), appended after existing content.
        let chars = [
            'a', 'é', '€', '😀', '"', '\\', '\n', '\u{1}', '\u{1f}', ' ', '\u{7f}',
        ];
        for pos in 0..19 {
            for c in 0u8..128 {
                for fill in ['x', 'é'] {
                    let mut v: Vec<char> = std::iter::repeat_n(fill, 19).collect();
                    v[pos] = char::from(c);
                    let s: String = v.into_iter().collect();
                    let mut out = b"prefix".to_vec();
                    write_json_str(&mut out, &s);
                    let mut want = b"prefix".to_vec();
                    want.extend(serde_json::to_vec(&s).unwrap());
                    assert_eq!(out, want, "{s:?}");
                }
            }
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..300 {
            let s: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    chars[(seed % chars.len() as u64) as usize]
                })
                .collect();
            let mut out = Vec::new();
            write_json_str(&mut out, &s);
            assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{s:?}");
        }
        for c in ['"', '\\', '\u{0}', '\t'] {
            let s: String = std::iter::repeat_n(c, 1000).collect();
            let mut out = Vec::new();
            write_json_str(&mut out, &s);
            assert_eq!(out, serde_json::to_vec(&s).unwrap());
        }
        let mut with = Vec::new();
        let t = Utc.timestamp_opt(1_764_000_000, 5_000_000).unwrap();
        write_document(&mut with, &v, Some(t)).unwrap();
        let text = String::from_utf8(with).unwrap();
        assert!(
            text.starts_with(
                r#"{"@timestamp":"2025-11-24T16:00:00.005Z","a":"2025-11-24T16:00:00Z","#
            ),
            "{text}"
        );
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;

    /// Bulk responses (all successful in the compact form, with item errors, filtered, an
    /// error document), `GET /` documents and refusal bodies, mutated: an outcome or an error,
    /// never a panic; and the compact form's byte comparison never says "all went in" of an
    /// answer the parser reads otherwise.
    #[test]
    fn fuzz_elasticsearch_responses() {
        weir_testing::fuzz::Fuzz::new("elasticsearch_responses")
            .seed(br#"{"errors":false,"items":[{"index":{"status":201}},{"create":{"status":200}},{"index":{"status":201}}]}"#)
            .seed(br#"{"took":2,"errors":true,"items":[{"index":{"_index":"a","_id":"1","status":201,"result":"created"}},{"index":{"_index":"a","_id":"2","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},{"create":{"_index":"a","_id":"4","status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}}]}"#)
            .seed(br#"{"error":{"root_cause":[{"type":"action_request_validation_exception","reason":"Validation Failed: 1: type is missing;"}],"type":"action_request_validation_exception","reason":"Validation Failed: 1: type is missing;"},"status":400}"#)
            .seed(br#"{"name":"es-1","cluster_name":"c","version":{"number":"8.15.0","build_flavor":"default","lucene_version":"9.11.1"},"tagline":"You Know, for Search"}"#)
            .seed(br#"{"version":{"distribution":"opensearch","number":"2.17.1"}}"#)
            .dict([
                "\"status\":", "\"error\":", "\"errors\":false", "\"items\":[", "{\"index\":",
                "{\"create\":", "\"reason\":", "\"type\":", "200", "409", "413", "é",
            ])
            .run(|body| {
                let policy = RefusalPolicy::default();
                for sent in 0..4 {
                    for conflict_ok in [false, true] {
                        let _ = parse_response(body, sent, conflict_ok, &policy);
                    }
                }
                if let Some(n) = all_succeeded(body) {
                    let r: BulkResponse = serde_json::from_slice(body)
                        .unwrap_or_else(|e| panic!("all {n} went in, but the parser says {e}"));
                    assert!(!r.errors && r.items.len() == n);
                }
                for status in [400, 413, 500] {
                    let _ = Refusal::of_request(status, body, "POST /_bulk").to_string();
                }
                let _ = crate::elasticsearch::parse_root(body);
            });
    }
}
