//! Events to Arrow `RecordBatch`es, column by column, straight from the event values (no detour
//! through JSON text except for `json` columns and the unmatched column).
//!
//! A column builder ([`Col`]) appends one value per row. A value that does not fit its column
//! is written as null and handed back, so the caller can count it and keep it in the
//! unmatched JSON column.

use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampNanosecondBuilder, UInt64Builder,
};
use arrow_array::types::{Float64Type, UInt32Type, UInt64Type};
use arrow_array::{
    ArrayRef, ArrowPrimitiveType, Float64Array, ListArray, MapArray, NullArray, PrimitiveArray,
    RecordBatch, StructArray,
};
use arrow_buffer::{NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, DataType, FieldRef, Fields, SchemaRef};
use chrono::DateTime;
use weir_pipeline::event::{LogEvent, Metric, MetricKind, MetricValue, ObjectMap, Value};

use super::schema::{
    bucket_fields, fit_object, metrics_schema, quantile_fields, sample_fields, tags_type,
    ColumnSpec, ColumnType, Fit, PathTree,
};

/// What converting a group of events produced.
pub struct Converted {
    pub batch: RecordBatch,
    /// Values that did not fit the schema (counted; kept in the unmatched column if any).
    pub unmatched: u64,
    /// Strings that were not valid UTF-8 (written with replacement characters).
    pub invalid_utf8: u64,
    /// Rows left out (a required column had no usable value), by position in the input.
    pub rejected: Vec<usize>,
}

/// State shared by the builders of one conversion.
#[derive(Default)]
struct Cx {
    /// Explicit schemas convert between scalar types (`"42"` into an int64 column).
    lenient: bool,
    json_buf: Vec<u8>,
    invalid_utf8: u64,
}

/// A column under construction.
enum Col {
    /// Only nulls fit (the elements of lists that were always empty).
    Null(usize),
    Bool(BooleanBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Str(StringBuilder),
    Ts(TimestampNanosecondBuilder),
    /// Any value as JSON text.
    Json(StringBuilder),
    Struct {
        fields: Fields,
        children: Vec<Col>,
        nulls: NullBufferBuilder,
    },
    List {
        field: FieldRef,
        child: Box<Col>,
        offsets: Vec<i32>,
        nulls: NullBufferBuilder,
    },
}

/// Largest total of string bytes in one column of one batch (Arrow `utf8` offsets are i32).
const MAX_STRING_BYTES: usize = i32::MAX as usize;

/// Most string bytes allocated ahead for one column of one batch (from the previous batch's
/// size: one huge line must not make every later batch allocate for a thousand of them).
const MAX_STRING_PREALLOC: usize = 16 << 20;

impl Col {
    fn new(t: &DataType, cap: usize) -> Result<Col, ArrowError> {
        Ok(match t {
            DataType::Null => Col::Null(0),
            DataType::Boolean => Col::Bool(BooleanBuilder::with_capacity(cap)),
            DataType::Int64 => Col::Int(Int64Builder::with_capacity(cap)),
            DataType::Float64 => Col::Float(Float64Builder::with_capacity(cap)),
            DataType::Utf8 => Col::Str(StringBuilder::with_capacity(cap, cap * 16)),
            DataType::Timestamp(..) => Col::Ts(TimestampNanosecondBuilder::with_capacity(cap)),
            DataType::Struct(fields) => Col::Struct {
                fields: fields.clone(),
                children: fields
                    .iter()
                    .map(|f| Col::new(f.data_type(), cap))
                    .collect::<Result<_, _>>()?,
                nulls: NullBufferBuilder::new(cap),
            },
            DataType::List(field) => {
                let mut offsets = Vec::with_capacity(cap + 1);
                offsets.push(0);
                Col::List {
                    field: field.clone(),
                    child: Box::new(Col::new(field.data_type(), cap)?),
                    offsets,
                    nulls: NullBufferBuilder::new(cap),
                }
            }
            other => {
                return Err(ArrowError::NotYetImplemented(format!(
                    "the parquet sink does not write columns of type {other}"
                )))
            }
        })
    }

