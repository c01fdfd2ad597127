//! `filter`: keeps the log events for which a VRL condition is true.
//!
//! ```toml
//! [transforms.errors_only]
//! type = "filter"
//! inputs = ["in"]
//! condition = '.status >= 500'
//! ```
//!
//! Events for which the condition is false are dropped and counted as discarded. An event the
//! condition fails on (`.status` is not a number) or returns a non-boolean for is dropped and
//! counted as a `condition` error. Metrics and traces pass through untouched.

use std::sync::Arc;

use serde::Deserialize;
use weir_pipeline::component::{Transform, TransformConfig, TransformContext, TransformOutput};
use weir_pipeline::event::EventBatch;
use weir_pipeline::finalization::EventStatus;
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use crate::condition::{Condition, ErrorTally};

/// Configuration of the `filter` transform.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// A VRL boolean expression evaluated on each log event, such as
    /// `.status >= 500 && .env == "prod"`. Events for which it is true pass; the others are
    /// dropped. Required, no default.
    pub condition: String,
}

impl TransformConfig for FilterConfig {
    fn build(&self, cx: &TransformContext) -> Result<Box<dyn Transform>, BoxError> {
        let condition = Condition::compile(&self.condition)?;
        Ok(Box::new(Filter {
            condition,
            metrics: Arc::clone(&cx.metrics),
            errors: ErrorTally::default(),
        }))
    }

    /// Each batch is transformed on its own (VRL's state is reset for every event).
    fn stateless(&self) -> bool {
        true
    }

    fn input(&self) -> DataType {
        DataType::ALL
    }
}

/// The running `filter` transform.
struct Filter {
    condition: Condition,
    metrics: Arc<ComponentMetrics>,
    errors: ErrorTally,
}

impl Transform for Filter {
    fn transform(&mut self, batch: EventBatch, out: &mut TransformOutput) {
        let mut discarded = 0;
        for mut event in batch {
            let Some(log) = event.as_log_mut() else {
                out.push(event);
                continue;
            };
            match self.condition.check(log.value_mut()) {
                Ok(true) => out.push(event),
                Ok(false) => {
                    // Dropped on purpose: done.
                    event.finalize(EventStatus::Delivered);
                    discarded += 1;
                }
                Err(e) => {
                    // The condition cannot judge this event: a verdict on its content.
                    event.finalize(EventStatus::Rejected);
                    self.errors.add(&e);
                }
            }
        }
        if discarded > 0 {
            self.metrics.add_discarded(discarded);
        }
        self.errors.report(&self.metrics);
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use weir_pipeline::event::{Event, LogEvent, Metric, MetricKind, MetricValue, Value};

    use super::*;

    fn build(toml_text: &str) -> (Box<dyn Transform>, Arc<ComponentMetrics>) {
        let config: FilterConfig = toml::from_str(toml_text).unwrap();
        let cx = TransformContext {
            id: Arc::from("t"),
            data_dir: PathBuf::new(),
            metrics: ComponentMetrics::detached("t"),
        };
        (config.build(&cx).unwrap(), cx.metrics)
    }

    fn log(json: &str) -> Event {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        Event::Log(LogEvent::from_value(Value::from(v), Default::default()))
    }

    fn run(t: &mut Box<dyn Transform>, events: Vec<Event>) -> Vec<serde_json::Value> {
        let mut out = TransformOutput::default();
        t.transform(EventBatch::new(events), &mut out);
        out.default.iter().map(Event::to_json_value).collect()
    }

    #[test]
    fn keeps_exactly_the_matching_events() {
        let (mut t, metrics) = build(r#"condition = '.status >= 500 && .env == "prod"'"#);
        let got = run(
            &mut t,
            vec![
                log(r#"{"id": 1, "status": 500, "env": "prod"}"#),
                log(r#"{"id": 2, "status": 200, "env": "prod"}"#),
                log(r#"{"id": 3, "status": 503, "env": "dev"}"#),
                log(r#"{"id": 4, "status": 599, "env": "prod"}"#),
            ],
        );
        assert_eq!(
            got,
            vec![
                serde_json::json!({"id": 1, "status": 500, "env": "prod"}),
                serde_json::json!({"id": 4, "status": 599, "env": "prod"}),
            ]
        );
        assert_eq!(metrics.discarded_events(), 2);
        assert_eq!(metrics.errors_total(), 0);
    }

    #[test]
    fn runtime_error_drops_and_counts_condition_error() {
        let (mut t, metrics) = build("condition = '.status >= 500'");
        let got = run(
            &mut t,
            vec![
                log(r#"{"status": "oops"}"#),
                log(r#"{"status": 501}"#),
                log(r#"{}"#),
            ],
        );
        assert_eq!(got, vec![serde_json::json!({"status": 501})]);
        assert_eq!(metrics.errors().get("condition"), Some(&2));
        assert_eq!(metrics.discarded_events(), 0);
    }

    #[test]
    fn non_boolean_result_drops_and_counts_condition_error() {
        let (mut t, metrics) = build("condition = '.flag'");
        let got = run(
            &mut t,
            vec![log(r#"{"flag": "yes"}"#), log(r#"{"flag": true}"#)],
        );
        assert_eq!(got, vec![serde_json::json!({"flag": true})]);
        assert_eq!(metrics.errors().get("condition"), Some(&1));
    }

    #[test]
    fn never_boolean_condition_fails_the_build() {
        let config: FilterConfig = toml::from_str(r#"condition = 'upcase("x")'"#).unwrap();
        let cx = TransformContext {
            id: Arc::from("t"),
            data_dir: PathBuf::new(),
            metrics: ComponentMetrics::detached("t"),
        };
        let err = config.build(&cx).err().unwrap().to_string();
        assert!(err.contains("must return a boolean"), "{err}");
        assert!(err.contains("string"), "{err}");
    }

    #[test]
    fn condition_cannot_modify_events() {
        let config: FilterConfig = toml::from_str("condition = '.a = true'").unwrap();
        let cx = TransformContext {
            id: Arc::from("t"),
            data_dir: PathBuf::new(),
            metrics: ComponentMetrics::detached("t"),
        };
        let err = config.build(&cx).err().unwrap().to_string();
        assert!(err.contains("invalid VRL condition"), "{err}");
    }

    #[test]
    fn metrics_pass_through() {
        let (mut t, metrics) = build("condition = 'false'");
        let m = Metric::new("m", MetricKind::Absolute, MetricValue::Gauge { value: 1.0 });
        let mut out = TransformOutput::default();
        t.transform(
            EventBatch::new(vec![Event::from(m), log(r#"{"a": 1}"#)]),
            &mut out,
        );
        assert_eq!(out.default.len(), 1);
        assert!(matches!(out.default[0], Event::Metric(_)));
        assert_eq!(metrics.discarded_events(), 1);
    }

    #[test]
    fn missing_condition_is_a_config_error() {
        assert!(toml::from_str::<FilterConfig>("").is_err());
        assert!(toml::from_str::<FilterConfig>("condition = 'true'\nx = 1").is_err());
    }
}
