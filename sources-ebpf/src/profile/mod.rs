//! `ebpf_profile`: stack profiles of every process, on-CPU or off-CPU (`bpf/profile.bpf.c`).
//!
//! On-CPU (`mode = "cpu"`): a perf-event program on the software `cpu-clock` event, at
//! `frequency_hz` on every online CPU, takes the user and kernel stacks of the running thread
//! (`bpf_get_stackid`, frame-pointer unwinding) and counts them in the kernel, keyed by
//! (process, thread, user stack, kernel stack). Off-CPU (`mode = "offcpu"`): the
//! `sched_switch` raw tracepoint takes the stacks of a thread that blocks and, when it runs
//! again, adds the time it was away to the same kind of key.
//!
//! Every `interval_secs` the counts are drained ([`drain`]) on a worker thread, symbolised
//! ([`symbols`]: blazesym, binaries cached by build id, mappings of exited processes kept)
//! and sent as stack-sample events with the schema of the `perf` source, one per distinct
//! stack, with `count` and their total `period` in nanoseconds (on-CPU: samples x the
//! sampling period; off-CPU: the time blocked).

pub(crate) mod drain;
mod symbols;
mod trigger;

use std::sync::Arc;

use async_trait::async_trait;
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf, StackTraceMap};
use aya::programs::perf_event::{
    PerfEvent, PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent,
};
use aya::programs::RawTracePoint;
use aya::util::online_cpus;
use aya::EbpfLoader;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use weir_pipeline::component::{Output, Source, SourceConfig, SourceContext};
use weir_pipeline::config::Secs;
use weir_pipeline::event::{Event, EventBatch, MAX_BATCH_EVENTS};
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use crate::env;
use crate::ring::{per_cpu_slot, RingReader};
use drain::{drain, Maps, Period, SampleKind};
pub use symbols::Symbols;
use trigger::{Change, Trigger};
pub use trigger::{ProfileTrigger, TriggerMetric};

static OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/profile.bpf.o");

const COMPONENT: &str = "ebpf_profile";

/// What is profiled.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ProfileMode {
    /// Where threads run: stacks sampled `frequency_hz` times a second on every CPU.
    #[default]
    Cpu,
    /// Where threads wait: the stack of every block (sleep, I/O, lock, ...), weighted by the
    /// time until the thread ran again.
    Offcpu,
}

/// `type = "ebpf_profile"`: stack profiles of every process on the host (on-CPU or
/// off-CPU), counted in the kernel and sent every `interval_secs` as stack-sample events (the
/// `perf` source's schema). Needs root (CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN) and a kernel
/// with BTF.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EbpfProfileConfig {
    /// `cpu` (sampling where threads run) or `offcpu` (where they block, and for how long).
    /// Default: `cpu`.
    #[serde(default)]
    pub mode: ProfileMode,
    /// Samples per second on each CPU, 1 to 1000 (`mode = "cpu"`; ignored by `offcpu`). Default:
    /// 49.
    #[serde(default = "default_hz")]
    pub frequency_hz: u64,
    /// Seconds between two drains of the in-kernel counts. Default: 10.
    #[serde(default = "default_interval")]
    pub interval_secs: Secs,
    /// Profile only this process (all its threads), filtered in the kernel. Default: none (every
    /// process).
    #[serde(default)]
    pub pid: Option<u32>,
    /// Record only while a condition holds: the machine's load, or a process's CPU use, above a
    /// threshold (checked in user space every `trigger.check_interval_secs`; the kernel
    /// programs are paused meanwhile). Each event then has a `trigger` field with the condition
    /// and the highest value measured while recording. Default: none (always recording).
    #[serde(default)]
    pub trigger: Option<ProfileTrigger>,
}

fn default_hz() -> u64 {
    49
}
fn default_interval() -> Secs {
    Secs::from_secs(10)
}

impl Default for EbpfProfileConfig {
    fn default() -> Self {
        Self {
            mode: ProfileMode::default(),
            frequency_hz: default_hz(),
            interval_secs: default_interval(),
            pid: None,
            trigger: None,
        }
    }
}

/// Work for the worker thread, which owns the maps and the symbol cache.
enum Command {
    /// The kernel saw this process for the first time: read its mappings while it lives.
    Snapshot(u32),
    /// Drain the counts and answer with the events and the number of map errors; the value
    /// is the `trigger` field of every event, if any.
    Drain(
        oneshot::Sender<(Vec<Event>, u64)>,
        Option<weir_pipeline::event::Value>,
    ),
}