    /// A column of configured type `t` (`json` columns hold JSON text).
    fn for_column(t: &ColumnType, cap: usize) -> Result<Col, ArrowError> {
        match t {
            ColumnType::Json => Ok(Col::Json(StringBuilder::with_capacity(cap, cap * 32))),
            ColumnType::List(inner) => {
                let DataType::List(field) = t.arrow() else {
                    return Err(ArrowError::SchemaError(
                        "list column without a list type".into(),
                    ));
                };
                let mut offsets = Vec::with_capacity(cap + 1);
                offsets.push(0);
                Ok(Col::List {
                    field,
                    child: Box::new(Col::for_column(inner, cap)?),
                    offsets,
                    nulls: NullBufferBuilder::new(cap),
                })
            }
            other => Col::new(&other.arrow(), cap),
        }
    }

    fn append_null(&mut self) {
        match self {
            Col::Null(n) => *n += 1,
            Col::Bool(b) => b.append_null(),
            Col::Int(b) => b.append_null(),
            Col::Float(b) => b.append_null(),
            Col::Str(b) | Col::Json(b) => b.append_null(),
            Col::Ts(b) => b.append_null(),
            Col::Struct {
                children, nulls, ..
            } => {
                for c in children {
                    c.append_null();
                }
                nulls.append_null();
            }
            Col::List { offsets, nulls, .. } => {
                let last = offsets.last().copied().unwrap_or(0);
                offsets.push(last);
                nulls.append_null();
            }
        }
    }

    /// Appends `v` (absent = null). Returns the part of `v` that did not fit (written as null).
    fn append(&mut self, v: Option<&Value>, cx: &mut Cx) -> Option<Value> {
        let v = match v {
            None | Some(Value::Null) => {
                self.append_null();
                return None;
            }
            Some(v) => v,
        };
        let lenient = cx.lenient;
        let ok = match self {
            Col::Null(n) => {
                *n += 1;
                false
            }
            Col::Bool(b) => {
                let x = as_bool(v, lenient);
                b.append_option(x);
                x.is_some()
            }
            Col::Int(b) => push(b, as_i64(v, lenient)),
            Col::Float(b) => push(b, as_f64(v, lenient)),
            Col::Ts(b) => push(b, as_ts_nanos(v, lenient)),
            Col::Str(b) => {
                let s = as_str(v, lenient, &mut cx.invalid_utf8);
                match s {
                    Some(s) if b.values_slice().len() + s.len() <= MAX_STRING_BYTES => {
                        b.append_value(s);
                        true
                    }
                    _ => {
                        b.append_null();
                        false
                    }
                }
            }
            Col::Json(b) => {
                cx.json_buf.clear();
                let ok = serde_json::to_writer(&mut cx.json_buf, v).is_ok()
                    && b.values_slice().len() + cx.json_buf.len() <= MAX_STRING_BYTES;
                match std::str::from_utf8(&cx.json_buf) {
                    Ok(s) if ok => {
                        b.append_value(s);
                        true
                    }
                    _ => {
                        b.append_null();
                        false
                    }
                }
            }
            Col::Struct {
                fields,
                children,
                nulls,
            } => match v {
                Value::Object(m) => {
                    nulls.append_non_null();
                    return append_object(fields, children, m, cx).map(Value::Object);
                }
                _ => {
                    for c in children.iter_mut() {
                        c.append_null();
                    }
                    nulls.append_null();
                    false
                }
            },
            Col::List {
                child,
                offsets,
                nulls,
                ..
            } => match v {
                Value::Array(items) => {
                    let last = offsets.last().copied().unwrap_or(0);
                    match i32::try_from(items.len())
                        .ok()
                        .and_then(|n| last.checked_add(n))
                    {
                        Some(end) => {
                            // An element that does not fit is written as null; the whole
                            // array is kept as unmatched so nothing is lost.
                            let mut all_fit = true;
                            for i in items {
                                all_fit &= child.append(Some(i), cx).is_none();
                            }
                            offsets.push(end);
                            nulls.append_non_null();
                            all_fit
                        }
                        None => {
                            offsets.push(last);
                            nulls.append_null();
                            false
                        }
                    }
                }
                _ => {
                    let last = offsets.last().copied().unwrap_or(0);
                    offsets.push(last);
                    nulls.append_null();
                    false
                }
            },
        };
        (!ok).then(|| v.clone())
    }

