//! `weir-bench ebpf --cases memory`: the cost of `ebpf_memory`, each part alone, with the
//! ABBA method of the `tcp` case (`--runs` pairs, the first of a pair alternately without and
//! with weir, weir started and settled before its run; the ratio of the medians).
//!
//! - `page_faults = true` (every process) on the loopback connection storm (syscall-heavy),
//!   and on a page-fault loop (fresh anonymous pages written once each: the worst case, one
//!   program run per page), as a cost per fault.
//! - `allocations` of this process (the bench itself, which runs the workloads) on the
//!   storm, and on a `malloc`/`free` loop (the worst case: every call traps into the
//!   kernel), as a cost per pair.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::{median, quantile, storm, Args, BpfStats, ProgTime, Weir};

/// Pages touched by one run of the fault loop (256 MiB of 4 KiB pages).
const FAULT_PAGES: usize = 65_536;
/// `malloc`/`free` pairs of one run of the allocation loop.
const ALLOC_PAIRS: usize = 200_000;

/// One measured row.
pub(super) struct Row {
    pub what: String,
    /// Seconds per run.
    pub without: Vec<f64>,
    pub with: Vec<f64>,
    /// Operations per run (faults, pairs) when the row is a cost per operation.
    pub ops: Option<usize>,
    /// Whether the < 2% goal applies (the storm rows).
    pub goal: bool,
    /// The kernel programs' run time in one extra run with the statistics on.
    pub bpf: Option<ProgTime>,
    /// The errors weir counted in the runs with it (drops in the kernel), if any.
    pub errors: Vec<String>,
}

impl Row {
    pub fn slowdown(&self) -> f64 {
        median(&self.with) / median(&self.without) - 1.0
    }

    /// The markdown cells: what was measured, and the detail note.
    pub fn measured(&self) -> String {
        let (w, wo) = (median(&self.with), median(&self.without));
        match self.ops {
            Some(n) => format!(
                "{:+.1}% ({:.0} ns per operation with weir vs {:.0} ns without: {:.0} ns added)",
                self.slowdown() * 100.0,
                w * 1e9 / n as f64,
                wo * 1e9 / n as f64,
                (w - wo) * 1e9 / n as f64
            ),
            None => format!(
                "{:+.1}% run time (median {:.3} s with weir vs {:.3} s without)",
                self.slowdown() * 100.0,
                w,
                wo
            ),
        }
    }

    pub fn note(&self) -> String {
        let q = |v: &[f64]| {
            format!(
                "{:.3} / {:.3} / {:.3} s",
                quantile(v, 0.25),
                median(v),
                quantile(v, 0.75)
            )
        };
        format!(
            "- ebpf_memory, {}: quartiles without weir {}, with weir {}.{}{}",
            self.what,
            q(&self.without),
            q(&self.with),
            if self.errors.is_empty() {
                String::new()
            } else {
                format!(" Errors weir counted: {}.", self.errors.join("; "))
            },
            self.bpf
                .as_ref()
                .map(|b| format!(
                    " Kernel programs (a separate run, statistics on): {} runs, {:.3} s, {:.0} ns per run.",
                    crate::report::thousands(b.runs),
                    b.secs,
                    b.secs * 1e9 / b.runs.max(1) as f64
                ))
                .unwrap_or_default()
        )
    }
}

/// Writes one byte to each of `FAULT_PAGES` fresh pages of a new mapping (the allocation is
/// large: the C library maps it with mmap and unmaps it at free); returns the seconds taken.
fn fault_loop() -> f64 {
    let len = FAULT_PAGES * 4096;
    let layout = Layout::from_size_align(len, 4096).unwrap_or(Layout::new::<u8>());
    let start = Instant::now();
    // SAFETY: a non-zero size; only bytes inside it are written, then it is freed.
    unsafe {
        let p = System.alloc(layout);
        if !p.is_null() {
            for i in 0..FAULT_PAGES {
                std::ptr::write_volatile(p.add(i * 4096), 1);
            }
            System.dealloc(p, layout);
        }
    }
    start.elapsed().as_secs_f64()
}

/// `ALLOC_PAIRS` pairs of `malloc(64)` and `free`; returns the seconds taken.
fn alloc_loop() -> f64 {
    let layout = Layout::from_size_align(64, 8).unwrap_or(Layout::new::<u64>());
    let start = Instant::now();
    for _ in 0..ALLOC_PAIRS {
        // SAFETY: a non-zero size, freed at once with the same layout.
        unsafe {
            let p = System.alloc(layout);
            std::hint::black_box(p);
            if !p.is_null() {
                System.dealloc(p, layout);
            }
        }
    }
    start.elapsed().as_secs_f64()
}

