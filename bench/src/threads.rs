//! `weir-bench threads`: how the parse-and-edit pipeline (case 11, `file-remap`: `file json ->
//! remap (add, rename, delete) -> blackhole`) scales with `weir run --threads N`.
//!
//! Each variant is a thread count, unpinned (every core of the machine is available to weir)
//! or pinned to core 0 (`1@0`: all of weir's threads on one core, as case 11 runs). The file
//! source reads and decodes on a thread of its own, outside the runtime's workers, so
//! `--threads 1` unpinned already uses more than one core; `1@0` is weir on one core. The
//! variants run in turn, `--runs` rounds, each round's back to back, so a change of the
//! machine's load hits them alike. Reported per variant: the median MiB/s, weir's CPU time,
//! and the ratio to the one-thread variants, by medians and per round (a round's runs are the
//! closest in time, so the spread of those ratios is the noise).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::runner::{self, Runner, ScratchDir};
use crate::{case_config, data, files, load_average, median, mib, Case};

const USAGE: &str = "\
weir-bench threads: case 11 (file json -> remap -> blackhole) at several --threads

USAGE:
    weir-bench threads [OPTIONS]

OPTIONS:
    --threads LIST     Variants: N is `--threads N` unpinned, N@0 pinned to core 0
                       (default 1@0,1,2)
    --size-mib N       Size of the generated input, in MiB (default 256)
    --runs N           Rounds; the median is reported (default 5)
    --weir PATH        The weir binary (default <workspace>/target/release/weir)
    --data-dir DIR     Where the input is kept (default <workspace>/target/bench-data)
    --timeout-secs N   A run taking longer fails (default 1800)
";

/// One way of running weir: `--threads`, and whether pinned to core 0.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Variant {
    threads: usize,
    pinned: bool,
}

impl Variant {
    fn parse(v: &str) -> Result<Variant> {
        let (n, pinned) = match v.strip_suffix("@0") {
            Some(n) => (n, true),
            None => (v, false),
        };
        let threads = n
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("--threads: expected N or N@0, got {v:?}"))?;
        Ok(Variant { threads, pinned })
    }

    fn label(self) -> String {
        if self.pinned {
            format!("{}, pinned to core 0", self.threads)
        } else {
            format!("{}, unpinned", self.threads)
        }
    }
}

struct Args {
    threads: Vec<Variant>,
    size_mib: u64,
    runs: usize,
    weir: PathBuf,
    data_dir: PathBuf,
    timeout: Duration,
}

fn parse_args(argv: &[String]) -> Result<Option<Args>> {
    let root = crate::workspace_root();
    let mut a = Args {
        threads: ["1@0", "1", "2"]
            .into_iter()
            .map(Variant::parse)
            .collect::<Result<_>>()?,
        size_mib: 256,
        runs: 5,
        weir: root.join("target/release/weir"),
        data_dir: root.join("target/bench-data"),
        timeout: Duration::from_secs(1800),
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
            "--threads" => {
                a.threads = value()?
                    .split(',')
                    .map(|t| Variant::parse(t.trim()))
                    .collect::<Result<_>>()?;
            }
            "--size-mib" => a.size_mib = number(value()?)?,
            "--runs" => a.runs = number(value()?)? as usize,
            "--weir" => a.weir = PathBuf::from(value()?),
            "--data-dir" => a.data_dir = PathBuf::from(value()?),
            "--timeout-secs" => a.timeout = Duration::from_secs(number(value()?)?),
            other => bail!("unknown argument {other:?}; see --help"),
        }
    }
    if a.threads.is_empty() {
        bail!("--threads: no thread count given");
    }
    Ok(Some(a))
}

/// One run's figures.
struct Run {
    secs: f64,
    cpu_secs: Option<f64>,
    /// CPU seconds of the file source's reading thread (read, split, decode).
    file_reader: f64,
}

