//! `weir-bench elasticsearch`: demo logs -> `elasticsearch` sink, against a `_bulk` double
//! that counts, next to serialising the same events to NDJSON alone.
//!
//! - **weir**: `demo` (JSON access-log lines, `count` events) -> `elasticsearch` sink with its
//!   defaults, `weir run --threads 1` pinned to core 0. The sink talks HTTP/1.1 to the
//!   double, which runs in this process on its own thread (pinned to core 1).
//! - **the double** ([`BulkDouble`]) speaks the real `_bulk` contract: it splits the NDJSON
//!   body into action/document pairs, parses every action line and checks every document is
//!   JSON, and answers with Elasticsearch 8's response (`took`, `errors`, one item per
//!   document with `_index`, `_id`, `_version`, `result`, `_shards`, `_seq_no`,
//!   `_primary_term` and `status`; `filter_path` honoured). It keeps nothing but counts.
//!   `GET /` answers the version document of an 8.15 node (the sink's health check).
//! - **baselines** (this process, one thread, pinned to core 0): (1) the same demo generator
//!   and the same serialisation (action line + `serde_json` of the event's fields) into one
//!   buffer per 10,000 documents; (2) the serialisation alone, of events generated
//!   beforehand (not timed).
//! - **weir demo -> blackhole**, for reference: what the source costs without the sink.

use std::borrow::Cow;
use std::hint::black_box;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use serde::Deserialize;
use weir_pipeline::event::{LogEvent, Value};
use weir_sources::demo::{generate, DemoFormat, Stamp};

use crate::baseline::thread_cpu_ns;
use crate::report::thousands;
use crate::runner::{self, Runner, ScratchDir};

pub const USAGE: &str = "\
weir-bench elasticsearch: demo logs -> elasticsearch sink against a counting _bulk double,
next to serialising the same events to NDJSON alone

USAGE:
    weir-bench elasticsearch [OPTIONS]

OPTIONS:
    --events N         Events per run (default 1000000)
    --runs N           Runs of each measurement; the median is reported (default 3)
    --weir PATH        The weir binary (default: <workspace>/target/release/weir)
    --data-dir DIR     Scratch space (default: <workspace>/target/bench-data)
    --no-taskset       Do not pin weir and the baselines to core 0 (and the double to core 1)
";

/// The goal of the issue: the sink at least this fraction of the serialisation's rate.
const GOAL: f64 = 0.70;
/// Documents per serialised buffer in the baselines (the sink's default `batch.max_events`).
const BASELINE_BATCH: usize = 10_000;

struct Args {
    events: u64,
    runs: usize,
    weir: PathBuf,
    data_dir: PathBuf,
    taskset: bool,
}

fn parse_args(argv: &[String]) -> Result<Option<Args>> {
    let root = crate::workspace_root();
    let mut a = Args {
        events: 1_000_000,
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
            "--events" => a.events = number(value()?)?,
            "--runs" => a.runs = number(value()?)? as usize,
            "--weir" => a.weir = PathBuf::from(value()?),
            "--data-dir" => a.data_dir = PathBuf::from(value()?),
            "--no-taskset" => a.taskset = false,
            other => bail!("unknown argument {other:?}; see `weir-bench elasticsearch --help`"),
        }
    }
    Ok(Some(a))
}

// ---- the double ----

/// What the double saw.
#[derive(Default)]
pub struct Counts {
    pub requests: AtomicU64,
    pub documents: AtomicU64,
    pub body_bytes: AtomicU64,
    /// Requests the double could not parse (answered 400).
    pub malformed: AtomicU64,
    /// Nanoseconds spent answering (splitting, checking, writing the response), from the
    /// whole body in hand to the answer written: how busy the double was.
    pub busy_ns: AtomicU64,
}

#[derive(Clone)]
pub struct BulkDouble(pub Arc<Counts>);

#[derive(Deserialize)]
struct Meta<'a> {
    #[serde(borrow)]
    _index: Cow<'a, str>,
    #[serde(default, borrow)]
    _id: Option<Cow<'a, str>>,
}

