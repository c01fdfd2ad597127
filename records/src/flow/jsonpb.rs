//! The summary of a `hubble observe -o jsonpb` line, read with a borrowing serde derive: the
//! whole line is parsed (so it is valid JSON when this succeeds) but only the fields the map
//! needs are kept, the rest skipped without building anything.
//!
//! Every field is read with the same leniency as the tree reader of `flow_to_topology` (a
//! string field that holds a number counts as absent, an object field that holds anything
//! else too, a 64-bit integer may be a number or a string), so the summary is the one that
//! reader would take from the `json` codec's tree. Where matching it would need more than a
//! borrowed read (a string with escapes, a duplicate key, an array where an object is
//! expected at the top), the line is refused and the caller falls back to that tree.

use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{
    verdict_index, EndpointSummary, FlowSummary, L7Record, L7Type, LabelValues, Proto, Span, L7,
};

/// Summarizes `line`; `None` when it is not a flow line this reader takes (see the module).
pub(super) fn summarize(line: &[u8]) -> Option<FlowSummary> {
    u32::try_from(line.len()).ok()?;
    // One SIMD check of the whole line, so the parser borrows strings without re-checking.
    let text = simdutf8::basic::from_utf8(line).ok()?;
    let mut de = serde_json::Deserializer::from_str(text);
    let root = Root::deserialize(&mut de).ok()?;
    de.end().ok()?;
    let flow = root.flow.0?;
    Some(flow.summary(line.as_ptr() as usize))
}

/// A borrowed string; `None` for a number, boolean or null (the tree reader's "not text").
#[derive(Debug, Clone, Copy, Default)]
struct Text<'a>(Option<&'a str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string without escapes")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Some(v)))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Text(None))
            }
            // A string with escapes (visit_str), an object or an array: refused.
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// An unsigned integer as a number or (protojson's 64-bit form) a string, read as the tree
/// reader reads the tree the `json` codec builds: a number past `i64::MAX` was a float there.
#[derive(Debug, Clone, Copy, Default)]
struct Uint(Option<u64>);

