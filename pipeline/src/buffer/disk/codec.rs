//! Events as bytes in a disk buffer's records: a compact binary form written by hand (the
//! event types have no serde `Deserialize`, and a self-describing format would store every
//! field name's type again), versioned with the segment format.
//!
//! Integers are LEB128 varints (signed ones zigzag-encoded), strings and byte strings a varint
//! length then the bytes, floats 8 bytes little-endian. An event is a tag (`0` log, `1`
//! metric, `2` span), its metadata (source id, ingest time), then its data. A log is its tree
//! of fields; a typed log is written as its tree (the reader gets a plain tree back, which
//! every consumer reads the same way), except a `json` line held lazily ([`JsonLog`]): tag `3`,
//! its metadata, the line's text, then the fields its source adds (a count, then each key
//! and value), read back into the same lazy form whose tree is built only if something reads
//! it, and is then exactly the tree the line would have given (format version 2). A VRL regex value comes back as the bytes of its
//! pattern. The acknowledgement hold is not written: the buffer acknowledged the event when
//! it was durable.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use ordered_float::NotNan;

use crate::codec::{JsonDefaults, JsonLog};
use crate::event::{
    Bucket, Event, EventMetadata, KeyString, LogEvent, Metric, MetricKind, MetricValue, ObjectMap,
    Quantile, Sample, Span, SpanEvent, SpanKind, SpanLink, SpanStatus, StatisticKind, Value,
};

/// Nesting deeper than this is refused when reading (a record that passed its checksum was
/// written by us, but a crafted file must not overflow the stack).
const MAX_DEPTH: usize = 128;

/// A record's payload did not decode (it passed its checksum, so it was written by a Weir
/// whose event format differs, or the file was crafted).
#[derive(Debug, thiserror::Error)]
#[error("undecodable event at byte {at} of a record: {what}")]
pub struct DecodeError {
    at: usize,
    what: &'static str,
}

/// What the encoder remembers within one record: the previous lazily held JSON line's
/// metadata and source fields, so that a line whose are the same (the same file, host, read
/// time) writes a byte for each instead of them again.
#[derive(Debug, Default)]
pub struct Context {
    scratch: Vec<(KeyString, Value)>,
    prev: Vec<(KeyString, Value)>,
    prev_md: Option<SourceAndTime>,
}

/// An event's metadata as written: its source and ingest time.
type SourceAndTime = (Option<Arc<str>>, Option<DateTime<Utc>>);

impl Context {
    /// A new record starts (or the last event was left out of it): nothing to refer to.
    pub fn new_record(&mut self) {
        self.prev.clear();
        self.prev_md = None;
    }
}

/// Appends `event` to `out`, as the first of a record.
#[cfg(test)]
pub fn encode_event(event: &Event, out: &mut Vec<u8>) {
    encode_event_with(event, out, &mut Context::default());
}

/// Appends `event` to `out`; `ctx` is the record's (see [`Context`]).
pub fn encode_event_with(event: &Event, out: &mut Vec<u8>, ctx: &mut Context) {
    match event {
        Event::Log(log) => {
            if let Some((frame, defaults)) = log.lazy_json() {
                lazy_json(log, frame, defaults, out, ctx);
                return;
            }
            out.push(0);
            metadata(
                log.metadata.source_id.as_deref(),
                log.metadata.ingest_time,
                out,
            );
            value(log.value(), out);
        }
        Event::Metric(m) => {
            out.push(1);
            metadata(m.metadata.source_id.as_deref(), m.metadata.ingest_time, out);
            metric(m, out);
        }
        Event::Trace(s) => {
            out.push(2);
            metadata(s.metadata.source_id.as_deref(), s.metadata.ingest_time, out);
            span(s, out);
        }
    }
}

