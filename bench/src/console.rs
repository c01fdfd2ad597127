//! `weir-bench console`: what the web console costs in memory (issue 23). Two `weir run`
//! of the embedded quickstart (no config file: demo logs, flows and stack samples, the API
//! and console on), started together, each on its own loopback port and data dir. A client
//! polls one of them the way the console page does; the other is left alone. Every second the
//! bench reads both processes' `VmRSS`; at the end, their peak (`VmHWM`) and the feeds'
//! `held_bytes`. The gap is what the console cost; docs/console.md bounds what it holds.
//!
//! The client (see src/console/app.js): the page's files and `/api/console/components` once,
//! then `/api/graph` every second (the pipeline view) and every feed
//! (`/api/console/feed/{topology,stacks,tcp,process}`, each read incrementally with
//! `after=SEQ`) every two seconds. The page polls only the view on screen; polling every feed
//! at once keeps every tap attached, the most the console can hold.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::{files, runner};

const USAGE: &str = "\
weir-bench console: peak RSS of the quickstart with the console polled vs left alone (issue 23)

USAGE:
    weir-bench console [OPTIONS]

OPTIONS:
    --weir PATH      The weir binary (default: <workspace>/target/release/weir)
    --secs N         How long both run (default 300)
    --data-dir DIR   Where the scratch dirs go (default: <workspace>/target/bench-data)
    -h, --help       This help
";

/// The feeds of the console (docs/console.md), and what each may hold.
const FEEDS: [(&str, u64); 4] = [
    ("topology", 2 << 20),
    ("stacks", 2 << 20),
    ("tcp", 1 << 20),
    ("process", 1 << 20),
];
const GRAPH_EVERY: Duration = Duration::from_secs(1);
const FEEDS_EVERY: Duration = Duration::from_secs(2);
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// docs/console.md: "the console holds at most 6 MiB of event text plus four tap queues".
const BOUND_TEXT_MIB: f64 = 6.0;

struct Args {
    weir: PathBuf,
    secs: u64,
    data_dir: PathBuf,
}

fn parse(argv: &[String]) -> Result<Option<Args>> {
    let root = crate::workspace_root();
    let mut a = Args {
        weir: root.join("target/release/weir"),
        secs: 300,
        data_dir: root.join("target/bench-data"),
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--weir" => a.weir = PathBuf::from(value()?),
            "--secs" => {
                let v = value()?;
                a.secs =
                    v.parse().ok().filter(|n| *n > 0).with_context(|| {
                        format!("--secs: expected a positive integer, got {v:?}")
                    })?;
            }
            "--data-dir" => a.data_dir = PathBuf::from(value()?),
            other => bail!("unknown argument {other:?}; see --help"),
        }
    }
    Ok(Some(a))
}

/// A quickstart weir on its own port and data dir.
struct Quickstart {
    child: Child,
    pid: u32,
    api: SocketAddr,
    stderr: PathBuf,
}

