//! Container log lines as the kubelet's runtime writes them, in either format, detected per
//! file from its first line:
//!
//! - CRI (containerd, CRI-O): `<RFC 3339 timestamp> <stdout|stderr> <tags> <message>`, where
//!   the tags are `F` (a full line, or the last piece of one) or `P` (a partial piece: the
//!   runtime split a long line, the next pieces follow);
//! - Docker `json-file`: `{"log":"<message>\n","stream":"stdout","time":"<RFC 3339>"}`, where a
//!   `log` without its final newline is a partial piece.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;

/// The two on-disk formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Cri,
    Docker,
}

impl Format {
    /// The format of a file whose first line is `line`: Docker lines are JSON objects, CRI
    /// lines start with a timestamp.
    pub fn detect(line: &[u8]) -> Format {
        match line.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => Format::Docker,
            _ => Format::Cri,
        }
    }
}

/// Which output of the container a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn parse(s: &[u8]) -> Option<Stream> {
        match s {
            b"stdout" => Some(Stream::Stdout),
            b"stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// One parsed line: a piece of a container's output.
#[derive(Debug, Clone, PartialEq)]
pub struct Piece {
    pub timestamp: DateTime<Utc>,
    pub stream: Stream,
    /// More pieces of the same line follow.
    pub partial: bool,
    /// The message (without a trailing newline).
    pub message: Bytes,
}

/// Why a line could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("not a CRI log line (`<timestamp> <stdout|stderr> <F|P> <message>`): {0}")]
    Cri(&'static str),
    #[error("not a Docker json-file log line: {0}")]
    Docker(String),
}

fn timestamp(s: &[u8]) -> Option<DateTime<Utc>> {
    let s = std::str::from_utf8(s).ok()?;
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Parses a CRI line (zero-copy: the message is a slice of `line`).
pub fn parse_cri(line: &Bytes) -> Result<Piece, ParseError> {
    let b = &line[..];
    let sp1 = memchr::memchr(b' ', b).ok_or(ParseError::Cri("no space after the timestamp"))?;
    let ts = timestamp(&b[..sp1]).ok_or(ParseError::Cri("the timestamp is not RFC 3339"))?;
    let rest = &b[sp1 + 1..];
    let sp2 = memchr::memchr(b' ', rest).ok_or(ParseError::Cri("no space after the stream"))?;
    let stream =
        Stream::parse(&rest[..sp2]).ok_or(ParseError::Cri("the stream is not stdout or stderr"))?;
    let tags_start = sp1 + 1 + sp2 + 1;
    let after = &b[tags_start..];
    // The message may be empty, with or without the space before it.
    let (tags, msg_start) = match memchr::memchr(b' ', after) {
        Some(i) => (&after[..i], tags_start + i + 1),
        None => (after, b.len()),
    };
    // Tags are `:`-separated; the first says full or partial.
    let partial = match tags.split(|c| *c == b':').next() {
        Some(b"P") => true,
        Some(b"F") => false,
        _ => return Err(ParseError::Cri("the tag is not F or P")),
    };
    Ok(Piece {
        timestamp: ts,
        stream,
        partial,
        message: line.slice(msg_start..),
    })
}

#[derive(Deserialize)]
struct DockerLine {
    log: String,
    #[serde(default)]
    stream: Option<String>,
    #[serde(default)]
    time: Option<String>,
}

/// Parses a Docker json-file line.
pub fn parse_docker(line: &[u8]) -> Result<Piece, ParseError> {
    let d: DockerLine =
        serde_json::from_slice(line).map_err(|e| ParseError::Docker(e.to_string()))?;
    let stream = match d.stream.as_deref() {
        None => Stream::Stdout,
        Some(s) => Stream::parse(s.as_bytes())
            .ok_or_else(|| ParseError::Docker(format!("unknown stream {s:?}")))?,
    };
    let ts = match d.time.as_deref() {
        Some(t) => timestamp(t.as_bytes())
            .ok_or_else(|| ParseError::Docker(format!("time {t:?} is not RFC 3339")))?,
        None => Utc::now(),
    };
    let mut log = d.log;
    let partial = !log.ends_with('\n');
    if !partial {
        log.pop();
        if log.ends_with('\r') {
            log.pop();
        }
    }
    Ok(Piece {
        timestamp: ts,
        stream,
        partial,
        message: Bytes::from(log),
    })
}

/// Parses `line` in `format`.
pub fn parse(format: Format, line: &Bytes) -> Result<Piece, ParseError> {
    match format {
        Format::Cri => parse_cri(line),
        Format::Docker => parse_docker(line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_full_partial_empty_and_offsets() {
        let l = Bytes::from_static(b"2024-05-01T10:00:00.123456789Z stdout F hello world");
        let p = parse_cri(&l).unwrap();
        assert_eq!(p.stream, Stream::Stdout);
        assert!(!p.partial);
        assert_eq!(&p.message[..], b"hello world");
        assert_eq!(
            p.timestamp
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
            "2024-05-01T10:00:00.123456789Z"
        );
        let l = Bytes::from_static(b"2024-05-01T12:00:00.5+02:00 stderr P part");
        let p = parse_cri(&l).unwrap();
        assert!(p.partial);
        assert_eq!(p.stream, Stream::Stderr);
        assert_eq!(
            p.timestamp
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "2024-05-01T10:00:00.500Z"
        );
        for empty in [
            &b"2024-05-01T10:00:00Z stdout F"[..],
            b"2024-05-01T10:00:00Z stdout F ",
        ] {
            let p = parse_cri(&Bytes::copy_from_slice(empty)).unwrap();
            assert_eq!(&p.message[..], b"");
        }
        // A message keeps its own spaces.
        let p = parse_cri(&Bytes::from_static(b"2024-05-01T10:00:00Z stdout F  a  b ")).unwrap();
        assert_eq!(&p.message[..], b" a  b ");
    }

    #[test]
    fn cri_errors_say_what_is_wrong() {
        for (l, why) in [
            (&b"hello"[..], "no space after the timestamp"),
            (b"yesterday stdout F x", "the timestamp is not RFC 3339"),
            (
                b"2024-05-01T10:00:00Z stdin F x",
                "the stream is not stdout or stderr",
            ),
            (b"2024-05-01T10:00:00Z stdout X x", "the tag is not F or P"),
        ] {
            assert_eq!(
                parse_cri(&Bytes::copy_from_slice(l)),
                Err(ParseError::Cri(why))
            );
        }
    }

    #[test]
    fn docker_lines_and_partials() {
        let p = parse_docker(
            br#"{"log":"{\"a\":1}\n","stream":"stderr","time":"2024-05-01T10:00:00.000000001Z"}"#,
        )
        .unwrap();
        assert_eq!(&p.message[..], br#"{"a":1}"#);
        assert_eq!(p.stream, Stream::Stderr);
        assert!(!p.partial);
        let p = parse_docker(br#"{"log":"abc","stream":"stdout","time":"2024-05-01T10:00:00Z"}"#)
            .unwrap();
        assert!(p.partial);
        assert!(parse_docker(b"{\"stream\":\"stdout\"}").is_err());
        assert_eq!(Format::detect(b"{\"log\":1}"), Format::Docker);
        assert_eq!(
            Format::detect(b"2024-05-01T10:00:00Z stdout F {"),
            Format::Cri
        );
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;

    /// Container runtime lines (CRI and Docker's json-file), mutated: a bad line is an error,
    /// never a panic, and a CRI message is a slice of its line.
    #[test]
    fn fuzz_container_lines() {
        weir_testing::fuzz::Fuzz::new("container_lines")
            .seed("2024-05-01T10:00:00.123456789Z stdout F hello world")
            .seed("2024-05-01T12:00:00.5+02:00 stderr P part")
            .seed("2024-05-01T10:00:00Z stdout F")
            .seed(r#"{"log":"hello \u00e9\n","stream":"stderr","time":"2024-05-01T10:00:00.123456789Z"}"#)
            .seed(r#"{"log":"partial","stream":"stdout","time":"2024-05-01T10:00:00Z"}"#)
            .dict([" ", "stdout", "stderr", " F ", " P ", "Z", "+02:00", "T", "\\n", "\"log\""])
            .run(|line| {
                let bytes = Bytes::copy_from_slice(line);
                if let Ok(p) = parse(Format::Cri, &bytes) {
                    assert!(p.message.len() <= line.len());
                }
                let _ = parse(Format::Docker, &bytes);
            });
    }
}
