//! The `_bulk` wire format: NDJSON action/document pairs out, per-item results back.
//!
//! Request: for each document one action line (`{"index":{"_index":"logs","_id":"7"}}` or
//! `create`) and one source line, each ending in `\n`. Response:
//! `{"took":3,"errors":true,"items":[{"index":{"_index":"logs","_id":"7","status":201,
//! "result":"created"}},{"create":{...,"status":400,"error":{"type":"...","reason":"..."}}}]}`,
//! one item per action, in request order.

use serde::Deserialize;

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

fn write_json_str(out: &mut Vec<u8>, s: &str) {
    // serde_json escapes exactly as JSON requires; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// A bulk response, as far as the sink needs it.
#[derive(Debug, Deserialize)]
pub struct BulkResponse {
    #[serde(default)]
    pub errors: bool,
    #[serde(default)]
    pub items: Vec<std::collections::HashMap<String, BulkItem>>,
}

/// One item of a bulk response (the value under its action key).
#[derive(Debug, Deserialize)]
pub struct BulkItem {
    pub status: u16,
    #[serde(default)]
    pub error: Option<ItemError>,
}

#[derive(Debug, Deserialize)]
pub struct ItemError {
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub reason: String,
}

/// What happened to one document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    Ok,
    /// 429 or 5xx: send again.
    Retry(String),
    /// Refused for good (mapping error, 400...): the reason.
    Rejected {
        status: u16,
        reason: String,
    },
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
        .map(|m| {
            let Some((action, item)) = m.into_iter().next() else {
                return ItemOutcome::Rejected {
                    status: 0,
                    reason: "empty item in the bulk response".into(),
                };
            };
            let reason = || match &item.error {
                Some(e) => format!("{}: {}", e.kind, e.reason),
                None => format!("status {}", item.status),
            };
            match item.status {
                200..=299 => ItemOutcome::Ok,
                409 if create_conflict_ok && action == "create" => ItemOutcome::Ok,
                s if crate::http::retriable_status(s) => ItemOutcome::Retry(reason()),
                s => ItemOutcome::Rejected {
                    status: s,
                    reason: reason(),
                },
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
    fn item_outcomes() {
        let body = br#"{"took":2,"errors":true,"items":[
            {"index":{"_index":"a","_id":"1","status":201,"result":"created"}},
            {"index":{"_index":"a","_id":"2","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"index":{"_index":"a","_id":"3","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [n]"}}},
            {"create":{"_index":"a","_id":"4","status":409,"error":{"type":"version_conflict_engine_exception","reason":"exists"}}}]}"#;
        let o = parse_response(body, 4, true).unwrap();
        assert_eq!(o[0], ItemOutcome::Ok);
        assert!(matches!(&o[1], ItemOutcome::Retry(r) if r.contains("queue full")));
        assert!(
            matches!(&o[2], ItemOutcome::Rejected { status: 400, reason } if reason == "mapper_parsing_exception: failed to parse field [n]")
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
    }
}
