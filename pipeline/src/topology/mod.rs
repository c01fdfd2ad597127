//! The runtime: builds every component from a validated [`Config`] and runs each in its own
//! tokio task, wired by bounded buffers.
//!
//! ```text
//! source task ──Fanout──▶ [buffer] transform task ──Fanout──▶ [buffer] sink task
//!                 └──────▶ [buffer] sink task
//! ```
//!
//! Shutdown is a cascade: cancelling the [`ShutdownToken`] stops the sources; when a source's
//! task ends its senders drop, so its consumers' buffers drain and close; a transform then
//! flushes what it holds and ends; a sink sees its input end after the last batch, flushes and
//! acknowledges. [`RunningTopology::wait`] returns when every task has finished.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

mod parallel;
mod reload;
mod supervise;

pub use reload::{ReloadError, ReloadSummary};
pub use supervise::{panic_message, Fatal};
use supervise::{Common, Down, SinkParts, SourceParts, Supervised, TransformParts};

use crate::buffer::{
    bounded, on_disk, BufferReceiver, BufferSender, DiskOptions, Fanout, Fsync, Limits,
};
use crate::component::{SinkContext, SinkOutputs, TransformContext, TransformOutput};
use crate::config::{
    BufferConfig, BufferType, Config, FsyncPolicy, Graph, OutputId, TRANSFORM_QUEUE_BYTES,
    TRANSFORM_QUEUE_EVENTS,
};
use crate::event::{finalize_events, EventBatch};
use crate::finalization::EventStatus;
use crate::memory::{LimitOrigin, MemoryBudget};
use crate::metrics::{ComponentMetrics, MetricsRegistry};
use crate::shutdown::ShutdownToken;
use crate::tap::{TapSlot, Taps};
use crate::vocabulary::{ComponentKind, WhenFull};
use crate::BoxError;

/// One component's place in the graph, for the API and `weir graph`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ComponentInfo {
    /// The component's id.
    pub id: String,
    /// Source, transform or sink.
    pub kind: ComponentKind,
    /// Its `type`.
    #[serde(rename = "type")]
    pub type_name: String,
    /// What it reads (`id` or `id.output`).
    pub inputs: Vec<String>,
}

/// The components and edges of a configuration.
pub fn describe(config: &Config, graph: &Graph) -> Vec<ComponentInfo> {
    let mut out = Vec::new();
    for (id, s) in &config.sources {
        out.push(ComponentInfo {
            id: id.clone(),
            kind: ComponentKind::Source,
            type_name: s.type_name.clone(),
            inputs: Vec::new(),
        });
    }
    for (id, t) in &config.transforms {
        out.push(ComponentInfo {
            id: id.clone(),
            kind: ComponentKind::Transform,
            type_name: t.type_name.clone(),
            inputs: graph.inputs[id].iter().map(|o| o.to_string()).collect(),
        });
    }
    for (id, s) in &config.sinks {
        out.push(ComponentInfo {
            id: id.clone(),
            kind: ComponentKind::Sink,
            type_name: s.type_name.clone(),
            inputs: graph.inputs[id].iter().map(|o| o.to_string()).collect(),
        });
    }
    out
}

/// A component's task, with its id and kind.
type ComponentTask = (String, ComponentKind, JoinHandle<Result<(), BoxError>>);

/// The tasks of the running components: a reload adds to them while `wait` awaits them.
type SharedTasks = Arc<std::sync::Mutex<Vec<ComponentTask>>>;

/// A started pipeline.
pub struct RunningTopology {
    /// Every component's counters.
    pub registry: Arc<MetricsRegistry>,
    /// The graph that was started.
    pub components: Vec<ComponentInfo>,
    /// Every output's tap slot (`/api/tap`).
    pub taps: Arc<Taps>,
    shutdown: ShutdownToken,
    stop: ShutdownToken,
    tasks: SharedTasks,
    fatal: Option<mpsc::UnboundedReceiver<Fatal>>,
    state: reload::State,
}

/// How a component task ended.
#[derive(Debug)]
pub struct TaskOutcome {
    /// The component's id.
    pub id: String,
    /// Source, transform or sink.
    pub kind: ComponentKind,
    /// Why it failed, or `None` when it ended cleanly.
    pub error: Option<String>,
}

impl RunningTopology {
    /// Cancelling this token stops the sources, which starts the drain.
    pub fn shutdown_token(&self) -> ShutdownToken {
        self.shutdown.clone()
    }

