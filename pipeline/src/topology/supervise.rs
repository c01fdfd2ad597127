//! Supervision: every component runs under a supervisor task that outlives it.
//!
//! When a component fails while the pipeline runs (it panics, or returns an error), its
//! supervisor records why ([`Health`], `weir_component_failed`), then, as its `on_failure`
//! says, builds it again from its configuration and starts it after a backoff
//! ([`OnFailure::Restart`], counted in `weir_component_restarts_total`), or reports the
//! failure to the runtime, which stops the pipeline and exits non-zero ([`OnFailure::Exit`]).
//!
//! What a component keeps across a restart: its input buffer (a sink's is lent to each run;
//! a transform's stays with its task) with the events queued in it, and its outputs (the
//! supervisor keeps a clone of each fan-out, so its consumers do not see their input end).
//! What it loses: what it had in hand. Those events' holds are dropped without a status, so
//! they count as errored and acknowledging sources keep them for a replay.

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::buffer::{BufferReceiver, Fanout};
use crate::component::{
    Sink, SinkConfig, SinkContext, SinkInput, SinkOutputs, Source, SourceConfig, SourceContext,
    SourceSender, Transform, TransformConfig, TransformContext, TransformOutput,
};
use crate::metrics::{ComponentMetrics, Health, MetricsRegistry};
use crate::shutdown::ShutdownToken;
use crate::vocabulary::{ComponentKind, OnFailure};
use crate::BoxError;

/// The first wait before a restart; it doubles after each failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait before a restart.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A component that ran this long before failing starts again at [`FIRST_BACKOFF`].
const HEALTHY_AFTER: Duration = Duration::from_secs(60);

/// A failure that stops the pipeline (`on_failure = "exit"`): the component and why.
#[derive(Debug, Clone)]
pub struct Fatal {
    /// The component's id.
    pub id: String,
    /// Source, transform or sink.
    pub kind: ComponentKind,
    /// Why it failed.
    pub error: String,
}

/// Where supervisors report failures that must stop the pipeline.
pub(super) type FatalTx = mpsc::UnboundedSender<Fatal>;

/// The restart delay of one component.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            next: FIRST_BACKOFF,
        }
    }

    /// The wait before the next start, given how long the failed run lasted.
    fn after(&mut self, ran: Duration) -> Duration {
        if ran >= HEALTHY_AFTER {
            self.next = FIRST_BACKOFF;
        }
        let d = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        d
    }
}

/// The text of a panic's payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".to_string()
    }
}

/// Runs `fut` as its own task and says how it ended: `Ok` when it returned `Ok`, the error or
/// the panic otherwise.
async fn run_task<F>(fut: F) -> Result<(), String>
where
    F: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    match tokio::spawn(fut).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(e) if e.is_panic() => Err(panic_message(&*e.into_panic())),
        Err(e) => Err(format!("task failed: {e}")),
    }
}

/// What a supervisor shares with the runtime.
pub(super) struct Common {
    pub id: Arc<str>,
    pub kind: ComponentKind,
    pub on_failure: OnFailure,
    pub metrics: Arc<ComponentMetrics>,
    pub fatal: FatalTx,
    /// Fires when the pipeline must stop at once (grace period expired): no restart then.
    pub stop: ShutdownToken,
}

impl Common {
    /// Handles a failure: `Some(wait)` before a restart, `None` when the component stays
    /// down (`exit`, or the pipeline is stopping).
    fn failed(&self, error: &str, ran: Duration, backoff: &mut Backoff) -> Option<Duration> {
        let kind = self.kind.as_str();
        if self.on_failure == OnFailure::Exit || self.stop.is_cancelled() {
            tracing::error!(component = %self.id, kind, on_failure = self.on_failure.as_str(), "component failed: {error}; stopping the pipeline");
            self.metrics.set_health(Health::Failed {
                error: error.to_string(),
            });
            let _ = self.fatal.send(Fatal {
                id: self.id.to_string(),
                kind: self.kind,
                error: error.to_string(),
            });
            return None;
        }
        let wait = backoff.after(ran);
        tracing::error!(component = %self.id, kind, restart_in_secs = wait.as_secs_f64(), "component failed: {error}; starting it again (what it held is reported not delivered)");
        self.metrics.set_health(Health::Restarting {
            error: error.to_string(),
        });
        Some(wait)
    }

    /// Waits before a restart; `false` when the pipeline must stop at once meanwhile.
    async fn wait(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.stop.cancelled() => false,
        }
    }

    fn restarted(&self) {
        // Healthy first: whoever sees the restart counted sees it running.
        self.metrics.set_health(Health::Running);
        self.metrics.add_restart();
        tracing::info!(component = %self.id, kind = self.kind.as_str(), restarts = self.metrics.restarts(), "component started again");
    }
}

/// What a sink is built from, again at each restart.
pub(super) struct SinkParts {
    pub config: Arc<dyn SinkConfig>,
    pub data_dir: std::path::PathBuf,
    pub registry: Arc<MetricsRegistry>,
    pub outputs: BTreeMap<String, Fanout>,
    pub input: Arc<tokio::sync::Mutex<BufferReceiver>>,
    /// Fired by a reload that replaces or removes the sink.
    pub detach: Arc<crate::component::Detach>,
}

