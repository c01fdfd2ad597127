//! `otlp`: OpenTelemetry traces, metrics and logs over OTLP/gRPC and OTLP/HTTP.
//!
//! ```toml
//! [sources.otel]
//! type = "otlp"
//! grpc.address = "127.0.0.1:4317"   # the default: loopback only
//! http.address = "127.0.0.1:4318"
//! ```
//!
//! gRPC serves `opentelemetry.proto.collector.{trace,metrics,logs}.v1.*Service/Export`
//! (tonic's generated services of the `opentelemetry-proto` crate, served by the shared
//! server stack, `weir_connect::server`, which inflates gzip'd requests within
//! `max_request_bytes`). HTTP serves `POST /v1/traces`, `/v1/metrics` and `/v1/logs` with
//! `application/x-protobuf` or `application/json` bodies (gzip accepted, inflated within
//! `max_request_bytes`), answering in the request's encoding.
//!
//! Both listeners have what every Weir server has (`weir_connect::server`): TLS (`grpc.tls`,
//! `http.tls`, with mutual TLS when `ca_file` is set), bearer-token authentication (`auth`),
//! a connection limit (`max_connections`, per listener), idle and read timeouts, and request
//! size limits. What they refuse is counted in the component's errors (`tls`,
//! `unauthenticated`, `too_large`, `invalid_request`, `timeout`).
//!
//! Each request becomes one batch ([`convert`]), sent to the named output of its signal
//! (`traces`, `metrics`, `logs`). The export call answers only after the batch is in the
//! pipeline's buffers — and, with `acknowledgements = true`, after every sink delivered it.
//! When the pipeline cannot take a request within `accept_timeout_secs` (backpressure), the
//! answer is `RESOURCE_EXHAUSTED` with a `RetryInfo` / HTTP 429 with `Retry-After`, and the
//! client retries; an invalid request (a trace id that is not 16 bytes, a body that does not
//! decode) is counted and answered `INVALID_ARGUMENT` / HTTP 400 naming the problem.

pub mod convert;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde::{Deserialize, Serialize};
use weir_connect::server::{gunzip_bounded, BearerToken, InflateError, Limits, Protocol, Server};
use weir_connect::tls::{ServerTls, TlsServerConfig};
use weir_pipeline::component::{
    Output, Resource, Source, SourceConfig, SourceContext, SourceSender,
};
use weir_pipeline::config::{
    default_idle_timeout, default_request_read_timeout, Count, Secs, ServerAuthConfig,
};
use weir_pipeline::event::{Event, EventBatch};
use weir_pipeline::finalization::{BatchNotifier, EventStatus};
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

/// One listener.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// Serve this protocol. Default: true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Address to listen on. Loopback only by default: set `0.0.0.0:4317` to accept other
    /// hosts (with `tls` and `auth`). Default: `127.0.0.1:4317` (gRPC), `127.0.0.1:4318`
    /// (HTTP).
    #[serde(default)]
    pub address: Option<SocketAddr>,
    /// Serve TLS: `crt_file` and `key_file` (required), `ca_file` to require client
    /// certificates signed by it (mutual TLS); the `tls` table shared by every server, see
    /// docs/configuration.md. Default: none (plaintext).
    #[serde(default)]
    pub tls: Option<TlsServerConfig>,
}

fn default_true() -> bool {
    true
}
fn default_accept_timeout() -> Secs {
    Secs::from_secs(5)
}
fn default_max_request() -> usize {
    16 * 1024 * 1024
}
fn default_max_connections() -> Count {
    Count::of(1024)
}

