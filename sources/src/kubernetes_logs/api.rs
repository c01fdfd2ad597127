//! A small Kubernetes API client: list the pods of this node (and every namespace), then watch
//! them, keeping a [`MetaCache`] of each up to date.
//!
//! The API is plain HTTP with JSON bodies: `GET /api/v1/pods?fieldSelector=spec.nodeName=N`
//! returns a `PodList` with a `metadata.resourceVersion` (`/api/v1/namespaces`, a
//! `NamespaceList`); `GET` of the same with `watch=1` and that `resourceVersion` returns a
//! stream of newline-delimited watch events (`{"type":
//! "ADDED"|"MODIFIED"|"DELETED"|"BOOKMARK"|"ERROR", "object": ...}`). An `ERROR` with code 410
//! (the version is too old) means list again. Why not the `kube` crate: see
//! docs/components/kubernetes_logs.md (its `k8s-openapi` types cost minutes of build for the
//! handful of fields used here).
//!
//! In a pod, the endpoint, token and CA come from the service account
//! (`KUBERNETES_SERVICE_HOST`/`_PORT`, `/var/run/secrets/kubernetes.io/serviceaccount/`). The
//! token is read again for every request (bound tokens are rotated by the kubelet).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls;
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::shutdown::ShutdownToken;

use super::cache::{Cached, MetaCache};
use super::namespaces::{Namespace, NamespaceMeta};
use super::pods::{ObjectMeta, Pod, PodMeta};

/// Seconds a watch request asks the server to keep it open.
const WATCH_TIMEOUT_SECS: u64 = 290;
/// Wait between failed attempts: doubles from the first to the last.
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Connecting and getting response headers (not the watch stream itself).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        source: std::io::Error,
    },
    #[error("TLS with {endpoint}: {reason}")]
    Tls { endpoint: String, reason: String },
    #[error("HTTP: {0}")]
    Http(String),
    #[error("{path}: the API answered {status}: {body}")]
    Status {
        path: String,
        status: StatusCode,
        body: String,
    },
    #[error("{path}: the response is not what the API sends: {reason}")]
    Body { path: String, reason: String },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("the watch must start over from a new list (resource version too old)")]
    Gone,
    #[error("cannot read {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Where the API is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub scheme_https: bool,
    pub host: String,
    pub port: u16,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
}

