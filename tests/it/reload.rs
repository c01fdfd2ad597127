//! Hot reload (`POST /api/reload`, SIGHUP, `--watch-config`) of a running pipeline: only what
//! changed is rebuilt, nothing is lost or repeated, an invalid configuration changes nothing.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use crate::harness::*;

/// The pipeline: a file source -> remap -> sink `a` (never changed) and sink `b`, whose path
/// `b_path` a reload changes; `extra` adds to it.
fn config(d: &Path, api: SocketAddr, b_path: &str, extra: &str) -> String {
    format!(
        r#"
data_dir = "{data}"
[api]
address = "{api}"
[sources.in]
type = "file"
include = ["{input}"]
glob_minimum_cooldown_ms = 100
[transforms.tag]
type = "remap"
inputs = ["in"]
source = '.seen = true'
[sinks.a]
type = "file"
inputs = ["tag"]
path = "{a}"
encoding.codec = "text"
[sinks.b]
type = "file"
inputs = ["tag"]
path = "{b}"
encoding.codec = "text"
{extra}
"#,
        data = d.join("data").display(),
        input = d.join("in.log").display(),
        a = d.join("a.out").display(),
        b = d.join(b_path).display(),
    )
}

/// Appends lines `from..to` (`line <n>`) to the input.
fn write_lines(d: &Path, from: usize, to: usize) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(d.join("in.log"))
        .unwrap();
    let mut text = String::new();
    for i in from..to {
        text.push_str(&format!("line {i}\n"));
    }
    f.write_all(text.as_bytes()).unwrap();
}

/// How many times each line number was written to `files`.
fn counts(d: &Path, files: &[&str]) -> BTreeMap<usize, usize> {
    let mut m = BTreeMap::new();
    for f in files {
        for l in lines(&d.join(f)) {
            let n: usize = l
                .strip_prefix("line ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{f}: unexpected line {l:?}"));
            *m.entry(n).or_default() += 1;
        }
    }
    m
}

fn fds(child: &Child) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", child.id()))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib(child: &Child) -> u64 {
    std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn reload(api: SocketAddr) -> (u16, serde_json::Value) {
    let (status, body) = http_post(api, "/api/reload").unwrap();
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, v)
}

