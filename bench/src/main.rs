//! `weir-bench`: end-to-end throughput of the release `weir` binary on generated JSON access
//! logs, next to two baselines measured in the same run on the same bytes. See README.md.

// This is benchmark code: a failed unwrap()/expect() is a failed run, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod baseline;
mod console;
mod data;
mod ebpf;
mod elasticsearch;
mod files;
mod flows;
mod otlp;
mod perf;
mod report;
mod runner;
mod scale;
mod threads;
mod traces;
mod transport;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use report::{Goal, Row};
use runner::{RunOutcome, Runner, ScratchDir};

const USAGE: &str = "\
weir-bench: end-to-end throughput of the release weir binary, with in-run baselines

USAGE:
    weir-bench [OPTIONS]
    weir-bench flows [OPTIONS]   (flow_to_topology; see `weir-bench flows --help`)
    weir-bench ebpf [OPTIONS]    (overhead of the eBPF sources; needs root)
    weir-bench console [OPTIONS] (the web console's memory, polled vs left alone)
    weir-bench elasticsearch [OPTIONS]   (the elasticsearch sink; see its --help)
    weir-bench otlp [OPTIONS]    (otlp source -> otlp sink; see its --help)
    weir-bench transport [OPTIONS]   (nats and kafka; see `weir-bench transport --help`)
    weir-bench threads [OPTIONS] (case 11 at --threads 1 and 2, unpinned; see its --help)

OPTIONS:
    --size-mib N       Size of the generated input, in MiB (default 1024)
    --weir PATH        The weir binary (default: <workspace>/target/release/weir)
    --runs N           Runs of each case and baseline; the median is reported (default 3)
    --demo-count N     Events of the demo case (default 2000000)
    --cases LIST       Comma-separated subset of: bytes,json,json-api,remap,demo,parquet,jsonfile,idle,
                       file-bytes,file-json,file-json-noack,file-json-disk,file-remap,
                       file-multiline,files-100,scale,perf
                       (default: all but scale and perf)
    --perf-size-mib N  Size of the perf case's capture, in MiB (default 256)
    --files-secs N     How long files-100 writes (default 60)
    --files-rate-mib N Total MiB/s files-100 writes into its 100 files (default 10)
    --data-dir DIR     Where the input is generated and kept (default: <workspace>/target/bench-data)
    --timeout-secs N   Kill a weir run that takes longer (default 1800)
    --no-taskset       Do not pin weir to core 0
    -h, --help         This help
";

const DEFAULT_DEMO_COUNT: u64 = 2_000_000;
/// Goals from the issue.
const GOAL_BYTES_VS_A: f64 = 0.15;
const GOAL_JSON_VS_B: f64 = 1.5;
/// Acknowledgements on by default may cost at most 5% of the file json case's speed.
const GOAL_ACK_VS_NOACK: f64 = 0.95;
/// Issue 23: a console nobody looks at costs nothing: the API on, within noise of it off.
const GOAL_API_VS_NONE: f64 = 0.98;
/// Issue 25 goal 4: Java traces joined by `multiline`, in MB (10^6 bytes) per CPU-second.
const GOAL_MULTILINE_MB_PER_CPU_S: f64 = 238.0;
/// Issue 26: the file json case with a disk buffer at least this fraction of the memory buffer.
const GOAL_DISK_VS_MEMORY: f64 = 0.6;
/// Parquet sink vs the file sink writing JSON lines: at least as fast (events per CPU-second)
/// and files at least this many times smaller.
const GOAL_PARQUET_SMALLER: f64 = 8.0;
const GOAL_IDLE_RSS_MIB: f64 = 20.0;
/// Parse and edit (`remap`, `file-remap`): at least the naive parse, in little memory.
const GOAL_REMAP_VS_B: f64 = 1.0;
const GOAL_REMAP_RSS_MIB: f64 = 30.0;
/// `files-100`: weir tailing 100 files written at 10 MiB/s in total.
const GOAL_FILES_CPU_PCT: f64 = 5.0;
const GOAL_FILES_RSS_MIB: f64 = 30.0;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    Bytes,
    Json,
    JsonApi,
    Remap,
    Demo,
    Parquet,
    JsonFile,
    Idle,
    FileBytes,
    FileJson,
    FileJsonNoAck,
    FileJsonDisk,
    FileRemap,
    FileMultiline,
    Files100,
    Scale,
    Perf,
}

impl Case {
    const ALL: [Case; 17] = [
        Case::Bytes,
        Case::Json,
        Case::JsonApi,
        Case::Remap,
        Case::Demo,
        Case::Parquet,
        Case::JsonFile,
        Case::Idle,
        Case::FileBytes,
        Case::FileJson,
        Case::FileJsonNoAck,
        Case::FileJsonDisk,
        Case::FileRemap,
        Case::FileMultiline,
        Case::Files100,
        Case::Scale,
        Case::Perf,
    ];
    /// What runs without `--cases` (the perf case needs the shared captures; scale is six
    /// inputs of `--size-mib` each).
    const DEFAULT: [Case; 15] = [
        Case::Bytes,
        Case::Json,
        Case::JsonApi,
        Case::Remap,
        Case::Demo,
        Case::Parquet,
        Case::JsonFile,
        Case::Idle,
        Case::FileBytes,
        Case::FileJson,
        Case::FileJsonNoAck,
        Case::FileJsonDisk,
        Case::FileRemap,
        Case::FileMultiline,
        Case::Files100,
    ];

    fn name(self) -> &'static str {
        match self {
            Case::Bytes => "bytes",
            Case::Json => "json",
            Case::JsonApi => "json-api",
            Case::Remap => "remap",
            Case::Demo => "demo",
            Case::Parquet => "parquet",
            Case::JsonFile => "jsonfile",
            Case::Idle => "idle",
            Case::FileBytes => "file-bytes",
            Case::FileJson => "file-json",
            Case::FileJsonNoAck => "file-json-noack",
            Case::FileJsonDisk => "file-json-disk",
            Case::FileRemap => "file-remap",
            Case::FileMultiline => "file-multiline",
            Case::Files100 => "files-100",
            Case::Scale => "scale",
            Case::Perf => "perf",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Case::Bytes => "1. stdin bytes -> blackhole",
            Case::Json => "2. stdin json -> blackhole",
            Case::JsonApi => "2b. stdin json -> blackhole, API and console on, nobody looking",
            Case::Remap => "3. stdin bytes -> remap -> blackhole",
            Case::Demo => "4. demo json -> blackhole",
            Case::Parquet => "5. stdin json -> parquet (zstd)",
            Case::JsonFile => "6. stdin json -> file (JSON lines)",
            Case::Idle => "idle",
            Case::FileBytes => "8. file bytes -> blackhole",
            Case::FileJson => "9. file json -> blackhole",
            Case::FileJsonNoAck => "9b. file json -> blackhole, acknowledgements = false",
            Case::FileJsonDisk => "9c. file json -> disk buffer -> blackhole",
            Case::FileRemap => "11. file json -> remap (add, rename, delete) -> blackhole",
            Case::FileMultiline => {
                "12. file Java traces -> multiline (continue_through) -> blackhole"
            }
            Case::Files100 => "10. 100 files tailed while written -> blackhole",
            Case::Scale => "13. file json -> remap -> blackhole, by files and line length",
            Case::Perf => "7. perf script -> stack_fold -> folded file",
        }
    }
}

