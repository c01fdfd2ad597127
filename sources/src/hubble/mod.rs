//! `hubble`: network flows from Cilium's Hubble (Relay, or one node's Hubble server), over
//! gRPC `observer.Observer/GetFlows`.
//!
//! ```toml
//! [sources.flows]
//! type = "hubble"
//! address = "hubble-relay.kube-system:443"
//! tls.ca_file = "/var/lib/hubble-relay/tls/ca.crt"
//! tls.server_name = "ui.hubble-relay.cilium.io"
//! [[sources.flows.whitelist]]
//! namespace = ["boutique"]
//! ```
//!
//! Each flow becomes a log event shaped exactly like a line of `hubble observe -o jsonpb`
//! ([`convert`], documented in `docs/schemas/flow.md`), so exported flow files and the live
//! stream are interchangeable downstream.
//!
//! The source's life is a loop over three states:
//!
//! ```text
//! Connecting --ok--> Streaming --stream error / server gone--> Waiting (backoff) --> Connecting
//!     |                  |  \--end of stream, follow = false--> done
//!     \--error--> Waiting
//! ```
//!
//! It never gives up while the pipeline runs: a missing or restarting Relay is retried with
//! exponential backoff. Each new call resumes `since` the newest flow emitted, minus an
//! overlap, and drops the flows of the overlap it already emitted ([`resume`]), so a Relay
//! restart neither loses nor duplicates flows. `lost_events` and `node_status` responses are
//! counted (`weir_hubble_lost_events_total`, `weir_hubble_node_status_total`) and logged.
//!
//! The resume position survives a restart of weir: it is kept in
//! `<data_dir>/<source id>/resume.bin`, advanced only by delivered flows (see [`resume`]),
//! and written once a second when it changed, and at shutdown.

pub mod client;
pub mod convert;
pub mod filter;
pub mod jsonpb;
pub mod proto;
pub mod resume;

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use prost::Message;
use serde::{Deserialize, Serialize};
use weir_pipeline::component::{Output, Source, SourceConfig, SourceContext, SourceSender};
use weir_pipeline::config::{Secs, SecsOrZero};
use weir_pipeline::event::{Event, EventBatch, EventMetadata, LogEvent, MAX_BATCH_EVENTS};
use weir_pipeline::finalization::{BatchNotifier, BatchStatusReceiver, EventStatus};
use weir_pipeline::retry::Backoff;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

pub use filter::FilterConfig;

use client::ConnectConfig;
use proto::{GetFlowsRequest, GetFlowsResponse, ResponseType, Timestamp};
use resume::Resume;
use weir_connect::tls::{ClientTls, TlsClientConfig};

/// `type = "hubble"`: flows from Hubble Relay or a node's Hubble server.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HubbleConfig {
    /// Where Hubble listens: `host:port` (Relay: `localhost:4245` through a port-forward, or
    /// `hubble-relay.kube-system:80`; a node's server: `<node>:4244`), `http://host:port`,
    /// `https://host:port` (needs `tls`), or `unix:///var/run/cilium/hubble.sock` (a node's
    /// local socket, for a DaemonSet). Default: `localhost:4245`.
    #[serde(default = "default_address")]
    pub address: String,
    /// Keep streaming new flows (`true`, default) or stop after the flows the server has
    /// buffered (`false`: the source ends, so `weir run` exits when the pipeline drains).
    #[serde(default = "default_true")]
    pub follow: bool,
    /// Start with flows from this time: RFC 3339 (`2026-11-20T10:00:00Z`) or an age (`30s`,
    /// `5m`, `2h`, `1d`). Default: none (only new flows when following; the server's buffer
    /// otherwise).
    #[serde(default)]
    pub since: Option<String>,
    /// Stop at flows of this time (same forms as `since`). Default: none.
    #[serde(default)]
    pub until: Option<String>,
    /// Ask for the last `number` buffered flows first (`hubble observe --last`). Not
    /// compatible with `since`/`until`. Default: none.
    #[serde(default)]
    pub number: Option<u64>,
    /// Only flows matching at least one of these filters (server-side). Default: none (all
    /// flows).
    #[serde(default)]
    pub whitelist: Vec<FilterConfig>,
    /// No flows matching any of these filters (server-side). Default: none.
    #[serde(default)]
    pub blacklist: Vec<FilterConfig>,
    /// TLS (and mutual TLS) to Relay: `ca_file` (Relay's `ca.crt`), `crt_file` and
    /// `key_file`, `server_name` (Relay's certificates are issued for
    /// `*.<cluster>.hubble-grpc.cilium.io`, e.g. `relay.default.hubble-grpc.cilium.io`),
    /// `verify_certificate`, `verify_hostname`: the `tls` table shared by every component,
    /// see docs/configuration.md. Default: none (plaintext; TLS with the built-in roots for an
    /// `https://` address).
    #[serde(default)]
    pub tls: Option<TlsClientConfig>,
    /// Give up a connection attempt after this many seconds. Default: 10.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: Secs,
    /// The longest wait between reconnection attempts, in seconds (the wait starts at 0.5 s
    /// and doubles). Default: 30.
    #[serde(default = "default_max_backoff")]
    pub max_backoff_secs: Secs,
    /// On reconnect, ask for flows this many seconds older than the newest one emitted (flows
    /// of several nodes arrive only roughly in time order); the ones already emitted are
    /// dropped. Default: 5.
    #[serde(default = "default_overlap")]
    pub resume_overlap_secs: SecsOrZero,
}

