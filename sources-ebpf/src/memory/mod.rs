//! `ebpf_memory`: where memory goes, as stack samples (`bpf/memory.bpf.c`).
//!
//! - **Allocations** (`allocations`): uprobes on the allocator (`malloc`, `calloc`,
//!   `realloc`, `posix_memalign`, `aligned_alloc`, `memalign`, `free`) of chosen processes
//!   keep every outstanding block in the kernel with its size and the user stack that
//!   allocated it ([`allocations`]). Every interval, the blocks are summed by stack: one
//!   sample per (process, stack) with the outstanding bytes as its `period` and the number of
//!   blocks as its `count`, like bcc's `memleak`. A flame graph of them (`stack_fold`) shows
//!   who holds the memory.
//! - **Page faults** (`page_faults`): the `exceptions:page_fault_user` tracepoint counts the
//!   faults of every process (or one) by (process, thread, user stack); every interval the
//!   counts are drained like `ebpf_profile`'s (one sample per stack, `period` = `count` =
//!   the faults since the last drain).
//!
//! Stacks are symbolised by `ebpf_profile`'s [`Symbols`] on a worker thread.

mod allocations;

use std::sync::Arc;

use async_trait::async_trait;
use aya::maps::{HashMap as BpfHashMap, PerCpuArray, RingBuf, StackTraceMap};
use aya::programs::BtfTracePoint;
use aya::{Btf, EbpfLoader};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use weir_pipeline::component::{Output, Source, SourceConfig, SourceContext};
use weir_pipeline::config::Secs;
use weir_pipeline::event::{Event, EventBatch, MAX_BATCH_EVENTS};
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use crate::env;
use crate::profile::drain::{drain, Maps, Period, SampleKind};
use crate::profile::{parse_proc, Symbols};
use crate::ring::{report_drops, RingReader};
use allocations::Allocations;
pub use allocations::AllocationsConfig;

static OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/memory.bpf.o");

const COMPONENT: &str = "ebpf_memory";

/// The size of the kernel's `traced` map (bpf/memory.bpf.c).
const MAX_TRACED: usize = 1024;

/// What the kernel side could not record, by slot of `dropped` (MEM_DROP_* in bpf/memory.h).
const DROPS: [(&str, &str); 3] = [
    (
        "allocs_full",
        "allocations not tracked: `allocations.max_outstanding` blocks already outstanding",
    ),
    (
        "pending_full",
        "allocations not tracked: 65536 threads inside the allocator at once",
    ),
    (
        "counts_full",
        "page faults dropped in the kernel: 16384 distinct stacks in one interval (shorten `interval_secs`)",
    ),
];

/// `page_faults`: `true` for every process, or `{ pid = N }` for one.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum PageFaults {
    /// `true`: the page faults of every process; `false`: none.
    All(bool),
    /// `{ pid = N }`: the page faults of one process.
    One(PageFaultsOf),
}

impl Default for PageFaults {
    fn default() -> Self {
        Self::All(false)
    }
}

/// `page_faults = { pid = N }`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PageFaultsOf {
    /// The process (all its threads), filtered in the kernel.
    pub pid: u32,
}

/// `type = "ebpf_memory"`: where memory goes, as stack samples (the `perf` source's schema,
/// for `stack_fold`): the outstanding allocations of chosen processes by stack (uprobes on
/// their allocator, like bcc's `memleak`), and page faults by stack. At least one of
/// `allocations` and `page_faults` must be set. Needs root (CAP_BPF + CAP_PERFMON, or
/// CAP_SYS_ADMIN) and a kernel with BTF.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EbpfMemoryConfig {
    /// Track the allocations of these processes: every interval, one sample per stack that
    /// holds memory, `event = "allocations"`, `period` the outstanding bytes, `count` the
    /// outstanding blocks. Default: none.
    #[serde(default)]
    pub allocations: Option<AllocationsConfig>,
    /// Count page faults taken in user mode by stack: `true` for every process, or
    /// `{ pid = N }` for one. Every interval, one sample per stack that faulted,
    /// `event = "page-faults"`, `period` and `count` the faults since the last interval.
    /// Default: false.
    #[serde(default)]
    pub page_faults: PageFaults,
    /// Seconds between two reports. Default: 10.
    #[serde(default = "default_interval")]
    pub interval_secs: Secs,
}

fn default_interval() -> Secs {
    Secs::from_secs(10)
}

