//! The bytes of a disk buffer: segment files of framed records, and the reader's acknowledged
//! position.
//!
//! ```text
//! segment file  <id:020>.seg
//!   header (32 bytes): "WEIRBUF\0" | version u32 | 0 u32 | segment id u64 | crc32 of the 24 before | 0 u32
//!   record*         : magic u32 "WREC" | payload length u32 | crc32 | sequence u64 | events u32 | payload
//!                     (the crc covers length, sequence, events and payload)
//! ack file      ack  (written to ack.tmp, then renamed over)
//!   "WEIRACK\0" | version u32 | crc32 of the 28 after | segment u64 | offset u64 | next sequence u64
//! ```
//!
//! Every number is little-endian. The sequence numbers count records across segments and
//! restarts, so a reader that finds a gap knows how many records were lost (a deleted
//! segment, a stretch of garbage). A reader that meets a record that does not check (a torn
//! tail, a flipped bit, a zeroed page) searches forward for the next magic whose record
//! checks, and reports the bytes in between.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// The format this Weir writes. Version 2 added an event kind (a JSON line held as its text,
/// see `codec`); the records of version 1 are a subset of it.
pub const VERSION: u32 = 2;
/// The oldest format this Weir reads (its records decode the same).
pub const OLDEST_READABLE: u32 = 1;
/// A segment's header length.
pub const SEGMENT_HEADER: u64 = 32;
/// A record's header length.
pub const RECORD_HEADER: usize = 24;
const SEGMENT_MAGIC: &[u8; 8] = b"WEIRBUF\0";
const RECORD_MAGIC: [u8; 4] = *b"WREC";
const ACK_MAGIC: &[u8; 8] = b"WEIRACK\0";
const ACK_LEN: usize = 44;
/// How much a resynchronising reader reads at a time.
const SCAN_CHUNK: usize = 64 << 10;

/// The file name of segment `id`.
pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// The ids of the segment files in `dir`, sorted.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name
            .strip_suffix(".seg")
            .and_then(|n| n.parse::<u64>().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// A segment's header.
pub fn segment_header(id: u64) -> [u8; SEGMENT_HEADER as usize] {
    let mut h = [0u8; SEGMENT_HEADER as usize];
    h[0..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&id.to_le_bytes());
    let crc = crc32fast::hash(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What a segment's header says.
#[derive(Debug, PartialEq, Eq)]
pub enum Header {
    /// A segment of this format.
    Ok,
    /// A valid header of another format version: written by another Weir.
    Version(u32),
    /// Not a header (garbage, zeros, a file cut short, or the wrong segment id).
    Corrupt,
}

/// Checks a segment's header.
pub fn check_header(file: &File, id: u64) -> io::Result<Header> {
    let mut h = [0u8; SEGMENT_HEADER as usize];
    match file.read_exact_at(&mut h, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Header::Corrupt),
        Err(e) => return Err(e),
    }
    let crc = u32::from_le_bytes([h[24], h[25], h[26], h[27]]);
    if &h[0..8] != SEGMENT_MAGIC || crc32fast::hash(&h[0..24]) != crc {
        return Ok(Header::Corrupt);
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if !(OLDEST_READABLE..=VERSION).contains(&version) {
        return Ok(Header::Version(version));
    }
    if h[16..24] != id.to_le_bytes() {
        return Ok(Header::Corrupt);
    }
    Ok(Header::Ok)
}

/// Appends a record's header for `payload` to `out`, then the payload (the writer fills the
/// same header in place: `disk::set_seq`).
#[cfg(test)]
pub fn frame_record(seq: u64, events: u32, payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len() as u32;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len.to_le_bytes());
    crc.update(&seq.to_le_bytes());
    crc.update(&events.to_le_bytes());
    crc.update(payload);
    out.extend_from_slice(&RECORD_MAGIC);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&events.to_le_bytes());
    out.extend_from_slice(payload);
}

/// A record read back.
#[derive(Debug)]
pub struct Record {
    /// Its sequence number.
    pub seq: u64,
    /// How many events its payload holds.
    pub events: u32,
    /// The encoded events.
    pub payload: Bytes,
    /// The offset just past it.
    pub end: u64,
}

/// What is at an offset of a segment.
#[derive(Debug)]
pub enum Read {
    /// A record that checks.
    Record(Record),
    /// Fewer bytes than a whole record before `limit`: the writer's next record (in the
    /// segment being written), or a torn tail (in any other).
    Incomplete,
    /// Bytes that are no record: skip to `next` (the next record that checks, or `limit`).
    Corrupt {
        /// Where reading goes on.
        next: u64,
    },
}

fn header_fields(h: &[u8]) -> (u32, u32, u64, u32) {
    let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let seq = u64::from_le_bytes([h[12], h[13], h[14], h[15], h[16], h[17], h[18], h[19]]);
    (word(4), word(8), seq, word(20))
}

/// Reads the record at `pos`, looking no further than `limit` (the end of what was written).
/// A record longer than `max_payload` does not check. Memory: at most one record plus one
/// scan chunk.
pub fn read_at(file: &File, pos: u64, limit: u64, max_payload: usize) -> io::Result<Read> {
    if pos + RECORD_HEADER as u64 > limit {
        return Ok(Read::Incomplete);
    }
    match try_record(file, pos, limit, max_payload)? {
        Some(Ok(r)) => Ok(Read::Record(r)),
        Some(Err(())) => Ok(Read::Corrupt {
            next: resync(file, pos + 1, limit, max_payload)?,
        }),
        None => Ok(Read::Incomplete),
    }
}

/// The record at `pos`: `None` when it runs past `limit`, `Err` when it does not check.
fn try_record(
    file: &File,
    pos: u64,
    limit: u64,
    max_payload: usize,
) -> io::Result<Option<Result<Record, ()>>> {
    let mut h = [0u8; RECORD_HEADER];
    file.read_exact_at(&mut h, pos)?;
    if h[0..4] != RECORD_MAGIC {
        return Ok(Some(Err(())));
    }
    let (len, crc, seq, events) = header_fields(&h);
    if len as usize > max_payload {
        return Ok(Some(Err(())));
    }
    let end = pos + RECORD_HEADER as u64 + u64::from(len);
    if end > limit {
        return Ok(None);
    }
    let mut payload = vec![0u8; len as usize];
    file.read_exact_at(&mut payload, pos + RECORD_HEADER as u64)?;
    let mut c = crc32fast::Hasher::new();
    c.update(&h[4..8]);
    c.update(&h[12..24]);
    c.update(&payload);
    if c.finalize() != crc {
        return Ok(Some(Err(())));
    }
    Ok(Some(Ok(Record {
        seq,
        events,
        payload: Bytes::from(payload),
        end,
    })))
}

/// The offset of the first record at or after `from` that checks, or `limit`.
fn resync(file: &File, mut from: u64, limit: u64, max_payload: usize) -> io::Result<u64> {
    let finder = memchr::memmem::Finder::new(&RECORD_MAGIC);
    let mut chunk = vec![0u8; SCAN_CHUNK];
    while from + RECORD_HEADER as u64 <= limit {
        let n = (limit - from).min(SCAN_CHUNK as u64) as usize;
        file.read_exact_at(&mut chunk[..n], from)?;
        let mut at = 0;
        while let Some(i) = finder.find(&chunk[at..n]) {
            let candidate = from + (at + i) as u64;
            match try_record(file, candidate, limit, max_payload)? {
                Some(Ok(_)) => return Ok(candidate),
                // A record that does not check, or one cut by the limit (a torn tail, or the
                // magic's bytes inside a payload with garbage after them): keep looking.
                None | Some(Err(())) => at += i + 1,
            }
        }
        if n < SCAN_CHUNK {
            break;
        }
        // Overlap by the magic's length less one, so a magic across chunks is found.
        from += (n - (RECORD_MAGIC.len() - 1)) as u64;
    }
    Ok(limit)
}

/// Where the reader has been acknowledged up to: the next record to deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckPosition {
    /// Its segment.
    pub segment: u64,
    /// Its offset in the segment.
    pub offset: u64,
    /// Its sequence number.
    pub next_seq: u64,
}

