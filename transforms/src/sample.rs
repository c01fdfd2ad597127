//! `sample`: keeps one event in every `rate`.
//!
//! ```toml
//! [transforms.sampled]
//! type = "sample"
//! inputs = ["in"]
//! rate = 10                      # keep 1 event in 10
//! key_field = "trace_id"         # optional: keep or drop all events of a trace together
//! exclude = '.level == "error"'  # optional: never sample errors away
//! ```
//!
//! Sampling is deterministic, like Vector's: a counter keeps the 1st, the `rate+1`-th, ...
//! event. With `key_field`, an event that has the field is kept when the hash of the field's
//! value is a multiple of `rate`, so every event with the same value shares one fate (events
//! without the field fall back to the counter). Dropped events are counted as discarded. No
//! field is added. Logs and traces are sampled (`key_field` and `exclude` apply to logs);
//! anything else passes through.
//!
//! The transform is stateless for the runtime: its instances (one per worker thread) share
//! one counter, from which each batch takes the positions of its sampled events at once. So
//! exactly one event in `rate` is kept over the whole stream (within one event of it at any
//! moment); with one thread the kept events are the ones above, with several, which events of
//! two batches transformed at the same time get the kept positions depends on which took its
//! positions first.

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Deserialize;
use weir_pipeline::component::{Transform, TransformConfig, TransformContext, TransformOutput};
use weir_pipeline::event::{parse_path, Event, EventBatch, FieldPath, Value};
use weir_pipeline::finalization::EventStatus;
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use crate::condition::{Condition, ErrorTally};

/// Configuration of the `sample` transform.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SampleConfig {
    /// Keep one event in every `rate` (`10` keeps 10 %). At least 1; `1` keeps everything.
    /// Required.
    pub rate: u64,

    /// A field (path such as `trace_id` or `.request.id`) whose value decides instead of the
    /// counter: all events with the same value are kept or dropped together. Events without
    /// the field are sampled by the counter. Default: none (sample by counter).
    #[serde(default)]
    pub key_field: Option<String>,

    /// A VRL boolean condition: events for which it is true always pass and are not counted
    /// by the sampler (such as `.level == "error"`). An event it fails on is sampled normally
    /// and the failure counted as a `condition` error. Default: none (sample every event).
    #[serde(default)]
    pub exclude: Option<String>,

    /// The counter the instances built from these options share (not an option).
    #[serde(skip)]
    #[schemars(skip)]
    counter: Arc<AtomicU64>,
}

impl TransformConfig for SampleConfig {
    fn build(&self, cx: &TransformContext) -> Result<Box<dyn Transform>, BoxError> {
        if self.rate == 0 {
            return Err("`rate` must be at least 1 (keep 1 event in every `rate`)".into());
        }
        let key_field = match &self.key_field {
            Some(f) => Some(parse_path(f).map_err(|e| format!("`key_field`: {e}"))?),
            None => None,
        };
        let exclude = match &self.exclude {
            Some(c) => Some(Condition::compile(c).map_err(|e| format!("`exclude`: {e}"))?),
            None => None,
        };
        Ok(Box::new(Sample {
            rate: self.rate,
            key_field,
            exclude,
            counter: Arc::clone(&self.counter),
            held: Vec::new(),
            metrics: Arc::clone(&cx.metrics),
            errors: ErrorTally::default(),
        }))
    }

    fn stateless(&self) -> bool {
        true
    }

    fn input(&self) -> DataType {
        DataType::LOG.union(DataType::TRACE)
    }
}

/// The running `sample` transform.
struct Sample {
    rate: u64,
    key_field: Option<FieldPath>,
    exclude: Option<Condition>,
    /// Positions in the stream of sampled events taken so far, by every instance.
    counter: Arc<AtomicU64>,
    /// The batch's events and their fates, between the two passes (kept for its allocation).
    held: Vec<(Event, Fate)>,
    metrics: Arc<ComponentMetrics>,
    errors: ErrorTally,
}

/// What decides whether an event is kept.
enum Fate {
    /// Not sampled (excluded, or a metric): kept, takes no position.
    Pass,
    /// Sampled by its key's hash; takes a position all the same (as the counter counts every
    /// sampled event).
    Hashed(u64),
    /// Sampled by its position.
    Counted,
}

impl Sample {
    fn fate(&mut self, event: &mut Event) -> Fate {
        match event {
            Event::Log(log) => {
                let excluded = match &mut self.exclude {
                    Some(c) => match c.check(log.value_mut()) {
                        Ok(b) => b,
                        Err(e) => {
                            self.errors.add(&e);
                            false
                        }
                    },
                    None => false,
                };
                if excluded {
                    return Fate::Pass;
                }
                match self.key_field.as_ref().and_then(|p| log.get(p)) {
                    Some(key) => Fate::Hashed(hash_value(key)),
                    None => Fate::Counted,
                }
            }
            Event::Trace(_) => Fate::Counted,
            Event::Metric(_) => Fate::Pass,
        }
    }
}

