//! The web console in a real browser: headless Chromium, driven through the DevTools protocol
//! over `--remote-debugging-pipe` (NUL-separated JSON on file descriptors 3 and 4: no
//! websocket client needed), against a running Weir fed with recorded Hubble flows (the shared
//! test data, replayed into a `file` source with the `hubble_jsonpb` codec) and stack samples
//! (JSON lines in the `stack-sample` schema), besides a demo log pipeline and `demo` sources
//! of connections and process events (shaped as `ebpf_tcp`'s and `ebpf_process`'s).
//!
//! Each view loads without a console error (exceptions, `console.error`, failed loads: the
//! browser reports them as protocol events), the pipeline graph and the service map show the
//! expected nodes, the flame graph the expected frames, the tables the expected processes and
//! ports, sorted and filtered as asked, values change while events flow, and
//! every view is saved as a PNG under `$CARGO_TARGET_TMPDIR/console-screenshots/` (the path
//! is printed).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{
    find_program, free_addr, http_get, require, shared_testdata, start_weir, stop_clean,
    wait_until, weir_log,
};

/// A headless Chromium and one page of it, over the DevTools protocol.
struct Browser {
    child: Child,
    to: File,
    from: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    /// What the page reported as errors, as text.
    errors: Vec<String>,
    _profile: tempfile::TempDir,
}

fn pipe() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) writes two descriptors into the array it is given.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    (fds[0], fds[1])
}

