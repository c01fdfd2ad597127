//! Weir's own metrics: per component, events and bytes in and out, errors by kind, discarded
//! events, buffer fill and processing latency. Counters are plain atomics updated once per
//! batch. They are read by the API (`/metrics`, `/api/graph`) and by components that report them as events.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use crate::event::{Bucket, Metric, MetricKind, MetricValue};
use crate::memory::MemoryBudget;
use crate::vocabulary::ComponentKind;

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// How often the same kind of error is logged per component (the rest are counted).
const ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
struct ErrorCount {
    count: u64,
    suppressed: u64,
    last_logged: Option<Instant>,
}

/// Reads the fill of a buffer when metrics are scraped.
pub trait BufferGauge: Send + Sync + std::fmt::Debug {
    /// Events in the buffer now.
    fn events(&self) -> usize;
    /// The buffer's capacity, in events.
    fn capacity(&self) -> usize;
    /// The estimated bytes of the events in the buffer now.
    fn bytes(&self) -> usize;
    /// The buffer's capacity, in (estimated) bytes.
    fn max_bytes(&self) -> usize;
}

/// The counters of one component.
#[derive(Debug)]
pub struct ComponentMetrics {
    /// The component's id.
    pub id: Arc<str>,
    /// Source, transform or sink.
    pub kind: ComponentKind,
    /// Its `type`.
    pub type_name: String,
    received_events: AtomicU64,
    received_bytes: AtomicU64,
    sent_events: AtomicU64,
    sent_bytes: AtomicU64,
    discarded_events: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, ErrorCount>>,
    buffer: OnceLock<Arc<dyn BufferGauge>>,
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_ns: AtomicU64,
    counters: Mutex<BTreeMap<CounterKey, u64>>,
    restarts: AtomicU64,
    lost_in_failures: AtomicU64,
    health: Mutex<Health>,
}

/// Whether a component is running, as its supervisor knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Health {
    /// Running (or finished its work cleanly).
    #[default]
    Running,
    /// Failed, and waiting to be started again (`on_failure = "restart"`).
    Restarting {
        /// Why it failed.
        error: String,
    },
    /// Failed, and not started again (`on_failure = "exit"`, or the pipeline is stopping).
    Failed {
        /// Why it failed.
        error: String,
    },
}

/// A component-specific counter's name, label and value.
pub type CounterValue = (&'static str, Option<(&'static str, String)>, u64);

/// A component-specific counter: its name and at most one label.
type CounterKey = (&'static str, Option<(&'static str, String)>);

