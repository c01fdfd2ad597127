//! Parser of `perf script` text: one stack-sample event per sample.
//!
//! `perf script` prints each sample as a header line, its call chain (one frame per line, leaf
//! first) and a blank line:
//!
//! ```text
//! java 24636/25607 [002] 6544038.708352:   10309278 cpu-clock:ppp:
//!         ffffffff8103ce3b native_safe_halt+0xb ([kernel.kallsyms])
//!             7f722d142778 Ljava/io/PrintStream;::print (/tmp/perf-19982.map)
//!                        0 [unknown] ([unknown])
//!
//! ```
//!
//! The parser is a small state machine over lines ([`State`]): `Idle` (between samples),
//! `Sample` (header seen, collecting frames) and `Skipping` (the sample is broken: skip to the
//! next blank line). It works on bytes, so invalid UTF-8 never stops it, and the strings it
//! emits are slices of the line it was given (no copy).
//!
//! The fields are documented in `docs/schemas/stack-sample.md`. What the parser decides, in the
//! way the reference `stackcollapse-perf.pl` reads the same text:
//! - the header is `comm pid/tid` or `comm tid` (comm may contain spaces), then optional
//!   `[cpu]`, `time:`, `period` and `event:`;
//! - a frame is `addr symbol+0xoff (module)`; the offset is split off, `[unknown]` symbols and
//!   modules become null, a module is kept as printed (`/memfd:doublemapper (deleted)`), JIT symbols
//!   (`/tmp/perf-<pid>.map`) written as `outer->inlined->...` become one frame each, and perf's
//!   own `sym (inlined)` lines are frames with `inlined = true`;
//! - a sample that ends without its blank line (the input stopped mid-sample) is dropped and
//!   counted as `truncated`, as the reference drops it.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use chrono::{DateTime, Utc};
use weir_pipeline::event::{Event, EventMetadata, LogEvent};
pub use weir_records::stack::FrameKind;
use weir_records::stack::{StackFrame, StackSample, TextRange};

/// A sample's header line; the strings are byte ranges of the line.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub comm: Range<usize>,
    pub pid: Option<i64>,
    pub tid: i64,
    pub cpu: Option<i64>,
    /// Seconds on perf's clock, as printed.
    pub time: Option<f64>,
    pub period: Option<i64>,
    /// The event name without its final colon (`cycles`, `cpu-clock:ppp`).
    pub event: Option<Range<usize>>,
}

/// What went wrong with the input; each is counted under [`ParseError::kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line {line}: not a `perf script` sample header; skipped to the next blank line")]
    BadHeader { line: u64 },
    #[error("line {line}: not a `perf script` frame line; the sample was dropped")]
    BadFrame { line: u64 },
    #[error("line {line}: line over max_line_bytes; the sample it belongs to was dropped")]
    Oversized { line: u64 },
    #[error("line {line}: the sample has more than {max} frames; it was dropped")]
    TooManyFrames { line: u64, max: usize },
    #[error(
        "line {line}: the input ended inside a sample (no blank line after it); it was dropped"
    )]
    Truncated { line: u64 },
}

impl ParseError {
    /// The error kind it is counted under.
    pub fn kind(&self) -> &'static str {
        match self {
            ParseError::BadHeader { .. } | ParseError::BadFrame { .. } => "parse",
            ParseError::Oversized { .. } => "oversized",
            ParseError::TooManyFrames { .. } => "too_many_frames",
            ParseError::Truncated { .. } => "truncated",
        }
    }
}

/// The bytes an open sample's ranges point into.
#[derive(Debug)]
enum Text {
    /// `chunk[base..end]`: every line so far came from this chunk (the usual case), so the
    /// sample's text will be a slice of it, without a copy.
    Chunk {
        chunk: Bytes,
        base: usize,
        end: usize,
    },
    /// The sample's lines copied out, once it spans two chunks.
    Owned(Vec<u8>),
}

impl Text {
    fn starting_at(chunk: &Bytes, line: &Range<usize>) -> Text {
        Text::Chunk {
            chunk: chunk.clone(),
            base: line.start,
            end: line.end,
        }
    }

    /// Makes `line` of `chunk` part of the text; returns where it starts in the text.
    fn add(&mut self, chunk: &Bytes, line: &Range<usize>) -> usize {
        match self {
            Text::Chunk {
                chunk: held,
                base,
                end,
            } if held.as_ptr() == chunk.as_ptr()
                && held.len() == chunk.len()
                && line.start >= *base =>
            {
                *end = line.end;
                line.start - *base
            }
            Text::Chunk {
                chunk: held,
                base,
                end,
            } => {
                let mut owned = Vec::with_capacity(*end - *base + 4 * line.len());
                owned.extend_from_slice(&held[*base..*end]);
                let at = owned.len();
                owned.extend_from_slice(&chunk[line.clone()]);
                *self = Text::Owned(owned);
                at
            }
            Text::Owned(owned) => {
                let at = owned.len();
                owned.extend_from_slice(&chunk[line.clone()]);
                at
            }
        }
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Text::Chunk {
                mut chunk,
                base,
                end,
            } => {
                chunk.truncate(end);
                chunk.advance(base.min(chunk.len()));
                chunk
            }
            Text::Owned(owned) => Bytes::from(owned),
        }
    }
}

