//! `ebpf_memory`'s allocations: uprobes on the allocator of chosen processes, and the sum of
//! their outstanding allocations by stack (bpf/memory.bpf.c keeps one entry per block).

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aya::maps::{HashMap as BpfHashMap, MapData, StackTraceMap};
use aya::programs::uprobe::UProbeScope;
use aya::programs::UProbe;
use serde::{Deserialize, Serialize};
use weir_pipeline::event::{Event, Value};

use crate::profile::drain::sample_event;
use crate::profile::Symbols;

use super::COMPONENT;

/// `allocations`: which processes' allocations are tracked.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AllocationsConfig {
    /// The processes whose allocations are tracked (all their threads), running when the
    /// source starts. 1 to 1024 of them. A process that exits is dropped, with its allocations.
    pub pids: Vec<u32>,
    /// The file that holds their allocator (`malloc`, `free`, ...): an absolute path on the
    /// host. Default: the C library each process maps, found in `/proc/<pid>/maps`
    /// (`libc.so.6`, `libc-*.so`, or musl's `ld-musl-*.so.1`) and reached through
    /// `/proc/<pid>/root`, so processes in containers work. Set it to the executable for a
    /// static program, or to an allocator library (jemalloc, tcmalloc) that exports the same
    /// functions.
    #[serde(default)]
    pub libc: Option<PathBuf>,
    /// Outstanding allocations tracked at most, over all processes (the kernel table's size).
    /// Allocations made while it is full are not tracked and are counted in the
    /// `allocs_full` error metric. Default: 262144.
    #[serde(default = "default_max_outstanding")]
    pub max_outstanding: u32,
}

fn default_max_outstanding() -> u32 {
    262_144
}

/// The key of `allocs` (`struct weir_alloc_key` in bpf/memory.h).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct AllocKey {
    pid: u32,
    _pad: u32,
    addr: u64,
}

// SAFETY: repr(C), u32 + u32 + u64 with no padding, every bit pattern valid.
unsafe impl aya::Pod for AllocKey {}

/// The value of `allocs` (`struct weir_alloc_info`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct AllocInfo {
    size: u64,
    caller: u64,
    user_stack: i32,
    _pad: u32,
}

// SAFETY: repr(C), u64 + u64 + i32 + u32 with no padding, every bit pattern valid.
unsafe impl aya::Pod for AllocInfo {}

const _: () = assert!(std::mem::size_of::<AllocKey>() == 16);
const _: () = assert!(std::mem::size_of::<AllocInfo>() == 24);

/// Entry probes: (program, functions); `alloc_exit` is attached to the returns of all but
/// `posix_memalign` and `free`. `malloc` and `free` must exist; the others are attached where
/// the library has them.
const ENTRIES: [(&str, &[&str]); 6] = [
    ("malloc_enter", &["malloc"]),
    ("calloc_enter", &["calloc"]),
    ("realloc_enter", &["realloc"]),
    ("memalign_enter", &["aligned_alloc", "memalign"]),
    ("posix_memalign_enter", &["posix_memalign"]),
    ("free_enter", &["free"]),
];
const RETURNS: [(&str, &[&str]); 2] = [
    (
        "alloc_exit",
        &["malloc", "calloc", "realloc", "aligned_alloc", "memalign"],
    ),
    ("posix_memalign_exit", &["posix_memalign"]),
];
const REQUIRED: [&str; 2] = ["malloc", "free"];

/// The C library process `pid` maps, as a path this process can open.
pub(super) fn find_libc(pid: u32) -> Result<PathBuf, String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| format!("reading /proc/{pid}/maps: {e} (is the process running?)"))?;
    for line in maps.lines() {
        let Some(path) = line.split_whitespace().nth(5) else {
            continue;
        };
        let name = path.rsplit('/').next().unwrap_or(path);
        let is_libc = name.starts_with("libc.so")
            || (name.starts_with("libc-") && name.ends_with(".so"))
            || name.starts_with("ld-musl-");
        if path.starts_with('/') && is_libc {
            return Ok(PathBuf::from(format!("/proc/{pid}/root{path}")));
        }
    }
    Err(format!(
        "process {pid} maps no C library (libc.so.6, libc-*.so or ld-musl-*.so.1): set \
         `allocations.libc` to the file that holds its malloc (the executable, if static)"
    ))
}