impl Transform for Sample {
    fn transform(&mut self, batch: EventBatch, out: &mut TransformOutput) {
        let mut sampled = 0u64;
        for mut event in batch {
            let fate = self.fate(&mut event);
            if !matches!(fate, Fate::Pass) {
                sampled += 1;
            }
            self.held.push((event, fate));
        }
        // The batch's positions, taken at once: an instance on another thread takes the next.
        let mut position = self.counter.fetch_add(sampled, Ordering::Relaxed);
        let mut discarded = 0;
        for (mut event, fate) in self.held.drain(..) {
            let keep = match fate {
                Fate::Pass => true,
                Fate::Hashed(hash) => {
                    position = position.wrapping_add(1);
                    hash.is_multiple_of(self.rate)
                }
                Fate::Counted => {
                    let n = position;
                    position = position.wrapping_add(1);
                    n.is_multiple_of(self.rate)
                }
            };
            if keep {
                out.push(event);
            } else {
                // Sampled away on purpose: done.
                event.finalize(EventStatus::Delivered);
                discarded += 1;
            }
        }
        if discarded > 0 {
            self.metrics.add_discarded(discarded);
        }
        self.errors.report(&self.metrics);
    }
}

/// FNV-1a over bytes, fed through `fmt::Write` so that non-string values hash their text form
/// without allocating.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write_bytes(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// The hash, with a final avalanche (MurmurHash3's) so that `% rate` uses every bit.
    fn finish(self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

impl fmt::Write for Fnv {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.write_bytes(s.as_bytes());
        Ok(())
    }
}

