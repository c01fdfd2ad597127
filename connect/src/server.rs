//! The one server stack of Weir's listeners: the `otlp` source (gRPC and HTTP), the
//! `prometheus_exporter` sink and the API serve their requests through [`Server`], so that
//! every listener has the same defences, written once:
//!
//! - **TLS** (the server `tls` table, [`crate::tls`]), with mutual TLS when `ca_file` is set;
//!   handshakes run in the connection's task, bounded by [`HANDSHAKE_TIMEOUT`].
//! - **Bearer-token authentication** (`auth.strategy = "bearer"`, [`BearerToken`]): a request
//!   without the token is answered 401 with `WWW-Authenticate: Bearer` (gRPC:
//!   `UNAUTHENTICATED`), before its body is read. The token is compared in constant time.
//! - **A connection limit** (`max_connections`): a connection is accepted only when fewer are
//!   open; the next ones wait in the kernel's accept queue until one closes.
//! - **Timeouts**: a connection with no request in progress is closed after `idle_timeout`
//!   without a new one (HTTP/1.1: also the time allowed to send a request's headers); a
//!   request's body must arrive within `request_read_timeout` of its headers.
//! - **Request-size limits**: request headers at most 64 KiB; a body at most
//!   `max_request_bytes` (refused early when its `Content-Length` says more).
//! - **Bounded gzip for gRPC**: a request with `grpc-encoding: gzip` is inflated here, each
//!   message reading at most `max_request_bytes` + 1 bytes out of the decoder, and handed on
//!   uncompressed. A gzip bomb is refused with `RESOURCE_EXHAUSTED` without inflating it. (tonic
//!   0.13 and 0.14 check their size limit against the compressed message only and then
//!   inflate without a limit, so the servers do not use tonic's `accept_compressed`.)
//!
//! What a server refuses is told to its owner ([`Report`]) with a kind (`tls`,
//! `unauthenticated`, `too_large`, `invalid_request`, `timeout`), which components count in
//! their error metrics.

use std::convert::Infallible;
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use weir_pipeline::config::{ServerAuthConfig, ServerAuthStrategy};
use weir_pipeline::shutdown::ShutdownToken;

pub use crate::tls::HANDSHAKE_TIMEOUT;

/// The error type of request and response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request (and response) body of a served service: limited in size and in time. (A
/// type of its own, with no lifetime in it, so that futures holding it are plainly `Send`.)
pub struct ServerBody(UnsyncBoxBody<Bytes, BoxError>);

impl ServerBody {
    fn new<B>(b: B) -> Self
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Self(b.map_err(Into::into).boxed_unsync())
    }
}

impl Body for ServerBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.0).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0.size_hint()
    }
}

/// The largest request head (request line and headers) accepted, in bytes.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// The largest request body of the servers that only answer `GET`s (the API,
/// `prometheus_exporter`), in bytes.
pub const SMALL_REQUEST_BYTES: usize = 64 * 1024;

/// What a server tells its owner about a refused connection or request: a kind (`tls`,
/// `unauthenticated`, `too_large`, `invalid_request`, `timeout`) and a message.
pub type Report = Arc<dyn Fn(&'static str, &str) + Send + Sync>;

/// The protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 (OTLP/HTTP, the API, the Prometheus exporter).
    Http1,
    /// gRPC over HTTP/2 (OTLP/gRPC), with gzip'd requests inflated within the limit.
    Grpc,
}

/// The limits of a listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// How long a connection may stay open with no request in progress.
    pub idle_timeout: Duration,
    /// How long a request's body may take to arrive, from its headers.
    pub request_read_timeout: Duration,
    /// The largest request body (gRPC: the largest message, after decompression), in bytes.
    pub max_request_bytes: usize,
}

