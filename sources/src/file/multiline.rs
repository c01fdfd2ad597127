//! Multiline aggregation: consecutive lines of one file joined into one event (with `\n`), as
//! Vector's `multiline` option does it.
//!
//! A line matching `start_pattern` opens a group when none is open (other lines pass through
//! alone). While a group is open, `condition_pattern` and `mode` decide:
//!
//! | mode | a line matching `condition_pattern` | a line not matching it |
//! |---|---|---|
//! | `continue_through` | joins the group | ends the group; opens the next one |
//! | `continue_past` | joins the group | joins the group and ends it |
//! | `halt_before` | ends the group; opens the next one | joins the group |
//! | `halt_with` | joins the group and ends it | joins the group |
//!
//! A group is emitted when no line has joined it for `timeout_ms`, or when the next line would
//! make it longer than the source's `max_line_bytes`. Lines are bytes (regexes are
//! `regex::bytes`), so invalid UTF-8 passes through unharmed.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use regex::bytes::Regex;
use serde::{Deserialize, Serialize};

/// `multiline.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    ContinueThrough,
    ContinuePast,
    HaltBefore,
    HaltWith,
}

/// `multiline = { ... }`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    /// A regular expression: a line that matches it opens a group, when none is open. Other lines
    /// pass through alone. Required.
    pub start_pattern: String,
    /// A regular expression tested on the lines after the first one; what a match means depends on
    /// `mode`. Required.
    pub condition_pattern: String,
    /// What a match of `condition_pattern` means (see [Multiline](#multiline)). Required.
    pub mode: Mode,
    /// A group is emitted when no line has joined it for this long, in milliseconds. Must be at
    /// least 1. Required.
    pub timeout_ms: u64,
}

/// A compiled [`MultilineConfig`].
#[derive(Debug, Clone)]
pub struct Multiline {
    start: Regex,
    condition: Regex,
    mode: Mode,
    timeout: Duration,
    max_bytes: usize,
}

/// The group being built for one file.
#[derive(Debug, Default)]
pub struct Pending {
    group: Option<Group>,
}

#[derive(Debug)]
struct Group {
    /// The first line alone (no copy until a second line joins).
    first: Bytes,
    joined: Option<BytesMut>,
    start: u64,
    last_line: Instant,
}

impl Group {
    fn new(line: Bytes, start: u64, now: Instant) -> Self {
        Self {
            first: line,
            joined: None,
            start,
            last_line: now,
        }
    }

    fn len(&self) -> usize {
        self.joined.as_ref().map_or(self.first.len(), |j| j.len())
    }

    fn add(&mut self, line: &[u8], now: Instant) {
        let j = self.joined.get_or_insert_with(|| {
            let mut b = BytesMut::with_capacity(self.first.len() * 4 + line.len() + 1);
            b.extend_from_slice(&self.first);
            b
        });
        j.extend_from_slice(b"\n");
        j.extend_from_slice(line);
        self.last_line = now;
    }

    fn into_event(self) -> (Bytes, u64) {
        match self.joined {
            Some(j) => (j.freeze(), self.start),
            None => (self.first, self.start),
        }
    }
}

impl Pending {
    /// Start offset of the held group.
    pub fn held_from(&self) -> Option<u64> {
        self.group.as_ref().map(|g| g.start)
    }

    /// Drops the held group without emitting it (the file will be read again from its start).
    pub fn discard(&mut self) {
        self.group = None;
    }
}

impl Multiline {
    /// Compiles the patterns; `max_bytes` bounds a group's size.
    pub fn new(cfg: &MultilineConfig, max_bytes: usize) -> Result<Self, String> {
        let start = Regex::new(&cfg.start_pattern)
            .map_err(|e| format!("`multiline.start_pattern`: {e}"))?;
        let condition = Regex::new(&cfg.condition_pattern)
            .map_err(|e| format!("`multiline.condition_pattern`: {e}"))?;
        if cfg.timeout_ms == 0 {
            return Err("`multiline.timeout_ms` must be at least 1".into());
        }
        Ok(Self {
            start,
            condition,
            mode: cfg.mode,
            timeout: Duration::from_millis(cfg.timeout_ms),
            max_bytes,
        })
    }