/// `type = "otlp"`: see the module docs.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpSourceConfig {
    /// OTLP/gRPC. Default: enabled on `127.0.0.1:4317`.
    #[serde(default = "enabled")]
    pub grpc: ListenConfig,
    /// OTLP/HTTP. Default: enabled on `127.0.0.1:4318`.
    #[serde(default = "enabled")]
    pub http: ListenConfig,
    /// How long a request may wait for room in the pipeline before it is refused with
    /// `RESOURCE_EXHAUSTED` / HTTP 429, in seconds. Default: 5.
    #[serde(default = "default_accept_timeout")]
    pub accept_timeout_secs: Secs,
    /// Largest request accepted, in bytes: an HTTP body, decompressed too, and a gRPC
    /// message, decompressed too. A gzip'd request that inflates beyond it is refused
    /// (HTTP 413, gRPC `RESOURCE_EXHAUSTED`) without being inflated further. Default:
    /// 16777216.
    #[serde(default = "default_max_request")]
    pub max_request_bytes: usize,
    /// Require a token on both listeners: `auth.strategy = "bearer"` and `auth.token`.
    /// Requests without it are refused (HTTP 401, gRPC `UNAUTHENTICATED`). Default: none (no
    /// authentication).
    #[serde(default)]
    pub auth: Option<ServerAuthConfig>,
    /// The most connections each listener serves at once; more wait (in the kernel's accept
    /// queue) until one closes. Default: 1024.
    #[serde(default = "default_max_connections")]
    pub max_connections: Count,
    /// A connection with no request in progress is closed after this many seconds without
    /// a new request (HTTP/1.1: also the time allowed to send a request's headers; gRPC: a
    /// graceful GOAWAY). Default: 60.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: Secs,
    /// A request's body must arrive whole within this many seconds of its headers.
    /// Default: 30.
    #[serde(default = "default_request_read_timeout")]
    pub request_read_timeout_secs: Secs,
}

fn enabled() -> ListenConfig {
    ListenConfig {
        enabled: true,
        address: None,
        tls: None,
    }
}

impl OtlpSourceConfig {
    fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc
            .enabled
            .then(|| self.grpc.address.unwrap_or(([127, 0, 0, 1], 4317).into()))
    }
    fn http_addr(&self) -> Option<SocketAddr> {
        self.http
            .enabled
            .then(|| self.http.address.unwrap_or(([127, 0, 0, 1], 4318).into()))
    }
}

/// The three signals and their outputs.
#[derive(Debug, Clone, Copy)]
enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    fn output(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }
}

