//! A decoded flow becomes a log event with the shape of `hubble observe -o jsonpb`: the
//! `GetFlowsResponse` in protobuf's JSON mapping with the proto field names (`flow.IP.source`,
//! `flow.l4.TCP.destination_port`, `flow.source.pod_name`, `node_name`, `time`).
//!
//! The mapping follows protojson: fields at their default value (0, "", false, an empty list,
//! an enum's zero) are left out; a set message is an object even when empty; enums are their
//! names (a number this build has no name for stays a number); 64-bit integers are strings;
//! timestamps are RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits; wrapper values
//! (`is_reply`) are present whenever set, `false` included. Strings are moved into the event
//! without copying. See `docs/schemas/flow.md`.

use bytes::Bytes;
use chrono::{DateTime, Datelike, NaiveDateTime, Utc};
use weir_pipeline::event::{KeyString, ObjectMap, Value};
use weir_records::flow::{
    parse_rfc3339_nanos, verdict_index, EndpointSummary, FlowLog, FlowSummary, FlowTree, L7Record,
    L7Type, LabelValues, Proto, TextBuilder, L7,
};

use super::proto::{self, EnumTable, Flow, GetFlowsResponse, ResponseType, Timestamp};

/// An object under construction, leaving out default values as protojson does.
#[derive(Default)]
struct Obj(ObjectMap);

impl Obj {
    fn put(&mut self, k: &str, v: Value) {
        self.0.insert(KeyString::from(k), v);
    }
    fn str(&mut self, k: &str, v: String) {
        if !v.is_empty() {
            self.put(k, Value::Bytes(Bytes::from(v)));
        }
    }
    fn u32(&mut self, k: &str, v: u32) {
        if v != 0 {
            self.put(k, Value::Integer(i64::from(v)));
        }
    }
    fn i32(&mut self, k: &str, v: i32) {
        if v != 0 {
            self.put(k, Value::Integer(i64::from(v)));
        }
    }
    /// 64-bit integers are strings in protojson (JSON numbers lose precision past 2^53).
    fn u64(&mut self, k: &str, v: u64) {
        if v != 0 {
            self.put(k, Value::Bytes(Bytes::from(v.to_string())));
        }
    }
    fn bool(&mut self, k: &str, v: bool) {
        if v {
            self.put(k, Value::Boolean(true));
        }
    }
    fn enm(&mut self, k: &str, table: EnumTable, v: i32) {
        if v != 0 {
            let value = match proto::enum_name(table, v) {
                Some(name) => Value::Bytes(Bytes::from_static(name.as_bytes())),
                None => Value::Integer(i64::from(v)),
            };
            self.put(k, value);
        }
    }
    fn strs(&mut self, k: &str, v: Vec<String>) {
        if !v.is_empty() {
            let items = v
                .into_iter()
                .map(|s| Value::Bytes(Bytes::from(s)))
                .collect();
            self.put(k, Value::Array(items));
        }
    }
    fn obj(&mut self, k: &str, o: Obj) {
        self.put(k, Value::Object(o.0));
    }
    fn ts(&mut self, k: &str, t: Option<Timestamp>) {
        if let Some(t) = t {
            self.put(k, Value::Bytes(Bytes::from(format_timestamp(t))));
        }
    }
}

/// A `GetFlowsResponse` carrying a flow as the event's fields (`flow`, `node_name`, `time`);
/// `None` for the other response types (node status, lost events).
pub fn flow_response_to_value(resp: GetFlowsResponse) -> Option<Value> {
    let GetFlowsResponse {
        response_types,
        node_name,
        time,
    } = resp;
    let Some(ResponseType::Flow(flow)) = response_types else {
        return None;
    };
    let mut o = Obj::default();
    o.obj("flow", flow_obj(flow));
    o.str("node_name", node_name);
    o.ts("time", time);
    Some(Value::Object(o.0))
}

