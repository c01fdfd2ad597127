//! `perf`: stack samples and counters from Linux `perf`.
//!
//! Three modes:
//! - `script` parses `perf script` text ([`script`]) from a file or FIFO (`path`), from a
//!   command Weir runs and restarts (`command`), or from standard input: one stack-sample log
//!   event per sample (schema: `docs/schemas/stack-sample.md`);
//! - `record` runs `perf record -F <hz> -a -g -o - -- sleep <interval>` piped into
//!   `perf script` again and again, one run at a time, and parses it the same way;
//! - `stat` runs `perf stat -I <ms> -x, -e <events> -a` (or reads its output from `path` or
//!   `command`) and emits each interval's counters as metrics ([`stat`]).
//!
//! Children are run by [`process`]: their stderr is kept, a failure is logged with the fix
//! (a missing perf, perf_event_paranoid), and they are killed when Weir stops.
//!
//! Input is read in chunks of up to 256 KiB; the complete lines of each read are parsed as
//! ranges of that chunk ([`chunk`]; a line over `max_line_bytes` is skipped without being
//! buffered), so a stack sample's strings are a slice of the read buffer, not copies; a file
//! (`path`) is read by a blocking thread straight into that buffer ([`pump_file`]). Samples
//! leave as typed events ([`weir_records::stack::StackSample`]), in batches of up to
//! [`MAX_BATCH_EVENTS`], or sooner when a read ends.

pub mod process;
pub mod script;
pub mod stat;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};
use weir_pipeline::component::{Output, Resource, Source, SourceConfig, SourceContext};
use weir_pipeline::event::{Event, EventBatch, MAX_BATCH_EVENTS};
use weir_pipeline::retry::Backoff;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use self::process::{find_program, not_found, Pipeline};
use self::script::ScriptParser;
use self::stat::{StatLine, StatParser};
use weir_pipeline::codec::chunk::{self, Chunk, LineChunker, Piece};

const READ_CHUNK: usize = 256 * 1024;

/// A run that lasted this long was healthy: the restart backoff starts over.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// What the source reads.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// `perf script` text from `path`, `command` or standard input.
    #[default]
    Script,
    /// Weir runs `perf record ... | perf script` in a loop.
    Record,
    /// `perf stat -I -x,` counters, from perf run by Weir, `path` or `command`.
    Stat,
}

/// When `command` is started again after it exits.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Restart {
    /// Whenever it exits (a stream that ends periodically).
    Always,
    /// Only when it fails (non-zero status or killed by a signal).
    #[default]
    OnFailure,
    /// Never: when it exits, the source ends.
    Never,
}

/// `type = "perf"`: stack samples (`script`, `record`) or counters (`stat`) from Linux perf.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PerfConfig {
    /// What the source reads. Default: `script`.
    #[serde(default)]
    pub mode: Mode,
    /// `script` and `stat`: read this file or FIFO. A regular file is read once, then the source
    /// ends; a FIFO is opened again when its writer closes it. Default: none.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `script` and `stat`: run this program (argv, no shell) and read its stdout, e.g. `["perf",
    /// "script", "-i", "perf.data"]`; started again as `restart` says. Not with `path`. With
    /// neither `path` nor `command`, `script` reads standard input and `stat` runs perf. Default:
    /// none.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// When `command` is started again after it exits. Restarts back off from 1 s to 60 s (reset
    /// after a run of 30 s). Default: `on_failure`.
    #[serde(default)]
    pub restart: Restart,
    /// The perf binary: a name looked up on `PATH`, or a path. Default: `perf`.
    #[serde(default = "default_perf")]
    pub perf_path: String,
    /// `record`: the sampling frequency (`perf record -F`). At least 1. Default: 99.
    #[serde(default = "default_hz")]
    pub frequency_hz: u32,
    /// `record`: how many seconds each `perf record` run lasts; its samples are emitted when it
    /// ends. At least 1. Default: 10.
    #[serde(default = "default_interval_secs")]
    pub interval_secs: u64,
    /// `stat`: the events to count (`perf stat -e`). The default ones are software events,
    /// available on every machine. Not empty.
    #[serde(default = "default_events")]
    pub events: Vec<String>,
    /// `stat`: milliseconds between reports (`perf stat -I`, at least 10). Default: 10000.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// `record` and `stat`: more arguments for `perf record` / `perf stat`, passed before `--`,
    /// e.g. `["--call-graph", "dwarf"]` or `["-C", "0-3"]`. Default: empty.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// A longer line is skipped without being held in memory, counted as `oversized`, and the
    /// sample it belongs to is dropped. Default: 65536.
    #[serde(default = "default_max_line")]
    pub max_line_bytes: usize,
    /// A sample with more frames than this is dropped and counted as `too_many_frames`. Default:
    /// 4096.
    #[serde(default = "default_max_frames")]
    pub max_frames: usize,
}

