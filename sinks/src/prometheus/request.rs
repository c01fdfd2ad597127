//! The body of a remote write request, written straight in the protobuf wire format of
//! [`super::proto::WriteRequest`], without building the message structs first.
//!
//! What makes this fast is that the labels of a series are encoded once, when the series
//! is first seen (or changes shape), into a [`SeriesLabels`]; a request then copies those
//! bytes and appends the samples. The samples a shard collects until it sends are kept in a
//! [`Batch`]: flat vectors that are cleared, not freed, after each request, so that
//! recording and encoding a sample allocate nothing (once the vectors have grown to the
//! size of a request). The exception is a summary of raw samples (`Stored::Samples`): a
//! batch keeps a copy of its window, made once per request, and computes the quantiles when
//! it writes the request.
//!
//! The bytes are exactly those `prost` writes for the same `WriteRequest` (fields in tag
//! order, default values left out), which the tests check.
//!
//! ```text
//! WriteRequest  = { 0x0a len TimeSeries }*
//! TimeSeries    = { 0x0a len Label }* { 0x12 len Sample }*
//! Label         = 0x0a len name  0x12 len value
//! Sample        = 0x09 f64(le)   0x10 varint(timestamp)
//! ```

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::common::{expand, fmt_f64, Extra, SeriesKey, Stored, Suffix};

/// The NaN Prometheus uses for ordinary NaN values (its staleness marker is another NaN,
/// which must never be sent by accident).
pub const NORMAL_NAN: u64 = 0x7ff8_0000_0000_0001;

fn varint_len(v: u64) -> usize {
    // 1 byte per 7 bits, at least one.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// The length of a string field (tag, length, bytes), left out when empty as proto3 does.
fn str_field_len(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        1 + varint_len(len as u64) + len
    }
}

/// Appends one `Label` as field 1 of a `TimeSeries`.
fn put_label(out: &mut Vec<u8>, name: &[u8], value: &[&[u8]]) {
    let vlen: usize = value.iter().map(|v| v.len()).sum();
    let inner = str_field_len(name.len()) + str_field_len(vlen);
    out.push(0x0a);
    put_varint(out, inner as u64);
    if !name.is_empty() {
        out.push(0x0a);
        put_varint(out, name.len() as u64);
        out.extend_from_slice(name);
    }
    if vlen > 0 {
        out.push(0x12);
        put_varint(out, vlen as u64);
        for v in value {
            out.extend_from_slice(v);
        }
    }
}

fn label_len(name_len: usize, value_len: usize) -> usize {
    let inner = str_field_len(name_len) + str_field_len(value_len);
    1 + varint_len(inner as u64) + inner
}

/// The value as sent: Prometheus' ordinary NaN for any NaN.
fn wire_value(v: f64) -> f64 {
    if v.is_nan() {
        f64::from_bits(NORMAL_NAN)
    } else {
        v
    }
}

/// The inner length of a `Sample` (fields at their default value are left out).
fn sample_len(value: f64, ts: i64) -> usize {
    let v = if value != 0.0 { 9 } else { 0 };
    let t = if ts != 0 {
        1 + varint_len(ts as u64)
    } else {
        0
    };
    v + t
}

fn put_sample(out: &mut Vec<u8>, value: f64, ts: i64) {
    out.push(0x12);
    put_varint(out, sample_len(value, ts) as u64);
    if value != 0.0 {
        out.push(0x09);
        out.extend_from_slice(&value.to_le_bytes());
    }
    if ts != 0 {
        out.push(0x10);
        put_varint(out, ts as u64);
    }
}

/// One sample of an expanded series: the name suffix and the extra label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SubKey {
    suffix: Suffix,
    /// `le` (true) or `quantile` (false), and the bits of its value.
    extra: Option<(bool, u64)>,
}

impl SubKey {
    fn new(suffix: Suffix, extra: Option<Extra>) -> Self {
        Self {
            suffix,
            extra: extra.map(|e| (matches!(e, Extra::Le(_)), e.value().to_bits())),
        }
    }
}

