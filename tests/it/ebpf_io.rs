//! `ebpf_io` against the real kernel: a child process makes known `O_DIRECT` reads and writes
//! on a file on a block device, and the source's counts for that process must be exactly
//! those; with `stacks = true`, a compiled C program's must be on the output `stacks` under the
//! functions that made them. Skips like the other eBPF tests
//! ([`crate::ebpf::ebpf_available`]).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::ebpf::{ebpf_available, Agent};

/// The child's writes, then its reads (bytes each, from offset 0): with `O_DIRECT` each
/// system call is one block request (synchronous, so nothing merges).
const WRITES: [usize; 12] = [
    4096, 4096, 4096, 4096, 4096, 4096, 4096, 4096, 16384, 16384, 16384, 16384,
];
const READS: [usize; 8] = [4096, 4096, 4096, 4096, 4096, 4096, 16384, 16384];
const FILE_BYTES: usize = 256 * 1024;
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// A temporary directory where `O_DIRECT` reaches a block device (not tmpfs): the system's
/// temporary directory, else /var/tmp.
fn block_backed_dir() -> Result<tempfile::TempDir, String> {
    let mut why = Vec::new();
    for base in [std::env::temp_dir(), PathBuf::from("/var/tmp")] {
        let c = CString::new(base.as_os_str().as_bytes()).unwrap();
        // SAFETY: a valid path and a zeroed statfs for the kernel to fill.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
            why.push(format!("{}: statfs failed", base.display()));
            continue;
        }
        if st.f_type as i64 == TMPFS_MAGIC {
            why.push(format!("{} is tmpfs", base.display()));
            continue;
        }
        let dir = tempfile::tempdir_in(&base).map_err(|e| e.to_string())?;
        let probe = dir.path().join("probe");
        match std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&probe)
        {
            Ok(_) => return Ok(dir),
            Err(e) => why.push(format!("{}: O_DIRECT refused: {e}", base.display())),
        }
    }
    Err(why.join("; "))
}

/// The disk (name, `major:minor`) holding the filesystem of `path`, when the filesystem's
/// device is a block device (not overlayfs, say).
fn disk_of(path: &Path) -> Option<(String, String)> {
    let dev = std::fs::metadata(path).unwrap().dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = std::fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    // A partition's directory sits in its disk's.
    let disk = if sys.join("partition").exists() {
        sys.parent()?.to_path_buf()
    } else {
        sys
    };
    let name = disk.file_name()?.to_string_lossy().into_owned();
    let number = std::fs::read_to_string(disk.join("dev")).ok()?;
    Some((name, number.trim().to_string()))
}

/// A page-aligned buffer, as `O_DIRECT` needs.
struct Aligned {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        Self { ptr, layout }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in `new`.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// Forks a child named `weir-io-child` that makes [`WRITES`] then [`READS`] on `path` with
/// `O_DIRECT`, and exits; returns its pid once it has exited successfully. Forked rather than
/// executed: loading a program could read its pages from the same disk, in its name.
fn direct_io_child(path: &Path) -> u32 {
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let buf = Aligned::new(16384);
    // SAFETY: the child makes only system calls (async-signal-safe) on memory allocated
    // before the fork, then _exit()s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        unsafe {
            libc::prctl(libc::PR_SET_NAME, c"weir-io-child".as_ptr());
            let fd = libc::open(c_path.as_ptr(), libc::O_RDWR | libc::O_DIRECT);
            if fd < 0 {
                libc::_exit(2);
            }
            let mut off = 0;
            for n in WRITES {
                if libc::pwrite(fd, buf.ptr.cast(), n, off) != n as isize {
                    libc::_exit(3);
                }
                off += n as libc::off_t;
            }
            off = 0;
            for n in READS {
                if libc::pread(fd, buf.ptr.cast(), n, off) != n as isize {
                    libc::_exit(4);
                }
                off += n as libc::off_t;
            }
            libc::_exit(0);
        }
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the I/O child failed (status {status:#x})"
    );
    pid as u32
}

/// The reports in the order they were written: each is the metrics sharing one timestamp.
fn reports(events: &[Value]) -> Vec<Vec<&Value>> {
    let mut out: Vec<Vec<&Value>> = Vec::new();
    let mut last_ts = None;
    for e in events {
        let ts = e["timestamp"].as_str();
        if ts != last_ts || out.is_empty() {
            out.push(Vec::new());
            last_ts = ts;
        }
        if let Some(r) = out.last_mut() {
            r.push(e);
        }
    }
    out
}

fn has_pid(report: &[&Value], pid: &str) -> bool {
    report.iter().any(|e| e["tags"]["pid"] == pid)
}

/// The metric `name` of process `pid` and operation `op` in `report`.
fn series<'a>(report: &[&'a Value], name: &str, pid: &str, op: &str) -> Vec<&'a Value> {
    report
        .iter()
        .filter(|e| e["name"] == name && e["tags"]["pid"] == pid && e["tags"]["op"] == op)
        .copied()
        .collect()
}

