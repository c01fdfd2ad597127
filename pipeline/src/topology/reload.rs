//! Applying a new configuration to a running pipeline (`weir run`'s reload: SIGHUP,
//! `POST /api/reload`, `--watch-config`).
//!
//! The new configuration arrives loaded and checked (an invalid one never gets here). It is
//! compared with the running one component by component (each entry's `fingerprint`, a
//! digest of its table as parsed) and only what differs is touched:
//!
//! - an unchanged component keeps running, with its buffer, its checkpoints and what it holds;
//! - a **changed sink** is taken off its input at a batch boundary (`Detach::handoff`): the old
//!   instance delivers and acknowledges what it took and returns, and the new instance reads
//!   the same buffer from where the old one stopped. Nothing is read twice or skipped. If its
//!   `inputs` changed, its producers' route tables are edited first. The new instance is
//!   built before the old one stops; if that fails (a port the old one holds), it is built
//!   again once the old one stopped, and if that fails too, the old options are built again
//!   and the reload reports the failure;
//! - an **added sink** gets a buffer and is started, then its producers start sending to it;
//! - a **removed sink** stops receiving (its producers' route tables drop it), delivers what its
//!   buffer holds (`Detach::drain`), and ends;
//! - a **changed transform** (same `inputs`, same outputs) is built anew and takes over between
//!   two batches, after the old instance flushed what it held.
//!
//! - a **changed source** (same outputs) is stopped (it delivers what it read and saves its
//!   checkpoints, as at shutdown) and started again with its new options on the same outputs;
//!   the tables of its outputs are held meanwhile, so its consumers never see their input end.
//!
//! - an **added source or transform** gets a table for each of its outputs and, for a
//!   transform, a buffer it adds to its inputs' tables; sources start last, once everything
//!   they feed is wired. A **removed transform** leaves its inputs' tables and ends once its
//!   input is quiet; a **removed source** stops as at shutdown. A transform whose `inputs`
//!   changed is rewired like a sink.
//!
//! What this pass cannot apply without a restart is refused before anything is touched, and
//! the reload reports it: a source or transform whose outputs changed (a `route`'s routes),
//! a component that changed kind, a sink's buffer settings, a sink with outputs of its own
//! (`dead_letter`), `data_dir`, `memory_limit`. Taps (`weir tap`, the console) see the
//! outputs the pipeline started with.
//! (`[api]` changes are applied at the next start; a reload warns that it left them.)

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use super::supervise::{self, Common, SinkParts, SourceParts};
use super::{ComponentTask, SharedTasks};
use crate::buffer::{BufferReceiver, BufferSender, Fanout, Routes};
use crate::component::{
    Detach, Sink, SinkConfig, SinkContext, SinkOutputs, Source, SourceConfig, Transform,
    TransformConfig, TransformContext,
};
use crate::config::{Config, Graph, OutputId};
use crate::memory::MemoryBudget;
use crate::metrics::{ComponentMetrics, MetricsRegistry};
use crate::shutdown::ShutdownToken;
use crate::vocabulary::{ComponentKind, OnFailure};
use crate::BoxError;

/// How long a reload waits for a replaced sink to let go of what it holds when the new
/// instance could not be built while the old one ran.
const HANDOFF_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// What a reload tells a running transform.
pub(super) enum Control {
    /// Take over from this instance, built from these options (after flushing).
    Replace(Box<dyn TransformConfig>, Box<dyn Transform>),
    /// It was removed: end once the input is quiet (its producers no longer send to it).
    Drain,
}

/// A running sink, as a reload sees it.
pub(super) struct SinkSlot {
    /// The options it runs with.
    pub config: Arc<dyn SinkConfig>,
    pub detach: Arc<Detach>,
    /// Fires when its task has ended.
    pub done: ShutdownToken,
    pub input: Arc<tokio::sync::Mutex<BufferReceiver>>,
    /// Its buffer settings, as JSON (a change needs a restart).
    pub buffer: String,
}

/// A running source, as a reload sees it.
pub(super) struct SourceSlot {
    /// The options it runs with.
    pub config: Arc<dyn SourceConfig>,
    pub acknowledgements: bool,
    /// Its own shutdown token (a child of the pipeline's): a reload that replaces it stops it.
    pub token: ShutdownToken,
    /// Fires when its task has ended.
    pub done: ShutdownToken,
}

