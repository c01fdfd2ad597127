//! `ebpf_process`: the life of every process (exec with filename and argv, fork, exit with
//! exit code, lifetime and CPU time), from the `sched:sched_process_exec|fork|exit` raw
//! tracepoints (`bpf/process.bpf.c`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aya::maps::{PerCpuArray, RingBuf};
use aya::programs::RawTracePoint;
use aya::EbpfLoader;
use serde::{Deserialize, Serialize};
use weir_pipeline::component::{Output, Source, SourceConfig, SourceContext};
use weir_pipeline::event::MAX_BATCH_EVENTS;
use weir_pipeline::event::{Event, EventBatch, EventMetadata, LogEvent, ObjectMap, Value};
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use crate::env::{self, c_str, Clock};
use crate::ring::{per_cpu_slot, RingReader};

static OBJECT: &[u8] = aya::include_bytes_aligned!("../bpf/process.bpf.o");

const COMPONENT: &str = "ebpf_process";
/// argv bytes the kernel side can copy (`PROC_ARGV_MAX - 1` in bpf/process.h).
const ARGV_MAX: u32 = 1023;

/// A kind of process event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProcessEventKind {
    /// A program was executed (`execve`).
    Exec,
    /// A new process was created (threads are not reported).
    Fork,
    /// A process ended (its last thread exited).
    Exit,
}

impl ProcessEventKind {
    fn bit(self) -> u32 {
        match self {
            Self::Exec => 1 << 1,
            Self::Fork => 1 << 2,
            Self::Exit => 1 << 3,
        }
    }
}

/// `type = "ebpf_process"`: one log event per exec, fork and exit of every process on the
/// host. Needs root (CAP_BPF + CAP_PERFMON, or CAP_SYS_ADMIN) and a kernel with BTF.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EbpfProcessConfig {
    /// Which events to report (filtered in the kernel): any of `exec`, `fork`, `exit`.
    /// Default: all three.
    #[serde(default = "default_events")]
    pub events: Vec<ProcessEventKind>,
    /// Bytes of the command line (argv, NUL-separated) copied per exec, at most 1023; longer
    /// command lines are cut and flagged `argv_truncated`. Default: 1023.
    #[serde(default = "default_argv")]
    pub max_argv_bytes: u32,
    /// Size of the kernel-to-Weir ring buffer in bytes: a power of two, at least 4096. Events
    /// that do not fit (Weir is behind) are dropped and counted. Default: 1048576.
    #[serde(default = "default_ring")]
    pub ring_buffer_bytes: u32,
}

fn default_events() -> Vec<ProcessEventKind> {
    vec![
        ProcessEventKind::Exec,
        ProcessEventKind::Fork,
        ProcessEventKind::Exit,
    ]
}
fn default_argv() -> u32 {
    ARGV_MAX
}
fn default_ring() -> u32 {
    1 << 20
}

impl Default for EbpfProcessConfig {
    fn default() -> Self {
        Self {
            events: default_events(),
            max_argv_bytes: default_argv(),
            ring_buffer_bytes: default_ring(),
        }
    }
}

/// Checks a ring buffer size: a power of two, at least a page.
pub(crate) fn check_ring_size(component: &str, bytes: u32) -> Result<(), BoxError> {
    if bytes < 4096 || !bytes.is_power_of_two() {
        return Err(format!(
            "{component}: `ring_buffer_bytes` must be a power of two of at least 4096, got {bytes}"
        )
        .into());
    }
    Ok(())
}

