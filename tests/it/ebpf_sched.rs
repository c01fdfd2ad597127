//! `ebpf_sched` (and `ebpf_profile`'s triggers) against the real kernel: a child program does
//! known scheduling things, and the metrics must match what the kernel itself reports
//! (`/proc/<pid>/status`) or what the child measured. Same rules as [`crate::ebpf`].

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::Value;

use crate::ebpf::{ebpf_available, Agent};

const SCHED_C: &str = r#"
#define _GNU_SOURCE
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static long long now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000LL + t.tv_nsec;
}

/* Spins for `ns` without a system call (the clock is read in the vDSO). */
static void spin(long long ns)
{
    long long end = now_ns() + ns;
    while (now_ns() < end) {
    }
}

/* Blocks on the mutex main holds, and says for how long. */
static void *waiter(void *arg)
{
    long long t0 = now_ns();
    pthread_mutex_lock(&lock);
    long long waited = now_ns() - t0;
    pthread_mutex_unlock(&lock);
    printf("waited %lld\n", waited);
    fflush(stdout);
    return arg;
}

/* Spins while the last line read was `spin`, blocks reading otherwise; ends at EOF. */
static int toggle(void)
{
    char line[64];
    int spinning = 0;
    struct pollfd p = {0, POLLIN, 0};
    for (;;) {
        if (spinning && poll(&p, 1, 0) <= 0)
            continue;
        if (!fgets(line, sizeof line, stdin))
            return 0;
        spinning = strncmp(line, "spin", 4) == 0;
    }
}

int main(int argc, char **argv)
{
    char line[64];
    if (argc == 2 && strcmp(argv[1], "toggle") == 0)
        return toggle();
    if (argc < 2 || !fgets(line, sizeof line, stdin))
        return 1;
    if (strcmp(argv[1], "switches") == 0) {
        /* 200 voluntary switches at least (1 ms sleeps)... */
        struct timespec ms = {0, 1000000};
        for (int i = 0; i < 200; i++)
            nanosleep(&ms, 0);
        /* ...and involuntary ones: this process and a child of it spin on one CPU for a
           second, preempting each other. One thread, as /proc/<pid>/status counts the main
           thread's switches. */
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(0, &set);
        sched_setaffinity(0, sizeof set, &set);
        pid_t c = fork();
        spin(1000000000LL);
        if (c == 0)
            _exit(0);
        waitpid(c, 0, 0);
        printf("done\n");
        fflush(stdout);
    } else {
        /* A thread blocked on a futex (the mutex) for 2 s. */
        pthread_mutex_lock(&lock);
        pthread_t w;
        pthread_create(&w, 0, waiter, 0);
        struct timespec s = {2, 0};
        nanosleep(&s, 0);
        pthread_mutex_unlock(&lock);
    }
    /* Blocked (no context switch) until the test closes stdin. */
    while (fgets(line, sizeof line, stdin)) {
    }
    return 0;
}
"#;