    fn finish(self) -> Result<ArrayRef, ArrowError> {
        Ok(match self {
            Col::Null(n) => Arc::new(NullArray::new(n)),
            Col::Bool(mut b) => Arc::new(b.finish()),
            Col::Int(mut b) => Arc::new(b.finish()),
            Col::Float(mut b) => Arc::new(b.finish()),
            Col::Str(mut b) | Col::Json(mut b) => Arc::new(b.finish()),
            Col::Ts(mut b) => Arc::new(b.finish().with_timezone("UTC")),
            Col::Struct {
                fields,
                children,
                mut nulls,
            } => {
                let len = nulls.len();
                let arrays = children
                    .into_iter()
                    .map(Col::finish)
                    .collect::<Result<Vec<_>, _>>()?;
                Arc::new(StructArray::try_new_with_length(
                    fields,
                    arrays,
                    nulls.finish(),
                    len,
                )?)
            }
            Col::List {
                field,
                child,
                offsets,
                mut nulls,
            } => Arc::new(ListArray::try_new(
                field,
                OffsetBuffer::new(ScalarBuffer::from(offsets)),
                child.finish()?,
                nulls.finish(),
            )?),
        })
    }
}

fn push<T: ArrowPrimitiveType>(
    b: &mut arrow_array::builder::PrimitiveBuilder<T>,
    v: Option<T::Native>,
) -> bool {
    b.append_option(v);
    v.is_some()
}

fn text(v: &Value) -> Option<&[u8]> {
    match v {
        Value::Bytes(b) => Some(b),
        Value::String(s) => Some(s.as_bytes()),
        Value::Regex(r) => Some(r.as_str().as_bytes()),
        _ => None,
    }
}

fn as_bool(v: &Value, lenient: bool) -> Option<bool> {
    match v {
        Value::Boolean(b) => Some(*b),
        _ if lenient => match text(v)? {
            b"true" => Some(true),
            b"false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn as_i64(v: &Value, lenient: bool) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        Value::Float(f) if lenient => {
            let f = f.into_inner();
            (f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64).then_some(f as i64)
        }
        _ if lenient => std::str::from_utf8(text(v)?).ok()?.trim().parse().ok(),
        _ => None,
    }
}

fn as_f64(v: &Value, lenient: bool) -> Option<f64> {
    match v {
        Value::Integer(i) => Some(*i as f64),
        Value::Float(f) => Some(f.into_inner()),
        _ if lenient => std::str::from_utf8(text(v)?).ok()?.trim().parse().ok(),
        _ => None,
    }
}

fn as_ts_nanos(v: &Value, lenient: bool) -> Option<i64> {
    match v {
        Value::Timestamp(t) => t.timestamp_nanos_opt(),
        _ if lenient => DateTime::parse_from_rfc3339(std::str::from_utf8(text(v)?).ok()?.trim())
            .ok()?
            .timestamp_nanos_opt(),
        _ => None,
    }
}

fn as_str<'a>(
    v: &'a Value,
    lenient: bool,
    invalid_utf8: &mut u64,
) -> Option<std::borrow::Cow<'a, str>> {
    match text(v) {
        Some(b) => Some(match std::str::from_utf8(b) {
            Ok(s) => s.into(),
            Err(_) => {
                *invalid_utf8 += 1;
                String::from_utf8_lossy(b)
            }
        }),
        None if lenient && !matches!(v, Value::Object(_) | Value::Array(_)) => {
            Some(v.to_string_lossy())
        }
        None => None,
    }
}

/// Appends the fields of `m` to the struct (or top-level) columns `children` whose `fields`
/// are sorted by name: one merge pass over both sorted lists. Returns what did not fit: the
/// non-null fields without a column and the values their column refused.
fn append_object(
    fields: &Fields,
    children: &mut [Col],
    m: &ObjectMap,
    cx: &mut Cx,
) -> Option<ObjectMap> {
    let mut rest: Option<ObjectMap> = None;
    let extra = |k: &weir_pipeline::event::KeyString, v: &Value, rest: &mut Option<ObjectMap>| {
        if !matches!(v, Value::Null) {
            rest.get_or_insert_with(ObjectMap::new)
                .insert(k.clone(), v.clone());
        }
    };
    let mut it = m.iter().peekable();
    for (f, c) in fields.iter().zip(children.iter_mut()) {
        let name = f.name().as_str();
        let mut val = None;
        while let Some((k, v)) = it.peek() {
            match k.as_str().cmp(name) {
                std::cmp::Ordering::Less => {
                    extra(k, v, &mut rest);
                    it.next();
                }
                std::cmp::Ordering::Equal => {
                    val = Some(*v);
                    it.next();
                    break;
                }
                std::cmp::Ordering::Greater => break,
            }
        }
        if let Some(u) = c.append(val, cx) {
            rest.get_or_insert_with(ObjectMap::new)
                .insert(name.into(), u);
        }
    }
    for (k, v) in it {
        extra(k, v, &mut rest);
    }
    rest
}

