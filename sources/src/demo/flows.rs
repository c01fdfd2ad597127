//! `format = "hubble_flows"`: synthetic microservice traffic in Hubble's shape, one flow per
//! event, each a line of `hubble observe -o jsonpb` held as the `hubble_jsonpb` codec holds
//! it ([`FlowLog`]), so `flow_to_topology` draws a live service map from it.
//!
//! The shop: `frontend` calls `cart`, `catalog`, `checkout` and `recommendation`;
//! `checkout` calls `cart`, `payment` and `shipping`; `recommendation` calls `catalog`;
//! everyone asks `coredns` for names. Each call is an HTTP response flow (with its latency,
//! about 3 % of `payment`'s are 503s), some open a connection (a SYN), and `frontend`'s
//! attempts to reach `payment` directly are dropped by policy.

use std::fmt::Write as _;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use rand::rngs::SmallRng;
use rand::Rng;
use weir_records::flow::FlowLog;

/// (caller, callee, path, weight, typical latency in ms).
const CALLS: &[(&str, &str, &str, u32, f64)] = &[
    ("frontend", "catalog", "/api/products", 30, 8.0),
    ("frontend", "cart", "/api/cart", 20, 4.0),
    (
        "frontend",
        "recommendation",
        "/api/recommendations",
        15,
        25.0,
    ),
    ("frontend", "checkout", "/api/checkout", 6, 120.0),
    ("checkout", "cart", "/api/cart", 6, 4.0),
    ("checkout", "payment", "/api/charge", 6, 60.0),
    ("checkout", "shipping", "/api/quote", 6, 15.0),
    ("recommendation", "catalog", "/api/products", 15, 8.0),
];

/// The pod address of a workload (stable, so connections look real).
pub(super) fn ip(workload: &str) -> String {
    let n = workload
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31) ^ u32::from(b))
        % 250
        + 2;
    if workload == "coredns" {
        "10.96.0.10".into()
    } else {
        format!("10.244.1.{n}")
    }
}

fn endpoint(buf: &mut String, workload: &str) {
    let ns = if workload == "coredns" {
        "kube-system"
    } else {
        "demo"
    };
    let _ = write!(
        buf,
        r#"{{"namespace":"{ns}","labels":["k8s:app={workload}"],"pod_name":"{workload}-7d9f8-x2k4q","workloads":[{{"name":"{workload}","kind":"Deployment"}}]}}"#
    );
}

/// Writes one flow line into `buf`, made at `at`.
pub fn generate(rng: &mut SmallRng, at: DateTime<Utc>, buf: &mut String) {
    buf.clear();
    let total: u32 = CALLS.iter().map(|c| c.3).sum();
    let mut pick = rng.random_range(0..total);
    let mut call = CALLS[0];
    for c in CALLS {
        if pick < c.3 {
            call = *c;
            break;
        }
        pick -= c.3;
    }
    let (caller, callee, path, _, typical_ms) = call;
    let time = at.format("%Y-%m-%dT%H:%M:%S%.9fZ");
    let uuid: u128 = rng.random();
    let port: u16 = rng.random_range(32768..60999);
    let roll: u32 = rng.random_range(0..1000);
    let (src, dst, l4, rest) = if roll < 5 {
        // A direct call to payment, refused by the network policy.
        let l4 = format!(
            r#"{{"TCP":{{"source_port":{port},"destination_port":8080,"flags":{{"SYN":true}}}}}}"#
        );
        let rest = r#""verdict":"DROPPED","drop_reason_desc":"POLICY_DENIED","Type":"L3_L4","traffic_direction":"EGRESS","is_reply":false,"Summary":"TCP Flags: SYN""#.to_string();
        ("frontend", "payment", l4, rest)
    } else if roll < 60 {
        // A name lookup.
        let l4 = format!(r#"{{"UDP":{{"source_port":{port},"destination_port":53}}}}"#);
        let rest = format!(
            r#""verdict":"FORWARDED","Type":"L7","traffic_direction":"EGRESS","is_reply":false,"l7":{{"type":"REQUEST","dns":{{"query":"{callee}.demo.svc.cluster.local.","qtypes":["A"]}}}},"Summary":"DNS Query {callee}.demo.svc.cluster.local. A""#
        );
        (caller, "coredns", l4, rest)
    } else if roll < 160 {
        // A new connection.
        let l4 = format!(
            r#"{{"TCP":{{"source_port":{port},"destination_port":8080,"flags":{{"SYN":true}}}}}}"#
        );
        let rest = r#""verdict":"FORWARDED","Type":"L3_L4","traffic_direction":"INGRESS","is_reply":false,"Summary":"TCP Flags: SYN""#.to_string();
        (caller, callee, l4, rest)
    } else {
        // A request's response, from the callee back to the caller.
        let failed = callee == "payment" && rng.random_range(0..100) < 3;
        let code = if failed { 503 } else { 200 };
        let ms = if failed {
            rng.random_range(900.0..3000.0)
        } else {
            typical_ms * rng.random_range(0.3..2.5f64).powi(2)
        };
        let latency_ns = (ms * 1e6) as u64;
        let l4 = format!(r#"{{"TCP":{{"source_port":8080,"destination_port":{port}}}}}"#);
        let rest = format!(
            r#""verdict":"FORWARDED","Type":"L7","traffic_direction":"INGRESS","is_reply":true,"l7":{{"type":"RESPONSE","latency_ns":"{latency_ns}","http":{{"code":{code},"method":"GET","url":"http://{callee}:8080{path}","protocol":"HTTP/1.1"}}}},"Summary":"HTTP/1.1 {code} {ms:.0}ms (GET http://{callee}:8080{path})""#
        );
        (callee, caller, l4, rest)
    };
    let _ = write!(
        buf,
        r#"{{"flow":{{"time":"{time}","uuid":"{uuid:032x}","IP":{{"source":"{}","destination":"{}","ipVersion":"IPv4"}},"l4":{l4},"source":"#,
        ip(src),
        ip(dst)
    );
    endpoint(buf, src);
    buf.push_str(r#","destination":"#);
    endpoint(buf, dst);
    let _ = write!(
        buf,
        r#",{rest},"node_name":"demo-node","event_type":{{"type":129}}}},"node_name":"demo-node","time":"{time}"}}"#
    );
}

/// The flow of a line [`generate`] wrote (`None` only if the generator is broken, which a
/// test checks).
pub fn flow(line: &str) -> Option<FlowLog> {
    FlowLog::from_jsonpb_line(Bytes::copy_from_slice(line.as_bytes()))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn every_flow_is_read_as_a_hubble_flow() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut buf = String::new();
        let (mut drops, mut errors, mut dns) = (0, 0, 0);
        for _ in 0..5_000 {
            generate(&mut rng, Utc::now(), &mut buf);
            let v: serde_json::Value = serde_json::from_str(&buf).unwrap();
            assert!(flow(&buf).is_some(), "{buf}");
            let f = &v["flow"];
            drops += usize::from(f["verdict"] == "DROPPED");
            errors += usize::from(f["l7"]["http"]["code"] == 503);
            dns += usize::from(f["l7"]["dns"].is_object());
        }
        assert!(
            drops > 5 && errors > 5 && dns > 100,
            "{drops} {errors} {dns}"
        );
    }
}
