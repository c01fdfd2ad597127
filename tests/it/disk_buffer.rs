//! Disk buffers (`buffer.type = "disk"`), end to end with the real binary:
//!
//! 1. kill -9 at random points while the file source writes numbered lines into a disk buffer
//!    and the file sink reads it, several rounds: every line delivered at least once, and only
//!    what was in flight at a kill delivered twice.
//! 2. The sink down for a while (its folder cannot be created) while the `demo` source, which
//!    cannot replay, fills a 64 MiB disk buffer: everything delivered after recovery, and the
//!    resident memory stays far below what is on disk. `WEIR_SOAK_SECONDS` sets the outage
//!    (default 10; the issue's soak is 120).
//! 3. Corruption while Weir is stopped (a flipped byte, a zeroed page, a record cut in half,
//!    a deleted segment): Weir starts, delivers every intact record, counts what was lost, and
//!    keeps running.
//! 4. Disk full (a 2 MiB tmpfs as `data_dir`, root only): back-pressure with a clear error,
//!    recovery when the sink drains the buffer, nothing corrupted or lost.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{
    free_addr, lines, metric, require, start_weir, stop_clean, wait_until, wait_with_timeout,
    weir_log,
};

/// A pipeline from `source` (TOML) into a file sink at `out` through a disk buffer.
fn config(data: &Path, api: SocketAddr, source: &str, out: &Path, buffer: &str) -> String {
    format!(
        r#"
data_dir = "{data}"
[api]
address = "{api}"
{source}
[sinks.out]
type = "file"
inputs = ["in"]
path = "{out}"
encoding.codec = "text"
buffer.type = "disk"
{buffer}
"#,
        data = data.display(),
        out = out.display(),
    )
}

fn numbered_input(path: &Path, n: usize) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..n {
        writeln!(f, "{i:08} some padding to make the line a little longer").unwrap();
    }
    f.flush().unwrap();
}

/// How many times each number arrived in `out`.
fn counts(out: &Path) -> BTreeMap<usize, usize> {
    let mut m = BTreeMap::new();
    for l in lines(out) {
        if let Ok(i) = l[..8.min(l.len())].parse::<usize>() {
            *m.entry(i).or_default() += 1;
        }
    }
    m
}

fn file_source(input: &Path) -> String {
    format!(
        r#"
[sources.in]
type = "file"
include = ["{}"]
acknowledgements = true
"#,
        input.display()
    )
}