/// A running transform, as a reload sees it.
pub(super) struct TransformSlot {
    pub replace: mpsc::UnboundedSender<Control>,
    /// Fires when its task has ended.
    pub done: ShutdownToken,
}

/// What the runtime keeps to apply a reload.
pub(super) struct State {
    pub routes: BTreeMap<OutputId, Weak<Routes>>,
    /// Every output's tap slot.
    pub taps: BTreeMap<OutputId, Arc<crate::tap::TapSlot>>,
    pub sources: BTreeMap<String, SourceSlot>,
    /// The pipeline's shutdown (sources' tokens are its children).
    pub shutdown: ShutdownToken,
    pub sinks: BTreeMap<String, SinkSlot>,
    pub transforms: BTreeMap<String, TransformSlot>,
    /// Every component's kind and fingerprint.
    pub fingerprints: BTreeMap<String, (ComponentKind, u64)>,
    /// What each transform and sink reads.
    pub inputs: BTreeMap<String, Vec<OutputId>>,
    /// The outputs of each transform.
    pub outputs: BTreeMap<String, Vec<OutputId>>,
    pub data_dir: std::path::PathBuf,
    pub memory_limit: Option<u64>,
    pub api: String,
    pub registry: Arc<MetricsRegistry>,
    pub memory: Arc<MemoryBudget>,
    pub stop: ShutdownToken,
    pub fatal: supervise::FatalTx,
    pub tasks: SharedTasks,
}

/// What a reload changed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReloadSummary {
    /// Sinks started.
    pub added: Vec<String>,
    /// Sinks drained and stopped.
    pub removed: Vec<String>,
    /// Sinks and transforms rebuilt with their new options.
    pub changed: Vec<String>,
    /// Components left as they were.
    pub unchanged: usize,
    /// Settings left for the next start (`[api]`).
    pub left_for_restart: Vec<String>,
}

/// Why a reload was not applied, or applied only in part.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Nothing was touched: the change needs a restart.
    #[error("needs a restart (nothing was changed): {0}")]
    NeedsRestart(String),
    /// A component could not be built; what is said was left running.
    #[error("{0}")]
    Build(String),
}

impl ReloadError {
    /// The `outcome` label of `weir_config_reloads_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::NeedsRestart(_) => "needs_restart",
            Self::Build(_) => "failed",
        }
    }
}

/// Every component's kind and fingerprint.
pub(super) fn fingerprints_of(config: &Config) -> BTreeMap<String, (ComponentKind, u64)> {
    let mut m = BTreeMap::new();
    for (id, s) in &config.sources {
        m.insert(id.clone(), (ComponentKind::Source, s.fingerprint));
    }
    for (id, t) in &config.transforms {
        m.insert(id.clone(), (ComponentKind::Transform, t.fingerprint));
    }
    for (id, s) in &config.sinks {
        m.insert(id.clone(), (ComponentKind::Sink, s.fingerprint));
    }
    m
}

fn outputs_of(graph: &Graph, id: &str) -> Vec<OutputId> {
    graph
        .outputs
        .keys()
        .filter(|o| o.component == id)
        .cloned()
        .collect()
}

impl State {
    /// Applies `config`, then records it as the running one (but for what failed to apply).
    pub async fn apply_and_remember(
        &mut self,
        config: Config,
        graph: &Graph,
    ) -> Result<ReloadSummary, ReloadError> {
        let previous = self.fingerprints.clone();
        let fingerprints = fingerprints_of(&config);
        let (memory_limit, api) = (config.memory_limit, format!("{:?}", config.api));
        let (outcome, failed) = self.apply(config, graph).await?;
        self.remember(fingerprints, graph, memory_limit, api);
        for id in &failed {
            match previous.get(id) {
                Some(f) => self.fingerprints.insert(id.clone(), *f),
                None => self.fingerprints.remove(id),
            };
        }
        outcome
    }

    /// Records a started configuration (at start, and after each reload).
    pub fn remember(
        &mut self,
        fingerprints: BTreeMap<String, (ComponentKind, u64)>,
        graph: &Graph,
        memory_limit: Option<u64>,
        api: String,
    ) {
        self.outputs = fingerprints
            .iter()
            .filter(|(_, (k, _))| *k == ComponentKind::Transform)
            .map(|(id, _)| (id.clone(), outputs_of(graph, id)))
            .collect();
        self.fingerprints = fingerprints;
        self.inputs = graph.inputs.clone();
        // Tables of components that have ended (removed ones once drained).
        self.routes.retain(|_, r| r.strong_count() > 0);
        let routes = &self.routes;
        self.taps.retain(|o, _| routes.contains_key(o));
        self.memory_limit = memory_limit;
        self.api = api;
    }