/// The unmatched JSON column and its count.
struct Unmatched {
    col: Option<StringBuilder>,
    count: u64,
    buf: Vec<u8>,
}

impl Unmatched {
    fn new(enabled: bool, cap: usize) -> Self {
        Self {
            col: enabled.then(|| StringBuilder::with_capacity(cap, 0)),
            count: 0,
            buf: Vec::new(),
        }
    }

    fn row(&mut self, rest: Option<ObjectMap>) {
        if let Some(r) = &rest {
            self.count += r.len() as u64;
        }
        let Some(col) = &mut self.col else { return };
        match rest {
            Some(r) => {
                self.buf.clear();
                let ok = serde_json::to_writer(&mut self.buf, &r).is_ok()
                    && col.values_slice().len() + self.buf.len() <= MAX_STRING_BYTES;
                match std::str::from_utf8(&self.buf) {
                    Ok(s) if ok => col.append_value(s),
                    _ => col.append_null(),
                }
            }
            None => col.append_null(),
        }
    }

    fn finish(self, arrays: &mut Vec<ArrayRef>) {
        if let Some(mut c) = self.col {
            arrays.push(Arc::new(c.finish()));
        }
    }
}

/// Converts logs with an inferred schema: `fields` (sorted by name) are the event columns;
/// `schema` is the file's schema (those columns, then the unmatched column if configured).
pub fn convert_auto(
    events: &[&LogEvent],
    fields: &Fields,
    schema: &SchemaRef,
    unmatched_column: bool,
) -> Result<Converted, ArrowError> {
    let n = events.len();
    let mut cols = fields
        .iter()
        .map(|f| Col::new(f.data_type(), n))
        .collect::<Result<Vec<_>, _>>()?;
    let mut cx = Cx::default();
    let mut unmatched = Unmatched::new(unmatched_column, n);
    for e in events {
        let rest = match e.value() {
            Value::Object(m) => append_object(fields, &mut cols, m, &mut cx),
            other => {
                for c in cols.iter_mut() {
                    c.append_null();
                }
                let mut r = ObjectMap::new();
                r.insert("message".into(), other.clone());
                Some(r)
            }
        };
        unmatched.row(rest);
    }
    let mut arrays = cols
        .into_iter()
        .map(Col::finish)
        .collect::<Result<Vec<_>, _>>()?;
    let count = unmatched.count;
    unmatched.finish(&mut arrays);
    Ok(Converted {
        batch: RecordBatch::try_new(schema.clone(), arrays)?,
        unmatched: count,
        invalid_utf8: cx.invalid_utf8,
        rejected: Vec::new(),
    })
}

/// Converts logs into configured columns; `schema` is the file's schema (the columns, then
/// the unmatched column if configured).
pub fn convert_explicit(
    events: &[&LogEvent],
    columns: &[ColumnSpec],
    tree: &PathTree,
    schema: &SchemaRef,
    unmatched_column: bool,
) -> Result<Converted, ArrowError> {
    let n = events.len();
    let mut cols = columns
        .iter()
        .map(|c| Col::for_column(&c.ty, n))
        .collect::<Result<Vec<_>, _>>()?;
    let mut cx = Cx {
        lenient: true,
        ..Cx::default()
    };
    let mut unmatched = Unmatched::new(unmatched_column, n);
    let mut rejected = Vec::new();
    // Scratch column to test whether a required value converts, without touching the real one.
    let mut probes: Vec<Option<Col>> = columns
        .iter()
        .map(|c| {
            if c.nullable {
                Ok(None)
            } else {
                Col::for_column(&c.ty, 1).map(Some)
            }
        })
        .collect::<Result<_, _>>()?;
    'rows: for (i, e) in events.iter().enumerate() {
        for (c, probe) in columns.iter().zip(probes.iter_mut()) {
            if let Some(p) = probe {
                let v = e.get(&c.path);
                if matches!(v, None | Some(Value::Null)) || p.append(v, &mut cx).is_some() {
                    rejected.push(i);
                    continue 'rows;
                }
                if let Ok(fresh) = Col::for_column(&c.ty, 1) {
                    *p = fresh;
                }
            }
        }
        let mut rest: Option<ObjectMap> = None;
        for (c, col) in columns.iter().zip(cols.iter_mut()) {
            if let Some(u) = col.append(e.get(&c.path), &mut cx) {
                let mut v = Value::Object(rest.take().unwrap_or_default());
                v.insert(&c.path, u);
                if let Value::Object(m) = v {
                    rest = Some(m);
                }
            }
        }
        if let Some(m) = e.as_map() {
            let mut un = rest.take().unwrap_or_default();
            tree.unconsumed(m, &mut un);
            rest = (!un.is_empty()).then_some(un);
        }
        unmatched.row(rest);
    }
    let mut arrays = cols
        .into_iter()
        .map(Col::finish)
        .collect::<Result<Vec<_>, _>>()?;
    let count = unmatched.count;
    unmatched.finish(&mut arrays);
    Ok(Converted {
        batch: RecordBatch::try_new(schema.clone(), arrays)?,
        unmatched: count,
        invalid_utf8: cx.invalid_utf8,
        rejected,
    })
}

