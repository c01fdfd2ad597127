//! Draining in-kernel stack counts into stack-sample events (on the source's worker thread,
//! which owns the maps and the symbol cache): `ebpf_profile`'s counts, `ebpf_memory`'s
//! page faults and `ebpf_io`'s completions by stack, which use the same key and value. [`user_stack_frames`] and [`sample_event`] are
//! shared with `ebpf_memory`'s allocations.

use std::collections::HashSet;
use std::sync::Arc;

use aya::maps::{HashMap as BpfHashMap, MapData, StackTraceMap};
use weir_pipeline::event::{Event, EventMetadata, LogEvent, ObjectMap, Value};

use super::symbols::Symbols;
use crate::env::c_str;

/// The key of bpf/profile.h (`struct weir_profile_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RawKey {
    pub pid: u32,
    pub tid: u32,
    pub user_stack: i32,
    pub kernel_stack: i32,
    pub comm: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<RawKey>() == 32);

// SAFETY: RawKey is repr(C), has no padding (4 x u32 + 16 bytes) and every bit pattern is valid.
unsafe impl aya::Pod for RawKey {}

/// The value of bpf/profile.h (`struct weir_profile_value`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawValue {
    pub count: u64,
    pub total_ns: u64,
}

// SAFETY: two u64, no padding, every bit pattern valid.
unsafe impl aya::Pod for RawValue {}

/// A blocked thread's entry in `offcpu_start` (`struct offcpu_start` in bpf/profile.bpf.c).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawStart {
    ts: u64,
    key: RawKey,
}

const _: () = assert!(std::mem::size_of::<RawStart>() == 40);

// SAFETY: u64 then a 32-byte Pod struct, no padding, every bit pattern valid.
unsafe impl aya::Pod for RawStart {}

/// The maps a drain reads.
pub(crate) struct Maps {
    pub counts: BpfHashMap<MapData, RawKey, RawValue>,
    pub stacks: StackTraceMap<MapData>,
    /// Off-CPU mode only: threads blocked right now, whose stacks must outlive the drain.
    pub offcpu_start: Option<BpfHashMap<MapData, u32, RawStart>>,
}

/// What the counts are: the events' `event` name and how their `period` (the weight
/// `stack_fold` sums) is made.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SampleKind {
    pub event: &'static str,
    pub period: Period,
}

/// How a count's `period` is made.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Period {
    /// Samples times the sampling period in nanoseconds (on-CPU).
    PerSample(u64),
    /// The nanoseconds summed in the kernel (off-CPU).
    TotalNs,
    /// The count itself (page faults: one fault weighs one).
    Count,
    /// The value's second field (`total_ns`) holds bytes, not nanoseconds: `ebpf_io`'s bytes
    /// completed.
    Bytes,
}

/// Takes every count out of the kernel, symbolises the stacks and builds the events; returns
/// them with the number of map errors.
pub(crate) fn drain(
    m: &mut Maps,
    symbols: &mut Symbols,
    kind: SampleKind,
    id: &Arc<str>,
    trigger: Option<Value>,
) -> (Vec<Event>, u64) {
    drain_keeping(m, symbols, kind, id, trigger, |_| 0)
}

