//! `stack_fold`: stack samples in, folded stacks out.
//!
//! ```toml
//! [transforms.folded]
//! type = "stack_fold"
//! inputs = ["perf"]
//! window_secs = 60          # unset: fold the whole input, emit at the end
//! weight = "samples"        # or "period" (default: a sample weighs its period, 1 without)
//! annotate_kernel = true    # kernel frames get `_[k]`
//! group_by = ["pod"]        # one set of stacks per pod
//! ```
//!
//! Each input is a stack-sample log (`docs/schemas/stack-sample.md`: `comm`, `pid`, `tid`,
//! `event`, `period`, `frames` leaf first). Its frames become one line `root;...;leaf`, named
//! exactly as the reference `stackcollapse-perf.pl` names them, so the output is byte for byte
//! what FlameGraph's tools produce (the conformance test checks every capture and option):
//!
//! - the root is the process name (spaces made `_`), with `-pid` (`include_pid`) or `-pid/tid`
//!   (`include_tid`), `?` for a pid perf did not print;
//! - a frame without a symbol is named after its module (`[libc.so.6]`, `[anon]` for `//anon`,
//!   `[memfd:doublemapper]`, or `[unknown]`), with its address when `include_addrs`
//!   (`[unknown <7f2eb2b31c2c>]`); in a mapping whose name perf prints with a suffix
//!   (`/memfd:doublemapper (deleted)`, a deleted binary) it is `[unknown] `, trailing space
//!   included and never annotated, as the reference reads that line;
//! - names are tidied: `;` becomes `:`, everything from the first `(` is cut (except Go method
//!   names like `net/http.(*Client).Do` and C++ `(anonymous namespace)`), quotes are removed,
//!   and for a process named `java` the `L` of `Lcom/foo/Bar;::baz` is dropped;
//! - inlined frames get `_[i]`, kernel frames `_[k]` (`annotate_kernel`), JIT frames `_[j]`
//!   (`annotate_jit`);
//! - a frame whose symbol starts with `(` (a process name in old perf output) is skipped.
//!
//! Samples are counted per distinct (group, stack) in a hash map; when the window ends (every
//! `window_secs`, or at the end of the input when it is unset) one event per folded stack is
//! emitted, sorted by group then by stack (byte order, as the reference sorts):
//! `{stack, count, window_start, window_end, <group_by fields>}`. Memory is bounded by
//! `max_stacks` distinct stacks per window: past it, new stacks are counted under the stack
//! `[truncated]` and reported as `stack_limit` errors.
//!
//! The event filter works as the reference's: unset, only samples of the first event seen are
//! kept (mixing cycles and instructions would mislead); `"*"` keeps every event. Filtered and
//! folded samples are consumed; samples without `frames` are counted as `not_a_sample` errors
//! and dropped.
//!
//! Acknowledgements: the window holds the acknowledgements of the samples folded into it
//! (including those counted under `[truncated]`) until everything it emits, on every output, has
//! been delivered; a crash (kill -9) replays at most the open window. Without `window_secs`, that
//! is the whole input, acknowledged at its end. Samples left out by the event filter are done
//! (delivered) at once, events that are not samples are rejected.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use weir_pipeline::component::{Transform, TransformConfig, TransformContext, TransformOutput};
use weir_pipeline::config::Secs;
use weir_pipeline::event::{
    parse_path, Event, EventBatch, EventMetadata, FieldPath, LogEvent, Metric, MetricKind,
    MetricValue, ObjectMap, Value,
};
use weir_pipeline::finalization::{EventStatus, FinalizerSet};
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;
use weir_records::stack::{FrameKind, StackSample};

use crate::holds::{attach_since, OutputMark};

/// What a sample adds to its stack's count.
///
/// The default is the period, as `stackcollapse-perf.pl` and `perf report` weigh samples: a
/// capture whose periods vary (cycles, page faults, perf's frequency mode) has the right widths
/// without options, and samples that carry no period still count one each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Weight {
    /// One per sample.
    Samples,
    /// The sample's `period` (1 when it has none): what `stackcollapse-perf.pl` sums.
    #[default]
    Period,
}

/// Configuration of the `stack_fold` transform.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StackFoldConfig {
    /// Emit the folded stacks every this many seconds, then start over. At least 1. Default: none
    /// (fold everything and emit once, when the inputs end: offline captures).
    #[serde(default)]
    pub window_secs: Option<Secs>,
    /// What a sample counts: `period` sums the samples' periods (a sample without one counts 1),
    /// as `stackcollapse-perf.pl` does; `samples` counts samples. Default: `period`.
    #[serde(default)]
    pub weight: Weight,
    /// Root frame `comm-pid` (`comm-?` when perf printed no pid); `stackcollapse-perf.pl --pid`.
    /// Default: false.
    #[serde(default)]
    pub include_pid: bool,
    /// Root frame `comm-pid/tid`; implies `include_pid`. `--tid`. Default: false.
    #[serde(default)]
    pub include_tid: bool,
    /// Kernel frames get `_[k]`. `--kernel` (`--all` is this and `annotate_jit`). Default: false.
    #[serde(default)]
    pub annotate_kernel: bool,
    /// JIT frames get `_[j]`. `--jit`. Default: false.
    #[serde(default)]
    pub annotate_jit: bool,
    /// Frames without a symbol are named with their address: `[libc.so.6 <7f2eb2b31c2c>]`.
    /// `--addrs`. Default: false.
    #[serde(default)]
    pub include_addrs: bool,
    /// Fold only samples of this event (`cycles`; `cpu-clock` also matches `cpu-clock:ppp`); `"*"`
    /// folds every event. Unset: the first event seen is kept and samples of others are left out
    /// (with one info log), as `stackcollapse-perf.pl` does, since mixing cycles and instructions
    /// misleads. Samples without an `event` are always folded. Default: none (the first event
    /// seen).
    #[serde(default)]
    pub event_filter: Option<String>,
    /// Field paths whose values split the stacks into groups, e.g. `["host"]` or
    /// `[".k8s.namespace", ".k8s.pod"]`. The output events carry them at the same paths (a missing
    /// value is left out). Default: empty (one group).
    #[serde(default)]
    pub group_by: Vec<String>,
    /// The most distinct stacks held per window, over all groups. Samples of further new stacks are
    /// counted under the stack `[truncated]`. At least 1. Default: 100000.
    #[serde(default = "default_max_stacks")]
    pub max_stacks: usize,
    /// Also emit, on the output `<id>.top`, one summary log per window and group: `top` (the
    /// `top_n` heaviest stacks as `{stack, count}` objects, heaviest first, ties in stack order),
    /// `total`, `stacks` (distinct), `window_start`, `window_end` and the group's values. At least
    /// 1. Default: none (no summary).
    #[serde(default)]
    pub top_n: Option<usize>,
    /// Also emit, on the output `<id>.processes`, one incremental counter `stack_fold_samples` per
    /// window, group and process, tagged `process` (the root frame: the process name, with `-pid`
    /// or `-pid/tid` when asked) and the `group_by` values (tag names without the leading `.`),
    /// valued the window's count (samples, or periods with `weight = "period"`). Default: false.
    #[serde(default)]
    pub process_metrics: bool,
}