/// A small generator of pause lengths (no dependency on the clock's resolution).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[test]
fn kill_9_at_random_points_loses_nothing_and_repeats_only_what_was_in_flight() {
    const N: usize = 400_000;
    let rounds: usize = std::env::var("WEIR_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("in.log");
    let out = d.join("out.log");
    // The input grows while Weir runs and dies: 2,000 lines every 50 ms.
    std::fs::write(&input, b"").unwrap();
    let writer = {
        let input = input.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&input)
                .unwrap();
            for chunk in 0..N / 2000 {
                let mut buf = String::new();
                for i in chunk * 2000..(chunk + 1) * 2000 {
                    buf.push_str(&format!(
                        "{i:08} some padding to make the line a little longer\n"
                    ));
                }
                f.write_all(buf.as_bytes()).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let mut rng = Lcg(seed);
    let api = free_addr();
    let cfg = config(
        &d.join("data"),
        api,
        &file_source(&input),
        &out,
        "buffer.max_size = 4194304",
    );
    let mut before = 0;
    for round in 0..rounds {
        let mut weir = start_weir(d, "weir", &cfg, false);
        // Until it runs (its API answers), then a random moment of the stream.
        assert!(
            wait_until(Duration::from_secs(30), || crate::harness::http_get(
                api, "/health"
            )
            .is_ok()),
            "{}",
            weir_log(d, "weir")
        );
        // Past the file source's first checkpoint (it writes one every second), so that each
        // round moves on.
        std::thread::sleep(Duration::from_millis(1100 + rng.below(1500)));
        weir.kill().unwrap();
        weir.wait().unwrap();
        let now = lines(&out).len();
        eprintln!("round {round} (seed {seed}): {} lines out", now);
        before = now.max(before);
    }
    writer.join().unwrap();
    // A last run to the end.
    let weir = start_weir(d, "weir", &cfg, false);
    assert!(
        wait_until(Duration::from_secs(120), || counts(&out).len() == N),
        "not every line arrived: {} of {N}\n{}",
        counts(&out).len(),
        weir_log(d, "weir")
    );
    stop_clean(d, "weir", weir);
    let c = counts(&out);
    assert_eq!(c.len(), N, "every line at least once");
    let duplicates: usize = c.values().map(|n| n - 1).sum();
    // A kill repeats what was in flight and not yet acknowledged: the lines the file source
    // read since its last checkpoint (written every second, so up to a second of reading),
    // and the records the sink wrote but had not yet settled in the disk buffer's `ack` file.
    // Never what was acknowledged before that: the rounds make progress and the total is far
    // from a replay of everything.
    eprintln!("{rounds} kills: {duplicates} lines delivered twice (of {N})");
    assert!(
        duplicates <= rounds * 150_000,
        "{duplicates} duplicates in {rounds} kills"
    );
    let log = weir_log(d, "weir");
    assert!(!log.contains("corrupted"), "{log}");
    assert!(before > 0, "the rounds delivered something before the end");
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |k| k * 1024)
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn a_sink_down_for_a_while_gets_everything_from_a_source_that_cannot_replay() {
    const N: usize = 300_000;
    let outage = Duration::from_secs(
        std::env::var("WEIR_SOAK_SECONDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10),
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The sink's folder cannot be made while a file stands in its place: it retries.
    let blocker = d.join("sink");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let out = blocker.join("out.log");
    let api = free_addr();
    let weir = start_weir(
        d,
        "weir",
        &config(
            &d.join("data"),
            api,
            &format!("[sources.in]\ntype = \"demo\"\ncount = {N}\n"),
            &out,
            "buffer.max_size = 67108864",
        ),
        false,
    );
    let buffer = d.join("data/buffers/out");
    let started = Instant::now();
    let mut peak_rss = 0;
    let mut peak_disk = 0;
    while started.elapsed() < outage {
        peak_rss = peak_rss.max(rss(weir.id()));
        peak_disk = peak_disk.max(dir_bytes(&buffer));
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = weir_log(d, "weir");
    assert!(log.contains("cannot write"), "the sink is down: {log}");
    assert_eq!(
        metric(api, "weir_component_sent_events_total", "out"),
        Some(0.0)
    );
    std::fs::remove_file(&blocker).unwrap();
    // The source ends after N events; the pipeline drains and Weir exits by itself.
    let done = wait_with_timeout(weir, Duration::from_secs(180));
    assert_eq!(done.status.code(), Some(0), "{}", weir_log(d, "weir"));
    assert_eq!(lines(&out).len(), N, "every event, once");
    eprintln!(
        "outage {outage:?}: buffer on disk peaked at {:.1} MiB, VmRSS at {:.1} MiB",
        peak_disk as f64 / (1 << 20) as f64,
        peak_rss as f64 / (1 << 20) as f64
    );
    assert!(peak_disk > 8 << 20, "the buffer held the outage on disk");
    assert!(
        peak_rss < 96 << 20,
        "memory bounded: VmRSS peaked at {peak_rss} bytes with {peak_disk} on disk"
    );
}

/// Fills a disk buffer with 50 000 numbered lines that the sink cannot deliver yet, stops
/// Weir cleanly, and returns the buffer's folder.
fn filled_buffer(d: &Path, api: SocketAddr, out: &Path, blocker: &Path) -> (PathBuf, String) {
    const N: usize = 50_000;
    let input = d.join("in.log");
    numbered_input(&input, N);
    std::fs::write(blocker, b"not a folder").unwrap();
    let cfg = config(
        &d.join("data"),
        api,
        &file_source(&input),
        out,
        "buffer.max_size = 8388608",
    );
    let cfg_path = d.join("fill.toml");
    std::fs::write(&cfg_path, &cfg).unwrap();
    // A short grace period: the sink is down, so the drain cannot finish.
    let weir = crate::harness::weir()
        .args(["run", "--grace-period-secs", "1", "--config"])
        .arg(&cfg_path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(d.join("fill.log")).unwrap())
        .spawn()
        .unwrap();
    let buffer = d.join("data/buffers/out");
    // All read (the file source's checkpoint advances once the buffer has them on disk).
    assert!(
        wait_until(Duration::from_secs(60), || metric(
            api,
            "weir_component_received_events_total",
            "in"
        ) == Some(N as f64)),
        "{}",
        weir_log(d, "fill")
    );
    // SIGTERM with the sink still down: the grace period runs out, the buffer stays.
    crate::harness::sigterm(&weir);
    let _ = wait_with_timeout(weir, Duration::from_secs(60));
    (buffer, cfg)
}

#[test]
fn a_corrupted_buffer_delivers_every_intact_record_and_counts_the_rest() {
    const N: usize = 50_000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let blocker = d.join("sink");
    let out = blocker.join("out.log");
    let api = free_addr();
    let (buffer, cfg) = filled_buffer(d, api, &out, &blocker);
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&buffer)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 4, "{segments:?}");
    // A flipped byte in the first, a zeroed page in the second, the third deleted, the last
    // written one cut in the middle of a record.
    let mut b = std::fs::read(&segments[0]).unwrap();
    b[5000] ^= 0x20;
    std::fs::write(&segments[0], b).unwrap();
    let mut b = std::fs::read(&segments[1]).unwrap();
    b[8192..12288].fill(0);
    std::fs::write(&segments[1], b).unwrap();
    std::fs::remove_file(&segments[2]).unwrap();
    let last = segments
        .iter()
        .rev()
        .find(|p| std::fs::metadata(p).unwrap().len() > 1000)
        .unwrap()
        .clone();
    let len = std::fs::metadata(&last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 77)
        .unwrap();

    std::fs::remove_file(&blocker).unwrap();
    let weir = start_weir(d, "weir", &cfg, false);
    let corrupted =
        || metric(api, "weir_buffer_corrupted_records_total", "out").unwrap_or(0.0) as usize;
    // Weir runs, delivers what is intact, and says what it lost.
    assert!(
        wait_until(Duration::from_secs(60), || {
            let got = counts(&out).len();
            got > 0 && corrupted() > 0 && {
                std::thread::sleep(Duration::from_millis(500));
                counts(&out).len() == got
            }
        }),
        "{}",
        weir_log(d, "weir")
    );
    let c = counts(&out);
    let got = c.len();
    assert!(c.values().all(|&n| n == 1), "nothing twice");
    let lost_records = corrupted();
    let lost_bytes = metric(api, "weir_buffer_corrupted_bytes_total", "out").unwrap_or(0.0);
    eprintln!("{got} of {N} delivered; {lost_records} records ({lost_bytes} bytes) counted lost");
    assert!(got < N && got > N / 4, "{got}");
    assert!(
        lost_records >= 4,
        "four damages, each at least one record: {lost_records}"
    );
    assert!(lost_bytes > 4096.0);
    let log = weir_log(d, "weir");
    assert!(log.contains("damaged bytes"), "{log}");
    assert!(log.contains("missing"), "{log}");
    assert!(log.contains("torn record"), "{log}");
    // And it keeps running: the health endpoint answers, new lines still flow.
    let (status, _) = crate::harness::http_get(api, "/health").unwrap();
    assert_eq!(status, 200);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(d.join("in.log"))
        .unwrap();
    writeln!(f, "{:08} after the damage", 99_999_999).unwrap();
    drop(f);
    assert!(
        wait_until(Duration::from_secs(30), || counts(&out)
            .contains_key(&99_999_999)),
        "{}",
        weir_log(d, "weir")
    );
    stop_clean(d, "weir", weir);
}

fn is_root() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        Ok(())
    } else {
        Err("mounting a tmpfs needs root".into())
    }
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Result<Self, String> {
        std::fs::create_dir_all(path).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("mount does not run ({e})"))?;
        if !out.status.success() {
            return Err(format!(
                "cannot mount a tmpfs: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(Self(path.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_holds_the_source_back_and_recovers_without_loss() {
    const N: usize = 100_000;
    if require("root", is_root()).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = d.join("data");
    let Some(_tmpfs) = require("a tmpfs", Tmpfs::mount(&data, "2m")) else {
        return;
    };
    let input = d.join("in.log");
    numbered_input(&input, N);
    let blocker = d.join("sink");
    std::fs::write(&blocker, b"not a folder").unwrap();
    let out = blocker.join("out.log");
    let api = free_addr();
    let weir = start_weir(
        d,
        "weir",
        &config(
            &data,
            api,
            &file_source(&input),
            &out,
            "buffer.max_size = 67108864",
        ),
        false,
    );
    let full = || {
        let (_, body) = crate::harness::http_get(api, "/metrics").unwrap_or_default();
        body.lines().any(|l| {
            l.starts_with("weir_component_errors_total")
                && l.contains("error_type=\"disk_full\"")
                && l.contains("component_id=\"out\"")
        })
    };
    assert!(
        wait_until(Duration::from_secs(60), full),
        "{}",
        weir_log(d, "weir")
    );
    let log = weir_log(d, "weir");
    assert!(
        log.contains("No space left on device") && log.contains("holding the senders back"),
        "a clear error: {log}"
    );
    // Back-pressure: the source stopped short of the end.
    let read = metric(api, "weir_component_received_events_total", "in").unwrap_or(0.0);
    assert!(read < N as f64, "the source was held back: {read}");
    // The sink comes back: it drains the buffer, which frees the disk, and the rest flows.
    std::fs::remove_file(&blocker).unwrap();
    assert!(
        wait_until(Duration::from_secs(120), || counts(&out).len() == N),
        "{} of {N}\n{}",
        counts(&out).len(),
        weir_log(d, "weir")
    );
    let c = counts(&out);
    assert!(c.values().all(|&n| n == 1), "nothing twice");
    assert_eq!(
        metric(api, "weir_buffer_corrupted_records_total", "out").unwrap_or(0.0),
        0.0,
        "nothing corrupted"
    );
    stop_clean(d, "weir", weir);
}