fn default_perf() -> String {
    "perf".into()
}
fn default_hz() -> u32 {
    99
}
fn default_interval_secs() -> u64 {
    10
}
fn default_events() -> Vec<String> {
    [
        "cpu-clock",
        "task-clock",
        "context-switches",
        "cpu-migrations",
        "page-faults",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}
fn default_interval_ms() -> u64 {
    10_000
}
fn default_max_line() -> usize {
    64 * 1024
}
fn default_max_frames() -> usize {
    4096
}

impl Default for PerfConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Script,
            path: None,
            command: None,
            restart: Restart::OnFailure,
            perf_path: default_perf(),
            frequency_hz: default_hz(),
            interval_secs: default_interval_secs(),
            events: default_events(),
            interval_ms: default_interval_ms(),
            extra_args: Vec::new(),
            max_line_bytes: default_max_line(),
            max_frames: default_max_frames(),
        }
    }
}

/// Where the bytes come from.
#[derive(Debug, Clone)]
enum Input {
    File(PathBuf),
    Stdin,
    /// Child pipelines, started again by `restart`.
    Commands {
        stages: Vec<Vec<String>>,
        restart: Restart,
    },
}

impl PerfConfig {
    fn perf(&self, args: &[&str]) -> Vec<String> {
        std::iter::once(self.perf_path.clone())
            .chain(args.iter().map(|s| s.to_string()))
            .collect()
    }

    fn record_stages(&self) -> Vec<Vec<String>> {
        let hz = self.frequency_hz.to_string();
        let secs = self.interval_secs.to_string();
        let mut record = self.perf(&["record", "-F", &hz, "-a", "-g", "-o", "-"]);
        record.extend(self.extra_args.iter().cloned());
        record.extend(["--".into(), "sleep".into(), secs]);
        let script = self.perf(&[
            "script",
            "-i",
            "-",
            "-F",
            "comm,pid,tid,cpu,time,period,event,ip,sym,symoff,dso",
        ]);
        vec![record, script]
    }

    fn stat_stages(&self) -> Vec<Vec<String>> {
        let ms = self.interval_ms.to_string();
        let events = self.events.join(",");
        let mut stat = self.perf(&["stat", "-I", &ms, "-x", ",", "--log-fd", "1", "-e", &events]);
        stat.push("-a".into());
        stat.extend(self.extra_args.iter().cloned());
        vec![stat]
    }

