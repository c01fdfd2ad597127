//! The web console: a single page served by the API at `/` (its HTML, JavaScript and CSS are
//! embedded in the binary from `src/console/`), and the JSON it reads besides `/api/graph`
//! and `/api/tap`:
//!
//! - `GET /api/console/components`: every component with its type, inputs and the text of its
//!   table in the configuration file (as written: `${VAR}` references are not expanded);
//! - `GET /api/console/feed/{name}?after=SEQ`: the latest events of one feed, newer than
//!   `SEQ`. The feeds are `topology` (the `flow_to_topology` transforms' windows), `stacks`
//!   (the `stack_fold` transforms' folded stacks), `tcp` (`ebpf_tcp`) and `process`
//!   (`ebpf_process`).
//!
//! A feed costs nothing while nobody reads it: the first request attaches a tap (the same
//! mechanism as `weir tap`) to the outputs of the feed's components, and a feed nobody asked
//! for during [`IDLE`] detaches its tap and frees what it held. While attached, a feed keeps
//! the newest events as JSON text, at most [`Feed::max_bytes`] bytes (oldest evicted first,
//! counted in `evicted`); the tap's queue holds at most [`TAP_CAPACITY`] events (copies that
//! do not fit are dropped by the tap and counted in `dropped`). The pipeline never waits for
//! the console.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use weir_pipeline::config::Config;
use weir_pipeline::event::Event;
use weir_pipeline::tap::{TapRequest, Taps};
use weir_pipeline::topology::ComponentInfo;

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const STYLE_CSS: &str = include_str!("console/style.css");

/// A feed nobody asked for during this long detaches its tap and frees its events.
pub const IDLE: Duration = Duration::from_secs(20);
/// The events a feed's tap queues at most (its copies beyond are dropped and counted).
pub const TAP_CAPACITY: usize = 2_048;
/// The longest configuration text shown per component.
const MAX_CONFIG_LINES: usize = 200;

/// What the console knows of the configuration: each component's table as written.
#[derive(Debug, Default, Clone)]
pub struct ConsoleConfig {
    /// Component id -> (file, first line, text).
    tables: BTreeMap<String, (String, usize, String)>,
}

impl ConsoleConfig {
    /// Reads each component's table from its file (before the pipeline starts; a file that
    /// cannot be read leaves the text empty).
    pub fn from_config(config: &Config) -> Self {
        let mut files: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut tables = BTreeMap::new();
        let entries = config
            .sources
            .iter()
            .map(|(id, e)| ("sources", id, &e.location))
            .chain(
                config
                    .transforms
                    .iter()
                    .map(|(id, e)| ("transforms", id, &e.location)),
            )
            .chain(
                config
                    .sinks
                    .iter()
                    .map(|(id, e)| ("sinks", id, &e.location)),
            );
        for (kind, id, loc) in entries {
            let text = files
                .entry(loc.file.to_string())
                .or_insert_with(|| std::fs::read_to_string(&*loc.file).ok());
            let table = text
                .as_deref()
                .map(|t| table_text(t, loc.line, kind, id))
                .unwrap_or_default();
            tables.insert(id.clone(), (loc.file.to_string(), loc.line, table));
        }
        Self { tables }
    }
}

/// The lines of the table starting at `line` (from 1), up to the next table that is not one
/// of its sub-tables (`[kind.id.x]`, `[[kind.id.x]]`).
fn table_text(text: &str, line: usize, kind: &str, id: &str) -> String {
    let sub = [format!("[{kind}.{id}."), format!("[[{kind}.{id}.")];
    let mut out = Vec::new();
    for (i, l) in text.lines().enumerate().skip(line.saturating_sub(1)) {
        let t = l.trim_start();
        if i + 1 > line && t.starts_with('[') && !sub.iter().any(|s| t.starts_with(s.as_str())) {
            break;
        }
        if out.len() == MAX_CONFIG_LINES {
            out.push("...");
            break;
        }
        out.push(l);
    }
    while out.last().is_some_and(|l| l.trim().is_empty()) {
        out.pop();
    }
    out.join("\n")
}

