//! Stateless transforms on every worker thread.
//!
//! A transform whose options say it keeps nothing between batches
//! ([`TransformConfig::stateless`](crate::component::TransformConfig::stateless): `remap`,
//! `filter`, `route`, `sample`) runs as several instances, its *lanes*, one per worker thread
//! of the runtime. Its task takes a batch from its buffer whenever a lane is free and runs that
//! lane on it as a task of its own, so up to `width` batches are transformed at once, on
//! different threads:
//!
//! ```text
//!            ┌─▶ lane 0 task ─┐
//! [buffer] ──┼─▶ lane 1 task ─┼─▶ in the order taken ──Fanout──▶ ...
//!            └─▶ lane 2 task ─┘
//! ```
//!
//! The lanes' results are handed on in the order their batches were taken (a
//! [`FuturesOrdered`] of the lanes' tasks): the outputs keep the input's order, so each
//! source's events leave in the order they came. At most `width` batches are in hand; the
//! buffer upstream fills and pushes back as it does for one instance.
//!
//! What stays as for one instance ([`super::run_sequential`]):
//! - **panics**: a lane that panics loses its batch (counted as lost in a failure, what it
//!   had made of it dropped, so acknowledging sources replay it) and is built again after the
//!   transform's backoff, or the transform stays down (`on_failure = "exit"`), exactly as
//!   [`Supervised::call`] does; the batches taken before it are handed on first, the ones
//!   after it wait for the restart.
//! - **reloads**: a new configuration takes over once the batches in flight have been handed
//!   on; the lanes are then built from it. A configuration that is not stateless (the type
//!   changed) continues as one instance.
//! - **metrics**: received when taken, latency per batch (the lane's time on it), sent when
//!   handed on.
//!
//! A stateless transform has no ticks and nothing to flush, so neither is called here.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinError;

use super::reload::Control;
use super::supervise::{panic_message, Down, Supervised};
use super::{emit, run_sequential};
use crate::buffer::{BufferReceiver, Fanout};
use crate::component::{Transform, TransformOutput};
use crate::event::EventBatch;
use crate::BoxError;

/// How many lanes a transform gets: one per worker thread of the runtime when it is
/// stateless (and has no ticks), else 1 (run by [`run_sequential`]).
pub(super) fn parallelism(supervised: &Supervised) -> usize {
    if !supervised.stateless() || supervised.transform().tick_interval().is_some() {
        return 1;
    }
    tokio::runtime::Handle::current()
        .metrics()
        .num_workers()
        .max(1)
}

/// One instance and its output buffers.
struct Lane {
    transform: Box<dyn Transform>,
    out: TransformOutput,
}

/// What a lane's task gives back.
struct Done {
    /// The batch's size (lost if the lane panicked).
    events: usize,
    /// The lane and its time on the batch, or how its task failed.
    outcome: Result<(Lane, Duration), JoinError>,
}

/// Stands in, in the supervisor, for the instance the lanes hold. Nothing calls it: a parallel
/// transform is neither ticked nor flushed, and its batches go to the lanes. Were it called, it
/// would pass events on unchanged rather than lose them.
struct Lent;

impl Transform for Lent {
    fn transform(&mut self, batch: EventBatch, out: &mut TransformOutput) {
        out.default.extend(batch);
    }
}

/// The lanes of the supervisor's current options: its instance, plus `width - 1` built from
/// the same options. A lane that cannot be built is left out (logged): the transform runs
/// with fewer.
fn lanes(supervised: &mut Supervised, width: usize, names: &[String]) -> Vec<Lane> {
    let lane = |transform| Lane {
        transform,
        out: TransformOutput::new(names.iter().cloned()),
    };
    let mut lanes = Vec::with_capacity(width);
    lanes.push(lane(supervised.lend(Box::new(Lent))));
    for _ in 1..width {
        match supervised.build_instance() {
            Ok(t) => lanes.push(lane(t)),
            Err(e) => {
                tracing::warn!(component = %supervised.c.id, lanes = lanes.len(), "cannot build another instance of the transform, it runs on fewer threads: {e}");
                break;
            }
        }
    }
    lanes
}

/// Runs `lane` on `batch` as a task of its own.
fn start(mut lane: Lane, batch: EventBatch) -> impl std::future::Future<Output = Done> {
    let events = batch.len();
    let task = tokio::spawn(async move {
        let started = Instant::now();
        lane.transform.transform(batch, &mut lane.out);
        (lane, started.elapsed())
    });
    async move {
        Done {
            events,
            outcome: task.await,
        }
    }
}