/// Work for the worker thread, which owns the maps and the symbol cache.
enum Command {
    /// The kernel saw this process fault for the first time: read its mappings while it lives.
    Snapshot(u32),
    /// Report: answer with the events and the number of map errors.
    Drain(oneshot::Sender<(Vec<Event>, u64)>),
}

#[async_trait]
impl SourceConfig for EbpfMemoryConfig {
    async fn build(&self, cx: SourceContext) -> Result<Source, BoxError> {
        let fault_tgid = match &self.page_faults {
            PageFaults::All(false) => None,
            PageFaults::All(true) => Some(0),
            PageFaults::One(PageFaultsOf { pid: 0 }) => {
                return Err(format!("{COMPONENT}: `page_faults.pid` 0 is not a process").into())
            }
            PageFaults::One(PageFaultsOf { pid }) => Some(*pid),
        };
        if let Some(a) = &self.allocations {
            if a.pids.is_empty() || a.pids.len() > MAX_TRACED {
                return Err(format!(
                    "{COMPONENT}: `allocations.pids` must list 1 to {MAX_TRACED} processes, got {}",
                    a.pids.len()
                )
                .into());
            }
            if a.max_outstanding == 0 {
                return Err(format!(
                    "{COMPONENT}: `allocations.max_outstanding` must be at least 1"
                )
                .into());
            }
        } else if fault_tgid.is_none() {
            return Err(format!(
                "{COMPONENT}: nothing to do: set `allocations` or `page_faults`, or both"
            )
            .into());
        }
        env::check(COMPONENT, false)?;
        let max_outstanding = self.allocations.as_ref().map_or(1, |a| a.max_outstanding);
        let filter = fault_tgid.unwrap_or(0);
        let mut bpf = EbpfLoader::new()
            .override_global("fault_tgid", &filter, true)
            .map_max_entries("allocs", max_outstanding)
            .load(OBJECT)
            .map_err(|e| format!("{COMPONENT}: loading the eBPF object failed: {e}"))?;
        let take = |bpf: &mut aya::Ebpf, name: &str| {
            bpf.take_map(name)
                .ok_or_else(|| format!("{COMPONENT}: map `{name}` missing"))
        };
        let allocations = match &self.allocations {
            Some(a) => {
                let mut traced: BpfHashMap<_, u32, u8> =
                    BpfHashMap::try_from(take(&mut bpf, "traced")?)?;
                for &pid in &a.pids {
                    traced.insert(pid, 1, 0)?;
                }
                allocations::attach(&mut bpf, &a.pids, a.libc.as_deref(), &cx.id)?;
                Some(Allocations {
                    allocs: BpfHashMap::try_from(take(&mut bpf, "allocs")?)?,
                    stacks: StackTraceMap::try_from(take(&mut bpf, "alloc_stacks")?)?,
                    traced,
                    pids: a.pids.clone(),
                    unused_stacks: Default::default(),
                    max_outstanding,
                })
            }
            None => None,
        };
        let faults = match fault_tgid {
            Some(_) => {
                let btf = Btf::from_sys_fs()
                    .map_err(|e| format!("{COMPONENT}: reading the kernel's BTF: {e}"))?;
                let p: &mut BtfTracePoint = bpf
                    .program_mut("page_fault")
                    .ok_or_else(|| format!("{COMPONENT}: program `page_fault` missing"))?
                    .try_into()?;
                p.load("page_fault_user", &btf).map_err(|e| {
                    format!(
                        "{COMPONENT}: the kernel rejected `page_fault` (it needs the \
                         exceptions:page_fault_user tracepoint, x86, and BTF-typed tracepoints): {e:#}"
                    )
                })?;
                p.attach().map_err(|e| {
                    format!("{COMPONENT}: attaching to tracepoint exceptions:page_fault_user: {e}")
                })?;
                Some(Maps {
                    counts: BpfHashMap::try_from(take(&mut bpf, "counts")?)?,
                    stacks: StackTraceMap::try_from(take(&mut bpf, "stacks")?)?,
                    offcpu_start: None,
                })
            }
            None => None,
        };
        let dropped: PerCpuArray<_, u64> = PerCpuArray::try_from(take(&mut bpf, "dropped")?)?;
        let mut procs = RingReader::new(RingBuf::try_from(take(&mut bpf, "procs")?)?)?;
        let (commands, rx) = mpsc::channel(4096);
        let (ready_tx, ready) = oneshot::channel();
        let source_id: Arc<str> = cx.id.clone();
        std::thread::Builder::new()
            .name(format!("{COMPONENT}-{}", cx.id))
            .spawn(move || worker(faults, allocations, rx, ready_tx, source_id))
            .map_err(|e| format!("{COMPONENT}: starting the worker thread: {e}"))?;
        ready
            .await
            .map_err(|_| format!("{COMPONENT}: the worker thread stopped"))?;
        tracing::info!(
            component = %cx.id,
            allocations = self.allocations.is_some(),
            page_faults = fault_tgid.is_some(),
            "eBPF memory probes attached"
        );
        let interval = self.interval_secs.duration();

        Ok(Box::pin(async move {
            // Owns the programs: dropping it detaches them.
            let _bpf = bpf;
            let mut cx = cx;
            let mut reported = [0u64; 3];
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut stopping = false;
            while !stopping {
                tokio::select! {
                    _ = cx.shutdown.cancelled() => stopping = true,
                    _ = tick.tick() => {}
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
                if commands.send(Command::Drain(tx)).await.is_err() {
                    return Err(format!("{COMPONENT}: the worker thread stopped").into());
                }
                let (events, errors) = rx
                    .await
                    .map_err(|_| format!("{COMPONENT}: the worker thread stopped"))?;
                if errors > 0 {
                    cx.metrics
                        .error("map_read", errors, &"reading the in-kernel maps failed");
                }
                report_drops(&dropped, &DROPS, &mut reported, &cx.metrics);
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

/// The worker thread: reads mappings as processes appear, reports on demand. Ends when the
/// source drops its sender.
fn worker(
    mut faults: Option<Maps>,
    mut allocations: Option<Allocations>,
    mut rx: mpsc::Receiver<Command>,
    ready: oneshot::Sender<()>,
    id: Arc<str>,
) {
    let mut symbols = Symbols::new();
    // The traced processes' mappings are read now: their samples are symbolised even if
    // they exit (and their allocations are forgotten) before a report.
    if let Some(a) = &allocations {
        for pid in &a.pids {
            symbols.snapshot(*pid);
        }
    }
    let _ = ready.send(());
    let kind = SampleKind {
        event: "page-faults",
        period: Period::Count,
    };
    while let Some(cmd) = rx.blocking_recv() {
        match cmd {
            Command::Snapshot(pid) => {
                symbols.snapshot(pid);
            }
            Command::Drain(reply) => {
                let (mut events, mut errors) = (Vec::new(), 0);
                if let Some(a) = allocations.as_mut() {
                    let (ev, err) = a.drain(&mut symbols, &id);
                    events.extend(ev);
                    errors += err;
                }
                if let Some(m) = faults.as_mut() {
                    let (ev, err) = drain(m, &mut symbols, kind, &id, None);
                    events.extend(ev);
                    errors += err;
                }
                if faults.is_none() {
                    // drain() ends the drain for the symbol cache; without page faults,
                    // here.
                    symbols.end_drain();
                }
                let _ = reply.send((events, errors));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config() {
        let c: EbpfMemoryConfig = toml::from_str("page_faults = true").unwrap();
        assert!(matches!(c.page_faults, PageFaults::All(true)));
        assert!(c.allocations.is_none());
        assert_eq!(c.interval_secs, Secs::from_secs(10));
        let c: EbpfMemoryConfig = toml::from_str("page_faults = { pid = 7 }").unwrap();
        assert!(matches!(
            c.page_faults,
            PageFaults::One(PageFaultsOf { pid: 7 })
        ));
        let c: EbpfMemoryConfig =
            toml::from_str("allocations = { pids = [1, 2], libc = \"/lib/libc.so.6\" }").unwrap();
        let a = c.allocations.unwrap();
        assert_eq!(a.pids, [1, 2]);
        assert_eq!(a.max_outstanding, 262_144);
        assert!(matches!(c.page_faults, PageFaults::All(false)));
        for bad in [
            "page_faults = { pid = 7, tid = 1 }",
            "allocations = { pid = 1 }",
            "allocations = { pids = [1], binary = \"/x\" }",
            "faults = true",
        ] {
            assert!(toml::from_str::<EbpfMemoryConfig>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn finds_this_process_libc() {
        let libc = allocations::find_libc(std::process::id()).unwrap();
        let s = libc.to_string_lossy();
        assert!(
            s.starts_with(&format!("/proc/{}/root/", std::process::id())),
            "{s}"
        );
        assert!(libc.exists(), "{s}");
        assert!(allocations::find_libc(u32::MAX).is_err());
    }
}
