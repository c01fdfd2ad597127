//! `nats`: messages from NATS, decoded into events.
//!
//! Two modes:
//!
//! - **core** (default): a subscription to `subject`, optionally in a queue group so several
//!   Weir aggregators share the messages. Core NATS keeps nothing: what arrives while Weir is
//!   down is lost, and there is nothing to acknowledge.
//! - **JetStream** (`jetstream = true`): a durable pull consumer on `stream`. Each message is
//!   acknowledged to the server only when the batch holding its events has been delivered by
//!   every sink (with `acknowledgements = true` on the source; without, as soon as the batch is
//!   handed to the pipeline). Messages not acknowledged (Weir killed, a sink gave up) are
//!   delivered again by the server after `ack_wait_secs` (or at once, with a NAK, for a batch
//!   that errored); redeliveries are counted. A batch a sink rejected for good is terminated
//!   (`+TERM`), not redelivered.
//!
//! A message that fails to decode is counted (`decode` error, logged with its subject and
//! stream sequence) and acknowledged, so a poison message is not delivered forever. The subject
//! and headers of each message are added to its events' fields (`subject_key`, `headers_key`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use weir_connect::nats::async_nats::jetstream;
use weir_connect::nats::async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use weir_connect::nats::async_nats::jetstream::AckKind;
use weir_connect::nats::{async_nats, connect, NatsAuthConfig, NatsConnect};
use weir_connect::tls::{ClientTls, TlsClientConfig};
use weir_pipeline::codec::DecodingConfig;
use weir_pipeline::component::{Output, Source, SourceConfig, SourceContext};
use weir_pipeline::config::Secs;
use weir_pipeline::event::{Event, EventBatch, KeyString, ObjectMap, Value};
use weir_pipeline::finalization::{BatchNotifier, BatchStatus, EventStatus};
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::retry::Backoff;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

/// Batches handed to the pipeline and not yet acknowledged before the source stops pulling.
const MAX_OUTSTANDING_BATCHES: usize = 16;

/// `type = "nats"`: subscribes to NATS (core or a JetStream durable pull consumer).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsSourceConfig {
    /// Server URL(s), comma separated: `nats://127.0.0.1:4222`, `tls://nats.example:4222`.
    /// Required.
    pub url: String,
    /// Send the credentials (`auth.password`, `auth.token`) over a connection without TLS. Default: false: a
    /// component with credentials and a `nats://` address does not start.
    #[serde(default)]
    pub allow_plaintext_credentials: bool,
    /// Core: the subject to subscribe to (wildcards allowed, `logs.>`); required without
    /// `jetstream`. JetStream: the filter subject of the consumer when Weir creates it. Default:
    /// none (with JetStream: the whole stream).
    #[serde(default)]
    pub subject: Option<String>,
    /// Core: join this queue group; the members of a group share the messages. Not with `jetstream`
    /// (instances sharing one durable `consumer` split the messages instead). Default: none (every
    /// subscriber gets every message).
    #[serde(default)]
    pub queue_group: Option<String>,
    /// Consume from a JetStream stream with a durable pull consumer and acknowledge each
    /// message after delivery. Default: false (core subscription).
    #[serde(default)]
    pub jetstream: bool,
    /// JetStream: the stream. It must exist (Weir does not create streams); until it does, Weir
    /// logs and retries. Required with `jetstream`.
    #[serde(default)]
    pub stream: Option<String>,
    /// JetStream: the durable consumer's name. Created if missing (explicit acks, deliver all),
    /// used as it is if it exists. Required with `jetstream`.
    #[serde(default)]
    pub consumer: Option<String>,
    /// Messages per pull request, and at most this many messages per batch of events.
    /// Default: 500.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// JetStream: when Weir creates the consumer, how long the server waits for an
    /// acknowledgement before delivering a message again. Set it above the time your sinks
    /// need to deliver. Default: 30.
    #[serde(default = "default_ack_wait")]
    pub ack_wait_secs: Secs,
    /// JetStream: when Weir creates the consumer, how many messages may be delivered and not
    /// yet acknowledged. Default: 10000.
    #[serde(default = "default_max_ack_pending")]
    pub max_ack_pending: i64,
    /// How each payload becomes events (`bytes`, `json`, `logfmt`, `syslog`, `hubble_jsonpb`). See
    /// [codecs](codecs.md#decoding). One message is one frame: no newline splitting. Default: `{
    /// codec = "bytes" }` (the payload as `message`).
    #[serde(default)]
    pub decoding: DecodingConfig,
    /// Field that receives the message's subject. Empty: not added. Default: `subject`.
    #[serde(default = "default_subject_key")]
    pub subject_key: String,
    /// Field that receives the headers as an object (`{"Nats-Msg-Id": "..."}`; a header with
    /// several values becomes an array). Empty: not added. Absent when the message has no headers.
    /// Default: `headers`.
    #[serde(default = "default_headers_key")]
    pub headers_key: String,
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

