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
//!   modules become null, a trailing ` (deleted)` on the module is dropped, JIT symbols
//!   (`/tmp/perf-<pid>.map`) written as `outer->inlined->...` become one frame each, and perf's
//!   own `sym (inlined)` lines are frames with `inlined = true`;
//! - a sample that ends without its blank line (the input stopped mid-sample) is dropped and
//!   counted as `truncated`, as the reference drops it.

use std::sync::Arc;

use bytes::Bytes;
use weir_pipeline::event::{Event, EventMetadata, KeyString, LogEvent, ObjectMap, Value};

/// Where a frame's code lives, from its module name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// `[kernel.kallsyms]`, a kernel module (`[nf_conntrack]`), `[vdso]`, or a `vmlinux` path.
    Kernel,
    /// Code a JIT described in `/tmp/perf-<pid>.map`.
    Jit,
    /// Everything else (executables, shared libraries, unknown modules).
    User,
}

impl FrameKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FrameKind::Kernel => "kernel",
            FrameKind::Jit => "jit",
            FrameKind::User => "user",
        }
    }

    /// The kind of a frame in `module` (`None` for an unknown module), by the rule of
    /// `stackcollapse-perf.pl`: bracketed names and `vmlinux` are the kernel (but never a name
    /// containing `unknown`), `/tmp/perf-<digits>.map` is JIT code.
    pub fn of_module(module: Option<&[u8]>) -> FrameKind {
        let Some(m) = module else {
            return FrameKind::User;
        };
        let kernel_shaped = m.first() == Some(&b'[') || m.ends_with(b"vmlinux");
        if kernel_shaped && memchr::memmem::find(m, b"unknown").is_none() {
            FrameKind::Kernel
        } else if is_perf_map(m) {
            FrameKind::Jit
        } else {
            FrameKind::User
        }
    }
}

/// Whether `m` contains `/tmp/perf-<digits>.map`.
fn is_perf_map(m: &[u8]) -> bool {
    const PREFIX: &[u8] = b"/tmp/perf-";
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(PREFIX));
    let mut from = 0;
    while let Some(p) = FINDER.find(&m[from..]) {
        let digits_start = from + p + PREFIX.len();
        let digits = m[digits_start..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if digits > 0 && m[digits_start + digits..].starts_with(b".map") {
            return true;
        }
        from = digits_start;
    }
    false
}

/// A sample's header line.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub comm: Bytes,
    pub pid: Option<i64>,
    pub tid: i64,
    pub cpu: Option<i64>,
    /// Seconds on perf's clock, as printed.
    pub time: Option<f64>,
    pub period: Option<i64>,
    /// The event name without its final colon (`cycles`, `cpu-clock:ppp`).
    pub event: Option<Bytes>,
}

/// One frame of a call chain.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The instruction address as perf printed it (hex, no `0x`).
    pub addr: Bytes,
    /// `None` when perf could not name it (`[unknown]`).
    pub symbol: Option<Bytes>,
    /// The `+0x..` offset into the symbol, when printed.
    pub offset: Option<i64>,
    /// `None` when perf did not know it (`[unknown]`).
    pub module: Option<Bytes>,
    pub kind: FrameKind,
    /// Inlined into the frame below it (towards the root).
    pub inlined: bool,
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

/// Where the parser is between lines.
#[derive(Debug)]
enum State {
    /// Between samples: the next non-blank, non-comment line is a header.
    Idle,
    /// A header was read; frame lines follow until a blank line.
    Sample {
        header: Header,
        frames: Vec<Frame>,
        start_line: u64,
    },
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
}

impl ScriptParser {
    pub fn new(source_id: Option<Arc<str>>, max_frames: usize) -> Self {
        Self {
            state: State::Idle,
            source_id,
            max_frames: max_frames.max(1),
            line_no: 0,
        }
    }

