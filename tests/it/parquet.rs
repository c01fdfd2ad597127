//! The `parquet` sink and source through the real `weir` binary: a round trip that keeps
//! every value type, real readers outside Rust (DuckDB, pyarrow), kill -9 while writing, and
//! schema drift.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{python_modules, require, wait_with_timeout, weir};

/// Every `*.parquet` file below `dir`, sorted by path.
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, &mut v);
    v.sort();
    v
}

/// Files below `dir` whose name ends with `suffix` (temporary files included).
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    fn walk(d: &Path, suffix: &str, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, suffix, out);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, suffix, &mut v);
    v
}

/// Runs `weir run --config cfg` with `input` on stdin; expects it to exit 0 by itself.
fn run_to_end(cfg: &Path, input: &[u8]) -> String {
    let mut child = weir()
        .args(["run", "--config"])
        .arg(cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
    }
    let out = wait_with_timeout(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{} did not end by itself with 0:\n{stderr}",
        cfg.display()
    );
    stderr
}

fn write_cfg(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Input event `i`: every JSON type, nested objects, arrays and nulls (every key in every
/// event, so a null is a null and not a missing field).
fn event(i: i64) -> Value {
    json!({
        "timestamp": format!("2026-11-{:02}T{:02}:{:02}:07.{:09}Z", 20 + i % 3, i % 24, i % 60, i * 1_000_003 % 1_000_000_000),
        "i": i * 7_919 - 1_000_000_000_000 * (i % 2),
        "f": i as f64 * 0.25 - 3.5,
        "b": i % 3 == 0,
        "service": if i % 2 == 0 { "cart" } else { "auth" },
        "msg": format!("event {i} · ünïcødé \"quoted\"\n"),
        "n": if i % 4 == 0 { Value::Null } else { json!(i) },
        "obj": {
            "a": i,
            "s": format!("s{i}"),
            "inner": { "x": i as f64 / 8.0, "opt": if i % 5 == 0 { Value::Null } else { json!("o") } }
        },
        "arr": (0..(i % 4)).collect::<Vec<i64>>(),
        "tags": ["t", format!("t{}", i % 3)],
    })
}

#[test]
fn round_trip_keeps_types_and_values_and_the_replay_ends_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let events: Vec<Value> = (0..250).map(event).collect();
    let mut input = Vec::new();
    for e in &events {
        serde_json::to_writer(&mut input, e).unwrap();
        input.push(b'\n');
    }
    // Archive: stdin JSON -> timestamps parsed -> parquet, partitioned by day, several files.
    let archive = write_cfg(
        d,
        "archive.toml",
        &format!(
            r#"
data_dir = "{d}/data"
[api]
enabled = false
[sources.in]
type = "stdin"
decoding.codec = "json"
[transforms.ts]
type = "remap"
inputs = ["in"]
source = '.timestamp = parse_timestamp!(.timestamp, "%+")'
[sinks.pq]
type = "parquet"
inputs = ["ts"]
path = "{d}/archive/dt=%Y-%m-%d/"
batch.max_events = 40
"#,
            d = d.display()
        ),
    );
    run_to_end(&archive, &input);
    let files = parquet_files(&d.join("archive"));
    assert!(files.len() >= 9, "3 days, 40 rows a file: {files:?}");
    assert!(files_ending(&d.join("archive"), ".tmp").is_empty());

    // Replay: parquet -> the types as the pipeline sees them -> JSON lines.
    let replay = write_cfg(
        d,
        "replay.toml",
        &format!(
            r#"
data_dir = "{d}/data"
[api]
enabled = false
[sources.pq]
type = "parquet"
paths = ["{d}/archive"]
keep_nulls = true
[transforms.types]
type = "remap"
inputs = ["pq"]
source = '''
.types = {{
  "timestamp": is_timestamp(.timestamp), "i": is_integer(.i), "f": is_float(.f),
  "b": is_boolean(.b), "msg": is_string(.msg), "n_null": is_null(.n), "obj": is_object(.obj),
  "x": is_float(.obj.inner.x), "arr": is_array(.arr), "tags": is_array(.tags)
}}
'''
[sinks.out]
type = "file"
inputs = ["types"]
path = "{d}/replayed.json"
"#,
            d = d.display()
        ),
    );
    run_to_end(&replay, b"");
    let text = std::fs::read_to_string(d.join("replayed.json")).unwrap();
    let mut got: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), events.len());
    // Files are read in name order: day partitions, then write order within a day.
    let order: Vec<(i64, i64)> = got
        .iter()
        .map(|v| {
            let a = v["obj"]["a"].as_i64().unwrap();
            (a % 3, a)
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "rows come in file-name order");
    // Back to input order to compare.
    got.sort_by_key(|v| v["obj"]["a"].as_i64().unwrap());
    for (g, e) in got.iter_mut().zip(&events) {
        let types = g.as_object_mut().unwrap().remove("types").unwrap();
        let n_null = e["n"].is_null();
        assert_eq!(
            types,
            json!({"timestamp": true, "i": true, "f": true, "b": true, "msg": true,
                   "n_null": n_null, "obj": true, "x": true, "arr": true, "tags": true}),
            "{g}"
        );
        let (gt, et) = (g["timestamp"].take(), e["timestamp"].clone());
        assert_eq!(nanos_of(&gt), nanos_of(&et), "{gt} vs {et}");
        let mut e = e.clone();
        e["timestamp"] = Value::Null;
        assert_eq!(*g, e);
    }
}