    fn input(&self) -> Result<Input, String> {
        if self.path.is_some() && self.command.is_some() {
            return Err("set `path` or `command`, not both".into());
        }
        if self.max_line_bytes == 0 || self.max_frames == 0 {
            return Err("`max_line_bytes` and `max_frames` must be at least 1".into());
        }
        if let Some(c) = &self.command {
            if c.is_empty() {
                return Err("`command` is empty: give the program and its arguments".into());
            }
        }
        match self.mode {
            Mode::Record => {
                if self.path.is_some() || self.command.is_some() {
                    return Err(
                        "`mode = \"record\"` runs perf itself: `path` and `command` are for `script` and `stat`"
                            .into(),
                    );
                }
                if self.frequency_hz == 0 || self.interval_secs == 0 {
                    return Err("`frequency_hz` and `interval_secs` must be at least 1".into());
                }
                Ok(Input::Commands {
                    stages: self.record_stages(),
                    restart: Restart::Always,
                })
            }
            Mode::Script | Mode::Stat => {
                if let Some(p) = &self.path {
                    return Ok(Input::File(p.clone()));
                }
                if let Some(c) = &self.command {
                    return Ok(Input::Commands {
                        stages: vec![c.clone()],
                        restart: self.restart,
                    });
                }
                if self.mode == Mode::Script {
                    return Ok(Input::Stdin);
                }
                if self.events.is_empty() {
                    return Err("`events` is empty: name at least one event to count".into());
                }
                if self.interval_ms < 10 {
                    return Err("`interval_ms` must be at least 10 (perf's minimum)".into());
                }
                Ok(Input::Commands {
                    stages: self.stat_stages(),
                    restart: Restart::Always,
                })
            }
        }
    }
}

#[async_trait]
impl SourceConfig for PerfConfig {
    async fn build(&self, cx: SourceContext) -> Result<Source, BoxError> {
        let input = self.input()?;
        if let Input::Commands { stages, .. } = &input {
            // A missing program will not appear by itself: say so now, with the fix.
            for argv in stages {
                let program = &argv[0];
                if find_program(program).is_none() {
                    return Err(not_found(program, *program == self.perf_path).into());
                }
            }
        }
        Ok(Box::pin(run(self.clone(), input, cx)))
    }

    fn outputs(&self) -> Vec<Output> {
        let ty = match self.mode {
            Mode::Stat => DataType::METRIC,
            Mode::Script | Mode::Record => DataType::LOG,
        };
        vec![Output::default_output(ty)]
    }

    fn resources(&self) -> Vec<Resource> {
        match self.input() {
            Ok(Input::Stdin) => vec![Resource::Stdin],
            _ => Vec::new(),
        }
    }
}

/// Turns lines into events: the `perf script` or the `perf stat` parser.
enum Lines {
    Script(Box<ScriptParser>),
    Stat(StatParser),
}

impl Lines {
    /// A read's lines are about to come: the events they finish were taken in now.
    fn start_chunk(&mut self) {
        if let Lines::Script(p) = self {
            p.set_read_time(chrono::Utc::now());
        }
    }

    fn line(
        &mut self,
        chunk: &Bytes,
        line: std::ops::Range<usize>,
        out: &mut Vec<Event>,
        cx: &SourceContext,
    ) {
        match self {
            Lines::Script(p) => {
                if let Err(e) = p.push_line(chunk, line, out) {
                    cx.metrics.error(e.kind(), 1, &e);
                }
            }
            Lines::Stat(p) => match p.parse_line(&chunk[line]) {
                Ok(StatLine::Value(m)) => out.push(Event::from(m)),
                Ok(StatLine::Unavailable {
                    event,
                    reason,
                    first,
                }) => {
                    if first {
                        tracing::warn!(component = %cx.id, "perf cannot count `{event}` here ({reason}); it is left out");
                    }
                }
                Ok(StatLine::Nothing) => {}
                Err(e) => cx.metrics.error("parse", 1, &e),
            },
        }
    }

    fn oversized(&mut self, bytes: usize, max: usize, cx: &SourceContext) {
        match self {
            Lines::Script(p) => {
                let e = p.oversized_line();
                cx.metrics.error(
                    e.kind(),
                    1,
                    &format_args!("{e} ({bytes} bytes, max_line_bytes = {max})"),
                );
            }
            Lines::Stat(_) => cx.metrics.error(
                "oversized",
                1,
                &format_args!("a {bytes}-byte line is over max_line_bytes ({max}); skipped"),
            ),
        }
    }

