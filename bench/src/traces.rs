//! The `file-multiline` case's input: Java-style exception traces, each a header line and 0
//! to 12 continuation lines (`\tat ...` frames, `Caused by: ...`, `\t... N more`), generated
//! deterministically into the data dir and reused by later runs of the same size.
//!
//! Every header starts with a non-space and is not a `Caused by:` line; every continuation
//! matches the case's `condition_pattern`. So with `continue_through`, each trace is exactly
//! one event, and the count of events is the count of headers.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::data::Dataset;

/// Bump when the generator changes, so an old file of the same size is not reused.
const GENERATOR_VERSION: u32 = 1;
const SEED: u64 = 0x4a41_5641_5452_4143; // "JAVATRAC"
/// Continuation lines per trace: 0 to this many, uniformly.
pub const MAX_CONTINUATIONS: u64 = 12;

/// The multiline options of the case (the Java example of docs/components/file_source.md).
pub const MULTILINE: &str = "multiline.start_pattern = '^[^\\s]'\n\
     multiline.condition_pattern = '^(\\s+at |Caused by:|\\s+\\.\\.\\.)'\n\
     multiline.mode = \"continue_through\"\n\
     multiline.timeout_ms = 1000\n";

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len() as u64) as usize]
    }
}

const LEVELS: &[&str] = &["ERROR", "ERROR", "WARN", "FATAL"];
const THREADS: &[&str] = &[
    "main",
    "http-nio-8080-exec-3",
    "http-nio-8080-exec-17",
    "pool-2-thread-1",
    "kafka-consumer-0",
    "scheduling-1",
];
const CLASSES: &[&str] = &[
    "com.example.orders.OrderService",
    "com.example.orders.OrderController",
    "com.example.payments.PaymentClient",
    "com.example.inventory.StockRepository",
    "com.example.shipping.LabelPrinter",
    "org.springframework.web.servlet.DispatcherServlet",
    "org.hibernate.engine.jdbc.spi.SqlExceptionHelper",
    "io.netty.channel.AbstractChannelHandlerContext",
];
const METHODS: &[&str] = &[
    "process",
    "handle",
    "invoke",
    "doDispatch",
    "execute",
    "call",
    "apply",
    "lambda$submit$0",
    "run",
];
const EXCEPTIONS: &[&str] = &[
    "java.lang.NullPointerException",
    "java.lang.IllegalStateException: order already shipped",
    "java.io.IOException: Connection reset by peer",
    "java.util.concurrent.TimeoutException: deadline exceeded after 5000 ms",
    "org.postgresql.util.PSQLException: ERROR: deadlock detected",
    "com.example.payments.DeclinedException: card declined (code 51)",
];

fn write_trace(rng: &mut Rng, n: u64, out: &mut Vec<u8>) -> Result<()> {
    let class = rng.pick(CLASSES);
    writeln!(
        out,
        "2026-12-07 10:{:02}:{:02}.{:03} {} [{}] {} - request {} failed: {}",
        (n / 60_000) % 60,
        (n / 1000) % 60,
        n % 1000,
        rng.pick(LEVELS),
        rng.pick(THREADS),
        class,
        rng.below(1_000_000_000),
        rng.pick(EXCEPTIONS)
    )?;
    let lines = rng.below(MAX_CONTINUATIONS + 1);
    for i in 0..lines {
        if i + 1 == lines && lines > 3 && rng.below(3) == 0 {
            writeln!(out, "\t... {} more", 1 + rng.below(40))?;
        } else if i > 0 && rng.below(8) == 0 {
            writeln!(out, "Caused by: {}", rng.pick(EXCEPTIONS))?;
        } else {
            let c = rng.pick(CLASSES);
            let file = c.rsplit('.').next().unwrap_or(c);
            writeln!(
                out,
                "\tat {c}.{}({file}.java:{})",
                rng.pick(METHODS),
                10 + rng.below(900)
            )?;
        }
    }
    Ok(())
}

/// Headers in `text`: lines that start with a non-space and are not `Caused by:` lines.
pub fn count_traces(text: &[u8]) -> u64 {
    text.split(|b| *b == b'\n')
        .filter(|l| {
            l.first().is_some_and(|b| !b.is_ascii_whitespace()) && !l.starts_with(b"Caused by:")
        })
        .count() as u64
}

/// The traces file of about `size_mib` MiB (whole traces, at least that much) under `dir`.
pub fn ensure_traces(dir: &Path, size_mib: u64) -> Result<Dataset> {
    let target = size_mib
        .checked_mul(1024 * 1024)
        .context("--size-mib is too large")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!(
        "java-traces-v{GENERATOR_VERSION}-{size_mib}MiB.log"
    ));
    if let Ok(text) = fs::read(&path) {
        if text.len() as u64 >= target && text.ends_with(b"\n") {
            return Ok(Dataset {
                lines: count_traces(&text),
                bytes: text.len() as u64,
                path,
                reused: true,
            });
        }
    }
    let partial = path.with_extension("log.partial");
    let file =
        File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut rng = Rng(SEED);
    let mut buf = Vec::with_capacity(4096);
    let (mut bytes, mut traces) = (0u64, 0u64);
    while bytes < target {
        buf.clear();
        write_trace(&mut rng, traces, &mut buf)?;
        out.write_all(&buf)
            .with_context(|| format!("cannot write {}", partial.display()))?;
        bytes += buf.len() as u64;
        traces += 1;
    }
    let file = out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("cannot write {}", partial.display()))?;
    file.sync_all()?;
    drop(file);
    fs::rename(&partial, &path)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), path.display()))?;
    Ok(Dataset {
        path,
        bytes,
        lines: traces,
        reused: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_have_a_header_and_up_to_twelve_continuations() {
        let mut rng = Rng(SEED);
        let condition = |l: &[u8]| {
            l.starts_with(b"\tat ") || l.starts_with(b"Caused by:") || l.starts_with(b"\t...")
        };
        let mut seen = [false; MAX_CONTINUATIONS as usize + 1];
        for n in 0..2000 {
            let mut buf = Vec::new();
            write_trace(&mut rng, n, &mut buf).unwrap();
            assert_eq!(count_traces(&buf), 1);
            let lines: Vec<&[u8]> = buf
                .split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .collect();
            assert!(!condition(lines[0]) && !lines[0][0].is_ascii_whitespace());
            assert!(lines[1..].iter().all(|l| condition(l)), "{buf:?}");
            seen[lines.len() - 1] = true;
        }
        assert!(
            seen.iter().all(|s| *s),
            "every count of continuations occurs"
        );
    }
}
