//! Whole lines out of a read buffer, a chunk at a time.
//!
//! [`super::LineFramer`] hands out each line as its own `Bytes` (two reference-count
//! updates and a split per line). A source that parses a few million short lines a
//! second, and wants (say) a stack sample's strings should all point into one buffer, so it takes every
//! complete line of a read at once ([`LineChunker::next_chunk`]) and walks them as ranges of
//! that chunk ([`lines()`]). The rules are the framer's: lines end at `\n`, a trailing `\r` is
//! dropped, a line over `max_line_bytes` is skipped (and reported) without being buffered
//! whole, and at end of input the last line needs no newline.

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

/// One piece of a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A line: its range in the chunk, without newline and trailing `\r`.
    Line(Range<usize>),
    /// A line over the limit was skipped; `bytes` of it were seen.
    Oversized {
        /// How many bytes of it were seen.
        bytes: usize,
    },
}

/// Complete lines of a read buffer.
#[derive(Debug)]
pub struct LineChunker {
    max_line_bytes: usize,
    /// Bytes of an oversized line dropped so far, while waiting for its end.
    discarding: Option<usize>,
}

/// Complete lines taken out of the read buffer.
#[derive(Debug)]
pub struct Chunk {
    /// Complete lines, cut from the read buffer without a copy.
    pub bytes: Bytes,
    /// An oversized line that ended just before `bytes` (its size).
    pub oversized_before: Option<usize>,
}

impl LineChunker {
    /// A chunker that skips lines longer than `max_line_bytes` (at least 1).
    pub fn new(max_line_bytes: usize) -> Self {
        Self {
            max_line_bytes: max_line_bytes.max(1),
            discarding: None,
        }
    }

    /// Takes every complete line out of `buf` (at end of input, `eof`, everything). `None`
    /// when there is nothing to hand out yet.
    pub fn next_chunk(&mut self, buf: &mut BytesMut, eof: bool) -> Option<Chunk> {
        let mut oversized_before = None;
        if let Some(seen) = self.discarding {
            match memchr::memchr(b'\n', buf) {
                Some(p) => {
                    buf.advance(p + 1);
                    self.discarding = None;
                    oversized_before = Some(seen + p);
                }
                None if eof => {
                    self.discarding = None;
                    let n = buf.len();
                    buf.clear();
                    return Some(Chunk {
                        bytes: Bytes::new(),
                        oversized_before: Some(seen + n),
                    });
                }
                None => {
                    self.discarding = Some(seen + buf.len());
                    buf.clear();
                    return None;
                }
            }
        }
        let take = if eof {
            buf.len()
        } else {
            let complete = memchr::memrchr(b'\n', buf).map_or(0, |p| p + 1);
            let partial = buf.len() - complete;
            if super::framing::over_limit(&buf[complete..], self.max_line_bytes) {
                // The unfinished last line is already too long: drop it as it comes.
                self.discarding = Some(partial);
                buf.truncate(complete);
            }
            complete
        };
        if take == 0 && oversized_before.is_none() {
            return None;
        }
        Some(Chunk {
            bytes: buf.split_to(take).freeze(),
            oversized_before,
        })
    }
}

/// The lines of `chunk` (the last one may lack its newline), longer ones than `max` reported
/// as oversized.
pub fn lines(chunk: &[u8], max: usize) -> impl Iterator<Item = Piece> + '_ {
    let mut from = 0;
    let mut ends = memchr::memchr_iter(b'\n', chunk);
    std::iter::from_fn(move || {
        let end = match ends.next() {
            Some(nl) => nl,
            None if from < chunk.len() => chunk.len(),
            None => return None,
        };
        let start = from;
        from = end + 1;
        let mut stop = end;
        if stop > start && chunk[stop - 1] == b'\r' {
            stop -= 1;
        }
        Some(if stop - start > max {
            // Counted with its `\r`, as when it is dropped piece by piece.
            Piece::Oversized { bytes: end - start }
        } else {
            Piece::Line(start..stop)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `reads` one after the other and lists what comes out, lines as text.
    fn run(reads: &[&[u8]], max: usize) -> Vec<String> {
        let mut c = LineChunker::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let take = |chunk: Chunk, out: &mut Vec<String>| {
            if let Some(n) = chunk.oversized_before {
                out.push(format!("oversized {n}"));
            }
            for p in c_lines(&chunk.bytes, max) {
                out.push(match p {
                    Piece::Line(r) => String::from_utf8_lossy(&chunk.bytes[r]).into_owned(),
                    Piece::Oversized { bytes } => format!("oversized {bytes}"),
                });
            }
        };
        fn c_lines(b: &[u8], max: usize) -> Vec<Piece> {
            lines(b, max).collect()
        }
        for r in reads {
            buf.extend_from_slice(r);
            if let Some(chunk) = c.next_chunk(&mut buf, false) {
                take(chunk, &mut out);
            }
        }
        if let Some(chunk) = c.next_chunk(&mut buf, true) {
            take(chunk, &mut out);
        }
        out
    }

    #[test]
    fn lines_split_across_reads_come_out_whole() {
        assert_eq!(
            run(&[b"ab", b"c\r\nd\n\ne", b"f"], 100),
            vec!["abc", "d", "", "ef"]
        );
        assert_eq!(run(&[b"a\n", b"", b"b\n"], 100), vec!["a", "b"]);
    }

    #[test]
    fn an_oversized_line_is_reported_and_not_buffered() {
        // Inside one chunk.
        assert_eq!(
            run(&[b"a\n0123456789\nb\n"], 4),
            vec!["a", "oversized 10", "b"]
        );
        // Across reads: dropped as it arrives, reported when it ends.
        let mut c = LineChunker::new(4);
        let mut buf = BytesMut::from(&b"a\n012345"[..]);
        let first = c.next_chunk(&mut buf, false).map(|c| c.bytes);
        assert_eq!(first.as_deref(), Some(&b"a\n"[..]));
        assert!(buf.is_empty());
        buf.extend_from_slice(b"6789");
        assert!(c.next_chunk(&mut buf, false).is_none());
        assert!(buf.is_empty());
        assert_eq!(
            run(&[b"a\n012345", b"6789", b"xy\nb\n"], 4),
            vec!["a", "oversized 12", "b"]
        );
        // Unfinished at the end of input.
        assert_eq!(run(&[b"a\n012345", b"6789"], 4), vec!["a", "oversized 10"]);
    }
}
