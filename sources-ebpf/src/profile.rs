//! `ebpf_profile`: on-CPU stack sampling of every process (`bpf/profile.bpf.c`).
//!
//! A perf-event program on the software `cpu-clock` event, at `frequency_hz` on every online
//! CPU, takes the user and kernel stacks of the running thread (`bpf_get_stackid`,
//! frame-pointer unwinding) and counts them in the kernel, keyed by (process, thread, user
//! stack, kernel stack). Every `interval_secs` the counts are drained, symbolised with
//! blazesym (user addresses through `/proc/<pid>/maps` and the ELF symbols of the mapped
//! files, kernel addresses through `/proc/kallsyms`) and sent as stack-sample events with the
//! schema of the `perf` source, one per distinct stack, with `count` samples and their total
//! `period` in nanoseconds.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, StackTraceMap};
use aya::programs::perf_event::{
    PerfEvent, PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent,
};
use aya::util::online_cpus;
use aya::EbpfLoader;
use blazesym::symbolize::source::{Kernel, Process, Source as SymSource};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use blazesym::Pid;
use serde::{Deserialize, Serialize};
use weir_pipeline::component::{Output, Source, SourceConfig, SourceContext};
use weir_pipeline::config::DataType;
use weir_pipeline::event::{
    Event, EventBatch, EventMetadata, LogEvent, ObjectMap, Value, MAX_BATCH_EVENTS,
};
use weir_pipeline::BoxError;

use crate::env::{self, c_str};
use crate::ring::per_cpu_slot;

static OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/profile.bpf.o");

const COMPONENT: &str = "ebpf_profile";

/// `type = "ebpf_profile"`: CPU stack samples of every process on the host, counted in the
/// kernel and sent every `interval_secs` as stack-sample events (the `perf` source's schema).
/// Needs root (CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN) and a kernel with BTF.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EbpfProfileConfig {
    /// Samples per second on each CPU (1 to 1000). Default: 49.
    #[serde(default = "default_hz")]
    pub frequency_hz: u64,
    /// Seconds between two drains of the in-kernel counts. Default: 10.
    #[serde(default = "default_interval")]
    pub interval_secs: u64,
    /// Emit only the samples of this process (all its threads). Other processes are still
    /// sampled in the kernel and left out when the counts are drained. Default: unset (all).
    #[serde(default)]
    pub pid: Option<u32>,
}

fn default_hz() -> u64 {
    49
}
fn default_interval() -> u64 {
    10
}

impl Default for EbpfProfileConfig {
    fn default() -> Self {
        Self {
            frequency_hz: default_hz(),
            interval_secs: default_interval(),
            pid: None,
        }
    }
}

/// The key of bpf/profile.h (`struct weir_profile_key`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct RawKey {
    pid: u32,
    tid: u32,
    user_stack: i32,
    kernel_stack: i32,
    comm: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<RawKey>() == 32);

// SAFETY: RawKey is repr(C), has no padding (4 x u32 + 16 bytes) and every bit pattern is valid.
unsafe impl aya::Pod for RawKey {}

/// The maps the drain reads (moved into the blocking task and back).
struct Maps {
    counts: BpfHashMap<MapData, RawKey, u64>,
    stacks: StackTraceMap<MapData>,
}