fn default_batch_size() -> usize {
    500
}

fn default_ack_wait() -> Secs {
    Secs::from_secs(30)
}

fn default_max_ack_pending() -> i64 {
    10_000
}

fn default_subject_key() -> String {
    "subject".into()
}

fn default_headers_key() -> String {
    "headers".into()
}

#[async_trait]
impl SourceConfig for NatsSourceConfig {
    async fn build(&self, cx: SourceContext) -> Result<Source, BoxError> {
        if self.batch_size == 0 {
            return Err("`batch_size` must be at least 1".into());
        }
        if self.jetstream {
            if self.stream.as_deref().is_none_or(str::is_empty) {
                return Err("`stream` is required with `jetstream = true`".into());
            }
            if self.consumer.as_deref().is_none_or(str::is_empty) {
                return Err("`consumer` is required with `jetstream = true`".into());
            }
            if self.queue_group.is_some() {
                return Err("`queue_group` is for core subscriptions; with JetStream, several Weir instances sharing one `consumer` split the messages".into());
            }
        } else if self.subject.as_deref().is_none_or(str::is_empty) {
            return Err("`subject` is required (without `jetstream`)".into());
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
        let cfg = self.clone();
        if self.jetstream {
            if !cx.acknowledgements {
                tracing::info!(component = %cx.id, "acknowledgements are off: JetStream messages are acknowledged when handed to the pipeline, so a crash can lose what was in flight; set `acknowledgements = true` on this source to acknowledge them only after delivery");
            }
            Ok(Box::pin(run_jetstream(cfg, client, cx)))
        } else {
            Ok(Box::pin(run_core(cfg, client, cx)))
        }
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::default_output(DataType::LOG)]
    }

    fn can_acknowledge(&self) -> bool {
        self.jetstream
    }

    fn check_environment(&self) -> Result<(), BoxError> {
        Ok(TlsClientConfig::check(self.tls.as_ref())?)
    }
}

/// Decodes payloads into events and adds subject and headers.
struct Decode {
    cfg: NatsSourceConfig,
    source_id: Option<Arc<str>>,
    metrics: Arc<ComponentMetrics>,
}

impl Decode {
    /// Appends the events of one message to `out`. On a decode error, counts and logs it with
    /// `where_` (subject, stream sequence) and returns false.
    fn message(
        &self,
        subject: &str,
        payload: Bytes,
        headers: Option<&async_nats::HeaderMap>,
        where_: &dyn std::fmt::Display,
        out: &mut Vec<Event>,
    ) -> bool {
        self.metrics.add_received_bytes(payload.len() as u64);
        let start = out.len();
        if let Err(e) = self
            .cfg
            .decoding
            .codec
            .decode(payload, &self.source_id, out)
        {
            out.truncate(start);
            self.metrics.error(
                "decode",
                1,
                &format_args!("cannot decode the NATS message {where_}: {e}; message skipped"),
            );
            return false;
        }
        let headers = match headers {
            Some(h) if !h.is_empty() && !self.cfg.headers_key.is_empty() => Some(headers_value(h)),
            _ => None,
        };
        for e in &mut out[start..] {
            let Some(log) = e.as_log_mut() else { continue };
            if !self.cfg.subject_key.is_empty() {
                log.insert_field(
                    &self.cfg.subject_key,
                    Value::Bytes(Bytes::copy_from_slice(subject.as_bytes())),
                );
            }
            if let Some(h) = &headers {
                log.insert_field(&self.cfg.headers_key, h.clone());
            }
        }
        true
    }
}