/// One expanded series of a [`SeriesLabels`]: its suffix and the bytes of its extra label.
#[derive(Debug)]
struct Sub {
    key: SubKey,
    extra: Range<usize>,
}

/// The labels of one series, encoded once, for every sample its value expands to (a counter
/// one, a histogram one per bucket plus `_sum` and `_count`, ...).
///
/// The series' own labels (sorted, the type's reserved label left out) are held as encoded
/// `Label` fields in three runs: those that sort before `__name__`, those between `__name__`
/// and the extra label (`le`, `quantile`), and those after it. Encoding one expanded series
/// is then `before, __name__, middle, extra, after`.
#[derive(Debug)]
pub struct SeriesLabels {
    name: Box<str>,
    /// Encoded labels, then the encoded extra labels of the subs.
    bytes: Vec<u8>,
    /// End of the labels before `__name__`, and of those before the extra label.
    name_at: usize,
    extra_at: usize,
    /// End of the series' own labels in `bytes` (the extra labels follow).
    tags_end: usize,
    subs: Vec<Sub>,
    /// Summary samples: expanded only when the request is written (computing the quantiles
    /// sorts every kept sample, too costly for each update).
    deferred: bool,
    /// The label left out of the series' own (`le` of a histogram, `quantile` of a summary).
    reserved: Option<&'static str>,
    /// The shard of the sink this series goes through (from its key, so that it never
    /// changes and the series' samples stay in order).
    pub shard: usize,
    /// The [`Batch`] group that holds this series' samples: the batch's generation in the
    /// high 32 bits, the group's index in the low ones.
    slot: AtomicU64,
}

impl SeriesLabels {
    /// The labels of `key` for every sample `value` expands to.
    pub fn new(key: &SeriesKey, value: &Stored, quantiles: &[f64], shard: usize) -> Self {
        let reserved = value.reserved_label();
        let extra_name = match value {
            Stored::Histogram { .. } => "le",
            _ => "quantile",
        };
        let mut bytes = Vec::new();
        let mut name_at = None;
        let mut extra_at = None;
        for (k, v) in &key.tags {
            if reserved == Some(k.as_str()) {
                continue;
            }
            if name_at.is_none() && k.as_str() > "__name__" {
                name_at = Some(bytes.len());
            }
            if extra_at.is_none() && k.as_str() > extra_name {
                extra_at = Some(bytes.len());
            }
            put_label(&mut bytes, k.as_bytes(), &[v.as_bytes()]);
        }
        let tags_end = bytes.len();
        let name_at = name_at.unwrap_or(tags_end);
        // `le` and `quantile` sort after `__name__`.
        let extra_at = extra_at.unwrap_or(tags_end).max(name_at);
        let mut subs = Vec::new();
        let deferred = matches!(value, Stored::Samples { .. });
        let mut push = |suffix, extra: Option<Extra>, bytes: &mut Vec<u8>| {
            let start = bytes.len();
            if let Some(e) = extra {
                put_label(bytes, e.name().as_bytes(), &[fmt_f64(e.value()).as_bytes()]);
            }
            subs.push(Sub {
                key: SubKey::new(suffix, extra),
                extra: start..bytes.len(),
            });
        };
        if deferred {
            // The shape of a summary of samples depends only on the configured quantiles.
            for q in quantiles {
                push(Suffix::None, Some(Extra::Quantile(*q)), &mut bytes);
            }
            push(Suffix::Sum, None, &mut bytes);
            push(Suffix::Count, None, &mut bytes);
        } else {
            expand(value, quantiles, |suffix, extra, _| {
                push(suffix, extra, &mut bytes)
            });
        }
        Self {
            name: key.name.as_str().into(),
            bytes,
            name_at,
            extra_at,
            tags_end,
            subs,
            deferred,
            reserved,
            shard,
            slot: AtomicU64::new(0),
        }
    }

