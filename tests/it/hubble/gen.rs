//! A generator of Hubble flows (`hubble observe -o jsonpb` lines) with the service map they
//! must give, worked out as they are generated.

use std::collections::BTreeMap;

use serde_json::{json, Value as Json};

/// A pod: (namespace, app, pod name, identity, IP, node).
#[derive(Clone, Copy)]
pub struct Pod(
    pub &'static str,
    pub &'static str,
    pub &'static str,
    pub u32,
    pub &'static str,
    pub &'static str,
);

pub const LOADGEN: Pod = Pod(
    "shop",
    "loadgen",
    "loadgen-6f7-x1",
    301,
    "10.1.0.5",
    "node-a",
);
pub const WEB: Pod = Pod("shop", "web", "web-5d9-a1", 302, "10.1.1.7", "node-b");
pub const API: Pod = Pod("shop", "api", "api-7c4-b2", 303, "10.1.2.9", "node-c");
pub const DB: Pod = Pod("shop", "db", "db-0", 304, "10.1.3.3", "node-a");
pub const DNS: Pod = Pod(
    "kube-system",
    "coredns",
    "coredns-5d-q",
    102,
    "10.1.9.53",
    "node-c",
);

/// What one edge must show.
#[derive(Default, Clone, Debug)]
pub struct Truth {
    pub connections: u64,
    pub dropped: u64,
    pub http_requests: u64,
    pub http_responses: BTreeMap<String, u64>,
    pub latency_ns_sum: u64,
    pub latency_ns_count: u64,
    pub dns_queries: u64,
}

pub struct Gen {
    pub lines: Vec<String>,
    pub truth: BTreeMap<String, Truth>,
    nanos: u64,
    base_secs: i64,
    step_nanos: u64,
    uuid: u64,
}

fn endpoint(p: Pod) -> Json {
    json!({"ID": 1000 + p.3, "identity": p.3, "namespace": p.0, "pod_name": p.2,
        "labels": [format!("k8s:app={}", p.1), format!("k8s:io.kubernetes.pod.namespace={}", p.0)],
        "workloads": [{"name": p.1, "kind": "Deployment"}]})
}

fn edge_id(c: Pod, s: Pod, port: u32, proto: &str) -> String {
    format!("{}/{} -> {}/{}:{port}/{proto}", c.0, c.1, s.0, s.1)
}

impl Gen {
    /// Flows `step_nanos` apart, from 2026-11-20T10:00:00Z.
    pub fn new(step_nanos: u64) -> Self {
        Gen {
            lines: Vec::new(),
            truth: BTreeMap::new(),
            nanos: 0,
            base_secs: 1_795_168_800,
            step_nanos,
            uuid: 0,
        }
    }

    fn time(&mut self) -> String {
        self.nanos += self.step_nanos;
        let secs = self.base_secs + (self.nanos / 1_000_000_000) as i64;
        // As protojson writes it (0, 3, 6 or 9 fractional digits).
        weir_sources::hubble::convert::format_timestamp(weir_sources::hubble::proto::Timestamp {
            seconds: secs,
            nanos: (self.nanos % 1_000_000_000) as i32,
        })
    }

    fn emit(&mut self, mut flow: Json, node: &str) {
        let t = self.time();
        self.uuid += 1;
        flow["time"] = json!(t);
        flow["uuid"] = json!(format!("00000000-0000-4000-8000-{:012x}", self.uuid));
        flow["node_name"] = json!(node);
        let line = json!({"flow": flow, "node_name": node, "time": t});
        self.lines.push(line.to_string());
    }

    fn edge(&mut self, id: String) -> &mut Truth {
        self.truth.entry(id).or_default()
    }

    #[allow(clippy::too_many_arguments)]
    fn tcp(
        &mut self,
        c: Pod,
        s: Pod,
        sport: u32,
        dport: u32,
        reply: bool,
        flags: Json,
        verdict: &str,
        ingress: bool,
    ) {
        let (src, dst, sp, dp) = if reply {
            (s, c, dport, sport)
        } else {
            (c, s, sport, dport)
        };
        // Egress is seen on the sender's node, ingress on the receiver's.
        let node = if ingress { dst.5 } else { src.5 };
        let mut f = json!({"verdict": verdict,
            "IP": {"source": src.4, "destination": dst.4, "ipVersion": "IPv4"},
            "l4": {"TCP": {"source_port": sp, "destination_port": dp, "flags": flags}},
            "source": endpoint(src), "destination": endpoint(dst), "Type": "L3_L4",
            "event_type": {"type": 4},
            "traffic_direction": if ingress { "INGRESS" } else { "EGRESS" },
            "trace_observation_point": if ingress { "TO_ENDPOINT" } else { "TO_STACK" },
            "is_reply": reply});
        if verdict == "DROPPED" {
            f["drop_reason_desc"] = json!("POLICY_DENIED");
            f["drop_reason"] = json!(133);
            f["event_type"] = json!({"type": 1, "sub_type": 133});
        }
        self.emit(f, node);
    }

