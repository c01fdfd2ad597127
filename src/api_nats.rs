//! The API over NATS (`[api.nats]`): the same API as the HTTP one, answered as NATS
//! request/reply, for agents that cannot be reached but can reach a NATS server.
//!
//! One implementation, two transports: every request on `weir.<node>.api.<name>` becomes an
//! HTTP request (method, path, query, body) handed to the API's own axum router, and the
//! router's answer goes back to the request's reply subject. Whatever the router serves is
//! served here too, with no code of its own.
//!
//! The protocol (docs/api.md has it for clients and NATS authorization):
//! - Subject `weir.<node>.api.<name>`: `health` is `/health`, `metrics` is `/metrics`, any
//!   other name is `/api/<name>` (`graph`, `tap`, `reload`; dots become slashes).
//! - Request headers: `Weir-Method` (default `GET`, or `POST` when the payload is not empty),
//!   `Weir-Query` (the query string, e.g. `outputs_of=router&limit=5`); the payload is the
//!   body; other headers are passed on.
//! - A reply carries `Weir-Status` (the HTTP status) and `Content-Type`. A body that fits one
//!   message is one message without `Weir-Stream`. Otherwise (a larger body, or a stream such
//!   as a tap) the reply is several messages: the first has no payload and carries
//!   `Weir-Keepalive` (a subject under `weir.<node>.keepalive.`), then `Weir-Stream: more`
//!   messages carry the body in order, and a last one carries `Weir-Stream: end`. The requester publishes anything to the
//!   keep-alive subject at least every [`KEEPALIVE_EVERY_SECS`]; after
//!   [`KEEPALIVE_TIMEOUT_SECS`] without one, or on the payload `stop`, the agent ends the
//!   stream (a tap detaches). Core NATS does not tell a publisher its subscriber left, hence
//!   the keep-alives.
//!
//! Authorization is the NATS server's: who may publish to `weir.<node>.api.>` (or to one
//! name of it) may use that part of the API. The HTTP API's bearer token is not asked for.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::http::{Method, Request};
use axum::Router;
use futures::StreamExt;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tower_service::Service;
use weir_connect::nats::async_nats::{self, Client, HeaderMap, Message};
use weir_connect::nats::{connect, NatsConnect};
use weir_connect::tls::ClientTls;
use weir_pipeline::config::ApiNatsConfig;
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::vocabulary::ComponentKind;

/// Reply header: the HTTP status of the answer.
pub const STATUS: &str = "Weir-Status";
/// Request header: the HTTP method (default `GET`, `POST` with a payload).
pub const METHOD: &str = "Weir-Method";
/// Request header: the query string.
pub const QUERY: &str = "Weir-Query";
/// Reply header of a reply in several messages: `more`, then `end` on the last one.
pub const STREAM: &str = "Weir-Stream";
/// Reply header (first message of a reply in several): where keep-alives go.
pub const KEEPALIVE: &str = "Weir-Keepalive";
/// How often a requester of a reply in several messages sends a keep-alive.
pub const KEEPALIVE_EVERY_SECS: u64 = 5;
/// A reply in several messages ends after this long without a keep-alive.
pub const KEEPALIVE_TIMEOUT_SECS: u64 = 30;

/// Room left in a message for its headers.
const HEADER_ROOM: usize = 1024;

/// The subject of an agent's API: `weir.<node>.api`.
pub fn api_subject(node: &str) -> String {
    format!("weir.{node}.api")
}

/// The subjects of an agent's keep-alives: `weir.<node>.keepalive` (one more token per
/// stream).
pub fn keepalive_subject(node: &str) -> String {
    format!("weir.{node}.keepalive")
}

/// The router path of the name after `weir.<node>.api.`.
pub fn path_of(name: &str) -> String {
    match name {
        "health" => "/health".into(),
        "metrics" => "/metrics".into(),
        other => format!("/api/{}", other.replace('.', "/")),
    }
}

