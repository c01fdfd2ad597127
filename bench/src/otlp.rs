//! `weir-bench otlp`: spans through the `otlp` source -> `otlp` sink, on one core.
//!
//! - **weir**: `otlp` source (gRPC) -> `otlp` sink (gRPC), `weir run --threads 1` pinned to
//!   core 0.
//! - **the load generator** (this process, pinned to core 1): real OTLP/gRPC
//!   `TraceService/Export` calls, `--in-flight` at a time on one HTTP/2 connection, each a
//!   request of `--spans-per-request` spans (resource and scope attributes as an
//!   instrumented service sends them, 8 attributes per span, an event on one in ten). The
//!   requests are built and encoded once, before timing; they are sent as their bytes, so
//!   the generator costs little. A refused call (`RESOURCE_EXHAUSTED`, `UNAVAILABLE`) is
//!   sent again.
//! - **the receiver** (this process, core 1): an OTLP/gRPC `TraceService` that decodes each
//!   request down to its spans (kept as bytes) and counts them; the first request of each
//!   run is decoded fully and checked.
//! - Time: from the first call to the moment the receiver has counted every span. CPU: weir's
//!   user + system time over the same span (`/proc/PID/stat`).
//! - **baseline**, for reference (no goal): protobuf decode + encode of the same requests
//!   with the generated types, on this thread (core 0).

use std::convert::Infallible;
use std::hint::black_box;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::baseline::thread_cpu_ns;
use crate::report::thousands;
use crate::runner::{self, ScratchDir};

pub const USAGE: &str = "\
weir-bench otlp: OTLP/gRPC spans through weir's otlp source -> otlp sink, on one core

USAGE:
    weir-bench otlp [OPTIONS]

OPTIONS:
    --spans N              Spans per run (default 1000000)
    --spans-per-request N  Spans in each export request (default 200)
    --in-flight N          Export calls in flight at once (default 4)
    --runs N               Runs; the median is reported (default 3)
    --weir PATH            The weir binary (default: <workspace>/target/release/weir)
    --data-dir DIR         Scratch space (default: <workspace>/target/bench-data)
    --no-taskset           Do not pin weir to core 0 (and the generator to core 1)
";

const EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// Distinct requests generated; the run cycles through them.
const DISTINCT: usize = 32;

struct Args {
    spans: u64,
    per_request: usize,
    in_flight: usize,
    runs: usize,
    weir: PathBuf,
    data_dir: PathBuf,
    taskset: bool,
}

fn parse_args(argv: &[String]) -> Result<Option<Args>> {
    let root = crate::workspace_root();
    let mut a = Args {
        spans: 1_000_000,
        per_request: 200,
        in_flight: 4,
        runs: 3,
        weir: root.join("target/release/weir"),
        data_dir: root.join("target/bench-data"),
        taskset: true,
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))
        };
        let number = |v: String| -> Result<u64> {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("{flag}: expected a positive integer, got {v:?}"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--spans" => a.spans = number(value()?)?,
            "--spans-per-request" => a.per_request = number(value()?)? as usize,
            "--in-flight" => a.in_flight = number(value()?)? as usize,
            "--runs" => a.runs = number(value()?)? as usize,
            "--weir" => a.weir = PathBuf::from(value()?),
            "--data-dir" => a.data_dir = PathBuf::from(value()?),
            "--no-taskset" => a.taskset = false,
            other => bail!("unknown argument {other:?}; see `weir-bench otlp --help`"),
        }
    }
    Ok(Some(a))
}

// ---- the spans ----

fn s(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
    }
}

fn i(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
    }
}

const SERVICES: [&str; 6] = [
    "frontend", "cart", "checkout", "payment", "shipping", "catalog",
];
const ROUTES: [&str; 5] = [
    "/api/cart/{id}",
    "/api/checkout",
    "/api/products/{id}",
    "/api/payment/charge",
    "/healthz",
];