fn default_address() -> String {
    "localhost:4245".into()
}
fn default_true() -> bool {
    true
}
fn default_connect_timeout() -> Secs {
    Secs::from_secs(10)
}
fn default_max_backoff() -> Secs {
    Secs::from_secs(30)
}
fn default_overlap() -> SecsOrZero {
    SecsOrZero::from_secs(5)
}

impl Default for HubbleConfig {
    fn default() -> Self {
        Self {
            address: default_address(),
            follow: true,
            since: None,
            until: None,
            number: None,
            whitelist: Vec::new(),
            blacklist: Vec::new(),
            tls: None,
            connect_timeout_secs: default_connect_timeout(),
            max_backoff_secs: default_max_backoff(),
            resume_overlap_secs: default_overlap(),
        }
    }
}

/// A time option: RFC 3339, or an age before `now` (`90s`, `5m`, `2h`, `1d`).
fn parse_time(
    field: &str,
    s: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Timestamp, String> {
    if let Some(t) = convert::parse_timestamp(s) {
        return Ok(t);
    }
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let secs = match (num.parse::<i64>(), unit) {
        (Ok(n), "s") => n,
        (Ok(n), "m") => n * 60,
        (Ok(n), "h") => n * 3600,
        (Ok(n), "d") => n * 86_400,
        _ => {
            return Err(format!(
                "`{field}`: `{s}` is neither an RFC 3339 time nor an age such as `30s`, `5m`, `2h`, `1d`"
            ))
        }
    };
    let t = now - chrono::Duration::seconds(secs);
    Ok(Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    })
}

/// What the running source needs, checked once at build.
#[derive(Debug, Clone)]
struct Settings {
    connect: ConnectConfig,
    follow: bool,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    number: u64,
    whitelist: Vec<proto::FlowFilter>,
    blacklist: Vec<proto::FlowFilter>,
    max_backoff: Duration,
    overlap: Duration,
}

impl HubbleConfig {
    fn settings(&self) -> Result<Settings, String> {
        let now = chrono::Utc::now();
        let since = self
            .since
            .as_deref()
            .map(|s| parse_time("since", s, now))
            .transpose()?;
        let until = self
            .until
            .as_deref()
            .map(|s| parse_time("until", s, now))
            .transpose()?;
        if self.number.is_some() && (since.is_some() || until.is_some()) {
            return Err("`number` cannot be combined with `since` or `until`".into());
        }
        let connect = ConnectConfig {
            address: self.address.clone(),
            tls: self.tls.clone(),
            connect_timeout: self.connect_timeout_secs.duration(),
        };
        connect.uri().map_err(|e| format!("`address`: {e}"))?;
        connect.check_tls().map_err(|e| e.to_string())?;
        Ok(Settings {
            connect,
            follow: self.follow,
            since,
            until,
            number: self.number.unwrap_or(0),
            whitelist: filter::to_proto(&self.whitelist, "whitelist")?,
            blacklist: filter::to_proto(&self.blacklist, "blacklist")?,
            max_backoff: self.max_backoff_secs.duration(),
            overlap: self.resume_overlap_secs.duration(),
        })
    }
}

#[async_trait]
impl SourceConfig for HubbleConfig {
    async fn build(&self, cx: SourceContext) -> Result<Source, BoxError> {
        let settings = self.settings()?;
        Ok(Box::pin(run(settings, cx)))
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::default_output(DataType::LOG)]
    }

    fn check_environment(&self) -> Result<(), BoxError> {
        Ok(TlsClientConfig::check(self.tls.as_ref())?)
    }

    fn can_acknowledge(&self) -> bool {
        true
    }
}