fn counter(report: &[&Value], name: &str, pid: &str, op: &str) -> f64 {
    let s = series(report, name, pid, op);
    assert_eq!(s.len(), 1, "one {name} series for pid {pid} {op}: {s:#?}");
    s[0]["counter"]["value"].as_f64().unwrap()
}

#[test]
fn ebpf_io_counts_a_process_direct_reads_and_writes_exactly() {
    if !ebpf_available("ebpf_io_counts_a_process_direct_reads_and_writes_exactly") {
        return;
    }
    let Some(dir) = crate::harness::require(
        "a temporary directory on a block device (for O_DIRECT)",
        block_backed_dir(),
    ) else {
        return;
    };
    // Allocated and on disk before the child runs, so its writes only overwrite blocks:
    // no allocation, no metadata read in its name.
    let file = dir.path().join("data");
    std::fs::write(&file, vec![7u8; FILE_BYTES]).unwrap();
    std::fs::File::open(&file).unwrap().sync_all().unwrap();

    let agent = Agent::start(
        "type = \"ebpf_io\"\ninterval_secs = 1",
        "eBPF block I/O tracepoints attached",
    );
    // This test process makes one direct write too: it stays alive, so it is in every
    // report, and a report of it after the child's last shows the child was removed.
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&file)
            .unwrap();
        let buf = Aligned::new(4096);
        // SAFETY: 4096 initialised bytes.
        let block = unsafe { std::slice::from_raw_parts(buf.ptr, 4096) };
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start((FILE_BYTES - 4096) as u64)).unwrap();
        std::io::Write::write_all(&mut f, block).unwrap();
    }
    let child = direct_io_child(&file).to_string();
    let me = std::process::id().to_string();

    // The last report is left out while it may be half written.
    let found = crate::harness::wait_until(std::time::Duration::from_secs(20), || {
        let ev = agent.events();
        let reports = reports(&ev);
        let complete = &reports[..reports.len().saturating_sub(1)];
        let child_last = complete.iter().rposition(|r| has_pid(r, &child));
        let me_last = complete.iter().rposition(|r| has_pid(r, &me));
        matches!((child_last, me_last), (Some(c), Some(m)) if m > c)
    });
    let (log, all) = agent.finish();
    let trail: Vec<String> = all
        .iter()
        .filter(|e| e["tags"]["pid"] == child.as_str() || e["tags"]["pid"] == me.as_str())
        .filter(|e| e["name"] == "block_io_operations_total")
        .map(|e| {
            let t = &e["tags"];
            format!(
                "{} pid {} {} {}",
                e["timestamp"], t["pid"], t["op"], e["counter"]["value"]
            )
        })
        .collect();
    let trail = trail.join("\n");
    assert!(
        found,
        "no report of this process ({me}) after the child's ({child}) last:\n{trail}\n{log}"
    );
    // The child's last report: it exited before it, so its counts were final.
    let reports = reports(&all);
    let last = reports
        .iter()
        .rev()
        .find(|r| has_pid(r, &child))
        .unwrap()
        .clone();

    let written: usize = WRITES.iter().sum();
    let read: usize = READS.iter().sum();
    for (op, ops, bytes) in [
        ("write", WRITES.len(), written),
        ("read", READS.len(), read),
    ] {
        assert_eq!(
            counter(&last, "block_io_operations_total", &child, op),
            ops as f64,
            "{op}: {trail}"
        );
        assert_eq!(
            counter(&last, "block_io_bytes_total", &child, op),
            bytes as f64,
            "{op}"
        );
        assert_eq!(counter(&last, "block_io_errors_total", &child, op), 0.0);
        let h = series(&last, "block_io_latency_seconds", &child, op);
        assert_eq!(h.len(), 1, "{h:#?}");
        let hist = &h[0]["aggregated_histogram"];
        assert_eq!(hist["count"], ops, "{op}: {hist}");
        let in_buckets: u64 = hist["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum();
        assert_eq!(in_buckets, ops as u64, "{op}: {hist}");
        assert!(hist["sum"].as_f64().unwrap() > 0.0, "{op}: {hist}");

        let tags = &h[0]["tags"];
        assert_eq!(tags["comm"], "weir-io-child", "{tags}");
        if let Some((name, number)) = disk_of(&file) {
            assert_eq!(tags["device"], name, "{tags}");
            assert_eq!(tags["device_number"], number, "{tags}");
        }
        if weir_sources_ebpf::env::cgroup2_mount().is_some() {
            let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
            let cgroup = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
            assert_eq!(tags["cgroup"], cgroup, "{tags}");
        }
    }
    // Nothing else in the child's name (no metadata read, no flush).
    let others: Vec<&&Value> = last
        .iter()
        .filter(|e| e["tags"]["pid"] == child.as_str())
        .filter(|e| e["tags"]["op"] != "read" && e["tags"]["op"] != "write")
        .collect();
    assert!(others.is_empty(), "{others:#?}");
    assert!(!log.contains("ERROR"), "{log}");
}

