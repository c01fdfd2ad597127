//! Reading the fields the service map needs from a flow event, borrowing from it (no copy,
//! no allocation). Two forms: the typed one ([`FlowLog`], from the `hubble_jsonpb` codec and
//! the `hubble` source), read from its summary; and a tree of fields shaped like a line of
//! `hubble observe -o jsonpb` (`{"flow": {...}, "node_name": ..., "time": ...}`, from the
//! `json` codec, or after a remap), where a bare flow object is accepted too. Both give the
//! same view of the same flow.

use weir_pipeline::event::{LogEvent, ObjectMap, Value};
pub use weir_records::flow::{parse_rfc3339_nanos, L7Record, L7Type, Proto, L7, VERDICTS};
use weir_records::flow::{verdict_index, EndpointSummary, FlowLog};

/// What the map needs of one end of a flow.
#[derive(Debug, Clone, Copy, Default)]
pub struct EndpointView<'a> {
    pub namespace: &'a [u8],
    pub pod_name: &'a [u8],
    pub identity: u32,
    /// The first non-empty workload name (empty: none).
    pub workload: &'a [u8],
    /// The first `app` label's value (`k8s:app=cart`: `cart`).
    pub app: Option<&'a [u8]>,
    /// The first `k8s-app` label's value.
    pub k8s_app: Option<&'a [u8]>,
    /// What follows `reserved:` in the first label that starts with it.
    pub reserved: Option<&'a [u8]>,
}

/// The parts of a flow the service map uses.
#[derive(Debug)]
pub struct FlowView<'a> {
    /// Index into [`VERDICTS`] (0 when absent or unknown).
    pub verdict: usize,
    pub drop_reason: Option<&'a [u8]>,
    /// `is_reply`, or an L7 `RESPONSE`.
    pub is_reply: bool,
    pub src_ip: &'a [u8],
    pub dst_ip: &'a [u8],
    pub proto: Proto,
    pub src_port: u32,
    pub dst_port: u32,
    /// A TCP SYN without ACK: the first packet of a connection.
    pub syn_only: bool,
    /// A TCP FIN or RST: the connection is closing, its 4-tuple free for a new one.
    pub fin_or_rst: bool,
    pub source: Option<EndpointView<'a>>,
    pub destination: Option<EndpointView<'a>>,
    /// The first non-empty DNS name Hubble knows for the source IP (empty: none).
    pub source_name: &'a [u8],
    pub destination_name: &'a [u8],
    pub l7: Option<L7>,
    pub bytes: Option<u64>,
    /// The flow's time in Unix nanoseconds, when it has a readable one.
    pub time_nanos: Option<i64>,
}

fn obj<'a>(m: &'a ObjectMap, k: &str) -> Option<&'a ObjectMap> {
    match m.get(k) {
        Some(Value::Object(o)) => Some(o),
        _ => None,
    }
}

/// A string value's bytes (JSON decoders give `Bytes`; VRL may give `String`).
pub fn text(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Bytes(b) => Some(b),
        Value::String(s) => Some(s.as_bytes()),
        _ => None,
    }
}

fn bytes<'a>(m: &'a ObjectMap, k: &str) -> Option<&'a [u8]> {
    m.get(k).and_then(text)
}

fn array<'a>(m: &'a ObjectMap, k: &str) -> &'a [Value] {
    match m.get(k) {
        Some(Value::Array(a)) => a,
        _ => &[],
    }
}

/// An unsigned number written as a JSON number or (protojson's 64-bit form) a string.
fn uint(m: &ObjectMap, k: &str) -> Option<u64> {
    match m.get(k) {
        Some(Value::Integer(i)) => u64::try_from(*i).ok(),
        Some(Value::Float(f)) if f.into_inner() >= 0.0 => Some(f.into_inner() as u64),
        Some(v) => std::str::from_utf8(text(v)?).ok()?.parse().ok(),
        None => None,
    }
}

fn flag(m: &ObjectMap, k: &str) -> bool {
    matches!(m.get(k), Some(Value::Boolean(true)))
}

