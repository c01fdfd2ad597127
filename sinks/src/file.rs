//! `file`: events to files whose path is a template of fields and time.
//!
//! Writes are plain `write(2)` calls on files opened for append, done in the sink task (they
//! land in the page cache and return quickly). A batch is acknowledged once every one of its
//! files has been written (and fsynced when `fsync = true`). A write that fails (disk full, a
//! directory that is not writable yet) is retried with backoff, holding the batch: the buffer
//! fills and backpressure slows the sources; nothing is dropped.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use weir_pipeline::codec::EncodingConfig;
use weir_pipeline::component::{Sink, SinkConfig, SinkContext, SinkInput};
use weir_pipeline::config::{Count, Secs};
use weir_pipeline::finalization::EventStatus;
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::retry::Backoff;
use weir_pipeline::template::Template;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

/// `type = "file"`: one encoded event per line, appended to the file its path template names.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The path template: `{{ field.path }}` parts, and strftime parts (`%Y-%m-%d`) filled from the
    /// event's `timestamp` (or its ingest time). For example, `/var/log/weir/{{ service
    /// }}-%Y-%m-%d.log`. A relative path is relative to the working directory, not to `data_dir`.
    /// Events missing a field of the template are rejected and counted. The fields cannot
    /// take the path out of the directory before the template's first field or strftime part
    /// (`/var/log/weir/` above): a rendered path that leaves it (`..` in a field's value), that is absolute when
    /// that directory is relative, or that holds a NUL byte is rejected and counted
    /// (`path_outside`). Required.
    pub path: String,
    /// How each event is written: `encoding.codec` is `json`, `text`, `logfmt` or `folded`. See
    /// [codecs](codecs.md#encoding). Default: `{ codec = "json" }` (JSON lines).
    #[serde(default)]
    pub encoding: EncodingConfig,
    /// Rotate a file when writing to it would take it past this many bytes: it is renamed to
    /// `<path>.<UTC time>` (for example `app.log.20261121T120000.123456789Z`), and a new file is
    /// started. Must be at least 1 (checked at `weir run`). Default: none (no rotation).
    #[serde(default)]
    pub max_bytes: Option<Count>,
    /// Close files not written for this many seconds. Default: 30.
    #[serde(default = "default_idle")]
    pub idle_timeout_secs: Secs,
    /// Keep at most this many files open: opening one more closes the one written least
    /// recently. When the process runs out of file descriptors anyway (`EMFILE`, `ENFILE`),
    /// the sink closes its least recently written file and opens again, instead of waiting for
    /// idle files to time out. Default: 256.
    #[serde(default = "default_max_open_files")]
    pub max_open_files: Count,
    /// fsync each file written before acknowledging a batch. The data then survives a machine
    /// crash, not only a process crash, but writing is slower. Default: false.
    #[serde(default)]
    pub fsync: bool,
}

fn default_idle() -> Secs {
    Secs::from_secs(30)
}

fn default_max_open_files() -> Count {
    Count::of(256)
}

#[async_trait]
impl SinkConfig for FileSinkConfig {
    async fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BoxError> {
        let template = Template::parse(&self.path).map_err(|e| format!("`path`: {e}"))?;
        Ok(Box::new(FileSink {
            cfg: self.clone(),
            root: field_root(&self.path),
            template,
            files: HashMap::new(),
            metrics: cx.metrics,
        }))
    }

    fn input(&self) -> DataType {
        DataType::ALL
    }
}

/// Whether `e` says the process (`EMFILE`) or the system (`ENFILE`) has no file descriptor
/// left.
fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

struct OpenFile {
    file: File,
    size: u64,
    last_write: Instant,
}

struct FileSink {
    cfg: FileSinkConfig,
    template: Template,
    /// The directory the template's fields cannot leave (`None`: the template has no field).
    root: Option<PathBuf>,
    files: HashMap<PathBuf, OpenFile>,
    metrics: std::sync::Arc<ComponentMetrics>,
}