/// Converts metrics into the long format of [`metrics_schema`].
pub fn convert_metrics(metrics: &[&Metric]) -> Result<RecordBatch, ArrowError> {
    let n = metrics.len();
    let mut ts = TimestampNanosecondBuilder::with_capacity(n);
    let mut name = StringBuilder::with_capacity(n, n * 24);
    let mut namespace = StringBuilder::with_capacity(n, n * 8);
    let mut tag_keys = StringBuilder::new();
    let mut tag_values = StringBuilder::new();
    let mut tag_offsets: Vec<i32> = Vec::with_capacity(n + 1);
    tag_offsets.push(0);
    let mut kind = StringBuilder::with_capacity(n, n * 8);
    let mut metric_type = StringBuilder::with_capacity(n, n * 8);
    let mut value = Float64Builder::with_capacity(n);
    let mut count = UInt64Builder::with_capacity(n);
    let mut sum = Float64Builder::with_capacity(n);
    let mut buckets = PairList::<UInt64Type>::new(n);
    let mut quantiles = PairList::<Float64Type>::new(n);
    let mut samples = PairList::<UInt32Type>::new(n);
    let mut statistic = StringBuilder::with_capacity(n, 0);
    let mut set_values = StringBuilder::new();
    let mut set_offsets: Vec<i32> = Vec::with_capacity(n + 1);
    set_offsets.push(0);
    let mut set_nulls = NullBufferBuilder::new(n);

    for m in metrics {
        ts.append_option(m.timestamp.and_then(|t| t.timestamp_nanos_opt()));
        name.append_value(&m.name);
        namespace.append_option(m.namespace.as_deref());
        for (k, v) in &m.tags {
            tag_keys.append_value(k);
            tag_values.append_value(v);
        }
        tag_offsets.push(offset(tag_keys.len())?);
        kind.append_value(match m.kind {
            MetricKind::Absolute => "absolute",
            MetricKind::Incremental => "incremental",
        });
        let (ty, v, c, s) = match &m.value {
            MetricValue::Counter { value } => ("counter", Some(*value), None, None),
            MetricValue::Gauge { value } => ("gauge", Some(*value), None, None),
            MetricValue::Set { .. } => ("set", None, None, None),
            MetricValue::Distribution { .. } => ("distribution", None, None, None),
            MetricValue::AggregatedHistogram { count, sum, .. } => {
                ("histogram", None, Some(*count), Some(*sum))
            }
            MetricValue::AggregatedSummary { count, sum, .. } => {
                ("summary", None, Some(*count), Some(*sum))
            }
        };
        metric_type.append_value(ty);
        value.append_option(v);
        count.append_option(c);
        sum.append_option(s);
        match &m.value {
            MetricValue::AggregatedHistogram { buckets: b, .. } => {
                buckets.row(b.iter().map(|b| (b.upper_limit, b.count)))?
            }
            _ => buckets.null()?,
        }
        match &m.value {
            MetricValue::AggregatedSummary { quantiles: q, .. } => {
                quantiles.row(q.iter().map(|q| (q.quantile, q.value)))?
            }
            _ => quantiles.null()?,
        }
        match &m.value {
            MetricValue::Distribution {
                samples: smp,
                statistic: st,
            } => {
                samples.row(smp.iter().map(|s| (s.value, s.rate)))?;
                statistic.append_value(match st {
                    weir_pipeline::event::StatisticKind::Histogram => "histogram",
                    weir_pipeline::event::StatisticKind::Summary => "summary",
                });
            }
            _ => {
                samples.null()?;
                statistic.append_null();
            }
        }
        match &m.value {
            MetricValue::Set { values } => {
                for v in values {
                    set_values.append_value(v);
                }
                set_offsets.push(offset(set_values.len())?);
                set_nulls.append_non_null();
            }
            _ => {
                set_offsets.push(offset(set_values.len())?);
                set_nulls.append_null();
            }
        }
    }

    let schema = metrics_schema();
    let DataType::Map(entries_field, _) = tags_type() else {
        return Err(ArrowError::SchemaError("tags is not a map".into()));
    };
    let DataType::Struct(entry_fields) = entries_field.data_type().clone() else {
        return Err(ArrowError::SchemaError(
            "map entries are not a struct".into(),
        ));
    };
    let entries = StructArray::try_new(
        entry_fields,
        vec![Arc::new(tag_keys.finish()), Arc::new(tag_values.finish())],
        None,
    )?;
    let tags = MapArray::try_new(
        entries_field,
        OffsetBuffer::new(ScalarBuffer::from(tag_offsets)),
        entries,
        None,
        false,
    )?;
    let list_field = |i: usize| -> Result<FieldRef, ArrowError> {
        match schema.field(i).data_type() {
            DataType::List(f) => Ok(f.clone()),
            other => Err(ArrowError::SchemaError(format!(
                "expected a list, got {other}"
            ))),
        }
    };
    let bucket_list = buckets.finish(list_field(9)?, bucket_fields())?;
    let quantile_list = quantiles.finish(list_field(10)?, quantile_fields())?;
    let sample_list = samples.finish(list_field(11)?, sample_fields())?;
    let set_list = ListArray::try_new(
        list_field(13)?,
        OffsetBuffer::new(ScalarBuffer::from(set_offsets)),
        Arc::new(set_values.finish()),
        set_nulls.finish(),
    )?;
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(ts.finish().with_timezone("UTC")),
            Arc::new(name.finish()),
            Arc::new(namespace.finish()),
            Arc::new(tags),
            Arc::new(kind.finish()),
            Arc::new(metric_type.finish()),
            Arc::new(value.finish()),
            Arc::new(count.finish()),
            Arc::new(sum.finish()),
            Arc::new(bucket_list),
            Arc::new(quantile_list),
            Arc::new(sample_list),
            Arc::new(statistic.finish()),
            Arc::new(set_list),
        ],
    )
}