    /// What can not be reloaded in place, one line each; empty when all of it can.
    fn blockers(&self, config: &Config, graph: &Graph) -> Vec<String> {
        let mut why = Vec::new();
        if config.data_dir != self.data_dir {
            why.push("`data_dir` changed".to_string());
        }
        if config.memory_limit != self.memory_limit {
            why.push("`memory_limit` changed".to_string());
        }
        let old = |id: &str| self.fingerprints.get(id).copied();
        let outputs_before = |id: &str| -> Vec<&OutputId> {
            self.routes.keys().filter(|o| o.component == id).collect()
        };
        let outputs_after = |id: &str| -> Vec<&OutputId> {
            graph.outputs.keys().filter(|o| o.component == id).collect()
        };
        let entries = config
            .sources
            .iter()
            .map(|(id, s)| (id, ComponentKind::Source, s.fingerprint))
            .chain(
                config
                    .transforms
                    .iter()
                    .map(|(id, t)| (id, ComponentKind::Transform, t.fingerprint)),
            )
            .chain(
                config
                    .sinks
                    .iter()
                    .map(|(id, s)| (id, ComponentKind::Sink, s.fingerprint)),
            );
        for (id, kind, fingerprint) in entries {
            match old(id) {
                Some((k, _)) if k != kind => why.push(format!(
                    "`{id}` changed from a {} to a {}",
                    k.as_str(),
                    kind.as_str()
                )),
                // A source's or a transform's outputs are the fan-outs its task holds.
                Some((_, f))
                    if f != fingerprint
                        && kind != ComponentKind::Sink
                        && outputs_before(id) != outputs_after(id) =>
                {
                    why.push(format!("{} `{id}`: its outputs changed", kind.as_str()))
                }
                _ => {}
            }
        }
        for (id, s) in &config.sinks {
            let has_outputs = graph.outputs.keys().any(|o| o.component == *id);
            match self.sinks.get(id) {
                Some(slot) if old(id).map(|x| x.1) != Some(s.fingerprint) => {
                    if serde_json::to_string(&s.buffer).unwrap_or_default() != slot.buffer {
                        why.push(format!("sink `{id}`: its buffer settings changed"));
                    }
                    if has_outputs {
                        why.push(format!("sink `{id}` has outputs of its own"));
                    }
                }
                None if has_outputs => {
                    why.push(format!("sink `{id}` added with outputs of its own"))
                }
                _ => {}
            }
        }
        why
    }

    /// The buffer `id` reads, from any table that sends to it.
    fn sender_of(&self, id: &str) -> Option<BufferSender> {
        self.routes
            .values()
            .filter_map(Weak::upgrade)
            .find_map(|r| r.sender(id))
    }