/// Loads the allocator probes and attaches them to each process of `pids` in the file
/// `libc` gives (or its own C library).
pub(super) fn attach(
    bpf: &mut aya::Ebpf,
    pids: &[u32],
    libc: Option<&Path>,
    id: &str,
) -> Result<(), String> {
    for (prog, _) in ENTRIES.iter().chain(RETURNS.iter()) {
        let p: &mut UProbe = bpf
            .program_mut(prog)
            .ok_or_else(|| format!("{COMPONENT}: program `{prog}` missing"))?
            .try_into()
            .map_err(|e| format!("{COMPONENT}: `{prog}`: {e}"))?;
        p.load()
            .map_err(|e| format!("{COMPONENT}: the kernel rejected `{prog}`: {e:#}"))?;
    }
    for &pid in pids {
        let nz = NonZeroU32::new(pid)
            .ok_or_else(|| format!("{COMPONENT}: `allocations.pids`: 0 is not a process"))?;
        let target = match libc {
            Some(l) => l.to_path_buf(),
            None => find_libc(pid).map_err(|e| format!("{COMPONENT}: {e}"))?,
        };
        let mut missing = Vec::new();
        for (prog, functions) in ENTRIES.iter().chain(RETURNS.iter()) {
            for function in functions.iter() {
                let p: &mut UProbe = bpf
                    .program_mut(prog)
                    .ok_or_else(|| format!("{COMPONENT}: program `{prog}` missing"))?
                    .try_into()
                    .map_err(|e| format!("{COMPONENT}: `{prog}`: {e}"))?;
                if let Err(e) = p.attach(*function, &target, UProbeScope::OneProcess(nz)) {
                    if REQUIRED.contains(function) {
                        return Err(format!(
                            "{COMPONENT}: attaching to `{function}` in {} for process {pid}: {e}",
                            target.display()
                        ));
                    }
                    if !missing.contains(function) {
                        missing.push(*function);
                    }
                }
            }
        }
        if !missing.is_empty() {
            tracing::warn!(
                component = %id,
                pid,
                libc = %target.display(),
                "allocator functions not found, not tracked: {}",
                missing.join(", ")
            );
        }
        tracing::info!(component = %id, pid, libc = %target.display(), "allocation probes attached");
    }
    Ok(())
}

/// The maps the allocation drain reads, and what it remembers between drains.
pub(super) struct Allocations {
    pub allocs: BpfHashMap<MapData, AllocKey, AllocInfo>,
    pub stacks: StackTraceMap<MapData>,
    pub traced: BpfHashMap<MapData, u32, u8>,
    /// The processes still tracked.
    pub pids: Vec<u32>,
    /// Stack ids no outstanding allocation referred to at the last drain.
    pub unused_stacks: HashSet<u32>,
    pub max_outstanding: u32,
}

/// What one stack of one process holds.
#[derive(Default)]
struct Outstanding {
    bytes: u64,
    count: u64,
}

