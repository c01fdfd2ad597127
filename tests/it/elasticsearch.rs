//! The `elasticsearch` sink against a test double of the `_bulk` API.
//!
//! Elasticsearch cannot run here, so [`Double`] is an HTTP server (plain or TLS) that
//! implements the bulk contract the way Elasticsearch and OpenSearch do: it parses the NDJSON
//! action/document pairs (gzip bodies included), answers `{"took","errors","items":[{"index"|
//! "create":{"_index","_id","status","result"|"error":{"type","reason"}}}]}` in request order
//! (honouring `filter_path`), and can be told to fail chosen documents with 429 (once) or 400
//! `mapper_parsing_exception` (always), whole requests with 503, 401 (bad credentials, for a
//! while) or 413 (a body over a size, as `http.max_content_length` does), or to answer a
//! request with something that is not JSON. It plays one [`Flavor`]: `GET /` returns that version's root
//! document, and the `_type` rules of that version are enforced with the server's own errors
//! (required by Elasticsearch 6, optional in 7 and OpenSearch 1, refused by 8, 9 and OpenSearch
//! 2), and items carry `_type` where that version writes it.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{json, Value as Json};
use weir_pipeline::component::{Output, Source, SourceConfig, SourceContext};
use weir_pipeline::config::{load_str, resolve_graph};
use weir_pipeline::event::{EventBatch, LogEvent, Value};
use weir_pipeline::finalization::{BatchNotifier, BatchStatus, EventStatus};
use weir_pipeline::topology::{self, RunningTopology};
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

/// One `_bulk` request as the double saw it.
#[derive(Debug, Clone)]
struct BulkRequest {
    /// `(action, _index, _id, document)` per pair.
    docs: Vec<(String, String, Option<String>, Json)>,
    /// The `_type` of each action line, if it had one.
    types: Vec<Option<String>>,
    /// Each action line, parsed.
    actions: Vec<Json>,
    headers: HeaderMap,
    query: HashMap<String, String>,
    /// The body on the wire started with the gzip magic bytes.
    gzip_on_the_wire: bool,
}

/// Which server the double plays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Flavor {
    Es6,
    Es7,
    #[default]
    Es8,
    /// Elasticsearch 9: like 8 on the wire (no `_type`), a new major to detect.
    Es9,
    /// Elasticsearch 7.8: before data streams.
    Es78,
    Os1,
    Os2,
}

impl Flavor {
    /// The `version` object of `GET /`, as each server answers it.
    fn version(self) -> Json {
        match self {
            Flavor::Es6 => {
                json!({"number": "6.8.23", "build_flavor": "default", "build_type": "docker",
                "lucene_version": "7.7.3", "minimum_wire_compatibility_version": "5.6.0",
                "minimum_index_compatibility_version": "5.0.0"})
            }
            Flavor::Es7 => {
                json!({"number": "7.17.24", "build_flavor": "default", "build_type": "docker",
                "lucene_version": "8.11.3", "minimum_wire_compatibility_version": "6.8.0",
                "minimum_index_compatibility_version": "6.0.0-beta1"})
            }
            Flavor::Es78 => {
                json!({"number": "7.8.1", "build_flavor": "default", "build_type": "docker",
                "lucene_version": "8.5.1", "minimum_wire_compatibility_version": "6.8.0",
                "minimum_index_compatibility_version": "6.0.0-beta1"})
            }
            Flavor::Es8 => {
                json!({"number": "8.15.3", "build_flavor": "default", "build_type": "docker",
                "lucene_version": "9.11.1", "minimum_wire_compatibility_version": "7.17.0",
                "minimum_index_compatibility_version": "7.0.0"})
            }
            Flavor::Es9 => {
                json!({"number": "9.1.0", "build_flavor": "default", "build_type": "docker",
                "build_hash": "0f2a52ea5b1a42b4c4a1d1bbb7ae8c41b51b1d5a",
                "build_date": "2025-07-22T12:41:50.591234567Z", "build_snapshot": false,
                "lucene_version": "10.2.2", "minimum_wire_compatibility_version": "8.19.0",
                "minimum_index_compatibility_version": "8.0.0"})
            }
            Flavor::Os1 => {
                json!({"distribution": "opensearch", "number": "1.3.19", "build_type": "tar",
                "build_snapshot": false, "lucene_version": "8.10.1",
                "minimum_wire_compatibility_version": "6.8.0",
                "minimum_index_compatibility_version": "6.0.0-beta1"})
            }
            Flavor::Os2 => {
                json!({"distribution": "opensearch", "number": "2.17.1", "build_type": "tar",
                "build_snapshot": false, "lucene_version": "9.11.1",
                "minimum_wire_compatibility_version": "7.10.0",
                "minimum_index_compatibility_version": "7.0.0"})
            }
        }
    }
    fn opensearch(self) -> bool {
        matches!(self, Flavor::Os1 | Flavor::Os2)
    }
    /// Elasticsearch 6 wants a `_type`; 8, 9 and OpenSearch 2 refuse one.
    fn type_rule(self) -> TypeRule {
        match self {
            Flavor::Es6 => TypeRule::Required,
            Flavor::Es7 | Flavor::Es78 | Flavor::Os1 => TypeRule::Optional,
            Flavor::Es8 | Flavor::Es9 | Flavor::Os2 => TypeRule::Refused,
        }
    }
}

#[derive(PartialEq)]
enum TypeRule {
    Required,
    Optional,
    Refused,
}

