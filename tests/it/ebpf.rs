//! The eBPF sources against the real kernel: the real `weir` binary loads the programs, real
//! child processes do known things, and the events must describe exactly those.
//!
//! Loading eBPF needs root (CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN) and kernel BTF. Where
//! they are missing the tests print why and pass without checking anything, except under CI
//! (`CI` or `WEIR_REQUIRE_EBPF` set, as `.ci/run` does), where that is a failure.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{sigterm, wait_until, wait_with_timeout, weir, write_config};

/// Whether eBPF can be tested here; prints why not, and panics when CI requires it.
fn ebpf_available(test: &str) -> bool {
    let why = if !weir_sources_ebpf::env::has_privileges() {
        Some("missing CAP_BPF+CAP_PERFMON or CAP_SYS_ADMIN (run as root)")
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("the kernel has no BTF (/sys/kernel/btf/vmlinux)")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) => {
            let required =
                std::env::var_os("WEIR_REQUIRE_EBPF").is_some() || std::env::var_os("CI").is_some();
            assert!(!required, "{test}: eBPF is required under CI but {why}");
            eprintln!("SKIPPED {test}: {why}");
            false
        }
    }
}

/// A running `weir` with one eBPF source writing JSON lines to `out.log`.
struct Agent {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Agent {
    fn start(source: &str, ready_log: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"
data_dir = "{data}"
[api]
enabled = false
[sources.ebpf]
{source}
[sinks.out]
type = "file"
inputs = ["ebpf"]
path = "{out}"
encoding.codec = "json"
"#,
            data = dir.path().display(),
            out = dir.path().join("out.log").display(),
        );
        let cfg = write_config(dir.path(), "weir.toml", &text);
        let log = File::create(dir.path().join("weir.log")).unwrap();
        let child = weir()
            .args(["run", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let agent = Self {
            dir,
            child: Some(child),
        };
        let ok = wait_until(Duration::from_secs(20), || agent.log().contains(ready_log));
        assert!(ok, "weir did not attach: {}", agent.log());
        agent
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("weir.log")).unwrap_or_default()
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out.log")
    }

    /// The events written so far.
    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.out())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Polls until `f` finds what it wants in the events.
    fn wait_for<T>(&self, what: &str, mut f: impl FnMut(&[Value]) -> Option<T>) -> T {
        let mut found = None;
        wait_until(Duration::from_secs(15), || {
            found = f(&self.events());
            found.is_some()
        });
        match found {
            Some(t) => t,
            None => panic!("{what} never arrived; weir log:\n{}", self.log()),
        }
    }

    fn stop(mut self) -> String {
        if let Some(child) = self.child.take() {
            sigterm(&child);
            let out = wait_with_timeout(child, Duration::from_secs(20));
            assert!(out.status.success(), "weir failed: {}", self.log());
        }
        self.log()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn find<'a>(events: &'a [Value], kind: &str, pid: u32) -> Option<&'a Value> {
    events
        .iter()
        .find(|e| e["event"] == kind && e["pid"] == pid)
}

