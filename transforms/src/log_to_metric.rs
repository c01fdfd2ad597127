//! `log_to_metric`: turns log fields into metrics.
//!
//! ```toml
//! [transforms.to_metrics]
//! type = "log_to_metric"
//! inputs = ["parsed"]
//!
//! [[transforms.to_metrics.metrics]]
//! type = "counter"                 # one per log that has the field
//! field = "status"
//! name = "http_requests_total"
//! tags = { status = "{{ status }}", host = "{{ host }}" }
//!
//! [[transforms.to_metrics.metrics]]
//! type = "histogram"
//! field = "duration"
//! name = "http_request_duration_seconds"
//! buckets = [0.1, 0.5, 1.0]
//! ```
//!
//! Each entry of `metrics` makes one metric from every log that has its `field`. A log that
//! lacks the field, whose value is not a number (for the numeric types), or whose `name`,
//! `namespace` or a tag cannot be rendered, yields no metric for that entry; it is counted as
//! an error (`missing_field`, `not_a_number`, `template`) and logged at a limited rate. The logs
//! themselves are consumed: only metrics leave the transform.
//!
//! | `type`      | metric                                                                 |
//! |-------------|------------------------------------------------------------------------|
//! | `counter`   | incremental counter, `1` per log, or the field's value with `increment_by_value` |
//! | `gauge`     | absolute gauge, the field's value                                       |
//! | `histogram` | with `buckets`: incremental `AggregatedHistogram` of one observation; without: a `Distribution` sample |
//! | `summary`   | a `Distribution` sample with the summary statistic                      |
//! | `set`       | incremental set of the field's value (as text)                          |
//!
//! A metric's timestamp is the log's `timestamp` field when it is a timestamp, else the time the
//! source created the log.
//!
//! Acknowledgements: the metrics made from a log carry its acknowledgement, so its source hears
//! back once all of them are delivered (the worst outcome wins). A log that makes no metric is
//! done here: rejected when an entry failed on its content (`not_a_number`, `template`), else
//! (only missing fields) delivered, as a filter would have dropped it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Deserialize;
use weir_pipeline::component::Output;
use weir_pipeline::component::{Transform, TransformConfig, TransformContext, TransformOutput};
use weir_pipeline::event::{
    parse_path, Bucket, Event, EventBatch, FieldPath, LogEvent, Metric, MetricKind, MetricValue,
    Sample, StatisticKind, Value,
};
use weir_pipeline::finalization::{EventStatus, Finalizer};
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::template::Template;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

/// Configuration of the `log_to_metric` transform.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogToMetricConfig {
    /// The metrics to make from each log. Required, at least one.
    pub metrics: Vec<MetricConfig>,
}

/// The type of metric an entry makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Set,
}

/// One metric made from each log.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    /// The kind of metric: `counter`, `gauge`, `histogram`, `summary` or `set` (see
    /// [Behaviour](#behaviour)). Required.
    #[serde(rename = "type")]
    pub metric_type: MetricType,
    /// The field path (`status`, `.http.duration`) the metric is made from. A log without it makes
    /// no metric for this entry. Required.
    pub field: String,
    /// The metric's name, a template (`{{ field }}` parts are filled from the log). Default:
    /// the value of `field` as written in the config.
    #[serde(default)]
    pub name: Option<String>,
    /// The metric's namespace (prefixed to the name with `_` by Prometheus sinks), a template.
    /// Default: none.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Tags (labels): name -> template. A tag whose template cannot be rendered makes the
    /// metric fail for that log (counted as a `template` error). Default: no tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Counters only: add the field's numeric value instead of 1. Default: false.
    #[serde(default)]
    pub increment_by_value: bool,
    /// Histograms only: upper bounds of the buckets, strictly ascending; a `+Inf` bucket is
    /// implied. When set, each log makes an incremental aggregated histogram with one observation;
    /// when empty, a distribution sample that the sink bins. Default: empty.
    #[serde(default)]
    pub buckets: Vec<f64>,
}

