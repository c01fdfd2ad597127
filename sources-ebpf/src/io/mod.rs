//! `ebpf_io`: block I/O per process, cgroup, disk and operation (`bpf/io.bpf.c`): requests,
//! bytes, errors and a latency histogram (driver issue to completion), counted in the kernel
//! and sent as metrics every `interval_secs`.
//!
//! - [`stats`]: the kernel's keys and counts, and the metrics made of one key;
//! - [`names`]: disk names and cgroup paths for the numbers the kernel counts by;
//! - [`stacks`]: with `stacks = true`, the requests and bytes completed by issuing stack, as
//!   stack-sample events on the output `stacks`.
//!
//! The kernel's counts are totals since a key was created, read without clearing (nothing is
//! lost between a read and a delete), so the metrics are absolute counters. A key whose
//! process has exited is reported one last time, then deleted.

mod names;
mod stacks;
mod stats;

use std::sync::Arc;

use async_trait::async_trait;
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf, StackTraceMap};
use aya::programs::BtfTracePoint;
use aya::{Btf, EbpfLoader};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use weir_pipeline::component::{Output, Source, SourceConfig, SourceContext};
use weir_pipeline::config::Secs;
use weir_pipeline::event::{Event, EventBatch, EventMetadata, Metric, Value, MAX_BATCH_EVENTS};
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use crate::container::ContainerCache;
use crate::env::{self, c_str};
use crate::profile::drain::Maps;
use crate::profile::parse_proc;
use crate::ring::{per_cpu_slot, report_drops, RingReader};
use names::{Cgroups, Disks};
use stacks::{Command, StackMaps};
use stats::{RawKey, RawValue};

static OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/io.bpf.o");

const COMPONENT: &str = "ebpf_io";

/// The named output of the stack samples (`stacks = true`).
pub const STACKS_OUTPUT: &str = "stacks";

/// `type = "ebpf_io"`: block I/O of every process on the host, per process, cgroup, disk and
/// operation (read, write, flush, discard, other): requests, bytes, errors and a latency
/// histogram, as metrics every `interval_secs`. Needs root (CAP_BPF + CAP_PERFMON, or
/// CAP_SYS_ADMIN) and a kernel with BTF (Linux 5.11 or later; 6.5 or later to attribute requests
/// to the process that submitted them rather than the one running when they are issued).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EbpfIoConfig {
    /// Seconds between two reports. Default: 10.
    #[serde(default = "default_interval")]
    pub interval_secs: Secs,
    /// Add `container_id` and `pod_uid` tags, read from the process's `/proc/<pid>/cgroup`
    /// (containerd, CRI-O, Docker, Podman; Kubernetes pods), as `ebpf_tcp` does. Default:
    /// false.
    #[serde(default)]
    pub container_metadata: bool,
    /// How many (process, cgroup, disk, operation) series the kernel counts at once, 64 to
    /// 1048576 (about 350 bytes of kernel memory each). A series is freed after its process
    /// exits; completions that find the table full are not counted, and counted
    /// (`series_full`). Default: 16384.
    #[serde(default = "default_max_series")]
    pub max_series: u32,
    /// How many requests in flight the kernel follows at once, 64 to 1048576 (about 100 bytes
    /// each). Requests beyond it are not counted, and counted (`inflight_full`). Default: 16384.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: u32,
    /// Namespace of every metric (Prometheus sinks prefix it with `_`). Default: none.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Also count the requests and bytes completed by issuing stack: the kernel and user
    /// stacks of the thread that submitted each request (taken at `block_io_start`, or at
    /// issue when that did not fire), with its process and thread. Every `interval_secs` they
    /// are sent as stack-sample events (`event = "block-io-bytes"`, `period` the bytes,
    /// `count` the requests; fold them with `stack_fold`) on the output `stacks`
    /// (`inputs = ["<id>.stacks"]`), which exists only then; the metrics stay on the default
    /// output. Default: false.
    #[serde(default)]
    pub stacks: bool,
    /// With `stacks`: how many distinct stacks, and distinct (process, thread, stacks) counts
    /// in one interval, the kernel holds, 64 to 65536 (about 1 KiB of kernel memory each).
    /// Completions that find the counts full are not counted by stack, and counted
    /// (`stack_counts_full`); a request whose stack finds no room is counted without frames
    /// (`stack_lost`). Default: 4096.
    #[serde(default = "default_max_stacks")]
    pub max_stacks: u32,
}

