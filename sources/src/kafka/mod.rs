//! `kafka`: records of Kafka topics, read in a consumer group and decoded into events.
//!
//! The source joins `group_id` and subscribes to `topics` (a name starting with `^` is a
//! regular expression over topic names); the group's brokers split the partitions between the
//! members. What a member reads is committed to the group only once it is done:
//!
//! - with `acknowledgements = true` on the source, a batch is done when every sink that got
//!   its events delivered them; without, as soon as it is handed to the pipeline;
//! - offsets are per partition and a commit covers everything below it, so each partition
//!   commits the highest offset below which every batch is done ([`offsets`]), however the
//!   batches finish;
//! - the offsets are stored as they advance and committed by librdkafka every
//!   `commit_interval_ms` (asynchronously), when partitions are revoked in a rebalance, and at
//!   shutdown. A Weir killed mid-stream reads again from the last commit: nothing is lost,
//!   and only what was not yet acknowledged comes twice;
//! - a batch a sink rejected for good is done (not read again); a batch that errored (a sink
//!   gave up, a full `drop_newest` buffer) rewinds its partitions to their first unfinished
//!   offset, so it is read again.
//!
//! A record that fails to decode is counted (`decode` error, logged with its topic, partition
//! and offset) and done, so a poison record is not read forever. The topic, partition, offset,
//! key and headers of each record are added to its events' fields.

mod offsets;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use weir_connect::kafka::rdkafka::client::ClientContext;
use weir_connect::kafka::rdkafka::config::RDKafkaLogLevel;
use weir_connect::kafka::rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use weir_connect::kafka::rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use weir_connect::kafka::rdkafka::message::{BorrowedMessage, Headers, Message};
use weir_connect::kafka::rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use weir_connect::kafka::{client_config, KafkaClientContext, KafkaConnect, KafkaSaslConfig};
use weir_connect::tls::TlsClientConfig;
use weir_pipeline::codec::DecodingConfig;
use weir_pipeline::component::{Output, Source, SourceConfig, SourceContext};
use weir_pipeline::event::{Event, EventBatch, KeyString, ObjectMap, Value};
use weir_pipeline::finalization::{BatchNotifier, BatchStatusReceiver, EventStatus};
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use offsets::{Offsets, Span};

/// `type = "kafka"`: consumes Kafka topics in a consumer group.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Brokers to bootstrap from, comma separated: `kafka-1:9092,kafka-2:9092`. Required.
    pub bootstrap_servers: String,
    /// The consumer group. Weir instances (and other consumers) with the same group split the
    /// partitions between them. Required.
    pub group_id: String,
    /// Topics to consume. A name starting with `^` is a regular expression over topic names
    /// (`^logs-.*`): matching topics created later are picked up (librdkafka checks every
    /// `topic.metadata.refresh.interval.ms`, 5 minutes by default). Required.
    pub topics: Vec<String>,
    /// Where the group starts on a partition it has no committed offset for: `earliest` or
    /// `latest`. Default: `latest`.
    #[serde(default)]
    pub auto_offset_reset: AutoOffsetReset,
    /// How often the acknowledged offsets are committed, in milliseconds
    /// (`auto.commit.interval.ms`). Default: 5000.
    #[serde(default = "default_commit_interval_ms")]
    pub commit_interval_ms: u64,
    /// How long the group waits for a silent member (a killed Weir) before giving its partitions to
    /// the others, in milliseconds (`session.timeout.ms`). Default: 10000.
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// At most this many records per batch of events (a batch is what is ready, up to this).
    /// Default: 1000.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How each record's value becomes events (`bytes`, `json`, `logfmt`, `syslog`,
    /// `hubble_jsonpb`). See [codecs](codecs.md#decoding). One record is one frame: no newline
    /// splitting. Default: `{ codec = "bytes" }` (the value as `message`).
    #[serde(default)]
    pub decoding: DecodingConfig,
    /// Field that receives the record's topic. Empty: not added. Default: `topic`.
    #[serde(default = "default_topic_key")]
    pub topic_key: String,
    /// Field that receives the record's partition (integer). Empty: not added. Default:
    /// `partition`.
    #[serde(default = "default_partition_key")]
    pub partition_key: String,
    /// Field that receives the record's offset (integer). Empty: not added. Default: `offset`.
    #[serde(default = "default_offset_key")]
    pub offset_key: String,
    /// Field that receives the record's key, when it has one. Empty: not added. Default:
    /// `message_key`.
    #[serde(default = "default_key_field")]
    pub key_field: String,
    /// Field that receives the record's headers as an object (a header without a value is `null`),
    /// when it has any. Empty: not added. Default: `headers`.
    #[serde(default = "default_headers_key")]
    pub headers_key: String,
    /// Any [librdkafka consumer
    /// property](https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md), applied
    /// last: `librdkafka_options."fetch.min.bytes" = "1"`. A misspelt name or a bad value fails
    /// `weir run` with librdkafka's message. The properties the source sets from its own options
    /// (listed below) are refused, with the option to use instead. Default: none.
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

