use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampNanosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use chrono::{TimeZone, Utc};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use weir_pipeline::buffer::{buffer, BufferSender};
use weir_pipeline::component::{SinkConfig, SinkContext, SinkInput};
use weir_pipeline::event::{Event, EventBatch, LogEvent, Metric, MetricKind, MetricValue, Value};
use weir_pipeline::finalization::{BatchNotifier, EventStatus};
use weir_pipeline::metrics::{ComponentMetrics, MetricsRegistry};
use weir_pipeline::vocabulary::WhenFull;

use super::*;

fn config(dir: &Path, extra: &str) -> ParquetSinkConfig {
    let text = format!("path = \"{}/\"\n{extra}", dir.display());
    toml::from_str(&text).unwrap()
}

fn log(json: &str) -> Event {
    let v: Value = serde_json::from_str(json).unwrap();
    LogEvent::from_value(v, Default::default()).into()
}

struct Running {
    tx: BufferSender,
    task: tokio::task::JoinHandle<Result<(), BoxError>>,
    metrics: Arc<ComponentMetrics>,
}

async fn start(cfg: &ParquetSinkConfig, dir: &Path) -> Running {
    let metrics = ComponentMetrics::detached("pq");
    let cx = SinkContext {
        id: Arc::from("pq"),
        data_dir: dir.to_path_buf(),
        metrics: metrics.clone(),
        registry: Arc::new(MetricsRegistry::default()),
        outputs: Default::default(),
        stop: Default::default(),
    };
    let sink = cfg.build(cx).await.unwrap();
    let (tx, rx) = buffer(10_000, WhenFull::Block, metrics.clone());
    let task = tokio::spawn(sink.run(SinkInput::new(rx, metrics.clone())));
    Running { tx, task, metrics }
}

impl Running {
    async fn send(&self, events: Vec<Event>) {
        self.tx.send(EventBatch::new(events)).await.unwrap();
    }
    async fn stop(self) -> Arc<ComponentMetrics> {
        drop(self.tx);
        self.task.await.unwrap().unwrap();
        self.metrics
    }
}

/// Every file under `dir` whose name ends with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> Vec<RecordBatch> {
    let f = std::fs::File::open(path).unwrap();
    ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

fn rows(path: &Path) -> usize {
    read(path).iter().map(|b| b.num_rows()).sum()
}

