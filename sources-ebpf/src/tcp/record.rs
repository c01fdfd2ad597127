//! The record `bpf/tcp.bpf.c` sends (`struct weir_tcp_event` in `bpf/tcp.h`) and its
//! decoding into event fields.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use weir_pipeline::event::{ObjectMap, TypedLog, Value};

use crate::env::{c_str, Clock};

/// The record of bpf/tcp.h (`struct weir_tcp_event`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(super) struct RawTcpEvent {
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
    kind: u8,
    _pad: [u8; 2],
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

/// The states a connection can go through, by number, in the order it goes through them.
///
/// The kernel program records the states as a set (one bit each, `states`), which keeps no
/// order; but a connection socket never enters a state twice and never goes back: it opens
/// by `SYN_SENT` (connect) or `SYN_RECV` (accepted; both on a simultaneous open, in that
/// order) to `ESTABLISHED`, closes actively by `FIN_WAIT1` then `FIN_WAIT2` or `CLOSING`, then
/// `TIME_WAIT`, or passively by `CLOSE_WAIT` then `LAST_ACK`, and ends in `CLOSE` (a reset or
/// a failed connect jumps there from anywhere). The set listed in this order is therefore the
/// sequence it went through. Left out: `LISTEN` (an accepted socket is cloned from its
/// listener, and the kernel reports that clone as a change from the listener's `LISTEN`: it
/// was never the connection's state) and `NEW_SYN_RECV` (request sockets, not followed).
const LIFECYCLE: [u8; 10] = [
    2,  // SYN_SENT
    3,  // SYN_RECV
    1,  // ESTABLISHED
    4,  // FIN_WAIT1
    5,  // FIN_WAIT2
    11, // CLOSING
    6,  // TIME_WAIT
    8,  // CLOSE_WAIT
    9,  // LAST_ACK
    7,  // CLOSE
];

/// `CLOSE`'s number.
const TCP_CLOSE: u8 = 7;

/// The names of the states in `bits` in the order the connection went through them
/// ([`LIFECYCLE`]). `closed`: the record is of a closed connection; otherwise `CLOSE` is the
/// state an outbound socket left for `SYN_SENT` (the program records a connection's first
/// change from and to), not part of its life, and is left out.
fn states_in_order(bits: u32, closed: bool) -> Vec<Value> {
    LIFECYCLE
        .iter()
        .filter(|&&s| bits & (1 << s) != 0 && (closed || s != TCP_CLOSE))
        .map(|&s| Value::from(STATES[usize::from(s)]))
        .collect()
}

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

/// `TCP_KIND_STATS` in bpf/tcp.h (`TCP_KIND_CLOSE` is 0).
const KIND_STATS: u8 = 1;

impl RawTcpEvent {
    /// The record in `data`; `None` when it is too short (object and loader out of step).
    pub(super) fn parse(data: &[u8]) -> Option<Self> {
        if data.len() < std::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: the length was checked above, the struct is plain integers and byte arrays
        // (every bit pattern is valid), and read_unaligned does not need alignment.
        Some(unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) })
    }

    /// The owning process, when known.
    pub(super) fn owner(&self) -> Option<(u32, u64)> {
        (self.pid != 0).then_some((self.pid, self.cgroup_id))
    }
}

/// A record as the event's typed form (see [`TypedLog`]): kept as the kernel sent it, and
/// turned into fields only when something reads them. A connection storm into a sink that
/// only counts or routes by metadata builds no field tree at all (25-odd map inserts and
/// their allocations per event before).
#[derive(Debug)]
pub(super) struct TcpLog {
    pub(super) raw: RawTcpEvent,
    pub(super) clock: Clock,
    /// `container_id` and `pod_uid`, when enrichment is on.
    pub(super) container: Option<(Value, Value)>,
}

impl TypedLog for TcpLog {
    fn to_value(&self) -> Value {
        let mut m = fields(&self.raw, &self.clock);
        if let Some((id, pod)) = &self.container {
            m.insert("container_id".into(), id.clone());
            m.insert("pod_uid".into(), pod.clone());
        }
        Value::Object(m)
    }
}

