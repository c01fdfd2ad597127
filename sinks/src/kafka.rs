//! `kafka`: events produced to Kafka topics templated from their fields.
//!
//! Each event becomes one record: the topic rendered from `topic`, the key from `key_field`,
//! headers from the object in `headers_key`, the value encoded by `encoding`. A batch is
//! acknowledged from librdkafka's delivery reports (with the producer's `acks`, `all` by
//! default): only when every record of it has been stored by the brokers.
//!
//! What can go wrong, and what the sink does:
//!
//! - **librdkafka's queue is full**: wait and hand the record over again (backpressure).
//! - **a retriable error** (broker down, leader moving, timeout, unknown topic, topic or
//!   cluster authorization failed: credentials and ACLs are not verdicts on the data): librdkafka
//!   retries on its own until `message_timeout_ms`; a record that still fails is produced
//!   again by the sink with backoff (`request.retry_*`), holding its batch, so the buffer fills
//!   and upstream waits. Nothing is dropped unless `request.retry_attempts` is set (then the
//!   batch is finalized as errored); every failure is counted
//!   (`errors_total{error_type="produce"}`, `kafka_produce_retries_total`) and logged.
//! - **a permanent error for one record** (too large, invalid topic name, policy violation): the
//!   event is rejected (counted, logged) and its batch finalized as rejected.
//! - **a fatal error of the producer** (librdkafka's `ERR__FATAL`, e.g. the idempotent producer
//!   fenced): the sink stops with the error; the runtime finalizes what is queued as errored.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use weir_connect::kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use weir_connect::kafka::rdkafka::message::{Header, OwnedHeaders};
use weir_connect::kafka::rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use weir_connect::kafka::{client_config, KafkaClientContext, KafkaConnect, KafkaSaslConfig};
use weir_connect::tls::TlsClientConfig;
use weir_pipeline::codec::EncodingConfig;
use weir_pipeline::component::{Sink, SinkConfig, SinkContext, SinkInput};
use weir_pipeline::config::{Concurrency, Secs};
use weir_pipeline::event::{parse_path, Event, EventBatch, FieldPath, Value};
use weir_pipeline::finalization::EventStatus;
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::template::Template;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use crate::toolkit::{RequestConfig, RequestDefaults, Retries};

type Producer_ = FutureProducer<KafkaClientContext>;

/// `type = "kafka"`: produces each event as one Kafka record.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Brokers to bootstrap from, comma separated: `kafka-1:9092,kafka-2:9092`. Required.
    pub bootstrap_servers: String,
    /// The topic template: `{{ field.path }}` parts are filled from each event and strftime parts
    /// (`%Y`) from the event's time, as in [file](file.md#path-templates). A fixed topic must be a
    /// valid name at `weir run`; a rendered one is checked per event, and events missing a field
    /// are rejected and counted. Topics are not created by Weir. Required.
    pub topic: String,
    /// Field whose value is the record's key: a string as it is, another value as JSON. Events
    /// without the field get no key (the partitioner then spreads them). Default: none.
    #[serde(default)]
    pub key_field: Option<String>,
    /// Field holding an object whose entries become the record's headers (strings as they are,
    /// other values as JSON). Default: none.
    #[serde(default)]
    pub headers_key: Option<String>,
    /// The record's value: `json` (the whole event), `text` (the `message` field as it is),
    /// `logfmt`. See [codecs](codecs.md#encoding). Default: `{ codec = "json" }`.
    #[serde(default)]
    pub encoding: EncodingConfig,
    /// Compression of record batches (`compression.type`). Default: `none`.
    #[serde(default)]
    pub compression: Compression,
    /// How long librdkafka retries a record on its own before reporting it failed
    /// (`message.timeout.ms`); the sink then produces it again (below). Default: 30000.
    #[serde(default = "default_message_timeout_ms")]
    pub message_timeout_ms: u64,
    /// `concurrency`: batches being delivered at once (more keep the brokers busy while
    /// earlier batches wait for their delivery reports; default 8);
    /// `retry_initial_backoff_secs` (default 0.1) and `retry_max_duration_secs` (default 5):
    /// the waits before a failed record is produced again; `retry_attempts` (default: unset,
    /// produce again until stored or refused for good; records given up are finalized as
    /// errored). librdkafka's own timeout is `message_timeout_ms` (`timeout_secs` does not
    /// apply).
    #[serde(default)]
    pub request: RequestConfig<KafkaRequest>,
    /// Any [librdkafka producer
    /// property](https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md), applied
    /// last: `librdkafka_options."linger.ms" = "10"`. A misspelt name or a bad value fails `weir
    /// run` with librdkafka's message. The properties the sink sets from its own options (listed
    /// below) are refused, with the option to use instead. Default: none.
    #[serde(default)]
    pub librdkafka_options: BTreeMap<String, String>,
    /// TLS (`enabled`, `ca_file`, `crt_file`, `key_file`, `key_pass`, `verify_certificate`,
    /// `verify_hostname`: the `tls` table shared by every component, see
    /// docs/configuration.md; mapped to librdkafka's `ssl.*` properties). Default: off (on
    /// when a `tls` option is set).
    #[serde(default)]
    pub tls: Option<TlsClientConfig>,
    /// SASL authentication. Default: none.
    #[serde(default)]
    pub sasl: Option<KafkaSaslConfig>,
    /// Send the credentials (`sasl.password` with mechanism `PLAIN`) over a connection without TLS. Default: false: a
    /// component with credentials and a non-TLS address does not start.
    #[serde(default)]
    pub allow_plaintext_credentials: bool,
}