/// One export request of `n` spans from one service, as an instrumented service sends it.
fn request(rng: &mut SmallRng, n: usize) -> ExportTraceServiceRequest {
    let svc = SERVICES[rng.random_range(0..SERVICES.len())];
    let t0: u64 = 1_764_000_000_000_000_000 + rng.random_range(0..1_000_000_000_000);
    let mut spans = Vec::with_capacity(n);
    let mut trace_id = [0u8; 16];
    let mut parent = Vec::new();
    for k in 0..n {
        if k % 8 == 0 {
            rng.fill(&mut trace_id);
            parent.clear();
        }
        let mut span_id = [0u8; 8];
        rng.fill(&mut span_id);
        let route = ROUTES[rng.random_range(0..ROUTES.len())];
        let status: i64 = [200, 200, 200, 201, 404, 500][rng.random_range(0..6)];
        let start = t0 + k as u64 * 1_000_000;
        let events = if k % 10 == 0 {
            vec![span::Event {
                time_unix_nano: start + 500,
                name: "exception".into(),
                attributes: vec![
                    s("exception.type", "TimeoutError"),
                    s("exception.message", "upstream timed out after 5000ms"),
                ],
                dropped_attributes_count: 0,
            }]
        } else {
            Vec::new()
        };
        spans.push(Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            trace_state: String::new(),
            parent_span_id: parent.clone(),
            flags: 1,
            name: format!("GET {route}"),
            kind: if k % 8 == 0 {
                span::SpanKind::Server
            } else {
                span::SpanKind::Client
            } as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start + rng.random_range(100_000..90_000_000),
            attributes: vec![
                s("http.request.method", "GET"),
                s("http.route", route),
                s("url.path", &route.replace("{id}", &rng.random_range(1..99_999).to_string())),
                i("http.response.status_code", status),
                s("server.address", svc),
                i("server.port", 8080),
                s("network.peer.address", &format!("10.244.{}.{}", rng.random_range(0..8), rng.random_range(1..250))),
                s("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36"),
            ],
            dropped_attributes_count: 0,
            events,
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status: Some(Status {
                message: String::new(),
                code: if status >= 500 { 2 } else { 0 },
            }),
        });
        parent = span_id.to_vec();
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    s("service.name", svc),
                    s("service.version", "1.4.2"),
                    s("deployment.environment.name", "prod"),
                    s("host.name", "node-3"),
                    s("k8s.namespace.name", "shop"),
                    s("k8s.pod.name", &format!("{svc}-6d9f7c-x2b9q")),
                    s("telemetry.sdk.name", "opentelemetry"),
                    s("telemetry.sdk.language", "python"),
                    s("telemetry.sdk.version", "1.28.0"),
                ],
                dropped_attributes_count: 0,
                entity_refs: Vec::new(),
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "opentelemetry.instrumentation.flask".into(),
                    version: "0.49b0".into(),
                    attributes: Vec::new(),
                    dropped_attributes_count: 0,
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.27.0".into(),
        }],
    }
}

// ---- raw gRPC: messages as their encoded bytes ----

/// A codec that passes protobuf messages through as bytes (the generator sends requests
/// encoded beforehand; the receiver decodes what it needs itself).
#[derive(Clone, Copy, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// `ExportTraceServiceRequest` down to its spans, each kept as its bytes (wire-compatible
/// with the real message: the same tags, spans length-delimited).
mod light {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Request {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(bytes = "bytes", repeated, tag = "2")]
        pub spans: Vec<bytes::Bytes>,
    }
}

#[derive(Default)]
struct Received {
    spans: AtomicU64,
    requests: AtomicU64,
    /// Set to check the next request fully; the problem found, if any.
    check_next: AtomicBool,
    problem: Mutex<Option<String>>,
}

