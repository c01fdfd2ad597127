//! The `_bulk` wire format: NDJSON action/document pairs out, per-item results back.
//!
//! Request: for each document one action line (`{"index":{"_index":"logs","_id":"7"}}` or
//! `create`) and one source line, each ending in `\n`. Response:
//! `{"took":3,"errors":true,"items":[{"index":{"_index":"logs","_id":"7","status":201,
//! "result":"created"}},{"create":{...,"status":400,"error":{"type":"...","reason":"..."}}}]}`,
//! one item per action, in request order.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize, Serializer};
use weir_pipeline::event::Value;

/// The bulk action of each document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
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

/// Writes `value` as a JSON document: what `Value`'s own `Serialize` writes, except that
/// timestamps are formatted on the stack instead of into a new `String` each, and that
/// `timestamp`, when given, is written first as `"@timestamp"` (data streams need one).
pub fn write_document(
    out: &mut Vec<u8>,
    value: &Value,
    timestamp: Option<DateTime<Utc>>,
) -> Result<(), serde_json::Error> {
    match timestamp {
        None => serde_json::to_writer(out, &Doc(value)),
        Some(ts) => serde_json::to_writer(out, &WithTimestamp(value, ts)),
    }
}

struct Doc<'a>(&'a Value);

impl Serialize for Doc<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Timestamp(t) => s.serialize_str(rfc3339(t, &mut [0; RFC3339_MAX])),
            Value::Object(m) => {
                let mut map = s.serialize_map(Some(m.len()))?;
                for (k, v) in m {
                    map.serialize_entry(k.as_str(), &Doc(v))?;
                }
                map.end()
            }
            Value::Array(a) => {
                let mut seq = s.serialize_seq(Some(a.len()))?;
                for v in a {
                    seq.serialize_element(&Doc(v))?;
                }
                seq.end()
            }
            other => other.serialize(s),
        }
    }
}

/// The root object with a leading `@timestamp` (the caller checked it has none).
struct WithTimestamp<'a>(&'a Value, DateTime<Utc>);

impl Serialize for WithTimestamp<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0; RFC3339_MAX];
        let ts = rfc3339(&self.1, &mut buf);
        match self.0 {
            Value::Object(m) => {
                let mut map = s.serialize_map(Some(m.len() + 1))?;
                map.serialize_entry("@timestamp", ts)?;
                for (k, v) in m {
                    map.serialize_entry(k.as_str(), &Doc(v))?;
                }
                map.end()
            }
            other => Doc(other).serialize(s),
        }
    }
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

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes exactly as JSON requires; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
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
    /// 429 or 5xx: send again.
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
/// 409 on `create` means an earlier attempt already stored the document (ids are set).
pub fn parse_response(
    body: &[u8],
    sent: usize,
    create_conflict_ok: bool,
) -> Result<Vec<ItemOutcome>, ResponseError> {
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
                s if crate::http::retriable_status(s) => ItemOutcome::Retry(reason()),
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
        let o = parse_response(body, 4, true).unwrap();
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
            parse_response(b"<html>", 1, false),
            Err(ResponseError::NotJson { .. })
        ));
        assert!(matches!(
            parse_response(br#"{"errors":true,"items":[]}"#, 1, false),
            Err(ResponseError::ItemCount { got: 0, sent: 1 })
        ));
        // What the server answers to `filter_path`.
        let filtered = br#"{"errors":true,"items":[{"index":{"status":201}},{"create":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}},{"index":{"status":503,"error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"}}}]}"#;
        let o = parse_response(filtered, 3, true).unwrap();
        assert_eq!(o[0], ItemOutcome::Ok);
        assert_eq!(o[1], ItemOutcome::Ok);
        assert_eq!(
            o[2],
            ItemOutcome::Retry("unavailable_shards_exception: primary shard is not active".into())
        );
        assert!(parse_response(br#"{"errors":true,"items":[{}]}"#, 1, false).is_err());
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