/// The fields of a record's event: `tcp_connection` at close, `tcp_stats` for the periodic
/// report of an open connection.
pub(super) fn fields(r: &RawTcpEvent, clock: &Clock) -> ObjectMap {
    let stats = r.kind == KIND_STATS;
    let mut m = ObjectMap::new();
    let int = |v: u64| Value::Integer(v as i64);
    let known = r.direction != 0;
    let owned = r.pid != 0;
    m.insert(
        "event".into(),
        Value::from(if stats { "tcp_stats" } else { "tcp_connection" }),
    );
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
    m.insert(
        "states".into(),
        Value::Array(states_in_order(r.states, !stats)),
    );
    if stats {
        let state = STATES.get(usize::from(r.last_state)).copied().unwrap_or("");
        m.insert("state".into(), Value::from(state));
        m.insert("close_reason".into(), Value::Null);
    } else {
        m.insert("close_reason".into(), Value::from(close_reason(r)));
    }
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
    m
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn states_are_listed_in_the_order_the_connection_went_through_them() {
        let names = |v: Vec<Value>| -> Vec<String> {
            v.iter()
                .map(|s| String::from_utf8_lossy(s.as_bytes().unwrap()).into_owned())
                .collect()
        };
        let bits = |states: &[u8]| states.iter().fold(0u32, |b, s| b | (1 << s));
        // Outbound, closed first by this end: CLOSE -> SYN_SENT -> ESTABLISHED -> FIN_WAIT1
        // -> FIN_WAIT2 -> CLOSE (the first CLOSE is the state connect() left).
        assert_eq!(
            names(states_in_order(bits(&[7, 2, 1, 4, 5]), true)),
            ["SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSE"]
        );
        // Accepted (cloned from a LISTEN socket), closed by the peer.
        assert_eq!(
            names(states_in_order(bits(&[10, 3, 1, 8, 9, 7]), true)),
            ["SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"]
        );
        // Simultaneous close; a connect that failed.
        assert_eq!(
            names(states_in_order(bits(&[7, 2, 1, 4, 11, 6]), true)),
            [
                "SYN_SENT",
                "ESTABLISHED",
                "FIN_WAIT1",
                "CLOSING",
                "TIME_WAIT",
                "CLOSE"
            ]
        );
        assert_eq!(
            names(states_in_order(bits(&[7, 2]), true)),
            ["SYN_SENT", "CLOSE"]
        );
        // A stats record of an open outbound connection: it has not closed.
        assert_eq!(
            names(states_in_order(bits(&[7, 2, 1]), false)),
            ["SYN_SENT", "ESTABLISHED"]
        );
    }

    #[test]
    fn short_records_are_rejected() {
        assert!(RawTcpEvent::parse(&[0u8; 100]).is_none());
        assert!(RawTcpEvent::parse(&[0u8; 144]).is_some());
    }

    #[test]
    fn stats_records_carry_the_current_state_and_no_close_reason() {
        let mut data = [0u8; 144];
        data[24..32].copy_from_slice(&5000u64.to_ne_bytes()); // bytes_received
        data[92] = 1; // last_state: ESTABLISHED
        data[93] = KIND_STATS;
        let r = RawTcpEvent::parse(&data).unwrap();
        let m = fields(&r, &Clock::new());
        assert_eq!(m["event"], Value::from("tcp_stats"));
        assert_eq!(m["state"], Value::from("ESTABLISHED"));
        assert_eq!(m["close_reason"], Value::Null);
        assert_eq!(m["bytes_received"], Value::Integer(5000));
        data[93] = 0;
        let m = fields(&RawTcpEvent::parse(&data).unwrap(), &Clock::new());
        assert_eq!(m["event"], Value::from("tcp_connection"));
        assert!(!m.contains_key("state"));
    }

    #[test]
    fn the_typed_form_reads_as_the_same_fields() {
        use weir_pipeline::event::{EventMetadata, LogEvent};
        let mut data = [0u8; 144];
        data[16..24].copy_from_slice(&1234u64.to_ne_bytes()); // bytes_acked
        data[40..44].copy_from_slice(&77u32.to_ne_bytes()); // pid
        data[92] = 7; // last_state
        let r = RawTcpEvent::parse(&data).unwrap();
        let clock = Clock::new();
        let mut expected = fields(&r, &clock);
        expected.insert("container_id".into(), Value::from("abc"));
        expected.insert("pod_uid".into(), Value::Null);
        let log = LogEvent::from_typed(
            TcpLog {
                raw: r,
                clock,
                container: Some((Value::from("abc"), Value::Null)),
            },
            EventMetadata::new(None),
        );
        assert!(log.typed::<TcpLog>().is_some());
        assert_eq!(log.value(), &Value::Object(expected));
        let Value::Object(m) = log.value() else {
            panic!("not an object")
        };
        assert_eq!(m["bytes_acked"], Value::Integer(1234));
        assert_eq!(m["pid"], Value::Integer(77));
    }
}