    /// Applies `config` (loaded and checked, its graph resolved). `Err`: nothing was
    /// touched. `Ok`: the outcome, and the components that could not take their new options.
    ///
    /// The order keeps every consumer fed: what is new is built and wired first, what
    /// changed is rewired and rebuilt, what was removed stops last; every output's table is
    /// held meanwhile, so no consumer sees its input end because its producer was replaced.
    async fn apply(
        &mut self,
        mut config: Config,
        graph: &Graph,
    ) -> Result<(Result<ReloadSummary, ReloadError>, Vec<String>), ReloadError> {
        let blockers = self.blockers(&config, graph);
        if !blockers.is_empty() {
            return Err(ReloadError::NeedsRestart(blockers.join("; ")));
        }
        let mut summary = ReloadSummary::default();
        if format!("{:?}", config.api) != self.api {
            summary.left_for_restart.push("[api]".into());
        }
        let _held: Vec<Arc<Routes>> = self.routes.values().filter_map(Weak::upgrade).collect();
        let known: std::collections::BTreeSet<String> = self.fingerprints.keys().cloned().collect();
        let is_new = |id: &str| !known.contains(id);

        // Transforms first, built before anything is touched: a transform that cannot be
        // built leaves the whole reload undone.
        let mut replacements = Vec::new();
        let mut added_transforms = Vec::new();
        for (id, t) in std::mem::take(&mut config.transforms) {
            let changed = self
                .fingerprints
                .get(&id)
                .is_some_and(|(_, f)| *f != t.fingerprint);
            if !changed && !is_new(&id) {
                summary.unchanged += 1;
                continue;
            }
            let metrics = match self.metrics(&id) {
                Ok(m) => m,
                Err(_) => Arc::new(ComponentMetrics::new(
                    id.as_str(),
                    ComponentKind::Transform,
                    t.type_name.as_str(),
                )),
            };
            let cx = TransformContext {
                id: Arc::from(id.as_str()),
                data_dir: self.data_dir.clone(),
                metrics,
            };
            let transform = t.config.build(&cx).map_err(|e| {
                ReloadError::Build(format!("transform `{id}` ({}): {e}", t.type_name))
            })?;
            if is_new(&id) {
                added_transforms.push((id, t, cx, transform));
            } else {
                replacements.push((id, t.config, transform));
            }
        }

        // New sources: their outputs' tables now (the new components that read them add
        // themselves below); the sources start last, once everything is wired.
        let mut new_tables: Vec<Arc<Routes>> = Vec::new();
        let mut new_sources = Vec::new();
        for (id, s) in std::mem::take(&mut config.sources) {
            if !is_new(&id) {
                config.sources.insert(id, s);
                continue;
            }
            let metrics = Arc::new(ComponentMetrics::new(
                id.as_str(),
                ComponentKind::Source,
                s.type_name.as_str(),
            ));
            self.registry.register(metrics.clone());
            let outputs = self.new_outputs(&id, graph, &metrics, &mut new_tables);
            new_sources.push((id, s, metrics, outputs));
        }

        // New transforms, each after its inputs: a buffer, a table for each output (its
        // consumers are existing components, or new ones that add themselves below), and it
        // joins its inputs' tables.
        let mut added_transforms: BTreeMap<String, _> = added_transforms
            .into_iter()
            .map(|(id, t, cx, transform)| (id.clone(), (id, t, cx, transform)))
            .collect();
        let added_transforms: Vec<_> = graph
            .transform_order
            .iter()
            .filter_map(|id| added_transforms.remove(id))
            .collect();
        let mut new_transforms = Vec::new();
        for (id, t, cx, transform) in added_transforms {
            self.registry.register(cx.metrics.clone());
            let limits = crate::buffer::Limits {
                max_events: crate::config::TRANSFORM_QUEUE_EVENTS,
                max_bytes: crate::config::TRANSFORM_QUEUE_BYTES,
                when_full: crate::vocabulary::WhenFull::Block,
            };
            let (tx, rx) = crate::buffer::bounded(limits, self.memory.clone(), cx.metrics.clone());
            let outputs = self.new_outputs(&id, graph, &cx.metrics, &mut new_tables);
            for o in graph.inputs.get(&id).into_iter().flatten() {
                if let Some(r) = self.routes.get(o).and_then(Weak::upgrade) {
                    r.add(Arc::from(id.as_str()), tx.clone());
                }
            }
            drop(tx);
            new_transforms.push((id, t, cx, transform, rx, outputs));
        }
        // New consumers of new transforms that already exist (rewired below) find the new
        // tables through `self.routes`; so do new sinks.
        for (id, t, cx, transform, rx, outputs) in new_transforms {
            let c = self.common(
                &id,
                ComponentKind::Transform,
                cx.metrics.clone(),
                t.on_failure,
            );
            let supervised = super::supervise::Supervised::new(
                c,
                super::supervise::TransformParts {
                    config: t.config,
                    context: cx,
                },
                transform,
            );
            let (replace, control) = mpsc::unbounded_channel();
            let done = ShutdownToken::new();
            let task = spawn_transform_task(supervised, rx, control, outputs, done.clone());
            push_task(&self.tasks, (id.clone(), ComponentKind::Transform, task));
            self.transforms
                .insert(id.clone(), TransformSlot { replace, done });
            self.inputs.insert(
                id.clone(),
                graph.inputs.get(&id).cloned().unwrap_or_default(),
            );
            summary.added.push(id);
        }
        // Changed transforms: rewired if their inputs changed, then rebuilt between batches.
        for (id, config, transform) in replacements {
            let new_inputs = graph.inputs.get(&id).cloned().unwrap_or_default();
            self.rewire(&id, &new_inputs);
            if let Some(slot) = self.transforms.get(&id) {
                // The task takes it between two batches; if the task has ended, so has the
                // pipeline's use of it.
                let _ = slot.replace.send(Control::Replace(config, transform));
            }
            summary.changed.push(id);
        }

        // Removed sinks: no producer sends to them any more, then they drain and end.
        let removed: Vec<String> = self
            .sinks
            .keys()
            .filter(|id| !config.sinks.contains_key(*id))
            .cloned()
            .collect();
        for id in removed {
            self.leave_inputs(&id);
            if let Some(slot) = self.sinks.remove(&id) {
                slot.detach.drain();
                // Its counters go once it has delivered what it held.
                self.forget_when_done(&id, slot.done);
            }
            summary.removed.push(id);
        }

        // Changed and added sinks.
        let mut failures = Vec::new();
        let mut failed = Vec::new();
        for (id, s) in std::mem::take(&mut config.sinks) {
            let new_inputs = graph.inputs.get(&id).cloned().unwrap_or_default();
            let existed = self.sinks.contains_key(&id);
            let done = match self.sinks.get(&id) {
                Some(_) if self.fingerprints.get(&id).map(|x| x.1) == Some(s.fingerprint) => {
                    summary.unchanged += 1;
                    continue;
                }
                Some(_) => {
                    self.rewire(&id, &new_inputs);
                    self.replace_sink(&id, s).await
                }
                None => self.add_sink(&id, s, &new_inputs).await,
            };
            match done {
                Ok(()) if existed => summary.changed.push(id),
                Ok(()) => summary.added.push(id),
                Err(e) => {
                    failures.push(e.to_string());
                    failed.push(id);
                }
            }
        }
        // Changed sources: stopped (they deliver what they read and save their checkpoints),
        // then started again with their new options on the same outputs.
        for (id, s) in std::mem::take(&mut config.sources) {
            if self.fingerprints.get(&id).map(|x| x.1) == Some(s.fingerprint) {
                summary.unchanged += 1;
                continue;
            }
            match self.replace_source(&id, s).await {
                Ok(()) => summary.changed.push(id),
                Err(e) => {
                    failures.push(e.to_string());
                    failed.push(id);
                }
            }
        }
        // New sources start, on the tables made above.
        for (id, s, metrics, (default, named)) in new_sources {
            let c = self.common(&id, ComponentKind::Source, metrics, s.on_failure);
            let slot = SourceSlot {
                config: Arc::from(s.config),
                acknowledgements: s.acknowledgements,
                token: self.shutdown.child_token(),
                done: ShutdownToken::new(),
            };
            let parts = SourceParts {
                config: slot.config.clone(),
                data_dir: self.data_dir.clone(),
                registry: self.registry.clone(),
                acknowledgements: slot.acknowledgements,
                default,
                named,
                shutdown: slot.token.clone(),
            };
            let (cx, ended) = parts.context(&c);
            match parts.config.build(cx).await {
                Ok(source) => {
                    let task = spawn_source_task(c, parts, (source, ended), slot.done.clone());
                    push_task(&self.tasks, (id.clone(), ComponentKind::Source, task));
                    self.sources.insert(id.clone(), slot);
                    summary.added.push(id);
                }
                Err(e) => {
                    failures.push(format!("source `{id}` ({}): {e}", s.type_name));
                    failed.push(id);
                }
            }
        }

        // Removed transforms leave their inputs' tables and end once their input is quiet;
        // removed sources stop as at shutdown. Their counters go when they have ended.
        let removed: Vec<String> = self
            .transforms
            .keys()
            .filter(|id| !graph.inputs.contains_key(*id))
            .cloned()
            .collect();
        for id in removed {
            self.leave_inputs(&id);
            if let Some(slot) = self.transforms.remove(&id) {
                let _ = slot.replace.send(Control::Drain);
                self.forget_when_done(&id, slot.done);
            }
            summary.removed.push(id);
        }
        let removed: Vec<String> = self
            .sources
            .keys()
            .filter(|id| !graph.outputs.keys().any(|o| o.component == **id))
            .cloned()
            .collect();
        for id in removed {
            if let Some(slot) = self.sources.remove(&id) {
                slot.token.cancel();
                self.forget_when_done(&id, slot.done);
            }
            summary.removed.push(id);
        }
        drop(new_tables);
        let outcome = if failures.is_empty() {
            Ok(summary)
        } else {
            Err(ReloadError::Build(failures.join("; ")))
        };
        Ok((outcome, failed))
    }