    /// Cancelling this token makes the sinks give up at once (their retry loops end, leaving
    /// what they hold unacknowledged): for when the grace period of a shutdown expires.
    pub fn stop_token(&self) -> ShutdownToken {
        self.stop.clone()
    }

    /// The failures that must stop the pipeline (components with `on_failure = "exit"`):
    /// the runtime stops it and exits non-zero when one arrives. Taken once.
    pub fn take_fatal(&mut self) -> Option<mpsc::UnboundedReceiver<Fatal>> {
        self.fatal.take()
    }

    /// Applies a new configuration (loaded and checked, its graph resolved) to the running
    /// pipeline: only what changed is rebuilt; what cannot be changed without a restart is
    /// refused before anything is touched. See `reload.rs`.
    pub async fn reload(
        &mut self,
        config: Config,
        graph: &Graph,
    ) -> Result<ReloadSummary, ReloadError> {
        let components = describe(&config, graph);
        let summary = self.state.apply_and_remember(config, graph).await;
        if !matches!(summary, Err(ReloadError::NeedsRestart(_))) {
            self.components = components;
        }
        summary
    }

    /// Waits for every component to finish (those a reload starts meanwhile too).
    pub fn wait(&self) -> impl std::future::Future<Output = Vec<TaskOutcome>> + Send + 'static {
        let tasks = self.tasks.clone();
        async move { wait_all(tasks).await }
    }
}

async fn wait_all(tasks: SharedTasks) -> Vec<TaskOutcome> {
    let mut out = Vec::new();
    loop {
        let next = {
            let mut t = tasks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if t.is_empty() {
                None
            } else {
                Some(t.remove(0))
            }
        };
        let Some((id, kind, handle)) = next else {
            break;
        };
        {
            let error = match handle.await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(format!("task failed: {e}")),
            };
            if let Some(e) = &error {
                tracing::error!(component = %id, kind = kind.as_str(), "component stopped with an error: {e}");
            }
            out.push(TaskOutcome { id, kind, error });
        }
    }
    out
}

/// A sink's input buffer, in memory or on disk (`data_dir/buffers/<sink id>/`).
fn sink_buffer(
    id: &str,
    buffer: &BufferConfig,
    data_dir: &std::path::Path,
    memory: &Arc<MemoryBudget>,
    metrics: &Arc<ComponentMetrics>,
) -> Result<(BufferSender, BufferReceiver), BoxError> {
    match buffer.kind {
        BufferType::Memory => {
            let limits = Limits {
                max_events: buffer.max_events,
                max_bytes: buffer.max_size,
                when_full: buffer.when_full,
            };
            Ok(bounded(limits, memory.clone(), metrics.clone()))
        }
        BufferType::Disk => {
            let options = DiskOptions {
                dir: data_dir.join("buffers").join(id),
                max_bytes: buffer.max_size as u64,
                when_full: buffer.when_full,
                fsync: match buffer.fsync {
                    FsyncPolicy::Batch => Fsync::Batch,
                    FsyncPolicy::Interval => Fsync::Interval(buffer.fsync_interval_secs.duration()),
                },
                max_events: buffer.max_events,
            };
            on_disk(options, metrics.clone()).map_err(|e| format!("sink `{id}`: {e}").into())
        }
    }
}

/// Builds and starts every component. An error building any component stops the start:
/// what was already spawned is stopped, nothing is left running.
pub async fn start(config: Config, graph: &Graph) -> Result<RunningTopology, BoxError> {
    let shutdown = ShutdownToken::new();
    let stop = ShutdownToken::new();
    let mut tasks = Vec::new();
    match start_inner(config, graph, shutdown.clone(), stop.clone(), &mut tasks).await {
        Ok(r) => Ok(r),
        Err(e) => {
            shutdown.cancel();
            stop.cancel();
            for (_, _, t) in &tasks {
                t.abort();
            }
            Err(e)
        }
    }
}

