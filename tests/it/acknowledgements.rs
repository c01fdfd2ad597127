//! End-to-end acknowledgements across a fan-out to two sinks.

use std::time::Duration;

use weir_pipeline::finalization::EventStatus;

use crate::testkit::{start, state};

fn config(name: &str, reject_b: bool, data: &std::path::Path) -> String {
    format!(
        r#"
data_dir = "{}"
[api]
enabled = false
[sources.src]
type = "counting"
name = "{name}-src"
count = 10
batch = 10
acknowledgements = true
[sinks.a]
type = "gated"
inputs = ["src"]
name = "{name}-a"
[sinks.b]
type = "gated"
inputs = ["src"]
name = "{name}-b"
stalled = true
reject = {reject_b}
"#,
        data.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_is_acknowledged_only_after_both_fanned_out_sinks_deliver() {
    let data = tempfile::tempdir().unwrap();
    let running = start(&config("ack-ok", false, data.path())).await;
    let (src, a, b) = (state("ack-ok-src"), state("ack-ok-a"), state("ack-ok-b"));
    assert!(
        crate::harness::wait_until(Duration::from_secs(5), || a.delivered_count() == 10),
        "sink a delivers"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        src.statuses.lock().unwrap().is_empty(),
        "no acknowledgement while sink b still holds the batch"
    );
    b.open_gate();
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("drains");
    assert_eq!(b.delivered_count(), 10);
    assert_eq!(*src.statuses.lock().unwrap(), vec![EventStatus::Delivered]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejection_in_one_sink_is_reported_as_rejected() {
    let data = tempfile::tempdir().unwrap();
    let running = start(&config("ack-rej", true, data.path())).await;
    let (src, b) = (state("ack-rej-src"), state("ack-rej-b"));
    b.open_gate();
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("drains");
    assert_eq!(state("ack-rej-a").delivered_count(), 10);
    assert_eq!(*src.statuses.lock().unwrap(), vec![EventStatus::Rejected]);
}