fn headers_value(h: &async_nats::HeaderMap) -> Value {
    let mut m = ObjectMap::new();
    for (name, values) in h.iter() {
        let text = |v: &async_nats::HeaderValue| {
            Value::Bytes(Bytes::copy_from_slice(v.as_str().as_bytes()))
        };
        let v = match values.as_slice() {
            [one] => text(one),
            many => Value::Array(many.iter().map(text).collect()),
        };
        m.insert(KeyString::from(AsRef::<str>::as_ref(name)), v);
    }
    Value::Object(m)
}

async fn run_core(
    cfg: NatsSourceConfig,
    client: async_nats::Client,
    mut cx: SourceContext,
) -> Result<(), BoxError> {
    let subject = cfg.subject.clone().unwrap_or_default();
    let sub = match &cfg.queue_group {
        Some(q) => client.queue_subscribe(subject.clone(), q.clone()).await,
        None => client.subscribe(subject.clone()).await,
    }
    .map_err(|e| format!("cannot subscribe to {subject:?}: {e}"))?;
    let batch_size = cfg.batch_size;
    let decode = Decode {
        cfg,
        source_id: Some(cx.id.clone()),
        metrics: cx.metrics.clone(),
    };
    let mut chunks = sub.ready_chunks(batch_size);
    loop {
        let msgs = tokio::select! {
            m = chunks.next() => match m {
                Some(m) => m,
                None => break,
            },
            _ = cx.shutdown.cancelled() => break,
        };
        let mut events = Vec::with_capacity(msgs.len());
        for m in msgs {
            decode.message(
                m.subject.as_str(),
                m.payload,
                m.headers.as_ref(),
                &format_args!("on subject {}", m.subject),
                &mut events,
            );
        }
        if cx.out.send(EventBatch::new(events)).await.is_err() {
            break;
        }
    }
    let mut sub = chunks.into_inner();
    let _ = sub.unsubscribe().await;
    Ok(())
}

/// Gets (or creates) the durable consumer, retrying with backoff while the server or the
/// stream is not there yet. `None` when shutdown came first.
async fn consumer(
    cfg: &NatsSourceConfig,
    js: &jetstream::Context,
    cx: &SourceContext,
) -> Option<PullConsumer> {
    let stream_name = cfg.stream.clone().unwrap_or_default();
    let name = cfg.consumer.clone().unwrap_or_default();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let attempt = async {
            let stream = js
                .get_stream(&stream_name)
                .await
                .map_err(|e| format!("cannot get JetStream stream {stream_name:?}: {e}"))?;
            stream
                .get_or_create_consumer(
                    &name,
                    pull::Config {
                        durable_name: Some(name.clone()),
                        ack_policy: AckPolicy::Explicit,
                        ack_wait: cfg.ack_wait_secs.duration(),
                        max_ack_pending: cfg.max_ack_pending,
                        filter_subject: cfg.subject.clone().unwrap_or_default(),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| {
                    format!("cannot get or create consumer {name:?} on stream {stream_name:?}: {e}")
                })
        };
        let err = tokio::select! {
            r = attempt => match r {
                Ok(c) => return Some(c),
                Err(e) => e,
            },
            _ = cx.shutdown.cancelled() => return None,
        };
        cx.metrics
            .error("connect", 1, &format_args!("{err}; retrying"));
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            _ = cx.shutdown.cancelled() => return None,
        }
    }
}

/// Messages of one batch, waiting for the batch's fate.
type Waiting = std::pin::Pin<
    Box<dyn std::future::Future<Output = (BatchStatus, Vec<jetstream::message::Acker>)> + Send>,