/// `compression`: librdkafka's `compression.type`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

fn default_message_timeout_ms() -> u64 {
    30_000
}

/// The kafka sink's `request` defaults: 8 batches in flight, retries from 0.1 to 5 seconds
/// apart, forever (unless `retry_attempts`).
#[derive(Debug)]
pub struct KafkaRequest;

impl RequestDefaults for KafkaRequest {
    const CONCURRENCY: Concurrency = Concurrency::of(8);
    /// Not an option here (`message_timeout_ms` is librdkafka's).
    const TIMEOUT: Secs = Secs::from_secs(30);
    const RETRY_MAX_DURATION: Secs = Secs::from_secs(5);
    const NOT_HERE: &'static [(&'static str, &'static str)] = &[
        (
            "timeout_secs",
            "use `message_timeout_ms` (librdkafka's `message.timeout.ms`)",
        ),
        (
            "retry_statuses",
            "Kafka answers are not HTTP statuses (authorization errors are retried)",
        ),
        (
            "reject_statuses",
            "Kafka answers are not HTTP statuses (authorization errors are retried)",
        ),
    ];
}

/// librdkafka properties the sink sets from its own options.
const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "use `bootstrap_servers`"),
    ("compression.type", "use `compression`"),
    ("compression.codec", "use `compression`"),
    ("message.timeout.ms", "use `message_timeout_ms`"),
    ("delivery.timeout.ms", "use `message_timeout_ms`"),
];

#[async_trait]
impl SinkConfig for KafkaSinkConfig {
    async fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BoxError> {
        let topic = Template::parse(&self.topic).map_err(|e| format!("`topic`: {e}"))?;
        if !topic.is_dynamic() && !is_valid_topic(topic.as_str()) {
            return Err(format!(
                "`topic`: {:?} is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -)",
                self.topic
            )
            .into());
        }
        let path = |name: &str, p: &Option<String>| -> Result<Option<FieldPath>, BoxError> {
            p.as_deref()
                .map(|s| parse_path(s).map_err(|e| format!("`{name}`: {e}").into()))
                .transpose()
        };
        let key_field = path("key_field", &self.key_field)?;
        let headers_key = path("headers_key", &self.headers_key)?;
        if self.message_timeout_ms == 0 {
            return Err("`message_timeout_ms` must be at least 1".into());
        }
        let mut cfg = client_config(KafkaConnect {
            bootstrap_servers: &self.bootstrap_servers,
            tls: self.tls.as_ref(),
            sasl: self.sasl.as_ref(),
            allow_plaintext_credentials: self.allow_plaintext_credentials,
            librdkafka_options: &self.librdkafka_options,
            reserved: RESERVED,
        })?;
        cfg.set("compression.type", self.compression.as_str())
            .set("message.timeout.ms", self.message_timeout_ms.to_string());
        let producer: Producer_ = cfg
            .create_with_context(KafkaClientContext {
                metrics: cx.metrics.clone(),
            })
            .map_err(|e| format!("cannot create the Kafka producer: {e}"))?;
        Ok(Box::new(KafkaSink {
            cfg: self.clone(),
            topic,
            key_field,
            headers_key,
            producer: Arc::new(producer),
            metrics: cx.metrics,
        }))
    }