/// A stable hash of a field value: strings by their bytes, other values by their text form
/// (so `5` and `"5"` hash alike).
fn hash_value(v: &Value) -> u64 {
    let mut h = Fnv::new();
    match v.as_bytes() {
        Some(b) => h.write_bytes(b),
        None => {
            let _ = write!(h, "{v}");
        }
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use weir_pipeline::event::{LogEvent, Metric, MetricKind, MetricValue};

    use super::*;

    fn cx() -> TransformContext {
        TransformContext {
            id: Arc::from("t"),
            data_dir: PathBuf::new(),
            metrics: ComponentMetrics::detached("t"),
        }
    }

    fn build(toml_text: &str) -> (Box<dyn Transform>, Arc<ComponentMetrics>) {
        let config: SampleConfig = toml::from_str(toml_text).unwrap();
        let cx = cx();
        (config.build(&cx).unwrap(), cx.metrics)
    }

    fn log(v: serde_json::Value) -> Event {
        Event::Log(LogEvent::from_value(Value::from(v), Default::default()))
    }

    fn run(t: &mut Box<dyn Transform>, events: Vec<Event>) -> Vec<serde_json::Value> {
        let mut out = TransformOutput::default();
        // In batches of 100, to check the counter carries across batches.
        let mut events = events.into_iter().peekable();
        while events.peek().is_some() {
            let batch: Vec<Event> = events.by_ref().take(100).collect();
            t.transform(EventBatch::new(batch), &mut out);
        }
        out.default.iter().map(Event::to_json_value).collect()
    }

    #[test]
    fn rate_10_keeps_exactly_one_in_ten() {
        let (mut t, metrics) = build("rate = 10");
        let events = (0..1000)
            .map(|i| log(serde_json::json!({"i": i})))
            .collect();
        let kept = run(&mut t, events);
        assert_eq!(kept.len(), 100);
        let idx: Vec<i64> = kept.iter().map(|v| v["i"].as_i64().unwrap()).collect();
        assert_eq!(idx, (0..100).map(|k| k * 10).collect::<Vec<_>>());
        // No field added.
        assert_eq!(kept[1], serde_json::json!({"i": 10}));
        assert_eq!(metrics.discarded_events(), 900);
    }

    #[test]
    fn instances_of_one_config_share_the_counter_so_exactly_one_in_rate_is_kept() {
        // As the runtime runs it on several threads: instances built from the same options,
        // taking batches of 7 in turn (not multiples of the rate).
        let config: SampleConfig = toml::from_str("rate = 10").unwrap();
        let cx = cx();
        let mut lanes: Vec<Box<dyn Transform>> =
            (0..3).map(|_| config.build(&cx).unwrap()).collect();
        let mut out = TransformOutput::default();
        for (k, chunk) in (0..700).collect::<Vec<i64>>().chunks(7).enumerate() {
            let batch = chunk.iter().map(|i| log(serde_json::json!({"i": i})));
            lanes[k % 3].transform(EventBatch::new(batch.collect()), &mut out);
        }
        assert_eq!(out.default.len(), 70);
        assert_eq!(cx.metrics.discarded_events(), 630);
        // A fresh config (a reload) starts its own count.
        let (mut t, _) = build("rate = 10");
        assert_eq!(run(&mut t, vec![log(serde_json::json!({"i": 0}))]).len(), 1);
    }

    #[test]
    fn rate_1_keeps_everything() {
        let (mut t, metrics) = build("rate = 1");
        let events = (0..50).map(|i| log(serde_json::json!({"i": i}))).collect();
        assert_eq!(run(&mut t, events).len(), 50);
        assert_eq!(metrics.discarded_events(), 0);
    }

    #[test]
    fn key_field_keeps_or_drops_whole_keys() {
        let (mut t, metrics) = build("rate = 10\nkey_field = 'req.id'");
        let mut events = Vec::new();
        for round in 0..20 {
            for key in 0..200 {
                events.push(log(
                    serde_json::json!({"req": {"id": format!("k{key}")}, "round": round}),
                ));
            }
        }
        let kept = run(&mut t, events);
        let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
        for v in &kept {
            *per_key
                .entry(v["req"]["id"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        // Every kept key is kept in all 20 rounds.
        assert!(per_key.values().all(|&n| n == 20), "{per_key:?}");
        // About 1 key in 10 (200 keys: 20 expected).
        assert!(
            (8..=35).contains(&per_key.len()),
            "{} keys kept",
            per_key.len()
        );
        assert_eq!(metrics.discarded_events(), 4000 - kept.len() as u64);
    }

    #[test]
    fn key_field_missing_falls_back_to_counter() {
        let (mut t, _) = build("rate = 5\nkey_field = 'user'");
        let events = (0..100).map(|i| log(serde_json::json!({"i": i}))).collect();
        assert_eq!(run(&mut t, events).len(), 20);
    }

    #[test]
    fn exclude_always_passes_and_is_not_sampled() {
        let (mut t, metrics) = build("rate = 10\nexclude = '.level == \"error\"'");
        let events = (0..1000)
            .map(|i| {
                let level = if i % 4 == 0 { "error" } else { "info" };
                log(serde_json::json!({"i": i, "level": level}))
            })
            .collect();
        let kept = run(&mut t, events);
        let errors = kept.iter().filter(|v| v["level"] == "error").count();
        let infos = kept.iter().filter(|v| v["level"] == "info").count();
        assert_eq!(errors, 250);
        // 750 info events, 1 in 10 kept by the counter (0, 10, ... 740 of them).
        assert_eq!(infos, 75);
        assert_eq!(metrics.discarded_events(), 675);
        assert_eq!(metrics.errors_total(), 0);
    }

    #[test]
    fn exclude_error_is_counted_and_event_sampled() {
        let (mut t, metrics) = build("rate = 2\nexclude = '.n > 100'");
        let events = (0..4).map(|i| log(serde_json::json!({"i": i}))).collect();
        let kept = run(&mut t, events);
        assert_eq!(kept.len(), 2);
        assert_eq!(metrics.errors().get("condition"), Some(&4));
    }

    #[test]
    fn metrics_pass_through() {
        let (mut t, _) = build("rate = 1000");
        let m = Metric::new("m", MetricKind::Absolute, MetricValue::Gauge { value: 1.0 });
        let mut out = TransformOutput::default();
        t.transform(
            EventBatch::new(vec![
                log(serde_json::json!({})),
                Event::from(m.clone()),
                Event::from(m),
            ]),
            &mut out,
        );
        assert_eq!(out.default.len(), 3);
    }

    #[test]
    fn bad_configs_are_rejected() {
        let err = |text: &str| {
            let config: SampleConfig = toml::from_str(text).unwrap();
            config.build(&cx()).err().unwrap().to_string()
        };
        assert!(err("rate = 0").contains("at least 1"));
        assert!(err("rate = 2\nexclude = '.a +'").contains("`exclude`"));
        assert!(toml::from_str::<SampleConfig>("").is_err());
        assert!(toml::from_str::<SampleConfig>("rate = 2\nratio = 3").is_err());
        assert!(toml::from_str::<SampleConfig>("rate = -1").is_err());
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(
            hash_value(&Value::from("abc")),
            hash_value(&Value::from("abc"))
        );
        assert_eq!(hash_value(&Value::from(5)), hash_value(&Value::from("5")));
        assert_ne!(
            hash_value(&Value::from("abc")),
            hash_value(&Value::from("abd"))
        );
    }
}