async fn start_inner(
    config: Config,
    graph: &Graph,
    shutdown: ShutdownToken,
    stop: ShutdownToken,
    tasks: &mut Vec<ComponentTask>,
) -> Result<RunningTopology, BoxError> {
    let registry = Arc::new(MetricsRegistry::default());
    let memory = MemoryBudget::from_config(config.memory_limit);
    match (memory.limit(), memory.origin()) {
        (Some(limit), LimitOrigin::Cgroup(file)) => tracing::info!(
            memory_limit = limit,
            "memory_limit is {}% of the cgroup's limit ({}): sources pause above it",
            crate::memory::CGROUP_DEFAULT_PERCENT,
            file.display()
        ),
        (Some(limit), _) => tracing::debug!(memory_limit = limit, "memory limit"),
        (None, _) => tracing::debug!("no memory limit"),
    }
    memory.spawn_rss_poller();
    registry.set_memory(memory.clone());
    let components = describe(&config, graph);
    let data_dir = config.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .map_err(|e| format!("cannot create data_dir {}: {e}", data_dir.display()))?;

    let mut metrics: BTreeMap<String, Arc<ComponentMetrics>> = BTreeMap::new();
    let mut register = |id: &str, kind, ty: &str| {
        let m = Arc::new(ComponentMetrics::new(id, kind, ty));
        registry.register(m.clone());
        metrics.insert(id.to_string(), m.clone());
        m
    };
    for (id, s) in &config.sources {
        register(id, ComponentKind::Source, &s.type_name);
    }
    for (id, t) in &config.transforms {
        register(id, ComponentKind::Transform, &t.type_name);
    }
    for (id, s) in &config.sinks {
        register(id, ComponentKind::Sink, &s.type_name);
    }

    // Input buffers of transforms and sinks.
    let mut senders: BTreeMap<String, BufferSender> = BTreeMap::new();
    let mut receivers: BTreeMap<String, BufferReceiver> = BTreeMap::new();
    for id in config.transforms.keys() {
        let limits = Limits {
            max_events: TRANSFORM_QUEUE_EVENTS,
            max_bytes: TRANSFORM_QUEUE_BYTES,
            when_full: WhenFull::Block,
        };
        let (tx, rx) = bounded(limits, memory.clone(), metrics[id].clone());
        senders.insert(id.clone(), tx);
        receivers.insert(id.clone(), rx);
    }
    for (id, s) in &config.sinks {
        let (tx, rx) = sink_buffer(id, &s.buffer, &data_dir, &memory, &metrics[id])?;
        senders.insert(id.clone(), tx);
        receivers.insert(id.clone(), rx);
    }

    // One fan-out per output.
    let consumers = graph.consumers();
    let mut fanouts: BTreeMap<OutputId, Fanout> = BTreeMap::new();
    let mut tap_points = Vec::new();
    for oid in graph.outputs.keys() {
        let list = consumers
            .get(oid)
            .map(|cs| {
                cs.iter()
                    .map(|c| (Arc::<str>::from(c.as_str()), senders[c].clone()))
                    .collect()
            })
            .unwrap_or_default();
        let slot = TapSlot::new(&oid.component, oid.output.as_deref());
        tap_points.push((
            oid.clone(),
            consumers.get(oid).cloned().unwrap_or_default(),
            slot.clone(),
        ));
        fanouts.insert(
            oid.clone(),
            Fanout::new(list, metrics[&oid.component].clone()).with_tap(slot),
        );
    }
    let taps = Arc::new(Taps::new(tap_points));
    drop(senders);
    let routes = fanouts
        .iter()
        .map(|(o, f)| (o.clone(), f.routes()))
        .collect();
    let tap_slots = fanouts.iter().map(|(o, f)| (o.clone(), f.tap())).collect();
    let mut source_slots = BTreeMap::new();
    let fingerprints = reload::fingerprints_of(&config);
    let (memory_limit, api) = (config.memory_limit, format!("{:?}", config.api));
    let mut sink_slots = BTreeMap::new();
    let mut transform_slots = BTreeMap::new();
    let mut take_outputs = |id: &str| -> (Option<Fanout>, BTreeMap<String, Fanout>) {
        let keys: Vec<OutputId> = fanouts
            .keys()
            .filter(|k| k.component == id)
            .cloned()
            .collect();
        let mut default = None;
        let mut named = BTreeMap::new();
        for k in keys {
            if let Some(f) = fanouts.remove(&k) {
                match k.output {
                    None => default = Some(f),
                    Some(n) => {
                        named.insert(n, f);
                    }
                }
            }
        }
        (default, named)
    };

    // Sinks first, so that nothing is sent before a consumer runs. (A sink's own outputs
    // feed buffers that exist already; what it sends there waits for their consumers.)
    let (fatal_tx, fatal_rx) = mpsc::unbounded_channel();
    let common = |id: &str, kind, on_failure| Common {
        id: Arc::from(id),
        kind,
        on_failure,
        metrics: metrics[id].clone(),
        fatal: fatal_tx.clone(),
        stop: stop.clone(),
    };
    let Config {
        sources: source_entries,
        transforms: transform_entries,
        sinks: sink_entries,
        ..
    } = config;
    for (id, s) in sink_entries {
        let c = common(&id, ComponentKind::Sink, s.on_failure);
        let (_, named) = take_outputs(&id);
        let cx = SinkContext {
            id: c.id.clone(),
            data_dir: data_dir.clone(),
            metrics: c.metrics.clone(),
            registry: registry.clone(),
            outputs: SinkOutputs::new(named.clone()),
            stop: stop.clone(),
        };
        let sink = s
            .config
            .build(cx)
            .await
            .map_err(|e| format!("sink `{id}` ({}): {e}", s.type_name))?;
        let rx = receivers
            .remove(&id)
            .ok_or_else(|| format!("internal: no buffer for sink `{id}`"))?;
        let config: Arc<dyn crate::component::SinkConfig> = Arc::from(s.config);
        let slot = reload::SinkSlot {
            config: config.clone(),
            detach: Arc::new(crate::component::Detach::default()),
            done: ShutdownToken::new(),
            input: Arc::new(tokio::sync::Mutex::new(rx)),
            buffer: serde_json::to_string(&s.buffer).unwrap_or_default(),
        };
        let parts = SinkParts {
            config,
            data_dir: data_dir.clone(),
            registry: registry.clone(),
            outputs: named,
            input: slot.input.clone(),
            detach: slot.detach.clone(),
        };
        let task = reload::spawn_sink_task(c, parts, sink, slot.done.clone());
        sink_slots.insert(id.clone(), slot);
        tasks.push((id, ComponentKind::Sink, task));
    }

    for (id, t) in transform_entries {
        let c = common(&id, ComponentKind::Transform, t.on_failure);
        let cx = TransformContext {
            id: c.id.clone(),
            data_dir: data_dir.clone(),
            metrics: c.metrics.clone(),
        };
        let transform = t
            .config
            .build(&cx)
            .map_err(|e| format!("transform `{id}` ({}): {e}", t.type_name))?;
        let rx = receivers
            .remove(&id)
            .ok_or_else(|| format!("internal: no buffer for transform `{id}`"))?;
        let (default, named) = take_outputs(&id);
        let (replace, replacements) = mpsc::unbounded_channel();
        let done = ShutdownToken::new();
        transform_slots.insert(
            id.clone(),
            reload::TransformSlot {
                replace,
                done: done.clone(),
            },
        );
        let supervised = Supervised::new(
            c,
            TransformParts {
                config: t.config,
                context: cx,
            },
            transform,
        );
        tasks.push((
            id,
            ComponentKind::Transform,
            reload::spawn_transform_task(supervised, rx, replacements, (default, named), done),
        ));
    }

    for (id, s) in source_entries {
        let c = common(&id, ComponentKind::Source, s.on_failure);
        let (default, named) = take_outputs(&id);
        let slot = reload::SourceSlot {
            config: Arc::from(s.config),
            acknowledgements: s.acknowledgements,
            // Its own token, so that a reload can stop it alone.
            token: shutdown.child_token(),
            done: ShutdownToken::new(),
        };
        let parts = SourceParts {
            config: slot.config.clone(),
            data_dir: data_dir.clone(),
            registry: registry.clone(),
            acknowledgements: s.acknowledgements,
            default,
            named,
            shutdown: slot.token.clone(),
        };
        let (cx, ended) = parts.context(&c);
        let source = parts
            .config
            .build(cx)
            .await
            .map_err(|e| format!("source `{id}` ({}): {e}", s.type_name))?;
        let task = reload::spawn_source_task(c, parts, (source, ended), slot.done.clone());
        source_slots.insert(id.clone(), slot);
        tasks.push((id, ComponentKind::Source, task));
    }
    let tasks: SharedTasks = Arc::new(std::sync::Mutex::new(std::mem::take(tasks)));
    let mut state = reload::State {
        routes,
        taps: tap_slots,
        sources: source_slots,
        shutdown: shutdown.clone(),
        sinks: sink_slots,
        transforms: transform_slots,
        fingerprints: BTreeMap::new(),
        inputs: BTreeMap::new(),
        outputs: BTreeMap::new(),
        data_dir,
        memory_limit: None,
        api: String::new(),
        registry: registry.clone(),
        memory,
        stop: stop.clone(),
        fatal: fatal_tx,
        tasks: tasks.clone(),
    };
    state.remember(fingerprints, graph, memory_limit, api);

    Ok(RunningTopology {
        registry,
        components,
        taps,
        shutdown,
        stop,
        tasks,
        fatal: Some(fatal_rx),
        state,
    })
}