pub fn main(argv: &[String]) -> Result<bool> {
    let Some(args) = parse_args(argv)? else {
        print!("{USAGE}");
        return Ok(true);
    };
    let weir = args
        .weir
        .canonicalize()
        .with_context(|| format!("the weir binary is not at {}", args.weir.display()))?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_before = load_average();
    let data = data::ensure_dataset(&args.data_dir, args.size_mib)?;
    let scratch = ScratchDir::create(&args.data_dir)?;
    let runner = |pinned: bool| Runner {
        weir: weir.clone(),
        taskset: pinned,
        gnu_time: None,
        work: scratch.0.clone(),
        timeout: args.timeout,
    };
    if args.threads.iter().any(|v| v.pinned) && runner::which("taskset").is_none() {
        bail!("taskset not found: cannot pin a variant to core 0");
    }
    let body = case_config(Case::FileRemap, 0, &scratch.0, &data.path)
        .context("file-remap has a pipeline")?;
    eprintln!(
        "weir-bench threads: weir = {}; {cores} cores, load average {load_before}; {} MiB, {} lines",
        weir.display(),
        args.size_mib,
        data.lines
    );
    // Read once unmeasured, so every run finds it in the page cache.
    std::fs::read(&data.path).with_context(|| format!("cannot read {}", data.path.display()))?;

    let mut runs: Vec<Vec<Run>> = args.threads.iter().map(|_| Vec::new()).collect();
    for round in 1..=args.runs {
        for (i, v) in args.threads.iter().enumerate() {
            let name = format!(
                "file-remap-t{}{}",
                v.threads,
                if v.pinned { "p" } else { "" }
            );
            let (o, by_thread) = files::run_one_file_threads(
                &runner(v.pinned),
                &name,
                &body,
                data.lines,
                v.threads,
            )?;
            eprintln!(
                "  round {round}/{}: --threads {}: {:.3} s, {:.1} MiB/s{}",
                args.runs,
                v.label(),
                o.secs,
                mib(data.bytes) / o.secs,
                o.cpu_secs.map_or(String::new(), |c| format!(
                    ", CPU {c:.2} s ({:.0}% of a core)",
                    100.0 * c / o.secs
                ))
            );
            let file_reader = by_thread
                .iter()
                .filter(|(n, _)| n.starts_with("weir-file"))
                .map(|(_, s)| s)
                .sum::<f64>();
            eprintln!(
                "    CPU by thread: {}",
                by_thread
                    .iter()
                    .filter(|(_, s)| *s > 0.0)
                    .map(|(n, s)| format!("{n} {s:.2} s"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            runs[i].push(Run {
                secs: o.secs,
                cpu_secs: o.cpu_secs,
                file_reader,
            });
        }
    }
    let load_after = load_average();

    let median_secs =
        |i: usize| median(runs[i].iter().map(|r| r.secs).collect(), |s| *s).unwrap_or(0.0);
    // The one-thread variants the others are compared with.
    let bases: Vec<(usize, Variant)> = args
        .threads
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, v)| v.threads == 1)
        .collect();
    println!();
    println!(
        "weir {}: case 11 `file json -> remap -> blackhole`, {} MiB, {cores} cores; \
         load average {load_before} before, {load_after} after; median of {} rounds",
        weir.display(),
        args.size_mib,
        args.runs
    );
    println!();
    let mut header = "| `--threads` | MiB/s |".to_string();
    let mut rule = "|---|---:|".to_string();
    for (_, b) in &bases {
        header += &format!(" vs {} (per round) |", b.label());
        rule += "---|";
    }
    header += " weir CPU s | cores busy | reading thread CPU s | bound on free cores |";
    rule += "---:|---:|---:|---:|";
    println!("{header}");
    println!("{rule}");
    for (i, v) in args.threads.iter().enumerate() {
        let secs = median_secs(i);
        let mut line = format!("| {} | {:.1} |", v.label(), mib(data.bytes) / secs);
        for (b, _) in &bases {
            let mut per_round: Vec<f64> = runs[i]
                .iter()
                .zip(&runs[*b])
                .map(|(x, base)| base.secs / x.secs)
                .collect();
            per_round.sort_by(f64::total_cmp);
            line += &format!(
                " {:.2}x ({}) |",
                median_secs(*b) / secs,
                per_round
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        let cpu = median(runs[i].iter().filter_map(|r| r.cpu_secs).collect(), |c| *c);
        let reader = median(runs[i].iter().map(|r| r.file_reader).collect(), |c| *c);
        // With `threads` workers on free cores: the run can take no less than the reading
        // thread's CPU time, nor the workers' share spread over the workers, nor all of it
        // spread over the machine's cores; against all of weir on one core (its CPU time).
        let bound = cpu.zip(reader).map(|(c, r)| {
            let workers = (c - r).max(0.0) / v.threads as f64;
            let machine = if v.pinned { c } else { c / cores.max(1) as f64 };
            c / r.max(workers).max(machine)
        });
        line += &format!(
            " {} | {} | {} | {} |",
            cpu.map_or("-".into(), |c| format!("{c:.2}")),
            cpu.map_or("-".into(), |c| format!("{:.2}", c / secs)),
            reader.map_or("-".into(), |r| format!("{r:.2}")),
            bound.map_or("-".into(), |b| format!("{b:.2}x")),
        );
        println!("{line}");
    }
    Ok(true)
}