#[test]
fn a_reload_during_a_stream_changes_one_sink_adds_another_and_loses_nothing() {
    const N: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let api = free_addr();
    std::fs::create_dir_all(d.join("data")).unwrap();
    write_lines(d, 0, N / 4);
    let cfg_path = d.join("weir.toml");
    let child = start_weir(d, "weir", &config(d, api, "b1.out", ""), false);
    // `start_weir` wrote weir.toml: the reloads below rewrite it.
    assert!(
        wait_until(Duration::from_secs(20), || lines(&d.join("a.out")).len()
            >= N / 8),
        "the stream did not start:\n{}",
        weir_log(d, "weir")
    );
    // Lines keep arriving while the configuration changes under them.
    let writer = {
        let d = d.to_path_buf();
        std::thread::spawn(move || {
            for k in 0..10 {
                write_lines(&d, N / 4 + k * N / 40, N / 4 + (k + 1) * N / 40);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let c = d.join("c.out");
    let extra = format!(
        "[sinks.c]\ntype = \"file\"\ninputs = [\"tag\"]\npath = \"{}\"\nencoding.codec = \"text\"\n",
        c.display()
    );
    std::fs::write(&cfg_path, config(d, api, "b2.out", &extra)).unwrap();
    let (status, body) = reload(api);
    assert_eq!(status, 200, "{body}\n{}", weir_log(d, "weir"));
    assert_eq!(body["outcome"], "applied", "{body}");
    assert_eq!(body["summary"]["added"], serde_json::json!(["c"]), "{body}");
    assert_eq!(
        body["summary"]["changed"],
        serde_json::json!(["b"]),
        "{body}"
    );
    writer.join().unwrap();
    // Everything written from here on is read after the reload: `c` must have all of it.
    let after = N / 2;
    write_lines(d, after, N);

    // An invalid configuration: refused, the pipeline keeps running as it was.
    std::fs::write(&cfg_path, "[sinks.broken\n").unwrap();
    let (status, body) = reload(api);
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["outcome"], "invalid", "{body}");
    let (_, health) = http_get(api, "/health").unwrap();
    assert!(health.contains("\"outcome\":\"invalid\""), "{health}");
    let (_, metrics) = http_get(api, "/metrics").unwrap();
    assert!(
        metrics.contains("weir_config_reloads_total{outcome=\"invalid\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("weir_config_reloads_total{outcome=\"applied\"} 1"),
        "{metrics}"
    );
    // A change a reload cannot make (a sink's buffer): refused, nothing touched, not even
    // the remap program changed with it.
    std::fs::write(
        &cfg_path,
        config(d, api, "b2.out", &extra).replace("'.seen = true'", "'.seen = 1'")
            + "[sinks.b.buffer]\nmax_events = 100\n",
    )
    .unwrap();
    let (status, body) = reload(api);
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("sink `b`: its buffer settings changed"),
        "{body}"
    );
    // Back to the running configuration.
    std::fs::write(&cfg_path, config(d, api, "b2.out", &extra)).unwrap();
    let (status, body) = reload(api);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["summary"]["unchanged"], 5, "{body}");

    assert!(
        wait_until(Duration::from_secs(30), || lines(&d.join("a.out")).len()
            >= N
            && lines(&c).len() >= N - after),
        "not everything arrived:\n{}",
        weir_log(d, "weir")
    );
    stop_clean(d, "weir", child);

    let a = counts(d, &["a.out"]);
    assert_eq!(a.len(), N, "the unchanged sink misses lines");
    assert!(
        a.values().all(|n| *n == 1),
        "the unchanged sink got a line twice"
    );
    let b = counts(d, &["b1.out", "b2.out"]);
    assert_eq!(b.len(), N, "the changed sink misses lines");
    assert!(
        b.values().all(|n| *n == 1),
        "the changed sink got a line twice"
    );
    assert!(
        !lines(&d.join("b1.out")).is_empty() && !lines(&d.join("b2.out")).is_empty(),
        "the changed sink wrote before and after the reload"
    );
    let c = counts(d, &["c.out"]);
    assert!(c.values().all(|n| *n == 1), "the new sink got a line twice");
    let missing: Vec<usize> = (after..N).filter(|i| !c.contains_key(i)).collect();
    assert!(
        missing.is_empty(),
        "the new sink misses {} lines written after the reload, from {:?}",
        missing.len(),
        missing.first()
    );
}

#[test]
fn ten_reloads_leak_no_descriptor_and_a_removed_sink_drains() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let api = free_addr();
    std::fs::create_dir_all(d.join("data")).unwrap();
    write_lines(d, 0, 1000);
    let cfg_path = d.join("weir.toml");
    let child = start_weir(d, "weir", &config(d, api, "b0.out", ""), false);
    assert!(
        wait_until(Duration::from_secs(20), || lines(&d.join("b0.out")).len()
            == 1000),
        "{}",
        weir_log(d, "weir")
    );
    let mut next = 1000;
    let mut after_first = (0, 0);
    for i in 1..=10 {
        // Each reload changes `b` (a new file) and the remap program.
        let text = config(d, api, &format!("b{i}.out"), "")
            .replace("'.seen = true'", &format!("'.seen = {i}'"));
        std::fs::write(&cfg_path, text).unwrap();
        let (status, body) = reload(api);
        assert_eq!(status, 200, "{body}\n{}", weir_log(d, "weir"));
        write_lines(d, next, next + 100);
        next += 100;
        let file = d.join(format!("b{i}.out"));
        assert!(
            wait_until(Duration::from_secs(20), || lines(&file).len() == 100),
            "reload {i}: {} lines in {}\n{}",
            lines(&file).len(),
            file.display(),
            weir_log(d, "weir")
        );
        if i == 1 {
            after_first = (fds(&child), rss_kib(&child));
        }
    }
    let (fd_now, rss_now) = (fds(&child), rss_kib(&child));
    assert!(
        fd_now <= after_first.0 + 1,
        "descriptors grew from {} to {fd_now} over nine reloads",
        after_first.0
    );
    assert!(
        rss_now < after_first.1 + 16 * 1024,
        "RSS grew from {} KiB to {rss_now} KiB over nine reloads",
        after_first.1
    );
    // Removing `b`: it delivers what it holds and stops; `a` goes on.
    let text = config(d, api, "b10.out", "");
    let start = text.find("[sinks.b]").unwrap();
    std::fs::write(&cfg_path, &text[..start]).unwrap();
    let (status, body) = reload(api);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["summary"]["removed"],
        serde_json::json!(["b"]),
        "{body}"
    );
    write_lines(d, next, next + 100);
    next += 100;
    assert!(wait_until(Duration::from_secs(20), || lines(
        &d.join("a.out")
    )
    .len()
        == next));
    assert_eq!(
        lines(&d.join("b10.out")).len(),
        100,
        "the removed sink took no more"
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            http_get(api, "/metrics")
                .map(|(_, m)| !m.contains("component_id=\"b\""))
                .unwrap_or(false)
        }),
        "the removed sink's counters stay"
    );
    // SIGHUP reloads too: `b` back.
    std::fs::write(&cfg_path, config(d, api, "b11.out", "")).unwrap();
    // SAFETY: kill(2) on our child with a valid signal.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGHUP);
    }
    assert!(
        wait_until(Duration::from_secs(10), || {
            http_get(api, "/health")
                .map(|(_, h)| h.contains("\"outcome\":\"applied\""))
                .unwrap_or(false)
                && metric(api, "weir_component_received_events_total", "b").is_some()
        }),
        "{}",
        weir_log(d, "weir")
    );
    write_lines(d, next, next + 10);
    assert!(
        wait_until(Duration::from_secs(20), || lines(&d.join("b11.out")).len()
            == 10),
        "{}",
        weir_log(d, "weir")
    );
    stop_clean(d, "weir", child);
}