impl TransformConfig for LogToMetricConfig {
    fn build(&self, cx: &TransformContext) -> Result<Box<dyn Transform>, BoxError> {
        if self.metrics.is_empty() {
            return Err("`metrics` must have at least one entry".into());
        }
        let mut specs = Vec::with_capacity(self.metrics.len());
        for (i, m) in self.metrics.iter().enumerate() {
            specs.push(Spec::new(m).map_err(|e| format!("`metrics[{i}]`: {e}"))?);
        }
        Ok(Box::new(LogToMetric {
            specs,
            metrics: Arc::clone(&cx.metrics),
            scratch: String::new(),
        }))
    }

    fn input(&self) -> DataType {
        DataType::LOG
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::default_output(DataType::METRIC)]
    }
}

#[derive(Debug)]
struct Spec {
    metric_type: MetricType,
    field_name: String,
    field: FieldPath,
    name: Template,
    namespace: Option<Template>,
    tags: Vec<(String, Template)>,
    increment_by_value: bool,
    buckets: Vec<f64>,
}

impl Spec {
    fn new(c: &MetricConfig) -> Result<Self, String> {
        let field = parse_path(&c.field).map_err(|e| format!("`field`: {e}"))?;
        let name = Template::parse(c.name.as_deref().unwrap_or(&c.field))
            .map_err(|e| format!("`name`: {e}"))?;
        let namespace = match &c.namespace {
            Some(n) => Some(Template::parse(n).map_err(|e| format!("`namespace`: {e}"))?),
            None => None,
        };
        let mut tags = Vec::with_capacity(c.tags.len());
        for (k, v) in &c.tags {
            tags.push((
                k.clone(),
                Template::parse(v).map_err(|e| format!("`tags.{k}`: {e}"))?,
            ));
        }
        if c.increment_by_value && c.metric_type != MetricType::Counter {
            return Err("`increment_by_value` applies to counters only".into());
        }
        if !c.buckets.is_empty() {
            if c.metric_type != MetricType::Histogram {
                return Err("`buckets` applies to histograms only".into());
            }
            if c.buckets.iter().any(|b| b.is_nan()) || c.buckets.windows(2).any(|w| w[0] >= w[1]) {
                return Err("`buckets` must be strictly ascending numbers".into());
            }
        }
        let mut buckets = c.buckets.clone();
        if buckets.last().is_some_and(|b| *b != f64::INFINITY) {
            buckets.push(f64::INFINITY);
        }
        Ok(Self {
            metric_type: c.metric_type,
            field_name: c.field.clone(),
            field,
            name,
            namespace,
            tags,
            increment_by_value: c.increment_by_value,
            buckets,
        })
    }
}

/// Why one entry made no metric for one log.
enum Skip {
    Missing,
    NotANumber,
    Template(String),
}

struct LogToMetric {
    specs: Vec<Spec>,
    metrics: Arc<ComponentMetrics>,
    scratch: String,
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Float(f) => Some(f.into_inner()),
        Value::Boolean(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => v.to_str_lossy()?.trim().parse().ok(),
    }
}

impl LogToMetric {
    fn make(&mut self, i: usize, log: &LogEvent, event: &Event) -> Result<Metric, Skip> {
        let spec = &self.specs[i];
        let v = match log.get(&spec.field) {
            None | Some(Value::Null) => return Err(Skip::Missing),
            Some(v) => v,
        };
        let num = || number(v).filter(|n| n.is_finite()).ok_or(Skip::NotANumber);
        let (kind, value) = match spec.metric_type {
            MetricType::Counter => {
                let value = if spec.increment_by_value { num()? } else { 1.0 };
                (MetricKind::Incremental, MetricValue::Counter { value })
            }
            MetricType::Gauge => (MetricKind::Absolute, MetricValue::Gauge { value: num()? }),
            MetricType::Histogram if !spec.buckets.is_empty() => {
                let n = num()?;
                // The last bucket is +Inf, so a finite `n` always has one.
                let at = spec.buckets.iter().position(|b| n <= *b);
                let buckets = spec
                    .buckets
                    .iter()
                    .enumerate()
                    .map(|(j, b)| Bucket {
                        upper_limit: *b,
                        count: u64::from(at == Some(j)),
                    })
                    .collect();
                (
                    MetricKind::Incremental,
                    MetricValue::AggregatedHistogram {
                        buckets,
                        count: 1,
                        sum: n,
                    },
                )
            }
            MetricType::Histogram | MetricType::Summary => (
                MetricKind::Incremental,
                MetricValue::Distribution {
                    samples: vec![Sample {
                        value: num()?,
                        rate: 1,
                    }],
                    statistic: if spec.metric_type == MetricType::Summary {
                        StatisticKind::Summary
                    } else {
                        StatisticKind::Histogram
                    },
                },
            ),
            MetricType::Set => {
                let text = match v.to_str_lossy() {
                    Some(s) => s.into_owned(),
                    None => v.to_string_lossy().into_owned(),
                };
                (
                    MetricKind::Incremental,
                    MetricValue::Set {
                        values: BTreeSet::from([text]),
                    },
                )
            }
        };
        let render = |t: &Template, s: &mut String| {
            t.render_into(event, s)
                .map_err(|e| Skip::Template(e.to_string()))
        };
        render(&spec.name, &mut self.scratch)?;
        let mut metric = Metric::new(self.scratch.as_str(), kind, value);
        if let Some(ns) = &spec.namespace {
            render(ns, &mut self.scratch)?;
            metric.namespace = Some(self.scratch.clone());
        }
        for (k, t) in &spec.tags {
            render(t, &mut self.scratch)?;
            metric.tags.insert(k.clone(), self.scratch.clone());
        }
        metric.timestamp = match log.get_field("timestamp") {
            Some(Value::Timestamp(t)) => Some(*t),
            _ => log.metadata.ingest_time,
        };
        // The log's hold was taken out first: this copies no acknowledgement.
        metric.metadata = log.metadata.clone();
        Ok(metric)
    }
}

