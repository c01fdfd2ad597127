//! Weir's HTTP API: `GET /health`, `GET /metrics` (Prometheus text), `GET /api/graph`
//! (components, edges and live rates as JSON), and `GET /api/tap` (`src/api_tap.rs`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::task::JoinHandle;
use weir_pipeline::metrics::{Health, MetricsRegistry};
use weir_pipeline::tap::Taps;
use weir_pipeline::topology::ComponentInfo;

#[derive(Clone)]
struct ApiState {
    registry: Arc<MetricsRegistry>,
    components: Arc<Vec<ComponentInfo>>,
    /// Events per second in and out over the last sampling period, per component.
    rates: Arc<Mutex<HashMap<String, (f64, f64)>>>,
}

/// Binds `addr` and serves the API in the background.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<MetricsRegistry>,
    components: Vec<ComponentInfo>,
    taps: Arc<Taps>,
) -> Result<JoinHandle<()>, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let state = ApiState {
        registry,
        components: Arc::new(components),
        rates: Arc::new(Mutex::new(HashMap::new())),
    };
    let sampler = state.clone();
    let app = Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/api/graph", get(graph))
        .with_state(state)
        .merge(crate::api_tap::routes(taps));
    Ok(tokio::spawn(async move {
        let sample = tokio::spawn(sample_rates(sampler));
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("API server stopped: {e}");
        }
        sample.abort();
    }))
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
    if down.is_empty() {
        (
            StatusCode::OK,
            Json(json!({ "ok": true, "uptime_secs": uptime })),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ok": false, "uptime_secs": uptime, "components": down })),
        )
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
    for c in s.components.iter() {
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