/// A JSON line held lazily: its text and its source's fields, not a tree. Its metadata is
/// `2` when the previous such line's in the record was the same, else as any event's; each
/// source field is `1` (the previous line's field at this place, key and value), `2` then a
/// value (the same key), or `0` then key and value.
fn lazy_json(
    log: &LogEvent,
    frame: &Bytes,
    defaults: &dyn JsonDefaults,
    out: &mut Vec<u8>,
    ctx: &mut Context,
) {
    out.push(3);
    let md = &log.metadata;
    let same_md = ctx.prev_md.as_ref().is_some_and(|(sid, at)| {
        sid.as_deref() == md.source_id.as_deref() && *at == md.ingest_time
    });
    if same_md {
        out.push(2);
    } else {
        metadata(md.source_id.as_deref(), md.ingest_time, out);
        ctx.prev_md = Some((md.source_id.clone(), md.ingest_time));
    }
    bytes(frame, out);
    ctx.scratch.clear();
    defaults.push(&mut ctx.scratch);
    varint(ctx.scratch.len() as u64, out);
    for (i, (k, v)) in ctx.scratch.iter().enumerate() {
        match ctx.prev.get(i) {
            Some((pk, pv)) if pk == k && pv == v => out.push(1),
            Some((pk, _)) if pk == k => {
                out.push(2);
                value(v, out);
            }
            _ => {
                out.push(0);
                bytes(k.as_str().as_bytes(), out);
                value(v, out);
            }
        }
    }
    std::mem::swap(&mut ctx.prev, &mut ctx.scratch);
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64, out: &mut Vec<u8>) {
    varint(((v << 1) ^ (v >> 63)) as u64, out);
}

fn bytes(b: &[u8], out: &mut Vec<u8>) {
    varint(b.len() as u64, out);
    out.extend_from_slice(b);
}

fn float(f: f64, out: &mut Vec<u8>) {
    out.extend_from_slice(&f.to_le_bytes());
}

fn time(t: &DateTime<Utc>, out: &mut Vec<u8>) {
    zigzag(t.timestamp(), out);
    varint(u64::from(t.timestamp_subsec_nanos()), out);
}

fn opt_time(t: Option<DateTime<Utc>>, out: &mut Vec<u8>) {
    match t {
        None => out.push(0),
        Some(t) => {
            out.push(1);
            time(&t, out);
        }
    }
}

fn metadata(source_id: Option<&str>, ingest_time: Option<DateTime<Utc>>, out: &mut Vec<u8>) {
    match source_id {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            bytes(s.as_bytes(), out);
        }
    }
    opt_time(ingest_time, out);
}

fn value(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(0),
        Value::Boolean(false) => out.push(1),
        Value::Boolean(true) => out.push(2),
        Value::Integer(i) => {
            out.push(3);
            zigzag(*i, out);
        }
        Value::Float(f) => {
            out.push(4);
            float(f.into_inner(), out);
        }
        Value::Bytes(b) => {
            out.push(5);
            bytes(b, out);
        }
        Value::Timestamp(t) => {
            out.push(6);
            time(t, out);
        }
        Value::Array(a) => {
            out.push(7);
            varint(a.len() as u64, out);
            for v in a {
                value(v, out);
            }
        }
        Value::Object(m) => {
            out.push(8);
            map(m, out);
        }
        Value::Regex(r) => {
            out.push(5);
            bytes(r.as_bytes_slice(), out);
        }
        Value::String(s) => {
            out.push(9);
            bytes(s.as_bytes(), out);
        }
    }
}

fn map(m: &ObjectMap, out: &mut Vec<u8>) {
    varint(m.len() as u64, out);
    for (k, v) in m {
        bytes(k.as_str().as_bytes(), out);
        value(v, out);
    }
}

fn attrs(m: &BTreeMap<String, Value>, out: &mut Vec<u8>) {
    varint(m.len() as u64, out);
    for (k, v) in m {
        bytes(k.as_bytes(), out);
        value(v, out);
    }
}