/// Compiles [`SCHED_C`] into `dir`.
fn sched_program(dir: &Path) -> PathBuf {
    let src = dir.join("sched.c");
    std::fs::write(&src, SCHED_C).unwrap();
    let bin = dir.join("weir-sched");
    let cc = Command::new("cc")
        .args(["-O1", "-pthread", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("cc (installed by scripts/install-test-deps.sh)");
    assert!(cc.success());
    bin
}

/// The child, waiting for `go` on stdin.
fn spawn(bin: &Path, mode: &str) -> (Child, ChildStdin, BufReader<ChildStdout>) {
    let mut child = Command::new(bin)
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (child, stdin, stdout)
}

/// A field of `/proc/<pid>/status`.
fn proc_status(pid: u32, field: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .parse()
        .unwrap()
}

/// The value of the counter `name` (with tag `tag` when given) for `pid` in the first report
/// made after `after`.
fn counter_after(
    events: &[Value],
    pid: u32,
    name: &str,
    tag: Option<(&str, &str)>,
    after: chrono::DateTime<chrono::Utc>,
) -> Option<f64> {
    events
        .iter()
        .filter(|e| {
            e["name"] == name
                && of_pid(e, pid)
                && tag.is_none_or(|(k, v)| e["tags"][k] == v)
                && e["timestamp"]
                    .as_str()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t > after)
        })
        .find_map(|e| e["counter"]["value"].as_f64())
}

/// Whether metric event `e` is tagged with process `pid`.
fn of_pid(e: &Value, pid: u32) -> bool {
    e["tags"]["pid"].as_str().and_then(|p| p.parse().ok()) == Some(pid)
}

fn within(got: f64, want: f64, fraction: f64) -> bool {
    (got - want).abs() <= want * fraction
}

#[test]
fn ebpf_sched_counts_context_switches_as_proc_does() {
    if !ebpf_available("ebpf_sched_counts_context_switches_as_proc_does") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = sched_program(dir.path());
    // Every process: the child must be seen from its first switch (fork), as /proc counts.
    let agent = Agent::start(
        "type = \"ebpf_sched\"\ninterval_secs = 1",
        "eBPF scheduler tracepoints attached",
    );
    let (mut child, mut stdin, mut stdout) = spawn(&bin, "switches");
    let pid = child.id();
    writeln!(stdin, "go").unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "done");
    // The child now blocks reading stdin: its counts stay where they are.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let read_at = chrono::Utc::now();
    let voluntary = proc_status(pid, "voluntary_ctxt_switches");
    let involuntary = proc_status(pid, "nonvoluntary_ctxt_switches");
    // The kernel's own sum of the (single) thread's on-CPU intervals, in ns.
    let cpu_ns: f64 = std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (vol, invol) = agent.wait_for("a report after /proc was read", |ev| {
        let v = counter_after(
            ev,
            pid,
            "sched_context_switches_total",
            Some(("kind", "voluntary")),
            read_at,
        )?;
        let i = counter_after(
            ev,
            pid,
            "sched_context_switches_total",
            Some(("kind", "involuntary")),
            read_at,
        )?;
        Some((v, i))
    });
    drop(stdin);
    child.wait().unwrap();
    let (log, events) = agent.finish();
    assert!(!log.contains("ERROR"), "{log}");
    // Nothing was dropped in the kernel (counted errors are logged with their kind).
    assert!(!log.contains("error_kind"), "{log}");
    eprintln!(
        "voluntary: weir {vol}, /proc {voluntary}; involuntary: weir {invol}, /proc {involuntary}"
    );
    // The child did switch both ways, so the comparison means something.
    assert!(voluntary >= 200.0, "/proc: {voluntary} voluntary");
    assert!(involuntary >= 20.0, "/proc: {involuntary} involuntary");
    assert!(
        within(vol, voluntary, 0.01),
        "voluntary: weir {vol}, /proc {voluntary}"
    );
    assert!(
        within(invol, involuntary, 0.01),
        "involuntary: weir {invol}, /proc {involuntary}"
    );
    // The tags of the other eBPF sources, and the name after exec.
    let m = events.iter().find(|e| of_pid(e, pid)).unwrap();
    assert_eq!(m["tags"]["comm"], "weir-sched", "{m}");
    assert!(
        m["tags"]["cgroup_id"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    // It spun for a second, sharing the CPU: its CPU time is the scheduler's own account (the
    // same nanoseconds, read at each switch), and its run-queue waits were counted.
    let cpu = counter_after(&events, pid, "sched_cpu_seconds_total", None, read_at).unwrap();
    eprintln!(
        "CPU: weir {cpu} s, /proc/{pid}/schedstat {} s",
        cpu_ns / 1e9
    );
    assert!(cpu_ns > 0.0);
    assert!(
        within(cpu, cpu_ns / 1e9, 0.02),
        "CPU: weir {cpu} s, /proc/{pid}/schedstat {cpu_ns} ns"
    );
    let runq = events
        .iter()
        .rfind(|e| e["name"] == "sched_runqueue_latency_seconds" && of_pid(e, pid))
        .unwrap();
    let h = &runq["aggregated_histogram"];
    let bucket_total: u64 = h["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(bucket_total, h["count"].as_u64().unwrap(), "{runq}");
    // Each involuntary switch left it runnable, waiting for the CPU.
    assert!(bucket_total as f64 >= involuntary, "{runq}");
}

#[test]
fn ebpf_sched_measures_a_futex_wait() {
    if !ebpf_available("ebpf_sched_measures_a_futex_wait") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = sched_program(dir.path());
    let (mut child, mut stdin, mut stdout) = spawn(&bin, "futex");
    let pid = child.id();
    let agent = Agent::start(
        &format!("type = \"ebpf_sched\"\ninterval_secs = 1\npid = {pid}\nfutex = true"),
        "eBPF scheduler tracepoints attached",
    );
    writeln!(stdin, "go").unwrap();
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let waited: f64 = line
        .trim()
        .strip_prefix("waited ")
        .unwrap()
        .parse::<f64>()
        .unwrap()
        / 1e9;
    let read_at = chrono::Utc::now();
    let (futex, blocked) = agent.wait_for("a report after the wait", |ev| {
        Some((
            counter_after(ev, pid, "sched_futex_wait_seconds_total", None, read_at)?,
            counter_after(
                ev,
                pid,
                "sched_blocked_seconds_total",
                Some(("reason", "futex")),
                read_at,
            )?,
        ))
    });
    drop(stdin);
    child.wait().unwrap();
    let (log, events) = agent.finish();
    assert!(!log.contains("ERROR"), "{log}");
    // Nothing was dropped in the kernel (counted errors are logged with their kind).
    assert!(!log.contains("error_kind"), "{log}");
    assert!(
        events.iter().all(|e| of_pid(e, pid)),
        "the pid filter let other processes through"
    );
    eprintln!("futex wait: weir {futex} s, blocked {blocked} s, the child {waited} s");
    // The waiter measured its own wait for the mutex main held for 2 s.
    assert!(waited >= 1.0, "the child waited only {waited} s");
    assert!(
        within(futex, waited, 0.05),
        "futex wait: weir {futex} s, the child {waited} s"
    );
    assert!(
        within(blocked, waited, 0.05),
        "blocked on a futex: weir {blocked} s, the child {waited} s"
    );
    // main slept those 2 s: that is sleep, not futex.
    let sleep = counter_after(
        &events,
        pid,
        "sched_blocked_seconds_total",
        Some(("reason", "sleep")),
        read_at,
    )
    .unwrap();
    assert!(sleep >= 1.9, "{sleep} s asleep");
}

/// The `at` (monotonic seconds) of the last "profiling trigger released" line of the log, if
/// that is the last line about the trigger.
fn released_at(log: &str) -> Option<f64> {
    let last = log.lines().rfind(|l| {
        l.contains("profiling trigger holds") || l.contains("profiling trigger released")
    })?;
    if !last.contains("released") {
        return None;
    }
    last.split_whitespace()
        .find_map(|w| w.strip_prefix("at="))?
        .parse()
        .ok()
}

#[test]
fn ebpf_profile_records_only_while_its_trigger_holds() {
    if !ebpf_available("ebpf_profile_records_only_while_its_trigger_holds") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = sched_program(dir.path());
    // The profiled process spins all along; the load process spins only when told to.
    let (mut profiled, mut profiled_in, _out1) = spawn(&bin, "toggle");
    writeln!(profiled_in, "spin").unwrap();
    let (mut load, mut load_in, _out2) = spawn(&bin, "toggle");
    let (pid, load_pid) = (profiled.id(), load.id());
    let agent = Agent::start(
        &format!(
            "type = \"ebpf_profile\"\nfrequency_hz = 99\ninterval_secs = 1\npid = {pid}\n\
             trigger = {{ metric = \"process_cpu\", pid = {load_pid}, above = 0.05, check_interval_secs = 0.5 }}"
        ),
        "eBPF profiler attached",
    );
    let mine =
        |ev: &[Value]| -> Vec<Value> { ev.iter().filter(|e| e["pid"] == pid).cloned().collect() };
    // Below the threshold: two drains and four checks, and nothing recorded.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert!(
        mine(&agent.events()).is_empty(),
        "samples below the threshold"
    );
    assert!(
        !agent.log().contains("profiling trigger holds"),
        "{}",
        agent.log()
    );

    // Above it: samples.
    writeln!(load_in, "spin").unwrap();
    let first = agent.wait_for("samples while the load process spins", |ev| {
        let m = mine(ev);
        (!m.is_empty()).then_some(m)
    });
    writeln!(load_in, "idle").unwrap();
    // A few checks, then the last word about the trigger must be that it was released.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let mut at = None;
    crate::harness::wait_until(std::time::Duration::from_secs(10), || {
        at = released_at(&agent.log());
        at.is_some()
    });
    let at = at.unwrap_or_else(|| panic!("the trigger was never released: {}", agent.log()));
    // Below it again: two more drains, and nothing recorded after the release.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    drop(load_in);
    drop(profiled_in);
    load.wait().unwrap();
    profiled.wait().unwrap();
    let (log, events) = agent.finish();
    assert!(!log.contains("ERROR"), "{log}");
    // Nothing was dropped in the kernel (counted errors are logged with their kind).
    assert!(!log.contains("error_kind"), "{log}");
    let events = mine(&events);
    assert!(events.len() >= first.len());
    let condition = format!("process_cpu(pid {load_pid}) > 0.05");
    for e in &events {
        assert_eq!(e["trigger"]["condition"], condition.as_str(), "{e}");
        assert!(e["trigger"]["value"].as_f64().unwrap() > 0.05, "{e}");
        assert!(
            e["timestamp"].as_f64().unwrap() <= at,
            "recorded after the trigger was released at {at}: {e}"
        );
    }
}