struct Args {
    size_mib: u64,
    weir: PathBuf,
    runs: usize,
    demo_count: u64,
    cases: Vec<Case>,
    perf_size_mib: u64,
    data_dir: PathBuf,
    timeout: Duration,
    taskset: bool,
    files_secs: u64,
    files_rate_mib: u64,
}

/// The workspace root: this crate's parent directory, as built.
fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn parse_args(argv: &[String]) -> Result<Option<Args>> {
    let root = workspace_root();
    let mut a = Args {
        size_mib: 1024,
        weir: root.join("target/release/weir"),
        runs: 3,
        demo_count: DEFAULT_DEMO_COUNT,
        cases: Case::DEFAULT.to_vec(),
        perf_size_mib: 256,
        data_dir: root.join("target/bench-data"),
        timeout: Duration::from_secs(1800),
        taskset: true,
        files_secs: 60,
        files_rate_mib: 10,
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let (flag, inline) = match flag.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (flag.as_str(), None),
        };
        let mut value = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .with_context(|| format!("{flag} needs a value")),
            }
        };
        let number = |v: String| -> Result<u64> {
            v.parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| format!("{flag}: expected a positive integer, got {v:?}"))
        };
        match flag {
            "-h" | "--help" => return Ok(None),
            "--size-mib" => a.size_mib = number(value()?)?,
            "--weir" => a.weir = PathBuf::from(value()?),
            "--runs" => a.runs = number(value()?)? as usize,
            "--demo-count" => a.demo_count = number(value()?)?,
            "--perf-size-mib" => a.perf_size_mib = number(value()?)?,
            "--data-dir" => a.data_dir = PathBuf::from(value()?),
            "--timeout-secs" => a.timeout = Duration::from_secs(number(value()?)?),
            "--no-taskset" => a.taskset = false,
            "--files-secs" => a.files_secs = number(value()?)?,
            "--files-rate-mib" => a.files_rate_mib = number(value()?)?,
            "--cases" => {
                let v = value()?;
                let mut cases = Vec::new();
                for name in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    let c = Case::ALL
                        .into_iter()
                        .find(|c| c.name() == name)
                        .with_context(|| {
                            format!(
                                "--cases: unknown case {name:?} (bytes, json, json-api, remap, demo, parquet, jsonfile, idle, file-bytes, file-json, file-json-noack, file-json-disk, file-remap, file-multiline, files-100, scale, perf)"
                            )
                        })?;
                    if !cases.contains(&c) {
                        cases.push(c);
                    }
                }
                if cases.is_empty() {
                    bail!("--cases: no case given");
                }
                a.cases = cases;
            }
            other => bail!("unknown argument {other:?}; see --help"),
        }
    }
    Ok(Some(a))
}