/// Reads the ack file: `Ok(None)` when there is none, `Err` text when it is unreadable.
pub fn read_ack(dir: &Path) -> Result<Option<AckPosition>, String> {
    let bytes = match std::fs::read(dir.join("ack")) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", dir.join("ack").display())),
    };
    if bytes.len() != ACK_LEN || &bytes[0..8] != ACK_MAGIC {
        return Err("the ack file is not one".into());
    }
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&bytes[i..i + 8]);
        u64::from_le_bytes(a)
    };
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let crc = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]);
    let mut c = crc32fast::Hasher::new();
    c.update(&bytes[8..12]);
    c.update(&bytes[16..]);
    if c.finalize() != crc {
        return Err("the ack file fails its checksum".into());
    }
    // The ack file did not change from version 1 to 2.
    if !(OLDEST_READABLE..=VERSION).contains(&version) {
        return Err(format!("the ack file is of format version {version}"));
    }
    Ok(Some(AckPosition {
        segment: u64_at(16),
        offset: u64_at(24),
        next_seq: u64_at(32),
    }))
}

/// Writes the ack file atomically (a temporary file renamed over it), syncing it first when
/// `sync` (before segments are deleted, so that a power loss never leaves an ack file older
/// than the segments that remain).
pub fn write_ack(dir: &Path, ack: AckPosition, sync: bool) -> io::Result<()> {
    let mut b = Vec::with_capacity(ACK_LEN);
    b.extend_from_slice(ACK_MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&ack.segment.to_le_bytes());
    b.extend_from_slice(&ack.offset.to_le_bytes());
    b.extend_from_slice(&ack.next_seq.to_le_bytes());
    b.extend_from_slice(&[0; 4]);
    let mut c = crc32fast::Hasher::new();
    c.update(&b[8..12]);
    c.update(&b[16..]);
    let crc = c.finalize();
    b[12..16].copy_from_slice(&crc.to_le_bytes());
    let tmp = dir.join("ack.tmp");
    let renamed = (|| {
        let f = File::create(&tmp)?;
        f.write_all_at(&b, 0)?;
        if sync {
            f.sync_data()?;
        }
        std::fs::rename(&tmp, dir.join("ack"))
    })();
    match renamed {
        Ok(()) => Ok(()),
        Err(e) => {
            // A full disk has no room for a new file: write over the old one in place (44
            // bytes within one page; a torn one fails its checksum and reads from the start).
            let _ = std::fs::remove_file(&tmp);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("ack"))
                .map_err(|_| e)?;
            f.write_all_at(&b, 0)?;
            if sync {
                f.sync_data()?;
            }
            Ok(())
        }
    }
}

