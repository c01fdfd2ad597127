//! Splitting a file's bytes into lines, in its character set.
//!
//! UTF-8 (and anything ASCII-compatible) goes through the pipeline's [`LineFramer`] (memchr,
//! lines point into the read buffer). UTF-16 is split on the delimiter's 16-bit code unit at
//! even offsets and each line is transcoded to UTF-8 (malformed units become U+FFFD). Either way
//! the caller learns how many file bytes each frame consumed from how much of the buffer was
//! taken, so offsets stay exact in the file's own encoding.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use weir_pipeline::codec::{Frame, LineFramer};

/// `charset`: the encoding of the files.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum CharsetConfig {
    /// UTF-8 unless the file starts with a UTF-16 byte order mark.
    #[default]
    Auto,
    #[serde(rename = "utf-8")]
    Utf8,
    #[serde(rename = "utf-16le")]
    Utf16Le,
    #[serde(rename = "utf-16be")]
    Utf16Be,
}

/// The encoding one file is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    Utf8,
    Utf16Le,
    Utf16Be,
}

impl CharsetConfig {
    /// The charset of a file whose first bytes are `head`, and the length of its byte order
    /// mark (skipped when reading from the start).
    pub fn detect(self, head: &[u8]) -> (Charset, u64) {
        let bom = if head.starts_with(&[0xEF, 0xBB, 0xBF]) {
            Some((Charset::Utf8, 3))
        } else if head.starts_with(&[0xFF, 0xFE]) {
            Some((Charset::Utf16Le, 2))
        } else if head.starts_with(&[0xFE, 0xFF]) {
            Some((Charset::Utf16Be, 2))
        } else {
            None
        };
        let forced = match self {
            CharsetConfig::Auto => None,
            CharsetConfig::Utf8 => Some(Charset::Utf8),
            CharsetConfig::Utf16Le => Some(Charset::Utf16Le),
            CharsetConfig::Utf16Be => Some(Charset::Utf16Be),
        };
        match (forced, bom) {
            (None, Some(b)) => b,
            (None, None) => (Charset::Utf8, 0),
            (Some(c), Some((bc, len))) if bc == c => (c, len),
            (Some(c), _) => (c, 0),
        }
    }
}

/// Splits lines in one charset.
#[derive(Debug)]
pub enum LineSplitter {
    Utf8(LineFramer),
    Utf16(Utf16Framer),
}

impl LineSplitter {
    pub fn new(charset: Charset, delimiter: u8, max_line_bytes: usize) -> Self {
        match charset {
            Charset::Utf8 => LineSplitter::Utf8(LineFramer::new(delimiter, max_line_bytes)),
            Charset::Utf16Le => {
                LineSplitter::Utf16(Utf16Framer::new(false, delimiter, max_line_bytes))
            }
            Charset::Utf16Be => {
                LineSplitter::Utf16(Utf16Framer::new(true, delimiter, max_line_bytes))
            }
        }
    }

    /// The next frame (a line in UTF-8, or an oversized line skipped), consuming `buf`.
    pub fn next_frame(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        match self {
            LineSplitter::Utf8(f) => f.next_frame(buf),
            LineSplitter::Utf16(f) => f.next_frame(buf),
        }
    }

    /// At the end of the input: the last line without a delimiter.
    pub fn finish(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        match self {
            LineSplitter::Utf8(f) => f.finish(buf),
            LineSplitter::Utf16(f) => f.finish(buf),
        }
    }
}

/// Line splitting for UTF-16 (`max_line_bytes` counts UTF-16 bytes).
#[derive(Debug)]
pub struct Utf16Framer {
    big_endian: bool,
    delimiter: u16,
    max_line_bytes: usize,
    discarding: Option<usize>,
    /// Even index where the delimiter search resumes.
    scanned: usize,
}

impl Utf16Framer {
    pub fn new(big_endian: bool, delimiter: u8, max_line_bytes: usize) -> Self {
        Self {
            big_endian,
            delimiter: u16::from(delimiter),
            max_line_bytes: max_line_bytes.max(2),
            discarding: None,
            scanned: 0,
        }
    }

    fn unit(&self, b: &[u8]) -> u16 {
        if self.big_endian {
            u16::from_be_bytes([b[0], b[1]])
        } else {
            u16::from_le_bytes([b[0], b[1]])
        }
    }