/// An action line: exactly one of the actions the sink writes.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Action<'a> {
    #[serde(borrow)]
    Index(Meta<'a>),
    #[serde(borrow)]
    Create(Meta<'a>),
}

/// `filter_path=errors,items.*.status,...`: which response fields to keep.
struct Filter(Option<Vec<Vec<String>>>);

impl Filter {
    fn from_query(q: Option<&str>) -> Filter {
        let Some(v) = q.and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("filter_path="))
                .map(|v| v.replace("%2C", ",").replace("%2c", ","))
        }) else {
            return Filter(None);
        };
        Filter(Some(
            v.split(',')
                .map(|p| p.split('.').map(String::from).collect())
                .collect(),
        ))
    }

    /// Whether the field at `path` (action names as `*`) is kept: some pattern matches it or
    /// a prefix of it.
    fn keeps(&self, path: &[&str]) -> bool {
        let Some(patterns) = &self.0 else {
            return true;
        };
        patterns
            .iter()
            .any(|p| p.len() <= path.len() && p.iter().zip(path).all(|(a, b)| a == "*" || a == b))
    }

    /// Whether anything under `prefix` is kept.
    fn any_under(&self, prefix: &[&str]) -> bool {
        let Some(patterns) = &self.0 else {
            return true;
        };
        patterns.iter().any(|p| {
            p.iter()
                .zip(prefix)
                .all(|(a, b)| a == "*" || a == b || b == &"*")
        })
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Writes one successful item of the response. `id`: the action's `_id`, else the double
/// makes one up from `seq` (only when the answer shows it: with the sink's `filter_path`
/// nothing is formatted per document).
fn write_item(
    out: &mut Vec<u8>,
    f: &Filter,
    action: &str,
    index: &str,
    id: Option<&str>,
    seq: u64,
) {
    let mut first = true;
    let mut field = |out: &mut Vec<u8>, name: &str, write: &dyn Fn(&mut Vec<u8>)| {
        if f.keeps(&["items", action, name]) {
            if !first {
                out.push(b',');
            }
            first = false;
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            write(out);
        }
    };
    out.extend_from_slice(b"{\"");
    out.extend_from_slice(action.as_bytes());
    out.extend_from_slice(b"\":{");
    field(out, "_index", &|o| json_str(o, index));
    field(out, "_id", &|o| match id {
        Some(id) => json_str(o, id),
        None => {
            use std::io::Write as _;
            let _ = write!(o, "\"w{seq:019}\"");
        }
    });
    field(out, "_version", &|o| o.push(b'1'));
    field(out, "result", &|o| o.extend_from_slice(b"\"created\""));
    field(out, "_shards", &|o| {
        o.extend_from_slice(b"{\"total\":2,\"successful\":1,\"failed\":0}")
    });
    field(out, "_seq_no", &|o| {
        o.extend_from_slice(seq.to_string().as_bytes())
    });
    field(out, "_primary_term", &|o| o.push(b'1'));
    field(out, "status", &|o| o.extend_from_slice(b"201"));
    out.extend_from_slice(b"}}");
}

fn es_error(status: StatusCode, kind: &str, reason: &str) -> (StatusCode, Vec<u8>) {
    let body = serde_json::json!({
        "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
        "status": status.as_u16()
    });
    (status, body.to_string().into_bytes())
}

async fn bulk(
    State(d): State<BulkDouble>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1], Vec<u8>) {
    let json = [("content-type", "application/json")];
    let started = Instant::now();
    let (status, out) = answer(&d, uri.query(), &headers, &body);
    d.0.busy_ns
        .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    (status, json, out)
}