impl Quickstart {
    fn start(weir: &Path, work: &Path, name: &str) -> Result<Quickstart> {
        let api = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let data = work.join(format!("data-{name}"));
        let _ = fs::remove_dir_all(&data);
        fs::create_dir_all(&data).with_context(|| format!("cannot create {}", data.display()))?;
        let stderr = work.join(format!("{name}.stderr"));
        // No config: the embedded quickstart; its console sink writes to stdout (discarded).
        let child = Command::new(weir)
            .arg("run")
            .env("WEIR_API_ADDRESS", api.to_string())
            .env("WEIR_DATA_DIR", &data)
            .env_remove("RUST_LOG")
            .env_remove("WEIR_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(File::create(&stderr)?))
            .spawn()
            .context("cannot start weir")?;
        Ok(Quickstart {
            pid: child.id(),
            child,
            api,
            stderr,
        })
    }

    fn alive(&mut self) -> Result<()> {
        if let Some(st) = self.child.try_wait()? {
            let text = fs::read_to_string(&self.stderr).unwrap_or_default();
            bail!("weir exited early ({st}); stderr:\n{text}");
        }
        Ok(())
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while get(self.api, "/health").is_err() {
            self.alive()?;
            ensure!(
                Instant::now() < deadline,
                "weir's API did not answer in 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn stop(mut self) -> Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait()? {
                ensure!(st.success(), "weir exited with {st} after SIGTERM");
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("weir did not stop within 60 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The body of a 200 answer to `GET path` (HTTP/1.0, so neither chunked nor kept alive).
fn get(api: SocketAddr, path: &str) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&api, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut r = Vec::new();
    s.read_to_end(&mut r)?;
    let end = memchr::memmem::find(&r, b"\r\n\r\n").context("no end of headers")?;
    let status = r.split(|b| *b == b' ').nth(1).unwrap_or_default();
    ensure!(
        status == b"200",
        "GET {path}: {}",
        String::from_utf8_lossy(&r[..end])
    );
    Ok(r.split_off(end + 4))
}

/// What the client saw of one feed.
#[derive(Default, Clone, Copy)]
struct FeedState {
    /// The page's `next` (None until the first read).
    next: Option<u64>,
    events: u64,
    held_bytes: u64,
    max_held_bytes: u64,
    dropped: u64,
    evicted: u64,
}

/// One feed read as app.js's `feed()` does: `after=next-1` once `next` is known.
fn read_feed(api: SocketAddr, name: &str, st: &mut FeedState) -> Result<()> {
    let q = match st.next {
        Some(n) if n > 0 => format!("?after={}", n - 1),
        _ => String::new(),
    };
    let body = get(api, &format!("/api/console/feed/{name}{q}"))?;
    let v: serde_json::Value =
        serde_json::from_slice(&body).with_context(|| format!("feed {name}: not JSON"))?;
    let num = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    st.next = Some(num("next"));
    st.events += v
        .get("events")
        .and_then(serde_json::Value::as_array)
        .map_or(0, |e| e.len() as u64);
    st.held_bytes = num("held_bytes");
    st.max_held_bytes = st.max_held_bytes.max(st.held_bytes);
    st.dropped = num("dropped");
    st.evicted = num("evicted");
    Ok(())
}

pub fn main(argv: &[String]) -> Result<bool> {
    let Some(args) = parse(argv)? else {
        print!("{USAGE}");
        return Ok(true);
    };
    ensure!(
        args.weir.is_file(),
        "the weir binary is not at {} (pass --weir PATH)",
        args.weir.display()
    );
    let weir = args.weir.canonicalize()?;
    let load_before = crate::load_average();
    let scratch = runner::ScratchDir::create(&args.data_dir)?;
    let work = scratch.0.clone();
    eprintln!(
        "weir-bench console: {} for {} s, load average {load_before}",
        weir.display(),
        args.secs
    );
    let mut polled = Quickstart::start(&weir, &work, "polled")?;
    let mut alone = Quickstart::start(&weir, &work, "alone")?;
    polled.wait_ready()?;
    alone.wait_ready()?;
    // The page's first load: its files, then the components once.
    let mut requests = 0u64;
    for p in ["/", "/app.js", "/style.css", "/api/console/components"] {
        // The file names are the page's; a missing one is not the bench's business.
        if get(polled.api, p).is_ok() {
            requests += 1;
        }
    }
    let mut feeds = [FeedState::default(); FEEDS.len()];
    let mut samples: Vec<(f64, u64, u64)> = Vec::new(); // (secs, polled, alone) VmRSS KiB
    let started = Instant::now();
    let end = started + Duration::from_secs(args.secs);
    let (mut next_graph, mut next_feeds, mut next_sample) = (started, started, started);
    let mut failed = 0u64;
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_graph {
            match get(polled.api, "/api/graph") {
                Ok(_) => requests += 1,
                Err(_) => failed += 1,
            }
            next_graph += GRAPH_EVERY;
        }
        if now >= next_feeds {
            for ((name, _), st) in FEEDS.iter().zip(feeds.iter_mut()) {
                match read_feed(polled.api, name, st) {
                    Ok(()) => requests += 1,
                    Err(e) => {
                        failed += 1;
                        if failed <= 3 {
                            eprintln!("  feed {name}: {e:#}");
                        }
                    }
                }
            }
            next_feeds += FEEDS_EVERY;
        }
        if now >= next_sample {
            polled.alive()?;
            alone.alive()?;
            let p = runner::proc_status_kib(polled.pid, "VmRSS").unwrap_or(0);
            let a = runner::proc_status_kib(alone.pid, "VmRSS").unwrap_or(0);
            let t = started.elapsed().as_secs_f64();
            if samples.len().is_multiple_of(30) {
                eprintln!(
                    "  {t:5.0} s: VmRSS polled {:.1} MiB, alone {:.1} MiB",
                    kib_mib(p),
                    kib_mib(a)
                );
            }
            samples.push((t, p, a));
            next_sample += SAMPLE_EVERY;
        }
        let wake = next_graph.min(next_feeds).min(next_sample);
        std::thread::sleep(wake.saturating_duration_since(Instant::now()));
    }
    let hwm = |pid| runner::proc_status_kib(pid, "VmHWM").unwrap_or(0);
    let (hwm_p, hwm_a) = (hwm(polled.pid), hwm(alone.pid));
    let cpu_p = files::proc_cpu_secs(polled.pid);
    let cpu_a = files::proc_cpu_secs(alone.pid);
    polled.stop()?;
    alone.stop()?;

    // The second half of the run: after start-up and the feeds' first fill.
    let half: Vec<&(f64, u64, u64)> = samples
        .iter()
        .filter(|s| s.0 >= args.secs as f64 / 2.0)
        .collect();
    let mean = |f: fn(&(f64, u64, u64)) -> u64| {
        half.iter().map(|s| f(s) as f64).sum::<f64>() / half.len().max(1) as f64
    };
    let (mean_p, mean_a) = (mean(|s| s.1), mean(|s| s.2));
    let held: u64 = feeds.iter().map(|f| f.max_held_bytes).sum();
    let gap_peak = kib_mib(hwm_p) - kib_mib(hwm_a);
    let gap_mean = (mean_p - mean_a) / 1024.0;

    println!();
    println!(
        "console polled vs left alone, quickstart, {} s each, side by side",
        args.secs
    );
    println!(
        "machine: load average before {load_before}, after {}",
        crate::load_average()
    );
    println!(
        "client: {requests} requests ({failed} failed): /api/graph every {} s, 4 feeds every {} s (after=SEQ)",
        GRAPH_EVERY.as_secs(),
        FEEDS_EVERY.as_secs()
    );
    println!();
    println!("| | polled | left alone | gap |");
    println!("|---|---:|---:|---:|");
    println!(
        "| peak RSS (VmHWM) | {:.1} MiB | {:.1} MiB | {gap_peak:+.1} MiB |",
        kib_mib(hwm_p),
        kib_mib(hwm_a)
    );
    println!(
        "| mean VmRSS, second half ({} samples) | {:.1} MiB | {:.1} MiB | {gap_mean:+.1} MiB |",
        half.len(),
        mean_p / 1024.0,
        mean_a / 1024.0
    );
    if let (Some(p), Some(a)) = (cpu_p, cpu_a) {
        println!(
            "| CPU time | {p:.2} s ({:.2}% of a core) | {a:.2} s ({:.2}%) | {:+.2} s |",
            100.0 * p / args.secs as f64,
            100.0 * a / args.secs as f64,
            p - a
        );
    }
    println!();
    println!("| feed | events read | max held_bytes | bound | dropped | evicted |");
    println!("|---|---:|---:|---:|---:|---:|");
    for ((name, bound), f) in FEEDS.iter().zip(&feeds) {
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            f.events, f.max_held_bytes, bound, f.dropped, f.evicted
        );
    }
    println!();
    let held_ok = FEEDS
        .iter()
        .zip(&feeds)
        .all(|((_, bound), f)| f.max_held_bytes <= *bound);
    println!(
        "bound (docs/console.md: at most {BOUND_TEXT_MIB} MiB of event text plus four tap queues): held_bytes {:.2} MiB at most, {}; RSS gap {gap_peak:+.1} MiB peak, {gap_mean:+.1} MiB mean",
        held as f64 / (1024.0 * 1024.0),
        if held_ok { "within every feed's bound" } else { "OVER a feed's bound" }
    );
    Ok(failed == 0 || requests > failed * 100)
}

fn kib_mib(k: u64) -> f64 {
    k as f64 / 1024.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_arguments() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let a = parse(&v(&["--secs", "5", "--weir", "/x/weir"]))
            .unwrap()
            .unwrap();
        assert_eq!(a.secs, 5);
        assert_eq!(a.weir, PathBuf::from("/x/weir"));
        assert!(parse(&v(&["--help"])).unwrap().is_none());
        assert!(parse(&v(&["--secs", "0"])).is_err());
        assert!(parse(&v(&["--nope"])).is_err());
    }
}