#[derive(Default)]
pub(crate) struct DoubleState {
    requests: Vec<BulkRequest>,
    /// `seq` values answered 429 the first time they arrive.
    fail_429_once: BTreeSet<i64>,
    /// `seq` values always answered 400.
    fail_400: BTreeSet<i64>,
    /// This many next requests are answered 503.
    fail_503: usize,
    /// Hold every request with 503 while true.
    unavailable: bool,
    /// This many next requests are answered 200 with an HTML page.
    garbage: usize,
    /// TLS handshakes that failed.
    tls_handshake_errors: usize,
    /// Answer every request 401 (`security_exception`, as Elasticsearch does for bad
    /// credentials) until then.
    pub unauthorized_until: Option<std::time::Instant>,
    /// Requests answered 401.
    pub unauthorized: usize,
    /// Answer 413 to a bulk body (as it comes on the wire) over this many bytes.
    pub max_body: Option<usize>,
    /// Requests answered 413.
    pub too_large: usize,
    /// The largest body accepted.
    pub largest_accepted: usize,
    /// Documents stored, per index.
    pub stored: Vec<(String, Json)>,
    flavor: Flavor,
}

#[derive(Clone, Default)]
pub(crate) struct Double(Arc<Mutex<DoubleState>>);

impl Double {
    pub(crate) fn of(flavor: Flavor) -> Double {
        let d = Double::default();
        d.lock().flavor = flavor;
        d
    }
    fn app(self) -> axum::Router {
        axum::Router::new()
            .route("/", get(root))
            .route("/_bulk", post(bulk))
            .with_state(self)
    }
    pub(crate) async fn start(self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = self.app();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }
    /// Serves HTTPS with `cert`/`key` (PEM).
    async fn start_tls(self, cert: &std::path::Path, key: &std::path::Path) -> SocketAddr {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = TlsListener {
            tcp: listener,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
            handshake_errors: self.0.clone(),
        };
        let app = self.app();
        tokio::spawn(async move { axum::serve(tls, app).await.unwrap() });
        addr
    }
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, DoubleState> {
        self.0.lock().unwrap()
    }
}

/// TLS over a TCP listener, for `axum::serve`. A failed handshake (a client that does not
/// trust the certificate) is counted and the listener goes on.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    handshake_errors: Arc<Mutex<DoubleState>>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;
    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, addr)) = self.tcp.accept().await else {
                continue;
            };
            match self.acceptor.accept(tcp).await {
                Ok(tls) => return (tls, addr),
                Err(_) => self.handshake_errors.lock().unwrap().tls_handshake_errors += 1,
            }
        }
    }
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

async fn root(State(d): State<Double>) -> axum::Json<Json> {
    let flavor = d.lock().flavor;
    let tagline = if flavor.opensearch() {
        "The OpenSearch Project: https://opensearch.org/"
    } else {
        "You Know, for Search"
    };
    axum::Json(json!({
        "name": "es-double-1",
        "cluster_name": "weir-test",
        "cluster_uuid": "x9kX2nVhQ0u1mD3oXUe2Fw",
        "version": flavor.version(),
        "tagline": tagline
    }))
}

fn error_item(action: &str, index: &str, id: &str, status: u16, kind: &str, reason: &str) -> Json {
    json!({ action: {
        "_index": index, "_id": id, "status": status,
        "error": { "type": kind, "reason": reason }
    }})
}

/// Decodes a query value (`+` and `%XX`).
fn percent_decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(x) => {
                        out.push(x);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A whole-request error, in the servers' shape.
fn request_error(status: StatusCode, kind: &str, reason: &str) -> (StatusCode, String) {
    (
        status,
        json!({"error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
               "status": status.as_u16()})
        .to_string(),
    )
}

/// Elasticsearch's `filter_path`: keeps the fields matched by one of the comma-separated
/// dotted patterns (`*` matches any one key), and drops objects left empty.
fn filter_path(v: &Json, patterns: &[Vec<&str>], depth: usize) -> Option<Json> {
    if patterns.iter().any(|p| p.len() == depth) {
        return Some(v.clone());
    }
    match v {
        Json::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                let sub: Vec<Vec<&str>> = patterns
                    .iter()
                    .filter(|p| p[depth] == "*" || p[depth] == k)
                    .cloned()
                    .collect();
                if sub.is_empty() {
                    continue;
                }
                if let Some(f) = filter_path(x, &sub, depth + 1) {
                    out.insert(k.clone(), f);
                }
            }
            (!out.is_empty()).then_some(Json::Object(out))
        }
        // Arrays are transparent: the patterns apply to their elements.
        Json::Array(a) => {
            let out: Vec<Json> = a
                .iter()
                .filter_map(|x| filter_path(x, patterns, depth))
                .collect();
            (!out.is_empty()).then_some(Json::Array(out))
        }
        _ => None,
    }
}