/// `auto_offset_reset`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum AutoOffsetReset {
    Earliest,
    #[default]
    Latest,
}

fn default_commit_interval_ms() -> u64 {
    5000
}

fn default_session_timeout_ms() -> u64 {
    10_000
}

fn default_batch_size() -> usize {
    1000
}

fn default_topic_key() -> String {
    "topic".into()
}

fn default_partition_key() -> String {
    "partition".into()
}

fn default_offset_key() -> String {
    "offset".into()
}

fn default_key_field() -> String {
    "message_key".into()
}

fn default_headers_key() -> String {
    "headers".into()
}

/// librdkafka properties the source sets itself.
const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "use `bootstrap_servers`"),
    ("group.id", "use `group_id`"),
    ("auto.offset.reset", "use `auto_offset_reset`"),
    ("auto.commit.interval.ms", "use `commit_interval_ms`"),
    ("session.timeout.ms", "use `session_timeout_ms`"),
    (
        "enable.auto.offset.store",
        "offsets are stored only once their events are delivered",
    ),
    (
        "enable.auto.commit",
        "the stored offsets are committed every `commit_interval_ms`",
    ),
];

type Consumer_ = StreamConsumer<GroupContext>;

#[async_trait]
impl SourceConfig for KafkaSourceConfig {
    async fn build(&self, cx: SourceContext) -> Result<Source, BoxError> {
        if self.batch_size == 0 {
            return Err("`batch_size` must be at least 1".into());
        }
        if self.group_id.is_empty() {
            return Err("`group_id` must not be empty".into());
        }
        if self.topics.is_empty() || self.topics.iter().any(String::is_empty) {
            return Err("`topics`: give one or more topic names (or `^regex`)".into());
        }
        if self.commit_interval_ms == 0 || self.session_timeout_ms == 0 {
            return Err("`commit_interval_ms` and `session_timeout_ms` must be at least 1".into());
        }
        let mut cfg = client_config(KafkaConnect {
            bootstrap_servers: &self.bootstrap_servers,
            tls: self.tls.as_ref(),
            sasl: self.sasl.as_ref(),
            allow_plaintext_credentials: self.allow_plaintext_credentials,
            librdkafka_options: &self.librdkafka_options,
            reserved: RESERVED,
        })?;
        cfg.set("group.id", &self.group_id)
            .set(
                "auto.offset.reset",
                match self.auto_offset_reset {
                    AutoOffsetReset::Earliest => "earliest",
                    AutoOffsetReset::Latest => "latest",
                },
            )
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.commit.interval.ms",
                self.commit_interval_ms.to_string(),
            )
            .set("session.timeout.ms", self.session_timeout_ms.to_string());
        if cfg.get("client.id").is_none() {
            cfg.set("client.id", format!("weir-{}", cx.id));
        }
        let offsets = Arc::new(Mutex::new(Offsets::default()));
        let consumer: Consumer_ = cfg
            .create_with_context(GroupContext {
                client: KafkaClientContext {
                    metrics: cx.metrics.clone(),
                },
                offsets: offsets.clone(),
            })
            .map_err(|e| format!("cannot create the Kafka consumer: {e}"))?;
        let topics: Vec<&str> = self.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| format!("cannot subscribe to {:?}: {e}", self.topics))?;
        if !cx.acknowledgements {
            tracing::info!(component = %cx.id, "acknowledgements are off: offsets are committed when records are handed to the pipeline, so a crash can lose what was in flight; set `acknowledgements = true` on this source to commit them only after delivery");
        }
        Ok(Box::pin(run(self.clone(), Arc::new(consumer), offsets, cx)))
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::default_output(DataType::LOG)]
    }

    fn can_acknowledge(&self) -> bool {
        true
    }

    fn check_environment(&self) -> Result<(), BoxError> {
        Ok(weir_connect::kafka::check_tls(self.tls.as_ref())?)
    }
}