>;

async fn settle(
    status: BatchStatus,
    ackers: Vec<jetstream::message::Acker>,
    metrics: &ComponentMetrics,
) {
    let kind = match status {
        EventStatus::Delivered => AckKind::Ack,
        EventStatus::Errored => {
            metrics.add_counter("nats_naks_total", None, ackers.len() as u64);
            AckKind::Nak(Some(Duration::from_secs(1)))
        }
        EventStatus::Rejected => {
            metrics.add_counter("nats_terminated_total", None, ackers.len() as u64);
            AckKind::Term
        }
    };
    for a in ackers {
        if let Err(e) = a.ack_with(kind).await {
            metrics.error(
                "ack",
                1,
                &format_args!("cannot acknowledge a JetStream message ({e}); the server will deliver it again"),
            );
        }
    }
}

async fn run_jetstream(
    cfg: NatsSourceConfig,
    client: async_nats::Client,
    mut cx: SourceContext,
) -> Result<(), BoxError> {
    let js = jetstream::new(client.clone());
    let acknowledgements = cx.acknowledgements;
    let batch_size = cfg.batch_size;
    let Some(consumer) = consumer(&cfg, &js, &cx).await else {
        return Ok(());
    };
    let decode = Decode {
        cfg,
        source_id: Some(cx.id.clone()),
        metrics: cx.metrics.clone(),
    };
    let metrics = cx.metrics.clone();
    let mut pending: FuturesUnordered<Waiting> = FuturesUnordered::new();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    'outer: loop {
        let messages = tokio::select! {
            m = consumer.stream().max_messages_per_batch(batch_size).messages() => m,
            _ = cx.shutdown.cancelled() => break,
        };
        let messages = match messages {
            Ok(m) => m,
            Err(e) => {
                metrics.error(
                    "receive",
                    1,
                    &format_args!("cannot pull from JetStream: {e}; retrying"),
                );
                tokio::select! {
                    _ = tokio::time::sleep(backoff.next_delay()) => continue,
                    _ = cx.shutdown.cancelled() => break,
                }
            }
        };
        let mut chunks = messages.ready_chunks(batch_size);
        loop {
            tokio::select! {
                biased;
                Some((status, ackers)) = pending.next(), if !pending.is_empty() => {
                    settle(status, ackers, &metrics).await;
                }
                chunk = chunks.next(), if pending.len() < MAX_OUTSTANDING_BATCHES => {
                    let Some(chunk) = chunk else {
                        // The pull stream ended: start a new one.
                        continue 'outer;
                    };
                    backoff.reset();
                    let Some((batch, ackers)) = take_chunk(chunk, &decode, &metrics).await else {
                        continue;
                    };
                    let mut batch = batch;
                    if batch.is_empty() {
                        // Nothing to deliver (e.g. an empty JSON array): done.
                        settle(EventStatus::Delivered, ackers, &metrics).await;
                        continue;
                    }
                    let rx = if acknowledgements {
                        let (n, rx) = BatchNotifier::new_with_receiver();
                        batch.attach_notifier(&n);
                        Some(rx)
                    } else {
                        None
                    };
                    if cx.out.send(batch).await.is_err() {
                        // The pipeline is gone; the server redelivers what was not acked.
                        break 'outer;
                    }
                    match rx {
                        Some(rx) => pending.push(Box::pin(async move { (rx.await, ackers) })),
                        None => settle(EventStatus::Delivered, ackers, &metrics).await,
                    }
                }
                _ = cx.shutdown.cancelled() => break 'outer,
            }
        }
    }
    // Nothing more to send: let the downstream see the end of this input, then wait for the
    // batches in flight (the pipeline drains them) and acknowledge them.
    drop(cx.out);
    while let Some((status, ackers)) = pending.next().await {
        settle(status, ackers, &metrics).await;
    }
    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(5), client.flush()).await {
        tracing::warn!(component = %metrics.id, "flushing the last acknowledgements failed: {e}");
    }
    Ok(())
}

