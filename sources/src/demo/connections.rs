//! `format = "tcp_connections"`: synthetic TCP connections of the shop of `flows.rs`, one per
//! event, with exactly the fields and types of the `ebpf_tcp` source's events
//! (`docs/components/ebpf_tcp.md`), so the console's Connections table shows a node's
//! traffic without root or eBPF.
//!
//! The shop runs on one node, so each call is seen from either end: the caller's `outbound`
//! connection or the callee's `inbound` one. HTTP services listen on 8080 (as in the flows),
//! `postgres` on 5432 and `redis-server` on 6379. Most connections close normally; about 2 %
//! are reset by the peer, 1 % reset by this end and 1 % refused (`payment` restarting). A few
//! connections retransmit, with a longer round trip and a halved slow-start threshold.
//! `cart`'s connections to `redis-server` and `catalog`'s to `postgres` are long-lived pools:
//! they report `tcp_stats` events (as with `interval_secs`) whose counters grow.

use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::SmallRng;
use rand::Rng;
use weir_pipeline::event::{ObjectMap, Value};

use super::flows::ip;

/// (comm, pid, listening port).
const PROCESSES: &[(&str, i64, i64)] = &[
    ("frontend", 4101, 8080),
    ("cart", 4102, 8080),
    ("catalog", 4103, 8080),
    ("checkout", 4104, 8080),
    ("payment", 4105, 8080),
    ("shipping", 4106, 8080),
    ("recommendation", 4107, 8080),
    ("postgres", 3100, 5432),
    ("redis-server", 3200, 6379),
];

/// (caller, callee, weight, request bytes, response bytes, round trip in µs).
const CALLS: &[(&str, &str, u32, u32, u32, u32)] = &[
    ("frontend", "catalog", 30, 420, 18_000, 180),
    ("frontend", "cart", 20, 380, 1_200, 150),
    ("frontend", "recommendation", 15, 400, 2_400, 210),
    ("frontend", "checkout", 6, 1_900, 900, 240),
    ("checkout", "cart", 6, 350, 1_100, 140),
    ("checkout", "payment", 6, 700, 260, 320),
    ("checkout", "shipping", 6, 520, 310, 190),
    ("recommendation", "catalog", 15, 410, 9_500, 170),
];

/// The kernel's "no threshold yet" (`TCP_INFINITE_SSTHRESH`).
const INFINITE_SSTHRESH: i64 = 0x7fff_ffff;
const ECONNREFUSED: i64 = 111;

fn process(comm: &str) -> (i64, i64) {
    PROCESSES
        .iter()
        .find(|p| p.0 == comm)
        .map_or((0, 0), |p| (p.1, p.2))
}

/// A cgroup id per workload (the inode number of its cgroup directory).
fn cgroup_id(pid: i64) -> i64 {
    9_000 + (pid % 1000) * 17
}

/// A long-lived connection of a pool.
struct Pooled {
    caller: &'static str,
    callee: &'static str,
    local_port: i64,
    /// When it opened: the first report's time, less a while.
    start: Option<DateTime<Utc>>,
    bytes_acked: i64,
    bytes_received: i64,
    retransmits: i64,
}

/// The generator's state: the pools' connections, whose counters only grow.
pub struct Connections {
    pools: Vec<Pooled>,
}

impl Default for Connections {
    fn default() -> Self {
        let pooled = |caller, callee, local_port| Pooled {
            caller,
            callee,
            local_port,
            start: None,
            bytes_acked: 1,
            bytes_received: 0,
            retransmits: 0,
        };
        Self {
            pools: vec![
                pooled("cart", "redis-server", 41_822),
                pooled("cart", "redis-server", 41_830),
                pooled("catalog", "postgres", 52_310),
                pooled("catalog", "postgres", 52_318),
            ],
        }
    }
}

/// The fields every connection event has, from the owner's point of view.
struct Ends<'a> {
    owner: &'a str,
    local: &'a str,
    local_port: i64,
    remote: &'a str,
    remote_port: i64,
    outbound: bool,
}

