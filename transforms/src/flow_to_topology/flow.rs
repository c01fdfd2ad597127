//! Reading the fields the service map needs from a flow event, borrowing from it (no copy,
//! no allocation). The event is shaped like a line of `hubble observe -o jsonpb`
//! (`{"flow": {...}, "node_name": ..., "time": ...}`); a bare flow object is accepted too.

use weir_pipeline::event::{ObjectMap, Value};

/// The L4 protocol of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
    IcmpV4,
    IcmpV6,
    Unknown,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "TCP",
            Proto::Udp => "UDP",
            Proto::Sctp => "SCTP",
            Proto::IcmpV4 => "ICMPv4",
            Proto::IcmpV6 => "ICMPv6",
            Proto::Unknown => "UNKNOWN",
        }
    }
}

/// Verdicts, indexed by their protobuf number.
pub const VERDICTS: [&str; 8] = [
    "VERDICT_UNKNOWN",
    "FORWARDED",
    "DROPPED",
    "ERROR",
    "AUDIT",
    "REDIRECTED",
    "TRACED",
    "TRANSLATED",
];

/// The kind of an L7 record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L7Type {
    Request,
    Response,
    Other,
}

/// HTTP or DNS details of an L7 flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L7Record {
    Http { code: u32 },
    Dns { rcode: u32 },
    Other,
}

#[derive(Debug, Clone, Copy)]
pub struct L7 {
    pub kind: L7Type,
    pub latency_ns: Option<u64>,
    pub record: L7Record,
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
    pub source: Option<&'a ObjectMap>,
    pub destination: Option<&'a ObjectMap>,
    pub source_names: &'a [Value],
    pub destination_names: &'a [Value],
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

fn verdict_index(name: &[u8]) -> usize {
    VERDICTS
        .iter()
        .position(|v| v.as_bytes() == name)
        .unwrap_or(0)
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
    /// Reads a flow; `None` when the event is not one (no flow object, or none of the
    /// fields a flow has).
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
        let (mut src_port, mut dst_port, mut syn_only) = (0, 0, false);
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
            let kind = match bytes(l7, "type") {
                Some(b"REQUEST") => L7Type::Request,
                Some(b"RESPONSE") => L7Type::Response,
                _ => L7Type::Other,
            };
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
                kind,
                latency_ns: uint(l7, "latency_ns"),
                record,
            }
        });
        let is_reply = match f.get("is_reply") {
            Some(Value::Boolean(b)) => *b,
            _ => flag(f, "reply"),
        } || matches!(
            l7,
            Some(L7 {
                kind: L7Type::Response,
                ..
            })
        );
        let source = obj(f, "source");
        let destination = obj(f, "destination");
        if verdict == 0
            && src_ip.is_empty()
            && dst_ip.is_empty()
            && source.is_none()
            && destination.is_none()
        {
            return None;
        }
        let time_nanos = bytes(f, "time").and_then(parse_rfc3339_nanos);
        Some(FlowView {
            verdict,
            drop_reason: bytes(f, "drop_reason_desc"),
            is_reply,
            src_ip,
            dst_ip,
            proto,
            src_port,
            dst_port,
            syn_only,
            source,
            destination,
            source_names: array(f, "source_names"),
            destination_names: array(f, "destination_names"),
            l7,
            bytes: uint(f, "bytes"),
            time_nanos,
        })
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` into Unix nanoseconds, quickly: this
/// runs once per flow.
pub fn parse_rfc3339_nanos(s: &[u8]) -> Option<i64> {
    fn num(s: &[u8]) -> Option<i64> {
        let mut n = 0i64;
        for &c in s {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + i64::from(c - b'0');
        }
        Some(n)
    }
    if s.len() < 20 || s[4] != b'-' || s[7] != b'-' || s[13] != b':' || s[16] != b':' {
        return None;
    }
    let (y, mo, d) = (num(&s[0..4])?, num(&s[5..7])?, num(&s[8..10])?);
    let (h, mi, sec) = (num(&s[11..13])?, num(&s[14..16])?, num(&s[17..19])?);
    let mut i = 19;
    let mut nanos = 0i64;
    if s[i] == b'.' {
        i += 1;
        let start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            if i - start < 9 {
                nanos = nanos * 10 + i64::from(s[i] - b'0');
            }
            i += 1;
        }
        let digits = (i - start).min(9);
        if digits == 0 {
            return None;
        }
        nanos *= 10i64.pow((9 - digits) as u32);
    }
    let offset = match s.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), rest @ ..] if rest.len() == 5 && rest[2] == b':' => {
            let o = num(&rest[0..2])? * 3600 + num(&rest[3..5])? * 60;
            if *sign == b'+' {
                o
            } else {
                -o
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_like_chrono() {
        for s in [
            "2026-11-20T10:00:00.000215049Z",
            "1970-01-01T00:20:34.567800Z",
            "2000-02-29T23:59:59Z",
            "2023-08-21T12:12:18.5+02:00",
        ] {
            let c = chrono::DateTime::parse_from_rfc3339(s).unwrap();
            assert_eq!(
                parse_rfc3339_nanos(s.as_bytes()),
                c.timestamp_nanos_opt(),
                "{s}"
            );
        }
        assert_eq!(parse_rfc3339_nanos(b"2026-11-20"), None);
        assert_eq!(parse_rfc3339_nanos(b"2026-11-20T10:00:00.Z"), None);
        assert_eq!(parse_rfc3339_nanos(b"2026-11-20T10:00:00Q"), None);
    }

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