    /// Takes `id` out of the tables of the outputs it reads: its producers stop sending to it
    /// from their next batch.
    fn leave_inputs(&mut self, id: &str) {
        for o in self.inputs.remove(id).into_iter().flatten() {
            if let Some(r) = self.routes.get(&o).and_then(Weak::upgrade) {
                r.remove(id);
            }
        }
    }

    /// Unregisters `id`'s counters once `done` fires (a removed component that ended).
    fn forget_when_done(&self, id: &str, done: ShutdownToken) {
        if let Ok(m) = self.metrics(id) {
            let registry = self.registry.clone();
            tokio::spawn(async move {
                done.cancelled().await;
                registry.unregister(&m);
            });
        }
    }

    /// Tables for the outputs of a new component `id`, each sending to the consumers that
    /// exist already (new ones add themselves), and the fan-outs over them.
    fn new_outputs(
        &mut self,
        id: &str,
        graph: &Graph,
        metrics: &Arc<ComponentMetrics>,
        held: &mut Vec<Arc<Routes>>,
    ) -> (Option<Fanout>, BTreeMap<String, Fanout>) {
        let consumers = graph.consumers();
        let mut default = None;
        let mut named = BTreeMap::new();
        for o in graph.outputs.keys().filter(|o| o.component == id) {
            let list: Vec<(Arc<str>, BufferSender)> = consumers
                .get(o)
                .into_iter()
                .flatten()
                .filter_map(|c| Some((Arc::from(c.as_str()), self.sender_of(c)?)))
                .collect();
            let tap = crate::tap::TapSlot::new(&o.component, o.output.as_deref());
            let f = Fanout::new(list, metrics.clone()).with_tap(tap.clone());
            self.routes.insert(o.clone(), f.routes());
            self.taps.insert(o.clone(), tap);
            if let Some(r) = f.routes().upgrade() {
                held.push(r);
            }
            match &o.output {
                None => default = Some(f),
                Some(n) => {
                    named.insert(n.clone(), f);
                }
            }
        }
        (default, named)
    }