fn default_max_stacks() -> usize {
    100_000
}

impl Default for StackFoldConfig {
    fn default() -> Self {
        Self {
            window_secs: None,
            weight: Weight::Period,
            include_pid: false,
            include_tid: false,
            annotate_kernel: false,
            annotate_jit: false,
            include_addrs: false,
            event_filter: None,
            group_by: Vec::new(),
            max_stacks: default_max_stacks(),
            top_n: None,
            process_metrics: false,
        }
    }
}

impl TransformConfig for StackFoldConfig {
    fn build(&self, cx: &TransformContext) -> Result<Box<dyn Transform>, BoxError> {
        if self.max_stacks == 0 {
            return Err("`max_stacks` must be at least 1".into());
        }
        if self.top_n == Some(0) {
            return Err("`top_n` must be at least 1 (or unset for no summary)".into());
        }
        let mut group_by = Vec::with_capacity(self.group_by.len());
        for g in &self.group_by {
            group_by.push(parse_path(g).map_err(|e| format!("`group_by`: {e}"))?);
        }
        Ok(Box::new(StackFold {
            folder: StackFolder::new(self, group_by),
            window: self.window_secs.map(Secs::duration),
            window_start: Utc::now(),
            metrics: Arc::clone(&cx.metrics),
            top_n: self.top_n,
            process_metrics: self.process_metrics,
            group_names: self.group_by.clone(),
            holds: FinalizerSet::default(),
        }))
    }

    fn input(&self) -> DataType {
        DataType::LOG
    }

    fn outputs(&self) -> Vec<weir_pipeline::component::Output> {
        use weir_pipeline::component::Output;
        let mut outputs = vec![Output::default_output(DataType::LOG)];
        if self.top_n.is_some() {
            outputs.push(Output::named(TOP_OUTPUT, DataType::LOG));
        }
        if self.process_metrics {
            outputs.push(Output::named(PROCESSES_OUTPUT, DataType::METRIC));
        }
        outputs
    }
}

/// Which events are folded.
#[derive(Debug, Clone)]
enum EventFilter {
    /// Every event.
    All,
    /// This event (or it with `:modifiers`).
    Named(Bytes),
    /// The first event seen decides.
    FirstSeen { chosen: Option<Bytes>, warned: bool },
}

impl EventFilter {
    fn keeps(&mut self, event: Option<&[u8]>) -> bool {
        let Some(e) = event else { return true };
        match self {
            EventFilter::All => true,
            EventFilter::Named(n) => {
                e == &n[..] || (e.starts_with(n) && e.get(n.len()) == Some(&b':'))
            }
            EventFilter::FirstSeen { chosen, warned } => match chosen {
                None => {
                    *chosen = Some(Bytes::copy_from_slice(e));
                    true
                }
                Some(c) if &c[..] == e => true,
                Some(c) => {
                    if !*warned {
                        *warned = true;
                        tracing::info!(
                            "stack_fold: samples of several events; folding only `{}` (the first seen; set `event_filter` to choose, or \"*\" for all)",
                            String::from_utf8_lossy(c)
                        );
                    }
                    false
                }
            },
        }
    }
}

/// The folded stacks (a few hundred bytes each, hashed once per sample) are hashed with
/// FxHash (`rustc-hash`): SipHash, the default, costs several times as much, and the keys are
/// not chosen by an attacker who could aim collisions at the table (a collision only costs
/// time, and the table is bounded by `max_stacks`).
type StackMap<V> = HashMap<Box<[u8]>, V, rustc_hash::FxBuildHasher>;

/// One group's stacks.
#[derive(Debug, Default)]
struct Group {
    /// The `group_by` values, in order.
    values: Vec<Value>,
    stacks: StackMap<u64>,
    truncated: u64,
}

/// A process or thread id for the root frame.
#[derive(Debug, Clone, Copy)]
enum Id<'a> {
    Int(i64),
    Text(&'a [u8]),
    Unknown,
}

impl<'a> Id<'a> {
    fn of(v: Option<&'a Value>) -> Self {
        match v {
            Some(Value::Integer(n)) => Id::Int(*n),
            other => bytes_of(other).map_or(Id::Unknown, Id::Text),
        }
    }
}

/// A frame's address, for `include_addrs`.
#[derive(Debug, Clone, Copy)]
enum Addr<'a> {
    Int(i64),
    Text(&'a [u8]),
    None,
}

/// What naming a frame needs, from either form of a sample.
#[derive(Debug, Clone, Copy)]
struct FrameParts<'a> {
    symbol: Option<&'a [u8]>,
    module: Option<&'a [u8]>,
    addr: Addr<'a>,
    inlined: bool,
    kind: Option<FrameKind>,
}

/// The outcome of [`StackFolder::add`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Folded,
    /// Left out by the event filter.
    Filtered,
    /// Counted under `[truncated]` (the `max_stacks` limit).
    Truncated,
    /// Not a stack sample (no `frames` array).
    NotASample,
}

/// The folding itself, without the runtime: add samples, take the folded stacks. Used by the
/// transform and by `weir flamegraph`.
#[derive(Debug)]
pub struct StackFolder {
    include_pid: bool,
    include_tid: bool,
    annotate_kernel: bool,
    annotate_jit: bool,
    include_addrs: bool,
    weight: Weight,
    filter: EventFilter,
    group_by: Vec<FieldPath>,
    max_stacks: usize,
    groups: StackMap<Group>,
    distinct: usize,
    /// Samples of new stacks in new groups past `max_stacks`.
    overflow: u64,
    stack: Vec<u8>,
    key: Vec<u8>,
    name: Vec<u8>,
}

/// A folded stack ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldedStack {
    pub group: Vec<Value>,
    pub stack: Bytes,
    pub count: u64,
}

