//! The `file` source cases: `file-bytes` and `file-json` (one big file read from its
//! beginning into a blackhole) and `files-100` (100 files written at a fixed rate by this
//! process while weir tails them).
//!
//! The `file` source never ends by itself (a tailer waits for more), so these runs end when
//! the blackhole has counted every line: the bench polls weir's API (`/metrics`, the sink's
//! `weir_component_sent_events_total`), takes weir's CPU time and peak RSS from /proc at that
//! moment, then stops it with SIGTERM and checks that it exits 0 and that its exit summary
//! counts the same number (nothing counted twice).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::data::{LineGenerator, LINE_LEN};
use crate::runner::{self, RunOutcome, Runner};

/// Files of the `files-100` case.
pub const FILES: usize = 100;
/// Writer threads of the `files-100` case (each owns `FILES / WRITERS` files).
const WRITERS: usize = 4;
/// How often a writer catches up with its schedule.
const WRITER_TICK: Duration = Duration::from_millis(10);
/// How often the sink's count is polled. Not during the `files-100` writes: a scrape costs
/// weir CPU time, which that case measures.
const POLL: Duration = Duration::from_millis(10);

/// A `file` source reading `include` (already a glob or a path) into the blackhole `out`.
pub fn pipeline(include: &str, codec: &str) -> String {
    source(include, codec) + "[sinks.out]\ntype = \"blackhole\"\ninputs = [\"in\"]\n"
}

/// The `file` source `in` of [`pipeline`], for a pipeline with transforms between.
pub fn source(include: &str, codec: &str) -> String {
    format!(
        "[sources.in]\ntype = \"file\"\ninclude = [{}]\nread_from = \"beginning\"\n\
         decoding.codec = \"{codec}\"\n\n",
        runner::toml_string(include)
    )
}

/// A running weir with its API on a loopback port and a fresh `data_dir` (no checkpoints:
/// every run reads from the beginning).
struct Weir {
    child: Child,
    pid: u32,
    api: SocketAddr,
    started: Instant,
    stderr: PathBuf,
}

fn free_addr() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn http_get(api: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&api, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut r = String::new();
    s.read_to_string(&mut r).ok()?;
    // The status line answers in the request's version (HTTP/1.0 here).
    (r.split(' ').nth(1) == Some("200")).then_some(r)
}

