//! A network flow (Hubble's `Flow`) held in typed form: the fields a service map needs, read
//! once where the flow enters Weir, plus whatever it takes to build the full tree of fields
//! on demand (see [`weir_pipeline::event::TypedLog`]).
//!
//! Two producers: the `hubble_jsonpb` decoding codec (a line of `hubble observe -o jsonpb`,
//! kept as is: [`FlowLog::from_jsonpb_line`]) and the `hubble` gRPC source (the decoded
//! protobuf, kept by the source: [`FlowLog::new`] with a [`FlowTree`]). The consumer is the
//! `flow_to_topology` transform, which downcasts with `log.typed::<FlowLog>()` and reads
//! [`FlowLog::summary`]; anything else reading the event gets the tree the source would have
//! emitted without the typed form (the `json` codec's tree of the line, or the `hubble`
//! source's protojson mapping).
//!
//! Strings of the summary are [`Span`]s of [`FlowLog::text`] (the line itself, or a buffer the
//! source filled), so reading a flow allocates nothing but the event itself.

mod codec;
mod jsonpb;

use std::fmt;

use bytes::Bytes;

use weir_pipeline::event::{TypedLog, Value};

pub use codec::{HubbleJsonpb, HUBBLE_JSONPB};
pub use jsonpb::parse_rfc3339_nanos;

/// The L4 protocol of a flow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
    IcmpV4,
    IcmpV6,
    #[default]
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

/// The index in [`VERDICTS`] of a verdict's name (0 when unknown).
pub fn verdict_index(name: &[u8]) -> usize {
    VERDICTS
        .iter()
        .position(|v| v.as_bytes() == name)
        .unwrap_or(0)
}

/// The kind of an L7 record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L7Type {
    Request,
    Response,
    Other,
}

impl L7Type {
    /// From the protojson name of `l7.type`.
    pub fn from_name(name: Option<&[u8]>) -> Self {
        match name {
            Some(b"REQUEST") => L7Type::Request,
            Some(b"RESPONSE") => L7Type::Response,
            _ => L7Type::Other,
        }
    }
}

/// HTTP or DNS details of an L7 flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L7Record {
    Http { code: u32 },
    Dns { rcode: u32 },
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L7 {
    pub kind: L7Type,
    pub latency_ns: Option<u64>,
    pub record: L7Record,
}

/// A range of [`FlowLog::text`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    start: u32,
    len: u32,
}

impl Span {
    /// The span `start..start + len`; `None` past 4 GiB.
    pub fn new(start: usize, len: usize) -> Option<Self> {
        Some(Self {
            start: u32::try_from(start).ok()?,
            len: u32::try_from(len).ok()?,
        })
    }

    pub fn is_empty(self) -> bool {
        self.len == 0
    }
}

/// What a service map needs of one end of a flow (an `Endpoint` object), already reduced:
/// the labels and workloads are searched once, here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointSummary {
    pub namespace: Span,
    pub pod_name: Span,
    /// `identity` when it is an integer that fits (else 0).
    pub identity: u32,
    /// The name of the first workload that has a non-empty one (empty: none).
    pub workload: Span,
    /// The value of the first `app` label (`k8s:app=cart`: `cart`), whatever its prefix.
    pub app: Option<Span>,
    /// The value of the first `k8s-app` label.
    pub k8s_app: Option<Span>,
    /// What follows `reserved:` in the first label that starts with it.
    pub reserved: Option<Span>,
}

/// What the map needs of an endpoint's labels, found in one pass over them.
#[derive(Debug, Default, Clone, Copy)]
pub struct LabelValues<'a> {
    /// The value of the first `app` label (`k8s:app=cart`: `cart`), whatever its prefix.
    pub app: Option<&'a str>,
    /// The value of the first `k8s-app` label.
    pub k8s_app: Option<&'a str>,
    /// What follows `reserved:` in the first label that starts with it.
    pub reserved: Option<&'a str>,
}

impl<'a> LabelValues<'a> {
    /// Takes in the next label.
    pub fn add(&mut self, label: &'a str) {
        if self.reserved.is_none() {
            self.reserved = label.strip_prefix("reserved:");
        }
        // `k8s:app=cart`: the key is between the first `:` (if any) and the first `=` after.
        let kv = match memchr::memchr(b':', label.as_bytes()) {
            Some(i) => &label[i + 1..],
            None => label,
        };
        if let Some(eq) = memchr::memchr(b'=', kv.as_bytes()) {
            let (key, value) = (&kv[..eq], &kv[eq + 1..]);
            if key == "app" && self.app.is_none() {
                self.app = Some(value);
            } else if key == "k8s-app" && self.k8s_app.is_none() {
                self.k8s_app = Some(value);
            }
        }
    }
}