/// Gives the metrics made from one log its hold: a clone to each, the hold itself to the
/// last. With no metric, the log is done: rejected if an entry failed on its content.
fn hand_over(hold: Finalizer, made: &mut [Event], invalid: bool) {
    let Some((last, rest)) = made.split_last_mut() else {
        hold.finalize(if invalid {
            EventStatus::Rejected
        } else {
            EventStatus::Delivered
        });
        return;
    };
    for m in rest {
        m.metadata_mut().notifier = Some(hold.clone());
    }
    last.metadata_mut().notifier = Some(hold);
}

impl Transform for LogToMetric {
    fn transform(&mut self, batch: EventBatch, out: &mut TransformOutput) {
        // Per kind: how many, and the first message of the batch.
        let mut errors: [(u64, Option<String>); 3] = Default::default();
        for mut event in batch {
            let hold = event.metadata_mut().notifier.take();
            let Event::Log(log) = &event else {
                // Only logs come in (the input type); anything else is consumed.
                if let Some(h) = hold {
                    h.finalize(EventStatus::Delivered);
                }
                continue;
            };
            let first = out.default.len();
            let mut invalid = false;
            for i in 0..self.specs.len() {
                let (slot, msg) = match self.make(i, log, &event) {
                    Ok(m) => {
                        out.push(Event::from(m));
                        continue;
                    }
                    Err(Skip::Missing) => (0, None),
                    Err(Skip::NotANumber) => (1, None),
                    Err(Skip::Template(e)) => (2, Some(e)),
                };
                invalid |= slot > 0;
                let e = &mut errors[slot];
                e.0 += 1;
                if e.1.is_none() {
                    let field = &self.specs[i].field_name;
                    e.1 = Some(match slot {
                        0 => format!("log(s) without field `{field}`: no metric made"),
                        1 => format!("field `{field}` is not a finite number: no metric made"),
                        _ => format!("{}: no metric made", msg.unwrap_or_default()),
                    });
                }
            }
            if let Some(hold) = hold {
                hand_over(hold, &mut out.default[first..], invalid);
            }
        }
        for ((count, msg), kind) in
            errors
                .into_iter()
                .zip(["missing_field", "not_a_number", "template"])
        {
            if count > 0 {
                self.metrics.error(kind, count, &msg.unwrap_or_default());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn build(toml_text: &str) -> (Box<dyn Transform>, Arc<ComponentMetrics>) {
        let config: LogToMetricConfig = toml::from_str(toml_text).unwrap();
        let cx = TransformContext {
            id: Arc::from("t"),
            data_dir: PathBuf::new(),
            metrics: ComponentMetrics::detached("t"),
        };
        (config.build(&cx).unwrap(), cx.metrics)
    }

    fn log(v: serde_json::Value) -> Event {
        Event::Log(LogEvent::from_value(Value::from(v), Default::default()))
    }

    fn run(t: &mut Box<dyn Transform>, events: Vec<serde_json::Value>) -> Vec<Metric> {
        let mut out = TransformOutput::default();
        t.transform(
            EventBatch::new(events.into_iter().map(log).collect()),
            &mut out,
        );
        out.default
            .into_iter()
            .map(|e| match e {
                Event::Metric(m) => *m,
                other => panic!("not a metric: {other:?}"),
            })
            .collect()
    }

    #[test]
    fn counter_counts_and_tags_from_fields() {
        let (mut t, metrics) = build(
            r#"
            [[metrics]]
            type = "counter"
            field = "status"
            name = "http_requests_total"
            namespace = "{{ app }}"
            tags = { status = "{{ status }}", host = "h-{{ host }}" }
            "#,
        );
        let out = run(
            &mut t,
            vec![
                serde_json::json!({"status": 200, "host": "a", "app": "shop"}),
                serde_json::json!({"status": "500", "host": "b", "app": "shop"}),
                serde_json::json!({"host": "c", "app": "shop"}),
            ],
        );
        assert_eq!(out.len(), 2);
        let j: Vec<serde_json::Value> = out
            .iter()
            .map(|m| serde_json::to_value(m).unwrap())
            .collect();
        assert_eq!(
            j[0],
            serde_json::json!({"name": "http_requests_total", "namespace": "shop",
                "tags": {"host": "h-a", "status": "200"}, "kind": "incremental",
                "counter": {"value": 1.0}})
        );
        assert_eq!(
            j[1]["tags"],
            serde_json::json!({"host": "h-b", "status": "500"})
        );
        assert_eq!(metrics.errors().get("missing_field"), Some(&1));
    }

    #[test]
    fn counter_increment_by_value_and_gauge() {
        let (mut t, metrics) = build(
            r#"
            [[metrics]]
            type = "counter"
            field = "bytes"
            increment_by_value = true
            name = "bytes_total"
            [[metrics]]
            type = "gauge"
            field = ".mem.used"
            name = "mem_used"
            "#,
        );
        let out = run(
            &mut t,
            vec![
                serde_json::json!({"bytes": 512, "mem": {"used": 3.5}}),
                serde_json::json!({"bytes": "x", "mem": {"used": "7"}}),
            ],
        );
        let vals: Vec<(String, MetricKind, MetricValue)> =
            out.into_iter().map(|m| (m.name, m.kind, m.value)).collect();
        assert_eq!(
            vals,
            vec![
                (
                    "bytes_total".into(),
                    MetricKind::Incremental,
                    MetricValue::Counter { value: 512.0 }
                ),
                (
                    "mem_used".into(),
                    MetricKind::Absolute,
                    MetricValue::Gauge { value: 3.5 }
                ),
                (
                    "mem_used".into(),
                    MetricKind::Absolute,
                    MetricValue::Gauge { value: 7.0 }
                ),
            ]
        );
        assert_eq!(metrics.errors().get("not_a_number"), Some(&1));
    }

    #[test]
    fn histogram_with_buckets_puts_each_observation_in_one_bucket() {
        let (mut t, _) = build(
            r#"
            [[metrics]]
            type = "histogram"
            field = "d"
            buckets = [0.1, 0.5, 1.0]
            "#,
        );
        let out = run(
            &mut t,
            vec![
                serde_json::json!({"d": 0.1}),
                serde_json::json!({"d": 0.3}),
                serde_json::json!({"d": 7}),
            ],
        );
        let counts: Vec<Vec<u64>> = out
            .iter()
            .map(|m| match &m.value {
                MetricValue::AggregatedHistogram { buckets, count, .. } => {
                    assert_eq!(*count, 1);
                    let limits: Vec<f64> = buckets.iter().map(|b| b.upper_limit).collect();
                    assert_eq!(limits, vec![0.1, 0.5, 1.0, f64::INFINITY]);
                    buckets.iter().map(|b| b.count).collect()
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            counts,
            vec![vec![1, 0, 0, 0], vec![0, 1, 0, 0], vec![0, 0, 0, 1]]
        );
        assert_eq!(out[0].name, "d");
        assert!(matches!(out[2].value, MetricValue::AggregatedHistogram { sum, .. } if sum == 7.0));
    }

    #[test]
    fn summary_histogram_without_buckets_and_set() {
        let (mut t, _) = build(
            r#"
            [[metrics]]
            type = "summary"
            field = "d"
            [[metrics]]
            type = "histogram"
            field = "d"
            name = "d_hist"
            [[metrics]]
            type = "set"
            field = "user"
            "#,
        );
        let out = run(&mut t, vec![serde_json::json!({"d": 2.5, "user": "ann"})]);
        assert_eq!(out.len(), 3);
        assert_eq!(
            out[0].value,
            MetricValue::Distribution {
                samples: vec![Sample {
                    value: 2.5,
                    rate: 1
                }],
                statistic: StatisticKind::Summary
            }
        );
        assert_eq!(
            out[1].value,
            MetricValue::Distribution {
                samples: vec![Sample {
                    value: 2.5,
                    rate: 1
                }],
                statistic: StatisticKind::Histogram
            }
        );
        assert_eq!(
            out[2].value,
            MetricValue::Set {
                values: BTreeSet::from(["ann".to_string()])
            }
        );
    }

    #[test]
    fn metrics_carry_their_log_acknowledgement_and_logs_without_one_are_done() {
        use weir_pipeline::finalization::BatchNotifier;
        let (mut t, _) = build(
            r#"
            [[metrics]]
            type = "counter"
            field = "status"
            [[metrics]]
            type = "gauge"
            field = "mem"
            "#,
        );
        let acked = |v: serde_json::Value| {
            let (n, rx) = BatchNotifier::new_with_receiver();
            let mut b = EventBatch::new(vec![log(v)]);
            b.attach_notifier(&n);
            (b, rx)
        };
        let mut out = TransformOutput::default();
        let (both, mut rx_both) = acked(serde_json::json!({"status": 200, "mem": 3}));
        let (missing, mut rx_missing) = acked(serde_json::json!({"other": 1}));
        let (bad, mut rx_bad) = acked(serde_json::json!({"mem": "lots"}));
        t.transform(both, &mut out);
        assert_eq!(out.default.len(), 2);
        assert!(out.default.iter().all(|e| e.metadata().notifier.is_some()));
        t.transform(missing, &mut out);
        t.transform(bad, &mut out);
        assert_eq!(out.default.len(), 2);
        assert_eq!(rx_missing.try_recv(), Some(EventStatus::Delivered));
        assert_eq!(rx_bad.try_recv(), Some(EventStatus::Rejected));
        out.default[0].finalize(EventStatus::Delivered);
        assert_eq!(rx_both.try_recv(), None, "one of its metrics is in flight");
        out.default[1].finalize(EventStatus::Delivered);
        assert_eq!(rx_both.try_recv(), Some(EventStatus::Delivered));

        // Metrics lost downstream without an outcome: errored.
        let (both, mut rx_both) = acked(serde_json::json!({"status": 200, "mem": 3}));
        let mut out = TransformOutput::default();
        t.transform(both, &mut out);
        drop(out);
        assert_eq!(rx_both.try_recv(), Some(EventStatus::Errored));
    }

    #[test]
    fn template_failure_is_counted_and_config_errors_rejected() {
        let (mut t, metrics) = build(
            r#"
            [[metrics]]
            type = "counter"
            field = "a"
            tags = { b = "{{ b }}" }
            "#,
        );
        assert!(run(&mut t, vec![serde_json::json!({"a": 1})]).is_empty());
        assert_eq!(metrics.errors().get("template"), Some(&1));
        let bad = |s: &str| {
            let c: LogToMetricConfig = toml::from_str(s).unwrap();
            let cx = TransformContext {
                id: Arc::from("t"),
                data_dir: PathBuf::new(),
                metrics: ComponentMetrics::detached("t"),
            };
            c.build(&cx).is_err()
        };
        assert!(bad("metrics = []"));
        assert!(bad("[[metrics]]\ntype='gauge'\nfield='a'\nbuckets=[1.0]"));
        assert!(bad(
            "[[metrics]]\ntype='histogram'\nfield='a'\nbuckets=[2.0, 1.0]"
        ));
        assert!(bad(
            "[[metrics]]\ntype='gauge'\nfield='a'\nincrement_by_value=true"
        ));
        assert!(toml::from_str::<LogToMetricConfig>(
            "[[metrics]]\ntype='gauge'\nfield='a'\nbogus=1"
        )
        .is_err());
    }
}