impl ComponentMetrics {
    /// Zeroed counters for one component.
    pub fn new(id: impl Into<Arc<str>>, kind: ComponentKind, type_name: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            kind,
            type_name: type_name.into(),
            received_events: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
            sent_events: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
            discarded_events: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            buffer: OnceLock::new(),
            latency_buckets: Default::default(),
            latency_sum_ns: AtomicU64::new(0),
            counters: Mutex::new(BTreeMap::new()),
            restarts: AtomicU64::new(0),
            lost_in_failures: AtomicU64::new(0),
            health: Mutex::new(Health::Running),
        }
    }

    /// Records the component's state (its supervisor does).
    pub fn set_health(&self, health: Health) {
        match self.health.lock() {
            Ok(mut g) => *g = health,
            Err(p) => *p.into_inner() = health,
        }
    }

    /// The component's state.
    pub fn health(&self) -> Health {
        match self.health.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Counts one restart after a failure.
    pub fn add_restart(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts events the component had in hand when it failed: not delivered (errored).
    pub fn add_lost_in_failure(&self, events: u64) {
        self.lost_in_failures.fetch_add(events, Ordering::Relaxed);
    }

    /// Events the component had in hand when it failed, so far.
    pub fn lost_in_failures(&self) -> u64 {
        self.lost_in_failures.load(Ordering::Relaxed)
    }

    /// What a sink has received and neither sent nor discarded, nor lost in a failure: the
    /// events in its hands.
    pub fn in_hand(&self) -> u64 {
        self.received_events()
            .saturating_sub(self.sent_events() + self.discarded_events() + self.lost_in_failures())
    }

    /// Restarts after a failure so far.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// A standalone handle (tests, tools).
    pub fn detached(id: &str) -> Arc<Self> {
        Arc::new(Self::new(id, ComponentKind::Transform, "detached"))
    }

    /// Counts events (and, when known, bytes) received.
    pub fn add_received(&self, events: u64, bytes: u64) {
        self.received_events.fetch_add(events, Ordering::Relaxed);
        if bytes > 0 {
            self.received_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Bytes read by a source (raw input), counted separately from events.
    pub fn add_received_bytes(&self, bytes: u64) {
        self.received_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts events sent downstream (a sink: delivered).
    pub fn add_sent(&self, events: u64) {
        self.sent_events.fetch_add(events, Ordering::Relaxed);
    }

    /// Bytes written by a sink (encoded output).
    pub fn add_sent_bytes(&self, bytes: u64) {
        self.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Events dropped on purpose or by a full buffer, counted, never silent.
    pub fn add_discarded(&self, events: u64) {
        self.discarded_events.fetch_add(events, Ordering::Relaxed);
    }

    /// The buffer whose fill is reported (set once, later calls are ignored).
    pub fn set_buffer(&self, gauge: Arc<dyn BufferGauge>) {
        let _ = self.buffer.set(gauge);
    }

    /// Records the time spent on one batch.
    pub fn observe_latency(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ns
            .fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Counts an error of `kind` (`decode`, `oversized`, `io`, ...) and logs it, at most once
    /// per kind every 10 s; the log line says how many were suppressed in between.
    pub fn error(&self, kind: &'static str, count: u64, message: &dyn std::fmt::Display) {
        let mut errors = match self.errors.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let e = errors.entry(kind).or_default();
        e.count += count;
        let now = Instant::now();
        let due = e
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= ERROR_LOG_INTERVAL);
        if due {
            let suppressed = e.suppressed;
            e.suppressed = 0;
            e.last_logged = Some(now);
            drop(errors);
            if suppressed > 0 {
                tracing::warn!(component = %self.id, error_kind = kind, suppressed, "{message} ({suppressed} more since the last report)");
            } else {
                tracing::warn!(component = %self.id, error_kind = kind, "{message}");
            }
        } else {
            e.suppressed += count;
        }
    }

    /// Adds to a counter specific to this component type (`lost_events_total`, with
    /// an optional label such as `source="RING_BUFFER"`), exported as
    /// `weir_<name>` with the component's tags. For rare events (a lock is taken), not for
    /// per-event counting on a hot path.
    pub fn add_counter(&self, name: &'static str, label: Option<(&'static str, &str)>, value: u64) {
        let mut counters = match self.counters.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        *counters
            .entry((name, label.map(|(k, v)| (k, v.to_string()))))
            .or_default() += value;
    }

    /// The component-specific counters: `(name, label, value)`.
    pub fn counters(&self) -> Vec<CounterValue> {
        let counters = match self.counters.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        counters
            .iter()
            .map(|((n, l), v)| (*n, l.clone(), *v))
            .collect()
    }

    /// Events received.
    pub fn received_events(&self) -> u64 {
        self.received_events.load(Ordering::Relaxed)
    }
    /// Bytes received.
    pub fn received_bytes(&self) -> u64 {
        self.received_bytes.load(Ordering::Relaxed)
    }
    /// Events sent (a sink: delivered).
    pub fn sent_events(&self) -> u64 {
        self.sent_events.load(Ordering::Relaxed)
    }
    /// Bytes sent.
    pub fn sent_bytes(&self) -> u64 {
        self.sent_bytes.load(Ordering::Relaxed)
    }
    /// Events dropped on purpose or by a full buffer.
    pub fn discarded_events(&self) -> u64 {
        self.discarded_events.load(Ordering::Relaxed)
    }
    /// Errors counted so far, by kind.
    pub fn errors(&self) -> BTreeMap<&'static str, u64> {
        let errors = match self.errors.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        errors.iter().map(|(k, v)| (*k, v.count)).collect()
    }
    /// Errors counted so far, all kinds.
    pub fn errors_total(&self) -> u64 {
        self.errors().values().sum()
    }
    /// (events in the buffer, capacity), for sinks and transforms with an input buffer.
    pub fn buffer_fill(&self) -> Option<(usize, usize)> {
        self.buffer.get().map(|b| (b.events(), b.capacity()))
    }
    /// (estimated bytes in the buffer, capacity in bytes), for sinks and transforms.
    pub fn buffer_bytes(&self) -> Option<(usize, usize)> {
        self.buffer.get().map(|b| (b.bytes(), b.max_bytes()))
    }

    /// Batches timed by the latency histogram and the seconds they took in total: the mean
    /// latency over a period is the difference of two readings' sums over that of their counts.
    pub fn latency_totals(&self) -> (u64, f64) {
        let (buckets, sum) = self.latency();
        (buckets.iter().sum(), sum)
    }
    fn latency(&self) -> (Vec<u64>, f64) {
        (
            self.latency_buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            self.latency_sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        )
    }
}

/// All components' metrics.
#[derive(Debug)]
pub struct MetricsRegistry {
    components: RwLock<Vec<Arc<ComponentMetrics>>>,
    started: Instant,
    memory: OnceLock<Arc<MemoryBudget>>,
    reloads: Mutex<Reloads>,
}

/// Configuration reloads: how many by outcome, and the last one.
#[derive(Debug, Default, Clone)]
pub struct Reloads {
    /// Reloads by outcome ([`RELOAD_OUTCOMES`]).
    pub counts: BTreeMap<&'static str, u64>,
    /// The last reload: its outcome, what went wrong, and when (seconds since the epoch).
    pub last: Option<(&'static str, Option<String>, i64)>,
}

/// The outcomes of a reload, the `outcome` label of `weir_config_reloads_total`: `applied`,
/// `invalid` (the new configuration did not load or check; the running one stays),
/// `needs_restart` (it changes what a reload cannot; nothing was touched), `failed` (a
/// component could not be built; see the error for what was left as it was).
pub const RELOAD_OUTCOMES: [&str; 4] = ["applied", "invalid", "needs_restart", "failed"];

impl Default for MetricsRegistry {
    fn default() -> Self {
        Self {
            components: RwLock::new(Vec::new()),
            started: Instant::now(),
            memory: OnceLock::new(),
            reloads: Mutex::new(Reloads::default()),
        }
    }
}

impl MetricsRegistry {
    /// Adds a component's counters.
    pub fn register(&self, m: Arc<ComponentMetrics>) {
        match self.components.write() {
            Ok(mut g) => g.push(m),
            Err(p) => p.into_inner().push(m),
        }
    }

    /// Removes a component's counters (a sink a reload removed, once it drained).
    pub fn unregister(&self, m: &Arc<ComponentMetrics>) {
        match self.components.write() {
            Ok(mut g) => g.retain(|c| !Arc::ptr_eq(c, m)),
            Err(p) => p.into_inner().retain(|c| !Arc::ptr_eq(c, m)),
        }
    }

    /// Counts a reload (`outcome` is one of [`RELOAD_OUTCOMES`]) and keeps it as the last.
    pub fn record_reload(&self, outcome: &'static str, error: Option<String>) {
        let mut r = self.reloads.lock().unwrap_or_else(|p| p.into_inner());
        *r.counts.entry(outcome).or_default() += 1;
        r.last = Some((outcome, error, chrono::Utc::now().timestamp()));
    }

    /// The reloads so far.
    pub fn reloads(&self) -> Reloads {
        self.reloads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every component's counters, in the order they were added.
    pub fn components(&self) -> Vec<Arc<ComponentMetrics>> {
        match self.components.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The counters of component `id`.
    pub fn get(&self, id: &str) -> Option<Arc<ComponentMetrics>> {
        self.components().into_iter().find(|c| &*c.id == id)
    }

    /// The pipeline's memory budget, reported as `weir_memory_limit_bytes`,
    /// `weir_buffered_bytes` and `weir_memory_pauses_total` (set once).
    pub fn set_memory(&self, memory: Arc<MemoryBudget>) {
        let _ = self.memory.set(memory);
    }

    /// The pipeline's memory budget, once started.
    pub fn memory(&self) -> Option<&Arc<MemoryBudget>> {
        self.memory.get()
    }

    /// How long since the registry was made (the process started).
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// The metrics as events (what a metrics source emits), all absolute.
    pub fn to_events(&self) -> Vec<Metric> {
        let mut out = Vec::new();
        let now = chrono::Utc::now();
        out.push(
            Metric::new(
                "uptime_seconds",
                MetricKind::Absolute,
                MetricValue::Gauge {
                    value: self.uptime().as_secs_f64(),
                },
            )
            .with_namespace("weir")
            .with_timestamp(now),
        );
        if let Some(m) = self.memory.get() {
            let global = |name: &str, value: MetricValue| {
                Metric::new(name, MetricKind::Absolute, value)
                    .with_namespace("weir")
                    .with_timestamp(now)
            };
            let gauge = |v: u64| MetricValue::Gauge { value: v as f64 };
            // 0: no limit.
            out.push(global("memory_limit_bytes", gauge(m.limit().unwrap_or(0))));
            out.push(global("buffered_bytes", gauge(m.buffered())));
            out.push(global(
                "memory_pauses_total",
                MetricValue::Counter {
                    value: m.pauses() as f64,
                },
            ));
        }
        let reloads = self.reloads();
        for outcome in RELOAD_OUTCOMES {
            out.push(
                Metric::new(
                    "config_reloads_total",
                    MetricKind::Absolute,
                    MetricValue::Counter {
                        value: reloads.counts.get(outcome).copied().unwrap_or(0) as f64,
                    },
                )
                .with_namespace("weir")
                .with_tag("outcome", outcome)
                .with_timestamp(now),
            );
        }
        out.push(
            Metric::new(
                "config_last_reload_successful",
                MetricKind::Absolute,
                MetricValue::Gauge {
                    value: match &reloads.last {
                        Some((o, ..)) if *o != "applied" => 0.0,
                        _ => 1.0,
                    },
                },
            )
            .with_namespace("weir")
            .with_timestamp(now),
        );
        for c in self.components() {
            let base = |name: &str, value: MetricValue| {
                Metric::new(name, MetricKind::Absolute, value)
                    .with_namespace("weir")
                    .with_tag("component_id", &*c.id)
                    .with_tag("component_kind", c.kind.as_str())
                    .with_tag("component_type", &c.type_name)
                    .with_timestamp(now)
            };
            let counter = |v: u64| MetricValue::Counter { value: v as f64 };
            out.push(base(
                "component_received_events_total",
                counter(c.received_events()),
            ));
            out.push(base(
                "component_received_bytes_total",
                counter(c.received_bytes()),
            ));
            out.push(base(
                "component_sent_events_total",
                counter(c.sent_events()),
            ));
            out.push(base("component_sent_bytes_total", counter(c.sent_bytes())));
            out.push(base(
                "component_discarded_events_total",
                counter(c.discarded_events()),
            ));
            out.push(base("component_restarts_total", counter(c.restarts())));
            out.push(base(
                "component_failure_lost_events_total",
                counter(c.lost_in_failures()),
            ));
            out.push(base(
                "component_failed",
                MetricValue::Gauge {
                    value: if c.health() == Health::Running {
                        0.0
                    } else {
                        1.0
                    },
                },
            ));
            for (kind, n) in c.errors() {
                out.push(base("component_errors_total", counter(n)).with_tag("error_type", kind));
            }
            for (name, label, n) in c.counters() {
                let m = base(name, counter(n));
                out.push(match label {
                    Some((k, v)) => m.with_tag(k, v),
                    None => m,
                });
            }
            if let Some((events, cap)) = c.buffer_fill() {
                out.push(base(
                    "buffer_events",
                    MetricValue::Gauge {
                        value: events as f64,
                    },
                ));
                out.push(base(
                    "buffer_max_events",
                    MetricValue::Gauge { value: cap as f64 },
                ));
            }
            if let Some((bytes, max)) = c.buffer_bytes() {
                out.push(base(
                    "buffer_byte_size",
                    MetricValue::Gauge {
                        value: bytes as f64,
                    },
                ));
                out.push(base(
                    "buffer_max_byte_size",
                    MetricValue::Gauge { value: max as f64 },
                ));
            }
            let (counts, sum) = c.latency();
            let total: u64 = counts.iter().sum();
            if total > 0 {
                let mut buckets: Vec<Bucket> = LATENCY_BUCKETS
                    .iter()
                    .zip(&counts)
                    .map(|(b, n)| Bucket {
                        upper_limit: *b,
                        count: *n,
                    })
                    .collect();
                buckets.push(Bucket {
                    upper_limit: f64::INFINITY,
                    count: counts[LATENCY_BUCKETS.len()],
                });
                out.push(base(
                    "component_latency_seconds",
                    MetricValue::AggregatedHistogram {
                        buckets,
                        count: total,
                        sum,
                    },
                ));
            }
        }
        out
    }

    /// The Prometheus text exposition of [`MetricsRegistry::to_events`].
    pub fn render_prometheus(&self) -> String {
        render_prometheus(&self.to_events())
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('"', "\\\"")
}

fn labels(tags: &BTreeMap<String, String>, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = tags
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn fmt_f64(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{v}")
    }
}

/// Renders metrics in the Prometheus text format (one `# TYPE` line per name).
pub fn render_prometheus(metrics: &[Metric]) -> String {
    let mut by_name: BTreeMap<String, Vec<&Metric>> = BTreeMap::new();
    for m in metrics {
        by_name.entry(m.full_name()).or_default().push(m);
    }
    let mut out = String::new();
    for (name, ms) in by_name {
        let ty = match &ms[0].value {
            MetricValue::Counter { .. } => "counter",
            MetricValue::Gauge { .. } => "gauge",
            MetricValue::AggregatedHistogram { .. } => "histogram",
            MetricValue::AggregatedSummary { .. } => "summary",
            _ => "untyped",
        };
        let _ = writeln!(out, "# TYPE {name} {ty}");
        for m in ms {
            match &m.value {
                MetricValue::Counter { value } | MetricValue::Gauge { value } => {
                    let _ = writeln!(out, "{name}{} {}", labels(&m.tags, None), fmt_f64(*value));
                }
                MetricValue::AggregatedHistogram {
                    buckets,
                    count,
                    sum,
                } => {
                    let mut cumulative = 0;
                    for b in buckets {
                        cumulative += b.count;
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {cumulative}",
                            labels(&m.tags, Some(("le", fmt_f64(b.upper_limit))))
                        );
                    }
                    let _ = writeln!(out, "{name}_sum{} {}", labels(&m.tags, None), fmt_f64(*sum));
                    let _ = writeln!(out, "{name}_count{} {count}", labels(&m.tags, None));
                }
                MetricValue::AggregatedSummary {
                    quantiles,
                    count,
                    sum,
                } => {
                    for q in quantiles {
                        let _ = writeln!(
                            out,
                            "{name}{} {}",
                            labels(&m.tags, Some(("quantile", fmt_f64(q.quantile)))),
                            fmt_f64(q.value)
                        );
                    }
                    let _ = writeln!(out, "{name}_sum{} {}", labels(&m.tags, None), fmt_f64(*sum));
                    let _ = writeln!(out, "{name}_count{} {count}", labels(&m.tags, None));
                }
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_counters_are_exported_with_their_label() {
        let registry = MetricsRegistry::default();
        let m = Arc::new(ComponentMetrics::new("h", ComponentKind::Source, "flows"));
        registry.register(m.clone());
        m.add_counter("lost_events_total", Some(("source", "RING")), 3);
        m.add_counter("lost_events_total", Some(("source", "RING")), 4);
        m.add_counter("reconnects_total", None, 1);
        let text = registry.render_prometheus();
        assert!(
            text.contains("weir_lost_events_total{component_id=\"h\",component_kind=\"source\",component_type=\"flows\",source=\"RING\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("weir_reconnects_total{component_id=\"h\""),
            "{text}"
        );
    }
}
