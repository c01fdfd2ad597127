//! `nats`: events published to NATS subjects templated from their fields.
//!
//! Core NATS (the default) is fire-and-forget: a batch is acknowledged once the client has
//! written every message to the server (a flush); while it reconnects, the batch waits.
//! With `jetstream = true` each message carries a `Nats-Msg-Id` header and the sink waits for
//! the stream's PubAck; a message whose PubAck does not come (timeout, server restarting) is
//! published again with the same id, so JetStream's deduplication window drops the copy that
//! may already have landed. The batch is held and retried with backoff until every message is
//! stored: the buffer fills and backpressure slows the sources; nothing is dropped (unless
//! `request.retry_attempts` is set: the batch is then finalized as errored). Only then is the
//! batch acknowledged. Publishing is pipelined like a sliding window: a batch is published in
//! chunks of a quarter of `request.concurrency` messages, and a chunk goes out as soon
//! as it fits beside the messages still awaiting their PubAcks, so the window never drains
//! between batches; batches are acknowledged in the order they came.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use weir_connect::nats::async_nats::jetstream;
use weir_connect::nats::{
    async_nats, connect, is_valid_publish_subject, NatsAuthConfig, NatsConnect,
};
use weir_connect::tls::{ClientTls, TlsClientConfig};
use weir_pipeline::codec::EncodingConfig;
use weir_pipeline::component::{Sink, SinkConfig, SinkContext, SinkInput};
use weir_pipeline::config::{Concurrency, Secs};
use weir_pipeline::event::EventBatch;
use weir_pipeline::finalization::EventStatus;
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::template::Template;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use crate::toolkit::{RequestConfig, RequestDefaults, Retries};

/// `type = "nats"`: publishes each event as one NATS message.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// Server URL(s), comma separated: `nats://127.0.0.1:4222`, `tls://nats.example:4222`.
    /// Required.
    pub url: String,
    /// Send the credentials (`auth.password`, `auth.token`) over a connection without TLS. Default: false: a
    /// component with credentials and a `nats://` address does not start.
    #[serde(default)]
    pub allow_plaintext_credentials: bool,
    /// The subject template: `{{ field.path }}` parts are filled from each event and strftime parts
    /// (`%Y`) from the event's time, as in [file](file.md#path-templates). A fixed subject must be
    /// valid at `weir run`; a rendered one is checked per event: events missing a field, or whose
    /// subject is not valid (empty token, whitespace, wildcard), are rejected and counted.
    /// Required.
    pub subject: String,
    /// The payload: `json` (the whole event), `text` (the `message` field as it is, the raw bytes)
    /// or `logfmt`. See [codecs](codecs.md#encoding). Default: `{ codec = "json" }`.
    #[serde(default)]
    pub encoding: EncodingConfig,
    /// Publish to JetStream and wait for each message's PubAck before acknowledging the batch
    /// (a stream must capture the subjects). Default: false (core NATS, fire-and-forget).
    #[serde(default)]
    pub jetstream: bool,
    /// JetStream: `concurrency` is the most messages published and awaiting their PubAck at
    /// once, across batches (published in chunks of a quarter of it; default 1000);
    /// `timeout_secs` how long to wait for a PubAck before publishing again with the same
    /// `Nats-Msg-Id` (default 5); `retry_initial_backoff_secs` (default 0.1) and
    /// `retry_max_duration_secs` (default 5) the waits between rounds of retries;
    /// `retry_attempts` (default: unset, publish again until stored; a batch with a message
    /// given up is finalized as errored).
    #[serde(default)]
    pub request: RequestConfig<NatsRequest>,
    /// Authentication: `user` and `password` (together), `token`, `nkey_seed` (the client signs the
    /// server's nonce with it) or `credentials_file` (a `.creds` file with the user JWT and NKey
    /// seed, read at `weir run`). At most one method. Default: none.
    #[serde(default)]
    pub auth: NatsAuthConfig,
    /// TLS (`enabled`, `ca_file`, `crt_file`, `key_file`, `verify_certificate`,
    /// `verify_hostname`, `server_name`: the `tls` table shared by every component, see
    /// docs/configuration.md). Default: off (on for `tls://` URLs, or when a `tls` option is
    /// set).
    #[serde(default)]
    pub tls: Option<TlsClientConfig>,
    /// Connection name shown by the server. Default: `weir-<component id>`.
    #[serde(default)]
    pub connection_name: Option<String>,
}

