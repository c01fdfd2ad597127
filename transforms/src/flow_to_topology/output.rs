//! A finished window as events: one `topology` log event (nodes and edges), and/or metrics
//! with `source_*` / `destination_*` labels in the style of Hubble's own metrics.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use weir_pipeline::event::{
    Bucket, Event, EventMetadata, KeyString, LogEvent, Metric, MetricKind, MetricValue, ObjectMap,
    Value,
};

use super::flow::VERDICTS;
use super::node::{Granularity, Node};
use super::window::{EdgeStats, LATENCY_BUCKETS_NS};

/// What a window knows besides its edges.
pub struct WindowInfo {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub granularity: Granularity,
    pub flows: u64,
    pub overflow_flows: u64,
    pub untracked_connections: u64,
    pub first_flow_nanos: Option<i64>,
    pub last_flow_nanos: Option<i64>,
}

fn obj(pairs: impl IntoIterator<Item = (&'static str, Value)>) -> Value {
    Value::Object(
        pairs
            .into_iter()
            .map(|(k, v)| (KeyString::from(k), v))
            .collect(),
    )
}

fn int(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn counts<'a, K: ToString + 'a>(list: impl IntoIterator<Item = (K, &'a u64)>) -> Value {
    let m: ObjectMap = list
        .into_iter()
        .map(|(k, n)| (KeyString::from(k.to_string()), int(*n)))
        .collect();
    Value::Object(m)
}

/// `2xx`, `5xx`, ... (`0xx` for a response without a status code).
pub fn status_class(code: u32) -> String {
    format!("{}xx", code / 100)
}

/// DNS rcode names (RFC 1035, 2136, 6895).
pub fn rcode_name(rcode: u32) -> String {
    match rcode {
        0 => "NOERROR".into(),
        1 => "FORMERR".into(),
        2 => "SERVFAIL".into(),
        3 => "NXDOMAIN".into(),
        4 => "NOTIMP".into(),
        5 => "REFUSED".into(),
        6 => "YXDOMAIN".into(),
        7 => "YXRRSET".into(),
        8 => "NXRRSET".into(),
        9 => "NOTAUTH".into(),
        10 => "NOTZONE".into(),
        n => n.to_string(),
    }
}

fn time(nanos: Option<i64>) -> Value {
    match nanos {
        Some(n) => Value::Timestamp(DateTime::<Utc>::from_timestamp_nanos(n)),
        None => Value::Null,
    }
}

fn node_value(n: &Node) -> Value {
    let mut m = ObjectMap::new();
    m.insert("id".into(), Value::from(n.id()));
    m.insert("kind".into(), Value::from(n.kind.as_str()));
    if !n.namespace.is_empty() {
        m.insert("namespace".into(), Value::Bytes(n.namespace.clone()));
    }
    m.insert("name".into(), Value::from(n.short_name()));
    Value::Object(m)
}

fn edge_value(e: &EdgeStats) -> Value {
    let verdicts: Vec<(&str, u64)> = e
        .verdicts
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(i, n)| (VERDICTS[i], *n))
        .collect();
    let mut classes: BTreeMap<String, u64> = BTreeMap::new();
    for (code, n) in &e.http_status {
        *classes.entry(status_class(*code)).or_default() += n;
    }
    let classes: Vec<(String, u64)> = classes.into_iter().collect();
    let drops: Vec<(String, u64)> = e
        .drops
        .iter()
        .map(|(r, n)| (String::from_utf8_lossy(r).into_owned(), *n))
        .collect();
    let rcodes: Vec<(String, u64)> = e
        .dns_rcodes
        .iter()
        .map(|(r, n)| (rcode_name(*r), *n))
        .collect();
    let mut cumulative = 0;
    let histogram: Vec<Value> = LATENCY_BUCKETS_NS
        .iter()
        .map(|u| *u as f64 / 1e9)
        .chain(std::iter::once(f64::INFINITY))
        .zip(e.latency_buckets.iter())
        .map(|(le, n)| {
            cumulative += n;
            let le = if le.is_infinite() {
                Value::from("+Inf")
            } else {
                Value::from_f64_or_zero(le)
            };
            obj([("le", le), ("count", int(cumulative))])
        })
        .collect();
    obj([
        ("id", Value::from(edge_id(e))),
        ("source", Value::from(e.key.source.id())),
        ("destination", Value::from(e.key.destination.id())),
        ("destination_port", int(u64::from(e.key.port))),
        ("protocol", Value::from(e.key.proto.as_str())),
        ("flows", int(e.flows)),
        ("verdicts", counts(verdicts.iter().map(|(k, n)| (k, n)))),
        ("connections", int(e.connections)),
        ("drops", counts(drops.iter().map(|(k, n)| (k, n)))),
        ("http_requests", int(e.http_requests)),
        (
            "http_responses",
            counts(classes.iter().map(|(k, n)| (k, n))),
        ),
        ("http_status", counts(&e.http_status)),
        ("latency_ns_sum", int(e.latency_sum_ns)),
        ("latency_ns_count", int(e.latency_count)),
        ("latency_histogram", Value::Array(histogram)),
        ("dns_queries", int(e.dns_queries)),
        ("dns_rcodes", counts(rcodes.iter().map(|(k, n)| (k, n)))),
        ("bytes", int(e.bytes)),
    ])
}

/// `source -> destination:port/PROTO`.
pub fn edge_id(e: &EdgeStats) -> String {
    format!(
        "{} -> {}:{}/{}",
        e.key.source.id(),
        e.key.destination.id(),
        e.key.port,
        e.key.proto.as_str()
    )
}

/// The `topology` event of a window. Edges are sorted by id, nodes by id.
pub fn topology_event(info: &WindowInfo, edges: &mut [EdgeStats]) -> Event {
    edges.sort_by(|a, b| a.key.cmp(&b.key));
    let mut nodes: BTreeSet<&Node> = BTreeSet::new();
    for e in edges.iter() {
        nodes.insert(&e.key.source);
        nodes.insert(&e.key.destination);
    }
    let mut nodes: Vec<(String, Value)> =
        nodes.into_iter().map(|n| (n.id(), node_value(n))).collect();
    nodes.sort_by(|a, b| a.0.cmp(&b.0));
    let mut edge_values: Vec<(String, Value)> =
        edges.iter().map(|e| (edge_id(e), edge_value(e))).collect();
    edge_values.sort_by(|a, b| a.0.cmp(&b.0));
    let v = obj([
        ("type", Value::from("topology")),
        ("window_start", Value::Timestamp(info.start)),
        ("window_end", Value::Timestamp(info.end)),
        ("first_flow_time", time(info.first_flow_nanos)),
        ("last_flow_time", time(info.last_flow_nanos)),
        ("granularity", Value::from(info.granularity.label())),
        ("flows", int(info.flows)),
        ("overflow_flows", int(info.overflow_flows)),
        ("untracked_connections", int(info.untracked_connections)),
        (
            "nodes",
            Value::Array(nodes.into_iter().map(|(_, v)| v).collect()),
        ),
        (
            "edges",
            Value::Array(edge_values.into_iter().map(|(_, v)| v).collect()),
        ),
    ]);
    Event::Log(LogEvent::from_value(v, EventMetadata::default()))
}

/// The window's counters as metric events (incremental: what this window added).
pub fn metric_events(info: &WindowInfo, edges: &[EdgeStats], out: &mut Vec<Event>) {
    let g = info.granularity;
    let label = g.label();
    let (src_key, dst_key) = (format!("source_{label}"), format!("destination_{label}"));
    for e in edges {
        let mut tags = BTreeMap::new();
        let mut put = |ns_key: &str, name_key: &str, n: &Node| {
            if !n.namespace.is_empty() && g != Granularity::Namespace {
                tags.insert(
                    ns_key.to_string(),
                    String::from_utf8_lossy(&n.namespace).into_owned(),
                );
            }
            tags.insert(name_key.to_string(), n.short_name());
        };
        put("source_namespace", &src_key, &e.key.source);
        put("destination_namespace", &dst_key, &e.key.destination);
        tags.insert("destination_port".into(), e.key.port.to_string());
        tags.insert("protocol".into(), e.key.proto.as_str().into());
        let metric = |name: &str, value: MetricValue| {
            let mut m = Metric::new(name, MetricKind::Incremental, value)
                .with_namespace("hubble")
                .with_timestamp(info.end);
            m.tags = tags.clone();
            m
        };
        let counter = |v: u64| MetricValue::Counter { value: v as f64 };
        for (i, n) in e.verdicts.iter().enumerate().filter(|(_, n)| **n > 0) {
            out.push(
                metric("flows_processed_total", counter(*n))
                    .with_tag("verdict", VERDICTS[i])
                    .into(),
            );
        }
        if e.connections > 0 {
            out.push(metric("tcp_connections_opened_total", counter(e.connections)).into());
        }
        for (reason, n) in &e.drops {
            out.push(
                metric("policy_drops_total", counter(*n))
                    .with_tag("reason", String::from_utf8_lossy(reason))
                    .into(),
            );
        }
        if e.http_requests > 0 {
            out.push(metric("http_requests_total", counter(e.http_requests)).into());
        }
        for (code, n) in &e.http_status {
            out.push(
                metric("http_responses_total", counter(*n))
                    .with_tag("status", code.to_string())
                    .with_tag("status_class", status_class(*code))
                    .into(),
            );
        }
        if e.latency_count > 0 {
            let mut buckets: Vec<Bucket> = LATENCY_BUCKETS_NS
                .iter()
                .zip(&e.latency_buckets)
                .map(|(up, n)| Bucket {
                    upper_limit: *up as f64 / 1e9,
                    count: *n,
                })
                .collect();
            buckets.push(Bucket {
                upper_limit: f64::INFINITY,
                count: e.latency_buckets[LATENCY_BUCKETS_NS.len()],
            });
            out.push(
                metric(
                    "http_request_duration_seconds",
                    MetricValue::AggregatedHistogram {
                        buckets,
                        count: e.latency_count,
                        sum: e.latency_sum_ns as f64 / 1e9,
                    },
                )
                .into(),
            );
        }
        if e.dns_queries > 0 {
            out.push(metric("dns_queries_total", counter(e.dns_queries)).into());
        }
        for (rcode, n) in &e.dns_rcodes {
            out.push(
                metric("dns_responses_total", counter(*n))
                    .with_tag("rcode", rcode_name(*rcode))
                    .into(),
            );
        }
        if e.bytes > 0 {
            out.push(metric("flow_bytes_total", counter(e.bytes)).into());
        }
    }
}