    fn finish(&mut self, cx: &SourceContext) {
        if let Lines::Script(p) = self {
            if let Err(e) = p.finish() {
                cx.metrics.error(e.kind(), 1, &e);
            }
        }
    }
}

/// How reading one stream ended.
enum Pumped {
    Eof,
    Shutdown,
    /// Every consumer is gone.
    Closed,
}

async fn send(events: &mut Vec<Event>, cx: &mut SourceContext) -> bool {
    if events.is_empty() {
        return true;
    }
    let full = std::mem::replace(events, Vec::with_capacity(MAX_BATCH_EVENTS));
    cx.metrics.add_received(full.len() as u64, 0);
    cx.out.send(EventBatch::new(full)).await.is_ok()
}

/// One read: its size (0 at the end of the input), the complete lines it finished and the
/// error that ended the input, if one did.
struct Read {
    n: usize,
    chunk: Option<Chunk>,
    error: Option<std::io::Error>,
}

/// Parses one read's lines and sends the batches it fills (and, at the end of the input,
/// the rest); `Err` when reading must stop.
async fn parse_read(
    read: Read,
    lines: &mut Lines,
    max_line: usize,
    events: &mut Vec<Event>,
    cx: &mut SourceContext,
) -> Result<(), Pumped> {
    let Read { n, chunk, error } = read;
    if let Some(e) = error {
        cx.metrics
            .error("io", 1, &format_args!("reading perf input failed: {e}"));
    }
    cx.metrics.add_received_bytes(n as u64);
    if let Some(chunk) = chunk {
        lines.start_chunk();
        if let Some(bytes) = chunk.oversized_before {
            lines.oversized(bytes, max_line, cx);
        }
        for piece in chunk::lines(&chunk.bytes, max_line) {
            match piece {
                Piece::Line(l) => lines.line(&chunk.bytes, l, events, cx),
                Piece::Oversized { bytes } => lines.oversized(bytes, max_line, cx),
            }
            if events.len() >= MAX_BATCH_EVENTS && !send(events, cx).await {
                return Err(Pumped::Closed);
            }
        }
    }
    if n == 0 {
        lines.finish(cx);
    }
    if !send(events, cx).await {
        return Err(Pumped::Closed);
    }
    if n == 0 {
        return Err(Pumped::Eof);
    }
    Ok(())
}

/// Reads `r` to its end (or shutdown), parsing lines and sending batches.
async fn pump(
    r: &mut (impl AsyncRead + Unpin),
    lines: &mut Lines,
    max_line: usize,
    cx: &mut SourceContext,
) -> Pumped {
    let mut chunker = LineChunker::new(max_line);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut events = Vec::with_capacity(MAX_BATCH_EVENTS);
    loop {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            r = r.read_buf(&mut buf) => r,
            _ = cx.shutdown.cancelled() => return Pumped::Shutdown,
        };
        let (n, error) = match read {
            Ok(n) => (n, None),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => (0, Some(e)),
        };
        let chunk = chunker.next_chunk(&mut buf, n == 0);
        let read = Read { n, chunk, error };
        if let Err(end) = parse_read(read, lines, max_line, &mut events, cx).await {
            return end;
        }
    }
}

/// Reads in flight between the file reader and the parser.
const FILE_READS_AHEAD: usize = 2;

/// Reads a file (or FIFO) to its end (or shutdown) like [`pump`], the reads done by a blocking
/// thread ([`read_file`]) straight into the buffer the lines are parsed from: through
/// `tokio::fs::File`, every byte would be copied once more, from its own buffer.
async fn pump_file(
    file: std::fs::File,
    lines: &mut Lines,
    max_line: usize,
    cx: &mut SourceContext,
) -> Pumped {
    let (tx, mut rx) = tokio::sync::mpsc::channel(FILE_READS_AHEAD);
    // The reader ends after the last read, or at its next read once `rx` is dropped.
    drop(tokio::task::spawn_blocking(move || {
        read_file(file, max_line, tx)
    }));
    let mut events = Vec::with_capacity(MAX_BATCH_EVENTS);
    loop {
        let read = tokio::select! {
            r = rx.recv() => r,
            _ = cx.shutdown.cancelled() => return Pumped::Shutdown,
        };
        // The reader always ends with a read of 0 bytes; without it (it panicked), the input
        // ends here.
        let read = read.unwrap_or(Read {
            n: 0,
            chunk: None,
            error: None,
        });
        if let Err(end) = parse_read(read, lines, max_line, &mut events, cx).await {
            return end;
        }
    }
}

