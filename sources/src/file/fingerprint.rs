//! File identity: what makes "the same file" across renames, restarts and copies.
//!
//! With the `checksum` strategy (the default) a file is identified by an xxh3 hash of its head:
//! the first `lines` lines (delimiter included), cut at `bytes` bytes, after skipping
//! `ignored_header_bytes`. A renamed file keeps its fingerprint, so its position follows it;
//! a new file that reuses a freed inode has a different head, so it is not mistaken for the old
//! one; a copy (copytruncate, a `.gz` made by compressing a rotated file) has the same head, so
//! it resumes where the original was left. A file whose head is not complete yet (shorter than
//! `bytes` and without `lines` complete lines) has no fingerprint: it is waited for.
//!
//! `device_and_inode` identifies files by `(st_dev, st_ino)`: every file can be read at once,
//! even an empty one, but an inode reused after a deletion is taken for the old file, and a copy
//! is read again from its beginning.
//!
//! Gzip files (recognised by their magic bytes, not their name) are fingerprinted on their
//! decompressed head, so `app.log.1.gz` matches the `app.log.1` it was made from.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The identity of a file's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fingerprint {
    /// xxh3 of the file's head.
    Checksum(u64),
    /// `(st_dev, st_ino)`.
    DevInode(u64, u64),
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fingerprint::Checksum(c) => write!(f, "checksum:{c:016x}"),
            Fingerprint::DevInode(d, i) => write!(f, "dev_inode:{d}:{i}"),
        }
    }
}

impl FromStr for Fingerprint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid fingerprint `{s}`");
        if let Some(hex) = s.strip_prefix("checksum:") {
            return u64::from_str_radix(hex, 16)
                .map(Fingerprint::Checksum)
                .map_err(|_| bad());
        }
        if let Some(rest) = s.strip_prefix("dev_inode:") {
            let (d, i) = rest.split_once(':').ok_or_else(bad)?;
            return Ok(Fingerprint::DevInode(
                d.parse().map_err(|_| bad())?,
                i.parse().map_err(|_| bad())?,
            ));
        }
        Err(bad())
    }
}

impl Serialize for Fingerprint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Fingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `fingerprint.strategy`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    #[default]
    Checksum,
    DeviceAndInode,
}

/// `fingerprint = { ... }`: how files are identified.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FingerprintConfig {
    /// `checksum` (a hash of the file's head) or `device_and_inode`. See
    /// [Fingerprints](#fingerprints). Default: `checksum`.
    #[serde(default)]
    pub strategy: Strategy,
    /// `checksum`: how many lines of the file's head are hashed (delimiters included). `0` is taken
    /// as 1. Default: 1.
    #[serde(default = "default_lines")]
    pub lines: usize,
    /// `checksum`: the head is cut at this many bytes. A file with fewer bytes and fewer than
    /// `lines` complete lines has no fingerprint yet, and is not read until it grows. `0` is taken
    /// as 1. Default: 256.
    #[serde(default = "default_bytes")]
    pub bytes: usize,
    /// `checksum`: bytes at the start of every file skipped before hashing (a fixed header
    /// shared by all files). Default: 0.
    #[serde(default)]
    pub ignored_header_bytes: u64,
}

fn default_lines() -> usize {
    1
}

fn default_bytes() -> usize {
    256
}

impl Default for FingerprintConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::Checksum,
            lines: default_lines(),
            bytes: default_bytes(),
            ignored_header_bytes: 0,
        }
    }
}

/// Computes fingerprints with one configuration.
#[derive(Debug, Clone)]
pub struct Fingerprinter {
    strategy: Strategy,
    lines: usize,
    bytes: usize,
    ignored: u64,
    delimiter: u8,
}

/// The first two bytes of every gzip member.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Whether `file` starts with the gzip magic bytes.
pub fn is_gzip(file: &File) -> io::Result<bool> {
    let mut head = [0u8; 2];
    let n = read_full_at(file, &mut head, 0)?;
    Ok(n == 2 && head == GZIP_MAGIC)
}

/// Reads into `buf` at `offset` until it is full or the file ends; returns the bytes read.
pub fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// A `Read` over a file through `pread`, leaving the file's own cursor alone.
struct ReadAt<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Fingerprinter {
    pub fn new(cfg: &FingerprintConfig, delimiter: u8) -> Self {
        Self {
            strategy: cfg.strategy,
            lines: cfg.lines.max(1),
            bytes: cfg.bytes.max(1),
            ignored: cfg.ignored_header_bytes,
            delimiter,
        }
    }

    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The fingerprint of the open `file`, or `None` while its head is incomplete.
    pub fn compute(&self, file: &File, gzip: bool) -> io::Result<Option<Fingerprint>> {
        if self.strategy == Strategy::DeviceAndInode {
            let m = file.metadata()?;
            return Ok(Some(Fingerprint::DevInode(m.dev(), m.ino())));
        }
        let head = read_head(file, gzip, self.ignored, self.bytes)?;
        Ok(self.of_head(&head))
    }

