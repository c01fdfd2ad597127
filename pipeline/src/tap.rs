//! Taps: copies of the events leaving an output, for someone watching (`weir tap`, the API's
//! `/api/tap`).
//!
//! Every output's [`crate::buffer::Fanout`] holds a [`TapSlot`]. While nobody taps, sending a
//! batch costs one relaxed atomic load of the slot's `active` flag and nothing else. While a
//! [`Tap`] is attached, the producer copies the events the tap wants (its sample, up to its
//! limit) **without their acknowledgement holds** ([`crate::event::Event::display_copy`]), and
//! hands them to the tap's queue without waiting: a queue that is full (the watcher reads
//! slower than events flow, or not at all) drops the copies and counts them, and the pipeline
//! never waits for a watcher.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::config::OutputId;
use crate::event::{Event, EventBatch};

/// The events a tap's queue holds at most by default; what does not fit is dropped and
/// counted.
pub const TAP_QUEUE_EVENTS: usize = 10_000;

/// Events copied from one output, as a tap receives them.
#[derive(Debug)]
pub struct TapBatch {
    /// The component the events left.
    pub component: Arc<str>,
    /// Its named output, or `None` for the default one.
    pub output: Option<Arc<str>>,
    /// The copies (no acknowledgement holds).
    pub events: Vec<Event>,
}

/// What one tap shares with the slots it is attached to.
#[derive(Debug)]
struct Subscriber {
    id: u64,
    tx: mpsc::UnboundedSender<TapBatch>,
    /// Copy one event in `sample` (1: every event).
    sample: u64,
    /// Events seen so far (for the sampling), over every slot.
    seen: AtomicU64,
    /// Stop copying after this many events were queued.
    limit: Option<u64>,
    /// Events queued so far.
    queued_total: AtomicU64,
    /// Events queued and not yet taken by the watcher.
    queued: AtomicUsize,
    /// At most this many events queued at once.
    capacity: usize,
    /// Events the watcher could not take (its queue was full), not yet reported.
    dropped: AtomicU64,
}

impl Subscriber {
    /// Copies what this tap wants of `batch` and queues it, or counts it as dropped.
    fn offer(&self, component: &Arc<str>, output: &Option<Arc<str>>, batch: &EventBatch) {
        let n = batch.len() as u64;
        if n == 0 {
            return;
        }
        let first = self.seen.fetch_add(n, Ordering::Relaxed);
        let remaining = match self.limit {
            Some(l) => l.saturating_sub(self.queued_total.load(Ordering::Relaxed)),
            None => u64::MAX,
        };
        if remaining == 0 {
            return;
        }
        // Events whose running number is a multiple of `sample`.
        let offset = ((self.sample - first % self.sample) % self.sample) as usize;
        let wanted = batch
            .iter()
            .skip(offset)
            .step_by(self.sample as usize)
            .count() as u64;
        let wanted = wanted.min(remaining);
        if wanted == 0 {
            return;
        }
        let room = self
            .capacity
            .saturating_sub(self.queued.load(Ordering::Relaxed)) as u64;
        let take = wanted.min(room);
        if take < wanted {
            self.dropped.fetch_add(wanted - take, Ordering::Relaxed);
        }
        if take == 0 {
            return;
        }
        let events: Vec<Event> = batch
            .iter()
            .skip(offset)
            .step_by(self.sample as usize)
            .take(take as usize)
            .map(Event::display_copy)
            .collect();
        self.queued.fetch_add(events.len(), Ordering::Relaxed);
        self.queued_total
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        // A closed queue: the tap is going away and will detach itself.
        let _ = self.tx.send(TapBatch {
            component: component.clone(),
            output: output.clone(),
            events,
        });
    }
}

/// The tap point of one output, held by its fan-out. See the module docs.
#[derive(Debug)]
pub struct TapSlot {
    component: Arc<str>,
    output: Option<Arc<str>>,
    active: AtomicBool,
    subscribers: Mutex<Vec<Arc<Subscriber>>>,
}

impl TapSlot {
    /// The slot of `output` of `component`, with nobody attached.
    pub fn new(component: &str, output: Option<&str>) -> Arc<Self> {
        Arc::new(Self {
            component: Arc::from(component),
            output: output.map(Arc::from),
            active: AtomicBool::new(false),
            subscribers: Mutex::new(Vec::new()),
        })
    }

    /// Whether a tap is attached: the one check on the data path, once per batch.
    #[inline]
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Offers `batch` to every attached tap (call only when [`Self::is_active`]).
    pub fn publish(&self, batch: &EventBatch) {
        let subs = match self.subscribers.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        for s in subs.iter() {
            s.offer(&self.component, &self.output, batch);
        }
    }