    /// The length of the labels of expanded series `i`, as fields of a `TimeSeries`.
    fn labels_len(&self, i: usize) -> usize {
        let sub = &self.subs[i];
        let name_len = self.name.len() + sub.key.suffix.as_str().len();
        self.tags_end + sub.extra.len() + label_len("__name__".len(), name_len)
    }

    /// Appends the labels of expanded series `i`, in name order.
    fn put_labels(&self, i: usize, out: &mut Vec<u8>) {
        let sub = &self.subs[i];
        out.extend_from_slice(&self.bytes[..self.name_at]);
        put_label(
            out,
            b"__name__",
            &[self.name.as_bytes(), sub.key.suffix.as_str().as_bytes()],
        );
        out.extend_from_slice(&self.bytes[self.name_at..self.extra_at]);
        out.extend_from_slice(&self.bytes[sub.extra.clone()]);
        out.extend_from_slice(&self.bytes[self.extra_at..self.tags_end]);
    }

    /// Whether a value of this type can be recorded with these labels at all (which label
    /// is left out depends on the type); the bucket bounds or quantiles are checked when
    /// recording.
    pub fn fits_type(&self, value: &Stored) -> bool {
        value.reserved_label() == self.reserved
            && matches!(value, Stored::Samples { .. }) == self.deferred
    }
}

/// The labels of a series for its current value, from `cache` (the series' own), built
/// again when the series is new or its value changed type. `shards` is how many shards
/// the sink spreads series over.
pub fn labels_for<'a>(
    cache: &'a mut Option<Arc<SeriesLabels>>,
    key: &SeriesKey,
    value: &Stored,
    quantiles: &[f64],
    shards: usize,
) -> &'a mut Arc<SeriesLabels> {
    if !cache.as_ref().is_some_and(|l| l.fits_type(value)) {
        *cache = None;
    }
    cache.get_or_insert_with(|| {
        let shard = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            key.hash(&mut h);
            (h.finish() % shards.max(1) as u64) as usize
        };
        Arc::new(SeriesLabels::new(key, value, quantiles, shard))
    })
}

/// A value of a series recorded in a [`Batch`]: its time and where its expanded values are.
#[derive(Debug, Clone, Copy)]
struct Snap {
    ts: i64,
    /// Start of its values in `Batch::values` (as many as the series' width).
    at: usize,
    /// The next snap of the same group (`u32::MAX`: none).
    next: u32,
}

/// The samples of one series in a batch, oldest first.
#[derive(Debug)]
struct Group {
    labels: Arc<SeriesLabels>,
    first: u32,
    last: u32,
    /// A summary of samples: its value, expanded when the request is written.
    deferred: Option<Stored>,
}

/// Why a value could not be recorded with the labels given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShapeChanged;

/// The samples a shard collects until it sends them: flat vectors, kept between requests.
#[derive(Debug, Default)]
pub struct Batch {
    groups: Vec<Group>,
    snaps: Vec<Snap>,
    values: Vec<f64>,
    /// Told apart from older batches in [`SeriesLabels::slot`]; never 0.
    generation: u32,
    quantile_scratch: Vec<f64>,
    /// The size of the last request and its number of series: what the next one reserves,
    /// so that its buffers do not grow by copying.
    last_size: (usize, usize),
}

impl Batch {
    pub fn new() -> Self {
        Self {
            generation: 1,
            ..Self::default()
        }
    }

    /// How many series values are held.
    pub fn len(&self) -> usize {
        self.snaps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.snaps.is_empty()
    }