#[async_trait]
impl SourceConfig for EbpfProcessConfig {
    async fn build(&self, cx: SourceContext) -> Result<Source, BoxError> {
        if self.events.is_empty() {
            return Err(format!("{COMPONENT}: `events` is empty: nothing to report").into());
        }
        if self.max_argv_bytes > ARGV_MAX {
            return Err(format!(
                "{COMPONENT}: `max_argv_bytes` is at most {ARGV_MAX}, got {}",
                self.max_argv_bytes
            )
            .into());
        }
        check_ring_size(COMPONENT, self.ring_buffer_bytes)?;
        env::check(COMPONENT, false)?;

        let mask: u32 = self.events.iter().fold(0, |m, k| m | k.bit());
        let argv_limit = self.max_argv_bytes;
        let mut bpf = EbpfLoader::new()
            .override_global("kinds_mask", &mask, true)
            .override_global("argv_limit", &argv_limit, true)
            .map_max_entries("events", self.ring_buffer_bytes)
            .load(OBJECT)
            .map_err(|e| format!("{COMPONENT}: loading the eBPF object failed: {e}"))?;
        for (prog, tp) in [
            ("proc_exec", "sched_process_exec"),
            ("proc_fork", "sched_process_fork"),
            ("proc_exit", "sched_process_exit"),
        ] {
            let p: &mut RawTracePoint = bpf
                .program_mut(prog)
                .ok_or_else(|| format!("{COMPONENT}: program `{prog}` missing from the object"))?
                .try_into()?;
            p.load()
                .map_err(|e| format!("{COMPONENT}: the kernel rejected `{prog}`: {e:#}"))?;
            p.attach(tp)
                .map_err(|e| format!("{COMPONENT}: attaching to raw tracepoint {tp}: {e}"))?;
        }
        let ring = RingBuf::try_from(
            bpf.take_map("events")
                .ok_or_else(|| format!("{COMPONENT}: map `events` missing"))?,
        )?;
        let dropped: PerCpuArray<_, u64> = PerCpuArray::try_from(
            bpf.take_map("dropped")
                .ok_or_else(|| format!("{COMPONENT}: map `dropped` missing"))?,
        )?;
        let mut reader = RingReader::new(ring)?;
        tracing::info!(component = %cx.id, "eBPF process tracepoints attached");

        Ok(Box::pin(async move {
            // Owns the programs: dropping it detaches them.
            let _bpf = bpf;
            let mut cx = cx;
            let clock = Clock::new();
            let source_id: Arc<str> = cx.id.clone();
            let mut reported_drops = 0u64;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut stopping = false;
            while !stopping {
                let mut batch = Batch::default();
                tokio::select! {
                    _ = cx.shutdown.cancelled() => {
                        // What the kernel sent before we stop is delivered, not dropped.
                        stopping = true;
                        reader.read_now(MAX_BATCH_EVENTS, |d| batch.push(d, &clock, &source_id));
                    }
                    _ = tick.tick() => {
                        let total = per_cpu_slot(&dropped, 0);
                        if total > reported_drops {
                            let n = total - reported_drops;
                            reported_drops = total;
                            cx.metrics.add_discarded(n);
                            cx.metrics.error(
                                "ring_buffer_full",
                                n,
                                &format_args!("{n} process events dropped in the kernel: the ring buffer was full (raise `ring_buffer_bytes`)"),
                            );
                        }
                        continue;
                    }
                    r = reader.read(MAX_BATCH_EVENTS, |d| batch.push(d, &clock, &source_id)) => {
                        r?;
                    }
                }
                // At shutdown, the rest of the ring a batch at a time.
                loop {
                    let full = batch.events.len() >= MAX_BATCH_EVENTS;
                    if !batch.send(&mut cx).await {
                        return Ok(());
                    }
                    if !(stopping && full) {
                        break;
                    }
                    reader.read_now(MAX_BATCH_EVENTS, |d| batch.push(d, &clock, &source_id));
                }
            }
            Ok(())
        }))
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::default_output(DataType::LOG)]
    }

    fn event_shape(&self) -> Option<&'static str> {
        Some("ebpf_process")
    }
}

/// The events decoded from the ring buffer since the last send.
#[derive(Default)]
struct Batch {
    events: Vec<Event>,
    bytes: u64,
    bad: u64,
}

impl Batch {
    fn push(&mut self, data: &[u8], clock: &Clock, source_id: &Arc<str>) {
        self.bytes += data.len() as u64;
        match decode(data, clock, source_id) {
            Some(e) => self.events.push(e),
            None => self.bad += 1,
        }
    }

    /// Counts and sends what was decoded; false when the pipeline is gone.
    async fn send(&mut self, cx: &mut SourceContext) -> bool {
        if self.bad > 0 {
            cx.metrics.error(
                "decode",
                self.bad,
                &"malformed record from the eBPF ring buffer (object and loader out of step)",
            );
            self.bad = 0;
        }
        if self.events.is_empty() {
            return true;
        }
        let events = std::mem::take(&mut self.events);
        cx.metrics.add_received(events.len() as u64, self.bytes);
        self.bytes = 0;
        cx.out.send(EventBatch::new(events)).await.is_ok()
    }
}

/// The record of bpf/process.h (`struct weir_proc_event`).
#[repr(C)]
#[derive(Clone, Copy)]
struct RawProcEvent {
    kind: u32,
    pid: u32,
    tid: u32,
    ppid: u32,
    uid: u32,
    gid: u32,
    exit_code: i32,
    argv_len: u32,
    ts_ns: u64,
    start_ns: u64,
    cgroup_id: u64,
    cpu_user_ns: u64,
    cpu_system_ns: u64,
    cpu_ns: u64,
    argv_truncated: u8,
    comm: [u8; 16],
    filename: [u8; 256],
    argv: [u8; 1024],
    _pad: [u8; 7],
}

