//! `route`: splits a stream into named outputs by VRL conditions.
//!
//! ```toml
//! [transforms.split]
//! type = "route"
//! inputs = ["in"]
//! route.errors = '.status >= 500'
//! route.slow = '.duration_ms > 1000'
//!
//! [sinks.alerts]
//! inputs = ["split.errors"]
//! ```
//!
//! Each route is an output named after it (`split.errors`). An event goes to every route whose
//! condition is true (a copy each), and to `_unmatched` when none is. A route whose condition
//! fails on an event (or returns a non-boolean) does not match it; the failure is counted as a
//! `condition` error. Metrics and traces match no route: they go to `_unmatched`.
//! There is no default output.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use weir_pipeline::component::{
    Output, Transform, TransformConfig, TransformContext, TransformOutput,
};
use weir_pipeline::event::EventBatch;
use weir_pipeline::finalization::EventStatus;
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use crate::condition::{Condition, ErrorTally};

/// The output that receives events no route matched.
pub const UNMATCHED_OUTPUT: &str = "_unmatched";

fn default_true() -> bool {
    true
}

/// Configuration of the `route` transform.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The routes: a table of output name to VRL boolean condition, such as `route.errors =
    /// '.status >= 500'`. Each name becomes an output (`ID.errors`); an event is sent to every
    /// route it matches. At least one route is needed, a name cannot be empty, and `_unmatched` is
    /// reserved. Required.
    pub route: BTreeMap<String, String>,

    /// Send the events that match no route to the `_unmatched` output (read it as
    /// `ID._unmatched`). When `false` they are dropped and counted as discarded.
    /// Default: `true`.
    #[serde(default = "default_true")]
    pub reroute_unmatched: bool,
}