async fn bulk(
    State(d): State<Double>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let query: HashMap<String, String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), percent_decode(v)))
        .collect();
    {
        let mut st = d.lock();
        if st
            .unauthorized_until
            .is_some_and(|t| std::time::Instant::now() < t)
        {
            st.unauthorized += 1;
            let reason = "unable to authenticate user [weir] for REST request [/_bulk]";
            return request_error(StatusCode::UNAUTHORIZED, "security_exception", reason);
        }
        if st.max_body.is_some_and(|max| body.len() > max) {
            st.too_large += 1;
            // What Elasticsearch answers past `http.max_content_length`: no body.
            return (StatusCode::PAYLOAD_TOO_LARGE, String::new());
        }
        st.largest_accepted = st.largest_accepted.max(body.len());
    }
    let gzip_on_the_wire = body.starts_with(&[0x1f, 0x8b]);
    let raw = if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        let mut out = Vec::new();
        if let Err(e) = flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out) {
            return request_error(
                StatusCode::BAD_REQUEST,
                "parse_exception",
                &format!("gzip: {e}"),
            );
        }
        out
    } else {
        body.to_vec()
    };
    let flavor = d.lock().flavor;
    let text = String::from_utf8(raw).unwrap();
    assert!(text.ends_with('\n'), "a bulk body ends with a newline");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() % 2, 0, "action/document pairs");
    let mut docs = Vec::new();
    let mut types = Vec::new();
    let mut actions = Vec::new();
    for (n, pair) in lines.chunks(2).enumerate() {
        let action: Json = serde_json::from_str(pair[0]).unwrap();
        let obj = action.as_object().unwrap();
        assert_eq!(obj.len(), 1, "one action per line: {action}");
        let (name, meta) = obj.iter().next().unwrap();
        assert!(name == "index" || name == "create", "action {name}");
        let doc_type = meta.get("_type").and_then(|t| t.as_str()).map(String::from);
        match (flavor.type_rule(), &doc_type) {
            (TypeRule::Required, None) => {
                return request_error(
                    StatusCode::BAD_REQUEST,
                    "action_request_validation_exception",
                    "Validation Failed: 1: type is missing;",
                )
            }
            (TypeRule::Refused, Some(_)) => {
                return request_error(
                    StatusCode::BAD_REQUEST,
                    "illegal_argument_exception",
                    &format!(
                        "Action/metadata line [{}] contains an unknown parameter [_type]",
                        2 * n + 1
                    ),
                )
            }
            _ => {}
        }
        types.push(doc_type);
        actions.push(action.clone());
        let doc: Json = serde_json::from_str(pair[1]).unwrap();
        docs.push((
            name.clone(),
            meta["_index"].as_str().unwrap().to_string(),
            meta.get("_id").and_then(|v| v.as_str()).map(String::from),
            doc,
        ));
    }
    let mut st = d.lock();
    let filter: Option<Vec<Vec<String>>> = query.get("filter_path").map(|f| {
        f.split(',')
            .map(|p| p.split('.').map(String::from).collect())
            .collect()
    });
    st.requests.push(BulkRequest {
        docs: docs.clone(),
        types: types.clone(),
        actions,
        headers: headers.clone(),
        query,
        gzip_on_the_wire,
    });
    if st.unavailable || st.fail_503 > 0 {
        st.fail_503 = st.fail_503.saturating_sub(1);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error":{"root_cause":[{"type":"cluster_block_exception","reason":"blocked by: [SERVICE_UNAVAILABLE/2/no master];"}],"type":"cluster_block_exception","reason":"blocked by: [SERVICE_UNAVAILABLE/2/no master];"},"status":503}).to_string(),
        );
    }
    if st.garbage > 0 {
        st.garbage -= 1;
        return (
            StatusCode::OK,
            "<html><body>502 proxy says hello</body></html>".into(),
        );
    }
    let mut items = Vec::new();
    let mut errors = false;
    for (n, (action, index, id, doc)) in docs.into_iter().enumerate() {
        let id = id.unwrap_or_else(|| format!("auto-{}-{n}", st.requests.len()));
        let seq = doc["seq"].as_i64().unwrap_or(-1);
        if st.fail_429_once.remove(&seq) {
            errors = true;
            items.push(error_item(
                &action,
                &index,
                &id,
                429,
                "es_rejected_execution_exception",
                "rejected execution of coordinating operation",
            ));
        } else if st.fail_400.contains(&seq) {
            errors = true;
            items.push(error_item(
                &action,
                &index,
                &id,
                400,
                "mapper_parsing_exception",
                "failed to parse field [seq] of type [long] in document",
            ));
        } else {
            st.stored.push((index.clone(), doc));
            let mut item = json!({
                "_index": index, "_id": id, "_version": 1, "result": "created",
                "_shards": {"total": 2, "successful": 1, "failed": 0},
                "_seq_no": 0, "_primary_term": 1, "status": 201
            });
            if flavor.type_rule() != TypeRule::Refused {
                // 6, 7 and OpenSearch 1 name the type in every item.
                item["_type"] = json!("_doc");
            }
            items.push(json!({ action.as_str(): item }));
        }
    }
    let resp = json!({"took": 3, "errors": errors, "items": items});
    let resp = match &filter {
        None => resp,
        Some(f) => {
            let patterns: Vec<Vec<&str>> = f
                .iter()
                .map(|p| p.iter().map(String::as_str).collect())
                .collect();
            filter_path(&resp, &patterns, 0).unwrap_or(json!({}))
        }
    };
    (StatusCode::OK, resp.to_string())
}

// A test source: emits the configured documents, one per batch, and records each batch's
// final status by its `seq`.

/// Final statuses by source name: `(seq, status)`.
type Statuses = Mutex<HashMap<String, Vec<(i64, BatchStatus)>>>;

fn statuses() -> &'static Statuses {
    static S: OnceLock<Statuses> = OnceLock::new();
    S.get_or_init(Default::default)
}

