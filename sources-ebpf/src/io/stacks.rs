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
use weir_pipeline::event::{Event, Value};

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
                let (mut events, errors) =
                    drain_keeping(&mut maps.counts, &mut symbols, kind, &id, None, |unused| {
                        keep_in_flight(inflight, unused)
                    });
                for e in &mut events {
                    if let Event::Log(log) = e {
                        if let Value::Object(map) = log.value_mut() {
                            if let Some(Value::Array(frames)) = map.get_mut("frames") {
                                trim_tracing_frames(frames);
                            }
                        }
                    }
                }
                let _ = reply.send((events, errors));
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

/// Removes the leading kernel frames of the tracing machinery (the eBPF program, the
/// tracepoint's trampoline): a stack taken in a tracepoint starts in them, and the first
/// frame worth showing is the tracepoint's caller (`blk_account_io_start`, say).
fn trim_tracing_frames(frames: &mut Vec<Value>) {
    let tracing = |f: &Value| {
        let Value::Object(f) = f else { return false };
        let Some(symbol) = f.get("symbol").and_then(Value::to_str_lossy) else {
            return false;
        };
        ["bpf_prog_", "bpf_trace_run", "__bpf_trace_", "__traceiter_"]
            .iter()
            .any(|p| symbol.starts_with(p))
    };
    let n = frames.iter().take_while(|f| tracing(f)).count();
    frames.drain(..n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_pipeline::event::ObjectMap;

    fn frame(symbol: &str) -> Value {
        let mut f = ObjectMap::new();
        f.insert("symbol".into(), Value::from(symbol));
        f.insert("kind".into(), Value::from("kernel"));
        Value::Object(f)
    }

    #[test]
    fn tracing_frames_are_trimmed_from_the_leaf_only() {
        let mut frames: Vec<Value> = [
            "bpf_prog_f3fcd1d9e2fab70e_io_start",
            "bpf_trace_run1",
            "blk_account_io_start",
            "blk_mq_submit_bio",
            "bpf_trace_run1",
        ]
        .into_iter()
        .map(frame)
        .collect();
        trim_tracing_frames(&mut frames);
        assert_eq!(
            frames,
            [
                "blk_account_io_start",
                "blk_mq_submit_bio",
                "bpf_trace_run1"
            ]
            .into_iter()
            .map(frame)
            .collect::<Vec<_>>()
        );
        let mut none: Vec<Value> = Vec::new();
        trim_tracing_frames(&mut none);
        assert!(none.is_empty());
    }
}