    /// A TCP connection seen at both ends (SYN at the client's egress and the server's
    /// ingress, SYN-ACK, ACK), with an HTTP exchange when `http` is `Some((code, latency))`.
    pub fn connection(&mut self, c: Pod, s: Pod, sport: u32, dport: u32, http: Option<(u32, u64)>) {
        let id = edge_id(c, s, dport, "TCP");
        self.edge(id.clone()).connections += 1;
        self.tcp(
            c,
            s,
            sport,
            dport,
            false,
            json!({"SYN": true}),
            "FORWARDED",
            false,
        );
        self.tcp(
            c,
            s,
            sport,
            dport,
            false,
            json!({"SYN": true}),
            "FORWARDED",
            true,
        );
        self.tcp(
            c,
            s,
            sport,
            dport,
            true,
            json!({"SYN": true, "ACK": true}),
            "FORWARDED",
            false,
        );
        self.tcp(
            c,
            s,
            sport,
            dport,
            false,
            json!({"ACK": true}),
            "FORWARDED",
            true,
        );
        if let Some((code, latency)) = http {
            let l7 = |reply: bool| {
                let (src, dst, sp, dp) = if reply {
                    (s, c, dport, sport)
                } else {
                    (c, s, sport, dport)
                };
                json!({"verdict": "FORWARDED", "Type": "L7", "event_type": {"type": 129},
                    "IP": {"source": src.4, "destination": dst.4, "ipVersion": "IPv4"},
                    "l4": {"TCP": {"source_port": sp, "destination_port": dp}},
                    "source": endpoint(src), "destination": endpoint(dst),
                    "traffic_direction": "INGRESS", "is_reply": reply})
            };
            let mut req = l7(false);
            req["l7"] = json!({"type": "REQUEST",
                "http": {"method": "GET", "url": "http://x/p", "protocol": "HTTP/1.1"}});
            self.emit(req, s.5);
            let mut resp = l7(true);
            resp["l7"] = json!({"type": "RESPONSE", "latency_ns": latency.to_string(),
                "http": {"code": code, "method": "GET", "url": "http://x/p", "protocol": "HTTP/1.1"}});
            self.emit(resp, s.5);
            let e = self.edge(id);
            e.http_requests += 1;
            *e.http_responses
                .entry(format!("{}xx", code / 100))
                .or_default() += 1;
            e.latency_ns_sum += latency;
            e.latency_ns_count += 1;
        }
    }

    /// A connection denied by policy at the server: forwarded at the client's egress,
    /// dropped at the server's ingress.
    pub fn denied(&mut self, c: Pod, s: Pod, sport: u32, dport: u32) {
        self.tcp(
            c,
            s,
            sport,
            dport,
            false,
            json!({"SYN": true}),
            "FORWARDED",
            false,
        );
        self.tcp(
            c,
            s,
            sport,
            dport,
            false,
            json!({"SYN": true}),
            "DROPPED",
            true,
        );
        self.edge(edge_id(c, s, dport, "TCP")).dropped += 1;
    }

    /// A DNS query (and its answer) to coredns.
    pub fn dns(&mut self, c: Pod, sport: u32) {
        let q = json!({"verdict": "FORWARDED", "Type": "L7", "event_type": {"type": 129},
            "IP": {"source": c.4, "destination": DNS.4, "ipVersion": "IPv4"},
            "l4": {"UDP": {"source_port": sport, "destination_port": 53}},
            "source": endpoint(c), "destination": endpoint(DNS), "traffic_direction": "EGRESS",
            "is_reply": false,
            "l7": {"type": "REQUEST", "dns": {"query": "api.shop.svc.cluster.local.", "qtypes": ["A"]}}});
        self.emit(q, c.5);
        let a = json!({"verdict": "FORWARDED", "Type": "L7", "event_type": {"type": 129},
            "IP": {"source": DNS.4, "destination": c.4, "ipVersion": "IPv4"},
            "l4": {"UDP": {"source_port": 53, "destination_port": sport}},
            "source": endpoint(DNS), "destination": endpoint(c), "traffic_direction": "EGRESS",
            "is_reply": true,
            "l7": {"type": "RESPONSE", "latency_ns": "300000",
                "dns": {"query": "api.shop.svc.cluster.local.", "ips": [API.4]}}});
        self.emit(a, c.5);
        self.edge(edge_id(c, DNS, 53, "UDP")).dns_queries += 1;
    }

    /// A shop in motion: `n` page loads, each a chain loadgen -> web -> api -> db, with a DNS
    /// lookup, some errors, some denied connections.
    pub fn shop(step_nanos: u64, n: u32) -> Self {
        let mut g = Gen::new(step_nanos);
        for i in 0..n {
            let code = match i % 10 {
                0 => 503,
                3 => 404,
                _ => 200,
            };
            let sport = 30_000 + i;
            g.connection(
                LOADGEN,
                WEB,
                sport,
                8080,
                Some((code, 5_000_000 + u64::from(i) * 1_000)),
            );
            g.dns(WEB, 40_000 + i);
            g.connection(
                WEB,
                API,
                sport,
                9000,
                Some((200, 1_000_000 + u64::from(i % 7) * 10_000)),
            );
            if i % 13 == 5 {
                g.denied(API, DB, sport, 5432);
            } else {
                g.connection(API, DB, sport, 5432, None);
            }
        }
        g
    }

    /// The truth in the shape of `boutique-truth.json`.
    pub fn truth_json(&self) -> Json {
        let edges: serde_json::Map<String, Json> = self
            .truth
            .iter()
            .map(|(id, t)| {
                let v = if t.dns_queries > 0 {
                    json!({"dns_queries": t.dns_queries})
                } else {
                    let class = |c: &str| t.http_responses.get(c).copied().unwrap_or(0);
                    json!({"connections": t.connections, "dropped": t.dropped,
                        "http_requests": t.http_requests,
                        "http_responses": {"2xx": class("2xx"), "4xx": class("4xx"), "5xx": class("5xx")},
                        "latency_ns_sum": t.latency_ns_sum, "latency_ns_count": t.latency_ns_count})
                };
                (id.clone(), v)
            })
            .collect();
        json!({"flows": self.lines.len(), "edges": edges})
    }
}
