//! The web console: a single page served by the API at `/` (its HTML, JavaScript and CSS are
//! embedded in the binary from `src/console/`), and the JSON it reads besides `/api/graph`
//! and `/api/tap`:
//!
//! - `GET /api/console/components`: every component with its type, inputs and its table from
//!   the configuration file, re-rendered as TOML with every secret (a value whose schema is
//!   `Secret`) replaced by `**REDACTED**` (see [`ConsoleConfig::from_config`]);
//! - `GET /api/console/feed/{name}?after=SEQ`: the latest events of one feed, newer than
//!   `SEQ`. The feeds are `topology` (the `flow_to_topology` transforms' windows), `stacks`
//!   (the `stack_fold` transforms' folded stacks), `tcp` (`ebpf_tcp`, and any source whose
//!   events have its shape: `demo`'s `tcp_connections`) and `process` (`ebpf_process`,
//!   and `demo`'s `process_events`).
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
use weir_pipeline::config::{Config, Redactor};
use weir_pipeline::event::Event;
use weir_pipeline::tap::{TapRequest, Taps};
use weir_pipeline::topology::ComponentInfo;
use weir_pipeline::vocabulary::ComponentKind;

const INDEX_HTML: &str = include_str!("console/index.html");
const APP_JS: &str = include_str!("console/app.js");
const STYLE_CSS: &str = include_str!("console/style.css");

/// A feed nobody asked for during this long detaches its tap and frees its events.
pub const IDLE: Duration = Duration::from_secs(20);
/// The events a feed's tap queues at most (its copies beyond are dropped and counted).
pub const TAP_CAPACITY: usize = 2_048;
/// The longest configuration text shown per component.
const MAX_CONFIG_LINES: usize = 200;

/// What the console knows of the configuration: each component's table, its secrets
/// redacted.
#[derive(Debug, Default, Clone)]
pub struct ConsoleConfig {
    tables: BTreeMap<String, ShownTable>,
    /// The sources whose events have a named shape ([`SourceConfig::event_shape`]), by id:
    /// a feed taps them as it taps the type of that name.
    ///
    /// [`SourceConfig::event_shape`]: weir_pipeline::component::SourceConfig::event_shape
    shapes: BTreeMap<String, &'static str>,
}

/// A component's table as the console shows it.
#[derive(Debug, Default, Clone)]
struct ShownTable {
    file: String,
    /// Where the table starts (from 1).
    line: usize,
    /// The table re-rendered as TOML, every value whose schema is a `Secret` replaced by
    /// `**REDACTED**`; `None` when it cannot be shown safely.
    text: Option<String>,
    /// Why it is not shown.
    hidden: Option<String>,
}