#[async_trait]
impl SourceConfig for OtlpSourceConfig {
    async fn build(&self, cx: SourceContext) -> Result<Source, BoxError> {
        let grpc_addr = self.grpc_addr();
        let http_addr = self.http_addr();
        if grpc_addr.is_none() && http_addr.is_none() {
            return Err("both `grpc` and `http` are disabled; enable at least one".into());
        }
        let auth = BearerToken::from_config(self.auth.as_ref())?;
        let grpc_tls = match grpc_addr {
            Some(_) => TlsServerConfig::acceptor(self.grpc.tls.as_ref(), &[b"h2"])
                .map_err(|e| format!("`grpc`: {e}"))?,
            None => None,
        };
        let http_tls = match http_addr {
            Some(_) => TlsServerConfig::acceptor(self.http.tls.as_ref(), &[b"http/1.1"])
                .map_err(|e| format!("`http`: {e}"))?,
            None => None,
        };
        let grpc_listener = match grpc_addr {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(|e| format!("`grpc.address` {a}: {e}"))?,
            ),
            None => None,
        };
        let http_listener = match http_addr {
            Some(a) => Some(
                tokio::net::TcpListener::bind(a)
                    .await
                    .map_err(|e| format!("`http.address` {a}: {e}"))?,
            ),
            None => None,
        };
        let ingest = Arc::new(Ingest {
            out: tokio::sync::Mutex::new(Some(cx.out)),
            acknowledgements: cx.acknowledgements,
            accept_timeout: self.accept_timeout_secs.duration(),
            metrics: cx.metrics.clone(),
            source_id: Some(cx.id.clone()),
            max_request: self.max_request_bytes,
        });
        let limits = Limits {
            max_connections: self.max_connections.get(),
            idle_timeout: self.idle_timeout_secs.duration(),
            request_read_timeout: self.request_read_timeout_secs.duration(),
            max_request_bytes: self.max_request_bytes,
        };
        let server = |protocol, tls| Server {
            protocol,
            tls,
            auth: auth.clone(),
            open_paths: Vec::new(),
            limits,
            report: refusals(&ingest.metrics),
        };
        let grpc_server = server(Protocol::Grpc, grpc_tls);
        let http_server = server(Protocol::Http1, http_tls);
        let shutdown = cx.shutdown.clone();
        let id = cx.id.clone();
        Ok(Box::pin(async move {
            let mut tasks = tokio::task::JoinSet::new();
            if let Some(l) = grpc_listener {
                let addr = l.local_addr()?;
                tracing::info!(component = %id, %addr, "OTLP/gRPC listening");
                let max = ingest.max_request;
                let g = Grpc(ingest.clone());
                // No `accept_compressed`: the server stack inflates gzip'd messages within
                // `max_request_bytes` (tonic would inflate them without a limit).
                let routes = tonic::service::Routes::new(
                    TraceServiceServer::new(g.clone()).max_decoding_message_size(max),
                )
                .add_service(MetricsServiceServer::new(g.clone()).max_decoding_message_size(max))
                .add_service(LogsServiceServer::new(g).max_decoding_message_size(max))
                .prepare();
                tasks.spawn(grpc_server.serve(l, routes, shutdown.clone()));
            }
            if let Some(l) = http_listener {
                let addr = l.local_addr()?;
                tracing::info!(component = %id, %addr, "OTLP/HTTP listening");
                let app = axum::Router::new()
                    .route("/v1/traces", axum::routing::post(http_traces))
                    .route("/v1/metrics", axum::routing::post(http_metrics))
                    .route("/v1/logs", axum::routing::post(http_logs))
                    .layer(axum::extract::DefaultBodyLimit::max(ingest.max_request))
                    .with_state(ingest.clone());
                tasks.spawn(http_server.serve(l, app, shutdown.clone()));
            }
            let mut result: Result<(), BoxError> = Ok(());
            while let Some(r) = tasks.join_next().await {
                if let Err(e) = r {
                    shutdown.cancel();
                    result = Err(format!("OTLP server task: {e}").into());
                }
            }
            // Release the outputs so downstream drains.
            ingest.out.lock().await.take();
            result
        }))
    }

    fn outputs(&self) -> Vec<Output> {
        vec![
            Output::named("traces", DataType::TRACE),
            Output::named("metrics", DataType::METRIC),
            Output::named("logs", DataType::LOG),
        ]
    }

    fn resources(&self) -> Vec<Resource> {
        [self.grpc_addr(), self.http_addr()]
            .into_iter()
            .flatten()
            .map(Resource::Tcp)
            .collect()
    }

    fn can_acknowledge(&self) -> bool {
        true
    }

    fn check_environment(&self) -> Result<(), BoxError> {
        BearerToken::from_config(self.auth.as_ref())?;
        if self.grpc.enabled {
            TlsServerConfig::check(self.grpc.tls.as_ref()).map_err(|e| format!("`grpc`: {e}"))?;
        }
        if self.http.enabled {
            TlsServerConfig::check(self.http.tls.as_ref()).map_err(|e| format!("`http`: {e}"))?;
        }
        Ok(())
    }
}

