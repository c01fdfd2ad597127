//! Weir's HTTP API: `GET /health`, `GET /metrics` (Prometheus text), `GET /api/graph`
//! (components, edges and live rates as JSON), `GET /api/tap` (`src/api_tap.rs`), and the
//! web console at `/` (`src/console.rs`), and `POST /api/reload` (reload the configuration
//! files, answered with what changed). The same router is served over NATS with
//! `[api.nats]` (`src/api_nats.rs`).
//!
//! Served by the server stack every listener shares (`weir_connect::server`): HTTPS with
//! `api.tls` (mutual TLS with `tls.ca_file`), a bearer token with `api.auth` (`/health` stays
//! open for probes unless `health_requires_auth`), at most `max_connections` connections,
//! idle and read timeouts, request bodies of at most 64 KiB.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::task::JoinHandle;
use weir_connect::server::{BearerToken, Limits, Protocol, Server, SMALL_REQUEST_BYTES};
use weir_connect::tls::{ServerTls, TlsServerConfig};
use weir_pipeline::config::ApiConfig;
use weir_pipeline::metrics::{Health, MetricsRegistry};
use weir_pipeline::tap::Taps;
use weir_pipeline::topology::ComponentInfo;

/// The running graph, replaced by a reload.
pub type SharedComponents = Arc<RwLock<Vec<ComponentInfo>>>;

/// Where `POST /api/reload` asks `weir run` to reload; the answer comes back on the oneshot
/// as the HTTP status and a JSON body.
pub type ReloadRequests =
    tokio::sync::mpsc::Sender<tokio::sync::oneshot::Sender<(StatusCode, serde_json::Value)>>;

#[derive(Clone)]
struct ApiState {
    registry: Arc<MetricsRegistry>,
    components: SharedComponents,
    reload: Option<ReloadRequests>,
    /// Events per second in and out over the last sampling period, per component.
    rates: Arc<Mutex<HashMap<String, (f64, f64)>>>,
}

/// Checks what `[api]` reads (its TLS files) and its token, as serving it does: for `weir
/// validate`.
pub fn check(api: &ApiConfig) -> Result<(), String> {
    if let Some(n) = &api.nats {
        crate::api_nats::check(n)?;
    }
    if !api.enabled {
        return Ok(());
    }
    BearerToken::from_config(api.auth.as_ref()).map_err(|e| format!("`api`: {e}"))?;
    TlsServerConfig::check(api.tls.as_ref()).map_err(|e| format!("`api`: {e}"))
}

/// Logs what the API refuses (a failed handshake, a missing token, a request over the
/// limits): at most one line per 10 seconds, with the number refused since the last line.
fn refusals() -> weir_connect::server::Report {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let count = AtomicU64::new(0);
    Arc::new(move |kind: &'static str, e: &str| {
        let n = count.fetch_add(1, Ordering::Relaxed) + 1;
        let now = start.elapsed().as_secs() + 10;
        let prev = last.load(Ordering::Relaxed);
        if now >= prev + 10
            && last
                .compare_exchange(prev, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            count.store(0, Ordering::Relaxed);
            tracing::warn!(kind, refused = n, "API: {e}");
        }
    })
}

/// Aborts the tasks it holds when dropped (with the task that holds it).
struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Binds `[api]`'s address (when `enabled`) and connects to `[api.nats]` (when set), and
/// serves the API in the background on both; the HTTP address it listens on, if any.
pub async fn serve(
    api: &ApiConfig,
    registry: Arc<MetricsRegistry>,
    components: SharedComponents,
    reload: Option<ReloadRequests>,
    taps: Arc<Taps>,
    console: crate::console::ConsoleConfig,
) -> Result<(JoinHandle<()>, Option<SocketAddr>), String> {
    let now = components.read().map(|c| c.clone()).unwrap_or_default();
    let console = crate::console::routes(console, now, taps.clone());
    let state = ApiState {
        registry,
        components,
        reload,
        rates: Arc::new(Mutex::new(HashMap::new())),
    };
    let sampler = state.clone();
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/graph", get(graph))
        .route("/api/reload", post(reload_config))
        .with_state(state)
        .merge(crate::api_tap::routes(taps))
        .merge(console);
    let mut tasks = AbortOnDrop(Vec::new());
    if let Some(n) = &api.nats {
        tasks.0.push(crate::api_nats::serve(n, app.clone()).await?);
    }
    let mut bound = None;
    if api.enabled {
        let (task, addr) = serve_http(api, app).await?;
        tasks.0.push(task);
        bound = Some(addr);
    }
    let task = tokio::spawn(async move {
        tasks.0.push(tokio::spawn(sample_rates(sampler)));
        // Stopped by aborting this task (which aborts the servers and closes their
        // connections).
        std::future::pending::<()>().await;
        drop(tasks);
    });
    Ok((task, bound))
}

