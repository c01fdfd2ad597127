use super::*;
use crate::event::{LogEvent, Value};
use bytes::Bytes;

/// A folder removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "weir-disk-buffer-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn options(dir: &Dir, max_bytes: u64, when_full: WhenFull) -> DiskOptions {
    DiskOptions {
        dir: dir.0.clone(),
        max_bytes,
        when_full,
        fsync: Fsync::Batch,
        max_events: 1000,
    }
}

/// `n` events numbered from `first`, each with a message of `size` bytes or more.
fn numbered(first: usize, n: usize, size: usize) -> EventBatch {
    EventBatch::new(
        (first..first + n)
            .map(|i| {
                let mut m = format!("{i:08}");
                while m.len() < size {
                    m.push('x');
                }
                LogEvent::from_message(m.into(), None).into()
            })
            .collect(),
    )
}

fn number(e: &Event) -> usize {
    let Event::Log(l) = e else {
        panic!("not a log")
    };
    let m = l.get_field("message").unwrap().as_bytes().unwrap();
    std::str::from_utf8(&m[..8]).unwrap().parse().unwrap()
}

/// Reads until `n` events arrived, finalizing each batch with `status`.
async fn take(rx: &mut DiskReceiver, n: usize, status: EventStatus) -> Vec<usize> {
    let mut out = Vec::new();
    while out.len() < n {
        let mut b = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the buffer should deliver")
            .expect("the buffer ended early");
        out.extend(b.iter().map(number));
        b.finalize(status);
    }
    out
}

fn counter(m: &ComponentMetrics, name: &str) -> u64 {
    m.counters()
        .iter()
        .filter(|(n, _, _)| *n == name)
        .map(|c| c.2)
        .sum()
}

#[tokio::test]
async fn a_batch_is_acknowledged_once_on_disk_and_read_back_in_order() {
    let dir = Dir::new();
    let m = ComponentMetrics::detached("t");
    let (tx, mut rx) = open(options(&dir, 1 << 20, WhenFull::Block), m.clone()).unwrap();
    let (notifier, status) = BatchNotifier::new_with_receiver();
    let mut b = numbered(0, 10, 20);
    b.attach_notifier(&notifier);
    drop(notifier);
    tx.send(b).await.unwrap();
    assert_eq!(
        status.await,
        EventStatus::Delivered,
        "durable, so acknowledged"
    );
    tx.send(numbered(10, 10, 20)).await.unwrap();
    drop(tx);
    let got = take(&mut rx, 20, EventStatus::Delivered).await;
    assert_eq!(got, (0..20).collect::<Vec<_>>());
    assert!(rx.recv().await.is_none(), "every sender gone, all read");
    rx.settle().await;
    let ack = format::read_ack(&dir.0).unwrap().unwrap();
    assert_eq!(ack.next_seq, 2);
}

#[tokio::test]
async fn reading_resumes_at_the_first_record_not_delivered() {
    let dir = Dir::new();
    {
        let (tx, mut rx) = open(
            options(&dir, 1 << 20, WhenFull::Block),
            ComponentMetrics::detached("t"),
        )
        .unwrap();
        for i in 0..5 {
            tx.send(numbered(i * 10, 10, 20)).await.unwrap();
        }
        // Two batches delivered; the third read but not settled (the process dies).
        assert_eq!(take(&mut rx, 20, EventStatus::Delivered).await.len(), 20);
        rx.settle().await;
        let held = rx.recv().await.unwrap();
        std::mem::forget(held);
    }
    let m = ComponentMetrics::detached("t");
    let (tx, mut rx) = open(options(&dir, 1 << 20, WhenFull::Block), m.clone()).unwrap();
    assert_eq!(
        rx.len(),
        30,
        "the events of the last run not delivered are in the gauge"
    );
    tx.send(numbered(50, 10, 20)).await.unwrap();
    assert_eq!(rx.len(), 40);
    let got = take(&mut rx, 40, EventStatus::Delivered).await;
    assert_eq!(got, (20..60).collect::<Vec<_>>());
    rx.settle().await;
    assert_eq!(rx.len(), 0);
    assert_eq!(counter(&m, "buffer_corrupted_records_total"), 0);
}

