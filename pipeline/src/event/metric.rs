use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::EventMetadata;

/// Whether a metric's value is a change since the last report or the current total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    Incremental,
    Absolute,
}

/// A histogram bucket: the count of observations `<= upper_limit` (not cumulative across
/// buckets: each bucket counts its own range, as Vector does; sinks make them cumulative).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    pub upper_limit: f64,
    pub count: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Quantile {
    pub quantile: f64,
    pub value: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub value: f64,
    pub rate: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatisticKind {
    Histogram,
    Summary,
}

/// The value of a metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricValue {
    Counter {
        value: f64,
    },
    Gauge {
        value: f64,
    },
    Set {
        values: std::collections::BTreeSet<String>,
    },
    Distribution {
        samples: Vec<Sample>,
        statistic: StatisticKind,
    },
    AggregatedHistogram {
        buckets: Vec<Bucket>,
        count: u64,
        sum: f64,
    },
    AggregatedSummary {
        quantiles: Vec<Quantile>,
        count: u64,
        sum: f64,
    },
}

/// A metric event.
#[derive(Debug, Clone, Serialize)]
pub struct Metric {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    pub kind: MetricKind,
    #[serde(flatten)]
    pub value: MetricValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub metadata: EventMetadata,
}

impl Metric {
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

    pub fn with_namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    pub fn with_tag(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.tags.insert(k.into(), v.into());
        self
    }

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