/// The subject of a router path (without its query), the inverse of [`path_of`].
pub fn subject_of(node: &str, path: &str) -> String {
    let name = match path {
        "/health" => "health".to_string(),
        "/metrics" => "metrics".to_string(),
        p => p
            .strip_prefix("/api/")
            .unwrap_or(p.trim_start_matches('/'))
            .replace('/', "."),
    };
    format!("{}.{name}", api_subject(node))
}

/// `name` as one subject token: `.`, `*`, `>` and whitespace become `_` (a Kubernetes node
/// name is often a DNS name, `ip-10-0-0-1.ec2.internal`).
pub fn token(name: &str) -> String {
    name.trim()
        .chars()
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// The node name: `node`, or the host name, as one subject token ([`token`]).
pub fn node_name(cfg: &ApiNatsConfig) -> Result<String, String> {
    let name = match &cfg.node {
        Some(n) => n.clone(),
        None => hostname()
            .ok_or("`api.nats.node` is not set and the host name cannot be read: set `node`")?,
    };
    let t = token(&name);
    if t.is_empty() {
        return Err(
            "`api.nats.node` is empty: set the agent's name (e.g. \"${NODE_NAME}\")".into(),
        );
    }
    Ok(t)
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer we own.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let h = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!h.is_empty()).then_some(h)
}

/// Checks `[api.nats]` as serving it does (the node name, the authentication options, the
/// TLS files): for `weir validate`.
pub fn check(cfg: &ApiNatsConfig) -> Result<(), String> {
    node_name(cfg)?;
    let a = &cfg.auth;
    let methods = [
        a.user.is_some() || a.password.is_some(),
        a.token.is_some(),
        a.nkey_seed.is_some(),
        a.credentials_file.is_some(),
    ];
    if methods.iter().filter(|m| **m).count() > 1 {
        return Err(
            "`api.nats.auth`: set only one of user/password, token, nkey_seed, credentials_file"
                .into(),
        );
    }
    if let Some(f) = &a.credentials_file {
        std::fs::metadata(f)
            .map_err(|e| format!("`api.nats.auth.credentials_file` {}: {e}", f.display()))?;
    }
    weir_connect::tls::TlsClientConfig::check(cfg.tls.as_ref())
        .map_err(|e| format!("`api.nats`: {e}"))
}

/// Connects to `[api.nats]`'s server (in the background: Weir starts while it is down) and
/// answers requests with `app` until the task is aborted (which aborts the requests under
/// way too).
pub async fn serve(cfg: &ApiNatsConfig, app: Router) -> Result<JoinHandle<()>, String> {
    let node = node_name(cfg)?;
    let name = cfg
        .connection_name
        .clone()
        .unwrap_or_else(|| format!("weir-api-{node}"));
    // Connects, disconnects and client errors are logged (rate-limited) under `api.nats`.
    let metrics = Arc::new(ComponentMetrics::new(
        "api.nats",
        ComponentKind::Source,
        "api_nats",
    ));
    let client = connect(
        NatsConnect {
            url: &cfg.url,
            auth: &cfg.auth,
            tls: cfg.tls.as_ref(),
            name: Some(&name),
            allow_plaintext_credentials: cfg.allow_plaintext_credentials,
        },
        metrics.clone(),
    )
    .await
    .map_err(|e| format!("`api.nats`: {e}"))?;
    let prefix = api_subject(&node);
    let mut sub = client
        .subscribe(format!("{prefix}.>"))
        .await
        .map_err(|e| format!("`api.nats`: cannot subscribe to {prefix}.>: {e}"))?;
    tracing::info!(url = %cfg.url, subjects = %format!("{prefix}.>"), "API served over NATS");
    let keepalive_prefix = keepalive_subject(&node);
    let limit = Arc::new(Semaphore::new(cfg.max_requests.get()));
    Ok(tokio::spawn(async move {
        // Dropped (the task aborted): every request under way is aborted with it.
        let mut running = JoinSet::new();
        loop {
            let msg = tokio::select! {
                m = sub.next() => match m {
                    Some(m) => m,
                    None => break,
                },
                Some(_) = running.join_next(), if !running.is_empty() => continue,
            };
            let Some(reply) = msg.reply.clone() else {
                metrics.error(
                    "no_reply_subject",
                    1,
                    &format_args!("API over NATS: a message on {} without a reply subject (send requests, e.g. `nats request`)", msg.subject),
                );
                continue;
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                metrics.error(
                    "too_many_requests",
                    1,
                    &"API over NATS: `max_requests` requests under way; answered 503",
                );
                let mut h = HeaderMap::new();
                h.insert(STATUS, "503");
                h.insert("Content-Type", "application/json");
                let _ = client
                    .publish_with_headers(
                        reply,
                        h,
                        r#"{"error":"too many requests under way (api.nats.max_requests)"}"#.into(),
                    )
                    .await;
                continue;
            };
            let (client, app, keepalive, name) = (
                client.clone(),
                app.clone(),
                keepalive_prefix.clone(),
                msg.subject
                    .as_str()
                    .strip_prefix(&prefix)
                    .map(|n| n.trim_start_matches('.').to_string())
                    .unwrap_or_default(),
            );
            running.spawn(async move {
                let _permit = permit;
                if let Err(e) = answer(&client, app, &keepalive, &name, msg, reply).await {
                    tracing::warn!("API over NATS: answering {name}: {e}");
                }
            });
        }
    }))
}