    /// Handles one line (without its newline). A finished sample is pushed to `out`.
    pub fn push_line(&mut self, line: Bytes, out: &mut Vec<Event>) -> Result<(), ParseError> {
        self.line_no += 1;
        if line.first() == Some(&b'#') {
            return Ok(());
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            match std::mem::replace(&mut self.state, State::Idle) {
                State::Sample { header, frames, .. } => out.push(self.event(header, frames)),
                State::Idle | State::Skipping => {}
            }
            return Ok(());
        }
        match &mut self.state {
            State::Skipping => Ok(()),
            State::Idle => self.start_sample(&line),
            State::Sample { frames, .. } => {
                let before = frames.len();
                if push_frames(&line, frames) {
                    if frames.len() > self.max_frames {
                        self.state = State::Skipping;
                        return Err(ParseError::TooManyFrames {
                            line: self.line_no,
                            max: self.max_frames,
                        });
                    }
                    return Ok(());
                }
                frames.truncate(before);
                // A header right after a sample whose blank line is missing starts a new one.
                if !line[0].is_ascii_whitespace() && parse_header(&line).is_some() {
                    if let State::Sample { header, frames, .. } =
                        std::mem::replace(&mut self.state, State::Idle)
                    {
                        out.push(self.event(header, frames));
                    }
                    return self.start_sample(&line);
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
            State::Sample { start_line, .. } => Err(ParseError::Truncated { line: start_line }),
            State::Idle | State::Skipping => Ok(()),
        }
    }

    fn start_sample(&mut self, line: &Bytes) -> Result<(), ParseError> {
        match parse_header(line) {
            Some((header, rest)) => {
                let mut frames = Vec::new();
                // Without a call chain, perf prints the sampled ip on the header line.
                if let Some(r) = rest {
                    if !push_frames(&line.slice(r), &mut frames) {
                        frames.clear();
                    }
                }
                self.state = State::Sample {
                    header,
                    frames,
                    start_line: self.line_no,
                };
                Ok(())
            }
            None => {
                self.state = State::Skipping;
                Err(ParseError::BadHeader { line: self.line_no })
            }
        }
    }

    fn event(&self, header: Header, mut frames: Vec<Frame>) -> Event {
        // perf prints an inlined function (`sym (inlined)`) before the function it is inlined
        // into, without a module: it lives in that function's module.
        let mut below: Option<(Option<Bytes>, FrameKind)> = None;
        for f in frames.iter_mut().rev() {
            if f.inlined && f.module.is_none() {
                if let Some((m, k)) = &below {
                    f.module = m.clone();
                    f.kind = *k;
                }
            } else {
                below = Some((f.module.clone(), f.kind));
            }
        }
        let opt_int = |v: Option<i64>| v.map_or(Value::Null, Value::Integer);
        let frames: Vec<Value> = frames.into_iter().map(frame_value).collect();
        // Keys in sorted order, built in one go (no per-key search or rebalancing).
        let map = ObjectMap::from([
            (key("comm"), Value::Bytes(header.comm)),
            (key("cpu"), opt_int(header.cpu)),
            (key("event"), header.event.map_or(Value::Null, Value::Bytes)),
            (key("frames"), Value::Array(frames)),
            (key("period"), opt_int(header.period)),
            (key("pid"), opt_int(header.pid)),
            (key("tid"), Value::Integer(header.tid)),
            (
                key("timestamp"),
                header.time.map_or(Value::Null, Value::from_f64_or_zero),
            ),
        ]);
        LogEvent::from_value(
            Value::Object(map),
            EventMetadata::new(self.source_id.clone()),
        )
        .into()
    }
}

fn key(k: &str) -> KeyString {
    KeyString::from(k)
}

fn frame_value(f: Frame) -> Value {
    // Keys in sorted order, built in one go; the kind is a static string (no copy).
    Value::Object(ObjectMap::from([
        (key("addr"), Value::Bytes(f.addr)),
        (key("inlined"), Value::Boolean(f.inlined)),
        (
            key("kind"),
            Value::Bytes(Bytes::from_static(f.kind.as_str().as_bytes())),
        ),
        (key("module"), f.module.map_or(Value::Null, Value::Bytes)),
        (key("offset"), f.offset.map_or(Value::Null, Value::Integer)),
        (key("symbol"), f.symbol.map_or(Value::Null, Value::Bytes)),
    ]))
}

fn is_space(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Byte ranges of the whitespace-separated tokens of `s`.
fn tokens(s: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(8);
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
    out
}

fn parse_int(s: &[u8]) -> Option<i64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// `1234` or `1234/1240`: (pid, tid).
fn pid_tid(s: &[u8]) -> Option<(Option<i64>, i64)> {
    match memchr::memchr(b'/', s) {
        Some(p) => Some((Some(parse_int(&s[..p])?), parse_int(&s[p + 1..])?)),
        None => Some((None, parse_int(s)?)),
    }
}

/// `[002]`.
fn cpu(s: &[u8]) -> Option<i64> {
    parse_int(s.strip_prefix(b"[")?.strip_suffix(b"]")?)
}

/// `6544038.708352:`.
fn time(s: &[u8]) -> Option<f64> {
    let body = s.strip_suffix(b":")?;
    if body.is_empty() || !body.iter().all(|b| b.is_ascii_digit() || *b == b'.') {
        return None;
    }
    std::str::from_utf8(body).ok()?.parse().ok()
}

/// Parses a header line: the header and, when the line goes on after the event name (the
/// sampled ip of a sample without a call chain), the byte range of the rest.
pub fn parse_header(line: &Bytes) -> Option<(Header, Option<std::ops::Range<usize>>)> {
    if line.first().is_none_or(|b| b.is_ascii_whitespace()) {
        return None;
    }
    let toks = tokens(line);
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
        comm: line.slice(..comm_end),
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
            header.event = Some(line.slice(toks[j].0..toks[j].1 - 1));
            if let Some(r) = toks.get(j + 1) {
                rest = Some(r.0..line.len());
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

/// Parses a frame line into one frame (or several, for a JIT inline chain) appended to
/// `frames`. Returns false when the line is not a frame line.
pub fn push_frames(line: &Bytes, frames: &mut Vec<Frame>) -> bool {
    let start = line
        .iter()
        .position(|b| !is_space(*b))
        .unwrap_or(line.len());
    let end = line
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |p| p + 1);
    if start >= end {
        return false;
    }
    let s = &line[start..end];
    let addr_len = s.iter().position(|b| is_space(*b)).unwrap_or(s.len());
    if addr_len == 0
        || !s[..addr_len]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        return false;
    }
    let addr = line.slice(start..start + addr_len);
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
    if let Some(m) = module.strip_suffix(b" (deleted)") {
        module = m;
    }
    let sym_end = rest[..open]
        .iter()
        .rposition(|b| !is_space(*b))
        .map_or(0, |p| p + 1);
    let mut symbol = &rest[..sym_end];
    let mut offset = None;
    if let Some(p) = memchr::memmem::rfind(symbol, b"+0x") {
        let hex = &symbol[p + 3..];
        if !hex.is_empty() && hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            offset = std::str::from_utf8(hex)
                .ok()
                .and_then(|h| i64::from_str_radix(h, 16).ok());
            symbol = &symbol[..p];
        }
    }
    let sub = |part: &[u8]| -> Bytes {
        let off = part.as_ptr() as usize - s.as_ptr() as usize;
        line.slice(start + off..start + off + part.len())
    };
    let module = if inlined || module == b"[unknown]" {
        None
    } else {
        Some(sub(module))
    };
    let kind = FrameKind::of_module(module.as_deref());
    let named = |part: &[u8]| -> Option<Bytes> {
        (!part.is_empty() && part != b"[unknown]").then(|| sub(part))
    };
    if kind == FrameKind::Jit && memchr::memmem::find(symbol, b"->").is_some() {
        // perf-map-agent's `outer->inlined->innermost`: innermost is nearest the leaf.
        let parts: Vec<&[u8]> = split_arrow(symbol);
        for (n, part) in parts.iter().enumerate().rev() {
            frames.push(Frame {
                addr: addr.clone(),
                symbol: named(part),
                offset: if n == 0 { offset } else { None },
                module: module.clone(),
                kind,
                inlined: n > 0,
            });
        }
    } else {
        frames.push(Frame {
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

fn split_arrow(s: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(p) = memchr::memmem::find(&s[from..], b"->") {
        out.push(&s[from..from + p]);
        from += p + 2;
    }
    out.push(&s[from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
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

        let f = frame("  7f1e2215 foo+0x10 (/usr/lib/libfoo.so (deleted))");
        assert_eq!(f[0].module, Some(b("/usr/lib/libfoo.so")));
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
            if let Err(e) = p.push_line(Bytes::copy_from_slice(l.as_bytes()), &mut out) {
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
        p.push_line(b("x 1 cycles:"), &mut out).unwrap();
        p.push_line(b(" 1 a (m)"), &mut out).unwrap();
        p.push_line(b(" 1 b (m)"), &mut out).unwrap();
        assert!(matches!(
            p.push_line(b(" 1 c (m)"), &mut out),
            Err(ParseError::TooManyFrames { .. })
        ));
        p.push_line(b(""), &mut out).unwrap();
        assert!(out.is_empty());
    }
}
