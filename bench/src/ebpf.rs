//! `weir-bench ebpf`: the overhead of the eBPF sources on the host they observe.
//!
//! 1. `tcp`: a loopback connection storm (`--connections` short connections: connect, 64
//!    bytes each way, the server closes) timed without weir and with weir running
//!    `ebpf_tcp -> blackhole`, `--runs` pairs in ABBA order (each storm leaves its server-side
//!    TIME_WAIT sockets behind for a minute, which slows the next storm a little: the second
//!    storm of a pair must not always be the same one); the slowdown is the ratio of the
//!    medians. Weir is started and given a second to settle before its storm, so its start-up
//!    is not counted. Also: the machine's busy CPU time (/proc/stat) per storm with and
//!    without, events weir handled per second of storm, weir's CPU time, and, in one extra
//!    storm, the kernel programs' own run time (BPF run-time statistics,
//!    `kernel.bpf_stats_enabled`; off during the timed storms, since they cost two clock
//!    reads per program run themselves).
//! 2. `profile`: weir running `ebpf_profile` at 49 Hz -> blackhole for `--profile-secs`
//!    while every CPU is kept busy (so every sample has a stack to symbolise); weir's CPU time
//!    over that wall time is its share of one core, and the perf-event program's run time is
//!    reported next to it.
//!
//! 3. `memory`: `ebpf_memory`'s page faults and allocations, each on the storm and on its
//!    worst case ([`memory`]).
//!
//! Needs root and a kernel with BTF, like the sources.

mod memory;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::runner::{self, ScratchDir};

pub const USAGE: &str = "\
weir-bench ebpf: overhead of the eBPF sources (needs root and kernel BTF)

USAGE:
    weir-bench ebpf [OPTIONS]

OPTIONS:
    --cases LIST       Comma-separated subset of: tcp,profile,memory (default: tcp,profile)
    --connections N    Connections per storm (default 20000)
    --clients N        Client threads of the storm (default 4)
    --runs N           Storms with and without weir each; medians compared (default 20)
    --profile-secs N   How long the profile case runs (default 30)
    --weir PATH        The weir binary (default: <workspace>/target/release/weir)
";

/// Goals from the issue.
const GOAL_TCP_SLOWDOWN: f64 = 0.05;
const GOAL_PROFILE_CORE: f64 = 0.01;
const GOAL_MEMORY_SLOWDOWN: f64 = 0.02;

struct Args {
    tcp: bool,
    profile: bool,
    memory: bool,
    connections: usize,
    clients: usize,
    runs: usize,
    profile_secs: u64,
    weir: PathBuf,
}

fn parse_args(argv: &[String]) -> Result<Option<Args>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let mut a = Args {
        tcp: true,
        profile: true,
        memory: false,
        connections: 20_000,
        clients: 4,
        runs: 20,
        profile_secs: 30,
        weir: root.join("target/release/weir"),
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))
        };
        let number = |v: String| -> Result<u64> {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("{flag}: expected a positive integer, got {v:?}"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--connections" => a.connections = number(value()?)? as usize,
            "--clients" => a.clients = number(value()?)? as usize,
            "--runs" => a.runs = number(value()?)? as usize,
            "--profile-secs" => a.profile_secs = number(value()?)?,
            "--weir" => a.weir = PathBuf::from(value()?),
            "--cases" => {
                let v = value()?;
                a.tcp = false;
                a.profile = false;
                a.memory = false;
                for c in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    match c {
                        "tcp" => a.tcp = true,
                        "profile" => a.profile = true,
                        "memory" => a.memory = true,
                        other => bail!("--cases: unknown case {other:?} (tcp, profile, memory)"),
                    }
                }
            }
            other => bail!("unknown argument {other:?}; see `weir-bench ebpf --help`"),
        }
    }
    Ok(Some(a))
}

