//! `weir-bench threads`: how the parse-and-edit pipeline (case 11, `file-remap`: `file json ->
//! remap (add, rename, delete) -> blackhole`) scales with `weir run --threads N`.
//!
//! Weir runs unpinned (every core of the machine is available to it), once per thread count
//! in turn, `--runs` rounds: the counts of one round run back to back, so a change of the
//! machine's load hits them alike. Reported per thread count: the median MiB/s and weir's
//! CPU time; and the ratio of each count to the first, by medians and per round (a round's
//! runs are the closest in time, so the spread of those ratios is the noise).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::runner::{Runner, ScratchDir};
use crate::{case_config, data, files, load_average, median, mib, Case};

const USAGE: &str = "\
weir-bench threads: case 11 (file json -> remap -> blackhole) at several --threads, unpinned

USAGE:
    weir-bench threads [OPTIONS]

OPTIONS:
    --threads LIST     Thread counts, compared with the first (default 1,2)
    --size-mib N       Size of the generated input, in MiB (default 256)
    --runs N           Rounds; the median is reported (default 5)
    --weir PATH        The weir binary (default <workspace>/target/release/weir)
    --data-dir DIR     Where the input is kept (default <workspace>/target/bench-data)
    --timeout-secs N   A run taking longer fails (default 1800)
";

struct Args {
    threads: Vec<usize>,
    size_mib: u64,
    runs: usize,
    weir: PathBuf,
    data_dir: PathBuf,
    timeout: Duration,
}

fn parse_args(argv: &[String]) -> Result<Option<Args>> {
    let root = crate::workspace_root();
    let mut a = Args {
        threads: vec![1, 2],
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
                    .map(|t| number(t.trim().to_string()).map(|n| n as usize))
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
    let runner = Runner {
        weir: weir.clone(),
        taskset: false,
        gnu_time: None,
        work: scratch.0.clone(),
        timeout: args.timeout,
    };
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
        for (i, &threads) in args.threads.iter().enumerate() {
            let name = format!("file-remap-t{threads}");
            let o = files::run_one_file_threads(&runner, &name, &body, data.lines, threads)?;
            eprintln!(
                "  round {round}/{}: --threads {threads}: {:.3} s, {:.1} MiB/s{}",
                args.runs,
                o.secs,
                mib(data.bytes) / o.secs,
                o.cpu_secs.map_or(String::new(), |c| format!(
                    ", CPU {c:.2} s ({:.0}% of a core)",
                    100.0 * c / o.secs
                ))
            );
            runs[i].push(Run {
                secs: o.secs,
                cpu_secs: o.cpu_secs,
            });
        }
    }
    let load_after = load_average();

    // Per round, each count's speed over the first count's.
    let round_ratios: Vec<Vec<f64>> = runs
        .iter()
        .map(|r| {
            r.iter()
                .zip(&runs[0])
                .map(|(x, first)| first.secs / x.secs)
                .collect()
        })
        .collect();
    let first_mib_s = median(runs[0].iter().map(|r| r.secs).collect(), |s| *s)
        .map(|s| mib(data.bytes) / s)
        .unwrap_or(0.0);
    println!();
    println!(
        "weir {}: case 11 `file json -> remap -> blackhole`, {} MiB, unpinned, {cores} cores; \
         load average {load_before} before, {load_after} after; median of {} rounds",
        weir.display(),
        args.size_mib,
        args.runs
    );
    println!();
    println!(
        "| `--threads` | MiB/s | vs `--threads {}` | per round | weir CPU s | cores busy |",
        args.threads[0]
    );
    println!("|---:|---:|---:|---|---:|---:|");
    for (i, &threads) in args.threads.iter().enumerate() {
        let secs = median(runs[i].iter().map(|r| r.secs).collect(), |s| *s).unwrap_or(0.0);
        let mib_s = mib(data.bytes) / secs;
        let cpu = median(runs[i].iter().filter_map(|r| r.cpu_secs).collect(), |c| *c);
        let mut per_round = round_ratios[i].clone();
        per_round.sort_by(f64::total_cmp);
        println!(
            "| {threads} | {mib_s:.1} | {:.2}x | {} | {} | {} |",
            mib_s / first_mib_s,
            per_round
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            cpu.map_or("-".into(), |c| format!("{c:.2}")),
            cpu.map_or("-".into(), |c| format!("{:.2}", c / secs)),
        );
    }
    Ok(true)
}