fn default_interval() -> Secs {
    Secs::from_secs(10)
}
fn default_max_series() -> u32 {
    16384
}
fn default_max_inflight() -> u32 {
    16384
}
fn default_max_stacks() -> u32 {
    4096
}

impl Default for EbpfIoConfig {
    fn default() -> Self {
        Self {
            interval_secs: default_interval(),
            container_metadata: false,
            max_series: default_max_series(),
            max_inflight: default_max_inflight(),
            namespace: None,
            stacks: false,
            max_stacks: default_max_stacks(),
        }
    }
}

/// The most `max_series` and `max_inflight` may be.
const MAX_TABLE: u32 = 1 << 20;
/// The most `max_stacks` may be (each stack takes about 1 KiB of kernel memory).
const MAX_STACKS: u32 = 1 << 16;
/// With stacks: how many processes the kernel remembers having announced (`seen`, an LRU:
/// one forgotten is announced again, and its mappings read again).
const SEEN_PROCESSES: u32 = 16384;

fn check_size(option: &str, n: u32, max: u32) -> Result<(), BoxError> {
    if !(64..=max).contains(&n) {
        return Err(
            format!("{COMPONENT}: `{option}` must be between 64 and {max}, not {n}").into(),
        );
    }
    Ok(())
}

#[async_trait]
impl SourceConfig for EbpfIoConfig {
    async fn build(&self, cx: SourceContext) -> Result<Source, BoxError> {
        check_size("max_series", self.max_series, MAX_TABLE)?;
        check_size("max_inflight", self.max_inflight, MAX_TABLE)?;
        check_size("max_stacks", self.max_stacks, MAX_STACKS)?;
        env::check(COMPONENT, false)?;
        let with_stacks = u32::from(self.stacks);
        // Without stacks, the stack maps take no room.
        let (max_stacks, max_seen) = if self.stacks {
            (self.max_stacks, SEEN_PROCESSES)
        } else {
            (1, 1)
        };
        let mut bpf = EbpfLoader::new()
            .override_global("with_stacks", &with_stacks, true)
            .map_max_entries("stats", self.max_series)
            .map_max_entries("inflight", self.max_inflight)
            .map_max_entries("io_stacks", max_stacks)
            .map_max_entries("stack_counts", max_stacks)
            .map_max_entries("seen", max_seen)
            .load(OBJECT)
            .map_err(|e| format!("{COMPONENT}: loading the eBPF object failed: {e}"))?;
        let btf = Btf::from_sys_fs()
            .map_err(|e| format!("{COMPONENT}: reading the kernel's BTF: {e}"))?;
        for (prog, tp) in [
            ("io_start", "block_io_start"),
            ("io_issue", "block_rq_issue"),
            ("io_complete", "block_rq_complete"),
        ] {
            let p: &mut BtfTracePoint = bpf
                .program_mut(prog)
                .ok_or_else(|| format!("{COMPONENT}: program `{prog}` missing from the object"))?
                .try_into()?;
            match p.load(tp, &btf) {
                Ok(()) => {}
                // Before Linux 6.5: no block_io_start, requests belong to whoever issues them.
                Err(e) if prog == "io_start" => {
                    tracing::warn!(
                        component = %cx.id,
                        "tracepoint block:block_io_start unavailable ({e}): requests are \
                         attributed to the process running when they are issued"
                    );
                    continue;
                }
                Err(e) => {
                    return Err(format!(
                        "{COMPONENT}: the kernel rejected `{prog}` (it needs BTF-typed \
                         tracepoints and `bpf_get_current_task_btf`, Linux 5.11 or later): {e:#}"
                    )
                    .into())
                }
            }
            p.attach()
                .map_err(|e| format!("{COMPONENT}: attaching to tracepoint block:{tp}: {e}"))?;
        }
        let take = |bpf: &mut aya::Ebpf, name: &str| {
            bpf.take_map(name)
                .ok_or_else(|| format!("{COMPONENT}: map `{name}` missing"))
        };
        let stats = BpfHashMap::try_from(take(&mut bpf, "stats")?)?;
        let dropped: PerCpuArray<_, u64> = PerCpuArray::try_from(take(&mut bpf, "dropped")?)?;
        let mut stack_worker = None;
        if self.stacks {
            let maps = StackMaps {
                counts: Maps {
                    counts: BpfHashMap::try_from(take(&mut bpf, "stack_counts")?)?,
                    stacks: StackTraceMap::try_from(take(&mut bpf, "io_stacks")?)?,
                    offcpu_start: None,
                },
                inflight: BpfHashMap::try_from(take(&mut bpf, "inflight")?)?,
            };
            let procs = RingReader::new(RingBuf::try_from(take(&mut bpf, "procs")?)?)?;
            let (commands, rx) = mpsc::channel(4096);
            let (ready_tx, ready) = oneshot::channel();
            let source_id: Arc<str> = cx.id.clone();
            std::thread::Builder::new()
                .name(format!("{COMPONENT}-{}", cx.id))
                .spawn(move || stacks::worker(maps, rx, ready_tx, source_id))
                .map_err(|e| format!("{COMPONENT}: starting the worker thread: {e}"))?;
            // The kernel's symbols are loaded before the source counts as started.
            ready
                .await
                .map_err(|_| format!("{COMPONENT}: the worker thread stopped"))?;
            stack_worker = Some((commands, procs));
        }
        let mut reader = Reader {
            stats,
            disks: Disks::default(),
            cgroups: Cgroups::default(),
            containers: self.container_metadata.then(ContainerCache::default),
        };
        let interval = self.interval_secs.duration();
        let namespace = self.namespace.clone();
        tracing::info!(component = %cx.id, stacks = self.stacks, "eBPF block I/O tracepoints attached");

        Ok(Box::pin(async move {
            // Owns the programs: dropping it detaches them.
            let _bpf = bpf;
            let mut cx = cx;
            let mut stack_worker = stack_worker;
            let mut reported = [0u64; DROPS.len()];
            let mut reported_lost = 0;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                let stopping = tokio::select! {
                    _ = cx.shutdown.cancelled() => true,
                    _ = tick.tick() => false,
                    r = announced(&mut stack_worker) => {
                        r?;
                        continue;
                    }
                };
                // Map reads are a system call per key and names come from /proc and /sys:
                // off the runtime's threads.
                let (r, report) = tokio::task::spawn_blocking(move || {
                    let report = reader.report();
                    (reader, report)
                })
                .await
                .map_err(|e| format!("{COMPONENT}: reading the counts: {e}"))?;
                reader = r;
                // Drained after the metrics were read: a completion in these samples is in
                // the metrics of this report or of the next.
                let mut samples = Vec::new();
                if let Some((commands, _)) = &stack_worker {
                    let (tx, rx) = oneshot::channel();
                    if commands.send(Command::Drain(tx)).await.is_err() {
                        return Err(format!("{COMPONENT}: the worker thread stopped").into());
                    }
                    let (events, errors) = rx
                        .await
                        .map_err(|_| format!("{COMPONENT}: the worker thread stopped"))?;
                    if errors > 0 {
                        cx.metrics.error(
                            "map_read",
                            errors,
                            &"reading the in-kernel block I/O counts by stack failed",
                        );
                    }
                    samples = events;
                }
                report_drops(&dropped, &DROPS, &mut reported, &cx.metrics);
                let lost = per_cpu_slot(&dropped, STACK_LOST);
                if lost > reported_lost {
                    let n = lost - reported_lost;
                    reported_lost = lost;
                    cx.metrics.error(
                        "stack_lost",
                        n,
                        &format_args!(
                            "{n} block I/O requests counted by stack without their stack: the \
                             kernel's stack map had no room for it, or held a different stack \
                             in its slot (raise `max_stacks`)"
                        ),
                    );
                }
                if report.errors > 0 {
                    cx.metrics.error(
                        "map_read",
                        report.errors,
                        &"reading the in-kernel block I/O counts failed",
                    );
                }
                let now = chrono::Utc::now();
                let mut events: Vec<Event> = report
                    .metrics
                    .into_iter()
                    .map(|mut m| {
                        m.namespace.clone_from(&namespace);
                        m.timestamp = Some(now);
                        m.metadata = EventMetadata::new(Some(cx.id.clone()));
                        Event::from(m)
                    })
                    .collect();
                cx.metrics
                    .add_received((events.len() + samples.len()) as u64, 0);
                while !events.is_empty() {
                    let rest = events.split_off(events.len().min(MAX_BATCH_EVENTS));
                    if cx.out.send(EventBatch::new(events)).await.is_err() {
                        return Ok(());
                    }
                    events = rest;
                }
                while !samples.is_empty() {
                    let rest = samples.split_off(samples.len().min(MAX_BATCH_EVENTS));
                    if cx
                        .out
                        .send_to(STACKS_OUTPUT, EventBatch::new(samples))
                        .await
                        .is_err()
                    {
                        return Ok(());
                    }
                    samples = rest;
                }
                if stopping {
                    return Ok(());
                }
            }
        }))
    }

    fn outputs(&self) -> Vec<Output> {
        let mut outputs = vec![Output::default_output(DataType::METRIC)];
        if self.stacks {
            outputs.push(Output::named(STACKS_OUTPUT, DataType::LOG));
        }
        outputs
    }
}