/// `struct weir_profile_proc` in bpf/profile.h.
pub(crate) fn parse_proc(data: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(data.get(..4)?.try_into().ok()?))
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
        if self.pid == Some(0) {
            return Err(format!("{COMPONENT}: `pid` 0 is the idle task, not a process").into());
        }
        let mut trigger = self
            .trigger
            .as_ref()
            .map(|t| Trigger::new(t, self.pid))
            .transpose()
            .map_err(|e| format!("{COMPONENT}: {e}"))?;
        env::check(COMPONENT, false)?;
        let filter_tgid = self.pid.unwrap_or(0);
        let mut bpf = EbpfLoader::new()
            .override_global("filter_tgid", &filter_tgid, true)
            .load(OBJECT)
            .map_err(|e| format!("{COMPONENT}: loading the eBPF object failed: {e}"))?;
        let mut paused: Array<MapData, u32> = Array::try_from(
            bpf.take_map("paused")
                .ok_or_else(|| format!("{COMPONENT}: map `paused` missing"))?,
        )?;
        // With a trigger, paused from the start (before any program is attached) until its
        // condition holds.
        if trigger.is_some() {
            paused.set(0, 1, 0)?;
        }
        let mode = self.mode;
        let cpus = match mode {
            ProfileMode::Cpu => {
                let prog: &mut PerfEvent = bpf
                    .program_mut("profile_cpu")
                    .ok_or_else(|| format!("{COMPONENT}: program `profile_cpu` missing"))?
                    .try_into()?;
                prog.load().map_err(|e| {
                    format!("{COMPONENT}: the kernel rejected `profile_cpu`: {e:#}")
                })?;
                let cpus = online_cpus()
                    .map_err(|(path, e)| format!("{COMPONENT}: reading {path}: {e}"))?;
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
                cpus.len()
            }
            ProfileMode::Offcpu => {
                let prog: &mut RawTracePoint = bpf
                    .program_mut("profile_offcpu")
                    .ok_or_else(|| format!("{COMPONENT}: program `profile_offcpu` missing"))?
                    .try_into()?;
                prog.load().map_err(|e| {
                    format!("{COMPONENT}: the kernel rejected `profile_offcpu`: {e:#}")
                })?;
                prog.attach("sched_switch").map_err(|e| {
                    format!("{COMPONENT}: attaching to raw tracepoint sched_switch: {e}")
                })?;
                0
            }
        };
        let take = |bpf: &mut aya::Ebpf, name: &str| {
            bpf.take_map(name)
                .ok_or_else(|| format!("{COMPONENT}: map `{name}` missing"))
        };
        let counts = BpfHashMap::try_from(take(&mut bpf, "counts")?)?;
        let stacks = StackTraceMap::try_from(take(&mut bpf, "stacks")?)?;
        let offcpu_start = match mode {
            ProfileMode::Offcpu => Some(BpfHashMap::try_from(take(&mut bpf, "offcpu_start")?)?),
            ProfileMode::Cpu => None,
        };
        let dropped: PerCpuArray<_, u64> = PerCpuArray::try_from(take(&mut bpf, "dropped")?)?;
        let mut procs = RingReader::new(RingBuf::try_from(take(&mut bpf, "procs")?)?)?;
        let maps = Maps {
            counts,
            stacks,
            offcpu_start,
        };
        let period_ns = 1_000_000_000 / self.frequency_hz;
        let source_id: Arc<str> = cx.id.clone();
        let (commands, rx) = mpsc::channel(4096);
        let (ready_tx, ready) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("{COMPONENT}-{}", cx.id))
            .spawn(move || worker(maps, rx, ready_tx, mode, period_ns, source_id))
            .map_err(|e| format!("{COMPONENT}: starting the worker thread: {e}"))?;
        // The kernel's symbols are loaded before the source counts as started, not at the
        // first drain.
        ready
            .await
            .map_err(|_| format!("{COMPONENT}: the worker thread stopped"))?;
        match mode {
            ProfileMode::Cpu => tracing::info!(component = %cx.id, cpus, "eBPF profiler attached"),
            ProfileMode::Offcpu => {
                tracing::info!(component = %cx.id, "eBPF off-CPU profiler attached")
            }
        }
        let interval = self.interval_secs.duration();
        let check_interval = self
            .trigger
            .as_ref()
            .map_or(interval, |t| t.check_interval_secs.duration());

        Ok(Box::pin(async move {
            // Owns the programs: dropping it detaches them.
            let _bpf = bpf;
            let mut cx = cx;
            let mut reported_drops = 0;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut check = tokio::time::interval(check_interval);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let proc_root = std::path::Path::new("/proc");
            let mut stopping = false;
            while !stopping {
                // The value at which recording stopped: said once the drain that follows is
                // sent.
                let mut stopped = None;
                tokio::select! {
                    _ = cx.shutdown.cancelled() => stopping = true,
                    _ = tick.tick() => {}
                    _ = check.tick(), if trigger.is_some() => {
                        let Some(t) = trigger.as_mut() else { continue };
                        let (change, error) = t.check(proc_root);
                        if let Some(e) = error {
                            cx.metrics.error("trigger", 1, &format_args!("profiling trigger: {e} (taken as not holding)"));
                        }
                        match change {
                            Some(Change::Start(value)) => {
                                paused.set(0, 0, 0)?;
                                tracing::info!(component = %cx.id, value, "profiling trigger holds: recording");
                                continue;
                            }
                            Some(Change::Stop(value)) => {
                                // Paused first, then what was recorded is drained at once.
                                paused.set(0, 1, 0)?;
                                stopped = Some(value);
                            }
                            None => continue,
                        }
                    }
                    r = procs.read(256, |data| {
                        if let Some(pid) = parse_proc(data) {
                            // When the worker is behind, the drain reads the mappings instead.
                            let _ = commands.try_send(Command::Snapshot(pid));
                        }
                    }) => {
                        r?;
                        continue;
                    }
                }
                let (tx, rx) = oneshot::channel();
                let field = trigger.as_mut().map(|t| t.field());
                if commands.send(Command::Drain(tx, field)).await.is_err() {
                    return Err(format!("{COMPONENT}: the worker thread stopped").into());
                }
                let (events, errors) = rx
                    .await
                    .map_err(|_| format!("{COMPONENT}: the worker thread stopped"))?;
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
                        &format_args!("{n} samples dropped in the kernel: 16384 distinct stacks in one interval (shorten `interval_secs`)"),
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
                if let Some(value) = stopped {
                    let at = crate::env::monotonic_ns() as f64 / 1e9;
                    tracing::info!(component = %cx.id, value, at, "profiling trigger released: paused");
                }
            }
            Ok(())
        }))
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::default_output(DataType::LOG)]
    }
}

