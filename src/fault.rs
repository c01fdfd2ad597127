//! Fault injection for the end-to-end tests: a transform and a sink that panic, registered
//! only when the environment has `WEIR_TEST_COMPONENTS=1` (never listed otherwise, never in
//! the documentation). They let the tests prove what supervision promises: a component that
//! dies is restarted (or stops the process), and what it held is not reported delivered.
//!
//! Both count the events they see and panic when the count passes `panic_after_events`, at
//! most `panics` times in the life of the process (a process-wide count per component id,
//! so the instance built by a restart goes on).

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use serde::Deserialize;
use weir_pipeline::component::{
    Registry, Sink, SinkConfig, SinkContext, SinkInput, Transform, TransformConfig,
    TransformContext, TransformOutput,
};
use weir_pipeline::event::EventBatch;
use weir_pipeline::finalization::EventStatus;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

/// The environment variable that registers these types.
pub const ENV: &str = "WEIR_TEST_COMPONENTS";

/// Registers the fault-injecting types when [`ENV`] is `1`.
pub fn register(r: &mut Registry) {
    if std::env::var(ENV).as_deref() == Ok("1") {
        r.add_transform::<FailTransformConfig>(
            "test_panic",
            "(tests) passes events on; panics after N events",
        );
        r.add_sink::<FailSinkConfig>(
            "test_panic",
            "(tests) appends each log to a file as JSON; panics after N events",
        );
    }
}

/// Panics so far, per component id, for the life of the process.
fn panics_so_far(id: &str) -> u64 {
    static COUNTS: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
    let m = COUNTS.get_or_init(Default::default);
    let mut g = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let n = g.entry(id.to_string()).or_insert(0);
    let before = *n;
    *n += 1;
    before
}

/// When to panic.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// Panic when this many events have been seen by one instance.
    pub panic_after_events: u64,
    /// Panic at most this many times in the life of the process. Default: 1.
    #[serde(default = "one")]
    pub panics: u64,
}

fn one() -> u64 {
    1
}

struct Counter {
    id: Arc<str>,
    trigger: Trigger,
    seen: u64,
}

impl Counter {
    fn see(&mut self, n: usize) {
        self.seen += n as u64;
        if self.seen >= self.trigger.panic_after_events
            && panics_so_far(&self.id) < self.trigger.panics
        {
            panic!(
                "test_panic `{}`: injected panic after {} events",
                self.id, self.seen
            );
        }
    }
}

/// `test_panic` transform options.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailTransformConfig {
    #[serde(flatten)]
    trigger: Trigger,
    /// Declare the transform stateless, so that it runs on every worker thread (each
    /// instance counts its own events). Default: false.
    #[serde(default)]
    stateless: bool,
    /// Sleep 0 to this many milliseconds on each batch, varying from batch to batch, so
    /// that batches transformed at once finish out of order. Default: 0.
    #[serde(default)]
    jitter_ms: u64,
}

impl TransformConfig for FailTransformConfig {
    fn build(&self, cx: &TransformContext) -> Result<Box<dyn Transform>, BoxError> {
        Ok(Box::new(FailTransform {
            counter: Counter {
                id: cx.id.clone(),
                trigger: self.trigger.clone(),
                seen: 0,
            },
            jitter_ms: self.jitter_ms,
            batches: 0,
        }))
    }

    fn stateless(&self) -> bool {
        self.stateless
    }
}

struct FailTransform {
    counter: Counter,
    jitter_ms: u64,
    batches: u64,
}

impl Transform for FailTransform {
    fn transform(&mut self, batch: EventBatch, out: &mut TransformOutput) {
        self.counter.see(batch.len());
        if self.jitter_ms > 0 {
            // 0, jitter, jitter/2, 0, ...: a slow batch, then quicker ones behind it.
            let ms = [0, self.jitter_ms, self.jitter_ms / 2][(self.batches % 3) as usize];
            self.batches += 1;
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        for e in batch {
            out.push(e);
        }
    }
}

/// `test_panic` sink options.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FailSinkConfig {
    /// The file each log is appended to, as one line of JSON.
    path: PathBuf,
    #[serde(flatten)]
    trigger: Trigger,
}

#[async_trait]
impl SinkConfig for FailSinkConfig {
    async fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BoxError> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        Ok(Box::new(FailSink {
            counter: Counter {
                id: cx.id.clone(),
                trigger: self.trigger.clone(),
                seen: 0,
            },
            file,
        }))
    }

    fn input(&self) -> DataType {
        DataType::LOG
    }
}

struct FailSink {
    counter: Counter,
    file: std::fs::File,
}

#[async_trait]
impl Sink for FailSink {
    async fn run(mut self: Box<Self>, mut input: SinkInput) -> Result<(), BoxError> {
        let metrics = input.metrics().clone();
        while let Some(mut batch) = input.next().await {
            // Panics with the batch in hand: it must not count as delivered.
            self.counter.see(batch.len());
            let mut text = Vec::new();
            for e in batch.iter() {
                if let Some(l) = e.as_log() {
                    l.write_json(&mut text)
                        .map_err(|e| format!("cannot encode: {e}"))?;
                    text.push(b'\n');
                }
            }
            self.file
                .write_all(&text)
                .map_err(|e| format!("cannot write: {e}"))?;
            metrics.add_sent(batch.len() as u64);
            batch.finalize(EventStatus::Delivered);
        }
        Ok(())
    }
}