impl Browser {
    fn start(chromium: &Path) -> Self {
        let profile = tempfile::tempdir().unwrap();
        // Chromium reads commands from fd 3 and writes answers to fd 4.
        let (cmd_read, cmd_write) = pipe();
        let (out_read, out_write) = pipe();
        let mut command = Command::new(chromium);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-pipe",
                "--window-size=1400,900",
                "about:blank",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: only async-signal-safe calls (fcntl, dup2, close) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // Out of the way first, so that dup2 onto 3 and 4 cannot clobber them.
                let r = libc::fcntl(cmd_read, libc::F_DUPFD, 10);
                let w = libc::fcntl(out_write, libc::F_DUPFD, 10);
                if r < 0 || w < 0 || libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(r);
                libc::close(w);
                Ok(())
            });
        }
        let child = command.spawn().expect("start chromium");
        // SAFETY: these descriptors came from pipe() above and are owned here only.
        let (to, from_file) = unsafe {
            libc::close(cmd_read);
            libc::close(out_write);
            (File::from_raw_fd(cmd_write), File::from_raw_fd(out_read))
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(from_file);
            let mut buf = Vec::new();
            while r.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
                if buf.last() == Some(&0) {
                    buf.pop();
                }
                if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                    if tx.send(v).is_err() {
                        return;
                    }
                }
                buf.clear();
            }
        });
        let mut b = Browser {
            child,
            to,
            from: rx,
            next_id: 0,
            session: String::new(),
            errors: Vec::new(),
            _profile: profile,
        };
        let target = b.call("Target.createTarget", json!({"url": "about:blank"}));
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        for m in ["Runtime.enable", "Log.enable", "Page.enable"] {
            b.call(m, json!({}));
        }
        b.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
        );
        b
    }

    /// Sends a command (to the page once attached) and waits for its answer, noting the
    /// page's error reports that arrive meanwhile.
    fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no answer from chromium to {method}"));
            if v["id"] == json!(id) {
                if let Some(e) = v.get("error") {
                    panic!("{method}: {e}");
                }
                return v["result"].clone();
            }
            self.note(&v);
        }
    }

    fn note(&mut self, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str() {
            Some("Runtime.exceptionThrown") => self.errors.push(format!(
                "exception: {}",
                p["exceptionDetails"]["exception"]["description"]
                    .as_str()
                    .unwrap_or_else(|| p["exceptionDetails"]["text"].as_str().unwrap_or("?"))
            )),
            Some("Runtime.consoleAPICalled")
                if matches!(p["type"].as_str(), Some("error" | "assert")) =>
            {
                self.errors
                    .push(format!("console.{}: {}", p["type"], p["args"]))
            }
            Some("Log.entryAdded") if p["entry"]["level"] == "error" => self.errors.push(format!(
                "log: {} {}",
                p["entry"]["text"],
                p["entry"]["url"].as_str().unwrap_or("")
            )),
            _ => {}
        }
    }

    /// Evaluates `expr` in the page and returns its value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!("evaluating `{expr}`: {e}");
        }
        r["result"]["value"].clone()
    }

    /// Evaluates `expr` until `ok` holds for its value; returns the value, or panics with
    /// the last one.
    fn wait_for(&mut self, what: &str, expr: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.eval(expr);
            if ok(&v) {
                return v;
            }
            if Instant::now() > deadline {
                panic!("{what}: still {v} after 60 s (errors: {:?})", self.errors);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn screenshot(&mut self, path: &Path) {
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64_decode(r["data"].as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        acc = acc << 6 | u32::from(val(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Stack samples (leaf first, as perf prints them) of two processes: `api-server` spends most
/// of its time in `compute`, `worker` in `sleep_wait`.
fn stack_samples(round: u64) -> String {
    let frame = |symbol: &str, module: &str| {
        json!({"addr": "1000", "symbol": symbol, "offset": null, "module": module,
               "kind": "user", "inlined": false})
    };
    let mut out = String::new();
    for i in 0..40u64 {
        let (comm, frames) = match i % 4 {
            0..=1 => (
                "api-server",
                vec![
                    frame("compute", "/usr/bin/api"),
                    frame("handle_request", "/usr/bin/api"),
                    frame("main", "/usr/bin/api"),
                ],
            ),
            2 => (
                "api-server",
                vec![
                    frame("parse_json", "/usr/bin/api"),
                    frame("handle_request", "/usr/bin/api"),
                    frame("main", "/usr/bin/api"),
                ],
            ),
            _ => (
                "worker",
                vec![
                    frame("sleep_wait", "/usr/lib/libc.so.6"),
                    frame("run_jobs", "/usr/bin/worker"),
                ],
            ),
        };
        let line = json!({"comm": comm, "pid": 100 + i % 4 / 3, "tid": 100 + i % 4 / 3,
            "cpu": 0, "timestamp": (round * 40 + i) as f64 / 100.0, "event": "cpu-clock",
            "period": 1, "frames": frames});
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

/// Appends flows (the recorded Hubble capture, over and over) and stack samples to the files
/// Weir tails, until `stop`.
fn feed(dir: &Path, flows: Vec<String>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        let mut flow_file = File::create(dir.join("flows/flows.jsonl")).unwrap();
        let mut stack_file = File::create(dir.join("stacks/stacks.jsonl")).unwrap();
        let mut at = 0;
        let mut round = 0;
        while !stop.load(Ordering::Relaxed) {
            let mut chunk = String::new();
            for _ in 0..400 {
                chunk.push_str(&flows[at % flows.len()]);
                chunk.push('\n');
                at += 1;
            }
            flow_file.write_all(chunk.as_bytes()).unwrap();
            stack_file
                .write_all(stack_samples(round).as_bytes())
                .unwrap();
            round += 1;
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

fn config(dir: &Path, api: SocketAddr) -> String {
    let d = dir.display();
    format!(
        r#"
data_dir = "{d}/data"

[api]
enabled = true
address = "{api}"

[sources.demo]
type = "demo"
format = "json"
rate = 50

[transforms.parse]
type = "remap"
inputs = ["demo"]
source = '. = merge!(., parse_json!(string!(.message)))'

[sinks.logs]
type = "blackhole"
inputs = ["parse"]

[sources.flows]
type = "file"
include = ["{d}/flows/*.jsonl"]
decoding.codec = "hubble_jsonpb"
glob_minimum_cooldown_ms = 100

[transforms.map]
type = "flow_to_topology"
inputs = ["flows"]
window_secs = 1

[sinks.maps]
type = "blackhole"
inputs = ["map"]

[sources.samples]
type = "file"
include = ["{d}/stacks/*.jsonl"]
decoding.codec = "json"
glob_minimum_cooldown_ms = 100

[transforms.fold]
type = "stack_fold"
inputs = ["samples"]
window_secs = 1

[sinks.folded]
type = "blackhole"
inputs = ["fold"]

[sources.conns]
type = "demo"
format = "tcp_connections"
rate = 40

[sources.procs]
type = "demo"
format = "process_events"
rate = 20

[sinks.node]
type = "blackhole"
inputs = ["conns", "procs"]
"#
    )
}

/// Every node of the recorded capture's true service map.
fn truth_nodes(hubble: &Path) -> BTreeSet<String> {
    let truth: Value =
        serde_json::from_str(&std::fs::read_to_string(hubble.join("boutique-truth.json")).unwrap())
            .unwrap();
    let mut nodes = BTreeSet::new();
    for id in truth["edges"].as_object().unwrap().keys() {
        let (src, rest) = id.split_once(" -> ").unwrap();
        let dst = rest.rsplit_once(':').unwrap().0;
        nodes.insert(src.to_string());
        nodes.insert(dst.to_string());
    }
    nodes
}

/// Lays out a crowded service map with the page's `layoutServices` and measures it: nodes per
/// layer, the edges drawn right to left, the least distance between two nodes, and whether
/// every node is inside the drawing.
const CROWDED_LAYOUT_JS: &str = "(() => { \
    const ids = ['shop/frontend'], edges = []; \
    for (let i = 0; i < 40; i++) ids.push('shop/svc-' + String(i).padStart(2, '0')); \
    for (let i = 1; i <= 40; i++) edges.push({ source: 'shop/frontend', destination: ids[i] }); \
    for (let i = 1; i < 40; i += 3) edges.push({ source: ids[i], destination: ids[i + 1] }); \
    edges.push({ source: 'shop/svc-01', destination: 'shop/frontend' }); \
    const { pos, width, height } = layoutServices(ids, edges); \
    const layers = []; for (const p of pos.values()) layers[p.layer] = (layers[p.layer] || 0) + 1; \
    const backward = edges.filter((e) => pos.get(e.source).x >= pos.get(e.destination).x) \
        .map((e) => e.source + ' -> ' + e.destination); \
    const ps = [...pos.values()]; let min = Infinity; \
    for (let i = 0; i < ps.length; i++) for (let j = i + 1; j < ps.length; j++) \
        min = Math.min(min, Math.hypot(ps[i].x - ps[j].x, ps[i].y - ps[j].y)); \
    return { layers, backward, min, inside: ps.every((p) => p.x > 0 && p.y > 0 && p.x < width && p.y < height) }; })()";

/// Installs `tableRows(id)` in the page: a table's shown rows, as objects from column name to
/// cell text.
const TABLE_ROWS_JS: &str = "window.tableRows = (id) => { \
    const t = document.getElementById(id); \
    const heads = [...t.querySelectorAll('thead th')].map((h) => h.textContent.replace(/ [▲▼]$/, '')); \
    return [...t.querySelectorAll('tbody tr')].map((tr) => \
        Object.fromEntries([...tr.children].map((td, i) => [heads[i], td.textContent]))); }; 1";

fn rows(v: &Value) -> Vec<serde_json::Map<String, Value>> {
    v.as_array()
        .map(|a| a.iter().filter_map(|r| r.as_object().cloned()).collect())
        .unwrap_or_default()
}

/// The cells of column `name` of `rows`, top to bottom.
fn column(rows: &[serde_json::Map<String, Value>], name: &str) -> Vec<String> {
    rows.iter()
        .filter_map(|r| r.get(name).and_then(|v| v.as_str()).map(String::from))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_view_in_chromium() {
    let Some(chromium) = require(
        "chromium",
        find_program("chromium", &[]).or_else(|_| find_program("chromium-browser", &[])),
    ) else {
        return;
    };
    let Some(hubble) = require("shared/testdata/hubble", shared_testdata("hubble")) else {
        return;
    };
    let mut flows = String::new();
    flate2::read::GzDecoder::new(File::open(hubble.join("boutique-flows.jsonl.gz")).unwrap())
        .read_to_string(&mut flows)
        .unwrap();
    let flows: Vec<String> = flows.lines().map(String::from).collect();
    let truth = truth_nodes(&hubble);

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("flows")).unwrap();
    std::fs::create_dir_all(dir.path().join("stacks")).unwrap();
    let shots: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let api = free_addr();
    let weir = start_weir(dir.path(), "weir", &config(dir.path(), api), false);
    assert!(
        wait_until(Duration::from_secs(60), || http_get(api, "/health")
            .is_ok_and(|(s, _)| s == 200)),
        "the API did not come up:\n{}",
        weir_log(dir.path(), "weir")
    );
    // Closed console: no feed holds a tap (nothing asked yet).
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = feed(dir.path(), flows, stop.clone());

    let mut b = Browser::start(&chromium);
    b.call(
        "Page.navigate",
        json!({"url": format!("http://{api}/#pipeline")}),
    );

    // Pipeline: every component drawn, counts moving, a selected component's config,
    // metrics and live sample.
    let ids = b.wait_for(
        "pipeline nodes",
        "[...document.querySelectorAll('#pipeline-graph .node')].map(n => n.dataset.id).sort()",
        |v| strings(v).len() == 12,
    );
    assert_eq!(
        strings(&ids),
        [
            "conns", "demo", "flows", "fold", "folded", "logs", "map", "maps", "node", "parse",
            "procs", "samples"
        ]
    );
    let count =
        "document.querySelector('#pipeline-graph .node[data-id=\"parse\"] .rate').textContent";
    let first = b.wait_for("parse's count", count, |v| {
        v.as_str().is_some_and(|s| !s.ends_with(" 0 events"))
    });
    b.wait_for("parse's count moving", count, |v| *v != first);
    b.eval("document.querySelector('#pipeline-graph .node[data-id=\"parse\"]').dispatchEvent(new MouseEvent('click'))");
    let config = b.wait_for(
        "parse's configuration",
        "document.getElementById('pipeline-config')?.textContent ?? ''",
        |v| v.as_str().is_some_and(|s| s.contains("type = \"remap\"")),
    );
    assert!(config.as_str().unwrap().starts_with("[transforms.parse]"));
    b.wait_for(
        "parse's live sample",
        "document.getElementById('pipeline-sample').textContent",
        |v| {
            v.as_str()
                .is_some_and(|s| s.contains("\"component\": \"parse\""))
        },
    );
    b.wait_for(
        "parse's metric history",
        "Number(document.getElementById('pipeline-detail').dataset.points || 0)",
        |v| v.as_u64().is_some_and(|n| n >= 3),
    );
    b.screenshot(&shots.join("pipeline.png"));

    // Service map: the latest window's workloads, all nodes of the capture's map; new windows
    // arrive; an edge's details.
    b.eval("location.hash = '#services'");
    let nodes = b.wait_for(
        "service map nodes",
        "[...document.querySelectorAll('#services-graph .svc-node')].map(n => n.dataset.id)",
        |v| strings(v).len() >= 3,
    );
    for n in strings(&nodes) {
        assert!(
            truth.contains(&n),
            "node {n} is not in the capture's map {truth:?}"
        );
    }
    assert!(strings(&nodes).iter().any(|n| n == "boutique/frontend"));
    let window = "document.getElementById('services-window').options[1]?.value";
    let w1 = b.wait_for("a window", window, |v| v.is_string());
    b.wait_for("the next window", window, |v| v.is_string() && *v != w1);
    let edge_labels = b.eval(
        "[...document.querySelectorAll('#services-graph .svc-edge text')].map(t => t.textContent)",
    );
    assert!(
        strings(&edge_labels).iter().any(|l| l.contains("conn/s")),
        "{edge_labels}"
    );
    b.eval("document.querySelector('#services-graph .svc-edge[data-id^=\"boutique/frontend\"]').dispatchEvent(new MouseEvent('click'))");
    b.wait_for(
        "edge details",
        "document.getElementById('services-detail').textContent",
        |v| {
            v.as_str()
                .is_some_and(|s| s.contains("connections") && s.contains("p95"))
        },
    );
    // The layout: no two workloads on top of each other, all inside the drawing.
    let drawn = b.eval(
        "(() => { const svg = document.getElementById('services-graph'); \
         const ps = [...svg.querySelectorAll('.svc-node')].map((n) => n.getAttribute('transform').match(/[-0-9.]+/g).map(Number)); \
         let min = Infinity; for (let i = 0; i < ps.length; i++) for (let j = i + 1; j < ps.length; j++) \
           min = Math.min(min, Math.hypot(ps[i][0] - ps[j][0], ps[i][1] - ps[j][1])); \
         return { min, inside: ps.every(([x, y]) => x > 0 && y > 0 && x < svg.width.baseVal.value && y < svg.height.baseVal.value) }; })()",
    );
    assert!(drawn["min"].as_f64().unwrap() >= 40.0, "{drawn}");
    assert_eq!(drawn["inside"], true, "{drawn}");
    // A crowded map (41 workloads: `frontend` calls 40 services, every third of which calls
    // the next, and one calls `frontend` back): laid out in layers of the longest call path,
    // callers left of callees but for the one edge that closes the cycle, nodes apart.
    let crowded = b.eval(CROWDED_LAYOUT_JS);
    assert_eq!(crowded["layers"], json!([1, 27, 13]), "{crowded}");
    assert_eq!(
        crowded["backward"],
        json!(["shop/svc-01 -> shop/frontend"]),
        "{crowded}"
    );
    assert!(crowded["min"].as_f64().unwrap() >= 40.0, "{crowded}");
    assert_eq!(crowded["inside"], true, "{crowded}");
    b.screenshot(&shots.join("service-map.png"));

    // Profiles: the frames of the samples; search, zoom, filter, difference.
    b.eval("location.hash = '#profiles'");
    let frames = b.wait_for(
        "flame graph frames",
        "[...new Set([...document.querySelectorAll('#flamegraph .frame')].map(f => f.dataset.name))].sort()",
        |v| strings(v).len() >= 8,
    );
    assert_eq!(
        strings(&frames),
        [
            "all",
            "api-server",
            "compute",
            "handle_request",
            "main",
            "parse_json",
            "run_jobs",
            "sleep_wait",
            "worker"
        ]
    );
    let pwindow = "document.getElementById('profiles-window').options[1]?.value";
    let p1 = b.wait_for("a profile window", pwindow, |v| v.is_string());
    b.wait_for("the next profile window", pwindow, |v| {
        v.is_string() && *v != p1
    });
    b.eval("const s = document.getElementById('profiles-search'); s.value = 'compute'; s.dispatchEvent(new Event('input'))");
    let matched = b.eval(
        "[...document.querySelectorAll('#flamegraph .frame.match')].map(f => f.dataset.name)",
    );
    assert_eq!(strings(&matched), ["compute"]);
    b.eval("document.querySelector('#flamegraph .frame[data-name=\"worker\"]').dispatchEvent(new MouseEvent('click'))");
    let zoomed = b.eval(
        "[...document.querySelectorAll('#flamegraph .frame')].map(f => f.dataset.name).sort()",
    );
    assert_eq!(strings(&zoomed), ["run_jobs", "sleep_wait", "worker"]);
    b.eval("document.getElementById('profiles-reset').click()");
    b.eval("const p = document.getElementById('profiles-process'); p.value = 'api-server'; p.dispatchEvent(new Event('change'))");
    let filtered =
        b.eval("[...document.querySelectorAll('#flamegraph .frame')].map(f => f.dataset.name)");
    assert!(
        !strings(&filtered).contains(&"worker".to_string()),
        "{filtered}"
    );
    b.eval("const d = document.getElementById('profiles-diff'); d.checked = true; d.dispatchEvent(new Event('change'))");
    b.wait_for(
        "difference view",
        "document.getElementById('profiles-summary').textContent",
        |v| v.as_str().is_some_and(|s| s.contains("red: grew")),
    );
    b.screenshot(&shots.join("profiles.png"));

    // Connections and processes: the demo's connections and process events as tables, with
    // the shop's processes and ports; sorting and filtering; rows arriving.
    b.eval("location.hash = '#tables'");
    b.eval(TABLE_ROWS_JS);
    let summaries = "document.getElementById('tcp-summary').textContent + '|' + document.getElementById('process-summary').textContent";
    let summary = b.wait_for("table summaries", summaries, |v| {
        v.as_str()
            .is_some_and(|s| s.contains("from conns") && s.contains("from procs"))
    });
    let tcp = b.wait_for("connection rows", "tableRows('tcp-table')", |v| {
        let rows = rows(v);
        column(&rows, "comm").contains(&"frontend".to_string())
            && column(&rows, "remote_port").contains(&"8080".to_string())
            && column(&rows, "remote_port").contains(&"5432".to_string())
    });
    let tcp = rows(&tcp);
    for c in [
        "comm",
        "direction",
        "local_addr",
        "remote_port",
        "bytes_acked",
        "srtt_us",
        "retransmits",
        "close_reason",
        "duration_secs",
    ] {
        assert!(
            column(&tcp, c).iter().any(|v| !v.is_empty()),
            "no `{c}` column: {:?}",
            tcp[0]
        );
    }
    for comm in column(&tcp, "comm") {
        assert!(
            [
                "frontend",
                "cart",
                "catalog",
                "checkout",
                "payment",
                "shipping",
                "recommendation",
                "postgres",
                "redis-server"
            ]
            .contains(&comm.as_str()),
            "{comm} is not one of the shop's processes"
        );
    }
    assert!(column(&tcp, "close_reason").contains(&"normal".to_string()));
    let procs = b.wait_for("process rows", "tableRows('process-table')", |v| {
        let rows = rows(v);
        let comms = column(&rows, "comm");
        comms.contains(&"grpc_health_pro".to_string()) && comms.contains(&"postgres".to_string())
    });
    let procs = rows(&procs);
    let events: BTreeSet<String> = column(&procs, "event").into_iter().collect();
    assert!(
        events.is_subset(&["exec", "exit", "fork"].map(String::from).into()),
        "{events:?}"
    );
    assert!(events.contains("fork"), "{events:?}");
    // New rows arrive: more held, and the newest (first) row changes.
    let held = |s: &Value| -> u64 {
        let s = s.as_str().unwrap_or("");
        s.split(" held").next().unwrap_or("").parse().unwrap_or(0)
    };
    let before = held(&summary);
    b.wait_for("more connections held", summaries, |v| held(v) > before);
    let newest = tcp[0].clone();
    b.wait_for("a newer connection", "tableRows('tcp-table')[0]", |v| {
        *v != Value::Object(newest.clone())
    });
    // Sorting: by a number column, ascending then descending; by a text column.
    let sorted_by = |b: &mut Browser, table: &str, col: &str| -> (String, Vec<String>) {
        let header = b.eval(&format!(
            "(() => {{ const th = [...document.querySelectorAll('#{table} thead th')].find(h => h.textContent.replace(/ [▲▼]$/, '') === '{col}'); th.click(); return [...document.querySelectorAll('#{table} thead th')].find(h => h.textContent.startsWith('{col}')).textContent; }})()"
        ));
        let now = rows(&b.eval(&format!("tableRows('{table}')")));
        (header.as_str().unwrap().to_string(), column(&now, col))
    };
    let numbers = |v: &[String]| -> Vec<i64> { v.iter().map(|s| s.parse().unwrap()).collect() };
    let (header, up) = sorted_by(&mut b, "tcp-table", "bytes_acked");
    assert_eq!(header, "bytes_acked ▲");
    let up = numbers(&up);
    assert!(
        up.len() > 1 && up.windows(2).all(|w| w[0] <= w[1]),
        "{up:?}"
    );
    let (header, down) = sorted_by(&mut b, "tcp-table", "bytes_acked");
    assert_eq!(header, "bytes_acked ▼");
    let down = numbers(&down);
    assert!(down.windows(2).all(|w| w[0] >= w[1]), "{down:?}");
    assert!(down[0] > up[0], "{} then {}", up[0], down[0]);
    let (header, comms) = sorted_by(&mut b, "process-table", "comm");
    assert_eq!(header, "comm ▲");
    assert!(comms.windows(2).all(|w| w[0] <= w[1]), "{comms:?}");
    assert_ne!(comms.first(), comms.last(), "{comms:?}");
    // Filtering: only the rows that mention the word, fewer than all.
    let filter = |b: &mut Browser,
                  table: &str,
                  word: &str|
     -> Vec<serde_json::Map<String, Value>> {
        let name = table.trim_end_matches("-table");
        b.eval(&format!("{{ const f = document.getElementById('{name}-filter'); f.value = '{word}'; f.dispatchEvent(new Event('input')); }}"));
        rows(&b.eval(&format!("tableRows('{table}')")))
    };
    let all = rows(&b.eval("tableRows('tcp-table')")).len();
    let checkout = filter(&mut b, "tcp-table", "checkout");
    assert!(
        !checkout.is_empty() && checkout.len() < all,
        "{} of {all} rows",
        checkout.len()
    );
    for row in &checkout {
        assert_eq!(row["comm"], "checkout", "{row:?}");
    }
    let all = rows(&b.eval("tableRows('process-table')")).len();
    let probes = filter(&mut b, "process-table", "grpc_health");
    assert!(
        !probes.is_empty() && probes.len() < all,
        "{} of {all} rows",
        probes.len()
    );
    for row in &probes {
        assert!(
            row["comm"] == "grpc_health_pro"
                || row["filename"].as_str().unwrap().contains("grpc_health"),
            "{row:?}"
        );
    }
    filter(&mut b, "tcp-table", "");
    filter(&mut b, "process-table", "");
    b.screenshot(&shots.join("tables.png"));

    // Drain the browser's pending reports, then: no error anywhere.
    b.eval("1");
    assert!(
        b.errors.is_empty(),
        "the page reported errors: {:#?}",
        b.errors
    );
    println!("console screenshots: {}", shots.display());
    drop(b);
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    stop_clean(dir.path(), "weir", weir);
}