    /// Records the series' value at `ts` (ms), keeping its samples in strictly increasing
    /// time order across requests: a time not after `last_ts` (the last one taken of this
    /// series) moves to it; a second value at the time of the last one in this batch
    /// replaces it, and one at the time of a value already sent moves 1 ms later (a receiver
    /// would refuse a second sample at the same time). A summary of samples keeps only its
    /// latest value per batch. Fails, recording nothing, when the value does not expand to
    /// the samples `labels` were built for (a histogram whose bounds changed): build new
    /// labels and record again.
    pub fn record(
        &mut self,
        labels: &Arc<SeriesLabels>,
        last_ts: &mut i64,
        ts: i64,
        value: &Stored,
        quantiles: &[f64],
    ) -> Result<(), ShapeChanged> {
        if !labels.fits_type(value) {
            return Err(ShapeChanged);
        }
        let mut ts = ts.max(*last_ts);
        let mut group = self.group_of(labels);
        // The batch's last value of this series, when the new one replaces it.
        let last = group.and_then(|g| {
            let s = self.groups[g].last as usize;
            self.snaps
                .get(s)
                .is_some_and(|snap| snap.ts == ts || labels.deferred)
                .then_some(s)
        });
        if labels.deferred {
            let g = match group {
                Some(g) => g,
                None => self.new_group(labels),
            };
            group = Some(g);
            let slot = &mut self.groups[g].deferred;
            match (slot.as_mut(), value) {
                (
                    Some(Stored::Samples {
                        values: to,
                        count: c,
                        sum: s,
                    }),
                    Stored::Samples { values, count, sum },
                ) => {
                    // Reuses the copy's memory.
                    to.clone_from(values);
                    *c = *count;
                    *s = *sum;
                }
                _ => *slot = Some(value.clone()),
            }
        } else {
            let start = self.values.len();
            let mut i = 0;
            let mut fits = true;
            expand(value, quantiles, |suffix, extra, v| {
                if fits
                    && labels
                        .subs
                        .get(i)
                        .is_some_and(|s| s.key == SubKey::new(suffix, extra))
                {
                    self.values.push(wire_value(v));
                } else {
                    fits = false;
                }
                i += 1;
            });
            if !fits || i != labels.subs.len() {
                self.values.truncate(start);
                return Err(ShapeChanged);
            }
            if let Some(s) = last {
                // Same time as the batch's last value of this series: the new one wins.
                let at = self.snaps[s].at;
                self.values.copy_within(start.., at);
                self.values.truncate(start);
            }
        }
        match last {
            Some(s) => self.snaps[s].ts = ts,
            None => {
                if ts == *last_ts {
                    ts = ts.saturating_add(1);
                }
                let g = match group {
                    Some(g) => g,
                    None => self.new_group(labels),
                };
                let at = if labels.deferred {
                    0
                } else {
                    self.values.len() - labels.subs.len()
                };
                let s = self.snaps.len() as u32;
                self.snaps.push(Snap {
                    ts,
                    at,
                    next: u32::MAX,
                });
                let gr = &mut self.groups[g];
                if gr.first == u32::MAX {
                    gr.first = s;
                } else {
                    self.snaps[gr.last as usize].next = s;
                }
                gr.last = s;
            }
        }
        *last_ts = ts;
        Ok(())
    }

    /// [`Batch::record`], with labels built again from `key` when the value no longer fits
    /// them (stored in `labels`, the series' cache).
    pub fn record_series(
        &mut self,
        labels: &mut Arc<SeriesLabels>,
        key: &SeriesKey,
        last_ts: &mut i64,
        ts: i64,
        value: &Stored,
        quantiles: &[f64],
    ) {
        if self.record(labels, last_ts, ts, value, quantiles).is_err() {
            *labels = Arc::new(SeriesLabels::new(key, value, quantiles, labels.shard));
            // Labels fit the value they were built from.
            let _ = self.record(labels, last_ts, ts, value, quantiles);
        }
    }

    fn group_of(&self, labels: &Arc<SeriesLabels>) -> Option<usize> {
        let slot = labels.slot.load(Ordering::Relaxed);
        let g = (slot & 0xffff_ffff) as usize;
        ((slot >> 32) as u32 == self.generation
            && self
                .groups
                .get(g)
                .is_some_and(|gr| Arc::ptr_eq(&gr.labels, labels)))
        .then_some(g)
    }

    fn new_group(&mut self, labels: &Arc<SeriesLabels>) -> usize {
        let g = self.groups.len();
        labels.slot.store(
            (u64::from(self.generation) << 32) | g as u64,
            Ordering::Relaxed,
        );
        self.groups.push(Group {
            labels: Arc::clone(labels),
            first: u32::MAX,
            last: u32::MAX,
            deferred: None,
        });
        g
    }