async fn emit(
    out: &mut TransformOutput,
    default: &mut Option<Fanout>,
    named: &mut BTreeMap<String, Fanout>,
    metrics: &ComponentMetrics,
) -> Result<(), crate::buffer::ClosedError> {
    if !out.default.is_empty() {
        let mut events = std::mem::take(&mut out.default);
        metrics.add_sent(events.len() as u64);
        match default {
            Some(f) => f.send(EventBatch::new(events)).await?,
            None => {
                metrics.add_discarded(events.len() as u64);
                finalize_events(&mut events, EventStatus::Delivered);
            }
        }
    }
    for (name, events) in out.named.iter_mut() {
        if events.is_empty() {
            continue;
        }
        let mut events = std::mem::take(events);
        metrics.add_sent(events.len() as u64);
        match named.get_mut(name) {
            Some(f) => f.send(EventBatch::new(events)).await?,
            None => {
                metrics.add_discarded(events.len() as u64);
                finalize_events(&mut events, EventStatus::Delivered);
            }
        }
    }
    Ok(())
}

/// Runs a transform until its input ends: a stateless one on as many lanes as the runtime has
/// worker threads ([`parallel`]), any other as one instance taking one batch at a time.
async fn run_transform(
    supervised: Supervised,
    rx: BufferReceiver,
    replacements: mpsc::UnboundedReceiver<reload::Control>,
    default: Option<Fanout>,
    named: BTreeMap<String, Fanout>,
) -> Result<(), BoxError> {
    match parallel::parallelism(&supervised) {
        0 | 1 => run_sequential(supervised, rx, replacements, default, named).await,
        width => parallel::run(supervised, rx, replacements, default, named, width).await,
    }
}