#[test]
fn watch_config_reloads_when_a_configmap_swaps_its_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let api = free_addr();
    std::fs::create_dir_all(d.join("data")).unwrap();
    write_lines(d, 0, 10);
    // The kubelet's layout: weir.toml -> ..data/weir.toml, ..data -> ..<timestamp>.
    let v1 = d.join("..2026_01");
    std::fs::create_dir_all(&v1).unwrap();
    std::fs::write(v1.join("weir.toml"), config(d, api, "b1.out", "")).unwrap();
    std::os::unix::fs::symlink("..2026_01", d.join("..data")).unwrap();
    let cfg = d.join("weir.toml");
    std::os::unix::fs::symlink("..data/weir.toml", &cfg).unwrap();
    let log = std::fs::File::create(d.join("weir.log")).unwrap();
    let child = weir()
        .args(["run", "--watch-config", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || lines(&d.join("b1.out")).len()
            == 10),
        "{}",
        weir_log(d, "weir")
    );
    // The swap: a new directory, then `..data` renamed over atomically.
    let v2 = d.join("..2026_02");
    std::fs::create_dir_all(&v2).unwrap();
    std::fs::write(v2.join("weir.toml"), config(d, api, "b2.out", "")).unwrap();
    std::os::unix::fs::symlink("..2026_02", d.join("..data_tmp")).unwrap();
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    assert!(
        wait_until(Duration::from_secs(15), || {
            http_get(api, "/health")
                .map(|(_, h)| h.contains("\"outcome\":\"applied\""))
                .unwrap_or(false)
        }),
        "no reload after the swap:\n{}",
        weir_log(d, "weir")
    );
    write_lines(d, 10, 20);
    assert!(
        wait_until(Duration::from_secs(20), || lines(&d.join("b2.out")).len()
            == 10),
        "{}",
        weir_log(d, "weir")
    );
    assert_eq!(lines(&d.join("b1.out")).len(), 10);
    stop_clean(d, "weir", child);
}

#[test]
fn a_changed_source_resumes_from_its_checkpoints_and_its_consumers_never_see_an_end() {
    const N: usize = 40_000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let api = free_addr();
    std::fs::create_dir_all(d.join("data")).unwrap();
    write_lines(d, 0, N / 2);
    let cfg_path = d.join("weir.toml");
    let child = start_weir(d, "weir", &config(d, api, "b.out", ""), false);
    assert!(
        wait_until(Duration::from_secs(20), || lines(&d.join("a.out")).len()
            >= N / 8),
        "{}",
        weir_log(d, "weir")
    );
    // Mid-stream, the source also reads a second file.
    std::fs::write(d.join("more.log"), "line 999999\n").unwrap();
    let text = config(d, api, "b.out", "").replace(
        &format!("include = [\"{}\"]", d.join("in.log").display()),
        &format!(
            "include = [\"{}\", \"{}\"]",
            d.join("in.log").display(),
            d.join("more.log").display()
        ),
    );
    assert!(text.contains("more.log"));
    std::fs::write(&cfg_path, text).unwrap();
    let (status, body) = reload(api);
    assert_eq!(status, 200, "{body}\n{}", weir_log(d, "weir"));
    assert_eq!(
        body["summary"]["changed"],
        serde_json::json!(["in"]),
        "{body}"
    );
    write_lines(d, N / 2, N);
    assert!(
        wait_until(Duration::from_secs(30), || lines(&d.join("a.out")).len()
            > N),
        "{} lines\n{}",
        lines(&d.join("a.out")).len(),
        weir_log(d, "weir")
    );
    stop_clean(d, "weir", child);
    for sink in ["a.out", "b.out"] {
        let got = counts(d, &[sink]);
        assert_eq!(got.len(), N + 1, "{sink}: lines missing");
        assert!(
            got.contains_key(&999_999),
            "{sink}: the new file was not read"
        );
        let twice = got.values().filter(|n| **n > 1).count();
        assert_eq!(
            twice, 0,
            "{sink}: {twice} lines read twice across the restart of the source"
        );
    }
}

