//! `blackhole`: counts and discards.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use weir_pipeline::component::{Sink, SinkConfig, SinkContext, SinkInput};
use weir_pipeline::config::Secs;
use weir_pipeline::finalization::EventStatus;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

/// `type = "blackhole"`: accepts every event, counts it (as sent) and drops it. Events are
/// acknowledged as delivered.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlackholeConfig {
    /// Log a line with the totals and the rate every this many seconds, and a final line with the
    /// total and the duration at exit. It must be a positive, finite number; this is checked when
    /// the sink is built at `weir run`, not by `weir validate`. Default: none (silent; the totals
    /// are still in the metrics and in the summary at exit).
    #[serde(default)]
    pub print_interval_secs: Option<Secs>,
}

#[async_trait]
impl SinkConfig for BlackholeConfig {
    async fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BoxError> {
        Ok(Box::new(Blackhole {
            interval: self.print_interval_secs.map(Secs::duration),
            id: cx.id.to_string(),
        }))
    }

    fn input(&self) -> DataType {
        DataType::ALL
    }
}

struct Blackhole {
    interval: Option<Duration>,
    id: String,
}

#[async_trait]
impl Sink for Blackhole {
    async fn run(self: Box<Self>, mut input: SinkInput) -> Result<(), BoxError> {
        let metrics = input.metrics().clone();
        let started = Instant::now();
        let mut last_report = started;
        let mut total: u64 = 0;
        let mut since: u64 = 0;
        while let Some(mut batch) = input.next().await {
            let n = batch.len() as u64;
            total += n;
            since += n;
            metrics.add_sent(n);
            batch.finalize(EventStatus::Delivered);
            drop(batch);
            if let Some(i) = self.interval {
                let now = Instant::now();
                if now.duration_since(last_report) >= i {
                    let rate = since as f64 / now.duration_since(last_report).as_secs_f64();
                    tracing::info!(component = %self.id, total, "blackhole: {total} events received ({rate:.0} events/s)");
                    last_report = now;
                    since = 0;
                }
            }
        }
        let secs = started.elapsed().as_secs_f64();
        if self.interval.is_some() {
            tracing::info!(component = %self.id, total, "blackhole: {total} events in {secs:.2}s");
        }
        Ok(())
    }
}