/// `weir_component_sent_events_total` of `component` in a `/metrics` body.
fn sent_in(metrics: &str, component: &str) -> Option<u64> {
    let label = format!("component_id=\"{component}\"");
    metrics
        .lines()
        .find(|l| l.starts_with("weir_component_sent_events_total") && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

/// User + system CPU seconds of a process (all its threads), from /proc (USER_HZ = 100).
pub fn proc_cpu_secs(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

impl Weir {
    fn start(runner: &Runner, name: &str, body: &str, threads: usize) -> Result<Weir> {
        let api = free_addr()?;
        let data = runner.work.join(format!("data-{name}"));
        let _ = fs::remove_dir_all(&data);
        fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
        let cfg = runner.work.join(format!("{name}.toml"));
        fs::write(
            &cfg,
            format!(
                "data_dir = {}\n\n[api]\naddress = \"{api}\"\n\n{body}",
                runner::toml_string(&data.to_string_lossy())
            ),
        )
        .with_context(|| format!("cannot write {}", cfg.display()))?;
        let stderr = runner.work.join(format!("{name}.stderr"));
        let mut cmd = if runner.taskset {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]).arg(&runner.weir);
            c
        } else {
            Command::new(&runner.weir)
        };
        // No --quiet: the exit summary is checked. WEIR_LOG=info for that summary.
        cmd.args(["run", "--threads", &threads.to_string(), "--config"])
            .arg(&cfg)
            .env("WEIR_LOG", "info")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(File::create(&stderr).with_context(|| {
                format!("cannot create {}", stderr.display())
            })?));
        let started = Instant::now();
        // taskset execs weir: the pid is weir's.
        let child = cmd.spawn().context("cannot start weir")?;
        Ok(Weir {
            pid: child.id(),
            child,
            api,
            started,
            stderr,
        })
    }

    fn sent(&self) -> Option<u64> {
        sent_in(&http_get(self.api, "/metrics")?, "out")
    }

    fn exited(&mut self) -> Result<()> {
        if let Some(st) = self.child.try_wait().context("cannot wait for weir")? {
            bail!("weir exited early ({st}); stderr:\n{}", self.stderr_tail());
        }
        Ok(())
    }

    /// Waits until the API answers (the pipeline is running).
    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        while http_get(self.api, "/health").is_none() {
            self.exited()?;
            ensure!(
                self.started.elapsed() < timeout,
                "weir's API did not answer within {timeout:?}; stderr:\n{}",
                self.stderr_tail()
            );
            std::thread::sleep(POLL);
        }
        Ok(())
    }

    /// Polls until the sink has sent `expected` events; the instant it saw them.
    fn wait_counted(&mut self, expected: u64, deadline: Instant) -> Result<Instant> {
        loop {
            self.exited()?;
            let sent = self.sent().unwrap_or(0);
            if sent >= expected {
                ensure!(
                    sent == expected,
                    "the sink sent {sent} events, more than the {expected} lines"
                );
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!(
                    "the sink sent {sent} of {expected} events before the deadline; stderr:\n{}",
                    self.stderr_tail()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGTERM, then a clean exit within 60 s; the sink's `sent` and the components' errors
    /// from the exit summary.
    fn stop(mut self) -> Result<(Option<u64>, Vec<String>)> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(st) = self.child.try_wait()? {
                break st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("weir did not stop within 60 s of SIGTERM (killed)");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        ensure!(
            status.success(),
            "weir exited with {status} after SIGTERM; stderr:\n{}",
            self.stderr_tail()
        );
        let text = fs::read_to_string(&self.stderr).unwrap_or_default();
        Ok(runner::parse_summary(&text, "out"))
    }

    fn stderr_tail(&self) -> String {
        let text = fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Weir {
    fn drop(&mut self) {
        // Only a run that failed midway gets here with weir alive.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One run of `file-bytes` or `file-json`: spawn to every line counted.
pub fn run_one_file(runner: &Runner, name: &str, body: &str, lines: u64) -> Result<RunOutcome> {
    Ok(run_one_file_threads(runner, name, body, lines, 1)?.0)
}

/// CPU seconds (user + system) of a process's threads, summed by thread name (from /proc).
fn proc_thread_cpu(pid: u32) -> Vec<(String, f64)> {
    let mut by_name: Vec<(String, f64)> = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for t in tasks.flatten() {
        let Ok(stat) = fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let secs = (ticks(11) + ticks(12)) as f64 / 100.0;
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, s)) => *s += secs,
            None => by_name.push((name, secs)),
        }
    }
    by_name
}

/// [`run_one_file`] with `weir run --threads threads`; also the CPU seconds of weir's threads
/// by name when every line was counted.
pub fn run_one_file_threads(
    runner: &Runner,
    name: &str,
    body: &str,
    lines: u64,
    threads: usize,
) -> Result<(RunOutcome, Vec<(String, f64)>)> {
    let mut w = Weir::start(runner, name, body, threads)?;
    let done = w.wait_counted(lines, w.started + runner.timeout)?;
    let secs = done.duration_since(w.started).as_secs_f64();
    let cpu_secs = proc_cpu_secs(w.pid);
    let by_thread = proc_thread_cpu(w.pid);
    let peak_rss_kib = runner::proc_status_kib(w.pid, "VmHWM");
    let io = runner::proc_io(w.pid);
    let (sent, errors) = w.stop()?;
    ensure!(
        sent == Some(lines),
        "weir's exit summary says the sink sent {sent:?} events, expected {lines}"
    );
    Ok((
        RunOutcome {
            secs,
            peak_rss_kib,
            cpu_secs,
            sent,
            errors,
            io,
        },
        by_thread,
    ))
}

/// How many whole lines a writer at `bytes_per_sec` owes after `elapsed`.
#[derive(Clone, Copy, Debug)]
pub struct Pacer {
    pub bytes_per_sec: f64,
}

impl Pacer {
    pub fn lines_due(&self, elapsed: Duration) -> u64 {
        (self.bytes_per_sec * elapsed.as_secs_f64() / LINE_LEN as f64) as u64
    }
}

/// Sets the calling thread's CPU affinity with `taskset` (best effort).
fn pin_this_thread(cpus: &str) {
    if let Ok(link) = fs::read_link("/proc/thread-self") {
        if let Some(tid) = link.file_name().and_then(|t| t.to_str()) {
            let _ = Command::new("taskset")
                .args(["-p", "-c", cpus, tid])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Appends lines to `files` round-robin for `duration`, at `pacer`'s rate, catching up every
/// [`WRITER_TICK`] with one write per file; returns the lines written (exactly
/// `pacer.lines_due(duration)`).
pub fn write_paced(files: &[PathBuf], pacer: Pacer, duration: Duration, seed: u64) -> Result<u64> {
    ensure!(!files.is_empty(), "no file to write");
    let mut out = files
        .iter()
        .map(|p| {
            OpenOptions::new()
                .append(true)
                .create(true)
                .open(p)
                .with_context(|| format!("cannot open {}", p.display()))
        })
        .collect::<Result<Vec<File>>>()?;
    let mut bufs: Vec<Vec<u8>> = vec![Vec::new(); files.len()];
    let mut gen = LineGenerator::new(seed);
    let mut written = 0u64;
    let mut next = 0usize;
    let start = Instant::now();
    loop {
        let elapsed = start.elapsed().min(duration);
        let due = pacer.lines_due(elapsed);
        while written < due {
            gen.write_line(&mut bufs[next])?;
            next = (next + 1) % files.len();
            written += 1;
        }
        for (i, b) in bufs.iter_mut().enumerate() {
            if !b.is_empty() {
                out[i]
                    .write_all(b)
                    .with_context(|| format!("cannot write {}", files[i].display()))?;
                b.clear();
            }
        }
        if elapsed >= duration {
            return Ok(written);
        }
        std::thread::sleep(WRITER_TICK);
    }
}

/// What `files-100` measured.
pub struct TailOutcome {
    pub lines: u64,
    pub bytes: u64,
    /// From the first write until every line was counted.
    pub secs: f64,
    /// weir's CPU time over that span.
    pub cpu_secs: Option<f64>,
    pub peak_rss_kib: Option<u64>,
    /// From the last write until every line was counted.
    pub lag_secs: f64,
    pub errors: Vec<String>,
}

/// `files-100`: [`FILES`] empty files, weir started on them and ready, then [`WRITERS`]
/// threads (pinned to core 1 when weir is pinned to core 0) append to them at
/// `bytes_per_sec` in total for `duration`.
pub fn tail_many(runner: &Runner, bytes_per_sec: f64, duration: Duration) -> Result<TailOutcome> {
    let dir = runner.work.join("files-100-input");
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let files: Vec<PathBuf> = (0..FILES)
        .map(|i| dir.join(format!("app-{i:03}.log")))
        .collect();
    for f in &files {
        File::create(f).with_context(|| format!("cannot create {}", f.display()))?;
    }
    let include = format!("{}/*.log", dir.display());
    let mut w = Weir::start(runner, "files-100", &pipeline(&include, "bytes"), 1)?;
    w.wait_ready(Duration::from_secs(30))?;
    // Let the first glob walk find the files (glob_minimum_cooldown_ms is 1 s by default).
    std::thread::sleep(Duration::from_millis(1500));
    w.exited()?;
    let pin = runner.taskset;
    let pacer = Pacer {
        bytes_per_sec: bytes_per_sec / WRITERS as f64,
    };
    let cpu0 = proc_cpu_secs(w.pid);
    let t0 = Instant::now();
    let per = files.len().div_ceil(WRITERS);
    let lines = std::thread::scope(|s| -> Result<u64> {
        let handles: Vec<_> = files
            .chunks(per)
            .enumerate()
            .map(|(i, chunk)| {
                s.spawn(move || {
                    if pin {
                        pin_this_thread("1");
                    }
                    write_paced(chunk, pacer, duration, 0x1000 + i as u64)
                })
            })
            .collect();
        let mut total = 0;
        for h in handles {
            total += h
                .join()
                .map_err(|_| anyhow::anyhow!("a writer thread panicked"))??;
        }
        Ok(total)
    })?;
    let written_at = Instant::now();
    let done = w.wait_counted(lines, written_at + Duration::from_secs(60))?;
    let cpu1 = proc_cpu_secs(w.pid);
    let peak_rss_kib = runner::proc_status_kib(w.pid, "VmHWM");
    let (sent, errors) = w.stop()?;
    ensure!(
        sent == Some(lines),
        "weir's exit summary says the sink sent {sent:?} events, the bench wrote {lines} lines"
    );
    Ok(TailOutcome {
        lines,
        bytes: lines * LINE_LEN as u64,
        secs: done.duration_since(t0).as_secs_f64(),
        cpu_secs: cpu0.zip(cpu1).map(|(a, b)| b - a),
        peak_rss_kib,
        lag_secs: done.duration_since(written_at).as_secs_f64(),
        errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_owes_the_rate_times_the_time() {
        let p = Pacer {
            bytes_per_sec: 10.0 * 1024.0 * 1024.0,
        };
        assert_eq!(p.lines_due(Duration::ZERO), 0);
        assert_eq!(p.lines_due(Duration::from_secs(1)), 40_960);
        assert_eq!(p.lines_due(Duration::from_secs(60)), 2_457_600);
        assert_eq!(p.lines_due(Duration::from_millis(10)), 409);
    }

    #[test]
    fn the_writer_writes_the_asked_amount_over_the_asked_time() {
        let dir = std::env::temp_dir().join(format!("weir-bench-writer-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let files: Vec<PathBuf> = (0..7).map(|i| dir.join(format!("{i}.log"))).collect();
        let pacer = Pacer {
            bytes_per_sec: 1024.0 * 1024.0,
        };
        let duration = Duration::from_millis(400);
        let started = Instant::now();
        let n = write_paced(&files, pacer, duration, 7).unwrap();
        let took = started.elapsed();
        assert_eq!(n, pacer.lines_due(duration));
        assert_eq!(n, 1638);
        // Not early (the pace holds); the upper bound only catches a writer that oversleeps badly.
        assert!(
            took >= duration && took < duration + Duration::from_secs(5),
            "{took:?}"
        );
        let mut total = 0u64;
        for f in &files {
            let text = fs::read(f).unwrap();
            assert_eq!(text.len() % LINE_LEN, 0);
            let lines = (text.len() / LINE_LEN) as u64;
            // Round-robin: every file gets its share, within one line.
            assert!(lines == n / 7 || lines == n / 7 + 1, "{lines} in {f:?}");
            for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                serde_json::from_slice::<serde_json::Value>(line).unwrap();
            }
            total += lines;
        }
        assert_eq!(total, n);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_sink_count_is_read_from_the_metrics() {
        let body = "# TYPE weir_component_sent_events_total counter\n\
            weir_component_sent_events_total{component_id=\"in\",component_kind=\"source\",component_type=\"file\"} 10\n\
            weir_component_sent_events_total{component_id=\"out\",component_kind=\"sink\",component_type=\"blackhole\"} 7\n";
        assert_eq!(sent_in(body, "out"), Some(7));
        assert_eq!(sent_in(body, "in"), Some(10));
        assert_eq!(sent_in(body, "nope"), None);
    }

    #[test]
    fn the_pipeline_reads_from_the_beginning_into_the_blackhole() {
        let p = pipeline("/data/a \"b\".log", "json");
        assert!(p.contains("include = [\"/data/a \\\"b\\\".log\"]"), "{p}");
        assert!(p.contains("read_from = \"beginning\""));
        assert!(p.contains("decoding.codec = \"json\""));
        assert!(p.contains("type = \"blackhole\""));
    }
}
