//! What the Prometheus sinks share: name and label sanitising, the per-series aggregation that
//! turns incremental metrics into absolute running totals, and the expansion of one series into
//! the samples Prometheus stores (`_bucket{le}`, `_sum`, `_count`, `{quantile}`).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use weir_pipeline::config::Secs;
use weir_pipeline::event::{Bucket, Metric, MetricKind, MetricValue, Quantile, StatisticKind};

/// How many samples of one summary series are kept for its quantiles.
pub const MAX_SUMMARY_SAMPLES: usize = 10_000;

/// Prometheus' default histogram buckets.
pub const DEFAULT_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

pub fn default_buckets() -> Vec<f64> {
    DEFAULT_BUCKETS.to_vec()
}

pub fn default_quantiles() -> Vec<f64> {
    vec![0.5, 0.9, 0.99]
}

pub fn default_expire() -> Secs {
    Secs::from_secs(300)
}

/// Checks the `buckets` and `quantiles` options and returns the bucket bounds with `+Inf`.
pub fn check_buckets_quantiles(buckets: &[f64], quantiles: &[f64]) -> Result<Vec<f64>, String> {
    if buckets.iter().any(|b| b.is_nan()) || buckets.windows(2).any(|w| w[0] >= w[1]) {
        return Err("`buckets` must be strictly ascending numbers".into());
    }
    if quantiles.iter().any(|q| !(0.0..=1.0).contains(q)) {
        return Err("`quantiles` must be between 0 and 1".into());
    }
    let mut b = buckets.to_vec();
    if b.last() != Some(&f64::INFINITY) {
        b.push(f64::INFINITY);
    }
    Ok(b)
}