/// Decodes one chunk of pulled messages into a batch, with the ackers of the messages it
/// holds. Messages that fail to decode are acknowledged here (not redelivered forever).
async fn take_chunk<E: std::fmt::Display>(
    chunk: Vec<Result<jetstream::Message, E>>,
    decode: &Decode,
    metrics: &ComponentMetrics,
) -> Option<(EventBatch, Vec<jetstream::message::Acker>)> {
    let mut events = Vec::with_capacity(chunk.len());
    let mut ackers = Vec::with_capacity(chunk.len());
    let mut redelivered = 0u64;
    for m in chunk {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                metrics.error("receive", 1, &format_args!("pulling from JetStream: {e}"));
                continue;
            }
        };
        let (seq, delivered) = match m.info() {
            Ok(i) => (i.stream_sequence, i.delivered),
            Err(_) => (0, 1),
        };
        if delivered > 1 {
            redelivered += 1;
        }
        let (msg, acker) = m.split();
        let ok = decode.message(
            msg.subject.as_str(),
            msg.payload,
            msg.headers.as_ref(),
            &format_args!(
                "on subject {} (stream sequence {seq}, delivery {delivered})",
                msg.subject
            ),
            &mut events,
        );
        if ok {
            ackers.push(acker);
        } else if let Err(e) = acker.ack().await {
            metrics.error(
                "ack",
                1,
                &format_args!(
                    "cannot acknowledge the undecodable message at stream sequence {seq}: {e}"
                ),
            );
        }
    }
    if redelivered > 0 {
        metrics.add_counter("nats_redelivered_total", None, redelivered);
    }
    if events.is_empty() && ackers.is_empty() {
        return None;
    }
    Some((EventBatch::new(events), ackers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options() {
        let c: NatsSourceConfig = toml::from_str(
            r#"
url = "nats://127.0.0.1:4222"
jetstream = true
stream = "LOGS"
consumer = "weir"
decoding.codec = "json"
"#,
        )
        .unwrap();
        assert!(c.jetstream);
        assert_eq!(c.batch_size, 500);
        assert_eq!(c.headers_key, "headers");
        assert!(toml::from_str::<NatsSourceConfig>("url = \"x\"\nbogus = 1").is_err());
    }

    /// NATS messages (payload, subject, headers) decoded with every codec, mutated: a message
    /// gives events or one counted decode error, never a panic. The input is the payload;
    /// its first line, if it has several, also becomes a header's values and the subject.
    #[test]
    fn fuzz_nats_messages() {
        let decoders: Vec<Decode> = ["bytes", "json", "logfmt", "syslog"]
            .iter()
            .map(|codec| Decode {
                cfg: toml::from_str(&format!(
                    "url = \"nats://127.0.0.1:4222\"\nsubject = \"logs.>\"\ndecoding.codec = \"{codec}\"\nsubject_key = \"subject.name\"\nheaders_key = \"h\""
                ))
                .unwrap(),
                source_id: Some(Arc::from("nats")),
                metrics: Arc::new(ComponentMetrics::new(
                    "nats",
                    weir_pipeline::vocabulary::ComponentKind::Source,
                    "nats",
                )),
            })
            .collect();
        weir_testing::fuzz::Fuzz::new("nats_messages")
            .seed("logs.app\n{\"level\":\"info\",\"msg\":\"started\"}")
            .seed("logs.app\nlevel=info msg=\"started é\"")
            .seed("<13>Oct 11 22:14:15 host app[42]: a BSD line")
            .run(|input| {
                let text = String::from_utf8_lossy(input);
                let (first, _) = text.split_once('\n').unwrap_or(("", ""));
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", first);
                headers.append("Nats-Msg-Id", "second");
                for d in &decoders {
                    let mut out = Vec::new();
                    let ok = d.message(
                        first,
                        Bytes::copy_from_slice(input),
                        Some(&headers),
                        &"fuzz",
                        &mut out,
                    );
                    assert!(ok || out.is_empty());
                }
            });
    }
}