impl Allocations {
    /// Sums the outstanding allocations by (process, stack) and builds one stack sample each
    /// (`period`: the bytes, `count`: the allocations); forgets processes that exited and
    /// stacks no allocation refers to any more. Returns the events and the map errors.
    pub fn drain(&mut self, symbols: &mut Symbols, id: &Arc<str>) -> (Vec<Event>, u64) {
        // The time the drain starts: everything before it is in this drain or an earlier one.
        let ts = Value::from_f64_or_zero(crate::env::monotonic_ns() as f64 / 1e9);
        let mut errors = 0u64;
        let gone: HashSet<u32> = self
            .pids
            .iter()
            .copied()
            .filter(|pid| !Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        // A block freed while the map is walked can send the walk back to its start: the
        // entries are collected by key (no block twice), and the walk is bounded.
        let mut blocks: HashMap<AllocKey, AllocInfo> = HashMap::new();
        let bound = 4 * self.max_outstanding as usize + 1024;
        for (n, entry) in self.allocs.iter().enumerate() {
            if n >= bound {
                errors += 1;
                break;
            }
            match entry {
                Ok((k, v)) => {
                    blocks.insert(k, v);
                }
                Err(_) => errors += 1,
            }
        }
        let mut sums: HashMap<(u32, i32, u64), Outstanding> = HashMap::new();
        for (k, v) in &blocks {
            if gone.contains(&k.pid) {
                let _ = self.allocs.remove(k);
                continue;
            }
            let o = sums.entry((k.pid, v.user_stack, v.caller)).or_default();
            o.bytes = o.bytes.saturating_add(v.size);
            o.count += 1;
        }
        for pid in &gone {
            let _ = self.traced.remove(pid);
            tracing::info!(component = %id, pid, "traced process exited: its allocations are forgotten");
        }
        self.pids.retain(|p| !gone.contains(p));
        let event = Value::from("allocations");
        let mut comms: HashMap<u32, Value> = HashMap::new();
        let mut keys: Vec<(u32, i32, u64)> = sums.keys().copied().collect();
        keys.sort_unstable();
        let mut events = Vec::with_capacity(keys.len());
        let mut live = HashSet::with_capacity(keys.len());
        for key in keys {
            let (pid, stack, caller) = key;
            let Some(o) = sums.get(&key) else { continue };
            let mut addrs = Vec::new();
            if stack >= 0 {
                live.insert(stack as u32);
                if let Ok(st) = self.stacks.get(&(stack as u32), 0) {
                    addrs.extend(st.frames().iter().map(|f| f.ip));
                }
            }
            with_caller(&mut addrs, caller);
            let mut frames = Vec::new();
            symbols.user_frames(pid, &addrs, &mut frames);
            let comm = comms
                .entry(pid)
                .or_insert_with(|| {
                    std::fs::read_to_string(format!("/proc/{pid}/comm"))
                        .map(|c| Value::from(c.trim_end_matches('\n').to_string()))
                        .unwrap_or(Value::Null)
                })
                .clone();
            events.push(sample_event(
                id, comm, pid, pid, &ts, &event, o.bytes, o.count, frames, None,
            ));
        }
        // Stacks no outstanding allocation refers to, at this drain and the last one, are
        // removed (an allocation made from one of them while the map was walked would lose
        // its frames, not its bytes).
        let ids: Vec<u32> = self.stacks.stack_ids().filter_map(Result::ok).collect();
        let mut unused = HashSet::new();
        for s in ids {
            if live.contains(&s) {
                continue;
            }
            if self.unused_stacks.contains(&s) {
                let _ = self.stacks.remove(&s);
            } else {
                unused.insert(s);
            }
        }
        self.unused_stacks = unused;
        (events, errors)
    }
}

/// Puts the allocator's caller (its return address) after the allocator in a stack taken at
/// its entry (leaf first), unless the kernel put it there already (it does when the
/// allocator starts by pushing a frame pointer).
fn with_caller(addrs: &mut Vec<u64>, caller: u64) {
    if caller == 0 || addrs.get(1) == Some(&caller) {
        return;
    }
    let at = addrs.len().min(1);
    addrs.insert(at, caller);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_goes_after_the_allocator_once() {
        let mut a = vec![0x10, 0x30, 0x40];
        with_caller(&mut a, 0x20);
        assert_eq!(a, [0x10, 0x20, 0x30, 0x40]);
        // Already there (the kernel added it).
        with_caller(&mut a, 0x20);
        assert_eq!(a, [0x10, 0x20, 0x30, 0x40]);
        let mut none = vec![];
        with_caller(&mut none, 0x20);
        assert_eq!(none, [0x20]);
        let mut unknown = vec![0x10];
        with_caller(&mut unknown, 0);
        assert_eq!(unknown, [0x10]);
    }
}