/// Runs the cases; prints progress to stderr and the markdown report to stdout. Returns
/// whether every case ran (goals missed do not fail it).
pub fn main(argv: &[String]) -> Result<bool> {
    let Some(args) = parse_args(argv)? else {
        print!("{USAGE}");
        return Ok(true);
    };
    if !args.weir.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p weir` or pass --weir",
            args.weir.display()
        );
    }
    let load_before = load_average();
    let stats_available = BpfStats::enable().enabled;
    let scratch = ScratchDir::create(&std::env::temp_dir().join("weir-bench-ebpf"))?;
    let mut out = vec![
        "## `weir-bench ebpf`".to_string(),
        String::new(),
        format!(
            "- command: `weir-bench ebpf {}`",
            argv.iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        ),
        format!(
            "- machine: {} CPUs, kernel {}; load average before: {load_before}",
            cpus(),
            kernel()
        ),
        format!(
            "- BPF run-time statistics: {}",
            if stats_available {
                "kernel.bpf_stats_enabled, on only while program run time is measured"
            } else {
                "unavailable"
            }
        ),
    ];
    let mut table = vec![
        "| case | measured | goal | verdict |".to_string(),
        "|---|---|---|---|".to_string(),
    ];
    let mut notes = Vec::new();
    if args.tcp {
        let r = tcp_case(&args, &scratch.0)?;
        table.push(format!(
            "| ebpf_tcp: {} loopback connections, {} client threads | {:+.1}% storm time (median {:.3} s with weir vs {:.3} s without); {} events/s | < {:.0}% slowdown | {} |",
            runner_thousands(args.connections as u64),
            args.clients,
            r.slowdown * 100.0,
            r.with_secs,
            r.without_secs,
            runner_thousands(r.events_per_sec as u64),
            GOAL_TCP_SLOWDOWN * 100.0,
            crate::report::verdict(Some(r.slowdown < GOAL_TCP_SLOWDOWN)),
        ));
        notes.push(format!(
            "- ebpf_tcp: storm times, quartiles: without weir {:.3} / {:.3} / {:.3} s, with weir {:.3} / {:.3} / {:.3} s (the ratio of the medians is the verdict; storms on this machine vary more than the goal from run to run). Runs without weir {}; with weir {}. Busy CPU time of the machine per storm (median): {:.2} CPU-s without, {:.2} with ({:+.1}%). Weir used {:.2} CPU-s in its median storm ({:.0}% of one core over the storm). Events at the sink per run: {}.{}",
            quantile(&r.without_all, 0.25),
            median(&r.without_all),
            quantile(&r.without_all, 0.75),
            quantile(&r.with_all, 0.25),
            median(&r.with_all),
            quantile(&r.with_all, 0.75),
            fmt_secs(&r.without_all),
            fmt_secs(&r.with_all),
            r.without_busy,
            r.with_busy,
            (r.with_busy / r.without_busy - 1.0) * 100.0,
            r.weir_cpu_secs,
            r.weir_cpu_secs / r.with_secs * 100.0,
            r.events.iter().map(|e| runner_thousands(*e)).collect::<Vec<_>>().join(", "),
            r.bpf
                .as_ref()
                .map(|b| format!(
                    " Kernel programs (a separate storm, statistics on): {:.3} s in {} runs, {:.0} ns per connection.",
                    b.secs,
                    runner_thousands(b.runs),
                    b.secs * 1e9 / args.connections as f64
                ))
                .unwrap_or_default()
        ));
    }
    if args.profile {
        let r = profile_case(&args, &scratch.0)?;
        table.push(format!(
            "| ebpf_profile at 49 Hz, {} s, all CPUs busy | weir {:.2}% of one core ({:.3} CPU-s over {:.1} s) | < {:.0}% | {} |",
            args.profile_secs,
            r.share * 100.0,
            r.cpu_secs,
            r.wall_secs,
            GOAL_PROFILE_CORE * 100.0,
            crate::report::verdict(Some(r.share < GOAL_PROFILE_CORE)),
        ));
        notes.push(format!(
            "- ebpf_profile: {} stack-sample events reached the sink. Start-up (programs loaded, kallsyms read), not counted above: {:.3} CPU-s.{}",
            runner_thousands(r.events),
            r.startup_cpu_secs,
            r.bpf
                .as_ref()
                .map(|b| format!(
                    " The perf-event program ran {} times for {:.3} s in all ({:.0} ns per sample, {:.3}% of one core), charged to the sampled tasks, not to weir.",
                    runner_thousands(b.runs),
                    b.secs,
                    b.secs * 1e9 / b.runs.max(1) as f64,
                    b.secs / r.wall_secs * 100.0
                ))
                .unwrap_or_default()
        ));
    }
    if args.memory {
        for r in memory::memory_case(&args, &scratch.0)? {
            let (goal, verdict) = if r.goal {
                (
                    format!("< {:.0}% slowdown", GOAL_MEMORY_SLOWDOWN * 100.0),
                    crate::report::verdict(Some(r.slowdown() < GOAL_MEMORY_SLOWDOWN)),
                )
            } else {
                ("reported".to_string(), "-")
            };
            table.push(format!(
                "| ebpf_memory, {} | {} | {goal} | {verdict} |",
                r.what,
                r.measured()
            ));
            notes.push(r.note());
        }
    }
    out.push(format!("- load average after: {}", load_average()));
    out.push(String::new());
    out.extend(table);
    out.push(String::new());
    out.extend(notes);
    println!("{}", out.join("\n"));
    Ok(true)
}

fn fmt_secs(v: &[f64]) -> String {
    v.iter()
        .map(|s| format!("{s:.3} s"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn runner_thousands(v: u64) -> String {
    crate::report::thousands(v)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Turns on the kernel's BPF run-time statistics for the run, restoring the old value on drop.
struct BpfStats {
    enabled: bool,
    previous: Option<String>,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    fn enable() -> Self {
        let previous = std::fs::read_to_string(BPF_STATS).ok();
        let enabled = std::fs::write(BPF_STATS, "1").is_ok();
        Self { enabled, previous }
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Some(p) = &self.previous {
            let _ = std::fs::write(BPF_STATS, p.trim());
        }
    }
}

/// The run time of the BPF programs a process holds (`run_time_ns`, `run_cnt` in the fdinfo
/// of its program fds; zero unless `kernel.bpf_stats_enabled`).
#[derive(Clone, Copy, Default)]
struct ProgTime {
    secs: f64,
    runs: u64,
}

fn prog_time(pid: u32) -> Option<ProgTime> {
    let mut t = ProgTime::default();
    let mut any = false;
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .ok()?
        .flatten()
    {
        let Ok(info) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        if !info.contains("prog_type:") {
            continue;
        }
        for line in info.lines() {
            if let Some(v) = line.strip_prefix("run_time_ns:") {
                t.secs += v.trim().parse::<f64>().unwrap_or(0.0) / 1e9;
                any = true;
            } else if let Some(v) = line.strip_prefix("run_cnt:") {
                t.runs += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    any.then_some(t)
}

/// CPU time of every thread of a process so far (schedstat, nanosecond resolution).
fn cpu_secs(pid: u32) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e9
}

/// A weir running one eBPF source into a blackhole until stopped.
struct Weir {
    child: Child,
    stderr: PathBuf,
}

impl Weir {
    fn start(weir: &Path, work: &Path, name: &str, source: &str, ready: &str) -> Result<Self> {
        let body = format!(
            "[sources.ebpf]\n{source}\n\n[sinks.out]\ntype = \"blackhole\"\ninputs = [\"ebpf\"]\n"
        );
        let config = runner::write_config(work, name, &body)?;
        let stderr = work.join(format!("{name}.stderr"));
        let child = Command::new(weir)
            .args(["run", "--config"])
            .arg(&config)
            .env("WEIR_LOG", "info")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr)?)
            .spawn()
            .with_context(|| format!("cannot run {}", weir.display()))?;
        let w = Self { child, stderr };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::read_to_string(&w.stderr).unwrap_or_default();
            if log.contains(ready) && log.contains("weir started") {
                return Ok(w);
            }
            if Instant::now() > deadline || log.contains("ERROR") {
                bail!("weir did not start its eBPF source:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, wait; returns the events the sink received (from the exit summary).
    fn stop(self) -> Result<u64> {
        let (sent, errors) = self.stop_reporting_errors()?;
        if !errors.is_empty() {
            bail!("weir reported errors: {errors:?}");
        }
        Ok(sent)
    }

    /// As [`Weir::stop`], but the errors weir counted (drops in the kernel, say) are returned,
    /// not a failure.
    fn stop_reporting_errors(mut self) -> Result<(u64, Vec<String>)> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .context("cannot run kill")?;
        let status = self.child.wait()?;
        let log = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        if !status.success() {
            bail!("weir exited with {status}:\n{log}");
        }
        let (sent, errors) = runner::parse_summary(&log, "out");
        let sent = sent.context("no summary for the sink in weir's log")?;
        Ok((sent, errors))
    }
}

/// Connections of one storm: `n` connections over `clients` threads against a server of two
/// threads on loopback; each sends 64 bytes, gets 64 back, and the server closes first (so
/// TIME_WAIT stays on the server side and the client ports are free again at once).
fn storm(n: usize, clients: usize) -> Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut servers = Vec::new();
    for _ in 0..2 {
        let l = listener.try_clone()?;
        let stop = stop.clone();
        servers.push(std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            for conn in l.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(mut c) = conn else { continue };
                if c.read_exact(&mut buf).is_ok() {
                    let _ = c.write_all(&buf);
                }
            }
        }));
    }
    let start = Instant::now();
    let per = n / clients;
    let mut threads = Vec::new();
    for i in 0..clients {
        let count = if i == 0 { n - per * (clients - 1) } else { per };
        threads.push(std::thread::spawn(move || -> std::io::Result<()> {
            let req = [7u8; 64];
            let mut resp = Vec::with_capacity(64);
            for _ in 0..count {
                let mut c = TcpStream::connect(addr)?;
                c.write_all(&req)?;
                resp.clear();
                c.read_to_end(&mut resp)?;
                if resp.len() != 64 {
                    return Err(std::io::Error::other(format!(
                        "short response: {} bytes",
                        resp.len()
                    )));
                }
            }
            Ok(())
        }));
    }
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?
            .context("storm client")?;
    }
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for _ in 0..2 {
        // Wake the accept loops.
        let _ = TcpStream::connect(addr);
    }
    for s in servers {
        let _ = s.join();
    }
    Ok(secs)
}

struct TcpResult {
    without_secs: f64,
    with_secs: f64,
    without_all: Vec<f64>,
    with_all: Vec<f64>,
    slowdown: f64,
    /// Median busy CPU-s of the machine per storm, without and with weir.
    without_busy: f64,
    with_busy: f64,
    events_per_sec: f64,
    events: Vec<u64>,
    weir_cpu_secs: f64,
    bpf: Option<ProgTime>,
}

fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

/// The value at fraction `q` of the sorted values (nearest rank).
fn quantile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let i = ((s.len() as f64 - 1.0) * q).round() as usize;
    s[i.min(s.len() - 1)]
}

/// CPU time the whole machine spent busy so far (user, nice, system, irq, softirq; not idle,
/// iowait or steal), from /proc/stat in clock ticks.
fn busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let busy = [0, 1, 2, 5, 6]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum::<f64>();
    // /proc/stat counts in USER_HZ, which the kernel's ABI fixes at 100 on x86 and arm64.
    busy / 100.0
}

/// One storm with weir running: started and settled first, so its start-up is not timed.
struct WithWeir {
    secs: f64,
    busy: f64,
    events: u64,
    weir_cpu: f64,
    bpf: Option<ProgTime>,
}

fn storm_with_weir(args: &Args, work: &Path, name: &str) -> Result<WithWeir> {
    let weir = Weir::start(
        &args.weir,
        work,
        name,
        "type = \"ebpf_tcp\"",
        "eBPF TCP tracepoints attached",
    )?;
    std::thread::sleep(Duration::from_secs(1));
    let (cpu0, bpf0, busy0) = (cpu_secs(weir.pid()), prog_time(weir.pid()), busy_secs());
    let secs = storm(args.connections, args.clients)?;
    let (cpu1, bpf1, busy1) = (cpu_secs(weir.pid()), prog_time(weir.pid()), busy_secs());
    // Let the last records reach the sink before stopping.
    std::thread::sleep(Duration::from_millis(500));
    let events = weir.stop()?;
    if events < 2 * args.connections as u64 {
        bail!(
            "weir reported {events} connections for a storm of {} (two ends each)",
            args.connections
        );
    }
    let bpf = match (bpf0, bpf1) {
        (Some(a), Some(b)) => Some(ProgTime {
            secs: b.secs - a.secs,
            runs: b.runs - a.runs,
        }),
        _ => None,
    };
    Ok(WithWeir {
        secs,
        busy: busy1 - busy0,
        events,
        weir_cpu: cpu1 - cpu0,
        bpf,
    })
}

fn tcp_case(args: &Args, work: &Path) -> Result<TcpResult> {
    eprintln!("ebpf_tcp: warm-up storm");
    storm(args.connections / 4, args.clients)?;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let (mut busy_without, mut busy_with) = (Vec::new(), Vec::new());
    let mut runs_with: Vec<WithWeir> = Vec::new();
    for i in 1..=args.runs {
        // ABBA: odd pairs start without weir, even pairs with it.
        for with_weir in [i % 2 == 0, i % 2 == 1] {
            if with_weir {
                let r = storm_with_weir(args, work, &format!("tcp-{i}"))?;
                eprintln!(
                    "  run {i}/{}: with weir {:.3} s, {} events, weir CPU {:.3} s",
                    args.runs, r.secs, r.events, r.weir_cpu
                );
                with.push(r.secs);
                busy_with.push(r.busy);
                runs_with.push(r);
            } else {
                let busy0 = busy_secs();
                let secs = storm(args.connections, args.clients)?;
                busy_without.push(busy_secs() - busy0);
                eprintln!("  run {i}/{}: without weir {secs:.3} s", args.runs);
                without.push(secs);
                // As long as weir's stop and start take in the other storm of the pair.
                std::thread::sleep(Duration::from_millis(1500));
            }
        }
    }
    // The programs' own run time, from one more storm with the statistics on.
    let bpf = {
        let stats = BpfStats::enable();
        if stats.enabled {
            let r = storm_with_weir(args, work, "tcp-bpf-stats")?;
            eprintln!(
                "  with BPF statistics on: {:.3} s, {} events",
                r.secs, r.events
            );
            r.bpf.filter(|b| b.runs > 0)
        } else {
            None
        }
    };
    let (without_secs, with_secs) = (median(&without), median(&with));
    runs_with.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    let mid = &runs_with[runs_with.len() / 2];
    let mut events: Vec<u64> = runs_with.iter().map(|r| r.events).collect();
    events.sort_unstable();
    Ok(TcpResult {
        without_secs,
        with_secs,
        slowdown: with_secs / without_secs - 1.0,
        without_busy: median(&busy_without),
        with_busy: median(&busy_with),
        events_per_sec: mid.events as f64 / with_secs,
        events,
        without_all: without,
        with_all: with,
        weir_cpu_secs: mid.weir_cpu,
        bpf,
    })
}

struct ProfileResult {
    startup_cpu_secs: f64,
    share: f64,
    cpu_secs: f64,
    wall_secs: f64,
    events: u64,
    bpf: Option<ProgTime>,
}

fn profile_case(args: &Args, work: &Path) -> Result<ProfileResult> {
    // The perf-event program's own run time is reported; weir's share is not affected.
    let _stats = BpfStats::enable();
    eprintln!(
        "ebpf_profile: 49 Hz for {} s with every CPU busy",
        args.profile_secs
    );
    // Work for the profiler: a busy thread per CPU, in a few distinct functions.
    let stop = Arc::new(AtomicBool::new(false));
    let busy: Vec<_> = (0..cpus())
        .map(|i| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = i as u64;
                while !stop.load(Ordering::Relaxed) {
                    x = spin_a(x);
                    x = spin_b(x);
                }
                x
            })
        })
        .collect();
    let weir = Weir::start(
        &args.weir,
        work,
        "profile",
        "type = \"ebpf_profile\"\nfrequency_hz = 49\ninterval_secs = 10",
        "eBPF profiler attached",
    )?;
    let start = Instant::now();
    let cpu0 = cpu_secs(weir.pid());
    eprintln!("  weir used {cpu0:.3} CPU-s to start (load programs, read kallsyms)");
    let bpf0 = prog_time(weir.pid());
    std::thread::sleep(Duration::from_secs(args.profile_secs));
    let cpu = cpu_secs(weir.pid()) - cpu0;
    let bpf1 = prog_time(weir.pid());
    let wall = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for b in busy {
        let _ = b.join();
    }
    let events = weir.stop()?;
    if events == 0 {
        bail!("ebpf_profile sent no events in {wall:.0} s");
    }
    let bpf = match (bpf0, bpf1) {
        (Some(a), Some(b)) if b.runs > a.runs => Some(ProgTime {
            secs: b.secs - a.secs,
            runs: b.runs - a.runs,
        }),
        _ => None,
    };
    Ok(ProfileResult {
        startup_cpu_secs: cpu0,
        share: cpu / wall,
        cpu_secs: cpu,
        wall_secs: wall,
        events,
        bpf,
    })
}

#[inline(never)]
fn spin_a(mut x: u64) -> u64 {
    for _ in 0..100_000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
    }
    std::hint::black_box(x)
}

#[inline(never)]
fn spin_b(mut x: u64) -> u64 {
    for _ in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    std::hint::black_box(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_storm_completes_every_connection() {
        let secs = storm(200, 2).unwrap();
        assert!(secs > 0.0);
    }

    #[test]
    fn args() {
        let a = parse_args(&[
            "--cases".into(),
            "tcp".into(),
            "--connections".into(),
            "10".into(),
        ])
        .unwrap()
        .unwrap();
        assert!(a.tcp && !a.profile);
        assert_eq!(a.connections, 10);
        assert!(!a.memory);
        let m = parse_args(&["--cases".into(), "memory".into()])
            .unwrap()
            .unwrap();
        assert!(m.memory && !m.tcp && !m.profile);
        assert!(parse_args(&["--cases".into(), "udp".into()]).is_err());
    }
}
