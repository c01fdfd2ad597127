//! Arrow columns to event values, and rows of the metrics long format to metric events.
//!
//! For each column of a `RecordBatch` a [`Getter`] is built once (the type dispatch happens
//! there, not per value); it then yields the value of any row. Strings and binaries are not
//! copied: they become `Bytes` slices of the decoded Arrow buffer.

use std::collections::BTreeMap;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, OffsetSizeTrait, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use ordered_float::NotNan;
use weir_pipeline::event::{
    Bucket, KeyString, Metric, MetricKind, MetricValue, ObjectMap, Quantile, Sample, StatisticKind,
    Value,
};

/// The value of one row of a column; `None` for null.
pub type Getter<'a> = Box<dyn Fn(usize) -> Option<Value> + 'a>;

/// A column type Weir does not turn into event values.
#[derive(Debug, thiserror::Error)]
#[error("column type {0} is not supported")]
pub struct Unsupported(pub String);

fn float(v: f64) -> Value {
    NotNan::new(v).map(Value::Float).unwrap_or(Value::Null)
}

fn ts_from(v: i64, unit: TimeUnit) -> Option<Value> {
    let t = match unit {
        TimeUnit::Second => DateTime::<Utc>::from_timestamp(v, 0),
        TimeUnit::Millisecond => DateTime::<Utc>::from_timestamp_millis(v),
        TimeUnit::Microsecond => DateTime::<Utc>::from_timestamp_micros(v),
        TimeUnit::Nanosecond => Some(DateTime::<Utc>::from_timestamp_nanos(v)),
    };
    t.map(Value::Timestamp)
}

macro_rules! prim {
    ($a:expr, $t:ty, $f:expr) => {{
        let arr = $a.as_primitive::<$t>();
        let f = $f;
        Box::new(move |i| {
            if arr.is_null(i) {
                None
            } else {
                f(arr.value(i))
            }
        })
    }};
}

fn strings<'a, O: OffsetSizeTrait>(a: &'a dyn Array) -> Getter<'a> {
    let arr = a.as_string::<O>();
    let whole = Bytes::from_owner(arr.values().clone());
    let offsets = arr.value_offsets();
    Box::new(move |i| {
        if arr.is_null(i) {
            return None;
        }
        let (s, e) = (offsets[i].as_usize(), offsets[i + 1].as_usize());
        Some(Value::Bytes(whole.slice(s..e)))
    })
}

fn binaries<'a, O: OffsetSizeTrait>(a: &'a dyn Array) -> Getter<'a> {
    let arr = a.as_binary::<O>();
    let whole = Bytes::from_owner(arr.values().clone());
    let offsets = arr.value_offsets();
    Box::new(move |i| {
        if arr.is_null(i) {
            return None;
        }
        let (s, e) = (offsets[i].as_usize(), offsets[i + 1].as_usize());
        Some(Value::Bytes(whole.slice(s..e)))
    })
}

fn lists<'a, O: OffsetSizeTrait>(
    a: &'a dyn Array,
    keep_nulls: bool,
) -> Result<Getter<'a>, Unsupported> {
    let arr = a.as_list::<O>();
    let child = getter(arr.values().as_ref(), keep_nulls)?;
    let offsets = arr.value_offsets();
    Ok(Box::new(move |i| {
        if arr.is_null(i) {
            return None;
        }
        let (s, e) = (offsets[i].as_usize(), offsets[i + 1].as_usize());
        Some(Value::Array(
            (s..e).map(|j| child(j).unwrap_or(Value::Null)).collect(),
        ))
    }))
}