    fn attach(&self, s: Arc<Subscriber>) {
        let mut subs = match self.subscribers.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        subs.push(s);
        self.active.store(true, Ordering::Relaxed);
    }

    fn detach(&self, id: u64) {
        let mut subs = match self.subscribers.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        subs.retain(|s| s.id != id);
        self.active.store(!subs.is_empty(), Ordering::Relaxed);
    }
}

/// One output of the running pipeline, as taps see it.
#[derive(Debug)]
struct TapPoint {
    output: OutputId,
    /// The components that read this output.
    consumers: Vec<String>,
    slot: Arc<TapSlot>,
}

/// Every output's tap slot: what the API attaches taps to.
#[derive(Debug, Default)]
pub struct Taps {
    points: Vec<TapPoint>,
    next_id: AtomicU64,
}

/// What to tap and how much of it.
#[derive(Debug, Clone)]
pub struct TapRequest {
    /// Globs over component ids (`router*`) or `id.output` (`router.errors`): their outputs.
    pub outputs_of: Vec<String>,
    /// Globs over component ids: the outputs they read.
    pub inputs_of: Vec<String>,
    /// Copy one event in this many (1 or more).
    pub sample: u64,
    /// Stop after this many events.
    pub limit: Option<u64>,
    /// Events queued at most; the rest is dropped and counted.
    pub capacity: usize,
}

impl Taps {
    /// The slots of a pipeline's outputs: `(output, its consumers, its slot)`.
    pub fn new(points: impl IntoIterator<Item = (OutputId, Vec<String>, Arc<TapSlot>)>) -> Self {
        Self {
            points: points
                .into_iter()
                .map(|(output, consumers, slot)| TapPoint {
                    output,
                    consumers,
                    slot,
                })
                .collect(),
            next_id: AtomicU64::new(0),
        }
    }

    /// Attaches a tap to the outputs `request` selects. An invalid glob, or globs that match
    /// no output, is an error saying so.
    pub fn attach(self: &Arc<Self>, request: &TapRequest) -> Result<Tap, String> {
        let compile = |text: &String| {
            globset::Glob::new(text)
                .map(|g| g.compile_matcher())
                .map_err(|e| format!("invalid pattern `{text}`: {e}"))
        };
        let outputs_of = request
            .outputs_of
            .iter()
            .map(compile)
            .collect::<Result<Vec<_>, _>>()?;
        let inputs_of = request
            .inputs_of
            .iter()
            .map(compile)
            .collect::<Result<Vec<_>, _>>()?;
        let selected: Vec<usize> = self
            .points
            .iter()
            .enumerate()
            .filter(|(_, p)| {
                let full = p.output.to_string();
                outputs_of
                    .iter()
                    .any(|g| g.is_match(&p.output.component) || g.is_match(&full))
                    || p.consumers
                        .iter()
                        .any(|c| inputs_of.iter().any(|g| g.is_match(c)))
            })
            .map(|(i, _)| i)
            .collect();
        if selected.is_empty() {
            let mut what = Vec::new();
            if !request.outputs_of.is_empty() {
                what.push(format!("outputs of {}", request.outputs_of.join(", ")));
            }
            if !request.inputs_of.is_empty() {
                what.push(format!("inputs of {}", request.inputs_of.join(", ")));
            }
            return Err(format!(
                "nothing to tap: no output matches {}",
                if what.is_empty() {
                    "(no pattern given)".to_string()
                } else {
                    what.join(" or ")
                }
            ));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let sub = Arc::new(Subscriber {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            tx,
            sample: request.sample.max(1),
            seen: AtomicU64::new(0),
            limit: request.limit,
            queued_total: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            capacity: request.capacity.max(1),
            dropped: AtomicU64::new(0),
        });
        for &i in &selected {
            self.points[i].slot.attach(sub.clone());
        }
        Ok(Tap {
            taps: self.clone(),
            slots: selected,
            sub,
            rx,
        })
    }

    /// The outputs that can be tapped, with their consumers.
    pub fn outputs(&self) -> BTreeMap<OutputId, Vec<String>> {
        self.points
            .iter()
            .map(|p| (p.output.clone(), p.consumers.clone()))
            .collect()
    }
}

/// An attached tap: its copies arrive through [`Tap::recv`]. Dropping it detaches it.
#[derive(Debug)]
pub struct Tap {
    taps: Arc<Taps>,
    slots: Vec<usize>,
    sub: Arc<Subscriber>,
    rx: mpsc::UnboundedReceiver<TapBatch>,
}

impl Tap {
    /// The next copies; waits while none flow.
    pub async fn recv(&mut self) -> Option<TapBatch> {
        let b = self.rx.recv().await?;
        self.sub.queued.fetch_sub(b.events.len(), Ordering::Relaxed);
        Some(b)
    }