/// A Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`; anything else becomes `_`.
pub fn sanitize_metric_name(name: &str) -> String {
    sanitize(name, true)
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`; anything else becomes `_`.
pub fn sanitize_label_name(name: &str) -> String {
    sanitize(name, false)
}

/// Whether `name` is already what [`sanitize`] would make of it.
fn is_valid_name(name: &str, colon: bool) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || (colon && c == b':'))
}

fn sanitize(name: &str, colon: bool) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    for (i, c) in name.chars().enumerate() {
        let ok = c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
        if ok || (i > 0 && c.is_ascii_digit()) {
            out.push(c);
        } else if i == 0 && c.is_ascii_digit() {
            out.push('_');
            out.push(c);
        } else {
            out.push('_');
        }
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// The labels of a series from a metric's tags: names sanitised; empty values dropped (an
/// empty label is the same as no label in Prometheus); `__name__` dropped (it is the metric
/// name); when two tags sanitise to the same name, the first in tag order is kept.
pub fn sanitize_tags(tags: BTreeMap<String, String>) -> BTreeMap<String, String> {
    // The usual case, kept as it is (no copy).
    if tags
        .iter()
        .all(|(k, v)| !v.is_empty() && k != "__name__" && is_valid_name(k, false))
    {
        return tags;
    }
    let mut out = BTreeMap::new();
    for (k, v) in tags {
        if v.is_empty() {
            continue;
        }
        let k = sanitize_label_name(&k);
        if k == "__name__" {
            continue;
        }
        out.entry(k).or_insert(v);
    }
    out
}

/// One series: sanitised metric name and labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeriesKey {
    pub name: String,
    pub tags: BTreeMap<String, String>,
}

impl SeriesKey {
    /// The series of a metric (sanitised name and tags); its name and tags are moved out
    /// (copied only when they need sanitising).
    pub fn of(m: &mut Metric) -> SeriesKey {
        let name = match &m.namespace {
            None if is_valid_name(&m.name, true) => std::mem::take(&mut m.name),
            _ => sanitize_metric_name(&m.full_name()),
        };
        SeriesKey {
            name,
            tags: sanitize_tags(std::mem::take(&mut m.tags)),
        }
    }
}

/// The absolute value of a series.
#[derive(Debug, Clone)]
pub enum Stored {
    Counter(f64),
    Gauge(f64),
    /// Buckets as received: each counts only its own range (not cumulative).
    Histogram {
        buckets: Vec<Bucket>,
        count: u64,
        sum: f64,
    },
    Summary {
        quantiles: Vec<Quantile>,
        count: u64,
        sum: f64,
    },
    /// Summary samples (`Distribution` with the summary statistic); quantiles are computed.
    Samples {
        values: VecDeque<f64>,
        count: u64,
        sum: f64,
    },
    Set(BTreeSet<String>),
}

impl Stored {
    /// The label this type generates (`le`, `quantile`): a tag of that name is left out of
    /// all of the series' samples.
    pub fn reserved_label(&self) -> Option<&'static str> {
        match self {
            Stored::Histogram { .. } => Some("le"),
            Stored::Summary { .. } | Stored::Samples { .. } => Some("quantile"),
            _ => None,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Stored::Counter(_) => "counter",
            Stored::Gauge(_) | Stored::Set(_) => "gauge",
            Stored::Histogram { .. } => "histogram",
            Stored::Summary { .. } | Stored::Samples { .. } => "summary",
        }
    }
}

/// One aggregated series.
#[derive(Debug)]
pub struct Entry<X = ()> {
    pub value: Stored,
    pub updated: Instant,
    /// The timestamp (ms) of the last sample taken of this series (remote write keeps samples
    /// of a series in time order across requests).
    pub last_ts: i64,
    /// What the sink keeps per series besides its value (remote write: its encoded labels).
    pub ext: X,
}

/// Why a metric could not be absorbed.
#[derive(Debug, thiserror::Error)]
pub enum AbsorbError {
    #[error("metric `{0}`: an incremental value that is NaN or infinite cannot be added to a running total")]
    NotFinite(String),
    /// A new series when `max_series` are held already.
    #[error("metric `{0}`: a new series, and max_series ({1}) are held already")]
    SeriesLimit(String, usize),
}

impl AbsorbError {
    /// The error kind it is counted under: `invalid_value` or `series_limit`.
    pub fn kind(&self) -> &'static str {
        match self {
            AbsorbError::NotFinite(_) => "invalid_value",
            AbsorbError::SeriesLimit(..) => "series_limit",
        }
    }
}

/// Every series seen, with its running value (and `X`, the sink's own data per series).
#[derive(Debug)]
pub struct Aggregator<X = ()> {
    /// Hashed rather than ordered: a lookup hashes the key once, where a B-tree compares
    /// it (name, then tag by tag) at every level.
    pub series: HashMap<SeriesKey, Entry<X>, foldhash::fast::RandomState>,
    /// Bounds (`+Inf` included) that `Distribution` histogram samples are binned into.
    pub buckets: Vec<f64>,
    /// The quantiles computed for `Distribution` summary samples.
    pub quantiles: Vec<f64>,
    /// At most this many series are held: a metric of a new series past it is refused
    /// ([`AbsorbError::SeriesLimit`]) until some expire.
    pub max_series: usize,
}

impl<X: Default> Aggregator<X> {
    pub fn new(buckets: Vec<f64>, quantiles: Vec<f64>) -> Self {
        Self {
            series: HashMap::default(),
            buckets,
            quantiles,
            max_series: usize::MAX,
        }
    }

    /// At most `n` series held (see [`Aggregator::max_series`]).
    pub fn with_max_series(mut self, n: usize) -> Self {
        self.max_series = n;
        self
    }

    /// Adds a metric to its series (`key`, from [`SeriesKey::of`]): incremental values are
    /// added to the running total (a histogram whose bounds changed, or a value of another
    /// type, starts over), absolute values replace it. Then calls `then` with the series'
    /// key and entry, and returns what it returns.
    pub fn absorb<R>(
        &mut self,
        key: SeriesKey,
        m: Metric,
        now: Instant,
        then: impl FnOnce(&SeriesKey, &mut Entry<X>) -> R,
    ) -> Result<R, AbsorbError> {
        let incremental = m.kind == MetricKind::Incremental;
        if incremental {
            let bad = match &m.value {
                MetricValue::Counter { value } | MetricValue::Gauge { value } => !value.is_finite(),
                MetricValue::AggregatedHistogram { sum, .. } => !sum.is_finite(),
                MetricValue::Distribution { samples, .. } => {
                    samples.iter().any(|s| !s.value.is_finite())
                }
                _ => false,
            };
            if bad {
                return Err(AbsorbError::NotFinite(key.name));
            }
        }
        if let Some(e) = self.series.get_mut(&key) {
            // The old value is taken out (a placeholder left) to make the new one.
            let old = std::mem::replace(&mut e.value, Stored::Counter(0.0));
            e.value = combine(m.value, Some(old), incremental, &self.buckets);
            e.updated = now;
            return Ok(then(&key, e));
        }
        if self.series.len() >= self.max_series {
            return Err(AbsorbError::SeriesLimit(key.name, self.max_series));
        }
        let value = combine(m.value, None, incremental, &self.buckets);
        let e = self.series.entry(key.clone()).or_insert(Entry {
            value,
            updated: now,
            last_ts: i64::MIN,
            ext: X::default(),
        });
        Ok(then(&key, e))
    }

    /// Forgets series not updated for `older_than`.
    pub fn expire(&mut self, older_than: Duration, now: Instant) -> usize {
        let before = self.series.len();
        self.series
            .retain(|_, e| now.saturating_duration_since(e.updated) < older_than);
        before - self.series.len()
    }
}

/// The new value of a series from its `old` one and a metric's value (`bounds`: those
/// `Distribution` histogram samples are binned into).
fn combine(value: MetricValue, old: Option<Stored>, incremental: bool, bounds: &[f64]) -> Stored {
    match (value, old) {
        (MetricValue::Counter { value }, Some(Stored::Counter(t))) if incremental => {
            Stored::Counter(t + value)
        }
        (MetricValue::Counter { value }, _) => Stored::Counter(value),
        (MetricValue::Gauge { value }, Some(Stored::Gauge(t))) if incremental => {
            Stored::Gauge(t + value)
        }
        (MetricValue::Gauge { value }, _) => Stored::Gauge(value),
        (MetricValue::Set { values }, Some(Stored::Set(mut s))) if incremental => {
            s.extend(values);
            Stored::Set(s)
        }
        (MetricValue::Set { values }, _) => Stored::Set(values),
        (
            MetricValue::AggregatedHistogram {
                buckets,
                count,
                sum,
            },
            old,
        ) => match old {
            Some(Stored::Histogram {
                buckets: mut b,
                count: c,
                sum: s,
            }) if incremental && same_limits(&b, &buckets) => {
                for (x, y) in b.iter_mut().zip(&buckets) {
                    x.count += y.count;
                }
                Stored::Histogram {
                    buckets: b,
                    count: c + count,
                    sum: s + sum,
                }
            }
            _ => Stored::Histogram {
                buckets,
                count,
                sum,
            },
        },
        (
            MetricValue::AggregatedSummary {
                quantiles,
                count,
                sum,
            },
            _,
        ) => Stored::Summary {
            quantiles,
            count,
            sum,
        },
        (
            MetricValue::Distribution {
                samples,
                statistic: StatisticKind::Histogram,
            },
            old,
        ) => {
            let (mut b, mut c, mut s) = match old {
                Some(Stored::Histogram {
                    buckets,
                    count,
                    sum,
                }) if incremental
                    && buckets.len() == bounds.len()
                    && buckets.iter().zip(bounds).all(|(x, y)| x.upper_limit == *y) =>
                {
                    (buckets, count, sum)
                }
                _ => (
                    bounds
                        .iter()
                        .map(|l| Bucket {
                            upper_limit: *l,
                            count: 0,
                        })
                        .collect(),
                    0,
                    0.0,
                ),
            };
            for smp in samples {
                let rate = u64::from(smp.rate.max(1));
                if let Some(bk) = b.iter_mut().find(|bk| smp.value <= bk.upper_limit) {
                    bk.count += rate;
                }
                c += rate;
                s += smp.value * rate as f64;
            }
            Stored::Histogram {
                buckets: b,
                count: c,
                sum: s,
            }
        }
        (
            MetricValue::Distribution {
                samples,
                statistic: StatisticKind::Summary,
            },
            old,
        ) => {
            let (mut v, mut c, mut s) = match old {
                Some(Stored::Samples { values, count, sum }) if incremental => (values, count, sum),
                _ => (VecDeque::new(), 0, 0.0),
            };
            for smp in samples {
                let rate = smp.rate.max(1);
                for _ in 0..rate.min(MAX_SUMMARY_SAMPLES as u32) {
                    if v.len() == MAX_SUMMARY_SAMPLES {
                        v.pop_front();
                    }
                    v.push_back(smp.value);
                }
                c += u64::from(rate);
                s += smp.value * f64::from(rate);
            }
            Stored::Samples {
                values: v,
                count: c,
                sum: s,
            }
        }
    }
}

fn same_limits(a: &[Bucket], b: &[Bucket]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.upper_limit == y.upper_limit)
}

/// Nearest-rank quantiles of `values`.
pub fn quantiles_of(values: &VecDeque<f64>, qs: &[f64]) -> Vec<Quantile> {
    let mut sorted: Vec<f64> = values.iter().copied().collect();
    sorted.sort_by(f64::total_cmp);
    qs.iter()
        .map(|q| Quantile {
            quantile: *q,
            value: if sorted.is_empty() {
                f64::NAN
            } else {
                let rank = (q * sorted.len() as f64).ceil() as usize;
                sorted[rank.clamp(1, sorted.len()) - 1]
            },
        })
        .collect()
}

/// The suffix of one expanded sample's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suffix {
    None,
    Bucket,
    Sum,
    Count,
}

impl Suffix {
    pub fn as_str(self) -> &'static str {
        match self {
            Suffix::None => "",
            Suffix::Bucket => "_bucket",
            Suffix::Sum => "_sum",
            Suffix::Count => "_count",
        }
    }
}

/// The label a histogram bucket (`le`) or a summary quantile (`quantile`) adds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Extra {
    Le(f64),
    Quantile(f64),
}

impl Extra {
    pub fn name(self) -> &'static str {
        match self {
            Extra::Le(_) => "le",
            Extra::Quantile(_) => "quantile",
        }
    }
    pub fn value(self) -> f64 {
        match self {
            Extra::Le(v) | Extra::Quantile(v) => v,
        }
    }
}

/// Formats a number as Prometheus does in label values and the text format: `+Inf`, `-Inf`,
/// `NaN`, otherwise the shortest representation that reads back the same.
pub fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// Calls `f` for every sample of a series, in the order the text format lists them:
/// counters, gauges and sets one sample; histograms a cumulative `_bucket{le}` per bound
/// (ending with `+Inf`, which is added when missing and then holds the whole count), `_sum`
/// and `_count`; summaries a `{quantile}` per quantile, `_sum` and `_count`. A tag named
/// `le` (histograms) or `quantile` (summaries) must be left out by the caller
/// ([`Stored::reserved_label`]).
pub fn expand(value: &Stored, quantiles: &[f64], mut f: impl FnMut(Suffix, Option<Extra>, f64)) {
    match value {
        Stored::Counter(v) | Stored::Gauge(v) => f(Suffix::None, None, *v),
        Stored::Set(s) => f(Suffix::None, None, s.len() as f64),
        Stored::Histogram {
            buckets,
            count,
            sum,
        } => {
            let mut cumulative = 0u64;
            let mut saw_inf = false;
            for b in buckets {
                if b.upper_limit.is_nan() {
                    continue;
                }
                cumulative += b.count;
                if b.upper_limit == f64::INFINITY {
                    saw_inf = true;
                    // The +Inf bucket counts every observation.
                    cumulative = cumulative.max(*count);
                }
                f(
                    Suffix::Bucket,
                    Some(Extra::Le(b.upper_limit)),
                    cumulative as f64,
                );
            }
            if !saw_inf {
                f(
                    Suffix::Bucket,
                    Some(Extra::Le(f64::INFINITY)),
                    cumulative.max(*count) as f64,
                );
            }
            f(Suffix::Sum, None, *sum);
            f(Suffix::Count, None, *count as f64);
        }
        Stored::Summary {
            quantiles: qs,
            count,
            sum,
        } => {
            for q in qs {
                f(Suffix::None, Some(Extra::Quantile(q.quantile)), q.value);
            }
            f(Suffix::Sum, None, *sum);
            f(Suffix::Count, None, *count as f64);
        }
        Stored::Samples { values, count, sum } => {
            for q in quantiles_of(values, quantiles) {
                f(Suffix::None, Some(Extra::Quantile(q.quantile)), q.value);
            }
            f(Suffix::Sum, None, *sum);
            f(Suffix::Count, None, *count as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_pipeline::event::Sample;

    #[test]
    fn sanitizes_names_and_tags() {
        assert_eq!(sanitize_metric_name("a.b-c:d"), "a_b_c:d");
        assert_eq!(sanitize_metric_name("9lives"), "_9lives");
        assert_eq!(sanitize_label_name("a:b"), "a_b");
        assert_eq!(sanitize_label_name("é"), "_");
        assert_eq!(sanitize_label_name(""), "_");
        let tags = BTreeMap::from([
            ("a.b".to_string(), "1".to_string()),
            ("a_b".to_string(), "2".to_string()),
            ("__name__".to_string(), "x".to_string()),
            ("empty".to_string(), String::new()),
        ]);
        assert_eq!(
            sanitize_tags(tags),
            BTreeMap::from([("a_b".to_string(), "1".to_string())])
        );
    }

    #[test]
    fn histogram_buckets_become_cumulative_with_inf() {
        let h = Stored::Histogram {
            buckets: vec![
                Bucket {
                    upper_limit: 1.0,
                    count: 2,
                },
                Bucket {
                    upper_limit: 5.0,
                    count: 3,
                },
            ],
            count: 7,
            sum: 20.0,
        };
        let mut got = Vec::new();
        expand(&h, &[], |s, e, v| got.push((s, e, v)));
        assert_eq!(
            got,
            vec![
                (Suffix::Bucket, Some(Extra::Le(1.0)), 2.0),
                (Suffix::Bucket, Some(Extra::Le(5.0)), 5.0),
                (Suffix::Bucket, Some(Extra::Le(f64::INFINITY)), 7.0),
                (Suffix::Sum, None, 20.0),
                (Suffix::Count, None, 7.0),
            ]
        );
    }

    #[test]
    fn incremental_totals_and_non_finite_increments() {
        let mut a: Aggregator = Aggregator::new(vec![1.0, f64::INFINITY], vec![0.5]);
        let now = Instant::now();
        for v in [1.0, 2.5] {
            let mut m = Metric::new(
                "c",
                MetricKind::Incremental,
                MetricValue::Counter { value: v },
            );
            let k = SeriesKey::of(&mut m);
            a.absorb(k, m, now, |_, _| ()).unwrap();
        }
        let mut bad = Metric::new(
            "c",
            MetricKind::Incremental,
            MetricValue::Counter { value: f64::NAN },
        );
        let k = SeriesKey::of(&mut bad);
        assert!(a.absorb(k.clone(), bad, now, |_, _| ()).is_err());
        assert!(matches!(a.series[&k].value, Stored::Counter(v) if v == 3.5));
        let mut d = Metric::new(
            "d",
            MetricKind::Incremental,
            MetricValue::Distribution {
                samples: vec![
                    Sample {
                        value: 0.5,
                        rate: 2,
                    },
                    Sample {
                        value: 3.0,
                        rate: 1,
                    },
                ],
                statistic: StatisticKind::Histogram,
            },
        );
        let k = SeriesKey::of(&mut d);
        let mut got = Vec::new();
        a.absorb(k, d, now, |_, e| {
            expand(&e.value, &[], |_, _, v| got.push(v))
        })
        .unwrap();
        assert_eq!(got, vec![2.0, 3.0, 4.0, 3.0]);
        assert_eq!(
            a.expire(Duration::from_secs(1), now + Duration::from_secs(2)),
            2
        );
    }
}
