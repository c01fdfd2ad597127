//! Runs the release `weir` binary: one pipeline to completion (wall time, peak RSS, CPU, the
//! sink's event count from the exit summary), or idle for its resident memory.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where and how to run weir.
pub struct Runner {
    pub weir: PathBuf,
    /// `taskset -c 0` in front of weir (one core).
    pub taskset: bool,
    /// GNU time, for peak RSS and CPU time; without it VmHWM is polled from /proc.
    pub gnu_time: Option<PathBuf>,
    /// Scratch directory: configs, weir's data_dir, stderr captures.
    pub work: PathBuf,
    pub timeout: Duration,
}

/// One pipeline run to its end.
pub struct RunOutcome {
    pub secs: f64,
    pub peak_rss_kib: Option<u64>,
    /// User + system CPU seconds (GNU time only).
    pub cpu_secs: Option<f64>,
    /// `sent` of the sink `out` in weir's exit summary.
    pub sent: Option<u64>,
    /// Components that reported errors in the summary, as written there.
    pub errors: Vec<String>,
    /// weir's write counters from `/proc/PID/io` (the file cases only, read before SIGTERM).
    pub io: Option<ProcIo>,
}

/// Write counters of a process, from `/proc/PID/io`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcIo {
    /// Bytes the process caused to be sent to the storage layer (`write_bytes`).
    pub write_bytes: u64,
    /// Bytes passed to write-like system calls, files, pipes and sockets alike (`wchar`).
    pub wchar: u64,
}

/// The write counters of `pid`, or `None` when `/proc/PID/io` cannot be read.
pub fn proc_io(pid: u32) -> Option<ProcIo> {
    parse_proc_io(&fs::read_to_string(format!("/proc/{pid}/io")).ok()?)
}

fn parse_proc_io(text: &str) -> Option<ProcIo> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    Some(ProcIo {
        write_bytes: field("write_bytes")?,
        wchar: field("wchar")?,
    })
}

pub struct IdleOutcome {
    pub rss_kib: u64,
    pub threads: Option<usize>,
}

