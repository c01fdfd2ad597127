//! Per-column encodings, chosen per file from a sample of its first rows.
//!
//! Parquet's default (a dictionary per column chunk, falling back to PLAIN when it grows too
//! big) suits columns that repeat a few values (`level`, `status`, `service`). For columns
//! whose values are mostly distinct (byte counts, durations, IPs, URLs with ids, timestamps)
//! the dictionary is pure cost: every value is hashed and looked up, the dictionary fills up,
//! and the writer falls back to PLAIN anyway. For those the sink turns the dictionary off and
//! picks an encoding that suits the type:
//!
//! - integers and timestamps: `DELTA_BINARY_PACKED` (small differences, few bits each);
//! - floats: `PLAIN` (zstd does the rest);
//! - strings: `DELTA_LENGTH_BYTE_ARRAY` (the lengths bit-packed apart from the bytes, which
//!   zstd then compresses). `DELTA_BYTE_ARRAY` (prefixes shared with the previous value) was
//!   measured too (on `weir-bench`'s access logs): behind zstd it was no smaller, often larger (text timestamps 1.26 vs 0.97
//!   bytes per row, user agents 12.9 vs 12.4), and it costs more to write.
//!
//! The choice is made once per file, from at most [`SAMPLE_ROWS`] rows of the first batch it
//! receives, and set through [`WriterProperties`] per column path. Columns with a sample too
//! small to judge, booleans, maps and columns without values keep the defaults.

use std::collections::HashSet;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float64Type, Int32Type, Int64Type, TimestampNanosecondType, UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use parquet::basic::Encoding;
use parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};
use parquet::schema::types::ColumnPath;

/// Rows (or list elements) sampled per column.
pub const SAMPLE_ROWS: usize = 1024;

/// Below this many non-null sampled values a column keeps the defaults: too few to judge.
const MIN_SAMPLE: usize = 16;

/// A column is high-cardinality when more than this fraction of its sampled values are
/// distinct (numerator, denominator).
const DISTINCT_FRACTION: (usize, usize) = (1, 2);

/// The encoding chosen for one leaf column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnChoice {
    pub path: ColumnPath,
    /// The encoding of the data pages; the dictionary is disabled for the column.
    pub encoding: Encoding,
}

/// The encodings for the high-cardinality leaf columns of `batch` (columns not listed keep
/// the dictionary).
pub fn choose(batch: &RecordBatch) -> Vec<ColumnChoice> {
    let rows = batch.num_rows().min(SAMPLE_ROWS);
    let mut out = Vec::new();
    for (field, col) in batch.schema_ref().fields().iter().zip(batch.columns()) {
        let mut path = vec![field.name().clone()];
        leaf(&col.slice(0, rows), &mut path, &mut out);
    }
    out
}

/// The file's writer properties: `base` plus the per-column choices for `first` (the first
/// rows the file receives).
pub fn file_properties(base: &WriterProperties, first: &RecordBatch) -> WriterProperties {
    apply(base.clone().into_builder(), &choose(first)).build()
}

/// Sets the choices on a writer properties builder.
pub fn apply(mut b: WriterPropertiesBuilder, choices: &[ColumnChoice]) -> WriterPropertiesBuilder {
    for c in choices {
        b = b
            .set_column_dictionary_enabled(c.path.clone(), false)
            .set_column_encoding(c.path.clone(), c.encoding);
    }
    b
}

/// Walks `a` (already cut to the sample) down to its leaf columns.
fn leaf(a: &ArrayRef, path: &mut Vec<String>, out: &mut Vec<ColumnChoice>) {
    let choice = match a.data_type() {
        DataType::Struct(fields) => {
            let s = a.as_struct();
            for (f, c) in fields.iter().zip(s.columns()) {
                path.push(f.name().clone());
                leaf(c, path, out);
                path.pop();
            }
            return;
        }
        DataType::List(f) => {
            let l = a.as_list::<i32>();
            let offs = l.value_offsets();
            let (start, end) = (offs[0], offs[offs.len() - 1]);
            let (Ok(start), Ok(end)) = (usize::try_from(start), usize::try_from(end)) else {
                return;
            };
            let n = end.saturating_sub(start).min(SAMPLE_ROWS);
            let values = l.values().slice(start, n);
            path.push("list".to_string());
            path.push(f.name().clone());
            leaf(&values, path, out);
            path.pop();
            path.pop();
            return;
        }
        DataType::Int64 => integers::<Int64Type>(a),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => integers::<TimestampNanosecondType>(a),
        DataType::Int32 => integers::<Int32Type>(a),
        DataType::UInt64 => integers::<UInt64Type>(a),
        DataType::UInt32 => integers::<UInt32Type>(a),
        DataType::Float64 => floats(a),
        DataType::Utf8 => strings(a),
        _ => None,
    };
    if let Some(encoding) = choice {
        out.push(ColumnChoice {
            path: ColumnPath::new(path.clone()),
            encoding,
        });
    }
}

/// Whether `distinct` of `n` sampled values make a high-cardinality column.
fn high_cardinality(distinct: usize, n: usize) -> bool {
    n >= MIN_SAMPLE && distinct * DISTINCT_FRACTION.1 > n * DISTINCT_FRACTION.0
}

/// Whether the non-null `values` of a sampled column are of high cardinality.
fn distinct_enough<T: std::hash::Hash + Eq>(
    values: impl ExactSizeIterator<Item = Option<T>>,
) -> bool {
    let mut seen = HashSet::with_capacity(values.len());
    let mut n = 0;
    for v in values.flatten() {
        seen.insert(v);
        n += 1;
    }
    high_cardinality(seen.len(), n)
}

fn integers<T>(a: &ArrayRef) -> Option<Encoding>
where
    T: ArrowPrimitiveType,
    T::Native: std::hash::Hash + Eq,
{
    let p = a.as_primitive_opt::<T>()?;
    distinct_enough(p.iter()).then_some(Encoding::DELTA_BINARY_PACKED)
}

fn floats(a: &ArrayRef) -> Option<Encoding> {
    let p = a.as_primitive_opt::<Float64Type>()?;
    distinct_enough(p.iter().map(|v| v.map(f64::to_bits))).then_some(Encoding::PLAIN)
}

fn strings(a: &ArrayRef) -> Option<Encoding> {
    let s = a.as_string_opt::<i32>()?;
    distinct_enough(s.iter()).then_some(Encoding::DELTA_LENGTH_BYTE_ARRAY)
}
