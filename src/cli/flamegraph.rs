//! `weir flamegraph`: an interactive flame graph (SVG) of a profile, without writing a config.
//!
//! The input is one of (detected from its content, not its name):
//! - `perf script` text: folded here with the same code as the `stack_fold` transform
//!   ([`StackFolder`]), fed by the `perf` source's parser ([`ScriptParser`]);
//! - folded stacks (`root;...;leaf COUNT` lines: `stack_fold` through the `folded` encoding,
//!   or any FlameGraph/inferno collapser);
//! - Parquet with `stack` and `count` columns (what the `parquet` sink writes for the events of
//!   `stack_fold`): a file, or a directory whose `*.parquet` files are all read.
//!
//! Counts of equal stacks are summed (several windows of `stack_fold`, several files). The
//! SVG is drawn by the `inferno` crate, the Rust port of FlameGraph's `flamegraph.pl`.
//! Input that cannot be read as its format (a broken line, a row without `stack`) is counted,
//! skipped and summarized on stderr; nothing readable at all is an error.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use weir_pipeline::event::Value;
use weir_sources::parquet::values::Columns;
use weir_sources::perf::script::ScriptParser;
use weir_transforms::stack_fold::{Added, StackFoldConfig, StackFolder, Weight};

use crate::exit;

/// Longest `perf script` line accepted; longer ones are skipped with their sample.
const MAX_LINE_BYTES: usize = 1024 * 1024;

/// The most frames of one sample (as the `perf` source's default).
const MAX_FRAMES: usize = 4096;

/// What the input holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    PerfScript,
    Folded,
    Parquet,
}

impl InputKind {
    fn name(self) -> &'static str {
        match self {
            InputKind::PerfScript => "perf script text",
            InputKind::Folded => "folded stacks",
            InputKind::Parquet => "Parquet",
        }
    }
}

/// The options of `weir flamegraph`.
pub struct Args {
    pub input: PathBuf,
    pub output: PathBuf,
    pub title: Option<String>,
    /// `perf script` input: sum periods (as `stackcollapse-perf.pl`) or count samples.
    pub weight: Weight,
}

/// Folded stacks, summed, and what was skipped on the way (kind -> count).
#[derive(Debug, Default)]
pub struct Profile {
    pub stacks: BTreeMap<Vec<u8>, u64>,
    pub skipped: BTreeMap<&'static str, u64>,
    /// The first problem seen, to show where.
    pub first_problem: Option<String>,
}

impl Profile {
    fn add(&mut self, stack: &[u8], count: u64) {
        match self.stacks.get_mut(stack) {
            Some(c) => *c = c.saturating_add(count),
            None => {
                self.stacks.insert(stack.to_vec(), count);
            }
        }
    }

    fn skip(&mut self, kind: &'static str, what: impl FnOnce() -> String) {
        *self.skipped.entry(kind).or_default() += 1;
        if self.first_problem.is_none() {
            self.first_problem = Some(what());
        }
    }
}