    /// Writes the batch as a `WriteRequest` (uncompressed) at the end of `out`, and the
    /// start of each `TimeSeries` in `out` to `starts`; empties the batch. One `TimeSeries`
    /// per expanded series, series in the order they were first recorded.
    pub fn encode(&mut self, quantiles: &[f64], out: &mut Vec<u8>, starts: &mut Vec<usize>) {
        let (first, first_series) = (out.len(), starts.len());
        out.reserve(self.last_size.0);
        starts.reserve(self.last_size.1);
        let mut deferred_values = std::mem::take(&mut self.quantile_scratch);
        for g in &self.groups {
            if let Some(value) = &g.deferred {
                deferred_values.clear();
                expand(value, quantiles, |_, _, v| {
                    deferred_values.push(wire_value(v))
                });
            }
            let values: &[f64] = if g.deferred.is_some() {
                &deferred_values
            } else {
                &self.values
            };
            for i in 0..g.labels.subs.len() {
                // The samples of expanded series `i`: the i-th value of each snap.
                let mut samples = 0;
                let mut s = g.first;
                while s != u32::MAX {
                    let snap = &self.snaps[s as usize];
                    let v = values.get(snap.at + i).copied().unwrap_or(f64::NAN);
                    let n = sample_len(v, snap.ts);
                    samples += 1 + varint_len(n as u64) + n;
                    s = snap.next;
                }
                let len = g.labels.labels_len(i) + samples;
                starts.push(out.len());
                out.push(0x0a);
                put_varint(out, len as u64);
                g.labels.put_labels(i, out);
                let mut s = g.first;
                while s != u32::MAX {
                    let snap = &self.snaps[s as usize];
                    let v = values.get(snap.at + i).copied().unwrap_or(f64::NAN);
                    put_sample(out, v, snap.ts);
                    s = snap.next;
                }
            }
        }
        self.quantile_scratch = deferred_values;
        self.last_size = (out.len() - first, starts.len() - first_series);
        self.clear();
    }

    /// Forgets what is held (keeping the memory).
    pub fn clear(&mut self) {
        self.groups.clear();
        self.snaps.clear();
        self.values.clear();
        self.generation = self.generation.wrapping_add(1).max(1);
    }
}

/// Snappy block compression of request bodies (the format the protocol requires), keeping
/// its hash table from one request to the next.
pub struct Compressor(snap::raw::Encoder);

impl Default for Compressor {
    fn default() -> Self {
        Self(snap::raw::Encoder::new())
    }
}

impl Compressor {
    pub fn compress(&mut self, raw: &[u8]) -> Result<Vec<u8>, snap::Error> {
        self.0.compress_vec(raw)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};

    use prost::Message;
    use weir_pipeline::event::{Bucket, Quantile};

    use super::super::proto::{Label, Sample, TimeSeries, WriteRequest};
    use super::*;

