//! SIGTERM during a stream delivers every event that was handed to Weir, and exits 0.

use std::io::Write;
use std::time::Duration;

use std::process::Stdio;

use crate::harness::{sigterm, wait_until, wait_with_timeout, weir, write_config};

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
    let log_path = dir.path().join("weir.log");
    let mut child = weir()
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut input = String::with_capacity(N * 24);
    for i in 0..N {
        input.push_str(&format!("{{\"seq\":{i}}}\n"));
    }
    stdin.write_all(input.as_bytes()).unwrap();
    // Everything is handed over; the pipeline is still busy with it. Stop now, and end the
    // input only once Weir has taken the signal (else, on a busy machine, the end of input
    // could be seen first and the run would end without a signal).
    sigterm(&child);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(30), || log()
            .contains("stop signal received")),
        "{}",
        log()
    );
    drop(stdin);
    let out = wait_with_timeout(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", log());
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