/// Checks one forwarded request against what the generator sends.
fn check(body: &[u8]) -> Option<String> {
    let req = match ExportTraceServiceRequest::decode(body) {
        Ok(r) => r,
        Err(e) => return Some(format!("the receiver could not decode a request: {e}")),
    };
    let rs = req.resource_spans.first()?;
    let has_service = rs
        .resource
        .as_ref()
        .is_some_and(|r| r.attributes.iter().any(|a| a.key == "service.name"));
    let ss = rs.scope_spans.first()?;
    let sp = ss.spans.first()?;
    if !has_service
        || sp.trace_id.len() != 16
        || sp.span_id.len() != 8
        || sp.attributes.len() != 8
        || !sp.name.starts_with("GET /")
        || ss.scope.as_ref().map(|s| s.name.as_str()) != Some("opentelemetry.instrumentation.flask")
    {
        return Some(format!("a forwarded span is not what was sent: {sp:?}"));
    }
    None
}

struct ExportSvc(Arc<Received>);

impl tonic::server::UnaryService<Bytes> for ExportSvc {
    type Response = Bytes;
    type Future = std::future::Ready<Result<tonic::Response<Bytes>, tonic::Status>>;
    fn call(&mut self, req: tonic::Request<Bytes>) -> Self::Future {
        let body = req.into_inner();
        let r = &self.0;
        if r.check_next.swap(false, Ordering::Relaxed) {
            if let Some(p) = check(&body) {
                *r.problem.lock().unwrap_or_else(|e| e.into_inner()) = Some(p);
            }
        }
        let n = match light::Request::decode(body) {
            Ok(req) => req
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .map(|s| s.spans.len() as u64)
                .sum(),
            Err(e) => {
                return std::future::ready(Err(tonic::Status::invalid_argument(format!(
                    "protobuf: {e}"
                ))))
            }
        };
        r.requests.fetch_add(1, Ordering::Relaxed);
        r.spans.fetch_add(n, Ordering::Relaxed);
        // An empty ExportTraceServiceResponse (no partial success) encodes to no bytes.
        std::future::ready(Ok(tonic::Response::new(Bytes::new())))
    }
}

#[derive(Clone)]
struct Receiver(Arc<Received>);

impl tonic::server::NamedService for Receiver {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

impl<B> tonic::codegen::Service<http::Request<B>> for Receiver
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;
    fn poll_ready(&mut self, _: &mut TaskContext<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let r = self.0.clone();
        Box::pin(async move {
            if req.uri().path() != EXPORT {
                let mut resp = http::Response::new(tonic::body::Body::default());
                resp.headers_mut().insert(
                    tonic::Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                return Ok(resp);
            }
            let mut grpc =
                tonic::server::Grpc::new(Raw).apply_max_message_size_config(Some(256 << 20), None);
            Ok(grpc.unary(ExportSvc(r), req).await)
        })
    }
}

// ---- running weir ----

/// CPU time (user + system) of process `pid` so far, in seconds.
fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    // SC_CLK_TCK is 100 on Linux.
    Some((utime + stime) / 100.0)
}

fn spawn_weir(weir: &Path, config: &Path, taskset: bool, stderr: &Path) -> Result<Child> {
    let mut argv: Vec<String> = Vec::new();
    if taskset {
        argv.extend(["taskset".into(), "-c".into(), "0".into()]);
    }
    argv.push(weir.to_string_lossy().into_owned());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .args(["run", "--threads", "1", "--config"])
        .arg(config)
        .env("WEIR_LOG", "info")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(stderr)?));
    cmd.spawn().context("cannot start weir")
}