    fn metrics(&self, id: &str) -> Result<Arc<ComponentMetrics>, ReloadError> {
        self.registry
            .components()
            .into_iter()
            .find(|m| &*m.id == id)
            .ok_or_else(|| ReloadError::Build(format!("internal: no metrics for `{id}`")))
    }

    /// Makes the producers of `new_inputs` (and only they) send to sink `id`'s buffer.
    fn rewire(&mut self, id: &str, new_inputs: &[OutputId]) {
        let old = self.inputs.get(id).cloned().unwrap_or_default();
        if old == new_inputs {
            return;
        }
        let tx = old
            .iter()
            .filter_map(|o| self.routes.get(o).and_then(Weak::upgrade))
            .find_map(|r| r.sender(id));
        let Some(tx) = tx else {
            return;
        };
        for o in new_inputs.iter().filter(|o| !old.contains(o)) {
            if let Some(r) = self.routes.get(o).and_then(Weak::upgrade) {
                r.add(Arc::from(id), tx.clone());
            }
        }
        for o in old.iter().filter(|o| !new_inputs.contains(o)) {
            if let Some(r) = self.routes.get(o).and_then(Weak::upgrade) {
                r.remove(id);
            }
        }
        self.inputs.insert(id.to_string(), new_inputs.to_vec());
    }

    fn common(
        &self,
        id: &str,
        kind: ComponentKind,
        metrics: Arc<ComponentMetrics>,
        on_failure: OnFailure,
    ) -> Common {
        Common {
            id: Arc::from(id),
            kind,
            on_failure,
            metrics,
            fatal: self.fatal.clone(),
            stop: self.stop.clone(),
        }
    }

    fn context(&self, c: &Common) -> SinkContext {
        SinkContext {
            id: c.id.clone(),
            data_dir: self.data_dir.clone(),
            metrics: c.metrics.clone(),
            registry: self.registry.clone(),
            outputs: SinkOutputs::new(BTreeMap::new()),
            stop: self.stop.clone(),
        }
    }

