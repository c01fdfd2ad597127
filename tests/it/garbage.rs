//! Garbage on stdin (invalid UTF-8, a 10 MiB line, broken JSON) is counted as errors with a
//! rate-limited log line; the neighbouring valid events arrive and the pipeline keeps running.

use std::io::Write;
use std::time::Duration;

use crate::harness::{spawn_with_stdin, wait_with_timeout, weir, write_config};

#[test]
fn garbage_on_stdin_is_counted_and_valid_neighbours_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out.log");
    let cfg = write_config(
        dir.path(),
        "g.toml",
        &format!(
            r#"
data_dir = "{data}"
[api]
enabled = false
[sources.in]
type = "stdin"
decoding.codec = "json"
[sinks.out]
type = "file"
inputs = ["in"]
path = "{out}"
"#,
            data = dir.path().display(),
            out = out_path.display()
        ),
    );
    let mut child = spawn_with_stdin(weir().args(["run", "--config"]).arg(&cfg));
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let mut input = Vec::new();
        input.extend_from_slice(b"{\"n\":1}\n");
        input.extend_from_slice(b"{\"n\":\"\xff\xfe invalid utf-8\"}\n");
        input.extend_from_slice(b"{\"n\":2}\n");
        input.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024));
        input.extend_from_slice(b"\n{\"n\":3}\n");
        for _ in 0..1000 {
            input.extend_from_slice(b"{\"broken\": \n");
        }
        input.extend_from_slice(b"{\"n\":4}\n");
        stdin.write_all(&input).unwrap();
    });
    writer.join().unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let got: Vec<i64> = std::fs::read_to_string(&out_path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(got, vec![1, 2, 3, 4]);
    // 1001 decode errors and one oversized line, all counted (summary at exit) ...
    assert!(
        stderr.contains("errors=decode:1001,oversized:1"),
        "{stderr}"
    );
    // ... but logged at a bounded rate, not 1001 times.
    let decode_logs = stderr.matches("cannot decode").count();
    assert!(
        (1..=3).contains(&decode_logs),
        "{decode_logs} log lines:\n{stderr}"
    );
    assert!(stderr.contains("over max_line_bytes"), "{stderr}");
}

/// The logfmt line that once panicked the decoder (a backslash before a multi-byte
/// character) and lines the fuzzers built, in a tailed file: each bad line is a counted
/// decode error, and the lines around them, in this file and in another one read by the same
/// source, are delivered.
#[test]
fn hostile_logfmt_lines_in_a_file_are_counted_and_neighbours_delivered() {
    use crate::harness::{metric, sigterm, start_weir, wait_until};
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut hostile = Vec::new();
    hostile.extend_from_slice(b"n=1\n");
    hostile.extend_from_slice("k=\"\\é\" n=2\n".as_bytes());
    hostile.extend_from_slice(b"k=\"\\\n"); // an escape at the end of the line
    hostile.extend_from_slice(b"k=\"unterminated\n");
    hostile.extend_from_slice(b"k=\"\xc3\" n=3\n"); // invalid UTF-8: an error for logfmt
    hostile.extend_from_slice(b"n=4\n");
    std::fs::write(logs.join("hostile.log"), &hostile).unwrap();
    std::fs::write(logs.join("neighbour.log"), b"n=10\nn=11\n").unwrap();
    let out = dir.path().join("out.log");
    let api = crate::harness::free_addr();
    let child = start_weir(
        dir.path(),
        "logfmt",
        &format!(
            r#"
data_dir = "{data}"
[api]
address = "{api}"
[sources.files]
type = "file"
include = ["{logs}/*.log"]
decoding.codec = "logfmt"
[sinks.out]
type = "file"
inputs = ["files"]
path = "{out}"
"#,
            data = dir.path().join("data").display(),
            logs = logs.display(),
            out = out.display(),
        ),
        false,
    );
    let numbers = || -> Vec<String> {
        crate::harness::lines(&out)
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["n"].as_str().map(str::to_string))
            .collect()
    };
    let all = wait_until(Duration::from_secs(30), || numbers().len() >= 5);
    let errors = metric(api, "weir_component_errors_total", "files");
    sigterm(&child);
    let _ = wait_with_timeout(child, Duration::from_secs(30));
    let log = crate::harness::weir_log(dir.path(), "logfmt");
    assert!(all, "not everything arrived: {:?}\n{log}", numbers());
    let mut got = numbers();
    got.sort();
    assert_eq!(got, ["1", "10", "11", "2", "4"], "{log}");
    assert_eq!(errors, Some(3.0), "three lines cannot be decoded\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}