fn offset(n: usize) -> Result<i32, ArrowError> {
    i32::try_from(n).map_err(|_| ArrowError::ComputeError("list offset overflow".into()))
}

/// A `list<struct<f64, T>>` column (buckets, quantiles, samples) built row by row.
struct PairList<T: ArrowPrimitiveType> {
    first: Vec<f64>,
    second: Vec<T::Native>,
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
}

impl<T: ArrowPrimitiveType> PairList<T> {
    fn new(n: usize) -> Self {
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0);
        Self {
            first: Vec::new(),
            second: Vec::new(),
            offsets,
            nulls: NullBufferBuilder::new(n),
        }
    }

    fn row(&mut self, items: impl Iterator<Item = (f64, T::Native)>) -> Result<(), ArrowError> {
        for (a, b) in items {
            self.first.push(a);
            self.second.push(b);
        }
        self.offsets.push(offset(self.first.len())?);
        self.nulls.append_non_null();
        Ok(())
    }

    fn null(&mut self) -> Result<(), ArrowError> {
        self.offsets.push(offset(self.first.len())?);
        self.nulls.append_null();
        Ok(())
    }

    fn finish(mut self, list_field: FieldRef, fields: Fields) -> Result<ListArray, ArrowError> {
        let entries = StructArray::try_new(
            fields,
            vec![
                Arc::new(Float64Array::from(self.first)),
                Arc::new(PrimitiveArray::<T>::from_iter_values(self.second)),
            ],
            None,
        )?;
        ListArray::try_new(
            list_field,
            OffsetBuffer::new(ScalarBuffer::from(self.offsets)),
            Arc::new(entries),
            self.nulls.finish(),
        )
    }
}