impl ConsoleConfig {
    /// Each component's table, read again from its file (`read` gives a file's text) before
    /// the pipeline starts, and redacted by its type's schema (see [`Redactor`]). The text is
    /// parsed as written, so `${VAR}` references inside strings are not expanded; a file that
    /// is TOML only once interpolated (`rate = ${RATE}`) is interpolated with `env` first.
    /// A table that cannot be read, parsed or matched to its schema is not shown at all.
    pub fn from_config(
        config: &Config,
        redactor: &Redactor,
        read: &dyn Fn(&str) -> Option<String>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Self {
        let mut files: BTreeMap<String, Result<toml::Table, String>> = BTreeMap::new();
        let mut tables = BTreeMap::new();
        let entries = config
            .sources
            .iter()
            .map(|(id, e)| (ComponentKind::Source, id, &e.type_name, &e.location))
            .chain(
                config
                    .transforms
                    .iter()
                    .map(|(id, e)| (ComponentKind::Transform, id, &e.type_name, &e.location)),
            )
            .chain(
                config
                    .sinks
                    .iter()
                    .map(|(id, e)| (ComponentKind::Sink, id, &e.type_name, &e.location)),
            );
        for (kind, id, type_name, loc) in entries {
            let doc = files
                .entry(loc.file.to_string())
                .or_insert_with(|| parse_file(&loc.file, read, env));
            let shown = match doc {
                Ok(doc) => match shown_text(doc, redactor, kind, id, type_name) {
                    Ok(text) => (Some(text), None),
                    Err(why) => (None, Some(why)),
                },
                Err(why) => (None, Some(why.clone())),
            };
            tables.insert(
                id.clone(),
                ShownTable {
                    file: loc.file.to_string(),
                    line: loc.line,
                    text: shown.0,
                    hidden: shown.1,
                },
            );
        }
        let shapes = config
            .sources
            .iter()
            .filter_map(|(id, e)| Some((id.clone(), e.config.event_shape()?)))
            .collect();
        Self { tables, shapes }
    }
}

/// A configuration file parsed as TOML: as written, or else interpolated.
fn parse_file(
    name: &str,
    read: &dyn Fn(&str) -> Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<toml::Table, String> {
    let text = read(name).ok_or_else(|| format!("{name} cannot be read again"))?;
    if let Ok(doc) = toml::from_str::<toml::Table>(&text) {
        return Ok(doc);
    }
    let (text, _) = weir_pipeline::config::interpolate(&text, env);
    toml::from_str::<toml::Table>(&text).map_err(|_| format!("{name} is no longer valid TOML"))
}

/// The table of a component, its secrets redacted, as TOML (`[kind.id]` and its sub-tables).
fn shown_text(
    doc: &toml::Table,
    redactor: &Redactor,
    kind: ComponentKind,
    id: &str,
    type_name: &str,
) -> Result<String, String> {
    let mut table = doc
        .get(kind.section())
        .and_then(|s| s.get(id))
        .cloned()
        .ok_or_else(|| format!("`{}.{id}` is not in the file", kind.section()))?;
    redactor
        .redact(kind, type_name, &mut table)
        .map_err(|e| format!("not shown, its secrets could not be located: {e}"))?;
    let mut component = toml::Table::new();
    component.insert(id.to_string(), table);
    let mut section = toml::Table::new();
    section.insert(kind.section().to_string(), toml::Value::Table(component));
    let text = toml::to_string(&section).map_err(|e| format!("cannot be rendered: {e}"))?;
    let mut lines: Vec<&str> = text.lines().collect();
    if lines.len() > MAX_CONFIG_LINES {
        lines.truncate(MAX_CONFIG_LINES);
        lines.push("...");
    }
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    Ok(lines.join("\n"))
}

/// One feed: the events leaving the components of some types, while someone reads them.
struct Feed {
    name: &'static str,
    /// The component types whose outputs it taps, and the sources whose events have the
    /// shape of one of them.
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

impl FeedState {
    /// Keeps `t`, evicting the oldest texts while more than `max_bytes` are held; a text
    /// larger than `max_bytes` on its own is dropped (counted).
    fn push(&mut self, t: String, max_bytes: usize) {
        if t.len() > max_bytes {
            self.dropped += 1;
            return;
        }
        self.bytes += t.len();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.events.push_back((seq, t));
        while self.bytes > max_bytes {
            match self.events.pop_front() {
                Some((_, old)) => {
                    self.bytes -= old.len();
                    self.evicted += 1;
                }
                None => break,
            }
        }
    }
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
            let t = s
                .config
                .tables
                .get(&c.id)
                .cloned()
                .unwrap_or_else(|| ShownTable {
                    hidden: Some("not in the configuration".into()),
                    ..ShownTable::default()
                });
            json!({
                "id": c.id,
                "kind": c.kind,
                "type": c.type_name,
                "inputs": c.inputs,
                "config": { "file": t.file, "line": t.line, "text": t.text, "hidden": t.hidden },
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
        .filter(|c| {
            feed.types.contains(&c.type_name.as_str())
                || s.config
                    .shapes
                    .get(&c.id)
                    .is_some_and(|shape| feed.types.contains(shape))
        })
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
            st.push(t, feed.max_bytes);
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

    fn shown(text: &str) -> ConsoleConfig {
        let reg = crate::registry::registry();
        let env = |name: &str| (name == "HOST").then(|| "h".to_string());
        let config = weir_pipeline::config::load_str("test.toml", text, &reg, &env).unwrap();
        let read = |name: &str| (name == "test.toml").then(|| text.to_string());
        ConsoleConfig::from_config(&config, &Redactor::new(&reg), &read, &env)
    }

    #[test]
    fn the_console_shows_tables_with_every_secret_redacted() {
        let text = r#"
[sources.bus]
type = "nats"
url = "tls://nats:4222"
subject = "logs"
auth.nkey_seed = "SECRET-1"
tls.ca_file = "ca.pem"
tls.key_pass = "SECRET-2"

[sinks.es]
type = "elasticsearch"
inputs = ["bus"]
endpoints = ["https://es:9200"]
auth.user = "weir"
auth.password = "SECRET-3"
headers.x-api-key = "SECRET-4"
headers.x-from = "${HOST}"
[sinks.es.tls]
key_pass = "SECRET-5"

[sinks.rw]
type = "prometheus_remote_write"
inputs = ["m"]
endpoint = "https://p/api/v1/write"
auth = { strategy = "basic", user = "u", password = "SECRET-6" }

[sinks.k]
type = "kafka"
inputs = ["bus"]
bootstrap_servers = "k:9093"
topic = "t"
sasl.mechanism = "PLAIN"
sasl.username = "weir"
sasl.password = "SECRET-7"

[sinks.otel]
type = "otlp"
inputs = ["bus"]
endpoint = "https://collector:4318"
protocol = "http"
headers.authorization = "Bearer SECRET-8"

[transforms.m]
type = "log_to_metric"
inputs = ["bus"]
[[transforms.m.metrics]]
type = "counter"
field = "status"
name = "n"
"#;
        let c = shown(text);
        for (id, t) in &c.tables {
            assert_eq!(t.hidden, None, "{id}");
            let shown = t.text.as_deref().unwrap();
            assert!(!shown.contains("SECRET"), "{id} shows a secret:\n{shown}");
        }
        let es = c.tables["es"].text.as_deref().unwrap();
        for line in [
            "[sinks.es]",
            "endpoints = [\"https://es:9200\"]",
            "user = \"weir\"",
            "password = \"**REDACTED**\"",
            "x-api-key = \"**REDACTED**\"",
            "x-from = \"**REDACTED**\"",
            "key_pass = \"**REDACTED**\"",
        ] {
            assert!(es.lines().any(|l| l == line), "no `{line}` in:\n{es}");
        }
        let bus = c.tables["bus"].text.as_deref().unwrap();
        assert!(bus.contains("nkey_seed = \"**REDACTED**\""), "{bus}");
        assert!(bus.contains("ca_file = \"ca.pem\""), "{bus}");
        let m = c.tables["m"].text.as_deref().unwrap();
        assert!(m.contains("[[transforms.m.metrics]]"), "{m}");
    }

    #[test]
    fn a_table_that_cannot_be_matched_is_not_shown() {
        let text = "[sources.d]\ntype = \"demo\"\nformat = \"json\"\n";
        let reg = crate::registry::registry();
        let config = weir_pipeline::config::load_str("test.toml", text, &reg, &|_| None).unwrap();
        // The file changed since it was loaded: a key the schema does not know.
        let changed = format!("{text}password = \"SECRET\"\n");
        let read = |_: &str| Some(changed.clone());
        let c = ConsoleConfig::from_config(&config, &Redactor::new(&reg), &read, &|_| None);
        assert_eq!(c.tables["d"].text, None);
        assert!(
            c.tables["d"]
                .hidden
                .as_deref()
                .unwrap()
                .contains("password"),
            "{:?}",
            c.tables["d"].hidden
        );
        // A file that cannot be read again shows nothing either.
        let c = ConsoleConfig::from_config(&config, &Redactor::new(&reg), &|_| None, &|_| None);
        assert_eq!(c.tables["d"].text, None);
    }

    #[test]
    fn the_quickstart_is_shown_whole() {
        let reg = crate::registry::registry();
        let config = weir_pipeline::config::load_str(
            crate::cli::QUICKSTART_NAME,
            crate::QUICKSTART,
            &reg,
            &|_| None,
        )
        .unwrap();
        let c = ConsoleConfig::from_config(
            &config,
            &Redactor::new(&reg),
            &crate::cli::config_text,
            &|_| None,
        );
        assert!(!c.tables.is_empty());
        for (id, t) in &c.tables {
            assert_eq!(t.hidden, None, "{id}");
            assert!(
                t.text.as_deref().unwrap().contains(&format!(".{id}]")),
                "{id}"
            );
        }
    }

    #[test]
    fn the_quickstarts_demo_connections_and_processes_feed_the_tables() {
        let reg = crate::registry::registry();
        let config = weir_pipeline::config::load_str(
            crate::cli::QUICKSTART_NAME,
            crate::QUICKSTART,
            &reg,
            &|_| None,
        )
        .unwrap();
        let c = ConsoleConfig::from_config(&config, &Redactor::new(&reg), &|_| None, &|_| None);
        let shapes: Vec<_> = c.shapes.iter().map(|(id, s)| (id.as_str(), *s)).collect();
        assert_eq!(
            shapes,
            [
                ("demo_connections", "ebpf_tcp"),
                ("demo_processes", "ebpf_process")
            ]
        );
    }

    #[test]
    fn a_feed_holds_at_most_its_bytes_evicting_the_oldest() {
        let mut st = FeedState::default();
        for i in 0..100 {
            st.push(format!("{i:0>10}"), 35);
        }
        // Three texts of 10 bytes fit in 35: the newest three are kept, in order.
        let kept: Vec<_> = st
            .events
            .iter()
            .map(|(seq, t)| (*seq, t.as_str()))
            .collect();
        assert_eq!(
            kept,
            [(97, "0000000097"), (98, "0000000098"), (99, "0000000099")]
        );
        assert_eq!(st.bytes, 30);
        assert_eq!(st.evicted, 97);
        assert_eq!(st.dropped, 0);
        // A text larger than the whole feed is dropped and counted; what is held stays.
        st.push("x".repeat(36), 35);
        assert_eq!(st.dropped, 1);
        assert_eq!(st.events.len(), 3);
        assert_eq!(st.next_seq, 100);
    }

    #[test]
    fn globs() {
        assert_eq!(exact_glob("a*b[1]"), "a[*]b[[]1[]]");
    }
}
