//! Which offset of each partition may be committed.
//!
//! Batches are acknowledged out of order, but a Kafka offset commit says "everything below this
//! offset is done". So each partition keeps, in the order they were read, the spans of offsets
//! that went out in one batch; an acknowledged span is marked done, and the committable offset
//! advances past the done spans at the front only: the highest offset below which everything
//! is acknowledged.
//!
//! A partition's state lives from its assignment to its revocation. Every assignment (and every
//! rewind after a failed batch) starts a new generation: acknowledgements of spans read in an
//! older one are ignored, since those messages will be read again.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// The offsets of one partition that went out in one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    pub topic: Arc<str>,
    pub partition: i32,
    generation: u64,
    seq: u64,
}

#[derive(Debug)]
struct Entry {
    /// The first offset of the span.
    first: i64,
    /// One past its last offset: where reading resumes once it is done.
    next: i64,
    done: bool,
}

#[derive(Debug)]
struct Partition {
    generation: u64,
    /// The sequence number of `entries[0]`.
    base_seq: u64,
    entries: VecDeque<Entry>,
}

/// The acknowledgement state of the partitions this consumer reads.
#[derive(Debug, Default)]
pub struct Offsets {
    parts: HashMap<(Arc<str>, i32), Partition>,
    generations: u64,
}

impl Offsets {
    fn fresh(&mut self) -> Partition {
        self.generations += 1;
        Partition {
            generation: self.generations,
            base_seq: 0,
            entries: VecDeque::new(),
        }
    }

    /// The partition is ours (again): start from nothing.
    pub fn assign(&mut self, topic: &str, partition: i32) {
        let p = self.fresh();
        self.parts.insert((Arc::from(topic), partition), p);
    }

    /// The partition is no longer ours: late acknowledgements of it are ignored.
    pub fn revoke(&mut self, topic: &str, partition: i32) {
        self.parts.remove(&(Arc::from(topic), partition));
    }

    /// Records that offsets `first..=last` of a partition went out in one batch.
    pub fn track(&mut self, topic: &Arc<str>, partition: i32, first: i64, last: i64) -> Span {
        // Messages come only for assigned partitions; be safe if the callback was missed.
        self.generations += 1;
        let generation = self.generations;
        let p = self
            .parts
            .entry((topic.clone(), partition))
            .or_insert_with(|| Partition {
                generation,
                base_seq: 0,
                entries: VecDeque::new(),
            });
        let seq = p.base_seq + p.entries.len() as u64;
        p.entries.push_back(Entry {
            first,
            next: last + 1,
            done: false,
        });
        Span {
            topic: topic.clone(),
            partition,
            generation: p.generation,
            seq,
        }
    }

    fn current(&mut self, span: &Span) -> Option<&mut Partition> {
        self.parts
            .get_mut(&(span.topic.clone(), span.partition))
            .filter(|p| p.generation == span.generation && span.seq >= p.base_seq)
    }

    /// Marks a span done. Returns the partition's new committable offset (the next offset to
    /// read) when it advanced.
    pub fn ack(&mut self, span: &Span) -> Option<i64> {
        let p = self.current(span)?;
        let i = (span.seq - p.base_seq) as usize;
        p.entries.get_mut(i)?.done = true;
        let mut committable = None;
        while p.entries.front().is_some_and(|e| e.done) {
            if let Some(e) = p.entries.pop_front() {
                committable = Some(e.next);
                p.base_seq += 1;
            }
        }
        committable
    }

    /// A span's batch failed: everything not yet acknowledged in its partition must be read
    /// again. Returns the offset to seek to (the first unacknowledged one), and forgets the
    /// pending spans (a new generation).
    pub fn rewind(&mut self, span: &Span) -> Option<i64> {
        let p = self.current(span)?;
        let from = p.entries.front()?.first;
        let key = (span.topic.clone(), span.partition);
        let fresh = self.fresh();
        self.parts.insert(key, fresh);
        Some(from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_below_the_first_unacknowledged_span() {
        let t: Arc<str> = Arc::from("logs");
        let mut o = Offsets::default();
        o.assign("logs", 0);
        let a = o.track(&t, 0, 0, 9);
        let b = o.track(&t, 0, 10, 19);
        let c = o.track(&t, 0, 20, 29);
        let other = o.track(&t, 1, 100, 104);
        assert_eq!(o.ack(&b), None, "10..19 done but 0..9 is not");
        assert_eq!(o.ack(&other), Some(105), "partitions are independent");
        assert_eq!(o.ack(&a), Some(20), "0..19 all done");
        assert_eq!(o.ack(&c), Some(30));
        assert_eq!(o.ack(&c), None, "a span acknowledged twice changes nothing");
    }

    #[test]
    fn revoke_and_rewind_ignore_older_spans() {
        let t: Arc<str> = Arc::from("logs");
        let mut o = Offsets::default();
        o.assign("logs", 0);
        let a = o.track(&t, 0, 0, 9);
        let b = o.track(&t, 0, 10, 19);
        assert_eq!(o.ack(&a), Some(10));
        let c = o.track(&t, 0, 20, 29);
        assert_eq!(
            o.rewind(&c),
            Some(10),
            "read again from the first pending span"
        );
        assert_eq!(o.ack(&b), None, "b belongs to the old generation");
        let b2 = o.track(&t, 0, 10, 29);
        assert_eq!(o.ack(&b2), Some(30));

        let d = o.track(&t, 0, 30, 39);
        o.revoke("logs", 0);
        assert_eq!(o.ack(&d), None, "revoked: not ours to commit");
        o.assign("logs", 0);
        assert_eq!(o.ack(&d), None, "reassigned: a new generation");
    }
}