fn base(rng: &mut SmallRng, at: DateTime<Utc>, e: &Ends, event: &str) -> ObjectMap {
    let (pid, _) = process(e.owner);
    let mut m = ObjectMap::new();
    m.insert("event".into(), Value::from(event));
    m.insert("timestamp".into(), Value::Timestamp(at));
    m.insert("pid".into(), Value::Integer(pid));
    // Go and .NET servers run connections on worker threads.
    m.insert("tid".into(), Value::Integer(pid + rng.random_range(0..6)));
    m.insert("comm".into(), Value::from(e.owner));
    m.insert("cgroup_id".into(), Value::Integer(cgroup_id(pid)));
    m.insert("family".into(), Value::from("ipv4"));
    m.insert("local_addr".into(), Value::from(ip(e.local)));
    m.insert("local_port".into(), Value::Integer(e.local_port));
    m.insert("remote_addr".into(), Value::from(ip(e.remote)));
    m.insert("remote_port".into(), Value::Integer(e.remote_port));
    m.insert(
        "direction".into(),
        Value::from(if e.outbound { "outbound" } else { "inbound" }),
    );
    m
}

fn states(names: &[&str]) -> Value {
    Value::Array(names.iter().map(|s| Value::from(*s)).collect())
}

fn secs(d: TimeDelta) -> Value {
    Value::from_f64_or_zero(d.num_microseconds().unwrap_or(0) as f64 / 1e6)
}

/// Window and buffer fields: the peer's window, ours, and the send buffer, grown by the
/// kernel's autotuning with the bytes sent.
fn windows(m: &mut ObjectMap, rng: &mut SmallRng, sent: i64) {
    let peer = [65_280, 130_560, 261_120, 523_264][rng.random_range(0..4)];
    m.insert("send_window".into(), Value::Integer(peer));
    m.insert(
        "receive_window".into(),
        Value::Integer(64_256 + 512 * rng.random_range(0..8)),
    );
    let sndbuf = match sent {
        0..=16_383 => 16_384,
        16_384..=262_143 => 87_040,
        262_144..=4_194_303 => 332_800,
        _ => 4_194_304,
    };
    m.insert("send_buffer_bytes".into(), Value::Integer(sndbuf));
}

