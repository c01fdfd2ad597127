//! Acknowledgements of windowed transforms: a window keeps the holds of what went into it
//! (a [`FinalizerSet`]) and hands them to what it emits, whatever the outputs it emits on.

use weir_pipeline::component::TransformOutput;
use weir_pipeline::event::Event;
use weir_pipeline::finalization::{EventStatus, FinalizerSet};

/// How many events each output of a [`TransformOutput`] held before a window was emitted
/// into it: what was pushed since is the window's output.
pub(crate) struct OutputMark {
    default: usize,
    /// In the order of `named` (a `BTreeMap`, whose keys a transform does not change).
    named: Vec<usize>,
}

impl OutputMark {
    pub(crate) fn of(out: &TransformOutput) -> Self {
        Self {
            default: out.default.len(),
            named: out.named.values().map(Vec::len).collect(),
        }
    }
}

/// Hands the holds of `window` to the events pushed to `out` since `mark`, on every output:
/// each gets a hold on one notifier standing for all the window's inputs, so their sources
/// hear back once every one of those events is delivered. A window that emitted nothing
/// releases its holds as delivered (nothing of it is left to deliver).
pub(crate) fn attach_since(window: FinalizerSet, out: &mut TransformOutput, mark: &OutputMark) {
    let mut slices: Vec<&mut [Event]> = Vec::with_capacity(1 + out.named.len());
    slices.push(out.default.get_mut(mark.default..).unwrap_or_default());
    for (events, from) in out.named.values_mut().zip(&mark.named) {
        slices.push(events.get_mut(*from..).unwrap_or_default());
    }
    let count: usize = slices.iter().map(|s| s.len()).sum();
    if count == 0 {
        window.finalize(EventStatus::Delivered);
        return;
    }
    let mut hold = window.into_finalizer();
    if hold.is_none() {
        return;
    }
    let mut left = count;
    for e in slices.into_iter().flatten() {
        left -= 1;
        // The last event takes the hold itself: a clone left over would count as errored.
        e.metadata_mut().notifier = if left == 0 { hold.take() } else { hold.clone() };
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! What the unit tests of the windowed transforms share.

    use weir_pipeline::component::TransformOutput;
    use weir_pipeline::event::{finalize_events, Event, EventBatch};
    use weir_pipeline::finalization::{BatchNotifier, BatchStatusReceiver, EventStatus};

    /// `events` as one source batch that asked for acknowledgements, and its receiver.
    pub(crate) fn acked_batch(events: Vec<Event>) -> (EventBatch, BatchStatusReceiver) {
        let (n, rx) = BatchNotifier::new_with_receiver();
        let mut batch = EventBatch::new(events);
        batch.attach_notifier(&n);
        drop(n);
        (batch, rx)
    }

    /// Whether every event on every output of `out` holds an acknowledgement.
    pub(crate) fn all_held(out: &TransformOutput) -> bool {
        out.default
            .iter()
            .chain(out.named.values().flatten())
            .all(|e| e.metadata().notifier.is_some())
    }

    /// What a sink does with everything emitted: delivers it.
    pub(crate) fn deliver(out: &mut TransformOutput) {
        finalize_events(&mut out.default, EventStatus::Delivered);
        for events in out.named.values_mut() {
            finalize_events(events, EventStatus::Delivered);
        }
    }

    /// The receiver's status, if it has one yet.
    pub(crate) fn status(rx: &mut BatchStatusReceiver) -> Option<EventStatus> {
        rx.try_recv()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use weir_pipeline::event::LogEvent;

    #[test]
    fn a_window_on_several_outputs_holds_until_all_are_delivered() {
        let (batch, mut rx) = acked_batch(vec![LogEvent::default().into(); 3]);
        let mut window = FinalizerSet::default();
        for mut e in batch {
            window.absorb(e.metadata_mut().notifier.take());
        }
        let mut out = TransformOutput::new(["top".to_string()]);
        out.push(LogEvent::default().into()); // before the window: not its output
        let mark = OutputMark::of(&out);
        out.push(LogEvent::default().into());
        out.push_named("top", LogEvent::default().into());
        attach_since(window, &mut out, &mark);
        assert!(out.default[0].metadata().notifier.is_none());
        assert!(out.default[1].metadata().notifier.is_some());
        assert!(out.named["top"][0].metadata().notifier.is_some());
        assert_eq!(status(&mut rx), None);
        weir_pipeline::event::finalize_events(&mut out.default, EventStatus::Delivered);
        assert_eq!(
            status(&mut rx),
            None,
            "the `top` output is not delivered yet"
        );
        deliver(&mut out);
        assert_eq!(status(&mut rx), Some(EventStatus::Delivered));
    }

    #[test]
    fn a_window_that_emits_nothing_releases_its_holds_as_delivered() {
        let (batch, mut rx) = acked_batch(vec![LogEvent::default().into()]);
        let mut window = FinalizerSet::default();
        for mut e in batch {
            window.absorb(e.metadata_mut().notifier.take());
        }
        let mut out = TransformOutput::default();
        let mark = OutputMark::of(&out);
        attach_since(window, &mut out, &mark);
        assert_eq!(status(&mut rx), Some(EventStatus::Delivered));
    }
}