/// The nats sink's `request` defaults: 1000 messages awaiting their PubAck, 5 seconds for a
/// PubAck, retries from 0.1 to 5 seconds apart, forever (unless `retry_attempts`).
#[derive(Debug)]
pub struct NatsRequest;

impl RequestDefaults for NatsRequest {
    const CONCURRENCY: Concurrency = Concurrency::of(1000);
    const TIMEOUT: Secs = Secs::from_secs(5);
    const RETRY_MAX_DURATION: Secs = Secs::from_secs(5);
    const NOT_HERE: &'static [(&'static str, &'static str)] = &[
        (
            "retry_statuses",
            "NATS answers are not HTTP statuses (every publish error, a permissions violation included, is retried)",
        ),
        (
            "reject_statuses",
            "NATS answers are not HTTP statuses (every publish error, a permissions violation included, is retried)",
        ),
    ];
}

#[async_trait]
impl SinkConfig for NatsSinkConfig {
    async fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BoxError> {
        let subject = Template::parse(&self.subject).map_err(|e| format!("`subject`: {e}"))?;
        if !subject.is_dynamic() && !is_valid_publish_subject(subject.as_str()) {
            return Err(format!(
                "`subject`: {:?} is not a subject to publish to (dot-separated tokens, no spaces or wildcards)",
                self.subject
            )
            .into());
        }
        let client = connect(
            NatsConnect {
                url: &self.url,
                auth: &self.auth,
                tls: self.tls.as_ref(),
                name: self.connection_name.as_deref(),
                allow_plaintext_credentials: self.allow_plaintext_credentials,
            },
            cx.metrics.clone(),
        )
        .await?;
        let js = self.jetstream.then(|| {
            jetstream::ContextBuilder::new()
                .timeout(self.request.timeout())
                // The sink bounds what is in flight itself: below `request.concurrency` it
                // takes another batch (up to 1000 events), so at most that + 1000 are
                // unacknowledged; the client's limit only has to be above that, and errors
                // instead of waiting.
                .max_ack_inflight(
                    self.request
                        .concurrency()
                        .saturating_add(weir_pipeline::event::MAX_BATCH_EVENTS)
                        .saturating_mul(2),
                )
                .backpressure_on_inflight(false)
                .build(client.clone())
        });
        Ok(Box::new(NatsSink {
            cfg: self.clone(),
            client,
            js,
            metrics: cx.metrics,
            stop: cx.stop,
            static_subject: async_nats::Subject::from(subject.as_str()),
            subject,
            id_prefix: message_id_prefix(&cx.id),
            next_id: 0,
            subject_buf: String::new(),
            buf: Vec::new(),
        }))
    }

    fn input(&self) -> DataType {
        DataType::ALL
    }

    fn check_environment(&self) -> Result<(), BoxError> {
        Ok(TlsClientConfig::check(self.tls.as_ref())?)
    }
}

/// A prefix unique to this run of this sink, so message ids never repeat across restarts.
fn message_id_prefix(id: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("weir-{id}-{}-{nanos:x}", std::process::id())
}

struct NatsSink {
    cfg: NatsSinkConfig,
    subject: Template,
    client: async_nats::Client,
    js: Option<jetstream::Context>,
    metrics: Arc<ComponentMetrics>,
    /// Fires when the sink must give up waiting (the grace period expired).
    stop: weir_pipeline::shutdown::ShutdownToken,
    id_prefix: String,
    next_id: u64,
    /// The subject when it is not templated.
    static_subject: async_nats::Subject,
    subject_buf: String,
    buf: Vec<u8>,
}

/// One encoded event on its way.
struct Outgoing {
    subject: async_nats::Subject,
    payload: Bytes,
    /// JetStream: its `Nats-Msg-Id` is the prefix and this number, the same for every attempt.
    id: u64,
}

/// The PubAcks of one published batch, awaited (with one deadline) as the next batches are
/// encoded and published.
type AckWait = Pin<Box<dyn Future<Output = AckOutcome> + Send>>;