/// Syncs a directory (a created or deleted file's entry).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment_with(records: &[(&[u8], u64)]) -> (tempfile_dir::Dir, File, u64, Vec<u64>) {
        let d = tempfile_dir::Dir::new();
        let path = segment_path(d.path(), 1);
        let mut buf = segment_header(1).to_vec();
        let mut starts = Vec::new();
        for (p, seq) in records {
            starts.push(buf.len() as u64);
            frame_record(*seq, 1, p, &mut buf);
        }
        std::fs::write(&path, &buf).unwrap();
        (d, File::open(&path).unwrap(), buf.len() as u64, starts)
    }

    /// A directory removed on drop (the pipeline crate has no tempfile dependency).
    mod tempfile_dir {
        pub struct Dir(std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let p = std::env::temp_dir().join(format!(
                    "weir-format-test-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Self(p)
            }
            pub fn path(&self) -> &std::path::Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn records_read_back_in_order() {
        let (_d, f, len, starts) = segment_with(&[(b"one", 0), (b"two", 1)]);
        assert_eq!(check_header(&f, 1).unwrap(), Header::Ok);
        let Read::Record(r) = read_at(&f, starts[0], len, 1 << 20).unwrap() else {
            panic!()
        };
        assert_eq!((&r.payload[..], r.seq, r.end), (&b"one"[..], 0, starts[1]));
        let Read::Record(r) = read_at(&f, r.end, len, 1 << 20).unwrap() else {
            panic!()
        };
        assert_eq!(&r.payload[..], b"two");
        assert!(matches!(
            read_at(&f, r.end, len, 1 << 20).unwrap(),
            Read::Incomplete
        ));
    }

    #[test]
    fn a_flipped_bit_is_skipped_to_the_next_record() {
        let (d, _, len, starts) = segment_with(&[(b"first record", 0), (b"second", 1)]);
        let path = segment_path(d.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[starts[0] as usize + RECORD_HEADER + 2] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let f = File::open(&path).unwrap();
        let Read::Corrupt { next } = read_at(&f, starts[0], len, 1 << 20).unwrap() else {
            panic!()
        };
        assert_eq!(next, starts[1]);
    }

    #[test]
    fn a_torn_tail_is_incomplete_and_a_zeroed_one_corrupt() {
        let (d, _, len, starts) = segment_with(&[(b"whole", 0), (b"torn record", 1)]);
        let path = segment_path(d.path(), 1);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..len as usize - 3]).unwrap();
        let f = File::open(&path).unwrap();
        assert!(matches!(
            read_at(&f, starts[1], len - 3, 1 << 20).unwrap(),
            Read::Incomplete
        ));
        let mut zeroed = bytes.clone();
        zeroed[starts[1] as usize..].fill(0);
        std::fs::write(&path, &zeroed).unwrap();
        let f = File::open(&path).unwrap();
        let Read::Corrupt { next } = read_at(&f, starts[1], len, 1 << 20).unwrap() else {
            panic!()
        };
        assert_eq!(next, len);
    }

    #[test]
    fn the_ack_file_round_trips_and_a_damaged_one_is_refused() {
        let d = tempfile_dir::Dir::new();
        assert_eq!(read_ack(d.path()).unwrap(), None);
        let a = AckPosition {
            segment: 3,
            offset: 4096,
            next_seq: 77,
        };
        write_ack(d.path(), a, true).unwrap();
        assert_eq!(read_ack(d.path()).unwrap(), Some(a));
        let mut b = std::fs::read(d.path().join("ack")).unwrap();
        b[20] ^= 1;
        std::fs::write(d.path().join("ack"), &b).unwrap();
        assert!(read_ack(d.path()).is_err());
    }

    #[test]
    fn another_version_is_told_apart_from_garbage() {
        let d = tempfile_dir::Dir::new();
        let path = segment_path(d.path(), 1);
        let mut h = segment_header(1);
        h[8] = 9;
        let crc = crc32fast::hash(&h[0..24]);
        h[24..28].copy_from_slice(&crc.to_le_bytes());
        std::fs::write(&path, h).unwrap();
        assert_eq!(
            check_header(&File::open(&path).unwrap(), 1).unwrap(),
            Header::Version(9)
        );
        std::fs::write(&path, [0u8; 32]).unwrap();
        assert_eq!(
            check_header(&File::open(&path).unwrap(), 1).unwrap(),
            Header::Corrupt
        );
    }
}