/// Counts and logs what the listeners refuse (a failed TLS handshake, a missing token, a
/// request over the limits), by kind.
fn refusals(metrics: &Arc<ComponentMetrics>) -> weir_connect::server::Report {
    let m = Arc::clone(metrics);
    Arc::new(move |kind: &'static str, e: &str| m.error(kind, 1, &e))
}

/// Shared by the gRPC and HTTP handlers: turns requests into batches and hands them over.
struct Ingest {
    out: tokio::sync::Mutex<Option<SourceSender>>,
    acknowledgements: bool,
    accept_timeout: Duration,
    metrics: Arc<ComponentMetrics>,
    source_id: Option<Arc<str>>,
    max_request: usize,
}

/// How long a client is asked to wait after a refusal for backpressure (gRPC `RetryInfo`,
/// HTTP `Retry-After`), in seconds.
const BUSY_RETRY_SECS: i64 = 1;

/// Why a request was not accepted.
#[derive(Debug)]
enum Refusal {
    Invalid(String),
    Busy,
    Closed,
    NotDelivered(EventStatus),
}

impl Refusal {
    fn status(&self) -> tonic::Status {
        match self {
            Refusal::Invalid(m) => tonic::Status::invalid_argument(m.clone()),
            Refusal::Busy => {
                let msg = "the pipeline is full (backpressure); retry later";
                // The gRPC twin of HTTP's `Retry-After: 1`: OpenTelemetry exporters wait
                // this long before sending again.
                tonic::Status::with_details(
                    tonic::Code::ResourceExhausted,
                    msg,
                    weir_connect::grpc_status::encode_retry_info(
                        tonic::Code::ResourceExhausted as i32,
                        msg,
                        BUSY_RETRY_SECS,
                    )
                    .into(),
                )
            }
            Refusal::Closed => tonic::Status::unavailable("the pipeline is shutting down"),
            Refusal::NotDelivered(EventStatus::Rejected) => {
                tonic::Status::invalid_argument("a destination rejected the data")
            }
            Refusal::NotDelivered(_) => {
                tonic::Status::unavailable("the data could not be delivered; retry later")
            }
        }
    }

    fn http(&self) -> (StatusCode, String) {
        let s = self.status();
        let code = match self {
            Refusal::Invalid(_) | Refusal::NotDelivered(EventStatus::Rejected) => {
                StatusCode::BAD_REQUEST
            }
            Refusal::Busy => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Closed | Refusal::NotDelivered(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        (code, s.message().to_string())
    }
}

impl Ingest {
    fn invalid(&self, signal: Signal, transport: &str, msg: String) -> Refusal {
        let m = format!(
            "invalid OTLP {} request ({transport}): {msg}",
            signal.output()
        );
        self.metrics.error("invalid_request", 1, &m);
        Refusal::Invalid(m)
    }

    async fn accept(
        &self,
        signal: Signal,
        events: Vec<Event>,
        bytes: usize,
    ) -> Result<(), Refusal> {
        self.metrics.add_received(events.len() as u64, bytes as u64);
        if events.is_empty() {
            return Ok(());
        }
        let n = events.len() as u64;
        let mut batch = EventBatch::new(events);
        let wait = if self.acknowledgements {
            let (notifier, rx) = BatchNotifier::new_with_receiver();
            batch.attach_notifier(&notifier);
            Some(rx)
        } else {
            None
        };
        // Waiting for the lock and for room in the buffers share one deadline. Giving up on
        // the send is safe: a buffer takes a batch whole or not at all (with several
        // consumers, those already served keep their copy; the client's retry may duplicate).
        let deadline = tokio::time::Instant::now() + self.accept_timeout;
        let busy = || {
            self.metrics.error(
                "backpressure",
                n,
                &format_args!(
                    "pipeline full: refused an OTLP {} request of {n} events (RESOURCE_EXHAUSTED / 429; the client retries)",
                    signal.output()
                ),
            );
            Refusal::Busy
        };
        let mut guard = match tokio::time::timeout_at(deadline, self.out.lock()).await {
            Ok(g) => g,
            Err(_) => return Err(busy()),
        };
        let Some(out) = guard.as_mut() else {
            return Err(Refusal::Closed);
        };
        match tokio::time::timeout_at(deadline, out.send_to(signal.output(), batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Refusal::Closed),
            Err(_) => return Err(busy()),
        }
        drop(guard);
        if let Some(rx) = wait {
            match rx.wait().await {
                EventStatus::Delivered => {}
                s => return Err(Refusal::NotDelivered(s)),
            }
        }
        Ok(())
    }
}

#[derive(Clone)]
struct Grpc(Arc<Ingest>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let req = request.into_inner();
        let bytes = req.encoded_len();
        let events = convert::traces(req, &self.0.source_id).map_err(|e| {
            self.0
                .invalid(Signal::Traces, "gRPC", e.to_string())
                .status()
        })?;
        self.0
            .accept(Signal::Traces, events, bytes)
            .await
            .map_err(|r| r.status())?;
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let req = request.into_inner();
        let bytes = req.encoded_len();
        let events = convert::metrics(req, &self.0.source_id);
        self.0
            .accept(Signal::Metrics, events, bytes)
            .await
            .map_err(|r| r.status())?;
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let req = request.into_inner();
        let bytes = req.encoded_len();
        let events = convert::logs(req, &self.0.source_id);
        self.0
            .accept(Signal::Logs, events, bytes)
            .await
            .map_err(|r| r.status())?;
        Ok(tonic::Response::new(ExportLogsServiceResponse {
            partial_success: None,
        }))
    }
}

/// The body encoding of an OTLP/HTTP request (and its answer).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

/// Checks the content type and decompresses the body.
fn http_body(
    ingest: &Ingest,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(Encoding, Vec<u8>), (StatusCode, String)> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let enc = match ct.split(';').next().unwrap_or("").trim() {
        "application/x-protobuf" | "application/protobuf" => Encoding::Protobuf,
        "application/json" => Encoding::Json,
        other => {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content type `{other}`: use application/x-protobuf or application/json"),
            ))
        }
    };
    let ce = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    let data = match ce {
        "identity" | "" => body.to_vec(),
        "gzip" => gunzip_bounded(&body, ingest.max_request).map_err(|e| match e {
            InflateError::TooLarge(max) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the gzip'd body decompresses to more than {max} bytes (`max_request_bytes`)"
                ),
            ),
            InflateError::Invalid(e) => (StatusCode::BAD_REQUEST, format!("gzip body: {e}")),
        })?,
        other => {
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("content encoding `{other}`: use gzip or none"),
            ))
        }
    };
    Ok((enc, data))
}