/// Parses one bulk body and writes the answer.
fn answer(
    d: &BulkDouble,
    query: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> (StatusCode, Vec<u8>) {
    let started = Instant::now();
    let c = &d.0;
    c.requests.fetch_add(1, Ordering::Relaxed);
    let gz;
    let body = if headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes() == b"gzip")
    {
        let mut out = Vec::new();
        if let Err(e) = flate2::read::GzDecoder::new(body).read_to_end(&mut out) {
            c.malformed.fetch_add(1, Ordering::Relaxed);
            return es_error(
                StatusCode::BAD_REQUEST,
                "parse_exception",
                &format!("gzip: {e}"),
            );
        }
        gz = out;
        &gz[..]
    } else {
        body
    };
    c.body_bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    if !body.ends_with(b"\n") {
        c.malformed.fetch_add(1, Ordering::Relaxed);
        return es_error(
            StatusCode::BAD_REQUEST,
            "illegal_argument_exception",
            "The bulk request must be terminated by a newline [\\n]",
        );
    }
    let filter = Filter::from_query(query);
    let with_items = filter.any_under(&["items", "*"]);
    let mut items = Vec::with_capacity(if with_items { body.len() / 2 } else { 0 });
    let mut lines = memchr::memchr_iter(b'\n', body);
    let mut start = 0usize;
    let mut line_no = 0u64;
    while let Some(a_end) = lines.next() {
        line_no += 1;
        let action = &body[start..a_end];
        let Some(d_end) = lines.next() else {
            c.malformed.fetch_add(1, Ordering::Relaxed);
            return es_error(
                StatusCode::BAD_REQUEST,
                "illegal_argument_exception",
                &format!("The bulk request must be terminated by a newline [\\n] (action line {line_no} has no document)"),
            );
        };
        line_no += 1;
        let doc = &body[a_end + 1..d_end];
        start = d_end + 1;
        let (name, meta) = match serde_json::from_slice::<Action>(action) {
            Ok(Action::Index(m)) => ("index", m),
            Ok(Action::Create(m)) => ("create", m),
            Err(e) => {
                c.malformed.fetch_add(1, Ordering::Relaxed);
                return es_error(
                    StatusCode::BAD_REQUEST,
                    "illegal_argument_exception",
                    &format!("Malformed action/metadata line [{}]: {e}", line_no - 1),
                );
            }
        };
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(doc) {
            c.malformed.fetch_add(1, Ordering::Relaxed);
            return es_error(
                StatusCode::BAD_REQUEST,
                "mapper_parsing_exception",
                &format!("failed to parse document at line {line_no}: {e}"),
            );
        }
        let seq = c.documents.fetch_add(1, Ordering::Relaxed);
        if with_items {
            if !items.is_empty() {
                items.push(b',');
            }
            write_item(
                &mut items,
                &filter,
                name,
                &meta._index,
                meta._id.as_deref(),
                seq,
            );
        }
    }
    // Elasticsearch 8's order: errors, took, items.
    let mut out = Vec::with_capacity(items.len() + 64);
    out.push(b'{');
    let mut fields = 0;
    let mut sep = |out: &mut Vec<u8>| {
        if fields > 0 {
            out.push(b',');
        }
        fields += 1;
    };
    if filter.keeps(&["errors"]) {
        sep(&mut out);
        out.extend_from_slice(b"\"errors\":false");
    }
    if filter.keeps(&["took"]) {
        sep(&mut out);
        out.extend_from_slice(b"\"took\":");
        out.extend_from_slice(started.elapsed().as_millis().to_string().as_bytes());
    }
    if with_items {
        sep(&mut out);
        out.extend_from_slice(b"\"items\":[");
        out.extend_from_slice(&items);
        out.push(b']');
    }
    out.push(b'}');
    (StatusCode::OK, out)
}

async fn root() -> (StatusCode, [(&'static str, &'static str); 1], &'static str) {
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        r#"{"name":"bench-double","cluster_name":"weir-bench","cluster_uuid":"x9kX2nVhQ0u1mD3oXUe2Fw","version":{"number":"8.15.3","build_flavor":"default","build_type":"docker","lucene_version":"9.11.1","minimum_wire_compatibility_version":"7.17.0","minimum_index_compatibility_version":"7.0.0"},"tagline":"You Know, for Search"}"#,
    )
}

impl BulkDouble {
    /// Serves on an ephemeral loopback port from a one-thread runtime on a thread of its
    /// own (which inherits the calling thread's CPU affinity).
    pub fn start() -> Result<(BulkDouble, SocketAddr)> {
        let d = BulkDouble(Arc::default());
        let app = axum::Router::new()
            .route("/", axum::routing::get(root))
            .route("/_bulk", axum::routing::post(bulk))
            .layer(axum::extract::DefaultBodyLimit::max(512 << 20))
            .with_state(d.clone());
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        std::thread::Builder::new()
            .name("bulk-double".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime for the double");
                rt.block_on(async move {
                    let l = tokio::net::TcpListener::from_std(listener).expect("listener");
                    let _ = axum::serve(l, app).await;
                });
            })?;
        Ok((d, addr))
    }
}

/// CPU time of the double's thread so far (from `/proc/self/task/*/schedstat`), if found.
fn double_cpu_secs() -> Option<f64> {
    for t in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == "bulk-double" {
            let s = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
            return Some(ns / 1e9);
        }
    }
    None
}