fn statuses_of(name: &str) -> Vec<(i64, BatchStatus)> {
    let mut v = statuses()
        .lock()
        .unwrap()
        .get(name)
        .cloned()
        .unwrap_or_default();
    v.sort_by_key(|(s, _)| *s);
    v
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct DocsSource {
    name: String,
    /// JSON documents, as strings.
    docs: Vec<String>,
}

#[async_trait]
impl SourceConfig for DocsSource {
    async fn build(&self, mut cx: SourceContext) -> Result<Source, BoxError> {
        let (name, docs) = (self.name.clone(), self.docs.clone());
        Ok(Box::pin(async move {
            let mut waits = Vec::new();
            for d in docs {
                let d: Json = serde_json::from_str(&d)?;
                let seq = d["seq"].as_i64().unwrap_or(-1);
                let v: Value = serde_json::from_value(d).unwrap();
                let mut b =
                    EventBatch::new(vec![LogEvent::from_value(v, Default::default()).into()]);
                let (n, rx) = BatchNotifier::new_with_receiver();
                b.attach_notifier(&n);
                drop(n);
                waits.push((seq, rx));
                cx.out.send(b).await?;
            }
            let mut handles = Vec::new();
            for (seq, rx) in waits {
                let name = name.clone();
                handles.push(tokio::spawn(async move {
                    let s = rx.wait().await;
                    statuses()
                        .lock()
                        .unwrap()
                        .entry(name)
                        .or_default()
                        .push((seq, s));
                }));
            }
            for h in handles {
                h.await?;
            }
            Ok(())
        }))
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::default_output(DataType::LOG)]
    }
    fn can_acknowledge(&self) -> bool {
        true
    }
}

