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
//! What this pass cannot apply without a restart is refused before anything is touched, and
//! the reload reports it: a source added, removed or changed; a transform added, removed, or
//! changed in its inputs or outputs; a sink's buffer settings; a sink with outputs of its own
//! (`dead_letter`); `data_dir`, `memory_limit`.
//! (`[api]` changes are applied at the next start; a reload warns that it left them.)

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use super::supervise::{self, Common, SinkParts};
use super::{ComponentTask, SharedTasks};
use crate::buffer::{BufferReceiver, Routes};
use crate::component::{
    Detach, Sink, SinkConfig, SinkContext, SinkOutputs, Transform, TransformConfig,
    TransformContext,
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

/// A new transform instance and the options it was built from, for its task to take over.
pub(super) type Replacement = (Box<dyn TransformConfig>, Box<dyn Transform>);

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

/// A running transform, as a reload sees it.
pub(super) struct TransformSlot {
    pub replace: mpsc::UnboundedSender<Replacement>,
    pub type_name: String,
}

/// What the runtime keeps to apply a reload.
pub(super) struct State {
    pub routes: BTreeMap<OutputId, Weak<Routes>>,
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
        let old = |id: &str, kind| {
            self.fingerprints
                .get(id)
                .filter(|(k, _)| *k == kind)
                .map(|(_, f)| *f)
        };
        for (id, s) in &config.sources {
            match old(id, ComponentKind::Source) {
                None => why.push(format!("source `{id}` added")),
                Some(f) if f != s.fingerprint => why.push(format!("source `{id}` changed")),
                Some(_) => {}
            }
        }
        for (id, t) in &config.transforms {
            match old(id, ComponentKind::Transform) {
                None => why.push(format!("transform `{id}` added")),
                Some(f) if f != t.fingerprint => {
                    if self.inputs.get(id) != graph.inputs.get(id) {
                        why.push(format!("transform `{id}`: its inputs changed"));
                    }
                    if self.outputs.get(id) != Some(&outputs_of(graph, id)) {
                        why.push(format!("transform `{id}`: its outputs changed"));
                    }
                    if self.transforms.get(id).map(|t| t.type_name.as_str())
                        != Some(t.type_name.as_str())
                    {
                        why.push(format!("transform `{id}`: its type changed"));
                    }
                }
                Some(_) => {}
            }
        }
        for (id, (kind, _)) in &self.fingerprints {
            let gone = match kind {
                ComponentKind::Source => !config.sources.contains_key(id),
                ComponentKind::Transform => !config.transforms.contains_key(id),
                ComponentKind::Sink => false,
            };
            if gone {
                why.push(format!("{} `{id}` removed", kind.as_str()));
            }
        }
        for (id, s) in &config.sinks {
            if let Some(slot) = self.sinks.get(id) {
                if old(id, ComponentKind::Sink) != Some(s.fingerprint)
                    && serde_json::to_string(&s.buffer).unwrap_or_default() != slot.buffer
                {
                    why.push(format!("sink `{id}`: its buffer settings changed"));
                }
                if old(id, ComponentKind::Sink) != Some(s.fingerprint)
                    && graph.outputs.keys().any(|o| o.component == *id)
                {
                    why.push(format!("sink `{id}` has outputs of its own"));
                }
            } else if self.fingerprints.contains_key(id) {
                why.push(format!("`{id}` changed kind"));
            }
        }
        why
    }

    /// Applies `config` (loaded and checked, its graph resolved). `Err`: nothing was
    /// touched. `Ok`: the outcome, and the components that could not take their new options.
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

        // Transforms first, built before anything is touched: a transform that cannot be
        // built leaves the whole reload undone.
        let mut replacements = Vec::new();
        for (id, t) in std::mem::take(&mut config.transforms) {
            let changed = self
                .fingerprints
                .get(&id)
                .is_some_and(|(_, f)| *f != t.fingerprint);
            if !changed {
                summary.unchanged += 1;
                continue;
            }
            let metrics = self.metrics(&id)?;
            let cx = TransformContext {
                id: Arc::from(id.as_str()),
                data_dir: self.data_dir.clone(),
                metrics,
            };
            let transform = t.config.build(&cx).map_err(|e| {
                ReloadError::Build(format!("transform `{id}` ({}): {e}", t.type_name))
            })?;
            replacements.push((id, t.config, transform));
        }
        for (id, config, transform) in replacements {
            if let Some(slot) = self.transforms.get(&id) {
                // The task takes it between two batches; if the task has ended, so has the
                // pipeline's use of it.
                let _ = slot.replace.send((config, transform));
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
            for o in self.inputs.get(&id).into_iter().flatten() {
                if let Some(r) = self.routes.get(o).and_then(Weak::upgrade) {
                    r.remove(&id);
                }
            }
            if let Some(slot) = self.sinks.remove(&id) {
                slot.detach.drain();
                // Its counters go once it has delivered what it held.
                if let Ok(m) = self.metrics(&id) {
                    let registry = self.registry.clone();
                    tokio::spawn(async move {
                        slot.done.cancelled().await;
                        registry.unregister(&m);
                    });
                }
            }
            self.inputs.remove(&id);
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
        summary.unchanged += config.sources.len();
        let outcome = if failures.is_empty() {
            Ok(summary)
        } else {
            Err(ReloadError::Build(failures.join("; ")))
        };
        Ok((outcome, failed))
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

    fn common(&self, id: &str, metrics: Arc<ComponentMetrics>, on_failure: OnFailure) -> Common {
        Common {
            id: Arc::from(id),
            kind: ComponentKind::Sink,
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
        let c = self.common(id, metrics, s.on_failure);
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
        let c = self.common(id, metrics, s.on_failure);
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
