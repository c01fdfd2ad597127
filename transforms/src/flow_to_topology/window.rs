//! One window of the service map: edges with their counters, and the connection table that
//! makes a connection seen at both ends count once.
//!
//! Edges live in a `Vec`, found through a hash of their borrowed key (source node,
//! destination node, destination port, protocol), so looking up an existing edge copies and
//! allocates nothing. A connection is a TCP SYN without ACK that is not a reply; its 4-tuple
//! is remembered for this window and the previous one, so the same SYN seen at the client's
//! egress and again at the server's ingress (the two halves may straddle a window boundary),
//! or retransmitted, is counted once, and a SYN dropped at either end (a policy denial) takes
//! the connection back out: it was never opened.
//!
//! A remembered connection is [`ConnState::Open`] until a FIN or RST of its 4-tuple (in
//! either direction, at either end) closes it. A SYN on a closed tuple is a new connection:
//! a busy client reusing the tuple after the previous connection ended (`tcp_tw_reuse`, or
//! after TIME_WAIT). Flows of the two observation points arrive interleaved in any order, so
//! the flows' times decide, when they have them: a FIN older than the SYN that opened the
//! tuple belongs to the previous connection and closes nothing, and a SYN older than the
//! close is the other end's copy of the closed connection's SYN, not a new one.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use bytes::Bytes;

use super::flow::{FlowView, L7Record, L7Type, Proto};
use super::hash::FxHasher;
use super::node::{node_ref, Granularity, Node, NodeRef};

/// Upper bounds (nanoseconds) of the latency histogram: Prometheus' default buckets
/// (5 ms .. 10 s), as Hubble's `http_request_duration_seconds` uses.
pub const LATENCY_BUCKETS_NS: [u64; 11] = [
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// For maps keyed by a hash already computed.
type PreHashed = BuildHasherDefault<FxHasher>;

/// An edge's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeKey {
    pub source: Node,
    pub destination: Node,
    pub port: u32,
    pub proto: Proto,
}

/// Counters of one edge in one window.
#[derive(Debug, Clone)]
pub struct EdgeStats {
    pub key: EdgeKey,
    hash: u64,
    /// The next edge with the same hash (`u32::MAX`: none).
    next: u32,
    pub flows: u64,
    /// Flows by verdict (index: the verdict's protobuf number).
    pub verdicts: [u64; 8],
    /// Drops by reason (`drop_reason_desc`), at most [`MAX_LABELS_PER_EDGE`].
    pub drops: BTreeMap<Bytes, u64>,
    /// Connections opened (counted once whatever the number of observation points).
    pub connections: u64,
    pub http_requests: u64,
    /// HTTP responses by status code, at most [`MAX_LABELS_PER_EDGE`].
    pub http_status: BTreeMap<u32, u64>,
    pub latency_sum_ns: u64,
    pub latency_count: u64,
    /// Responses per latency bucket (not cumulative); the last is `+Inf`.
    pub latency_buckets: [u64; LATENCY_BUCKETS_NS.len() + 1],
    pub dns_queries: u64,
    /// DNS responses by rcode, at most [`MAX_LABELS_PER_EDGE`].
    pub dns_rcodes: BTreeMap<u32, u64>,
    pub bytes: u64,
}

impl EdgeStats {
    fn new(key: EdgeKey, hash: u64) -> Self {
        Self {
            key,
            hash,
            next: u32::MAX,
            flows: 0,
            verdicts: [0; 8],
            drops: BTreeMap::new(),
            connections: 0,
            http_requests: 0,
            http_status: BTreeMap::new(),
            latency_sum_ns: 0,
            latency_count: 0,
            latency_buckets: [0; LATENCY_BUCKETS_NS.len() + 1],
            dns_queries: 0,
            dns_rcodes: BTreeMap::new(),
            bytes: 0,
        }
    }
}

/// The most distinct values an edge counts per kind (drop reasons, HTTP status codes, DNS
/// rcodes): they come from the flows, and a hostile or broken producer could send any number.
/// Past it, a new value is not counted by value (the flow still counts on the edge), and
/// the window's `overflow_labels` says how often.
pub const MAX_LABELS_PER_EDGE: usize = 1000;

/// Counts one more `key`; `false` when it is new and the map is full.
fn bump<K: Ord>(map: &mut BTreeMap<K, u64>, key: K) -> bool {
    if let Some(n) = map.get_mut(&key) {
        *n += 1;
        return true;
    }
    if map.len() >= MAX_LABELS_PER_EDGE {
        return false;
    }
    map.insert(key, 1);
    true
}

/// Where a remembered connection is in its life (as far as its flows tell).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    /// Its SYN was seen (at the time given, when the flow had one); further SYNs of the tuple
    /// are copies (the other end, retransmissions).
    Open { since: Option<i64> },
    /// A FIN or RST was seen (at the time given): the next SYN of the tuple (newer than that)
    /// opens a new connection.
    Closed { at: Option<i64> },
}