impl Endpoint {
    /// Parses `http://host:port` or `https://host:port`.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!(
                "api.endpoint {url:?} must start with http:// or https://"
            ));
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') {
            return Err(format!(
                "api.endpoint {url:?} must be a scheme, a host and a port, without a path"
            ));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("api.endpoint {url:?}: the port {p:?} is not a number"))?;
                (h.trim_start_matches('[').trim_end_matches(']'), port)
            }
            _ => (rest, if https { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(format!("api.endpoint {url:?} has no host"));
        }
        Ok(Endpoint {
            scheme_https: https,
            host: host.to_string(),
            port,
            token_file: None,
            ca_file: None,
        })
    }

    pub fn display(&self) -> String {
        let scheme = if self.scheme_https { "https" } else { "http" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A client for one API server.
pub struct Client {
    endpoint: Endpoint,
    tls: Option<tokio_rustls::TlsConnector>,
}

fn read_file(path: &Path) -> Result<Vec<u8>, ApiError> {
    std::fs::read(path).map_err(|source| ApiError::File {
        path: path.to_path_buf(),
        source,
    })
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Result<Client, ApiError> {
        let tls = if endpoint.scheme_https {
            let tls_err = |reason: String| ApiError::Tls {
                endpoint: endpoint.display(),
                reason,
            };
            let mut roots = rustls::RootCertStore::empty();
            if let Some(ca) = &endpoint.ca_file {
                use rustls::pki_types::pem::PemObject;
                let pem = read_file(ca)?;
                for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                    let cert = cert.map_err(|e| tls_err(format!("{}: {e}", ca.display())))?;
                    roots
                        .add(cert)
                        .map_err(|e| tls_err(format!("{}: {e}", ca.display())))?;
                }
            }
            if roots.is_empty() {
                return Err(tls_err(
                    "no CA certificate to check the server with: set api.ca_file".into(),
                ));
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let cfg = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| tls_err(e.to_string()))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(tokio_rustls::TlsConnector::from(Arc::new(cfg)))
        } else {
            None
        };
        Ok(Client { endpoint, tls })
    }

    async fn connect(&self) -> Result<Box<dyn Io>, ApiError> {
        let e = &self.endpoint;
        let tcp = TcpStream::connect((e.host.as_str(), e.port))
            .await
            .map_err(|source| ApiError::Connect {
                endpoint: e.display(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some(tls) => {
                let name =
                    rustls::pki_types::ServerName::try_from(e.host.clone()).map_err(|err| {
                        ApiError::Tls {
                            endpoint: e.display(),
                            reason: err.to_string(),
                        }
                    })?;
                let s = tls.connect(name, tcp).await.map_err(|err| ApiError::Tls {
                    endpoint: e.display(),
                    reason: match &e.ca_file {
                        // Say which CA was used: a wrong or stale ca.crt is the usual cause.
                        Some(ca) if err.to_string().contains("certificate") => format!(
                            "{err} (the server's certificate was checked against the CA certificates in {})",
                            ca.display()
                        ),
                        _ => err.to_string(),
                    },
                })?;
                Ok(Box::new(s))
            }
        }
    }

    /// Sends `GET path` and returns the response once its headers arrived (status checked).
    async fn get(&self, path: &str) -> Result<hyper::body::Incoming, ApiError> {
        let fut = async {
            let io = self.connect().await?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
                .await
                .map_err(|e| ApiError::Http(e.to_string()))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let host = if self.endpoint.host.contains(':') {
                format!("[{}]:{}", self.endpoint.host, self.endpoint.port)
            } else {
                format!("{}:{}", self.endpoint.host, self.endpoint.port)
            };
            let mut req = Request::get(path)
                .header(http::header::HOST, host)
                .header(http::header::ACCEPT, "application/json")
                .header(http::header::USER_AGENT, "weir-kubernetes-logs");
            if let Some(t) = &self.endpoint.token_file {
                let token = read_file(t)?;
                let token = String::from_utf8_lossy(&token).trim().to_string();
                req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let req = req
                .body(Empty::<Bytes>::new())
                .map_err(|e| ApiError::Http(e.to_string()))?;
            sender
                .send_request(req)
                .await
                .map_err(|e| ApiError::Http(e.to_string()))
        };
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| ApiError::Timeout(REQUEST_TIMEOUT))??;
        let status = resp.status();
        let body = resp.into_body();
        if status.is_success() {
            return Ok(body);
        }
        if status == StatusCode::GONE {
            return Err(ApiError::Gone);
        }
        let text = tokio::time::timeout(REQUEST_TIMEOUT, body.collect())
            .await
            .ok()
            .and_then(|r| r.ok())
            .map(|b| {
                String::from_utf8_lossy(&b.to_bytes())
                    .chars()
                    .take(500)
                    .collect()
            })
            .unwrap_or_default();
        Err(ApiError::Status {
            path: path.to_string(),
            status,
            body: text,
        })
    }
}

/// A `PodList`, `NamespaceList`, ...
#[derive(Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct List<T> {
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<T>,
}

/// The object of a `BOOKMARK` watch event: only its `metadata.resourceVersion` counts.
#[derive(Deserialize)]
struct Bookmark {
    metadata: ObjectMeta,
}

/// A kind of object that is listed and watched into a [`MetaCache`].
pub trait Resource: Cached + Send + Sync + Sized + 'static {
    /// The object as the API sends it.
    type Object: DeserializeOwned;
    /// The collection's path.
    const COLLECTION: &'static str;
    /// How the log says that this resource cannot be read ...
    const WITHOUT: &'static str;
    /// ... and what events lack meanwhile.
    const LOST: &'static str;
    fn from_object(o: &Self::Object) -> Self;
    fn metadata(o: &Self::Object) -> &ObjectMeta;
    /// The cache key of an object (what [`Cached::key`] gives for its metadata).
    fn key_of(o: &Self::Object) -> &str;
}

impl Resource for PodMeta {
    type Object = Pod;
    const COLLECTION: &'static str = "/api/v1/pods";
    const WITHOUT: &'static str = "no Kubernetes API access";
    const LOST: &'static str =
        "events carry the metadata of their path only (namespace, pod, uid, container)";
    fn from_object(o: &Pod) -> Self {
        PodMeta::from_pod(o)
    }
    fn metadata(o: &Pod) -> &ObjectMeta {
        &o.metadata
    }
    fn key_of(o: &Pod) -> &str {
        &o.metadata.uid
    }
}

impl Resource for NamespaceMeta {
    type Object = Namespace;
    const COLLECTION: &'static str = "/api/v1/namespaces";
    const WITHOUT: &'static str = "no namespace labels from the Kubernetes API";
    const LOST: &'static str = "events carry no kubernetes.namespace_labels";
    fn from_object(o: &Namespace) -> Self {
        NamespaceMeta::from_namespace(o)
    }
    fn metadata(o: &Namespace) -> &ObjectMeta {
        &o.metadata
    }
    fn key_of(o: &Namespace) -> &str {
        &o.metadata.name
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListMeta {
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default, rename = "continue")]
    continue_token: Option<String>,
}

#[derive(Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    kind: String,
    object: serde_json::Value,
}