#[test]
fn ebpf_process_reports_exec_fork_and_exit() {
    if !ebpf_available("ebpf_process_reports_exec_fork_and_exit") {
        return;
    }
    let agent = Agent::start(
        "type = \"ebpf_process\"",
        "eBPF process tracepoints attached",
    );
    // A child that execs a known binary with known argv and exits with 3.
    let argv = ["/bin/sh", "-c", "exit 3", "weir-ebpf-marker"];
    let mut child = Command::new(argv[0]).args(&argv[1..]).spawn().unwrap();
    let pid = child.id();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3));

    let (fork, exec, exit) = agent.wait_for("fork, exec and exit of the child", |ev| {
        Some((
            find(ev, "fork", pid)?.clone(),
            find(ev, "exec", pid)?.clone(),
            find(ev, "exit", pid)?.clone(),
        ))
    });
    assert_eq!(fork["ppid"], std::process::id(), "{fork}");
    assert_eq!(exec["filename"], "/bin/sh", "{exec}");
    assert_eq!(exec["argv"], serde_json::json!(argv), "{exec}");
    assert_eq!(exec["argv_truncated"], false, "{exec}");
    assert_eq!(exec["ppid"], std::process::id(), "{exec}");
    assert_eq!(exec["comm"], "sh", "{exec}");
    assert_eq!(exit["exit_code"], 3, "{exit}");
    assert_eq!(exit["signal"], Value::Null, "{exit}");
    assert_eq!(exit["comm"], "sh", "{exit}");
    let lifetime = exit["lifetime_secs"].as_f64().unwrap();
    assert!(lifetime > 0.0 && lifetime < 60.0, "{exit}");
    assert!(exit["cpu_secs"].as_f64().unwrap() > 0.0, "{exit}");

    // A process killed by a signal has no exit code but the signal.
    let mut sleeper = Command::new("/bin/sleep").arg("30").spawn().unwrap();
    let spid = sleeper.id();
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    let killed = agent.wait_for("exit of the killed child", |ev| {
        find(ev, "exit", spid).cloned()
    });
    assert_eq!(killed["signal"], 9, "{killed}");
    assert_eq!(killed["exit_code"], Value::Null, "{killed}");

    let log = agent.stop();
    assert!(!log.contains("ERROR"), "{log}");
}

const PEER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/ebpf_tcp_peer.pl");

/// A server and a client child process exchange known byte counts over `host`, then close
/// (`normal` or `reset`); returns (server pid, client pid, server port).
fn tcp_exchange(host: &str, to_server: usize, to_client: usize, mode: &str) -> (u32, u32, u16) {
    use std::io::{BufRead, BufReader};
    let mut server = Command::new("perl")
        .args([PEER, "server", host])
        .args([to_client.to_string(), to_server.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let port: u16 = line.trim().parse().unwrap();
    let client = Command::new("perl")
        .args([PEER, "client", host, &port.to_string()])
        .args([
            to_server.to_string(),
            to_client.to_string(),
            mode.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let client_pid = client.id();
    let c = wait_with_timeout(client, Duration::from_secs(20));
    assert!(c.status.success(), "client failed");
    assert_eq!(
        String::from_utf8_lossy(&c.stdout).trim(),
        format!("received {to_client}")
    );
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(server.wait().unwrap().success(), "server failed");
    assert_eq!(rest.trim(), format!("received {to_server}"));
    (server.id(), client_pid, port)
}

fn connection<'a>(ev: &'a [Value], direction: &str, pid: u32, port: u16) -> Option<&'a Value> {
    let port_field = if direction == "inbound" {
        "local_port"
    } else {
        "remote_port"
    };
    ev.iter().find(|e| {
        e["event"] == "tcp_connection"
            && e["direction"] == direction
            && e["pid"] == pid
            && e[port_field] == port
    })
}

#[test]
fn ebpf_tcp_reports_connections_with_pids_and_bytes() {
    if !ebpf_available("ebpf_tcp_reports_connections_with_pids_and_bytes") {
        return;
    }
    let agent = Agent::start("type = \"ebpf_tcp\"", "eBPF TCP tracepoints attached");
    for (host, family, mode) in [
        ("127.0.0.1", "ipv4", "normal"),
        ("::1", "ipv6", "normal"),
        ("127.0.0.1", "ipv4", "reset"),
        ("::1", "ipv6", "reset"),
    ] {
        let (to_server, to_client) = (100_000, 7_000);
        let (spid, cpid, port) = tcp_exchange(host, to_server, to_client, mode);
        let (inbound, outbound) = agent.wait_for("both ends of the connection", |ev| {
            Some((
                connection(ev, "inbound", spid, port)?.clone(),
                connection(ev, "outbound", cpid, port)?.clone(),
            ))
        });
        let ctx = format!("{host} {mode}:\n{inbound}\n{outbound}");
        for e in [&inbound, &outbound] {
            assert_eq!(e["family"], family, "{ctx}");
            assert_eq!(e["local_addr"], host, "{ctx}");
            assert_eq!(e["remote_addr"], host, "{ctx}");
            assert_eq!(e["comm"], "perl", "{ctx}");
            assert!(e["duration_secs"].as_f64().unwrap() > 0.0, "{ctx}");
            assert!(e["srtt_us"].as_i64().unwrap() > 0, "{ctx}");
            assert!(e["cwnd"].as_i64().unwrap() > 0, "{ctx}");
        }
        assert_eq!(inbound["remote_port"], outbound["local_port"], "{ctx}");
        // The kernel's counters (as `ss -i` shows them) are sequence space: bytes_acked
        // counts the SYN of the side that connected and each side's FIN; bytes_received
        // counts the peer's FIN. A reset carries no FIN.
        let normal = usize::from(mode == "normal");
        assert_eq!(outbound["bytes_acked"], to_server + 1 + normal, "{ctx}");
        assert_eq!(outbound["bytes_received"], to_client + normal, "{ctx}");
        assert_eq!(inbound["bytes_acked"], to_client + normal, "{ctx}");
        assert_eq!(inbound["bytes_received"], to_server + normal, "{ctx}");
        if mode == "normal" {
            assert_eq!(outbound["close_reason"], "normal", "{ctx}");
            assert_eq!(inbound["close_reason"], "normal", "{ctx}");
        } else {
            assert_eq!(outbound["close_reason"], "reset_sent", "{ctx}");
            assert_eq!(inbound["close_reason"], "reset_received", "{ctx}");
        }
    }
    let log = agent.stop();
    assert!(!log.contains("ERROR"), "{log}");
}

/// A C program that waits for a line on stdin, spins in `weir_spin_target` for 2 s of CPU, says
/// `done`, then waits for stdin to close (so it is still alive, and its mappings readable,
/// when the samples are symbolised).
const SPIN_C: &str = r#"
#include <stdio.h>
#include <time.h>

__attribute__((noinline)) unsigned long weir_spin_target(void)
{
    volatile unsigned long x = 0;
    struct timespec start, now;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &start);
    do {
        for (int i = 0; i < 1000000; i++)
            x += i;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
    } while ((now.tv_sec - start.tv_sec) * 1000000000L + (now.tv_nsec - start.tv_nsec) < 2000000000L);
    return x;
}

int main(void)
{
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        return 1;
    weir_spin_target();
    printf("done\n");
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
    }
    return 0;
}
"#;

