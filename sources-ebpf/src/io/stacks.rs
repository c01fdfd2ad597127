//! `ebpf_io`'s issuing stacks (`stacks = true`): the kernel counts completions by (process,
//! thread, kernel stack, user stack) of the thread that submitted each request
//! (`stack_counts`, ebpf_profile's key and value, `total_ns` holding bytes); a worker thread
//! drains them every interval with the profile drain, symbolised by [`Symbols`], into
//! stack-sample events (`event = "block-io-bytes"`, `period` the bytes, `count` the
//! requests).
//!
//! Processes are announced through the `procs` ring buffer the first time one submits I/O,
//! and their mappings read then ([`Command::Snapshot`]), so the stacks of a process that exits
//! before the drain are still named. The stacks of requests still in flight at a drain stay
//! in the kernel's stack map: their completions will be counted under them.

use std::collections::HashSet;
use std::sync::Arc;

use aya::maps::{HashMap as BpfHashMap, MapData};
use tokio::sync::{mpsc, oneshot};
use weir_pipeline::event::Event;

use crate::profile::drain::{drain_keeping, Maps, Period, SampleKind};
use crate::profile::Symbols;

/// The `event` of the samples.
pub(crate) const EVENT: &str = "block-io-bytes";

/// `struct inflight` in bpf/io.h: a request in flight.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawInflight {
    start_ns: u64,
    issue_ns: u64,
    cgroup_id: u64,
    pid: u32,
    error: u32,
    comm: [u8; 16],
    tid: u32,
    user_stack: i32,
    kernel_stack: i32,
    _pad: u32,
    thread_comm: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<RawInflight>() == 80);

// SAFETY: repr(C), no padding (3 x u64, 2 x u32, 16 bytes, 4 x 32 bits, 16 bytes), every bit
// pattern valid.
unsafe impl aya::Pod for RawInflight {}

/// Work for the worker thread, which owns the maps and the symbol cache.
pub(crate) enum Command {
    /// The kernel saw this process submit I/O for the first time: read its mappings while it
    /// lives.
    Snapshot(u32),
    /// Drain: answer with the events and the number of map errors.
    Drain(oneshot::Sender<(Vec<Event>, u64)>),
}

/// What the worker drains.
pub(crate) struct StackMaps {
    pub counts: Maps,
    /// Requests in flight, whose stacks outlive the drain.
    pub inflight: BpfHashMap<MapData, u64, RawInflight>,
}

/// The worker thread: reads mappings as processes appear, drains on demand. Ends when the
/// source drops its sender.
pub(crate) fn worker(
    mut maps: StackMaps,
    mut rx: mpsc::Receiver<Command>,
    ready: oneshot::Sender<()>,
    id: Arc<str>,
) {
    let mut symbols = Symbols::new();
    symbols.load_kernel();
    let _ = ready.send(());
    let kind = SampleKind {
        event: EVENT,
        period: Period::Bytes,
    };
    while let Some(cmd) = rx.blocking_recv() {
        match cmd {
            Command::Snapshot(pid) => {
                symbols.snapshot(pid);
            }
            Command::Drain(reply) => {
                let inflight = &maps.inflight;
                let out = drain_keeping(
                    &mut maps.counts,
                    &mut symbols,
                    kind,
                    &id,
                    None,
                    |unused| keep_in_flight(inflight, unused),
                );
                let _ = reply.send(out);
            }
        }
    }
}

/// Takes the stacks of requests in flight out of `unused`; returns the number of map errors.
fn keep_in_flight(
    inflight: &BpfHashMap<MapData, u64, RawInflight>,
    unused: &mut HashSet<u32>,
) -> u64 {
    let mut errors = 0;
    for entry in inflight.iter() {
        match entry {
            Ok((_, f)) => {
                for s in [f.user_stack, f.kernel_stack] {
                    if let Ok(s) = u32::try_from(s) {
                        unused.remove(&s);
                    }
                }
            }
            // Completed (and deleted) while listed: nothing holds its stacks any more.
            Err(aya::maps::MapError::KeyNotFound) => {}
            Err(_) => errors += 1,
        }
    }
    errors
}
