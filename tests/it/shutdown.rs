//! SIGTERM during a stream delivers every event that was handed to Weir, and exits 0.

use std::io::Write;
use std::time::Duration;

use crate::harness::{sigterm, spawn_with_stdin, wait_with_timeout, weir, write_config};

#[test]
fn sigterm_during_a_stream_delivers_all_events_to_the_file_sink() {
    const N: usize = 300_000;
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.log");
    let cfg = write_config(
        dir.path(),
        "s.toml",
        &format!(
            r#"
data_dir = "{data}"
[api]
enabled = false
[sources.in]
type = "stdin"
decoding.codec = "json"
[transforms.tag]
type = "remap"
inputs = ["in"]
source = '.seen = true'
[sinks.out]
type = "file"
inputs = ["tag"]
path = "{out}"
"#,
            data = dir.path().display(),
            out = out_path.display()
        ),
    );
    let mut child = spawn_with_stdin(weir().args(["run", "--config"]).arg(&cfg));
    let mut stdin = child.stdin.take().unwrap();
    let mut input = String::with_capacity(N * 24);
    for i in 0..N {
        input.push_str(&format!("{{\"seq\":{i}}}\n"));
    }
    stdin.write_all(input.as_bytes()).unwrap();
    // Everything is handed over; the pipeline is still busy with it. Stop now.
    sigterm(&child);
    drop(stdin);
    let out = wait_with_timeout(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("stop signal received"), "{stderr}");
    let text = std::fs::read_to_string(&out_path).unwrap();
    let mut seen = vec![false; N];
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["seen"], true);
        seen[v["seq"].as_u64().unwrap() as usize] = true;
    }
    assert_eq!(text.lines().count(), N, "no duplicates, none lost");
    assert!(seen.iter().all(|s| *s));
}
