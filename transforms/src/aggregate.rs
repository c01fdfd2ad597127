//! `aggregate`: rolls metrics up per interval, to cut the number of metric events (and of
//! samples downstream).
//!
//! ```toml
//! [transforms.rollup]
//! type = "aggregate"
//! inputs = ["to_metrics"]
//! interval_secs = 10
//! ```
//!
//! During each interval, metrics of the same series (name, namespace, tags, kind and value
//! type) are folded into one:
//!
//! - incremental counters and gauges: the values are summed;
//! - incremental histograms with the same bucket bounds: buckets, count and sum are added;
//!   incremental distributions: their samples are concatenated; incremental sets: united;
//! - absolute metrics (gauges, counters, anything): the last one wins.
//!
//! What cannot be folded (an incremental histogram whose bounds changed, an incremental
//! summary) is not lost: the held metric is emitted and the new one is held in its place. At
//! the end of each interval (and when the input ends) every held metric is emitted, in series
//! order, with the latest timestamp of what was folded into it. Other event types pass through
//! unchanged.
//!
//! Memory is bounded: at most `max_series` series are held per interval. A metric of a new
//! series past that is not held: it is dropped, counted as discarded and as a `series_limit`
//! error (logged at a limited rate), and its acknowledgement is `Rejected`. The series already
//! held go on folding.
//!
//! Acknowledgements: the interval holds the acknowledgements of every metric that went into it
//! until the metrics it emits have been delivered (then the worst outcome of theirs is every
//! input's). So a source with acknowledgements does not move past a metric before its interval
//! has been emitted and delivered, and a crash (kill -9) replays at most the open interval. A
//! held metric emitted early because the next one could not be folded into it carries a hold
//! standing for the interval's inputs so far. The emitted metrics carry the other metadata of
//! one of their inputs (the first of its interval, or the last absolute one). Events that are
//! not metrics pass through with their own acknowledgement.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use weir_pipeline::component::{
    Output, Transform, TransformConfig, TransformContext, TransformOutput,
};
use weir_pipeline::config::{Count, Secs};
use weir_pipeline::event::{Event, EventBatch, Metric, MetricKind, MetricValue};
use weir_pipeline::finalization::{EventStatus, FinalizerSet};
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use crate::holds::{attach_since, OutputMark};

fn default_interval() -> Secs {
    Secs::from_secs(10)
}

/// Configuration of the `aggregate` transform.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// The length of an interval, in seconds: held metrics are emitted this often. Must be
    /// positive. Default: 10.
    #[serde(default = "default_interval")]
    pub interval_secs: Secs,
    /// At most this many series (distinct name, namespace, tags, kind and value type) held per
    /// interval, at least 1. Past it, metrics of new series are dropped, counted as discarded
    /// and as `series_limit` errors, and rejected. Default: 100000.
    #[serde(default = "default_max_series")]
    pub max_series: Count,
}

/// The default of `max_series`.
pub const DEFAULT_MAX_SERIES: usize = 100_000;

fn default_max_series() -> Count {
    Count::of(DEFAULT_MAX_SERIES)
}

impl TransformConfig for AggregateConfig {
    fn build(&self, cx: &TransformContext) -> Result<Box<dyn Transform>, BoxError> {
        Ok(Box::new(Aggregate {
            interval: self.interval_secs.duration(),
            held: BTreeMap::new(),
            holds: FinalizerSet::default(),
            max_series: self.max_series.get(),
            metrics: cx.metrics.clone(),
        }))
    }

    fn input(&self) -> DataType {
        DataType::ALL
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::default_output(DataType::ALL)]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    name: String,
    namespace: Option<String>,
    tags: BTreeMap<String, String>,
    incremental: bool,
    value_type: u8,
}

fn value_type(v: &MetricValue) -> u8 {
    match v {
        MetricValue::Counter { .. } => 0,
        MetricValue::Gauge { .. } => 1,
        MetricValue::Set { .. } => 2,
        MetricValue::Distribution { .. } => 3,
        MetricValue::AggregatedHistogram { .. } => 4,
        MetricValue::AggregatedSummary { .. } => 5,
    }
}

struct Aggregate {
    interval: Duration,
    held: BTreeMap<Key, Metric>,
    /// The acknowledgements of the metrics folded in this interval, released when what it
    /// emits is delivered. Dropped with the interval open (a crash), they count as errored.
    holds: FinalizerSet,
    max_series: usize,
    metrics: Arc<ComponentMetrics>,
}