// ---- baselines ----

fn demo_event(
    rng: &mut SmallRng,
    seq: u64,
    line: &mut String,
    now: &Value,
    stamp: &Stamp,
) -> LogEvent {
    generate(DemoFormat::Json, rng, seq, stamp, line);
    let mut log = LogEvent::from_message(bytes::Bytes::copy_from_slice(line.as_bytes()), None);
    log.insert_field("timestamp", now.clone());
    log
}

/// What the sink writes per document, for an index name as long as the default
/// `weir-%Y.%m.%d`. Never inlined, so that `valgrind --tool=callgrind
/// --toggle-collect='*elasticsearch::serialise'` can count its instructions alone (see
/// RESULTS.md).
#[inline(never)]
fn serialise(buf: &mut Vec<u8>, log: &LogEvent) {
    buf.extend_from_slice(b"{\"index\":{\"_index\":\"weir-2026.11.27\"}}\n");
    let _ = serde_json::to_writer(&mut *buf, log.value());
    buf.push(b'\n');
}

/// (1) generate + serialise. Returns (wall secs, thread CPU secs, bytes). Never inlined, for
/// `--toggle-collect` as [`serialise`].
#[inline(never)]
fn generate_and_serialise(n: u64) -> (f64, Option<f64>, u64) {
    let mut rng = SmallRng::seed_from_u64(1);
    let mut line = String::with_capacity(512);
    let mut buf = Vec::with_capacity(BASELINE_BATCH * 512);
    let mut bytes = 0u64;
    let cpu0 = thread_cpu_ns();
    let started = Instant::now();
    let t = chrono_now();
    let (mut now, mut stamp) = (Value::Timestamp(t), Stamp::at(t));
    for seq in 0..n {
        if seq % 1000 == 0 {
            // The demo source stamps each batch of 1000 with one time.
            let t = chrono_now();
            (now, stamp) = (Value::Timestamp(t), Stamp::at(t));
        }
        let log = demo_event(&mut rng, seq, &mut line, &now, &stamp);
        serialise(&mut buf, &log);
        if buf.len() >= BASELINE_BATCH * 300 {
            bytes += buf.len() as u64;
            black_box(&buf);
            buf.clear();
        }
    }
    bytes += buf.len() as u64;
    black_box(&buf);
    let secs = started.elapsed().as_secs_f64();
    let cpu = thread_cpu_ns()
        .zip(cpu0)
        .map(|(b, a)| b.saturating_sub(a) as f64 / 1e9);
    (secs, cpu, bytes)
}

/// (2) serialisation alone: events generated (untimed) 10,000 at a time.
fn serialise_alone(n: u64) -> (f64, Option<f64>) {
    let mut rng = SmallRng::seed_from_u64(1);
    let mut line = String::with_capacity(512);
    let mut buf = Vec::with_capacity(BASELINE_BATCH * 512);
    let t = chrono_now();
    let (now, stamp) = (Value::Timestamp(t), Stamp::at(t));
    let (mut secs, mut cpu) = (0.0, Some(0.0));
    let mut seq = 0;
    while seq < n {
        let k = (n - seq).min(BASELINE_BATCH as u64);
        let events: Vec<LogEvent> = (seq..seq + k)
            .map(|s| demo_event(&mut rng, s, &mut line, &now, &stamp))
            .collect();
        seq += k;
        let cpu0 = thread_cpu_ns();
        let started = Instant::now();
        buf.clear();
        for e in &events {
            serialise(&mut buf, e);
        }
        black_box(&buf);
        secs += started.elapsed().as_secs_f64();
        cpu = match (cpu, cpu0, thread_cpu_ns()) {
            (Some(c), Some(a), Some(b)) => Some(c + b.saturating_sub(a) as f64 / 1e9),
            _ => None,
        };
    }
    (secs, cpu)
}

fn chrono_now() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now()
}

// ---- the run ----

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Rates by wall time and by CPU time.
struct Rate {
    wall: f64,
    cpu: Option<f64>,
}

