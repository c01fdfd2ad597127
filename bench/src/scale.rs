//! The `scale` case (issue 25 goal 6): the parse-and-edit pipeline of case 11 (`file json ->
//! remap -> blackhole`) over the same amount of input split into 1, 10, 100 and 1000 files of
//! 256-byte lines, and in one file of 1 KiB and of 64 KiB lines. Each input is a directory of
//! `part-NNNN.jsonl` files in the data dir, generated once (seeded) and reused.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{ensure, Context, Result};

use crate::data::{Dataset, LineGenerator, LINE_LEN};

/// Bump when the generator changes, so an old input is not reused.
const GENERATOR_VERSION: u32 = 1;
const SEED: u64 = 0x5343_414c_4553_4545; // "SCALESEE"

/// (files, bytes per line) of each row, in order.
pub const SHAPES: [(usize, usize); 6] = [
    (1, LINE_LEN),
    (10, LINE_LEN),
    (100, LINE_LEN),
    (1000, LINE_LEN),
    (1, 1024),
    (1, 64 * 1024),
];

/// The input of one shape: `size_mib` MiB (rounded down to whole lines per file) in `files`
/// files of `line_len`-byte lines. `path` is the directory.
pub fn ensure_input(dir: &Path, size_mib: u64, files: usize, line_len: usize) -> Result<Dataset> {
    ensure!(files > 0 && line_len >= LINE_LEN, "bad shape");
    let total = size_mib
        .checked_mul(1024 * 1024)
        .context("--size-mib is too large")?;
    let per_file = total / files as u64 / line_len as u64; // lines
    ensure!(
        per_file > 0,
        "{size_mib} MiB is too little for {files} files of {line_len}-byte lines"
    );
    let lines = per_file * files as u64;
    let bytes = lines * line_len as u64;
    let path = dir.join(format!(
        "scale-v{GENERATOR_VERSION}-{size_mib}MiB-{files}x{line_len}"
    ));
    let done = path.join("complete");
    if done.is_file() {
        return Ok(Dataset {
            path,
            bytes,
            lines,
            reused: true,
        });
    }
    let _ = fs::remove_dir_all(&path);
    fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut gen = LineGenerator::new(SEED ^ line_len as u64);
    let mut line = Vec::with_capacity(line_len);
    for i in 0..files {
        let f = path.join(format!("part-{i:04}.jsonl"));
        let mut out = BufWriter::with_capacity(
            1 << 20,
            File::create(&f).with_context(|| format!("cannot create {}", f.display()))?,
        );
        for _ in 0..per_file {
            line.clear();
            gen.write_line_of(&mut line, line_len)?;
            out.write_all(&line)
                .with_context(|| format!("cannot write {}", f.display()))?;
        }
        out.flush()
            .with_context(|| format!("cannot write {}", f.display()))?;
    }
    // Written last: an interrupted generation is not taken for a complete one.
    File::create(&done).with_context(|| format!("cannot create {}", done.display()))?;
    Ok(Dataset {
        path,
        bytes,
        lines,
        reused: false,
    })
}

/// The page cache: read every file once (unmeasured).
pub fn warm(dir: &Path) -> Result<()> {
    for e in fs::read_dir(dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "jsonl") {
            crate::baseline::memchr_count(&p)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_have_the_asked_shape() {
        let dir = std::env::temp_dir().join(format!("weir-bench-scale-{}", std::process::id()));
        let d = ensure_input(&dir, 1, 10, 1024).unwrap();
        assert!(!d.reused);
        assert_eq!(d.lines, 10 * (1024 * 1024 / 10 / 1024));
        let mut lines = 0;
        for i in 0..10 {
            let text = fs::read(d.path.join(format!("part-{i:04}.jsonl"))).unwrap();
            for l in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                assert_eq!(l.len(), 1023);
                serde_json::from_slice::<serde_json::Value>(l).unwrap();
                lines += 1;
            }
        }
        assert_eq!(lines, d.lines);
        assert!(ensure_input(&dir, 1, 10, 1024).unwrap().reused);
        let _ = fs::remove_dir_all(&dir);
    }
}