/// The value of label `key` (`k8s:app=frontend` has key `app`), whatever its source prefix.
fn label<'a>(labels: &'a [Value], key: &[u8]) -> Option<&'a [u8]> {
    labels.iter().find_map(|l| {
        let l = text(l)?;
        let kv = match memchr::memchr(b':', l) {
            Some(i) => &l[i + 1..],
            None => l,
        };
        let eq = memchr::memchr(b'=', kv)?;
        (&kv[..eq] == key).then(|| &kv[eq + 1..])
    })
}

fn endpoint(ep: &ObjectMap) -> EndpointView<'_> {
    let labels = array(ep, "labels");
    let workload = array(ep, "workloads").iter().find_map(|w| match w {
        Value::Object(w) => bytes(w, "name").filter(|n| !n.is_empty()),
        _ => None,
    });
    EndpointView {
        namespace: bytes(ep, "namespace").unwrap_or_default(),
        pod_name: bytes(ep, "pod_name").unwrap_or_default(),
        identity: match ep.get("identity") {
            Some(Value::Integer(i)) => u32::try_from(*i).unwrap_or(0),
            _ => 0,
        },
        workload: workload.unwrap_or_default(),
        app: label(labels, b"app"),
        k8s_app: label(labels, b"k8s-app"),
        reserved: labels
            .iter()
            .find_map(|l| text(l)?.strip_prefix(b"reserved:".as_slice())),
    }
}

fn first_name(names: &[Value]) -> &[u8] {
    names
        .iter()
        .find_map(|n| text(n).filter(|b| !b.is_empty()))
        .unwrap_or_default()
}

/// The flow object of an event: `.flow`, or the root when it looks like a flow itself.
pub fn flow_object(root: &Value) -> Option<&ObjectMap> {
    let Value::Object(root) = root else {
        return None;
    };
    if let Some(f) = obj(root, "flow") {
        return Some(f);
    }
    ["IP", "l4", "verdict", "source", "destination"]
        .iter()
        .any(|k| root.contains_key(*k))
        .then_some(root)
}

impl<'a> FlowView<'a> {
    /// Reads the flow of a log event, typed or not; `None` when it is not one (no flow
    /// object, or none of the fields a flow has).
    pub fn of(log: &'a LogEvent) -> Option<Self> {
        match log.typed::<FlowLog>() {
            Some(f) => Self::from_typed(f),
            None => Self::read(log.value()),
        }
    }

    /// A flow in typed form.
    pub fn from_typed(f: &'a FlowLog) -> Option<Self> {
        let s = f.summary();
        let ep = |e: &EndpointSummary| EndpointView {
            namespace: f.text(e.namespace),
            pod_name: f.text(e.pod_name),
            identity: e.identity,
            workload: f.text(e.workload),
            app: e.app.map(|s| f.text(s)),
            k8s_app: e.k8s_app.map(|s| f.text(s)),
            reserved: e.reserved.map(|s| f.text(s)),
        };
        Self {
            verdict: usize::from(s.verdict).min(VERDICTS.len() - 1),
            drop_reason: s.drop_reason.map(|d| f.text(d)),
            is_reply: s.is_reply,
            src_ip: f.text(s.src_ip),
            dst_ip: f.text(s.dst_ip),
            proto: s.proto,
            src_port: s.src_port,
            dst_port: s.dst_port,
            syn_only: s.syn_only,
            fin_or_rst: s.fin_or_rst,
            source: s.source.as_ref().map(ep),
            destination: s.destination.as_ref().map(ep),
            source_name: f.text(s.source_name),
            destination_name: f.text(s.destination_name),
            l7: s.l7,
            bytes: s.bytes,
            time_nanos: s.time_nanos,
        }
        .finish()
    }

    /// Folds an L7 response into `is_reply`; `None` for a flow with none of the fields a
    /// flow has.
    fn finish(mut self) -> Option<Self> {
        if matches!(
            self.l7,
            Some(L7 {
                kind: L7Type::Response,
                ..
            })
        ) {
            self.is_reply = true;
        }
        let nothing = self.verdict == 0
            && self.src_ip.is_empty()
            && self.dst_ip.is_empty()
            && self.source.is_none()
            && self.destination.is_none();
        (!nothing).then_some(self)
    }

