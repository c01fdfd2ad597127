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
use weir_pipeline::config::Secs;
use weir_pipeline::event::{Event, EventBatch, EventMetadata, LogEvent, Value, MAX_BATCH_EVENTS};
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use crate::container::ContainerCache;
use crate::env::{self, Clock};
use crate::process::check_ring_size;
use crate::ring::{report_drops, RingReader};
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
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EbpfTcpConfig {
    /// Report only connections whose local or remote port is one of these (at most 4096). Empty:
    /// any port.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Report only connections owned by these processes (process ids, as `getpid()` returns them;
    /// at most 4096). An inbound connection accepted by another process, or never accepted, is not
    /// reported. Empty: any process.
    #[serde(default)]
    pub pids: Vec<u32>,
    /// Report only connections owned by processes in these cgroup v2 directories or below them (at
    /// most 64): absolute (`/sys/fs/cgroup/kubepods.slice`) or relative to the cgroup v2 mount
    /// (`/kubepods.slice`, as `/proc/<pid>/cgroup` shows it). Checked in the kernel with
    /// `bpf_current_task_under_cgroup`. Empty: any cgroup.
    #[serde(default)]
    pub cgroups: Vec<String>,
    /// Also send a `tcp_stats` event for each open connection at most every this many seconds
    /// (at the first segment it receives after the interval: a connection that sends or
    /// receives nothing sends none). Default: unset (only the event at close).
    #[serde(default)]
    pub interval_secs: Option<Secs>,
    /// Add `container_id` and `pod_uid`, read from the owning process's
    /// `/proc/<pid>/cgroup` (containerd, CRI-O, Docker, Podman; Kubernetes pods). Default:
    /// false.
    #[serde(default)]
    pub container_metadata: bool,
    /// Size of the kernel-to-Weir ring buffer in bytes: a power of two, at least 4096. Weir is
    /// woken when an eighth of it is filled. Events that do not fit (Weir is behind) are dropped
    /// and counted. Default: 1048576.
    #[serde(default)]
    pub ring_buffer_bytes: Option<u32>,
    /// How many connections open at once the kernel-side table is sized for (64 to 1048576):
    /// it gets twice as many slots, rounded up to a power of two, about 100 bytes of kernel
    /// memory each. Up to about this many open connections are followed without a loss; a
    /// connection that finds no free slot is not reported, and counted
    /// (`too_many_connections`). Default: 65536 (131072 slots, 13 MiB).
    #[serde(default)]
    pub max_connections: Option<u32>,
}

/// The connection table's shape for `max_connections`: (log2 of its sets, its sets).
fn conn_table(max_connections: u32) -> Result<(u32, u32), BoxError> {
    if !(64..=1 << 20).contains(&max_connections) {
        return Err(format!(
            "{COMPONENT}: `max_connections` must be between 64 and 1048576, not {max_connections}"
        )
        .into());
    }
    let slots = (2 * max_connections).next_power_of_two();
    let sets = slots / CONN_WAYS;
    Ok((sets.trailing_zeros(), sets))
}

/// Slots per set of the kernel-side connection table (`CONN_WAYS` in bpf/tcp.bpf.c).
const CONN_WAYS: u32 = 8;

#[async_trait]
impl SourceConfig for EbpfTcpConfig {
    async fn build(&self, cx: SourceContext) -> Result<Source, BoxError> {
        let ring_bytes = self.ring_buffer_bytes.unwrap_or(1 << 20);
        check_ring_size(COMPONENT, ring_bytes)?;
        let filters = Filters::resolve(&self.ports, &self.pids, &self.cgroups)?;
        env::check(COMPONENT, true)?;

        let flags = filters.flags();
        let cgroup_count = filters.cgroup_count();
        // At most a year (checked when read), so the nanoseconds fit.
        let stats_ns: u64 = self.interval_secs.map_or(0, |s| {
            s.duration().as_nanos().min(u128::from(u64::MAX)) as u64
        });
        let (ports_size, pids_size) = filters.map_sizes();
        let wakeup_bytes = u64::from(ring_bytes / 8);
        let (set_bits, sets) = conn_table(self.max_connections.unwrap_or(65536))?;
        let mut bpf = EbpfLoader::new()
            .override_global("filters", &flags, true)
            .override_global("cgroup_count", &cgroup_count, true)
            .override_global("stats_interval_ns", &stats_ns, true)
            .override_global("wakeup_bytes", &wakeup_bytes, true)
            .override_global("conn_set_bits", &set_bits, true)
            .map_max_entries("events", ring_bytes)
            .map_max_entries("conn_tags", sets)
            .map_max_entries("conns", sets * CONN_WAYS)
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
            p.load(tp, &btf).map_err(|e| {
                format!(
                    "{COMPONENT}: the kernel rejected `{prog}` (it needs Linux 5.12 or later: \
                     BTF-typed tracepoints, bpf_skc_to_tcp_sock, BPF atomics): {e:#}"
                )
            })?;
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
                ingest: None,
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
                        report_drops(&dropped, &DROPS, &mut reported, &cx.metrics);
                        break;
                    }
                    _ = tick.tick() => {
                        report_drops(&dropped, &DROPS, &mut reported, &cx.metrics);
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

    fn event_shape(&self) -> Option<&'static str> {
        Some("ebpf_tcp")
    }
}

/// The kernel side's drop counters (slots of the `dropped` map): error kind, and what it means.
const DROPS: [(&str, &str); 2] = [
    (
        "ring_buffer_full",
        "connection events dropped in the kernel: the ring buffer was full (raise `ring_buffer_bytes`)",
    ),
    (
        "too_many_connections",
        "connections not followed: the kernel-side connection table had no free slot for them (raise `max_connections`)",
    ),
];

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
    /// When this batch's first record was read: the ingest time of all of them (one clock
    /// read per batch, not per record).
    ingest: Option<chrono::DateTime<chrono::Utc>>,
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
            EventMetadata::at(
                Some(self.source_id.clone()),
                *self.ingest.get_or_insert_with(chrono::Utc::now),
            ),
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
        self.ingest = None;
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
        assert_eq!(c.interval_secs, Some(Secs::from_secs(5)));
        assert!(!c.container_metadata);
        assert!(toml::from_str::<EbpfTcpConfig>("port = 80").is_err());
    }

    #[test]
    fn the_connection_table_has_twice_the_slots_in_sets_of_eight() {
        // The default: 131072 slots, 16384 sets (14 bits).
        assert_eq!(conn_table(65536).unwrap(), (14, 16384));
        assert_eq!(conn_table(64).unwrap(), (4, 16));
        // Rounded up to a power of two.
        assert_eq!(conn_table(100).unwrap(), (5, 32));
        assert_eq!(conn_table(1 << 20).unwrap(), (18, 1 << 18));
        for bad in [0, 63, (1 << 20) + 1] {
            let e = conn_table(bad).unwrap_err().to_string();
            assert!(e.contains("max_connections"), "{e}");
        }
    }
}