/// A `Status` object, as sent in an `ERROR` watch event.
#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    code: Option<u16>,
    #[serde(default)]
    message: Option<String>,
}

fn encode_query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The `fieldSelector` that keeps the pods of one node (`None`: every pod of the cluster).
pub fn node_selector(node_name: Option<&str>) -> String {
    match node_name {
        Some(n) => format!(
            "&fieldSelector={}",
            encode_query(&format!("spec.nodeName={n}"))
        ),
        None => String::new(),
    }
}

/// Who says that the API cannot be reached. Pods and namespaces are watched separately (an
/// RBAC that allows only pods still gives pod metadata), but one unreachable API server must
/// not be reported twice: the pods watcher reports it, and the namespaces watcher reports
/// only failures of its own.
#[derive(Clone)]
pub enum Reporter {
    /// Reports every failure; keeps `down` true while it fails.
    Api { down: Arc<AtomicBool> },
    /// Quiet while `api_down` is true.
    Part { api_down: Arc<AtomicBool> },
}

/// Lists and watches one resource (the pods of one node, or namespaces) into a cache.
pub struct Watcher<T: Resource> {
    pub client: Arc<Client>,
    /// Appended to the list and watch queries (`&fieldSelector=...`), or empty.
    pub selector: String,
    pub cache: Arc<MetaCache<T>>,
    pub delay_deletion: Duration,
    pub metrics: Arc<ComponentMetrics>,
    pub reporter: Reporter,
}

impl<T: Resource> Watcher<T> {
    fn selector(&self) -> &str {
        &self.selector
    }