/// Takes a lane's result: the lane with its outputs to hand on, or, when it panicked, a new
/// lane built after the backoff (its batch and outputs were lost with its task). `held` is the
/// events of the batches in flight, this one included; when the transform stays down, the
/// batches behind this one are lost with it, and counted so.
async fn finish(
    supervised: &mut Supervised,
    done: Done,
    held: &mut usize,
    names: &[String],
) -> Result<Lane, Down> {
    *held -= done.events;
    let outcome = match done.outcome {
        Ok((lane, took)) => {
            supervised.c.metrics.observe_latency(took);
            return Ok(lane);
        }
        Err(e) if e.is_panic() => {
            supervised
                .recover(panic_message(&*e.into_panic()), done.events)
                .await
        }
        Err(e) => {
            supervised.c.metrics.add_lost_in_failure(done.events as u64);
            Err(Down(format!("task failed: {e}")))
        }
    };
    match outcome {
        Ok(transform) => Ok(Lane {
            transform,
            out: TransformOutput::new(names.iter().cloned()),
        }),
        Err(down) => {
            supervised.c.metrics.add_lost_in_failure(*held as u64);
            Err(down)
        }
    }
}

/// Runs a stateless transform on `width` lanes until its input ends (see the module docs).
pub(super) async fn run(
    mut supervised: Supervised,
    mut rx: BufferReceiver,
    mut control: mpsc::UnboundedReceiver<Control>,
    mut default: Option<Fanout>,
    mut named: BTreeMap<String, Fanout>,
    width: usize,
) -> Result<(), BoxError> {
    let metrics = supervised.c.metrics.clone();
    let names: Vec<String> = named.keys().cloned().collect();
    let mut idle = lanes(&mut supervised, width, &names);
    let mut in_flight = FuturesOrdered::new();
    // The events of the batches in `in_flight`.
    let mut held = 0usize;
    let mut reloadable = true;
    // A reload removed it: it ends once its input has been quiet for `Detach::QUIET`.
    let mut draining = false;
    let mut input_open = true;
    tracing::info!(component = %supervised.c.id, lanes = idle.len(), "stateless transform: runs on several threads, one batch per thread at once");
    loop {
        if !input_open && in_flight.is_empty() {
            break;
        }
        tokio::select! {
            // Results first: each frees a lane for the next batch.
            biased;
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                let mut lane = finish(&mut supervised, done, &mut held, &names).await.map_err(|Down(e)| e)?;
                if emit(&mut lane.out, &mut default, &mut named, &metrics).await.is_err() {
                    return Err("every downstream component has stopped".into());
                }
                idle.push(lane);
            }
            r = control.recv(), if reloadable => {
                let (config, transform) = match r {
                    Some(Control::Replace(config, transform)) => (config, transform),
                    Some(Control::Drain) => {
                        draining = true;
                        continue;
                    }
                    None => {
                        reloadable = false;
                        continue;
                    }
                };
                // The batches taken under the old options are handed on first.
                while let Some(done) = in_flight.next().await {
                    let mut lane = finish(&mut supervised, done, &mut held, &names).await.map_err(|Down(e)| e)?;
                    if emit(&mut lane.out, &mut default, &mut named, &metrics).await.is_err() {
                        return Err("every downstream component has stopped".into());
                    }
                }
                idle.clear();
                supervised.replace(config, transform);
                tracing::info!(component = %supervised.c.id, "transform rebuilt with its new options");
                if parallelism(&supervised) <= 1 {
                    // The type changed to one that keeps state: one instance from now on.
                    return run_sequential(supervised, rx, control, default, named).await;
                }
                idle = lanes(&mut supervised, width, &names);
            }
            batch = async {
                if draining {
                    tokio::time::timeout(crate::component::Detach::QUIET, rx.recv()).await.ok().flatten()
                } else {
                    rx.recv().await
                }
            }, if input_open && !idle.is_empty() => {
                let Some(batch) = batch else {
                    input_open = false;
                    continue;
                };
                metrics.add_received(batch.len() as u64, 0);
                // A batch is taken only while a lane is free (the branch's condition).
                let Some(lane) = idle.pop() else {
                    metrics.add_lost_in_failure(batch.len() as u64);
                    return Err("a batch was taken with no lane free".into());
                };
                held += batch.len();
                in_flight.push_back(start(lane, batch));
            }
        }
    }
    Ok(())
}