/// A sample being read: its header, the frames so far, and the text they point into.
#[derive(Debug)]
struct Open {
    text: Text,
    comm: TextRange,
    pid: Option<i64>,
    tid: i64,
    cpu: Option<i64>,
    time: Option<f64>,
    period: Option<i64>,
    event: Option<TextRange>,
    frames: Vec<StackFrame>,
    start_line: u64,
}

/// Where the parser is between lines.
#[derive(Debug)]
enum State {
    /// Between samples: the next non-blank, non-comment line is a header.
    Idle,
    /// A header was read; frame lines follow until a blank line.
    Sample(Open),
    /// The current sample is broken: skip lines until a blank line.
    Skipping,
}

/// Turns `perf script` lines into stack-sample log events.
#[derive(Debug)]
pub struct ScriptParser {
    state: State,
    source_id: Option<Arc<str>>,
    max_frames: usize,
    line_no: u64,
    /// The ingest time of the events, one clock read per chunk of input.
    read_time: DateTime<Utc>,
    /// Token ranges of a header line (reused).
    tokens: Vec<(usize, usize)>,
    /// An emptied frame list to start the next sample with.
    spare_frames: Vec<StackFrame>,
    kinds: KindCache,
    frame_cache: FrameCache,
}

impl ScriptParser {
    pub fn new(source_id: Option<Arc<str>>, max_frames: usize) -> Self {
        Self {
            state: State::Idle,
            source_id,
            max_frames: max_frames.max(1),
            line_no: 0,
            read_time: Utc::now(),
            tokens: Vec::with_capacity(16),
            spare_frames: Vec::new(),
            kinds: KindCache::default(),
            frame_cache: FrameCache::default(),
        }
    }

    /// Sets the ingest time of the events finished from now on (the time of the read).
    pub fn set_read_time(&mut self, t: DateTime<Utc>) {
        self.read_time = t;
    }

    /// Handles one line (`chunk[line]`, without its newline). A finished sample is pushed to
    /// `out`. The event's strings are a slice of `chunk` when all the sample's lines are in
    /// the same chunk, else a copy.
    pub fn push_line(
        &mut self,
        chunk: &Bytes,
        line: Range<usize>,
        out: &mut Vec<Event>,
    ) -> Result<(), ParseError> {
        self.line_no += 1;
        let text = &chunk[line.clone()];
        if text.first() == Some(&b'#') {
            return Ok(());
        }
        let lead = leading_blanks(text);
        if text[lead..].iter().all(|b| b.is_ascii_whitespace()) {
            if let State::Sample(open) = std::mem::replace(&mut self.state, State::Idle) {
                out.push(self.event(open));
            }
            return Ok(());
        }
        match &mut self.state {
            State::Skipping => Ok(()),
            State::Idle => self.start_sample(chunk, line),
            State::Sample(open) => {
                let before = open.frames.len();
                let at = open.text.add(chunk, &line);
                if self
                    .frame_cache
                    .push(text, lead, at, &mut open.frames, &mut self.kinds)
                {
                    if open.frames.len() > self.max_frames {
                        self.state = State::Skipping;
                        return Err(ParseError::TooManyFrames {
                            line: self.line_no,
                            max: self.max_frames,
                        });
                    }
                    return Ok(());
                }
                open.frames.truncate(before);
                // A header right after a sample whose blank line is missing starts a new one.
                if !text[0].is_ascii_whitespace() && parse_header(text, &mut self.tokens).is_some()
                {
                    if let State::Sample(open) = std::mem::replace(&mut self.state, State::Idle) {
                        out.push(self.event(open));
                    }
                    return self.start_sample(chunk, line);
                }
                self.state = State::Skipping;
                Err(ParseError::BadFrame { line: self.line_no })
            }
        }
    }

    /// A line longer than the limit was skipped: the sample it belongs to is dropped.
    pub fn oversized_line(&mut self) -> ParseError {
        self.line_no += 1;
        self.state = State::Skipping;
        ParseError::Oversized { line: self.line_no }
    }

