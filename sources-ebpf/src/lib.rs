//! # weir-sources-ebpf: sources fed by eBPF programs
//!
//! Kernel programs are written in C (`bpf/*.bpf.c`), compiled once by `bpf/build.sh` (clang,
//! CO-RE against the committed `bpf/vmlinux.h`) and embedded: building Weir needs no clang.
//! Only tracepoints, raw tracepoints, perf events and uprobes are used (no kprobes, no
//! fentry), so the programs load on kernels where those are unavailable.
//!
//! - [`process`]: `ebpf_process`, process exec/fork/exit with argv, exit code and CPU time;
//! - [`tcp`]: `ebpf_tcp`, one event per TCP connection with its process and TCP statistics
//!   (and periodic stats), filtered in the kernel by port, process and cgroup;
//! - [`profile`]: `ebpf_profile`, on-CPU or off-CPU stacks counted in the kernel, symbolised
//!   by blazesym with a cache keyed by build id;
//! - [`io`]: `ebpf_io`, block I/O per process, cgroup and disk (requests, bytes, latency
//!   histogram) as metrics;
//! - [`sched`]: `ebpf_sched`, per process and cgroup: context switches, CPU time, run-queue
//!   latency, time blocked by reason and futex wait time, as metrics;
//! - [`memory`]: `ebpf_memory`, outstanding allocations of chosen processes by stack
//!   (uprobes on their allocator) and page faults by stack, as stack samples;
//! - [`container`]: the container id and pod uid in a process's cgroup path.
//!
//! Every source checks its environment first ([`env`]): privileges, kernel BTF, tracefs.

pub mod container;
pub mod env;
pub mod io;
pub mod memory;
pub mod process;
pub mod profile;
mod ring;
pub mod sched;
pub mod tcp;

/// What a unit test needs from the machine (clang, a cgroup v2 mount, root): the same rule as
/// the end-to-end tests' `require` (tests/it/harness.rs).
#[cfg(test)]
mod test_support {
    use std::io::Write;

    /// The test lacks `what` (`why`): `false` and a `SKIPPED` line on a developer machine, a
    /// failure under CI (`CI` set, and not to `0` or `false`; or `WEIR_REQUIRE_ALL` set).
    pub(crate) fn skip_unless_required(what: &str, why: &str) -> bool {
        let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
        let required = ci || std::env::var_os("WEIR_REQUIRE_ALL").is_some();
        let current = std::thread::current();
        let test = current.name().unwrap_or("this test");
        assert!(
            !required,
            "{test} needs {what}, and every test must run under CI (CI or WEIR_REQUIRE_ALL set), but {why}"
        );
        // Straight to stderr, not eprintln!: the test harness would hide it (it shows a passing
        // test's output only with --nocapture), and a skip must be seen.
        let _ = writeln!(std::io::stderr(), "SKIPPED {test}: needs {what}, but {why}");
        false
    }
}

use weir_pipeline::component::Registry;

/// Adds every eBPF source to `registry`.
pub fn register(registry: &mut Registry) {
    registry.add_source::<process::EbpfProcessConfig>(
        "ebpf_process",
        "Process exec (filename, argv), fork and exit (code, lifetime, CPU time) via eBPF",
    );
    registry.add_source::<tcp::EbpfTcpConfig>(
        "ebpf_tcp",
        "TCP connections (process, 4-tuple, direction, bytes, RTT, retransmits, close) via eBPF",
    );
    registry.add_source::<profile::EbpfProfileConfig>(
        "ebpf_profile",
        "On-CPU or off-CPU stack profiles of every process (in-kernel counts) via eBPF",
    );
    registry.add_source::<io::EbpfIoConfig>(
        "ebpf_io",
        "Block I/O per process, cgroup and disk (requests, bytes, latency histogram) via eBPF",
    );
    registry.add_source::<memory::EbpfMemoryConfig>(
        "ebpf_memory",
        "Outstanding allocations (uprobes on malloc/free) and page faults by stack, as stack samples, via eBPF",
    );
    registry.add_source::<sched::EbpfSchedConfig>(
        "ebpf_sched",
        "Per-process context switches, CPU time, run-queue latency, blocked and futex wait time via eBPF",
    );
}

#[cfg(test)]
mod objects_up_to_date {
    //! The committed `bpf/*.bpf.o` must be what `bpf/build.sh` makes from the committed
    //! sources. With the clang version recorded in `bpf/CLANG_VERSION` the build is
    //! byte-for-byte reproducible (DWARF, which holds paths, is stripped; BTF stays), so the
    //! objects are compared byte for byte. With another clang the bytes may legitimately
    //! differ, so only the section names (programs, maps, BTF) are compared. Without clang the
    //! check is skipped, except under CI (`CI` or `WEIR_REQUIRE_ALL` set), where
    //! `scripts/install-test-deps.sh` installs it.
    use std::path::Path;
    use std::process::Command;

    fn sections(obj: &Path) -> Vec<String> {
        let out = Command::new("llvm-objdump")
            .arg("-h")
            .arg(obj)
            .output()
            .unwrap();
        assert!(out.status.success(), "llvm-objdump -h {}", obj.display());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                f.next()?.parse::<u32>().ok()?;
                f.next().map(String::from)
            })
            .collect()
    }

    #[test]
    fn committed_objects_match_the_sources() {
        let bpf = Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf");
        let has_clang = Command::new("clang").arg("--version").output().is_ok();
        if !has_clang {
            crate::test_support::skip_unless_required(
                "clang to check bpf/*.bpf.o",
                "clang does not run (scripts/install-test-deps.sh installs it)",
            );
            return;
        }
        let out = tempfile::tempdir().unwrap();
        let status = Command::new(bpf.join("build.sh"))
            .env("OUT_DIR", out.path())
            .status()
            .unwrap();
        assert!(status.success(), "bpf/build.sh failed");
        let committed_clang = std::fs::read_to_string(bpf.join("CLANG_VERSION")).unwrap();
        let this_clang = std::fs::read_to_string(out.path().join("CLANG_VERSION")).unwrap();
        let same_clang = committed_clang == this_clang;
        let mut checked = 0;
        for entry in std::fs::read_dir(&bpf).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".bpf.c") else {
                continue;
            };
            let committed = bpf.join(format!("{stem}.bpf.o"));
            let fresh = out.path().join(format!("{stem}.bpf.o"));
            assert!(committed.exists(), "{stem}.bpf.o is not committed");
            if same_clang {
                assert!(
                    std::fs::read(&committed).unwrap() == std::fs::read(&fresh).unwrap(),
                    "bpf/{stem}.bpf.o is out of date: run sources-ebpf/bpf/build.sh and commit"
                );
            } else {
                eprintln!(
                    "{stem}.bpf.o: built by {} here but {} for the commit: comparing sections only",
                    this_clang.trim(),
                    committed_clang.trim()
                );
                assert_eq!(
                    sections(&committed),
                    sections(&fresh),
                    "bpf/{stem}.bpf.o is out of date: run sources-ebpf/bpf/build.sh and commit"
                );
            }
            checked += 1;
        }
        assert!(checked >= 1);
    }
}