impl FileSink {
    /// Appends `data[*done..]` to `path`, advancing `*done` as bytes land, so a retry after a
    /// partial write continues where it stopped instead of writing a part twice.
    fn write(&mut self, path: &Path, data: &[u8], done: &mut usize) -> std::io::Result<()> {
        if let (Some(max), Some(f)) = (self.cfg.max_bytes, self.files.get(path)) {
            if *done == 0 && f.size > 0 && f.size + data.len() as u64 > max.get() as u64 {
                self.files.remove(path);
                let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%.9fZ");
                let mut rotated = path.as_os_str().to_owned();
                rotated.push(format!(".{stamp}"));
                std::fs::rename(path, &rotated)?;
            }
        }
        if !self.files.contains_key(path) {
            if let Some(dir) = path.parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir)?;
                }
            }
            while self.files.len() >= self.cfg.max_open_files.get() {
                self.close_least_recent();
            }
            let file = loop {
                match OpenOptions::new().create(true).append(true).open(path) {
                    Ok(f) => break f,
                    // Out of descriptors: give one of ours back and try again.
                    Err(e) if is_out_of_descriptors(&e) && !self.files.is_empty() => {
                        self.close_least_recent();
                        self.metrics.error(
                            "too_many_open_files",
                            1,
                            &format_args!(
                                "cannot open {}: {e}; closed the least recently written file ({} left open)",
                                path.display(),
                                self.files.len()
                            ),
                        );
                    }
                    Err(e) => return Err(e),
                }
            };
            let size = file.metadata()?.len();
            self.files.insert(
                path.to_path_buf(),
                OpenFile {
                    file,
                    size,
                    last_write: Instant::now(),
                },
            );
        }
        let Some(f) = self.files.get_mut(path) else {
            return Err(std::io::Error::other("file vanished from the open set"));
        };
        while *done < data.len() {
            match f.file.write(&data[*done..]) {
                Ok(0) => {
                    self.files.remove(path);
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        "the file accepted no bytes",
                    ));
                }
                Ok(n) => {
                    *done += n;
                    f.size += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Drop the handle: the next attempt reopens (the file may have been removed).
                    self.files.remove(path);
                    return Err(e);
                }
            }
        }
        if self.cfg.fsync {
            f.file.sync_data()?;
        }
        f.last_write = Instant::now();
        Ok(())
    }

    /// Closes the file written least recently.
    fn close_least_recent(&mut self) {
        let oldest = self
            .files
            .iter()
            .min_by_key(|(_, f)| f.last_write)
            .map(|(p, _)| p.clone());
        if let Some(p) = oldest {
            if let Some(mut f) = self.files.remove(&p) {
                let _ = f.file.flush();
            }
        }
    }

    fn close_idle(&mut self) {
        let idle = self.cfg.idle_timeout_secs.duration();
        self.files.retain(|_, f| f.last_write.elapsed() < idle);
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn run(mut self: Box<Self>, mut input: SinkInput) -> Result<(), BoxError> {
        let codec = self.cfg.encoding.codec;
        let dynamic = self.template.is_dynamic();
        let static_path = PathBuf::from(self.template.as_str());
        // Per-path output of the current batch, reused across batches.
        let mut pending: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        let mut path_buf = String::new();
        let mut last_idle_check = Instant::now();
        while let Some(mut batch) = input.next().await {
            for (_, b) in pending.iter_mut() {
                b.clear();
            }
            let mut sent = 0u64;
            for e in batch.iter() {
                let slot = if dynamic {
                    if let Err(err) = self.template.render_into(e, &mut path_buf) {
                        e.metadata().update_status(EventStatus::Rejected);
                        self.metrics.error("template", 1, &err);
                        continue;
                    }
                    match pending
                        .iter()
                        .position(|(p, _)| p.as_os_str() == path_buf.as_str())
                    {
                        Some(i) => i,
                        None => {
                            // Checked once per path and batch, not per event.
                            if let Some(root) = &self.root {
                                if let Err(why) = inside(root, &path_buf) {
                                    e.metadata().update_status(EventStatus::Rejected);
                                    self.metrics.error(
                                        "path_outside",
                                        1,
                                        &format_args!(
                                            "the path {path_buf:?} made from the event's fields {why}; event rejected"
                                        ),
                                    );
                                    continue;
                                }
                            }
                            pending.push((PathBuf::from(&path_buf), Vec::new()));
                            pending.len() - 1
                        }
                    }
                } else {
                    if pending.is_empty() {
                        pending.push((static_path.clone(), Vec::new()));
                    }
                    0
                };
                let buf = &mut pending[slot].1;
                let mark = buf.len();
                match codec.encode(e, buf) {
                    Ok(()) => {
                        buf.push(b'\n');
                        sent += 1;
                    }
                    Err(err) => {
                        buf.truncate(mark);
                        e.metadata().update_status(EventStatus::Rejected);
                        self.metrics.error("encode", 1, &err);
                    }
                }
            }
            let mut bytes = 0u64;
            for (path, data) in &pending {
                if data.is_empty() {
                    continue;
                }
                let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
                let mut done = 0;
                loop {
                    match self.write(path, data, &mut done) {
                        Ok(()) => break,
                        Err(e) => {
                            self.metrics.error(
                                "io",
                                1,
                                &format_args!(
                                    "cannot write {}: {e}; retrying (the batch is held, upstream waits)",
                                    path.display()
                                ),
                            );
                            tokio::time::sleep(backoff.next_delay()).await;
                        }
                    }
                }
                bytes += data.len() as u64;
            }
            self.metrics.add_sent(sent);
            self.metrics.add_sent_bytes(bytes);
            batch.finalize(EventStatus::Delivered);
            if dynamic && pending.len() > 64 {
                pending.clear();
            }
            if last_idle_check.elapsed() > Duration::from_secs(1) {
                self.close_idle();
                last_idle_check = Instant::now();
            }
        }
        for f in self.files.values_mut() {
            let _ = f.file.flush();
            if self.cfg.fsync {
                let _ = f.file.sync_all();
            }
        }
        Ok(())
    }
}