/// `auth.strategy = "bearer"`: the token requests must carry.
#[derive(Clone)]
pub struct BearerToken(Arc<[u8]>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl BearerToken {
    /// The token of an `auth` table (checked: long enough, printable).
    pub fn new(auth: &ServerAuthConfig) -> Result<Self, String> {
        auth.check()?;
        match auth.strategy {
            ServerAuthStrategy::Bearer => Ok(Self(auth.token.expose().as_bytes().into())),
        }
    }

    /// The token of an optional `auth` table.
    pub fn from_config(auth: Option<&ServerAuthConfig>) -> Result<Option<Self>, String> {
        auth.map(Self::new).transpose()
    }

    /// Whether `headers` carry `Authorization: Bearer <the token>` (the scheme in any case).
    /// The token is compared in constant time (`subtle`): how long the comparison takes
    /// tells nothing about how much of a guess was right (only whether its length was).
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(v) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let v = v.as_bytes();
        let Some((scheme, rest)) = v.split_at_checked(6) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(b"Bearer") || rest.first() != Some(&b' ') {
            return false;
        }
        let given = rest.trim_ascii();
        subtle::ConstantTimeEq::ct_eq(given, &self.0[..]).into()
    }
}

/// A listener's settings, and what it serves with.
pub struct Server {
    /// The protocol spoken.
    pub protocol: Protocol,
    /// TLS (from [`crate::tls::ServerTls::acceptor`]); `None` for plain text.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The token requests must carry; `None`: no authentication.
    pub auth: Option<BearerToken>,
    /// Paths served without the token (the API's `/health`, for probes).
    pub open_paths: Vec<String>,
    /// The limits.
    pub limits: Limits,
    /// Told about every refused connection and request.
    pub report: Report,
}

/// A service answering each request with a function, for servers without a router.
#[derive(Clone)]
pub struct ServiceFn<F>(F);

/// A [`ServiceFn`]: `f` answers each request at once.
pub fn service_fn<F, B>(f: F) -> ServiceFn<F>
where
    F: FnMut(Request<ServerBody>) -> Response<B>,
{
    ServiceFn(f)
}

impl<F, B> tower_service::Service<Request<ServerBody>> for ServiceFn<F>
where
    F: FnMut(Request<ServerBody>) -> Response<B>,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<B>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ServerBody>) -> Self::Future {
        std::future::ready(Ok((self.0)(req)))
    }
}

/// What a connection task shares with its requests: when it last received a byte and how
/// many of its requests are in progress.
struct ConnState {
    start: Instant,
    last_ms: AtomicU64,
    in_progress: AtomicUsize,
}

