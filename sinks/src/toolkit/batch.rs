//! The `batch` table of a sink, and the one batching stage.
//!
//! ```toml
//! [sinks.out.batch]
//! max_events = 1000   # send when this many events are waiting
//! max_bytes = 1000000 # ... or when they take this many bytes (the sink's measure)
//! timeout_secs = 1    # ... or at the latest this long after the first one
//! ```
//!
//! Each sink chooses its defaults ([`BatchDefaults`]); they are applied when the
//! configuration is read.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use serde::{Deserialize, Deserializer, Serialize};
use tokio::time::Instant;
use weir_pipeline::component::SinkInput;
use weir_pipeline::config::{Count, Secs};
use weir_pipeline::event::Event;

/// A sink's defaults for its `batch` table.
pub trait BatchDefaults: 'static {
    const MAX_EVENTS: Count;
    const MAX_BYTES: Count;
    const TIMEOUT: Secs;
}

/// `batch`: when a batch is complete. See the module docs; the defaults are the sink's.
#[derive(Serialize)]
#[serde(bound = "")]
pub struct BatchConfig<D> {
    /// Complete when it holds this many events. Default: per sink.
    pub max_events: Count,
    /// Complete when its events take this many bytes (as the sink measures them). Default:
    /// per sink.
    pub max_bytes: Count,
    /// Complete at the latest this many seconds after its first event. Default: per sink.
    pub timeout_secs: Secs,
    #[serde(skip)]
    defaults: PhantomData<fn() -> D>,
}

/// Inlined in each sink's schema, with that sink's defaults.
impl<D: BatchDefaults> schemars::JsonSchema for BatchConfig<D> {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("BatchConfig<{}>", std::any::type_name::<D>()).into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "`batch`: when a batch is complete (the defaults are this sink's).",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "max_events": {
                    "description": "Complete when it holds this many events.",
                    "type": "integer", "minimum": 1, "default": D::MAX_EVENTS.get()
                },
                "max_bytes": {
                    "description": "Complete when its events take this many bytes (as the sink measures them).",
                    "type": "integer", "minimum": 1, "default": D::MAX_BYTES.get()
                },
                "timeout_secs": {
                    "description": "Complete at the latest this many seconds after its first event.",
                    "type": "number", "exclusiveMinimum": 0,
                    "maximum": weir_pipeline::config::MAX_SECS,
                    "default": D::TIMEOUT.as_f64()
                }
            }
        })
    }
}

impl<D> Clone for BatchConfig<D> {
    fn clone(&self) -> Self {
        Self {
            max_events: self.max_events,
            max_bytes: self.max_bytes,
            timeout_secs: self.timeout_secs,
            defaults: PhantomData,
        }
    }
}

impl<D> fmt::Debug for BatchConfig<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchConfig")
            .field("max_events", &self.max_events)
            .field("max_bytes", &self.max_bytes)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

impl<D: BatchDefaults> Default for BatchConfig<D> {
    fn default() -> Self {
        Self {
            max_events: D::MAX_EVENTS,
            max_bytes: D::MAX_BYTES,
            timeout_secs: D::TIMEOUT,
            defaults: PhantomData,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    max_events: Option<Count>,
    max_bytes: Option<Count>,
    timeout_secs: Option<Secs>,
}

impl<'de, D: BatchDefaults> Deserialize<'de> for BatchConfig<D> {
    fn deserialize<De: Deserializer<'de>>(d: De) -> Result<Self, De::Error> {
        let raw = Raw::deserialize(d)?;
        Ok(Self {
            max_events: raw.max_events.unwrap_or(D::MAX_EVENTS),
            max_bytes: raw.max_bytes.unwrap_or(D::MAX_BYTES),
            timeout_secs: raw.timeout_secs.unwrap_or(D::TIMEOUT),
            defaults: PhantomData,
        })
    }
}

impl<D> BatchConfig<D> {
    pub fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_events: self.max_events.get(),
            max_bytes: self.max_bytes.get(),
            timeout: self.timeout_secs.duration(),
        }
    }
}

/// The checked limits of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_events: usize,
    pub max_bytes: usize,
    pub timeout: Duration,
}

impl BatchLimits {
    /// Whether a batch of `events` taking `bytes` is complete.
    pub fn is_full(&self, events: usize, bytes: usize) -> bool {
        events >= self.max_events || bytes >= self.max_bytes
    }
}

/// What a sink fills: it encodes each event into its batch (without allocating per event,
/// ideally) and says how full the batch is.
pub trait Encoder {
    type Batch: Default + Send + 'static;
    /// Adds `event` to `batch`; an event that cannot be encoded is finalized (rejected) and
    /// counted by the encoder, and left out.
    fn encode(&mut self, event: Event, batch: &mut Self::Batch);
    /// Events in the batch.
    fn events(batch: &Self::Batch) -> usize;
    /// Bytes in the batch, as the sink measures them.
    fn bytes(batch: &Self::Batch) -> usize;
}