/// Runs one instance of a transform, one batch at a time, with its ticks and its flush.
async fn run_sequential(
    mut supervised: Supervised,
    mut rx: BufferReceiver,
    mut replacements: mpsc::UnboundedReceiver<reload::Control>,
    mut default: Option<Fanout>,
    mut named: BTreeMap<String, Fanout>,
) -> Result<(), BoxError> {
    let metrics = supervised.c.metrics.clone();
    let mut out = TransformOutput::new(named.keys().cloned());
    let ticker = |t: &dyn crate::component::Transform| {
        t.tick_interval().map(|d| {
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        })
    };
    let mut tick = ticker(supervised.transform());
    let mut reloadable = true;
    // A reload removed it: it ends once its input has been quiet for `Detach::QUIET`.
    let mut draining = false;
    loop {
        tokio::select! {
            r = replacements.recv(), if reloadable => {
                let (config, transform) = match r {
                    Some(reload::Control::Replace(config, transform)) => (config, transform),
                    Some(reload::Control::Drain) => {
                        draining = true;
                        continue;
                    }
                    None => {
                        reloadable = false;
                        continue;
                    }
                };
                // The old instance hands on what it holds (windows, partial groups) first.
                if let Err(Down(e)) = supervised.call(&mut out, 0, |t, out| t.flush(out)).await {
                    return Err(e.into());
                }
                if emit(&mut out, &mut default, &mut named, &metrics).await.is_err() {
                    return Err("every downstream component has stopped".into());
                }
                supervised.replace(config, transform);
                tick = ticker(supervised.transform());
                tracing::info!(component = %supervised.c.id, "transform rebuilt with its new options");
            }
            batch = async {
                if draining {
                    tokio::time::timeout(crate::component::Detach::QUIET, rx.recv()).await.ok().flatten()
                } else {
                    rx.recv().await
                }
            } => {
                let Some(batch) = batch else { break };
                let started = Instant::now();
                metrics.add_received(batch.len() as u64, 0);
                if let Err(Down(e)) = supervised.call(&mut out, batch.len(), |t, out| t.transform(batch, out)).await {
                    return Err(e.into());
                }
                metrics.observe_latency(started.elapsed());
                if emit(&mut out, &mut default, &mut named, &metrics).await.is_err() {
                    return Err("every downstream component has stopped".into());
                }
            }
            _ = async { match tick.as_mut() { Some(t) => { t.tick().await; } None => std::future::pending().await } } => {
                if let Err(Down(e)) = supervised.call(&mut out, 0, |t, out| t.on_tick(out)).await {
                    return Err(e.into());
                }
                if emit(&mut out, &mut default, &mut named, &metrics).await.is_err() {
                    return Err("every downstream component has stopped".into());
                }
            }
        }
    }
    if let Err(Down(e)) = supervised.call(&mut out, 0, |t, out| t.flush(out)).await {
        return Err(e.into());
    }
    let _ = emit(&mut out, &mut default, &mut named, &metrics).await;
    Ok(())
}
