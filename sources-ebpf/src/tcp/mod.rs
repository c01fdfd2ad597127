//! `ebpf_tcp`: one event per TCP connection when it closes: owning process, 4-tuple (IPv4 and
//! IPv6), direction, start time, duration, states seen, bytes acked and received,
//! retransmissions, RTT, congestion and window state, close reason (`bpf/tcp.bpf.c`).
//! Optionally a stats event every `interval_secs` while a connection is open, kernel-side
//! filters ([`filter`]) and the container of the owning process ([`crate::container`]).

mod filter;
mod record;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aya::maps::{PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, TracePoint};
use aya::Btf;
use aya::EbpfLoader;
use serde::{Deserialize, Serialize};
use weir_pipeline::component::{Output, Source, SourceConfig, SourceContext};
use weir_pipeline::config::DataType;
use weir_pipeline::event::{Event, EventBatch, EventMetadata, LogEvent, Value, MAX_BATCH_EVENTS};
use weir_pipeline::BoxError;

use crate::container::ContainerCache;
use crate::env::{self, Clock};
use crate::process::check_ring_size;
use crate::ring::{per_cpu_slot, RingReader};
use filter::Filters;
use record::{RawTcpEvent, TcpLog};

static OBJECT: &[u8] = aya::include_bytes_aligned!("../../bpf/tcp.bpf.o");

const COMPONENT: &str = "ebpf_tcp";

/// `type = "ebpf_tcp"`: one log event per TCP connection (IPv4 and IPv6) of every process on
/// the host, sent when the connection closes. Needs root (CAP_BPF + CAP_PERFMON, or
/// CAP_SYS_ADMIN), a kernel with BTF, and tracefs (mounted when missing and permitted).
///
/// The filters are checked in the kernel and combine with "and": a connection is reported
/// when its local or remote port is in `ports`, its owner's pid in `pids` and its owner in
/// one of `cgroups` (each when set).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EbpfTcpConfig {
    /// Report only connections whose local or remote port is one of these (at most 4096).
    /// Default: empty (any port).
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Report only connections owned by these processes (process ids, as `getpid()` returns
    /// them; at most 4096). Connections accepted by another process, or never accepted, are
    /// not reported. Default: empty (any process).
    #[serde(default)]
    pub pids: Vec<u32>,
    /// Report only connections owned by processes in these cgroup v2 directories or below
    /// them (at most 64): absolute (`/sys/fs/cgroup/kubepods.slice`) or relative to the
    /// cgroup v2 mount (`/kubepods.slice`, as `/proc/<pid>/cgroup` shows it). Default: empty
    /// (any cgroup).
    #[serde(default)]
    pub cgroups: Vec<String>,
    /// Also send a `tcp_stats` event for each open connection at most every this many seconds
    /// (at the first segment it receives after the interval: a connection that sends or
    /// receives nothing sends none). Default: unset (only the event at close).
    #[serde(default)]
    pub interval_secs: Option<u64>,
    /// Add `container_id` and `pod_uid`, read from the owning process's
    /// `/proc/<pid>/cgroup` (containerd, CRI-O, Docker, Podman; Kubernetes pods). Default:
    /// false.
    #[serde(default)]
    pub container_metadata: bool,
    /// Size of the kernel-to-Weir ring buffer in bytes: a power of two, at least 4096. Events
    /// that do not fit (Weir is behind) are dropped and counted. Default: 1048576.
    #[serde(default)]
    pub ring_buffer_bytes: Option<u32>,
}