    /// The input ended: a sample still open never got its blank line, so it is dropped.
    pub fn finish(&mut self) -> Result<(), ParseError> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Sample(open) => Err(ParseError::Truncated {
                line: open.start_line,
            }),
            State::Idle | State::Skipping => Ok(()),
        }
    }

    fn start_sample(&mut self, chunk: &Bytes, line: Range<usize>) -> Result<(), ParseError> {
        let text = &chunk[line.clone()];
        let Some((header, rest)) = parse_header(text, &mut self.tokens) else {
            self.state = State::Skipping;
            return Err(ParseError::BadHeader { line: self.line_no });
        };
        let (Some(comm), Some(event)) = (
            TextRange::new(header.comm.start, header.comm.end),
            match header.event {
                Some(e) => TextRange::new(e.start, e.end).map(Some),
                None => Some(None),
            },
        ) else {
            // Not addressable in 32 bits: a line of several GiB.
            self.state = State::Skipping;
            return Err(ParseError::Oversized { line: self.line_no });
        };
        let mut frames = std::mem::take(&mut self.spare_frames);
        frames.clear();
        // Without a call chain, perf prints the sampled ip on the header line.
        if let Some(r) = rest {
            if !push_frames(&text[r..], r, &mut frames, &mut self.kinds) {
                frames.clear();
            }
        }
        self.state = State::Sample(Open {
            text: Text::starting_at(chunk, &line),
            comm,
            pid: header.pid,
            tid: header.tid,
            cpu: header.cpu,
            time: header.time,
            period: header.period,
            event,
            frames,
            start_line: self.line_no,
        });
        Ok(())
    }

    fn event(&mut self, open: Open) -> Event {
        let Open {
            text,
            comm,
            pid,
            tid,
            cpu,
            time,
            period,
            event,
            mut frames,
            ..
        } = open;
        // perf prints an inlined function (`sym (inlined)`) before the function it is inlined
        // into, without a module: it lives in that function's module.
        let mut below: Option<(Option<TextRange>, FrameKind)> = None;
        for f in frames.iter_mut().rev() {
            if f.inlined && f.module.is_none() {
                if let Some((m, k)) = below {
                    f.module = m;
                    f.kind = k;
                }
            } else {
                below = Some((f.module, f.kind));
            }
        }
        // The next sample's frame list: about as long as this one's.
        self.spare_frames = Vec::with_capacity(frames.len().max(8));
        let sample = StackSample {
            text: text.into_bytes(),
            comm,
            pid,
            tid,
            cpu,
            timestamp: time,
            event,
            period,
            frames,
        };
        LogEvent::from_typed(
            sample,
            EventMetadata::at(self.source_id.clone(), self.read_time),
        )
        .into()
    }
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Byte ranges of the whitespace-separated tokens of `s`, into `out`.
fn tokens(s: &[u8], out: &mut Vec<(usize, usize)>) {
    out.clear();
    let mut i = 0;
    while i < s.len() {
        while i < s.len() && is_space(s[i]) {
            i += 1;
        }
        let start = i;
        while i < s.len() && !is_space(s[i]) {
            i += 1;
        }
        if i > start {
            out.push((start, i));
        }
    }
}

/// A decimal integer of digits only (`None` past `i64::MAX`).
fn parse_int(s: &[u8]) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    let mut n: i64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
    }
    Some(n)
}

/// `1234` or `1234/1240`: (pid, tid).
fn pid_tid(s: &[u8]) -> Option<(Option<i64>, i64)> {
    // A word of a few bytes: a plain loop beats a call to memchr.
    match s.iter().position(|&b| b == b'/') {
        Some(p) => Some((Some(parse_int(&s[..p])?), parse_int(&s[p + 1..])?)),
        None => Some((None, parse_int(s)?)),
    }
}

/// `[002]`.
fn cpu(s: &[u8]) -> Option<i64> {
    parse_int(s.strip_prefix(b"[")?.strip_suffix(b"]")?)
}

/// Exact powers of ten as `f64` (every one up to 1e22 is).
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// `6544038.708352:`.
fn time(s: &[u8]) -> Option<f64> {
    let body = s.strip_suffix(b":")?;
    let mut mantissa: u64 = 0;
    let mut digits = 0usize;
    let mut dot = None;
    for (i, &b) in body.iter().enumerate() {
        match b {
            b'0'..=b'9' => {
                mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(b - b'0'));
                digits += 1;
            }
            b'.' if dot.is_none() => dot = Some(i),
            _ => return None,
        }
    }
    if digits == 0 {
        return None;
    }
    let scale = dot.map_or(0, |d| body.len() - d - 1);
    if digits <= 15 && scale < POW10.len() {
        // Both exact (under 2^53, a power of ten up to 1e22): one correctly rounded division
        // gives the correctly rounded value, what `str::parse` returns, without its overhead.
        return Some(mantissa as f64 / POW10[scale]);
    }
    std::str::from_utf8(body).ok()?.parse().ok()
}

/// Parses a header line (`toks` is scratch space): the header and, when the line goes on
/// after the event name (the sampled ip of a sample without a call chain), where the rest
/// starts.
pub fn parse_header(
    line: &[u8],
    toks: &mut Vec<(usize, usize)>,
) -> Option<(Header, Option<usize>)> {
    if line.first().is_none_or(|b| b.is_ascii_whitespace()) {
        return None;
    }
    tokens(line, toks);
    let toks = &toks[..];
    // The pid/tid is the first all-digit word after the comm that is followed by more; a comm
    // may contain spaces and digits (`Thread 2 1234/1240 [000] ...`), so a candidate directly
    // followed by another pid-shaped word and then a cpu or a time is part of the comm.
    let mut at = None;
    for i in 1..toks.len().saturating_sub(1) {
        let t = &line[toks[i].0..toks[i].1];
        if pid_tid(t).is_none() {
            continue;
        }
        let next = &line[toks[i + 1].0..toks[i + 1].1];
        let after = toks.get(i + 2).map(|r| &line[r.0..r.1]);
        let comm_word =
            pid_tid(next).is_some() && after.is_some_and(|a| cpu(a).is_some() || time(a).is_some());
        if !comm_word {
            at = Some(i);
            break;
        }
    }
    let i = at?;
    let (pid, tid) = pid_tid(&line[toks[i].0..toks[i].1])?;
    let comm_end = line[..toks[i].0]
        .iter()
        .rposition(|b| !is_space(*b))
        .map_or(0, |p| p + 1);
    if comm_end == 0 {
        return None;
    }
    let mut header = Header {
        comm: 0..comm_end,
        pid,
        tid,
        cpu: None,
        time: None,
        period: None,
        event: None,
    };
    let mut j = i + 1;
    let tok = |j: usize| toks.get(j).map(|r| &line[r.0..r.1]);
    if let Some(c) = tok(j).and_then(cpu) {
        header.cpu = Some(c);
        j += 1;
    }
    if let Some(t) = tok(j).and_then(time) {
        header.time = Some(t);
        j += 1;
    }
    if let Some(p) = tok(j).and_then(parse_int) {
        header.period = Some(p);
        j += 1;
    }
    let mut rest = None;
    while let Some(t) = tok(j) {
        if t.len() > 1 && t.ends_with(b":") {
            header.event = Some(toks[j].0..toks[j].1 - 1);
            if let Some(r) = toks.get(j + 1) {
                rest = Some(r.0);
            }
            break;
        }
        j += 1;
    }
    Some((header, rest))
}

