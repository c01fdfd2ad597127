//! Lines to events for the `file` source: multiline aggregation, then the codec, then the
//! `file`, `host`, `offset` and `timestamp` fields.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use weir_pipeline::codec::{Decoder, JsonDefaults, JsonLaziness};
use weir_pipeline::event::{Event, EventMetadata, KeyString, LogEvent, ObjectMap, TypedLog, Value};
use weir_pipeline::metrics::ComponentMetrics;

use super::multiline::{Multiline, Pending};
use super::tail::{FileInfo, LineHandler, ReadTime};

/// Builds events from lines.
pub struct FileLines {
    emitter: Emitter,
    multiline: Option<Multiline>,
}

struct Emitter {
    decoder: Decoder,
    /// Whether `json` object lines are parsed at once or when read.
    laziness: JsonLaziness,
    source_id: Option<Arc<str>>,
    host: Option<Bytes>,
    metrics: Arc<ComponentMetrics>,
    /// The time of the read the lines being handled came from (none: a flush or a timeout).
    read_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl FileLines {
    pub fn new(
        decoder: Decoder,
        source_id: Arc<str>,
        host: Option<Bytes>,
        multiline: Option<Multiline>,
        metrics: Arc<ComponentMetrics>,
    ) -> Self {
        Self {
            emitter: Emitter {
                decoder,
                laziness: JsonLaziness::new(),
                source_id: Some(source_id),
                host,
                metrics,
                read_at: None,
            },
            multiline,
        }
    }
}

/// A line read with the `bytes` codec: its fields in typed form, so that a sink that only
/// counts, or writes JSON ([`TypedLog::write_json`]), never builds the tree of five values.
#[derive(Debug)]
struct FileLine {
    file: Bytes,
    host: Option<Bytes>,
    message: Bytes,
    offset: u64,
    timestamp: DateTime<Utc>,
}

impl FileLine {
    /// The fields in key order, as the tree holds them.
    fn fields(&self) -> impl Iterator<Item = (&'static str, Value)> + '_ {
        [
            ("file", Some(Value::Bytes(self.file.clone()))),
            ("host", self.host.clone().map(Value::Bytes)),
            ("message", Some(Value::Bytes(self.message.clone()))),
            ("offset", Some(Value::Integer(self.offset as i64))),
            ("timestamp", Some(Value::Timestamp(self.timestamp))),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?)))
    }
}

impl TypedLog for FileLine {
    fn to_value(&self) -> Value {
        Value::Object(
            self.fields()
                .map(|(k, v)| (KeyString::from(k), v))
                .collect::<ObjectMap>(),
        )
    }

    fn write_json(&self, out: &mut Vec<u8>) -> Option<serde_json::Result<()>> {
        let mut write = || {
            let mut sep = b'{';
            for (k, v) in self.fields() {
                out.push(sep);
                sep = b',';
                serde_json::to_writer(&mut *out, k)?;
                out.push(b':');
                serde_json::to_writer(&mut *out, &v)?;
            }
            out.push(b'}');
            Ok(())
        };
        Some(write())
    }

    fn estimated_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.file.len()
            + self.host.as_ref().map_or(0, Bytes::len)
            + self.message.len()
    }
}

impl Emitter {
    fn emit(&self, file: &FileInfo, line: Bytes, start: u64, out: &mut Vec<Event>) {
        let first = out.len();
        let at = self.read_at.unwrap_or_else(chrono::Utc::now);
        if self.decoder == Decoder::Bytes {
            // The line is the message: every field is known, so the event holds them typed
            // and the tree is built only if something reads it.
            let line = FileLine {
                file: file.path_value.clone(),
                host: self.host.clone(),
                message: line,
                offset: start,
                timestamp: at,
            };
            out.push(
                LogEvent::from_typed(line, EventMetadata::at(self.source_id.clone(), at)).into(),
            );
            return;
        }
        // Decoded fields win: a JSON log's own `host` or `timestamp` is kept. A JSON object
        // line stays unparsed until something reads its fields (`JsonLog`).
        let defaults = FileDefaults {
            file: file.path_value.clone(),
            host: self.host.clone(),
            offset: start,
            timestamp: at,
        };
        if let Err(e) =
            self.decoder
                .decode_lazy(&self.laziness, line, &self.source_id, at, defaults, out)
        {
            out.truncate(first);
            self.metrics.error(
                "decode",
                1,
                &format_args!(
                    "{}: the line at offset {start} cannot be decoded: {e}",
                    file.path.display()
                ),
            );
        }
    }
}