/// One feed: the events leaving the components of some types, while someone reads them.
struct Feed {
    name: &'static str,
    /// The component types whose outputs it taps.
    types: &'static [&'static str],
    /// Which events it keeps (e.g. only `topology` logs, not the metrics of `output = "both"`).
    keep: fn(Option<&str>, &Event) -> bool,
    /// At most this many bytes of JSON text kept.
    max_bytes: usize,
    state: Mutex<FeedState>,
}

#[derive(Default)]
struct FeedState {
    /// (sequence number, `{"component": ID, "event": EVENT}` as JSON text), oldest first.
    events: VecDeque<(u64, String)>,
    bytes: usize,
    next_seq: u64,
    evicted: u64,
    dropped: u64,
    last_read: Option<Instant>,
    attached: bool,
    error: Option<String>,
}

fn default_output_logs(output: Option<&str>, e: &Event) -> bool {
    output.is_none() && matches!(e, Event::Log(_))
}

fn topology_windows(output: Option<&str>, e: &Event) -> bool {
    match e {
        Event::Log(l) if output.is_none() => l
            .get_field("type")
            .is_some_and(|v| v.as_bytes().is_some_and(|b| &b[..] == b"topology")),
        _ => false,
    }
}

fn any_log(_: Option<&str>, e: &Event) -> bool {
    matches!(e, Event::Log(_))
}

fn feeds() -> Vec<Arc<Feed>> {
    let feed = |name, types, keep, max_bytes| {
        Arc::new(Feed {
            name,
            types,
            keep,
            max_bytes,
            state: Mutex::new(FeedState::default()),
        })
    };
    vec![
        feed(
            "topology",
            &["flow_to_topology"][..],
            topology_windows as fn(Option<&str>, &Event) -> bool,
            2 << 20,
        ),
        feed("stacks", &["stack_fold"][..], default_output_logs, 2 << 20),
        feed("tcp", &["ebpf_tcp"][..], any_log, 1 << 20),
        feed("process", &["ebpf_process"][..], any_log, 1 << 20),
    ]
}

#[derive(Clone)]
struct ConsoleState {
    config: Arc<ConsoleConfig>,
    components: Arc<Vec<ComponentInfo>>,
    taps: Arc<Taps>,
    feeds: Arc<Vec<Arc<Feed>>>,
}

/// The console's routes: merged into the API's router.
pub fn routes(config: ConsoleConfig, components: Vec<ComponentInfo>, taps: Arc<Taps>) -> Router {
    let state = ConsoleState {
        config: Arc::new(config),
        components: Arc::new(components),
        taps,
        feeds: Arc::new(feeds()),
    };
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/console/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/api/console/components", get(components_json))
        .route("/api/console/feed/{name}", get(feed_json))
        .with_state(state)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

async fn components_json(State(s): State<ConsoleState>) -> impl IntoResponse {
    let list: Vec<_> = s
        .components
        .iter()
        .map(|c| {
            let (file, line, text) = s.config.tables.get(&c.id).cloned().unwrap_or_default();
            json!({
                "id": c.id,
                "kind": c.kind,
                "type": c.type_name,
                "inputs": c.inputs,
                "config": { "file": file, "line": line, "text": text },
            })
        })
        .collect();
    Json(json!({ "components": list }))
}

/// A glob matching exactly `id`.
fn exact_glob(id: &str) -> String {
    let mut g = String::with_capacity(id.len());
    for c in id.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            g.push('[');
            g.push(c);
            g.push(']');
        } else {
            g.push(c);
        }
    }
    g
}

