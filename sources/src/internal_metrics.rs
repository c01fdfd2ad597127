//! `internal_metrics`: Weir's own metrics as metric events.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use weir_pipeline::component::{Output, Source, SourceConfig, SourceContext};
use weir_pipeline::config::Secs;
use weir_pipeline::event::{Event, EventBatch, EventMetadata};
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

/// `type = "internal_metrics"`: every `scrape_interval_secs`, emits one metric event per
/// component counter (`weir_component_received_events_total`, `..._sent_events_total`,
/// `..._errors_total{error_type}`, `..._discarded_events_total`, `weir_buffer_events`,
/// `weir_component_latency_seconds`, ...), tagged `component_id`, `component_kind`,
/// `component_type`. All are absolute values.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InternalMetricsConfig {
    /// Seconds between two reports. It must be a positive, finite number; this is checked when the
    /// source is built at `weir run`, not by `weir validate`. Default: 5.
    #[serde(default = "default_interval")]
    pub scrape_interval_secs: Secs,
    /// The namespace set on every metric. Encoders and `/metrics` join it to the name as
    /// `namespace_name`. Default: `weir`.
    #[serde(default = "default_namespace")]
    pub namespace: String,
}

fn default_interval() -> Secs {
    Secs::from_secs(5)
}

fn default_namespace() -> String {
    "weir".into()
}

#[async_trait]
impl SourceConfig for InternalMetricsConfig {
    async fn build(&self, mut cx: SourceContext) -> Result<Source, BoxError> {
        let period = self.scrape_interval_secs.duration();
        let namespace = self.namespace.clone();
        Ok(Box::pin(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cx.shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let events: Vec<Event> = cx
                    .registry
                    .to_events()
                    .into_iter()
                    .map(|mut m| {
                        m.namespace = Some(namespace.clone());
                        m.metadata = EventMetadata::new(Some(cx.id.clone()));
                        Event::from(m)
                    })
                    .collect();
                cx.metrics.add_received(events.len() as u64, 0);
                if cx.out.send(EventBatch::new(events)).await.is_err() {
                    break;
                }
            }
            Ok(())
        }))
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::default_output(DataType::METRIC)]
    }
}