/// The getter of column `a`. With `keep_nulls`, null struct fields are kept as `null`;
/// without, they are left out (Parquet cannot tell a null field from a missing one).
pub fn getter<'a>(a: &'a dyn Array, keep_nulls: bool) -> Result<Getter<'a>, Unsupported> {
    Ok(match a.data_type() {
        DataType::Null => Box::new(|_| None),
        DataType::Boolean => {
            let arr = a.as_boolean();
            Box::new(move |i| (!arr.is_null(i)).then(|| Value::Boolean(arr.value(i))))
        }
        DataType::Int8 => prim!(a, Int8Type, |v: i8| Some(Value::Integer(v.into()))),
        DataType::Int16 => prim!(a, Int16Type, |v: i16| Some(Value::Integer(v.into()))),
        DataType::Int32 => prim!(a, Int32Type, |v: i32| Some(Value::Integer(v.into()))),
        DataType::Int64 => prim!(a, Int64Type, |v: i64| Some(Value::Integer(v))),
        DataType::UInt8 => prim!(a, UInt8Type, |v: u8| Some(Value::Integer(v.into()))),
        DataType::UInt16 => prim!(a, UInt16Type, |v: u16| Some(Value::Integer(v.into()))),
        DataType::UInt32 => prim!(a, UInt32Type, |v: u32| Some(Value::Integer(v.into()))),
        DataType::UInt64 => prim!(a, UInt64Type, |v: u64| Some(
            i64::try_from(v)
                .map(Value::Integer)
                .unwrap_or_else(|_| float(v as f64))
        )),
        DataType::Float16 => prim!(a, Float16Type, |v: HalfF16| Some(float(v.to_f64()))),
        DataType::Float32 => prim!(a, Float32Type, |v: f32| Some(float(v.into()))),
        DataType::Float64 => prim!(a, Float64Type, |v: f64| Some(float(v))),
        DataType::Decimal128(_, scale) => {
            let div = 10f64.powi(i32::from(*scale));
            prim!(a, Decimal128Type, move |v: i128| Some(float(
                v as f64 / div
            )))
        }
        DataType::Utf8 => strings::<i32>(a),
        DataType::LargeUtf8 => strings::<i64>(a),
        DataType::Utf8View => {
            let arr = a.as_string_view();
            Box::new(move |i| {
                (!arr.is_null(i))
                    .then(|| Value::Bytes(Bytes::copy_from_slice(arr.value(i).as_bytes())))
            })
        }
        DataType::Binary => binaries::<i32>(a),
        DataType::LargeBinary => binaries::<i64>(a),
        DataType::BinaryView => {
            let arr = a.as_binary_view();
            Box::new(move |i| {
                (!arr.is_null(i)).then(|| Value::Bytes(Bytes::copy_from_slice(arr.value(i))))
            })
        }
        DataType::FixedSizeBinary(_) => {
            let arr = a.as_fixed_size_binary();
            Box::new(move |i| {
                (!arr.is_null(i)).then(|| Value::Bytes(Bytes::copy_from_slice(arr.value(i))))
            })
        }
        DataType::Timestamp(unit, _) => {
            let unit = *unit;
            match unit {
                TimeUnit::Second => prim!(a, TimestampSecondType, move |v| ts_from(v, unit)),
                TimeUnit::Millisecond => {
                    prim!(a, TimestampMillisecondType, move |v| ts_from(v, unit))
                }
                TimeUnit::Microsecond => {
                    prim!(a, TimestampMicrosecondType, move |v| ts_from(v, unit))
                }
                TimeUnit::Nanosecond => {
                    prim!(a, TimestampNanosecondType, move |v| ts_from(v, unit))
                }
            }
        }
        DataType::Date32 => prim!(a, Date32Type, |v: i32| ts_from(
            i64::from(v) * 86_400,
            TimeUnit::Second
        )),
        DataType::Date64 => prim!(a, Date64Type, |v: i64| ts_from(v, TimeUnit::Millisecond)),
        DataType::Struct(fields) => {
            let arr = a.as_struct();
            let children = fields
                .iter()
                .zip(arr.columns())
                .map(|(f, c)| {
                    Ok((
                        KeyString::from(f.name().as_str()),
                        getter(c.as_ref(), keep_nulls)?,
                    ))
                })
                .collect::<Result<Vec<_>, Unsupported>>()?;
            Box::new(move |i| {
                if arr.is_null(i) {
                    return None;
                }
                let mut m = ObjectMap::new();
                for (k, g) in &children {
                    match g(i) {
                        Some(v) => {
                            m.insert(k.clone(), v);
                        }
                        None if keep_nulls => {
                            m.insert(k.clone(), Value::Null);
                        }
                        None => {}
                    }
                }
                Some(Value::Object(m))
            })
        }
        DataType::List(_) => lists::<i32>(a, keep_nulls)?,
        DataType::LargeList(_) => lists::<i64>(a, keep_nulls)?,
        DataType::FixedSizeList(_, _) => {
            let arr = a.as_fixed_size_list();
            let child = getter(arr.values().as_ref(), keep_nulls)?;
            Box::new(move |i| {
                if arr.is_null(i) {
                    return None;
                }
                let s = arr.value_offset_at(i);
                let n = arr.value_length() as usize;
                Some(Value::Array(
                    (s..s + n)
                        .map(|j| child(j).unwrap_or(Value::Null))
                        .collect(),
                ))
            })
        }
        DataType::Map(_, _) => {
            let arr = a.as_map();
            let keys = getter(arr.keys().as_ref(), keep_nulls)?;
            let values = getter(arr.values().as_ref(), keep_nulls)?;
            let offsets = arr.value_offsets();
            Box::new(move |i| {
                if arr.is_null(i) {
                    return None;
                }
                let mut m = ObjectMap::new();
                for j in offsets[i] as usize..offsets[i + 1] as usize {
                    let k = match keys(j) {
                        Some(k) => KeyString::from(k.to_string_lossy().as_ref()),
                        None => continue,
                    };
                    m.insert(k, values(j).unwrap_or(Value::Null));
                }
                Some(Value::Object(m))
            })
        }
        DataType::Dictionary(_, _) => {
            let Some(dict) = a.as_any_dictionary_opt() else {
                return Err(Unsupported(a.data_type().to_string()));
            };
            if dict.values().is_empty() {
                return Ok(Box::new(|_| None));
            }
            let keys = dict.normalized_keys();
            let values = getter(dict.values().as_ref(), keep_nulls)?;
            Box::new(move |i| {
                if dict.is_null(i) {
                    return None;
                }
                values(*keys.get(i)?)
            })
        }
        other => return Err(Unsupported(other.to_string())),
    })
}