/// A config file for `weir run`: `body` plus `data_dir` and the API turned off.
pub fn write_config(work: &Path, name: &str, body: &str) -> Result<PathBuf> {
    let data_dir = work.join(format!("data-{name}"));
    fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let path = work.join(format!("{name}.toml"));
    let text = format!(
        "data_dir = {}\n\n[api]\nenabled = false\n\n{body}",
        toml_string(&data_dir.to_string_lossy())
    );
    fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Turns the API (and so the web console) on in a config written by [`write_config`], on a
/// free loopback port that nothing polls.
pub fn enable_api(config: &Path) -> Result<()> {
    let text =
        fs::read_to_string(config).with_context(|| format!("cannot read {}", config.display()))?;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let off = "[api]\nenabled = false\n";
    anyhow::ensure!(text.contains(off), "{}: no [api] section", config.display());
    let text = text.replacen(
        off,
        &format!("[api]\nenabled = true\naddress = \"{addr}\"\n"),
        1,
    );
    fs::write(config, text).with_context(|| format!("cannot write {}", config.display()))
}

pub fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Runner {
    /// `[taskset -c 0] weir run --config CONFIG [--threads N]`, stdout discarded, stderr to
    /// a file, in its own process group (so a timeout can kill everything under it).
    fn command(
        &self,
        prefix: &[String],
        config: &Path,
        threads: Option<usize>,
        stderr: &Path,
    ) -> Result<Command> {
        let mut argv: Vec<String> = prefix.to_vec();
        if self.taskset {
            argv.extend(["taskset".into(), "-c".into(), "0".into()]);
        }
        argv.push(self.weir.to_string_lossy().into_owned());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]).arg("run").arg("--config").arg(config);
        if let Some(t) = threads {
            cmd.arg("--threads").arg(t.to_string());
        }
        // No --quiet: the per-component summary at exit (a few lines, after the work is
        // done) is how the bench checks that every event reached the sink.
        cmd.env("WEIR_LOG", "info")
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::from(File::create(stderr).with_context(|| {
                format!("cannot create {}", stderr.display())
            })?));
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        Ok(cmd)
    }

    /// Runs a pipeline to its end: stdin from `stdin_file` (or /dev/null), `--threads 1`.
    /// Wall time is from spawn to exit. Fails unless weir exits 0.
    pub fn run(&self, name: &str, config: &Path, stdin_file: Option<&Path>) -> Result<RunOutcome> {
        let stderr_path = self.work.join(format!("{name}.stderr"));
        let time_path = self.work.join(format!("{name}.time"));
        let mut prefix = Vec::new();
        if let Some(t) = &self.gnu_time {
            let _ = fs::remove_file(&time_path);
            prefix = vec![
                t.to_string_lossy().into_owned(),
                "-o".into(),
                time_path.to_string_lossy().into_owned(),
                "-f".into(),
                "%M %U %S".into(),
            ];
        }
        let mut cmd = self.command(&prefix, config, Some(1), &stderr_path)?;
        let stdin = match stdin_file {
            Some(p) => {
                Stdio::from(File::open(p).with_context(|| format!("cannot open {}", p.display()))?)
            }
            None => Stdio::null(),
        };
        cmd.stdin(stdin);
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.weir.display()))?;
        let pid = child.id();
        let mut hwm_kib: Option<u64> = None;
        let mut next_poll = started;
        let status = loop {
            if let Some(st) = child.try_wait().context("cannot wait for weir")? {
                break st;
            }
            let now = Instant::now();
            if self.gnu_time.is_none() && now >= next_poll {
                // Without GNU time the spawned pid is weir itself (taskset execs it).
                if let Some(v) = proc_status_kib(pid, "VmHWM") {
                    hwm_kib = Some(hwm_kib.map_or(v, |h| h.max(v)));
                }
                next_poll = now + Duration::from_millis(10);
            }
            if now.duration_since(started) > self.timeout {
                kill_group(&mut child, pid);
                bail!(
                    "weir did not finish within {} s (killed); stderr:\n{}",
                    self.timeout.as_secs(),
                    tail(&stderr_path)
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let secs = started.elapsed().as_secs_f64();
        check_status(status, &stderr_path)?;
        let (mut peak_rss_kib, mut cpu_secs) = (hwm_kib, None);
        if self.gnu_time.is_some() {
            let (rss, cpu) = parse_time_file(&time_path)?;
            peak_rss_kib = Some(rss);
            cpu_secs = Some(cpu);
        }
        let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
        let (sent, errors) = parse_summary(&stderr, "out");
        Ok(RunOutcome {
            secs,
            peak_rss_kib,
            cpu_secs,
            sent,
            errors,
            io: None,
        })
    }

    /// Starts weir on `config` (a stdin source) with a pipe for stdin that is kept open and
    /// never written, waits `settle`, reads VmRSS, then closes stdin and expects a clean exit.
    pub fn idle_rss(
        &self,
        config: &Path,
        threads: Option<usize>,
        settle: Duration,
    ) -> Result<IdleOutcome> {
        let tag = threads.map_or("default".to_string(), |t| t.to_string());
        let stderr_path = self.work.join(format!("idle-{tag}.stderr"));
        let mut cmd = self.command(&[], config, threads, &stderr_path)?;
        cmd.stdin(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", self.weir.display()))?;
        let pid = child.id();
        let stdin = child.stdin.take();
        std::thread::sleep(settle);
        if let Some(st) = child.try_wait().context("cannot wait for weir")? {
            bail!(
                "weir exited ({st}) while its stdin was still open; stderr:\n{}",
                tail(&stderr_path)
            );
        }
        let rss = proc_status_kib(pid, "VmRSS");
        drop(stdin); // EOF: the pipeline drains and weir exits.
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(st) = child.try_wait().context("cannot wait for weir")? {
                break st;
            }
            if Instant::now() > deadline {
                kill_group(&mut child, pid);
                bail!(
                    "weir did not exit within 30 s of its stdin closing (killed); stderr:\n{}",
                    tail(&stderr_path)
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        check_status(status, &stderr_path)?;
        let rss_kib = rss.with_context(|| format!("cannot read VmRSS of pid {pid} from /proc"))?;
        Ok(IdleOutcome { rss_kib, threads })
    }
}

fn check_status(status: ExitStatus, stderr_path: &Path) -> Result<()> {
    if !status.success() {
        bail!("weir exited with {status}; stderr:\n{}", tail(stderr_path));
    }
    Ok(())
}

fn kill_group(child: &mut Child, pgid: u32) {
    // The child leads its own process group: this reaches weir under time/taskset too.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// A `Vm*` line of /proc/PID/status, in KiB.
pub fn proc_status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// GNU time's `-f "%M %U %S"` output: max RSS (KiB), user and system seconds. Other lines
/// (e.g. "Command exited with non-zero status") may come first.
pub fn parse_time_file(path: &Path) -> Result<(u64, f64)> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .with_context(|| format!("{} is empty", path.display()))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let parsed = match f.as_slice() {
        [m, u, s] => match (m.parse::<u64>(), u.parse::<f64>(), s.parse::<f64>()) {
            (Ok(m), Ok(u), Ok(s)) => Some((m, u + s)),
            _ => None,
        },
        _ => None,
    };
    parsed.with_context(|| format!("unexpected GNU time output in {}: {line:?}", path.display()))
}

/// From weir's exit summary (`summary component=ID kind=... received=N sent=N ... errors=E`):
/// `sent` of component `sink`, and every component whose errors are not `0`.
pub fn parse_summary(stderr: &str, sink: &str) -> (Option<u64>, Vec<String>) {
    let mut sent = None;
    let mut errors = Vec::new();
    let want = format!("component={sink}");
    for line in stderr
        .lines()
        .filter(|l| l.contains(" summary ") || l.contains("summary component="))
    {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let get = |k: &str| fields.iter().find_map(|f| f.strip_prefix(k));
        if fields.contains(&want.as_str()) {
            sent = get("sent=").and_then(|v| v.parse().ok());
        }
        if let Some(e) = get("errors=") {
            if e != "0" {
                let id = get("component=").unwrap_or("?");
                errors.push(format!("{id}: {e}"));
            }
        }
    }
    (sent, errors)
}

/// The last lines of a stderr capture, for error messages.
fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(20);
    let t = lines[from..].join("\n");
    if t.is_empty() {
        "(empty)".into()
    } else {
        t
    }
}

/// A scratch directory removed on drop.
pub struct ScratchDir(pub PathBuf);

impl ScratchDir {
    pub fn create(parent: &Path) -> Result<Self> {
        let dir = parent.join(format!("run-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The CPU affinity list of this process's main thread (`taskset -p`), e.g. "0,1".
pub fn own_affinity() -> Option<String> {
    let out = Command::new("taskset")
        .args(["-p", "-c", &std::process::id().to_string()])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let list = text.rsplit_once(": ")?.1.trim();
    (!list.is_empty()).then(|| list.to_string())
}

/// Sets the CPU affinity of this process's main thread (the one the baselines run on).
pub fn set_own_affinity(list: &str) -> Result<()> {
    let status = Command::new("taskset")
        .args(["-p", "-c", list, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()
        .context("cannot run taskset")?;
    if !status.success() {
        bail!("taskset -p -c {list} failed ({status})");
    }
    Ok(())
}

/// Finds `name` on PATH (or takes it as given when it has a slash).
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Checks that GNU time works with `-o`/`-f` here (BusyBox's does not).
pub fn gnu_time_works(time: &Path, work: &Path) -> bool {
    let out = work.join("probe.time");
    let ok = Command::new(time)
        .args(["-o"])
        .arg(&out)
        .args(["-f", "%M %U %S", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok && parse_time_file(&out).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_is_parsed() {
        let stderr = "\
2026-11-21T10:00:00.000000Z  INFO weir::cli::run: pipeline started
2026-11-21T10:00:01.000000Z  INFO weir::cli::run: summary component=in kind=source received=10 sent=10 discarded=0 errors=decode:2
2026-11-21T10:00:01.000000Z  INFO weir::cli::run: summary component=out kind=sink received=8 sent=8 discarded=0 errors=0
2026-11-21T10:00:01.000000Z  INFO weir::cli::run: weir stopped cleanly
";
        let (sent, errors) = parse_summary(stderr, "out");
        assert_eq!(sent, Some(8));
        assert_eq!(errors, vec!["in: decode:2".to_string()]);
        assert_eq!(parse_summary("nothing here", "out"), (None, vec![]));
    }

    #[test]
    fn the_api_is_turned_on_on_a_loopback_port() {
        let dir = std::env::temp_dir().join(format!("weir-bench-api-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let cfg = write_config(&dir, "x", "[sources.in]\ntype = \"stdin\"\n").unwrap();
        enable_api(&cfg).unwrap();
        let text = fs::read_to_string(&cfg).unwrap();
        assert!(
            text.contains("[api]\nenabled = true\naddress = \"127.0.0.1:"),
            "{text}"
        );
        assert!(!text.contains("enabled = false"), "{text}");
        let addr: std::net::SocketAddr = text
            .split("address = \"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .parse()
            .unwrap();
        assert!(addr.ip().is_loopback() && addr.port() != 0);
        assert!(enable_api(&cfg).is_err(), "only a config with the API off");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn proc_io_is_parsed() {
        let text = "rchar: 10\nwchar: 2048\nsyscr: 1\nsyscw: 2\nread_bytes: 0\n\
                    write_bytes: 4096\ncancelled_write_bytes: 0\n";
        assert_eq!(
            parse_proc_io(text),
            Some(ProcIo {
                write_bytes: 4096,
                wchar: 2048
            })
        );
        assert_eq!(parse_proc_io("rchar: 1\n"), None);
        assert!(proc_io(std::process::id()).is_some());
    }

    #[test]
    fn proc_status_of_self() {
        let rss = proc_status_kib(std::process::id(), "VmRSS");
        assert!(rss.is_some_and(|v| v > 0));
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"/a"b\c"#), r#""/a\"b\\c""#);
    }
}