impl TransformConfig for RouteConfig {
    fn build(&self, cx: &TransformContext) -> Result<Box<dyn Transform>, BoxError> {
        if self.route.is_empty() {
            return Err("no routes: add at least one `route.NAME = \"VRL condition\"`".into());
        }
        let mut routes = Vec::with_capacity(self.route.len());
        for (name, source) in &self.route {
            if name.is_empty() {
                return Err("a route name cannot be empty".into());
            }
            if name == UNMATCHED_OUTPUT {
                return Err(format!(
                    "`{UNMATCHED_OUTPUT}` is reserved for the events no route matches; \
                     rename this route"
                )
                .into());
            }
            let condition =
                Condition::compile(source).map_err(|e| format!("route `{name}`: {e}"))?;
            routes.push((name.clone(), condition));
        }
        Ok(Box::new(Route {
            matched: Vec::with_capacity(routes.len()),
            routes,
            reroute_unmatched: self.reroute_unmatched,
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

    fn outputs(&self) -> Vec<Output> {
        let mut outputs: Vec<Output> = self
            .route
            .keys()
            .map(|name| Output::named(name.clone(), DataType::ALL))
            .collect();
        if self.reroute_unmatched {
            outputs.push(Output::named(UNMATCHED_OUTPUT, DataType::ALL));
        }
        outputs
    }
}

/// The running `route` transform.
struct Route {
    routes: Vec<(String, Condition)>,
    reroute_unmatched: bool,
    metrics: Arc<ComponentMetrics>,
    errors: ErrorTally,
    /// The routes the current event matched (reused, never reallocated).
    matched: Vec<usize>,
}

impl Transform for Route {
    fn transform(&mut self, batch: EventBatch, out: &mut TransformOutput) {
        let mut discarded = 0;
        for mut event in batch {
            self.matched.clear();
            if let Some(log) = event.as_log_mut() {
                for (i, (_, condition)) in self.routes.iter_mut().enumerate() {
                    match condition.check(log.value_mut()) {
                        Ok(true) => self.matched.push(i),
                        Ok(false) => {}
                        Err(e) => self.errors.add(&e),
                    }
                }
            }
            match self.matched.split_last() {
                Some((&last, rest)) => {
                    for &i in rest {
                        out.push_named(&self.routes[i].0, event.clone());
                    }
                    out.push_named(&self.routes[last].0, event);
                }
                None if self.reroute_unmatched => out.push_named(UNMATCHED_OUTPUT, event),
                None => {
                    // Unmatched, with `reroute_unmatched = false`: dropped on purpose.
                    event.finalize(EventStatus::Delivered);
                    discarded += 1;
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

    fn cx() -> TransformContext {
        TransformContext {
            id: Arc::from("t"),
            data_dir: PathBuf::new(),
            metrics: ComponentMetrics::detached("t"),
        }
    }

    fn build(toml_text: &str) -> (RouteConfig, Box<dyn Transform>, Arc<ComponentMetrics>) {
        let config: RouteConfig = toml::from_str(toml_text).unwrap();
        let cx = cx();
        let t = config.build(&cx).unwrap();
        (config, t, cx.metrics)
    }

    fn log(json: &str) -> Event {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        Event::Log(LogEvent::from_value(Value::from(v), Default::default()))
    }

    fn run(
        config: &RouteConfig,
        t: &mut Box<dyn Transform>,
        events: Vec<Event>,
    ) -> TransformOutput {
        let names = config.outputs().into_iter().filter_map(|o| o.name);
        let mut out = TransformOutput::new(names);
        t.transform(EventBatch::new(events), &mut out);
        out
    }

    fn ids(events: &[Event]) -> Vec<i64> {
        events
            .iter()
            .map(|e| e.to_json_value()["id"].as_i64().unwrap())
            .collect()
    }

    const CONFIG: &str = r#"
        [route]
        errors = '.status >= 500'
        prod = '.env == "prod"'
    "#;

    #[test]
    fn routes_to_every_match_and_unmatched() {
        let (config, mut t, metrics) = build(CONFIG);
        let out = run(
            &config,
            &mut t,
            vec![
                log(r#"{"id": 1, "status": 503, "env": "prod"}"#),
                log(r#"{"id": 2, "status": 200, "env": "dev"}"#),
                log(r#"{"id": 3, "status": 500, "env": "dev"}"#),
                log(r#"{"id": 4, "status": 201, "env": "prod"}"#),
            ],
        );
        assert!(out.default.is_empty());
        assert_eq!(ids(&out.named["errors"]), vec![1, 3]);
        assert_eq!(ids(&out.named["prod"]), vec![1, 4]);
        assert_eq!(ids(&out.named[UNMATCHED_OUTPUT]), vec![2]);
        // The copy is the whole event.
        assert_eq!(
            out.named["errors"][0].to_json_value(),
            serde_json::json!({"id": 1, "status": 503, "env": "prod"})
        );
        assert_eq!(metrics.errors_total(), 0);
        assert_eq!(metrics.discarded_events(), 0);
    }

    #[test]
    fn outputs_are_the_routes_and_unmatched() {
        let (config, _, _) = build(CONFIG);
        assert_eq!(
            config.outputs(),
            vec![
                Output::named("errors", DataType::ALL),
                Output::named("prod", DataType::ALL),
                Output::named("_unmatched", DataType::ALL),
            ]
        );
    }

    #[test]
    fn without_reroute_unmatched_drops_and_counts() {
        let (config, mut t, metrics) = build(&format!("reroute_unmatched = false\n{CONFIG}"));
        assert_eq!(config.outputs().len(), 2);
        let out = run(
            &config,
            &mut t,
            vec![
                log(r#"{"id": 1, "status": 200, "env": "dev"}"#),
                log(r#"{"id": 2, "status": 500, "env": "dev"}"#),
            ],
        );
        assert_eq!(ids(&out.named["errors"]), vec![2]);
        assert!(out.named["prod"].is_empty());
        assert!(out.default.is_empty());
        assert_eq!(metrics.discarded_events(), 1);
    }

    #[test]
    fn condition_error_means_no_match_and_counts() {
        let (config, mut t, metrics) = build(CONFIG);
        let out = run(
            &config,
            &mut t,
            vec![
                log(r#"{"id": 1, "status": "bad", "env": "prod"}"#),
                log(r#"{"id": 2, "status": "bad"}"#),
            ],
        );
        assert_eq!(ids(&out.named["prod"]), vec![1]);
        assert!(out.named["errors"].is_empty());
        assert_eq!(ids(&out.named[UNMATCHED_OUTPUT]), vec![2]);
        assert_eq!(metrics.errors().get("condition"), Some(&2));
    }

    #[test]
    fn metrics_go_to_unmatched() {
        let (config, mut t, _) = build(CONFIG);
        let m = Metric::new("m", MetricKind::Absolute, MetricValue::Gauge { value: 1.0 });
        let out = run(&config, &mut t, vec![Event::from(m)]);
        assert_eq!(out.named[UNMATCHED_OUTPUT].len(), 1);
        assert!(matches!(out.named[UNMATCHED_OUTPUT][0], Event::Metric(_)));
    }

    #[test]
    fn bad_configs_are_rejected() {
        let err = |text: &str| {
            let config: RouteConfig = toml::from_str(text).unwrap();
            config.build(&cx()).err().unwrap().to_string()
        };
        assert!(err("[route]").contains("no routes"));
        assert!(err("[route]\n_unmatched = 'true'").contains("reserved"));
        let e = err("[route]\nbad = '.status >='");
        assert!(
            e.contains("route `bad`") && e.contains("invalid VRL condition"),
            "{e}"
        );
        let e = err("[route]\nstr = 'upcase(\"x\")'");
        assert!(e.contains("must return a boolean"), "{e}");
        assert!(toml::from_str::<RouteConfig>("[route]\na = 'true'\n[routes]").is_err());
    }
}