/// Runs the command; the process exit code.
pub fn flamegraph(args: &Args) -> u8 {
    match run(args) {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("weir flamegraph: {e}");
            exit::FAILED
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let input = &args.input;
    let kind = detect(input).map_err(|e| format!("cannot read {}: {e}", input.display()))?;
    let profile = match kind {
        InputKind::PerfScript => read_perf_script(input, args.weight),
        InputKind::Folded => read_folded(input),
        InputKind::Parquet => read_parquet(input),
    }
    .map_err(|e| format!("cannot read {}: {e}", input.display()))?;
    let total: u64 = profile.stacks.values().sum();
    let skipped: Vec<String> = profile
        .skipped
        .iter()
        .map(|(k, n)| format!("{k}:{n}"))
        .collect();
    eprintln!(
        "{}: {} ({}), {} stacks, {} samples{}",
        input.display(),
        kind.name(),
        if kind == InputKind::PerfScript {
            match args.weight {
                Weight::Period => "weighted by period",
                Weight::Samples => "counting samples",
            }
        } else {
            "counts as written"
        },
        profile.stacks.len(),
        total,
        if skipped.is_empty() {
            String::new()
        } else {
            format!(
                "; skipped {} (first: {})",
                skipped.join(","),
                profile.first_problem.as_deref().unwrap_or("")
            )
        }
    );
    if profile.stacks.is_empty() {
        return Err(format!(
            "no stacks in {} (read as {}): nothing to draw",
            input.display(),
            kind.name()
        ));
    }
    let title = args.title.clone().unwrap_or_else(|| {
        format!(
            "Flame Graph: {}",
            input.file_name().map_or_else(
                || input.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            )
        )
    });
    let out = File::create(&args.output)
        .map_err(|e| format!("cannot create {}: {e}", args.output.display()))?;
    let mut out = BufWriter::new(out);
    render(&profile, &title, &mut out)
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write {}: {e}", args.output.display()))?;
    eprintln!("wrote {}", args.output.display());
    Ok(())
}

/// Renders the stacks as an SVG flame graph into `out`.
pub fn render(profile: &Profile, title: &str, out: &mut impl Write) -> std::io::Result<()> {
    let lines: Vec<String> = profile
        .stacks
        .iter()
        .map(|(stack, count)| format!("{} {count}", String::from_utf8_lossy(stack)))
        .collect();
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = title.to_string();
    inferno::flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out)
}

/// The kind of input at `path`: Parquet by its magic bytes (or a directory: of Parquet
/// files), folded stacks when the first lines are `stack COUNT` lines, else `perf script`.
pub fn detect(path: &Path) -> std::io::Result<InputKind> {
    if path.is_dir() {
        return Ok(InputKind::Parquet);
    }
    let mut file = File::open(path)?;
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < 4 {
        match file.read(&mut magic[n..])? {
            0 => break,
            k => n += k,
        }
    }
    if n == 4 && &magic == b"PAR1" {
        return Ok(InputKind::Parquet);
    }
    let mut reader = BufReader::new(File::open(path)?);
    let mut line = Vec::new();
    let mut seen = 0;
    let mut folded = true;
    while seen < 2 {
        line.clear();
        if reader
            .by_ref()
            .take(MAX_LINE_BYTES as u64)
            .read_until(b'\n', &mut line)?
            == 0
        {
            break;
        }
        let l = trim_end(&line);
        if l.is_empty() || l[0] == b'#' {
            continue;
        }
        seen += 1;
        if l[0].is_ascii_whitespace() || split_folded(l).is_none() {
            folded = false;
            break;
        }
    }
    Ok(if folded && seen > 0 {
        InputKind::Folded
    } else {
        InputKind::PerfScript
    })
}

fn trim_end(l: &[u8]) -> &[u8] {
    let end = l
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(0, |p| p + 1);
    &l[..end]
}

/// `stack COUNT` -> (stack, count).
fn split_folded(l: &[u8]) -> Option<(&[u8], u64)> {
    let sp = l.iter().rposition(|b| *b == b' ')?;
    let (stack, count) = (trim_end(&l[..sp]), &l[sp + 1..]);
    if stack.is_empty() || count.is_empty() || !count.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some((stack, std::str::from_utf8(count).ok()?.parse().ok()?))
}

fn read_folded(path: &Path) -> std::io::Result<Profile> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut profile = Profile::default();
    let mut line = Vec::new();
    let mut no = 0u64;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        no += 1;
        let l = trim_end(&line);
        if l.is_empty() || l[0] == b'#' {
            continue;
        }
        match split_folded(l) {
            Some((stack, count)) => profile.add(stack, count),
            None => profile.skip("parse", || format!("line {no} is not `stack COUNT`")),
        }
    }
    Ok(profile)
}