impl ConnState {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_progress: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last_activity(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Returns when the connection has been idle (no request in progress, nothing received)
    /// for `idle`.
    async fn idle(&self, idle: Duration) {
        loop {
            let due = self.last_activity() + idle;
            tokio::time::sleep_until(due.into()).await;
            if self.in_progress.load(Ordering::Relaxed) == 0
                && self.last_activity() + idle <= Instant::now()
            {
                return;
            }
            if self.in_progress.load(Ordering::Relaxed) > 0 {
                // A request is in progress: look again later (its end counts as activity).
                tokio::time::sleep(idle).await;
            }
        }
    }
}

/// A request in progress, for the idle timer.
struct InProgress(Arc<ConnState>);

impl InProgress {
    fn new(state: &Arc<ConnState>) -> Self {
        state.in_progress.fetch_add(1, Ordering::Relaxed);
        state.touch();
        Self(Arc::clone(state))
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_progress.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A connection, plain or TLS, that notes when it receives bytes.
struct Tracked {
    stream: Stream,
    state: Arc<ConnState>,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why a request body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the request body is over the limit of {0} bytes")]
    TooLarge(usize),
    #[error("the request body did not arrive within {0:?} (`request_read_timeout_secs`)")]
    Timeout(Duration),
}

/// A request body limited in size and in time.
struct LimitedBody {
    inner: Incoming,
    remaining: usize,
    limit: usize,
    timeout: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Body for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    if d.len() > this.remaining {
                        return Poll::Ready(Some(Err(BodyError::TooLarge(this.limit).into())));
                    }
                    this.remaining -= d.len();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(BodyError::Timeout(this.timeout).into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why [`gunzip_bounded`] failed.
#[derive(Debug, thiserror::Error)]
pub enum InflateError {
    #[error("decompressed, it is over the limit of {0} bytes")]
    TooLarge(usize),
    #[error("not valid gzip: {0}")]
    Invalid(std::io::Error),
}

/// Inflates gzip'd `data`, reading at most `max` + 1 bytes out of the decoder: a gzip bomb
/// stops at the limit, and the output never holds (or reserves) more than `max` bytes.
pub fn gunzip_bounded(data: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    let mut d = flate2::read::GzDecoder::new(data);
    let mut out: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match d.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(InflateError::Invalid(e)),
        };
        if out.len() + n > max {
            return Err(InflateError::TooLarge(max));
        }
        if out.capacity() - out.len() < n {
            let cap = (out.capacity() * 2).max(out.len() + n).min(max);
            out.reserve_exact(cap - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// gRPC status codes used here.
#[derive(Debug, Clone, Copy)]
enum GrpcCode {
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    ResourceExhausted = 8,
    Internal = 13,
    Unauthenticated = 16,
}

/// A refusal, answered in the listener's protocol.
struct Refusal {
    http: StatusCode,
    grpc: GrpcCode,
    kind: &'static str,
    message: String,
}

impl Refusal {
    fn unauthenticated(message: &str) -> Self {
        Self {
            http: StatusCode::UNAUTHORIZED,
            grpc: GrpcCode::Unauthenticated,
            kind: "unauthenticated",
            message: message.into(),
        }
    }

    fn too_large(message: String) -> Self {
        Self {
            http: StatusCode::PAYLOAD_TOO_LARGE,
            grpc: GrpcCode::ResourceExhausted,
            kind: "too_large",
            message,
        }
    }

    fn invalid(message: String) -> Self {
        Self {
            http: StatusCode::BAD_REQUEST,
            grpc: GrpcCode::InvalidArgument,
            kind: "invalid_request",
            message,
        }
    }

    fn from_body_error(e: &BoxError) -> Self {
        match e.downcast_ref::<BodyError>() {
            Some(BodyError::TooLarge(_)) => Self::too_large(e.to_string()),
            Some(BodyError::Timeout(_)) => Self {
                http: StatusCode::REQUEST_TIMEOUT,
                grpc: GrpcCode::DeadlineExceeded,
                kind: "timeout",
                message: e.to_string(),
            },
            None => Self::invalid(format!("reading the request body: {e}")),
        }
    }

    fn response(&self, protocol: Protocol) -> Response<ServerBody> {
        let mut r = match protocol {
            Protocol::Http1 => {
                let mut r = Response::new(full(Bytes::from(format!("{}\n", self.message))));
                *r.status_mut() = self.http;
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                if self.http == StatusCode::UNAUTHORIZED {
                    r.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer realm=\"weir\""),
                    );
                }
                r
            }
            Protocol::Grpc => grpc_status(self.grpc, &self.message),
        };
        // The request's body may not have been read: do not keep the connection.
        if protocol == Protocol::Http1 {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

fn full(b: Bytes) -> ServerBody {
    ServerBody::new(Full::new(b))
}

/// A trailers-only gRPC answer: HTTP 200 with `grpc-status` and `grpc-message`.
fn grpc_status(code: GrpcCode, message: &str) -> Response<ServerBody> {
    let mut r = Response::new(full(Bytes::new()));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(code as i32));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    r
}

/// `grpc-message` is percent-encoded (the gRPC HTTP/2 protocol document).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (b' '..=b'~').contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The compressed-flag byte and the length of a gRPC message.
const GRPC_HEADER: usize = 5;

/// Inflates the gzip'd messages of a gRPC request body, all of them together within `max`
/// bytes (so many small bombs in one body cannot add up); uncompressed ones (flag 0) pass
/// as they are, within the same budget.
fn inflate_grpc(data: &[u8], max: usize) -> Result<Bytes, Refusal> {
    let mut out = BytesMut::new();
    let mut rest = data;
    let mut total = 0usize;
    while !rest.is_empty() {
        let budget = max - total;
        let Some((head, tail)) = rest.split_at_checked(GRPC_HEADER) else {
            return Err(Refusal::invalid("a truncated gRPC message header".into()));
        };
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let Some((msg, tail)) = tail.split_at_checked(len) else {
            return Err(Refusal::invalid(format!(
                "a truncated gRPC message ({len} bytes announced, {} received)",
                tail.len()
            )));
        };
        rest = tail;
        let plain;
        let msg = match head[0] {
            0 => msg,
            1 => {
                plain = gunzip_bounded(msg, budget).map_err(|e| match e {
                    InflateError::TooLarge(_) => Refusal::too_large(format!(
                        "the gzip'd message decompresses to more than {max} bytes (`max_request_bytes`)"
                    )),
                    InflateError::Invalid(e) => {
                        Refusal::invalid(format!("the gzip'd message is not valid gzip: {e}"))
                    }
                })?;
                &plain[..]
            }
            f => {
                return Err(Refusal::invalid(format!(
                    "unknown gRPC compressed flag {f}"
                )))
            }
        };
        if msg.len() > budget {
            return Err(Refusal::too_large(format!(
                "the messages are over the limit of {max} bytes (`max_request_bytes`)"
            )));
        }
        total += msg.len();
        out.reserve(GRPC_HEADER + msg.len());
        out.put_u8(0);
        out.put_u32(msg.len() as u32);
        out.extend_from_slice(msg);
    }
    Ok(out.freeze())
}

/// What every request of a listener shares.
struct Shared {
    protocol: Protocol,
    auth: Option<BearerToken>,
    open_paths: Vec<String>,
    limits: Limits,
    report: Report,
}

impl Shared {
    fn refuse(&self, r: Refusal, peer: SocketAddr) -> Response<ServerBody> {
        (self.report)(
            r.kind,
            &format!("refused a request from {peer}: {}", r.message),
        );
        r.response(self.protocol)
    }

    /// The largest body read: for gRPC, one message of `max_request_bytes` and its header
    /// (a little more, for a compressed message that came out larger than its input).
    fn body_limit(&self) -> usize {
        match self.protocol {
            Protocol::Http1 => self.limits.max_request_bytes,
            Protocol::Grpc => self.limits.max_request_bytes.saturating_add(1024),
        }
    }
}

impl Server {
    /// Serves `service` on `listener` until `shutdown` fires; then stops accepting, asks
    /// every connection to close when its requests are answered, and returns when they have.
    pub async fn serve<S, B>(self, listener: TcpListener, service: S, shutdown: ShutdownToken)
    where
        S: tower_service::Service<Request<ServerBody>, Response = Response<B>>
            + Clone
            + Send
            + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let shared = Arc::new(Shared {
            protocol: self.protocol,
            auth: self.auth,
            open_paths: self.open_paths,
            limits: self.limits,
            report: self.report,
        });
        let permits = Arc::new(Semaphore::new(self.limits.max_connections.max(1)));
        let mut conns = tokio::task::JoinSet::new();
        loop {
            while conns.try_join_next().is_some() {}
            let permit = tokio::select! {
                p = Arc::clone(&permits).acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = shutdown.cancelled() => break,
            };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = shutdown.cancelled() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of ending the server.
                    (shared.report)("accept", &format!("accepting a connection: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            conns.spawn(connection(
                tcp,
                peer,
                self.tls.clone(),
                Arc::clone(&shared),
                service.clone(),
                shutdown.clone(),
                permit,
            ));
        }
        drop(listener);
        while conns.join_next().await.is_some() {}
    }
}

/// Drives a hyper connection until it ends, closing it gracefully when it has been idle
/// too long or the server stops.
macro_rules! drive {
    ($conn:expr, $state:expr, $idle:expr, $shutdown:expr, $peer:expr) => {{
        let conn = $conn;
        tokio::pin!(conn);
        let mut closing = false;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(peer = %$peer, "connection closed: {e}");
                    }
                    break;
                }
                _ = $state.idle($idle), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = $shutdown.cancelled(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }};
}

async fn connection<S, B>(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shared: Arc<Shared>,
    service: S,
    shutdown: ShutdownToken,
    _permit: tokio::sync::OwnedSemaphorePermit,
) where
    S: tower_service::Service<Request<ServerBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let stream = match tls {
        None => Stream::Plain(tcp),
        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
        {
            Ok(Ok(s)) => Stream::Tls(Box::new(s)),
            Ok(Err(e)) => {
                (shared.report)("tls", &format!("TLS handshake with {peer}: {e}"));
                return;
            }
            Err(_) => {
                (shared.report)("tls", &format!("TLS handshake with {peer}: timed out"));
                return;
            }
        },
    };
    let state = Arc::new(ConnState::new());
    let io = TokioIo::new(Tracked {
        stream,
        state: Arc::clone(&state),
    });
    let svc = {
        let (shared, state) = (Arc::clone(&shared), Arc::clone(&state));
        hyper::service::service_fn(move |req| -> HandleFuture {
            Box::pin(handle(
                req,
                peer,
                Arc::clone(&shared),
                service.clone(),
                Arc::clone(&state),
            ))
        })
    };
    let idle = shared.limits.idle_timeout;
    match shared.protocol {
        Protocol::Http1 => {
            let mut b = hyper::server::conn::http1::Builder::new();
            b.timer(TokioTimer::new())
                .header_read_timeout(idle)
                .max_buf_size(MAX_HEADER_BYTES);
            drive!(b.serve_connection(io, svc), state, idle, shutdown, peer);
        }
        Protocol::Grpc => {
            let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            b.timer(TokioTimer::new())
                .max_header_list_size(MAX_HEADER_BYTES as u32)
                .max_concurrent_streams(100);
            drive!(b.serve_connection(io, svc), state, idle, shutdown, peer);
        }
    }
}

type HandleFuture = Pin<Box<dyn Future<Output = Result<Response<ServerBody>, Infallible>> + Send>>;

async fn handle<S, B>(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut service: S,
    state: Arc<ConnState>,
) -> Result<Response<ServerBody>, Infallible>
where
    S: tower_service::Service<Request<ServerBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let _in_progress = InProgress::new(&state);
    if let Some(token) = &shared.auth {
        let open = shared.open_paths.iter().any(|p| p == req.uri().path());
        if !open && !token.allows(req.headers()) {
            let msg = if req.headers().contains_key(header::AUTHORIZATION) {
                "the bearer token is not valid"
            } else {
                "authentication required: send `Authorization: Bearer <token>`"
            };
            return Ok(shared.refuse(Refusal::unauthenticated(msg), peer));
        }
    }
    let limit = shared.body_limit();
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        return Ok(shared.refuse(
            Refusal::too_large(format!(
                "the request body ({} bytes) is over the limit of {limit} bytes",
                announced.unwrap_or_default()
            )),
            peer,
        ));
    }
    let (mut parts, body) = req.into_parts();
    let timeout = shared.limits.request_read_timeout;
    let body = LimitedBody {
        inner: body,
        remaining: limit,
        limit,
        timeout,
        deadline: Box::pin(tokio::time::sleep(timeout)),
    };
    let gzip = shared.protocol == Protocol::Grpc
        && parts
            .headers
            .get("grpc-encoding")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let body: ServerBody = if gzip {
        let data = match body.collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) => return Ok(shared.refuse(Refusal::from_body_error(&e), peer)),
        };
        match inflate_grpc(&data, shared.limits.max_request_bytes) {
            Ok(plain) => {
                drop(data);
                parts.headers.remove("grpc-encoding");
                parts.headers.remove(header::CONTENT_LENGTH);
                full(plain)
            }
            Err(r) => return Ok(shared.refuse(r, peer)),
        }
    } else {
        ServerBody::new(body)
    };
    let req = Request::from_parts(parts, body);
    if let Err(e) = std::future::poll_fn(|cx| service.poll_ready(cx)).await {
        let e: BoxError = e.into();
        return Ok(internal(shared.protocol, &e));
    }
    match service.call(req).await {
        Ok(resp) => {
            let mut resp = resp.map(ServerBody::new);
            if shared.protocol == Protocol::Grpc {
                resp.headers_mut()
                    .entry("grpc-accept-encoding")
                    .or_insert(HeaderValue::from_static("gzip"));
            }
            Ok(resp)
        }
        Err(e) => Ok(internal(shared.protocol, &e.into())),
    }
}

