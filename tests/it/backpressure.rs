//! A stalled sink bounds memory (events in flight never exceed the buffers) and loses nothing
//! once it recovers.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::testkit::{start, state};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_sink_bounds_events_in_flight_and_loses_nothing_after_recovery() {
    const N: u64 = 50_000;
    const BATCH: u64 = 100;
    const SINK_BUFFER: u64 = 500;
    let name = "backpressure";
    let toml = format!(
        r#"
[api]
enabled = false
[sources.src]
type = "counting"
name = "{name}"
count = {N}
batch = {BATCH}
[transforms.pass]
type = "passthrough"
inputs = ["src"]
[sinks.slow]
type = "gated"
inputs = ["pass"]
name = "{name}"
stalled = true
buffer.max_events = {SINK_BUFFER}
"#
    );
    let data = tempfile::tempdir().unwrap();
    let toml = format!("data_dir = \"{}\"\n{toml}", data.path().display());
    let running = start(&toml).await;
    let st = state(name);

    // Let the source run into the stalled sink, until backpressure holds it still.
    let mut created = st.created.load(Ordering::SeqCst);
    let mut created_later = u64::MAX;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        created_later = st.created.load(Ordering::SeqCst);
        if created_later == created && created > 0 {
            break;
        }
        created = created_later;
    }
    let in_flight = created_later - st.delivered_count() as u64;
    // Capacity: the sink buffer, the transform's input queue, one batch held by the
    // transform and one by the source while they wait to send.
    let bound = SINK_BUFFER + weir_pipeline::config::TRANSFORM_QUEUE_EVENTS as u64 + 2 * BATCH;
    assert_eq!(st.delivered_count(), 0, "the sink is stalled");
    assert!(created > 0, "the source started");
    assert_eq!(created, created_later, "the source is held by backpressure");
    assert!(
        in_flight <= bound,
        "{in_flight} events in flight, more than the buffers hold ({bound})"
    );
    assert!(created < N, "the source did not run to the end");

    st.open_gate();
    let outcomes = tokio::time::timeout(Duration::from_secs(30), running.wait())
        .await
        .expect("pipeline drains after the sink recovers");
    assert!(outcomes.iter().all(|o| o.error.is_none()), "{outcomes:?}");
    let mut got = st.delivered.lock().unwrap().clone();
    got.sort_unstable();
    let expected: Vec<i64> = (0..N as i64).collect();
    assert_eq!(
        got.len(),
        expected.len(),
        "every event delivered exactly once"
    );
    assert!(got == expected, "every sequence number arrived");
}
