//! The Grafana dashboards (`deploy/grafana/*.json`) query only metrics Weir emits: the
//! shipped agent configuration `deploy/grafana/weir-node.toml` runs, its two sources that
//! need a cluster or root (`hubble`, `ebpf_tcp`) replaced by `file` sources over recorded
//! Hubble flows and TCP records in the `ebpf_tcp` schema, and the metric names it serves
//! (its `prometheus_exporter` and the API's `/metrics`) must include every name a panel or a
//! dashboard variable queries.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{
    free_addr, http_get, require, shared_testdata, stop_clean, wait_until, weir, weir_log,
};

/// PromQL words that are not metric names.
const KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "limitk",
    "limit_ratio",
];

/// The metric names a PromQL expression reads: identifiers that are not functions (followed
/// by `(`), not inside `{...}` matchers, `[...]` ranges or strings, not label lists of
/// `by`/`without`/`on`/`ignoring`/`group_*`, and not Grafana variables (`$x`, `${x}`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let b: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_list = false; // the next `(...)` is a label list
    while i < b.len() {
        let c = b[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += if b[i] == '\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < b.len() && b[i] != close {
                    i += 1;
                }
                i += 1;
            }
            '(' if skip_list => {
                while i < b.len() && b[i] != ')' {
                    i += 1;
                }
                i += 1;
                skip_list = false;
            }
            '$' => {
                i += 1;
                if i < b.len() && b[i] == '{' {
                    while i < b.len() && b[i] != '}' {
                        i += 1;
                    }
                    i += 1;
                } else {
                    while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_' || b[i] == ':') {
                    i += 1;
                }
                let word: String = b[start..i].iter().collect();
                let mut j = i;
                while j < b.len() && b[j] == ' ' {
                    j += 1;
                }
                let call = j < b.len() && b[j] == '(';
                let lower = word.to_ascii_lowercase();
                if matches!(
                    lower.as_str(),
                    "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                ) {
                    skip_list = true;
                } else if !call && !KEYWORDS.contains(&lower.as_str()) {
                    names.insert(word);
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // A number, or a duration (5m).
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Every PromQL expression of a dashboard: panel targets, and the metric of each
/// `label_values(metric, label)` variable.
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(e)) = m.get("expr") {
                out.push(e.clone());
            }
            if let Some(Value::String(q)) = m.get("definition") {
                if let Some(inner) = q
                    .strip_prefix("label_values(")
                    .and_then(|r| r.rsplit_once(','))
                {
                    out.push(inner.0.to_string());
                }
            }
            m.values().for_each(|x| queries(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| queries(x, out)),
        _ => {}
    }
}

/// The names of the samples in a Prometheus text exposition.
fn exposed(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(String::from)
        .collect()
}

#[test]
fn promql_names() {
    let n = metric_names(
        r#"histogram_quantile(0.99, sum by (component_id, le) (rate(weir_x_bucket{component_id=~"$c", a="b{"}[$__rate_interval]))) / on (a) group_left (b) node_y offset 5m or vector(1) + ${v}"#,
    );
    assert_eq!(
        n.into_iter().collect::<Vec<_>>(),
        ["node_y", "weir_x_bucket"]
    );
}

fn tcp_records() -> String {
    let mut out = String::new();
    for (i, reason) in ["normal", "reset_received", "error"].iter().enumerate() {
        let r = json!({
            "event": "tcp_connection", "timestamp": "2026-01-01T00:00:00Z", "pid": 100 + i,
            "tid": 100 + i, "comm": "curl", "cgroup_id": 1, "family": "ipv4",
            "local_addr": "10.0.0.1", "local_port": 40000 + i, "remote_addr": "10.0.0.2",
            "remote_port": 443, "direction": "outbound", "start_time": "2026-01-01T00:00:00Z",
            "duration_secs": 0.25, "states": ["SYN_SENT", "ESTABLISHED", "CLOSE"],
            "close_reason": reason, "socket_error": null, "bytes_acked": 1200,
            "bytes_received": 5400, "retransmits": i, "srtt_us": 850, "cwnd": 10,
            "ssthresh": 2147483647, "send_window": 65535, "receive_window": 65535,
            "send_buffer_bytes": 87040,
        });
        out.push_str(&r.to_string());
        out.push('\n');
    }
    out
}

