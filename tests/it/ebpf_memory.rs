//! `ebpf_memory` against the real kernel: a C program allocates known sizes from known
//! functions and frees half, or touches a known number of fresh pages, and the source's stack
//! samples must say exactly that. Skips like the other eBPF tests
//! ([`crate::ebpf::ebpf_available`]).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::ebpf::{ebpf_available, Agent};

/// `weir_alloc_a` mallocs [`A_COUNT`] blocks of [`A_SIZE`] bytes, `weir_alloc_b` callocs
/// [`B_COUNT`] of [`B_SIZE`]; `weir_free_half` frees every other block of each. Or, given a
/// number N, `weir_touch_pages` maps N fresh anonymous pages (no huge pages) and writes one
/// byte to each. Compiled without optimisation and with frame pointers: the functions stay
/// where they are written, and the kernel can walk their stacks.
const MEMORY_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void *blocks_a[100];
static void *blocks_b[50];

__attribute__((noinline)) void weir_alloc_a(void)
{
    for (int i = 0; i < 100; i++)
        blocks_a[i] = malloc(4096);
}

__attribute__((noinline)) void weir_alloc_b(void)
{
    for (int i = 0; i < 50; i++)
        blocks_b[i] = calloc(1, 10000);
}

__attribute__((noinline)) void weir_free_half(void)
{
    for (int i = 0; i < 100; i += 2)
        free(blocks_a[i]);
    for (int i = 0; i < 50; i += 2)
        free(blocks_b[i]);
}

