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

// ---------------------------------------------------------------------------------------
// file -> log_to_metric -> aggregate -> file, killed (SIGKILL) in mid-window five times.

/// Every input line is this long (newline included), so a checkpoint offset names a line.
const VALUE_LINE: usize = 32;

/// Line `i`: its value is 10..=99, so every line has the same width.
fn value_line(i: usize) -> (String, u64) {
    let v = 10 + (i as u64 * 7919) % 90;
    let l = format!("{{\"i\":\"{i:09}\",\"v\":{v},\"p\":\"");
    (
        format!("{l}{}\"}}", "x".repeat(VALUE_LINE - 3 - l.len())),
        v,
    )
}

/// The offset of the source's checkpoint of its one file, as a line number.
fn checkpoint_line(data: &std::path::Path) -> usize {
    let Ok(text) = std::fs::read_to_string(data.join("in/checkpoints.json")) else {
        return 0;
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let offset = v["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["offset"].as_u64().unwrap())
        .max()
        .unwrap_or(0) as usize;
    assert_eq!(offset % VALUE_LINE, 0, "a checkpoint between lines");
    offset / VALUE_LINE
}

/// The sums the aggregate wrote, one line (one interval of the one series) each.
fn window_sums(out: &std::path::Path) -> Vec<u64> {
    crate::harness::lines(out)
        .iter()
        .map(|l| {
            let m: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("output line {l:?} is not JSON: {e}"));
            assert_eq!(m["name"], "total", "{l}");
            let v = m["counter"]["value"].as_f64().unwrap();
            assert!(v.fract() == 0.0 && v > 0.0, "{l}");
            v as u64
        })
        .collect()
}

/// Walks the windows a run wrote from line `from` (where its source started: the checkpoint)
/// through the input's prefix sums: each window must be the sum of the next whole lines, in
/// order. Returns the line after each window.
fn window_ends(prefix: &[u64], from: usize, sums: &[u64]) -> Vec<usize> {
    let mut at = from;
    sums.iter()
        .map(|s| {
            let want = prefix[at] + s;
            at = prefix
                .binary_search(&want)
                .unwrap_or_else(|_| panic!("a window of {s} is not the sum of lines {at}.. of the input: lost or invented values"));
            at
        })
        .collect()
}

#[test]
fn aggregate_killed_mid_window_five_times_sums_to_the_input() {
    use crate::harness::{start_weir, stop_clean, wait_until, weir_log};
    use rand::Rng;
    use std::io::Write;

    // 24,000 lines written at about 1,600 a second (15 s, about as long as the five runs);
    // each run is killed 1.2 to 2.5 s after its start, with one-second intervals: a window is
    // open, and others were emitted.
    const N: usize = 24_000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("values.log");
    let out = d.join("sums.json");
    let config = format!(
        r#"
data_dir = "{data}"
[api]
enabled = false
[sources.in]
type = "file"
include = ["{input}"]
acknowledgements = true
glob_minimum_cooldown_ms = 100
decoding.codec = "json"
[transforms.values]
type = "log_to_metric"
inputs = ["in"]
[[transforms.values.metrics]]
type = "counter"
field = "v"
increment_by_value = true
name = "total"
[transforms.sum]
type = "aggregate"
inputs = ["values"]
interval_secs = 1
[sinks.out]
type = "file"
inputs = ["sum"]
path = "{out}"
encoding.codec = "json"
"#,
        data = d.join("data").display(),
        input = input.display(),
        out = out.display(),
    );
    std::fs::create_dir_all(d.join("data")).unwrap();
    let mut prefix = vec![0u64; N + 1];
    let mut text = Vec::with_capacity(N);
    for i in 0..N {
        let (l, v) = value_line(i);
        assert_eq!(l.len() + 1, VALUE_LINE);
        prefix[i + 1] = prefix[i] + v;
        text.push(l);
    }
    let writer = {
        let input = input.clone();
        std::thread::spawn(move || {
            let mut f = std::fs::File::options()
                .create(true)
                .append(true)
                .open(&input)
                .unwrap();
            for chunk in text.chunks(100) {
                let mut buf = chunk.join("\n");
                buf.push('\n');
                f.write_all(buf.as_bytes()).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(60));
            }
        })
    };

    let mut rng = rand::rng();
    // Per run: the line its source started from, the windows it wrote, where the checkpoint
    // stood when it was killed.
    let mut from = 0;
    let mut written = 0;
    let mut duplicated = Vec::new();
    for run in 0..5 {
        let mut child = start_weir(d, "agg", &config, false);
        std::thread::sleep(std::time::Duration::from_millis(
            rng.random_range(1200..2500),
        ));
        child.kill().unwrap(); // SIGKILL, in mid-window
        child.wait().unwrap();
        // Weir is dead: the output and the checkpoint file are what the next run finds.
        let sums = window_sums(&out);
        let ends = window_ends(&prefix, from, &sums[written..]);
        let delivered_to = ends.last().copied().unwrap_or(from);
        let checkpoint = checkpoint_line(&d.join("data"));
        // The checkpoint moves only when a whole window was delivered: it stands where this
        // run started or at the end of one of its windows, never past what was delivered.
        assert!(
            checkpoint == from || ends.contains(&checkpoint),
            "run {run}: checkpoint at line {checkpoint}, not at a window's end (started at {from}, windows end at {ends:?})\n{}",
            weir_log(d, "agg")
        );
        // What was delivered past the checkpoint is read again: whole windows, counted twice.
        duplicated.push(prefix[delivered_to] - prefix[checkpoint]);
        println!(
            "run {run}: read from line {from}, {} windows delivered up to line {delivered_to}, killed with the checkpoint at line {checkpoint}",
            ends.len()
        );
        from = checkpoint;
        written = sums.len();
        std::thread::sleep(std::time::Duration::from_millis(rng.random_range(200..800)));
    }
    writer.join().unwrap();

    // The last run reads the rest and stops cleanly once the checkpoint covers the input.
    let child = start_weir(d, "agg", &config, false);
    assert!(
        wait_until(std::time::Duration::from_secs(30), || weir_log(d, "agg")
            .matches("weir started")
            .count()
            == 6),
        "the last run did not start\n{}",
        weir_log(d, "agg")
    );
    assert!(
        wait_until(std::time::Duration::from_secs(120), || checkpoint_line(
            &d.join("data")
        ) == N),
        "the checkpoint did not reach the end of the input\n{}",
        weir_log(d, "agg")
    );
    stop_clean(d, "agg", child);
    let sums = window_sums(&out);
    let ends = window_ends(&prefix, from, &sums[written..]);
    assert_eq!(
        ends.last().copied(),
        Some(N),
        "the last run delivers the rest"
    );

    let total: u64 = sums.iter().sum();
    let dup: u64 = duplicated.iter().sum();
    println!(
        "aggregate x5 SIGKILL: input sum {}, output sum {total}, counted twice (delivered, not yet checkpointed at a kill): {duplicated:?}",
        prefix[N]
    );
    // Nothing lost; anything counted twice is exactly the windows delivered after the last
    // checkpoint persisted before a kill.
    assert_eq!(total, prefix[N] + dup);
}