/// What came back for a batch's PubAcks.
#[derive(Default)]
struct AckOutcome {
    /// Positions (in the batch's items) whose publish or PubAck failed.
    failed: Vec<usize>,
    last_error: Option<String>,
    duplicates: u64,
}

/// A chunk of a JetStream batch published and not yet fully acknowledged. The batch rides
/// on its last chunk, and is acknowledged when that chunk is settled (chunks settle in order).
struct InFlight {
    batch: Option<EventBatch>,
    items: Vec<Outgoing>,
    bytes: u64,
    acks: AckWait,
}

/// A chunk of a JetStream batch encoded and not yet published.
struct Chunk {
    batch: Option<EventBatch>,
    items: Vec<Outgoing>,
    bytes: u64,
}

impl NatsSink {
    /// Publishes to JetStream until every message has its PubAck, retrying the ones that fail
    /// with their same message id, until `retries` are used up (`request.retry_attempts`).
    /// Returns how many messages were given up.
    async fn publish_jetstream(
        &self,
        js: &jetstream::Context,
        items: &[Outgoing],
        mut todo: Vec<usize>,
        retries: &mut Retries,
    ) -> usize {
        loop {
            let mut failed = Vec::new();
            let mut last_error = None;
            let mut duplicates = 0u64;
            // Every wait is bounded: a PubAck that does not come is a retry, never a hang.
            let wait = self.cfg.request.timeout();
            for chunk in todo.chunks(self.cfg.request.concurrency()) {
                let mut acks = Vec::with_capacity(chunk.len());
                for &i in chunk {
                    let it = &items[i];
                    let msg = self.message(it);
                    match tokio::time::timeout(wait, js.send_publish(it.subject.clone(), msg)).await
                    {
                        Ok(Ok(ack)) => acks.push((i, ack)),
                        Ok(Err(e)) => {
                            failed.push(i);
                            last_error = Some(e.to_string());
                        }
                        Err(_) => {
                            failed.push(i);
                            last_error = Some("timed out handing the message to the client".into());
                        }
                    }
                }
                tracing::debug!(component = %self.metrics.id, published = acks.len(), failed = failed.len(), "JetStream chunk published, awaiting PubAcks");
                // One deadline for the whole chunk (they were all sent just now): awaited one
                // after the other, per-ack timeouts would add up when the server is gone.
                let deadline = tokio::time::Instant::now() + wait;
                for (i, ack) in acks {
                    match tokio::time::timeout_at(deadline, ack.into_future()).await {
                        Ok(Ok(a)) => duplicates += u64::from(a.duplicate),
                        Ok(Err(e)) => {
                            failed.push(i);
                            last_error = Some(e.to_string());
                        }
                        Err(_) => {
                            failed.push(i);
                            last_error = Some("timed out waiting for the PubAck".into());
                        }
                    }
                }
                tracing::debug!(component = %self.metrics.id, failed = failed.len(), "JetStream chunk done");
            }
            if !self.report_round(duplicates, failed.len(), last_error.as_deref()) {
                return 0;
            }
            let Some(delay) = retries.next_delay(None) else {
                return self.give_up(failed.len(), retries, last_error.as_deref());
            };
            tokio::time::sleep(delay).await;
            failed.sort_unstable();
            todo = failed;
        }
    }

