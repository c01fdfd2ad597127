//! The `host_metrics` source through the real `weir` binary: its metrics, written as JSON
//! lines, match what this machine says through independent interfaces.

use std::process::Stdio;
use std::time::Duration;

use crate::harness::{sigterm, wait_until, wait_with_timeout, weir, write_config};

#[test]
fn host_metrics_match_this_machine() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let out = d.join("metrics.json");
    let cfg = write_config(
        d,
        "weir.toml",
        &format!(
            r#"
data_dir = "{d}/data"
[api]
enabled = false
[sources.host]
type = "host_metrics"
scrape_interval_secs = 0.5
[sinks.out]
type = "file"
inputs = ["host"]
path = "{out}"
encoding.codec = "json"
"#,
            d = d.display(),
            out = out.display()
        ),
    );
    let child = weir()
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let scraped = wait_until(Duration::from_secs(30), || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.contains("node_uptime_seconds"))
    });
    sigterm(&child);
    let res = wait_with_timeout(child, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(0), "{stderr}");
    assert!(scraped, "no scrape written:\n{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    let metrics: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The first scrape only (every metric of a scrape has the same timestamp).
    let first_ts = metrics[0]["timestamp"].clone();
    let scrape: Vec<&serde_json::Value> = metrics
        .iter()
        .filter(|m| m["timestamp"] == first_ts)
        .collect();

    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let total = scrape
        .iter()
        .find(|m| m["name"] == "node_memory_MemTotal_bytes")
        .expect("node_memory_MemTotal_bytes");
    assert_eq!(total["kind"], "absolute");
    assert_eq!(total["gauge"]["value"].as_f64(), Some(mem_kib * 1024.0));

    let cpus: std::collections::BTreeSet<&str> = scrape
        .iter()
        .filter(|m| m["name"] == "node_cpu_seconds_total")
        .map(|m| {
            assert!(m["counter"]["value"].as_f64().unwrap() >= 0.0);
            m["tags"]["cpu"].as_str().unwrap()
        })
        .collect();
    let stat_cpus = std::fs::read_to_string("/proc/stat")
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count();
    assert_eq!(cpus.len(), stat_cpus);

    assert!(
        scrape.iter().any(|m| m["name"] == "node_tcp_listening_port"
            && m["tags"]["address"] == "127.0.0.1"
            && m["tags"]["port"] == port.as_str()),
        "the test's listener on port {port} is listed"
    );
    drop(listener);
}