async fn serve_http(api: &ApiConfig, app: Router) -> Result<(JoinHandle<()>, SocketAddr), String> {
    let addr = api.address;
    let tls = TlsServerConfig::acceptor(api.tls.as_ref(), &[b"http/1.1"])
        .map_err(|e| format!("`api`: {e}"))?;
    let auth = BearerToken::from_config(api.auth.as_ref()).map_err(|e| format!("`api`: {e}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr().unwrap_or(addr);
    let server = Server {
        protocol: Protocol::Http1,
        tls,
        auth,
        open_paths: if api.health_requires_auth {
            Vec::new()
        } else {
            vec!["/health".to_string()]
        },
        limits: Limits {
            max_connections: api.max_connections.get(),
            idle_timeout: api.idle_timeout_secs.duration(),
            request_read_timeout: api.request_read_timeout_secs.duration(),
            max_request_bytes: SMALL_REQUEST_BYTES,
        },
        report: refusals(),
    };
    let task = tokio::spawn(async move {
        // Stopped by aborting this task (which closes its connections).
        let never = weir_pipeline::shutdown::ShutdownToken::new();
        server.serve(listener, app, never).await;
    });
    Ok((task, bound))
}

async fn sample_rates(state: ApiState) {
    let period = Duration::from_secs(1);
    let mut last: HashMap<String, (u64, u64)> = HashMap::new();
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let mut rates = HashMap::new();
        for c in state.registry.components() {
            let now = (c.received_events(), c.sent_events());
            let prev = last.insert(c.id.to_string(), now).unwrap_or(now);
            rates.insert(
                c.id.to_string(),
                (
                    (now.0 - prev.0) as f64 / period.as_secs_f64(),
                    (now.1 - prev.1) as f64 / period.as_secs_f64(),
                ),
            );
        }
        if let Ok(mut r) = state.rates.lock() {
            *r = rates;
        }
    }
}

/// 200 when every component runs; 503 naming the components that failed (restarting, or
/// down for good), for a liveness or readiness probe.
async fn health(State(s): State<ApiState>) -> impl IntoResponse {
    let mut down = Vec::new();
    for c in s.registry.components() {
        let (state, error) = match c.health() {
            Health::Running => continue,
            Health::Restarting { error } => ("restarting", error),
            Health::Failed { error } => ("failed", error),
        };
        down.push(json!({
            "component": &*c.id,
            "kind": c.kind.as_str(),
            "state": state,
            "error": error,
            "restarts": c.restarts(),
        }));
    }
    let uptime = s.registry.uptime().as_secs();
    // The last reload: a failed one leaves the pipeline running (200) but says why here.
    let reload = s.registry.reloads().last.map(
        |(outcome, error, at)| json!({ "outcome": outcome, "error": error, "at_unix_secs": at }),
    );
    if down.is_empty() {
        (
            StatusCode::OK,
            Json(json!({ "ok": true, "uptime_secs": uptime, "last_reload": reload })),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({ "ok": false, "uptime_secs": uptime, "components": down, "last_reload": reload }),
            ),
        )
    }
}

/// `POST /api/reload`: reloads the configuration files `weir run` was started with.
async fn reload_config(State(s): State<ApiState>) -> impl IntoResponse {
    let Some(tx) = s.reload else {
        return (
            StatusCode::NOT_IMPLEMENTED,
            Json(json!({ "error": "this weir cannot reload (it runs the embedded quickstart)" })),
        );
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if tx.send(reply).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "the pipeline is stopping" })),
        );
    }
    match answer.await {
        Ok((status, body)) => (status, Json(body)),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "the pipeline is stopping" })),
        ),
    }
}

async fn metrics(State(s): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.registry.render_prometheus(),
    )
}

async fn graph(State(s): State<ApiState>) -> impl IntoResponse {
    let rates = s.rates.lock().map(|r| r.clone()).unwrap_or_default();
    let mut components = Vec::new();
    let mut edges = Vec::new();
    let list = s.components.read().map(|c| c.clone()).unwrap_or_default();
    for c in list.iter() {
        let m = s.registry.get(&c.id);
        let (rin, rout) = rates.get(&c.id).copied().unwrap_or((0.0, 0.0));
        components.push(json!({
            "id": c.id,
            "kind": c.kind,
            "type": c.type_name,
            "received_events": m.as_ref().map(|m| m.received_events()),
            "sent_events": m.as_ref().map(|m| m.sent_events()),
            "discarded_events": m.as_ref().map(|m| m.discarded_events()),
            "errors": m.as_ref().map(|m| m.errors()),
            "errors_total": m.as_ref().map(|m| m.errors_total()),
            "received_bytes": m.as_ref().map(|m| m.received_bytes()),
            "sent_bytes": m.as_ref().map(|m| m.sent_bytes()),
            "latency": m.as_ref().map(|m| m.latency_totals()).map(|(n, s)| json!({"batches": n, "sum_secs": s})),
            "buffer": m.as_ref().and_then(|m| m.buffer_fill()).map(|(e, c)| json!({"events": e, "max_events": c})),
            "received_events_per_sec": rin,
            "sent_events_per_sec": rout,
        }));
        for i in &c.inputs {
            let (from, output) = match i.split_once('.') {
                Some((f, o)) => (f, Some(o)),
                None => (i.as_str(), None),
            };
            edges.push(json!({ "from": from, "output": output, "to": c.id }));
        }
    }
    Json(json!({ "components": components, "edges": edges }))
}