impl SinkParts {
    fn context(&self, c: &Common) -> SinkContext {
        SinkContext {
            id: c.id.clone(),
            data_dir: self.data_dir.clone(),
            metrics: c.metrics.clone(),
            registry: self.registry.clone(),
            outputs: SinkOutputs::new(self.outputs.clone()),
            stop: c.stop.clone(),
        }
    }
}

/// Runs a sink (`first`, already built) until its input ends, restarting it as configured.
pub(super) async fn sink(
    c: Common,
    parts: SinkParts,
    first: Box<dyn Sink>,
) -> Result<(), BoxError> {
    let mut backoff = Backoff::new();
    let mut next = Some(first);
    loop {
        let sink = match next.take() {
            Some(s) => s,
            None => match parts.config.build(parts.context(&c)).await {
                Ok(s) => {
                    c.restarted();
                    s
                }
                Err(e) => {
                    let e = format!("cannot build it again: {e}");
                    match c.failed(&e, Duration::ZERO, &mut backoff) {
                        Some(d) if c.wait(d).await => continue,
                        _ => return Err(e.into()),
                    }
                }
            },
        };
        let input = SinkInput::lent(parts.input.clone().lock_owned().await, c.metrics.clone())
            .with_detach(parts.detach.clone());
        let started = Instant::now();
        let held_before = c.metrics.in_hand();
        let error = match run_task(sink.run(input)).await {
            Ok(()) => {
                // A disk buffer records what the sink settled last, so a restart does not
                // deliver it again.
                parts.input.lock().await.settle().await;
                return Ok(());
            }
            Err(e) => e,
        };
        c.metrics
            .add_lost_in_failure(c.metrics.in_hand().saturating_sub(held_before));
        match c.failed(&error, started.elapsed(), &mut backoff) {
            Some(d) if c.wait(d).await => {}
            _ => return Err(error.into()),
        }
    }
}

/// What a source is built from, again at each restart.
pub(super) struct SourceParts {
    pub config: Arc<dyn SourceConfig>,
    pub data_dir: std::path::PathBuf,
    pub registry: Arc<MetricsRegistry>,
    pub acknowledgements: bool,
    pub default: Option<Fanout>,
    pub named: BTreeMap<String, Fanout>,
    /// The pipeline's shutdown: the source stops reading when it fires.
    pub shutdown: ShutdownToken,
}

impl SourceParts {
    /// The context of one run of the source, and what tells when it drops its sender.
    pub fn context(&self, c: &Common) -> (SourceContext, tokio::sync::oneshot::Receiver<()>) {
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
        let cx = SourceContext {
            id: c.id.clone(),
            out: SourceSender::new(self.default.clone(), self.named.clone(), c.metrics.clone())
                .on_end(ended_tx)
                .with_memory(self.registry.memory().cloned()),
            shutdown: self.shutdown.child_token(),
            acknowledgements: self.acknowledgements,
            data_dir: self.data_dir.clone(),
            metrics: c.metrics.clone(),
            registry: self.registry.clone(),
        };
        (cx, ended_rx)
    }

    /// Lets go of the outputs: the source ended them, the consumers may now see their input
    /// end (a source waiting for acknowledgements held by a window needs that window flushed).
    fn release_outputs(&mut self) {
        self.default = None;
        self.named.clear();
    }
}