/// Converts logs with an inferred schema that already holds every one of them, in one pass
/// and without building trees of values: `json` lines the codec held raw (events whose
/// [`LogEvent::raw_json`] is the line) are parsed straight into the column builders, with no allocation per
/// event; other events are appended from their values.
///
/// `fields` (sorted by name, not empty) must fit every event as is ([`Fit::Fits`], nothing
/// unmatched): an event with a field that has no column, a value whose type does not fit its
/// column exactly, a duplicate key or a string column past its size limit makes this give up
/// (`None`), and the caller goes the general way ([`convert_auto`], after cutting the batch
/// by schema), which widens the schema, cuts files or counts unmatched values. Raw lines are
/// parsed by the codec's deserializer (`serde_json`, the same number and string rules), so
/// the columns are exactly what [`convert_auto`] writes for the same events.
///
/// `raw`: whether to parse raw lines at all. When something has built the events' trees
/// anyway (a templated `path` reads fields or the time of every event), appending from the
/// trees is cheaper than parsing the lines again.
///
/// `sizes` carries, from one call to the next, the string bytes per row of each top-level
/// string column, so that its buffer is allocated once at about the right size instead of
/// growing (and being copied) a few times per batch.
///
/// [`Fit::Fits`]: super::schema::Fit::Fits
pub fn convert_auto_fast(
    events: &[&LogEvent],
    fields: &Fields,
    schema: &SchemaRef,
    unmatched_column: Option<&str>,
    raw: bool,
    sizes: &mut Vec<usize>,
) -> Option<Converted> {
    if fields.is_empty() || fields.len() > raw::MAX_FIELDS {
        return None;
    }
    let n = events.len();
    sizes.resize(fields.len(), 0);
    let mut cols = fields
        .iter()
        .zip(sizes.iter())
        .map(|(f, &per_row)| match f.data_type() {
            // A little over last time's size: most batches then never grow.
            DataType::Utf8 if per_row > 0 => Ok(Col::Str(StringBuilder::with_capacity(
                n,
                (per_row + per_row / 8 + 1)
                    .saturating_mul(n)
                    .min(MAX_STRING_PREALLOC),
            ))),
            t => Col::new(t, n),
        })
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    let mut cx = Cx::default();
    let mut hints = Vec::new();
    for e in events {
        match e.raw_json().filter(|_| raw) {
            Some(j) => raw::row(j, fields, &mut cols, &mut hints)?,
            None => {
                let Value::Object(m) = e.value() else {
                    return None;
                };
                if fit_object(m, fields, unmatched_column) != Fit::Fits
                    || append_object(fields, &mut cols, m, &mut cx).is_some()
                {
                    return None;
                }
            }
        }
    }
    for (c, size) in cols.iter().zip(sizes.iter_mut()) {
        if let Col::Str(b) = c {
            *size = b.values_slice().len() / n.max(1);
        }
    }
    let mut arrays = cols
        .into_iter()
        .map(Col::finish)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    if unmatched_column.is_some() {
        let mut c = StringBuilder::with_capacity(n, 0);
        c.append_nulls(n);
        arrays.push(Arc::new(c.finish()));
    }
    Some(Converted {
        batch: RecordBatch::try_new(schema.clone(), arrays).ok()?,
        unmatched: 0,
        invalid_utf8: cx.invalid_utf8,
        rejected: Vec::new(),
    })
}

/// The raw-line path of [`convert_auto_fast`]: `serde_json` visitors that append to [`Col`]s.
/// Any visitor error means "give up" (the line was checked by the codec already, so it is
/// never a syntax error in practice).
mod raw {
    use std::fmt;