#[async_trait]
impl SourceConfig for EbpfProfileConfig {
    async fn build(&self, cx: SourceContext) -> Result<Source, BoxError> {
        if !(1..=1000).contains(&self.frequency_hz) {
            return Err(format!(
                "{COMPONENT}: `frequency_hz` must be between 1 and 1000, got {}",
                self.frequency_hz
            )
            .into());
        }
        if self.interval_secs == 0 {
            return Err(format!("{COMPONENT}: `interval_secs` must be at least 1").into());
        }
        env::check(COMPONENT, false)?;
        let mut bpf = EbpfLoader::new()
            .load(OBJECT)
            .map_err(|e| format!("{COMPONENT}: loading the eBPF object failed: {e}"))?;
        let prog: &mut PerfEvent = bpf
            .program_mut("profile_cpu")
            .ok_or_else(|| format!("{COMPONENT}: program `profile_cpu` missing"))?
            .try_into()?;
        prog.load()
            .map_err(|e| format!("{COMPONENT}: the kernel rejected `profile_cpu`: {e:#}"))?;
        let cpus =
            online_cpus().map_err(|(path, e)| format!("{COMPONENT}: reading {path}: {e}"))?;
        for cpu in &cpus {
            prog.attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu: *cpu },
                SamplePolicy::Frequency(self.frequency_hz),
                false,
            )
            .map_err(|e| {
                format!(
                    "{COMPONENT}: opening the cpu-clock perf event on CPU {cpu}: {e} \
                     (is kernel.perf_event_paranoid too strict, or perf events disabled?)"
                )
            })?;
        }
        let counts = BpfHashMap::try_from(
            bpf.take_map("counts")
                .ok_or_else(|| format!("{COMPONENT}: map `counts` missing"))?,
        )?;
        let stacks = StackTraceMap::try_from(
            bpf.take_map("stacks")
                .ok_or_else(|| format!("{COMPONENT}: map `stacks` missing"))?,
        )?;
        let dropped: PerCpuArray<_, u64> = PerCpuArray::try_from(
            bpf.take_map("dropped")
                .ok_or_else(|| format!("{COMPONENT}: map `dropped` missing"))?,
        )?;
        tracing::info!(component = %cx.id, cpus = cpus.len(), "eBPF profiler attached");
        let period_ns = 1_000_000_000 / self.frequency_hz;
        let interval = Duration::from_secs(self.interval_secs);
        let only_pid = self.pid;

        Ok(Box::pin(async move {
            // Owns the programs: dropping it detaches them.
            let _bpf = bpf;
            let mut cx = cx;
            let source_id: Arc<str> = cx.id.clone();
            let mut maps = Some(Maps { counts, stacks });
            let mut reported_drops = 0;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut stopping = false;
            while !stopping {
                tokio::select! {
                    _ = cx.shutdown.cancelled() => stopping = true,
                    _ = tick.tick() => {}
                }
                let Some(m) = maps.take() else { break };
                let id = source_id.clone();
                let (m, events, errors) = tokio::task::spawn_blocking(move || {
                    let mut m = m;
                    let (events, errors) = drain(&mut m, period_ns, only_pid, &id);
                    (m, events, errors)
                })
                .await?;
                maps = Some(m);
                if errors > 0 {
                    cx.metrics.error(
                        "map_read",
                        errors,
                        &"reading the in-kernel sample counts failed",
                    );
                }
                let total = per_cpu_slot(&dropped, 0);
                if total > reported_drops {
                    let n = total - reported_drops;
                    reported_drops = total;
                    cx.metrics.add_discarded(n);
                    cx.metrics.error(
                        "counts_full",
                        n,
                        &format_args!("{n} CPU samples dropped in the kernel: 16384 distinct stacks in one interval (shorten `interval_secs`)"),
                    );
                }
                cx.metrics.add_received(events.len() as u64, 0);
                let mut events = events;
                while !events.is_empty() {
                    let rest = events.split_off(events.len().min(MAX_BATCH_EVENTS));
                    if cx.out.send(EventBatch::new(events)).await.is_err() {
                        return Ok(());
                    }
                    events = rest;
                }
            }
            Ok(())
        }))
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::default_output(DataType::LOG)]
    }
}