    /// Hands sink `id`'s buffer from its running instance to one built from `s`.
    async fn replace_sink(
        &mut self,
        id: &str,
        s: crate::config::SinkEntry,
    ) -> Result<(), ReloadError> {
        let Some(old) = self.sinks.remove(id) else {
            return Ok(());
        };
        let metrics = self.metrics(id)?;
        let c = self.common(id, ComponentKind::Sink, metrics, s.on_failure);
        let config: Arc<dyn SinkConfig> = Arc::from(s.config);
        let early = config.build(self.context(&c)).await;
        old.detach.handoff();
        // Built first, the new instance waits for the buffer (its supervisor's lock) until
        // the old one has delivered what it took: the reload does not wait for that (a sink
        // retrying against a destination that is down would hold it). Built again once the
        // old one let go of what it holds (a port, say), waiting at most `HANDOFF_WAIT`.
        let built = match early {
            Ok(sink) => Ok(sink),
            Err(_) => match tokio::time::timeout(HANDOFF_WAIT, old.done.cancelled()).await {
                Ok(()) => config
                    .build(self.context(&c))
                    .await
                    .map_err(|e| e.to_string()),
                Err(_) => Err(format!(
                    "its previous instance did not stop within {}s",
                    HANDOFF_WAIT.as_secs()
                )),
            },
        };
        let (config, sink, failure) = match built {
            Ok(sink) => (config, sink, None),
            Err(e) => {
                let failure = format!(
                    "sink `{id}` ({}): {e}; it runs with its previous options",
                    s.type_name
                );
                match old.config.build(self.context(&c)).await {
                    Ok(sink) => (old.config.clone(), sink, Some(failure)),
                    Err(e2) => {
                        return Err(ReloadError::Build(format!(
                            "{failure}; those failed too ({e2}): it is stopped until the next reload or restart"
                        )))
                    }
                }
            }
        };
        let slot = SinkSlot {
            config: config.clone(),
            detach: Arc::new(Detach::default()),
            done: ShutdownToken::new(),
            input: old.input,
            buffer: old.buffer,
        };
        self.spawn_sink(id, c, config, sink, slot);
        match failure {
            Some(f) => Err(ReloadError::Build(f)),
            None => Ok(()),
        }
    }

    /// Stops source `id` and starts it again from `s`, on the same outputs. Its outputs'
    /// tables are held meanwhile, so that its consumers do not see their input end.
    async fn replace_source(
        &mut self,
        id: &str,
        s: crate::config::SourceEntry,
    ) -> Result<(), ReloadError> {
        let Some(old) = self.sources.remove(id) else {
            return Ok(());
        };
        let outputs: Vec<(OutputId, Arc<Routes>, Arc<crate::tap::TapSlot>)> = self
            .routes
            .iter()
            .filter(|(o, _)| o.component == id)
            .filter_map(|(o, r)| {
                let tap = self.taps.get(o)?.clone();
                Some((o.clone(), r.upgrade()?, tap))
            })
            .collect();
        let metrics = self.metrics(id)?;
        let c = self.common(id, ComponentKind::Source, metrics.clone(), s.on_failure);
        old.token.cancel();
        if tokio::time::timeout(HANDOFF_WAIT, old.done.cancelled())
            .await
            .is_err()
        {
            tracing::warn!(component = %id, "reload: the previous instance of the source is still stopping; the new one starts when it has");
        }
        old.done.cancelled().await;
        let mut default = None;
        let mut named = BTreeMap::new();
        for (o, routes, tap) in outputs {
            let f = crate::buffer::Fanout::from_routes(routes, metrics.clone(), tap);
            match o.output {
                None => default = Some(f),
                Some(n) => {
                    named.insert(n, f);
                }
            }
        }
        let slot = SourceSlot {
            config: Arc::from(s.config),
            acknowledgements: s.acknowledgements,
            token: self.shutdown.child_token(),
            done: ShutdownToken::new(),
        };
        let mut parts = SourceParts {
            config: slot.config.clone(),
            data_dir: self.data_dir.clone(),
            registry: self.registry.clone(),
            acknowledgements: slot.acknowledgements,
            default,
            named,
            shutdown: slot.token.clone(),
        };
        let (cx, ended) = parts.context(&c);
        let (source, ended, failure) = match parts.config.build(cx).await {
            Ok(source) => (source, ended, None),
            Err(e) => {
                let failure = format!(
                    "source `{id}` ({}): {e}; it runs with its previous options",
                    s.type_name
                );
                parts.config = old.config.clone();
                parts.acknowledgements = old.acknowledgements;
                let (cx, ended) = parts.context(&c);
                match old.config.build(cx).await {
                    Ok(source) => (source, ended, Some(failure)),
                    Err(e2) => {
                        return Err(ReloadError::Build(format!(
                            "{failure}; those failed too ({e2}): it is stopped until the next reload or restart"
                        )))
                    }
                }
            }
        };
        let slot = SourceSlot {
            config: parts.config.clone(),
            acknowledgements: parts.acknowledgements,
            ..slot
        };
        let task = spawn_source_task(c, parts, (source, ended), slot.done.clone());
        push_task(&self.tasks, (id.to_string(), ComponentKind::Source, task));
        self.sources.insert(id.to_string(), slot);
        match failure {
            Some(f) => Err(ReloadError::Build(f)),
            None => Ok(()),
        }
    }