#[test]
fn ebpf_profile_finds_the_spinning_function() {
    use std::io::{BufRead, BufReader, Write};
    if !ebpf_available("ebpf_profile_finds_the_spinning_function") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("spin.c");
    std::fs::write(&src, SPIN_C).unwrap();
    let bin = dir.path().join("weir-spin");
    let cc = Command::new("cc")
        .args(["-O0", "-fno-omit-frame-pointer", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .expect("cc (installed by .ci/run)");
    assert!(cc.success());
    let mut child = Command::new(&bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let agent = Agent::start(
        &format!("type = \"ebpf_profile\"\nfrequency_hz = 99\ninterval_secs = 1\npid = {pid}"),
        "eBPF profiler attached",
    );
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "go").unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "done");
    // Two more drains.
    std::thread::sleep(Duration::from_millis(2500));
    let events = agent.events();
    drop(stdin);
    child.wait().unwrap();
    let log = agent.stop();

    let mut total = 0;
    let mut in_target = 0;
    for e in events.iter().filter(|e| e["pid"] == pid) {
        assert_eq!(e["event"], "cpu-clock", "{e}");
        assert_eq!(e["comm"], "weir-spin", "{e}");
        let n = e["count"].as_i64().unwrap();
        assert_eq!(
            e["period"].as_i64().unwrap(),
            n * (1_000_000_000 / 99),
            "{e}"
        );
        total += n;
        let frames = e["frames"].as_array().unwrap();
        if frames
            .iter()
            .any(|f| f["symbol"] == "weir_spin_target" && f["kind"] == "user")
        {
            in_target += n;
        }
    }
    // 2 s at 99 Hz is about 198 samples; allow for a loaded machine.
    assert!(
        total >= 50,
        "only {total} samples for the spinner; log:\n{log}"
    );
    assert!(
        in_target * 10 >= total * 8,
        "weir_spin_target in {in_target} of {total} samples"
    );
    assert!(
        events.iter().all(|e| e["pid"] == pid),
        "the pid filter let other processes through"
    );
}
