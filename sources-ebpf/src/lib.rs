//! # weir-sources-ebpf: sources fed by eBPF programs
//!
//! Kernel programs are written in C (`bpf/*.bpf.c`), compiled once by `bpf/build.sh` (clang,
//! CO-RE against the committed `bpf/vmlinux.h`) and embedded: building Weir needs no clang.
//! Only tracepoints, raw tracepoints, perf events and uprobes are used (no kprobes, no
//! fentry), so the programs load on kernels where those are unavailable.
//!
//! - [`process`]: `ebpf_process`, process exec/fork/exit with argv, exit code and CPU time.
//!
//! Every source checks its environment first ([`env`]): privileges, kernel BTF, tracefs.

pub mod env;
pub mod process;
mod ring;

use weir_pipeline::component::Registry;

/// Adds every eBPF source to `registry`.
pub fn register(registry: &mut Registry) {
    registry.add_source::<process::EbpfProcessConfig>(
        "ebpf_process",
        "Process exec (filename, argv), fork and exit (code, lifetime, CPU time) via eBPF",
    );
}