    /// Feeds one line (starting at file offset `start`); `emit` receives finished events with
    /// the offset of their first line.
    pub fn push(
        &self,
        p: &mut Pending,
        line: Bytes,
        start: u64,
        now: Instant,
        emit: &mut impl FnMut(Bytes, u64),
    ) {
        let Some(g) = p.group.as_mut() else {
            self.open_or_pass(p, line, start, now, emit);
            return;
        };
        if g.len() + 1 + line.len() > self.max_bytes {
            if let Some(g) = p.group.take() {
                let (e, s) = g.into_event();
                emit(e, s);
            }
            self.open_or_pass(p, line, start, now, emit);
            return;
        }
        let matched = self.condition.is_match(&line);
        match (self.mode, matched) {
            (Mode::ContinueThrough, true)
            | (Mode::ContinuePast, true)
            | (Mode::HaltBefore, false)
            | (Mode::HaltWith, false) => g.add(&line, now),
            (Mode::ContinuePast, false) | (Mode::HaltWith, true) => {
                g.add(&line, now);
                if let Some(g) = p.group.take() {
                    let (e, s) = g.into_event();
                    emit(e, s);
                }
            }
            // Vector's semantics: the line that ends the group opens the next one.
            (Mode::ContinueThrough, false) | (Mode::HaltBefore, true) => {
                let old = std::mem::replace(g, Group::new(line, start, now));
                let (e, s) = old.into_event();
                emit(e, s);
            }
        }
    }

    fn open_or_pass(
        &self,
        p: &mut Pending,
        line: Bytes,
        start: u64,
        now: Instant,
        emit: &mut impl FnMut(Bytes, u64),
    ) {
        if self.start.is_match(&line) {
            p.group = Some(Group::new(line, start, now));
        } else {
            emit(line, start);
        }
    }

    /// Emits the group if it has waited `timeout_ms` for a next line.
    pub fn expire(&self, p: &mut Pending, now: Instant, emit: &mut impl FnMut(Bytes, u64)) {
        if p.group
            .as_ref()
            .is_some_and(|g| now.duration_since(g.last_line) >= self.timeout)
        {
            self.flush(p, emit);
        }
    }