/// The directory before a path template's first field or strftime part (`/var/log/weir/` for
/// `/var/log/weir/%Y/{{ service }}.log`; empty for a relative template that starts with one),
/// or `None` when the template has no field (strftime parts alone make only digits).
fn field_root(template: &str) -> Option<PathBuf> {
    let field = template.find("{{")?;
    let first = template.find('%').map_or(field, |t| t.min(field));
    let before = &template[..first];
    Some(PathBuf::from(match before.rfind('/') {
        Some(i) => &before[..=i],
        None => "",
    }))
}

/// `path` with `.` and `..` resolved lexically, or `None` when a `..` climbs above its start.
fn normalize(path: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !matches!(out.components().next_back(), Some(Component::Normal(_))) {
                    return None;
                }
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    Some(out)
}

/// Whether the rendered `path` stays in `root` (see [`FileSinkConfig::path`]); the error says
/// how it does not.
fn inside(root: &Path, path: &str) -> Result<(), &'static str> {
    if path.contains('\0') {
        return Err("holds a NUL byte");
    }
    let p = Path::new(path);
    if root.is_relative() && p.is_absolute() {
        return Err("is absolute where the template's directory is relative");
    }
    match (normalize(root), normalize(p)) {
        (Some(r), Some(p)) if p.starts_with(&r) && p != r => Ok(()),
        _ => Err("leaves the template's directory"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use weir_pipeline::buffer::buffer;
    use weir_pipeline::event::{EventBatch, LogEvent};
    use weir_pipeline::finalization::BatchNotifier;
    use weir_pipeline::metrics::MetricsRegistry;
    use weir_pipeline::vocabulary::WhenFull;

    fn event(svc: Option<&str>, n: i64) -> weir_pipeline::event::Event {
        let mut l = LogEvent::default();
        if let Some(s) = svc {
            l.insert_field("svc", s);
        }
        l.insert_field("n", n);
        l.into()
    }

    #[tokio::test]
    async fn writes_templated_paths_rotates_and_acknowledges() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = FileSinkConfig {
            path: format!("{}/{{{{ svc }}}}/out.log", dir.path().display()),
            encoding: EncodingConfig::default(),
            max_bytes: Some(Count::of(40)),
            idle_timeout_secs: Secs::from_secs(30),
            max_open_files: Count::of(256),
            fsync: true,
        };
        let metrics = ComponentMetrics::detached("f");
        let cx = SinkContext {
            id: Arc::from("f"),
            data_dir: dir.path().to_path_buf(),
            metrics: metrics.clone(),
            registry: Arc::new(MetricsRegistry::default()),
            outputs: Default::default(),
            stop: Default::default(),
        };
        let sink = cfg.build(cx).await.unwrap();
        let (tx, rx) = buffer(100, WhenFull::Block, metrics.clone());
        let task = tokio::spawn(sink.run(SinkInput::new(rx, metrics.clone())));
        let (n1, rx1) = BatchNotifier::new_with_receiver();
        let mut b = EventBatch::new(vec![
            event(Some("a"), 1),
            event(Some("b"), 2),
            event(None, 3),
        ]);
        b.attach_notifier(&n1);
        drop(n1);
        tx.send(b).await.unwrap();
        // The event without `svc` is rejected: the batch reports the worst status.
        assert_eq!(rx1.wait().await, EventStatus::Rejected);
        for i in 4..8 {
            tx.send(EventBatch::new(vec![event(Some("a"), i)]))
                .await
                .unwrap();
        }
        drop(tx);
        task.await.unwrap().unwrap();
        let a_dir = dir.path().join("a");
        let mut all = String::new();
        let mut names: Vec<_> = std::fs::read_dir(&a_dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        assert!(
            names.len() >= 2,
            "rotation by size made several files: {names:?}"
        );
        for p in &names {
            let s = std::fs::read_to_string(p).unwrap();
            assert!(
                s.len() <= 40 || s.lines().count() == 1,
                "{p:?} over max_bytes"
            );
            all.push_str(&s);
        }
        let mut ns: Vec<i64> = all
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["n"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        ns.sort();
        assert_eq!(ns, vec![1, 4, 5, 6, 7]);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("b/out.log")).unwrap(),
            "{\"n\":2,\"svc\":\"b\"}\n"
        );
        assert_eq!(metrics.errors().get("template"), Some(&1));
    }

    #[test]
    fn fields_cannot_take_the_path_out_of_the_templates_directory() {
        let root = field_root("/var/log/weir/{{ name }}-%Y.log").unwrap();
        assert_eq!(root, PathBuf::from("/var/log/weir/"));
        assert_eq!(field_root("/var/log/weir/%Y.log"), None);
        assert_eq!(field_root("{{ a }}.log"), Some(PathBuf::from("")));
        assert_eq!(
            field_root("/d/errors/%Y-%m-%d/{{ service }}.log"),
            Some(PathBuf::from("/d/errors/"))
        );
        assert!(inside(&root, "/var/log/weir/api-2026.log").is_ok());
        assert!(inside(&root, "/var/log/weir/ns/api-2026.log").is_ok());
        assert!(inside(&root, "/var/log/weir/a/../b-2026.log").is_ok());
        assert_eq!(
            inside(&root, "/var/log/weir/../../escaped-2026.log"),
            Err("leaves the template's directory")
        );
        assert!(
            inside(&root, "/var/log/weir/..-2026.log").is_ok(),
            "a name, not `..`"
        );
        assert!(inside(&root, "/var/log/weir/..").is_err());
        assert!(inside(&root, "/var/log/weir/x\0.log").is_err());
        let rel = field_root("out/{{ a }}.log").unwrap();
        assert!(inside(&rel, "out/b.log").is_ok());
        assert!(inside(&rel, "out/../../b.log").is_err());
        assert!(inside(&rel, "/etc/passwd").is_err());
        let bare = field_root("{{ a }}.log").unwrap();
        assert!(inside(&bare, "b.log").is_ok());
        assert!(inside(&bare, "../b.log").is_err());
        assert!(inside(&bare, "/etc/b.log").is_err());
    }

    #[tokio::test]
    async fn an_event_whose_fields_climb_out_of_the_directory_is_rejected_and_nothing_is_written_there(
    ) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a/b/out");
        let cfg = FileSinkConfig {
            path: format!("{}/{{{{ svc }}}}.log", out.display()),
            encoding: Default::default(),
            max_bytes: None,
            idle_timeout_secs: Secs::from_secs(30),
            max_open_files: Count::of(256),
            fsync: false,
        };
        let metrics = Arc::new(weir_pipeline::metrics::ComponentMetrics::new(
            "f",
            weir_pipeline::vocabulary::ComponentKind::Sink,
            "file",
        ));
        let sink = cfg
            .build(SinkContext {
                id: Arc::from("f"),
                data_dir: dir.path().to_path_buf(),
                metrics: metrics.clone(),
                registry: Arc::new(MetricsRegistry::default()),
                outputs: Default::default(),
                stop: Default::default(),
            })
            .await
            .unwrap();
        let (tx, rx) = buffer(100, WhenFull::Block, metrics.clone());
        let task = tokio::spawn(sink.run(SinkInput::new(rx, metrics.clone())));
        let (n, status) = BatchNotifier::new_with_receiver();
        let mut b = EventBatch::new(vec![event(Some("../../escaped"), 1), event(Some("ok"), 2)]);
        b.attach_notifier(&n);
        drop(n);
        tx.send(b).await.unwrap();
        drop(tx);
        task.await.unwrap().unwrap();
        assert!(
            !dir.path().join("a/escaped.log").exists(),
            "nothing escaped"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("ok.log")).unwrap(),
            "{\"n\":2,\"svc\":\"ok\"}\n"
        );
        assert_eq!(metrics.errors().get("path_outside"), Some(&1));
        assert_eq!(status.wait().await, EventStatus::Rejected);
    }
}