impl<'de> Deserialize<'de> for Uint {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Uint;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an unsigned integer")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Uint, E> {
                Ok(Uint(u64::try_from(v).ok()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Uint, E> {
                Ok(Uint(Some(if i64::try_from(v).is_ok() {
                    v
                } else {
                    v as f64 as u64
                })))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Uint, E> {
                Ok(Uint((v >= 0.0).then_some(v as u64)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Uint, E> {
                Ok(Uint(v.parse().ok()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Uint, E> {
                Ok(Uint(None))
            }
            fn visit_unit<E>(self) -> Result<Uint, E> {
                Ok(Uint(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A boolean, or `None` for any other scalar.
#[derive(Debug, Clone, Copy, Default)]
struct Bool(Option<bool>);

impl<'de> Deserialize<'de> for Bool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Bool;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a boolean")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Bool, E> {
                Ok(Bool(Some(v)))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Bool, E> {
                Ok(Bool(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Bool, E> {
                Ok(Bool(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Bool, E> {
                Ok(Bool(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Bool, E> {
                Ok(Bool(None))
            }
            fn visit_unit<E>(self) -> Result<Bool, E> {
                Ok(Bool(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// A Cilium identity: an integer that fits in a `u32`, else 0 (as the tree reader).
#[derive(Debug, Clone, Copy, Default)]
struct Identity(u32);

impl<'de> Deserialize<'de> for Identity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Identity;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an identity")
            }
            fn visit_i64<E>(self, v: i64) -> Result<Identity, E> {
                Ok(Identity(u32::try_from(v).unwrap_or(0)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Identity, E> {
                Ok(Identity(u32::try_from(v).unwrap_or(0)))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Identity, E> {
                Ok(Identity(0))
            }
            fn visit_str<E>(self, _: &str) -> Result<Identity, E> {
                Ok(Identity(0))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Identity, E> {
                Ok(Identity(0))
            }
            fn visit_unit<E>(self) -> Result<Identity, E> {
                Ok(Identity(0))
            }
        }
        d.deserialize_any(V)
    }
}

/// Present whatever its value (`ICMPv4: null` counts, as a key of the tree does).
#[derive(Debug, Clone, Copy, Default)]
struct Present(bool);

impl<'de> Deserialize<'de> for Present {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(d).map(|_| Present(true))
    }
}

/// An object read as `T`; `None` for any other value (skipped), as the tree reader treats a
/// field that is not an object. A derived struct alone would also take an array.
#[derive(Debug)]
struct Obj<T>(Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(|t| Obj(Some(t)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Obj<T>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Obj(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
            fn visit_unit<E>(self) -> Result<Obj<T>, E> {
                Ok(Obj(None))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// What is kept of an array, each element handed to [`Each::item`] as it is read (no `Vec`);
/// a field that is not an array has no elements.
trait Each<'de>: Default {
    type Item: Deserialize<'de>;
    fn item(&mut self, item: Self::Item);
}

#[derive(Debug, Default)]
struct Array<T>(T);

impl<'de, T: Each<'de>> Deserialize<'de> for Array<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Each<'de>> Visitor<'de> for V<T> {
            type Value = Array<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Array<T>, A::Error> {
                let mut acc = T::default();
                while let Some(x) = seq.next_element::<T::Item>()? {
                    acc.item(x);
                }
                Ok(Array(acc))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Array<T>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Array(T::default()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Array<T>, E> {
                Ok(Array(T::default()))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Array<T>, E> {
                Ok(Array(T::default()))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Array<T>, E> {
                Ok(Array(T::default()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Array<T>, E> {
                Ok(Array(T::default()))
            }
            fn visit_str<E>(self, _: &str) -> Result<Array<T>, E> {
                Ok(Array(T::default()))
            }
            fn visit_unit<E>(self) -> Result<Array<T>, E> {
                Ok(Array(T::default()))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// The first non-empty string of an array (`source_names`).
#[derive(Debug, Default)]
struct FirstName<'a>(Option<&'a str>);

impl<'de: 'a, 'a> Each<'de> for FirstName<'a> {
    type Item = Text<'a>;
    fn item(&mut self, item: Text<'a>) {
        if self.0.is_none() {
            self.0 = item.0.filter(|s| !s.is_empty());
        }
    }
}

impl<'de: 'a, 'a> Each<'de> for LabelValues<'a> {
    type Item = Text<'a>;
    fn item(&mut self, item: Text<'a>) {
        if let Some(l) = item.0 {
            self.add(l);
        }
    }
}

#[derive(Debug, Default, serde::Deserialize)]
struct Workload<'a> {
    #[serde(default, borrow)]
    name: Text<'a>,
}

/// The first workload (an object) with a non-empty `name`.
#[derive(Debug, Default)]
struct FirstWorkload<'a>(Option<&'a str>);

impl<'de: 'a, 'a> Each<'de> for FirstWorkload<'a> {
    type Item = Obj<Workload<'a>>;
    fn item(&mut self, item: Obj<Workload<'a>>) {
        if self.0.is_none() {
            self.0 = item.0.and_then(|w| w.name.0).filter(|n| !n.is_empty());
        }
    }
}

#[derive(Debug, Default, serde::Deserialize)]
struct Endpoint<'a> {
    #[serde(default, borrow)]
    namespace: Text<'a>,
    #[serde(default, borrow)]
    pod_name: Text<'a>,
    #[serde(default)]
    identity: Identity,
    #[serde(default, borrow)]
    labels: Array<LabelValues<'a>>,
    #[serde(default, borrow)]
    workloads: Array<FirstWorkload<'a>>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Ip<'a> {
    #[serde(default, borrow)]
    source: Text<'a>,
    #[serde(default, borrow)]
    destination: Text<'a>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Flags {
    #[serde(default, rename = "SYN")]
    syn: Bool,
    #[serde(default, rename = "FIN")]
    fin: Bool,
    #[serde(default, rename = "RST")]
    rst: Bool,
    #[serde(default, rename = "ACK")]
    ack: Bool,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Ports {
    #[serde(default)]
    source_port: Uint,
    #[serde(default)]
    destination_port: Uint,
    #[serde(default)]
    flags: Obj<Flags>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Layer4 {
    #[serde(default, rename = "TCP")]
    tcp: Obj<Ports>,
    #[serde(default, rename = "UDP")]
    udp: Obj<Ports>,
    #[serde(default, rename = "SCTP")]
    sctp: Obj<Ports>,
    #[serde(default, rename = "ICMPv4")]
    icmpv4: Present,
    #[serde(default, rename = "ICMPv6")]
    icmpv6: Present,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Code {
    #[serde(default)]
    code: Uint,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Rcode {
    #[serde(default)]
    rcode: Uint,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Layer7<'a> {
    #[serde(default, borrow, rename = "type")]
    kind: Text<'a>,
    #[serde(default)]
    latency_ns: Uint,
    #[serde(default)]
    http: Obj<Code>,
    #[serde(default)]
    dns: Obj<Rcode>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct Flow<'a> {
    #[serde(default, borrow)]
    time: Text<'a>,
    #[serde(default, borrow)]
    verdict: Text<'a>,
    #[serde(default, borrow)]
    drop_reason_desc: Text<'a>,
    #[serde(default, borrow, rename = "IP")]
    ip: Obj<Ip<'a>>,
    #[serde(default)]
    l4: Obj<Layer4>,
    #[serde(default, borrow)]
    source: Obj<Endpoint<'a>>,
    #[serde(default, borrow)]
    destination: Obj<Endpoint<'a>>,
    #[serde(default, borrow)]
    source_names: Array<FirstName<'a>>,
    #[serde(default, borrow)]
    destination_names: Array<FirstName<'a>>,
    #[serde(default, borrow)]
    l7: Obj<Layer7<'a>>,
    #[serde(default)]
    is_reply: Bool,
    #[serde(default)]
    reply: Bool,
    #[serde(default)]
    bytes: Uint,
}

/// The line's root: only an object is taken (an array is the `json` codec's business).
#[derive(Debug)]
struct Root<'a> {
    flow: Obj<Flow<'a>>,
}

impl<'de> Deserialize<'de> for Root<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        struct Fields<'a> {
            #[serde(default, borrow)]
            flow: Obj<Flow<'a>>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Root<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Root<'de>, A::Error> {
                let f = Fields::deserialize(MapAccessDeserializer::new(map))?;
                Ok(Root { flow: f.flow })
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a> Endpoint<'a> {
    fn summary(&self, span: &impl Fn(&'a str) -> Span) -> EndpointSummary {
        let text = |t: Text<'a>| t.0.map(span).unwrap_or_default();
        let labels = &self.labels.0;
        EndpointSummary {
            namespace: text(self.namespace),
            pod_name: text(self.pod_name),
            identity: self.identity.0,
            workload: self.workloads.0 .0.map(span).unwrap_or_default(),
            app: labels.app.map(span),
            k8s_app: labels.k8s_app.map(span),
            reserved: labels.reserved.map(span),
        }
    }
}

impl<'a> Flow<'a> {
    /// The summary, with the spans of the borrowed strings in a line that starts at `base`.
    fn summary(&self, base: usize) -> FlowSummary {
        // Borrowed strings point into the line (`summarize` checked it is under 4 GiB).
        let span = |s: &'a str| Span {
            start: (s.as_ptr() as usize - base) as u32,
            len: s.len() as u32,
        };
        let text = |t: Text<'a>| t.0.map(span).unwrap_or_default();
        let (src_ip, dst_ip) = match &self.ip.0 {
            Some(ip) => (text(ip.source), text(ip.destination)),
            None => (Span::default(), Span::default()),
        };
        let mut s = FlowSummary {
            verdict: self
                .verdict
                .0
                .map_or(0, |v| verdict_index(v.as_bytes()) as u8),
            drop_reason: self.drop_reason_desc.0.map(span),
            is_reply: self.is_reply.0.unwrap_or(self.reply.0 == Some(true)),
            src_ip,
            dst_ip,
            source: self.source.0.as_ref().map(|e| e.summary(&span)),
            destination: self.destination.0.as_ref().map(|e| e.summary(&span)),
            source_name: self.source_names.0 .0.map(span).unwrap_or_default(),
            destination_name: self.destination_names.0 .0.map(span).unwrap_or_default(),
            bytes: self.bytes.0,
            time_nanos: self.time.0.and_then(|t| parse_rfc3339_nanos(t.as_bytes())),
            ..FlowSummary::default()
        };
        if let Some(l4) = &self.l4.0 {
            let ports = |p: &Ports| {
                (
                    p.source_port.0.unwrap_or(0) as u32,
                    p.destination_port.0.unwrap_or(0) as u32,
                )
            };
            if let Some(t) = &l4.tcp.0 {
                s.proto = Proto::Tcp;
                (s.src_port, s.dst_port) = ports(t);
                if let Some(fl) = &t.flags.0 {
                    s.syn_only = fl.syn.0 == Some(true) && fl.ack.0 != Some(true);
                    s.fin_or_rst = fl.fin.0 == Some(true) || fl.rst.0 == Some(true);
                }
            } else if let Some(u) = &l4.udp.0 {
                s.proto = Proto::Udp;
                (s.src_port, s.dst_port) = ports(u);
            } else if let Some(p) = &l4.sctp.0 {
                s.proto = Proto::Sctp;
                (s.src_port, s.dst_port) = ports(p);
            } else if l4.icmpv4.0 {
                s.proto = Proto::IcmpV4;
            } else if l4.icmpv6.0 {
                s.proto = Proto::IcmpV6;
            }
        }
        s.l7 = self.l7.0.as_ref().map(|l7| L7 {
            kind: L7Type::from_name(l7.kind.0.map(str::as_bytes)),
            latency_ns: l7.latency_ns.0,
            record: if let Some(h) = &l7.http.0 {
                L7Record::Http {
                    code: h.code.0.unwrap_or(0) as u32,
                }
            } else if let Some(d) = &l7.dns.0 {
                L7Record::Dns {
                    rcode: d.rcode.0.unwrap_or(0) as u32,
                }
            } else {
                L7Record::Other
            },
        });
        s
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