    fn key(name: &str, tags: &[(&str, &str)]) -> SeriesKey {
        SeriesKey {
            name: name.into(),
            tags: tags
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| Label {
                    name: n.to_string(),
                    value: v.to_string(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|(t, v)| Sample {
                    value: *v,
                    timestamp: *t,
                })
                .collect(),
        }
    }

    /// Records `(key, ts, value)` in order in one batch and encodes it.
    fn encode(items: Vec<(SeriesKey, i64, Stored)>, quantiles: &[f64]) -> (Vec<u8>, Vec<usize>) {
        let mut cache: BTreeMap<SeriesKey, (Option<Arc<SeriesLabels>>, i64)> = BTreeMap::new();
        let mut batch = Batch::new();
        for (k, ts, v) in items {
            let (labels, last) = cache.entry(k.clone()).or_insert((None, i64::MIN));
            let labels = labels_for(labels, &k, &v, quantiles, 1);
            batch.record_series(labels, &k, last, ts, &v, quantiles);
        }
        let (mut raw, mut starts) = (Vec::new(), Vec::new());
        batch.encode(quantiles, &mut raw, &mut starts);
        assert!(batch.is_empty());
        (raw, starts)
    }

    #[test]
    fn encodes_the_bytes_prost_writes_for_every_type() {
        let hist = |n: u64| Stored::Histogram {
            buckets: vec![
                Bucket {
                    upper_limit: 0.5,
                    count: n,
                },
                Bucket {
                    upper_limit: 1.0,
                    count: 2,
                },
            ],
            count: n + 3,
            sum: 6.0,
        };
        let items = vec![
            // A label sorting before `__name__`, one between it and `le`, one after; `le`
            // itself is the histogram's own and is left out.
            (
                key(
                    "lat",
                    &[("A", "up"), ("le", "user"), ("job", "j"), ("z", "1")],
                ),
                10,
                hist(1),
            ),
            (
                key("up", &[("__a", "x"), ("b", "y")]),
                10,
                Stored::Gauge(0.0),
            ),
            (
                key(
                    "lat",
                    &[("A", "up"), ("le", "user"), ("job", "j"), ("z", "1")],
                ),
                20,
                hist(2),
            ),
            (
                key("sz", &[("q", "v")]),
                -5,
                Stored::Summary {
                    quantiles: vec![Quantile {
                        quantile: 0.5,
                        value: f64::NAN,
                    }],
                    count: 2,
                    sum: 3.0,
                },
            ),
            (
                key("dist", &[]),
                0,
                Stored::Samples {
                    values: VecDeque::from([3.0, 1.0, 2.0]),
                    count: 3,
                    sum: 6.0,
                },
            ),
            (
                key("dist", &[]),
                7,
                Stored::Samples {
                    values: VecDeque::from([3.0, 1.0, 2.0, 4.0]),
                    count: 4,
                    sum: 10.0,
                },
            ),
        ];
        let (raw, starts) = encode(items, &[0.5, 1.0]);
        fn lat<'a>(n: &'a str, le: Option<&'a str>) -> Vec<(&'a str, &'a str)> {
            let mut v = vec![("A", "up"), ("__name__", n), ("job", "j")];
            if let Some(le) = le {
                v.push(("le", le));
            }
            v.push(("z", "1"));
            v
        }
        let nan = f64::from_bits(NORMAL_NAN);
        let want = WriteRequest {
            timeseries: vec![
                series(&lat("lat_bucket", Some("0.5")), &[(10, 1.0), (20, 2.0)]),
                series(&lat("lat_bucket", Some("1")), &[(10, 3.0), (20, 4.0)]),
                series(&lat("lat_bucket", Some("+Inf")), &[(10, 4.0), (20, 5.0)]),
                series(&lat("lat_sum", None), &[(10, 6.0), (20, 6.0)]),
                series(&lat("lat_count", None), &[(10, 4.0), (20, 5.0)]),
                series(
                    &[("__a", "x"), ("__name__", "up"), ("b", "y")],
                    &[(10, 0.0)],
                ),
                series(
                    &[("__name__", "sz"), ("q", "v"), ("quantile", "0.5")],
                    &[(-5, nan)],
                ),
                series(&[("__name__", "sz_sum"), ("q", "v")], &[(-5, 3.0)]),
                series(&[("__name__", "sz_count"), ("q", "v")], &[(-5, 2.0)]),
                // Summary samples: one value per request, the latest, at its time.
                series(&[("__name__", "dist"), ("quantile", "0.5")], &[(7, 2.0)]),
                series(&[("__name__", "dist"), ("quantile", "1")], &[(7, 4.0)]),
                series(&[("__name__", "dist_sum")], &[(7, 10.0)]),
                series(&[("__name__", "dist_count")], &[(7, 4.0)]),
            ],
        };
        let got = WriteRequest::decode(raw.as_slice()).unwrap();
        // NaN != NaN: compare the bits of that one, then the rest.
        assert_eq!(got.timeseries[6].samples[0].value.to_bits(), NORMAL_NAN);
        let mut got_cmp = got.clone();
        let mut want_cmp = want.clone();
        got_cmp.timeseries[6].samples[0].value = 0.25;
        want_cmp.timeseries[6].samples[0].value = 0.25;
        assert_eq!(got_cmp, want_cmp);
        assert_eq!(raw, want.encode_to_vec(), "the same bytes as prost");
        // Each start is a run boundary: the tail from any start is a valid request.
        assert_eq!(starts.len(), want.timeseries.len());
        for (i, at) in starts.iter().enumerate() {
            let tail = WriteRequest::decode(&raw[*at..]).unwrap();
            assert_eq!(tail.timeseries.len(), want.timeseries.len() - i);
        }
    }