/// Whether `later` is not before `earlier` (unknown times do not order: yes).
fn not_before(later: Option<i64>, earlier: Option<i64>) -> bool {
    match (later, earlier) {
        (Some(l), Some(e)) => l >= e,
        _ => true,
    }
}

/// What the connection table knows about a 4-tuple.
#[derive(Debug, Clone, Copy)]
struct Conn {
    /// The edge it was counted on, in the window that counted it.
    edge: u32,
    window: u64,
    /// Counted as opened (and not taken back).
    counted: bool,
    state: ConnState,
}

/// Connections of the current and the previous window, keyed by a hash of the 4-tuple.
#[derive(Debug, Default)]
struct ConnTable {
    current: HashMap<u64, Conn, PreHashed>,
    previous: HashMap<u64, Conn, PreHashed>,
}

impl ConnTable {
    fn get_mut(&mut self, k: u64) -> Option<&mut Conn> {
        match self.current.get_mut(&k) {
            Some(c) => Some(c),
            None => self.previous.get_mut(&k),
        }
    }

    /// Forgets `k` (a closed connection whose tuple opens a new one).
    fn remove(&mut self, k: u64) {
        if self.current.remove(&k).is_none() {
            self.previous.remove(&k);
        }
    }

    fn rotate(&mut self) {
        self.previous = std::mem::take(&mut self.current);
    }
}

/// The service map of one window.
#[derive(Debug)]
pub struct Window {
    granularity: Granularity,
    max_edges: usize,
    max_connections: usize,
    /// Numbers windows, so a connection of a flushed window is not taken back from a new one.
    serial: u64,
    pub edges: Vec<EdgeStats>,
    index: HashMap<u64, u32, PreHashed>,
    conns: ConnTable,
    /// Flows counted in the window.
    pub flows: u64,
    /// Flows not counted because `max_edges` edges already existed.
    pub overflow_flows: u64,
    /// SYNs counted without deduplication because the connection table was full.
    pub untracked_connections: u64,
    /// Drop reasons, HTTP status codes or DNS rcodes not counted by value because their edge
    /// already had [`MAX_LABELS_PER_EDGE`] of them.
    pub overflow_labels: u64,
    pub first_flow_nanos: Option<i64>,
    pub last_flow_nanos: Option<i64>,
}