/// The batching stage: pulls batches from `input`, encodes their events into a batch until it
/// is full ([`BatchLimits`]), its timeout has passed since its first event, or the input has
/// ended, then hands it to `send`. Up to `concurrency` sends run at once; meanwhile the next
/// batch is encoded. When every send is busy and the next batch is full, the input waits
/// (backpressure). A send returns its batch emptied, so its buffers are reused. Returns when
/// the input has ended and every send is done.
pub async fn run<E, F, Fut>(
    input: &mut SinkInput,
    limits: BatchLimits,
    concurrency: usize,
    encoder: &mut E,
    mut send: F,
) where
    E: Encoder,
    F: FnMut(E::Batch) -> Fut,
    Fut: Future<Output = E::Batch>,
{
    let concurrency = concurrency.max(1);
    let mut in_flight = FuturesUnordered::new();
    let mut building = E::Batch::default();
    let mut spare: Vec<E::Batch> = Vec::new();
    let mut deadline: Option<Instant> = None;
    let mut open = true;
    let is_full = |b: &E::Batch| limits.is_full(E::events(b), E::bytes(b));
    loop {
        let waiting = E::events(&building) > 0;
        let due = waiting
            && (is_full(&building) || !open || deadline.is_some_and(|d| d <= Instant::now()));
        if due && in_flight.len() < concurrency {
            let next = spare.pop().unwrap_or_default();
            let batch = std::mem::replace(&mut building, next);
            deadline = None;
            in_flight.push(send(batch));
        }
        // After the hand-over above: the batch just sent no longer stops the input.
        let full = is_full(&building);
        if !open && E::events(&building) == 0 && in_flight.is_empty() {
            break;
        }
        let can_send = in_flight.len() < concurrency;
        tokio::select! {
            b = input.next(), if open && !full => match b {
                Some(batch) => {
                    for event in batch {
                        encoder.encode(event, &mut building);
                    }
                    if deadline.is_none() && E::events(&building) > 0 {
                        deadline = Some(Instant::now() + limits.timeout);
                    }
                }
                None => open = false,
            },
            Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                spare.push(done);
            }
            _ = sleep_until(deadline), if deadline.is_some() && can_send => {}
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A cheap estimate of the bytes an event takes once encoded (string lengths, 8 per other
/// value), for sinks that measure `batch.max_bytes` before they encode. Allocates nothing.
pub fn estimated_bytes(event: &Event) -> usize {
    use weir_pipeline::event::Value;
    fn value(v: &Value) -> usize {
        match v {
            Value::Bytes(b) => b.len() + 2,
            Value::Object(m) => m.iter().map(|(k, v)| k.len() + 3 + value(v)).sum::<usize>() + 2,
            Value::Array(a) => a.iter().map(|v| value(v) + 1).sum::<usize>() + 2,
            _ => 8,
        }
    }
    match event {
        Event::Log(l) => value(l.value()),
        Event::Metric(m) => {
            m.name.len()
                + m.namespace.as_ref().map_or(0, String::len)
                + m.tags
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 4)
                    .sum::<usize>()
                + 32
        }
        Event::Trace(s) => {
            s.name.len()
                + 64
                + s.attributes
                    .iter()
                    .map(|(k, v)| k.len() + 3 + value(v))
                    .sum::<usize>()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use weir_pipeline::buffer::buffer;
    use weir_pipeline::event::{EventBatch, LogEvent};
    use weir_pipeline::metrics::ComponentMetrics;
    use weir_pipeline::vocabulary::WhenFull;

    use super::*;

    /// Collects event numbers; an event's "bytes" are its number.
    struct Numbers;

    #[derive(Default)]
    struct Nums(Vec<i64>, usize);

    impl Encoder for Numbers {
        type Batch = Nums;
        fn encode(&mut self, event: Event, b: &mut Nums) {
            let n = match event.as_log().and_then(|l| l.get_field("n")) {
                Some(weir_pipeline::event::Value::Integer(n)) => *n,
                _ => 0,
            };
            b.0.push(n);
            b.1 += n as usize;
        }
        fn events(b: &Nums) -> usize {
            b.0.len()
        }
        fn bytes(b: &Nums) -> usize {
            b.1
        }
    }

    fn batch_of(ns: impl IntoIterator<Item = i64>) -> EventBatch {
        let mut b = EventBatch::default();
        for n in ns {
            let mut l = LogEvent::default();
            l.insert_field("n", n);
            b.push(l);
        }
        b
    }

    /// Runs the stage over `input` (batches of event numbers) and returns the batches sent;
    /// each send takes `send_ms` and the most sends seen at once is in the second value.
    async fn stage(
        limits: BatchLimits,
        concurrency: usize,
        input: Vec<Vec<i64>>,
        send_ms: u64,
    ) -> (Vec<Vec<i64>>, usize) {
        let metrics = ComponentMetrics::detached("t");
        let (tx, rx) = buffer(1000, WhenFull::Block, metrics.clone());
        let mut input_rx = SinkInput::new(rx, metrics);
        let sent = Arc::new(Mutex::new(Vec::new()));
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let feeder = tokio::spawn(async move {
            for b in input {
                tx.send(batch_of(b)).await.unwrap();
            }
        });
        run(
            &mut input_rx,
            limits,
            concurrency,
            &mut Numbers,
            |mut b: Nums| {
                let (sent, now, most) = (sent.clone(), now.clone(), most.clone());
                async move {
                    let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(send_ms)).await;
                    sent.lock().unwrap().push(std::mem::take(&mut b.0));
                    now.fetch_sub(1, Ordering::SeqCst);
                    b.1 = 0;
                    b
                }
            },
        )
        .await;
        feeder.await.unwrap();
        let sent = sent.lock().unwrap().clone();
        (sent, most.load(Ordering::SeqCst))
    }

    fn limits(max_events: usize, max_bytes: usize, timeout_ms: u64) -> BatchLimits {
        BatchLimits {
            max_events,
            max_bytes,
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    #[tokio::test]
    async fn batches_by_events_bytes_and_end_of_input() {
        // By events: 3 at most (an input batch is not split: it completes the batch).
        let (sent, _) = stage(
            limits(3, 1000, 60_000),
            1,
            vec![vec![1, 1], vec![1, 1], vec![1]],
            0,
        )
        .await;
        assert_eq!(sent.concat(), vec![1, 1, 1, 1, 1]);
        assert!(
            sent.iter().all(|b| !b.is_empty() && b.len() <= 4),
            "{sent:?}"
        );
        // By bytes: 10 + 10 reaches 15.
        let (sent, _) = stage(
            limits(100, 15, 60_000),
            1,
            vec![vec![10], vec![10], vec![1]],
            0,
        )
        .await;
        assert_eq!(sent.concat(), vec![10, 10, 1]);
        assert!(sent.len() >= 2, "{sent:?}");
    }

    #[tokio::test]
    async fn a_batch_is_sent_at_its_timeout() {
        let metrics = ComponentMetrics::detached("t");
        let (tx, rx) = buffer(100, WhenFull::Block, metrics.clone());
        let mut input = SinkInput::new(rx, metrics);
        let sent = Arc::new(Mutex::new(Vec::new()));
        let s2 = sent.clone();
        let task = tokio::spawn(async move {
            run(
                &mut input,
                limits(1000, 1_000_000, 50),
                1,
                &mut Numbers,
                |b: Nums| {
                    let s = s2.clone();
                    async move {
                        s.lock().unwrap().push(b.0.len());
                        Nums::default()
                    }
                },
            )
            .await;
        });
        tx.send(batch_of([1, 2])).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        // Sent by the timeout while the input is still open.
        assert_eq!(*sent.lock().unwrap(), vec![2]);
        drop(tx);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn up_to_concurrency_sends_at_once() {
        let input: Vec<Vec<i64>> = (0..20).map(|i| vec![i]).collect();
        let (sent, most) = stage(limits(1, 1000, 60_000), 3, input.clone(), 20).await;
        let mut all = sent.concat();
        all.sort_unstable();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
        assert!((2..=3).contains(&most), "{most}");
        let (sent, most) = stage(limits(1, 1000, 60_000), 1, input, 5).await;
        assert_eq!(most, 1);
        // One at a time keeps the order.
        assert_eq!(sent.concat(), (0..20).collect::<Vec<_>>());
    }

    struct D;
    impl BatchDefaults for D {
        const MAX_EVENTS: Count = Count::of(100);
        const MAX_BYTES: Count = Count::of(1000);
        const TIMEOUT: Secs = Secs::from_secs(1);
    }

    #[test]
    fn defaults_are_the_sinks() {
        let b: BatchConfig<D> = toml::from_str("max_bytes = 5").unwrap();
        assert_eq!(
            b.limits(),
            BatchLimits {
                max_events: 100,
                max_bytes: 5,
                timeout: Duration::from_secs(1)
            }
        );
        assert!(toml::from_str::<BatchConfig<D>>("max_events = 0").is_err());
        assert!(toml::from_str::<BatchConfig<D>>("timeout_secs = 1e20").is_err());
        assert!(toml::from_str::<BatchConfig<D>>("max_size = 1").is_err());
    }
}