/// Runs a source (`first`, already built) until it is done, restarting it as configured. A
/// source that fails after the shutdown began is not started again.
pub(super) async fn source(
    c: Common,
    mut parts: SourceParts,
    first: (Source, tokio::sync::oneshot::Receiver<()>),
) -> Result<(), BoxError> {
    let mut backoff = Backoff::new();
    let mut next = Some(first);
    let mut released = false;
    loop {
        let (source, mut ended) = match next.take() {
            Some(s) => s,
            None => {
                let (cx, ended) = parts.context(&c);
                match parts.config.build(cx).await {
                    Ok(s) => {
                        c.restarted();
                        (s, ended)
                    }
                    Err(e) => {
                        let e = format!("cannot build it again: {e}");
                        match c.failed(&e, Duration::ZERO, &mut backoff) {
                            Some(d) if !parts.shutdown.is_cancelled() && c.wait(d).await => {
                                continue
                            }
                            _ => return Err(e.into()),
                        }
                    }
                }
            }
        };
        let started = Instant::now();
        let mut task = std::pin::pin!(run_task(source));
        let mut watching = true;
        let outcome = loop {
            tokio::select! {
                biased;
                r = &mut task => break r,
                e = &mut ended, if watching => {
                    watching = false;
                    if e.is_ok() {
                        parts.release_outputs();
                        released = true;
                    }
                }
            }
        };
        let error = match outcome {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if released {
            // It had ended its outputs: a new instance would have nowhere to send.
            c.metrics.set_health(Health::Failed {
                error: error.clone(),
            });
            return Err(error.into());
        }
        if parts.shutdown.is_cancelled() {
            c.metrics.set_health(Health::Failed {
                error: error.clone(),
            });
            return Err(error.into());
        }
        match c.failed(&error, started.elapsed(), &mut backoff) {
            Some(d) if c.wait(d).await && !parts.shutdown.is_cancelled() => {}
            _ => return Err(error.into()),
        }
    }
}

/// What a transform is built from, again at each restart.
pub(super) struct TransformParts {
    pub config: Box<dyn TransformConfig>,
    pub context: TransformContext,
}

/// A running transform under supervision: its calls are caught when they panic.
pub(super) struct Supervised {
    pub c: Common,
    parts: TransformParts,
    transform: Box<dyn Transform>,
    backoff: Backoff,
    started: Instant,
}

/// The transform stays down: the pipeline stops (`exit`) or is stopping at once.
#[derive(Debug)]
pub(super) struct Down(pub String);

impl Supervised {
    pub fn new(c: Common, parts: TransformParts, first: Box<dyn Transform>) -> Self {
        Self {
            c,
            parts,
            transform: first,
            backoff: Backoff::new(),
            started: Instant::now(),
        }
    }

    pub fn transform(&self) -> &dyn Transform {
        &*self.transform
    }

    /// A reload changed the transform's options: `transform`, built from `config`, takes
    /// over (the caller flushed the old one first).
    pub fn replace(&mut self, config: Box<dyn TransformConfig>, transform: Box<dyn Transform>) {
        self.parts.config = config;
        self.transform = transform;
        self.backoff = Backoff::new();
        self.started = Instant::now();
    }

    /// Runs `f` on the transform. When it panics, what `out` holds is dropped (its events
    /// count as errored), and the transform is built again after a backoff, or stays down.
    /// `events` is how many events `f` hands the transform (counted as lost if it panics).
    pub async fn call(
        &mut self,
        out: &mut TransformOutput,
        events: usize,
        f: impl FnOnce(&mut dyn Transform, &mut TransformOutput),
    ) -> Result<(), Down> {
        let transform = &mut *self.transform;
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| f(transform, &mut *out)));
        let Err(payload) = outcome else {
            return Ok(());
        };
        // The input batch went down with the panic; what was made of it is dropped too (a
        // window's contents are lost with the transform: their holds count as errored).
        out.default.clear();
        for v in out.named.values_mut() {
            v.clear();
        }
        let error = panic_message(&*payload);
        drop(payload);
        self.transform = self.recover(error, events).await?;
        Ok(())
    }

    /// Whether the transform may run as several instances at once (see
    /// [`TransformConfig::stateless`]).
    pub fn stateless(&self) -> bool {
        self.parts.config.stateless()
    }

    /// Hands the instance over, leaving `stand_in` in its place: a parallel transform's lanes
    /// hold it.
    pub fn lend(&mut self, stand_in: Box<dyn Transform>) -> Box<dyn Transform> {
        std::mem::replace(&mut self.transform, stand_in)
    }

    /// Builds one more instance from the current options: a lane of a parallel transform.
    pub fn build_instance(&self) -> Result<Box<dyn Transform>, BoxError> {
        self.parts.config.build(&self.parts.context)
    }

    /// An instance panicked (`error`: [`panic_message`]) on `events` events, which are lost: counts them,
    /// reports the failure, and after the backoff builds a new instance and returns it (the
    /// caller puts it where the failed one was), or the transform stays down. What the failed
    /// instance had made of its input must already be dropped (its holds count as errored).
    pub async fn recover(
        &mut self,
        mut error: String,
        events: usize,
    ) -> Result<Box<dyn Transform>, Down> {
        self.c.metrics.add_lost_in_failure(events as u64);
        let mut ran = self.started.elapsed();
        loop {
            let Some(d) = self.c.failed(&error, ran, &mut self.backoff) else {
                return Err(Down(error));
            };
            if !self.c.wait(d).await {
                return Err(Down(error));
            }
            let built = std::panic::catch_unwind(AssertUnwindSafe(|| {
                self.parts.config.build(&self.parts.context)
            }));
            match built {
                Ok(Ok(t)) => {
                    self.started = Instant::now();
                    self.c.restarted();
                    return Ok(t);
                }
                Ok(Err(e)) => error = format!("cannot build it again: {e}"),
                Err(p) => error = format!("cannot build it again: {}", panic_message(&*p)),
            }
            ran = Duration::ZERO;
        }
    }
}

/// Makes the futures of the restart tests and the unit tests below shorter to write.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_limit_and_resets_after_a_healthy_run() {
        let mut b = Backoff::new();
        let waits: Vec<u64> = (0..8).map(|_| b.after(Duration::ZERO).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.after(HEALTHY_AFTER).as_secs(), 1);
        assert_eq!(b.after(Duration::ZERO).as_secs(), 2);
    }

    #[test]
    fn panic_messages_are_read_from_either_payload() {
        let p = std::panic::catch_unwind(|| panic!("boom {}", 1)).unwrap_err();
        assert_eq!(panic_message(&*p), "panicked: boom 1");
        let p = std::panic::catch_unwind(|| panic!("static")).unwrap_err();
        assert_eq!(panic_message(&*p), "panicked: static");
    }
}