/// The end of the `(module)` group that ends `s` (trailing whitespace already removed): the
/// index of its opening parenthesis.
fn module_open(s: &[u8]) -> Option<usize> {
    if s.last() != Some(&b')') {
        return None;
    }
    let mut depth = 0usize;
    for (i, b) in s.iter().enumerate().rev() {
        match b {
            b')' => depth += 1,
            b'(' => {
                depth -= 1;
                if depth == 0 {
                    return (i == 0 || is_space(s[i - 1])).then_some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Whether `s` is a lowercase hex number (the `+0x..` offset), and its value (`None` past
/// `i64::MAX`).
fn parse_hex(s: &[u8]) -> Option<Option<i64>> {
    if s.is_empty() {
        return None;
    }
    let mut n: Option<i64> = Some(0);
    for &b in s {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        n = n.and_then(|n| n.checked_mul(16)?.checked_add(i64::from(d)));
    }
    Some(n)
}

/// Where the last `+0x` of `symbol` starts.
fn rfind_offset(symbol: &[u8]) -> Option<usize> {
    memchr::memrchr_iter(b'+', symbol).find(|&p| symbol[p + 1..].starts_with(b"0x"))
}

/// The kind of the module seen last: frames of one module come in runs, and comparing the
/// name is cheaper than classifying it again.
#[derive(Debug, Default)]
pub struct KindCache {
    module: Vec<u8>,
    kind: Option<FrameKind>,
}

impl KindCache {
    fn kind(&mut self, module: Option<&[u8]>) -> FrameKind {
        let Some(m) = module else {
            return FrameKind::User;
        };
        if let Some(k) = self.kind {
            if self.module == m {
                return k;
            }
        }
        let k = FrameKind::of_module(Some(m));
        self.module.clear();
        self.module.extend_from_slice(m);
        self.kind = Some(k);
        k
    }
}

/// The most distinct frame lines [`FrameCache`] holds; past it, it starts over.
const FRAME_CACHE_LINES: usize = 16 * 1024;

/// A frame line parsed before, its ranges counted from the start of its text.
#[derive(Debug)]
enum Parsed {
    One(StackFrame),
    /// A JIT inline chain.
    Many(Box<[StackFrame]>),
}

/// Frame lines already parsed, by their text: a profile repeats the same few thousand lines
/// (one per distinct address) over and over, and looking a line up costs a fraction of
/// parsing it. Holds at most [`FRAME_CACHE_LINES`] lines (emptied when full); only lines that
/// parse are kept.
#[derive(Debug, Default)]
pub struct FrameCache {
    lines: HashMap<Box<[u8]>, Parsed, rustc_hash::FxBuildHasher>,
}

/// `f` with its ranges moved `by` bytes up (`by` may wrap, to move them down).
fn shift(f: &StackFrame, by: u32) -> StackFrame {
    let r = |t: TextRange| TextRange {
        start: t.start.wrapping_add(by),
        end: t.end.wrapping_add(by),
    };
    StackFrame {
        addr: r(f.addr),
        symbol: f.symbol.map(r),
        module: f.module.map(r),
        ..*f
    }
}

impl FrameCache {
    /// [`push_frames`] for a line whose first `lead` bytes are spaces or tabs, from the cache
    /// when the line was seen before.
    pub fn push(
        &mut self,
        line: &[u8],
        lead: usize,
        at: usize,
        frames: &mut Vec<StackFrame>,
        kinds: &mut KindCache,
    ) -> bool {
        let Some(r) = trimmed(line, lead) else {
            return false;
        };
        let s = &line[r.clone()];
        let base = at + r.start;
        let Ok(base32) = u32::try_from(base + s.len()).map(|_| base as u32) else {
            // Past 4 GiB: not addressable, which parsing reports.
            return parse_frame(s, base, frames, kinds);
        };
        if let Some(p) = self.lines.get(s) {
            match p {
                Parsed::One(f) => frames.push(shift(f, base32)),
                Parsed::Many(fs) => frames.extend(fs.iter().map(|f| shift(f, base32))),
            }
            return true;
        }
        let first = frames.len();
        if !parse_frame(s, base, frames, kinds) {
            return false;
        }
        if self.lines.len() >= FRAME_CACHE_LINES {
            self.lines.clear();
        }
        let back = base32.wrapping_neg();
        let parsed = match &frames[first..] {
            [one] => Parsed::One(shift(one, back)),
            many => Parsed::Many(many.iter().map(|f| shift(f, back)).collect()),
        };
        self.lines.insert(s.into(), parsed);
        true
    }
}

/// Parses a frame line into one frame (or several, for a JIT inline chain) appended to
/// `frames`, its ranges counted from `at` (where the line starts in the sample's text).
/// Returns false when the line is not a frame line.
pub fn push_frames(
    line: &[u8],
    at: usize,
    frames: &mut Vec<StackFrame>,
    kinds: &mut KindCache,
) -> bool {
    match trimmed(line, leading_blanks(line)) {
        Some(r) => parse_frame(&line[r.clone()], at + r.start, frames, kinds),
        None => false,
    }
}

/// How many spaces and tabs `line` starts with (frame lines start with a dozen or so).
fn leading_blanks(line: &[u8]) -> usize {
    let mut i = 0;
    while i < line.len() {
        if line.get(i..i + 8) == Some(&[b' '; 8][..]) {
            i += 8;
            continue;
        }
        if !is_space(line[i]) {
            break;
        }
        i += 1;
    }
    i
}

/// The frame text of a line whose blanks end at `start`: without them and trailing
/// whitespace; `None` when nothing is left.
fn trimmed(line: &[u8], start: usize) -> Option<Range<usize>> {
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |p| p + 1);
    (start < end).then_some(start..end)
}

/// Parses a frame line's text `s` (trimmed; it starts at `at` in the sample's text).
fn parse_frame(s: &[u8], at: usize, frames: &mut Vec<StackFrame>, kinds: &mut KindCache) -> bool {
    let line = s;
    let addr_len = s.iter().position(|b| is_space(*b)).unwrap_or(s.len());
    if addr_len == 0
        || !s[..addr_len]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        return false;
    }
    let rest_start = s[addr_len..]
        .iter()
        .position(|b| !is_space(*b))
        .map_or(s.len(), |p| addr_len + p);
    let rest = &s[rest_start..];
    let Some(open) = module_open(rest) else {
        return false;
    };
    let mut module = &rest[open + 1..rest.len() - 1];
    let mut inlined = false;
    if module == b"inlined" {
        module = b"";
        inlined = true;
    }
    let sym_end = rest[..open]
        .iter()
        .rposition(|b| !is_space(*b))
        .map_or(0, |p| p + 1);
    let mut symbol = &rest[..sym_end];
    let mut offset = None;
    if let Some(p) = rfind_offset(symbol) {
        if let Some(o) = parse_hex(&symbol[p + 3..]) {
            offset = o;
            symbol = &symbol[..p];
        }
    }
    // The range of `part` (a subslice of the line) in the sample's text; `None` past 4 GiB.
    let range = |part: &[u8]| -> Option<TextRange> {
        let off = at + (part.as_ptr() as usize - line.as_ptr() as usize);
        TextRange::new(off, off + part.len())
    };
    let Some(addr) = range(&s[..addr_len]) else {
        return false;
    };
    let module_bytes = (!inlined && module != b"[unknown]").then_some(module);
    let kind = kinds.kind(module_bytes);
    let module = match module_bytes {
        Some(m) => match range(m) {
            Some(r) => Some(r),
            None => return false,
        },
        None => None,
    };
    let named = |part: &[u8]| -> Option<TextRange> {
        (!part.is_empty() && part != b"[unknown]")
            .then(|| range(part))
            .flatten()
    };
    if kind == FrameKind::Jit && memchr::memmem::find(symbol, b"->").is_some() {
        // perf-map-agent's `outer->inlined->innermost`: innermost is nearest the leaf.
        let first = frames.len();
        let mut from = 0;
        let mut n = 0;
        loop {
            let next = memchr::memmem::find(&symbol[from..], b"->");
            let part = &symbol[from..next.map_or(symbol.len(), |p| from + p)];
            frames.push(StackFrame {
                addr,
                symbol: named(part),
                offset: if n == 0 { offset } else { None },
                module,
                kind,
                inlined: n > 0,
            });
            n += 1;
            match next {
                Some(p) => from += p + 2,
                None => break,
            }
        }
        frames[first..].reverse();
    } else {
        frames.push(StackFrame {
            addr,
            symbol: named(symbol),
            offset,
            module,
            kind,
            inlined,
        });
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_pipeline::event::Value;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    /// A header with its strings resolved.
    #[derive(Debug)]
    struct Header {
        comm: Bytes,
        pid: Option<i64>,
        tid: i64,
        cpu: Option<i64>,
        time: Option<f64>,
        period: Option<i64>,
        event: Option<Bytes>,
    }

    fn parse_header(line: &Bytes) -> Option<(Header, Option<usize>)> {
        let (h, rest) = super::parse_header(line, &mut Vec::new())?;
        let header = Header {
            comm: line.slice(h.comm),
            pid: h.pid,
            tid: h.tid,
            cpu: h.cpu,
            time: h.time,
            period: h.period,
            event: h.event.map(|r| line.slice(r)),
        };
        Some((header, rest))
    }

    /// A frame with its strings resolved.
    #[derive(Debug, Clone)]
    struct Frame {
        addr: Bytes,
        symbol: Option<Bytes>,
        offset: Option<i64>,
        module: Option<Bytes>,
        kind: FrameKind,
        inlined: bool,
    }

    fn push_frames(line: &Bytes, out: &mut Vec<Frame>) -> bool {
        let mut frames = Vec::new();
        if !super::push_frames(line, 0, &mut frames, &mut KindCache::default()) {
            return false;
        }
        let r = |t: TextRange| line.slice(t.start as usize..t.end as usize);
        out.extend(frames.into_iter().map(|f| Frame {
            addr: r(f.addr),
            symbol: f.symbol.map(r),
            offset: f.offset,
            module: f.module.map(r),
            kind: f.kind,
            inlined: f.inlined,
        }));
        true
    }

    fn push(p: &mut ScriptParser, line: Bytes, out: &mut Vec<Event>) -> Result<(), ParseError> {
        p.push_line(&line, 0..line.len(), out)
    }

    fn frame(line: &'static str) -> Vec<Frame> {
        let mut v = Vec::new();
        assert!(push_frames(&b(line), &mut v), "{line}");
        v
    }

    #[test]
    fn headers_in_every_shape_perf_prints() {
        let (h, rest) = parse_header(&b(
            "java 24636/25607 [002] 6544038.708352:   10309278 cpu-clock:ppp: ",
        ))
        .unwrap();
        assert_eq!(h.comm, b("java"));
        assert_eq!((h.pid, h.tid, h.cpu), (Some(24636), 25607, Some(2)));
        assert_eq!(h.time, Some(6544038.708352));
        assert_eq!(h.period, Some(10309278));
        assert_eq!(h.event, Some(b("cpu-clock:ppp")));
        assert!(rest.is_none());

        let (h, _) = parse_header(&b("V8 WorkerThread 25607 4794564.109216: cycles:")).unwrap();
        assert_eq!(h.comm, b("V8 WorkerThread"));
        assert_eq!((h.pid, h.tid, h.cpu), (None, 25607, None));
        assert_eq!(h.event, Some(b("cycles")));

        let (h, _) =
            parse_header(&b("swapper     0 [005] 1410598.603979:       cycles: ")).unwrap();
        assert_eq!((h.comm, h.tid, h.cpu), (b("swapper"), 0, Some(5)));

        let (h, _) = parse_header(&b("func_ab 15294 cpu-clock: ")).unwrap();
        assert_eq!((h.comm, h.tid, h.time), (b("func_ab"), 15294, None));

        let (h, _) = parse_header(&b("Thread 2 1234/1240 [000] 1.5: 1 cycles:")).unwrap();
        assert_eq!((h.comm, h.pid, h.tid), (b("Thread 2"), Some(1234), 1240));

        let (h, rest) = parse_header(&b(
            "perf 12 [000] 1.0: cycles:  ffffffff8100 native_write ([kernel.kallsyms])",
        ))
        .unwrap();
        assert_eq!(h.event, Some(b("cycles")));
        assert!(rest.is_some());

        assert!(parse_header(&b(
            "\tffffffff8103ce3b native_safe_halt ([kernel.kallsyms])"
        ))
        .is_none());
        assert!(parse_header(&b("no digits here:")).is_none());
        assert!(parse_header(&b("\u{1}\u{2}\u{3}")).is_none());
    }

    #[test]
    fn times_parse_as_str_parse_does() {
        for t in [
            "6544038.708352",
            "1410598.006198",
            "0.000001",
            "5.",
            ".5",
            "7",
            "123456789012345",
            "1234567890.123456789",
            "0.0000000000000000000000001",
            "99999999999999999999",
        ] {
            let colon = format!("{t}:");
            assert_eq!(time(colon.as_bytes()), t.parse::<f64>().ok(), "{t}");
        }
        for bad in ["", ".", "1.2.3", "1e5", "-1", "1 2", "12"] {
            let colon = if bad == "12" {
                bad.to_string()
            } else {
                format!("{bad}:")
            };
            assert_eq!(time(colon.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn frames_split_offsets_unknowns_and_kinds() {
        let f = frame("\tffffffff8103ce3b native_safe_halt+0x1b ([kernel.kallsyms])");
        assert_eq!(f[0].symbol, Some(b("native_safe_halt")));
        assert_eq!(f[0].offset, Some(0x1b));
        assert_eq!(f[0].addr, b("ffffffff8103ce3b"));
        assert_eq!(f[0].kind, FrameKind::Kernel);

        let f = frame("               0 [unknown] ([unknown])");
        assert_eq!((f[0].symbol.clone(), f[0].module.clone()), (None, None));
        assert_eq!(f[0].kind, FrameKind::User);

        let f = frame("  8c3453 tcp_sendmsg (/lib/modules/4.3.0-rc1-virtual/build/vmlinux)");
        assert_eq!(f[0].kind, FrameKind::Kernel);

        let f = frame("7f7241fbe6d8 arrayOopDesc::base(BasicType) const (/opt/jdk/libjvm.so)");
        assert_eq!(f[0].symbol, Some(b("arrayOopDesc::base(BasicType) const")));
        assert_eq!(f[0].module, Some(b("/opt/jdk/libjvm.so")));

        let f = frame("   13a80b608e0a RegExp:[&<>\\\"\\'] (/tmp/perf-7539.map)");
        assert_eq!(f[0].kind, FrameKind::Jit);
        assert_eq!(f[0].symbol, Some(b("RegExp:[&<>\\\"\\']")));

        // A mapping's name is kept as printed, suffix included (`stack_fold` names unnamed
        // frames in it as the reference does, which depends on it).
        let f = frame("  7f1e2215 foo+0x10 (/usr/lib/libfoo.so (deleted))");
        assert_eq!(f[0].module, Some(b("/usr/lib/libfoo.so (deleted)")));
        assert_eq!(f[0].symbol, Some(b("foo")));

        // perf-map-agent inline chains: outer first in the text, innermost nearest the leaf.
        let f = frame("  7f72 LA;::a->LB;::b->LC;::c (/tmp/perf-1.map)");
        let syms: Vec<_> = f
            .iter()
            .map(|x| (x.symbol.clone().unwrap(), x.inlined))
            .collect();
        assert_eq!(
            syms,
            vec![
                (b("LC;::c"), true),
                (b("LB;::b"), true),
                (b("LA;::a"), false)
            ]
        );
        // ... but C++'s operator-> is one frame.
        let f = frame("  4005 std::unique_ptr<A>::operator->() (/usr/bin/app)");
        assert_eq!(f.len(), 1);

        assert!(!push_frames(&b("   no module here"), &mut Vec::new()));
        assert!(!push_frames(&b("\u{fffd}\u{1} (x)"), &mut Vec::new()));
    }

    fn parse_all(text: &str) -> (Vec<Event>, Vec<ParseError>) {
        let mut p = ScriptParser::new(None, 64);
        let mut out = Vec::new();
        let mut errs = Vec::new();
        for l in text.lines() {
            if let Err(e) = push(&mut p, Bytes::copy_from_slice(l.as_bytes()), &mut out) {
                errs.push(e);
            }
        }
        if let Err(e) = p.finish() {
            errs.push(e);
        }
        (out, errs)
    }

    #[test]
    fn samples_become_events_with_leaf_first_frames() {
        let text = "# comment\nbusy 10/11 [001] 5.5: 1001 cpu-clock:\n\t1169 spin+0x30 (/tmp/busy)\n\t1178 main+0x9 (/tmp/busy)\n\nbusy 10/11 [001] 5.6: 1001 cpu-clock:\n\t1169 spin (/tmp/busy)\n";
        let (events, errs) = parse_all(text);
        assert_eq!(events.len(), 1);
        assert_eq!(errs, vec![ParseError::Truncated { line: 6 }]);
        let log = events[0].as_log().unwrap();
        assert_eq!(log.get_field("comm"), Some(&Value::from("busy")));
        assert_eq!(log.get_field("pid"), Some(&Value::Integer(10)));
        assert_eq!(log.get_field("period"), Some(&Value::Integer(1001)));
        let Some(Value::Array(frames)) = log.get_field("frames") else {
            panic!("frames")
        };
        let names: Vec<String> = frames
            .iter()
            .map(|f| match f {
                Value::Object(m) => m["symbol"].to_string_lossy().into_owned(),
                _ => panic!(),
            })
            .collect();
        assert_eq!(names, vec!["spin", "main"]);
    }

    #[test]
    fn perf_inline_lines_take_the_module_of_their_caller() {
        let text = "a 1 cycles:\n\t10 leaf (inlined)\n\t10 caller+0x1 (/bin/a)\n\n";
        let (events, errs) = parse_all(text);
        assert!(errs.is_empty());
        let Some(Value::Array(frames)) = events[0].as_log().unwrap().get_field("frames") else {
            panic!()
        };
        let Value::Object(leaf) = &frames[0] else {
            panic!()
        };
        assert_eq!(leaf["inlined"], Value::Boolean(true));
        assert_eq!(leaf["module"], Value::from("/bin/a"));
    }

    #[test]
    fn garbage_is_reported_and_neighbours_survive() {
        let text = "\u{1}\u{2}garbage\nmore garbage\n\nok 1 cycles:\n\t10 f (/bin/ok)\n\nok 1 cycles:\n\t10 f (/bin/ok)\n\u{7}binary junk\n\t11 g (/bin/ok)\n\nok 2 cycles:\n\t10 f (/bin/ok)\n\n";
        let (events, errs) = parse_all(text);
        assert_eq!(events.len(), 2);
        assert_eq!(
            errs,
            vec![
                ParseError::BadHeader { line: 1 },
                ParseError::BadFrame { line: 9 }
            ]
        );
        let mut p = ScriptParser::new(None, 2);
        let mut out = Vec::new();
        push(&mut p, b("x 1 cycles:"), &mut out).unwrap();
        push(&mut p, b(" 1 a (m)"), &mut out).unwrap();
        push(&mut p, b(" 1 b (m)"), &mut out).unwrap();
        assert!(matches!(
            push(&mut p, b(" 1 c (m)"), &mut out),
            Err(ParseError::TooManyFrames { .. })
        ));
        push(&mut p, b(""), &mut out).unwrap();
        assert!(out.is_empty());
    }

    /// Feeds `text` cut into chunks of `size` bytes the way the source does: every line of a
    /// chunk is a range of it.
    fn parse_chunked(text: &[u8], size: usize) -> Vec<Event> {
        let mut p = ScriptParser::new(None, 64);
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        for piece in text.chunks(size) {
            pending.extend_from_slice(piece);
            let Some(last) = pending.iter().rposition(|&b| b == b'\n') else {
                continue;
            };
            let chunk = Bytes::copy_from_slice(&pending[..=last]);
            pending.drain(..=last);
            let mut from = 0;
            for nl in memchr::memchr_iter(b'\n', &chunk) {
                p.push_line(&chunk, from..nl, &mut out).unwrap();
                from = nl + 1;
            }
        }
        p.finish().unwrap();
        out
    }

    #[test]
    fn a_sample_across_two_reads_is_the_same_as_in_one() {
        let text = b"java 1/2 [003] 9.5: 7 cycles:\n\t7f10 LA;::a->LB;::b (/tmp/perf-1.map)\n\tffff native_safe_halt+0xb ([kernel.kallsyms])\n\t10 leaf (inlined)\n\t11 main+0x1f (/bin/app (deleted))\n\t0 [unknown] ([unknown])\n\nsh 5 cycles:\n\t12 f (/bin/sh)\n\n";
        let whole = parse_chunked(text, text.len());
        assert_eq!(whole.len(), 2);
        let tree = |e: &Event| e.as_log().map(|l| l.value().clone());
        let sample = |e: &Event| e.as_log().and_then(|l| l.typed::<StackSample>()).cloned();
        // Within one read, the event's text is the read buffer's bytes, not a copy.
        let Some(first) = sample(&whole[0]) else {
            panic!("not a typed sample")
        };
        assert_eq!(&first.text[..], &text[..first.text.len()]);
        for size in [1, 7, 40, 64, 100] {
            let cut = parse_chunked(text, size);
            assert_eq!(cut.len(), 2, "chunks of {size}");
            for (a, b) in whole.iter().zip(&cut) {
                assert_eq!(tree(a), tree(b), "chunks of {size}");
            }
        }
        // Line by line (each line its own buffer), as `weir flamegraph` feeds it.
        let (lines, errs) = parse_all(std::str::from_utf8(text).unwrap());
        assert!(errs.is_empty());
        for (a, b) in whole.iter().zip(&lines) {
            assert_eq!(tree(a), tree(b));
        }
        let Some(Value::Array(frames)) = whole[0].as_log().and_then(|l| l.get_field("frames"))
        else {
            panic!("frames")
        };
        let names: Vec<Value> = frames
            .iter()
            .filter_map(|f| f.as_object().map(|m| m["symbol"].clone()))
            .collect();
        let expected = ["LB;::b", "LA;::a", "native_safe_halt", "leaf", "main"];
        let mut expected: Vec<Value> = expected.into_iter().map(Value::from).collect();
        expected.push(Value::Null);
        assert_eq!(names, expected);
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;

    /// The shared `perf script` captures, or none (skipped outside CI).
    pub(crate) fn captures() -> Vec<Vec<u8>> {
        let Some(dir) = weir_testing::require(
            "the shared perf captures",
            weir_testing::shared_testdata("perf"),
        ) else {
            return Vec::new();
        };
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        files.sort();
        files.iter().map(|p| std::fs::read(p).unwrap()).collect()
    }

    /// `perf script` text cut into samples of real captures, mutated: the parser never
    /// panics, and every event it makes has frames within the limit.
    #[test]
    fn fuzz_perf_script() {
        let mut fuzz = weir_testing::fuzz::Fuzz::new("perf_script")
            .seed("busy 10/11 [001] 5.5: 1001 cpu-clock:\n\t1169 spin+0x30 (/tmp/busy)\n\t1178 main+0x9 (/tmp/busy)\n\n")
            .seed("java 4242 [003] 123.456789: 250000 cycles:u: \n\t7f00 Interpreter (/tmp/perf-4242.map)\n\tffffffff81000000 [unknown] ([kernel.kallsyms])\n\n")
            .dict([
                "\t", " (", ")", "+0x", "[unknown]", "[kernel.kallsyms]", "(inlined)", ":", "/",
                "[001]", " cycles:", "\n\n", "0x", "ffffffffffffffff",
            ]);
        for c in captures() {
            fuzz = fuzz.seed_lines(&c, 24);
        }
        fuzz.run(|input| {
            let chunk = Bytes::copy_from_slice(input);
            let mut p = ScriptParser::new(None, 16);
            let mut out = Vec::new();
            let mut at = 0;
            for line in input.split(|&b| b == b'\n') {
                let _ = p.push_line(&chunk, at..at + line.len(), &mut out);
                at += line.len() + 1;
            }
            let _ = p.finish();
            for ev in &out {
                if let Some(weir_pipeline::event::Value::Array(frames)) =
                    ev.as_log().and_then(|l| l.get_field("frames"))
                {
                    assert!(frames.len() <= 16, "{} frames", frames.len());
                }
            }
        });
    }
}