fn lock(offsets: &Mutex<Offsets>) -> MutexGuard<'_, Offsets> {
    // A panic while holding it cannot leave the tracker half-updated in a way that loses
    // data: at worst a span stays pending and its partition commits nothing further.
    offsets.lock().unwrap_or_else(|p| p.into_inner())
}

/// The consumer's callbacks: librdkafka logs and errors, rebalances and commit results.
struct GroupContext {
    client: KafkaClientContext,
    offsets: Arc<Mutex<Offsets>>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.client.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.client.error(error, reason);
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let m = &self.client.metrics;
        match rebalance {
            Rebalance::Assign(tpl) => {
                let mut o = lock(&self.offsets);
                for e in tpl.elements() {
                    o.assign(e.topic(), e.partition());
                }
                m.add_counter("kafka_rebalances_total", Some(("kind", "assign")), 1);
                tracing::info!(component = %m.id, partitions = %describe(tpl), "partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                {
                    let mut o = lock(&self.offsets);
                    for e in tpl.elements() {
                        o.revoke(e.topic(), e.partition());
                    }
                }
                // What is acknowledged is already stored; commit it before another member
                // takes the partitions. What is still in flight will be read again there.
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Async) {
                    if !no_offset(&e) {
                        m.error(
                            "commit",
                            1,
                            &format_args!("cannot commit before the rebalance: {e}"),
                        );
                    }
                }
                m.add_counter("kafka_rebalances_total", Some(("kind", "revoke")), 1);
                tracing::info!(component = %m.id, partitions = %describe(tpl), "partitions revoked; acknowledged offsets committed");
            }
            Rebalance::Error(e) => m.error("rebalance", 1, &format_args!("rebalance error: {e}")),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let m = &self.client.metrics;
        match result {
            Ok(()) => m.add_counter("kafka_commits_total", None, 1),
            Err(e) if no_offset(&e) => {}
            Err(e) => m.error(
                "commit",
                1,
                &format_args!(
                    "committing offsets {} failed: {e}; retried at the next commit",
                    describe(offsets)
                ),
            ),
        }
    }
}