/// A `GetFlowsResponse` carrying a flow, in typed form: the summary `flow_to_topology` reads,
/// and the response itself, from which [`flow_response_to_value`] builds the tree when
/// something else reads the event. `None` for the other response types.
pub fn flow_response_to_typed(resp: GetFlowsResponse) -> Option<FlowLog> {
    let Some(ResponseType::Flow(flow)) = &resp.response_types else {
        return None;
    };
    let (text, summary) = summarize(flow);
    Some(FlowLog::new(text, summary, Box::new(KeptResponse(resp))))
}

/// The response a typed flow event was made from.
#[derive(Debug)]
struct KeptResponse(GetFlowsResponse);

impl FlowTree for KeptResponse {
    fn to_value(&self) -> Value {
        flow_response_to_value(self.0.clone()).unwrap_or_else(|| Value::Object(ObjectMap::new()))
    }
}

/// The summary of a flow: what `flow_to_topology` reads from the tree
/// [`flow_response_to_value`] makes of it (an enum this build has no name for is a number
/// there, so neither a verdict nor a drop reason; a default value is absent).
pub fn summarize(f: &Flow) -> (Bytes, FlowSummary) {
    let mut text = TextBuilder::with_capacity(256);
    let name = |table, v: i32| (v != 0).then(|| proto::enum_name(table, v)).flatten();
    let endpoint = |text: &mut TextBuilder, e: &proto::Endpoint| {
        let mut labels = LabelValues::default();
        for l in &e.labels {
            labels.add(l);
        }
        let workload = e
            .workloads
            .iter()
            .map(|w| w.name.as_str())
            .find(|n| !n.is_empty());
        EndpointSummary {
            namespace: text.push(e.namespace.as_bytes()),
            pod_name: text.push(e.pod_name.as_bytes()),
            identity: e.identity,
            workload: text.push(workload.unwrap_or_default().as_bytes()),
            app: labels.app.map(|s| text.push(s.as_bytes())),
            k8s_app: labels.k8s_app.map(|s| text.push(s.as_bytes())),
            reserved: labels.reserved.map(|s| text.push(s.as_bytes())),
        }
    };
    let mut s = FlowSummary {
        verdict: name(proto::VERDICT, f.verdict).map_or(0, |n| verdict_index(n.as_bytes()) as u8),
        drop_reason: name(proto::DROP_REASON, f.drop_reason_desc).map(|n| text.push(n.as_bytes())),
        is_reply: f.is_reply.map_or(f.reply, |r| r.value),
        ..FlowSummary::default()
    };
    if let Some(ip) = &f.ip {
        s.src_ip = text.push(ip.source.as_bytes());
        s.dst_ip = text.push(ip.destination.as_bytes());
    }
    match f.l4.as_ref().and_then(|l4| l4.protocol.as_ref()) {
        Some(proto::Protocol::Tcp(t)) => {
            (s.proto, s.src_port, s.dst_port) = (Proto::Tcp, t.source_port, t.destination_port);
            s.syn_only = t.flags.is_some_and(|fl| fl.syn && !fl.ack);
            s.fin_or_rst = t.flags.is_some_and(|fl| fl.fin || fl.rst);
        }
        Some(proto::Protocol::Udp(u)) => {
            (s.proto, s.src_port, s.dst_port) = (Proto::Udp, u.source_port, u.destination_port);
        }
        Some(proto::Protocol::Sctp(u)) => {
            (s.proto, s.src_port, s.dst_port) = (Proto::Sctp, u.source_port, u.destination_port);
        }
        Some(proto::Protocol::IcmpV4(_)) => s.proto = Proto::IcmpV4,
        Some(proto::Protocol::IcmpV6(_)) => s.proto = Proto::IcmpV6,
        None => {}
    }
    s.source = f.source.as_ref().map(|e| endpoint(&mut text, e));
    s.destination = f.destination.as_ref().map(|e| endpoint(&mut text, e));
    s.source_name = text.push(first_name(&f.source_names));
    s.destination_name = text.push(first_name(&f.destination_names));
    s.l7 = f.l7.as_ref().map(|l7| L7 {
        kind: L7Type::from_name(name(proto::L7_FLOW_TYPE, l7.r#type).map(str::as_bytes)),
        latency_ns: (l7.latency_ns != 0).then_some(l7.latency_ns),
        record: match &l7.record {
            Some(proto::Record::Http(h)) => L7Record::Http { code: h.code },
            Some(proto::Record::Dns(d)) => L7Record::Dns { rcode: d.rcode },
            _ => L7Record::Other,
        },
    });
    s.time_nanos = f.time.and_then(timestamp_nanos);
    (text.finish(), s)
}

/// The first non-empty name of a list (empty: none).
fn first_name(names: &[String]) -> &[u8] {
    names
        .iter()
        .find(|n| !n.is_empty())
        .map_or(&b""[..], |n| n.as_bytes())
}

/// A timestamp in Unix nanoseconds, as read back from [`format_timestamp`]'s text.
fn timestamp_nanos(t: Timestamp) -> Option<i64> {
    let nanos = t.nanos.clamp(0, 999_999_999);
    match DateTime::<Utc>::from_timestamp(t.seconds, nanos as u32) {
        Some(dt) if (0..=9999).contains(&dt.year()) => t
            .seconds
            .checked_mul(1_000_000_000)?
            .checked_add(i64::from(nanos)),
        // Out of the four-digit years the text is not RFC 3339: do as the reader does.
        _ => parse_rfc3339_nanos(format_timestamp(t).as_bytes()),
    }
}

fn flow_obj(f: Flow) -> Obj {
    let mut o = Obj::default();
    o.ts("time", f.time);
    o.str("uuid", f.uuid);
    o.enm("verdict", proto::VERDICT, f.verdict);
    o.u32("drop_reason", f.drop_reason);
    o.enm("auth_type", proto::AUTH_TYPE, f.auth_type);
    if let Some(e) = f.ethernet {
        let mut m = Obj::default();
        m.str("source", e.source);
        m.str("destination", e.destination);
        o.obj("ethernet", m);
    }
    if let Some(ip) = f.ip {
        let mut m = Obj::default();
        m.str("source", ip.source);
        m.str("destination", ip.destination);
        m.enm("ipVersion", proto::IP_VERSION, ip.ip_version);
        m.bool("encrypted", ip.encrypted);
        o.obj("IP", m);
    }
    if let Some(l4) = f.l4 {
        o.obj("l4", layer4_obj(l4));
    }
    if let Some(e) = f.source {
        o.obj("source", endpoint_obj(e));
    }
    if let Some(e) = f.destination {
        o.obj("destination", endpoint_obj(e));
    }
    o.enm("Type", proto::FLOW_TYPE, f.r#type);
    o.str("node_name", f.node_name);
    o.strs("node_labels", f.node_labels);
    o.strs("source_names", f.source_names);
    o.strs("destination_names", f.destination_names);
    if let Some(l7) = f.l7 {
        o.obj("l7", layer7_obj(l7));
    }
    o.bool("reply", f.reply);
    if let Some(e) = f.event_type {
        let mut m = Obj::default();
        m.i32("type", e.r#type);
        m.i32("sub_type", e.sub_type);
        o.obj("event_type", m);
    }
    if let Some(s) = f.source_service {
        o.obj("source_service", service_obj(s));
    }
    if let Some(s) = f.destination_service {
        o.obj("destination_service", service_obj(s));
    }
    o.enm(
        "traffic_direction",
        proto::TRAFFIC_DIRECTION,
        f.traffic_direction,
    );
    o.u32("policy_match_type", f.policy_match_type);
    o.enm(
        "trace_observation_point",
        proto::TRACE_OBSERVATION_POINT,
        f.trace_observation_point,
    );
    o.enm("drop_reason_desc", proto::DROP_REASON, f.drop_reason_desc);
    if let Some(r) = f.is_reply {
        o.put("is_reply", Value::Boolean(r.value));
    }
    o.enm(
        "debug_capture_point",
        proto::DEBUG_CAPTURE_POINT,
        f.debug_capture_point,
    );
    if let Some(i) = f.interface {
        let mut m = Obj::default();
        m.u32("index", i.index);
        m.str("name", i.name);
        o.obj("interface", m);
    }
    o.u32("proxy_port", f.proxy_port);
    if let Some(t) = f.trace_context {
        let mut m = Obj::default();
        if let Some(p) = t.parent {
            let mut pm = Obj::default();
            pm.str("trace_id", p.trace_id);
            m.obj("parent", pm);
        }
        o.obj("trace_context", m);
    }
    o.enm(
        "sock_xlate_point",
        proto::SOCK_XLATE_POINT,
        f.sock_xlate_point,
    );
    o.u64("socket_cookie", f.socket_cookie);
    o.u64("cgroup_id", f.cgroup_id);
    o.str("Summary", f.summary);
    o
}

fn layer4_obj(l4: proto::Layer4) -> Obj {
    let mut o = Obj::default();
    let ports = |source: u32, destination: u32| {
        let mut m = Obj::default();
        m.u32("source_port", source);
        m.u32("destination_port", destination);
        m
    };
    let icmp = |i: proto::Icmp| {
        let mut m = Obj::default();
        m.u32("type", i.r#type);
        m.u32("code", i.code);
        m
    };
    match l4.protocol {
        Some(proto::Protocol::Tcp(t)) => {
            let mut m = ports(t.source_port, t.destination_port);
            if let Some(fl) = t.flags {
                let mut fm = Obj::default();
                fm.bool("FIN", fl.fin);
                fm.bool("SYN", fl.syn);
                fm.bool("RST", fl.rst);
                fm.bool("PSH", fl.psh);
                fm.bool("ACK", fl.ack);
                fm.bool("URG", fl.urg);
                fm.bool("ECE", fl.ece);
                fm.bool("CWR", fl.cwr);
                fm.bool("NS", fl.ns);
                m.obj("flags", fm);
            }
            o.obj("TCP", m);
        }
        Some(proto::Protocol::Udp(u)) => o.obj("UDP", ports(u.source_port, u.destination_port)),
        Some(proto::Protocol::Sctp(u)) => o.obj("SCTP", ports(u.source_port, u.destination_port)),
        Some(proto::Protocol::IcmpV4(i)) => o.obj("ICMPv4", icmp(i)),
        Some(proto::Protocol::IcmpV6(i)) => o.obj("ICMPv6", icmp(i)),
        None => {}
    }
    o
}

fn endpoint_obj(e: proto::Endpoint) -> Obj {
    let mut o = Obj::default();
    o.u32("ID", e.id);
    o.u32("identity", e.identity);
    o.str("cluster_name", e.cluster_name);
    o.str("namespace", e.namespace);
    o.strs("labels", e.labels);
    o.str("pod_name", e.pod_name);
    if !e.workloads.is_empty() {
        let items = e
            .workloads
            .into_iter()
            .map(|w| {
                let mut m = Obj::default();
                m.str("name", w.name);
                m.str("kind", w.kind);
                Value::Object(m.0)
            })
            .collect();
        o.put("workloads", Value::Array(items));
    }
    o
}

fn service_obj(s: proto::Service) -> Obj {
    let mut o = Obj::default();
    o.str("name", s.name);
    o.str("namespace", s.namespace);
    o
}

fn layer7_obj(l7: proto::Layer7) -> Obj {
    let mut o = Obj::default();
    o.enm("type", proto::L7_FLOW_TYPE, l7.r#type);
    o.u64("latency_ns", l7.latency_ns);
    match l7.record {
        Some(proto::Record::Dns(d)) => {
            let mut m = Obj::default();
            m.str("query", d.query);
            m.strs("ips", d.ips);
            m.u32("ttl", d.ttl);
            m.strs("cnames", d.cnames);
            m.str("observation_source", d.observation_source);
            m.u32("rcode", d.rcode);
            m.strs("qtypes", d.qtypes);
            m.strs("rrtypes", d.rrtypes);
            o.obj("dns", m);
        }
        Some(proto::Record::Http(h)) => {
            let mut m = Obj::default();
            m.u32("code", h.code);
            m.str("method", h.method);
            m.str("url", h.url);
            m.str("protocol", h.protocol);
            if !h.headers.is_empty() {
                let items = h
                    .headers
                    .into_iter()
                    .map(|hd| {
                        let mut hm = Obj::default();
                        hm.str("key", hd.key);
                        hm.str("value", hd.value);
                        Value::Object(hm.0)
                    })
                    .collect();
                m.put("headers", Value::Array(items));
            }
            o.obj("http", m);
        }
        Some(proto::Record::Kafka(k)) => {
            let mut m = Obj::default();
            m.i32("error_code", k.error_code);
            m.i32("api_version", k.api_version);
            m.str("api_key", k.api_key);
            m.i32("correlation_id", k.correlation_id);
            m.str("topic", k.topic);
            o.obj("kafka", m);
        }
        None => {}
    }
    o
}

/// A timestamp as protojson writes it: RFC 3339, UTC, `Z`, and 0, 3, 6 or 9 fractional
/// digits (the fewest that keep every nanosecond).
pub fn format_timestamp(t: Timestamp) -> String {
    let nanos = t.nanos.clamp(0, 999_999_999) as u32;
    let dt = DateTime::<Utc>::from_timestamp(t.seconds, nanos).unwrap_or_default();
    let base = dt.format("%Y-%m-%dT%H:%M:%S");
    if nanos == 0 {
        format!("{base}Z")
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{base}.{:03}Z", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{base}.{:06}Z", nanos / 1_000)
    } else {
        format!("{base}.{nanos:09}Z")
    }
}

/// Parses an RFC 3339 timestamp (any offset, any number of fractional digits).
pub fn parse_timestamp(s: &str) -> Option<Timestamp> {
    let dt = match DateTime::parse_from_rfc3339(s) {
        Ok(d) => d.with_timezone(&Utc),
        // protojson allows lowercase `t`/`z`; chrono's parser needs them upper case.
        Err(_) => NaiveDateTime::parse_from_str(&s.to_ascii_uppercase(), "%Y-%m-%dT%H:%M:%S%.fZ")
            .ok()?
            .and_utc(),
    };
    Some(Timestamp {
        seconds: dt.timestamp(),
        nanos: dt.timestamp_subsec_nanos() as i32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_use_the_fewest_digit_groups() {
        let ts = |seconds, nanos| format_timestamp(Timestamp { seconds, nanos });
        assert_eq!(ts(1_234, 567_800_000), "1970-01-01T00:20:34.567800Z");
        assert_eq!(ts(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(ts(0, 5_000_000), "1970-01-01T00:00:00.005Z");
        assert_eq!(
            ts(1_692_619_938, 510_175_415),
            "2023-08-21T12:12:18.510175415Z"
        );
        let back = parse_timestamp("2023-08-21T12:12:18.510175415Z").unwrap();
        assert_eq!((back.seconds, back.nanos), (1_692_619_938, 510_175_415));
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn tcp_flags_give_syn_only_and_fin_or_rst() {
        let summary = |fl: proto::TcpFlags| {
            let f = Flow {
                l4: Some(proto::Layer4 {
                    protocol: Some(proto::Protocol::Tcp(proto::Tcp {
                        source_port: 40000,
                        destination_port: 8080,
                        flags: Some(fl),
                    })),
                }),
                ..Default::default()
            };
            let s = summarize(&f).1;
            (s.syn_only, s.fin_or_rst)
        };
        let flags = proto::TcpFlags::default;
        let syn = proto::TcpFlags {
            syn: true,
            ..flags()
        };
        let syn_ack = proto::TcpFlags { ack: true, ..syn };
        let fin_ack = proto::TcpFlags {
            fin: true,
            ack: true,
            ..flags()
        };
        let rst = proto::TcpFlags {
            rst: true,
            ..flags()
        };
        assert_eq!(summary(syn), (true, false));
        assert_eq!(summary(syn_ack), (false, false));
        assert_eq!(summary(fin_ack), (false, true));
        assert_eq!(summary(rst), (false, true));
    }

    #[test]
    fn defaults_are_left_out_and_wrappers_kept() {
        let resp = GetFlowsResponse {
            response_types: Some(ResponseType::Flow(Flow {
                verdict: 1,
                is_reply: Some(proto::BoolValue { value: false }),
                l7: Some(proto::Layer7 {
                    r#type: 2,
                    latency_ns: 5_502_936,
                    record: Some(proto::Record::Http(proto::Http {
                        code: 200,
                        ..Default::default()
                    })),
                }),
                event_type: Some(proto::CiliumEventType {
                    r#type: 129,
                    sub_type: 0,
                }),
                source: Some(proto::Endpoint::default()),
                drop_reason_desc: 999,
                ..Default::default()
            })),
            node_name: String::new(),
            time: None,
        };
        let v = flow_response_to_value(resp).unwrap();
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"flow": {
                "verdict": "FORWARDED",
                "is_reply": false,
                "l7": {"type": "RESPONSE", "latency_ns": "5502936", "http": {"code": 200}},
                "event_type": {"type": 129},
                "source": {},
                "drop_reason_desc": 999,
            }})
        );
    }
}

#[cfg(test)]
mod fuzz {
    use prost::Message;

    use super::*;
    use crate::hubble::jsonpb::response_from_json;

    /// Real flows (the shared captures, every 50th line), as jsonpb text.
    fn captured() -> Vec<Vec<u8>> {
        let mut lines = weir_testing::shared_lines("hubble", "boutique-flows.jsonl.gz");
        lines.extend(weir_testing::shared_lines(
            "hubble",
            "upstream-samples.jsonl",
        ));
        lines.into_iter().step_by(50).collect()
    }

    /// Converts a response every way the source does.
    fn convert(resp: GetFlowsResponse) {
        if let Some(ResponseType::Flow(f)) = &resp.response_types {
            let _ = summarize(f);
        }
        let _ = flow_response_to_typed(resp.clone());
        let _ = flow_response_to_value(resp);
    }

    /// `GetFlowsResponse` messages as Hubble Relay sends them (the captures encoded), mutated:
    /// a message decodes or is an error, and converts without a panic.
    #[test]
    fn fuzz_hubble_protobuf() {
        let seeds: Vec<Vec<u8>> = captured()
            .iter()
            .filter_map(|l| serde_json::from_slice(l).ok())
            .filter_map(|v| response_from_json(&v).ok())
            .map(|r| r.encode_to_vec())
            .collect();
        weir_testing::fuzz::Fuzz::new("hubble_protobuf")
            .seeds(seeds)
            .run(|input| {
                if let Ok(resp) = GetFlowsResponse::decode(input) {
                    convert(resp);
                }
            });
    }

    /// Hubble's jsonpb text read into the protobuf types (the source's `jsonpb` input),
    /// mutated: an error or a response, never a panic.
    #[test]
    fn fuzz_hubble_jsonpb_to_protobuf() {
        weir_testing::fuzz::Fuzz::new("hubble_jsonpb_to_protobuf")
            .seeds(captured())
            .dict([
                "\"flow\"",
                "\"lost_events\"",
                "\"node_status\"",
                "\"verdict\"",
                "\"l4\"",
                "\"ICMPv6\"",
                "\"labels\"",
                "\"time\"",
                "null",
                "1e400",
                "-1",
                "\"\"",
            ])
            .run(|input| {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(input) {
                    if let Ok(resp) = response_from_json(&v) {
                        convert(resp);
                    }
                }
            });
    }
}