/// The HTTP request a NATS request stands for.
fn request(name: &str, msg: &Message) -> Result<Request<Body>, String> {
    let h = msg.headers.as_ref();
    let get = |k: &str| h.and_then(|h| h.get(k)).map(|v| v.as_str().to_string());
    let method = match get(METHOD) {
        Some(m) => Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("bad {METHOD} {m:?}"))?,
        None if msg.payload.is_empty() => Method::GET,
        None => Method::POST,
    };
    let mut uri = path_of(name);
    if let Some(q) = get(QUERY).filter(|q| !q.is_empty()) {
        uri.push('?');
        uri.push_str(q.trim_start_matches('?'));
    }
    let mut b = Request::builder().method(method).uri(&uri);
    if let Some(h) = h {
        for (k, vs) in h.iter() {
            let k: &str = k.as_ref();
            if k.starts_with("Weir-") {
                continue;
            }
            for v in vs {
                b = b.header(k, v.as_str());
            }
        }
    }
    b.body(Body::from(msg.payload.clone()))
        .map_err(|e| format!("bad request for {uri}: {e}"))
}

async fn answer(
    client: &Client,
    mut app: Router,
    keepalive_prefix: &str,
    name: &str,
    msg: Message,
    reply: async_nats::Subject,
) -> Result<(), String> {
    let send = |headers: HeaderMap, payload: bytes::Bytes| {
        let reply = reply.clone();
        async move {
            client
                .publish_with_headers(reply, headers, payload)
                .await
                .map_err(|e| format!("cannot publish the reply: {e}"))
        }
    };
    let req = match request(name, &msg) {
        Ok(r) => r,
        Err(e) => {
            let mut h = HeaderMap::new();
            h.insert(STATUS, "400");
            h.insert("Content-Type", "application/json");
            let body = serde_json::json!({ "error": e }).to_string();
            return send(h, body.into()).await;
        }
    };
    let _ = poll_fn(|cx| Service::<Request<Body>>::poll_ready(&mut app, cx)).await;
    let resp = match app.call(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let status = resp.status().as_u16().to_string();
    let content_type = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let headers = |stream: Option<&str>| {
        let mut h = HeaderMap::new();
        h.insert(STATUS, status.as_str());
        if let Some(c) = &content_type {
            h.insert("Content-Type", c.as_str());
        }
        if let Some(s) = stream {
            h.insert(STREAM, s);
        }
        h
    };
    let max = match client.server_info().max_payload {
        0 => 1024 * 1024,
        n => n,
    };
    let chunk = max.saturating_sub(HEADER_ROOM).max(HEADER_ROOM);
    let body = resp.into_body();
    // A whole body that fits: one message, as `nats request` expects.
    if body
        .size_hint()
        .exact()
        .is_some_and(|n| n as usize <= chunk)
    {
        let bytes = axum::body::to_bytes(body, chunk)
            .await
            .map_err(|e| format!("reading the answer: {e}"))?;
        send(headers(None), bytes).await?;
        return client.flush().await.map_err(|e| e.to_string());
    }
    // Several messages, while the requester keeps them alive.
    // In the agent's own subjects (not an inbox), so that its NATS permissions can be narrow.
    let keepalive = format!(
        "{keepalive_prefix}.{}",
        client.new_inbox().trim_start_matches("_INBOX.")
    );
    let mut alive = client
        .subscribe(keepalive.clone())
        .await
        .map_err(|e| format!("cannot subscribe to the keep-alive subject: {e}"))?;
    let mut first = headers(Some("more"));
    first.insert(KEEPALIVE, keepalive.as_str());
    send(first, bytes::Bytes::new()).await?;
    client.flush().await.map_err(|e| e.to_string())?;
    let mut data = body.into_data_stream();
    let timeout = Duration::from_secs(KEEPALIVE_TIMEOUT_SECS);
    let mut deadline = tokio::time::Instant::now() + timeout;
    let ended = loop {
        tokio::select! {
            next = data.next() => match next {
                Some(Ok(bytes)) => {
                    for part in bytes.chunks(chunk) {
                        send(headers(Some("more")), bytes.slice_ref(part)).await?;
                    }
                }
                Some(Err(e)) => break format!("the answer failed: {e}"),
                None => break String::new(),
            },
            k = alive.next() => match k {
                Some(m) if m.payload.as_ref() == b"stop" => break "stopped by the requester".into(),
                Some(_) => deadline = tokio::time::Instant::now() + timeout,
                None => break "keep-alive subscription closed".into(),
            },
            _ = tokio::time::sleep_until(deadline) => {
                break format!("no keep-alive for {KEEPALIVE_TIMEOUT_SECS}s");
            }
        }
    };
    if !ended.is_empty() {
        tracing::debug!("API over NATS: {name}: stream ended: {ended}");
    }
    drop(data);
    let _ = alive.unsubscribe().await;
    send(headers(Some("end")), bytes::Bytes::new()).await?;
    client.flush().await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_paths() {
        assert_eq!(path_of("health"), "/health");
        assert_eq!(path_of("metrics"), "/metrics");
        assert_eq!(path_of("graph"), "/api/graph");
        assert_eq!(path_of("a.b"), "/api/a/b");
        for p in [
            "/health",
            "/metrics",
            "/api/graph",
            "/api/tap",
            "/api/reload",
        ] {
            let s = subject_of("n1", p);
            assert!(s.starts_with("weir.n1.api."), "{s}");
            assert_eq!(path_of(&s["weir.n1.api.".len()..]), p);
        }
        assert_eq!(token("node-1_a"), "node-1_a");
        assert_eq!(token("a.b *>c"), "a_b___c");
    }

    #[test]
    fn node_names() {
        let mut cfg: ApiNatsConfig =
            serde_json::from_value(serde_json::json!({"url": "nats://127.0.0.1:4222"})).unwrap();
        let host = node_name(&cfg).unwrap();
        assert_eq!(token(&host), host);
        // A Kubernetes node name with dots becomes one subject token.
        cfg.node = Some("ip-10-0-0-1.ec2.internal".into());
        assert_eq!(node_name(&cfg).unwrap(), "ip-10-0-0-1_ec2_internal");
        cfg.node = Some(String::new());
        assert!(node_name(&cfg).unwrap_err().contains("is empty"));
        cfg.node = Some("edge-1".into());
        assert_eq!(node_name(&cfg).unwrap(), "edge-1");
    }
}