    /// Encodes a batch: its messages (payloads share one buffer) and their total size. Events
    /// whose subject or encoding fails are rejected and counted.
    fn encode(&mut self, batch: &EventBatch) -> (Vec<Outgoing>, u64) {
        let codec = self.cfg.encoding.codec;
        let mut items = Vec::with_capacity(batch.len());
        let mut bytes = 0u64;
        let mut out = BytesMut::new();
        for e in batch.iter() {
            let subject = if self.subject.is_dynamic() {
                self.subject_buf.clear();
                if let Err(err) = self.subject.render_into(e, &mut self.subject_buf) {
                    e.metadata().update_status(EventStatus::Rejected);
                    self.metrics.error("template", 1, &err);
                    continue;
                }
                if !is_valid_publish_subject(&self.subject_buf) {
                    e.metadata().update_status(EventStatus::Rejected);
                    self.metrics.error(
                        "template",
                        1,
                        &format_args!(
                            "rendered subject {:?} is not a valid NATS subject; event rejected",
                            self.subject_buf
                        ),
                    );
                    continue;
                }
                async_nats::Subject::from(self.subject_buf.as_str())
            } else {
                self.static_subject.clone()
            };
            self.buf.clear();
            if let Err(err) = codec.encode(e, &mut self.buf) {
                e.metadata().update_status(EventStatus::Rejected);
                self.metrics.error("encode", 1, &err);
                continue;
            }
            bytes += self.buf.len() as u64;
            if out.capacity() < self.buf.len() {
                // One allocation shared by the payloads of many events; small enough (16 KiB)
                // that the allocator reuses its pages instead of mapping fresh ones per batch.
                out.reserve(self.buf.len().max(16 * 1024));
            }
            out.extend_from_slice(&self.buf);
            let id = if self.js.is_some() {
                self.next_id += 1;
                self.next_id
            } else {
                0
            };
            items.push(Outgoing {
                subject,
                payload: out.split().freeze(),
                id,
            });
        }
        (items, bytes)
    }

    /// The JetStream message of `it`, with its `Nats-Msg-Id`.
    fn message(&self, it: &Outgoing) -> jetstream::message::PublishMessage {
        let mut id = String::with_capacity(self.id_prefix.len() + 12);
        id.push_str(&self.id_prefix);
        id.push('-');
        let _ = write!(id, "{}", it.id);
        jetstream::message::PublishMessage::build()
            .payload(it.payload.clone())
            .message_id(id)
    }

    /// Publishes a batch's messages to JetStream (first attempt) and returns the future that
    /// awaits their PubAcks, so the next batch can be published meanwhile.
    async fn publish_window(&self, js: &jetstream::Context, items: &[Outgoing]) -> AckWait {
        let wait = self.cfg.request.timeout();
        let mut outcome = AckOutcome::default();
        let mut acks = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            match tokio::time::timeout(wait, js.send_publish(it.subject.clone(), self.message(it)))
                .await
            {
                Ok(Ok(ack)) => acks.push((i, ack)),
                Ok(Err(e)) => {
                    outcome.failed.push(i);
                    outcome.last_error = Some(e.to_string());
                }
                Err(_) => {
                    outcome.failed.push(i);
                    outcome.last_error = Some("timed out handing the message to the client".into());
                }
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        Box::pin(async move {
            for (i, ack) in acks {
                match tokio::time::timeout_at(deadline, ack.into_future()).await {
                    Ok(Ok(a)) => outcome.duplicates += u64::from(a.duplicate),
                    Ok(Err(e)) => {
                        outcome.failed.push(i);
                        outcome.last_error = Some(e.to_string());
                    }
                    Err(_) => {
                        outcome.failed.push(i);
                        outcome.last_error = Some("timed out waiting for the PubAck".into());
                    }
                }
            }
            outcome
        })
    }

    /// Counts one round of JetStream publishing: duplicates reported by PubAcks and, when
    /// some failed, the error and the retries to come. Returns whether there is a retry.
    fn report_round(&self, duplicates: u64, failed: usize, last_error: Option<&str>) -> bool {
        if duplicates > 0 {
            self.metrics
                .add_counter("nats_jetstream_duplicates_total", None, duplicates);
        }
        let Some(e) = last_error else { return false };
        self.metrics.error(
            "publish",
            failed as u64,
            &format_args!(
                "{failed} JetStream publish(es) not acknowledged ({e}); retrying with the same Nats-Msg-Id (the batch is held, upstream waits)"
            ),
        );
        self.metrics
            .add_counter("nats_publish_retries_total", None, failed as u64);
        true
    }

    /// A batch's PubAcks are in: publishes the failed ones again (same ids) until stored, then
    /// acknowledges the batch.
    async fn settle(&self, js: &jetstream::Context, f: InFlight, mut outcome: AckOutcome) {
        let failed = outcome.failed.len();
        let mut gave_up = 0;
        if self.report_round(outcome.duplicates, failed, outcome.last_error.as_deref()) {
            let mut retries = self.cfg.request.retries();
            match retries.next_delay(None) {
                Some(delay) => {
                    tokio::time::sleep(delay).await;
                    outcome.failed.sort_unstable();
                    gave_up = self
                        .publish_jetstream(js, &f.items, outcome.failed, &mut retries)
                        .await;
                }
                None => {
                    gave_up = self.give_up(failed, &retries, outcome.last_error.as_deref());
                }
            }
        }
        self.metrics
            .add_sent(f.items.len().saturating_sub(gave_up) as u64);
        self.metrics.add_sent_bytes(f.bytes);
        if let Some(mut b) = f.batch {
            b.finalize(if gave_up > 0 {
                EventStatus::Errored
            } else {
                EventStatus::Delivered
            });
        }
    }

    /// Counts and logs messages given up after `request.retry_attempts`; their batch is
    /// finalized as errored. Returns how many.
    fn give_up(&self, n: usize, retries: &Retries, last_error: Option<&str>) -> usize {
        self.metrics.error(
            "gave_up",
            n as u64,
            &format_args!(
                "giving up on {n} JetStream message(s) after {} attempts: {}",
                retries.failed(),
                last_error.unwrap_or("not acknowledged")
            ),
        );
        n
    }

    /// Waits until the client has written what was published to the server, the only
    /// confirmation core NATS gives. While the server is down this holds the batch, so that
    /// backpressure reaches the sources, instead of the client's buffer growing with batches
    /// counted as delivered that a restart would lose. `false`: the sink was told to stop
    /// while waiting (the batch is then errored).
    async fn flushed(&self) -> bool {
        let mut backoff =
            weir_pipeline::retry::Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let why =
                match tokio::time::timeout(self.cfg.request.timeout(), self.client.flush()).await {
                    Ok(Ok(())) => return true,
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!(
                        "not written to the server within {:?}",
                        self.cfg.request.timeout()
                    ),
                };
            self.metrics.error(
                "flush",
                1,
                &format_args!(
                    "cannot flush to NATS: {why}; waiting (the batch is held, upstream waits)"
                ),
            );
            tokio::select! {
                _ = tokio::time::sleep(backoff.next_delay()) => {}
                _ = self.stop.cancelled() => return false,
            }
        }
    }