    /// Emits the held group, if any.
    pub fn flush(&self, p: &mut Pending, emit: &mut impl FnMut(Bytes, u64)) {
        if let Some(g) = p.group.take() {
            let (e, s) = g.into_event();
            emit(e, s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mode: Mode, start: &str, cond: &str, lines: &[&str]) -> Vec<(String, u64)> {
        let m = Multiline::new(
            &MultilineConfig {
                start_pattern: start.into(),
                condition_pattern: cond.into(),
                mode,
                timeout_ms: 1000,
            },
            1 << 20,
        )
        .unwrap();
        let mut p = Pending::default();
        let mut out = Vec::new();
        let mut emit = |b: Bytes, s: u64| out.push((String::from_utf8(b.to_vec()).unwrap(), s));
        let now = Instant::now();
        let mut off = 0;
        for l in lines {
            m.push(&mut p, Bytes::from(l.to_string()), off, now, &mut emit);
            off += l.len() as u64 + 1;
        }
        m.flush(&mut p, &mut emit);
        out
    }

    fn texts(v: Vec<(String, u64)>) -> Vec<String> {
        v.into_iter().map(|(t, _)| t).collect()
    }

    #[test]
    fn continue_through_keeps_a_java_stack_trace_together() {
        let got = run(
            Mode::ContinueThrough,
            r"^[^\s]",
            r"^(\s+at |Caused by:|\s+\.\.\.)",
            &[
                "2024-01-01 INFO started",
                "2024-01-01 ERROR boom",
                "java.lang.IllegalStateException: bad",
                "    at a.b.C.d(C.java:10)",
                "    at a.b.E.f(E.java:20)",
                "Caused by: java.io.IOException: disk",
                "    ... 3 more",
                "2024-01-01 INFO next",
            ],
        );
        assert_eq!(
            texts(got),
            vec![
                "2024-01-01 INFO started",
                "2024-01-01 ERROR boom",
                "java.lang.IllegalStateException: bad\n    at a.b.C.d(C.java:10)\n    at a.b.E.f(E.java:20)\nCaused by: java.io.IOException: disk\n    ... 3 more",
                "2024-01-01 INFO next",
            ]
        );
    }

    #[test]
    fn continue_past_takes_one_more_line() {
        let got = run(
            Mode::ContinuePast,
            r"\\$",
            r"\\$",
            &["a \\", "b \\", "c", "d"],
        );
        assert_eq!(got, vec![("a \\\nb \\\nc".into(), 0), ("d".into(), 10)]);
    }

    #[test]
    fn halt_before_and_halt_with() {
        let got = run(
            Mode::HaltBefore,
            r"^BEGIN",
            r"^BEGIN",
            &["pre", "BEGIN 1", "x", "y", "BEGIN 2", "z"],
        );
        assert_eq!(texts(got), vec!["pre", "BEGIN 1\nx\ny", "BEGIN 2\nz"]);
        let got = run(
            Mode::HaltWith,
            r"^SELECT|^INSERT",
            r";$",
            &["SELECT a", "FROM t;", "INSERT x", "VALUES 1;", "noise"],
        );
        assert_eq!(
            texts(got),
            vec!["SELECT a\nFROM t;", "INSERT x\nVALUES 1;", "noise"]
        );
    }

    #[test]
    fn timeout_emits_an_unfinished_group_and_held_from_tracks_it() {
        let m = Multiline::new(
            &MultilineConfig {
                start_pattern: r"^\S".into(),
                condition_pattern: r"^\s".into(),
                mode: Mode::ContinueThrough,
                timeout_ms: 50,
            },
            1 << 20,
        )
        .unwrap();
        let mut p = Pending::default();
        let mut out = Vec::new();
        let t0 = Instant::now();
        let mut emit = |b: Bytes, s: u64| out.push((b, s));
        m.push(&mut p, Bytes::from_static(b"Exception"), 100, t0, &mut emit);
        m.push(&mut p, Bytes::from_static(b"  at x"), 110, t0, &mut emit);
        assert_eq!(p.held_from(), Some(100));
        m.expire(&mut p, t0 + Duration::from_millis(10), &mut emit);
        assert!(p.held_from().is_some(), "not yet");
        m.expire(&mut p, t0 + Duration::from_millis(60), &mut emit);
        assert_eq!(p.held_from(), None);
        assert_eq!(out, vec![(Bytes::from_static(b"Exception\n  at x"), 100)]);
    }

    #[test]
    fn group_is_cut_at_max_bytes() {
        let m = Multiline::new(
            &MultilineConfig {
                start_pattern: r"^S".into(),
                condition_pattern: r"^ ".into(),
                mode: Mode::ContinueThrough,
                timeout_ms: 50,
            },
            10,
        )
        .unwrap();
        let mut p = Pending::default();
        let mut out = Vec::new();
        let now = Instant::now();
        let mut emit = |b: Bytes, _| out.push(b);
        for l in ["S1", " aaaa", " bbbb", " c"] {
            m.push(&mut p, Bytes::from(l), 0, now, &mut emit);
        }
        m.flush(&mut p, &mut emit);
        assert_eq!(
            out,
            vec![
                Bytes::from("S1\n aaaa"),
                Bytes::from(" bbbb"),
                Bytes::from(" c")
            ]
        );
    }

    #[test]
    fn bad_patterns_are_reported() {
        let e = Multiline::new(
            &MultilineConfig {
                start_pattern: "(".into(),
                condition_pattern: "x".into(),
                mode: Mode::HaltWith,
                timeout_ms: 1,
            },
            10,
        )
        .unwrap_err();
        assert!(e.contains("start_pattern"), "{e}");
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;

    /// Lines grouped in every mode, within a small size limit: nothing lost or added (the
    /// events hold every line once, joined by newlines), groups over the limit only when one
    /// line alone is, and offsets in order.
    #[test]
    fn fuzz_multiline() {
        const MAX: usize = 64;
        let modes = [
            Mode::ContinueThrough,
            Mode::ContinuePast,
            Mode::HaltBefore,
            Mode::HaltWith,
        ];
        let groupers: Vec<Multiline> = modes
            .iter()
            .map(|&mode| {
                Multiline::new(
                    &MultilineConfig {
                        start_pattern: r"^\S".into(),
                        condition_pattern: r"^\s+at |\\$|^Caused by".into(),
                        mode,
                        timeout_ms: 1000,
                    },
                    MAX,
                )
                .unwrap()
            })
            .collect();
        weir_testing::fuzz::Fuzz::new("multiline")
            .seed("java.lang.Error: x\n    at a.b(C.java:1)\n    at d.e(F.java:2)\nCaused by: y\n    at g\nnext line\n")
            .seed("a \\\nb \\\nc\nsingle\n\n")
            .dict(["\n", "    at ", "\\", "Caused by", " "])
            .run(|input| {
                let lines: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
                let line_bytes: usize = lines.iter().map(|l| l.len()).sum();
                for m in &groupers {
                    let mut p = Pending::default();
                    let mut out: Vec<(Bytes, u64)> = Vec::new();
                    let mut emit = |b: Bytes, s: u64| out.push((b, s));
                    let now = Instant::now();
                    let mut off = 0;
                    for l in &lines {
                        m.push(&mut p, Bytes::copy_from_slice(l), off, now, &mut emit);
                        off += l.len() as u64 + 1;
                    }
                    m.flush(&mut p, &mut emit);
                    let event_bytes: usize = out.iter().map(|(b, _)| b.len()).sum();
                    let joins = lines.len() - out.len();
                    assert_eq!(event_bytes, line_bytes + joins, "{:?}", m.mode);
                    for (b, _) in &out {
                        assert!(
                            b.len() <= MAX || !b.contains(&b'\n'),
                            "a group of {} bytes",
                            b.len()
                        );
                    }
                    assert!(out.windows(2).all(|w| w[0].1 < w[1].1), "offsets out of order");
                }
            });
    }
}