/// An RFC 3339 UTC time (`...T..:..:..[.fraction]Z`) as (seconds part, nanoseconds), so
/// that `07Z` and `07.000000000Z` compare equal.
fn nanos_of(v: &Value) -> (String, u32) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("not a time string: {v}"));
    let s = s
        .strip_suffix('Z')
        .unwrap_or_else(|| panic!("not UTC: {s}"));
    match s.split_once('.') {
        None => (s.to_string(), 0),
        Some((secs, frac)) => (secs.to_string(), format!("{frac:0<9}").parse().unwrap()),
    }
}

/// The files are read by real readers outside Rust: pyarrow and DuckDB (from PyPI, installed
/// by `scripts/install-test-deps.sh`) check row counts, column types, statistics and Hive partitions.
#[test]
fn duckdb_and_pyarrow_read_the_files() {
    let Some(()) = python_with(&["duckdb", "pyarrow"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let events: Vec<Value> = (0..300).map(event).collect();
    let mut input = Vec::new();
    for e in &events {
        serde_json::to_writer(&mut input, e).unwrap();
        input.push(b'\n');
    }
    let cfg = write_cfg(
        d,
        "archive.toml",
        &format!(
            r#"
data_dir = "{d}/data"
[api]
enabled = false
[sources.in]
type = "stdin"
decoding.codec = "json"
[transforms.ts]
type = "remap"
inputs = ["in"]
source = '.timestamp = parse_timestamp!(.timestamp, "%+")'
[sinks.logs]
type = "parquet"
inputs = ["ts"]
path = "{d}/logs/dt=%Y-%m-%d/part={{{{ service }}}}/"
batch.max_events = 70
row_group_size = 16
compression = "zstd"
[transforms.count]
type = "log_to_metric"
inputs = ["ts"]
[[transforms.count.metrics]]
type = "counter"
field = "service"
name = "events"
tags.service = "{{{{ service }}}}"
[sinks.metrics]
type = "parquet"
inputs = ["count"]
path = "{d}/metrics/"
schema = "metrics"
compression = "snappy"
"#,
            d = d.display()
        ),
    );
    run_to_end(&cfg, &input);

    let mut per_partition = serde_json::Map::new();
    for e in &events {
        let ts = e["timestamp"].as_str().unwrap();
        let key = format!("{}/{}", &ts[..10], e["service"].as_str().unwrap());
        let c = per_partition.entry(key).or_insert(json!(0));
        *c = json!(c.as_i64().unwrap() + 1);
    }
    let expected = json!({
        "rows": events.len(),
        "per_partition": per_partition,
        "sum_i": events.iter().map(|e| e["i"].as_i64().unwrap()).sum::<i64>(),
        "nulls_n": events.iter().filter(|e| e["n"].is_null()).count(),
        "sum_x": events.iter().map(|e| e["obj"]["inner"]["x"].as_f64().unwrap()).sum::<f64>(),
        "sum_len_arr": events.iter().map(|e| e["arr"].as_array().unwrap().len()).sum::<usize>(),
        "metric_rows": events.len(),
        "cart_count": events.iter().filter(|e| e["service"] == "cart").count() as f64,
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/check_parquet.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(d.join("logs"))
        .arg(d.join("metrics"))
        .arg(expected.to_string())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks every `*.parquet` file under `dir` with pyarrow (each must open and decode
/// completely) and returns (total rows, the distinct `seq` values).
fn read_seqs(dir: &Path) -> (u64, std::collections::BTreeSet<i64>) {
    let script = r#"
import glob, os, sys
import pyarrow.parquet as pq
rows, seqs = 0, set()
for f in sorted(glob.glob(os.path.join(sys.argv[1], "**", "*.parquet"), recursive=True)):
    t = pq.read_table(f)
    rows += t.num_rows
    seqs.update(t.column("seq").to_pylist())
print(rows)
print(" ".join(map(str, sorted(seqs))))
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .output()
        .expect("python3 with pyarrow");
    assert!(
        out.status.success(),
        "a parquet file is unreadable: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let rows = lines.next().unwrap().parse().unwrap();
    let seqs = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    (rows, seqs)
}

/// kill -9 while files are being written: every `.parquet` file is whole (only hidden
/// `.tmp` files can be cut short), and a restart with the replayable `file` source (its
/// checkpoint advances only on acknowledgement, which comes after the rename) loses nothing.
#[test]
fn kill_9_while_writing_leaves_no_broken_file_and_a_restart_loses_nothing() {
    let Some(()) = python_with(&["pyarrow"]) else {
        return;
    };
    const N: i64 = 60_000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut input = String::new();
    for i in 0..N {
        input.push_str(&format!(
            "{{\"seq\":{i},\"level\":\"info\",\"msg\":\"line {i} of the kill test\"}}\n"
        ));
    }
    std::fs::create_dir_all(d.join("in")).unwrap();
    std::fs::write(d.join("in/app.log"), input).unwrap();
    let cfg = write_cfg(
        d,
        "weir.toml",
        &format!(
            r#"
data_dir = "{d}/data"
[api]
enabled = false
[sources.logs]
type = "file"
include = ["{d}/in/*.log"]
read_from = "beginning"
acknowledgements = true
decoding.codec = "json"
[sinks.pq]
type = "parquet"
inputs = ["logs"]
path = "{d}/out/"
batch.max_events = 3000
batch.timeout_secs = 1
"#,
            d = d.display()
        ),
    );
    let out = d.join("out");
    let start = || {
        weir()
            .args(["run", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // First run: killed as soon as a file is finished while others are being written.
    let mut child = start();
    let seen =
        crate::harness::wait_until(Duration::from_secs(60), || !parquet_files(&out).is_empty());
    assert!(seen, "no parquet file was finished");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let (rows1, seqs1) = read_seqs(&out);
    assert!(rows1 > 0);
    assert!(
        (seqs1.len() as i64) < N,
        "the kill came after everything was written; nothing was tested"
    );
    // Second run: continues from the checkpoint and finishes.
    let child = start();
    let done = crate::harness::wait_until(Duration::from_secs(120), || {
        read_seqs(&out).1.len() as i64 == N
    });
    crate::harness::sigterm(&child);
    let res = wait_with_timeout(child, Duration::from_secs(60));
    assert_eq!(
        res.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let (rows2, seqs2) = read_seqs(&out);
    assert!(
        done,
        "after the restart {} of {N} lines arrived",
        seqs2.len()
    );
    assert_eq!(seqs2, (0..N).collect(), "every line is in a parquet file");
    // What the first run had not acknowledged may be written twice, never lost.
    assert!(rows2 >= N as u64);
    assert!(files_ending(&out, ".parquet.tmp").iter().all(|p| p
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with('.')));
}

/// A field changes from int to string mid-stream: no crash, a second file with the new type,
/// and the change counted in Weir's own metrics.
#[test]
fn int_to_string_drift_makes_a_new_file_and_is_counted() {
    let Some(()) = python_with(&["pyarrow"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let api = crate::harness::free_addr();
    let cfg = write_cfg(
        d,
        "weir.toml",
        &format!(
            r#"
data_dir = "{d}/data"
[api]
address = "{api}"
[sources.in]
type = "stdin"
decoding.codec = "json"
[sinks.pq]
type = "parquet"
inputs = ["in"]
path = "{d}/out/"
"#,
            d = d.display()
        ),
    );
    let mut child = weir()
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..20 {
        writeln!(stdin, r#"{{"seq":{i},"code":{i}}}"#).unwrap();
    }
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for i in 20..30 {
        writeln!(stdin, r#"{{"seq":{i},"code":"E{i}"}}"#).unwrap();
    }
    stdin.flush().unwrap();
    let counted = crate::harness::wait_until(Duration::from_secs(20), || {
        crate::harness::http_get(api, "/metrics").is_ok_and(|(_, body)| {
            body.lines().any(|l| {
                l.starts_with("weir_component_errors_total{")
                    && l.contains("component_id=\"pq\"")
                    && l.contains("error_type=\"schema_change\"")
                    && l.ends_with(" 1")
            })
        })
    });
    drop(stdin);
    let out = wait_with_timeout(child, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(counted, "schema_change counted once in /metrics:\n{stderr}");
    let files = parquet_files(&d.join("out"));
    assert_eq!(files.len(), 2, "{files:?}");
    let script = r#"
import sys
import pyarrow.parquet as pq
for f in sys.argv[1:]:
    t = pq.read_table(f)
    print(t.num_rows, t.schema.field("code").type)
"#;
    let res = Command::new("python3")
        .args(["-c", script])
        .args(&files)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&res.stdout),
        "20 int64\n10 string\n"
    );
}

/// `python3` with these modules (DuckDB, pyarrow), or the test is skipped (a failure under CI).
fn python_with(modules: &[&str]) -> Option<()> {
    require(
        &format!("python3 with {}", modules.join(" and ")),
        python_modules(modules),
    )
}

/// Runs `sql` (one number) with DuckDB over `dir`'s parquet files as `t`.
fn duckdb_count(dir: &Path, sql: &str) -> u64 {
    let script = r#"
import os, sys, duckdb
pattern = os.path.join(sys.argv[1], "**", "*.parquet")
con = duckdb.connect()
con.execute(f"CREATE VIEW t AS SELECT * FROM read_parquet('{pattern}', hive_partitioning=true)")
print(con.execute(sys.argv[2]).fetchone()[0])
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .arg(sql)
        .output()
        .expect("python3 with duckdb");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The two examples chained: the archive example writes Parquet, the replay example reads it
/// back (and, without WEIR_PARQUET_INPUT, the committed sample), ends by itself and writes
/// exactly the server errors.
#[test]
fn archive_and_replay_examples_work_together() {
    let Some(()) = python_with(&["duckdb"]) else {
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let examples = root.join("config/examples");
    let data = tempfile::tempdir().unwrap();
    let child = weir()
        .current_dir(root)
        .env("WEIR_DATA_DIR", data.path())
        .env("WEIR_API_ADDRESS", crate::harness::free_addr().to_string())
        .args(["run", "--config"])
        .arg(examples.join("archive-logs-to-parquet.toml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    crate::harness::sigterm(&child);
    let out = wait_with_timeout(child, Duration::from_secs(30));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let archive = data.path().join("archive/logs");
    let rows = duckdb_count(&archive, "SELECT count(*) FROM t");
    assert!(rows > 0, "the archive example wrote nothing");
    assert_eq!(
        duckdb_count(
            &archive,
            "SELECT count(*) FROM t WHERE dt IS NOT NULL AND hour IS NOT NULL"
        ),
        rows,
        "Hive partitions dt= and hour="
    );

    for (input, dir) in [
        (Some(archive.clone()), archive.clone()),
        (None, examples.join("data/access-logs")),
    ] {
        let replay_data = tempfile::tempdir().unwrap();
        let mut cmd = weir();
        cmd.current_dir(root)
            .env("WEIR_DATA_DIR", replay_data.path())
            .env("WEIR_API_ADDRESS", crate::harness::free_addr().to_string())
            .args(["run", "--config"])
            .arg(examples.join("replay-parquet.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(i) = &input {
            cmd.env("WEIR_PARQUET_INPUT", i);
        }
        let out = wait_with_timeout(cmd.spawn().unwrap(), Duration::from_secs(60));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let expected = duckdb_count(&dir, "SELECT count(*) FROM t WHERE status >= 500");
        let mut got = 0;
        for f in std::fs::read_dir(replay_data.path().join("replay")).unwrap() {
            for l in std::fs::read_to_string(f.unwrap().path()).unwrap().lines() {
                let v: Value = serde_json::from_str(l).unwrap();
                assert!(v["status"].as_i64().unwrap() >= 500, "{l}");
                assert!(v["dt"].is_string(), "partition field added: {l}");
                got += 1;
            }
        }
        assert_eq!(got, expected, "{input:?}");
        assert!(expected > 0);
    }
}

/// The replay progress bar (files, rows, rows/s) is drawn when stderr is a terminal (a pty
/// from util-linux `script`), not into a pipe, unless `progress = "always"`.
#[test]
fn progress_bar_only_on_a_terminal_unless_always() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = |progress: &str| {
        write_cfg(
            d,
            &format!("replay-{progress}.toml"),
            &format!(
                r#"
data_dir = "{d}/data"
[api]
enabled = false
[sources.pq]
type = "parquet"
paths = ["{input}"]
progress = "{progress}"
[sinks.out]
type = "blackhole"
inputs = ["pq"]
"#,
                d = d.display(),
                input = root.join("config/examples/data/access-logs").display(),
            ),
        )
    };
    let bar = |s: &str| s.contains("files 1/1 rows 400/400") && s.contains("/s eta");
    // On a terminal.
    let auto = cfg("auto");
    let cmd = format!(
        "{} run --config {} 2>&1 >/dev/null",
        env!("CARGO_BIN_EXE_weir"),
        auto.display()
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("util-linux `script`");
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(bar(&tty), "no bar on a terminal:\n{tty}");
    // Into a pipe.
    let out = weir()
        .args(["run", "--config"])
        .arg(&auto)
        .output()
        .unwrap();
    let piped = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{piped}");
    assert!(!bar(&piped), "a bar in a pipe:\n{piped}");
    let out = weir()
        .args(["run", "--config"])
        .arg(cfg("always"))
        .output()
        .unwrap();
    let always = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{always}");
    assert!(bar(&always), "no bar with progress = \"always\":\n{always}");
}