type HalfF16 = <Float16Type as ArrowPrimitiveType>::Native;

/// The getters of a batch's columns, by name. Unsupported columns are left out and returned
/// separately so the caller can report them once.
pub struct Columns<'a> {
    pub cols: Vec<(KeyString, Getter<'a>)>,
    pub unsupported: Vec<String>,
}

impl<'a> Columns<'a> {
    pub fn new(rb: &'a RecordBatch, keep_nulls: bool) -> Self {
        let mut cols = Vec::with_capacity(rb.num_columns());
        let mut unsupported = Vec::new();
        for (f, c) in rb.schema_ref().fields().iter().zip(rb.columns()) {
            match getter(c.as_ref(), keep_nulls) {
                Ok(g) => cols.push((KeyString::from(f.name().as_str()), g)),
                Err(e) => unsupported.push(format!("`{}`: {e}", f.name())),
            }
        }
        Self { cols, unsupported }
    }

    /// The fields of row `i`.
    pub fn row(&self, i: usize, keep_nulls: bool) -> ObjectMap {
        let mut m = ObjectMap::new();
        for (k, g) in &self.cols {
            match g(i) {
                Some(v) => {
                    m.insert(k.clone(), v);
                }
                None if keep_nulls => {
                    m.insert(k.clone(), Value::Null);
                }
                None => {}
            }
        }
        m
    }
}

/// Column names of the metrics long format written by the `parquet` sink with
/// `schema = "metrics"` (the sink's `schema::metric_columns` holds the same names).
const METRIC_COLUMNS: [&str; 6] = ["name", "kind", "metric_type", "tags", "value", "timestamp"];

/// Whether a file has the metrics long format.
pub fn is_metrics_shape(schema: &arrow_schema::Schema) -> bool {
    METRIC_COLUMNS
        .iter()
        .all(|c| schema.field_with_name(c).is_ok())
        && matches!(
            schema.field_with_name("tags").map(|f| f.data_type()),
            Ok(DataType::Map(_, _))
        )
}

/// Reads metric rows of the long format.
pub struct MetricRows<'a> {
    get: BTreeMap<&'static str, Getter<'a>>,
}

/// Why a metrics row could not become a metric.
#[derive(Debug, thiserror::Error)]
pub enum MetricRowError {
    #[error("row {row}: `{column}` is missing or null")]
    Missing { row: usize, column: &'static str },
    #[error("row {row}: unknown {column} `{value}`")]
    Unknown {
        row: usize,
        column: &'static str,
        value: String,
    },
}

impl<'a> MetricRows<'a> {
    pub fn new(rb: &'a RecordBatch) -> Result<Self, Unsupported> {
        let mut get = BTreeMap::new();
        for name in [
            "timestamp",
            "name",
            "namespace",
            "tags",
            "kind",
            "metric_type",
            "value",
            "count",
            "sum",
            "buckets",
            "quantiles",
            "samples",
            "statistic",
            "set_values",
        ] {
            if let Some(c) = rb.column_by_name(name) {
                let c: &'a ArrayRef = c;
                get.insert(name, getter(c.as_ref(), false)?);
            }
        }
        Ok(Self { get })
    }