    /// Lists every object (following `continue` pages); returns the list's resource version.
    async fn list(&self) -> Result<String, ApiError> {
        let mut all = Vec::new();
        let mut cont: Option<String> = None;
        let rv = loop {
            let mut path = format!("{}?limit=500{}", T::COLLECTION, self.selector());
            if let Some(c) = &cont {
                path.push_str(&format!("&continue={}", encode_query(c)));
            }
            let body = self.get_body(&path).await?;
            let list: List<T::Object> =
                serde_json::from_slice(&body).map_err(|e| ApiError::Body {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            all.extend(list.items.iter().map(T::from_object));
            match list.metadata.continue_token.filter(|c| !c.is_empty()) {
                Some(c) => cont = Some(c),
                None => break list.metadata.resource_version.unwrap_or_default(),
            }
        };
        let n = all.len();
        self.cache.replace_all(all, Instant::now());
        tracing::debug!(component = %self.metrics.id, collection = T::COLLECTION, objects = n, resource_version = %rv, "listed");
        Ok(rv)
    }

    async fn get_body(&self, path: &str) -> Result<Bytes, ApiError> {
        let body = self.client.get(path).await?;
        let collected = tokio::time::timeout(REQUEST_TIMEOUT, body.collect())
            .await
            .map_err(|_| ApiError::Timeout(REQUEST_TIMEOUT))?
            .map_err(|e| ApiError::Http(e.to_string()))?;
        Ok(collected.to_bytes())
    }

    /// Watches from `rv` until the server ends the stream; returns the last version seen.
    async fn watch(&self, mut rv: String, shutdown: &ShutdownToken) -> Result<String, ApiError> {
        let path = format!(
            "{}?watch=1&allowWatchBookmarks=true&timeoutSeconds={WATCH_TIMEOUT_SECS}&resourceVersion={}{}",
            T::COLLECTION,
            encode_query(&rv),
            self.selector()
        );
        let mut body = self.client.get(&path).await?;
        let mut buf = BytesMut::new();
        loop {
            let frame = tokio::select! {
                f = body.frame() => f,
                _ = shutdown.cancelled() => return Ok(rv),
            };
            let Some(frame) = frame else {
                return Ok(rv);
            };
            let frame = frame.map_err(|e| ApiError::Http(e.to_string()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(nl) = memchr::memchr(b'\n', &buf) {
                let line = buf.split_to(nl + 1);
                let line = &line[..nl];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                self.event(line, &path, &mut rv)?;
            }
            if buf.len() > 64 * 1024 * 1024 {
                return Err(ApiError::Body {
                    path,
                    reason: "a watch event over 64 MiB without a newline".into(),
                });
            }
        }
    }

    fn event(&self, line: &[u8], path: &str, rv: &mut String) -> Result<(), ApiError> {
        let ev: WatchEvent = serde_json::from_slice(line).map_err(|e| ApiError::Body {
            path: path.to_string(),
            reason: format!("a watch event: {e}"),
        })?;
        let bad = |e: serde_json::Error| ApiError::Body {
            path: path.to_string(),
            reason: format!("a {} watch event's object: {e}", ev.kind),
        };
        match ev.kind.as_str() {
            "ADDED" | "MODIFIED" | "DELETED" => {
                let obj: T::Object = serde_json::from_value(ev.object.clone()).map_err(bad)?;
                if let Some(v) = &T::metadata(&obj).resource_version {
                    rv.clone_from(v);
                }
                if ev.kind == "DELETED" {
                    self.cache.delete(T::key_of(&obj), Instant::now());
                } else {
                    self.cache.upsert(T::from_object(&obj));
                }
            }
            "BOOKMARK" => {
                let b: Bookmark = serde_json::from_value(ev.object.clone()).map_err(bad)?;
                if let Some(v) = b.metadata.resource_version {
                    *rv = v;
                }
            }
            "ERROR" => {
                let st: Status = serde_json::from_value(ev.object.clone()).map_err(bad)?;
                if st.code == Some(410) {
                    return Err(ApiError::Gone);
                }
                return Err(ApiError::Status {
                    path: path.to_string(),
                    status: st
                        .code
                        .and_then(|c| StatusCode::from_u16(c).ok())
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    body: st.message.unwrap_or_default(),
                });
            }
            other => {
                tracing::debug!(component = %self.metrics.id, kind = other, "unknown watch event type, ignored");
            }
        }
        Ok(())
    }

    /// Lists, then watches, forever (until shutdown). `ready` is told after the first
    /// successful list, or after the first failure (the source then starts with path
    /// metadata only). Failures are logged once until the API answers again.
    pub async fn run(self, shutdown: ShutdownToken, ready: tokio::sync::oneshot::Sender<bool>) {
        let mut ready = Some(ready);
        let mut retry = RETRY_MIN;
        // Whether this watcher said (at warn level) that it fails.
        let mut failing = false;
        let mut sweep = tokio::time::interval(
            self.delay_deletion
                .clamp(Duration::from_millis(100), Duration::from_secs(10)),
        );
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let endpoint = self.client.endpoint.display();
        let mut rv: Option<String> = None;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let began = Instant::now();
            let attempt = async {
                let version = match rv.take() {
                    Some(v) => v,
                    None => self.list().await?,
                };
                if let Some(r) = ready.take() {
                    let _ = r.send(true);
                }
                if let Reporter::Api { down } = &self.reporter {
                    down.store(false, Ordering::Release);
                }
                if failing {
                    tracing::info!(component = %self.metrics.id, endpoint = %endpoint, collection = T::COLLECTION, objects = self.cache.len(), "the Kubernetes API answers again: events get its metadata");
                }
                failing = false;
                retry = RETRY_MIN;
                self.watch(version, &shutdown).await
            };
            let res = tokio::select! {
                r = attempt => Some(r),
                _ = async { loop { sweep.tick().await; self.cache.sweep(Instant::now(), self.delay_deletion); } } => None,
            };
            match res {
                None | Some(Ok(_)) if shutdown.is_cancelled() => return,
                Some(Ok(v)) => {
                    rv = Some(v);
                    // A watch the server (or a proxy) ends at once must not become a busy loop.
                    if began.elapsed() < Duration::from_secs(1) {
                        tokio::select! {
                            _ = tokio::time::sleep(RETRY_MIN) => {}
                            _ = shutdown.cancelled() => return,
                        }
                    }
                }
                Some(Err(ApiError::Gone)) => rv = None,
                Some(Err(e)) => {
                    rv = None;
                    self.metrics
                        .add_counter("kubernetes_logs_api_errors_total", None, 1);
                    let quiet = match &self.reporter {
                        Reporter::Api { down } => {
                            down.store(true, Ordering::Release);
                            false
                        }
                        Reporter::Part { api_down } => api_down.load(Ordering::Acquire),
                    };
                    if !failing && !quiet {
                        failing = true;
                        let (without, lost) = (T::WITHOUT, T::LOST);
                        tracing::warn!(component = %self.metrics.id, endpoint = %endpoint, "{without} ({e}): {lost} until it answers; retrying in the background");
                    } else {
                        tracing::debug!(component = %self.metrics.id, collection = T::COLLECTION, "Kubernetes API still failing: {e}");
                    }
                    if let Some(r) = ready.take() {
                        let _ = r.send(false);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(retry) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    retry = (retry * 2).min(RETRY_MAX);
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("https://10.96.0.1:443").unwrap();
        assert!(e.scheme_https);
        assert_eq!((e.host.as_str(), e.port), ("10.96.0.1", 443));
        let e = Endpoint::parse("http://[::1]:8080/").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 8080));
        let e = Endpoint::parse("https://kubernetes.default.svc").unwrap();
        assert_eq!(e.port, 443);
        assert!(Endpoint::parse("ftp://x").is_err());
        assert!(Endpoint::parse("http://x:1/api").is_err());
        assert_eq!(
            encode_query("spec.nodeName=node-1"),
            "spec.nodeName%3Dnode-1"
        );
    }

    /// Watch events (ADDED, MODIFIED, DELETED, BOOKMARK, ERROR) with real pod and namespace
    /// objects, mutated: a bad line is an error for that watch, never a panic.
    #[test]
    fn fuzz_watch_events() {
        let pod = r#"{"type":"ADDED","object":{"metadata":{"name":"p","namespace":"n","uid":"u1","resourceVersion":"42","labels":{"app":"web","weir.io/exclude":"false"},"annotations":{"a":"b"},"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"p-1","uid":"x","controller":true}]},"spec":{"nodeName":"node-1","containers":[{"name":"c","image":"nginx:1"}]},"status":{"podIP":"10.0.0.1","containerStatuses":[{"name":"c","containerID":"containerd://abc"}]}}}"#;
        let ns = r#"{"type":"MODIFIED","object":{"metadata":{"name":"n","uid":"n1","resourceVersion":"43","labels":{"team":"a"}}}}"#;
        let (pods, namespaces) = {
            let client =
                Arc::new(Client::new(Endpoint::parse("http://127.0.0.1:1").unwrap()).unwrap());
            let metrics = Arc::new(ComponentMetrics::new(
                "k8s",
                weir_pipeline::vocabulary::ComponentKind::Source,
                "kubernetes_logs",
            ));
            let reporter = Reporter::Api {
                down: Arc::new(AtomicBool::new(false)),
            };
            (
                Watcher::<PodMeta> {
                    client: client.clone(),
                    selector: String::new(),
                    cache: Arc::default(),
                    delay_deletion: Duration::from_secs(1),
                    metrics: metrics.clone(),
                    reporter: reporter.clone(),
                },
                Watcher::<NamespaceMeta> {
                    client,
                    selector: String::new(),
                    cache: Arc::default(),
                    delay_deletion: Duration::from_secs(1),
                    metrics,
                    reporter,
                },
            )
        };
        weir_testing::fuzz::Fuzz::new("kubernetes_watch")
            .seed(pod)
            .seed(pod.replace("ADDED", "DELETED"))
            .seed(ns)
            .seed(r#"{"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"99"}}}"#)
            .seed(r#"{"type":"ERROR","object":{"kind":"Status","code":410,"message":"too old resource version"}}"#)
            .dict([
                "\"type\"", "\"object\"", "ADDED", "DELETED", "ERROR", "BOOKMARK", "null", "{}",
                "[]", "\"metadata\"", "\"uid\"", "\"name\"",
            ])
            .run(|line| {
                let mut rv = String::new();
                let _ = pods.event(line, "/api/v1/pods", &mut rv);
                let _ = namespaces.event(line, "/api/v1/namespaces", &mut rv);
            });
    }
}