fn internal(protocol: Protocol, e: &BoxError) -> Response<ServerBody> {
    Refusal {
        http: StatusCode::INTERNAL_SERVER_ERROR,
        grpc: GrpcCode::Internal,
        kind: "internal",
        message: format!("internal error: {e}"),
    }
    .response(protocol)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gunzip_stops_at_the_limit() {
        let small = gzip(b"hello");
        assert_eq!(gunzip_bounded(&small, 5).unwrap(), b"hello");
        assert!(matches!(
            gunzip_bounded(&small, 4),
            Err(InflateError::TooLarge(4))
        ));
        // 64 MiB of zeros in about 64 KiB: stopped at 1 MiB, never holding more.
        let bomb = gzip(&vec![0u8; 64 << 20]);
        assert!(bomb.len() < 256 << 10);
        assert!(matches!(
            gunzip_bounded(&bomb, 1 << 20),
            Err(InflateError::TooLarge(_))
        ));
        assert!(matches!(
            gunzip_bounded(b"not gzip", 100),
            Err(InflateError::Invalid(_))
        ));
    }

    fn frame(flag: u8, msg: &[u8]) -> Vec<u8> {
        let mut f = vec![flag];
        f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        f.extend_from_slice(msg);
        f
    }

    #[test]
    fn grpc_messages_are_inflated_within_the_limit() {
        let mut body = frame(1, &gzip(b"abc"));
        body.extend(frame(0, b"de"));
        let out = inflate_grpc(&body, 10).ok().unwrap();
        let mut want = frame(0, b"abc");
        want.extend(frame(0, b"de"));
        assert_eq!(&out[..], &want[..]);
        let r = inflate_grpc(&frame(1, &gzip(&[0u8; 100])), 10)
            .err()
            .unwrap();
        assert_eq!(r.kind, "too_large");
        assert!(r.message.contains("max_request_bytes"), "{}", r.message);
        assert_eq!(
            inflate_grpc(&body[..7], 10).err().unwrap().kind,
            "invalid_request"
        );
    }

    #[test]
    fn bearer_tokens() {
        let t = BearerToken::new(&ServerAuthConfig {
            strategy: ServerAuthStrategy::Bearer,
            token: weir_pipeline::config::Secret::new("0123456789abcdef"),
        })
        .unwrap();
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            m
        };
        assert!(t.allows(&h("Bearer 0123456789abcdef")));
        assert!(t.allows(&h("bearer  0123456789abcdef ")));
        assert!(!t.allows(&h("Bearer 0123456789abcdeg")));
        assert!(!t.allows(&h("Bearer 0123456789abcde")));
        assert!(!t.allows(&h("Basic 0123456789abcdef")));
        assert!(!t.allows(&h("Bearer")));
        assert!(!t.allows(&HeaderMap::new()));
        assert!(!format!("{t:?}").contains("0123"));
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        assert_eq!(percent_encode("a 100% é"), "a 100%25 %C3%A9");
    }
}
