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
                        return Some(Frame::Oversized { bytes: line.len() });
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
                    if buf.len() > self.max_line_bytes {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]], max: usize) -> Vec<Frame> {
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