__attribute__((noinline)) long weir_touch_pages(long n)
{
    long page = sysconf(_SC_PAGESIZE);
    char *p = mmap(0, n * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return -1;
    /* One fault per page: no transparent huge page may serve many at once. */
    if (madvise(p, n * page, MADV_NOHUGEPAGE) != 0)
        return -1;
    volatile char *v = p;
    for (long i = 0; i < n; i++)
        v[i * page] = 1;
    return 0;
}

int main(int argc, char **argv)
{
    char line[64];
    if (argc < 2 || !fgets(line, sizeof line, stdin))
        return 1;
    if (strcmp(argv[1], "alloc") == 0) {
        weir_alloc_a();
        weir_alloc_b();
        weir_free_half();
    } else if (weir_touch_pages(atol(argv[1])) != 0) {
        return 2;
    }
    printf("done\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
    }
    return 0;
}
"#;

const A_COUNT: i64 = 100;
const A_SIZE: i64 = 4096;
const B_COUNT: i64 = 50;
const B_SIZE: i64 = 10000;

/// Compiles [`MEMORY_C`] into `dir`.
fn memory_program(dir: &Path) -> PathBuf {
    let src = dir.join("memory.c");
    std::fs::write(&src, MEMORY_C).unwrap();
    let bin = dir.join("weir-mem");
    let cc = Command::new("cc")
        .args(["-O0", "-fno-omit-frame-pointer", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("cc (installed by scripts/install-test-deps.sh)");
    assert!(cc.success());
    bin
}

/// The program started with `arg`, waiting for a line on its stdin.
fn start_program(dir: &Path, arg: &str) -> (Child, ChildStdin) {
    let bin = memory_program(dir);
    let mut child = Command::new(&bin)
        .arg(arg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

/// Lets the program go and waits until it says `done`; returns the monotonic time then.
fn go(child: &mut Child, stdin: &mut ChildStdin) -> f64 {
    writeln!(stdin, "go").unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "done");
    weir_sources_ebpf::env::monotonic_ns() as f64 / 1e9
}

/// The user functions of a sample's stack, leaf first.
fn functions(e: &Value) -> Vec<String> {
    e["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "user")
        .map(|f| f["symbol"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn int(e: &Value, field: &str) -> i64 {
    e[field].as_i64().unwrap()
}

#[test]
fn ebpf_memory_reports_outstanding_bytes_per_stack_exactly() {
    if !ebpf_available("ebpf_memory_reports_outstanding_bytes_per_stack_exactly") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut stdin) = start_program(dir.path(), "alloc");
    let pid = child.id();
    let agent = Agent::start(
        &format!("type = \"ebpf_memory\"\ninterval_secs = 1\nallocations = {{ pids = [{pid}] }}"),
        "eBPF memory probes attached",
    );
    let done = go(&mut child, &mut stdin);
    // The first report made entirely after the program freed half: every sample of it.
    let report = agent.wait_for("a report after the frees", |ev| {
        let after: Vec<&Value> = ev
            .iter()
            .filter(|e| e["timestamp"].as_f64().unwrap() > done)
            .collect();
        let first = after.first()?["timestamp"].as_f64()?;
        // Complete once a later report has begun.
        after
            .iter()
            .any(|e| e["timestamp"].as_f64().unwrap() > first)
            .then(|| {
                after
                    .iter()
                    .filter(|e| e["timestamp"].as_f64().unwrap() == first)
                    .map(|e| (*e).clone())
                    .collect::<Vec<Value>>()
            })
    });
    drop(stdin);
    child.wait().unwrap();
    let log = agent.stop();
    assert!(!log.contains("ERROR"), "{log}");
    for e in &report {
        assert_eq!(e["pid"], pid, "only the traced process: {e}");
        assert_eq!(e["event"], "allocations", "{e}");
        assert_eq!(e["comm"], "weir-mem", "{e}");
    }
    // Per stack through each function: exactly the half left.
    for (function, count, size, allocator) in [
        ("weir_alloc_a", A_COUNT, A_SIZE, "malloc"),
        ("weir_alloc_b", B_COUNT, B_SIZE, "calloc"),
    ] {
        let samples: Vec<&Value> = report
            .iter()
            .filter(|e| functions(e).iter().any(|f| f == function))
            .collect();
        assert_eq!(
            samples.len(),
            1,
            "one stack through {function}: {report:#?}"
        );
        let e = samples[0];
        assert_eq!(int(e, "count"), count / 2, "{e}");
        assert_eq!(int(e, "period"), count / 2 * size, "{e}");
        // Allocator, the function that called it (its return address), its caller.
        let f = functions(e);
        assert!(f[0].contains(allocator), "{f:?}");
        assert_eq!(f[1], function, "{f:?}");
        assert_eq!(f[2], "main", "{f:?}");
    }
}

/// Runs the program touching `pages` fresh pages under `ebpf_memory` with `page_faults`
/// set to `setting` (`$PID` is the program's pid); returns its pid and every sample that
/// arrived until a complete report made after it was done.
fn page_fault_run(pages: i64, setting: &str) -> (u32, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut stdin) = start_program(dir.path(), &pages.to_string());
    let pid = child.id();
    let agent = Agent::start(
        &format!(
            "type = \"ebpf_memory\"\ninterval_secs = 1\npage_faults = {}",
            setting.replace("$PID", &pid.to_string())
        ),
        "eBPF memory probes attached",
    );
    let done = go(&mut child, &mut stdin);
    // The first report that started after the program was done has all its faults. Filtered
    // to the program, it is one batch of a few samples (and no report follows: the program
    // faults no more); with every process, it is complete once the next one has begun.
    let reports = if setting == "true" { 2 } else { 1 };
    agent.wait_for("a complete report after the pages were touched", |ev| {
        let mut after: Vec<f64> = ev
            .iter()
            .map(|e| e["timestamp"].as_f64().unwrap())
            .filter(|t| *t > done)
            .collect();
        after.dedup();
        (after.len() >= reports).then_some(())
    });
    let events = agent.events();
    drop(stdin);
    child.wait().unwrap();
    let log = agent.stop();
    assert!(!log.contains("ERROR"), "{log}");
    (pid, events)
}

#[test]
fn ebpf_memory_counts_page_faults_on_the_stack_that_touched_the_pages() {
    if !ebpf_available("ebpf_memory_counts_page_faults_on_the_stack_that_touched_the_pages") {
        return;
    }
    const PAGES: i64 = 1000;
    // Filtered to the program, so that no other process's stack can take its stack's slot
    // in the kernel's stack map (a collision would count its faults without frames).
    let (pid, events) = page_fault_run(PAGES, "{ pid = $PID }");
    let mut touching = 0;
    for e in &events {
        assert_eq!(
            e["pid"], pid,
            "the pid filter let another process through: {e}"
        );
        assert_eq!(e["event"], "page-faults", "{e}");
        assert_eq!(e["comm"], "weir-mem", "{e}");
        assert_eq!(e["period"], e["count"], "a fault weighs one: {e}");
        let f = functions(e);
        if f.first().is_some_and(|f| f == "weir_touch_pages") {
            assert_eq!(f.get(1).map(String::as_str), Some("main"), "{e}");
            touching += int(e, "count");
        }
    }
    assert!(
        touching >= PAGES,
        "{touching} faults in weir_touch_pages for {PAGES} pages: {events:#?}"
    );
}

#[test]
fn ebpf_memory_counts_the_page_faults_of_every_process() {
    if !ebpf_available("ebpf_memory_counts_the_page_faults_of_every_process") {
        return;
    }
    const PAGES: i64 = 500;
    let (pid, events) = page_fault_run(PAGES, "true");
    let mine: i64 = events
        .iter()
        .filter(|e| e["pid"] == pid)
        .map(|e| int(e, "count"))
        .sum();
    assert!(
        mine >= PAGES,
        "{mine} faults of the program for {PAGES} pages"
    );
    // Weir itself faults while it symbolises, at least.
    assert!(
        events.iter().any(|e| e["pid"] != pid),
        "only the program's faults with page_faults = true"
    );
    for e in &events {
        assert_eq!(e["event"], "page-faults", "{e}");
        assert_eq!(e["period"], e["count"], "{e}");
    }
}

#[test]
fn ebpf_memory_refuses_a_config_with_nothing_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = crate::harness::write_config(
        dir.path(),
        "weir.toml",
        "[sources.m]\ntype = \"ebpf_memory\"\n[sinks.o]\ntype = \"blackhole\"\ninputs = [\"m\"]\n",
    );
    let out = crate::harness::wait_with_timeout(
        crate::harness::weir()
            .args(["run", "--config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(20),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("set `allocations` or `page_faults`"), "{err}");
}
