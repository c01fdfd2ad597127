//! Test components for in-process runtime tests: a counting source, a passthrough transform
//! and a sink that can be stalled and can reject. They talk to the test through a named
//! shared [`State`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use serde::Deserialize;
use weir_pipeline::component::{
    Output, Registry, Sink, SinkConfig, SinkContext, SinkInput, Source, SourceConfig,
    SourceContext, Transform, TransformConfig, TransformContext, TransformOutput,
};
use weir_pipeline::config::{load_str, resolve_graph};
use weir_pipeline::event::{EventBatch, LogEvent, Value};
use weir_pipeline::finalization::{BatchNotifier, BatchStatus, EventStatus};
use weir_pipeline::topology::{self, RunningTopology};
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

#[derive(Default)]
pub struct State {
    pub created: AtomicU64,
    pub delivered: Mutex<Vec<i64>>,
    pub statuses: Mutex<Vec<BatchStatus>>,
    pub gate: Mutex<Option<tokio::sync::watch::Sender<bool>>>,
}

impl State {
    pub fn delivered_count(&self) -> usize {
        self.delivered.lock().unwrap().len()
    }
    pub fn open_gate(&self) {
        if let Some(g) = self.gate.lock().unwrap().as_ref() {
            let _ = g.send(true);
        }
    }
}

fn states() -> &'static Mutex<HashMap<String, Arc<State>>> {
    static S: OnceLock<Mutex<HashMap<String, Arc<State>>>> = OnceLock::new();
    S.get_or_init(Default::default)
}

/// The shared state called `name` (created on first use).
pub fn state(name: &str) -> Arc<State> {
    states()
        .lock()
        .unwrap()
        .entry(name.to_string())
        .or_default()
        .clone()
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CountingSource {
    name: String,
    count: u64,
    batch: usize,
}

#[async_trait]
impl SourceConfig for CountingSource {
    async fn build(&self, mut cx: SourceContext) -> Result<Source, BoxError> {
        let st = state(&self.name);
        let (count, batch) = (self.count, self.batch);
        Ok(Box::pin(async move {
            let mut seq = 0u64;
            let mut waits = Vec::new();
            while seq < count {
                let n = (batch as u64).min(count - seq);
                let mut b = EventBatch::with_capacity(n as usize);
                for _ in 0..n {
                    let mut l = LogEvent::default();
                    l.insert_field("seq", Value::Integer(seq as i64));
                    b.push(l);
                    seq += 1;
                }
                st.created.fetch_add(n, Ordering::SeqCst);
                if cx.acknowledgements {
                    let (notifier, rx) = BatchNotifier::new_with_receiver();
                    b.attach_notifier(&notifier);
                    waits.push(rx);
                }
                if cx.out.send(b).await.is_err() {
                    break;
                }
            }
            for rx in waits {
                let s = rx.wait().await;
                st.statuses.lock().unwrap().push(s);
            }
            Ok(())
        }))
    }
    fn outputs(&self) -> Vec<Output> {
        vec![Output::default_output(DataType::LOG)]
    }
    fn can_acknowledge(&self) -> bool {
        true
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Passthrough {}

struct Pass;
impl Transform for Pass {
    fn transform(&mut self, batch: EventBatch, out: &mut TransformOutput) {
        out.default.extend(batch);
    }
}

impl TransformConfig for Passthrough {
    fn build(&self, _cx: &TransformContext) -> Result<Box<dyn Transform>, BoxError> {
        Ok(Box::new(Pass))
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatedSink {
    name: String,
    #[serde(default)]
    stalled: bool,
    #[serde(default)]
    reject: bool,
}

struct Gated {
    state: Arc<State>,
    gate: tokio::sync::watch::Receiver<bool>,
    reject: bool,
}

#[async_trait]
impl SinkConfig for GatedSink {
    async fn build(&self, _cx: SinkContext) -> Result<Box<dyn Sink>, BoxError> {
        let st = state(&self.name);
        let (tx, rx) = tokio::sync::watch::channel(!self.stalled);
        *st.gate.lock().unwrap() = Some(tx);
        Ok(Box::new(Gated {
            state: st,
            gate: rx,
            reject: self.reject,
        }))
    }
    fn input(&self) -> DataType {
        DataType::LOG
    }
}

#[async_trait]
impl Sink for Gated {
    async fn run(mut self: Box<Self>, mut input: SinkInput) -> Result<(), BoxError> {
        loop {
            while !*self.gate.borrow() {
                if self.gate.changed().await.is_err() {
                    break;
                }
            }
            let Some(mut batch) = input.next().await else {
                break;
            };
            {
                let mut d = self.state.delivered.lock().unwrap();
                for e in batch.iter() {
                    if let Some(Value::Integer(i)) = e.as_log().and_then(|l| l.get_field("seq")) {
                        d.push(*i);
                    }
                }
            }
            batch.finalize(if self.reject {
                EventStatus::Rejected
            } else {
                EventStatus::Delivered
            });
        }
        Ok(())
    }
}

pub fn registry() -> Registry {
    let mut r = Registry::default();
    r.add_source::<CountingSource>("counting", "test");
    r.add_transform::<Passthrough>("passthrough", "test");
    r.add_sink::<GatedSink>("gated", "test");
    r
}

/// Loads `toml` with the test registry and starts it.
pub async fn start(toml: &str) -> RunningTopology {
    let config = load_str("test.toml", toml, &registry(), &|_| None)
        .unwrap_or_else(|e| panic!("config: {e}"));
    let graph = resolve_graph(&config, false).unwrap_or_else(|e| panic!("graph: {e}"));
    topology::start(config, &graph).await.expect("start")
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsOnlySink {}

#[async_trait]
impl SinkConfig for MetricsOnlySink {
    async fn build(&self, _cx: SinkContext) -> Result<Box<dyn Sink>, BoxError> {
        Err("test sink is not meant to run".into())
    }
    fn input(&self) -> DataType {
        DataType::METRIC
    }
}

/// The real components plus the test ones.
pub fn full_registry() -> Registry {
    let mut r = registry();
    // The `hubble_jsonpb` codec and the record types the sources decode into.
    weir_records::register(&mut r);
    weir_sources::register(&mut r);
    weir_transforms::register(&mut r);
    weir_sinks::register(&mut r);
    r.add_sink::<MetricsOnlySink>("metrics_only", "test: accepts only metrics");
    r
}
