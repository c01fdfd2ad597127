//! Resuming after a reconnect without losing or repeating flows.
//!
//! The source remembers the newest flow time it emitted. A new `GetFlows` call asks for flows
//! `since` that time minus an overlap (Relay merges several nodes' streams, so flows are only
//! roughly in time order, and clocks differ). The flows of the overlap were partly emitted
//! already: each emitted flow's key (its `uuid`, or a hash of its bytes when it has none) is
//! kept while it is within the overlap of the newest time, and a flow whose key is known is
//! dropped as a duplicate.
//!
//! Across a restart of weir: the same state, advanced only by flows delivered (with
//! acknowledgements; handed to the pipeline, without), is kept in
//! `<data_dir>/<source id>/resume.bin` ([`Resume::encode`], written atomically like the file
//! source's checkpoints). The next start asks for flows `since` its newest time minus the
//! overlap and drops the ones whose keys it holds: flows of equal times are told apart by
//! their keys, not their times, so a restart within the span of Hubble's ring loses no flow
//! and repeats none.

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use super::proto::Timestamp;

/// At most this many keys are remembered (the oldest go first), whatever the flow rate.
pub const MAX_REMEMBERED: usize = 1_000_000;

/// What the source remembers to resume.
#[derive(Debug)]
pub struct Resume {
    newest: Option<Timestamp>,
    /// Keys of emitted flows in arrival order, with their times.
    recent: VecDeque<(Option<Timestamp>, u64)>,
    seen: HashSet<u64>,
    overlap_nanos: i128,
    max: usize,
}

fn nanos(t: Timestamp) -> i128 {
    i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
}

fn from_nanos(n: i128) -> Timestamp {
    Timestamp {
        seconds: n.div_euclid(1_000_000_000) as i64,
        nanos: n.rem_euclid(1_000_000_000) as i32,
    }
}

impl Resume {
    pub fn new(overlap: Duration) -> Self {
        Self::with_capacity(overlap, MAX_REMEMBERED)
    }

    pub fn with_capacity(overlap: Duration, max: usize) -> Self {
        Self {
            newest: None,
            recent: VecDeque::new(),
            seen: HashSet::new(),
            overlap_nanos: overlap.as_nanos() as i128,
            max: max.max(1),
        }
    }

    /// Records a flow about to be emitted; `false` if it was emitted before (drop it).
    pub fn admit(&mut self, time: Option<Timestamp>, key: u64) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        self.recent.push_back((time, key));
        if let Some(t) = time {
            if self.newest.is_none_or(|n| t > n) {
                self.newest = Some(t);
            }
        }
        let horizon = self.newest.map(|n| nanos(n) - self.overlap_nanos);
        while let Some((t, k)) = self.recent.front().copied() {
            let expired = matches!((t, horizon), (Some(t), Some(h)) if nanos(t) < h);
            if !expired && self.recent.len() <= self.max {
                break;
            }
            self.recent.pop_front();
            self.seen.remove(&k);
        }
        true
    }

    /// The newest flow time emitted so far.
    pub fn newest(&self) -> Option<Timestamp> {
        self.newest
    }

    /// Where a new request should start: the newest time minus the overlap.
    pub fn since(&self) -> Option<Timestamp> {
        self.newest.map(|n| self.back_off(n))
    }

    /// `t` minus the overlap.
    pub fn back_off(&self, t: Timestamp) -> Timestamp {
        from_nanos(nanos(t) - self.overlap_nanos)
    }

    /// Encodes the state: magic, version, newest time, the remembered `(time, key)`s, and a
    /// checksum of all that.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(32 + self.recent.len() * 21);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&FORMAT.to_le_bytes());
        put_time(&mut b, self.newest);
        b.extend_from_slice(&(self.recent.len() as u64).to_le_bytes());
        for (t, k) in &self.recent {
            put_time(&mut b, *t);
            b.extend_from_slice(&k.to_le_bytes());
        }
        let sum = hash_bytes(&b);
        b.extend_from_slice(&sum.to_le_bytes());
        b
    }

    /// The state [`Resume::encode`] wrote, or why it cannot be used.
    pub fn decode(bytes: &[u8], overlap: Duration) -> Result<Self, String> {
        let body_len = bytes
            .len()
            .checked_sub(8)
            .ok_or_else(|| "too short".to_string())?;
        let (body, sum) = bytes.split_at(body_len);
        if sum != hash_bytes(body).to_le_bytes() {
            return Err("checksum mismatch (torn or damaged)".into());
        }
        let mut r = Reader(body);
        if r.take(4)? != MAGIC {
            return Err("not a hubble resume file".into());
        }
        let version = u32::from_le_bytes(r.array()?);
        if version != FORMAT {
            return Err(format!("unknown format version {version}"));
        }
        let mut me = Self::new(overlap);
        me.newest = r.time()?;
        let n = u64::from_le_bytes(r.array()?);
        for _ in 0..n {
            let t = r.time()?;
            let k = u64::from_le_bytes(r.array()?);
            if me.seen.insert(k) {
                me.recent.push_back((t, k));
            }
        }
        Ok(me)
    }

    /// How many flow keys are remembered.
    pub fn remembered(&self) -> usize {
        self.recent.len()
    }
}