/// Folds `new` into `held` when they can be combined; gives `new` back otherwise.
fn fold(held: &mut Metric, new: Metric) -> Option<Metric> {
    if new.kind == MetricKind::Absolute {
        *held = new;
        return None;
    }
    let ts = match (held.timestamp, new.timestamp) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    match (&mut held.value, new.value) {
        (MetricValue::Counter { value: a }, MetricValue::Counter { value: b })
        | (MetricValue::Gauge { value: a }, MetricValue::Gauge { value: b }) => *a += b,
        (MetricValue::Set { values: a }, MetricValue::Set { values: b }) => a.extend(b),
        (
            MetricValue::Distribution {
                samples: a,
                statistic: sa,
            },
            MetricValue::Distribution {
                samples: b,
                statistic: sb,
            },
        ) if *sa == sb => a.extend(b),
        (
            MetricValue::AggregatedHistogram {
                buckets: a,
                count: ca,
                sum: sa,
            },
            MetricValue::AggregatedHistogram {
                buckets: b,
                count: cb,
                sum: sb,
            },
        ) if a.len() == b.len()
            && a.iter()
                .zip(&b)
                .all(|(x, y)| x.upper_limit == y.upper_limit) =>
        {
            for (x, y) in a.iter_mut().zip(&b) {
                x.count += y.count;
            }
            *ca += cb;
            *sa += sb;
        }
        (_, value) => {
            return Some(Metric { value, ..new });
        }
    }
    held.timestamp = ts;
    None
}

impl Aggregate {
    fn emit(&mut self, out: &mut TransformOutput) {
        let mark = OutputMark::of(out);
        for (_, m) in std::mem::take(&mut self.held) {
            out.push(m.into());
        }
        attach_since(std::mem::take(&mut self.holds), out, &mark);
    }
}

