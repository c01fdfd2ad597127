//! Stack samples in typed form: [`StackSample`], the [`TypedLog`] of a profiler's sample.
//!
//! A stack sample's fields are fixed (`docs/schemas/stack-sample.md`): a header (`comm`,
//! `pid`, `tid`, `cpu`, `timestamp`, `event`, `period`) and a call chain of frames, leaf first.
//! Built as a tree of [`Value`]s, a sample of ten frames is some seventy allocations; held as
//! a [`StackSample`] it is three: the strings stay in one shared text (a slice of the source's
//! read buffer, or one copy of the sample's lines), and header and frames refer to it by byte
//! ranges ([`TextRange`]). A consumer that knows the type (`stack_fold`) reads it with
//! `LogEvent::typed::<StackSample>()`; everyone else sees the schema's tree, built by
//! [`TypedLog::to_value`] when first read.

use bytes::Bytes;

use weir_pipeline::event::{KeyString, ObjectMap, TypedLog, Value};

/// A byte range of a [`StackSample`]'s text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TextRange {
    pub start: u32,
    pub end: u32,
}

impl TextRange {
    /// The range `start..end`, or `None` when it does not fit in 32 bits.
    pub fn new(start: usize, end: usize) -> Option<TextRange> {
        Some(TextRange {
            start: u32::try_from(start).ok()?,
            end: u32::try_from(end).ok()?,
        })
    }

    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

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
        static UNKNOWN: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
            std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"unknown"));
        let kernel_shaped = m.first() == Some(&b'[') || m.ends_with(b"vmlinux");
        if kernel_shaped && UNKNOWN.find(m).is_none() {
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

/// One frame of a [`StackSample`]; its strings are [`TextRange`]s of the sample's text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StackFrame {
    /// The instruction address as perf printed it (hex, no `0x`).
    pub addr: TextRange,
    /// `None` when perf could not name it (`[unknown]`).
    pub symbol: Option<TextRange>,
    /// The `+0x..` offset into the symbol, when printed.
    pub offset: Option<i64>,
    /// `None` when perf did not know it (`[unknown]`).
    pub module: Option<TextRange>,
    pub kind: FrameKind,
    /// Inlined into the frame below it (towards the root).
    pub inlined: bool,
}

/// One stack sample (schema `stack-sample`), its strings held in one shared text.
#[derive(Debug, Clone, PartialEq)]
pub struct StackSample {
    /// The bytes every [`TextRange`] of the sample points into.
    pub text: Bytes,
    pub comm: TextRange,
    pub pid: Option<i64>,
    pub tid: i64,
    pub cpu: Option<i64>,
    /// Seconds on perf's clock, as printed.
    pub timestamp: Option<f64>,
    /// The event name without its final colon (`cycles`, `cpu-clock:ppp`).
    pub event: Option<TextRange>,
    pub period: Option<i64>,
    /// The call chain, leaf first.
    pub frames: Vec<StackFrame>,
}

impl StackSample {
    /// The bytes of `span` (empty if it is not inside the text).
    pub fn bytes(&self, span: TextRange) -> &[u8] {
        self.text.get(span.range()).unwrap_or_default()
    }

    pub fn comm(&self) -> &[u8] {
        self.bytes(self.comm)
    }

    pub fn event(&self) -> Option<&[u8]> {
        self.event.map(|s| self.bytes(s))
    }

    fn string(&self, span: TextRange) -> Value {
        let r = span.range();
        if r.start <= r.end && r.end <= self.text.len() {
            Value::Bytes(self.text.slice(r))
        } else {
            Value::Bytes(Bytes::new())
        }
    }

    fn frame_value(&self, f: &StackFrame) -> Value {
        let opt = |s: Option<TextRange>| s.map_or(Value::Null, |s| self.string(s));
        // Keys in sorted order, built in one go; the kind is a static string (no copy).
        Value::Object(ObjectMap::from([
            (key("addr"), self.string(f.addr)),
            (key("inlined"), Value::Boolean(f.inlined)),
            (
                key("kind"),
                Value::Bytes(Bytes::from_static(f.kind.as_str().as_bytes())),
            ),
            (key("module"), opt(f.module)),
            (key("offset"), f.offset.map_or(Value::Null, Value::Integer)),
            (key("symbol"), opt(f.symbol)),
        ]))
    }
}

fn key(k: &str) -> KeyString {
    KeyString::from(k)
}

