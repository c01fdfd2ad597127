//! `GET /api/tap`: the events leaving (or entering) components, streamed as newline-delimited
//! JSON while the client reads (`weir tap` is its client).
//!
//! Query: `outputs_of=GLOB` and `inputs_of=GLOB` (each may repeat; neither: `outputs_of=*`),
//! `sample=N` (one event in N), `limit=N` (the stream ends after N events). Each line is
//! `{"component": ID, "output": NAME|null, "event": {...}}`; when the client read too slowly
//! and copies were dropped, a line `{"dropped": N}` comes before the next events. The copies
//! hold no acknowledgement, and the pipeline never waits for the client (see
//! `weir_pipeline::tap`).

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use weir_pipeline::tap::{Tap, TapRequest, Taps, TAP_QUEUE_EVENTS};

/// The tap route, with its state: merged into the API's router.
pub fn routes(taps: Arc<Taps>) -> Router {
    Router::new().route("/api/tap", get(tap)).with_state(taps)
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

/// Decodes `%XX` and `+` of a query string component.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Parses the query into a tap request.
fn parse_query(query: &str) -> Result<TapRequest, String> {
    let mut r = TapRequest {
        outputs_of: Vec::new(),
        inputs_of: Vec::new(),
        sample: 1,
        limit: None,
        capacity: TAP_QUEUE_EVENTS,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        let number = |v: &str| {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("`{k}` must be a whole number above 0, not `{v}`"))
        };
        match percent_decode(k).as_str() {
            "outputs_of" => r.outputs_of.push(v),
            "inputs_of" => r.inputs_of.push(v),
            "sample" => r.sample = number(&v)?,
            "limit" => r.limit = Some(number(&v)?),
            other => {
                return Err(format!(
                    "unknown parameter `{other}` (known: outputs_of, inputs_of, sample, limit)"
                ))
            }
        }
    }
    if r.outputs_of.is_empty() && r.inputs_of.is_empty() {
        r.outputs_of.push("*".into());
    }
    Ok(r)
}

async fn tap(State(taps): State<Arc<Taps>>, RawQuery(query): RawQuery) -> Response {
    let request = match parse_query(query.as_deref().unwrap_or("")) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    let tap = match taps.attach(&request) {
        Ok(t) => t,
        Err(e) => return (StatusCode::NOT_FOUND, Json(json!({ "error": e }))).into_response(),
    };
    let body = Body::from_stream(lines(tap, request.limit));
    (
        [
            (header::CONTENT_TYPE, "application/x-ndjson"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

struct Stream {
    tap: Tap,
    left: Option<u64>,
}

/// The tap's copies as chunks of JSON lines; ends after `limit` events. Serialising happens
/// here, on the API's task, never on the pipeline's.
fn lines(
    tap: Tap,
    limit: Option<u64>,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send {
    futures::stream::unfold(Stream { tap, left: limit }, |mut s| async move {
        if s.left == Some(0) {
            return None;
        }
        let batch = s.tap.recv().await?;
        let mut out = Vec::with_capacity(256 * batch.events.len());
        let dropped = s.tap.take_dropped();
        if dropped > 0 {
            push_line(&mut out, &json!({ "dropped": dropped }));
        }
        for e in &batch.events {
            if s.left == Some(0) {
                break;
            }
            push_line(
                &mut out,
                &json!({
                    "component": &*batch.component,
                    "output": batch.output.as_deref(),
                    "event": e.to_json_value(),
                }),
            );
            if let Some(l) = s.left.as_mut() {
                *l -= 1;
            }
        }
        Some((Ok(Bytes::from(out)), s))
    })
}

fn push_line(out: &mut Vec<u8>, v: &serde_json::Value) {
    if serde_json::to_writer(&mut *out, v).is_ok() {
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query() {
        let r =
            parse_query("outputs_of=router%2A&inputs_of=a&inputs_of=b&sample=3&limit=5").unwrap();
        assert_eq!(r.outputs_of, ["router*"]);
        assert_eq!(r.inputs_of, ["a", "b"]);
        assert_eq!((r.sample, r.limit), (3, Some(5)));
        assert_eq!(parse_query("").unwrap().outputs_of, ["*"]);
        assert!(parse_query("limit=0").unwrap_err().contains("limit"));
        assert!(parse_query("bogus=1")
            .unwrap_err()
            .contains("unknown parameter"));
        assert_eq!(percent_decode("a%5B1%5D+b%"), "a[1] b%");
    }
}
