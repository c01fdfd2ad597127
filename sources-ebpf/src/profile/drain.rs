//! Draining `ebpf_profile`'s in-kernel counts into stack-sample events (on the source's
//! worker thread, which owns the maps and the symbol cache).

use std::collections::HashSet;
use std::sync::Arc;

use aya::maps::{HashMap as BpfHashMap, MapData, StackTraceMap};
use weir_pipeline::event::{Event, EventMetadata, LogEvent, ObjectMap, Value};

use super::symbols::Symbols;
use super::ProfileMode;
use crate::env::c_str;

/// The key of bpf/profile.h (`struct weir_profile_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct RawKey {
    pid: u32,
    tid: u32,
    user_stack: i32,
    kernel_stack: i32,
    comm: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<RawKey>() == 32);

// SAFETY: RawKey is repr(C), has no padding (4 x u32 + 16 bytes) and every bit pattern is valid.
unsafe impl aya::Pod for RawKey {}

/// The value of bpf/profile.h (`struct weir_profile_value`).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct RawValue {
    count: u64,
    total_ns: u64,
}

// SAFETY: two u64, no padding, every bit pattern valid.
unsafe impl aya::Pod for RawValue {}

/// A blocked thread's entry in `offcpu_start` (`struct offcpu_start` in bpf/profile.bpf.c).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(super) struct RawStart {
    ts: u64,
    key: RawKey,
}

const _: () = assert!(std::mem::size_of::<RawStart>() == 40);

// SAFETY: u64 then a 32-byte Pod struct, no padding, every bit pattern valid.
unsafe impl aya::Pod for RawStart {}

/// The maps a drain reads.
pub(super) struct Maps {
    pub counts: BpfHashMap<MapData, RawKey, RawValue>,
    pub stacks: StackTraceMap<MapData>,
    /// Off-CPU mode only: threads blocked right now, whose stacks must outlive the drain.
    pub offcpu_start: Option<BpfHashMap<MapData, u32, RawStart>>,
}

/// Takes every count out of the kernel, symbolises the stacks and builds the events; returns
/// them with the number of map errors.
pub(super) fn drain(
    m: &mut Maps,
    symbols: &mut Symbols,
    mode: ProfileMode,
    period_ns: u64,
    id: &Arc<str>,
    trigger: Option<Value>,
) -> (Vec<Event>, u64) {
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
    let ts = Value::from_f64_or_zero(crate::env::monotonic_ns() as f64 / 1e9);
    let event_name = Value::from(match mode {
        ProfileMode::Cpu => "cpu-clock",
        ProfileMode::Offcpu => "offcpu",
    });
    for (k, v) in samples {
        let mut frames = Vec::new();
        if k.kernel_stack >= 0 {
            used_stacks.insert(k.kernel_stack as u32);
            if let Ok(st) = m.stacks.get(&(k.kernel_stack as u32), 0) {
                let addrs: Vec<u64> = st.frames().iter().map(|f| f.ip).collect();
                symbols.kernel_frames(&addrs, &mut frames);
            }
        }
        if k.user_stack >= 0 {
            used_stacks.insert(k.user_stack as u32);
            if let Ok(st) = m.stacks.get(&(k.user_stack as u32), 0) {
                let addrs: Vec<u64> = st.frames().iter().map(|f| f.ip).collect();
                symbols.user_frames(k.pid, &addrs, &mut frames);
            }
        }
        let period = match mode {
            ProfileMode::Cpu => v.count.saturating_mul(period_ns),
            ProfileMode::Offcpu => v.total_ns,
        };
        let mut map = ObjectMap::new();
        map.insert("comm".into(), Value::from(c_str(&k.comm)));
        map.insert("pid".into(), Value::Integer(k.pid.into()));
        map.insert("tid".into(), Value::Integer(k.tid.into()));
        map.insert("cpu".into(), Value::Null);
        map.insert("timestamp".into(), ts.clone());
        map.insert("event".into(), event_name.clone());
        map.insert("period".into(), Value::Integer(period as i64));
        map.insert("count".into(), Value::Integer(v.count as i64));
        map.insert("frames".into(), Value::Array(frames));
        if let Some(t) = &trigger {
            map.insert("trigger".into(), t.clone());
        }
        events.push(Event::Log(LogEvent::from_value(
            Value::Object(map),
            EventMetadata::new(Some(id.clone())),
        )));
    }
    // Stacks of threads blocked right now are still to be counted: keep them.
    if let Some(starts) = &m.offcpu_start {
        for (_, s) in starts.iter().flatten() {
            used_stacks.remove(&(s.key.user_stack as u32));
            used_stacks.remove(&(s.key.kernel_stack as u32));
        }
    }
    for s in used_stacks {
        let _ = m.stacks.remove(&s);
    }
    symbols.end_drain();
    (events, errors)
}