async fn start(toml: &str) -> RunningTopology {
    let mut r = crate::testkit::full_registry();
    r.add_source::<DocsSource>("es_docs", "test: fixed documents with acknowledgements");
    let config = load_str("test.toml", toml, &r, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    let graph = resolve_graph(&config, false).unwrap_or_else(|e| panic!("{e}"));
    topology::start(config, &graph).await.expect("start")
}

fn config(
    name: &str,
    data: &std::path::Path,
    docs: &[Json],
    sink_extra: &str,
    addr: SocketAddr,
) -> String {
    let docs: Vec<String> = docs.iter().map(|d| format!("'{}'", d)).collect();
    // The docs go through TOML as JSON strings (literal strings: no escaping needed).
    format!(
        r#"
data_dir = "{data}"
[api]
enabled = false
[sources.src]
type = "es_docs"
name = "{name}"
acknowledgements = true
docs = [{docs}]
[sinks.es]
type = "elasticsearch"
inputs = ["src"]
endpoints = ["http://{addr}"]
request.retry_initial_backoff_secs = 0.01
request.retry_max_duration_secs = 0.05
{batch}
{sink_extra}
"#,
        data = data.display(),
        docs = docs.join(", "),
        batch = if sink_extra.contains("batch.") {
            ""
        } else {
            "batch.timeout_secs = 0.05"
        },
    )
}

async fn run(toml: &str) -> Arc<weir_pipeline::metrics::ComponentMetrics> {
    let running = start(toml).await;
    let metrics = running.registry.get("es").expect("sink metrics");
    let outcomes = tokio::time::timeout(Duration::from_secs(20), running.wait())
        .await
        .expect("the pipeline drains");
    for o in outcomes {
        assert!(o.error.is_none(), "{} failed: {:?}", o.id, o.error);
    }
    metrics
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_documents_and_index_names_arrive() {
    let double = Double::default();
    let addr = double.clone().start().await;
    let data = tempfile::tempdir().unwrap();
    let docs = vec![
        json!({"seq": 0, "uid": "a-1", "message": "héllo \"quoted\"\nline", "kubernetes": {"namespace": "shop"}, "n": 1.5}),
        json!({"seq": 1, "uid": "a-2", "message": "second", "kubernetes": {"namespace": "cart"}, "tags": ["x", "y"]}),
        json!({"seq": 2, "uid": "a-3", "message": "third", "kubernetes": {"namespace": "shop"}, "ok": true, "nothing": null}),
    ];
    let metrics = run(&config(
        "es-exact",
        data.path(),
        &docs,
        r#"index = "logs-{{ kubernetes.namespace }}-%Y"
id_key = "uid"
pipeline = "geo ip"
compression = "gzip"
auth.api_key = "aWQ6c2VjcmV0"
allow_plaintext_credentials = true
headers.x-tenant = "blue""#,
        addr,
    ))
    .await;
    let year = chrono::Utc::now().format("%Y").to_string();
    let st = double.lock();
    let got: Vec<_> = st.requests.iter().flat_map(|r| r.docs.clone()).collect();
    assert_eq!(got.len(), 3, "{got:?}");
    for (i, (action, index, id, doc)) in got.iter().enumerate() {
        assert_eq!(action, "index");
        let ns = docs[i]["kubernetes"]["namespace"].as_str().unwrap();
        assert_eq!(index, &format!("logs-{ns}-{year}"));
        assert_eq!(id.as_deref(), docs[i]["uid"].as_str());
        assert_eq!(doc, &docs[i], "document {i} arrives exactly");
    }
    for r in &st.requests {
        assert_eq!(r.query.get("pipeline").map(String::as_str), Some("geo ip"));
        assert_eq!(
            r.query.get("filter_path").map(String::as_str),
            Some(weir_sinks::elasticsearch::bulk::FILTER_PATH),
            "only the per-item status and error are asked for"
        );
        assert_eq!(r.headers["authorization"], "ApiKey aWQ6c2VjcmV0");
        assert_eq!(r.headers["content-type"], "application/x-ndjson");
        assert_eq!(r.headers["x-tenant"], "blue");
        assert_eq!(r.headers["content-encoding"], "gzip");
        assert!(r.gzip_on_the_wire, "the body is gzip on the wire");
    }
    drop(st);
    assert_eq!(
        statuses_of("es-exact"),
        vec![
            (0, EventStatus::Delivered),
            (1, EventStatus::Delivered),
            (2, EventStatus::Delivered)
        ]
    );
    assert_eq!(metrics.sent_events(), 3);
    assert_eq!(metrics.errors_total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_stream_mode_creates_with_timestamp() {
    let double = Double::default();
    let addr = double.clone().start().await;
    let data = tempfile::tempdir().unwrap();
    let docs = vec![
        json!({"seq": 0, "svc": "api", "@timestamp": "2026-11-20T10:00:00Z"}),
        json!({"seq": 1, "svc": "db"}),
    ];
    run(&config(
        "es-ds",
        data.path(),
        &docs,
        r#"mode = "data_stream"
data_stream.dataset = "{{ svc }}"
data_stream.namespace = "prod""#,
        addr,
    ))
    .await;
    let st = double.lock();
    let got: Vec<_> = st.requests.iter().flat_map(|r| r.docs.clone()).collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0, "create");
    assert_eq!(got[0].1, "logs-api-prod");
    assert_eq!(got[0].3, docs[0], "an existing @timestamp is kept as is");
    assert_eq!(got[1].1, "logs-db-prod");
    let ts = got[1].3["@timestamp"].as_str().expect("@timestamp added");
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    assert_eq!(got[1].3["svc"], "db");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_failed_retriable_items_are_resent_and_400s_dead_lettered() {
    let double = Double::default();
    {
        let mut st = double.lock();
        st.fail_503 = 1;
        st.fail_429_once = [1, 4].into();
        st.fail_400 = [3].into();
    }
    let addr = double.clone().start().await;
    let data = tempfile::tempdir().unwrap();
    let dlq = data.path().join("dead/es.jsonl");
    let docs: Vec<Json> = (0..6)
        .map(|i| json!({"seq": i, "message": format!("m{i}")}))
        .collect();
    // One request for all six documents: flushed when the sixth arrives.
    let metrics = run(&config(
        "es-partial",
        data.path(),
        &docs,
        &format!(
            "batch.max_events = 6\nbatch.timeout_secs = 30\ndead_letter_file = \"{}\"",
            dlq.display()
        ),
        addr,
    ))
    .await;
    let st = double.lock();
    let seqs: Vec<Vec<i64>> = st
        .requests
        .iter()
        .map(|r| {
            r.docs
                .iter()
                .map(|d| d.3["seq"].as_i64().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(
        seqs,
        vec![
            vec![0, 1, 2, 3, 4, 5], // 503: all again
            vec![0, 1, 2, 3, 4, 5], // 1 and 4: 429, 3: 400
            vec![1, 4],             // only the retriable ones
        ]
    );
    let mut stored: Vec<i64> = st
        .stored
        .iter()
        .map(|(_, d)| d["seq"].as_i64().unwrap())
        .collect();
    stored.sort();
    assert_eq!(stored, vec![0, 1, 2, 4, 5]);
    drop(st);
    let s = statuses_of("es-partial");
    assert_eq!(s.len(), 6);
    for (seq, status) in s {
        let want = if seq == 3 {
            EventStatus::Rejected
        } else {
            EventStatus::Delivered
        };
        assert_eq!(status, want, "seq {seq}");
    }
    assert_eq!(metrics.sent_events(), 5);
    let errors = metrics.errors();
    assert_eq!(errors.get("rejected"), Some(&1), "{errors:?}");
    assert_eq!(
        errors.get("request_failed"),
        Some(&1),
        "the 503: {errors:?}"
    );
    let lines: Vec<Json> = std::fs::read_to_string(&dlq)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["status"], 400);
    assert_eq!(
        lines[0]["reason"],
        "mapper_parsing_exception: failed to parse field [seq] of type [long] in document"
    );
    assert_eq!(lines[0]["document"], docs[3]);
    assert!(lines[0]["action"]["index"]["_index"]
        .as_str()
        .unwrap()
        .starts_with("weir-"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_acknowledged_only_after_success() {
    let double = Double::default();
    double.lock().unavailable = true;
    let addr = double.clone().start().await;
    let data = tempfile::tempdir().unwrap();
    let docs = vec![json!({"seq": 0}), json!({"seq": 1})];
    let toml = config("es-ack", data.path(), &docs, "", addr);
    let running = start(&toml).await;
    assert!(
        crate::harness::wait_until(Duration::from_secs(10), || double.lock().requests.len()
            >= 3),
        "the sink keeps retrying"
    );
    assert!(
        statuses_of("es-ack").is_empty(),
        "nothing acknowledged while Elasticsearch answers 503"
    );
    double.lock().unavailable = false;
    tokio::time::timeout(Duration::from_secs(20), running.wait())
        .await
        .expect("drains");
    assert_eq!(
        statuses_of("es-ack"),
        vec![(0, EventStatus::Delivered), (1, EventStatus::Delivered)]
    );
    assert_eq!(double.lock().stored.len(), 2);
}

/// `request.concurrency` above 1 (the toolkit's batching stage keeps several bulk requests
/// in flight): every document arrives once and every event is acknowledged, even while the
/// cluster answers 503 for a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_requests_in_flight_deliver_every_document_once() {
    let double = Double::default();
    double.lock().unavailable = true;
    let addr = double.clone().start().await;
    let data = tempfile::tempdir().unwrap();
    let docs: Vec<Json> = (0..24).map(|i| json!({"seq": i})).collect();
    let toml = config(
        "es-concurrency",
        data.path(),
        &docs,
        "batch.max_events = 2\nbatch.timeout_secs = 0.05\nrequest.concurrency = 4",
        addr,
    );
    let running = start(&toml).await;
    assert!(
        crate::harness::wait_until(Duration::from_secs(10), || double.lock().requests.len()
            >= 4),
        "the sink keeps retrying"
    );
    double.lock().unavailable = false;
    tokio::time::timeout(Duration::from_secs(20), running.wait())
        .await
        .expect("drains");
    let statuses = statuses_of("es-concurrency");
    assert_eq!(statuses.len(), 24, "{statuses:?}");
    assert!(statuses
        .iter()
        .enumerate()
        .all(|(i, s)| *s == (i as i64, EventStatus::Delivered)));
    assert_eq!(double.lock().stored.len(), 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_response_that_is_not_json_is_counted_and_retried() {
    let double = Double::default();
    double.lock().garbage = 1;
    let addr = double.clone().start().await;
    let data = tempfile::tempdir().unwrap();
    let docs = vec![json!({"seq": 0, "uid": "x"})];
    let metrics = run(&config(
        "es-garbage",
        data.path(),
        &docs,
        "id_key = \"uid\"",
        addr,
    ))
    .await;
    assert_eq!(metrics.errors().get("bulk_response"), Some(&1));
    assert_eq!(statuses_of("es-garbage"), vec![(0, EventStatus::Delivered)]);
    let st = double.lock();
    assert_eq!(st.requests.len(), 2, "sent again after the unusable answer");
    assert_eq!(st.stored.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_fails_over_to_the_next() {
    let double = Double::default();
    let addr = double.clone().start().await;
    // Nothing listens on `dead` (bound then released).
    let dead = crate::harness::free_addr();
    let data = tempfile::tempdir().unwrap();
    let docs = vec![json!({"seq": 0}), json!({"seq": 1})];
    // No health check: the first request goes to the dead endpoint.
    let toml = config(
        "es-failover",
        data.path(),
        &docs,
        "healthcheck = false",
        addr,
    )
    .replace(
        &format!("endpoints = [\"http://{addr}\"]"),
        &format!("endpoints = [\"http://{dead}\", \"http://{addr}\"]"),
    );
    let metrics = run(&toml).await;
    assert_eq!(
        statuses_of("es-failover"),
        vec![(0, EventStatus::Delivered), (1, EventStatus::Delivered)]
    );
    assert_eq!(double.lock().stored.len(), 2);
    assert_eq!(metrics.sent_events(), 2);
    assert!(metrics
        .errors()
        .get("request_failed")
        .is_some_and(|n| *n >= 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_detection_sends_type_only_to_elasticsearch_6() {
    // Each double enforces its version's rule: 6 refuses an action without `_type`, 8, 9 and
    // OpenSearch 2 one with it, 7 and OpenSearch 1 take both (so the list checks them).
    for (flavor, want) in [
        (Flavor::Es6, Some("_doc")),
        (Flavor::Es7, None),
        (Flavor::Es8, None),
        (Flavor::Es9, None),
        (Flavor::Os1, None),
        (Flavor::Os2, None),
    ] {
        let double = Double::of(flavor);
        let addr = double.clone().start().await;
        let data = tempfile::tempdir().unwrap();
        let name = format!("es-version-{flavor:?}");
        let docs = vec![json!({"seq": 0, "m": "a"}), json!({"seq": 1, "m": "b"})];
        let metrics = run(&config(&name, data.path(), &docs, "", addr)).await;
        let st = double.lock();
        let types: Vec<Option<String>> = st.requests.iter().flat_map(|r| r.types.clone()).collect();
        assert_eq!(types, vec![want.map(String::from); 2], "{flavor:?}");
        // The whole action line: `{"index":{"_index":"weir-YYYY.MM.DD"}}`, plus
        // `"_type":"_doc"` for 6 only; nothing else.
        for r in &st.requests {
            for (action, (_, index, _, _)) in r.actions.iter().zip(&r.docs) {
                assert!(
                    index.starts_with("weir-") && index.len() == "weir-2026.11.27".len(),
                    "{flavor:?}: {index}"
                );
                let mut meta = json!({"_index": index});
                if let Some(t) = want {
                    meta["_type"] = json!(t);
                }
                assert_eq!(action, &json!({"index": meta}), "{flavor:?}");
            }
        }
        assert_eq!(st.stored.len(), 2, "{flavor:?}");
        assert!(
            st.requests.iter().all(|r| !r.gzip_on_the_wire),
            "no compression unless asked"
        );
        drop(st);
        assert_eq!(
            statuses_of(&name),
            vec![(0, EventStatus::Delivered), (1, EventStatus::Delivered)],
            "{flavor:?}"
        );
        assert_eq!(
            metrics.errors_total(),
            0,
            "{flavor:?}: {:?}",
            metrics.errors()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_version_stands_in_for_detection() {
    let docs = vec![json!({"seq": 0}), json!({"seq": 1})];
    // No health check, `api_version = 6`: `_type` is sent and Elasticsearch 6 takes it.
    let double = Double::of(Flavor::Es6);
    let addr = double.clone().start().await;
    let data = tempfile::tempdir().unwrap();
    run(&config(
        "es-api6",
        data.path(),
        &docs,
        "healthcheck = false\napi_version = 6",
        addr,
    ))
    .await;
    assert_eq!(double.lock().stored.len(), 2);
    assert_eq!(
        statuses_of("es-api6"),
        vec![(0, EventStatus::Delivered), (1, EventStatus::Delivered)]
    );
    // Nothing detected and nothing said: the 8.x format, which 6 refuses whole (400, not
    // retried): the documents are rejected, with the server's reason in the dead letters.
    let double = Double::of(Flavor::Es6);
    let addr = double.clone().start().await;
    let dlq = data.path().join("dlq.jsonl");
    let metrics = run(&config(
        "es-undetected",
        data.path(),
        &docs,
        &format!(
            "healthcheck = false\ndead_letter_file = \"{}\"",
            dlq.display()
        ),
        addr,
    ))
    .await;
    assert!(double.lock().stored.is_empty());
    assert_eq!(
        statuses_of("es-undetected"),
        vec![(0, EventStatus::Rejected), (1, EventStatus::Rejected)]
    );
    assert_eq!(metrics.errors().get("rejected"), Some(&2));
    let dead = std::fs::read_to_string(&dlq).unwrap();
    assert_eq!(dead.lines().count(), 2, "{dead}");
    assert!(dead.contains("type is missing"), "{dead}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_streams_need_elasticsearch_7_9_or_opensearch() {
    let docs = vec![json!({"seq": 0, "svc": "api"})];
    for flavor in [Flavor::Es6, Flavor::Es78] {
        let double = Double::of(flavor);
        let addr = double.clone().start().await;
        let data = tempfile::tempdir().unwrap();
        let toml = config(
            "es-ds-old",
            data.path(),
            &docs,
            "mode = \"data_stream\"",
            addr,
        );
        let mut r = crate::testkit::full_registry();
        r.add_source::<DocsSource>("es_docs", "test");
        let config = load_str("test.toml", &toml, &r, &|_| None).unwrap();
        let graph = resolve_graph(&config, false).unwrap();
        let err = match topology::start(config, &graph).await {
            Ok(_) => panic!("{flavor:?}: a data stream sink started"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("needs Elasticsearch 7.9 or later"), "{err}");
        assert!(double.lock().requests.is_empty());
    }
    for flavor in [Flavor::Es7, Flavor::Es9, Flavor::Os1, Flavor::Os2] {
        let double = Double::of(flavor);
        let addr = double.clone().start().await;
        let data = tempfile::tempdir().unwrap();
        let name = format!("es-ds-{flavor:?}");
        run(&config(
            &name,
            data.path(),
            &docs,
            "mode = \"data_stream\"",
            addr,
        ))
        .await;
        let st = double.lock();
        assert_eq!(st.stored.len(), 1, "{flavor:?}");
        let (action, index, _, doc) = &st.requests[0].docs[0];
        assert_eq!(
            (action.as_str(), index.as_str()),
            ("create", "logs-generic-default")
        );
        assert!(doc["@timestamp"].is_string(), "{flavor:?}: {doc}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_custom_ca_and_basic_auth() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = crate::harness::make_certs(certs.path());
    let double = Double::default();
    let addr = double.clone().start_tls(&cert, &key).await;
    let https = |toml: String| {
        toml.replace(
            &format!("\"http://{addr}\""),
            &format!("\"https://localhost:{}\"", addr.port()),
        )
    };
    let data = tempfile::tempdir().unwrap();
    let docs = vec![json!({"seq": 0, "m": "über TLS"}), json!({"seq": 1})];
    run(&https(config(
        "es-tls",
        data.path(),
        &docs,
        &format!(
            "tls.ca_file = \"{}\"\nauth.user = \"elastic\"\nauth.password = \"s3cr3t pass\"",
            ca.display()
        ),
        addr,
    )))
    .await;
    assert_eq!(
        statuses_of("es-tls"),
        vec![(0, EventStatus::Delivered), (1, EventStatus::Delivered)]
    );
    {
        let st = double.lock();
        assert_eq!(st.stored.len(), 2);
        assert_eq!(st.stored[0].1, docs[0]);
        for r in &st.requests {
            // base64("elastic:s3cr3t pass")
            assert_eq!(
                r.headers["authorization"],
                "Basic ZWxhc3RpYzpzM2NyM3QgcGFzcw=="
            );
        }
        assert_eq!(st.tls_handshake_errors, 0);
    }
    // Without the CA the server is not trusted: nothing is sent; after `request.retry_attempts` the
    // events are given up as errored (not acknowledged).
    let before = double.lock().requests.len();
    let metrics = run(&https(config(
        "es-tls-untrusted",
        data.path(),
        &docs,
        "request.retry_attempts = 2",
        addr,
    )))
    .await;
    assert_eq!(
        statuses_of("es-tls-untrusted"),
        vec![(0, EventStatus::Errored), (1, EventStatus::Errored)]
    );
    let st = double.lock();
    assert_eq!(st.requests.len(), before, "no request got through");
    assert!(st.tls_handshake_errors >= 3, "{}", st.tls_handshake_errors);
    assert_eq!(metrics.errors().get("gave_up"), Some(&2));
    assert_eq!(metrics.sent_events(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_answering_503_fails_over_to_the_next() {
    let (sick, well) = (Double::default(), Double::default());
    sick.lock().unavailable = true;
    let (sick_addr, well_addr) = (sick.clone().start().await, well.clone().start().await);
    let data = tempfile::tempdir().unwrap();
    let docs = vec![json!({"seq": 0}), json!({"seq": 1})];
    // The health check finds the first node up (it answers `GET /`); its `_bulk` says 503.
    let toml = config("es-503-failover", data.path(), &docs, "", sick_addr).replace(
        &format!("endpoints = [\"http://{sick_addr}\"]"),
        &format!("endpoints = [\"http://{sick_addr}\", \"http://{well_addr}\"]"),
    );
    let metrics = run(&toml).await;
    assert_eq!(
        statuses_of("es-503-failover"),
        vec![(0, EventStatus::Delivered), (1, EventStatus::Delivered)]
    );
    assert!(!sick.lock().requests.is_empty(), "the first node was tried");
    assert!(sick.lock().stored.is_empty());
    assert_eq!(well.lock().stored.len(), 2);
    assert!(metrics
        .errors()
        .get("request_failed")
        .is_some_and(|n| *n >= 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_documents_reach_the_dead_letter_output_and_retriable_ones_do_not() {
    let double = Double::default();
    {
        let mut st = double.lock();
        st.fail_429_once = [1, 4].into();
        st.fail_400 = [3, 5].into();
    }
    let addr = double.clone().start().await;
    let data = tempfile::tempdir().unwrap();
    let dlq = data.path().join("es.jsonl");
    let out = data.path().join("dead-letters.json");
    let docs: Vec<Json> = (0..6)
        .map(|i| json!({"seq": i, "message": format!("m{i}")}))
        .collect();
    let toml = format!(
        "{}\n[sinks.dead]\ntype = \"file\"\ninputs = [\"es.dead_letter\"]\npath = \"{}\"\n",
        config(
            "es-dlq-output",
            data.path(),
            &docs,
            &format!(
                "index = \"test-idx\"\nbatch.max_events = 6\nbatch.timeout_secs = 30\ndead_letter_file = \"{}\"",
                dlq.display()
            ),
            addr,
        ),
        out.display()
    );
    let metrics = run(&toml).await;
    // The refused documents, in order, with the server's status, type and reason.
    let reason = "failed to parse field [seq] of type [long] in document";
    let want: String = [3, 5]
        .iter()
        .map(|i| {
            format!(
                "{{\"dead_letter\":{{\"component\":\"es\",\"error_type\":\"mapper_parsing_exception\",\"index\":\"test-idx\",\"reason\":\"{reason}\",\"status\":400}},\"message\":\"m{i}\",\"seq\":{i}}}\n"
            )
        })
        .collect();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), want);
    // The 429s were sent again and stored, not dead-lettered.
    let st = double.lock();
    let mut stored: Vec<i64> = st
        .stored
        .iter()
        .map(|(_, d)| d["seq"].as_i64().unwrap())
        .collect();
    stored.sort();
    assert_eq!(stored, vec![0, 1, 2, 4]);
    assert_eq!(st.requests.len(), 2, "one retry, of the 429s only");
    drop(st);
    // The originals are finalized Rejected; the copies are new events.
    let s = statuses_of("es-dlq-output");
    let rejected: Vec<i64> = s
        .iter()
        .filter(|(_, st)| *st == EventStatus::Rejected)
        .map(|(seq, _)| *seq)
        .collect();
    assert_eq!(rejected, vec![3, 5], "{s:?}");
    assert_eq!(metrics.errors().get("rejected"), Some(&2));
    // The file keeps working alongside the output.
    assert_eq!(std::fs::read_to_string(&dlq).unwrap().lines().count(), 2);
}

/// A slow dead-letter consumer holds the sink back (nothing is dropped): with the consumer
/// stalled and its buffer full, the sink stops sending; once it moves, every refused document
/// arrives there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_dead_letter_consumer_holds_the_sink_back() {
    let double = Double::default();
    double.lock().fail_400 = (0..20).collect();
    let addr = double.clone().start().await;
    let data = tempfile::tempdir().unwrap();
    let docs: Vec<Json> = (0..20).map(|i| json!({"seq": i})).collect();
    let toml = format!(
        "{}\n[sinks.dead]\ntype = \"gated\"\ninputs = [\"es.dead_letter\"]\nname = \"es-dlq-stalled\"\nstalled = true\nbuffer.max_events = 1\n",
        config(
            "es-dlq-bp",
            data.path(),
            &docs,
            "batch.max_events = 1\nbatch.timeout_secs = 30",
            addr,
        ),
    );
    let running = start(&toml).await;
    let gated = crate::testkit::state("es-dlq-stalled");
    // One dead letter fits in the consumer's buffer; the sink waits on the next one.
    assert!(
        crate::harness::wait_until(Duration::from_secs(10), || double.lock().requests.len()
            >= 2),
        "the sink sends"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent_while_stalled = double.lock().requests.len();
    assert!(
        sent_while_stalled < 5,
        "the sink is held back by its dead-letter consumer: {sent_while_stalled} requests"
    );
    assert_eq!(gated.delivered_count(), 0);
    gated.open_gate();
    let outcomes = tokio::time::timeout(Duration::from_secs(20), running.wait())
        .await
        .expect("drains");
    for o in outcomes {
        assert!(o.error.is_none(), "{} failed: {:?}", o.id, o.error);
    }
    let mut got = gated.delivered.lock().unwrap().clone();
    got.sort();
    assert_eq!(
        got,
        (0..20).collect::<Vec<i64>>(),
        "every dead letter, once"
    );
    assert_eq!(double.lock().requests.len(), 20);
}