impl StackFolder {
    pub fn new(cfg: &StackFoldConfig, group_by: Vec<FieldPath>) -> Self {
        let filter = match cfg.event_filter.as_deref() {
            None => EventFilter::FirstSeen {
                chosen: None,
                warned: false,
            },
            Some("*") => EventFilter::All,
            Some(e) => EventFilter::Named(Bytes::copy_from_slice(e.as_bytes())),
        };
        Self {
            include_pid: cfg.include_pid || cfg.include_tid,
            include_tid: cfg.include_tid,
            annotate_kernel: cfg.annotate_kernel,
            annotate_jit: cfg.annotate_jit,
            include_addrs: cfg.include_addrs,
            weight: cfg.weight,
            filter,
            group_by,
            max_stacks: cfg.max_stacks,
            groups: StackMap::default(),
            distinct: 0,
            overflow: 0,
            stack: Vec::with_capacity(1024),
            key: Vec::with_capacity(64),
            name: Vec::with_capacity(256),
        }
    }

    /// Folds one sample.
    pub fn add(&mut self, log: &LogEvent) -> Added {
        if let Some(sample) = log.typed::<StackSample>() {
            return self.add_typed(log, sample);
        }
        let Some(Value::Array(frames)) = log.get_field("frames") else {
            return Added::NotASample;
        };
        if !self.filter.keeps(bytes_of(log.get_field("event"))) {
            return Added::Filtered;
        }
        let weight = match self.weight {
            Weight::Samples => 1,
            Weight::Period => match log.get_field("period") {
                Some(Value::Integer(p)) if *p > 0 => *p as u64,
                _ => 1,
            },
        };
        let java = self.push_root(
            bytes_of(log.get_field("comm")),
            Id::of(log.get_field("pid")),
            Id::of(log.get_field("tid")),
        );
        for f in frames.iter().rev() {
            if let Value::Object(frame) = f {
                self.push_frame(tree_frame(frame), java);
            }
        }
        self.count(log, weight)
    }

    /// Folds a sample held in typed form: the same stack as [`Self::add`] would build from its
    /// tree, read straight from the sample's text.
    fn add_typed(&mut self, log: &LogEvent, s: &StackSample) -> Added {
        if !self.filter.keeps(s.event()) {
            return Added::Filtered;
        }
        let weight = match (self.weight, s.period) {
            (Weight::Period, Some(p)) if p > 0 => p as u64,
            _ => 1,
        };
        let java = self.push_root(
            Some(s.comm()),
            s.pid.map_or(Id::Unknown, Id::Int),
            Id::Int(s.tid),
        );
        for f in s.frames.iter().rev() {
            let parts = FrameParts {
                symbol: f.symbol.map(|r| s.bytes(r)),
                module: f.module.map(|r| s.bytes(r)),
                addr: Addr::Text(s.bytes(f.addr)),
                inlined: f.inlined,
                kind: Some(f.kind),
            };
            self.push_frame(parts, java);
        }
        self.count(log, weight)
    }

    /// Counts the stack in `self.stack` in its group.
    fn count(&mut self, log: &LogEvent, weight: u64) -> Added {
        self.key.clear();
        for path in &self.group_by {
            group_key(log.get(path), &mut self.key);
        }
        let full = self.distinct >= self.max_stacks;
        let group = match self.groups.get_mut(&self.key[..]) {
            Some(g) => g,
            None if full => {
                self.overflow += weight;
                return Added::Truncated;
            }
            None => {
                let values = self
                    .group_by
                    .iter()
                    .map(|p| log.get(p).cloned().unwrap_or(Value::Null))
                    .collect();
                self.groups
                    .entry(self.key.clone().into_boxed_slice())
                    .or_insert(Group {
                        values,
                        ..Group::default()
                    })
            }
        };
        match group.stacks.get_mut(&self.stack[..]) {
            Some(c) => {
                *c += weight;
                Added::Folded
            }
            None if full => {
                group.truncated += weight;
                Added::Truncated
            }
            None => {
                group
                    .stacks
                    .insert(self.stack.clone().into_boxed_slice(), weight);
                self.distinct += 1;
                Added::Folded
            }
        }
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.overflow == 0
    }

    /// The folded stacks (sorted by group, then stack, byte order), emptying the folder, and
    /// the number of samples counted under `[truncated]`.
    pub fn take(&mut self) -> (Vec<FoldedStack>, u64) {
        let mut groups: Vec<(Box<[u8]>, Group)> = self.groups.drain().collect();
        groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        self.distinct = 0;
        let mut out = Vec::new();
        let mut truncated = 0;
        for (_, g) in groups {
            let mut stacks: Vec<(Box<[u8]>, u64)> = g.stacks.into_iter().collect();
            if g.truncated > 0 {
                truncated += g.truncated;
                stacks.push((b"[truncated]".to_vec().into_boxed_slice(), g.truncated));
            }
            stacks.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            for (stack, count) in stacks {
                out.push(FoldedStack {
                    group: g.values.clone(),
                    stack: Bytes::from(stack.into_vec()),
                    count,
                });
            }
        }
        if self.overflow > 0 {
            truncated += self.overflow;
            out.push(FoldedStack {
                group: vec![Value::Null; self.group_by.len()],
                stack: Bytes::from_static(b"[truncated]"),
                count: std::mem::take(&mut self.overflow),
            });
        }
        (out, truncated)
    }

    /// Starts `self.stack` with the root frame; returns whether the process is `java` (whose
    /// frames lose the `L` of `Lcom/foo/Bar;::baz`).
    fn push_root(&mut self, comm: Option<&[u8]>, pid: Id<'_>, tid: Id<'_>) -> bool {
        let stack = &mut self.stack;
        stack.clear();
        if let Some(comm) = comm {
            stack.extend(comm.iter().map(|&b| if b == b' ' { b'_' } else { b }));
        }
        if self.include_pid {
            stack.push(b'-');
            push_id(stack, pid);
            if self.include_tid {
                stack.push(b'/');
                push_id(stack, tid);
            }
        }
        &stack[..] == b"java"
    }