/// The blocking side of [`pump_file`]: reads `file` in chunks of up to [`READ_CHUNK`] and
/// sends each read's complete lines, then a read of 0 bytes.
fn read_file(file: std::fs::File, max_line: usize, tx: tokio::sync::mpsc::Sender<Read>) {
    let mut chunker = LineChunker::new(max_line);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    loop {
        if buf.capacity() - buf.len() < READ_CHUNK / 4 {
            buf.reserve(READ_CHUNK);
        }
        let (n, error) = match read_spare(&file, &mut buf, READ_CHUNK) {
            Ok(n) => (n, None),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => (0, Some(e)),
        };
        let chunk = chunker.next_chunk(&mut buf, n == 0);
        if tx.blocking_send(Read { n, chunk, error }).is_err() || n == 0 {
            return;
        }
    }
}

/// One `read(2)` of up to `max` bytes of `file` into the spare capacity of `buf`, which grows
/// by what was read.
fn read_spare(file: &std::fs::File, buf: &mut BytesMut, max: usize) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    // SAFETY: `spare` is writable memory owned by `buf`, at least `len` bytes long; `read`
    // writes at most `len` bytes into it and nothing else.
    let n = unsafe { libc::read(file.as_raw_fd(), spare.as_mut_ptr().cast(), len) };
    let n = usize::try_from(n).map_err(|_| std::io::Error::last_os_error())?;
    // SAFETY: `read` initialized the first `n` (at most `len`) bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n.min(len)) };
    Ok(n.min(len))
}

async fn run(cfg: PerfConfig, input: Input, mut cx: SourceContext) -> Result<(), BoxError> {
    let mut lines = match cfg.mode {
        Mode::Stat => Lines::Stat(StatParser::new(chrono::Utc::now())),
        Mode::Script | Mode::Record => Lines::Script(Box::new(ScriptParser::new(
            Some(cx.id.clone()),
            cfg.max_frames,
        ))),
    };
    let max_line = cfg.max_line_bytes;
    match input {
        Input::Stdin => {
            let mut stdin = tokio::io::stdin();
            pump(&mut stdin, &mut lines, max_line, &mut cx).await;
            Ok(())
        }
        Input::File(path) => loop {
            let file = tokio::select! {
                f = tokio::fs::File::open(&path) => f.map_err(|e| format!("cannot open {}: {e}", path.display()))?,
                _ = cx.shutdown.cancelled() => return Ok(()),
            };
            let file = file.into_std().await;
            let fifo = {
                use std::os::unix::fs::FileTypeExt;
                file.metadata().is_ok_and(|m| m.file_type().is_fifo())
            };
            match pump_file(file, &mut lines, max_line, &mut cx).await {
                Pumped::Eof if fifo => continue,
                _ => return Ok(()),
            }
        },
        Input::Commands { stages, restart } => {
            run_commands(&cfg, &stages, restart, &mut lines, &mut cx).await
        }
    }
}

