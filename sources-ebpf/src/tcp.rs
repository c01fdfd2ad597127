//! `ebpf_tcp`: one event per TCP connection when it closes: owning process, 4-tuple (IPv4 and
//! IPv6), direction, start time, duration, states seen, bytes acked and received,
//! retransmissions, RTT, congestion and window state, close reason (`bpf/tcp.bpf.c`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aya::maps::{PerCpuArray, RingBuf};
use aya::programs::{RawTracePoint, TracePoint};
use aya::EbpfLoader;
use serde::{Deserialize, Serialize};
use weir_pipeline::component::{Output, Source, SourceConfig, SourceContext};
use weir_pipeline::config::DataType;
use weir_pipeline::event::{
    Event, EventBatch, EventMetadata, LogEvent, ObjectMap, Value, MAX_BATCH_EVENTS,
};
use weir_pipeline::BoxError;

use crate::env::{self, c_str, Clock};
use crate::process::check_ring_size;
use crate::ring::{per_cpu_slot, RingReader};

static OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/tcp.bpf.o");

const COMPONENT: &str = "ebpf_tcp";

/// `type = "ebpf_tcp"`: one log event per TCP connection (IPv4 and IPv6) of every process on
/// the host, sent when the connection closes. Needs root (CAP_BPF + CAP_PERFMON, or
/// CAP_SYS_ADMIN), a kernel with BTF, and tracefs (mounted when missing and permitted).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EbpfTcpConfig {
    /// Report only connections whose local or remote port is this one (filtered in the
    /// kernel). Default: unset (all connections).
    #[serde(default)]
    pub port: Option<u16>,
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
        if self.port == Some(0) {
            return Err(format!("{COMPONENT}: `port` must be between 1 and 65535").into());
        }
        env::check(COMPONENT, true)?;

        let port = self.port.unwrap_or(0);
        let mut bpf = EbpfLoader::new()
            .override_global("filter_port", &port, true)
            .map_max_entries("events", ring_bytes)
            .load(OBJECT)
            .map_err(|e| format!("{COMPONENT}: loading the eBPF object failed: {e}"))?;
        for (prog, tp) in [
            ("tcp_state", "inet_sock_set_state"),
            ("tcp_send_reset", "tcp_send_reset"),
            ("tcp_receive_reset", "tcp_receive_reset"),
        ] {
            let p: &mut RawTracePoint = bpf
                .program_mut(prog)
                .ok_or_else(|| format!("{COMPONENT}: program `{prog}` missing from the object"))?
                .try_into()?;
            p.load()
                .map_err(|e| format!("{COMPONENT}: the kernel rejected `{prog}`: {e:#}"))?;
            p.attach(tp)
                .map_err(|e| format!("{COMPONENT}: attaching to raw tracepoint {tp}: {e}"))?;
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
        tracing::info!(component = %cx.id, "eBPF TCP tracepoints attached");

        Ok(Box::pin(async move {
            // Owns the programs: dropping it detaches them.
            let _bpf = bpf;
            let mut cx = cx;
            let clock = Clock::new();
            let source_id: Arc<str> = cx.id.clone();
            let mut reported = [0u64; 2];
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let mut events = Vec::new();
                let mut bytes = 0u64;
                let mut bad = 0u64;
                tokio::select! {
                    _ = cx.shutdown.cancelled() => break,
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
                    r = reader.read(MAX_BATCH_EVENTS, |data| {
                        bytes += data.len() as u64;
                        match decode(data, &clock, &source_id) {
                            Some(e) => events.push(e),
                            None => bad += 1,
                        }
                    }) => {
                        r?;
                    }
                }
                if bad > 0 {
                    cx.metrics.error(
                        "decode",
                        bad,
                        &"malformed record from the eBPF ring buffer (object and loader out of step)",
                    );
                }
                cx.metrics.add_received(events.len() as u64, bytes);
                if cx.out.send(EventBatch::new(events)).await.is_err() {
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

/// The record of bpf/tcp.h (`struct weir_tcp_event`).
#[repr(C)]
#[derive(Clone, Copy)]
struct RawTcpEvent {
    start_ns: u64,
    end_ns: u64,
    bytes_acked: u64,
    bytes_received: u64,
    cgroup_id: u64,
    pid: u32,
    tid: u32,
    total_retrans: u32,
    srtt_us: u32,
    snd_cwnd: u32,
    snd_ssthresh: u32,
    snd_wnd: u32,
    rcv_wnd: u32,
    sndbuf: u32,
    states: u32,
    sk_err: i32,
    family: u16,
    sport: u16,
    dport: u16,
    direction: u8,
    resets: u8,
    last_state: u8,
    _pad: [u8; 3],
    saddr: [u8; 16],
    daddr: [u8; 16],
    comm: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<RawTcpEvent>() == 144);

/// Names of the kernel's TCP states (include/net/tcp_states.h), by number.
const STATES: [&str; 13] = [
    "",
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
];

const AF_INET: u16 = 2;

fn addr(family: u16, raw: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*raw))
    }
}

/// Why the connection ended.
fn close_reason(r: &RawTcpEvent) -> &'static str {
    // The state the socket left for CLOSE.
    const ESTABLISHED: u8 = 1;
    const CLOSE_WAIT: u8 = 8;
    if r.resets & 2 != 0 {
        "reset_received"
    } else if r.resets & 1 != 0
        || (r.sk_err == 0 && (r.last_state == ESTABLISHED || r.last_state == CLOSE_WAIT))
    {
        // An abortive close (SO_LINGER 0, unread data) goes straight from ESTABLISHED or
        // CLOSE_WAIT to CLOSE and sends its reset just after, once the socket is gone.
        "reset_sent"
    } else if r.sk_err != 0 || r.last_state == 2 || r.last_state == 3 {
        // An error, or the handshake never completed (refused, timed out).
        "error"
    } else {
        "normal"
    }
}

/// One ring-buffer record as a log event; `None` when it is malformed.
fn decode(data: &[u8], clock: &Clock, source_id: &Arc<str>) -> Option<Event> {
    if data.len() < std::mem::size_of::<RawTcpEvent>() {
        return None;
    }
    // SAFETY: the length was checked above, the struct is plain integers and byte arrays (every
    // bit pattern is valid), and read_unaligned does not need alignment.
    let r: RawTcpEvent = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
    let mut m = ObjectMap::new();
    let int = |v: u64| Value::Integer(v as i64);
    let known = r.direction != 0;
    let owned = r.pid != 0;
    m.insert("event".into(), Value::from("tcp_connection"));
    m.insert("timestamp".into(), Value::Timestamp(clock.wall(r.end_ns)));
    m.insert(
        "pid".into(),
        if owned {
            int(r.pid.into())
        } else {
            Value::Null
        },
    );
    m.insert(
        "tid".into(),
        if owned {
            int(r.tid.into())
        } else {
            Value::Null
        },
    );
    m.insert(
        "comm".into(),
        if owned {
            Value::from(c_str(&r.comm))
        } else {
            Value::Null
        },
    );
    m.insert(
        "cgroup_id".into(),
        if owned { int(r.cgroup_id) } else { Value::Null },
    );
    m.insert(
        "family".into(),
        Value::from(if r.family == AF_INET { "ipv4" } else { "ipv6" }),
    );
    m.insert(
        "local_addr".into(),
        Value::from(addr(r.family, &r.saddr).to_string()),
    );
    m.insert("local_port".into(), int(r.sport.into()));
    m.insert(
        "remote_addr".into(),
        Value::from(addr(r.family, &r.daddr).to_string()),
    );
    m.insert("remote_port".into(), int(r.dport.into()));
    m.insert(
        "direction".into(),
        Value::from(match r.direction {
            1 => "outbound",
            2 => "inbound",
            _ => "unknown",
        }),
    );
    if known {
        m.insert(
            "start_time".into(),
            Value::Timestamp(clock.wall(r.start_ns)),
        );
        m.insert(
            "duration_secs".into(),
            Value::from_f64_or_zero(r.end_ns.saturating_sub(r.start_ns) as f64 / 1e9),
        );
    } else {
        m.insert("start_time".into(), Value::Null);
        m.insert("duration_secs".into(), Value::Null);
    }
    let states: Vec<Value> = STATES
        .iter()
        .enumerate()
        .filter(|(i, _)| *i > 0 && r.states & (1 << i) != 0)
        .map(|(_, s)| Value::from(*s))
        .collect();
    m.insert("states".into(), Value::Array(states));
    m.insert("close_reason".into(), Value::from(close_reason(&r)));
    m.insert(
        "socket_error".into(),
        if r.sk_err != 0 {
            Value::Integer(r.sk_err.into())
        } else {
            Value::Null
        },
    );
    m.insert("bytes_acked".into(), int(r.bytes_acked));
    m.insert("bytes_received".into(), int(r.bytes_received));
    m.insert("retransmits".into(), int(r.total_retrans.into()));
    m.insert("srtt_us".into(), int(r.srtt_us.into()));
    m.insert("cwnd".into(), int(r.snd_cwnd.into()));
    m.insert("ssthresh".into(), int(r.snd_ssthresh.into()));
    m.insert("send_window".into(), int(r.snd_wnd.into()));
    m.insert("receive_window".into(), int(r.rcv_wnd.into()));
    m.insert("send_buffer_bytes".into(), int(r.sndbuf.into()));
    Some(Event::Log(LogEvent::from_value(
        Value::Object(m),
        EventMetadata::new(Some(source_id.clone())),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejects_unknown_fields() {
        let c: EbpfTcpConfig = toml::from_str("port = 80").unwrap();
        assert_eq!(c.port, Some(80));
        assert!(toml::from_str::<EbpfTcpConfig>("ports = [80]").is_err());
    }

    #[test]
    fn addresses_by_family() {
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(addr(2, &raw).to_string(), "127.0.0.1");
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(addr(10, &v6).to_string(), "::1");
    }

    #[test]
    fn short_records_are_rejected() {
        let clock = Clock::new();
        let id: Arc<str> = "t".into();
        assert!(decode(&[0u8; 100], &clock, &id).is_none());
    }
}