    /// Starts sink `id` from `s`, then makes the producers of `inputs` send to it.
    async fn add_sink(
        &mut self,
        id: &str,
        s: crate::config::SinkEntry,
        inputs: &[OutputId],
    ) -> Result<(), ReloadError> {
        let metrics = match self.metrics(id) {
            Ok(m) => m,
            Err(_) => {
                let m = Arc::new(ComponentMetrics::new(id, ComponentKind::Sink, &s.type_name));
                self.registry.register(m.clone());
                m
            }
        };
        let (tx, rx) = super::sink_buffer(id, &s.buffer, &self.data_dir, &self.memory, &metrics)
            .map_err(|e| ReloadError::Build(e.to_string()))?;
        let c = self.common(id, ComponentKind::Sink, metrics, s.on_failure);
        let config: Arc<dyn SinkConfig> = Arc::from(s.config);
        let sink = config
            .build(self.context(&c))
            .await
            .map_err(|e| ReloadError::Build(format!("sink `{id}` ({}): {e}", s.type_name)))?;
        let slot = SinkSlot {
            config: config.clone(),
            detach: Arc::new(Detach::default()),
            done: ShutdownToken::new(),
            input: Arc::new(tokio::sync::Mutex::new(rx)),
            buffer: serde_json::to_string(&s.buffer).unwrap_or_default(),
        };
        self.spawn_sink(id, c, config, sink, slot);
        for o in inputs {
            if let Some(r) = self.routes.get(o).and_then(Weak::upgrade) {
                r.add(Arc::from(id), tx.clone());
            }
        }
        self.inputs.insert(id.to_string(), inputs.to_vec());
        Ok(())
    }

    fn spawn_sink(
        &mut self,
        id: &str,
        c: Common,
        config: Arc<dyn SinkConfig>,
        sink: Box<dyn Sink>,
        slot: SinkSlot,
    ) {
        let parts = SinkParts {
            config,
            data_dir: self.data_dir.clone(),
            registry: self.registry.clone(),
            outputs: BTreeMap::new(),
            input: slot.input.clone(),
            detach: slot.detach.clone(),
        };
        let task = spawn_sink_task(c, parts, sink, slot.done.clone());
        push_task(&self.tasks, (id.to_string(), ComponentKind::Sink, task));
        self.sinks.insert(id.to_string(), slot);
    }
}

/// Runs a transform as a task that fires `done` when it ends.
pub(super) fn spawn_transform_task(
    supervised: super::supervise::Supervised,
    rx: BufferReceiver,
    control: mpsc::UnboundedReceiver<Control>,
    (default, named): (Option<Fanout>, BTreeMap<String, Fanout>),
    done: ShutdownToken,
) -> tokio::task::JoinHandle<Result<(), BoxError>> {
    tokio::spawn(async move {
        let r = super::run_transform(supervised, rx, control, default, named).await;
        done.cancel();
        r
    })
}

/// Runs a source's supervisor as a task that fires `done` when it ends.
pub(super) fn spawn_source_task(
    c: Common,
    parts: SourceParts,
    first: (Source, tokio::sync::oneshot::Receiver<()>),
    done: ShutdownToken,
) -> tokio::task::JoinHandle<Result<(), BoxError>> {
    tokio::spawn(async move {
        let r = supervise::source(c, parts, first).await;
        done.cancel();
        r
    })
}

/// Runs a sink's supervisor as a task that fires `done` when it ends.
pub(super) fn spawn_sink_task(
    c: Common,
    parts: SinkParts,
    sink: Box<dyn Sink>,
    done: ShutdownToken,
) -> tokio::task::JoinHandle<Result<(), BoxError>> {
    tokio::spawn(async move {
        let r = supervise::sink(c, parts, sink).await;
        done.cancel();
        r
    })
}

pub(super) fn push_task(tasks: &SharedTasks, task: ComponentTask) {
    tasks
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(task);
}