fn decode<T: Message + Default + serde::de::DeserializeOwned>(
    enc: Encoding,
    data: &[u8],
) -> Result<T, String> {
    match enc {
        Encoding::Protobuf => T::decode(data).map_err(|e| format!("protobuf: {e}")),
        Encoding::Json => serde_json::from_slice(data).map_err(|e| format!("JSON: {e}")),
    }
}

fn respond<T: Message + Serialize>(enc: Encoding, msg: &T) -> Response {
    match enc {
        Encoding::Protobuf => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            msg.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec()),
        )
            .into_response(),
    }
}

fn refuse((code, msg): (StatusCode, String)) -> Response {
    let mut r = (code, msg).into_response();
    if code == StatusCode::TOO_MANY_REQUESTS || code == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut().insert(
            header::RETRY_AFTER,
            header::HeaderValue::from(BUSY_RETRY_SECS),
        );
    }
    r
}

async fn http_signal<T, R>(
    ingest: Arc<Ingest>,
    headers: HeaderMap,
    body: Bytes,
    signal: Signal,
    convert: impl FnOnce(T, &Option<Arc<str>>) -> Result<Vec<Event>, String>,
    response: R,
) -> Response
where
    T: Message + Default + serde::de::DeserializeOwned,
    R: Message + Serialize,
{
    let (enc, data) = match http_body(&ingest, &headers, body) {
        Ok(x) => x,
        Err((code, msg)) if code == StatusCode::PAYLOAD_TOO_LARGE => {
            let m = format!("OTLP {} request (HTTP) refused: {msg}", signal.output());
            ingest.metrics.error("too_large", 1, &m);
            return refuse((code, m));
        }
        Err((code, msg)) => {
            let r = ingest.invalid(signal, "HTTP", msg);
            let (_, m) = r.http();
            return refuse((code, m));
        }
    };
    let req: T = match decode(enc, &data) {
        Ok(r) => r,
        Err(e) => {
            let r = ingest.invalid(signal, "HTTP", e);
            return refuse(r.http());
        }
    };
    let events = match convert(req, &ingest.source_id) {
        Ok(e) => e,
        Err(e) => {
            let r = ingest.invalid(signal, "HTTP", e);
            return refuse(r.http());
        }
    };
    match ingest.accept(signal, events, data.len()).await {
        Ok(()) => respond(enc, &response),
        Err(r) => refuse(r.http()),
    }
}

async fn http_traces(State(i): State<Arc<Ingest>>, headers: HeaderMap, body: Bytes) -> Response {
    http_signal(
        i,
        headers,
        body,
        Signal::Traces,
        |r, s| convert::traces(r, s).map_err(|e| e.to_string()),
        ExportTraceServiceResponse {
            partial_success: None,
        },
    )
    .await
}

async fn http_metrics(State(i): State<Arc<Ingest>>, headers: HeaderMap, body: Bytes) -> Response {
    http_signal(
        i,
        headers,
        body,
        Signal::Metrics,
        |r, s| Ok(convert::metrics(r, s)),
        ExportMetricsServiceResponse {
            partial_success: None,
        },
    )
    .await
}

async fn http_logs(State(i): State<Arc<Ingest>>, headers: HeaderMap, body: Bytes) -> Response {
    http_signal(
        i,
        headers,
        body,
        Signal::Logs,
        |r, s| Ok(convert::logs(r, s)),
        ExportLogsServiceResponse {
            partial_success: None,
        },
    )
    .await
}