#[tokio::test]
async fn what_the_sink_did_not_deliver_is_read_again() {
    let dir = Dir::new();
    let (tx, mut rx) = open(
        options(&dir, 1 << 20, WhenFull::Block),
        ComponentMetrics::detached("t"),
    )
    .unwrap();
    tx.send(numbered(0, 10, 20)).await.unwrap();
    tx.send(numbered(10, 10, 20)).await.unwrap();
    assert_eq!(
        take(&mut rx, 10, EventStatus::Errored).await,
        (0..10).collect::<Vec<_>>()
    );
    // The second may be read before the ack task sees the error: it comes again too.
    let mut got = take(&mut rx, 10, EventStatus::Delivered).await;
    if got[0] == 10 {
        got = take(&mut rx, 10, EventStatus::Delivered).await;
    }
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert_eq!(
        take(&mut rx, 10, EventStatus::Delivered).await,
        (10..20).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn an_event_larger_than_a_record_is_refused_at_the_door() {
    let dir = Dir::new();
    let m = ComponentMetrics::detached("t");
    let (tx, mut rx) = open(options(&dir, MIN_DISK_BYTES, WhenFull::Block), m.clone()).unwrap();
    let (notifier, status) = BatchNotifier::new_with_receiver();
    let mut b = numbered(0, 1, 20);
    b.events.extend(numbered(1, 1, 100 << 10).events);
    b.events.extend(numbered(2, 1, 20).events);
    b.attach_notifier(&notifier);
    drop(notifier);
    tx.send(b).await.unwrap();
    assert_eq!(status.await, EventStatus::Rejected);
    assert_eq!(m.errors().get("oversized"), Some(&1));
    assert_eq!(take(&mut rx, 2, EventStatus::Delivered).await, vec![0, 2]);
}

#[tokio::test]
async fn a_full_buffer_blocks_until_the_sink_delivers() {
    let dir = Dir::new();
    let (tx, mut rx) = open(
        options(&dir, MIN_DISK_BYTES, WhenFull::Block),
        ComponentMetrics::detached("t"),
    )
    .unwrap();
    // 256 KiB: 60 batches of 10 x 1 KiB do not fit.
    let writer = tokio::spawn(async move {
        for i in 0..60 {
            tx.send(numbered(i * 10, 10, 1000)).await.unwrap();
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!writer.is_finished(), "the writer must wait for room");
    let got = take(&mut rx, 600, EventStatus::Delivered).await;
    assert_eq!(got, (0..600).collect::<Vec<_>>());
    writer.await.unwrap();
    let on_disk: u64 = format::list_segments(&dir.0)
        .unwrap()
        .iter()
        .map(|&id| {
            std::fs::metadata(format::segment_path(&dir.0, id))
                .unwrap()
                .len()
        })
        .sum();
    assert!(on_disk <= MIN_DISK_BYTES + (64 << 10), "{on_disk}");
}

#[tokio::test]
async fn drop_newest_drops_and_counts_when_full() {
    let dir = Dir::new();
    let m = ComponentMetrics::detached("t");
    let (tx, _rx) = open(
        options(&dir, MIN_DISK_BYTES, WhenFull::DropNewest),
        m.clone(),
    )
    .unwrap();
    for i in 0..60 {
        tx.send(numbered(i * 10, 10, 1000)).await.unwrap();
    }
    assert!(m.discarded_events() > 0);
    assert!(m.discarded_events() < 600);
}

/// Writes 40 batches of 10 events (1 KiB each) across several segments, delivers none, and
/// returns the buffer's folder and the segments.
async fn filled() -> (Dir, Vec<u64>) {
    let dir = Dir::new();
    let (tx, _rx) = open(
        options(&dir, 1 << 20, WhenFull::Block),
        ComponentMetrics::detached("t"),
    )
    .unwrap();
    for i in 0..40 {
        tx.send(numbered(i * 10, 10, 1000)).await.unwrap();
    }
    let segments = format::list_segments(&dir.0).unwrap();
    assert!(segments.len() >= 3, "{segments:?}");
    (dir, segments)
}

/// Reopens the buffer and reads everything it still has (until it waits).
async fn reopen_and_drain(dir: &Dir) -> (Vec<usize>, Arc<ComponentMetrics>) {
    let m = ComponentMetrics::detached("t");
    let (tx, mut rx) = open(options(dir, 1 << 20, WhenFull::Block), m.clone()).unwrap();
    drop(tx);
    let mut got = Vec::new();
    while let Ok(Some(mut b)) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await {
        got.extend(b.iter().map(number));
        b.finalize(EventStatus::Delivered);
    }
    (got, m)
}

#[tokio::test]
async fn a_flipped_bit_loses_its_record_only() {
    let (dir, segments) = filled().await;
    let path = format::segment_path(&dir.0, segments[0]);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[SEGMENT_HEADER as usize + RECORD_HEADER + 500] ^= 0x04;
    std::fs::write(&path, bytes).unwrap();
    let (got, m) = reopen_and_drain(&dir).await;
    assert_eq!(got, (10..400).collect::<Vec<_>>());
    assert_eq!(counter(&m, "buffer_corrupted_records_total"), 1);
    assert!(counter(&m, "buffer_corrupted_bytes_total") > 10_000);
}

#[tokio::test]
async fn a_zeroed_page_a_torn_tail_and_a_deleted_segment_are_skipped_and_counted() {
    let (dir, segments) = filled().await;
    // A page of zeros in the middle of the first segment.
    let first = format::segment_path(&dir.0, segments[0]);
    let mut bytes = std::fs::read(&first).unwrap();
    bytes[20_000..24_096].fill(0);
    std::fs::write(&first, bytes).unwrap();
    // The second segment deleted.
    std::fs::remove_file(format::segment_path(&dir.0, segments[1])).unwrap();
    // The last one cut in the middle of a record.
    let last = format::segment_path(&dir.0, *segments.last().unwrap());
    let len = std::fs::metadata(&last).unwrap().len();
    let f = OpenOptions::new().write(true).open(&last).unwrap();
    f.set_len(len - 100).unwrap();
    drop(f);
    let (got, m) = reopen_and_drain(&dir).await;
    let lost = 400 - got.len();
    assert!(lost > 0);
    // Every event that arrived is in order and once.
    assert!(got.windows(2).all(|w| w[0] < w[1]), "{got:?}");
    assert_eq!(got.last(), Some(&389), "the torn last record is lost");
    let records = counter(&m, "buffer_corrupted_records_total");
    assert_eq!(
        records as usize * 10,
        lost,
        "one record of 10 events per lost record"
    );
    // Weir keeps running: the same buffer takes new events.
    let (tx, mut rx) = open(options(&dir, 1 << 20, WhenFull::Block), m.clone()).unwrap();
    tx.send(numbered(1000, 5, 20)).await.unwrap();
    assert_eq!(
        take(&mut rx, 5, EventStatus::Delivered).await,
        (1000..1005).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_damaged_ack_file_reads_from_the_oldest_record() {
    let (dir, _) = filled().await;
    std::fs::write(dir.0.join("ack"), b"garbage").unwrap();
    let (got, _) = reopen_and_drain(&dir).await;
    assert_eq!(got, (0..400).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_segment_of_another_version_is_refused_with_a_message() {
    let dir = Dir::new();
    std::fs::create_dir_all(&dir.0).unwrap();
    let mut h = format::segment_header(1);
    h[8] = 3;
    let crc = crc32fast::hash(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(format::segment_path(&dir.0, 1), h).unwrap();
    let e = open(
        options(&dir, 1 << 20, WhenFull::Block),
        ComponentMetrics::detached("t"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("format version 3"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The gate holds the group commit's syncs back on purpose while the senders write.
#[allow(clippy::await_holding_lock)]
async fn concurrent_senders_share_syncs_and_are_acknowledged_only_after_one_covers_them() {
    let dir = Dir::new();
    let m = ComponentMetrics::detached("t");
    let (tx, mut rx) = open(options(&dir, 16 << 20, WhenFull::Block), m.clone()).unwrap();
    let commit = tx
        .commit
        .clone()
        .expect("fsync = \"batch\" commits in groups");
    let gate = commit.gate.lock().unwrap();
    let mut senders = Vec::new();
    for s in 0..8 {
        let tx = tx.clone();
        senders.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for b in 0..5 {
                let (n, status) = BatchNotifier::new_with_receiver();
                let mut batch = numbered((s * 5 + b) * 10, 10, 20);
                batch.attach_notifier(&n);
                drop(n);
                tx.send(batch).await.unwrap();
                statuses.push(status);
            }
            statuses
        }));
    }
    let mut statuses = Vec::new();
    for s in senders {
        statuses.extend(s.await.unwrap());
    }
    // Every batch is written (each send returned), no sync has finished: none is
    // acknowledged.
    assert_eq!(commit.lock().written, 40);
    for st in &mut statuses {
        assert_eq!(st.try_recv(), None, "acknowledged before a sync covered it");
    }
    assert_eq!(commit.syncs.load(Ordering::SeqCst), 0);
    drop(gate);
    for st in statuses {
        assert_eq!(st.await, EventStatus::Delivered);
    }
    // At most one sync started before the last write (it waited at the gate); the next one
    // covers every batch written meanwhile.
    let syncs = commit.syncs.load(Ordering::SeqCst);
    assert!((1..=2).contains(&syncs), "{syncs} syncs for 40 batches");
    assert_eq!(commit.lock().durable, 40);
    drop(tx);
    let mut got = take(&mut rx, 400, EventStatus::Delivered).await;
    got.sort_unstable();
    assert_eq!(got, (0..400).collect::<Vec<_>>());
}

#[tokio::test]
async fn with_fsync_interval_a_batch_is_acknowledged_once_written() {
    let dir = Dir::new();
    let mut opts = options(&dir, 1 << 20, WhenFull::Block);
    opts.fsync = Fsync::Interval(Duration::from_secs(3600));
    let (tx, mut rx) = open(opts, ComponentMetrics::detached("t")).unwrap();
    assert!(tx.commit.is_none());
    let (notifier, mut status) = BatchNotifier::new_with_receiver();
    let mut b = numbered(0, 10, 20);
    b.attach_notifier(&notifier);
    drop(notifier);
    tx.send(b).await.unwrap();
    assert_eq!(status.try_recv(), Some(EventStatus::Delivered));
    drop(tx);
    assert_eq!(
        take(&mut rx, 10, EventStatus::Delivered).await,
        (0..10).collect::<Vec<_>>()
    );
}

/// Lazily held JSON lines, each with a source field of its own (`n`) and shared ones.
#[derive(Debug)]
struct Defaults(i64);

impl crate::codec::JsonDefaults for Defaults {
    fn push(&self, fields: &mut Vec<(crate::event::KeyString, Value)>) {
        fields.push(("file".into(), Value::from("/var/log/app.log")));
        fields.push(("n".into(), Value::Integer(self.0)));
    }
}

#[tokio::test]
async fn lazy_json_lines_split_over_records_read_back_the_same() {
    let dir = Dir::new();
    let (tx, mut rx) = open(
        options(&dir, MIN_DISK_BYTES, WhenFull::Block),
        ComponentMetrics::detached("t"),
    )
    .unwrap();
    let line = |i: i64| {
        let text = format!(r#"{{"i":{i},"pad":"{}"}}"#, "p".repeat(i as usize % 700));
        let log = crate::codec::JsonLog::checked(Bytes::from(text), Defaults(i / 3), None);
        Event::Log(LogEvent::from_typed(
            log,
            crate::event::EventMetadata::default(),
        ))
    };
    // Records of at most 32 KiB: a batch of 300 such lines spans several.
    let mut batch = EventBatch::new((0..300).map(line).collect());
    let expected: Vec<Value> = batch
        .iter()
        .map(|e| match e {
            Event::Log(l) => l.value().clone(),
            _ => unreachable!(),
        })
        .collect();
    // Lines whose tree was never built: the ones to write as text.
    batch.events.extend((300..600).map(line));
    tx.send(batch).await.unwrap();
    drop(tx);
    let mut got = Vec::new();
    while let Some(mut b) = rx.recv().await {
        for e in b.iter() {
            let Event::Log(l) = e else {
                panic!("not a log")
            };
            assert!(l.lazy_json().is_some(), "still lazy");
            got.push(l.value().clone());
        }
        b.finalize(EventStatus::Delivered);
    }
    assert_eq!(got.len(), 600);
    assert_eq!(&got[..300], &expected[..]);
    for (i, v) in got.iter().enumerate().skip(300) {
        let Event::Log(l) = line(i as i64) else {
            unreachable!()
        };
        assert_eq!(v, l.value());
    }
}

#[tokio::test]
// The gate holds the group commit's syncs back on purpose while the sender writes.
#[allow(clippy::await_holding_lock)]
async fn batches_over_several_segments_are_acknowledged_after_one_sync_of_them_all() {
    let dir = Dir::new();
    let m = ComponentMetrics::detached("t");
    // Segments of 32 KiB: 20 batches of about 10 KiB take several.
    let (tx, mut rx) = open(options(&dir, MIN_DISK_BYTES, WhenFull::Block), m.clone()).unwrap();
    let commit = tx
        .commit
        .clone()
        .expect("fsync = \"batch\" commits in groups");
    let gate = commit.gate.lock().unwrap();
    let mut statuses = Vec::new();
    for b in 0..20 {
        let (n, status) = BatchNotifier::new_with_receiver();
        let mut batch = numbered(b * 10, 10, 1000);
        batch.attach_notifier(&n);
        drop(n);
        tx.send(batch).await.unwrap();
        statuses.push(status);
    }
    assert!(format::list_segments(&dir.0).unwrap().len() >= 5);
    for st in &mut statuses {
        assert_eq!(st.try_recv(), None, "acknowledged before a sync covered it");
    }
    drop(gate);
    for st in statuses {
        assert_eq!(st.await, EventStatus::Delivered);
    }
    let syncs = commit.syncs.load(Ordering::SeqCst);
    assert!((1..=2).contains(&syncs), "{syncs} syncs");
    drop(tx);
    assert_eq!(
        take(&mut rx, 200, EventStatus::Delivered).await,
        (0..200).collect::<Vec<_>>()
    );
}