    use arrow_schema::Fields;
    use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};

    use super::{Col, MAX_STRING_BYTES};

    /// Most fields of one object the raw path tracks (one bit each).
    pub const MAX_FIELDS: usize = 128;

    /// Appends one line (a JSON object) as a row. `None`: it does not fit (see
    /// [`super::convert_auto_fast`]); the columns are then unusable.
    pub fn row(
        line: &[u8],
        fields: &Fields,
        cols: &mut [Col],
        hints: &mut Vec<usize>,
    ) -> Option<()> {
        let text = std::str::from_utf8(line).ok()?;
        let mut de = serde_json::Deserializer::from_str(text);
        let seed = ObjectSeed {
            fields,
            children: cols,
            hints: Some(hints),
        };
        serde::Deserializer::deserialize_map(&mut de, seed).ok()?;
        de.end().ok()
    }

    fn give_up<E: serde::de::Error>() -> E {
        E::custom("does not fit")
    }

    /// The fields of one object into `children` (the columns of `fields`, sorted by name);
    /// columns the object lacks get a null. `hints` (top level only) remembers which column
    /// the n-th key of the previous line went to: lines of one source mostly share a key order.
    struct ObjectSeed<'a> {
        fields: &'a Fields,
        children: &'a mut [Col],
        hints: Option<&'a mut Vec<usize>>,
    }

    impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for ObjectSeed<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let ObjectSeed {
                fields,
                children,
                mut hints,
            } = self;
            if fields.len() > MAX_FIELDS {
                return Err(give_up());
            }
            let mut seen: u128 = 0;
            let mut pos = 0;
            while let Some(found) = map.next_key_seed(KeySeed {
                fields,
                hint: hints.as_ref().and_then(|h| h.get(pos).copied()),
            })? {
                match found {
                    Some(i) => {
                        let bit = 1u128 << i;
                        if seen & bit != 0 {
                            // A duplicate key: the last one wins in the tree; not here.
                            return Err(give_up());
                        }
                        seen |= bit;
                        if let Some(h) = hints.as_mut() {
                            match h.get_mut(pos) {
                                Some(x) => *x = i,
                                None => h.push(i),
                            }
                        }
                        let col = children.get_mut(i).ok_or_else(give_up)?;
                        map.next_value_seed(ValueSeed { col })?;
                    }
                    // A field without a column fits only when it is null.
                    None => map.next_value_seed(NullOnly)?,
                }
                pos += 1;
            }
            for (i, c) in children.iter_mut().enumerate() {
                if seen & (1u128 << i) == 0 {
                    c.append_null();
                }
            }
            Ok(())
        }
    }

    /// A key to the index of its column (`None`: no such column).
    struct KeySeed<'a> {
        fields: &'a Fields,
        hint: Option<usize>,
    }

    impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
        type Value = Option<usize>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
            d.deserialize_str(self)
        }
    }

    impl<'de> Visitor<'de> for KeySeed<'_> {
        type Value = Option<usize>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string key")
        }
        fn visit_str<E>(self, k: &str) -> Result<Option<usize>, E> {
            if let Some(h) = self.hint {
                if self.fields.get(h).is_some_and(|f| f.name() == k) {
                    return Ok(Some(h));
                }
            }
            Ok(self
                .fields
                .binary_search_by(|f| f.name().as_str().cmp(k))
                .ok())
        }
    }

    /// A value that fits only if it is null (a field without a column).
    struct NullOnly;

    impl<'de> DeserializeSeed<'de> for NullOnly {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for NullOnly {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("null")
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_none<E>(self) -> Result<(), E> {
            Ok(())
        }
    }

    /// One value into its column, if it fits as is.
    struct ValueSeed<'a> {
        col: &'a mut Col,
    }

    impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
        type Value = ();
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for ValueSeed<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a value of the column's type")
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<(), E> {
            match self.col {
                Col::Bool(b) => b.append_value(v),
                _ => return Err(give_up()),
            }
            Ok(())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<(), E> {
            match self.col {
                Col::Int(b) => b.append_value(v),
                // An integer in a float column fits (as in the tree path).
                Col::Float(b) => b.append_value(v as f64),
                _ => return Err(give_up()),
            }
            Ok(())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<(), E> {
            match i64::try_from(v) {
                Ok(i) => self.visit_i64(i),
                // Past i64: a float, as the codec's tree has it.
                Err(_) => self.visit_f64(v as f64),
            }
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<(), E> {
            match self.col {
                // JSON has no NaN, so the tree's `NotNan` holds `v` as is.
                Col::Float(b) if !v.is_nan() => b.append_value(v),
                _ => return Err(give_up()),
            }
            Ok(())
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
            match self.col {
                Col::Str(b) if b.values_slice().len() + v.len() <= MAX_STRING_BYTES => {
                    b.append_value(v)
                }
                _ => return Err(give_up()),
            }
            Ok(())
        }
        fn visit_unit<E>(self) -> Result<(), E> {
            self.col.append_null();
            Ok(())
        }
        fn visit_none<E>(self) -> Result<(), E> {
            self.col.append_null();
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
            let Col::List {
                child,
                offsets,
                nulls,
                ..
            } = self.col
            else {
                return Err(give_up());
            };
            let mut len: i32 = 0;
            while seq.next_element_seed(ValueSeed { col: child })?.is_some() {
                len = len.checked_add(1).ok_or_else(give_up)?;
            }
            let last = offsets.last().copied().unwrap_or(0);
            offsets.push(last.checked_add(len).ok_or_else(give_up)?);
            nulls.append_non_null();
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
            let Col::Struct {
                fields,
                children,
                nulls,
            } = self.col
            else {
                return Err(give_up());
            };
            nulls.append_non_null();
            ObjectSeed {
                fields: &*fields,
                children: children.as_mut_slice(),
                hints: None,
            }
            .visit_map(map)
        }
    }
}