/// The resume state's file inside the source's data directory.
pub const RESUME_FILE: &str = "resume.bin";
/// How often the resume state is written (when it changed).
const SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// At shutdown, how long the last acknowledgements are waited for.
const LAST_ACKS: Duration = Duration::from_secs(60);

/// A flow's time and identity, as the resume state keeps them.
type FlowKey = (Option<Timestamp>, u64);

/// The delivered side of the resume state, and its file.
struct Delivered {
    dir: PathBuf,
    state: Resume,
    /// Batches sent, with the flow keys they hold, oldest first (with acknowledgements).
    pending: VecDeque<(BatchStatusReceiver, Vec<FlowKey>)>,
    /// A batch was not delivered: the state stays before it, so the next start asks again.
    frozen: bool,
    dirty: bool,
    last_save: Instant,
}

/// Loads `<dir>/resume.bin`: the state to resume from, if there is a usable one.
fn load_resume(dir: &Path, overlap: Duration) -> Result<Option<Resume>, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the directory {}: {e}", dir.display()))?;
    let path = dir.join(RESUME_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    match Resume::decode(&bytes, overlap) {
        Ok(r) => Ok(Some(r)),
        Err(reason) => {
            let moved = dir.join(format!(
                "{RESUME_FILE}.corrupt-{}",
                chrono::Utc::now().format("%Y%m%dT%H%M%S")
            ));
            let _ = std::fs::rename(&path, &moved);
            Err(format!(
                "{} cannot be used ({reason}); moved to {}; flows are asked from `since` (or new ones only)",
                path.display(),
                moved.display()
            ))
        }
    }
}

