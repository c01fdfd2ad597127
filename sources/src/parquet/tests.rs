use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{MapBuilder, StringBuilder, StringDictionaryBuilder};
use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, Date32Array, Int32Array, Int64Array, LargeStringArray, ListArray, RecordBatch,
    StringArray, StructArray, TimestampMillisecondArray,
};
use arrow_schema::{DataType, Field, Fields, Schema, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use weir_pipeline::buffer::{buffer, Fanout};
use weir_pipeline::component::{SourceContext, SourceSender};
use weir_pipeline::event::{Event, Value};
use weir_pipeline::metrics::{ComponentMetrics, MetricsRegistry};
use weir_pipeline::shutdown::ShutdownToken;
use weir_pipeline::vocabulary::WhenFull;

use super::*;

fn write(path: &Path, batches: &[RecordBatch], row_group: usize) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let f = std::fs::File::create(path).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(row_group))
        .build();
    let mut w = ArrowWriter::try_new(f, batches[0].schema(), Some(props)).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
}

/// A file with `n` rows: `seq` 0.., and `timestamp` one minute apart from 2024-03-09 00:00 UTC.
fn seq_file(path: &Path, n: i64, row_group: usize) {
    let start = chrono::DateTime::parse_from_rfc3339("2024-03-09T00:00:00Z")
        .unwrap()
        .timestamp_millis();
    let schema = Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
    ]));
    let b = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from_iter_values(0..n)),
            Arc::new(
                TimestampMillisecondArray::from_iter_values((0..n).map(|i| start + i * 60_000))
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    write(path, &[b], row_group);
}

/// Runs the source to its end and returns what it emitted.
async fn run_source(toml_text: &str, data_dir: &Path) -> (Vec<Event>, Arc<ComponentMetrics>) {
    let cfg: ParquetSourceConfig = toml::from_str(toml_text).unwrap();
    let metrics = ComponentMetrics::detached("src");
    let (tx, mut rx) = buffer(100_000, WhenFull::Block, metrics.clone());
    let out = SourceSender::new(
        Some(Fanout::new(vec![(Arc::from("sink"), tx)], metrics.clone())),
        BTreeMap::new(),
        metrics.clone(),
    );
    let cx = SourceContext {
        id: Arc::from("src"),
        out,
        shutdown: ShutdownToken::new(),
        acknowledgements: false,
        data_dir: data_dir.to_path_buf(),
        metrics: metrics.clone(),
        registry: Arc::new(MetricsRegistry::default()),
    };
    let source = cfg.build(cx).await.unwrap();
    let collector = tokio::spawn(async move {
        let mut all = Vec::new();
        while let Some(b) = rx.recv().await {
            all.extend(b.events);
        }
        all
    });
    source.await.unwrap();
    (collector.await.unwrap(), metrics)
}

fn seqs(events: &[Event]) -> Vec<i64> {
    events
        .iter()
        .map(|e| match e.as_log().unwrap().get_field("seq") {
            Some(Value::Integer(i)) => *i,
            other => panic!("seq: {other:?}"),
        })
        .collect()
}

#[tokio::test]
async fn reads_files_in_path_order_and_ends() {
    let dir = tempfile::tempdir().unwrap();
    seq_file(&dir.path().join("dt=2024-03-10/b.parquet"), 3, 10);
    seq_file(&dir.path().join("dt=2024-03-09/a.parquet"), 2, 10);
    let (events, metrics) = run_source(
        &format!("paths = [\"{}/**/*.parquet\"]", dir.path().display()),
        dir.path(),
    )
    .await;
    assert_eq!(seqs(&events), [0, 1, 0, 1, 2]);
    assert!(metrics.errors().is_empty(), "{:?}", metrics.errors());
    let first = events[0].as_log().unwrap();
    assert!(matches!(
        first.get_field("timestamp"),
        Some(Value::Timestamp(_))
    ));
    assert!(
        first.get_field("dt").is_none(),
        "partition fields are opt-in"
    );
}