fn free_port() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// One measured run: (wall secs, weir CPU secs, calls refused and resent).
#[allow(clippy::too_many_arguments)]
fn one_run(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    weir: &Path,
    work: &Path,
    requests: &Arc<Vec<Bytes>>,
    received: &Arc<Received>,
    receiver: SocketAddr,
    taskset: bool,
) -> Result<(f64, Option<f64>, u64)> {
    let grpc = free_port()?;
    let config = runner::write_config(
        work,
        "otlp",
        &format!(
            "[sources.otel]\ntype = \"otlp\"\ngrpc.address = \"{grpc}\"\nhttp.enabled = false\n\n\
             [sinks.out]\ntype = \"otlp\"\ninputs = [\"otel.traces\"]\nendpoint = \"http://{receiver}\"\n\
             batch.timeout_secs = 0.1\n"
        ),
    )?;
    let stderr = work.join("otlp.stderr");
    let mut child = spawn_weir(weir, &config, taskset, &stderr)?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(grpc).is_err() {
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            bail!(
                "weir does not listen on {grpc}: {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let total_requests = args.spans.div_ceil(args.per_request as u64);
    let expected = total_requests * args.per_request as u64;
    let spans0 = received.spans.load(Ordering::Relaxed);
    received.check_next.store(true, Ordering::Relaxed);
    let cpu0 = proc_cpu_secs(pid);
    let started = Instant::now();
    let resent = rt.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
            .connect()
            .await?;
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..args.in_flight {
            let (channel, next, requests) = (channel.clone(), next.clone(), requests.clone());
            tasks.spawn(async move {
                let mut client = tonic::client::Grpc::new(channel);
                let path = http::uri::PathAndQuery::from_static(EXPORT);
                let mut resent = 0u64;
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= total_requests {
                        return Ok::<u64, anyhow::Error>(resent);
                    }
                    let body = requests[k as usize % requests.len()].clone();
                    loop {
                        client.ready().await.context("the channel to weir")?;
                        match client
                            .unary::<Bytes, Bytes, Raw>(
                                tonic::Request::new(body.clone()),
                                path.clone(),
                                Raw,
                            )
                            .await
                        {
                            Ok(_) => break,
                            Err(s)
                                if matches!(
                                    s.code(),
                                    tonic::Code::ResourceExhausted | tonic::Code::Unavailable
                                ) =>
                            {
                                resent += 1;
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            Err(s) => bail!("weir refused an export: {s}"),
                        }
                    }
                }
            });
        }
        let mut resent = 0;
        while let Some(r) = tasks.join_next().await {
            resent += r??;
        }
        Ok::<u64, anyhow::Error>(resent)
    })?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.spans.load(Ordering::Relaxed) - spans0 < expected {
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "the receiver got {} of {expected} spans",
                received.spans.load(Ordering::Relaxed) - spans0
            );
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = proc_cpu_secs(pid).zip(cpu0).map(|(b, a)| b - a);
    // SIGTERM: weir drains and exits 0, its summary says what the sink sent.
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("weir did not stop within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let log = std::fs::read_to_string(&stderr).unwrap_or_default();
    if !status.success() {
        bail!("weir exited with {status}: {log}");
    }
    let (sent, errors) = runner::parse_summary(&log, "out");
    if sent != Some(expected) || !errors.is_empty() {
        bail!("weir's sink sent {sent:?} spans (expected {expected}), errors: {errors:?}");
    }
    if received.spans.load(Ordering::Relaxed) - spans0 != expected {
        bail!("the receiver counted more spans than were sent");
    }
    if let Some(p) = received
        .problem
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        bail!("{p}");
    }
    Ok((secs, cpu, resent))
}