#[async_trait]
impl SourceConfig for EbpfTcpConfig {
    async fn build(&self, cx: SourceContext) -> Result<Source, BoxError> {
        let ring_bytes = self.ring_buffer_bytes.unwrap_or(1 << 20);
        check_ring_size(COMPONENT, ring_bytes)?;
        if self.interval_secs == Some(0) {
            return Err(format!("{COMPONENT}: `interval_secs` must be at least 1").into());
        }
        let filters = Filters::resolve(&self.ports, &self.pids, &self.cgroups)?;
        env::check(COMPONENT, true)?;

        let flags = filters.flags();
        let cgroup_count = filters.cgroup_count();
        let stats_ns: u64 = self
            .interval_secs
            .unwrap_or(0)
            .saturating_mul(1_000_000_000);
        let (ports_size, pids_size) = filters.map_sizes();
        let wakeup_bytes = u64::from(ring_bytes / 8);
        let mut bpf = EbpfLoader::new()
            .override_global("filters", &flags, true)
            .override_global("cgroup_count", &cgroup_count, true)
            .override_global("stats_interval_ns", &stats_ns, true)
            .override_global("wakeup_bytes", &wakeup_bytes, true)
            .map_max_entries("events", ring_bytes)
            .map_max_entries("ports", ports_size)
            .map_max_entries("pids", pids_size)
            .load(OBJECT)
            .map_err(|e| format!("{COMPONENT}: loading the eBPF object failed: {e}"))?;
        // Before any program runs, so no connection slips past an empty filter.
        filters.fill(&mut bpf)?;
        // BTF-typed raw tracepoints: the same attachment as a raw tracepoint (no trampoline),
        // but the programs read the socket with plain loads; see bpf/tcp.bpf.c.
        let btf = Btf::from_sys_fs()
            .map_err(|e| format!("{COMPONENT}: reading the kernel's BTF: {e}"))?;
        let mut btf_tps = vec![
            ("tcp_state", "inet_sock_set_state"),
            ("tcp_send_reset", "tcp_send_reset"),
            ("tcp_receive_reset", "tcp_receive_reset"),
        ];
        if stats_ns > 0 {
            btf_tps.push(("tcp_stats", "tcp_probe"));
        }
        for (prog, tp) in btf_tps {
            let p: &mut BtfTracePoint = bpf
                .program_mut(prog)
                .ok_or_else(|| format!("{COMPONENT}: program `{prog}` missing from the object"))?
                .try_into()?;
            p.load(tp, &btf)
                .map_err(|e| format!("{COMPONENT}: the kernel rejected `{prog}`: {e:#}"))?;
            p.attach()
                .map_err(|e| format!("{COMPONENT}: attaching to tracepoint {tp} (tp_btf): {e}"))?;
        }
        for (prog, tp) in [
            ("tcp_accept", "sys_exit_accept"),
            ("tcp_accept4", "sys_exit_accept4"),
        ] {
            let p: &mut TracePoint = bpf
                .program_mut(prog)
                .ok_or_else(|| format!("{COMPONENT}: program `{prog}` missing from the object"))?
                .try_into()?;
            p.load()
                .map_err(|e| format!("{COMPONENT}: the kernel rejected `{prog}`: {e:#}"))?;
            p.attach("syscalls", tp)
                .map_err(|e| format!("{COMPONENT}: attaching to tracepoint syscalls:{tp}: {e}"))?;
        }
        let ring = RingBuf::try_from(
            bpf.take_map("events")
                .ok_or_else(|| format!("{COMPONENT}: map `events` missing"))?,
        )?;
        let dropped: PerCpuArray<_, u64> = PerCpuArray::try_from(
            bpf.take_map("dropped")
                .ok_or_else(|| format!("{COMPONENT}: map `dropped` missing"))?,
        )?;
        let mut reader = RingReader::new(ring)?;
        let container_metadata = self.container_metadata;
        tracing::info!(component = %cx.id, "eBPF TCP tracepoints attached");

        Ok(Box::pin(async move {
            // Owns the programs: dropping it detaches them.
            let _bpf = bpf;
            let mut cx = cx;
            let mut batch = Batch {
                clock: Clock::new(),
                source_id: cx.id.clone(),
                containers: container_metadata.then(ContainerCache::default),
                events: Vec::new(),
                bytes: 0,
                bad: 0,
            };
            let mut reported = [0u64; 2];
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The kernel wakes us only when records pile up; this reads the others.
            let mut flush = tokio::time::interval(FLUSH);
            flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cx.shutdown.cancelled() => {
                        // What the kernel sent before we stop is delivered, not dropped.
                        loop {
                            let n = reader.read_now(MAX_BATCH_EVENTS, |d| batch.push(d));
                            if !batch.send(&mut cx).await || n < MAX_BATCH_EVENTS {
                                break;
                            }
                        }
                        break;
                    }
                    _ = tick.tick() => {
                        let full = per_cpu_slot(&dropped, 0);
                        if full > reported[0] {
                            let n = full - reported[0];
                            reported[0] = full;
                            cx.metrics.add_discarded(n);
                            cx.metrics.error(
                                "ring_buffer_full",
                                n,
                                &format_args!("{n} connection events dropped in the kernel: the ring buffer was full (raise `ring_buffer_bytes`)"),
                            );
                        }
                        let untracked = per_cpu_slot(&dropped, 1);
                        if untracked > reported[1] {
                            let n = untracked - reported[1];
                            reported[1] = untracked;
                            cx.metrics.add_discarded(n);
                            cx.metrics.error(
                                "too_many_connections",
                                n,
                                &format_args!("{n} connections not tracked: 65536 are open at once"),
                            );
                        }
                        continue;
                    }
                    _ = flush.tick() => {
                        reader.read_now(MAX_BATCH_EVENTS, |d| batch.push(d));
                    }
                    r = reader.read(MAX_BATCH_EVENTS, |d| batch.push(d)) => {
                        r?;
                    }
                }
                if !batch.send(&mut cx).await {
                    break;
                }
            }
            Ok(())
        }))
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::default_output(DataType::LOG)]
    }
}