impl Connections {
    /// One connection event, made at `at`: one in ten a pool's stats report, the others a
    /// closed connection.
    pub fn generate(&mut self, rng: &mut SmallRng, at: DateTime<Utc>) -> Value {
        if rng.random_range(0..10) == 0 {
            let i = rng.random_range(0..self.pools.len());
            return self.report(i, rng, at);
        }
        let total: u32 = CALLS.iter().map(|c| c.2).sum();
        let mut pick = rng.random_range(0..total);
        let mut call = CALLS[0];
        for c in CALLS {
            if pick < c.2 {
                call = *c;
                break;
            }
            pick -= c.2;
        }
        let (caller, callee, _, request, response, rtt) = call;
        let (_, port) = process(callee);
        let ephemeral: i64 = rng.random_range(32_768..61_000);
        let roll = rng.random_range(0..1000);
        // Refused connections are `payment`'s, while it restarts: seen by the caller only.
        let refused = (roll < 10 && callee == "payment") || roll < 2;
        let outbound = refused || rng.random_bool(0.5);
        let ends = if outbound {
            Ends {
                owner: caller,
                local: caller,
                local_port: ephemeral,
                remote: callee,
                remote_port: port,
                outbound,
            }
        } else {
            Ends {
                owner: callee,
                local: callee,
                local_port: port,
                remote: caller,
                remote_port: ephemeral,
                outbound,
            }
        };
        let mut m = base(rng, at, &ends, "tcp_connection");
        let opened = if outbound { "SYN_SENT" } else { "SYN_RECV" };
        if refused {
            let took = TimeDelta::microseconds(rng.random_range(80..400));
            m.insert("start_time".into(), Value::Timestamp(at - took));
            m.insert("duration_secs".into(), secs(took));
            m.insert("states".into(), states(&["SYN_SENT", "CLOSE"]));
            m.insert("close_reason".into(), Value::from("error"));
            m.insert("socket_error".into(), Value::Integer(ECONNREFUSED));
            for f in ["bytes_acked", "bytes_received", "retransmits", "srtt_us"] {
                m.insert(f.into(), Value::Integer(0));
            }
            m.insert("cwnd".into(), Value::Integer(10));
            m.insert("ssthresh".into(), Value::Integer(INFINITE_SSTHRESH));
            windows(&mut m, rng, 0);
            return Value::Object(m);
        }
        let lossy = rng.random_range(0..100) < 4;
        let retransmits: i64 = if lossy { rng.random_range(1..5) } else { 0 };
        let srtt = i64::from(rtt) * rng.random_range(70..160) / 100 * (1 + 2 * retransmits);
        // Requests over a connection (HTTP keep-alive): a few each.
        let requests = rng.random_range(1..6i64);
        let req = requests * i64::from(request) * rng.random_range(80..130) / 100;
        let resp = requests * i64::from(response) * rng.random_range(50..200) / 100;
        let took = TimeDelta::microseconds(
            srtt * (2 + 3 * requests) + rng.random_range(1_000..400_000) * requests,
        );
        m.insert("start_time".into(), Value::Timestamp(at - took));
        m.insert("duration_secs".into(), secs(took));
        let (sent, received) = if outbound { (req, resp) } else { (resp, req) };
        let (reason, path): (&str, &[&str]) = match roll {
            0..=19 => ("reset_received", &[opened, "ESTABLISHED", "CLOSE"]),
            20..=29 => ("reset_sent", &[opened, "ESTABLISHED", "CLOSE"]),
            // The caller closes first; the callee sees the peer's FIN.
            _ if outbound => (
                "normal",
                &["SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSE"],
            ),
            _ => (
                "normal",
                &["SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSE"],
            ),
        };
        m.insert("states".into(), states(path));
        m.insert("close_reason".into(), Value::from(reason));
        m.insert("socket_error".into(), Value::Null);
        // Sequence space: the data, plus the SYN (outbound) and our FIN once acknowledged;
        // received, the data plus the peer's FIN.
        let normal = reason == "normal";
        let acked = sent + i64::from(outbound) + i64::from(normal);
        m.insert("bytes_acked".into(), Value::Integer(acked));
        m.insert(
            "bytes_received".into(),
            Value::Integer(received + i64::from(normal)),
        );
        m.insert("retransmits".into(), Value::Integer(retransmits));
        m.insert("srtt_us".into(), Value::Integer(srtt));
        let cwnd = (10 + sent / 30_000).min(80);
        m.insert(
            "cwnd".into(),
            Value::Integer(if lossy { (cwnd / 2).max(2) } else { cwnd }),
        );
        m.insert(
            "ssthresh".into(),
            Value::Integer(if lossy {
                (cwnd / 2).max(2)
            } else {
                INFINITE_SSTHRESH
            }),
        );
        windows(&mut m, rng, sent);
        Value::Object(m)
    }