/// The worker thread: reads mappings as processes appear, drains on demand. Ends when the
/// source drops its sender.
fn worker(
    mut maps: Maps,
    mut rx: mpsc::Receiver<Command>,
    ready: oneshot::Sender<()>,
    mode: ProfileMode,
    period_ns: u64,
    id: Arc<str>,
) {
    let mut symbols = Symbols::new();
    symbols.load_kernel();
    let _ = ready.send(());
    while let Some(cmd) = rx.blocking_recv() {
        match cmd {
            Command::Snapshot(pid) => {
                symbols.snapshot(pid);
            }
            Command::Drain(reply, field) => {
                let kind = match mode {
                    ProfileMode::Cpu => SampleKind {
                        event: "cpu-clock",
                        period: Period::PerSample(period_ns),
                    },
                    ProfileMode::Offcpu => SampleKind {
                        event: "offcpu",
                        period: Period::TotalNs,
                    },
                };
                let out = drain(&mut maps, &mut symbols, kind, &id, field);
                tracing::debug!(
                    component = %id,
                    processes = symbols.processes(),
                    binaries = symbols.binaries(),
                    "profile drained"
                );
                let _ = reply.send(out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults() {
        let c: EbpfProfileConfig = toml::from_str("").unwrap();
        assert_eq!(c.mode, ProfileMode::Cpu);
        assert_eq!(c.frequency_hz, 49);
        assert_eq!(c.interval_secs, Secs::from_secs(10));
        assert!(toml::from_str::<EbpfProfileConfig>("hz = 1").is_err());
        let c: EbpfProfileConfig = toml::from_str("mode = \"offcpu\"").unwrap();
        assert_eq!(c.mode, ProfileMode::Offcpu);
        assert!(toml::from_str::<EbpfProfileConfig>("mode = \"wall\"").is_err());
    }
}