fn metric(m: &Metric, out: &mut Vec<u8>) {
    bytes(m.name.as_bytes(), out);
    match &m.namespace {
        None => out.push(0),
        Some(ns) => {
            out.push(1);
            bytes(ns.as_bytes(), out);
        }
    }
    varint(m.tags.len() as u64, out);
    for (k, v) in &m.tags {
        bytes(k.as_bytes(), out);
        bytes(v.as_bytes(), out);
    }
    out.push(match m.kind {
        MetricKind::Incremental => 0,
        MetricKind::Absolute => 1,
    });
    match &m.value {
        MetricValue::Counter { value } => {
            out.push(0);
            float(*value, out);
        }
        MetricValue::Gauge { value } => {
            out.push(1);
            float(*value, out);
        }
        MetricValue::Set { values } => {
            out.push(2);
            varint(values.len() as u64, out);
            for v in values {
                bytes(v.as_bytes(), out);
            }
        }
        MetricValue::Distribution { samples, statistic } => {
            out.push(3);
            varint(samples.len() as u64, out);
            for s in samples {
                float(s.value, out);
                varint(u64::from(s.rate), out);
            }
            out.push(match statistic {
                StatisticKind::Histogram => 0,
                StatisticKind::Summary => 1,
            });
        }
        MetricValue::AggregatedHistogram {
            buckets,
            count,
            sum,
        } => {
            out.push(4);
            varint(buckets.len() as u64, out);
            for b in buckets {
                float(b.upper_limit, out);
                varint(b.count, out);
            }
            varint(*count, out);
            float(*sum, out);
        }
        MetricValue::AggregatedSummary {
            quantiles,
            count,
            sum,
        } => {
            out.push(5);
            varint(quantiles.len() as u64, out);
            for q in quantiles {
                float(q.quantile, out);
                float(q.value, out);
            }
            varint(*count, out);
            float(*sum, out);
        }
    }
    opt_time(m.timestamp, out);
}

fn span(s: &Span, out: &mut Vec<u8>) {
    out.extend_from_slice(&s.trace_id);
    out.extend_from_slice(&s.span_id);
    match &s.parent_span_id {
        None => out.push(0),
        Some(p) => {
            out.push(1);
            out.extend_from_slice(p);
        }
    }
    bytes(s.trace_state.as_bytes(), out);
    bytes(s.name.as_bytes(), out);
    out.push(match s.kind {
        SpanKind::Unspecified => 0,
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    });
    varint(s.start_time_unix_nano, out);
    varint(s.end_time_unix_nano, out);
    attrs(&s.attributes, out);
    varint(s.events.len() as u64, out);
    for e in &s.events {
        varint(e.time_unix_nano, out);
        bytes(e.name.as_bytes(), out);
        attrs(&e.attributes, out);
    }
    varint(s.links.len() as u64, out);
    for l in &s.links {
        out.extend_from_slice(&l.trace_id);
        out.extend_from_slice(&l.span_id);
        bytes(l.trace_state.as_bytes(), out);
        attrs(&l.attributes, out);
    }
    zigzag(i64::from(s.status.code), out);
    bytes(s.status.message.as_bytes(), out);
    attrs(&s.resource, out);
    bytes(s.scope_name.as_bytes(), out);
    bytes(s.scope_version.as_bytes(), out);
}

/// The fields a lazily held JSON line's source added, as read back from a record.
#[derive(Debug)]
pub struct StoredDefaults(Arc<Vec<(KeyString, Value)>>);

impl JsonDefaults for StoredDefaults {
    fn push(&self, fields: &mut Vec<(KeyString, Value)>) {
        fields.extend(self.0.iter().cloned());
    }

    fn adds_nothing(&self) -> bool {
        self.0.is_empty()
    }
}

/// Reads the events of one record's payload. Strings point into `payload` (no copy).
pub struct Reader {
    buf: Bytes,
    pos: usize,
    /// The previous lazily held JSON line's source fields and metadata (see [`Context`]).
    prev: Arc<Vec<(KeyString, Value)>>,
    prev_md: Option<EventMetadata>,
}

type R<T> = Result<T, DecodeError>;

impl Reader {
    /// A reader of `payload`.
    pub fn new(payload: Bytes) -> Self {
        Self {
            buf: payload,
            pos: 0,
            prev: Arc::default(),
            prev_md: None,
        }
    }

    /// Whether every byte was read.
    pub fn is_done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn err<T>(&self, what: &'static str) -> R<T> {
        Err(DecodeError { at: self.pos, what })
    }

    fn u8(&mut self) -> R<u8> {
        match self.buf.get(self.pos) {
            Some(b) => {
                self.pos += 1;
                Ok(*b)
            }
            None => self.err("unexpected end"),
        }
    }

