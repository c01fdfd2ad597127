//! `ebpf_sched`: the scheduling portrait of every process, as metrics (`bpf/sched.bpf.c`).
//!
//! The kernel counts, per process and cgroup: voluntary and involuntary context switches
//! (as `/proc/<pid>/status` counts them), CPU time, run-queue latency (a histogram: from the
//! wakeup, or the preemption, until the thread runs), time blocked by reason (sleep, disk,
//! kernel lock, other) and, with `futex = true`, the futex reason and futex wait time. Every `interval_secs` user space reads the
//! totals and sends them as absolute counters and a histogram, tagged `pid`, `comm`,
//! `cgroup_id` (and `container_id`, `pod_uid` with `container_metadata`). A process whose last
//! thread exited is reported once more, then forgotten.

mod record;

use std::collections::HashMap as StdHashMap;

use async_trait::async_trait;
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Btf, EbpfLoader};
use serde::{Deserialize, Serialize};
use weir_pipeline::component::{Output, Source, SourceConfig, SourceContext};
use weir_pipeline::config::Secs;
use weir_pipeline::event::{Event, EventBatch, EventMetadata, Metric, Value, MAX_BATCH_EVENTS};
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use crate::container::ContainerCache;
use crate::env;
use crate::ring::per_cpu_slot;
use record::{RawKey, RawStats};

static OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/sched.bpf.o");

const COMPONENT: &str = "ebpf_sched";

/// `type = "ebpf_sched"`: per process and cgroup, context switches (voluntary, involuntary),
/// CPU time, run-queue latency, time blocked by reason and futex wait time, counted in the
/// kernel and sent as metrics every `interval_secs`. Needs root (CAP_BPF + CAP_PERFMON, or
/// CAP_SYS_ADMIN), a kernel with BTF (Linux 5.19 or later: BTF-typed tracepoints, task
/// storage, `sched_switch`'s `prev_state`, the `lock:contention_*` tracepoints) and tracefs
/// (mounted when missing and permitted).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EbpfSchedConfig {
    /// Seconds between two reports of the totals. Default: 10.
    #[serde(default = "default_interval")]
    pub interval_secs: Secs,
    /// Follow only this process (all its threads), filtered in the kernel. Default: none (every
    /// process).
    #[serde(default)]
    pub pid: Option<u32>,
    /// Processes (per cgroup) followed at once, 64 to 1048576: the kernel-side table has this
    /// many entries of 432 bytes, allocated up front. A process that finds it full is not
    /// followed, and counted (`too_many_processes`). Default: 16384 (7 MiB).
    #[serde(default = "default_max_processes")]
    pub max_processes: u32,
    /// Add the `container_id` and `pod_uid` tags, read from the process's
    /// `/proc/<pid>/cgroup` (containerd, CRI-O, Docker, Podman; Kubernetes pods). Default:
    /// false.
    #[serde(default)]
    pub container_metadata: bool,
    /// Follow futex wait calls (user-space locks, condition variables, joins): the
    /// `sched_futex_*` metrics, and the `futex` reason of blocked time (without it, those waits
    /// count as `sleep`). Off by default because of its cost to every process on the host, not
    /// only the followed ones: it attaches to the `syscalls:sys_*_futex` tracepoints, and any
    /// syscall tracepoint puts every system call on the kernel's slower traced path (measured
    /// here: about 30 ns more per system call, +25% on a loop of `getppid`). Default: false.
    #[serde(default)]
    pub futex: bool,
}

fn default_interval() -> Secs {
    Secs::from_secs(10)
}
fn default_max_processes() -> u32 {
    16384
}

impl Default for EbpfSchedConfig {
    fn default() -> Self {
        Self {
            interval_secs: default_interval(),
            pid: None,
            max_processes: default_max_processes(),
            container_metadata: false,
            futex: false,
        }
    }
}

/// The kernel side's drop counters (slots of `dropped`): error kind, and what it means.
const DROPS: [(&str, &str); 2] = [
    (
        "too_many_processes",
        "times a process was not followed: the kernel-side table was full (raise `max_processes`)",
    ),
    (
        "no_thread_state",
        "times a thread was not followed: the kernel could not allocate its state",
    ),
];

