//! Lines to events for the `file` source: multiline aggregation, then the codec, then the
//! `file`, `host`, `offset` and `timestamp` fields.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use weir_pipeline::codec::Decoder;
use weir_pipeline::event::{Event, EventMetadata, KeyString, LogEvent, ObjectMap, Value};
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
                source_id: Some(source_id),
                host,
                metrics,
                read_at: None,
            },
            multiline,
        }
    }
}

impl Emitter {
    fn emit(&self, file: &FileInfo, line: Bytes, start: u64, out: &mut Vec<Event>) {
        let first = out.len();
        let at = self.read_at.unwrap_or_else(chrono::Utc::now);
        if self.decoder == Decoder::Bytes {
            // The line is the message: the whole object is known, so it is built in one go
            // (keys in order) rather than a field at a time.
            let mut fields = Vec::with_capacity(5);
            fields.push((
                KeyString::from("file"),
                Value::Bytes(file.path_value.clone()),
            ));
            if let Some(h) = &self.host {
                fields.push((KeyString::from("host"), Value::Bytes(h.clone())));
            }
            fields.push((KeyString::from("message"), Value::Bytes(line)));
            fields.push((KeyString::from("offset"), Value::Integer(start as i64)));
            fields.push((KeyString::from("timestamp"), Value::Timestamp(at)));
            out.push(
                LogEvent::from_value(
                    Value::Object(ObjectMap::from_iter(fields)),
                    EventMetadata::at(self.source_id.clone(), at),
                )
                .into(),
            );
            return;
        }
        if let Err(e) = self.decoder.decode_at(line, &self.source_id, at, out) {
            out.truncate(first);
            self.metrics.error(
                "decode",
                1,
                &format_args!(
                    "{}: the line at offset {start} cannot be decoded: {e}",
                    file.path.display()
                ),
            );
            return;
        }
        // Decoded fields win: a JSON log's own `host` or `timestamp` is kept.
        for ev in &mut out[first..] {
            let Event::Log(log) = ev else {
                continue;
            };
            let ts = log.metadata.ingest_time.unwrap_or(at);
            let absent = |log: &LogEvent, k: &str| log.get_field(k).is_none();
            if absent(log, "file") {
                log.insert_field("file", Value::Bytes(file.path_value.clone()));
            }
            if let Some(h) = &self.host {
                if absent(log, "host") {
                    log.insert_field("host", Value::Bytes(h.clone()));
                }
            }
            if absent(log, "offset") {
                log.insert_field("offset", Value::Integer(start as i64));
            }
            if absent(log, "timestamp") {
                log.insert_field("timestamp", Value::Timestamp(ts));
            }
        }
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