#[tokio::test]
async fn auto_schema_maps_every_value_type_to_its_arrow_type() {
    let dir = tempfile::tempdir().unwrap();
    let sink = start(&config(dir.path(), ""), dir.path()).await;
    let ts = Utc.with_ymd_and_hms(2024, 3, 9, 13, 0, 0).unwrap() + chrono::Duration::nanoseconds(7);
    let mut e = LogEvent::default();
    e.insert_field("i", 42);
    e.insert_field("f", Value::from_f64_or_zero(1.5));
    e.insert_field("b", true);
    e.insert_field("s", "text");
    e.insert_field("t", Value::Timestamp(ts));
    e.insert_field("n", Value::Null);
    let nested: Value =
        serde_json::from_str(r#"{"k":"v","deep":{"x":1},"list":[{"a":1},{"a":2}]}"#).unwrap();
    e.insert_field("o", nested);
    e.insert_field("arr", Value::Array(vec![1.into(), 2.into()]));
    sink.send(vec![e.into(), log(r#"{"i":7,"arr":[],"o":{"k":null}}"#)])
        .await;
    let metrics = sink.stop().await;
    assert!(files(dir.path(), ".tmp").is_empty());
    let written = files(dir.path(), ".parquet");
    assert_eq!(written.len(), 1);
    let name = written[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    assert!(
        name.starts_with("part-") && name.len() > "part-.parquet".len() + 36,
        "{name}"
    );
    let b = &read(&written[0])[0];
    let ty = |c: &str| b.schema().field_with_name(c).unwrap().data_type().clone();
    assert_eq!(ty("i"), DataType::Int64);
    assert_eq!(ty("f"), DataType::Float64);
    assert_eq!(ty("b"), DataType::Boolean);
    assert_eq!(ty("s"), DataType::Utf8);
    assert_eq!(ty("t"), schema::timestamp_type());
    assert_eq!(ty("arr"), schema::list_of(DataType::Int64));
    assert!(
        b.schema().field_with_name("n").is_err(),
        "an all-null field adds no column"
    );
    let DataType::Struct(o) = ty("o") else {
        panic!("o is a struct")
    };
    let names: Vec<_> = o.iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["deep", "k", "list"]);
    assert_eq!(b.num_rows(), 2);
    let t = b
        .column_by_name("t")
        .unwrap()
        .as_primitive::<TimestampNanosecondType>();
    assert_eq!(t.value(0), ts.timestamp_nanos_opt().unwrap());
    assert!(t.is_null(1));
    let i = b.column_by_name("i").unwrap().as_primitive::<Int64Type>();
    assert_eq!((i.value(0), i.value(1)), (42, 7));
    let arr = b.column_by_name("arr").unwrap().as_list::<i32>();
    assert_eq!(arr.value(0).len(), 2);
    assert_eq!(arr.value(1).len(), 0);
    assert!(
        !arr.is_null(1),
        "an empty array stays an empty list, not null"
    );
    assert!(metrics.errors().is_empty(), "{:?}", metrics.errors());
    assert_eq!(metrics.sent_events(), 2);
}

#[tokio::test]
async fn acknowledges_only_after_the_file_is_renamed() {
    let dir = tempfile::tempdir().unwrap();
    let sink = start(&config(dir.path(), "batch.timeout_secs = 3600"), dir.path()).await;
    let (n, mut rx) = BatchNotifier::new_with_receiver();
    let mut batch = EventBatch::new(vec![log(r#"{"a":1}"#), log(r#"{"a":2}"#)]);
    batch.attach_notifier(&n);
    drop(n);
    sink.tx.send(batch).await.unwrap();
    assert!(crate_wait(|| files(dir.path(), ".parquet.tmp").len() == 1).await);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(
        rx.try_recv(),
        None,
        "no acknowledgement while the file is open"
    );
    assert!(files(dir.path(), ".parquet").is_empty());
    // Hidden while being written, so directory readers skip it.
    let tmp = &files(dir.path(), ".parquet.tmp")[0];
    assert!(tmp
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(".part-"));
    sink.stop().await;
    assert_eq!(rx.wait().await, EventStatus::Delivered);
    let done = files(dir.path(), ".parquet");
    assert_eq!(done.len(), 1);
    assert_eq!(rows(&done[0]), 2);
}

async fn crate_wait(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if f() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    false
}

#[tokio::test]
async fn rolls_by_rows_and_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let sink = start(
        &config(dir.path(), "batch.max_events = 3\nbatch.timeout_secs = 1"),
        dir.path(),
    )
    .await;
    let events: Vec<Event> = (0..7).map(|i| log(&format!(r#"{{"n":{i}}}"#))).collect();
    sink.send(events).await;
    // Two full files at once; the third (1 row) rolls by age while the sink is still running.
    assert!(crate_wait(|| files(dir.path(), ".parquet").len() == 3).await);
    let written = files(dir.path(), ".parquet");
    let counts: Vec<usize> = written.iter().map(|p| rows(p)).collect();
    assert_eq!(counts, [3, 3, 1], "file names sort in write order");
    sink.stop().await;
}

#[tokio::test]
async fn int_to_string_drift_starts_a_new_file_and_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let sink = start(&config(dir.path(), ""), dir.path()).await;
    // The change happens inside one batch: it is cut where the type changes.
    let mut events: Vec<Event> = (0..5)
        .map(|i| log(&format!(r#"{{"code":{i},"m":"x"}}"#)))
        .collect();
    events.extend((5..10).map(|i| log(&format!(r#"{{"code":"E{i}","m":"y"}}"#))));
    sink.send(events).await;
    sink.send(vec![log(r#"{"code":"E10","m":"z"}"#)]).await;
    let metrics = sink.stop().await;
    let written = files(dir.path(), ".parquet");
    assert_eq!(written.len(), 2, "{written:?}");
    let types: Vec<DataType> = written
        .iter()
        .map(|p| {
            read(p)[0]
                .schema()
                .field_with_name("code")
                .unwrap()
                .data_type()
                .clone()
        })
        .collect();
    assert_eq!(types, [DataType::Int64, DataType::Utf8]);
    assert_eq!((rows(&written[0]), rows(&written[1])), (5, 6));
    assert_eq!(metrics.errors().get("schema_change"), Some(&1));
    assert_eq!(metrics.errors().get("unmatched_field"), None);
}

#[tokio::test]
async fn compatible_changes_widen_the_schema_without_counting_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let sink = start(&config(dir.path(), ""), dir.path()).await;
    sink.send(vec![log(r#"{"v":1}"#), log(r#"{"v":2.5,"extra":"e"}"#)])
        .await;
    sink.send(vec![log(r#"{"v":3}"#)]).await;
    let metrics = sink.stop().await;
    let written = files(dir.path(), ".parquet");
    assert_eq!(
        written.len(),
        1,
        "widening inside the first batch needs no new file"
    );
    let b = &read(&written[0])[0];
    let v = b.column_by_name("v").unwrap().as_primitive::<Float64Type>();
    assert_eq!(v.values().to_vec(), vec![1.0, 2.5, 3.0]);
    assert!(metrics.errors().is_empty(), "{:?}", metrics.errors());
}

#[tokio::test]
async fn unmatched_values_are_counted_and_kept_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        dir.path(),
        r#"
schema = "explicit"
unmatched = "json"
columns = [
  { name = "ts", type = "timestamp", path = "timestamp", nullable = false },
  { name = "status", type = "int64" },
  { name = "pod", type = "string", path = "k8s.pod" },
  { name = "tags", type = "list<string>" },
]
"#,
    );
    let sink = start(&cfg, dir.path()).await;
    sink.send(vec![
        log(r#"{"timestamp":"2024-03-09T13:00:00Z","status":"200","k8s":{"pod":"p1","ns":"n"},"tags":["a"],"x":1}"#),
        log(r#"{"timestamp":"2024-03-09T13:00:01Z","status":"oops"}"#),
        log(r#"{"status":500}"#),
    ])
    .await;
    let metrics = sink.stop().await;
    let b = &read(&files(dir.path(), ".parquet")[0])[0];
    assert_eq!(
        b.num_rows(),
        2,
        "the row without the required ts is rejected"
    );
    let status = b
        .column_by_name("status")
        .unwrap()
        .as_primitive::<Int64Type>();
    assert_eq!(status.value(0), 200, "explicit columns convert strings");
    assert!(status.is_null(1));
    let un = b.column_by_name("_unmatched").unwrap().as_string::<i32>();
    assert_eq!(un.value(0), r#"{"k8s":{"ns":"n"},"x":1}"#);
    assert_eq!(un.value(1), r#"{"status":"oops"}"#);
    let errors = metrics.errors();
    assert_eq!(errors.get("missing_required"), Some(&1));
    assert_eq!(errors.get("unmatched_field"), Some(&3));
}

#[tokio::test]
async fn auto_schema_keeps_unmatched_values_when_a_batch_flips_types_too_often() {
    let dir = tempfile::tempdir().unwrap();
    let sink = start(&config(dir.path(), "unmatched = \"json\""), dir.path()).await;
    let events: Vec<Event> = (0..20)
        .map(|i| {
            if i % 2 == 0 {
                log(&format!(r#"{{"a":{i}}}"#))
            } else {
                log(&format!(r#"{{"a":"s{i}"}}"#))
            }
        })
        .collect();
    sink.send(events).await;
    let metrics = sink.stop().await;
    let written = files(dir.path(), ".parquet");
    // Four cuts at most per batch: five files, the rest kept as unmatched JSON.
    assert_eq!(written.len(), 5, "{written:?}");
    let total: usize = written.iter().map(|p| rows(p)).sum();
    assert_eq!(total, 20, "no row lost");
    let kept: usize = written
        .iter()
        .flat_map(|p| read(p))
        .map(|b| {
            b.column_by_name("_unmatched").unwrap().len()
                - b.column_by_name("_unmatched").unwrap().null_count()
        })
        .sum();
    assert_eq!(
        kept as u64,
        *metrics.errors().get("unmatched_field").unwrap()
    );
    assert!(kept > 0);
}

#[tokio::test]
async fn hive_partitions_come_from_the_event_time() {
    let dir = tempfile::tempdir().unwrap();
    let cfg: ParquetSinkConfig = toml::from_str(&format!(
        "path = \"{}/svc={{{{ service }}}}/dt=%Y-%m-%d/hour=%H/\"",
        dir.path().display()
    ))
    .unwrap();
    let sink = start(&cfg, dir.path()).await;
    let ev = |svc: &str, h: u32| {
        let mut l = LogEvent::default();
        l.insert_field("service", svc);
        l.insert_field(
            "timestamp",
            Value::Timestamp(Utc.with_ymd_and_hms(2024, 3, 9, h, 5, 0).unwrap()),
        );
        Event::from(l)
    };
    sink.send(vec![ev("a", 1), ev("a", 2), ev("b", 1), ev("a", 1)])
        .await;
    sink.stop().await;
    let rel: Vec<String> = files(dir.path(), ".parquet")
        .iter()
        .map(|p| {
            p.parent()
                .unwrap()
                .strip_prefix(dir.path())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert_eq!(
        rel,
        [
            "svc=a/dt=2024-03-09/hour=01",
            "svc=a/dt=2024-03-09/hour=02",
            "svc=b/dt=2024-03-09/hour=01"
        ]
    );
}

#[tokio::test]
async fn metrics_are_written_in_the_long_format() {
    let dir = tempfile::tempdir().unwrap();
    let sink = start(&config(dir.path(), "schema = \"metrics\""), dir.path()).await;
    let m = Metric::new(
        "requests_total",
        MetricKind::Incremental,
        MetricValue::Counter { value: 3.0 },
    )
    .with_namespace("app")
    .with_tag("service", "cart")
    .with_timestamp(Utc.with_ymd_and_hms(2024, 3, 9, 1, 0, 0).unwrap());
    let h = Metric::new(
        "latency",
        MetricKind::Absolute,
        MetricValue::AggregatedHistogram {
            buckets: vec![
                weir_pipeline::event::Bucket {
                    upper_limit: 0.1,
                    count: 2,
                },
                weir_pipeline::event::Bucket {
                    upper_limit: f64::INFINITY,
                    count: 1,
                },
            ],
            count: 3,
            sum: 0.4,
        },
    );
    sink.send(vec![m.into(), h.into(), log(r#"{"a":1}"#)]).await;
    let metrics = sink.stop().await;
    assert_eq!(metrics.errors().get("unsupported_event"), Some(&1));
    let b = &read(&files(dir.path(), ".parquet")[0])[0];
    assert_eq!(b.schema(), schema::metrics_schema());
    assert_eq!(b.num_rows(), 2);
    let ty = b.column_by_name("metric_type").unwrap().as_string::<i32>();
    assert_eq!((ty.value(0), ty.value(1)), ("counter", "histogram"));
    let tags = b.column_by_name("tags").unwrap().as_map();
    assert_eq!(tags.value(0).len(), 1);
    let buckets = b.column_by_name("buckets").unwrap().as_list::<i32>();
    assert!(buckets.is_null(0));
    assert_eq!(buckets.value(1).len(), 2);
}

#[test]
fn config_errors_are_reported() {
    let dir = Path::new("/tmp");
    for (extra, want) in [
        ("schema = \"explicit\"", "needs at least one"),
        (
            "compression = \"snappy\"\ncompression_level = 3",
            "applies to zstd and gzip",
        ),
        (
            "schema = \"explicit\"\ncolumns = [{ name = \"a\", type = \"decimal\" }]",
            "unknown column type",
        ),
        (
            "columns = [{ name = \"a\", type = \"int64\" }]",
            "only used with",
        ),
    ] {
        let cfg = config(dir, extra);
        let err = cfg
            .mode()
            .err()
            .or_else(|| cfg.writer_properties().err())
            .unwrap_or_default();
        assert!(err.contains(want), "{extra}: {err}");
    }
    assert!(toml::from_str::<ParquetSinkConfig>("path = \"x\"\nbogus = 1").is_err());
}

/// Per leaf column of the file's first row group (`a.b`, `l.list.item`): its encodings and
/// whether it has a dictionary page.
fn column_encodings(
    path: &Path,
) -> std::collections::BTreeMap<String, (Vec<parquet::basic::Encoding>, bool)> {
    let f = std::fs::File::open(path).unwrap();
    let b = ParquetRecordBatchReaderBuilder::try_new(f).unwrap();
    let rg = b.metadata().row_group(0);
    rg.columns()
        .iter()
        .map(|c| {
            (
                c.column_path().string(),
                (
                    c.encodings().collect(),
                    c.dictionary_page_offset().is_some(),
                ),
            )
        })
        .collect()
}

#[tokio::test]
async fn encodings_are_chosen_per_column_from_the_first_rows() {
    use parquet::basic::Encoding;
    let dir = tempfile::tempdir().unwrap();
    let sink = start(&config(dir.path(), ""), dir.path()).await;
    let t0 = Utc.with_ymd_and_hms(2024, 3, 9, 13, 0, 0).unwrap();
    let levels = ["info", "warn", "error"];
    let n = 3000;
    let events: Vec<Event> = (0..n)
        .map(|i| {
            let mut e = LogEvent::default();
            e.insert_field("bytes", (i * 7919) % 100_003);
            e.insert_field("status", [200, 404, 500][i as usize % 3]);
            e.insert_field("level", levels[i as usize % 3]);
            e.insert_field("ts_text", format!("2024-03-09T13:00:{:02}.{i:06}Z", i % 60));
            e.insert_field("ip", format!("{}.{}", (i * 31) % 251, (i * 17) % 241));
            e.insert_field("dur", Value::from_f64_or_zero(i as f64 * 0.37));
            e.insert_field(
                "t",
                Value::Timestamp(t0 + chrono::Duration::microseconds(i * 13)),
            );
            let o: Value = serde_json::from_str(&format!(
                r#"{{"id":{i},"kind":"{}"}}"#,
                levels[i as usize % 2]
            ))
            .unwrap();
            e.insert_field("o", o);
            e.insert_field("l", Value::Array(vec![(i * 3).into(), (i * 3 + 1).into()]));
            e.insert_field("ok", i % 2 == 0);
            e.into()
        })
        .collect();
    sink.send(events).await;
    let metrics = sink.stop().await;
    assert!(metrics.errors().is_empty(), "{:?}", metrics.errors());
    let written = files(dir.path(), ".parquet");
    assert_eq!(written.len(), 1);
    let enc = column_encodings(&written[0]);
    let delta = |col: &str, want: Encoding| {
        let (e, dict) = &enc[col];
        assert!(e.contains(&want), "{col}: {e:?}");
        assert!(!dict, "{col}: has a dictionary page");
    };
    let dictionary = |col: &str| {
        let (e, dict) = &enc[col];
        assert!(*dict, "{col}: no dictionary page ({e:?})");
        assert!(
            e.contains(&Encoding::RLE_DICTIONARY) || e.contains(&Encoding::PLAIN_DICTIONARY),
            "{col}: {e:?}"
        );
    };
    delta("bytes", Encoding::DELTA_BINARY_PACKED);
    delta("t", Encoding::DELTA_BINARY_PACKED);
    delta("o.id", Encoding::DELTA_BINARY_PACKED);
    delta("l.list.item", Encoding::DELTA_BINARY_PACKED);
    delta("ts_text", Encoding::DELTA_LENGTH_BYTE_ARRAY);
    delta("ip", Encoding::DELTA_LENGTH_BYTE_ARRAY);
    delta("dur", Encoding::PLAIN);
    dictionary("status");
    dictionary("level");
    dictionary("o.kind");

    // Every value reads back as written.
    let f = std::fs::File::open(&written[0]).unwrap();
    let mut reader = ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .with_batch_size(n as usize)
        .build()
        .unwrap();
    let b = reader.next().unwrap().unwrap();
    assert_eq!(b.num_rows(), n as usize);
    let col = |c: &str| b.column_by_name(c).unwrap().clone();
    let bytes = col("bytes");
    let bytes = bytes.as_primitive::<Int64Type>();
    let ts_text = col("ts_text");
    let ts_text = ts_text.as_string::<i32>();
    let ip = col("ip");
    let ip = ip.as_string::<i32>();
    let dur = col("dur");
    let dur = dur.as_primitive::<Float64Type>();
    let t = col("t");
    let t = t.as_primitive::<TimestampNanosecondType>();
    let level = col("level");
    let level = level.as_string::<i32>();
    let o = col("o");
    let o = o.as_struct();
    let oid = o.column_by_name("id").unwrap().as_primitive::<Int64Type>();
    let l = col("l");
    let l = l.as_list::<i32>();
    let ok = col("ok");
    let ok = ok.as_boolean();
    for i in 0..n {
        let r = i as usize;
        assert_eq!(bytes.value(r), (i * 7919) % 100_003);
        assert_eq!(
            ts_text.value(r),
            format!("2024-03-09T13:00:{:02}.{i:06}Z", i % 60)
        );
        assert_eq!(
            ip.value(r),
            format!("{}.{}", (i * 31) % 251, (i * 17) % 241)
        );
        assert_eq!(dur.value(r), i as f64 * 0.37);
        assert_eq!(
            t.value(r),
            (t0 + chrono::Duration::microseconds(i * 13))
                .timestamp_nanos_opt()
                .unwrap()
        );
        assert_eq!(level.value(r), levels[r % 3]);
        assert_eq!(oid.value(r), i);
        let li = l.value(r);
        let li = li.as_primitive::<Int64Type>();
        assert_eq!((li.value(0), li.value(1)), (i * 3, i * 3 + 1));
        assert_eq!(ok.value(r), i % 2 == 0);
    }
}

#[tokio::test]
async fn a_small_first_batch_keeps_the_dictionary() {
    let dir = tempfile::tempdir().unwrap();
    let sink = start(&config(dir.path(), ""), dir.path()).await;
    sink.send(vec![log(r#"{"a":1,"s":"x"}"#), log(r#"{"a":2,"s":"y"}"#)])
        .await;
    sink.stop().await;
    let enc = column_encodings(&files(dir.path(), ".parquet")[0]);
    assert!(enc["a"].1 && enc["s"].1, "{enc:?}");
}

/// `json` lines as the `json` codec hands them over: held raw, fields not built.
fn raw_logs(lines: &[&str]) -> Vec<Event> {
    use weir_pipeline::codec::{Decoder, JsonLaziness};
    let laziness = JsonLaziness::new();
    let mut out = Vec::new();
    for l in lines {
        Decoder::Json
            .decode_lazy(
                &laziness,
                bytes::Bytes::copy_from_slice(l.as_bytes()),
                &None,
                Utc::now(),
                (),
                &mut out,
            )
            .unwrap();
    }
    assert!(out.iter().all(|e| e.as_log().unwrap().raw_json().is_some()));
    out
}

const RAW_LINES: &[&str] = &[
    r#"{"s":"plain","e":"esc\"aped \u00e9\n","i":-3,"f":1.5,"fi":2,"b":true,"o":{"x":1,"y":{"z":"deep"}},"l":[1,2,null],"ls":[{"a":"p"},{"a":null}],"n":null}"#,
    r#"{"i":18,"s":"\u65e5\u672c","f":-0.25,"b":false,"o":{"y":null},"l":[],"ls":null,"unknown":null}"#,
    r#"{"o":null,"l":null,"fi":3.75,"i":0}"#,
    r#"{"i":9223372036854775807,"f":1e10,"s":"","l":[7]}"#,
];

/// The schema the general path infers for some events.
fn inferred(events: &[Event]) -> arrow_schema::Fields {
    let mut fields = arrow_schema::Fields::empty();
    for e in events {
        if let Some(new) = schema::infer_object(e.as_log().unwrap().as_map().unwrap(), None) {
            fields = schema::merge_fields(&fields, &new, schema::Resolve::KeepOld).0;
        }
    }
    fields
}

#[test]
fn raw_json_lines_convert_exactly_as_their_values() {
    let raw = raw_logs(RAW_LINES);
    let tree: Vec<Event> = RAW_LINES.iter().map(|l| log(l)).collect();
    let fields = inferred(&tree);
    for unmatched in [None, Some("_unmatched")] {
        let mut all: Vec<arrow_schema::FieldRef> = fields.iter().cloned().collect();
        if let Some(u) = unmatched {
            all.push(Arc::new(arrow_schema::Field::new(u, DataType::Utf8, true)));
        }
        let schema = Arc::new(arrow_schema::Schema::new(all));
        let tree_logs: Vec<&LogEvent> = tree.iter().map(|e| e.as_log().unwrap()).collect();
        let want = convert::convert_auto(&tree_logs, &fields, &schema, unmatched.is_some())
            .unwrap()
            .batch;
        let raw_refs: Vec<&LogEvent> = raw.iter().map(|e| e.as_log().unwrap()).collect();
        let got = convert::convert_auto_fast(
            &raw_refs,
            &fields,
            &schema,
            unmatched,
            true,
            &mut Vec::new(),
        )
        .expect("every line fits");
        assert_eq!(got.batch, want);
        // Raw lines read from their trees (`raw = false`: a templated path built them).
        let fresh = raw_logs(RAW_LINES);
        let fresh: Vec<&LogEvent> = fresh.iter().map(|e| e.as_log().unwrap()).collect();
        let got =
            convert::convert_auto_fast(&fresh, &fields, &schema, unmatched, false, &mut Vec::new())
                .unwrap();
        assert_eq!(got.batch, want);
        // Events with their fields built go the same way.
        let got = convert::convert_auto_fast(
            &tree_logs,
            &fields,
            &schema,
            unmatched,
            true,
            &mut vec![3; 20],
        )
        .unwrap();
        assert_eq!(got.batch, want);
    }
    // Nothing was built from the raw lines.
    assert!(raw.iter().all(|e| e.as_log().unwrap().raw_json().is_some()));
}

#[test]
fn raw_json_lines_that_do_not_fit_go_the_general_way() {
    let base = inferred(&[log(RAW_LINES[0])]);
    let schema = Arc::new(arrow_schema::Schema::new(base.clone()));
    for line in [
        r#"{"i":"now a string"}"#,
        r#"{"i":1.5}"#,
        r#"{"new":1}"#,
        r#"{"unknown":{}}"#,
        r#"{"i":1,"i":2}"#,
        r#"{"o":{"x":1,"w":2}}"#,
        r#"{"o":{"x":{}}}"#,
        r#"{"l":[1,"x"]}"#,
        r#"{"l":{"a":1}}"#,
        r#"{"b":1}"#,
    ] {
        let raw = raw_logs(&[RAW_LINES[0], line]);
        let logs: Vec<&LogEvent> = raw.iter().map(|e| e.as_log().unwrap()).collect();
        assert!(
            convert::convert_auto_fast(&logs, &base, &schema, None, true, &mut Vec::new())
                .is_none(),
            "{line}"
        );
    }
}

#[tokio::test]
async fn raw_json_lines_end_to_end_with_new_fields_and_type_changes() {
    let dir = tempfile::tempdir().unwrap();
    let sink = start(&config(dir.path(), "unmatched = \"json\""), dir.path()).await;
    sink.send(raw_logs(&[r#"{"a":1,"s":"x"}"#, r#"{"a":2,"s":"y"}"#]))
        .await;
    // Fits: the raw path.
    sink.send(raw_logs(&[r#"{"a":3,"s":"z","n":null}"#])).await;
    // A new field widens, a duplicate key keeps the last value, then a type change.
    sink.send(raw_logs(&[
        r#"{"a":4,"s":"w","t":true}"#,
        r#"{"a":5,"a":6}"#,
    ]))
    .await;
    sink.send(raw_logs(&[r#"{"a":"seven"}"#])).await;
    let metrics = sink.stop().await;
    assert_eq!(metrics.errors().get("schema_change"), Some(&1));
    assert_eq!(metrics.sent_events(), 6);
    let written = files(dir.path(), ".parquet");
    assert_eq!(written.len(), 3, "{written:?}");
    let first = &read(&written[0])[0];
    assert_eq!(first.num_rows(), 3);
    let second = &read(&written[1])[0];
    let a = second
        .column_by_name("a")
        .unwrap()
        .as_primitive::<Int64Type>();
    assert_eq!((a.value(0), a.value(1)), (4, 6));
    assert!(second.column_by_name("t").is_some());
    let third = &read(&written[2])[0];
    let a = third.column_by_name("a").unwrap().as_string::<i32>();
    assert_eq!(a.value(0), "seven");
}