/// As [`drain`], and `live` takes out of the stacks about to be deleted (the set it is given)
/// those the kernel still holds outside the counts (`ebpf_io`'s requests in flight); it is
/// called once the counts are read, and returns its number of map errors.
pub(crate) fn drain_keeping(
    m: &mut Maps,
    symbols: &mut Symbols,
    kind: SampleKind,
    id: &Arc<str>,
    trigger: Option<Value>,
    live: impl FnOnce(&mut HashSet<u32>) -> u64,
) -> (Vec<Event>, u64) {
    // The time the drain starts: everything before it is in this drain or an earlier one.
    let ts = Value::from_f64_or_zero(crate::env::monotonic_ns() as f64 / 1e9);
    let mut errors = 0u64;
    let keys: Vec<RawKey> = m
        .counts
        .keys()
        .filter_map(|k| k.map_err(|_| errors += 1).ok())
        .collect();
    // Read and delete each count; samples landing between the two are lost (a few per
    // interval at most, documented).
    let mut samples: Vec<(RawKey, RawValue)> = Vec::with_capacity(keys.len());
    for k in keys {
        if let Ok(v) = m.counts.get(&k, 0) {
            samples.push((k, v));
        }
        let _ = m.counts.remove(&k);
    }
    let mut used_stacks: HashSet<u32> = HashSet::new();
    let mut events = Vec::with_capacity(samples.len());
    let event_name = Value::from(kind.event);
    for (k, v) in samples {
        let mut frames = Vec::new();
        for stack in [k.kernel_stack, k.user_stack] {
            if stack >= 0 {
                used_stacks.insert(stack as u32);
            }
        }
        kernel_stack_frames(&m.stacks, symbols, k.kernel_stack, &mut frames);
        user_stack_frames(&m.stacks, symbols, k.pid, k.user_stack, &mut frames);
        let period = match kind.period {
            Period::PerSample(ns) => v.count.saturating_mul(ns),
            Period::TotalNs | Period::Bytes => v.total_ns,
            Period::Count => v.count,
        };
        events.push(sample_event(
            id,
            Value::from(c_str(&k.comm)),
            k.pid,
            k.tid,
            &ts,
            &event_name,
            period,
            v.count,
            frames,
            trigger.as_ref(),
        ));
    }
    // Stacks of threads blocked right now are still to be counted: keep them.
    if let Some(starts) = &m.offcpu_start {
        for (_, s) in starts.iter().flatten() {
            used_stacks.remove(&(s.key.user_stack as u32));
            used_stacks.remove(&(s.key.kernel_stack as u32));
        }
    }
    errors += live(&mut used_stacks);
    for s in used_stacks {
        let _ = m.stacks.remove(&s);
    }
    symbols.end_drain();
    (events, errors)
}

/// Appends the frames of kernel stack `stack` (when it is a stack id, not an error) from
/// `stacks`, symbolised; nothing when the id is negative or no longer in the map.
pub(crate) fn kernel_stack_frames(
    stacks: &StackTraceMap<MapData>,
    symbols: &mut Symbols,
    stack: i32,
    out: &mut Vec<Value>,
) {
    if stack < 0 {
        return;
    }
    if let Ok(st) = stacks.get(&(stack as u32), 0) {
        let addrs: Vec<u64> = st.frames().iter().map(|f| f.ip).collect();
        symbols.kernel_frames(&addrs, out);
    }
}

/// Appends the frames of user stack `stack` of process `pid`, as [`kernel_stack_frames`]; returns
/// false when the stack id is not (or no longer) in the map.
pub(crate) fn user_stack_frames(
    stacks: &StackTraceMap<MapData>,
    symbols: &mut Symbols,
    pid: u32,
    stack: i32,
    out: &mut Vec<Value>,
) -> bool {
    if stack < 0 {
        return false;
    }
    match stacks.get(&(stack as u32), 0) {
        Ok(st) => {
            let addrs: Vec<u64> = st.frames().iter().map(|f| f.ip).collect();
            symbols.user_frames(pid, &addrs, out);
            true
        }
        Err(_) => false,
    }
}

/// One stack-sample event (docs/schemas/stack-sample.md); `period` is what `stack_fold`
/// weighs it by.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sample_event(
    id: &Arc<str>,
    comm: Value,
    pid: u32,
    tid: u32,
    ts: &Value,
    event: &Value,
    period: u64,
    count: u64,
    frames: Vec<Value>,
    trigger: Option<&Value>,
) -> Event {
    let mut map = ObjectMap::new();
    map.insert("comm".into(), comm);
    map.insert("pid".into(), Value::Integer(pid.into()));
    map.insert("tid".into(), Value::Integer(tid.into()));
    map.insert("cpu".into(), Value::Null);
    map.insert("timestamp".into(), ts.clone());
    map.insert("event".into(), event.clone());
    map.insert(
        "period".into(),
        Value::Integer(period.min(i64::MAX as u64) as i64),
    );
    map.insert(
        "count".into(),
        Value::Integer(count.min(i64::MAX as u64) as i64),
    );
    map.insert("frames".into(), Value::Array(frames));
    if let Some(t) = trigger {
        map.insert("trigger".into(), t.clone());
    }
    Event::Log(LogEvent::from_value(
        Value::Object(map),
        EventMetadata::new(Some(id.clone())),
    ))
}