/// Runs the pipeline of `stages` again and again, as `restart` says, one run at a time.
async fn run_commands(
    cfg: &PerfConfig,
    stages: &[Vec<String>],
    restart: Restart,
    lines: &mut Lines,
    cx: &mut SourceContext,
) -> Result<(), BoxError> {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let started = Instant::now();
        if let Lines::Stat(p) = lines {
            p.restart(chrono::Utc::now());
        }
        let mut pipeline = match Pipeline::spawn(stages, &cfg.perf_path) {
            Ok(p) => p,
            Err(e @ process::SpawnError::NotFound { .. }) => return Err(e.into()),
            Err(e) => {
                cx.metrics.error("command", 1, &e);
                if !pause(&mut backoff, cx).await {
                    return Ok(());
                }
                continue;
            }
        };
        let pumped = match pipeline.take_stdout() {
            Some(mut out) => pump(&mut out, lines, cfg.max_line_bytes, cx).await,
            None => Pumped::Eof,
        };
        match pumped {
            Pumped::Eof => {}
            Pumped::Shutdown | Pumped::Closed => {
                pipeline.kill().await;
                return Ok(());
            }
        }
        let exits = pipeline.finish().await;
        let failed: Vec<String> = exits
            .iter()
            .filter(|e| !e.success())
            .map(|e| e.describe())
            .collect();
        for e in &exits {
            if e.success() && !e.stderr.trim().is_empty() {
                tracing::debug!(component = %cx.id, command = %e.command, "stderr: {}", e.stderr.trim());
            }
        }
        let ok = failed.is_empty();
        if !ok {
            cx.metrics
                .error("command", 1, &format_args!("{}", failed.join("; ")));
        }
        if started.elapsed() >= HEALTHY_RUN {
            backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        }
        match (restart, ok) {
            (Restart::Never, _) | (Restart::OnFailure, true) => return Ok(()),
            (Restart::Always, true) => {
                // A healthy periodic run (perf record's interval) restarts at once.
                if cx.shutdown.is_cancelled() {
                    return Ok(());
                }
                if started.elapsed() < Duration::from_secs(1) && !pause(&mut backoff, cx).await {
                    return Ok(());
                }
            }
            (_, false) => {
                if !pause(&mut backoff, cx).await {
                    return Ok(());
                }
            }
        }
    }
}

/// Waits out the next backoff delay; false when shutdown came first.
async fn pause(backoff: &mut Backoff, cx: &SourceContext) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(backoff.next_delay()) => true,
        _ = cx.shutdown.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_perf_command_lines() {
        let cfg = PerfConfig {
            mode: Mode::Record,
            frequency_hz: 49,
            interval_secs: 5,
            extra_args: vec!["-C".into(), "0".into()],
            ..Default::default()
        };
        let Ok(Input::Commands { stages, restart }) = cfg.input() else {
            panic!()
        };
        assert_eq!(restart, Restart::Always);
        assert_eq!(
            stages[0].join(" "),
            "perf record -F 49 -a -g -o - -C 0 -- sleep 5"
        );
        assert!(stages[1]
            .join(" ")
            .starts_with("perf script -i - -F comm,pid,tid"));
        let cfg = PerfConfig {
            mode: Mode::Stat,
            interval_ms: 100,
            events: vec!["cpu-clock".into(), "page-faults".into()],
            ..Default::default()
        };
        let Ok(Input::Commands { stages, .. }) = cfg.input() else {
            panic!()
        };
        assert_eq!(
            stages[0].join(" "),
            "perf stat -I 100 -x , --log-fd 1 -e cpu-clock,page-faults -a"
        );
        let bad = PerfConfig {
            mode: Mode::Record,
            path: Some("x".into()),
            ..Default::default()
        };
        assert!(bad.input().is_err());
        assert!(matches!(PerfConfig::default().input(), Ok(Input::Stdin)));
        assert_eq!(PerfConfig::default().resources(), vec![Resource::Stdin]);
    }

    #[test]
    fn config_rejects_unknown_options() {
        let ok: Result<PerfConfig, _> = toml::from_str("mode = \"stat\"\nevents = [\"cpu-clock\"]");
        assert!(ok.is_ok());
        let bad: Result<PerfConfig, _> = toml::from_str("mode = \"stat\"\nevent = [\"x\"]");
        assert!(bad.is_err());
    }
}
