//! Container log lines to events: the runtime's format is taken off (CRI or Docker, per
//! file), partial pieces are joined, the message goes through the codec, and the `stream`,
//! `timestamp`, `file` and `kubernetes.*` fields are added.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use chrono::{DateTime, Utc};
use weir_pipeline::codec::Decoder;
use weir_pipeline::event::{Event, LogEvent, ObjectMap, Value};
use weir_pipeline::metrics::ComponentMetrics;

use super::namespaces::NamespaceCache;
use super::parser::{self, Format, Piece, Stream};
use super::pods::{PathMeta, PodCache};
use crate::file::tail::{FileInfo, LineHandler, ReadTime};

/// Builds events from container log lines.
pub struct PodLines {
    decoder: Decoder,
    source_id: Option<Arc<str>>,
    metrics: Arc<ComponentMetrics>,
    pods: Option<Arc<PodCache>>,
    namespaces: Option<Arc<NamespaceCache>>,
    max_line_bytes: usize,
    /// The time of the read the lines being handled came from (none: a flush).
    read_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Per file: its format, its metadata, a line being joined from partial pieces.
#[derive(Default)]
pub struct PodFile {
    format: Option<Format>,
    /// `None` inside: the path does not have the pod log shape.
    path: Option<Option<PathMeta>>,
    /// The `kubernetes` object, the caches' generation it was built at, and whether the pod
    /// is excluded.
    k8s: Option<(u64, Value, bool)>,
    partial: Option<Partial>,
}

/// A whole message, ready to be an event.
struct Message {
    start: u64,
    timestamp: DateTime<Utc>,
    /// `None` for a line that could not be parsed.
    stream: Option<Stream>,
    message: Bytes,
}

struct Partial {
    start: u64,
    timestamp: DateTime<Utc>,
    stream: Stream,
    message: BytesMut,
    /// Over `max_line_bytes`: the pieces are dropped until the last one, then counted.
    oversized: bool,
    bytes: usize,
}

impl PodLines {
    pub fn new(
        decoder: Decoder,
        source_id: Arc<str>,
        metrics: Arc<ComponentMetrics>,
        pods: Option<Arc<PodCache>>,
        namespaces: Option<Arc<NamespaceCache>>,
        max_line_bytes: usize,
    ) -> Self {
        Self {
            decoder,
            source_id: Some(source_id),
            metrics,
            pods,
            namespaces,
            max_line_bytes,
            read_at: None,
        }
    }

    /// The `kubernetes` object for `st`'s file, rebuilt when a cache changed (not per line).
    fn kubernetes<'a>(&self, st: &'a mut PodFile, file: &FileInfo) -> Option<(&'a Value, bool)> {
        let path = st
            .path
            .get_or_insert_with(|| PathMeta::from_path(&file.path));
        let path = path.as_ref()?;
        // Both generations only grow, so their sum changes whenever either does.
        let gen = self.pods.as_ref().map_or(0, |p| p.generation())
            + self.namespaces.as_ref().map_or(0, |n| n.generation());
        if st.k8s.as_ref().is_none_or(|k| k.0 != gen) {
            let mut obj = ObjectMap::new();
            let text = |s: &str| Value::Bytes(Bytes::from(s.to_string()));
            obj.insert("pod_namespace".into(), text(&path.namespace));
            obj.insert("pod_name".into(), text(&path.pod_name));
            obj.insert("pod_uid".into(), text(&path.pod_uid));
            obj.insert("container_name".into(), text(&path.container_name));
            let mut excluded = false;
            if let Some(meta) = self.pods.as_ref().and_then(|p| p.get(&path.pod_uid)) {
                for (k, v) in &meta.fields {
                    obj.insert(k.clone(), v.clone());
                }
                if let Some(img) = meta.images.get(&path.container_name) {
                    obj.insert("container_image".into(), text(img));
                }
                excluded = meta.excluded;
            }
            if let Some(ns) = self
                .namespaces
                .as_ref()
                .and_then(|n| n.get(&path.namespace))
            {
                obj.insert("namespace_labels".into(), ns.labels.clone());
            }
            st.k8s = Some((gen, Value::Object(obj), excluded));
        }
        st.k8s.as_ref().map(|(_, v, x)| (v, *x))
    }