    /// Reads a flow from a tree of fields.
    pub fn read(root: &'a Value) -> Option<Self> {
        let f = flow_object(root)?;
        let verdict = bytes(f, "verdict").map(verdict_index).unwrap_or(0);
        let (src_ip, dst_ip) = match obj(f, "IP") {
            Some(ip) => (
                bytes(ip, "source").unwrap_or_default(),
                bytes(ip, "destination").unwrap_or_default(),
            ),
            None => (&[][..], &[][..]),
        };
        let mut proto = Proto::Unknown;
        let (mut src_port, mut dst_port, mut syn_only, mut fin_or_rst) = (0, 0, false, false);
        if let Some(l4) = obj(f, "l4") {
            let ports = |p: &ObjectMap| {
                (
                    uint(p, "source_port").unwrap_or(0) as u32,
                    uint(p, "destination_port").unwrap_or(0) as u32,
                )
            };
            if let Some(t) = obj(l4, "TCP") {
                proto = Proto::Tcp;
                (src_port, dst_port) = ports(t);
                if let Some(fl) = obj(t, "flags") {
                    syn_only = flag(fl, "SYN") && !flag(fl, "ACK");
                    fin_or_rst = flag(fl, "FIN") || flag(fl, "RST");
                }
            } else if let Some(u) = obj(l4, "UDP") {
                proto = Proto::Udp;
                (src_port, dst_port) = ports(u);
            } else if let Some(s) = obj(l4, "SCTP") {
                proto = Proto::Sctp;
                (src_port, dst_port) = ports(s);
            } else if l4.contains_key("ICMPv4") {
                proto = Proto::IcmpV4;
            } else if l4.contains_key("ICMPv6") {
                proto = Proto::IcmpV6;
            }
        }
        let l7 = obj(f, "l7").map(|l7| {
            let record = if let Some(h) = obj(l7, "http") {
                L7Record::Http {
                    code: uint(h, "code").unwrap_or(0) as u32,
                }
            } else if let Some(d) = obj(l7, "dns") {
                L7Record::Dns {
                    rcode: uint(d, "rcode").unwrap_or(0) as u32,
                }
            } else {
                L7Record::Other
            };
            L7 {
                kind: L7Type::from_name(bytes(l7, "type")),
                latency_ns: uint(l7, "latency_ns"),
                record,
            }
        });
        let is_reply = match f.get("is_reply") {
            Some(Value::Boolean(b)) => *b,
            _ => flag(f, "reply"),
        };
        Self {
            verdict,
            drop_reason: bytes(f, "drop_reason_desc"),
            is_reply,
            src_ip,
            dst_ip,
            proto,
            src_port,
            dst_port,
            syn_only,
            fin_or_rst,
            source: obj(f, "source").map(endpoint),
            destination: obj(f, "destination").map(endpoint),
            source_name: first_name(array(f, "source_names")),
            destination_name: first_name(array(f, "destination_names")),
            l7,
            bytes: uint(f, "bytes"),
            time_nanos: bytes(f, "time").and_then(parse_rfc3339_nanos),
        }
        .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_reply_response_and_ports() {
        let v: Value = serde_json::from_str::<serde_json::Value>(
            r#"{"flow":{"verdict":"FORWARDED","IP":{"source":"10.0.0.2","destination":"10.0.0.1"},
            "l4":{"TCP":{"source_port":8080,"destination_port":33685}},"is_reply":true,
            "l7":{"type":"RESPONSE","latency_ns":"5502936","http":{"code":503}}}}"#,
        )
        .unwrap()
        .into();
        let f = FlowView::read(&v).unwrap();
        assert_eq!(f.verdict, 1);
        assert!(f.is_reply);
        assert_eq!((f.proto, f.src_port, f.dst_port), (Proto::Tcp, 8080, 33685));
        let l7 = f.l7.unwrap();
        assert_eq!(l7.latency_ns, Some(5_502_936));
        assert_eq!(l7.record, L7Record::Http { code: 503 });
        let not_a_flow: Value = serde_json::json!({"message": "hi"}).into();
        assert!(FlowView::read(&not_a_flow).is_none());
        let empty_flow: Value = serde_json::json!({"flow": {}}).into();
        assert!(FlowView::read(&empty_flow).is_none());
    }
}