/// The baseline: decode + encode every request of a run with the generated types.
fn decode_encode(requests: &[Bytes], count: u64) -> Result<(f64, Option<f64>)> {
    let mut out = Vec::with_capacity(1 << 20);
    let cpu0 = thread_cpu_ns();
    let started = Instant::now();
    for k in 0..count {
        let req = ExportTraceServiceRequest::decode(&requests[k as usize % requests.len()][..])?;
        out.clear();
        req.encode(&mut out)?;
        black_box(&out);
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = thread_cpu_ns()
        .zip(cpu0)
        .map(|(b, a)| b.saturating_sub(a) as f64 / 1e9);
    Ok((secs, cpu))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn main(argv: &[String]) -> Result<bool> {
    let Some(args) = parse_args(argv)? else {
        print!("{USAGE}");
        return Ok(true);
    };
    if !args.weir.is_file() {
        bail!(
            "the weir binary is not at {}: build it with `cargo build --release -p weir`",
            args.weir.display()
        );
    }
    std::fs::create_dir_all(&args.data_dir)?;
    let scratch = ScratchDir::create(&args.data_dir)?;
    let taskset = args.taskset && runner::which("taskset").is_some();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());

    let mut rng = SmallRng::seed_from_u64(7);
    let requests: Arc<Vec<Bytes>> = Arc::new(
        (0..DISTINCT)
            .map(|_| Bytes::from(request(&mut rng, args.per_request).encode_to_vec()))
            .collect(),
    );
    let bytes_per_span = requests.iter().map(|r| r.len()).sum::<usize>() as f64
        / (DISTINCT * args.per_request) as f64;

    // The runtime's thread (generator and receiver) inherits this thread's affinity.
    if taskset && cpus > 1 {
        runner::set_own_affinity("1")?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let received = Arc::new(Received::default());
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let receiver = listener.local_addr()?;
    let svc = Receiver(received.clone());
    rt.spawn(async move {
        let incoming = tokio_stream_of(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(incoming)
            .await;
    });
    if taskset {
        runner::set_own_affinity("0")?;
    }
    let load_before = crate::load_average();
    let total = args.spans.div_ceil(args.per_request as u64) * args.per_request as u64;

    let (mut w, mut c) = (Vec::new(), Vec::new());
    for k in 1..=args.runs {
        let (secs, cpu) = decode_encode(&requests, total / args.per_request as u64)?;
        eprintln!(
            "  baseline decode + encode run {k}/{}: {secs:.3} s, {} spans/s",
            args.runs,
            thousands((total as f64 / secs) as u64)
        );
        w.push(secs);
        c.extend(cpu);
    }
    let base = total as f64 / median(w);
    let base_cpu = (!c.is_empty()).then(|| total as f64 / median(c));

    let weir = args.weir.canonicalize()?;
    let (mut w, mut c) = (Vec::new(), Vec::new());
    for k in 1..=args.runs {
        let (secs, cpu, resent) = one_run(
            &rt, &args, &weir, &scratch.0, &requests, &received, receiver, taskset,
        )?;
        eprintln!(
            "  weir run {k}/{}: {secs:.3} s, {} spans/s{}, {resent} calls refused and resent",
            args.runs,
            thousands((total as f64 / secs) as u64),
            cpu.map_or(String::new(), |c| format!(", CPU {c:.2} s")),
        );
        w.push(secs);
        c.extend(cpu);
    }
    let load_after = crate::load_average();
    let wall = total as f64 / median(w);
    let cpu = (!c.is_empty()).then(|| total as f64 / median(c));
    println!("| measurement | spans/s | spans/CPU-s | vs baseline by CPU |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| baseline: protobuf decode + encode of the same requests, 1 thread | {} | {} | 1.00x |",
        thousands(base as u64),
        base_cpu.map_or("-".into(), |c| thousands(c as u64)),
    );
    println!(
        "| weir: otlp source (gRPC) -> otlp sink (gRPC), `--threads 1`{} | {} | {} | {} |",
        if taskset { ", pinned to core 0" } else { "" },
        thousands(wall as u64),
        cpu.map_or("-".into(), |c| thousands(c as u64)),
        cpu.zip(base_cpu)
            .map_or("-".into(), |(a, b)| format!("{:.2}x", a / b)),
    );
    println!();
    println!(
        "{} spans per run in requests of {} ({:.0} bytes of protobuf per span), {} calls in flight, median of {} runs; load average before: {load_before}, after: {load_after}",
        thousands(total),
        args.per_request,
        bytes_per_span,
        args.in_flight,
        args.runs
    );
    Ok(true)
}

fn tokio_stream_of(
    l: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(l, |l| async move {
        let r = l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((r, l))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_light_view_counts_the_spans_of_a_real_request() {
        let mut rng = SmallRng::seed_from_u64(1);
        let req = request(&mut rng, 37);
        let bytes = Bytes::from(req.encode_to_vec());
        let light = light::Request::decode(bytes.clone()).unwrap();
        assert_eq!(light.resource_spans[0].scope_spans[0].spans.len(), 37);
        assert_eq!(check(&bytes), None);
        let span = Span::decode(light.resource_spans[0].scope_spans[0].spans[3].clone()).unwrap();
        assert_eq!(span, req.resource_spans[0].scope_spans[0].spans[3]);
    }
}
