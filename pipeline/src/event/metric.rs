use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::EventMetadata;

/// Whether a metric's value is a change since the last report or the current total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// A change since the last report (a counter's increment).
    Incremental,
    /// The current value (a gauge, or a counter's total).
    Absolute,
}

/// A histogram bucket: the count of observations `<= upper_limit` (not cumulative across
/// buckets: each bucket counts its own range, as Vector does; sinks make them cumulative).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// The bucket's upper bound.
    pub upper_limit: f64,
    /// The observations in it.
    pub count: u64,
}

/// A precomputed quantile of a summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantile {
    /// Which quantile, from 0 to 1.
    pub quantile: f64,
    /// Its value.
    pub value: f64,
}

/// One observation of a distribution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The observed value.
    pub value: f64,
    /// How many observations it stands for (sampling; 0 counts as 1).
    pub rate: u32,
}

/// What a distribution is to become downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatisticKind {
    /// A histogram (buckets).
    Histogram,
    /// A summary (quantiles).
    Summary,
}

/// The value of a metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricValue {
    /// A monotonic count.
    Counter {
        /// The count (or its increment).
        value: f64,
    },
    /// A value that goes up and down.
    Gauge {
        /// The value.
        value: f64,
    },
    /// A set of distinct values.
    Set {
        /// The values.
        values: std::collections::BTreeSet<String>,
    },
    /// Raw observations, to be aggregated downstream.
    Distribution {
        /// The observations.
        samples: Vec<Sample>,
        /// What they are aggregated into.
        statistic: StatisticKind,
    },
    /// A histogram aggregated at its source.
    AggregatedHistogram {
        /// The buckets (each counts its own range).
        buckets: Vec<Bucket>,
        /// The number of observations.
        count: u64,
        /// Their sum.
        sum: f64,
    },
    /// A summary aggregated at its source.
    AggregatedSummary {
        /// The quantiles.
        quantiles: Vec<Quantile>,
        /// The number of observations.
        count: u64,
        /// Their sum.
        sum: f64,
    },
}

/// A metric event.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    /// The metric's name.
    pub name: String,
    /// A prefix of the name (`weir` in `weir_events_total`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Its tags (labels).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Incremental or absolute.
    pub kind: MetricKind,
    /// The value.
    #[serde(flatten)]
    pub value: MetricValue,
    /// When it was measured, if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<DateTime<Utc>>,
    /// Acknowledgement and source information, travelling with the event.
    #[serde(skip)]
    pub metadata: EventMetadata,
}

impl Metric {
    /// A metric with no namespace, tags, timestamp or metadata.
    pub fn new(name: impl Into<String>, kind: MetricKind, value: MetricValue) -> Self {
        Self {
            name: name.into(),
            namespace: None,
            tags: BTreeMap::new(),
            kind,
            value,
            timestamp: None,
            metadata: EventMetadata::default(),
        }
    }

    /// With the namespace `ns`.
    pub fn with_namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    /// With the tag `k` = `v` (replacing one of that name).
    pub fn with_tag(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.tags.insert(k.into(), v.into());
        self
    }

    /// With the timestamp `ts`.
    pub fn with_timestamp(mut self, ts: DateTime<Utc>) -> Self {
        self.timestamp = Some(ts);
        self
    }

    /// `namespace_name`, or `name` without a namespace.
    pub fn full_name(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}_{}", self.name),
            None => self.name.clone(),
        }
    }
}