impl TypedLog for StackSample {
    fn estimated_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.frames.len() * std::mem::size_of::<StackFrame>()
            + self.text.len()
    }

    /// The fields of `docs/schemas/stack-sample.md`.
    fn to_value(&self) -> Value {
        let opt_int = |v: Option<i64>| v.map_or(Value::Null, Value::Integer);
        let frames: Vec<Value> = self.frames.iter().map(|f| self.frame_value(f)).collect();
        Value::Object(ObjectMap::from([
            (key("comm"), self.string(self.comm)),
            (key("cpu"), opt_int(self.cpu)),
            (
                key("event"),
                self.event.map_or(Value::Null, |s| self.string(s)),
            ),
            (key("frames"), Value::Array(frames)),
            (key("period"), opt_int(self.period)),
            (key("pid"), opt_int(self.pid)),
            (key("tid"), Value::Integer(self.tid)),
            (
                key("timestamp"),
                self.timestamp.map_or(Value::Null, Value::from_f64_or_zero),
            ),
        ]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_pipeline::event::{EventMetadata, LogEvent};

    fn sample() -> StackSample {
        let text = Bytes::from_static(b"java cycles 7f10 main /bin/app ffff1 [kernel.kallsyms]");
        let s = |a: u32, b: u32| TextRange { start: a, end: b };
        StackSample {
            text,
            comm: s(0, 4),
            pid: Some(1),
            tid: 2,
            cpu: None,
            timestamp: Some(1.5),
            event: Some(s(5, 11)),
            period: Some(10),
            frames: vec![
                StackFrame {
                    addr: s(31, 36),
                    symbol: None,
                    offset: None,
                    module: Some(s(37, 54)),
                    kind: FrameKind::Kernel,
                    inlined: false,
                },
                StackFrame {
                    addr: s(12, 16),
                    symbol: Some(s(17, 21)),
                    offset: Some(9),
                    module: Some(s(22, 30)),
                    kind: FrameKind::User,
                    inlined: true,
                },
            ],
        }
    }

    #[test]
    fn the_tree_has_every_field_of_the_schema() {
        let log = LogEvent::from_typed(sample(), EventMetadata::default());
        let v = |s: &str| Value::Bytes(Bytes::copy_from_slice(s.as_bytes()));
        assert_eq!(log.get_field("comm"), Some(&v("java")));
        assert_eq!(log.get_field("event"), Some(&v("cycles")));
        assert_eq!(log.get_field("cpu"), Some(&Value::Null));
        assert_eq!(log.get_field("pid"), Some(&Value::Integer(1)));
        assert_eq!(log.get_field("tid"), Some(&Value::Integer(2)));
        assert_eq!(log.get_field("period"), Some(&Value::Integer(10)));
        assert_eq!(
            log.get_field("timestamp"),
            Some(&Value::from_f64_or_zero(1.5))
        );
        let Some(Value::Array(frames)) = log.get_field("frames") else {
            panic!("no frames")
        };
        let mut leaf = ObjectMap::new();
        leaf.insert("addr".into(), v("ffff1"));
        leaf.insert("symbol".into(), Value::Null);
        leaf.insert("offset".into(), Value::Null);
        leaf.insert("module".into(), v("[kernel.kallsyms]"));
        leaf.insert("kind".into(), v("kernel"));
        leaf.insert("inlined".into(), Value::Boolean(false));
        assert_eq!(frames[0], Value::Object(leaf));
        let mut root = ObjectMap::new();
        root.insert("addr".into(), v("7f10"));
        root.insert("symbol".into(), v("main"));
        root.insert("offset".into(), Value::Integer(9));
        root.insert("module".into(), v("/bin/app"));
        root.insert("kind".into(), v("user"));
        root.insert("inlined".into(), Value::Boolean(true));
        assert_eq!(frames[1], Value::Object(root));
        assert_eq!(log.as_map().map(|m| m.len()), Some(8));
        assert_eq!(
            log.typed::<StackSample>().map(|s| s.comm()),
            Some(&b"java"[..])
        );
    }

    #[test]
    fn frame_kinds_follow_the_reference() {
        let k = |m: &str| FrameKind::of_module(Some(m.as_bytes()));
        assert_eq!(k("[kernel.kallsyms]"), FrameKind::Kernel);
        assert_eq!(k("/boot/vmlinux"), FrameKind::Kernel);
        assert_eq!(k("[unknown]"), FrameKind::User);
        assert_eq!(k("/tmp/perf-123.map"), FrameKind::Jit);
        assert_eq!(k("/tmp/perf-x.map"), FrameKind::User);
        assert_eq!(FrameKind::of_module(None), FrameKind::User);
    }

    #[test]
    fn a_span_outside_the_text_reads_as_empty() {
        let mut s = sample();
        s.comm = TextRange { start: 50, end: 99 };
        assert_eq!(s.comm(), b"");
        assert_eq!(
            s.to_value().as_object().map(|m| m["comm"].clone()),
            Some(Value::Bytes(Bytes::new()))
        );
    }
}