    /// The fingerprint of a file whose head (after the ignored header) is `head`, where `head`
    /// is the whole file when it is shorter than `bytes`.
    pub fn of_head(&self, head: &[u8]) -> Option<Fingerprint> {
        let head = &head[..head.len().min(self.bytes)];
        let mut end = None;
        let mut from = 0;
        for _ in 0..self.lines {
            match memchr::memchr(self.delimiter, &head[from..]) {
                Some(p) => {
                    from += p + 1;
                    end = Some(from);
                }
                None => {
                    end = None;
                    break;
                }
            }
        }
        let region = match end {
            Some(e) => &head[..e],
            None if head.len() >= self.bytes => head,
            None => return None,
        };
        Some(Fingerprint::Checksum(xxhash_rust::xxh3::xxh3_64(region)))
    }
}

/// Up to `len` bytes of the file's content (decompressed for gzip) from `skip_bytes` on.
pub fn read_head(file: &File, gzip: bool, skip_bytes: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut head = vec![0u8; len];
    let n = if gzip {
        let mut d = flate2::read::MultiGzDecoder::new(ReadAt { file, pos: 0 });
        skip(&mut d, skip_bytes)?;
        read_full(&mut d, &mut head)?
    } else {
        read_full_at(file, &mut head, skip_bytes)?
    };
    head.truncate(n);
    Ok(head)
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads and discards `n` bytes (fewer if the input ends first).
pub fn skip(r: &mut impl Read, n: u64) -> io::Result<u64> {
    io::copy(&mut r.take(n), &mut io::sink())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn fp(cfg: FingerprintConfig, content: &[u8]) -> Option<Fingerprint> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, content).unwrap();
        let f = File::open(&p).unwrap();
        let gz = is_gzip(&f).unwrap();
        Fingerprinter::new(&cfg, b'\n').compute(&f, gz).unwrap()
    }

    #[test]
    fn first_line_identifies_a_file_and_growth_keeps_it() {
        let cfg = FingerprintConfig::default();
        assert_eq!(fp(cfg.clone(), b"partial first li"), None, "waits");
        let a = fp(cfg.clone(), b"first line\n").unwrap();
        assert_eq!(fp(cfg.clone(), b"first line\nsecond\n"), Some(a));
        assert_ne!(fp(cfg.clone(), b"other line\n"), Some(a));
        // A long first line is cut at `bytes`.
        let long = vec![b'x'; 300];
        let l = fp(cfg.clone(), &long).unwrap();
        let mut longer = long.clone();
        longer.extend_from_slice(b"yyy\n");
        assert_eq!(fp(cfg, &longer), Some(l));
    }

    #[test]
    fn lines_and_ignored_header_are_honoured() {
        let cfg = FingerprintConfig {
            lines: 2,
            ignored_header_bytes: 7,
            ..Default::default()
        };
        assert_eq!(fp(cfg.clone(), b"HEADER\nl1\n"), None);
        let a = fp(cfg.clone(), b"HEADER\nl1\nl2\n").unwrap();
        assert_eq!(fp(cfg.clone(), b"XXXXXX\nl1\nl2\nl3\n"), Some(a));
        assert_ne!(fp(cfg, b"HEADER\nl1\nl9\n"), Some(a));
    }

    #[test]
    fn gzip_is_fingerprinted_on_its_decompressed_head() {
        let plain = b"the first line\nthe second\n";
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(plain).unwrap();
        let gz = enc.finish().unwrap();
        let cfg = FingerprintConfig::default();
        assert_eq!(fp(cfg.clone(), &gz), fp(cfg, plain));
    }

    #[test]
    fn device_and_inode_needs_no_content() {
        let cfg = FingerprintConfig {
            strategy: Strategy::DeviceAndInode,
            ..Default::default()
        };
        assert!(matches!(fp(cfg, b""), Some(Fingerprint::DevInode(_, _))));
    }

    #[test]
    fn fingerprints_round_trip_as_text() {
        for f in [
            Fingerprint::Checksum(0xdead_beef),
            Fingerprint::DevInode(8, 99),
        ] {
            assert_eq!(f.to_string().parse::<Fingerprint>().unwrap(), f);
        }
        assert!("checksum:zz".parse::<Fingerprint>().is_err());
    }
}