    /// A `tcp_stats` report of pool connection `i`: its counters grew since the last one.
    fn report(&mut self, i: usize, rng: &mut SmallRng, at: DateTime<Utc>) -> Value {
        let p = &mut self.pools[i];
        let start = *p
            .start
            .get_or_insert(at - TimeDelta::seconds(rng.random_range(600..7_200)));
        let queries = rng.random_range(20..200i64);
        p.bytes_acked += queries * rng.random_range(90..400);
        p.bytes_received += queries * rng.random_range(200..3_000);
        if rng.random_range(0..20) == 0 {
            p.retransmits += 1;
        }
        let (_, port) = process(p.callee);
        let ends = Ends {
            owner: p.caller,
            local: p.caller,
            local_port: p.local_port,
            remote: p.callee,
            remote_port: port,
            outbound: true,
        };
        let (acked, received, retransmits) = (p.bytes_acked, p.bytes_received, p.retransmits);
        let mut m = base(rng, at, &ends, "tcp_stats");
        m.insert("start_time".into(), Value::Timestamp(start));
        m.insert("duration_secs".into(), secs(at - start));
        m.insert("states".into(), states(&["SYN_SENT", "ESTABLISHED"]));
        m.insert("state".into(), Value::from("ESTABLISHED"));
        m.insert("close_reason".into(), Value::Null);
        m.insert("socket_error".into(), Value::Null);
        m.insert("bytes_acked".into(), Value::Integer(acked));
        m.insert("bytes_received".into(), Value::Integer(received));
        m.insert("retransmits".into(), Value::Integer(retransmits));
        m.insert(
            "srtt_us".into(),
            Value::Integer(rng.random_range(60..140) * (1 + retransmits.min(3))),
        );
        m.insert("cwnd".into(), Value::Integer(10 + acked / 1_000_000));
        m.insert(
            "ssthresh".into(),
            Value::Integer(if retransmits > 0 {
                7
            } else {
                INFINITE_SSTHRESH
            }),
        );
        windows(&mut m, rng, acked);
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;
    use crate::demo::shape::{check_shape, documented_fields, Kind};

    /// `ebpf_tcp`'s fields and their kinds, as `sources-ebpf/src/tcp/record.rs` writes them
    /// (without `container_metadata`).
    const FIELDS: &[(&str, Kind)] = &[
        ("event", Kind::Str),
        ("timestamp", Kind::Time),
        ("pid", Kind::Int),
        ("tid", Kind::Int),
        ("comm", Kind::Str),
        ("cgroup_id", Kind::Int),
        ("family", Kind::Str),
        ("local_addr", Kind::Str),
        ("local_port", Kind::Int),
        ("remote_addr", Kind::Str),
        ("remote_port", Kind::Int),
        ("direction", Kind::Str),
        ("start_time", Kind::Time),
        ("duration_secs", Kind::Float),
        ("states", Kind::Strs),
        ("close_reason", Kind::StrOrNull),
        ("socket_error", Kind::IntOrNull),
        ("bytes_acked", Kind::Int),
        ("bytes_received", Kind::Int),
        ("retransmits", Kind::Int),
        ("srtt_us", Kind::Int),
        ("cwnd", Kind::Int),
        ("ssthresh", Kind::Int),
        ("send_window", Kind::Int),
        ("receive_window", Kind::Int),
        ("send_buffer_bytes", Kind::Int),
    ];

    #[test]
    fn connections_have_the_fields_and_types_of_ebpf_tcp_events() {
        let mut documented = documented_fields("ebpf_tcp.md", "## Events");
        documented.retain(|f| f != "container_id" && f != "pod_uid");
        let mut expected: Vec<String> = FIELDS.iter().map(|f| f.0.to_string()).collect();
        expected.push("state".into());
        expected.sort();
        assert_eq!(documented, expected, "docs/components/ebpf_tcp.md changed");

        let mut rng = SmallRng::seed_from_u64(5);
        let mut gen = Connections::default();
        let mut reasons = std::collections::BTreeMap::new();
        let (mut stats, mut retransmitted) = (0, 0);
        let mut pool_bytes = std::collections::BTreeMap::new();
        for _ in 0..5_000 {
            let v = gen.generate(&mut rng, Utc::now());
            let Value::Object(m) = &v else {
                panic!("not an object: {v}")
            };
            if m["event"] == Value::from("tcp_stats") {
                stats += 1;
                check_shape(m, FIELDS, &[("state", Kind::Str)]);
                assert_eq!(m["close_reason"], Value::Null);
                // A pool connection's counters only grow.
                let key = m["local_port"].as_integer().unwrap();
                let acked = m["bytes_acked"].as_integer().unwrap();
                let before = pool_bytes.insert(key, acked).unwrap_or(0);
                assert!(acked > before, "{v}");
            } else {
                assert_eq!(m["event"], Value::from("tcp_connection"));
                check_shape(m, FIELDS, &[]);
                let reason = m["close_reason"].to_str_lossy().unwrap().into_owned();
                *reasons.entry(reason).or_insert(0) += 1;
                retransmitted += usize::from(m["retransmits"] != Value::Integer(0));
            }
        }
        assert!((300..700).contains(&stats), "{stats} stats reports");
        assert_eq!(reasons.len(), 4, "{reasons:?}");
        assert!(retransmitted > 50, "{retransmitted}");
    }
}