#[test]
fn sources_and_transforms_are_added_and_removed_while_the_rest_runs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let api = free_addr();
    std::fs::create_dir_all(d.join("data")).unwrap();
    write_lines(d, 0, 100);
    let cfg_path = d.join("weir.toml");
    let child = start_weir(d, "weir", &config(d, api, "b.out", ""), false);
    assert!(
        wait_until(Duration::from_secs(20), || lines(&d.join("a.out")).len()
            == 100),
        "{}",
        weir_log(d, "weir")
    );
    // A second source and a transform of its own, read by a new sink `d` and by `a`.
    std::fs::write(d.join("in2.log"), "line 1000000\nline 1000001\n").unwrap();
    let second = format!(
        r#"
[sources.in2]
type = "file"
include = ["{in2}"]
glob_minimum_cooldown_ms = 100
[transforms.tag2]
type = "remap"
inputs = ["in2"]
source = '.second = true'
[sinks.d]
type = "file"
inputs = ["tag2"]
path = "{d_out}"
encoding.codec = "text"
"#,
        in2 = d.join("in2.log").display(),
        d_out = d.join("d.out").display(),
    );
    let v2 = config(d, api, "b.out", &second).replace(
        "[sinks.a]\ntype = \"file\"\ninputs = [\"tag\"]",
        "[sinks.a]\ntype = \"file\"\ninputs = [\"tag\", \"tag2\"]",
    );
    assert!(v2.contains("[\"tag\", \"tag2\"]"));
    std::fs::write(&cfg_path, &v2).unwrap();
    let (status, body) = reload(api);
    assert_eq!(status, 200, "{body}\n{}", weir_log(d, "weir"));
    let mut added: Vec<String> = serde_json::from_value(body["summary"]["added"].clone()).unwrap();
    added.sort();
    assert_eq!(added, ["d", "in2", "tag2"], "{body}");
    assert_eq!(
        body["summary"]["changed"],
        serde_json::json!(["a"]),
        "{body}"
    );
    assert!(
        wait_until(Duration::from_secs(20), || lines(&d.join("d.out")).len()
            == 2
            && lines(&d.join("a.out")).len() == 102),
        "d: {:?}, a: {} lines\n{}",
        lines(&d.join("d.out")),
        lines(&d.join("a.out")).len(),
        weir_log(d, "weir")
    );
    write_lines(d, 100, 200);
    assert!(wait_until(Duration::from_secs(20), || lines(
        &d.join("b.out")
    )
    .len()
        == 200));
    // And back: `in2`, `tag2` and `d` removed, `a` reads `tag` alone.
    std::fs::write(&cfg_path, config(d, api, "b.out", "")).unwrap();
    let (status, body) = reload(api);
    assert_eq!(status, 200, "{body}\n{}", weir_log(d, "weir"));
    let mut removed: Vec<String> =
        serde_json::from_value(body["summary"]["removed"].clone()).unwrap();
    removed.sort();
    assert_eq!(removed, ["d", "in2", "tag2"], "{body}");
    std::fs::OpenOptions::new()
        .append(true)
        .open(d.join("in2.log"))
        .unwrap()
        .write_all(b"line 1000002\n")
        .unwrap();
    write_lines(d, 200, 300);
    assert!(
        wait_until(Duration::from_secs(20), || lines(&d.join("a.out")).len()
            == 302),
        "{}",
        weir_log(d, "weir")
    );
    assert!(
        wait_until(Duration::from_secs(10), || {
            http_get(api, "/metrics")
                .map(|(_, m)| {
                    !m.contains("component_id=\"tag2\"") && !m.contains("component_id=\"in2\"")
                })
                .unwrap_or(false)
        }),
        "the removed components' counters stay"
    );
    stop_clean(d, "weir", child);
    assert_eq!(
        lines(&d.join("d.out")).len(),
        2,
        "the removed sink took more"
    );
    let a = counts(d, &["a.out"]);
    assert_eq!(a.len(), 302);
    assert!(a.values().all(|n| *n == 1), "a line twice in `a`");
    assert!(!a.contains_key(&1_000_002), "the removed source read on");
}