#[tokio::test]
async fn time_range_prunes_partitions_row_groups_and_rows() {
    let dir = tempfile::tempdir().unwrap();
    // 100 rows, one minute apart, 10 per row group: 00:00 .. 01:39.
    seq_file(&dir.path().join("dt=2024-03-09/a.parquet"), 100, 10);
    seq_file(&dir.path().join("dt=2024-03-08/old.parquet"), 5, 10);
    let cfg = format!(
        "paths = [\"{}\"]\nstart_time = \"2024-03-09T00:25:00Z\"\nend_time = \"2024-03-09T00:45:00Z\"\npartition_fields = true",
        dir.path().display()
    );
    let (events, _) = run_source(&cfg, dir.path()).await;
    assert_eq!(seqs(&events), (25..45).collect::<Vec<_>>());
    assert_eq!(
        events[0].as_log().unwrap().get_field("dt"),
        Some(&Value::from("2024-03-09"))
    );

    // The plan reads only the row groups whose statistics overlap the range.
    let parsed: ParquetSourceConfig = toml::from_str(&cfg).unwrap();
    let plan = Plan {
        patterns: parsed.paths.clone(),
        range: parsed.time_range().unwrap(),
        timestamp_field: "timestamp".into(),
        keep_nulls: false,
        hive_fields: false,
        batch_size: 1000,
        progress: false,
        source_id: Arc::from("src"),
        done: BTreeMap::new(),
    };
    let fp = read::plan_file(
        &plan,
        dir.path().join("dt=2024-03-09/a.parquet"),
        Arc::from("k"),
        0,
    )
    .unwrap();
    assert_eq!(fp.row_groups(), [2, 3, 4]);
}

/// A file of the Arrow types other tools write (dictionaries, maps, structs, lists, large
/// strings, dates, nulls).
fn rich_file(path: &Path) {
    let mut dict = StringDictionaryBuilder::<Int32Type>::new();
    dict.append_value("GET");
    dict.append_null();
    let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
    map.keys().append_value("k");
    map.values().append_value("v");
    map.append(true).unwrap();
    map.append(false).unwrap();
    let inner = Fields::from(vec![Field::new("x", DataType::Int32, true)]);
    let st = StructArray::try_new(
        inner.clone(),
        vec![Arc::new(Int32Array::from(vec![Some(1), None])) as ArrayRef],
        None,
    )
    .unwrap();
    let list = ListArray::from_iter_primitive::<Int32Type, _, _>(vec![
        Some(vec![Some(1), None, Some(3)]),
        None,
    ]);
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("method", Arc::new(dict.finish())),
        ("labels", Arc::new(map.finish())),
        ("s", Arc::new(st)),
        ("l", Arc::new(list)),
        ("big", Arc::new(LargeStringArray::from(vec!["a", "b"]))),
        ("day", Arc::new(Date32Array::from(vec![19791, 0]))),
        ("n32", Arc::new(Int32Array::from(vec![Some(-5), None]))),
        ("txt", Arc::new(StringArray::from(vec![Some("ünï"), None]))),
    ];
    let b = RecordBatch::try_from_iter(columns).unwrap();
    write(path, &[b], 100);
}

#[tokio::test]
async fn converts_arrow_types_written_by_other_tools() {
    let dir = tempfile::tempdir().unwrap();
    rich_file(&dir.path().join("x.parquet"));
    let path = dir.path().join("x.parquet").display().to_string();
    let (events, metrics) = run_source(&format!("paths = [\"{path}\"]"), dir.path()).await;
    assert!(metrics.errors().is_empty(), "{:?}", metrics.errors());
    let json: Vec<String> = events
        .iter()
        .map(|e| serde_json::to_string(e.as_log().unwrap().value()).unwrap())
        .collect();
    assert_eq!(
        json[0],
        r#"{"big":"a","day":"2024-03-09T00:00:00Z","l":[1,null,3],"labels":{"k":"v"},"method":"GET","n32":-5,"s":{"x":1},"txt":"ünï"}"#
    );
    assert_eq!(
        json[1], r#"{"big":"b","day":"1970-01-01T00:00:00Z","s":{}}"#,
        "nulls are left out by default"
    );
    let (events, _) = run_source(
        &format!("paths = [\"{path}\"]\nkeep_nulls = true"),
        dir.path(),
    )
    .await;
    assert_eq!(
        serde_json::to_string(events[1].as_log().unwrap().value()).unwrap(),
        r#"{"big":"b","day":"1970-01-01T00:00:00Z","l":null,"labels":null,"method":null,"n32":null,"s":{"x":null},"txt":null}"#
    );
}

#[tokio::test]
async fn broken_and_missing_files_are_counted_and_the_rest_is_read() {
    let dir = tempfile::tempdir().unwrap();
    seq_file(&dir.path().join("a.parquet"), 3, 10);
    std::fs::write(dir.path().join("b.parquet"), b"PAR1 not really").unwrap();
    let mut good = std::fs::read(dir.path().join("a.parquet")).unwrap();
    good.truncate(good.len() - 10);
    std::fs::write(dir.path().join("c.parquet"), good).unwrap();
    seq_file(&dir.path().join("d.parquet"), 2, 10);
    let (events, metrics) = run_source(
        &format!(
            "paths = [\"{}\", \"{}/missing.parquet\"]",
            dir.path().display(),
            dir.path().display()
        ),
        dir.path(),
    )
    .await;
    assert_eq!(seqs(&events), [0, 1, 2, 0, 1]);
    let errors = metrics.errors();
    assert_eq!(errors.get("read"), Some(&2), "{errors:?}");
    assert_eq!(errors.get("discover"), Some(&1), "{errors:?}");
}

