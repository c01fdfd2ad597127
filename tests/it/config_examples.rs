//! Every example under `config/` validates and runs (and passes its `[[tests]]`, if it has
//! any); the quickstart serves its API and writes its files, prints the console's URL and
//! feeds every console view (service map, flame graph, connections and processes).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::harness::{free_addr, http_get, sigterm, wait_until, wait_with_timeout, weir};

/// How long a newcomer waits for each console view to have live data (issue 23).
const LIVE_WITHIN: Duration = Duration::from_secs(10);

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            toml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "toml") {
            out.push(p);
        }
    }
}

fn examples() -> Vec<PathBuf> {
    let mut v = Vec::new();
    toml_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        &mut v,
    );
    v.sort();
    assert!(!v.is_empty());
    v
}

#[test]
fn every_example_validates() {
    let data = tempfile::tempdir().unwrap();
    for f in examples() {
        let out = weir()
            .env("WEIR_DATA_DIR", data.path())
            .env("WEIR_API_ADDRESS", free_addr().to_string())
            .arg("validate")
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The examples with `[[tests]]` pass them (`weir run` and `weir validate` ignore them).
#[test]
fn every_example_with_tests_passes_them() {
    let data = tempfile::tempdir().unwrap();
    let mut tested = 0;
    for f in examples() {
        if !std::fs::read_to_string(&f).unwrap().contains("[[tests]]") {
            continue;
        }
        tested += 1;
        let out = weir()
            .env("WEIR_DATA_DIR", data.path())
            .env("WEIR_API_ADDRESS", free_addr().to_string())
            .arg("test")
            .arg(&f)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("test result: ok."),
            "{}: {stdout}\n{}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(tested > 0, "no example has `[[tests]]`");
}

#[test]
fn every_example_runs_and_stops_cleanly_on_sigterm() {
    for f in examples() {
        // `config/node.toml` loads eBPF programs: it runs where eBPF can be tested.
        if std::fs::read_to_string(&f)
            .unwrap()
            .contains("type = \"ebpf_")
            && !crate::ebpf::ebpf_available(&format!("running {}", f.display()))
        {
            continue;
        }
        let data = tempfile::tempdir().unwrap();
        let api = free_addr();
        let child = weir()
            .env("WEIR_DATA_DIR", data.path())
            .env("WEIR_API_ADDRESS", api.to_string())
            // The Kubernetes examples' NATS server: a loopback port nothing listens on (they
            // retry in the background), never their in-cluster default name.
            .env("NATS_URL", format!("nats://{}", free_addr()))
            .args(["run", "--config"])
            .arg(&f)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Up as soon as its API answers (examples without an API get a moment instead).
        let up = wait_until(Duration::from_secs(10), || http_get(api, "/health").is_ok());
        if !up {
            std::thread::sleep(Duration::from_millis(1500));
        }
        std::thread::sleep(Duration::from_millis(700));
        sigterm(&child);
        let out = wait_with_timeout(child, Duration::from_secs(30));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: {}",
            f.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn quickstart_serves_its_api_and_writes_under_data_dir() {
    let data = tempfile::tempdir().unwrap();
    let api = free_addr();
    // No --config: the embedded quickstart.
    let child = weir()
        .env("WEIR_DATA_DIR", data.path())
        .env("WEIR_API_ADDRESS", api.to_string())
        .env("WEIR_DEMO_RATE", "2000")
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || {
        matches!(http_get(api, "/health"), Ok((200, b)) if b.contains("\"ok\":true"))
    }));
    // Errors (5xx) are routed to per-service files under data_dir/errors/<date>/.
    assert!(wait_until(Duration::from_secs(10), || {
        let dir = data.path().join("errors");
        dir.exists()
            && std::fs::read_dir(&dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(false)
    }));
    let (status, metrics) = http_get(api, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("weir_component_sent_events_total{component_id=\"demo\""),
        "{metrics}"
    );
    let (_, graph) = http_get(api, "/api/graph").unwrap();
    let g: serde_json::Value = serde_json::from_str(&graph).unwrap();
    let edges = g["edges"].as_array().unwrap();
    assert!(edges
        .iter()
        .any(|e| e["from"] == "router" && e["output"] == "errors" && e["to"] == "errors_file"));
    sigterm(&child);
    let out = wait_with_timeout(child, Duration::from_secs(30));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every routed error line is a parsed, enriched 5xx event.
    let mut lines = 0;
    let mut statuses = std::collections::BTreeSet::new();
    for day in std::fs::read_dir(data.path().join("errors")).unwrap() {
        for f in std::fs::read_dir(day.unwrap().path()).unwrap() {
            for l in std::fs::read_to_string(f.unwrap().path()).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert_eq!(v["status_class"], "5xx", "{l}");
                assert!(v["status"].as_i64().unwrap() >= 500, "{l}");
                statuses.insert(v["status"].as_i64().unwrap());
                assert!(v["duration_s"].is_number(), "{l}");
                lines += 1;
            }
        }
    }
    assert!(lines > 0);
    assert!(
        statuses.len() > 1,
        "every 5xx status is routed, not only 500: {statuses:?}"
    );
    // The console view shows sampled, logfmt-encoded non-error events.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.contains("status_class=2xx")),
        "{stdout}"
    );
    assert!(
        !stdout.contains("status_class=5xx"),
        "errors were routed away from the console"
    );
}

#[test]
fn quickstart_prints_the_console_url_and_feeds_every_console_view() {
    let data = tempfile::tempdir().unwrap();
    let api = free_addr();
    let log = data.path().join("weir.log");
    let child = weir()
        .env("WEIR_DATA_DIR", data.path())
        .env("WEIR_API_ADDRESS", api.to_string())
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let said = || std::fs::read_to_string(&log).unwrap_or_default();
    let url = format!("Weir's console: http://{api}/");
    let printed = wait_until(Duration::from_secs(30), || said().contains(&url));
    let page = http_get(api, "/");
    // Each feed from its first read: the tap attaches then, and a window must close.
    let mut live = Vec::new();
    // A service map window with the shop's edges; folded stacks of the demo's web server.
    let topology = |e: &serde_json::Value| {
        e["event"]["edges"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    };
    let stacks = |e: &serde_json::Value| {
        e["event"]["stack"]
            .as_str()
            .is_some_and(|s| s.contains("handle_request"))
    };
    // Connections between the shop's services; its node's health probes starting.
    let tcp = |e: &serde_json::Value| {
        e["event"]["event"] == "tcp_connection"
            && e["event"]["bytes_acked"].as_i64().is_some()
            && e["event"]["remote_port"] == 8080
    };
    let process = |e: &serde_json::Value| {
        e["event"]["event"] == "exec" && e["event"]["comm"] == "grpc_health_pro"
    };
    type Shows<'a> = &'a dyn Fn(&serde_json::Value) -> bool;
    let checks: [(&str, &str, Shows); 4] = [
        ("topology", "service_map", &topology),
        ("stacks", "profile", &stacks),
        ("tcp", "demo_connections", &tcp),
        ("process", "demo_processes", &process),
    ];
    for (feed, component, shows) in checks {
        let has_data = wait_until(LIVE_WITHIN, || {
            let Ok((200, body)) = http_get(api, &format!("/api/console/feed/{feed}")) else {
                return false;
            };
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            v["events"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["component"] == component && shows(e))
        });
        live.push((feed, has_data));
    }
    let (_, graph) = http_get(api, "/api/graph").unwrap();
    sigterm(&child);
    let out = wait_with_timeout(child, Duration::from_secs(30));
    let text = said();
    assert!(printed, "no `{url}` line:\n{text}");
    assert!(
        page.is_ok_and(|(s, b)| s == 200 && b.contains("<html")),
        "the console page is not served"
    );
    assert_eq!(
        live,
        [
            ("topology", true),
            ("stacks", true),
            ("tcp", true),
            ("process", true)
        ],
        "a console view had no data within {LIVE_WITHIN:?}:\n{text}"
    );
    // Internal metrics flow, and the Parquet archive holds the parsed logs once stopped.
    assert!(graph.contains("\"weir_metrics\""), "{graph}");
    assert_eq!(out.status.code(), Some(0), "{text}");
    let day = std::fs::read_dir(data.path().join("archive"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let parquet: Vec<_> = std::fs::read_dir(&day)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    assert!(!parquet.is_empty(), "no Parquet file in {}", day.display());
    let size = std::fs::metadata(&parquet[0]).unwrap().len();
    assert!(size > 0, "{} is empty", parquet[0].display());
}