/// Writes `bytes` as `<dir>/resume.bin`: temporary file, fsync, rename, fsync of the directory.
fn write_resume(dir: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{RESUME_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(RESUME_FILE))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// How one stream ended.
enum StreamEnd {
    /// The server ended the call normally (all buffered flows sent, or it is going away).
    Complete,
    /// The stream broke (connection lost, a malformed frame, the server's error status).
    Failed(tonic::Status),
    /// No connection (already counted and logged).
    NotConnected,
    /// Shutdown requested, or nobody downstream any more.
    Stop,
}

/// Logs at most one line per key every 10 s, counting what it held back.
#[derive(Default)]
struct LogLimiter {
    last: HashMap<String, (Instant, u64)>,
}

impl LogLimiter {
    /// `Some(suppressed)` when a line for `key` is due.
    fn due(&mut self, key: &str) -> Option<u64> {
        let now = Instant::now();
        match self.last.get_mut(key) {
            Some((at, held)) if now.duration_since(*at) < Duration::from_secs(10) => {
                *held += 1;
                None
            }
            Some((at, held)) => {
                *at = now;
                Some(std::mem::take(held))
            }
            None => {
                self.last.insert(key.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

/// The running source.
struct Hubble {
    settings: Settings,
    cx: SourceContext,
    /// Where batches go; `None` once the source stopped (so the downstream drains).
    out: Option<SourceSender>,
    /// Flows emitted (within this run and before it, as far as delivered then).
    resume: Resume,
    delivered: Delivered,
    /// Keys of the flows in the batch being collected.
    batch_keys: Vec<FlowKey>,
    logs: LogLimiter,
    /// Responses received on this connection, for messages.
    received: u64,
}

async fn run(settings: Settings, mut cx: SourceContext) -> Result<(), BoxError> {
    let dir = cx.data_dir.join(&*cx.id);
    let restored = match load_resume(&dir, settings.overlap) {
        Ok(r) => r,
        Err(e) => {
            cx.metrics.error("resume", 1, &e);
            None
        }
    };
    let (resume, state) = match restored {
        Some(r) => {
            let bytes = r.encode();
            tracing::info!(component = %cx.id, newest = ?r.newest().map(|t| (t.seconds, t.nanos)), remembered = r.remembered(), "resuming the flows after the last ones delivered before the restart");
            // Two copies of one state: decoding what was just encoded cannot fail.
            let copy = Resume::decode(&bytes, settings.overlap)?;
            (r, copy)
        }
        None => (Resume::new(settings.overlap), Resume::new(settings.overlap)),
    };
    let dummy = SourceSender::new(None, Default::default(), cx.metrics.clone());
    let out = std::mem::replace(&mut cx.out, dummy);
    let mut h = Hubble {
        settings,
        cx,
        out: Some(out),
        resume,
        delivered: Delivered {
            dir,
            state,
            pending: VecDeque::new(),
            frozen: false,
            dirty: false,
            last_save: Instant::now(),
        },
        batch_keys: Vec::new(),
        logs: LogLimiter::default(),
        received: 0,
    };
    h.run().await;
    h.finish().await;
    Ok(())
}

impl Hubble {
    /// Applies the outcome of every batch known to be done.
    fn settle(&mut self) {
        while let Some((rx, _)) = self.delivered.pending.front_mut() {
            let Some(status) = rx.try_recv() else { break };
            if let Some((_, keys)) = self.delivered.pending.pop_front() {
                self.apply(status, keys);
            }
        }
    }

    fn apply(&mut self, status: EventStatus, keys: Vec<FlowKey>) {
        let d = &mut self.delivered;
        match status {
            EventStatus::Delivered | EventStatus::Rejected if !d.frozen => {
                for (t, k) in keys {
                    d.state.admit(t, k);
                }
                d.dirty = true;
            }
            EventStatus::Delivered | EventStatus::Rejected => {}
            EventStatus::Errored => {
                if !d.frozen {
                    d.frozen = true;
                    self.cx.metrics.error(
                        "not_delivered",
                        1,
                        &format_args!("a batch of {} flows was not delivered (a sink gave up or a buffer dropped it); the saved resume position stays before it, so the next start asks for them again", keys.len()),
                    );
                }
            }
        }
    }

    /// Writes the resume state if it changed (at most once a second unless `now`).
    async fn save(&mut self, now: bool) {
        let d = &mut self.delivered;
        if !d.dirty || (!now && d.last_save.elapsed() < SAVE_INTERVAL) {
            return;
        }
        d.dirty = false;
        d.last_save = Instant::now();
        let bytes = d.state.encode();
        let dir = d.dir.clone();
        let res = tokio::task::spawn_blocking(move || write_resume(&dir, &bytes)).await;
        let err = match res {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        self.delivered.dirty = true;
        self.cx.metrics.error(
            "resume",
            1,
            &format_args!(
                "cannot write {}: {err}",
                self.delivered.dir.join(RESUME_FILE).display()
            ),
        );
    }

    /// At the end: lets the downstream drain, waits for the last acknowledgements, and
    /// writes the resume state.
    async fn finish(&mut self) {
        self.out = None;
        let deadline = tokio::time::Instant::now() + LAST_ACKS;
        while let Some((rx, keys)) = self.delivered.pending.pop_front() {
            match tokio::time::timeout_at(deadline, rx).await {
                Ok(status) => self.apply(status, keys),
                Err(_) => {
                    tracing::warn!(component = %self.cx.id, "hubble: the last batches were not acknowledged within {} s; the next start asks for them again", LAST_ACKS.as_secs());
                    break;
                }
            }
        }
        self.save(true).await;
    }

    async fn run(&mut self) {
        let mut backoff = Backoff::new(Duration::from_millis(500), self.settings.max_backoff);
        // Where a reconnect resumes when no flow has been emitted yet.
        let mut connected_at: Option<Timestamp> = None;
        let address = self.settings.connect.address.clone();
        loop {
            let connected = tokio::select! {
                c = self.settings.connect.connect() => c,
                _ = self.cx.shutdown.cancelled() => return,
            };
            let outcome = match connected {
                Ok(channel) => {
                    let now = chrono::Utc::now();
                    let request = self.request(connected_at);
                    connected_at.get_or_insert(Timestamp {
                        seconds: now.timestamp(),
                        nanos: now.timestamp_subsec_nanos() as i32,
                    });
                    let call = tokio::select! {
                        c = client::get_flows(channel, request) => c,
                        _ = self.cx.shutdown.cancelled() => return,
                    };
                    match call {
                        Ok(stream) => {
                            tracing::info!(component = %self.cx.id, %address, "streaming flows from Hubble");
                            self.received = 0;
                            let end = self.pump(stream).await;
                            if self.received > 0 {
                                backoff.reset();
                            }
                            end
                        }
                        Err(status) => StreamEnd::Failed(status),
                    }
                }
                Err(e) => {
                    self.cx.metrics.error(
                        "connect",
                        1,
                        &format_args!("hubble: {e}; retrying with backoff"),
                    );
                    StreamEnd::NotConnected
                }
            };
            match outcome {
                StreamEnd::Stop => return,
                StreamEnd::Complete if !self.settings.follow => {
                    tracing::info!(component = %self.cx.id, %address, "Hubble sent every requested flow; the source is done");
                    return;
                }
                StreamEnd::Complete => {
                    tracing::warn!(component = %self.cx.id, %address, "Hubble ended the flow stream; reconnecting");
                }
                StreamEnd::NotConnected => {}
                StreamEnd::Failed(status) => {
                    self.cx.metrics.error(
                        "stream",
                        1,
                        &format_args!(
                            "hubble {address}: the flow stream failed after {} responses ({:?}: {}); reconnecting",
                            self.received,
                            status.code(),
                            status.message()
                        ),
                    );
                }
            }
            self.cx
                .metrics
                .add_counter("hubble_reconnects_total", None, 1);
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = self.cx.shutdown.cancelled() => return,
            }
        }
    }

    /// The request of the next call: the configured one the first time; later, from where
    /// the last stream left off.
    fn request(&self, connected_at: Option<Timestamp>) -> GetFlowsRequest {
        let s = &self.settings;
        let resumed = self
            .resume
            .since()
            .or_else(|| connected_at.map(|t| self.resume.back_off(t)));
        let (since, number) = match resumed {
            // A later `since` than configured: the flows before were already emitted.
            Some(r) if s.since.is_none_or(|c| r > c) => (Some(r), 0),
            _ => (s.since, s.number),
        };
        GetFlowsRequest {
            number,
            first: false,
            follow: s.follow,
            blacklist: s.blacklist.clone(),
            whitelist: s.whitelist.clone(),
            since,
            until: s.until,
        }
    }

    /// Reads one stream until it ends, sending batches downstream.
    async fn pump(&mut self, mut stream: tonic::codec::Streaming<Bytes>) -> StreamEnd {
        let mut events: Vec<Event> = Vec::with_capacity(MAX_BATCH_EVENTS);
        let mut tick = tokio::time::interval(SAVE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let item = tokio::select! {
                biased;
                _ = self.cx.shutdown.cancelled() => None,
                _ = tick.tick() => {
                    // Acknowledgements of the last batches while the stream is quiet.
                    self.settle();
                    self.save(false).await;
                    continue;
                }
                item = stream.next() => Some(item),
            };
            let Some(mut item) = item else {
                self.send(&mut events).await;
                return StreamEnd::Stop;
            };
            // Take what is already there without waiting, up to a full batch.
            let end = loop {
                match item {
                    Some(Ok(bytes)) => self.handle(bytes, &mut events),
                    Some(Err(status)) => break Some(StreamEnd::Failed(status)),
                    None => break Some(StreamEnd::Complete),
                }
                if events.len() >= MAX_BATCH_EVENTS {
                    break None;
                }
                match stream.next().now_or_never() {
                    Some(next) => item = next,
                    None => break None,
                }
            };
            if !self.send(&mut events).await {
                return StreamEnd::Stop;
            }
            if let Some(end) = end {
                return end;
            }
        }
    }

    /// Sends what is collected; `false` when nobody is downstream any more.
    async fn send(&mut self, events: &mut Vec<Event>) -> bool {
        if events.is_empty() {
            return true;
        }
        let batch = std::mem::replace(events, Vec::with_capacity(MAX_BATCH_EVENTS));
        self.cx.metrics.add_received(batch.len() as u64, 0);
        let keys = std::mem::take(&mut self.batch_keys);
        let mut batch = EventBatch::new(batch);
        let rx = if self.cx.acknowledgements {
            let (n, r) = BatchNotifier::new_with_receiver();
            batch.attach_notifier(&n);
            Some(r)
        } else {
            None
        };
        let Some(out) = self.out.as_mut() else {
            return false;
        };
        if out.send(batch).await.is_err() {
            return false;
        }
        match rx {
            Some(r) => self.delivered.pending.push_back((r, keys)),
            None => self.apply(EventStatus::Delivered, keys),
        }
        self.settle();
        self.save(false).await;
        true
    }

    /// One response: a flow becomes an event; the rest are counted and logged.
    fn handle(&mut self, bytes: Bytes, events: &mut Vec<Event>) {
        self.received += 1;
        self.cx.metrics.add_received_bytes(bytes.len() as u64);
        let resp = match GetFlowsResponse::decode(bytes.clone()) {
            Ok(r) => r,
            Err(e) => {
                self.cx.metrics.error(
                    "decode",
                    1,
                    &format_args!(
                        "hubble {}: response {} of this stream ({} bytes) is not a valid GetFlowsResponse: {e}; skipped",
                        self.settings.connect.address,
                        self.received,
                        bytes.len()
                    ),
                );
                return;
            }
        };
        match &resp.response_types {
            Some(ResponseType::Flow(flow)) => {
                let time = flow.time.or(resp.time);
                let key = if flow.uuid.is_empty() {
                    resume::hash_bytes(&bytes)
                } else {
                    resume::hash_bytes(flow.uuid.as_bytes())
                };
                if !self.resume.admit(time, key) {
                    self.cx
                        .metrics
                        .add_counter("hubble_duplicate_flows_total", None, 1);
                    return;
                }
                if let Some(flow) = convert::flow_response_to_typed(resp) {
                    let meta = EventMetadata::new(Some(Arc::clone(&self.cx.id)));
                    events.push(Event::Log(LogEvent::from_typed(flow, meta)));
                    self.batch_keys.push((time, key));
                }
            }
            Some(ResponseType::LostEvents(lost)) => {
                let source = proto::enum_name(proto::LOST_EVENT_SOURCE, lost.source)
                    .map(str::to_string)
                    .unwrap_or_else(|| lost.source.to_string());
                self.cx.metrics.add_counter(
                    "hubble_lost_events_total",
                    Some(("source", &source)),
                    lost.num_events_lost,
                );
                if let Some(held) = self.logs.due(&format!("lost {source}")) {
                    let cpu = lost
                        .cpu
                        .map(|c| format!(" on CPU {}", c.value))
                        .unwrap_or_default();
                    tracing::warn!(
                        component = %self.cx.id,
                        node = %resp.node_name,
                        source = %source,
                        lost = lost.num_events_lost,
                        "Hubble lost {} events at {source}{cpu} before they were captured ({held} more reports since the last line)",
                        lost.num_events_lost
                    );
                }
            }
            Some(ResponseType::NodeStatus(status)) => {
                let state = proto::enum_name(proto::NODE_STATE, status.state_change)
                    .map(str::to_string)
                    .unwrap_or_else(|| status.state_change.to_string());
                self.cx
                    .metrics
                    .add_counter("hubble_node_status_total", Some(("state", &state)), 1);
                if let Some(held) = self.logs.due(&format!("node {state}")) {
                    let nodes = status.node_names.join(", ");
                    if status.state_change == 1 {
                        tracing::info!(component = %self.cx.id, state = %state, nodes = %nodes, "Hubble node status: {state} {nodes} ({held} more since the last line)");
                    } else {
                        tracing::warn!(component = %self.cx.id, state = %state, nodes = %nodes, message = %status.message, "Hubble node status: {state} {nodes}: {} ({held} more since the last line)", status.message);
                    }
                }
            }
            None => {
                self.cx
                    .metrics
                    .add_counter("hubble_unknown_responses_total", None, 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_validation() {
        let c: HubbleConfig = toml::from_str("").unwrap();
        assert_eq!(c.address, "localhost:4245");
        assert!(c.follow);
        let s = c.settings().unwrap();
        assert_eq!(s.connect.uri().unwrap(), "http://localhost:4245");
        let err = |text: &str| {
            toml::from_str::<HubbleConfig>(text)
                .unwrap()
                .settings()
                .unwrap_err()
        };
        assert!(err("since = 'last tuesday'").contains("`since`"));
        assert!(err("number = 5\nsince = '5m'").contains("`number`"));
        assert!(err("tls.ca_file = '/nonexistent/ca.pem'").contains("/nonexistent/ca.pem"));
        assert!(err("tls = { ca_file = '/x', crt_file = '/y' }").contains("go together"));
        assert!(toml::from_str::<HubbleConfig>("tls.cert_file = '/y'").is_err());
        assert!(err("[[whitelist]]\nverdict = ['NOPE']").contains("whitelist[0]"));
        assert!(toml::from_str::<HubbleConfig>("adress = 'x'").is_err());
    }

    #[test]
    fn since_accepts_rfc3339_and_ages() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            parse_time("since", "5m", now).unwrap().seconds,
            now.timestamp() - 300
        );
        assert_eq!(
            parse_time("since", "2026-11-20T09:00:00.5Z", now).unwrap(),
            Timestamp {
                seconds: now.timestamp() - 3600,
                nanos: 500_000_000
            }
        );
    }
}