/// A subcommand's entry point: its arguments; whether every run succeeded.
type Subcommand = fn(&[String]) -> Result<bool>;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let sub: Option<Subcommand> = match argv.get(1).map(String::as_str) {
        Some("flows") => Some(flows::main),
        Some("elasticsearch") => Some(elasticsearch::main),
        Some("otlp") => Some(otlp::main),
        Some("ebpf") => Some(ebpf::main),
        Some("console") => Some(console::main),
        Some("transport") => Some(transport::main),
        Some("threads") => Some(threads::main),
        _ => None,
    };
    if let Some(sub) = sub {
        return match sub(argv.get(2..).unwrap_or_default()) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let args = match parse_args(argv.get(1..).unwrap_or_default()) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    match bench(&args, &argv) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// The run with the median time (the upper one of an even count).
fn median<T>(mut runs: Vec<T>, secs: impl Fn(&T) -> f64) -> Option<T> {
    runs.sort_by(|x, y| secs(x).total_cmp(&secs(y)));
    let mid = runs.len() / 2;
    runs.into_iter().nth(mid)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// "14.6% by wall time (18.0% by CPU time)".
fn describe(r: Option<Ratio>, fmt: impl Fn(f64) -> String) -> String {
    match r {
        None => "-".into(),
        Some(Ratio { wall, cpu: None }) => format!("{} by wall time", fmt(wall)),
        Some(Ratio {
            wall,
            cpu: Some(cpu),
        }) => format!("{} by wall time ({} by CPU time)", fmt(wall), fmt(cpu)),
    }
}

/// A warning when the baselines had their core less than 90% of their wall time.
fn busy_warning(baselines: &[Option<&Rate>]) -> Option<String> {
    let shares: Vec<f64> = baselines
        .iter()
        .flatten()
        .filter_map(|r| r.cpu_mib_s.map(|c| r.mib_s / c))
        .collect();
    if shares.is_empty() || shares.iter().all(|s| *s >= 0.9) {
        return None;
    }
    let list = shares
        .iter()
        .map(|s| format!("{:.0}%", s * 100.0))
        .collect::<Vec<_>>()
        .join(" and ");
    Some(format!(
        "the machine was busy: the baselines were on a CPU only {list} of their wall time. \
         Each side got a different, varying share of the core (and weir's several threads can \
         get more of it than one baseline thread), so the wall-time ratios are unreliable in \
         this run; the CPU-time ratios are steadier."
    ))
}

/// What a baseline measured: median MiB/s and lines/s.
struct Rate {
    mib_s: f64,
    lines_s: f64,
    /// MiB per CPU-second of the measuring thread.
    cpu_mib_s: Option<f64>,
}

/// A case against its baseline: by wall time and (when both CPU times are known) by CPU time.
#[derive(Clone, Copy)]
struct Ratio {
    wall: f64,
    cpu: Option<f64>,
}

fn run_baseline(
    name: &str,
    runs: usize,
    bytes: u64,
    lines: u64,
    f: impl Fn() -> Result<baseline::Measured>,
) -> Result<Rate> {
    let mut all = Vec::with_capacity(runs);
    for i in 1..=runs {
        let m = f()?;
        if m.lines != lines {
            bail!("{name}: counted {} lines, expected {lines}", m.lines);
        }
        eprintln!(
            "  {name} run {i}/{runs}: {:.3} s, {:.1} MiB/s{}",
            m.secs,
            mib(bytes) / m.secs,
            m.cpu_secs
                .map_or(String::new(), |c| format!(", CPU {c:.3} s"))
        );
        all.push(m);
    }
    let m = median(all, |m| m.secs).context("no run")?;
    Ok(Rate {
        mib_s: mib(bytes) / m.secs,
        lines_s: lines as f64 / m.secs,
        cpu_mib_s: m.cpu_secs.filter(|c| *c > 0.0).map(|c| mib(bytes) / c),
    })
}

/// The pipeline of each case, without data_dir and [api] (added by write_config, or by the
/// file cases' runner). The writing cases write below `out`; the file cases read `input` (a
/// file, or for files-100 a directory of `*.log` files).
fn case_config(case: Case, demo_count: u64, out: &Path, input: &Path) -> Option<String> {
    let stdin =
        |codec: &str| format!("[sources.in]\ntype = \"stdin\"\ndecoding.codec = \"{codec}\"\n\n");
    let sink = |input: &str| format!("[sinks.out]\ntype = \"blackhole\"\ninputs = [\"{input}\"]\n");
    Some(match case {
        Case::Bytes => stdin("bytes") + &sink("in"),
        Case::Json | Case::JsonApi => stdin("json") + &sink("in"),
        Case::Remap => {
            stdin("bytes")
                + r#"[transforms.r]
type = "remap"
inputs = ["in"]
source = '''
. = parse_json!(string!(.message))
.env = "prod"
.status_class = to_string(to_int!(.status) / 100) + "xx"
del(.user_agent)
'''

"# + &sink("r")
        }
        Case::Demo => {
            format!("[sources.in]\ntype = \"demo\"\nformat = \"json\"\ncount = {demo_count}\n\n")
                + &sink("in")
        }
        // The same 10-field events, written: columnar vs JSON lines. Both keep their files
        // open for the whole run (one Parquet file, one JSON-lines file).
        Case::Parquet => {
            stdin("json")
                + &format!(
                    "[sinks.out]\ntype = \"parquet\"\ninputs = [\"in\"]\npath = \"{}/\"\n\
                     compression = \"zstd\"\nbatch.max_events = 100000000\n\
                     batch.max_bytes = 100000000000\nbatch.timeout_secs = 86400\n",
                    out.display()
                )
        }
        Case::JsonFile => {
            stdin("json")
                + &format!(
                    "[sinks.out]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"{}/out.json\"\n\
                     encoding.codec = \"json\"\n",
                    out.display()
                )
        }
        Case::FileBytes => files::pipeline(&input.to_string_lossy(), "bytes"),
        Case::FileJson => files::pipeline(&input.to_string_lossy(), "json"),
        Case::FileJsonNoAck => files::pipeline(&input.to_string_lossy(), "json").replace(
            "read_from = \"beginning\"\n",
            "read_from = \"beginning\"\nacknowledgements = false\n",
        ),
        // Case 9 with the blackhole's buffer on disk (under the run's fresh data_dir), every
        // other buffer option at its default (fsync = "batch", max_size 16 MiB).
        Case::FileJsonDisk => {
            files::pipeline(&input.to_string_lossy(), "json") + "buffer.type = \"disk\"\n"
        }
        Case::FileRemap => files::source(&input.to_string_lossy(), "json") + EDIT + &sink("r"),
        Case::Scale => {
            files::source(&format!("{}/*.jsonl", input.display()), "json") + EDIT + &sink("r")
        }
        Case::FileMultiline => {
            files::source(&input.to_string_lossy(), "bytes")
                + traces::MULTILINE
                + "\n"
                + &sink("in")
        }
        Case::Files100 => files::pipeline(&format!("{}/*.log", input.display()), "bytes"),
        Case::Idle | Case::Perf => return None,
    })
}

/// Case 11's remap (and the scale case's): add, rename, delete.
const EDIT: &str = r#"[transforms.r]
type = "remap"
inputs = ["in"]
source = '''
.env = "prod"
.service_name = del(.service)
del(.user_agent)
'''

"#;

/// What a writing case wrote, from its median run.
#[derive(Clone, Copy)]
struct Written {
    /// Events per CPU-second of weir (user + system), i.e. per core fully used.
    events_per_cpu_s: Option<f64>,
    bytes_per_event: f64,
}

/// Total size of the files below `dir`.
fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            dir_bytes(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}

/// Runs one case `runs` times; the row of its median run (or of its failure).
fn run_case(
    runner: &Runner,
    case: Case,
    args: &Args,
    data: Option<&data::Dataset>,
    a: Option<&Rate>,
    b: Option<&Rate>,
) -> (
    Row,
    Option<Ratio>,
    Option<Written>,
    Option<runner::ProcIo>,
    Option<String>,
) {
    let out_dir = runner.work.join(format!("{}-out", case.name()));
    let mut written_bytes = Vec::new();
    let mut row = Row {
        case: case.label().into(),
        ..Row::default()
    };
    let result = (|| -> Result<RunOutcome> {
        let input = data.map_or_else(PathBuf::new, |d| d.path.clone());
        let body = case_config(case, args.demo_count, &out_dir, &input)
            .context("case without a pipeline")?;
        let file_case = matches!(
            case,
            Case::FileBytes
                | Case::FileJson
                | Case::FileJsonNoAck
                | Case::FileJsonDisk
                | Case::FileRemap
                | Case::FileMultiline
        );
        let config = runner::write_config(&runner.work, case.name(), &body)?;
        if case == Case::JsonApi {
            runner::enable_api(&config)?;
        }
        let (stdin, expected, bytes) = match (case, data) {
            (Case::Demo, _) => (None, args.demo_count, None),
            (_, Some(d)) => (Some(d.path.as_path()), d.lines, Some(d.bytes)),
            (_, None) => bail!("no input generated"),
        };
        let mut all = Vec::with_capacity(args.runs);
        let mut peak = None::<u64>;
        for i in 1..=args.runs {
            let writes = matches!(case, Case::Parquet | Case::JsonFile);
            if writes {
                let _ = std::fs::remove_dir_all(&out_dir);
                std::fs::create_dir_all(&out_dir)?;
            }
            let o = if file_case {
                // The file source does not end at end of file: timed until every line is
                // counted, then stopped (files.rs).
                files::run_one_file(runner, case.name(), &body, expected)?
            } else {
                runner.run(case.name(), &config, stdin)?
            };
            if writes {
                let n = dir_bytes(&out_dir)?;
                eprintln!(
                    "  {} wrote {} bytes, {:.1} bytes/event",
                    case.name(),
                    report::thousands(n),
                    n as f64 / expected as f64
                );
                written_bytes.push(n);
                let _ = std::fs::remove_dir_all(&out_dir);
            }
            match o.sent {
                Some(n) if n != expected => bail!(
                    "the sink got {n} events, expected {expected} (errors: {})",
                    if o.errors.is_empty() { "none".into() } else { o.errors.join("; ") }
                ),
                Some(_) => {}
                None => eprintln!("  warning: no summary for sink `out` in weir's stderr; event count not checked"),
            }
            if !o.errors.is_empty() {
                eprintln!(
                    "  warning: components reported errors: {}",
                    o.errors.join("; ")
                );
            }
            let mut line = format!(
                "  {} run {i}/{}: {:.3} s, {} events/s",
                case.name(),
                args.runs,
                o.secs,
                report::thousands((expected as f64 / o.secs) as u64)
            );
            if let Some(b) = bytes {
                line += &format!(", {:.1} MiB/s", mib(b) / o.secs);
            }
            if let Some(r) = o.peak_rss_kib {
                line += &format!(", peak RSS {:.1} MiB", r as f64 / 1024.0);
            }
            if let Some(c) = o.cpu_secs {
                line += &format!(", CPU {:.2} s", c);
            }
            if let Some(io) = o.io {
                line += &format!(
                    ", write_bytes {:.1} MiB (wchar {:.1} MiB)",
                    mib(io.write_bytes),
                    mib(io.wchar)
                );
            }
            eprintln!("{line}");
            peak = match (peak, o.peak_rss_kib) {
                (Some(p), Some(r)) => Some(p.max(r)),
                (p, r) => p.or(r),
            };
            all.push(o);
        }
        let mut m = median(all, |o| o.secs).context("no run")?;
        written_bytes.sort_unstable();
        m.peak_rss_kib = peak;
        Ok(m)
    })();
    match result {
        Ok(o) => {
            let mut ratio = None;
            let mut written = None;
            match (case, data) {
                (Case::Demo, _) | (_, None) => {
                    row.events_s = Some(args.demo_count as f64 / o.secs);
                }
                (_, Some(d)) => {
                    row.events_s = Some(d.lines as f64 / o.secs);
                    let mib_s = mib(d.bytes) / o.secs;
                    row.mib_s = Some(mib_s);
                    let cpu_mib_s = o.cpu_secs.filter(|c| *c > 0.0).map(|c| mib(d.bytes) / c);
                    row.cpu_mib_s = cpu_mib_s;
                    let (base, fmt): (Option<&Rate>, fn(f64) -> String) =
                        if matches!(case, Case::Bytes | Case::FileBytes) {
                            (a, |r| format!("{:.1}% of (a)", 100.0 * r))
                        } else {
                            (b, |r| format!("{r:.2}x (b)"))
                        };
                    ratio = base.map(|x| Ratio {
                        wall: mib_s / x.mib_s,
                        cpu: cpu_mib_s.zip(x.cpu_mib_s).map(|(w, x)| w / x),
                    });
                    row.vs = ratio.map(|r| fmt(r.wall));
                    row.cpu_vs = ratio.and_then(|r| r.cpu).map(fmt);
                }
            }
            row.rss_mib = o.peak_rss_kib.map(|k| k as f64 / 1024.0);
            row.cpu_pct = o.cpu_secs.map(|c| 100.0 * c / o.secs);
            row.note = format!("median of {}: {:.2} s", args.runs, o.secs);
            if matches!(
                case,
                Case::FileBytes
                    | Case::FileJson
                    | Case::FileJsonNoAck
                    | Case::FileJsonDisk
                    | Case::FileRemap
                    | Case::FileMultiline
            ) {
                row.note += " (spawn to every line counted; RSS VmHWM, CPU from /proc)";
            }
            if let (Some(n), Some(events)) = (
                written_bytes.get(written_bytes.len() / 2),
                row.events_s.map(|e| e * o.secs),
            ) {
                let w = Written {
                    events_per_cpu_s: o.cpu_secs.filter(|c| *c > 0.0).map(|c| events / c),
                    bytes_per_event: *n as f64 / events,
                };
                row.note += &format!("; {:.1} bytes/event", w.bytes_per_event);
                if let Some(e) = w.events_per_cpu_s {
                    row.note += &format!("; {} events/CPU-s", report::thousands(e as u64));
                }
                written = Some(w);
            }
            if let (Case::FileJsonDisk, Some(io), Some(d)) = (case, o.io, data) {
                row.note += &format!(
                    "; {:.2} bytes written to disk per input byte (write_bytes; wchar {:.2})",
                    io.write_bytes as f64 / d.bytes as f64,
                    io.wchar as f64 / d.bytes as f64
                );
            }
            (row, ratio, written, o.io, None)
        }
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("  {} FAILED: {msg}", case.name());
            row.note = format!("FAILED: {}", msg.lines().next().unwrap_or(""));
            (row, None, None, None, Some(msg))
        }
    }
}

/// Returns whether every case ran; errors only for problems of the bench itself.
fn bench(args: &Args, argv: &[String]) -> Result<bool> {
    if !args.weir.is_file() {
        bail!(
            "the weir binary is not at {}: build it with `cargo build --release -p weir` (or pass --weir PATH)",
            args.weir.display()
        );
    }
    let weir = args
        .weir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.weir.display()))?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_before = load_average();
    let scratch = ScratchDir::create(&args.data_dir)?;
    let taskset = args.taskset && runner::which("taskset").is_some();
    let gnu_time = runner::which("/usr/bin/time").filter(|t| runner::gnu_time_works(t, &scratch.0));
    let runner = Runner {
        weir: weir.clone(),
        taskset,
        gnu_time: gnu_time.clone(),
        work: scratch.0.clone(),
        timeout: args.timeout,
    };
    eprintln!("weir-bench: weir = {}", weir.display());
    eprintln!(
        "  {cores} cores, load average {load_before}; weir pinned to core 0: {}; peak RSS from: {}",
        if taskset { "yes (taskset -c 0)" } else { "no" },
        if gnu_time.is_some() {
            "GNU time (%M)"
        } else {
            "VmHWM polled every 10 ms"
        }
    );
    if args.taskset && !taskset {
        eprintln!("  warning: taskset not found; weir runs unpinned");
    }

    let needs_data = args.cases.iter().any(|c| {
        matches!(
            c,
            Case::Bytes
                | Case::Json
                | Case::JsonApi
                | Case::Remap
                | Case::Parquet
                | Case::JsonFile
                | Case::FileBytes
                | Case::FileJson
                | Case::FileJsonNoAck
                | Case::FileJsonDisk
                | Case::FileRemap
        )
    });
    let mut rows = Vec::new();
    let (mut a, mut b) = (None, None);
    let mut dataset = None;
    if needs_data {
        let started = Instant::now();
        let data = data::ensure_dataset(&args.data_dir, args.size_mib)?;
        eprintln!(
            "input: {} ({} MiB, {} lines of {} bytes, {} in {:.1} s)",
            data.path.display(),
            args.size_mib,
            report::thousands(data.lines),
            data::LINE_LEN,
            if data.reused { "reused" } else { "generated" },
            started.elapsed().as_secs_f64()
        );
        // The baselines run on this (main) thread: pin it to weir's core for them, so both
        // sides get the same core (and share it with whatever else runs there).
        let restore = if taskset {
            runner::own_affinity()
        } else {
            None
        };
        if let Some(r) = &restore {
            if r != "0" {
                runner::set_own_affinity("0")?;
            }
        }
        // One unmeasured pass, so a reused file is in the page cache for every measurement.
        baseline::memchr_count(&data.path).context("warming the page cache")?;
        eprintln!(
            "baselines (in process, single thread, same file{}):",
            if restore.is_some() {
                ", pinned to core 0"
            } else {
                ""
            }
        );
        let ra = run_baseline(
            "(a) memchr newline count",
            args.runs,
            data.bytes,
            data.lines,
            || baseline::memchr_count(&data.path),
        )?;
        let rb = run_baseline(
            "(b) serde_json::Value per line",
            args.runs,
            data.bytes,
            data.lines,
            || baseline::serde_parse(&data.path),
        )?;
        for (label, r) in [
            ("baseline (a): memchr newline count", &ra),
            ("baseline (b): serde_json::Value parse", &rb),
        ] {
            rows.push(Row {
                case: label.into(),
                events_s: Some(r.lines_s),
                mib_s: Some(r.mib_s),
                cpu_mib_s: r.cpu_mib_s,
                cpu_pct: r.cpu_mib_s.map(|c| 100.0 * r.mib_s / c),
                note: format!("in process, median of {}", args.runs),
                ..Row::default()
            });
        }
        if let Some(r) = &restore {
            if r != "0" {
                runner::set_own_affinity(r)?;
            }
        }
        a = Some(ra);
        b = Some(rb);
        dataset = Some(data);
    }

    let mut failures = Vec::new();
    let mut bytes_ratio = None;
    let mut json_ratio = None;
    let mut json_api_ratio: Option<Ratio> = None;
    // Parse and edit: the remap cases' ratios and peak RSS.
    let mut remap_rows: Vec<(Case, Option<Ratio>, Option<f64>)> = Vec::new();
    let (mut file_bytes_ratio, mut file_json_ratio) = (None, None);
    let mut file_json_noack_ratio: Option<Ratio> = None;
    // The disk buffer case: its ratio to (b) and weir's write counters (median run).
    let mut file_json_disk: (Option<Ratio>, Option<runner::ProcIo>) = (None, None);
    let (mut parquet, mut jsonfile) = (None, None);
    for case in [
        Case::Bytes,
        Case::Json,
        Case::JsonApi,
        Case::Remap,
        Case::Demo,
        Case::Parquet,
        Case::JsonFile,
        Case::FileBytes,
        Case::FileJson,
        Case::FileJsonNoAck,
        Case::FileJsonDisk,
        Case::FileRemap,
    ] {
        if !args.cases.contains(&case) {
            continue;
        }
        eprintln!("case {}:", case.label());
        let (row, r, w, io, err) = run_case(
            &runner,
            case,
            args,
            dataset.as_ref(),
            a.as_ref(),
            b.as_ref(),
        );
        if matches!(case, Case::Remap | Case::FileRemap) {
            remap_rows.push((case, r, row.rss_mib));
        }
        rows.push(row);
        if let Some(e) = err {
            failures.push(format!("{}: {e}", case.label()));
        }
        match case {
            Case::Bytes => bytes_ratio = r,
            Case::Json => json_ratio = r,
            Case::JsonApi => json_api_ratio = r,
            Case::FileBytes => file_bytes_ratio = r,
            Case::FileJson => file_json_ratio = r,
            Case::FileJsonNoAck => file_json_noack_ratio = r,
            Case::FileJsonDisk => file_json_disk = (r, io),
            Case::Parquet => parquet = w,
            Case::JsonFile => jsonfile = w,
            _ => {}
        }
    }

    // Java traces joined by multiline: its own input, no baseline (the goal is absolute).
    let mut multiline_mb_cpu_s: Option<f64> = None;
    if args.cases.contains(&Case::FileMultiline) {
        let case = Case::FileMultiline;
        eprintln!("case {}:", case.label());
        let started = Instant::now();
        match traces::ensure_traces(&args.data_dir, args.size_mib) {
            Ok(t) => {
                eprintln!(
                    "  input: {} ({:.1} MB, {} traces of 1 to {} lines, {} in {:.1} s)",
                    t.path.display(),
                    t.bytes as f64 / 1e6,
                    report::thousands(t.lines),
                    traces::MAX_CONTINUATIONS + 1,
                    if t.reused { "reused" } else { "generated" },
                    started.elapsed().as_secs_f64()
                );
                if let Err(e) = baseline::memchr_count(&t.path) {
                    eprintln!("  warning: warming the page cache failed: {e:#}");
                }
                let (row, _, _, _, err) = run_case(&runner, case, args, Some(&t), None, None);
                multiline_mb_cpu_s = row.cpu_mib_s.map(|m| m * 1024.0 * 1024.0 / 1e6);
                rows.push(row);
                if let Some(e) = err {
                    failures.push(format!("{}: {e}", case.label()));
                }
            }
            Err(e) => failures.push(format!("{}: {e:#}", case.label())),
        }
    }

    if args.cases.contains(&Case::Scale) {
        eprintln!("case {}:", Case::Scale.label());
        if let Err(e) = scale_case(&runner, args, &mut rows) {
            failures.push(format!("{}: {e:#}", Case::Scale.label()));
        }
    }

    let mut idle = Vec::new();
    if args.cases.contains(&Case::Idle) {
        eprintln!("idle RSS (stdin source, stdin an open pipe never written, read after 1 s):");
        let res = runner::write_config(
            &runner.work,
            "idle",
            &case_config(Case::Bytes, 0, &runner.work, &runner.work).unwrap_or_default(),
        )
        .and_then(|config| {
            [Some(1), None]
                .into_iter()
                .map(|t| runner.idle_rss(&config, t, Duration::from_secs(1)))
                .collect::<Result<Vec<_>>>()
        });
        match res {
            Ok(v) => {
                for o in v {
                    let label = match o.threads {
                        Some(t) => format!("idle, --threads {t}"),
                        None => format!("idle, default threads ({cores} cores)"),
                    };
                    eprintln!("  {label}: VmRSS {:.1} MiB", o.rss_kib as f64 / 1024.0);
                    rows.push(Row {
                        case: label,
                        rss_mib: Some(o.rss_kib as f64 / 1024.0),
                        note: "VmRSS after 1 s idle (not peak)".into(),
                        ..Row::default()
                    });
                    idle.push(o);
                }
            }
            Err(e) => {
                let msg = format!("{e:#}");
                eprintln!("  idle FAILED: {msg}");
                rows.push(Row {
                    case: "idle".into(),
                    note: format!("FAILED: {}", msg.lines().next().unwrap_or("")),
                    ..Row::default()
                });
                failures.push(format!("idle: {msg}"));
            }
        }
    }

    let mut goals = Vec::new();
    let mut files_goals = Vec::new();
    if args.cases.contains(&Case::Files100) {
        eprintln!("case {}:", Case::Files100.label());
        files_goals = files_100_case(&runner, args, &mut rows, &mut failures);
    }
    if args.cases.contains(&Case::Perf) {
        eprintln!("case {}:", Case::Perf.label());
        match perf_case(&runner, args, &mut rows) {
            Ok(goal) => goals.push(goal),
            Err(e) => {
                let msg = format!("{e:#}");
                eprintln!("  perf FAILED: {msg}");
                rows.push(Row {
                    case: Case::Perf.label().into(),
                    note: format!("FAILED: {}", msg.lines().next().unwrap_or("")),
                    ..Row::default()
                });
                failures.push(format!("perf: {msg}"));
            }
        }
    }
    if args.cases.contains(&Case::Bytes) {
        goals.push(Goal {
            name: format!(
                "bytes codec >= {:.0}% of baseline (a)",
                GOAL_BYTES_VS_A * 100.0
            ),
            measured: describe(bytes_ratio, |r| format!("{:.1}%", r * 100.0)),
            met: bytes_ratio.map(|r| r.wall >= GOAL_BYTES_VS_A),
        });
    }
    if args.cases.contains(&Case::Json) {
        goals.push(Goal {
            name: format!("json codec >= {GOAL_JSON_VS_B}x baseline (b)"),
            measured: describe(json_ratio, |r| format!("{r:.2}x")),
            met: json_ratio.map(|r| r.wall >= GOAL_JSON_VS_B),
        });
    }
    if args.cases.contains(&Case::JsonApi) {
        // Both against the same baseline (b): their quotient is API on / off.
        let on_vs_off = json_api_ratio.zip(json_ratio).map(|(on, off)| Ratio {
            wall: on.wall / off.wall,
            cpu: on.cpu.zip(off.cpu).map(|(on, off)| on / off),
        });
        goals.push(Goal {
            name: format!(
                "stdin json with the API and console on, nobody looking, >= {:.0}% of the API off (case 2, same run)",
                GOAL_API_VS_NONE * 100.0
            ),
            measured: if args.cases.contains(&Case::Json) {
                describe(on_vs_off, |r| format!("{:.1}%", r * 100.0))
            } else {
                "- (needs case json in the same run)".into()
            },
            met: on_vs_off.map(|r| r.wall >= GOAL_API_VS_NONE),
        });
    }
    if args.cases.contains(&Case::FileBytes) {
        goals.push(Goal {
            name: format!(
                "file source, bytes codec >= {:.0}% of baseline (a)",
                GOAL_BYTES_VS_A * 100.0
            ),
            measured: describe(file_bytes_ratio, |r| format!("{:.1}%", r * 100.0)),
            met: file_bytes_ratio.map(|r| r.wall >= GOAL_BYTES_VS_A),
        });
    }
    if args.cases.contains(&Case::FileJson) {
        goals.push(Goal {
            name: format!("file source, json codec >= {GOAL_JSON_VS_B}x baseline (b)"),
            measured: describe(file_json_ratio, |r| format!("{r:.2}x")),
            met: file_json_ratio.map(|r| r.wall >= GOAL_JSON_VS_B),
        });
    }
    if args.cases.contains(&Case::FileJson) && args.cases.contains(&Case::FileJsonNoAck) {
        // Both against the same baseline (b): their quotient is acknowledgements on / off.
        let on_vs_off = file_json_ratio
            .zip(file_json_noack_ratio)
            .map(|(on, off)| on.wall / off.wall);
        goals.push(Goal {
            name: format!(
                "file json with acknowledgements (the default) >= {:.0}% of acknowledgements = false",
                GOAL_ACK_VS_NOACK * 100.0
            ),
            measured: on_vs_off.map_or("-".into(), |r| format!("{:.1}%", r * 100.0)),
            met: on_vs_off.map(|r| r >= GOAL_ACK_VS_NOACK),
        });
    }
    if args.cases.contains(&Case::FileMultiline) {
        goals.push(Goal {
            name: format!(
                "Java traces joined by multiline (continue_through), one core: >= {GOAL_MULTILINE_MB_PER_CPU_S:.0} MB per CPU-second"
            ),
            measured: multiline_mb_cpu_s.map_or("-".into(), |m| format!("{m:.0} MB/CPU-s")),
            met: multiline_mb_cpu_s.map(|m| m >= GOAL_MULTILINE_MB_PER_CPU_S),
        });
    }
    if args.cases.contains(&Case::FileJsonDisk) {
        goals.push(disk_buffer_goal(
            args.cases
                .contains(&Case::FileJson)
                .then_some(file_json_ratio)
                .flatten(),
            file_json_disk,
            dataset.as_ref().map(|d| d.bytes),
        ));
    }
    for (case, ratio, rss) in &remap_rows {
        goals.push(Goal {
            name: format!(
                "{}: >= {GOAL_REMAP_VS_B}x baseline (b), peak RSS < {GOAL_REMAP_RSS_MIB:.0} MiB",
                case.label()
            ),
            measured: format!(
                "{}, {}",
                describe(*ratio, |r| format!("{r:.2}x")),
                rss.map_or("-".into(), |r| format!("{r:.1} MiB"))
            ),
            met: ratio
                .zip(*rss)
                .map(|(r, m)| r.wall >= GOAL_REMAP_VS_B && m < GOAL_REMAP_RSS_MIB),
        });
    }
    goals.append(&mut files_goals);
    if args.cases.contains(&Case::Parquet) && args.cases.contains(&Case::JsonFile) {
        let speed = parquet
            .zip(jsonfile)
            .and_then(|(p, j)| p.events_per_cpu_s.zip(j.events_per_cpu_s));
        goals.push(Goal {
            name: "parquet sink at least as fast as the JSON-lines file sink (events per CPU-s)"
                .into(),
            measured: speed.map_or("-".into(), |(p, j)| {
                format!(
                    "{} vs {} events/CPU-s: {:.2}x",
                    report::thousands(p as u64),
                    report::thousands(j as u64),
                    p / j
                )
            }),
            met: speed.map(|(p, j)| p >= j),
        });
        let size = parquet
            .zip(jsonfile)
            .map(|(p, j)| (p.bytes_per_event, j.bytes_per_event));
        goals.push(Goal {
            name: format!("parquet files >= {GOAL_PARQUET_SMALLER:.0}x smaller than JSON lines"),
            measured: size.map_or("-".into(), |(p, j)| {
                format!("{p:.1} vs {j:.1} bytes/event: {:.1}x smaller", j / p)
            }),
            met: size.map(|(p, j)| j / p >= GOAL_PARQUET_SMALLER),
        });
    }
    if args.cases.contains(&Case::Idle) {
        let worst = idle.iter().map(|o| o.rss_kib).max();
        goals.push(Goal {
            name: format!("idle RSS < {GOAL_IDLE_RSS_MIB:.0} MiB"),
            measured: if idle.is_empty() {
                "-".into()
            } else {
                idle.iter()
                    .map(|o| {
                        format!(
                            "{:.1} MiB ({})",
                            o.rss_kib as f64 / 1024.0,
                            o.threads
                                .map_or("default threads".into(), |t| format!("--threads {t}"))
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            met: worst.map(|w| (w as f64 / 1024.0) < GOAL_IDLE_RSS_MIB),
        });
    }

    // On a shared core, one baseline thread gets a smaller share than weir's several
    // threads, which flatters weir's wall-time ratios: say so when it happened.
    let busy = busy_warning(&[a.as_ref(), b.as_ref()]);

    let command = std::iter::once("target/release/weir-bench".to_string())
        .chain(argv.iter().skip(1).cloned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut preamble = vec![format!("command: `{command}`")];
    if let Some(d) = &dataset {
        preamble.push(format!(
            "input: {} MiB of generated JSON access-log lines ({} lines of {} bytes, 10 fields)",
            args.size_mib,
            report::thousands(d.lines),
            data::LINE_LEN
        ));
    }
    preamble.extend([
        format!(
            "machine: {cores} cores; load average before: {load_before}, after: {}",
            load_average()
        ),
        format!(
            "weir: `run --threads 1`{}, wall time spawn to exit, median of {} runs; demo count {}",
            if taskset {
                " under `taskset -c 0` (baselines pinned to core 0 too)"
            } else {
                ""
            },
            args.runs,
            report::thousands(args.demo_count)
        ),
        format!(
            "peak RSS: {}; CPU = CPU time / wall time (weir: user + system of all its threads; baselines: their thread); MiB/CPU-s = MiB per CPU-second, less disturbed by a busy machine than MiB/s; goal verdicts use wall time",
            if gnu_time.is_some() {
                "GNU time %M (max over runs)"
            } else {
                "VmHWM polled every 10 ms (max over runs)"
            }
        ),
    ]);
    if args.cases.iter().any(|c| {
        matches!(
            c,
            Case::FileBytes
                | Case::FileJson
                | Case::FileJsonNoAck
                | Case::FileJsonDisk
                | Case::FileRemap
                | Case::FileMultiline
                | Case::Files100
        )
    }) {
        preamble.push(
            "file cases: the file source does not end at end of file, so they are timed from spawn (files-100: from the first write) until the blackhole's count on the API's /metrics (polled every 10 ms; during the files-100 writes, not at all) reaches every line, then weir is stopped with SIGTERM and must exit 0 with the same count in its summary; their CPU time is from /proc/PID/stat and their peak RSS is VmHWM, both read at that moment".into(),
        );
    }
    if let Some(w) = &busy {
        preamble.push(format!("**warning**: {w}"));
    }

    println!();
    print!("{}", report::text_table(&rows));
    println!();
    println!("goals:");
    print!("{}", report::text_goals(&goals));
    if let Some(w) = &busy {
        println!();
        println!("warning: {w}");
    }
    if !failures.is_empty() {
        println!();
        println!("failures:");
        for f in &failures {
            println!("  {f}");
        }
    }
    println!();
    println!("markdown (for bench/RESULTS.md):");
    println!();
    print!("{}", report::markdown(&rows, &goals, &preamble));
    Ok(failures.is_empty())
}

/// Issue 26's goal for `file-json-disk`: its speed against case 9 (the memory buffer) of the
/// same run (both against baseline (b), so the quotient of their ratios), and what it wrote
/// to disk per input byte (every input byte is delivered: the case checks every line).
fn disk_buffer_goal(
    memory: Option<Ratio>,
    (disk, io): (Option<Ratio>, Option<runner::ProcIo>),
    input_bytes: Option<u64>,
) -> Goal {
    let vs = memory.zip(disk).map(|(m, d)| Ratio {
        wall: d.wall / m.wall,
        cpu: m.cpu.zip(d.cpu).map(|(m, d)| d / m),
    });
    let per_byte = io
        .zip(input_bytes)
        .filter(|(_, n)| *n > 0)
        .map(|(io, n)| (io.write_bytes as f64 / n as f64, io.wchar as f64 / n as f64));
    let bytes = per_byte.map_or("-".into(), |(w, c)| {
        format!("{w:.2} bytes written to disk per byte delivered (/proc/PID/io write_bytes; {c:.2} by wchar)")
    });
    Goal {
        name: format!(
            "file json, disk buffer (fsync = \"batch\") >= {:.0}% of the memory buffer (case 9, same run)",
            GOAL_DISK_VS_MEMORY * 100.0
        ),
        measured: if memory.is_none() {
            format!("- (needs case file-json in the same run); {bytes}")
        } else {
            format!("{}; {bytes}", describe(vs, |r| format!("{:.1}%", r * 100.0)))
        },
        met: vs.map(|r| r.wall >= GOAL_DISK_VS_MEMORY),
    }
}

/// `files-100` (one run: it lasts `--files-secs`): its row, and its two goals.
fn files_100_case(
    runner: &Runner,
    args: &Args,
    rows: &mut Vec<Row>,
    failures: &mut Vec<String>,
) -> Vec<Goal> {
    let rate = args.files_rate_mib as f64 * 1024.0 * 1024.0;
    let label = Case::Files100.label();
    let res = files::tail_many(runner, rate, Duration::from_secs(args.files_secs));
    let (cpu_pct, rss_mib) = match res {
        Ok(o) => {
            let cpu_pct = o.cpu_secs.map(|c| 100.0 * c / o.secs);
            let rss_mib = o.peak_rss_kib.map(|k| k as f64 / 1024.0);
            eprintln!(
                "  wrote {} lines ({:.1} MiB) into {} files in {} s; all counted {:.2} s after the last write; weir CPU {}, peak RSS {}",
                report::thousands(o.lines),
                mib(o.bytes),
                files::FILES,
                args.files_secs,
                o.lag_secs,
                cpu_pct.map_or("-".into(), |c| format!("{c:.2}% of one core")),
                rss_mib.map_or("-".into(), |r| format!("{r:.1} MiB")),
            );
            if !o.errors.is_empty() {
                eprintln!(
                    "  warning: components reported errors: {}",
                    o.errors.join("; ")
                );
            }
            rows.push(Row {
                case: label.into(),
                events_s: Some(o.lines as f64 / o.secs),
                mib_s: Some(mib(o.bytes) / o.secs),
                cpu_pct,
                rss_mib,
                note: format!(
                    "{} files, {} MiB/s for {} s; every line counted ({} s after the last write)",
                    files::FILES,
                    args.files_rate_mib,
                    args.files_secs,
                    format_args!("{:.2}", o.lag_secs)
                ),
                ..Row::default()
            });
            (cpu_pct, rss_mib)
        }
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("  files-100 FAILED: {msg}");
            rows.push(Row {
                case: label.into(),
                note: format!("FAILED: {}", msg.lines().next().unwrap_or("")),
                ..Row::default()
            });
            failures.push(format!("{label}: {msg}"));
            (None, None)
        }
    };
    vec![
        Goal {
            name: format!(
                "100 files at {} MiB/s: weir under {GOAL_FILES_CPU_PCT:.0}% of one core",
                args.files_rate_mib
            ),
            measured: cpu_pct.map_or("-".into(), |c| format!("{c:.2}%")),
            met: cpu_pct.map(|c| c < GOAL_FILES_CPU_PCT),
        },
        Goal {
            name: format!(
                "100 files at {} MiB/s: weir's peak RSS under {GOAL_FILES_RSS_MIB:.0} MiB",
                args.files_rate_mib
            ),
            measured: rss_mib.map_or("-".into(), |r| format!("{r:.1} MiB")),
            met: rss_mib.map(|r| r < GOAL_FILES_RSS_MIB),
        },
    ]
}

/// The scale case (scale.rs): one row per shape, each the median of `--runs`; the ratio
/// column is the MiB/s of the shape over the first shape's (one file of 256-byte lines).
fn scale_case(runner: &Runner, args: &Args, rows: &mut Vec<Row>) -> Result<()> {
    let mut first: Option<(f64, Option<f64>)> = None;
    for (files, len) in scale::SHAPES {
        let label = format!(
            "13. file json -> remap -> blackhole: {files} file{} of {} lines",
            if files == 1 { "" } else { "s" },
            if len % 1024 == 0 {
                format!("{} KiB", len / 1024)
            } else {
                format!("{len}-byte")
            }
        );
        let d = scale::ensure_input(&args.data_dir, args.size_mib, files, len)?;
        eprintln!(
            "  {label}: {} ({} lines, {})",
            d.path.display(),
            report::thousands(d.lines),
            if d.reused { "reused" } else { "generated" }
        );
        scale::warm(&d.path)?;
        let body = case_config(Case::Scale, 0, Path::new(""), &d.path).context("no config")?;
        let o = median_run("scale", args.runs, d.bytes, || {
            files::run_one_file(runner, "scale", &body, d.lines)
        })?;
        let mib_s = mib(d.bytes) / o.secs;
        let cpu_mib_s = o.cpu_secs.filter(|c| *c > 0.0).map(|c| mib(d.bytes) / c);
        let base = *first.get_or_insert((mib_s, cpu_mib_s));
        rows.push(Row {
            case: label,
            events_s: Some(d.lines as f64 / o.secs),
            mib_s: Some(mib_s),
            vs: Some(format!("{:.2}x 1 file", mib_s / base.0)),
            cpu_mib_s,
            cpu_vs: cpu_mib_s
                .zip(base.1)
                .map(|(c, b)| format!("{:.2}x 1 file", c / b)),
            rss_mib: o.peak_rss_kib.map(|k| k as f64 / 1024.0),
            cpu_pct: o.cpu_secs.map(|c| 100.0 * c / o.secs),
            note: format!(
                "median of {}: {:.2} s (spawn to every line counted; RSS VmHWM, CPU from /proc)",
                args.runs, o.secs
            ),
        });
    }
    Ok(())
}

/// The median of `runs` runs of `f`, each printed.
fn median_run(
    name: &str,
    runs: usize,
    bytes: u64,
    mut f: impl FnMut() -> Result<RunOutcome>,
) -> Result<RunOutcome> {
    let mut all = Vec::with_capacity(runs);
    let mut peak = None::<u64>;
    for i in 1..=runs {
        let o = f()?;
        eprintln!(
            "  {name} run {i}/{runs}: {:.3} s, {:.1} MiB/s{}",
            o.secs,
            mib(bytes) / o.secs,
            o.cpu_secs
                .map_or(String::new(), |c| format!(", CPU {c:.2} s"))
        );
        peak = peak.max(o.peak_rss_kib);
        all.push(o);
    }
    let mut m = median(all, |o| o.secs).context("no run")?;
    m.peak_rss_kib = peak;
    Ok(m)
}

/// The perf case (see perf.rs): weir against inferno-collapse-perf, same capture, same run.
fn perf_case(runner: &Runner, args: &Args, rows: &mut Vec<Row>) -> Result<Goal> {
    let name = "weir folds at least as fast as inferno-collapse-perf, same output".to_string();
    let shared = perf::shared_captures(&workspace_root()).context(
        "the shared perf captures are not found (set WEIR_SHARED, or put shared/testdata/perf next to the workspace)",
    )?;
    let started = Instant::now();
    let cap = perf::ensure_capture(&shared, &args.data_dir, args.perf_size_mib)?;
    eprintln!(
        "  input: {} ({:.0} MiB: the captures of {} repeated {} times, made in {:.1} s)",
        cap.path.display(),
        mib(cap.bytes),
        shared.display(),
        cap.copies,
        started.elapsed().as_secs_f64()
    );
    baseline::memchr_count(&cap.path).context("warming the page cache")?;
    let weir_out = runner.work.join("perf-weir.folded");
    let config = runner::write_config(&runner.work, "perf", &perf::config(&cap.path, &weir_out))?;
    let w = median_run("weir", args.runs, cap.bytes, || {
        let _ = std::fs::remove_file(&weir_out);
        runner.run("perf", &config, None)
    })?;
    let row = |label: &str, o: &RunOutcome, note: String| Row {
        case: label.into(),
        mib_s: Some(mib(cap.bytes) / o.secs),
        cpu_mib_s: o.cpu_secs.filter(|c| *c > 0.0).map(|c| mib(cap.bytes) / c),
        cpu_pct: o.cpu_secs.map(|c| 100.0 * c / o.secs),
        rss_mib: o.peak_rss_kib.map(|k| k as f64 / 1024.0),
        note,
        ..Row::default()
    };
    let Some(inferno) = runner::which("inferno-collapse-perf") else {
        eprintln!("  inferno-collapse-perf is not on PATH: no comparison (cargo install inferno)");
        rows.push(row(
            Case::Perf.label(),
            &w,
            "inferno-collapse-perf not on PATH".into(),
        ));
        return Ok(Goal {
            name,
            measured: "-".into(),
            met: None,
        });
    };
    let inferno_out = runner.work.join("perf-inferno.folded");
    let i = median_run("inferno-collapse-perf", args.runs, cap.bytes, || {
        perf::run_inferno(runner, &inferno, &cap.path, &inferno_out)
    })?;
    let diff = perf::compare(&weir_out, &inferno_out)?;
    let same = diff.is_none();
    if let Some(d) = &diff {
        eprintln!("  outputs differ: {d}");
    }
    let ratio = Ratio {
        wall: i.secs / w.secs,
        cpu: w.cpu_secs.zip(i.cpu_secs).map(|(wc, ic)| ic / wc),
    };
    rows.push(row(
        "baseline: inferno-collapse-perf",
        &i,
        format!("same capture, median of {}", args.runs),
    ));
    let mut r = row(
        Case::Perf.label(),
        &w,
        if same {
            "output identical to inferno's".into()
        } else {
            "output DIFFERS from inferno's".into()
        },
    );
    r.vs = Some(format!("{:.2}x inferno", ratio.wall));
    r.cpu_vs = ratio.cpu.map(|c| format!("{c:.2}x inferno"));
    rows.push(r);
    Ok(Goal {
        name,
        measured: format!(
            "{}; output {}",
            describe(Some(ratio), |r| format!("{r:.2}x")),
            if same { "identical" } else { "differs" }
        ),
        met: Some(ratio.wall >= 1.0 && same),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Result<Option<Args>> {
        parse_args(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_arguments() {
        let a = args(&[
            "--size-mib",
            "256",
            "--cases=bytes,idle",
            "--runs",
            "1",
            "--no-taskset",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.size_mib, 256);
        assert_eq!(a.cases, vec![Case::Bytes, Case::Idle]);
        assert_eq!(a.runs, 1);
        assert!(!a.taskset);
        assert!(a.weir.ends_with("target/release/weir"));
        assert!(args(&["--help"]).unwrap().is_none());
        assert!(args(&["--size-mib", "0"]).is_err());
        assert!(args(&["--size-mib"]).is_err());
        assert!(args(&["--cases", "nope"]).is_err());
        assert!(args(&["--frobnicate"]).is_err());
    }

    #[test]
    fn median_picks_the_middle_run() {
        assert_eq!(median(vec![3.0, 1.0, 2.0], |x| *x), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0], |x| *x), Some(4.0));
        assert_eq!(median(Vec::<f64>::new(), |x| *x), None);
    }

    #[test]
    fn busy_machine_is_flagged() {
        let rate = |share: f64| Rate {
            mib_s: 100.0 * share,
            lines_s: 0.0,
            cpu_mib_s: Some(100.0),
        };
        let (quiet, busy) = (rate(0.97), rate(0.5));
        assert!(busy_warning(&[Some(&quiet), Some(&quiet)]).is_none());
        assert!(busy_warning(&[None, None]).is_none());
        let w = busy_warning(&[Some(&quiet), Some(&busy)]).unwrap();
        assert!(w.contains("97% and 50%"), "{w}");
    }

    #[test]
    fn every_pipeline_case_has_a_config() {
        for c in Case::ALL {
            let cfg = case_config(c, 10, Path::new("/tmp/x"), Path::new("/data/in.jsonl"));
            assert_eq!(cfg.is_some(), !matches!(c, Case::Idle | Case::Perf));
            if let Some(cfg) = cfg {
                assert!(cfg.contains("[sinks.out]"));
            }
        }
        for (c, include, codec) in [
            (Case::FileBytes, "[\"/data/in.jsonl\"]", "bytes"),
            (Case::FileJson, "[\"/data/in.jsonl\"]", "json"),
            (Case::Files100, "[\"/data/in.jsonl/*.log\"]", "bytes"),
        ] {
            let cfg = case_config(c, 10, Path::new("/tmp/x"), Path::new("/data/in.jsonl"))
                .unwrap_or_default();
            assert!(cfg.contains("type = \"file\""), "{cfg}");
            assert!(cfg.contains(&format!("include = {include}")), "{cfg}");
            assert!(
                cfg.contains(&format!("decoding.codec = \"{codec}\"")),
                "{cfg}"
            );
            assert!(cfg.contains("type = \"blackhole\""), "{cfg}");
        }
        // The disk buffer case is case 9 with the blackhole's buffer on disk.
        let [mem, disk] = [Case::FileJson, Case::FileJsonDisk].map(|c| {
            case_config(c, 10, Path::new("/tmp/x"), Path::new("/data/in.jsonl")).unwrap_or_default()
        });
        assert_eq!(disk, mem + "buffer.type = \"disk\"\n");
        assert!(disk.trim_end().ends_with("buffer.type = \"disk\""));
    }

    #[test]
    fn every_case_has_a_unique_name_that_parses() {
        for c in Case::ALL {
            let a = args(&["--cases", c.name()]).unwrap().unwrap();
            assert_eq!(a.cases, vec![c]);
        }
        let a = args(&[
            "--cases",
            "file-bytes,file-json,files-100",
            "--files-secs",
            "2",
            "--files-rate-mib",
            "1",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            a.cases,
            vec![Case::FileBytes, Case::FileJson, Case::Files100]
        );
        assert_eq!((a.files_secs, a.files_rate_mib), (2, 1));
        assert!(Case::DEFAULT.contains(&Case::Files100));
    }
}