impl Window {
    pub fn new(granularity: Granularity, max_edges: usize, max_connections: usize) -> Self {
        Self {
            granularity,
            max_edges,
            max_connections,
            serial: 0,
            edges: Vec::new(),
            index: HashMap::default(),
            conns: ConnTable::default(),
            flows: 0,
            overflow_flows: 0,
            untracked_connections: 0,
            overflow_labels: 0,
            first_flow_nanos: None,
            last_flow_nanos: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.flows == 0 && self.overflow_flows == 0
    }

    /// Ends the window: hands out its edges and starts the next one. The connection table
    /// keeps this window's connections as the previous generation.
    pub fn take(&mut self) -> Vec<EdgeStats> {
        self.index.clear();
        self.flows = 0;
        self.overflow_flows = 0;
        self.untracked_connections = 0;
        self.overflow_labels = 0;
        self.first_flow_nanos = None;
        self.last_flow_nanos = None;
        self.serial += 1;
        self.conns.rotate();
        std::mem::take(&mut self.edges)
    }

    /// The edge of `key`, created if there is room.
    fn edge(&mut self, src: NodeRef<'_>, dst: NodeRef<'_>, port: u32, proto: Proto) -> Option<u32> {
        let mut h = FxHasher::default();
        src.hash_into(&mut h);
        dst.hash_into(&mut h);
        h.write_u64(u64::from(port) | ((proto as u64) << 32));
        let hash = h.finish();
        let mut at = self.index.get(&hash).copied();
        while let Some(i) = at {
            let e = &self.edges[i as usize];
            if e.hash == hash
                && e.key.port == port
                && e.key.proto == proto
                && src.matches(&e.key.source)
                && dst.matches(&e.key.destination)
            {
                return Some(i);
            }
            at = (e.next != u32::MAX).then_some(e.next);
        }
        if self.edges.len() >= self.max_edges {
            return None;
        }
        let i = self.edges.len() as u32;
        let mut stats = EdgeStats::new(
            EdgeKey {
                source: src.to_owned(),
                destination: dst.to_owned(),
                port,
                proto,
            },
            hash,
        );
        // Chain in front of the edges that share the hash (a collision of 64-bit hashes).
        if let Some(first) = self.index.insert(hash, i) {
            stats.next = first;
        }
        self.edges.push(stats);
        Some(i)
    }

    /// Counts one flow. Returns `false` when it could not be counted (edge cap reached).
    pub fn add(&mut self, f: &FlowView<'_>) -> bool {
        if let Some(t) = f.time_nanos {
            self.first_flow_nanos = Some(self.first_flow_nanos.map_or(t, |x| x.min(t)));
            self.last_flow_nanos = Some(self.last_flow_nanos.map_or(t, |x| x.max(t)));
        }
        let g = self.granularity;
        let src = node_ref(g, f.source.as_ref(), f.src_ip, f.source_name);
        let dst = node_ref(g, f.destination.as_ref(), f.dst_ip, f.destination_name);
        // A reply travels from the server back to the client: it belongs to the edge of the
        // connection (client -> server:port), not to a new edge in the other direction.
        let (client, server, port) = if f.is_reply {
            (dst, src, f.src_port)
        } else {
            (src, dst, f.dst_port)
        };
        let Some(i) = self.edge(client, server, port, f.proto) else {
            self.overflow_flows += 1;
            return false;
        };
        self.flows += 1;
        let dropped = f.verdict == 2 || f.verdict == 3;
        if f.proto == Proto::Tcp {
            if f.syn_only && !f.is_reply {
                self.count_syn(f, i, dropped);
            } else if f.fin_or_rst {
                self.close(f);
            }
        }
        let e = &mut self.edges[i as usize];
        e.flows += 1;
        e.verdicts[f.verdict] += 1;
        if f.verdict == 2 {
            let reason = f.drop_reason.unwrap_or(b"DROP_REASON_UNKNOWN");
            // Looked up by the borrowed bytes: a known reason copies nothing.
            let counted = match e.drops.get_mut(reason) {
                Some(n) => {
                    *n += 1;
                    true
                }
                None => bump(&mut e.drops, Bytes::copy_from_slice(reason)),
            };
            if !counted {
                self.overflow_labels += 1;
            }
        }
        if let Some(b) = f.bytes {
            e.bytes += b;
        }
        if let Some(l7) = f.l7 {
            match (l7.record, l7.kind) {
                (L7Record::Http { .. }, L7Type::Request) => e.http_requests += 1,
                (L7Record::Http { code }, L7Type::Response) => {
                    let counted = bump(&mut e.http_status, code);
                    self.overflow_labels += u64::from(!counted);
                    if let Some(ns) = l7.latency_ns {
                        e.latency_sum_ns += ns;
                        e.latency_count += 1;
                        let b = LATENCY_BUCKETS_NS
                            .iter()
                            .position(|up| ns <= *up)
                            .unwrap_or(LATENCY_BUCKETS_NS.len());
                        e.latency_buckets[b] += 1;
                    }
                }
                (L7Record::Dns { .. }, L7Type::Request) => e.dns_queries += 1,
                (L7Record::Dns { rcode }, L7Type::Response) => {
                    let counted = bump(&mut e.dns_rcodes, rcode);
                    self.overflow_labels += u64::from(!counted);
                }
                _ => {}
            }
        }
        true
    }

    /// A SYN: a new connection unless seen before while open (other end, retransmission); a
    /// dropped SYN means the connection was not opened.
    fn count_syn(&mut self, f: &FlowView<'_>, edge: u32, dropped: bool) {
        let tuple = tuple_hash(f);
        let serial = self.serial;
        if let Some(c) = self.conns.get_mut(tuple) {
            match c.state {
                ConnState::Closed { at } if not_before(f.time_nanos, at) => {
                    // The tuple reused after its connection ended: counted below as new.
                    self.conns.remove(tuple);
                }
                // The other end's copy of the closed connection's SYN, arriving late.
                ConnState::Closed { .. } => return,
                ConnState::Open { .. } => {
                    if dropped && c.counted {
                        c.counted = false;
                        if c.window == serial {
                            let e = &mut self.edges[c.edge as usize];
                            e.connections = e.connections.saturating_sub(1);
                        }
                    }
                    return;
                }
            }
        }
        if !dropped {
            self.edges[edge as usize].connections += 1;
        }
        if self.conns.current.len() >= self.max_connections {
            self.untracked_connections += 1;
            return;
        }
        self.conns.current.insert(
            tuple,
            Conn {
                edge,
                window: serial,
                counted: !dropped,
                state: ConnState::Open {
                    since: f.time_nanos,
                },
            },
        );
    }

    /// A FIN or RST: the connection of its tuple ends, unless the flow is older than the SYN
    /// that opened it (the previous connection's, seen late at the other end).
    fn close(&mut self, f: &FlowView<'_>) {
        if let Some(c) = self.conns.get_mut(tuple_hash(f)) {
            if let ConnState::Open { since } = c.state {
                if not_before(f.time_nanos, since) {
                    c.state = ConnState::Closed { at: f.time_nanos };
                }
            }
        }
    }
}

/// The hash of a flow's 4-tuple, the same in both directions (a FIN may come from either end).
fn tuple_hash(f: &FlowView<'_>) -> u64 {
    let a = (f.src_ip, f.src_port);
    let b = (f.dst_ip, f.dst_port);
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h = FxHasher::default();
    h.write_bytes(lo.0);
    h.write_u64(0xff);
    h.write_bytes(hi.0);
    h.write_u64(u64::from(lo.1) | (u64::from(hi.1) << 32));
    h.finish()
}