#[tokio::test]
async fn a_glob_without_matches_simply_ends() {
    let dir = tempfile::tempdir().unwrap();
    let (events, metrics) = run_source(
        &format!(
            "paths = [\"{}/nothing/**/*.parquet\"]",
            dir.path().display()
        ),
        dir.path(),
    )
    .await;
    assert!(events.is_empty());
    assert!(metrics.errors().is_empty());
}

#[tokio::test]
async fn config_errors_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    for (text, want) in [
        ("paths = []", "at least one"),
        ("paths = [\"x\"]\nresume = true", "acknowledgements"),
        (
            "paths = [\"x\"]\nstart_time = \"yesterday\"",
            "is not a time",
        ),
        (
            "paths = [\"x\"]\nstart_time = \"2024-03-02\"\nend_time = \"2024-03-01\"",
            "before",
        ),
    ] {
        let cfg: ParquetSourceConfig = toml::from_str(text).unwrap();
        let metrics = ComponentMetrics::detached("src");
        let cx = SourceContext {
            id: Arc::from("src"),
            out: SourceSender::new(None, BTreeMap::new(), metrics.clone()),
            shutdown: ShutdownToken::new(),
            acknowledgements: false,
            data_dir: dir.path().to_path_buf(),
            metrics,
            registry: Arc::new(MetricsRegistry::default()),
        };
        let err = match cfg.build(cx).await {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(want), "{text}: {err}");
    }
}

/// Parquet files (Arrow types of every kind, several row groups), mutated and read as the
/// source reads them: a file that cannot be read is an error counted for it, never a panic.
#[test]
fn fuzz_parquet_files() {
    let dir = tempfile::tempdir().unwrap();
    let (rich, seq) = (
        dir.path().join("rich.parquet"),
        dir.path().join("seq.parquet"),
    );
    rich_file(&rich);
    seq_file(&seq, 50, 7);
    let target = dir.path().join("fuzz.parquet");
    let plan = |path: &Path| read::Plan {
        patterns: vec![path.display().to_string()],
        range: None,
        timestamp_field: "timestamp".into(),
        keep_nulls: true,
        hive_fields: false,
        batch_size: 16,
        progress: false,
        source_id: Arc::from("parquet"),
        done: BTreeMap::new(),
    };
    weir_testing::fuzz::Fuzz::new("parquet_files")
        .seeds([std::fs::read(&rich).unwrap(), std::fs::read(&seq).unwrap()])
        .dict(["PAR1"])
        .run(|input| {
            std::fs::write(&target, input).unwrap();
            let metrics = Arc::new(ComponentMetrics::new(
                "parquet",
                weir_pipeline::vocabulary::ComponentKind::Source,
                "parquet",
            ));
            let (tx, mut rx) = tokio::sync::mpsc::channel(4);
            let drain = std::thread::spawn(move || while rx.blocking_recv().is_some() {});
            read::run(plan(&target), metrics, tx);
            drain.join().unwrap();
        });
}

/// Found by `fuzz_parquet_files` in CI: a dictionary page the Parquet library had not set up
/// makes it panic ("Decoder for dict should have been set"). The file is an error counted for
/// it; the source reads on.
#[test]
fn a_file_the_parquet_library_panics_on_is_an_error_for_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("a-bad.parquet");
    std::fs::write(
        &bad,
        include_bytes!("regressions/dict-decoder-unset.parquet"),
    )
    .unwrap();
    seq_file(&dir.path().join("b-good.parquet"), 10, 3);
    let plan = read::Plan {
        patterns: vec![dir.path().join("*.parquet").display().to_string()],
        range: None,
        timestamp_field: "timestamp".into(),
        keep_nulls: true,
        hive_fields: false,
        batch_size: 16,
        progress: false,
        source_id: Arc::from("parquet"),
        done: BTreeMap::new(),
    };
    let metrics = Arc::new(ComponentMetrics::new(
        "parquet",
        weir_pipeline::vocabulary::ComponentKind::Source,
        "parquet",
    ));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<read::Chunk>(64);
    let drain = std::thread::spawn(move || {
        let mut good = 0;
        while let Some(c) = rx.blocking_recv() {
            if c.file.ends_with("b-good.parquet") {
                good += c.events.len();
            }
        }
        good
    });
    read::run(plan, metrics.clone(), tx);
    assert_eq!(drain.join().unwrap(), 10, "the good file is read whole");
    assert_eq!(metrics.errors_total(), 1, "the bad file counts one error");
}