    fn emit(&self, st: &mut PodFile, file: &FileInfo, msg: Message, out: &mut Vec<Event>) {
        let Message {
            start,
            timestamp,
            stream,
            message,
        } = msg;
        let k8s = self.kubernetes(st, file);
        if k8s.is_some_and(|(_, excluded)| excluded) {
            self.metrics
                .add_counter("kubernetes_logs_excluded_events_total", None, 1);
            return;
        }
        let first = out.len();
        let at = self.read_at.unwrap_or_else(chrono::Utc::now);
        if let Err(e) = self
            .decoder
            .decode_at(message.clone(), &self.source_id, at, out)
        {
            out.truncate(first);
            self.metrics.error(
                "decode",
                1,
                &format_args!(
                    "{}: the message at offset {start} cannot be decoded ({e}); it is passed on as `message`",
                    file.path.display()
                ),
            );
            out.push(LogEvent::from_message(message, self.source_id.clone()).into());
        }
        let only_message = self.decoder == Decoder::Bytes;
        for ev in &mut out[first..] {
            let Event::Log(log) = ev else {
                continue;
            };
            let absent = |log: &LogEvent, k: &str| only_message || log.get_field(k).is_none();
            if absent(log, "timestamp") {
                log.insert_field("timestamp", Value::Timestamp(timestamp));
            }
            if let Some(s) = stream {
                if absent(log, "stream") {
                    log.insert_field(
                        "stream",
                        Value::Bytes(Bytes::from_static(s.as_str().as_bytes())),
                    );
                }
            }
            if absent(log, "file") {
                log.insert_field("file", Value::Bytes(file.path_value.clone()));
            }
            if let Some((k, _)) = &k8s {
                if absent(log, "kubernetes") {
                    log.insert_field("kubernetes", (*k).clone());
                }
            }
        }
    }

    fn emit_partial(&self, st: &mut PodFile, file: &FileInfo, p: Partial, out: &mut Vec<Event>) {
        if p.oversized {
            self.metrics.error(
                "oversized",
                1,
                &format_args!(
                    "{}: the line joined from partial pieces at offset {} is {} bytes, over max_line_bytes ({}); skipped",
                    file.path.display(),
                    p.start,
                    p.bytes,
                    self.max_line_bytes
                ),
            );
            return;
        }
        let msg = Message {
            start: p.start,
            timestamp: p.timestamp,
            stream: Some(p.stream),
            message: p.message.freeze(),
        };
        self.emit(st, file, msg, out);
    }
}

impl LineHandler for PodLines {
    type State = PodFile;

    fn line(
        &mut self,
        st: &mut PodFile,
        file: &FileInfo,
        line: Bytes,
        start: u64,
        at: ReadTime,
        out: &mut Vec<Event>,
    ) {
        self.read_at = Some(at.wall);
        let format = *st.format.get_or_insert_with(|| Format::detect(&line));
        let piece = match parser::parse(format, &line) {
            Ok(p) => p,
            Err(e) => {
                self.metrics.error(
                    "parse",
                    1,
                    &format_args!(
                        "{}: the line at offset {start}: {e}; it is passed on whole as `message`",
                        file.path.display()
                    ),
                );
                if let Some(p) = st.partial.take() {
                    self.emit_partial(st, file, p, out);
                }
                let msg = Message {
                    start,
                    timestamp: Utc::now(),
                    stream: None,
                    message: line,
                };
                self.emit(st, file, msg, out);
                return;
            }
        };
        let Piece {
            timestamp,
            stream,
            partial,
            message,
        } = piece;
        // A piece of the other stream does not continue this one's line.
        if st.partial.as_ref().is_some_and(|p| p.stream != stream) {
            if let Some(p) = st.partial.take() {
                self.emit_partial(st, file, p, out);
            }
        }
        if !partial && st.partial.is_none() {
            let msg = Message {
                start,
                timestamp,
                stream: Some(stream),
                message,
            };
            self.emit(st, file, msg, out);
            return;
        }
        let max = self.max_line_bytes;
        let p = st.partial.get_or_insert_with(|| Partial {
            start,
            timestamp,
            stream,
            message: BytesMut::new(),
            oversized: false,
            bytes: 0,
        });
        p.bytes += message.len();
        if p.bytes > max {
            p.oversized = true;
            p.message = BytesMut::new();
        } else {
            p.message.extend_from_slice(&message);
        }
        if !partial {
            if let Some(p) = st.partial.take() {
                self.emit_partial(st, file, p, out);
            }
        }
    }

    fn tick(&mut self, _st: &mut PodFile, _file: &FileInfo, _now: Instant, _out: &mut Vec<Event>) {
        // A partial line waits for its last piece: the runtime always writes it.
    }

    fn flush(&mut self, st: &mut PodFile, file: &FileInfo, out: &mut Vec<Event>) {
        self.read_at = None;
        if let Some(p) = st.partial.take() {
            self.emit_partial(st, file, p, out);
        }
    }

    fn held_from(st: &PodFile) -> Option<u64> {
        st.partial.as_ref().map(|p| p.start)
    }

    fn discard(st: &mut PodFile) {
        st.partial = None;
    }
}
