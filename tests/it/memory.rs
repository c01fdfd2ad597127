//! Memory bounded in bytes and by the caps: 1 MiB lines into a stalled sink with Weir in a
//! 128 MiB cgroup, and a million distinct label values into `aggregate` and
//! `prometheus_exporter`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{free_addr, http_get, require, wait_until, wait_with_timeout};

/// A memory cgroup made for one test, removed when dropped.
struct Cgroup {
    dir: PathBuf,
    v2: bool,
}

impl Cgroup {
    /// A cgroup limited to `bytes`: cgroup v2 when its memory controller is available, else
    /// the v1 memory hierarchy (hybrid hosts); or why neither can be made.
    fn create(bytes: u64) -> Result<Self, String> {
        let root = Path::new("/sys/fs/cgroup");
        let name = format!("weir-test-{}-{}", std::process::id(), bytes);
        let v2_controllers = std::fs::read_to_string(root.join("cgroup.controllers"));
        let (dir, v2) = match v2_controllers {
            Ok(c) if c.split_whitespace().any(|c| c == "memory") => {
                // The memory controller must be on for the children of the root.
                let sub = std::fs::read_to_string(root.join("cgroup.subtree_control"))
                    .unwrap_or_default();
                if !sub.split_whitespace().any(|c| c == "memory") {
                    std::fs::write(root.join("cgroup.subtree_control"), "+memory").map_err(
                        |e| format!("cannot enable the memory controller of cgroup v2 ({e})"),
                    )?;
                }
                (root.join(&name), true)
            }
            _ if root.join("memory/memory.limit_in_bytes").exists() => {
                (root.join("memory").join(&name), false)
            }
            _ => {
                return Err(
                    "this host has no cgroup v2 memory controller (nor a v1 memory hierarchy)"
                        .into(),
                )
            }
        };
        std::fs::create_dir(&dir)
            .map_err(|e| format!("cannot create {} ({e}; run as root)", dir.display()))?;
        let cg = Cgroup { dir, v2 };
        let (file, value) = if v2 {
            ("memory.max", bytes.to_string())
        } else {
            ("memory.limit_in_bytes", bytes.to_string())
        };
        std::fs::write(cg.dir.join(file), value)
            .map_err(|e| format!("cannot write {file} ({e})"))?;
        if v2 {
            // No swap to hide in.
            let _ = std::fs::write(cg.dir.join("memory.swap.max"), "0");
        }
        Ok(cg)
    }