/// Waits for processes the kernel announces (with stacks; forever without) and has the
/// worker read their mappings.
async fn announced(
    worker: &mut Option<(mpsc::Sender<Command>, RingReader)>,
) -> Result<(), BoxError> {
    let Some((commands, procs)) = worker else {
        return std::future::pending().await;
    };
    procs
        .read(256, |data| {
            if let Some(pid) = parse_proc(data) {
                // When the worker is behind, the drain reads the mappings instead.
                let _ = commands.try_send(Command::Snapshot(pid));
            }
        })
        .await?;
    Ok(())
}

/// The kernel side's drop counters (slots of `dropped`, `IO_DROP_*` in bpf/io.h).
const DROPS: [(&str, &str); 3] = [
    (
        "series_full",
        "block I/O completions not counted: the kernel's series table was full (raise `max_series`)",
    ),
    (
        "inflight_full",
        "block I/O requests not followed: the kernel's table of requests in flight was full (raise `max_inflight`)",
    ),
    (
        "stack_counts_full",
        "block I/O completions not counted by stack: the kernel's counts by stack were full (raise `max_stacks` or shorten `interval_secs`)",
    ),
];

/// Slot of `dropped` counting requests whose stack the kernel could not keep
/// (`IO_DROP_STACK_LOST`): still counted, by stack without frames, so not discarded.
const STACK_LOST: u32 = 3;

