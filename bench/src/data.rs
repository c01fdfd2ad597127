//! The input: JSON access-log lines of exactly [`LINE_LEN`] bytes (255 + `\n`), generated
//! deterministically into `target/bench-data/` and reused by later runs of the same size.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

/// Bytes per line, newline included.
pub const LINE_LEN: usize = 256;
/// Bump when the generator changes, so an old file of the same size is not reused.
const GENERATOR_VERSION: u32 = 1;
const SEED: u64 = 0x5745_4952_4245_4e43; // "WEIRBENC"

pub struct Dataset {
    pub path: PathBuf,
    pub bytes: u64,
    pub lines: u64,
    pub reused: bool,
}

/// Returns the data file of `size_mib` MiB under `dir`, generating it unless a file of the
/// same name and size is already there.
pub fn ensure_dataset(dir: &Path, size_mib: u64) -> Result<Dataset> {
    let bytes = size_mib
        .checked_mul(1024 * 1024)
        .context("--size-mib is too large")?;
    let lines = bytes / LINE_LEN as u64;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!(
        "access-log-v{GENERATOR_VERSION}-{size_mib}MiB.jsonl"
    ));
    if let Ok(meta) = fs::metadata(&path) {
        if meta.is_file() && meta.len() == bytes {
            return Ok(Dataset {
                path,
                bytes,
                lines,
                reused: true,
            });
        }
    }
    // Write under a temporary name and rename at the end, so an interrupted run never
    // leaves a truncated file that a later run would take for a complete one.
    let partial = path.with_extension("jsonl.partial");
    let file =
        File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut gen = LineGenerator::new(SEED);
    let mut line = Vec::with_capacity(LINE_LEN);
    for _ in 0..lines {
        line.clear();
        gen.write_line(&mut line)?;
        out.write_all(&line)
            .with_context(|| format!("cannot write {}", partial.display()))?;
    }
    let file = out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("cannot write {}", partial.display()))?;
    file.sync_all()
        .with_context(|| format!("cannot sync {}", partial.display()))?;
    drop(file);
    fs::rename(&partial, &path)
        .with_context(|| format!("cannot rename {} to {}", partial.display(), path.display()))?;
    let len = fs::metadata(&path)
        .with_context(|| format!("cannot stat {}", path.display()))?
        .len();
    if len != bytes {
        bail!("{} has {len} bytes, expected {bytes}", path.display());
    }
    Ok(Dataset {
        path,
        bytes,
        lines,
        reused: false,
    })
}

/// splitmix64: small, fast, deterministic; plenty for varied-looking log fields.
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

const SERVICES: &[&str] = &[
    "frontend",
    "cart",
    "checkout",
    "payment",
    "shipping",
    "catalog",
    "recommendation",
    "auth",
    "search",
];
const METHODS: &[&str] = &["GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE"];
/// `#` is replaced by a number.
const PATHS: &[&str] = &[
    "/",
    "/healthz",
    "/api/cart",
    "/api/cart/items/#",
    "/api/checkout",
    "/api/products",
    "/api/products/#",
    "/api/payment",
    "/api/users/#",
    "/api/search",
    "/api/recommendations",
    "/static/app.#.js",
];
const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
    "curl/8.11.0",
    "Go-http-client/1.1",
    "python-requests/2.32.3",
    "okhttp/4.12.0",
    "kube-probe/1.31",
    "Prometheus/2.55.1",
];

/// Writes the access-log lines. Every line is 255 bytes of JSON plus `\n`: the fields are
/// laid out first and `user_agent`, the last (and longest) field, is cut or extended to fill
/// the line exactly.
pub struct LineGenerator {
    rng: Rng,
    ts_ms: u64,
}

impl LineGenerator {
    pub fn new(seed: u64) -> Self {
        LineGenerator {
            rng: Rng(seed),
            ts_ms: 8 * 3_600_000,
        }
    }

    /// Appends one line of exactly [`LINE_LEN`] bytes to `out`.
    pub fn write_line(&mut self, out: &mut Vec<u8>) -> Result<()> {
        self.write_line_of(out, LINE_LEN)
    }

