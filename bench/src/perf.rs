//! The `perf` case: `perf script` text -> `stack_fold` -> folded file, against
//! `inferno-collapse-perf` on the same file in the same run.
//!
//! The input is the shared captures (`shared/testdata/perf/*.txt`, found through `WEIR_SHARED`
//! or next to the workspace) concatenated, each followed by a blank line, and repeated until
//! the file reaches `--perf-size-mib`. Both sides fold it with their defaults, which are the
//! reference's (`stackcollapse-perf.pl`): samples of the first event only, periods summed.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::runner::{self, RunOutcome, Runner};

/// The generated capture.
pub struct Capture {
    pub path: PathBuf,
    pub bytes: u64,
    /// How many times the shared captures were repeated.
    pub copies: u64,
}

/// The shared perf captures: `$WEIR_SHARED/testdata/perf`, or `shared/testdata/perf` next to
/// the workspace or one of its parents.
pub fn shared_captures(workspace: &Path) -> Option<PathBuf> {
    if let Some(s) = std::env::var_os("WEIR_SHARED") {
        let p = PathBuf::from(s).join("testdata/perf");
        if p.is_dir() {
            return Some(p);
        }
    }
    workspace
        .ancestors()
        .map(|d| d.join("shared/testdata/perf"))
        .find(|p| p.is_dir())
}

/// Writes (or reuses) `dir/perf-script-<N>MiB.txt`.
pub fn ensure_capture(shared: &Path, dir: &Path, size_mib: u64) -> Result<Capture> {
    let mut names: Vec<PathBuf> = fs::read_dir(shared)
        .with_context(|| format!("cannot list {}", shared.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    names.sort();
    if names.is_empty() {
        bail!("no *.txt captures in {}", shared.display());
    }
    let mut block = Vec::new();
    for n in &names {
        block.extend(fs::read(n).with_context(|| format!("cannot read {}", n.display()))?);
        block.extend_from_slice(b"\n\n");
    }
    let target = size_mib * 1024 * 1024;
    let copies = target.div_ceil(block.len() as u64).max(1);
    let bytes = copies * block.len() as u64;
    fs::create_dir_all(dir)?;
    let path = dir.join(format!("perf-script-v1-{size_mib}MiB.txt"));
    if fs::metadata(&path).is_ok_and(|m| m.len() == bytes) {
        return Ok(Capture {
            path,
            bytes,
            copies,
        });
    }
    let tmp = path.with_extension("tmp");
    let mut w = BufWriter::new(File::create(&tmp)?);
    for _ in 0..copies {
        w.write_all(&block)?;
    }
    w.flush()?;
    drop(w);
    fs::rename(&tmp, &path)?;
    Ok(Capture {
        path,
        bytes,
        copies,
    })
}

/// The weir pipeline of the case, writing `out`.
pub fn config(capture: &Path, out: &Path) -> String {
    format!(
        "[sources.in]\ntype = \"perf\"\nmode = \"script\"\npath = \"{}\"\n\n\
         [transforms.fold]\ntype = \"stack_fold\"\ninputs = [\"in\"]\nweight = \"period\"\n\n\
         [sinks.out]\ntype = \"file\"\ninputs = [\"fold\"]\npath = \"{}\"\nencoding.codec = \"folded\"\n",
        capture.display(),
        out.display()
    )
}

/// Runs `inferno-collapse-perf` on the capture (stdin) into `out`, pinned and timed like weir.
pub fn run_inferno(
    runner: &Runner,
    inferno: &Path,
    capture: &Path,
    out: &Path,
) -> Result<RunOutcome> {
    let time_path = runner.work.join("inferno.time");
    let mut cmd = match (&runner.gnu_time, runner.taskset) {
        (Some(t), _) => {
            let _ = fs::remove_file(&time_path);
            let mut c = Command::new(t);
            c.arg("-o").arg(&time_path).args(["-f", "%M %U %S"]);
            if runner.taskset {
                c.args(["taskset", "-c", "0"]);
            }
            c.arg(inferno);
            c
        }
        (None, true) => {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]).arg(inferno);
            c
        }
        (None, false) => Command::new(inferno),
    };
    cmd.stdin(Stdio::from(File::open(capture)?))
        .stdout(Stdio::from(File::create(out)?))
        .stderr(Stdio::piped());
    let started = Instant::now();
    let o = cmd
        .output()
        .with_context(|| format!("cannot run {}", inferno.display()))?;
    let secs = started.elapsed().as_secs_f64();
    if !o.status.success() {
        bail!(
            "{} exited with {}: {}",
            inferno.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let (peak_rss_kib, cpu_secs) = if runner.gnu_time.is_some() {
        let (rss, cpu) = runner::parse_time_file(&time_path)?;
        (Some(rss), Some(cpu))
    } else {
        (None, None)
    };
    Ok(RunOutcome {
        secs,
        peak_rss_kib,
        cpu_secs,
        sent: None,
        errors: Vec::new(),
        io: None,
    })
}

/// Whether two folded files are the same bytes; else the first differing line.
pub fn compare(a: &Path, b: &Path) -> Result<Option<String>> {
    let (x, y) = (fs::read(a)?, fs::read(b)?);
    if x == y {
        return Ok(None);
    }
    let (xs, ys) = (String::from_utf8_lossy(&x), String::from_utf8_lossy(&y));
    let n = xs
        .lines()
        .zip(ys.lines())
        .take_while(|(p, q)| p == q)
        .count();
    Ok(Some(format!(
        "line {}: `{}` vs `{}` ({} and {} lines)",
        n + 1,
        xs.lines().nth(n).unwrap_or("<end>"),
        ys.lines().nth(n).unwrap_or("<end>"),
        xs.lines().count(),
        ys.lines().count()
    )))
}