/// A C program that opens the file given as its argument with `O_DIRECT`, waits for a line
/// on its stdin, makes [`WRITES`] from `weir_direct_write` then [`READS`] from
/// `weir_direct_read` (each through `weir_io_call`, so that the frame-pointer walk, which
/// skips the caller of a C library function that pushes no frame pointer, skips that one),
/// prints `done` and waits for its stdin to close (or, given `exit` as a second argument,
/// exits 0.5 s later). Compiled without optimisation and with frame pointers. `@WRITES@` and `@READS@` are replaced by the sizes.
const DIRECT_IO_C: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const long writes[] = {@WRITES@};
static const long reads[] = {@READS@};

__attribute__((noinline)) long weir_io_call(int write, int fd, char *buf, long n, long off)
{
    return write ? pwrite(fd, buf, n, off) : pread(fd, buf, n, off);
}

__attribute__((noinline)) int weir_direct_write(int fd, char *buf)
{
    long off = 0;
    for (unsigned i = 0; i < sizeof writes / sizeof writes[0]; i++) {
        if (weir_io_call(1, fd, buf, writes[i], off) != writes[i])
            return -1;
        off += writes[i];
    }
    return 0;
}

__attribute__((noinline)) int weir_direct_read(int fd, char *buf)
{
    long off = 0;
    for (unsigned i = 0; i < sizeof reads / sizeof reads[0]; i++) {
        if (weir_io_call(0, fd, buf, reads[i], off) != reads[i])
            return -1;
        off += reads[i];
    }
    return 0;
}

int main(int argc, char **argv)
{
    char line[64];
    void *buf;
    if (argc < 2 || posix_memalign(&buf, 4096, 16384) != 0)
        return 1;
    memset(buf, 7, 16384);
    int fd = open(argv[1], O_RDWR | O_DIRECT);
    if (fd < 0 || !fgets(line, sizeof line, stdin))
        return 2;
    if (weir_direct_write(fd, buf) != 0 || weir_direct_read(fd, buf) != 0)
        return 3;
    printf("done\n");
    fflush(stdout);
    if (argc > 2 && strcmp(argv[2], "exit") == 0) {
        usleep(500000);
        return 0;
    }
    while (fgets(line, sizeof line, stdin)) {
    }
    return 0;
}
"#;