/// The fields the source adds to a decoded line that does not have them.
#[derive(Debug)]
struct FileDefaults {
    file: Bytes,
    host: Option<Bytes>,
    offset: u64,
    timestamp: DateTime<Utc>,
}

impl JsonDefaults for FileDefaults {
    fn push(&self, fields: &mut Vec<(KeyString, Value)>) {
        fields.push(("file".into(), Value::Bytes(self.file.clone())));
        if let Some(h) = &self.host {
            fields.push(("host".into(), Value::Bytes(h.clone())));
        }
        fields.push(("offset".into(), Value::Integer(self.offset as i64)));
        fields.push(("timestamp".into(), Value::Timestamp(self.timestamp)));
    }
}

impl LineHandler for FileLines {
    type State = Pending;

    fn line(
        &mut self,
        st: &mut Pending,
        file: &FileInfo,
        line: Bytes,
        start: u64,
        at: ReadTime,
        out: &mut Vec<Event>,
    ) {
        self.emitter.read_at = Some(at.wall);
        let em = &self.emitter;
        match &self.multiline {
            None => em.emit(file, line, start, out),
            Some(m) => m.push(st, line, start, at.mono, &mut |l, s| {
                em.emit(file, l, s, out)
            }),
        }
    }

    fn tick(&mut self, st: &mut Pending, file: &FileInfo, now: Instant, out: &mut Vec<Event>) {
        self.emitter.read_at = None;
        let em = &self.emitter;
        if let Some(m) = &self.multiline {
            m.expire(st, now, &mut |l, s| em.emit(file, l, s, out));
        }
    }

    fn flush(&mut self, st: &mut Pending, file: &FileInfo, out: &mut Vec<Event>) {
        self.emitter.read_at = None;
        let em = &self.emitter;
        if let Some(m) = &self.multiline {
            m.flush(st, &mut |l, s| em.emit(file, l, s, out));
        }
    }

    fn held_from(st: &Pending) -> Option<u64> {
        st.held_from()
    }

    fn discard(st: &mut Pending) {
        st.discard();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(host: Option<&str>, message: &[u8]) -> FileLine {
        FileLine {
            file: Bytes::from_static(b"/var/log/app \"1\".log"),
            host: host.map(|h| Bytes::copy_from_slice(h.as_bytes())),
            message: Bytes::copy_from_slice(message),
            offset: 4096,
            timestamp: DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap(),
        }
    }

    #[test]
    fn the_typed_line_is_the_tree_the_source_documents() {
        let v = line(Some("node-1"), b"hello").to_value();
        let m = v.as_object().unwrap();
        let keys: Vec<&str> = m.keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, ["file", "host", "message", "offset", "timestamp"]);
        assert_eq!(m["message"], Value::from("hello"));
        assert_eq!(m["offset"], Value::Integer(4096));
        assert!(matches!(m["timestamp"], Value::Timestamp(_)));
        let no_host = line(None, b"x").to_value();
        assert!(no_host.as_object().unwrap().get("host").is_none());
    }

    #[test]
    fn its_json_is_byte_for_byte_the_tree_serialised() {
        for (host, msg) in [
            (Some("node-1"), &b"plain"[..]),
            (
                None,
                &b"quote \" backslash \\ tab \t newline \n ctrl \x01"[..],
            ),
            (Some("h"), &b"invalid utf-8 \xff\xfe end"[..]),
            (Some("h"), &b"{\"json\": [1, 2]}"[..]),
            (None, &b""[..]),
            (
                Some("unicode \u{e9}\u{1f600}"),
                "caf\u{e9} \u{1f600}".as_bytes(),
            ),
        ] {
            let l = line(host, msg);
            let mut direct = Vec::new();
            l.write_json(&mut direct).unwrap().unwrap();
            let tree = serde_json::to_vec(&l.to_value()).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&direct),
                String::from_utf8_lossy(&tree)
            );
            assert_eq!(direct, tree);
        }
    }

    #[test]
    fn an_event_encodes_the_same_before_and_after_its_tree_is_built() {
        let log = LogEvent::from_typed(line(Some("n"), b"m \xff"), EventMetadata::default());
        let mut direct = Vec::new();
        log.write_json(&mut direct).unwrap();
        // Reading a field builds the tree; from then on the tree is serialised.
        assert_eq!(log.get_field("offset"), Some(&Value::Integer(4096)));
        let mut from_tree = Vec::new();
        log.write_json(&mut from_tree).unwrap();
        assert_eq!(direct, from_tree);
    }
}