/// Takes every count out of the kernel, symbolises the stacks and builds the events; returns
/// them with the number of map errors.
fn drain(m: &mut Maps, period_ns: u64, only_pid: Option<u32>, id: &Arc<str>) -> (Vec<Event>, u64) {
    let mut errors = 0u64;
    let keys: Vec<RawKey> = m
        .counts
        .keys()
        .filter_map(|k| k.map_err(|_| errors += 1).ok())
        .collect();
    // Read and delete each count; samples landing between the two are lost (a few per
    // interval at most, documented).
    let mut samples: Vec<(RawKey, u64)> = Vec::with_capacity(keys.len());
    for k in keys {
        if let Ok(n) = m.counts.get(&k, 0) {
            samples.push((k, n));
        }
        let _ = m.counts.remove(&k);
    }
    let symbolizer = Symbolizer::new();
    let kernel = SymSource::Kernel(Kernel::default());
    let mut used_stacks: HashSet<u32> = HashSet::new();
    let mut events = Vec::with_capacity(samples.len());
    let ts = Value::from_f64_or_zero(crate::env::monotonic_ns() as f64 / 1e9);
    for (k, n) in samples {
        if only_pid.is_some_and(|p| p != k.pid) {
            continue;
        }
        let mut frames = Vec::new();
        if k.kernel_stack >= 0 {
            used_stacks.insert(k.kernel_stack as u32);
            if let Ok(st) = m.stacks.get(&(k.kernel_stack as u32), 0) {
                let addrs: Vec<u64> = st.frames().iter().map(|f| f.ip).collect();
                push_frames(&mut frames, &symbolizer, &kernel, &addrs, true);
            }
        }
        if k.user_stack >= 0 {
            used_stacks.insert(k.user_stack as u32);
            if let Ok(st) = m.stacks.get(&(k.user_stack as u32), 0) {
                let addrs: Vec<u64> = st.frames().iter().map(|f| f.ip).collect();
                let mut p = Process::new(Pid::from(k.pid));
                p.debug_syms = false;
                p.perf_map = true;
                let src = SymSource::Process(p);
                push_frames(&mut frames, &symbolizer, &src, &addrs, false);
            }
        }
        let mut map = ObjectMap::new();
        map.insert("comm".into(), Value::from(c_str(&k.comm)));
        map.insert("pid".into(), Value::Integer(k.pid.into()));
        map.insert("tid".into(), Value::Integer(k.tid.into()));
        map.insert("cpu".into(), Value::Null);
        map.insert("timestamp".into(), ts.clone());
        map.insert("event".into(), Value::from("cpu-clock"));
        map.insert(
            "period".into(),
            Value::Integer((n.saturating_mul(period_ns)) as i64),
        );
        map.insert("count".into(), Value::Integer(n as i64));
        map.insert("frames".into(), Value::Array(frames));
        events.push(Event::Log(LogEvent::from_value(
            Value::Object(map),
            EventMetadata::new(Some(id.clone())),
        )));
    }
    for s in used_stacks {
        let _ = m.stacks.remove(&s);
    }
    (events, errors)
}

/// Appends the frames of one stack (leaf first, as `perf script` prints them).
fn push_frames(
    out: &mut Vec<Value>,
    symbolizer: &Symbolizer,
    src: &SymSource<'_>,
    addrs: &[u64],
    kernel: bool,
) {
    let syms = symbolizer
        .symbolize(src, Input::AbsAddr(addrs))
        .unwrap_or_default();
    for (i, addr) in addrs.iter().enumerate() {
        let mut f = ObjectMap::new();
        f.insert("addr".into(), Value::from(format!("{addr:x}")));
        let (symbol, offset, module) = match syms.get(i) {
            Some(Symbolized::Sym(s)) => (
                Value::from(s.name.to_string()),
                Value::Integer(s.offset as i64),
                s.module.as_ref().map_or(Value::Null, |m| {
                    Value::from(m.to_string_lossy().into_owned())
                }),
            ),
            _ => (Value::Null, Value::Null, Value::Null),
        };
        let module = if kernel {
            Value::from("[kernel.kallsyms]")
        } else {
            module
        };
        f.insert("symbol".into(), symbol);
        f.insert("offset".into(), offset);
        f.insert("module".into(), module);
        f.insert(
            "kind".into(),
            Value::from(if kernel { "kernel" } else { "user" }),
        );
        f.insert("inlined".into(), Value::Boolean(false));
        out.push(Value::Object(f));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults() {
        let c: EbpfProfileConfig = toml::from_str("").unwrap();
        assert_eq!(c.frequency_hz, 49);
        assert_eq!(c.interval_secs, 10);
        assert!(toml::from_str::<EbpfProfileConfig>("hz = 1").is_err());
    }
}