impl Transform for Aggregate {
    fn transform(&mut self, batch: EventBatch, out: &mut TransformOutput) {
        let mut over = 0u64;
        for e in batch.events {
            let mut m = match e {
                Event::Metric(m) => m,
                other => {
                    out.push(other);
                    continue;
                }
            };
            let key = Key {
                name: m.name.clone(),
                namespace: m.namespace.clone(),
                tags: m.tags.clone(),
                incremental: m.kind == MetricKind::Incremental,
                value_type: value_type(&m.value),
            };
            let full = self.held.len() >= self.max_series;
            match self.held.get_mut(&key) {
                None if full => {
                    // A new series past the cap: refused, the held ones go on.
                    over += 1;
                    m.metadata.finalize(EventStatus::Rejected);
                }
                None => {
                    // The interval holds the acknowledgement; held metrics carry none.
                    self.holds.absorb(m.metadata.notifier.take());
                    self.held.insert(key, *m);
                }
                Some(h) => {
                    self.holds.absorb(m.metadata.notifier.take());
                    if let Some(m) = fold(h, *m) {
                        let mut old = std::mem::replace(h, m);
                        // Emitted before the interval ends: it holds the interval's inputs
                        // so far, and so does the interval (the worst outcome of the two
                        // reaches them).
                        if let Some(hold) = std::mem::take(&mut self.holds).into_finalizer() {
                            old.metadata.notifier = Some(hold.clone());
                            self.holds.absorb(Some(hold));
                        }
                        out.push(old.into());
                    }
                }
            }
        }
        if over > 0 {
            self.metrics.add_discarded(over);
            self.metrics.error(
                "series_limit",
                over,
                &format_args!(
                    "{over} metrics of new series dropped: the interval holds max_series ({}) series already",
                    self.max_series
                ),
            );
        }
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    fn on_tick(&mut self, out: &mut TransformOutput) {
        self.emit(out);
    }

    fn flush(&mut self, out: &mut TransformOutput) {
        self.emit(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::Arc;
    use weir_pipeline::event::{Bucket, LogEvent, Quantile};
    use weir_pipeline::metrics::ComponentMetrics;

    fn build(toml_text: &str) -> Box<dyn Transform> {
        let cfg: AggregateConfig = toml::from_str(toml_text).unwrap();
        let cx = TransformContext {
            id: Arc::from("agg"),
            data_dir: std::env::temp_dir(),
            metrics: ComponentMetrics::detached("agg"),
        };
        cfg.build(&cx).unwrap()
    }

    fn inc(name: &str, v: MetricValue) -> Event {
        Metric::new(name, MetricKind::Incremental, v).into()
    }

    fn abs(name: &str, v: MetricValue) -> Event {
        Metric::new(name, MetricKind::Absolute, v).into()
    }

    fn hist(bounds: &[f64], counts: &[u64], sum: f64) -> MetricValue {
        MetricValue::AggregatedHistogram {
            buckets: bounds
                .iter()
                .zip(counts)
                .map(|(b, c)| Bucket {
                    upper_limit: *b,
                    count: *c,
                })
                .collect(),
            count: counts.iter().sum(),
            sum,
        }
    }

    fn metrics(out: &TransformOutput) -> Vec<&Metric> {
        out.default
            .iter()
            .filter_map(|e| match e {
                Event::Metric(m) => Some(&**m),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn rolls_up_per_interval() {
        let mut t = build("interval_secs = 5");
        assert_eq!(t.tick_interval(), Some(Duration::from_secs(5)));
        let mut out = TransformOutput::default();
        let c = |v| MetricValue::Counter { value: v };
        let g = |v| MetricValue::Gauge { value: v };
        let ts = |s| chrono::DateTime::from_timestamp(s, 0).unwrap();
        let mut tagged =
            Metric::new("req", MetricKind::Incremental, c(10.0)).with_tag("code", "500");
        tagged.timestamp = Some(ts(100));
        let mut late = Metric::new("req", MetricKind::Incremental, c(2.0));
        late.timestamp = Some(ts(200));
        t.transform(
            EventBatch::new(vec![
                inc("req", c(1.0)),
                tagged.into(),
                late.into(),
                abs("temp", g(3.0)),
                abs("temp", g(5.0)),
                inc("lat", hist(&[0.5, 1.0], &[1, 0], 0.2)),
                inc("lat", hist(&[0.5, 1.0], &[0, 2], 1.6)),
                inc(
                    "users",
                    MetricValue::Set {
                        values: BTreeSet::from(["a".to_string()]),
                    },
                ),
                inc(
                    "users",
                    MetricValue::Set {
                        values: BTreeSet::from(["b".to_string(), "a".to_string()]),
                    },
                ),
                LogEvent::from_message("passes through".into(), None).into(),
            ]),
            &mut out,
        );
        // Only the log leaves before the tick.
        assert_eq!(out.default.len(), 1);
        assert!(metrics(&out).is_empty());
        out.default.clear();
        t.transform(EventBatch::new(vec![inc("req", c(4.0))]), &mut out);
        t.on_tick(&mut out);
        let ms = metrics(&out);
        let find = |name: &str, tagged: bool| {
            ms.iter()
                .find(|m| m.name == name && m.tags.is_empty() != tagged)
                .unwrap_or_else(|| panic!("{name} in {ms:?}"))
        };
        assert_eq!(ms.len(), 5, "{ms:?}");
        assert_eq!(find("req", false).value, c(7.0));
        assert_eq!(find("req", false).timestamp, Some(ts(200)));
        assert_eq!(find("req", true).value, c(10.0));
        assert_eq!(find("temp", false).value, g(5.0));
        assert_eq!(find("lat", false).value, hist(&[0.5, 1.0], &[1, 2], 1.8));
        assert_eq!(
            find("users", false).value,
            MetricValue::Set {
                values: BTreeSet::from(["a".to_string(), "b".to_string()])
            }
        );
        // The next interval starts empty.
        let mut out = TransformOutput::default();
        t.on_tick(&mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn what_cannot_be_folded_is_emitted_not_lost() {
        let mut t = build("");
        assert_eq!(t.tick_interval(), Some(Duration::from_secs(10)));
        let mut out = TransformOutput::default();
        let summary = |s| MetricValue::AggregatedSummary {
            quantiles: vec![Quantile {
                quantile: 0.5,
                value: s,
            }],
            count: 1,
            sum: s,
        };
        t.transform(
            EventBatch::new(vec![
                inc("lat", hist(&[0.5], &[1], 0.2)),
                inc("lat", hist(&[0.25], &[1], 0.1)),
                inc("s", summary(1.0)),
                inc("s", summary(2.0)),
            ]),
            &mut out,
        );
        assert_eq!(metrics(&out).len(), 2);
        t.flush(&mut out);
        let ms = metrics(&out);
        assert_eq!(ms.len(), 4);
        assert_eq!(ms[2].value, hist(&[0.25], &[1], 0.1));
        assert_eq!(ms[3].value, summary(2.0));
    }

    #[test]
    fn acknowledgements_wait_for_the_interval_to_be_emitted_and_delivered() {
        use crate::holds::testing::{acked_batch, all_held, deliver, status};
        use weir_pipeline::finalization::EventStatus;
        let c = |v| MetricValue::Counter { value: v };
        let mut t = build("");
        let (batch, mut rx) = acked_batch(vec![
            inc("req", c(1.0)),
            LogEvent::from_message("passes through".into(), None).into(),
            inc("req", c(2.0)),
        ]);
        let (second, mut rx2) = acked_batch(vec![inc("other", c(5.0))]);
        let mut out = TransformOutput::default();
        t.transform(batch, &mut out);
        t.transform(second, &mut out);
        // The log passed through with its hold; delivering it is not enough.
        assert_eq!(out.default.len(), 1);
        deliver(&mut out);
        out.default.clear();
        assert_eq!(status(&mut rx), None, "the interval is open");
        t.on_tick(&mut out);
        assert_eq!(metrics(&out).len(), 2);
        assert!(all_held(&out));
        assert_eq!(status(&mut rx), None, "emitted, not delivered yet");
        assert_eq!(status(&mut rx2), None);
        deliver(&mut out);
        assert_eq!(status(&mut rx), Some(EventStatus::Delivered));
        assert_eq!(status(&mut rx2), Some(EventStatus::Delivered));

        // Lost with the interval open: errored, so the source reads it again.
        let (batch, mut rx) = acked_batch(vec![inc("req", c(1.0))]);
        let mut out = TransformOutput::default();
        t.transform(batch, &mut out);
        assert!(out.is_empty());
        assert_eq!(status(&mut rx), None);
        drop(t);
        assert_eq!(status(&mut rx), Some(EventStatus::Errored));
    }

    #[test]
    fn a_metric_emitted_early_and_its_interval_both_decide_the_outcome() {
        use crate::holds::testing::{acked_batch, all_held, deliver, status};
        use weir_pipeline::event::finalize_events;
        use weir_pipeline::finalization::EventStatus;
        let mut t = build("");
        let (batch, mut rx) = acked_batch(vec![
            inc("lat", hist(&[0.5], &[1], 0.2)),
            inc("lat", hist(&[0.25], &[1], 0.1)),
        ]);
        let mut out = TransformOutput::default();
        t.transform(batch, &mut out);
        assert_eq!(metrics(&out).len(), 1, "the first histogram, emitted early");
        assert!(all_held(&out));
        // A sink refuses it for good; the interval is still open.
        finalize_events(&mut out.default, EventStatus::Rejected);
        out.default.clear();
        assert_eq!(status(&mut rx), None);
        t.flush(&mut out);
        assert!(all_held(&out));
        deliver(&mut out);
        assert_eq!(
            status(&mut rx),
            Some(EventStatus::Rejected),
            "the worst wins"
        );
    }

    #[test]
    fn rejects_a_bad_interval() {
        for bad in ["0", "-1", "1e20", "nan"] {
            let err = toml::from_str::<AggregateConfig>(&format!("interval_secs = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("expected a positive number of seconds"),
                "{err}"
            );
        }
        assert!(toml::from_str::<AggregateConfig>("interval = 3").is_err());
    }

    #[test]
    fn new_series_past_max_series_are_rejected_and_counted() {
        use crate::holds::testing::{acked_batch, deliver, status};
        use weir_pipeline::finalization::EventStatus;
        let cfg: AggregateConfig = toml::from_str("max_series = 2").unwrap();
        let m = ComponentMetrics::detached("agg");
        let cx = TransformContext {
            id: Arc::from("agg"),
            data_dir: std::env::temp_dir(),
            metrics: m.clone(),
        };
        let mut t = cfg.build(&cx).unwrap();
        let c = |v| MetricValue::Counter { value: v };
        let tagged = |v: &str| -> Event {
            Metric::new("req", MetricKind::Incremental, c(1.0))
                .with_tag("user", v)
                .into()
        };
        let (held, mut rx_held) = acked_batch(vec![tagged("a"), tagged("b"), tagged("a")]);
        let (over, mut rx_over) = acked_batch(vec![tagged("c"), tagged("d")]);
        let mut out = TransformOutput::default();
        t.transform(held, &mut out);
        t.transform(over, &mut out);
        // A known series still folds past the cap.
        let (more, mut rx_more) = acked_batch(vec![tagged("b")]);
        t.transform(more, &mut out);
        assert!(out.is_empty());
        assert_eq!(m.discarded_events(), 2);
        assert_eq!(m.errors().get("series_limit"), Some(&2));
        assert_eq!(status(&mut rx_over), Some(EventStatus::Rejected));
        t.on_tick(&mut out);
        let ms = metrics(&out);
        assert_eq!(ms.len(), 2);
        let value = |u: &str| {
            ms.iter()
                .find(|m| m.tags.get("user").map(String::as_str) == Some(u))
                .map(|m| m.value.clone())
        };
        assert_eq!(value("a"), Some(c(2.0)));
        assert_eq!(value("b"), Some(c(2.0)));
        deliver(&mut out);
        assert_eq!(status(&mut rx_held), Some(EventStatus::Delivered));
        assert_eq!(status(&mut rx_more), Some(EventStatus::Delivered));
        // The next interval starts empty: new series are held again.
        let mut out = TransformOutput::default();
        t.transform(EventBatch::new(vec![tagged("c")]), &mut out);
        t.on_tick(&mut out);
        assert_eq!(metrics(&out).len(), 1);
    }
}