fn read_perf_script(path: &Path, weight: Weight) -> std::io::Result<Profile> {
    let mut reader = BufReader::new(File::open(path)?);
    let mut parser = ScriptParser::new(None, MAX_FRAMES);
    let cfg = StackFoldConfig {
        weight,
        ..StackFoldConfig::default()
    };
    let mut folder = StackFolder::new(&cfg, Vec::new());
    let mut profile = Profile::default();
    let mut events = Vec::new();
    let mut line = Vec::new();
    let mut filtered = 0u64;
    let mut fold = |events: &mut Vec<weir_pipeline::event::Event>, filtered: &mut u64| {
        for e in events.drain(..) {
            if let Some(log) = e.as_log() {
                if folder.add(log) == Added::Filtered {
                    *filtered += 1;
                }
            }
        }
    };
    loop {
        line.clear();
        let n = reader
            .by_ref()
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            break;
        }
        let result = if line.len() > MAX_LINE_BYTES && line.last() != Some(&b'\n') {
            // Skip the rest of the oversized line without holding it.
            loop {
                let buf = reader.fill_buf()?;
                if buf.is_empty() {
                    break;
                }
                match memchr_newline(buf) {
                    Some(p) => {
                        reader.consume(p + 1);
                        break;
                    }
                    None => {
                        let len = buf.len();
                        reader.consume(len);
                    }
                }
            }
            Err(parser.oversized_line())
        } else {
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            let line = Bytes::copy_from_slice(&line);
            parser.push_line(&line, 0..line.len(), &mut events)
        };
        if let Err(e) = result {
            profile.skip(e.kind(), || e.to_string());
        }
        fold(&mut events, &mut filtered);
    }
    if let Err(e) = parser.finish() {
        profile.skip(e.kind(), || e.to_string());
    }
    fold(&mut events, &mut filtered);
    if filtered > 0 {
        *profile.skipped.entry("other_event").or_default() += filtered;
    }
    let (stacks, _) = folder.take();
    for s in stacks {
        profile.add(&s.stack, s.count);
    }
    Ok(profile)
}

fn memchr_newline(b: &[u8]) -> Option<usize> {
    b.iter().position(|c| *c == b'\n')
}

/// The Parquet files of `path`: itself, or every `*.parquet` under it (sorted).
fn parquet_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if !path.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            parquet_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    Ok(())
}

fn read_parquet(path: &Path) -> std::io::Result<Profile> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;

    let mut files = Vec::new();
    parquet_files(path, &mut files)?;
    let mut profile = Profile::default();
    for file in &files {
        let invalid = |e: &dyn std::fmt::Display| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", file.display()),
            )
        };
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(File::open(file)?).map_err(|e| invalid(&e))?;
        let schema = builder.parquet_schema();
        let wanted: HashMap<&str, usize> = schema
            .root_schema()
            .get_fields()
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name(), i))
            .collect();
        let (Some(&s), Some(&c)) = (wanted.get("stack"), wanted.get("count")) else {
            return Err(invalid(&"no `stack` and `count` columns (write the events of `stack_fold` with the `parquet` sink)"));
        };
        let mask = ProjectionMask::roots(schema, [s, c]);
        let reader = builder
            .with_projection(mask)
            .build()
            .map_err(|e| invalid(&e))?;
        let mut row = 0u64;
        for batch in reader {
            let batch = batch.map_err(|e| invalid(&e))?;
            let cols = Columns::new(&batch, false);
            if !cols.unsupported.is_empty() {
                return Err(invalid(&cols.unsupported.join("; ")));
            }
            for i in 0..batch.num_rows() {
                row += 1;
                let fields = cols.row(i, false);
                let stack = match fields.get("stack") {
                    Some(Value::Bytes(b)) => Some(&b[..]),
                    Some(Value::String(s)) => Some(&s.as_bytes()[..]),
                    _ => None,
                };
                let count = match fields.get("count") {
                    Some(Value::Integer(n)) if *n >= 0 => Some(*n as u64),
                    _ => None,
                };
                match (stack, count) {
                    (Some(st), Some(n)) if !st.is_empty() => profile.add(st, n),
                    _ => profile.skip("bad_row", || {
                        format!(
                            "{} row {row}: no string `stack` or integer `count`",
                            file.display()
                        )
                    }),
                }
            }
        }
    }
    Ok(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_folded_lines() {
        assert_eq!(split_folded(b"a;b c 12"), Some((&b"a;b c"[..], 12)));
        assert_eq!(split_folded(b"a;b"), None);
        assert_eq!(split_folded(b" 1"), None);
        assert_eq!(split_folded(b"func_ab 15294 cpu-clock:"), None);
    }
}