/// What a report reads, owned by the blocking task that reads it.
struct State {
    /// Futex waits are followed: their metrics are reported.
    futex: bool,
    stats: BpfHashMap<MapData, RawKey, RawStats>,
    containers: Option<ContainerCache>,
    source_id: std::sync::Arc<str>,
}

#[async_trait]
impl SourceConfig for EbpfSchedConfig {
    async fn build(&self, cx: SourceContext) -> Result<Source, BoxError> {
        if !(64..=1 << 20).contains(&self.max_processes) {
            return Err(format!(
                "{COMPONENT}: `max_processes` must be between 64 and 1048576, not {}",
                self.max_processes
            )
            .into());
        }
        if self.pid == Some(0) {
            return Err(format!("{COMPONENT}: `pid` 0 is the idle task, not a process").into());
        }
        env::check(COMPONENT, true)?;
        let filter_tgid = self.pid.unwrap_or(0);
        // `threads` is task storage, which aya creates but has no type for (only the kernel
        // side uses it).
        let mut bpf = EbpfLoader::new()
            .allow_unsupported_maps()
            .override_global("filter_tgid", &filter_tgid, true)
            .map_max_entries("stats", self.max_processes)
            .load(OBJECT)
            .map_err(|e| format!("{COMPONENT}: loading the eBPF object failed: {e}"))?;
        let btf = Btf::from_sys_fs()
            .map_err(|e| format!("{COMPONENT}: reading the kernel's BTF: {e}"))?;
        for (prog, tp) in [
            ("lock_begin", "contention_begin"),
            ("lock_end", "contention_end"),
            ("sched_wakeup", "sched_wakeup"),
            ("sched_wakeup_new", "sched_wakeup_new"),
            ("sched_switch", "sched_switch"),
        ] {
            let p: &mut BtfTracePoint = bpf
                .program_mut(prog)
                .ok_or_else(|| format!("{COMPONENT}: program `{prog}` missing from the object"))?
                .try_into()?;
            p.load(tp, &btf).map_err(|e| {
                format!(
                    "{COMPONENT}: the kernel rejected `{prog}` (it needs Linux 5.19 or later: \
                     BTF-typed tracepoints, task storage, lock contention tracepoints): {e:#}"
                )
            })?;
            p.attach()
                .map_err(|e| format!("{COMPONENT}: attaching to tracepoint {tp} (tp_btf): {e}"))?;
        }
        // futex_waitv (5.16) and futex_wait (6.7) are attached where the kernel has them; none
        // of them unless asked (`futex`).
        let tracefs = env::tracefs_path();
        let has = |tp: &str| tracefs.is_some_and(|t| t.join("events/syscalls").join(tp).is_dir());
        for (prog, tps, required) in [
            ("futex_enter_op", &["sys_enter_futex"][..], true),
            ("futex_enter_waitv", &["sys_enter_futex_waitv"][..], false),
            ("futex_enter_wait", &["sys_enter_futex_wait"][..], false),
            (
                "futex_exit",
                &[
                    "sys_exit_futex",
                    "sys_exit_futex_waitv",
                    "sys_exit_futex_wait",
                ][..],
                true,
            ),
        ]
        .into_iter()
        .filter(|_| self.futex)
        {
            let p: &mut TracePoint = bpf
                .program_mut(prog)
                .ok_or_else(|| format!("{COMPONENT}: program `{prog}` missing from the object"))?
                .try_into()?;
            p.load()
                .map_err(|e| format!("{COMPONENT}: the kernel rejected `{prog}`: {e:#}"))?;
            for (i, tp) in tps.iter().enumerate() {
                if (required && i == 0) || has(tp) {
                    p.attach("syscalls", tp).map_err(|e| {
                        format!("{COMPONENT}: attaching to tracepoint syscalls:{tp}: {e}")
                    })?;
                }
            }
        }
        let take = |bpf: &mut aya::Ebpf, name: &str| {
            bpf.take_map(name)
                .ok_or_else(|| format!("{COMPONENT}: map `{name}` missing"))
        };
        let stats = BpfHashMap::try_from(take(&mut bpf, "stats")?)?;
        let dropped: PerCpuArray<_, u64> = PerCpuArray::try_from(take(&mut bpf, "dropped")?)?;
        tracing::info!(component = %cx.id, "eBPF scheduler tracepoints attached");
        let interval = self.interval_secs.duration();
        let mut state = Some(State {
            futex: self.futex,
            stats,
            containers: self.container_metadata.then(ContainerCache::default),
            source_id: cx.id.clone(),
        });

        Ok(Box::pin(async move {
            // Owns the programs: dropping it detaches them.
            let _bpf = bpf;
            let mut cx = cx;
            let mut reported = [0u64; 2];
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut stopping = false;
            while !stopping {
                tokio::select! {
                    _ = cx.shutdown.cancelled() => stopping = true,
                    _ = tick.tick() => {}
                }
                let Some(mut st) = state.take() else {
                    return Err(format!("{COMPONENT}: the report task was lost").into());
                };
                let (st, events, errors) = tokio::task::spawn_blocking(move || {
                    let (events, errors) = report(&mut st);
                    (st, events, errors)
                })
                .await
                .map_err(|e| format!("{COMPONENT}: the report task failed: {e}"))?;
                state = Some(st);
                if errors > 0 {
                    cx.metrics
                        .error("map_read", errors, &"reading the in-kernel totals failed");
                }
                for (slot, (seen, (kind, why))) in reported.iter_mut().zip(DROPS).enumerate() {
                    let total = per_cpu_slot(&dropped, slot as u32);
                    if total > *seen {
                        let n = total - *seen;
                        *seen = total;
                        cx.metrics.error(kind, n, &format_args!("{n} {why}"));
                    }
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
        vec![Output::default_output(DataType::METRIC)]
    }
}

fn to_string(v: Value) -> Option<String> {
    match v {
        Value::Bytes(b) => Some(String::from_utf8_lossy(&b).into_owned()),
        _ => None,
    }
}

/// Reads every process's totals and makes their metrics; forgets the processes that exited.
/// Returns the events and the number of map errors.
fn report(st: &mut State) -> (Vec<Event>, u64) {
    let mut errors = 0u64;
    let entries: Vec<(RawKey, RawStats)> = st
        .stats
        .iter()
        .filter_map(|r| r.map_err(|_| errors += 1).ok())
        .collect();
    let now = chrono::Utc::now();
    let mut metrics: Vec<Metric> = Vec::with_capacity(entries.len() * 16);
    // One container lookup per process even when it has entries in several cgroups.
    let mut containers: StdHashMap<(u32, u64), (Option<String>, Option<String>)> =
        StdHashMap::new();
    for (k, s) in &entries {
        let container = st.containers.as_mut().map(|cache| {
            containers
                .entry((k.pid, k.cgroup_id))
                .or_insert_with(|| {
                    let (c, p) = cache.lookup(k.pid, k.cgroup_id);
                    (to_string(c), to_string(p))
                })
                .clone()
        });
        record::metrics(
            s,
            record::tags(k, s, container),
            st.futex,
            now,
            &mut metrics,
        );
        if s.exited != 0 && st.stats.remove(k).is_err() {
            errors += 1;
        }
    }
    let events = metrics
        .into_iter()
        .map(|mut m| {
            m.metadata = EventMetadata::new(Some(st.source_id.clone()));
            Event::from(m)
        })
        .collect();
    (events, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: EbpfSchedConfig = toml::from_str("").unwrap();
        assert_eq!(c.interval_secs, Secs::from_secs(10));
        assert_eq!(c.max_processes, 16384);
        assert_eq!(c.pid, None);
        assert!(!c.container_metadata);
        assert!(toml::from_str::<EbpfSchedConfig>("interval = 1").is_err());
        let c: EbpfSchedConfig = toml::from_str("pid = 7\ninterval_secs = 1").unwrap();
        assert_eq!(c.pid, Some(7));
    }
}