/// "Nothing new to commit" is not an error.
fn no_offset(e: &KafkaError) -> bool {
    e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset)
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => format!("{}/{}@{o}", e.topic(), e.partition()),
            _ => format!("{}/{}", e.topic(), e.partition()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Turns records into events with their topic, partition, offset, key and headers.
struct Decode {
    cfg: KafkaSourceConfig,
    source_id: Option<Arc<str>>,
    metrics: Arc<ComponentMetrics>,
    /// The last topic seen, shared by the events of its records (no allocation per event).
    topic: (Arc<str>, Bytes),
}

impl Decode {
    fn topic(&mut self, t: &str) -> Arc<str> {
        if &*self.topic.0 != t {
            self.topic = (Arc::from(t), Bytes::copy_from_slice(t.as_bytes()));
        }
        self.topic.0.clone()
    }

    /// Appends the events of one record to `out`; counts and logs a record that does not
    /// decode (it yields no events).
    fn record(&mut self, m: &BorrowedMessage<'_>, out: &mut Vec<Event>) {
        let payload = m.payload().unwrap_or_default();
        self.metrics.add_received_bytes(payload.len() as u64);
        let start = out.len();
        if let Err(e) =
            self.cfg
                .decoding
                .codec
                .decode(Bytes::copy_from_slice(payload), &self.source_id, out)
        {
            out.truncate(start);
            self.metrics.error(
                "decode",
                1,
                &format_args!(
                    "cannot decode the Kafka record at topic {} partition {} offset {}: {e}; record skipped and committed",
                    m.topic(),
                    m.partition(),
                    m.offset()
                ),
            );
            return;
        }
        let key = m
            .key()
            .filter(|_| !self.cfg.key_field.is_empty())
            .map(|k| Value::Bytes(Bytes::copy_from_slice(k)));
        let headers = m
            .headers()
            .filter(|h| h.count() > 0 && !self.cfg.headers_key.is_empty())
            .map(|h| {
                let mut map = ObjectMap::new();
                for hd in h.iter() {
                    let v = hd
                        .value
                        .map_or(Value::Null, |v| Value::Bytes(Bytes::copy_from_slice(v)));
                    map.insert(KeyString::from(hd.key), v);
                }
                Value::Object(map)
            });
        let c = &self.cfg;
        for e in &mut out[start..] {
            let Some(log) = e.as_log_mut() else { continue };
            if !c.topic_key.is_empty() {
                log.insert_field(&c.topic_key, Value::Bytes(self.topic.1.clone()));
            }
            if !c.partition_key.is_empty() {
                log.insert_field(&c.partition_key, Value::Integer(i64::from(m.partition())));
            }
            if !c.offset_key.is_empty() {
                log.insert_field(&c.offset_key, Value::Integer(m.offset()));
            }
            if let Some(k) = &key {
                log.insert_field(&c.key_field, k.clone());
            }
            if let Some(h) = &headers {
                log.insert_field(&c.headers_key, h.clone());
            }
        }
    }
}

/// A batch's partition spans, and how to learn its fate (`None`: done already).
type Sent = (Vec<Span>, Option<BatchStatusReceiver>);

async fn run(
    cfg: KafkaSourceConfig,
    consumer: Arc<Consumer_>,
    offsets: Arc<Mutex<Offsets>>,
    mut cx: SourceContext,
) -> Result<(), BoxError> {
    let metrics = cx.metrics.clone();
    let (tx, rx) = mpsc::unbounded_channel::<Sent>();
    // Acknowledgements are handled by their own task, so the tracker is up to date whenever a
    // rebalance (which runs inside the consumer's poll, below) asks what may be committed.
    let acker = tokio::spawn(settle_loop(
        rx,
        consumer.clone(),
        offsets.clone(),
        metrics.clone(),
    ));
    let batch_size = cfg.batch_size;
    let mut decode = Decode {
        cfg,
        source_id: Some(cx.id.clone()),
        metrics: metrics.clone(),
        topic: (Arc::from(""), Bytes::new()),
    };
    let acknowledgements = cx.acknowledgements;
    {
        let mut chunks = consumer.stream().ready_chunks(batch_size);
        // Per partition of the current chunk: (topic, partition, first offset, last offset).
        let mut ranges: Vec<(Arc<str>, i32, i64, i64)> = Vec::new();
        loop {
            let chunk = tokio::select! {
                c = chunks.next() => match c {
                    Some(c) => c,
                    None => break,
                },
                _ = cx.shutdown.cancelled() => break,
            };
            let mut events = Vec::with_capacity(chunk.len());
            ranges.clear();
            for m in chunk {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        metrics.error("receive", 1, &format_args!("consuming from Kafka: {e}"));
                        continue;
                    }
                };
                let topic = decode.topic(m.topic());
                let (p, o) = (m.partition(), m.offset());
                match ranges
                    .iter_mut()
                    .find(|r| r.1 == p && Arc::ptr_eq(&r.0, &topic))
                {
                    Some(r) => r.3 = o,
                    None => ranges.push((topic, p, o, o)),
                }
                decode.record(&m, &mut events);
            }
            if ranges.is_empty() {
                continue;
            }
            let spans: Vec<Span> = {
                let mut t = lock(&offsets);
                ranges
                    .iter()
                    .map(|(topic, p, first, last)| t.track(topic, *p, *first, *last))
                    .collect()
            };
            let mut batch = EventBatch::new(events);
            let status = if acknowledgements && !batch.is_empty() {
                let (n, rx) = BatchNotifier::new_with_receiver();
                batch.attach_notifier(&n);
                Some(rx)
            } else {
                None
            };
            if cx.out.send(batch).await.is_err() {
                // The pipeline is gone: what was not committed is read again next time.
                break;
            }
            if tx.send((spans, status)).is_err() {
                break;
            }
        }
    }
    // Let the downstream see the end of this input, then wait for the batches in flight
    // (the pipeline drains them) and commit what they acknowledged.
    drop(cx.out);
    drop(tx);
    if let Err(e) = acker.await {
        metrics.error(
            "ack",
            1,
            &format_args!("the acknowledgement task failed: {e}"),
        );
    }
    let c = consumer.clone();
    let committed =
        tokio::task::spawn_blocking(move || c.commit_consumer_state(CommitMode::Sync)).await;
    match committed {
        Ok(Ok(())) => tracing::info!(component = %metrics.id, "final offsets committed"),
        Ok(Err(e)) if no_offset(&e) => {}
        Ok(Err(e)) => metrics.error(
            "commit",
            1,
            &format_args!(
                "cannot commit the final offsets: {e}; the next consumer reads them again"
            ),
        ),
        Err(e) => metrics.error("commit", 1, &format_args!("final commit task failed: {e}")),
    }
    // Dropping the consumer leaves the group at once, so the others take its partitions.
    drop(consumer);
    Ok(())
}

