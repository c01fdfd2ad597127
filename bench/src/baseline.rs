//! In-process baselines over the same file: (a) the limit of framing (find every newline)
//! and (b) the naive parse (every line into a `serde_json::Value`), both single-threaded.

use std::fs::File;
use std::hint::black_box;
use std::io::Read;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

/// Read size of both baselines (and of weir's stdin source).
pub const CHUNK: usize = 256 * 1024;

pub struct Measured {
    pub secs: f64,
    /// CPU time of the measuring thread, when /proc tells it.
    pub cpu_secs: Option<f64>,
    pub lines: u64,
}

/// Time the calling thread has spent on a CPU, in ns (`/proc/thread-self/schedstat`).
pub fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Runs `f`, timing it by the wall clock and by this thread's CPU time.
fn timed<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64, Option<f64>)> {
    let cpu0 = thread_cpu_ns();
    let started = Instant::now();
    let v = f()?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = match (cpu0, thread_cpu_ns()) {
        (Some(a), Some(b)) if b > a => Some((b - a) as f64 / 1e9),
        _ => None,
    };
    Ok((v, secs, cpu))
}

fn open(path: &Path) -> Result<File> {
    File::open(path).with_context(|| format!("cannot open {}", path.display()))
}

/// (a) Reads the file in 256 KiB chunks and counts the newlines with memchr, one by one.
pub fn memchr_count(path: &Path) -> Result<Measured> {
    let mut f = open(path)?;
    let mut buf = vec![0u8; CHUNK];
    let (lines, secs, cpu_secs) = timed(|| {
        let mut lines = 0u64;
        loop {
            let n = f
                .read(&mut buf)
                .with_context(|| format!("cannot read {}", path.display()))?;
            if n == 0 {
                return Ok(black_box(lines));
            }
            lines += memchr::memchr_iter(b'\n', &buf[..n]).count() as u64;
        }
    })?;
    Ok(Measured {
        secs,
        cpu_secs,
        lines,
    })
}

/// (b) Reads the file in 256 KiB chunks, splits it into lines and parses each one into a
/// `serde_json::Value`. Fails on the first line that does not parse.
pub fn serde_parse(path: &Path) -> Result<Measured> {
    let mut f = open(path)?;
    let (lines, secs, cpu_secs) = timed(|| {
        let mut lines = 0u64;
        for_each_line(&mut f, |line| {
            let v: serde_json::Value = serde_json::from_slice(line)
                .with_context(|| format!("line {} is not valid JSON", lines + 1))?;
            black_box(v);
            lines += 1;
            Ok(())
        })
        .with_context(|| format!("while parsing {}", path.display()))?;
        Ok(lines)
    })?;
    Ok(Measured {
        secs,
        cpu_secs,
        lines,
    })
}

/// Calls `f` with every line (without its `\n`) of `r`, read in [`CHUNK`]-byte reads. A last
/// line without a newline is passed too. Lines longer than one chunk are an error.
pub fn for_each_line<R: Read>(r: &mut R, mut f: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let mut buf = vec![0u8; 2 * CHUNK];
    let mut carry = 0usize;
    loop {
        let n = r
            .read(&mut buf[carry..carry + CHUNK])
            .context("read failed")?;
        if n == 0 {
            if carry > 0 {
                f(&buf[..carry])?;
            }
            return Ok(());
        }
        let end = carry + n;
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', &buf[carry..end]) {
            let pos = carry + nl;
            f(&buf[start..pos])?;
            start = pos + 1;
        }
        buf.copy_within(start..end, 0);
        carry = end - start;
        if carry > CHUNK {
            bail!("a line is longer than {CHUNK} bytes");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out its data a few bytes at a time, to cross line boundaries.
    struct Dribble<'a>(&'a [u8], usize);

    impl Read for Dribble<'_> {
        fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
            let n = self.1.min(self.0.len()).min(out.len());
            out[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    fn collect(data: &[u8], step: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        for_each_line(&mut Dribble(data, step), |l| {
            got.push(l.to_vec());
            Ok(())
        })
        .unwrap();
        got
    }

    #[test]
    fn splits_lines_across_reads() {
        let data = b"a\nbb\n\nccc\ndd";
        let want: Vec<Vec<u8>> = vec![
            b"a".to_vec(),
            b"bb".to_vec(),
            b"".to_vec(),
            b"ccc".to_vec(),
            b"dd".to_vec(),
        ];
        for step in [1, 2, 3, 5, 100] {
            assert_eq!(collect(data, step), want, "step {step}");
        }
    }

    #[test]
    fn long_line_across_many_chunks() {
        let mut data = vec![b'x'; CHUNK - 10];
        data.push(b'\n');
        data.extend(std::iter::repeat_n(b'y', CHUNK));
        data.push(b'\n');
        let got = collect(&data, 4096);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].len(), CHUNK - 10);
        assert_eq!(got[1].len(), CHUNK);
        let mut too_long = vec![b'z'; 2 * CHUNK + 5];
        too_long.push(b'\n');
        assert!(for_each_line(&mut Dribble(&too_long, CHUNK), |_| Ok(())).is_err());
    }
}