    /// Publishes to core NATS: handed to the client, which writes them out (and holds them
    /// while reconnecting). Returns the messages the client refused.
    async fn publish_core(&self, items: &[Outgoing]) -> u64 {
        let mut failed = 0;
        for it in items {
            if let Err(e) = self
                .client
                .publish(it.subject.clone(), it.payload.clone())
                .await
            {
                failed += 1;
                self.metrics.error(
                    "publish",
                    1,
                    &format_args!("cannot publish to {}: {e}", it.subject),
                );
            }
        }
        failed
    }
}

#[async_trait]
impl Sink for NatsSink {
    async fn run(mut self: Box<Self>, mut input: SinkInput) -> Result<(), BoxError> {
        let js = self.js.clone();
        // JetStream chunks published and awaiting PubAcks, oldest first, and the chunks of
        // the current batch not yet published: one goes out whenever it fits in
        // `request.concurrency` beside the unacknowledged ones (or nothing is in flight).
        let max_inflight = self.cfg.request.concurrency();
        let chunk_len = (max_inflight / 4).max(1);
        let mut window: VecDeque<InFlight> = VecDeque::new();
        let mut queued: VecDeque<Chunk> = VecDeque::new();
        let mut unacked = 0usize;
        let mut open = true;
        loop {
            if let Some(js) = &js {
                while queued
                    .front()
                    .is_some_and(|c| window.is_empty() || unacked + c.items.len() <= max_inflight)
                {
                    let Some(c) = queued.pop_front() else { break };
                    let acks = self.publish_window(js, &c.items).await;
                    unacked += c.items.len();
                    window.push_back(InFlight {
                        batch: c.batch,
                        items: c.items,
                        bytes: c.bytes,
                        acks,
                    });
                }
            }
            // A new batch once the current one is all published.
            let room = open && queued.is_empty();
            if !open && window.is_empty() && queued.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                outcome = async {
                    match window.front_mut() {
                        Some(f) => Some(f.acks.as_mut().await),
                        None => None,
                    }
                }, if !window.is_empty() => {
                    if let (Some(outcome), Some(js), Some(f)) = (outcome, &js, window.pop_front()) {
                        unacked -= f.items.len();
                        self.settle(js, f, outcome).await;
                    }
                }
                next = input.next(), if room => {
                    let Some(mut batch) = next else {
                        open = false;
                        continue;
                    };
                    let (items, bytes) = self.encode(&batch);
                    match &js {
                        Some(_) => {
                            queue_chunks(&mut queued, batch, items, bytes, chunk_len);
                        }
                        None => {
                            let failed = self.publish_core(&items).await;
                            let flushed = self.flushed().await;
                            if flushed {
                                self.metrics.add_sent(items.len() as u64 - failed);
                                self.metrics.add_sent_bytes(bytes);
                            }
                            batch.finalize(if failed > 0 || !flushed {
                                EventStatus::Errored
                            } else {
                                EventStatus::Delivered
                            });
                        }
                    }
                }
                else => break,
            }
        }
        // Write out what the client still holds before the process exits.
        if let Err(e) = tokio::time::timeout(Duration::from_secs(10), self.client.flush())
            .await
            .unwrap_or_else(|_| Ok(()))
        {
            tracing::warn!(component = %self.metrics.id, "flushing to NATS at shutdown failed: {e}");
        }
        Ok(())
    }
}