/// Waits for the fate of every batch sent and moves the partitions' committable offsets.
async fn settle_loop(
    mut rx: mpsc::UnboundedReceiver<Sent>,
    consumer: Arc<Consumer_>,
    offsets: Arc<Mutex<Offsets>>,
    metrics: Arc<ComponentMetrics>,
) {
    let mut pending = FuturesUnordered::new();
    let mut open = true;
    while open || !pending.is_empty() {
        tokio::select! {
            s = rx.recv(), if open => match s {
                Some((spans, None)) => settle(&consumer, &offsets, &metrics, spans, EventStatus::Delivered),
                Some((spans, Some(status))) => pending.push(async move { (spans, status.await) }),
                None => open = false,
            },
            Some((spans, status)) = pending.next(), if !pending.is_empty() => {
                settle(&consumer, &offsets, &metrics, spans, status);
            }
        }
    }
}

fn settle(
    consumer: &Consumer_,
    offsets: &Mutex<Offsets>,
    metrics: &ComponentMetrics,
    spans: Vec<Span>,
    status: EventStatus,
) {
    let mut store = TopicPartitionList::new();
    let mut rewind = Vec::new();
    {
        let mut o = lock(offsets);
        for s in &spans {
            match status {
                // Rejected for good: reading it again would not help.
                EventStatus::Delivered | EventStatus::Rejected => {
                    if let Some(next) = o.ack(s) {
                        let _ =
                            store.add_partition_offset(&s.topic, s.partition, Offset::Offset(next));
                    }
                }
                EventStatus::Errored => {
                    if let Some(from) = o.rewind(s) {
                        rewind.push((s.topic.clone(), s.partition, from));
                    }
                }
            }
        }
    }
    if store.count() > 0 {
        if let Err(e) = consumer.store_offsets(&store) {
            // A partition revoked meanwhile: its new owner reads it again from the last commit.
            tracing::debug!(component = %metrics.id, "cannot store offsets {}: {e}", describe(&store));
        }
    }
    for (topic, partition, from) in rewind {
        metrics.add_counter("kafka_rewinds_total", None, 1);
        metrics.error(
            "delivery",
            1,
            &format_args!("a batch from topic {topic} partition {partition} was not delivered; reading it again from offset {from}"),
        );
        // Zero timeout: librdkafka seeks asynchronously and drops what it had fetched past it.
        if let Err(e) = consumer.seek(&topic, partition, Offset::Offset(from), Duration::ZERO) {
            metrics.error(
                "seek",
                1,
                &format_args!("cannot seek topic {topic} partition {partition} back to offset {from}: {e}; it is read again after a restart"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options() {
        let c: KafkaSourceConfig = toml::from_str(
            r#"
bootstrap_servers = "127.0.0.1:9092"
group_id = "weir"
topics = ["logs", "^metrics-.*"]
auto_offset_reset = "earliest"
decoding.codec = "json"
"#,
        )
        .unwrap();
        assert_eq!(c.auto_offset_reset, AutoOffsetReset::Earliest);
        assert_eq!(c.batch_size, 1000);
        assert_eq!(c.commit_interval_ms, 5000);
        assert_eq!(c.key_field, "message_key");
        assert!(toml::from_str::<KafkaSourceConfig>(
            "bootstrap_servers = \"x\"\ngroup_id = \"g\"\ntopics = [\"t\"]\nbogus = 1"
        )
        .is_err());
        assert!(toml::from_str::<KafkaSourceConfig>(
            "bootstrap_servers = \"x\"\ngroup_id = \"g\"\ntopics = [\"t\"]\nauto_offset_reset = \"smallest\""
        )
        .is_err());
    }
}