const MAGIC: &[u8; 4] = b"WHRS";
const FORMAT: u32 = 1;

fn put_time(b: &mut Vec<u8>, t: Option<Timestamp>) {
    match t {
        Some(t) => {
            b.push(1);
            b.extend_from_slice(&t.seconds.to_le_bytes());
            b.extend_from_slice(&t.nanos.to_le_bytes());
        }
        None => b.extend_from_slice(&[0; 13]),
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn time(&mut self) -> Result<Option<Timestamp>, String> {
        let some = self.take(1)?[0] == 1;
        let seconds = i64::from_le_bytes(self.array()?);
        let nanos = i32::from_le_bytes(self.array()?);
        Ok(some.then_some(Timestamp { seconds, nanos }))
    }
}

/// FNV-1a: the key of a flow without a `uuid` is the hash of its protobuf bytes.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Option<Timestamp> {
        Some(Timestamp {
            seconds: s,
            nanos: 0,
        })
    }

    #[test]
    fn replayed_flows_are_dropped_and_new_ones_kept() {
        let mut r = Resume::new(Duration::from_secs(5));
        for s in 0..100 {
            assert!(r.admit(ts(s), s as u64));
        }
        assert_eq!(r.newest(), ts(99));
        assert_eq!(r.since(), ts(94));
        // The server replays from 94: 94..=99 are known, 100.. are new.
        for s in 94..100 {
            assert!(!r.admit(ts(s), s as u64), "{s}");
        }
        assert!(r.admit(ts(100), 100));
        // Only the overlap is remembered.
        assert!(r.remembered() <= 7, "{}", r.remembered());
    }

    #[test]
    fn a_missed_flow_inside_the_overlap_is_kept() {
        let mut r = Resume::new(Duration::from_secs(5));
        assert!(r.admit(ts(10), 1));
        assert!(r.admit(ts(12), 3));
        // A flow of second 11 from a slower node, first seen after the reconnect.
        assert!(r.admit(ts(11), 2));
        assert!(!r.admit(ts(11), 2));
    }

    #[test]
    fn state_round_trips_and_damage_is_refused() {
        let mut r = Resume::new(Duration::from_secs(0));
        // Three flows of one time: all remembered (equal times are told apart by key).
        for k in [7, 8, 9] {
            assert!(r.admit(ts(50), k));
        }
        assert!(r.admit(None, 10));
        let bytes = r.encode();
        let mut back = Resume::decode(&bytes, Duration::from_secs(0)).unwrap();
        assert_eq!(back.newest(), ts(50));
        assert_eq!(back.since(), ts(50));
        for k in [7, 8, 9, 10] {
            assert!(!back.admit(ts(50), k), "{k} was delivered");
        }
        assert!(back.admit(ts(50), 11), "a fourth flow of that time is new");
        let mut bad = bytes.clone();
        bad[10] ^= 1;
        assert!(Resume::decode(&bad, Duration::ZERO).is_err());
        assert!(Resume::decode(&bytes[..bytes.len() - 3], Duration::ZERO).is_err());
    }

    #[test]
    fn memory_is_bounded() {
        let mut r = Resume::with_capacity(Duration::from_secs(3600), 100);
        for k in 0..10_000 {
            r.admit(ts(1), k);
        }
        assert_eq!(r.remembered(), 100);
        let since = Resume::new(Duration::from_millis(1500)).back_off(Timestamp {
            seconds: 10,
            nanos: 100,
        });
        assert_eq!((since.seconds, since.nanos), (8, 500_000_100));
    }
}