/// Run times without and with weir, the programs' run time, the errors weir counted.
type Measured = (Vec<f64>, Vec<f64>, Option<ProgTime>, Vec<String>);

/// `--runs` ABBA pairs of `workload` without and with weir running `source`.
fn abba(
    args: &Args,
    work: &Path,
    name: &str,
    source: &str,
    mut workload: impl FnMut() -> Result<f64>,
) -> Result<Measured> {
    let ready = "eBPF memory probes attached";
    workload()?;
    let (mut without, mut with) = (Vec::new(), Vec::new());
    let mut errors = Vec::new();
    for i in 1..=args.runs {
        for with_weir in [i % 2 == 0, i % 2 == 1] {
            if with_weir {
                let weir = Weir::start(&args.weir, work, &format!("{name}-{i}"), source, ready)?;
                std::thread::sleep(Duration::from_secs(1));
                let secs = workload()?;
                errors.extend(weir.stop_reporting_errors()?.1);
                eprintln!("  {name} run {i}/{}: with weir {secs:.3} s", args.runs);
                with.push(secs);
            } else {
                let secs = workload()?;
                eprintln!("  {name} run {i}/{}: without weir {secs:.3} s", args.runs);
                without.push(secs);
                std::thread::sleep(Duration::from_millis(1500));
            }
        }
    }
    let bpf = {
        let stats = BpfStats::enable();
        if stats.enabled {
            let weir = Weir::start(&args.weir, work, &format!("{name}-stats"), source, ready)?;
            std::thread::sleep(Duration::from_secs(1));
            let before = super::prog_time(weir.pid());
            workload()?;
            let after = super::prog_time(weir.pid());
            errors.extend(weir.stop_reporting_errors()?.1);
            match (before, after) {
                (Some(a), Some(b)) if b.runs > a.runs => Some(ProgTime {
                    secs: b.secs - a.secs,
                    runs: b.runs - a.runs,
                }),
                _ => None,
            }
        } else {
            None
        }
    };
    Ok((without, with, bpf, errors))
}

pub(super) fn memory_case(args: &Args, work: &Path) -> Result<Vec<Row>> {
    let faults = "type = \"ebpf_memory\"\npage_faults = true";
    let allocs = format!(
        "type = \"ebpf_memory\"\nallocations = {{ pids = [{}] }}",
        std::process::id()
    );
    let storm_name = format!(
        "{} loopback connections, {} client threads",
        crate::report::thousands(args.connections as u64),
        args.clients
    );
    let mut rows = Vec::new();
    let storm_run = || storm(args.connections, args.clients);
    for (what, source, goal) in [
        (format!("page_faults = true: {storm_name}"), faults, true),
        (
            format!("allocations of the storm's process: {storm_name}"),
            allocs.as_str(),
            false,
        ),
    ] {
        eprintln!("ebpf_memory: {what}");
        let (without, with, bpf, errors) = abba(args, work, "memory-storm", source, storm_run)?;
        rows.push(Row {
            what,
            without,
            with,
            ops: None,
            goal,
            bpf,
            errors,
        });
    }
    eprintln!("ebpf_memory: page-fault loop");
    let (without, with, bpf, errors) =
        abba(args, work, "memory-faults", faults, || Ok(fault_loop()))?;
    rows.push(Row {
        what: format!(
            "page_faults = true: {} fresh pages written (cost per fault)",
            crate::report::thousands(FAULT_PAGES as u64)
        ),
        without,
        with,
        ops: Some(FAULT_PAGES),
        goal: false,
        bpf,
        errors,
    });
    eprintln!("ebpf_memory: malloc/free loop");
    let (without, with, bpf, errors) =
        abba(args, work, "memory-allocs", &allocs, || Ok(alloc_loop()))?;
    rows.push(Row {
        what: format!(
            "allocations: {} malloc(64)/free pairs (cost per pair)",
            crate::report::thousands(ALLOC_PAIRS as u64)
        ),
        without,
        with,
        ops: Some(ALLOC_PAIRS),
        goal: false,
        bpf,
        errors,
    });
    Ok(rows)
}