    fn find(&self, buf: &[u8]) -> Option<usize> {
        let mut i = self.scanned;
        while i + 1 < buf.len() {
            if self.unit(&buf[i..i + 2]) == self.delimiter {
                return Some(i);
            }
            i += 2;
        }
        None
    }

    /// Whether `partial`, a line without its delimiter yet, is already longer than the limit.
    /// The limit does not count a `\r` before the delimiter: a last whole unit that is `\r`
    /// is not counted (the delimiter may follow it, an odd last byte being its first half).
    fn over_limit(&self, partial: &[u8]) -> bool {
        let whole = partial.len() & !1;
        let cr_last = whole >= 2 && self.unit(&partial[whole - 2..whole]) == u16::from(b'\r');
        let content = if cr_last { whole - 2 } else { whole };
        content > self.max_line_bytes
    }

    fn decode(&self, raw: &[u8]) -> Bytes {
        let enc = if self.big_endian {
            encoding_rs::UTF_16BE
        } else {
            encoding_rs::UTF_16LE
        };
        let (text, _) = enc.decode_without_bom_handling(raw);
        Bytes::from(text.into_owned().into_bytes())
    }

    pub fn next_frame(&mut self, buf: &mut BytesMut) -> Option<Frame> {
        loop {
            match self.find(buf) {
                Some(end) => {
                    self.scanned = 0;
                    let mut raw = buf.split_to(end + 2);
                    raw.truncate(end);
                    if let Some(seen) = self.discarding.take() {
                        return Some(Frame::Oversized { bytes: seen + end });
                    }
                    if raw.len() >= 2 && self.unit(&raw[raw.len() - 2..]) == u16::from(b'\r') {
                        raw.truncate(raw.len() - 2);
                    }
                    if raw.len() > self.max_line_bytes {
                        // Counted with its `\r`, as when it is dropped piece by piece.
                        return Some(Frame::Oversized { bytes: end });
                    }
                    return Some(Frame::Line(self.decode(&raw)));
                }
                None => {
                    // Keep an odd trailing byte: it is half of the next code unit.
                    let whole = buf.len() & !1;
                    if let Some(seen) = self.discarding.as_mut() {
                        *seen += whole;
                        let _ = buf.split_to(whole);
                        self.scanned = 0;
                        return None;
                    }
                    if self.over_limit(buf) {
                        self.discarding = Some(whole);
                        let _ = buf.split_to(whole);
                        self.scanned = 0;
                        continue;
                    }
                    self.scanned = whole;
                    return None;
                }
            }
        }
    }

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
        let raw = buf.split();
        if raw.len() > self.max_line_bytes {
            return Some(Frame::Oversized { bytes: raw.len() });
        }
        Some(Frame::Line(self.decode(&raw)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn utf16(text: &str, be: bool) -> Vec<u8> {
        let mut out = Vec::new();
        for u in text.encode_utf16() {
            out.extend_from_slice(&if be { u.to_be_bytes() } else { u.to_le_bytes() });
        }
        out
    }

    fn split(charset: Charset, chunks: &[&[u8]], max: usize) -> Vec<(Frame, usize)> {
        let mut s = LineSplitter::new(charset, b'\n', max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for c in chunks {
            buf.extend_from_slice(c);
            loop {
                let before = buf.len();
                match s.next_frame(&mut buf) {
                    Some(f) => out.push((f, before - buf.len())),
                    None => break,
                }
            }
        }
        let before = buf.len();
        if let Some(f) = s.finish(&mut buf) {
            out.push((f, before - buf.len()));
        }
        out
    }

    #[test]
    fn bom_selects_the_charset() {
        assert_eq!(
            CharsetConfig::Auto.detect(&[0xFF, 0xFE, b'a', 0]),
            (Charset::Utf16Le, 2)
        );
        assert_eq!(
            CharsetConfig::Auto.detect(&[0xFE, 0xFF, 0, b'a']),
            (Charset::Utf16Be, 2)
        );
        assert_eq!(
            CharsetConfig::Auto.detect(&[0xEF, 0xBB, 0xBF, b'a']),
            (Charset::Utf8, 3)
        );
        assert_eq!(CharsetConfig::Auto.detect(b"plain"), (Charset::Utf8, 0));
        assert_eq!(
            CharsetConfig::Utf16Be.detect(b"ab"),
            (Charset::Utf16Be, 0),
            "forced, no BOM"
        );
    }

    #[test]
    fn utf16_lines_are_transcoded_with_exact_byte_counts() {
        for be in [false, true] {
            let charset = if be {
                Charset::Utf16Be
            } else {
                Charset::Utf16Le
            };
            let data = utf16("héllo wörld\r\n日本語\nlast", be);
            // Split mid code unit to exercise the odd-byte carry.
            let (a, b) = data.split_at(7);
            let got = split(charset, &[a, b], 1000);
            let lines: Vec<_> = got
                .iter()
                .map(|(f, _)| match f {
                    Frame::Line(l) => String::from_utf8(l.to_vec()).unwrap(),
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(lines, vec!["héllo wörld", "日本語", "last"]);
            let consumed: usize = got.iter().map(|(_, n)| n).sum();
            assert_eq!(consumed, data.len());
            assert_eq!(got[0].1, utf16("héllo wörld\r\n", be).len());
        }
    }

    #[test]
    fn utf16_oversized_lines_are_skipped_and_neighbours_kept() {
        let mut data = utf16("ok1\n", false);
        data.extend(utf16(&"x".repeat(100), false));
        data.extend(utf16("\nok2\n", false));
        let got = split(Charset::Utf16Le, &[&data[..50], &data[50..]], 40);
        let kinds: Vec<_> = got.into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            kinds,
            vec![
                Frame::Line(Bytes::from_static(b"ok1")),
                Frame::Oversized { bytes: 200 },
                Frame::Line(Bytes::from_static(b"ok2")),
            ]
        );
    }
}

#[cfg(test)]
mod fuzz {
    use super::tests::utf16;
    use super::*;

    /// The frames of `reads`, and the bytes left in the buffer at the end.
    fn frames(charset: Charset, reads: &[&[u8]], max: usize) -> (Vec<Frame>, usize) {
        let mut s = LineSplitter::new(charset, b'\n', max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for r in reads {
            buf.extend_from_slice(r);
            while let Some(f) = s.next_frame(&mut buf) {
                out.push(f);
            }
        }
        out.extend(s.finish(&mut buf));
        (out, buf.len())
    }

    /// Found by fuzzing: a UTF-16 line of exactly the limit before `\r\n`, read so that a
    /// read ends inside the delimiter, was dropped as oversized.
    #[test]
    fn a_line_at_the_limit_is_kept_when_a_read_ends_inside_its_delimiter() {
        let data = b"\x00f\x00i\x00r\x00s\x00e\x00\n\r\x00\n\x00s\x00ee\x00\n\r\x00\n\x00";
        let reads: Vec<&[u8]> = data.chunks(5).collect();
        let (pieces, _) = frames(Charset::Utf16Le, &reads, 6);
        assert_eq!(pieces, frames(Charset::Utf16Le, &[data], 6).0);
        assert!(matches!(pieces[1], Frame::Line(_)), "{pieces:?}");
    }

    /// UTF-8 and UTF-16 (both byte orders) split the same whatever the reads' sizes, and
    /// every byte is taken (offsets stay exact). The input's first byte is the longest line,
    /// its second the read size.
    #[test]
    fn fuzz_charsets() {
        let text = "first line\r\nsecond é \u{1F600}\n\nlast";
        weir_testing::fuzz::Fuzz::new("charsets")
            .seed([&[40u8, 3][..], &utf16(text, false)].concat())
            .seed([&[6u8, 5][..], &utf16(text, true)].concat())
            .seed([&[255u8, 1][..], text.as_bytes()].concat())
            .seed([&[8u8, 2][..], b"\n\0\0\n\xd8\x3d\n\0"].concat())
            .dict([
                &b"\n\0"[..],
                b"\0\n",
                b"\r\0\n\0",
                b"\x3d\xd8",
                b"\xd8\x3d",
                b"\xff\xfe",
            ])
            .run(|input| {
                let (max, step, data) = match input {
                    [m, s, rest @ ..] => (usize::from(*m).max(1), usize::from(*s).max(1), rest),
                    _ => return,
                };
                let reads: Vec<&[u8]> = data.chunks(step).collect();
                for charset in [Charset::Utf8, Charset::Utf16Le, Charset::Utf16Be] {
                    let (whole, left) = frames(charset, &[data], max);
                    assert_eq!(left, 0, "{charset:?}: bytes left over");
                    let (pieces, left) = frames(charset, &reads, max);
                    assert_eq!(left, 0, "{charset:?}: bytes left over, reads of {step}");
                    assert_eq!(pieces, whole, "{charset:?}, reads of {step}");
                }
            });
    }
}