    /// Appends one line of exactly `len` bytes (newline included) to `out`: the same fields,
    /// `user_agent` cut or extended to fit.
    pub fn write_line_of(&mut self, out: &mut Vec<u8>, len: usize) -> Result<()> {
        let start = out.len();
        let r = &mut self.rng;
        self.ts_ms += r.below(4);
        let t = self.ts_ms;
        let (h, m, s, ms) = (
            (t / 3_600_000) % 24,
            (t / 60_000) % 60,
            (t / 1000) % 60,
            t % 1000,
        );
        let status = match r.below(100) {
            0..=69 => 200,
            70..=74 => 201,
            75..=77 => 204,
            78..=79 => 301,
            80..=84 => 304,
            85..=87 => 400,
            88..=89 => 401,
            90..=94 => 404,
            95..=97 => 500,
            _ => 503,
        };
        let level = match status {
            500.. => "error",
            400.. => "warn",
            _ if r.below(20) == 0 => "debug",
            _ => "info",
        };
        let service = r.pick(SERVICES);
        let method = r.pick(METHODS);
        let path_tpl = r.pick(PATHS);
        let bytes = if status == 204 || status == 304 {
            0
        } else {
            r.below(200_000)
        };
        // Mostly fast, with a long tail.
        let dur_us = match r.below(100) {
            0..=89 => r.below(50_000),
            90..=98 => r.below(1_000_000),
            _ => r.below(9_999_999),
        };
        let ip = [10, r.below(256), r.below(256), 1 + r.below(254)];
        write!(
            out,
            r#"{{"timestamp":"2026-11-21T{h:02}:{m:02}:{s:02}.{ms:03}Z","level":"{level}","service":"{service}","method":"{method}","path":""#
        )?;
        match path_tpl.split_once('#') {
            Some((a, b)) => write!(out, "{a}{}{b}", r.below(100_000))?,
            None => out.extend_from_slice(path_tpl.as_bytes()),
        }
        write!(
            out,
            r#"","status":{status},"bytes":{bytes},"duration_ms":{}.{:03},"client_ip":"{}.{}.{}.{}","user_agent":""#,
            dur_us / 1000,
            dur_us % 1000,
            ip[0],
            ip[1],
            ip[2],
            ip[3],
        )?;
        // Room left for the user agent: the line ends with `"}` and `\n`.
        let used = out.len() - start;
        let room = len
            .checked_sub(3 + used)
            .context("generated line too long before user_agent")?;
        let ua = r.pick(USER_AGENTS).as_bytes();
        let ua_start = out.len();
        out.extend_from_slice(&ua[..ua.len().min(room)]);
        while out.len() - ua_start < room {
            let piece = format!(" (rv:{:x})", r.next());
            let take = piece.len().min(room - (out.len() - ua_start));
            out.extend_from_slice(&piece.as_bytes()[..take]);
        }
        out.extend_from_slice(b"\"}\n");
        ensure!(
            out.len() - start == len,
            "generated a line of {} bytes",
            out.len() - start
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_exact_length_valid_json_and_varied() {
        let mut g = LineGenerator::new(SEED);
        let mut seen_status = std::collections::HashSet::new();
        let mut seen_ua = std::collections::HashSet::new();
        for _ in 0..20_000 {
            let mut line = Vec::new();
            g.write_line(&mut line).unwrap();
            assert_eq!(line.len(), LINE_LEN);
            assert_eq!(line.last(), Some(&b'\n'));
            assert_eq!(memchr::memchr(b'\n', &line), Some(LINE_LEN - 1));
            let v: serde_json::Value = serde_json::from_slice(&line[..LINE_LEN - 1]).unwrap();
            let o = v.as_object().unwrap();
            assert_eq!(o.len(), 10, "{v}");
            assert!(o["status"].is_u64());
            assert!(o["duration_ms"].is_f64());
            seen_status.insert(o["status"].as_u64().unwrap());
            seen_ua.insert(o["user_agent"].as_str().unwrap().to_string());
        }
        assert!(seen_status.len() >= 8);
        assert!(seen_ua.len() > 1000);
    }

    #[test]
    fn generation_is_deterministic() {
        let (mut a, mut b) = (LineGenerator::new(7), LineGenerator::new(7));
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..100 {
            a.write_line(&mut x).unwrap();
            b.write_line(&mut y).unwrap();
        }
        assert_eq!(x, y);
    }
}