    fn varint(&mut self) -> R<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        self.err("varint too long")
    }

    fn zigzag(&mut self) -> R<i64> {
        let v = self.varint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    fn len(&mut self) -> R<usize> {
        let n = self.varint()?;
        // Every element takes at least one byte: a count past the bytes left is corrupt (and
        // must not size an allocation).
        if n > (self.buf.len() - self.pos) as u64 {
            return self.err("length past the end");
        }
        Ok(n as usize)
    }

    fn take(&mut self, n: usize) -> R<Bytes> {
        if n > self.buf.len() - self.pos {
            return self.err("bytes past the end");
        }
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    fn bytes(&mut self) -> R<Bytes> {
        let n = self.len()?;
        self.take(n)
    }

    fn string(&mut self) -> R<String> {
        let b = self.bytes()?;
        match std::str::from_utf8(&b) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => self.err("invalid UTF-8"),
        }
    }

    fn array<const N: usize>(&mut self) -> R<[u8; N]> {
        let b = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&b);
        Ok(a)
    }

    fn float(&mut self) -> R<f64> {
        Ok(f64::from_le_bytes(self.array::<8>()?))
    }

    fn time(&mut self) -> R<DateTime<Utc>> {
        let secs = self.zigzag()?;
        let nanos = self.varint()?;
        match u32::try_from(nanos)
            .ok()
            .and_then(|n| DateTime::from_timestamp(secs, n))
        {
            Some(t) => Ok(t),
            None => self.err("timestamp out of range"),
        }
    }

    fn opt_time(&mut self) -> R<Option<DateTime<Utc>>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.time()?)),
            _ => self.err("bad option tag"),
        }
    }

    fn metadata(&mut self) -> R<EventMetadata> {
        let source_id: Option<Arc<str>> = match self.u8()? {
            0 => None,
            1 => Some(Arc::from(self.string()?)),
            _ => return self.err("bad option tag"),
        };
        let ingest_time = self.opt_time()?;
        Ok(EventMetadata {
            source_id,
            ingest_time,
            notifier: None,
        })
    }

    /// The next event.
    pub fn event(&mut self) -> R<Event> {
        match self.u8()? {
            0 => {
                let md = self.metadata()?;
                let v = self.value(0)?;
                Ok(Event::Log(LogEvent::from_value(v, md)))
            }
            1 => {
                let md = self.metadata()?;
                let mut m = self.metric()?;
                m.metadata = md;
                Ok(Event::Metric(Box::new(m)))
            }
            2 => {
                let md = self.metadata()?;
                let mut s = self.span()?;
                s.metadata = md;
                Ok(Event::Trace(Box::new(s)))
            }
            3 => self.lazy_json(),
            _ => self.err("unknown event tag"),
        }
    }

    /// A JSON line held lazily (see [`lazy_json`]).
    fn lazy_json(&mut self) -> R<Event> {
        let md = if self.buf.get(self.pos) == Some(&2) {
            self.pos += 1;
            match &self.prev_md {
                Some(md) => md.clone(),
                None => return self.err("no metadata to repeat"),
            }
        } else {
            let md = self.metadata()?;
            self.prev_md = Some(md.clone());
            md
        };
        let frame = self.bytes()?;
        let n = self.len()?;
        let mut same = n == self.prev.len();
        let mut fields = Vec::with_capacity(n);
        let before = self.prev.clone();
        for i in 0..n {
            let prev = before.get(i);
            let field = match (self.u8()?, prev) {
                (1, Some(p)) => p.clone(),
                (2, Some((k, _))) => {
                    same = false;
                    (k.clone(), self.value(1)?)
                }
                (0, _) => {
                    same = false;
                    let k = self.string()?;
                    (KeyString::from(k), self.value(1)?)
                }
                _ => return self.err("bad field tag"),
            };
            fields.push(field);
        }
        // The same fields as the line before: shared, not copied.
        let fields = if same {
            self.prev.clone()
        } else {
            let f = Arc::new(fields);
            self.prev = f.clone();
            f
        };
        // The line passed `check_json` before it was written, and the record its checksum;
        // should it not parse all the same, `JsonLog` keeps it whole as `message`.
        let log = JsonLog::checked(frame, StoredDefaults(fields), None);
        Ok(Event::Log(LogEvent::from_typed(log, md)))
    }

    fn value(&mut self, depth: usize) -> R<Value> {
        if depth > MAX_DEPTH {
            return self.err("nested too deep");
        }
        Ok(match self.u8()? {
            0 => Value::Null,
            1 => Value::Boolean(false),
            2 => Value::Boolean(true),
            3 => Value::Integer(self.zigzag()?),
            4 => match NotNan::new(self.float()?) {
                Ok(f) => Value::Float(f),
                Err(_) => return self.err("NaN float"),
            },
            5 => Value::Bytes(self.bytes()?),
            6 => Value::Timestamp(self.time()?),
            7 => {
                let n = self.len()?;
                let mut a = Vec::with_capacity(n);
                for _ in 0..n {
                    a.push(self.value(depth + 1)?);
                }
                Value::Array(a)
            }
            8 => Value::Object(self.map(depth + 1)?),
            9 => Value::String(self.string()?.into()),
            _ => return self.err("unknown value tag"),
        })
    }

    fn map(&mut self, depth: usize) -> R<ObjectMap> {
        let n = self.len()?;
        let mut m = ObjectMap::new();
        for _ in 0..n {
            let k = self.string()?;
            let v = self.value(depth)?;
            m.insert(k.into(), v);
        }
        Ok(m)
    }

    fn attrs(&mut self) -> R<BTreeMap<String, Value>> {
        let n = self.len()?;
        let mut m = BTreeMap::new();
        for _ in 0..n {
            let k = self.string()?;
            let v = self.value(1)?;
            m.insert(k, v);
        }
        Ok(m)
    }

    fn metric(&mut self) -> R<Metric> {
        let name = self.string()?;
        let namespace = match self.u8()? {
            0 => None,
            1 => Some(self.string()?),
            _ => return self.err("bad option tag"),
        };
        let n = self.len()?;
        let mut tags = BTreeMap::new();
        for _ in 0..n {
            let k = self.string()?;
            let v = self.string()?;
            tags.insert(k, v);
        }
        let kind = match self.u8()? {
            0 => MetricKind::Incremental,
            1 => MetricKind::Absolute,
            _ => return self.err("unknown metric kind"),
        };
        let value = match self.u8()? {
            0 => MetricValue::Counter {
                value: self.float()?,
            },
            1 => MetricValue::Gauge {
                value: self.float()?,
            },
            2 => {
                let n = self.len()?;
                let mut values = BTreeSet::new();
                for _ in 0..n {
                    values.insert(self.string()?);
                }
                MetricValue::Set { values }
            }
            3 => {
                let n = self.len()?;
                let mut samples = Vec::with_capacity(n);
                for _ in 0..n {
                    let value = self.float()?;
                    let rate = u32::try_from(self.varint()?).unwrap_or(u32::MAX);
                    samples.push(Sample { value, rate });
                }
                let statistic = match self.u8()? {
                    0 => StatisticKind::Histogram,
                    1 => StatisticKind::Summary,
                    _ => return self.err("unknown statistic"),
                };
                MetricValue::Distribution { samples, statistic }
            }
            4 => {
                let n = self.len()?;
                let mut buckets = Vec::with_capacity(n);
                for _ in 0..n {
                    let upper_limit = self.float()?;
                    let count = self.varint()?;
                    buckets.push(Bucket { upper_limit, count });
                }
                MetricValue::AggregatedHistogram {
                    buckets,
                    count: self.varint()?,
                    sum: self.float()?,
                }
            }
            5 => {
                let n = self.len()?;
                let mut quantiles = Vec::with_capacity(n);
                for _ in 0..n {
                    let quantile = self.float()?;
                    let value = self.float()?;
                    quantiles.push(Quantile { quantile, value });
                }
                MetricValue::AggregatedSummary {
                    quantiles,
                    count: self.varint()?,
                    sum: self.float()?,
                }
            }
            _ => return self.err("unknown metric value"),
        };
        let timestamp = self.opt_time()?;
        let mut m = Metric::new(name, kind, value);
        m.namespace = namespace;
        m.tags = tags;
        m.timestamp = timestamp;
        Ok(m)
    }

    fn span(&mut self) -> R<Span> {
        let trace_id = self.array::<16>()?;
        let span_id = self.array::<8>()?;
        let parent_span_id = match self.u8()? {
            0 => None,
            1 => Some(self.array::<8>()?),
            _ => return self.err("bad option tag"),
        };
        let trace_state = self.string()?;
        let name = self.string()?;
        let kind = match self.u8()? {
            0 => SpanKind::Unspecified,
            1 => SpanKind::Internal,
            2 => SpanKind::Server,
            3 => SpanKind::Client,
            4 => SpanKind::Producer,
            5 => SpanKind::Consumer,
            _ => return self.err("unknown span kind"),
        };
        let mut s = Span::new(trace_id, span_id, name);
        s.parent_span_id = parent_span_id;
        s.trace_state = trace_state;
        s.kind = kind;
        s.start_time_unix_nano = self.varint()?;
        s.end_time_unix_nano = self.varint()?;
        s.attributes = self.attrs()?;
        let n = self.len()?;
        for _ in 0..n {
            let time_unix_nano = self.varint()?;
            let name = self.string()?;
            let attributes = self.attrs()?;
            s.events.push(SpanEvent {
                time_unix_nano,
                name,
                attributes,
            });
        }
        let n = self.len()?;
        for _ in 0..n {
            let trace_id = self.array::<16>()?;
            let span_id = self.array::<8>()?;
            let trace_state = self.string()?;
            let attributes = self.attrs()?;
            s.links.push(SpanLink {
                trace_id,
                span_id,
                trace_state,
                attributes,
            });
        }
        let code = self.zigzag()?;
        s.status = SpanStatus {
            code: i32::try_from(code).unwrap_or_default(),
            message: self.string()?,
        };
        s.resource = self.attrs()?;
        s.scope_name = self.string()?;
        s.scope_version = self.string()?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(e: Event) -> Event {
        let mut out = Vec::new();
        encode_event(&e, &mut out);
        let mut r = Reader::new(Bytes::from(out));
        let back = r.event().unwrap();
        assert!(r.is_done());
        back
    }

    #[test]
    fn a_log_comes_back_with_every_kind_of_value() {
        let mut map = ObjectMap::new();
        map.insert("s".into(), Value::Bytes(Bytes::from_static(b"hello")));
        map.insert("i".into(), Value::Integer(-42));
        map.insert("f".into(), Value::Float(NotNan::new(1.5).unwrap()));
        map.insert("b".into(), Value::Boolean(true));
        map.insert("n".into(), Value::Null);
        map.insert(
            "t".into(),
            Value::Timestamp(DateTime::from_timestamp(1_700_000_000, 123).unwrap()),
        );
        map.insert(
            "a".into(),
            Value::Array(vec![Value::Integer(1), Value::Object(ObjectMap::new())]),
        );
        let md = EventMetadata::at(Some(Arc::from("src")), Utc::now());
        let e = Event::Log(LogEvent::from_value(Value::Object(map.clone()), md.clone()));
        let Event::Log(back) = round_trip(e) else {
            panic!("not a log")
        };
        assert_eq!(back.value(), &Value::Object(map));
        assert_eq!(back.metadata.source_id.as_deref(), Some("src"));
        assert_eq!(back.metadata.ingest_time, md.ingest_time);
    }

    #[derive(Debug)]
    struct FileLike;

    impl JsonDefaults for FileLike {
        fn push(&self, fields: &mut Vec<(KeyString, Value)>) {
            At(1234).push(fields)
        }
    }

    /// [`FileLike`] at another offset.
    #[derive(Debug)]
    struct At(i64);

    impl JsonDefaults for At {
        fn push(&self, fields: &mut Vec<(KeyString, Value)>) {
            fields.push((
                "file".into(),
                Value::Bytes(Bytes::from_static(b"/var/log/a")),
            ));
            fields.push(("host".into(), Value::Bytes(Bytes::from_static(b"box"))));
            fields.push(("offset".into(), Value::Integer(self.0)));
            fields.push((
                "timestamp".into(),
                Value::Timestamp(DateTime::from_timestamp(1_700_000_000, 5).unwrap()),
            ));
        }
    }

    fn lazy<D: JsonDefaults>(line: &'static [u8], defaults: D) -> Event {
        let md = EventMetadata::at(Some(Arc::from("src")), Utc::now());
        let log = JsonLog::checked(Bytes::from_static(line), defaults, None);
        Event::Log(LogEvent::from_typed(log, md))
    }

    #[test]
    fn a_lazy_json_line_comes_back_lazy_with_the_same_tree() {
        // The line's own `host` (and a key twice in the line) win over the source's fields.
        let line = br#"{"host":"mine","msg":"a \"quoted\" word","n":[1,2.5,null],"msg":"last"}"#;
        let e = lazy(line, FileLike);
        let mut out = Vec::new();
        encode_event(&e, &mut out);
        // The text is written, not a tree (the line plus 4 small fields and the metadata).
        assert_eq!(out[0], 3);
        assert!(out.len() < line.len() + 80, "{} bytes", out.len());
        let mut r = Reader::new(Bytes::from(out));
        let Event::Log(back) = r.event().unwrap() else {
            panic!("not a log")
        };
        assert!(r.is_done());
        // Still lazy: nothing built the tree yet.
        let (frame, _) = back.lazy_json().expect("lazy after the round trip");
        assert_eq!(&frame[..], &line[..]);
        assert_eq!(back.raw_json(), None, "the source adds fields");
        let Event::Log(orig) = &e else { unreachable!() };
        assert_eq!(back.value(), orig.value());
        let m = back.as_map().unwrap();
        assert_eq!(m["host"], Value::Bytes(Bytes::from_static(b"mine")));
        assert_eq!(m["msg"], Value::Bytes(Bytes::from_static(b"last")));
        assert_eq!(m["offset"], Value::Integer(1234));
        assert_eq!(back.metadata.source_id.as_deref(), Some("src"));
        assert_eq!(back.metadata.ingest_time, orig.metadata.ingest_time);
    }

    #[test]
    fn lines_of_one_record_refer_to_the_fields_before_and_read_back_the_same() {
        let other_md = EventMetadata::at(Some(Arc::from("other")), Utc::now());
        let tree = {
            let mut m = ObjectMap::new();
            m.insert("x".into(), Value::Integer(1));
            Event::Log(LogEvent::from_value(Value::Object(m), other_md.clone()))
        };
        let events = vec![
            lazy(br#"{"a":1}"#, At(0)),
            lazy(br#"{"a":2}"#, At(8)),
            lazy(br#"{"a":3}"#, At(8)),
            tree,
            lazy(br#"{"a":4,"offset":"own"}"#, At(16)),
            lazy(br#"{"a":5}"#, ()),
            lazy(br#"{"a":6}"#, FileLike),
            Event::Log(LogEvent::from_typed(
                JsonLog::checked(Bytes::from_static(br#"{"a":7}"#), At(9), None),
                other_md,
            )),
        ];
        let mut out = Vec::new();
        let mut ctx = Context::default();
        let mut alone = 0;
        for e in &events {
            encode_event_with(e, &mut out, &mut ctx);
            let mut one = Vec::new();
            encode_event(e, &mut one);
            alone += one.len();
        }
        assert!(out.len() < alone, "{} bytes, {alone} one by one", out.len());
        let mut r = Reader::new(Bytes::from(out));
        for e in &events {
            let Event::Log(orig) = e else { unreachable!() };
            let Event::Log(back) = r.event().unwrap() else {
                panic!("not a log")
            };
            assert_eq!(back.value(), orig.value());
            assert_eq!(back.lazy_json().is_some(), orig.lazy_json().is_some());
            assert_eq!(back.metadata.source_id, orig.metadata.source_id);
            assert_eq!(back.metadata.ingest_time, orig.metadata.ingest_time);
        }
        assert!(r.is_done());
    }

    #[test]
    fn a_line_referring_to_nothing_is_an_error() {
        let mut out = vec![3, 2];
        bytes(b"{}", &mut out);
        assert!(Reader::new(Bytes::from(out)).event().is_err());
        let mut out = vec![3];
        metadata(None, None, &mut out);
        bytes(b"{}", &mut out);
        varint(1, &mut out);
        out.push(1);
        assert!(Reader::new(Bytes::from(out)).event().is_err());
    }

    #[test]
    fn a_lazy_json_line_without_added_fields_keeps_its_raw_json() {
        let line = br#"{"a":1,"b":{"c":"d"}}"#;
        let e = lazy(line, ());
        let Event::Log(back) = round_trip(e) else {
            panic!("not a log")
        };
        assert_eq!(back.raw_json().map(|b| &b[..]), Some(&line[..]));
        let mut m = ObjectMap::new();
        m.insert("a".into(), Value::Integer(1));
        let mut inner = ObjectMap::new();
        inner.insert("c".into(), Value::Bytes(Bytes::from_static(b"d")));
        m.insert("b".into(), Value::Object(inner));
        assert_eq!(back.value(), &Value::Object(m));
    }

    #[test]
    fn a_changed_or_built_lazy_line_is_written_as_a_tree() {
        let Event::Log(mut log) = lazy(br#"{"a":1}"#, FileLike) else {
            unreachable!()
        };
        log.insert_field("b", 2);
        let mut out = Vec::new();
        encode_event(&Event::Log(log.clone()), &mut out);
        assert_eq!(out[0], 0, "a changed line is a tree");
        let Event::Log(back) = round_trip(Event::Log(log.clone())) else {
            panic!("not a log")
        };
        assert!(back.lazy_json().is_none());
        assert_eq!(back.value(), log.value());
    }

    #[test]
    fn a_damaged_lazy_line_is_an_error_or_kept_whole_never_a_panic() {
        let e = lazy(br#"{"a":"b"}"#, FileLike);
        let mut out = Vec::new();
        encode_event(&e, &mut out);
        for cut in 0..out.len() {
            let _ = Reader::new(Bytes::copy_from_slice(&out[..cut])).event();
        }
        // A text that is not JSON any more (a crafted record) reads as its message.
        let mut bad = Vec::new();
        bad.push(3);
        metadata(None, None, &mut bad);
        bytes(b"{not json", &mut bad);
        varint(0, &mut bad);
        let Ok(Event::Log(back)) = Reader::new(Bytes::from(bad)).event() else {
            panic!("should decode")
        };
        assert_eq!(
            back.get_field("message"),
            Some(&Value::Bytes(Bytes::from_static(b"{not json")))
        );
    }

    #[test]
    fn metrics_and_spans_come_back() {
        let m = Metric::new(
            "requests",
            MetricKind::Incremental,
            MetricValue::AggregatedHistogram {
                buckets: vec![Bucket {
                    upper_limit: 0.5,
                    count: 3,
                }],
                count: 3,
                sum: 1.0,
            },
        )
        .with_namespace("app")
        .with_tag("host", "a");
        let Event::Metric(back) = round_trip(Event::Metric(Box::new(m.clone()))) else {
            panic!("not a metric")
        };
        assert_eq!(back.name, m.name);
        assert_eq!(back.namespace, m.namespace);
        assert_eq!(back.tags, m.tags);
        assert_eq!(back.value, m.value);

        let mut s = Span::new([1; 16], [2; 8], "op");
        s.parent_span_id = Some([3; 8]);
        s.attributes.insert("k".into(), Value::Integer(7));
        s.events.push(SpanEvent {
            time_unix_nano: 5,
            name: "e".into(),
            attributes: BTreeMap::new(),
        });
        s.status.code = 2;
        let Event::Trace(back) = round_trip(Event::Trace(Box::new(s.clone()))) else {
            panic!("not a span")
        };
        assert_eq!(back.name, "op");
        assert_eq!(back.parent_span_id, Some([3; 8]));
        assert_eq!(back.attributes, s.attributes);
        assert_eq!(back.events, s.events);
        assert_eq!(back.status, s.status);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for seed in 0u8..=255 {
            let junk: Vec<u8> = (0..64u8)
                .map(|i| i.wrapping_mul(seed).wrapping_add(seed))
                .collect();
            let mut r = Reader::new(Bytes::from(junk));
            let _ = r.event();
        }
        // A huge length must not allocate.
        let mut r = Reader::new(Bytes::from(vec![0, 0, 0, 7, 0xff, 0xff, 0xff, 0xff, 0x0f]));
        assert!(r.event().is_err());
    }
}