const _: () = assert!(std::mem::size_of::<RawProcEvent>() == 1384);

fn secs(ns: u64) -> Value {
    Value::from_f64_or_zero(ns as f64 / 1e9)
}

/// One ring-buffer record as a log event; `None` when it is malformed.
fn decode(data: &[u8], clock: &Clock, source_id: &Arc<str>) -> Option<Event> {
    if data.len() < std::mem::size_of::<RawProcEvent>() {
        return None;
    }
    // SAFETY: the length was checked above, the struct is plain integers and byte arrays (every
    // bit pattern is valid), and read_unaligned does not need alignment.
    let r: RawProcEvent = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
    let kind = match r.kind {
        1 => "exec",
        2 => "fork",
        3 => "exit",
        _ => return None,
    };
    let mut m = ObjectMap::new();
    m.insert("event".into(), Value::from(kind));
    m.insert("timestamp".into(), Value::Timestamp(clock.wall(r.ts_ns)));
    m.insert("pid".into(), Value::Integer(r.pid.into()));
    m.insert("tid".into(), Value::Integer(r.tid.into()));
    m.insert("ppid".into(), Value::Integer(r.ppid.into()));
    m.insert("uid".into(), Value::Integer(r.uid.into()));
    m.insert("gid".into(), Value::Integer(r.gid.into()));
    m.insert("comm".into(), Value::from(c_str(&r.comm)));
    m.insert("cgroup_id".into(), Value::Integer(r.cgroup_id as i64));
    m.insert(
        "start_time".into(),
        Value::Timestamp(clock.wall(r.start_ns)),
    );
    match r.kind {
        1 => {
            m.insert("filename".into(), Value::from(c_str(&r.filename)));
            let len = (r.argv_len as usize).min(r.argv.len());
            let argv: Vec<Value> = split_argv(&r.argv[..len])
                .into_iter()
                .map(Value::from)
                .collect();
            m.insert("argv".into(), Value::Array(argv));
            m.insert(
                "argv_truncated".into(),
                Value::Boolean(r.argv_truncated != 0),
            );
        }
        3 => {
            let status = r.exit_code;
            let signal = status & 0x7f;
            if signal == 0 {
                m.insert(
                    "exit_code".into(),
                    Value::Integer(((status >> 8) & 0xff).into()),
                );
                m.insert("signal".into(), Value::Null);
            } else {
                m.insert("exit_code".into(), Value::Null);
                m.insert("signal".into(), Value::Integer(signal.into()));
            }
            m.insert("core_dumped".into(), Value::Boolean(status & 0x80 != 0));
            m.insert(
                "lifetime_secs".into(),
                secs(r.ts_ns.saturating_sub(r.start_ns)),
            );
            m.insert("cpu_user_secs".into(), secs(r.cpu_user_ns));
            m.insert("cpu_system_secs".into(), secs(r.cpu_system_ns));
            m.insert("cpu_secs".into(), secs(r.cpu_ns));
        }
        _ => {}
    }
    Some(Event::Log(LogEvent::from_value(
        Value::Object(m),
        EventMetadata::new(Some(source_id.clone())),
    )))
}

/// argv as the kernel lays it out: NUL-terminated strings back to back (the last may be cut).
fn split_argv(raw: &[u8]) -> Vec<String> {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_is_split_on_nul() {
        assert_eq!(split_argv(b"ls\0-l\0/tmp\0"), ["ls", "-l", "/tmp"]);
        assert_eq!(split_argv(b"sh\0-c\0ec"), ["sh", "-c", "ec"]);
        assert_eq!(split_argv(b""), Vec::<String>::new());
        assert_eq!(split_argv(b"a\0\0b\0"), ["a", "", "b"]);
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: EbpfProcessConfig = toml::from_str("").unwrap();
        assert_eq!(c.events.len(), 3);
        assert_eq!(c.max_argv_bytes, 1023);
        assert!(toml::from_str::<EbpfProcessConfig>("nope = 1").is_err());
        let c: EbpfProcessConfig = toml::from_str("events = [\"exit\"]").unwrap();
        assert_eq!(c.events, [ProcessEventKind::Exit]);
    }

    #[test]
    fn short_or_unknown_records_are_rejected() {
        let clock = Clock::new();
        let id: Arc<str> = "p".into();
        assert!(decode(&[0u8; 10], &clock, &id).is_none());
        assert!(decode(&[0u8; 1384], &clock, &id).is_none());
    }
}