    #[test]
    fn samples_stay_in_time_order_and_never_repeat_a_timestamp() {
        let k = key("c", &[]);
        let mut cache = None;
        let mut last = i64::MIN;
        let mut batch = Batch::new();
        for (ts, v) in [(100, 1.0), (100, 2.0), (90, 3.0), (120, 4.0)] {
            let value = Stored::Counter(v);
            let labels = labels_for(&mut cache, &k, &value, &[], 4);
            batch.record_series(labels, &k, &mut last, ts, &value, &[]);
        }
        let (mut raw, mut starts) = (Vec::new(), Vec::new());
        batch.encode(&[], &mut raw, &mut starts);
        let got = WriteRequest::decode(raw.as_slice()).unwrap();
        // 90 is before 100: moved to 100, where it replaces the value.
        assert_eq!(
            got.timeseries,
            [series(&[("__name__", "c")], &[(100, 3.0), (120, 4.0)])]
        );
        // The next request: a sample at the time already sent moves 1 ms later.
        let value = Stored::Counter(5.0);
        let labels = labels_for(&mut cache, &k, &value, &[], 4);
        batch.record_series(labels, &k, &mut last, 120, &value, &[]);
        raw.clear();
        batch.encode(&[], &mut raw, &mut starts);
        let got = WriteRequest::decode(raw.as_slice()).unwrap();
        assert_eq!(got.timeseries[0].samples[0].timestamp, 121);
    }

    #[test]
    fn a_series_that_changes_shape_gets_new_labels() {
        let k = key("h", &[("le", "x")]);
        let h = |bounds: &[f64]| Stored::Histogram {
            buckets: bounds
                .iter()
                .map(|b| Bucket {
                    upper_limit: *b,
                    count: 1,
                })
                .collect(),
            count: bounds.len() as u64,
            sum: 1.0,
        };
        let (raw, _) = encode(
            vec![
                (k.clone(), 1, h(&[1.0])),
                (k.clone(), 2, h(&[2.0])),
                (k.clone(), 3, Stored::Counter(7.0)),
            ],
            &[],
        );
        let got = WriteRequest::decode(raw.as_slice()).unwrap();
        type Series = (String, Vec<(String, String)>, i64);
        let names: Vec<Series> = got
            .timeseries
            .iter()
            .map(|t| {
                (
                    t.labels[0].value.clone(),
                    t.labels[1..]
                        .iter()
                        .map(|l| (l.name.clone(), l.value.clone()))
                        .collect(),
                    t.samples[0].timestamp,
                )
            })
            .collect();
        let le = |v: &str| vec![("le".to_string(), v.to_string())];
        assert_eq!(
            names,
            [
                ("h_bucket".into(), le("1"), 1),
                ("h_bucket".into(), le("+Inf"), 1),
                ("h_sum".into(), vec![], 1),
                ("h_count".into(), vec![], 1),
                ("h_bucket".into(), le("2"), 2),
                ("h_bucket".into(), le("+Inf"), 2),
                ("h_sum".into(), vec![], 2),
                ("h_count".into(), vec![], 2),
                // A counter keeps its `le` tag.
                ("h".into(), le("x"), 3),
            ]
        );
    }
}