async fn feed_json(
    State(s): State<ConsoleState>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let Some(feed) = s.feeds.iter().find(|f| f.name == name).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no feed `{name}` (known: topology, stacks, tcp, process)") })),
        )
            .into_response();
    };
    let mut after = None;
    for pair in query.as_deref().unwrap_or("").split('&') {
        if let Some(v) = pair.strip_prefix("after=") {
            match v.parse::<u64>() {
                Ok(n) => after = Some(n),
                Err(_) => return (
                    StatusCode::BAD_REQUEST,
                    Json(json!({ "error": format!("`after` must be a whole number, not `{v}`") })),
                )
                    .into_response(),
            }
        }
    }
    let ids: Vec<String> = s
        .components
        .iter()
        .filter(|c| feed.types.contains(&c.type_name.as_str()))
        .map(|c| c.id.clone())
        .collect();
    let mut st = match feed.state.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    st.last_read = Some(Instant::now());
    if !st.attached && !ids.is_empty() {
        let request = TapRequest {
            outputs_of: ids.iter().map(|id| exact_glob(id)).collect(),
            inputs_of: Vec::new(),
            sample: 1,
            limit: None,
            capacity: TAP_CAPACITY,
        };
        match s.taps.attach(&request) {
            Ok(tap) => {
                st.attached = true;
                st.error = None;
                tokio::spawn(collect(feed.clone(), tap));
            }
            Err(e) => st.error = Some(e),
        }
    }
    // The events after `after`, as one JSON array written from their stored text.
    let mut events = String::from("[");
    for (seq, text) in st
        .events
        .iter()
        .filter(|(seq, _)| after.is_none_or(|a| *seq > a))
    {
        if events.len() > 1 {
            events.push(',');
        }
        // `text` is an object: put the sequence number first.
        events.push_str(&format!("{{\"seq\":{seq},"));
        events.push_str(text.get(1..).unwrap_or("}"));
    }
    events.push(']');
    let head = json!({
        "feed": feed.name,
        "components": ids,
        "attached": st.attached,
        "error": st.error,
        "next": st.next_seq,
        "evicted": st.evicted,
        "dropped": st.dropped,
        "held_bytes": st.bytes,
        "max_bytes": feed.max_bytes,
    });
    drop(st);
    // `head` is an object: splice the events in before its closing brace.
    let mut body = head.to_string();
    body.pop();
    body.push_str(",\"events\":");
    body.push_str(&events);
    body.push('}');
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

/// Reads a feed's tap into its bounded store until nobody asked for it during [`IDLE`];
/// then detaches (drops the tap) and frees what it held.
async fn collect(feed: Arc<Feed>, mut tap: weir_pipeline::tap::Tap) {
    let check = Duration::from_secs(2);
    loop {
        let batch = tokio::time::timeout(check, tap.recv()).await;
        let dropped = tap.take_dropped();
        // Serialised here, on the API's task, never on the pipeline's.
        let mut texts = Vec::new();
        let ended = match batch {
            Ok(Some(b)) => {
                for e in &b.events {
                    if (feed.keep)(b.output.as_deref(), e) {
                        let entry =
                            json!({ "component": &*b.component, "event": e.to_json_value() });
                        if let Ok(t) = serde_json::to_string(&entry) {
                            texts.push(t);
                        }
                    }
                }
                false
            }
            Ok(None) => true,
            Err(_) => false,
        };
        let mut st = match feed.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        st.dropped += dropped;
        for t in texts {
            if t.len() > feed.max_bytes {
                st.dropped += 1;
                continue;
            }
            st.bytes += t.len();
            let seq = st.next_seq;
            st.next_seq += 1;
            st.events.push_back((seq, t));
            while st.bytes > feed.max_bytes {
                match st.events.pop_front() {
                    Some((_, old)) => {
                        st.bytes -= old.len();
                        st.evicted += 1;
                    }
                    None => break,
                }
            }
        }
        let idle = st.last_read.is_none_or(|t| t.elapsed() >= IDLE);
        if idle || ended {
            st.attached = false;
            st.events = VecDeque::new();
            st.bytes = 0;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables() {
        let text = "data_dir = \"x\"\n\n[sources.a]\ntype = \"demo\"\n\n[sources.a.tls]\nca_file = \"c\"\n[[sources.a.blacklist]]\nx = 1\n\n[sinks.b]\ntype = \"console\"\n";
        assert_eq!(
            table_text(text, 3, "sources", "a"),
            "[sources.a]\ntype = \"demo\"\n\n[sources.a.tls]\nca_file = \"c\"\n[[sources.a.blacklist]]\nx = 1"
        );
        assert_eq!(
            table_text(text, 11, "sinks", "b"),
            "[sinks.b]\ntype = \"console\""
        );
        assert_eq!(exact_glob("a*b[1]"), "a[*]b[[]1[]]");
    }
}