/// How long records may wait in the ring buffer when fewer than `wakeup_bytes` are there.
const FLUSH: Duration = Duration::from_millis(100);

/// The events decoded from the ring buffer since the last send.
struct Batch {
    clock: Clock,
    source_id: Arc<str>,
    containers: Option<ContainerCache>,
    events: Vec<Event>,
    bytes: u64,
    bad: u64,
}

impl Batch {
    /// Decodes one record.
    fn push(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        let Some(r) = RawTcpEvent::parse(data) else {
            self.bad += 1;
            return;
        };
        let container = self.containers.as_mut().map(|cache| match r.owner() {
            Some((pid, cgroup)) => cache.lookup(pid, cgroup),
            None => (Value::Null, Value::Null),
        });
        self.events.push(Event::Log(LogEvent::from_typed(
            TcpLog {
                raw: r,
                clock: self.clock,
                container,
            },
            EventMetadata::new(Some(self.source_id.clone())),
        )));
    }

    /// Counts and sends what was decoded; false when the pipeline is gone.
    async fn send(&mut self, cx: &mut SourceContext) -> bool {
        if self.bad > 0 {
            cx.metrics.error(
                "decode",
                self.bad,
                &"malformed record from the eBPF ring buffer (object and loader out of step)",
            );
            self.bad = 0;
        }
        if self.events.is_empty() {
            return true;
        }
        let events = std::mem::take(&mut self.events);
        cx.metrics.add_received(events.len() as u64, self.bytes);
        self.bytes = 0;
        cx.out.send(EventBatch::new(events)).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejects_unknown_fields() {
        let c: EbpfTcpConfig = toml::from_str(
            "ports = [80, 443]\npids = [1]\ncgroups = [\"/system.slice\"]\ninterval_secs = 5",
        )
        .unwrap();
        assert_eq!(c.ports, [80, 443]);
        assert_eq!(c.pids, [1]);
        assert_eq!(c.interval_secs, Some(5));
        assert!(!c.container_metadata);
        assert!(toml::from_str::<EbpfTcpConfig>("port = 80").is_err());
    }
}