/// Splits an encoded batch into chunks of at most `chunk_len` messages; the batch rides on
/// the last one (an empty batch, all of whose events were rejected, on an empty chunk).
fn queue_chunks(
    queued: &mut VecDeque<Chunk>,
    batch: EventBatch,
    mut items: Vec<Outgoing>,
    bytes: u64,
    chunk_len: usize,
) {
    let total = items.len().max(1);
    let mut left = bytes;
    while items.len() > chunk_len {
        let rest = items.split_off(chunk_len);
        let share = bytes * chunk_len as u64 / total as u64;
        left -= share.min(left);
        queued.push_back(Chunk {
            batch: None,
            items,
            bytes: share,
        });
        items = rest;
    }
    queued.push_back(Chunk {
        batch: Some(batch),
        items,
        bytes: left,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_queued_in_chunks_and_rides_on_the_last() {
        let out = |id: u64| Outgoing {
            subject: async_nats::Subject::from("s"),
            payload: Bytes::from_static(b"x"),
            id,
        };
        let mut q = VecDeque::new();
        queue_chunks(
            &mut q,
            EventBatch::default(),
            (0..1001).map(out).collect(),
            1001,
            250,
        );
        let lens: Vec<usize> = q.iter().map(|c| c.items.len()).collect();
        assert_eq!(lens, [250, 250, 250, 250, 1]);
        let riders: Vec<bool> = q.iter().map(|c| c.batch.is_some()).collect();
        assert_eq!(riders, [false, false, false, false, true]);
        assert_eq!(q.iter().map(|c| c.bytes).sum::<u64>(), 1001);
        let ids: Vec<u64> = q
            .iter()
            .flat_map(|c| c.items.iter().map(|o| o.id))
            .collect();
        assert_eq!(ids, (0..1001).collect::<Vec<_>>());
        // A batch whose events were all rejected still gets its (empty) chunk, to be
        // finalized in order.
        let mut q = VecDeque::new();
        queue_chunks(&mut q, EventBatch::default(), Vec::new(), 0, 250);
        assert_eq!(q.len(), 1);
        assert!(q[0].batch.is_some() && q[0].items.is_empty());
    }

    #[test]
    fn parses_options() {
        let c: NatsSinkConfig = toml::from_str(
            r#"
url = "nats://127.0.0.1:4222"
subject = "logs.{{ service }}"
jetstream = true
auth.token = "s3cret"
"#,
        )
        .unwrap();
        assert!(c.jetstream);
        assert_eq!(c.request.timeout(), Duration::from_secs(5));
        assert_eq!(
            c.auth
                .token
                .as_ref()
                .map(weir_pipeline::config::Secret::expose),
            Some("s3cret")
        );
        assert!(
            toml::from_str::<NatsSinkConfig>("url = \"x\"\nsubject = \"a\"\nbogus = 1").is_err()
        );
    }
}