    fn input(&self) -> DataType {
        DataType::ALL
    }

    fn check_environment(&self) -> Result<(), BoxError> {
        Ok(weir_connect::kafka::check_tls(self.tls.as_ref())?)
    }
}

/// Kafka's rule for topic names.
fn is_valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

struct KafkaSink {
    cfg: KafkaSinkConfig,
    topic: Template,
    key_field: Option<FieldPath>,
    headers_key: Option<FieldPath>,
    producer: Arc<Producer_>,
    metrics: Arc<ComponentMetrics>,
}

/// One record, pointing into its batch's arenas.
struct Record {
    /// Index of its event in the batch.
    event: usize,
    topic: Range<usize>,
    key: Option<Range<usize>>,
    value: Range<usize>,
    headers: Option<OwnedHeaders>,
}

/// A batch on its way. Dropped before its outcome is known (the sink stopping on a fatal
/// error with batches in flight), it is finalized `Errored`: an event that merely goes away
/// counts as delivered, which an abandoned batch must not.
struct Held(Option<EventBatch>);

impl Held {
    fn batch(&self) -> &[Event] {
        self.0.as_ref().map_or(&[], |b| b.iter().as_slice())
    }

    fn finalize(mut self, status: EventStatus) {
        if let Some(mut b) = self.0.take() {
            b.finalize(status);
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(mut b) = self.0.take() {
            b.finalize(EventStatus::Errored);
        }
    }
}

/// A batch turned into records: all topics in one string, all keys and values in one byte
/// buffer, so encoding allocates per batch, not per event.
struct Prepared {
    batch: Held,
    topics: String,
    bytes: Vec<u8>,
    records: Vec<Record>,
    /// Some events were rejected while preparing (template, encoding).
    rejected: bool,
}

/// How a produce error is handled.
#[derive(Debug, PartialEq, Eq)]
enum ErrorClass {
    /// Produce the record again (after backoff).
    Retry,
    /// This record can never be stored: reject its event.
    Reject,
    /// The producer is unusable: stop the sink.
    Fatal,
}

fn classify(e: &KafkaError) -> ErrorClass {
    use RDKafkaErrorCode as C;
    let Some(code) = e.rdkafka_error_code() else {
        return ErrorClass::Retry;
    };
    match code {
        C::Fatal | C::ProducerFenced | C::InvalidRequiredAcks | C::UnsupportedCompressionType => {
            ErrorClass::Fatal
        }
        C::MessageSizeTooLarge
        | C::InvalidMessageSize
        | C::InvalidMessage
        | C::BadMessage
        | C::InvalidRecord
        | C::InvalidTopic
        | C::MessageBatchTooLarge
        | C::InvalidTimestamp
        | C::PolicyViolation
        | C::UnsupportedForMessageFormat => ErrorClass::Reject,
        _ => ErrorClass::Retry,
    }
}

/// The key or header value of a field: strings as they are, other values as JSON.
fn value_bytes(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Bytes(b) => out.extend_from_slice(b),
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

impl KafkaSink {
    /// Encodes a batch into records; rejects (and counts) the events that cannot be.
    fn prepare(&self, batch: EventBatch) -> Prepared {
        let codec = self.cfg.encoding.codec;
        let dynamic = self.topic.is_dynamic();
        let mut p = Prepared {
            topics: String::new(),
            bytes: Vec::with_capacity(batch.len() * 256),
            records: Vec::with_capacity(batch.len()),
            rejected: false,
            batch: Held(None),
        };
        if !dynamic {
            p.topics.push_str(self.topic.as_str());
        }
        let mut scratch = String::new();
        let mut last_topic: Option<Range<usize>> = None;
        for (event, e) in batch.iter().enumerate() {
            let topic = if dynamic {
                if let Err(err) = self.topic.render_into(e, &mut scratch) {
                    self.reject(e, &mut p.rejected, "template", &err);
                    continue;
                }
                if !is_valid_topic(&scratch) {
                    self.reject(
                        e,
                        &mut p.rejected,
                        "template",
                        &format_args!("rendered topic {scratch:?} is not a valid Kafka topic name"),
                    );
                    continue;
                }
                // Consecutive events mostly share a topic: store it once.
                match &last_topic {
                    Some(r) if p.topics[r.clone()] == scratch => r.clone(),
                    _ => {
                        let start = p.topics.len();
                        p.topics.push_str(&scratch);
                        let r = start..p.topics.len();
                        last_topic = Some(r.clone());
                        r
                    }
                }
            } else {
                0..p.topics.len()
            };
            let log = e.as_log();
            let key = match (&self.key_field, log) {
                (Some(path), Some(log)) => log.get(path).filter(|v| !v.is_null()).map(|v| {
                    let start = p.bytes.len();
                    value_bytes(v, &mut p.bytes);
                    start..p.bytes.len()
                }),
                _ => None,
            };
            let headers = match (&self.headers_key, log) {
                (Some(path), Some(log)) => match log.get(path) {
                    Some(Value::Object(map)) => {
                        let mut h = OwnedHeaders::new_with_capacity(map.len());
                        let mut buf = Vec::new();
                        for (k, v) in map {
                            buf.clear();
                            value_bytes(v, &mut buf);
                            h = h.insert(Header {
                                key: k.as_str(),
                                value: Some(&buf),
                            });
                        }
                        Some(h)
                    }
                    _ => None,
                },
                _ => None,
            };
            let start = p.bytes.len();
            if let Err(err) = codec.encode(e, &mut p.bytes) {
                p.bytes.truncate(start);
                self.reject(e, &mut p.rejected, "encode", &err);
                continue;
            }
            p.records.push(Record {
                event,
                topic,
                key,
                value: start..p.bytes.len(),
                headers,
            });
        }
        p.batch = Held(Some(batch));
        p
    }

    fn reject(
        &self,
        e: &Event,
        rejected: &mut bool,
        kind: &'static str,
        err: &dyn std::fmt::Display,
    ) {
        e.metadata().update_status(EventStatus::Rejected);
        *rejected = true;
        self.metrics
            .error(kind, 1, &format_args!("{err}; event rejected"));
    }
}

/// The outcome of delivering one prepared batch.
struct Delivered {
    prepared: Prepared,
    sent: u64,
    sent_bytes: u64,
    /// Events rejected by the brokers.
    rejected: u64,
    /// Events given up after `request.retry_attempts`.
    gave_up: u64,
    fatal: Option<String>,
}

/// Produces every record of `p` until each is stored or rejected for good (or the producer
/// failed fatally), retrying the ones that fail with backoff.
async fn deliver(
    producer: Arc<Producer_>,
    metrics: Arc<ComponentMetrics>,
    mut retries: Retries,
    p: Prepared,
) -> Delivered {
    let mut todo: Vec<usize> = (0..p.records.len()).collect();
    let (mut sent, mut sent_bytes, mut rejected, mut fatal) = (0, 0, 0, None);
    let mut gave_up = 0;
    loop {
        let mut waiting = Vec::with_capacity(todo.len());
        for &i in &todo {
            let r = &p.records[i];
            loop {
                let mut rec: FutureRecord<'_, [u8], [u8]> =
                    FutureRecord::to(&p.topics[r.topic.clone()]).payload(&p.bytes[r.value.clone()]);
                if let Some(k) = &r.key {
                    rec = rec.key(&p.bytes[k.clone()]);
                }
                if let Some(h) = &r.headers {
                    rec = rec.headers(h.clone());
                }
                match producer.send_result(rec) {
                    Ok(f) => {
                        waiting.push((i, Ok(f)));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        // librdkafka holds `queue.buffering.max.messages`: wait for room.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => {
                        waiting.push((i, Err(e)));
                        break;
                    }
                }
            }
        }
        let mut failed = Vec::new();
        let mut last_error = None;
        for (i, f) in waiting {
            let res = match f {
                Ok(f) => match f.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(e),
                    // The producer dropped the report: it cannot while we hold it.
                    Err(_) => Err(KafkaError::Canceled),
                },
                Err(e) => Err(e),
            };
            let r = &p.records[i];
            let e = match res {
                Ok(()) => {
                    sent += 1;
                    sent_bytes += r.value.len() as u64;
                    continue;
                }
                Err(e) => e,
            };
            match classify(&e) {
                ErrorClass::Retry => {
                    failed.push(i);
                    last_error = Some(e);
                }
                ErrorClass::Reject => {
                    rejected += 1;
                    if let Some(ev) = p.batch.batch().get(r.event) {
                        ev.metadata().update_status(EventStatus::Rejected);
                    }
                    metrics.error(
                        "produce",
                        1,
                        &format_args!(
                            "topic {:?} refused a record for good: {e}; event rejected",
                            &p.topics[r.topic.clone()]
                        ),
                    );
                }
                ErrorClass::Fatal => fatal = Some(e.to_string()),
            }
        }
        if fatal.is_none() {
            if let Some((code, reason)) = producer.client().fatal_error() {
                fatal = Some(format!("{code:?}: {reason}"));
            }
        }
        if fatal.is_some() {
            break;
        }
        let Some(e) = last_error else { break };
        let Some(wait) = retries.next_delay(None) else {
            // `request.retry_attempts` used up: the records not stored are given up.
            for &i in &failed {
                if let Some(ev) = p.batch.batch().get(p.records[i].event) {
                    ev.metadata().update_status(EventStatus::Errored);
                }
            }
            gave_up += failed.len() as u64;
            metrics.error(
                "gave_up",
                failed.len() as u64,
                &format_args!(
                    "giving up on {} record(s) after {} attempts: {e}",
                    failed.len(),
                    retries.failed()
                ),
            );
            break;
        };
        metrics.error(
            "produce",
            failed.len() as u64,
            &format_args!(
                "{} record(s) not stored ({e}); producing them again (the batch is held, upstream waits)",
                failed.len()
            ),
        );
        metrics.add_counter("kafka_produce_retries_total", None, failed.len() as u64);
        tokio::time::sleep(wait).await;
        todo = failed;
    }
    Delivered {
        prepared: p,
        sent,
        sent_bytes,
        rejected,
        gave_up,
        fatal,
    }
}

#[async_trait]
impl Sink for KafkaSink {
    async fn run(self: Box<Self>, mut input: SinkInput) -> Result<(), BoxError> {
        let mut inflight = FuturesUnordered::new();
        let mut input_open = true;
        let mut fatal = None;
        while input_open || !inflight.is_empty() {
            tokio::select! {
                biased;
                Some(d) = inflight.next(), if !inflight.is_empty() => {
                    if let Some(e) = self.finish(d) {
                        fatal = Some(e);
                        break;
                    }
                }
                b = input.next(), if input_open && inflight.len() < self.cfg.request.concurrency() => {
                    match b {
                        Some(batch) => {
                            let p = self.prepare(batch);
                            let retries = self.cfg.request.retries();
                            inflight.push(deliver(self.producer.clone(), self.metrics.clone(), retries, p));
                        }
                        None => input_open = false,
                    }
                }
            }
        }
        if let Some(e) = fatal {
            // What is still in flight may or may not be stored: dropping it finalizes it as
            // errored (Held).
            drop(inflight);
            return Err(format!("the Kafka producer failed fatally: {e}").into());
        }
        // Every batch had its reports; nothing is queued in librdkafka any more.
        let _ = self.producer.flush(Duration::from_secs(10));
        Ok(())
    }
}

impl KafkaSink {
    /// Counts and finalizes one delivered batch; the fatal error, if there was one.
    fn finish(&self, d: Delivered) -> Option<String> {
        self.metrics.add_sent(d.sent);
        self.metrics.add_sent_bytes(d.sent_bytes);
        let status = if d.fatal.is_some() || d.gave_up > 0 {
            EventStatus::Errored
        } else if d.rejected > 0 || d.prepared.rejected {
            EventStatus::Rejected
        } else {
            EventStatus::Delivered
        };
        d.prepared.batch.finalize(status);
        d.fatal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options_and_checks_topics() {
        let c: KafkaSinkConfig = toml::from_str(
            r#"
bootstrap_servers = "127.0.0.1:9092"
topic = "logs-{{ service }}"
key_field = "host"
compression = "zstd"
librdkafka_options."linger.ms" = "10"
sasl = { mechanism = "SCRAM-SHA-256", username = "u", password = "p" }
"#,
        )
        .unwrap();
        assert_eq!(c.compression, Compression::Zstd);
        assert_eq!(c.message_timeout_ms, 30_000);
        assert_eq!(c.librdkafka_options["linger.ms"], "10");
        assert!(toml::from_str::<KafkaSinkConfig>(
            "bootstrap_servers = \"x\"\ntopic = \"a\"\nbogus = 1"
        )
        .is_err());
        assert!(toml::from_str::<KafkaSinkConfig>(
            "bootstrap_servers = \"x\"\ntopic = \"a\"\ncompression = \"brotli\""
        )
        .is_err());
        assert!(is_valid_topic("logs-web_1.x"));
        assert!(!is_valid_topic("logs web"));
        assert!(!is_valid_topic(".."));
        assert!(!is_valid_topic(""));
    }

    #[tokio::test]
    async fn a_batch_abandoned_in_flight_is_errored_not_delivered() {
        use weir_pipeline::event::LogEvent;
        use weir_pipeline::finalization::BatchNotifier;
        let (n, rx) = BatchNotifier::new_with_receiver();
        let mut batch = EventBatch::new(vec![LogEvent::default().into()]);
        batch.attach_notifier(&n);
        drop(n);
        drop(Held(Some(batch)));
        assert_eq!(rx.wait().await, EventStatus::Errored);

        let (n, rx) = BatchNotifier::new_with_receiver();
        let mut batch = EventBatch::new(vec![LogEvent::default().into()]);
        batch.attach_notifier(&n);
        drop(n);
        Held(Some(batch)).finalize(EventStatus::Delivered);
        assert_eq!(rx.wait().await, EventStatus::Delivered);
    }

    #[test]
    fn errors_are_classified() {
        let e = |c| KafkaError::MessageProduction(c);
        assert_eq!(
            classify(&e(RDKafkaErrorCode::MessageTimedOut)),
            ErrorClass::Retry
        );
        assert_eq!(
            classify(&e(RDKafkaErrorCode::NotLeaderForPartition)),
            ErrorClass::Retry
        );
        assert_eq!(
            classify(&e(RDKafkaErrorCode::MessageSizeTooLarge)),
            ErrorClass::Reject
        );
        assert_eq!(classify(&e(RDKafkaErrorCode::Fatal)), ErrorClass::Fatal);
        // Credentials and ACLs are not verdicts on the data.
        assert_eq!(
            classify(&e(RDKafkaErrorCode::TopicAuthorizationFailed)),
            ErrorClass::Retry
        );
    }
}