/// Compiles [`DIRECT_IO_C`] into `dir`.
fn direct_io_program(dir: &Path) -> PathBuf {
    let list = |sizes: &[usize]| {
        sizes
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = DIRECT_IO_C
        .replace("@WRITES@", &list(&WRITES))
        .replace("@READS@", &list(&READS));
    let src = dir.join("direct_io.c");
    std::fs::write(&src, text).unwrap();
    let bin = dir.join("weir-io");
    let cc = std::process::Command::new("cc")
        .args(["-O0", "-fno-omit-frame-pointer", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("cc (installed by scripts/install-test-deps.sh)");
    assert!(cc.success());
    bin
}

/// The symbols of a sample's frames of `kind` (`user` or `kernel`), leaf first.
fn symbols(sample: &Value, kind: &str) -> Vec<String> {
    sample["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == kind)
        .map(|f| f["symbol"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// What a run of [`DIRECT_IO_C`] under `ebpf_io` with `stacks = true` left.
struct StacksRun {
    pid: u32,
    log: String,
    /// The default output's events.
    metrics: Vec<Value>,
    /// The output `stacks`' events.
    samples: Vec<Value>,
    /// With `exit`: when the program had exited (monotonic seconds).
    exited_at: Option<f64>,
}

/// Runs the program under `ebpf_io` (`stacks = true`, a report every `interval_secs`) until
/// it is done, then stops Weir, which drains the counts one last time. With `exit`, the
/// program exits on its own and its executable is deleted before Weir stops; without, it
/// lives until Weir has stopped. None when there is no block-backed directory here.
fn stacks_run(interval_secs: u32, exit: bool) -> Option<StacksRun> {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};

    let dir = crate::harness::require(
        "a temporary directory on a block device (for O_DIRECT)",
        block_backed_dir(),
    )?;
    // Allocated and on disk before the program runs, so its writes only overwrite blocks.
    let file = dir.path().join("data");
    std::fs::write(&file, vec![7u8; FILE_BYTES]).unwrap();
    std::fs::File::open(&file).unwrap().sync_all().unwrap();
    // Just written, the program is in the page cache: starting it reads nothing from disk.
    let bin = direct_io_program(dir.path());
    let mut program = Command::new(&bin)
        .arg(&file)
        .args(exit.then_some("exit"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = program.id();
    let mut stdin = program.stdin.take().unwrap();

    let agent = Agent::start_with(
        &format!("type = \"ebpf_io\"\ninterval_secs = {interval_secs}\nstacks = true"),
        "[sinks.stacks]\ntype = \"file\"\ninputs = [\"ebpf.stacks\"]\npath = \"{dir}/stacks.log\"\nencoding.codec = \"json\"",
        "eBPF block I/O tracepoints attached",
    );
    writeln!(stdin, "go").unwrap();
    let mut line = String::new();
    BufReader::new(program.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "done");
    let mut exited_at = None;
    if exit {
        assert!(program.wait().unwrap().success());
        exited_at = Some(weir_sources_ebpf::env::monotonic_ns() as f64 / 1e9);
        // Only the file Weir keeps open can name its functions now.
        std::fs::remove_file(&bin).unwrap();
    }
    let (log, metrics, samples) = agent.finish_with("stacks.log");
    drop(stdin);
    // (Once more with `exit`: the status it exited with.)
    assert!(program.wait().unwrap().success());
    Some(StacksRun {
        pid,
        log,
        metrics,
        samples,
        exited_at,
    })
}

/// The program's samples: from `weir_direct_write` and `weir_direct_read` only, through the
/// block layer, their bytes and requests exactly those made.
fn assert_exact_stacks(run: &StacksRun) -> Vec<&Value> {
    let pid = run.pid;
    let mine: Vec<&Value> = run.samples.iter().filter(|e| e["pid"] == pid).collect();
    for e in &mine {
        assert_eq!(e["event"], "block-io-bytes", "{e}");
        assert_eq!(e["comm"], "weir-io", "{e}");
        assert_eq!(e["tid"], pid, "single-threaded: {e}");
    }
    let written: usize = WRITES.iter().sum();
    let read: usize = READS.iter().sum();
    let mut counted = 0;
    for (function, requests, bytes) in [
        ("weir_direct_write", WRITES.len(), written),
        ("weir_direct_read", READS.len(), read),
    ] {
        let through: Vec<&&Value> = mine
            .iter()
            .filter(|e| symbols(e, "user").iter().any(|f| f == function))
            .collect();
        for e in &through {
            let user = symbols(e, "user");
            assert!(user.iter().any(|f| f == "main"), "{user:?}");
            // From the tracepoint's caller (the tracing machinery's frames are trimmed) to
            // the block layer's submission.
            let kernel = symbols(e, "kernel");
            assert!(
                kernel.first().is_some_and(|f| !f.starts_with("bpf_")),
                "{kernel:?}"
            );
            assert!(
                kernel.iter().any(|f| f == "blk_mq_submit_bio"),
                "the block layer's submission in the kernel stack: {kernel:?}"
            );
        }
        let period: i64 = through.iter().map(|e| e["period"].as_i64().unwrap()).sum();
        let count: i64 = through.iter().map(|e| e["count"].as_i64().unwrap()).sum();
        assert_eq!(period, bytes as i64, "{function}: {through:#?}");
        assert_eq!(count, requests as i64, "{function}: {through:#?}");
        counted += through.len();
    }
    // Nothing else in its name: every sample of it comes from one of the two functions.
    assert_eq!(counted, mine.len(), "{mine:#?}");
    assert!(!run.log.contains("ERROR"), "{}", run.log);
    mine
}

#[test]
fn ebpf_io_stacks_count_bytes_and_requests_by_the_stack_that_issued_them() {
    if !ebpf_available("ebpf_io_stacks_count_bytes_and_requests_by_the_stack_that_issued_them") {
        return;
    }
    let Some(run) = stacks_run(1, false) else {
        return;
    };
    assert_exact_stacks(&run);
    // The metrics stay on the default output, the samples only on `stacks`.
    let pid_tag = run.pid.to_string();
    assert!(
        run.metrics
            .iter()
            .any(|e| e["name"] == "block_io_bytes_total" && e["tags"]["pid"] == pid_tag.as_str()),
        "no metrics of the program"
    );
    assert!(run.metrics.iter().all(|e| e.get("frames").is_none()));
    assert!(run.samples.iter().all(|e| e.get("frames").is_some()));
}

#[test]
fn ebpf_io_stacks_of_a_process_that_exited_before_the_drain_are_named() {
    if !ebpf_available("ebpf_io_stacks_of_a_process_that_exited_before_the_drain_are_named") {
        return;
    }
    // No report until Weir stops (the interval is far off): the one made then drains the
    // program's counts after it exited.
    let Some(run) = stacks_run(600, true) else {
        return;
    };
    let mine = assert_exact_stacks(&run);
    let exited_at = run.exited_at.unwrap();
    for e in &mine {
        assert!(
            e["timestamp"].as_f64().unwrap() > exited_at,
            "drained before the program exited: {e}"
        );
    }
    let module = mine
        .iter()
        .flat_map(|e| e["frames"].as_array().unwrap())
        .find(|f| f["symbol"] == "weir_direct_write")
        .map(|f| f["module"].clone());
    assert!(
        module.is_some_and(|m| m.as_str().is_some_and(|m| m.ends_with("weir-io"))),
        "{mine:#?}"
    );
}

#[test]
fn ebpf_io_has_a_stacks_output_only_with_stacks() {
    let dir = tempfile::tempdir().unwrap();
    let config = |stacks: bool| {
        format!(
            "[sources.io]\ntype = \"ebpf_io\"\nstacks = {stacks}\n[sinks.out]\ntype = \"console\"\ninputs = [\"io.stacks\"]\nencoding.codec = \"json\"\n"
        )
    };
    let validate = |name: &str, stacks: bool| {
        let path = crate::harness::write_config(dir.path(), name, &config(stacks));
        crate::harness::weir()
            .args(["validate", "--no-environment"])
            .arg(&path)
            .output()
            .unwrap()
    };
    let out = validate("with.toml", true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = validate("without.toml", false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("`io` has no output named `stacks`"),
        "{stderr}"
    );
}
