//! Issue 26, item 2: the `file` source never loses a file to timing. A writer at about 8 MB/s
//! renames its file away and creates a new one every 0.2 s (each rotation under a new name:
//! nothing is deleted, so every line can be read), while weir is killed with SIGKILL every
//! few seconds and started again. With discovery passes a second apart, most rotated files
//! live and leave the glob between two passes: they are followed by inotify while weir runs,
//! and found by content (fingerprints) at the next start when they were rotated while it was
//! down or before its last checkpoint.
//!
//! Every line has a number; at the end every number must have been delivered (at least
//! once: duplicates, lines not yet checkpointed at a kill, are counted and reported).
//!
//! Rounds: `WEIR_ROTATION_ROUNDS` (default 4, for CI), each weir run lasting 1-3 s with
//! 0.3-1 s down between runs. `WEIR_ROTATION_ROUNDS=10` is the issue's ten-round version.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{sigterm, wait_until, wait_with_timeout, weir};

/// Every line is this long (newline included).
const LINE: usize = 100;
/// About 8 MB/s: 800 lines every 10 ms.
const LINES_PER_TICK: usize = 800;
const TICK: Duration = Duration::from_millis(10);
const ROTATE_EVERY: Duration = Duration::from_millis(200);

fn line(n: usize) -> String {
    let head = format!("r-{n:010} ");
    format!("{head}{}\n", "x".repeat(LINE - 1 - head.len()))
}

/// Writes numbered lines into `dir/app.log`, rotating it to `app.log.<k>` every 0.2 s, until
/// `stop`; returns how many lines and rotations there were.
fn writer(dir: PathBuf, stop: Arc<AtomicBool>, written: Arc<AtomicUsize>) -> (usize, usize) {
    let path = dir.join("app.log");
    let open = || {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap()
    };
    let mut f = open();
    let mut n = 0;
    let mut rotations = 0;
    let mut last_rotation = Instant::now();
    let mut next = Instant::now();
    let mut buf = String::with_capacity(LINES_PER_TICK * LINE);
    while !stop.load(Ordering::Acquire) {
        buf.clear();
        for _ in 0..LINES_PER_TICK {
            buf.push_str(&line(n));
            n += 1;
        }
        f.write_all(buf.as_bytes()).unwrap();
        written.store(n, Ordering::Release);
        if last_rotation.elapsed() >= ROTATE_EVERY {
            rotations += 1;
            std::fs::rename(&path, dir.join(format!("app.log.{rotations}"))).unwrap();
            f = open();
            last_rotation = Instant::now();
        }
        next += TICK;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    (n, rotations)
}

/// Reads the output as it grows: which line numbers came, and how many came again.
struct Seen {
    path: PathBuf,
    offset: u64,
    got: Vec<u8>,
    distinct: usize,
    duplicates: usize,
}

impl Seen {
    fn update(&mut self) {
        let Ok(mut f) = File::open(&self.path) else {
            return;
        };
        f.seek(SeekFrom::Start(self.offset)).unwrap();
        let mut r = BufReader::with_capacity(1 << 20, f);
        let mut l = String::new();
        loop {
            l.clear();
            let n = r.read_line(&mut l).unwrap();
            if n == 0 || !l.ends_with('\n') {
                // A line still being written is read at the next look.
                return;
            }
            self.offset += n as u64;
            let num: usize = l[2..12].parse().unwrap();
            assert_eq!(l, line(num), "a line came altered");
            if num >= self.got.len() {
                self.got.resize(num + 1, 0);
            }
            if self.got[num] == 0 {
                self.distinct += 1;
            } else {
                self.duplicates += 1;
            }
            self.got[num] = self.got[num].saturating_add(1);
        }
    }

    fn missing(&self, n: usize) -> Vec<usize> {
        (0..n)
            .filter(|i| self.got.get(*i).is_none_or(|c| *c == 0))
            .collect()
    }
}

fn start(dir: &Path, cfg: &Path, run: usize) -> Child {
    let log = File::create(dir.join(format!("weir-{run}.log"))).unwrap();
    weir()
        .args(["run", "--config"])
        .arg(cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

#[test]
fn fast_rotation_with_sigkills_delivers_every_line_of_every_round() {
    let rounds: usize = std::env::var("WEIR_ROTATION_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    let out = dir.join("out.log");
    let cfg = dir.join("weir.toml");
    // Discovery passes a second apart (the default): five rotations happen between two.
    std::fs::write(
        &cfg,
        format!(
            r#"
data_dir = "{data}"
[api]
enabled = false
[sources.logs]
type = "file"
include = ["{input}/app.log"]
acknowledgements = true
rotate_wait_ms = 1000
[sinks.out]
type = "file"
inputs = ["logs"]
path = "{out}"
encoding.codec = "text"
"#,
            data = dir.join("data").display(),
            input = input.display(),
            out = out.display(),
        ),
    )
    .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let w = {
        let (input, stop, written) = (input.clone(), stop.clone(), written.clone());
        std::thread::spawn(move || writer(input, stop, written))
    };
    use rand::Rng;
    let mut rng = rand::rng();
    // The line numbers written during each run (from its start to the next start).
    let mut bounds = Vec::new();
    for run in 0..rounds {
        bounds.push(written.load(Ordering::Acquire));
        let mut child = start(dir, &cfg, run);
        std::thread::sleep(Duration::from_millis(rng.random_range(1000..3000)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1000)));
    }
    stop.store(true, Ordering::Release);
    let (total, rotations) = w.join().unwrap();
    bounds.push(total);

    // A last run reads what is left, and stops cleanly.
    let child = start(dir, &cfg, rounds);
    let mut seen = Seen {
        path: out.clone(),
        offset: 0,
        got: Vec::new(),
        distinct: 0,
        duplicates: 0,
    };
    let all = wait_until(Duration::from_secs(240), || {
        seen.update();
        seen.distinct >= total
    });
    // Give late duplicates a moment to show up in the count.
    std::thread::sleep(Duration::from_millis(500));
    sigterm(&child);
    let status = wait_with_timeout(child, Duration::from_secs(60)).status;
    seen.update();
    let missing = seen.missing(total);
    let per_round: Vec<usize> = bounds
        .windows(2)
        .map(|b| missing.iter().filter(|m| **m >= b[0] && **m < b[1]).count())
        .collect();
    println!(
        "fast rotation: {rounds} rounds, {total} lines ({} MB) in {} files, {} delivered, {} duplicates, missing per round: {per_round:?}",
        total * LINE / 1_000_000,
        rotations + 1,
        seen.distinct,
        seen.duplicates,
    );
    let last_log = std::fs::read_to_string(dir.join(format!("weir-{rounds}.log"))).unwrap();
    assert!(
        all && missing.is_empty(),
        "{} lines of {total} missing (per round {per_round:?}), e.g. {:?}; last run's log:\n{last_log}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert_eq!(seen.distinct, total, "no unexpected lines");
    assert_eq!(
        status.code(),
        Some(0),
        "weir did not stop cleanly:\n{last_log}"
    );
}