/// The fields of a flow a service map uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowSummary {
    /// Index into [`VERDICTS`] (0 when absent or unknown).
    pub verdict: u8,
    pub drop_reason: Option<Span>,
    /// `is_reply`, or (when that is not a boolean) `reply`; an L7 `RESPONSE` is not folded in
    /// here.
    pub is_reply: bool,
    pub src_ip: Span,
    pub dst_ip: Span,
    pub proto: Proto,
    pub src_port: u32,
    pub dst_port: u32,
    /// A TCP SYN without ACK.
    pub syn_only: bool,
    /// A TCP FIN or RST: the connection is closing (its 4-tuple may then be reused).
    pub fin_or_rst: bool,
    pub source: Option<EndpointSummary>,
    pub destination: Option<EndpointSummary>,
    /// The first non-empty name of `source_names` (empty: none).
    pub source_name: Span,
    /// The first non-empty name of `destination_names`.
    pub destination_name: Span,
    pub l7: Option<L7>,
    pub bytes: Option<u64>,
    /// The flow's `time` in Unix nanoseconds, when it has a readable one.
    pub time_nanos: Option<i64>,
}

/// Builds the full tree of a flow whose fields are kept by its producer (the `hubble` source
/// keeps the decoded protobuf).
pub trait FlowTree: Send + Sync + fmt::Debug {
    /// The fields as the producer emits them without the typed form (the root is an object).
    fn to_value(&self) -> Value;
}

#[derive(Debug)]
enum Full {
    /// `text` is a whole `hubble observe -o jsonpb` line, valid JSON.
    JsonpbLine,
    Tree(Box<dyn FlowTree>),
}

/// A flow log event's fields in typed form: the [`FlowSummary`] and what the full tree is
/// built from.
#[derive(Debug)]
pub struct FlowLog {
    text: Bytes,
    summary: FlowSummary,
    full: Full,
}

impl FlowLog {
    /// A flow whose summary's spans index `text`, and whose full tree `tree` builds.
    pub fn new(text: Bytes, summary: FlowSummary, tree: Box<dyn FlowTree>) -> Self {
        Self {
            text,
            summary,
            full: Full::Tree(tree),
        }
    }

    /// Reads a line of `hubble observe -o jsonpb` that carries a flow (`{"flow": {...}, ...}`),
    /// validating the whole line as JSON. `None` when the line is not valid JSON, is not an
    /// object with a `flow` object, or has a field the summary needs in an unusual form (a
    /// string with escapes, a duplicate key): the caller then decodes it as any JSON, which
    /// gives the same fields and the same errors.
    pub fn from_jsonpb_line(line: Bytes) -> Option<Self> {
        let summary = jsonpb::summarize(&line)?;
        Some(Self {
            text: line,
            summary,
            full: Full::JsonpbLine,
        })
    }

    pub fn summary(&self) -> &FlowSummary {
        &self.summary
    }

    /// The bytes a span of the summary designates (empty if out of range, which a summary
    /// built with this log's text never is).
    pub fn text(&self, span: Span) -> &[u8] {
        let start = span.start as usize;
        self.text
            .get(start..start + span.len as usize)
            .unwrap_or_default()
    }
}

impl TypedLog for FlowLog {
    fn estimated_bytes(&self) -> usize {
        // The text, plus its summary (a few dozen spans and numbers) and a built tree's share.
        std::mem::size_of::<Self>() + 2 * self.text.len()
    }

    fn to_value(&self) -> Value {
        match &self.full {
            // Valid JSON (`from_jsonpb_line` parsed it), so this cannot fail; should it
            // anyway, an empty object is better than a panic in a consumer.
            Full::JsonpbLine => weir_pipeline::codec::parse_json_value(&self.text)
                .unwrap_or_else(|_| Value::Object(Default::default())),
            Full::Tree(t) => t.to_value(),
        }
    }
}

/// Fills a [`FlowLog::text`] buffer for producers that have the strings apart (the `hubble`
/// source): each string is appended and its span returned.
#[derive(Debug, Default)]
pub struct TextBuilder {
    buf: Vec<u8>,
}

impl TextBuilder {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }

    /// Appends `s`; an empty string takes no room. Past 4 GiB, an empty span.
    pub fn push(&mut self, s: &[u8]) -> Span {
        if s.is_empty() {
            return Span::default();
        }
        match Span::new(self.buf.len(), s.len()) {
            Some(span) => {
                self.buf.extend_from_slice(s);
                span
            }
            None => Span::default(),
        }
    }

    pub fn finish(self) -> Bytes {
        Bytes::from(self.buf)
    }
}

#[cfg(test)]
mod tests;