    /// The processes killed by the OOM killer in this cgroup so far.
    fn oom_kills(&self) -> u64 {
        let (file, key) = if self.v2 {
            ("memory.events", "oom_kill")
        } else {
            ("memory.oom_control", "oom_kill")
        };
        std::fs::read_to_string(self.dir.join(file))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0)
    }

    /// Runs `weir run --config <config>` inside this cgroup (the shell joins it, then execs
    /// Weir, so nothing is allocated outside).
    fn spawn_weir(&self, config: &Path, log: &Path) -> Child {
        let script = format!(
            "echo $$ > '{}' && exec '{}' run --config '{}'",
            self.dir.join("cgroup.procs").display(),
            env!("CARGO_BIN_EXE_weir"),
            config.display()
        );
        Command::new("sh")
            .args(["-c", &script])
            .env("WEIR_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // The processes are gone by now (the test waits for them); rmdir may need a moment.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() || !self.dir.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A global metric (no component) on the API's `/metrics`.
fn global_metric(api: std::net::SocketAddr, name: &str) -> Option<f64> {
    let (_, body) = http_get(api, "/metrics").ok()?;
    body.lines()
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `name{...component_id="<component>"...,<label>}` on the API's `/metrics`.
fn component_metric(
    api: std::net::SocketAddr,
    name: &str,
    component: &str,
    label: Option<&str>,
) -> Option<f64> {
    let (_, body) = http_get(api, "/metrics").ok()?;
    body.lines()
        .find(|l| {
            l.split('{').next() == Some(name)
                && l.contains(&format!("component_id=\"{component}\""))
                && label.is_none_or(|x| l.contains(x))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// A value of `/proc/<pid>/status` in bytes (`VmHWM`, `VmRSS`).
fn proc_status_bytes(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[test]
fn one_mib_lines_into_a_stalled_sink_stay_within_a_128_mib_cgroup() {
    const LIMIT: u64 = 128 << 20;
    const LINE: usize = 1 << 20;
    const LINES: usize = 400;
    let Some(cg) = require(
        "a memory cgroup it can create (cgroup v2 memory.max, root)",
        Cgroup::create(LIMIT),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let api = free_addr();
    // The sink's own buffer is made huge on purpose: only the process-wide limit, which
    // comes from the cgroup, stands between 400 MiB of input and the OOM killer.
    let config = format!(
        r#"
data_dir = "{data}"
[api]
address = "{api}"
[sources.in]
type = "stdin"
max_line_bytes = 2097152
[sinks.out]
type = "console"
inputs = ["in"]
encoding.codec = "text"
buffer.max_events = 100000
buffer.max_size = 4294967295
"#,
        data = dir.path().display()
    );
    let cfg = dir.path().join("weir.toml");
    std::fs::write(&cfg, config).unwrap();
    let log = dir.path().join("weir.log");
    let mut child = cg.spawn_weir(&cfg, &log);
    let pid = child.id();
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Full speed: one thread writes 400 lines of 1 MiB (each starting with its number) as fast
    // as Weir reads them. Nobody reads Weir's stdout yet: the console sink is stalled.
    let written = Arc::new(AtomicU64::new(0));
    let mut stdin = child.stdin.take().unwrap();
    let w = written.clone();
    let writer = std::thread::spawn(move || {
        let mut line = vec![b'x'; LINE];
        line[LINE - 1] = b'\n';
        for i in 0..LINES {
            let n = format!("{i:08} ");
            line[..n.len()].copy_from_slice(n.as_bytes());
            if stdin.write_all(&line).is_err() {
                return;
            }
            w.fetch_add(1, Ordering::SeqCst);
        }
    });

    // Until the reads stop: backpressure and the memory limit hold the source still.
    assert!(
        wait_until(Duration::from_secs(30), || global_metric(
            api,
            "weir_memory_limit_bytes"
        )
        .is_some()),
        "the API answers\n{}",
        show_log()
    );
    let mut last = written.load(Ordering::SeqCst);
    let mut still_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && still_since.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(200));
        let now = written.load(Ordering::SeqCst);
        if now != last {
            last = now;
            still_since = Instant::now();
        }
    }
    let stalled_at = written.load(Ordering::SeqCst) as usize;
    assert!(
        stalled_at < LINES,
        "the reads never stopped ({stalled_at} lines taken)"
    );
    assert_eq!(cg.oom_kills(), 0, "OOM-killed\n{}", show_log());
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "weir is alive\n{}",
        show_log()
    );
    let limit = global_metric(api, "weir_memory_limit_bytes").unwrap();
    assert_eq!(
        limit as u64,
        LIMIT / 100 * 80,
        "80% of the cgroup's limit by default"
    );
    let buffered = global_metric(api, "weir_buffered_bytes").unwrap();
    assert!(
        buffered > 0.0 && buffered <= limit,
        "{buffered} bytes buffered"
    );
    let pauses = global_metric(api, "weir_memory_pauses_total").unwrap();
    assert!(pauses >= 1.0, "the source paused for memory: {pauses}");
    let rss = proc_status_bytes(pid, "VmRSS").unwrap_or(0);
    assert!(rss < LIMIT, "{rss} bytes resident");

    // The sink recovers: read everything it writes, close the input, and count the lines.
    let mut stdout = BufReader::with_capacity(LINE * 2, child.stdout.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut seen = vec![0u32; LINES];
        let mut line = Vec::with_capacity(LINE);
        let mut bad = 0;
        loop {
            line.clear();
            match stdout.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let n = std::str::from_utf8(&line[..8])
                .ok()
                .and_then(|s| s.parse::<usize>().ok());
            match n {
                Some(n) if n < LINES && line.len() == LINE => seen[n] += 1,
                _ => bad += 1,
            }
        }
        (seen, bad)
    });
    writer.join().unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(120));
    let (seen, bad) = reader.join().unwrap();
    assert_eq!(cg.oom_kills(), 0, "OOM-killed\n{}", show_log());
    assert_eq!(out.status.code(), Some(0), "{}", show_log());
    assert_eq!(bad, 0, "every line arrives whole");
    let missing: Vec<usize> = (0..LINES).filter(|i| seen[*i] != 1).collect();
    assert!(
        missing.is_empty(),
        "every line delivered exactly once; not so: {missing:?}"
    );
    let _ = std::io::stderr().write_all(
        format!(
            "stalled after {stalled_at} lines, {buffered} bytes buffered, {pauses} pauses, VmRSS {rss}\n"
        )
        .as_bytes(),
    );
}

#[test]
fn a_million_label_values_stay_within_the_series_caps() {
    const CAP: usize = 10_000;
    const DISTINCT: usize = 1_000_000;
    let dir = tempfile::tempdir().unwrap();
    let api = free_addr();
    let exporter = free_addr();
    let config = format!(
        r#"
data_dir = "{data}"
[api]
address = "{api}"
[sources.in]
type = "stdin"
decoding.codec = "json"
[transforms.m]
type = "log_to_metric"
inputs = ["in"]
[[transforms.m.metrics]]
type = "counter"
field = "user"
name = "weir_t_logins_total"
tags = {{ user = "{{{{ user }}}}" }}
[transforms.agg]
type = "aggregate"
inputs = ["m"]
interval_secs = 1
max_series = {CAP}
[sinks.prom]
type = "prometheus_exporter"
inputs = ["agg"]
address = "{exporter}"
max_series = {CAP}
"#,
        data = dir.path().display()
    );
    let cfg = dir.path().join("weir.toml");
    std::fs::write(&cfg, config).unwrap();
    let log = dir.path().join("weir.log");
    let mut child = crate::harness::weir()
        .args(["run", "--config"])
        .arg(&cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut stdin = child.stdin.take().unwrap();
    // The first CAP users twice each, then a million users never seen before.
    let writer = std::thread::spawn(move || {
        let mut text = String::with_capacity(1 << 20);
        for pass in 0..2 {
            for i in 0..CAP {
                text.push_str(&format!("{{\"user\":\"first{i}\",\"pass\":{pass}}}\n"));
            }
        }
        stdin.write_all(text.as_bytes()).unwrap();
        for chunk in 0..DISTINCT / 10_000 {
            text.clear();
            for i in chunk * 10_000..(chunk + 1) * 10_000 {
                text.push_str(&format!("{{\"user\":\"u{i}\"}}\n"));
            }
            stdin.write_all(text.as_bytes()).unwrap();
        }
        stdin
    });
    let stdin = writer.join().unwrap();

    // Every metric of a later user is refused by one of the two caps: the aggregate's (per
    // interval), or the exporter's, which holds the first users for good.
    let over = || {
        let agg = component_metric(
            api,
            "weir_component_errors_total",
            "agg",
            Some("error_type=\"series_limit\""),
        )
        .unwrap_or(0.0);
        let prom = component_metric(
            api,
            "weir_component_errors_total",
            "prom",
            Some("error_type=\"series_limit\""),
        )
        .unwrap_or(0.0);
        (agg, prom)
    };
    let done = wait_until(Duration::from_secs(120), || {
        let (a, p) = over();
        a + p >= DISTINCT as f64
    });
    assert!(done, "overflow counted: {:?}\n{}", over(), show_log());
    let (agg_over, prom_over) = over();
    assert_eq!(
        agg_over + prom_over,
        DISTINCT as f64,
        "every later user refused once"
    );
    assert!(agg_over > 0.0, "the aggregate's cap was reached");
    let discarded = |c| component_metric(api, "weir_component_discarded_events_total", c, None);
    assert_eq!(discarded("agg"), Some(agg_over));
    assert_eq!(discarded("prom"), Some(prom_over));

    // The first users are all there, each counted twice, and nobody else.
    let (status, text) = http_get(exporter, "/metrics").unwrap();
    assert_eq!(status, 200);
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("weir_t_logins_total{"))
        .collect();
    assert_eq!(samples.len(), CAP, "{} series served", samples.len());
    for i in 0..CAP {
        let want = format!("weir_t_logins_total{{user=\"first{i}\"}} 2");
        assert!(samples.contains(&want.as_str()), "{want} not served");
    }

    // Memory bounded by the caps: a series costs well under 1 KiB in each of the two
    // components; the rest is the program, its buffers (2000 small events each) and the
    // text of a scrape. Without the caps, a million series take over 500 MiB.
    let peak = proc_status_bytes(pid, "VmHWM").unwrap();
    // Measured (debug build): 87 MiB with the caps, 1.1 GiB without (max_series = 2000000).
    let bound = (100 << 20) + CAP as u64 * 4096;
    let _ = std::io::stderr().write_all(
        format!(
            "peak RSS {} MiB (bound {} MiB); refused by aggregate {agg_over}, by the exporter {prom_over}\n",
            peak >> 20,
            bound >> 20
        )
        .as_bytes(),
    );
    assert!(
        peak < bound,
        "peak RSS {} MiB, over {} MiB",
        peak >> 20,
        bound >> 20
    );
    drop(stdin);
    let out = wait_with_timeout(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", show_log());
}