    /// Events dropped since the last call because the queue was full.
    pub fn take_dropped(&self) -> u64 {
        self.sub.dropped.swap(0, Ordering::Relaxed)
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        for &i in &self.slots {
            if let Some(p) = self.taps.points.get(i) {
                p.slot.detach(self.sub.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::LogEvent;
    use crate::finalization::{BatchNotifier, EventStatus};

    fn batch(n: usize) -> EventBatch {
        EventBatch::new(
            (0..n)
                .map(|i| {
                    let mut l = LogEvent::default();
                    l.insert_field("i", i as i64);
                    l.into()
                })
                .collect(),
        )
    }

    fn taps() -> (Arc<Taps>, Arc<TapSlot>, Arc<TapSlot>) {
        let a = TapSlot::new("router", Some("errors"));
        let b = TapSlot::new("parse", None);
        let taps = Arc::new(Taps::new([
            (
                OutputId {
                    component: "router".into(),
                    output: Some("errors".into()),
                },
                vec!["errors_file".into()],
                a.clone(),
            ),
            (
                OutputId {
                    component: "parse".into(),
                    output: None,
                },
                vec!["router".into()],
                b.clone(),
            ),
        ]));
        (taps, a, b)
    }

    fn request(outputs_of: &[&str], inputs_of: &[&str]) -> TapRequest {
        TapRequest {
            outputs_of: outputs_of.iter().map(|s| s.to_string()).collect(),
            inputs_of: inputs_of.iter().map(|s| s.to_string()).collect(),
            sample: 1,
            limit: None,
            capacity: 100,
        }
    }

    #[tokio::test]
    async fn selects_by_glob_and_detaches_on_drop() {
        let (taps, a, b) = taps();
        assert!(!a.is_active() && !b.is_active());
        let t = taps.attach(&request(&["router*"], &[])).unwrap();
        assert!(a.is_active() && !b.is_active());
        drop(t);
        assert!(!a.is_active());
        let t = taps.attach(&request(&[], &["router"])).unwrap();
        assert!(!a.is_active() && b.is_active());
        drop(t);
        let t = taps.attach(&request(&["router.errors"], &[])).unwrap();
        assert!(a.is_active());
        drop(t);
        let e = taps.attach(&request(&["nope*"], &[])).unwrap_err();
        assert!(e.contains("no output matches outputs of nope*"), "{e}");
    }

    #[tokio::test]
    async fn samples_limits_and_drops_without_waiting() {
        let (taps, a, _) = taps();
        let mut r = request(&["router"], &[]);
        r.sample = 3;
        r.limit = Some(5);
        let mut t = taps.attach(&r).unwrap();
        a.publish(&batch(10)); // events 0, 3, 6, 9
        a.publish(&batch(10)); // running numbers 10..20: 12 (limit reached after one more)
        let got = t.recv().await.unwrap();
        assert_eq!(got.events.len(), 4);
        assert_eq!(
            got.events[1].as_log().unwrap().get_field("i").unwrap(),
            &3.into()
        );
        let got = t.recv().await.unwrap();
        assert_eq!(got.events.len(), 1);
        assert_eq!(
            got.events[0].as_log().unwrap().get_field("i").unwrap(),
            &2.into()
        );
        a.publish(&batch(10));
        assert!(t.rx.try_recv().is_err(), "the limit is reached");

        let mut r = request(&["router"], &[]);
        r.capacity = 15;
        let mut t = taps.attach(&r).unwrap();
        a.publish(&batch(10));
        a.publish(&batch(10)); // 5 fit
        a.publish(&batch(10)); // none fit
        assert_eq!(t.take_dropped(), 15);
        assert_eq!(t.take_dropped(), 0);
        assert_eq!(t.recv().await.unwrap().events.len(), 10);
        assert_eq!(t.recv().await.unwrap().events.len(), 5);
    }

    #[tokio::test]
    async fn copies_hold_no_acknowledgement() {
        let (taps, a, _) = taps();
        let mut t = taps.attach(&request(&["router"], &[])).unwrap();
        let (notifier, rx) = BatchNotifier::new_with_receiver();
        let mut b = batch(3);
        b.attach_notifier(&notifier);
        drop(notifier);
        a.publish(&b);
        b.finalize(EventStatus::Delivered);
        // The copies are still queued, yet the batch is final, and delivered.
        assert_eq!(rx.await, EventStatus::Delivered);
        assert_eq!(t.recv().await.unwrap().events.len(), 3);
    }
}