    fn push_frame(&mut self, f: FrameParts<'_>, java: bool) {
        if let Some(s) = f.symbol {
            if s.first() == Some(&b'(') && !s.starts_with(b"(anonymous namespace)") {
                return;
            }
        }
        let stack = &mut self.stack;
        stack.push(b';');
        let start = stack.len();
        // Whether the reference would annotate the frame by its module (`_[k]`, `_[j]`).
        let mut by_module = true;
        match f.symbol {
            Some(s) => tidy_into(s, stack),
            None if f.module.is_some_and(module_has_suffix) => {
                // perf prints a mapping whose name carries a parenthesised suffix as
                // `7f3c8e2d0123 [unknown] (/memfd:doublemapper (deleted))`. The reference
                // splits the line at its last ` (`, so it reads the symbol `[unknown]
                // (/memfd:doublemapper` and the module `deleted)`: not `[unknown]`, so no
                // module name and no address; tidied (cut at the first `(`) to `[unknown] `;
                // and a module that is neither kernel nor JIT.
                stack.extend_from_slice(UNNAMED_IN_SUFFIXED_MAPPING);
                by_module = false;
            }
            None => {
                let name = &mut self.name;
                name.clear();
                name.push(b'[');
                match f.module {
                    Some(m) => {
                        let base = m.iter().rposition(|&b| b == b'/').map_or(0, |p| p + 1);
                        name.extend_from_slice(&m[base..]);
                    }
                    None => name.extend_from_slice(b"unknown"),
                }
                if self.include_addrs {
                    name.extend_from_slice(b" <");
                    match f.addr {
                        Addr::Int(a) => {
                            let _ = write!(name, "{a:x}");
                        }
                        Addr::Text(t) => name.extend_from_slice(t),
                        Addr::None => {}
                    }
                    name.push(b'>');
                }
                name.push(b']');
                tidy_into(name, stack);
            }
        }
        if java && stack.get(start) == Some(&b'L') && stack[start..].contains(&b'/') {
            stack.remove(start);
        }
        if f.inlined {
            stack.extend_from_slice(b"_[i]");
        } else if by_module && self.annotate_kernel && f.kind == Some(FrameKind::Kernel) {
            stack.extend_from_slice(b"_[k]");
        } else if by_module && self.annotate_jit && f.kind == Some(FrameKind::Jit) {
            stack.extend_from_slice(b"_[j]");
        }
    }
}

/// The name the reference gives a frame without a symbol in a mapping whose name perf prints
/// with a parenthesised suffix (see [`module_has_suffix`]).
const UNNAMED_IN_SUFFIXED_MAPPING: &[u8] = b"[unknown] ";

/// Whether a module name, as perf prints it, holds a ` (`: a mapping that is not (or no
/// longer) a file, such as `/memfd:doublemapper (deleted)` (JIT code double-mapped through a
/// memfd by .NET, V8 or a JVM) or a deleted binary. The reference splits a frame line at its
/// last ` (`, which is then inside the module.
fn module_has_suffix(module: &[u8]) -> bool {
    memchr::memmem::find(module, b" (").is_some()
}