    fn val(&self, col: &'static str, row: usize) -> Option<Value> {
        self.get.get(col).and_then(|g| g(row))
    }

    fn text(&self, col: &'static str, row: usize) -> Option<String> {
        self.val(col, row).map(|v| v.to_string_lossy().into_owned())
    }

    fn num(&self, col: &'static str, row: usize) -> Option<f64> {
        self.val(col, row).and_then(|v| as_f64(&v))
    }

    /// The metric in row `row`.
    pub fn metric(&self, row: usize) -> Result<Metric, MetricRowError> {
        let missing = |column| MetricRowError::Missing { row, column };
        let name = self.text("name", row).ok_or_else(|| missing("name"))?;
        let kind = match self.text("kind", row).as_deref() {
            Some("absolute") => MetricKind::Absolute,
            Some("incremental") => MetricKind::Incremental,
            Some(other) => {
                return Err(MetricRowError::Unknown {
                    row,
                    column: "kind",
                    value: other.to_string(),
                })
            }
            None => return Err(missing("kind")),
        };
        let ty = self
            .text("metric_type", row)
            .ok_or_else(|| missing("metric_type"))?;
        let count = || {
            self.num("count", row)
                .map(|c| c as u64)
                .ok_or_else(|| missing("count"))
        };
        let sum = || self.num("sum", row).ok_or_else(|| missing("sum"));
        let items = |col| match self.val(col, row) {
            Some(Value::Array(a)) => a,
            _ => Vec::new(),
        };
        let field = |v: &Value, k: &str| match v {
            Value::Object(m) => m.get(k).and_then(as_f64),
            _ => None,
        };
        let value = match ty.as_str() {
            "counter" => MetricValue::Counter {
                value: self.num("value", row).ok_or_else(|| missing("value"))?,
            },
            "gauge" => MetricValue::Gauge {
                value: self.num("value", row).ok_or_else(|| missing("value"))?,
            },
            "set" => MetricValue::Set {
                values: items("set_values")
                    .iter()
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect(),
            },
            "distribution" => MetricValue::Distribution {
                samples: items("samples")
                    .iter()
                    .filter_map(|s| {
                        Some(Sample {
                            value: field(s, "value")?,
                            rate: field(s, "rate")? as u32,
                        })
                    })
                    .collect(),
                statistic: match self.text("statistic", row).as_deref() {
                    Some("summary") => StatisticKind::Summary,
                    _ => StatisticKind::Histogram,
                },
            },
            "histogram" => MetricValue::AggregatedHistogram {
                buckets: items("buckets")
                    .iter()
                    .filter_map(|b| {
                        Some(Bucket {
                            upper_limit: field(b, "upper_limit")?,
                            count: field(b, "count")? as u64,
                        })
                    })
                    .collect(),
                count: count()?,
                sum: sum()?,
            },
            "summary" => MetricValue::AggregatedSummary {
                quantiles: items("quantiles")
                    .iter()
                    .filter_map(|q| {
                        Some(Quantile {
                            quantile: field(q, "quantile")?,
                            value: field(q, "value")?,
                        })
                    })
                    .collect(),
                count: count()?,
                sum: sum()?,
            },
            other => {
                return Err(MetricRowError::Unknown {
                    row,
                    column: "metric_type",
                    value: other.to_string(),
                })
            }
        };
        let mut m = Metric::new(name, kind, value);
        m.namespace = self.text("namespace", row);
        if let Some(Value::Object(tags)) = self.val("tags", row) {
            m.tags = tags
                .into_iter()
                .map(|(k, v)| (k.into(), v.to_string_lossy().into_owned()))
                .collect();
        }
        if let Some(Value::Timestamp(t)) = self.val("timestamp", row) {
            m.timestamp = Some(t);
        }
        Ok(m)
    }
}

fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Float(f) => Some(f.into_inner()),
        _ => None,
    }
}

/// The timestamp (ns) of row `i` of a timestamp column, for range filtering.
pub fn timestamp_nanos(g: &Getter<'_>, i: usize) -> Option<i64> {
    match g(i) {
        Some(Value::Timestamp(t)) => t.timestamp_nanos_opt(),
        _ => None,
    }
}