/// What one read of the counts gave.
struct Report {
    metrics: Vec<Metric>,
    /// Keys or values that could not be read.
    errors: u64,
}

/// Reads the kernel's counts into metrics; owns the map and the name caches.
struct Reader {
    stats: BpfHashMap<MapData, RawKey, RawValue>,
    disks: Disks,
    cgroups: Cgroups,
    containers: Option<ContainerCache>,
}

impl Reader {
    fn report(&mut self) -> Report {
        let mut errors = 0u64;
        let keys: Vec<RawKey> = self
            .stats
            .keys()
            .filter_map(|k| k.map_err(|_| errors += 1).ok())
            .collect();
        // Which processes are gone is decided before their counts are read: a process gone
        // then has completed its last request, so what is read now is its final count.
        let gone: Vec<bool> = keys.iter().map(|k| !alive(k.pid)).collect();
        let mut metrics = Vec::with_capacity(keys.len() * 4);
        let mut tags: Vec<(&'static str, Arc<str>)> = Vec::with_capacity(9);
        for (k, gone) in keys.iter().zip(gone) {
            match self.stats.get(k, 0) {
                Ok(v) => {
                    self.tags(k, &v, &mut tags);
                    stats::metrics(&v, &tags, &mut metrics);
                }
                // Deleted since the keys were listed (never by the kernel): nothing to say.
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(_) => errors += 1,
            }
            if gone {
                let _ = self.stats.remove(k);
            }
        }
        Report { metrics, errors }
    }

    fn tags(&mut self, k: &RawKey, v: &RawValue, tags: &mut Vec<(&'static str, Arc<str>)>) {
        tags.clear();
        let disk = self.disks.lookup(k.dev);
        tags.push(("pid", k.pid.to_string().into()));
        tags.push(("comm", c_str(&v.comm).into()));
        tags.push(("cgroup", self.cgroups.lookup(k.pid, k.cgroup_id)));
        tags.push(("device", disk.name));
        tags.push(("device_number", disk.number));
        tags.push(("op", stats::op_name(k.op).into()));
        if let Some(cache) = &mut self.containers {
            let (container, pod) = cache.lookup(k.pid, k.cgroup_id);
            for (name, value) in [("container_id", container), ("pod_uid", pod)] {
                if let Value::Bytes(b) = value {
                    tags.push((name, String::from_utf8_lossy(&b).into()));
                }
            }
        }
    }
}

/// Whether process `pid` exists (a zombie does, until it is reaped). Pid 0 (requests whose
/// owner is unknown) always does.
fn alive(pid: u32) -> bool {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if p == 0 {
        return true;
    }
    // SAFETY: signal 0 sends nothing; it only checks that the process exists.
    let rc = unsafe { libc::kill(p, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: EbpfIoConfig = toml::from_str("").unwrap();
        assert_eq!(c.interval_secs, Secs::from_secs(10));
        assert_eq!(c.max_series, 16384);
        assert_eq!(c.max_inflight, 16384);
        assert!(!c.container_metadata);
        assert!(!c.stacks);
        assert_eq!(c.max_stacks, 4096);
        assert_eq!(c.outputs().len(), 1);
        let c: EbpfIoConfig = toml::from_str("stacks = true\nmax_stacks = 128").unwrap();
        assert!(c.stacks);
        assert_eq!(c.max_stacks, 128);
        let names: Vec<Option<String>> = c.outputs().into_iter().map(|o| o.name).collect();
        assert_eq!(names, [None, Some(STACKS_OUTPUT.to_string())]);
        assert!(toml::from_str::<EbpfIoConfig>("interval = 1").is_err());
        for bad in [0, 63, (1 << 20) + 1] {
            let e = check_size("max_series", bad, MAX_TABLE)
                .unwrap_err()
                .to_string();
            assert!(e.contains("max_series"), "{e}");
        }
        check_size("max_series", 64, MAX_TABLE).unwrap();
        let e = check_size("max_stacks", 65537, MAX_STACKS)
            .unwrap_err()
            .to_string();
        assert!(e.contains("between 64 and 65536"), "{e}");
    }

    #[test]
    fn this_process_is_alive_and_a_reaped_child_is_not() {
        assert!(alive(std::process::id()));
        assert!(alive(0));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        assert!(!alive(pid));
    }
}