fn rate(n: u64, walls: Vec<f64>, cpus: Vec<Option<f64>>) -> Rate {
    let cpu: Vec<f64> = cpus.into_iter().flatten().filter(|c| *c > 0.0).collect();
    Rate {
        wall: n as f64 / median(walls),
        cpu: (!cpu.is_empty()).then(|| n as f64 / median(cpu)),
    }
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
    // The double's thread inherits this thread's affinity when it is spawned.
    if taskset && cpus > 1 {
        runner::set_own_affinity("1")?;
    }
    let (double, addr) = BulkDouble::start()?;
    if taskset {
        runner::set_own_affinity("0")?;
    }
    let runner = Runner {
        weir: args.weir.canonicalize()?,
        taskset,
        gnu_time: runner::which("/usr/bin/time").filter(|t| runner::gnu_time_works(t, &scratch.0)),
        work: scratch.0.clone(),
        timeout: std::time::Duration::from_secs(1800),
    };
    let load_before = crate::load_average();
    let n = args.events;

    let (mut w, mut c) = (Vec::new(), Vec::new());
    let mut body_bytes = 0;
    for i in 1..=args.runs {
        let (secs, cpu, bytes) = generate_and_serialise(n);
        body_bytes = bytes;
        eprintln!(
            "  (1) generate + serialise run {i}/{}: {secs:.3} s, {} events/s",
            args.runs,
            thousands((n as f64 / secs) as u64)
        );
        w.push(secs);
        c.push(cpu);
    }
    let base = rate(n, w, c);
    let (mut w, mut c) = (Vec::new(), Vec::new());
    for i in 1..=args.runs {
        let (secs, cpu) = serialise_alone(n);
        eprintln!(
            "  (2) serialise alone run {i}/{}: {secs:.3} s, {} events/s",
            args.runs,
            thousands((n as f64 / secs) as u64)
        );
        w.push(secs);
        c.push(cpu);
    }
    let alone = rate(n, w, c);

    let demo = format!("[sources.in]\ntype = \"demo\"\nformat = \"json\"\ncount = {n}\n\n");
    let es_cfg = runner::write_config(
        &runner.work,
        "es",
        &format!(
            "{demo}[sinks.out]\ntype = \"elasticsearch\"\ninputs = [\"in\"]\nendpoints = [\"http://{addr}\"]\n"
        ),
    )?;
    let bh_cfg = runner::write_config(
        &runner.work,
        "blackhole",
        &format!("{demo}[sinks.out]\ntype = \"blackhole\"\ninputs = [\"in\"]\n"),
    )?;
    let run = |name: &str, cfg: &std::path::Path, es: bool| -> Result<(Rate, Option<u64>)> {
        let (mut w, mut c) = (Vec::new(), Vec::new());
        let mut rss = None::<u64>;
        for i in 1..=args.runs {
            let docs0 = double.0.documents.load(Ordering::Relaxed);
            let reqs0 = double.0.requests.load(Ordering::Relaxed);
            let busy0 = double.0.busy_ns.load(Ordering::Relaxed);
            let cpu0 = double_cpu_secs();
            let o = runner.run(name, cfg, None)?;
            let busy = (double.0.busy_ns.load(Ordering::Relaxed) - busy0) as f64 / 1e9;
            let cpu = double_cpu_secs().zip(cpu0).map(|(b, a)| b - a);
            if o.sent != Some(n) || !o.errors.is_empty() {
                bail!(
                    "{name}: the sink sent {:?} events (expected {n}), errors: {:?}",
                    o.sent,
                    o.errors
                );
            }
            let got = double.0.documents.load(Ordering::Relaxed) - docs0;
            let reqs = double.0.requests.load(Ordering::Relaxed) - reqs0;
            if es && got != n {
                bail!("{name}: the double counted {got} documents, expected {n}");
            }
            if double.0.malformed.load(Ordering::Relaxed) > 0 {
                bail!("the double refused a malformed bulk request");
            }
            eprintln!(
                "  weir {name} run {i}/{}: {:.3} s, {} events/s{}{}",
                args.runs,
                o.secs,
                thousands((n as f64 / o.secs) as u64),
                o.cpu_secs
                    .map_or(String::new(), |c| format!(", CPU {c:.2} s")),
                if es {
                    format!(
                        ", {reqs} bulk requests; the double answering {busy:.3} s, on CPU {}",
                        cpu.map_or("-".into(), |c| format!("{c:.3} s"))
                    )
                } else {
                    String::new()
                }
            );
            w.push(o.secs);
            c.push(o.cpu_secs);
            rss = rss.max(o.peak_rss_kib);
        }
        Ok((rate(n, w, c), rss))
    };
    let (es, es_rss) = run("es", &es_cfg, true)?;
    let (bh, _) = run("blackhole", &bh_cfg, false)?;
    let load_after = crate::load_average();

    let ratio = es.wall / base.wall;
    let ratio_cpu = es.cpu.zip(base.cpu).map(|(a, b)| a / b);
    let fmt_cpu = |r: &Rate| r.cpu.map_or("-".into(), |c| thousands(c as u64));
    println!("| measurement | events/s | vs (1) | events/CPU-s | vs (1) by CPU |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    let row = |name: &str, r: &Rate| {
        println!(
            "| {name} | {} | {:.2}x | {} | {} |",
            thousands(r.wall as u64),
            r.wall / base.wall,
            fmt_cpu(r),
            r.cpu
                .zip(base.cpu)
                .map_or("-".into(), |(a, b)| format!("{:.2}x", a / b))
        )
    };
    row(
        "(1) baseline: demo generator + NDJSON serialisation, 1 thread",
        &base,
    );
    row(
        "(2) NDJSON serialisation alone (events generated beforehand)",
        &alone,
    );
    row(
        &format!(
            "weir: demo -> elasticsearch -> double, `--threads 1`{}",
            if taskset { ", pinned to core 0" } else { "" }
        ),
        &es,
    );
    row("weir: demo -> blackhole (reference)", &bh);
    println!();
    println!(
        "{} events ({:.0} bytes of NDJSON per event), median of {} runs; peak RSS of weir with the elasticsearch sink {}; load average before: {load_before}, after: {load_after}",
        thousands(n),
        body_bytes as f64 / n as f64,
        args.runs,
        es_rss.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0)),
    );
    println!();
    println!("| goal | measured | verdict |");
    println!("| --- | --- | --- |");
    println!(
        "| elasticsearch sink >= {:.0}% of generating + serialising the same events to NDJSON | {:.0}% by wall time{} | {} |",
        GOAL * 100.0,
        ratio * 100.0,
        ratio_cpu.map_or(String::new(), |r| format!(" ({:.0}% by CPU time)", r * 100.0)),
        if ratio >= GOAL { "MET" } else { "NOT MET" }
    );
    let vs_alone = es.wall / alone.wall;
    println!(
        "| the same against serialisation alone (2) | {:.0}% by wall time{} | {} |",
        vs_alone * 100.0,
        es.cpu
            .zip(alone.cpu)
            .map_or(String::new(), |(a, b)| format!(
                " ({:.0}% by CPU time)",
                100.0 * a / b
            )),
        if vs_alone >= GOAL { "MET" } else { "NOT MET" }
    );
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_double_answers_a_bulk_body_item_by_item() {
        let d = BulkDouble(Arc::default());
        let body = b"{\"index\":{\"_index\":\"a\",\"_id\":\"7\"}}\n{\"x\":1}\n{\"create\":{\"_index\":\"b\"}}\n{\"y\":\"z\"}\n";
        let (s, out) = answer(&d, None, &HeaderMap::new(), body);
        assert_eq!(s, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["errors"], false);
        assert_eq!(v["items"][0]["index"]["_id"], "7");
        assert_eq!(v["items"][1]["create"]["_id"], "w0000000000000000001");
        assert_eq!(v["items"][0]["index"]["status"], 201);
        assert_eq!(v["items"][1]["create"]["_index"], "b");
        assert_eq!(v["items"].as_array().unwrap().len(), 2);
        assert!(v["took"].is_u64());
        assert_eq!(d.0.documents.load(Ordering::Relaxed), 2);

        let (_, out) = answer(
            &d,
            Some("filter_path=errors%2Citems.*.status"),
            &HeaderMap::new(),
            body,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"errors":false,"items":[{"index":{"status":201}},{"create":{"status":201}}]}"#
        );
        let (s, _) = answer(&d, None, &HeaderMap::new(), b"{\"index\":{}}\n{\"x\":1}\n");
        assert_eq!(s, StatusCode::BAD_REQUEST, "no _index");
        let (s, _) = answer(
            &d,
            None,
            &HeaderMap::new(),
            b"{\"index\":{\"_index\":\"a\"}}\n{\"x\":\n",
        );
        assert_eq!(s, StatusCode::BAD_REQUEST, "a document that is not JSON");
    }
}
