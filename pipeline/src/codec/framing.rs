use bytes::{Bytes, BytesMut};

/// The default longest line, in bytes. Longer lines are skipped and counted.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1024 * 1024;

/// What the framer found.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line, without its delimiter (and without a trailing `\r`).
    Line(Bytes),
    /// A line longer than the limit was skipped; `bytes` of it were seen.
    Oversized {
        /// How many bytes of it were seen.
        bytes: usize,
    },
}

/// Splits a byte stream into lines with memchr. Lines point into the read buffer (no copy).
/// A line over `max_line_bytes` is dropped up to its delimiter, without buffering it whole, so a
/// 10 GiB line costs no memory.
#[derive(Debug)]
pub struct LineFramer {
    delimiter: u8,
    max_line_bytes: usize,
    /// Bytes of an oversized line dropped so far, while waiting for its end.
    discarding: Option<usize>,
    /// Where to resume the delimiter search in the buffer.
    scanned: usize,
}

impl LineFramer {
    /// A framer splitting on `delimiter` that skips lines longer than `max_line_bytes` (at least 1).
    pub fn new(delimiter: u8, max_line_bytes: usize) -> Self {
        Self {
            delimiter,
            max_line_bytes: max_line_bytes.max(1),
            discarding: None,
            scanned: 0,
        }
    }

    /// The next frame from `buf`, consuming it, or `None` when more input is needed.
    pub fn next_frame(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        loop {
            match memchr::memchr(self.delimiter, &buf[self.scanned..]) {
                Some(p) => {
                    let end = self.scanned + p;
                    self.scanned = 0;
                    if let Some(seen) = self.discarding.take() {
                        let _ = buf.split_to(end + 1);
                        return Some(Frame::Oversized { bytes: seen + end });
                    }
                    let mut line = buf.split_to(end + 1);
                    line.truncate(end);
                    if line.last() == Some(&b'\r') {
                        line.truncate(end - 1);
                    }
                    if line.len() > self.max_line_bytes {
                        // Counted with its `\r`, as when it is dropped piece by piece.
                        return Some(Frame::Oversized { bytes: end });
                    }
                    return Some(Frame::Line(line.freeze()));
                }
                None => {
                    if let Some(seen) = self.discarding.as_mut() {
                        *seen += buf.len();
                        buf.clear();
                        self.scanned = 0;
                        return None;
                    }
                    if over_limit(buf, self.max_line_bytes) {
                        self.discarding = Some(buf.len());
                        buf.clear();
                        self.scanned = 0;
                        continue;
                    }
                    self.scanned = buf.len();
                    return None;
                }
            }
        }
    }

    /// At end of input: the last line if it had no delimiter.
    pub fn finish(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        self.scanned = 0;
        if let Some(seen) = self.discarding.take() {
            let n = buf.len();
            buf.clear();
            return Some(Frame::Oversized { bytes: seen + n });
        }
        if buf.is_empty() {
            return None;
        }
        let line = buf.split().freeze();
        if line.len() > self.max_line_bytes {
            return Some(Frame::Oversized { bytes: line.len() });
        }
        Some(Frame::Line(line))
    }
}

/// Whether `partial`, a line without its delimiter yet, is already longer than `max`: the
/// limit does not count a `\r` before the delimiter, which may be the next byte.
pub(crate) fn over_limit(partial: &[u8], max: usize) -> bool {
    partial.len() > max.saturating_add(1)
        || (partial.len() == max.saturating_add(1) && partial.last() != Some(&b'\r'))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn frames(chunks: &[&[u8]], max: usize) -> Vec<Frame> {
        let mut f = LineFramer::new(b'\n', max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            while let Some(fr) = f.next_frame(&mut buf) {
                out.push(fr);
            }
        }
        out.extend(f.finish(&mut buf));
        out
    }

    #[test]
    fn splits_across_chunks_and_strips_cr() {
        let got = frames(&[b"ab", b"c\r\nde\n", b"f"], 100);
        assert_eq!(
            got,
            vec![
                Frame::Line(Bytes::from_static(b"abc")),
                Frame::Line(Bytes::from_static(b"de")),
                Frame::Line(Bytes::from_static(b"f")),
            ]
        );
    }

    #[test]
    fn skips_oversized_lines_and_keeps_neighbours() {
        let big = vec![b'x'; 50];
        let got = frames(&[b"ok1\n", &big, &big, b"\nok2\n"], 10);
        assert_eq!(
            got,
            vec![
                Frame::Line(Bytes::from_static(b"ok1")),
                Frame::Oversized { bytes: 100 },
                Frame::Line(Bytes::from_static(b"ok2")),
            ]
        );
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::codec::chunk::{lines, LineChunker, Piece};

    /// What the line chunker makes of `reads`, in the framer's terms.
    fn chunked(reads: &[&[u8]], max: usize) -> Vec<Frame> {
        let mut c = LineChunker::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut take = |chunk: super::super::chunk::Chunk| {
            if let Some(n) = chunk.oversized_before {
                out.push(Frame::Oversized { bytes: n });
            }
            for p in lines(&chunk.bytes, max) {
                out.push(match p {
                    Piece::Line(r) => Frame::Line(chunk.bytes.slice(r)),
                    Piece::Oversized { bytes } => Frame::Oversized { bytes },
                });
            }
        };
        for r in reads {
            buf.extend_from_slice(r);
            if let Some(chunk) = c.next_chunk(&mut buf, false) {
                take(chunk);
            }
        }
        if let Some(chunk) = c.next_chunk(&mut buf, true) {
            take(chunk);
        }
        out
    }

    /// A stream's lines do not depend on how its reads cut it, for the line framer and for
    /// the line chunker. The input's first byte is the longest line, its second the read size.
    #[test]
    fn fuzz_line_framing() {
        let text = "GET /a HTTP/1.1\r\nline two\n\nlonger line over the limit here\nlast";
        weir_testing::fuzz::Fuzz::new("line_framing")
            .seed([&[16u8, 3][..], text.as_bytes()].concat())
            .seed([&[1u8, 1][..], b"a\nbb\r\n\r\n"].concat())
            .seed([&[200u8, 7][..], "é\n\u{1F600}\r".as_bytes()].concat())
            .dict(["\n", "\r\n", "\r", "\n\n"])
            .run(|input| {
                let (max, step, data) = match input {
                    [m, s, rest @ ..] => (usize::from(*m).max(1), usize::from(*s).max(1), rest),
                    _ => return,
                };
                let reads: Vec<&[u8]> = data.chunks(step).collect();
                let whole = super::tests::frames(&[data], max);
                assert_eq!(
                    super::tests::frames(&reads, max),
                    whole,
                    "framer, reads of {step}"
                );
                let whole = chunked(&[data], max);
                assert_eq!(chunked(&reads, max), whole, "chunker, reads of {step}");
            });
    }
}