/// The naming parts of a frame object of the tree form.
fn tree_frame(frame: &ObjectMap) -> FrameParts<'_> {
    // One pass over the frame's few fields instead of a lookup per field.
    let mut parts = FrameParts {
        symbol: None,
        module: None,
        addr: Addr::None,
        inlined: false,
        kind: None,
    };
    for (k, v) in frame {
        match k.as_str() {
            "symbol" => parts.symbol = bytes_of(Some(v)),
            "module" => parts.module = bytes_of(Some(v)),
            "addr" => {
                parts.addr = match v {
                    Value::Integer(a) => Addr::Int(*a),
                    other => bytes_of(Some(other)).map_or(Addr::None, Addr::Text),
                }
            }
            "inlined" => parts.inlined = matches!(v, Value::Boolean(true)),
            "kind" => {
                parts.kind = match bytes_of(Some(v)) {
                    Some(b"kernel") => Some(FrameKind::Kernel),
                    Some(b"jit") => Some(FrameKind::Jit),
                    Some(b"user") => Some(FrameKind::User),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    parts
}

/// The bytes of a string value (`Bytes` or `String`).
fn bytes_of(v: Option<&Value>) -> Option<&[u8]> {
    v.and_then(Value::as_bytes).map(|b| &b[..])
}

fn push_id(out: &mut Vec<u8>, id: Id<'_>) {
    match id {
        Id::Int(n) => {
            let _ = write!(out, "{n}");
        }
        Id::Text(t) => out.extend_from_slice(t),
        Id::Unknown => out.push(b'?'),
    }
}

/// Appends a group value to the group key: a type tag, the value, a separator.
fn group_key(v: Option<&Value>, key: &mut Vec<u8>) {
    match v {
        None | Some(Value::Null) => key.push(0),
        Some(v @ (Value::Bytes(_) | Value::String(_))) => {
            key.push(1);
            key.extend_from_slice(bytes_of(Some(v)).unwrap_or_default());
        }
        Some(other) => {
            key.push(2);
            key.extend_from_slice(other.to_string().as_bytes());
        }
    }
    key.push(0x1f);
}

/// The reference's name tidying, appended to `out`: `;` -> `:`, cut at the first `(` unless the
/// name looks like a Go method (`.(...).`) or the `(` opens `(anonymous namespace)`, and quotes
/// removed.
fn tidy_into(name: &[u8], out: &mut Vec<u8>) {
    let mut end = name.len();
    if let Some(first) = memchr::memchr(b'(', name) {
        let go_method = memchr::memmem::find(name, b".(")
            .is_some_and(|p| memchr::memmem::find(&name[p + 2..], b").").is_some());
        if !go_method {
            let mut at = first;
            loop {
                if !name[at + 1..].starts_with(b"anonymous namespace)") {
                    end = at;
                    break;
                }
                match memchr::memchr(b'(', &name[at + 1..]) {
                    Some(p) => at += 1 + p,
                    None => break,
                }
            }
        }
    }
    let name = &name[..end];
    if memchr::memchr3(b';', b'"', b'\'', name).is_none() {
        out.extend_from_slice(name);
        return;
    }
    for &b in name {
        match b {
            b';' => out.push(b':'),
            b'"' | b'\'' => {}
            _ => out.push(b),
        }
    }
}

/// The running transform: a [`StackFolder`] emptied every window.
struct StackFold {
    folder: StackFolder,
    window: Option<Duration>,
    window_start: DateTime<Utc>,
    metrics: Arc<ComponentMetrics>,
    top_n: Option<usize>,
    process_metrics: bool,
    /// `group_by` as configured (metric tag names).
    group_names: Vec<String>,
    /// The acknowledgements of the samples folded in this window.
    holds: FinalizerSet,
}

/// The output of the top-N summaries.
pub const TOP_OUTPUT: &str = "top";
/// The output of the per-process counters.
pub const PROCESSES_OUTPUT: &str = "processes";

impl StackFold {
    /// Emits the window and hands its acknowledgements to what it emitted.
    fn emit(&mut self, out: &mut TransformOutput) {
        let mark = OutputMark::of(out);
        self.emit_window(out);
        attach_since(std::mem::take(&mut self.holds), out, &mark);
    }

    fn emit_window(&mut self, out: &mut TransformOutput) {
        let end = Utc::now();
        let start = std::mem::replace(&mut self.window_start, end);
        if self.folder.is_empty() {
            return;
        }
        let (stacks, truncated) = self.folder.take();
        if truncated > 0 {
            self.metrics.error(
                "stack_limit",
                truncated,
                &format_args!(
                    "{truncated} samples of new stacks were counted as [truncated]: more than max_stacks ({}) distinct stacks in the window",
                    self.folder.max_stacks
                ),
            );
        }
        let paths: Vec<FieldPath> = self.folder.group_by.clone();
        // Stacks come sorted by group: each group is one run of them.
        let mut first = 0;
        while first < stacks.len() {
            let group = &stacks[first].group;
            let len = stacks[first..]
                .iter()
                .take_while(|s| &s.group == group)
                .count();
            let run = &stacks[first..first + len];
            if let Some(n) = self.top_n {
                out.push_named(TOP_OUTPUT, top_summary(run, n, &paths, start, end));
            }
            if self.process_metrics {
                for m in process_counters(run, &self.group_names, end) {
                    out.push_named(PROCESSES_OUTPUT, Event::from(m));
                }
            }
            first += len;
        }
        for s in stacks {
            let mut log =
                LogEvent::from_value(Value::Object(ObjectMap::new()), EventMetadata::new(None));
            log.insert_field("stack", Value::Bytes(s.stack));
            log.insert_field("count", Value::Integer(s.count.min(i64::MAX as u64) as i64));
            log.insert_field("window_start", Value::Timestamp(start));
            log.insert_field("window_end", Value::Timestamp(end));
            for (path, value) in paths.iter().zip(s.group) {
                if value != Value::Null {
                    log.insert(path, value);
                }
            }
            out.push(Event::Log(log));
        }
    }
}

/// The summary of one group's stacks: the `n` heaviest, the total and the distinct count.
fn top_summary(
    run: &[FoldedStack],
    n: usize,
    paths: &[FieldPath],
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Event {
    let mut order: Vec<&FoldedStack> = run.iter().collect();
    // Stable: equal counts stay in stack order.
    order.sort_by_key(|s| std::cmp::Reverse(s.count));
    let top: Vec<Value> = order
        .iter()
        .take(n)
        .map(|s| {
            let mut m = ObjectMap::new();
            m.insert("stack".into(), Value::Bytes(s.stack.clone()));
            m.insert("count".into(), Value::Integer(clamp(s.count)));
            Value::Object(m)
        })
        .collect();
    let total: u64 = run.iter().fold(0u64, |t, s| t.saturating_add(s.count));
    let mut log = LogEvent::from_value(Value::Object(ObjectMap::new()), EventMetadata::new(None));
    log.insert_field("top", Value::Array(top));
    log.insert_field("total", Value::Integer(clamp(total)));
    log.insert_field("stacks", Value::Integer(clamp(run.len() as u64)));
    log.insert_field("window_start", Value::Timestamp(start));
    log.insert_field("window_end", Value::Timestamp(end));
    if let Some(s) = run.first() {
        for (path, value) in paths.iter().zip(&s.group) {
            if *value != Value::Null {
                log.insert(path, value.clone());
            }
        }
    }
    Event::Log(log)
}

/// One counter per process (root frame) of one group's stacks.
fn process_counters(
    run: &[FoldedStack],
    group_names: &[String],
    end: DateTime<Utc>,
) -> Vec<Metric> {
    let mut per: std::collections::BTreeMap<&[u8], u64> = std::collections::BTreeMap::new();
    for s in run {
        let root = s.stack.split(|&b| b == b';').next().unwrap_or(&[]);
        let c = per.entry(root).or_insert(0);
        *c = c.saturating_add(s.count);
    }
    let group_tags: Vec<(String, String)> = run
        .first()
        .map(|s| {
            group_names
                .iter()
                .zip(&s.group)
                .filter(|(_, v)| **v != Value::Null)
                .map(|(k, v)| {
                    let text = match v {
                        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
                        Value::String(t) => t.to_string(),
                        other => other.to_string(),
                    };
                    (k.trim_start_matches('.').to_string(), text)
                })
                .collect()
        })
        .unwrap_or_default();
    per.into_iter()
        .map(|(process, count)| {
            let mut m = Metric::new(
                "stack_fold_samples",
                MetricKind::Incremental,
                MetricValue::Counter {
                    value: count as f64,
                },
            )
            .with_tag("process", String::from_utf8_lossy(process))
            .with_timestamp(end);
            for (k, v) in &group_tags {
                m = m.with_tag(k.clone(), v.clone());
            }
            m
        })
        .collect()
}

fn clamp(n: u64) -> i64 {
    n.min(i64::MAX as u64) as i64
}

impl Transform for StackFold {
    fn transform(&mut self, mut batch: EventBatch, _out: &mut TransformOutput) {
        let mut filtered = 0;
        let mut not_samples = 0;
        // By reference: moving each event out of the batch costs a copy of it.
        for event in batch.events.iter_mut() {
            let hold = event.metadata_mut().notifier.take();
            let added = match event {
                Event::Log(log) => self.folder.add(log),
                _ => Added::NotASample,
            };
            match added {
                // The window holds it until what it emits is delivered.
                Added::Folded | Added::Truncated => self.holds.absorb(hold),
                Added::Filtered => {
                    // Left out on purpose: done.
                    filtered += 1;
                    if let Some(h) = hold {
                        h.finalize(EventStatus::Delivered);
                    }
                }
                Added::NotASample => {
                    // A verdict on the event: it is not a stack sample.
                    not_samples += 1;
                    if let Some(h) = hold {
                        h.finalize(EventStatus::Rejected);
                    }
                }
            }
        }
        if filtered > 0 {
            self.metrics.add_discarded(filtered);
        }
        if not_samples > 0 {
            self.metrics.add_discarded(not_samples);
            self.metrics.error(
                "not_a_sample",
                not_samples,
                &format_args!("{not_samples} events without a `frames` array were dropped (stack_fold expects stack samples)"),
            );
        }
    }

    fn tick_interval(&self) -> Option<Duration> {
        self.window
    }

    fn on_tick(&mut self, out: &mut TransformOutput) {
        self.emit(out);
    }

    fn flush(&mut self, out: &mut TransformOutput) {
        self.emit(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(symbol: Option<&str>, module: Option<&str>, addr: &str, kind: &str) -> Value {
        let mut m = ObjectMap::new();
        m.insert("symbol".into(), symbol.map_or(Value::Null, Value::from));
        m.insert("module".into(), module.map_or(Value::Null, Value::from));
        m.insert("addr".into(), Value::from(addr));
        m.insert("kind".into(), Value::from(kind));
        m.insert("inlined".into(), Value::Boolean(false));
        Value::Object(m)
    }

    fn sample(
        comm: &str,
        pid: Option<i64>,
        event: &str,
        period: i64,
        frames: Vec<Value>,
    ) -> LogEvent {
        let mut l = LogEvent::default();
        l.insert_field("comm", comm);
        l.insert_field("pid", pid.map_or(Value::Null, Value::Integer));
        l.insert_field("tid", 7);
        l.insert_field("event", event);
        l.insert_field("period", period);
        l.insert_field("frames", Value::Array(frames));
        l
    }

    fn folded(cfg: StackFoldConfig, samples: &[LogEvent]) -> Vec<String> {
        let paths = cfg
            .group_by
            .iter()
            .map(|g| parse_path(g).unwrap())
            .collect();
        let mut f = StackFolder::new(&cfg, paths);
        for s in samples {
            f.add(s);
        }
        f.take()
            .0
            .into_iter()
            .map(|s| format!("{} {}", String::from_utf8_lossy(&s.stack), s.count))
            .collect()
    }

    #[test]
    fn the_window_holds_acknowledgements_until_all_it_emits_is_delivered() {
        use crate::holds::testing::{acked_batch, all_held, deliver, status};
        let f = |sym: &str| frame(Some(sym), Some("/bin/app"), "1", "user");
        let s = |event: &str| Event::Log(sample("api", Some(1), event, 1, vec![f("main")]));
        let cfg = StackFoldConfig {
            window_secs: Some(Secs::from_secs(60)),
            top_n: Some(1),
            process_metrics: true,
            ..Default::default()
        };
        let outputs: Vec<String> = cfg.outputs().into_iter().filter_map(|o| o.name).collect();
        let cx = TransformContext {
            id: Arc::from("fold"),
            data_dir: std::env::temp_dir(),
            metrics: ComponentMetrics::detached("fold"),
        };
        let mut t = cfg.build(&cx).unwrap();
        let mut out = TransformOutput::new(outputs.clone());
        let (folded, mut rx) = acked_batch(vec![s("cycles"), s("cycles")]);
        let (filtered, mut rx_filtered) = acked_batch(vec![s("instructions")]);
        let (garbage, mut rx_garbage) = acked_batch(vec![LogEvent::default().into()]);
        t.transform(folded, &mut out);
        t.transform(filtered, &mut out);
        t.transform(garbage, &mut out);
        assert!(out.is_empty());
        assert_eq!(status(&mut rx_filtered), Some(EventStatus::Delivered));
        assert_eq!(status(&mut rx_garbage), Some(EventStatus::Rejected));
        assert_eq!(status(&mut rx), None, "the window is open");
        t.on_tick(&mut out);
        assert_eq!(out.default.len(), 1);
        assert_eq!(out.named[TOP_OUTPUT].len(), 1);
        assert_eq!(out.named[PROCESSES_OUTPUT].len(), 1);
        assert!(all_held(&out));
        assert_eq!(status(&mut rx), None, "emitted, not delivered yet");
        deliver(&mut out);
        assert_eq!(status(&mut rx), Some(EventStatus::Delivered));

        // Lost with the window open: errored, so the source reads it again.
        let (folded, mut rx) = acked_batch(vec![s("cycles")]);
        let mut out = TransformOutput::new(outputs);
        t.transform(folded, &mut out);
        drop(t);
        assert_eq!(status(&mut rx), Some(EventStatus::Errored));
    }

    #[test]
    fn top_summary_and_process_counters_per_group() {
        let f = |sym: &str| frame(Some(sym), Some("/bin/app"), "1", "user");
        let mut samples = Vec::new();
        let mut add = |comm: &str, pod: &str, stack: &[&str], n: usize| {
            for _ in 0..n {
                let mut s = sample(
                    comm,
                    Some(1),
                    "cycles",
                    1,
                    stack.iter().map(|x| f(x)).collect(),
                );
                s.insert_field("pod", pod);
                samples.push(Event::Log(s));
            }
        };
        // perf lists frames leaf first.
        add("api", "a", &["read", "main"], 3);
        add("api", "a", &["write", "main"], 5);
        add("db", "a", &["scan", "main"], 5);
        add("db", "a", &["idle"], 1);
        add("api", "b", &["read", "main"], 2);
        let cfg = StackFoldConfig {
            group_by: vec!["pod".into()],
            top_n: Some(2),
            process_metrics: true,
            ..Default::default()
        };
        let outputs: Vec<String> = cfg.outputs().into_iter().filter_map(|o| o.name).collect();
        assert_eq!(outputs, [TOP_OUTPUT, PROCESSES_OUTPUT]);
        let cx = TransformContext {
            id: Arc::from("fold"),
            data_dir: std::env::temp_dir(),
            metrics: ComponentMetrics::detached("fold"),
        };
        let mut t = cfg.build(&cx).unwrap();
        let mut out = TransformOutput::new(outputs);
        t.transform(EventBatch::new(samples), &mut out);
        t.flush(&mut out);
        assert_eq!(out.default.len(), 5);
        let tops = &out.named[TOP_OUTPUT];
        assert_eq!(tops.len(), 2);
        let a = tops[0].as_log().unwrap();
        assert_eq!(a.get_field("pod"), Some(&Value::from("a")));
        assert_eq!(a.get_field("total"), Some(&Value::from(14)));
        assert_eq!(a.get_field("stacks"), Some(&Value::from(4)));
        let top: Vec<(String, i64)> = a
            .get_field("top")
            .and_then(|v| v.as_array())
            .unwrap()
            .iter()
            .map(|o| {
                let m = o.as_object().unwrap();
                (
                    String::from_utf8_lossy(m["stack"].as_bytes().unwrap()).into_owned(),
                    m["count"].as_integer().unwrap(),
                )
            })
            .collect();
        // Ties keep stack order.
        assert_eq!(
            top,
            [
                ("api;main;write".to_string(), 5),
                ("db;main;scan".to_string(), 5)
            ]
        );
        let b = tops[1].as_log().unwrap();
        assert_eq!(b.get_field("total"), Some(&Value::from(2)));
        let counters: Vec<String> = out.named[PROCESSES_OUTPUT]
            .iter()
            .map(|e| {
                let Event::Metric(m) = e else {
                    panic!("not a metric")
                };
                let MetricValue::Counter { value } = m.value else {
                    panic!("not a counter")
                };
                assert_eq!(m.name, "stack_fold_samples");
                assert_eq!(m.kind, MetricKind::Incremental);
                format!("{} {} {}", m.tags["pod"], m.tags["process"], value)
            })
            .collect();
        assert_eq!(counters, ["a api 8", "a db 6", "b api 2"]);
        // top_n = 0 is refused.
        let bad = StackFoldConfig {
            top_n: Some(0),
            ..Default::default()
        };
        let err = bad.build(&cx).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("top_n")));
    }

    #[test]
    fn names_frames_like_the_reference() {
        let frames = vec![
            frame(
                Some("native_write_msr_safe"),
                Some("[kernel.kallsyms]"),
                "ffff",
                "kernel",
            ),
            frame(
                Some("Ljava/io/PrintStream;::print"),
                Some("/tmp/perf-1.map"),
                "7f",
                "jit",
            ),
            frame(
                Some("arrayOopDesc::base(BasicType) const"),
                Some("/lib/libjvm.so"),
                "7e",
                "user",
            ),
            frame(Some("net/http.(*Client).Do"), Some("/bin/app"), "6", "user"),
            frame(
                Some("ns::(anonymous namespace)::f(int)"),
                Some("/bin/app"),
                "5",
                "user",
            ),
            frame(
                Some("RegExp:[&<>\\\"\\']"),
                Some("/tmp/perf-1.map"),
                "4",
                "jit",
            ),
            frame(None, Some("/bin/dd"), "31ef", "user"),
            frame(None, None, "0", "user"),
        ];
        let s = sample("java", Some(9), "cycles", 10, frames);
        let all = StackFoldConfig {
            annotate_kernel: true,
            annotate_jit: true,
            weight: Weight::Period,
            ..Default::default()
        };
        assert_eq!(
            folded(all, std::slice::from_ref(&s)),
            vec!["java;[unknown];[dd];RegExp:[&<>\\\\]_[j];ns::(anonymous namespace)::f;net/http.(*Client).Do;arrayOopDesc::base;java/io/PrintStream:::print_[j];native_write_msr_safe_[k] 10"]
        );
        let addrs = StackFoldConfig {
            include_tid: true,
            include_addrs: true,
            ..Default::default()
        };
        let got = folded(addrs, &[s]);
        // With a pid suffix the root is not `java`: the L stays (as in the reference).
        assert!(
            got[0].starts_with("java-9/7;[unknown <0>];[dd <31ef>];"),
            "{got:?}"
        );
        assert!(got[0].contains(";Ljava/io/PrintStream:::print;"), "{got:?}");
    }

    #[test]
    fn first_event_filter_groups_and_the_stack_limit() {
        let f = |sym: &str| vec![frame(Some(sym), Some("/bin/a"), "1", "user")];
        let mut a = sample("a b", None, "cycles", 3, f("x"));
        a.insert_field("pod", "p1");
        let mut b = sample("a b", None, "instructions", 3, f("x"));
        b.insert_field("pod", "p1");
        let mut c = sample("a b", None, "cycles", 3, f("y"));
        c.insert_field("pod", "p2");
        let got = folded(
            StackFoldConfig {
                include_pid: true,
                ..Default::default()
            },
            &[a.clone(), b.clone(), a.clone(), c.clone()],
        );
        // Weighed by period (3 each) by default.
        assert_eq!(got, vec!["a_b-?;x 6", "a_b-?;y 3"]);
        let got = folded(
            StackFoldConfig {
                event_filter: Some("*".into()),
                ..Default::default()
            },
            &[a.clone(), b.clone()],
        );
        assert_eq!(got, vec!["a_b;x 6"]);
        let cfg = StackFoldConfig {
            group_by: vec!["pod".into()],
            max_stacks: 1,
            weight: Weight::Samples,
            ..Default::default()
        };
        let mut folder = StackFolder::new(&cfg, vec![parse_path("pod").unwrap()]);
        assert_eq!(folder.add(&a), Added::Folded);
        assert_eq!(folder.add(&a), Added::Folded);
        let mut a2 = sample("a b", None, "cycles", 3, f("z"));
        a2.insert_field("pod", "p1");
        assert_eq!(folder.add(&a2), Added::Truncated);
        assert_eq!(folder.add(&c), Added::Truncated);
        assert_eq!(folder.add(&LogEvent::default()), Added::NotASample);
        let (stacks, truncated) = folder.take();
        assert_eq!(truncated, 2);
        let got: Vec<(Vec<Value>, String, u64)> = stacks
            .into_iter()
            .map(|s| {
                (
                    s.group,
                    String::from_utf8_lossy(&s.stack).into_owned(),
                    s.count,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (vec![Value::from("p1")], "[truncated]".into(), 1),
                (vec![Value::from("p1")], "a_b;x".into(), 2),
                (vec![Value::Null], "[truncated]".into(), 1),
            ]
        );
        assert!(folder.is_empty());
    }

    #[test]
    fn the_transform_emits_one_event_per_stack_at_the_end() {
        let cx = TransformContext {
            id: Arc::from("fold"),
            data_dir: std::path::PathBuf::new(),
            metrics: ComponentMetrics::detached("fold"),
        };
        let cfg: StackFoldConfig =
            toml::from_str("weight = \"period\"\ngroup_by = [\"k8s.pod\"]").unwrap();
        let mut t = cfg.build(&cx).unwrap();
        assert!(t.tick_interval().is_none());
        let mut s = sample(
            "app",
            Some(1),
            "cpu-clock",
            5,
            vec![frame(Some("main"), Some("/bin/app"), "1", "user")],
        );
        s.insert(&parse_path("k8s.pod").unwrap(), "web-1");
        let mut out = TransformOutput::default();
        t.transform(EventBatch::new(vec![s.clone().into(), s.into()]), &mut out);
        assert!(out.default.is_empty());
        t.flush(&mut out);
        assert_eq!(out.default.len(), 1);
        let log = out.default[0].as_log().unwrap();
        assert_eq!(log.get_field("stack"), Some(&Value::from("app;main")));
        assert_eq!(log.get_field("count"), Some(&Value::Integer(10)));
        assert_eq!(
            log.get(&parse_path("k8s.pod").unwrap()),
            Some(&Value::from("web-1"))
        );
        assert!(matches!(
            log.get_field("window_end"),
            Some(Value::Timestamp(_))
        ));
        assert!(toml::from_str::<StackFoldConfig>("window = 5").is_err());
    }

    type TestFrame<'a> = (Option<&'a str>, Option<&'a str>, &'a str, FrameKind, bool);

    /// A stack sample in typed form, its strings laid out in one text.
    fn typed_sample(
        comm: &str,
        pid: Option<i64>,
        event: Option<&str>,
        period: Option<i64>,
        frames: &[TestFrame<'_>],
    ) -> StackSample {
        use weir_records::stack::{StackFrame, TextRange};
        let mut text = Vec::new();
        let mut put = |s: &str| {
            let start = text.len();
            text.extend_from_slice(s.as_bytes());
            TextRange::new(start, text.len()).unwrap()
        };
        let comm = put(comm);
        let event = event.map(&mut put);
        let frames = frames
            .iter()
            .map(|&(symbol, module, addr, kind, inlined)| StackFrame {
                addr: put(addr),
                symbol: symbol.map(&mut put),
                offset: None,
                module: module.map(&mut put),
                kind,
                inlined,
            })
            .collect();
        StackSample {
            text: Bytes::from(text),
            comm,
            pid,
            tid: 7,
            cpu: None,
            timestamp: None,
            event,
            period,
            frames,
        }
    }

    #[test]
    fn typed_samples_fold_exactly_like_their_trees() {
        use weir_pipeline::event::TypedLog;
        use FrameKind::{Jit, Kernel, User};
        let java: Vec<TestFrame> = vec![
            (
                Some("native_write_msr_safe"),
                Some("[kernel.kallsyms]"),
                "ffff",
                Kernel,
                false,
            ),
            (
                Some("Ljava/io/PrintStream;::print"),
                Some("/tmp/perf-1.map"),
                "7f",
                Jit,
                false,
            ),
            (Some("LB;::inner"), Some("/tmp/perf-1.map"), "7f", Jit, true),
            (
                Some("arrayOopDesc::base(BasicType) const"),
                Some("/lib/libjvm.so"),
                "7e",
                User,
                false,
            ),
            (
                Some("net/http.(*Client).Do"),
                Some("/bin/app"),
                "6",
                User,
                false,
            ),
            (
                Some("ns::(anonymous namespace)::f(int)"),
                Some("/bin/app"),
                "5",
                User,
                false,
            ),
            (
                Some("RegExp:[&<>\\\"\\']"),
                Some("/tmp/perf-1.map"),
                "4",
                Jit,
                false,
            ),
            (Some("(java)"), Some("/bin/app"), "3", User, false),
            (None, Some("/bin/dd"), "31ef", User, false),
            (None, Some("/tmp/perf-9.map (deleted)"), "7e1", Jit, false),
            (None, Some("//anon"), "7e2", User, false),
            (None, None, "0", User, false),
        ];
        let other: Vec<TestFrame> = vec![
            (Some("leaf;x"), Some("[vdso]"), "1", Kernel, false),
            (Some("main"), Some("/bin/a b"), "2", User, false),
        ];
        let samples = [
            typed_sample("java", Some(9), Some("cycles"), Some(10), &java),
            typed_sample("java", None, Some("cycles"), Some(-3), &java),
            typed_sample("a b", Some(1), Some("cycles"), None, &other),
            typed_sample("a b", Some(1), Some("instructions"), Some(4), &other),
            typed_sample("a b", Some(2), None, Some(5), &other),
            typed_sample("sh", Some(3), Some("cycles:ppp"), Some(6), &[]),
        ];
        let as_typed: Vec<LogEvent> = samples
            .iter()
            .map(|s| LogEvent::from_typed(s.clone(), EventMetadata::default()))
            .collect();
        let as_trees: Vec<LogEvent> = samples
            .iter()
            .map(|s| LogEvent::from_value(s.to_value(), EventMetadata::default()))
            .collect();
        assert!(as_typed.iter().all(|l| l.typed::<StackSample>().is_some()));
        assert!(as_trees.iter().all(|l| l.typed::<StackSample>().is_none()));
        let configs = [
            StackFoldConfig::default(),
            StackFoldConfig {
                weight: Weight::Period,
                annotate_kernel: true,
                annotate_jit: true,
                event_filter: Some("*".into()),
                ..Default::default()
            },
            StackFoldConfig {
                include_tid: true,
                include_addrs: true,
                event_filter: Some("cycles".into()),
                ..Default::default()
            },
            StackFoldConfig {
                include_pid: true,
                weight: Weight::Period,
                ..Default::default()
            },
        ];
        for cfg in configs {
            let typed = folded(cfg.clone(), &as_typed);
            assert!(!typed.is_empty());
            assert_eq!(typed, folded(cfg, &as_trees));
        }
        // The names follow the reference (the `java` root drops the `L`; `(java)` is skipped;
        // an unnamed frame in a mapping printed with a suffix is `[unknown] `, never
        // annotated); by default a sample weighs its period (10, and 1 for the one of -3).
        assert_eq!(
            folded(StackFoldConfig::default(), &as_typed),
            vec![
                "a_b;main;leaf:x 6",
                "java;[unknown];[anon];[unknown] ;[dd];RegExp:[&<>\\\\];ns::(anonymous namespace)::f;net/http.(*Client).Do;arrayOopDesc::base;LB:::inner_[i];java/io/PrintStream:::print;native_write_msr_safe 11",
            ]
        );
        let annotated = StackFoldConfig {
            annotate_kernel: true,
            annotate_jit: true,
            include_addrs: true,
            weight: Weight::Samples,
            ..Default::default()
        };
        assert_eq!(
            folded(annotated, &as_typed)[1],
            "java;[unknown <0>];[anon <7e2>];[unknown] ;[dd <31ef>];RegExp:[&<>\\\\]_[j];ns::(anonymous namespace)::f;net/http.(*Client).Do;arrayOopDesc::base;LB:::inner_[i];java/io/PrintStream:::print_[j];native_write_msr_safe_[k] 2",
        );
    }
}