/// The shipped agent configuration with its `hubble` and `ebpf_tcp` sources replaced by
/// `file` sources over `dir/flows.jsonl` and `dir/tcp.jsonl`.
fn node_config(dir: &Path) -> String {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana/weir-node.toml"),
    )
    .unwrap();
    let hubble =
        "[sources.flows]\ntype = \"hubble\"\naddress = \"${HUBBLE_ADDRESS:-localhost:4245}\"\n";
    let tcp = "[sources.tcp]\ntype = \"ebpf_tcp\"\n";
    assert!(
        shipped.contains(hubble) && shipped.contains(tcp),
        "{shipped}"
    );
    let d = dir.display();
    shipped
        .replace(
            hubble,
            &format!("[sources.flows]\ntype = \"file\"\ninclude = [\"{d}/flows.jsonl\"]\ndecoding.codec = \"hubble_jsonpb\"\n"),
        )
        .replace(
            tcp,
            &format!("[sources.tcp]\ntype = \"file\"\ninclude = [\"{d}/tcp.jsonl\"]\ndecoding.codec = \"json\"\n"),
        )
}

fn emitted(api: SocketAddr, exporter: SocketAddr) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for addr in [api, exporter] {
        if let Ok((200, body)) = http_get(addr, "/metrics") {
            names.extend(exposed(&body));
        }
    }
    names
}

#[test]
fn dashboards_query_only_emitted_metrics() {
    let Some(hubble) = require("shared/testdata/hubble", shared_testdata("hubble")) else {
        return;
    };
    let grafana = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/grafana");
    let mut wanted: Vec<(String, String)> = Vec::new(); // (dashboard, metric)
    let mut dashboards = 0;
    for entry in std::fs::read_dir(&grafana).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        dashboards += 1;
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut exprs = Vec::new();
        queries(&d, &mut exprs);
        assert!(!exprs.is_empty(), "{} queries nothing", path.display());
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for e in exprs {
            let names = metric_names(&e);
            assert!(!names.is_empty(), "{file}: no metric in `{e}`");
            wanted.extend(names.into_iter().map(|n| (file.clone(), n)));
        }
    }
    assert_eq!(dashboards, 4, "the four dashboards");

    let dir = tempfile::tempdir().unwrap();
    let mut flows = Vec::new();
    flate2::read::GzDecoder::new(File::open(hubble.join("boutique-flows.jsonl.gz")).unwrap())
        .read_to_end(&mut flows)
        .unwrap();
    std::fs::write(dir.path().join("flows.jsonl"), flows).unwrap();
    std::fs::write(dir.path().join("tcp.jsonl"), tcp_records()).unwrap();
    let cfg = dir.path().join("weir.toml");
    std::fs::write(&cfg, node_config(dir.path())).unwrap();
    let (api, exporter) = (free_addr(), free_addr());
    let log = File::create(dir.path().join("weir.log")).unwrap();
    let child = weir()
        .args(["run", "--config"])
        .arg(&cfg)
        .env("WEIR_DATA_DIR", dir.path().join("data"))
        .env("WEIR_API_ADDRESS", api.to_string())
        .env("WEIR_EXPORTER_ADDRESS", exporter.to_string())
        .env("WEIR_SCRAPE_INTERVAL_SECS", "1")
        .env("WEIR_MAP_WINDOW_SECS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let missing = || {
        let have = emitted(api, exporter);
        wanted
            .iter()
            .filter(|(_, n)| !have.contains(n))
            .cloned()
            .collect::<Vec<_>>()
    };
    // Every name shows up once its source has reported (the flows' window closed, the host
    // scraped, the TCP records counted).
    wait_until(Duration::from_secs(60), || missing().is_empty());
    let left = missing();
    if !left.is_empty() {
        // Not left running after the test fails.
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "dashboards query metrics Weir does not emit: {left:#?}\nemitted: {:#?}\n{}",
            emitted(api, exporter),
            weir_log(dir.path(), "weir")
        );
    }
    stop_clean(dir.path(), "weir", child);
}
