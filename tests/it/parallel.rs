//! Stateless transforms on several worker threads (`weir run --threads 4`): each runs as one
//! instance per thread, several batches at once, and hands its outputs on in input order;
//! panics and reloads behave as with one instance. The `test_panic` transform (registered
//! with `WEIR_TEST_COMPONENTS=1`) declares itself stateless on demand and sleeps a varying
//! time per batch, so that batches run at once finish out of order.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::harness::{
    free_addr, http_post, metric, sigterm, wait_until, wait_with_timeout, weir, weir_log,
};

/// Appends lines `from..to` (`line-<n>` and padding, 64 bytes) to `<dir>/in.log`.
fn write_lines(dir: &Path, from: usize, to: usize) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("in.log"))
        .unwrap();
    let text: String = (from..to).map(|i| format!("line-{i:<58}\n")).collect();
    f.write_all(text.as_bytes()).unwrap();
}

/// `weir run --threads 4` with the fault-injecting types, logging to `<dir>/<name>.log`.
fn start(dir: &Path, name: &str, config: &str) -> Child {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, config).unwrap();
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .unwrap();
    weir()
        .env("WEIR_TEST_COMPONENTS", "1")
        .args([
            "run",
            "--threads",
            "4",
            "--grace-period-secs",
            "10",
            "--config",
        ])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// `<dir>/in.log` read by a file source `in`, then `rest`; the API on `api`.
fn pipeline(dir: &Path, api: SocketAddr, rest: &str) -> String {
    format!(
        "data_dir = \"{data}\"\n[api]\naddress = \"{api}\"\n[sources.in]\ntype = \"file\"\n\
         include = [\"{input}\"]\nglob_minimum_cooldown_ms = 100\n{rest}",
        data = dir.join("data").display(),
        input = dir.join("in.log").display(),
    )
}

/// The JSON lines the file sink has written whole to `path` (while it runs, the last line
/// may be half written: it is left for the next look).
fn written(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let whole = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    whole
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The line number `n` of each event's `line-<n>` message.
fn numbers(events: &[serde_json::Value]) -> Vec<usize> {
    events
        .iter()
        .map(|e| {
            let m = e["message"].as_str().unwrap();
            m.strip_prefix("line-").unwrap().trim().parse().unwrap()
        })
        .collect()
}

fn file_sink(input: &str, path: &Path) -> String {
    format!(
        "[sinks.out]\ntype = \"file\"\ninputs = [\"{input}\"]\npath = \"{}\"\nencoding.codec = \"json\"\n",
        path.display()
    )
}

#[test]
fn stateless_transforms_on_four_threads_hand_on_every_line_once_in_input_order() {
    const N: usize = 50_000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_lines(d, 0, N);
    let out = d.join("out.json");
    let api = free_addr();
    let config = pipeline(
        d,
        api,
        &format!(
            r#"
[transforms.jitter]
type = "test_panic"
inputs = ["in"]
panic_after_events = 18446744073709551615
stateless = true
jitter_ms = 4
[transforms.tag]
type = "remap"
inputs = ["jitter"]
source = '.edited = true'
{sink}"#,
            sink = file_sink("tag", &out)
        ),
    );
    let child = start(d, "run", &config);
    assert!(
        wait_until(Duration::from_secs(60), || written(&out).len() >= N),
        "not every line arrived ({} of {N}):\n{}",
        written(&out).len(),
        weir_log(d, "run")
    );
    // Both transforms ran on four threads.
    for id in ["jitter", "tag"] {
        assert_eq!(
            metric(api, "weir_component_sent_events_total", id),
            Some(N as f64)
        );
    }
    sigterm(&child);
    let status = wait_with_timeout(child, Duration::from_secs(30)).status;
    let log = weir_log(d, "run");
    assert_eq!(status.code(), Some(0), "{log}");

    let events = written(&out);
    assert_eq!(
        numbers(&events),
        (0..N).collect::<Vec<_>>(),
        "every line once, in the order of the file"
    );
    assert!(events.iter().all(|e| e["edited"] == true));
    for id in ["jitter", "tag"] {
        assert!(
            log.lines().any(|l| l.contains("runs on several threads")
                && l.contains(&format!("component={id}"))
                && l.contains("lanes=4")),
            "`{id}` runs on four lanes:\n{log}"
        );
    }
}

#[test]
fn a_panic_in_one_of_four_lanes_loses_its_batch_only_the_lane_restarts_and_the_next_start_delivers_it(
) {
    const N: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_lines(d, 0, N);
    let out = d.join("out.json");
    let config = |api: SocketAddr, panic_after: u64| {
        pipeline(
            d,
            api,
            &format!(
                r#"
[transforms.pass]
type = "test_panic"
inputs = ["in"]
panic_after_events = {panic_after}
stateless = true
jitter_ms = 2
{sink}"#,
                sink = file_sink("pass", &out)
            ),
        )
    };
    let api = free_addr();
    let child = start(d, "run1", &config(api, 3000));
    assert!(
        wait_until(Duration::from_secs(60), || metric(
            api,
            "weir_component_restarts_total",
            "pass"
        ) == Some(1.0)
            && metric(api, "weir_component_received_events_total", "out")
                == Some(
                    (N as f64)
                        - metric(api, "weir_component_failure_lost_events_total", "pass")
                            .unwrap_or(0.0)
                )),
        "the lane that panicked is built again once, and the rest reaches the sink:\n{}",
        weir_log(d, "run1")
    );
    let lost = metric(api, "weir_component_failure_lost_events_total", "pass").unwrap();
    assert!(lost > 0.0, "the panicking lane's batch is counted lost");
    assert_eq!(metric(api, "weir_component_failed", "pass"), Some(0.0));
    sigterm(&child);
    let status = wait_with_timeout(child, Duration::from_secs(30)).status;
    let log = weir_log(d, "run1");
    assert_ne!(status.code(), Some(0), "not a clean run:\n{log}");
    assert!(
        log.contains("injected panic after") && log.contains("component started again"),
        "{log}"
    );
    let first = numbers(&written(&out));
    assert_eq!(
        first.len() as f64,
        N as f64 - lost,
        "only the lost batch is missing"
    );
    assert!(
        first.windows(2).all(|w| w[0] < w[1]),
        "what was handed on around the panic kept the input's order"
    );

    // The next start reads again from before the batch that was lost.
    let api = free_addr();
    let child = start(d, "run2", &config(api, u64::MAX));
    assert!(
        wait_until(Duration::from_secs(60), || {
            let got: std::collections::BTreeSet<usize> =
                numbers(&written(&out)).into_iter().collect();
            got.len() == N
        }),
        "the next start delivers the lost lines:\n{}",
        weir_log(d, "run2")
    );
    sigterm(&child);
    let status = wait_with_timeout(child, Duration::from_secs(30)).status;
    assert_eq!(status.code(), Some(0), "{}", weir_log(d, "run2"));
}

#[test]
fn a_reload_of_a_remap_on_four_threads_takes_over_between_batches_in_order() {
    const N: usize = 40_000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_lines(d, 0, N / 2);
    let out = d.join("out.json");
    let api = free_addr();
    let config = |version: u32| {
        pipeline(
            d,
            api,
            &format!(
                "[transforms.tag]\ntype = \"remap\"\ninputs = [\"in\"]\nsource = '.version = {version}'\n{}",
                file_sink("tag", &out)
            ),
        )
    };
    let child = start(d, "weir", &config(1));
    assert!(
        wait_until(Duration::from_secs(60), || written(&out).len() >= N / 2),
        "the first half did not arrive:\n{}",
        weir_log(d, "weir")
    );
    std::fs::write(d.join("weir.toml"), config(2)).unwrap();
    let (status, body) = http_post(api, "/api/reload").unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["summary"]["changed"],
        serde_json::json!(["tag"]),
        "{body}"
    );
    // Read after the reload was applied: the new program's.
    write_lines(d, N / 2, N);
    assert!(
        wait_until(Duration::from_secs(60), || written(&out).len() >= N),
        "the second half did not arrive:\n{}",
        weir_log(d, "weir")
    );
    sigterm(&child);
    let status = wait_with_timeout(child, Duration::from_secs(30)).status;
    let log = weir_log(d, "weir");
    assert_eq!(status.code(), Some(0), "{log}");

    let events = written(&out);
    assert_eq!(numbers(&events), (0..N).collect::<Vec<_>>(), "{log}");
    let versions: Vec<u64> = events
        .iter()
        .map(|e| e["version"].as_u64().unwrap())
        .collect();
    assert!(versions[..N / 2].iter().all(|v| *v == 1));
    assert!(
        versions[N / 2..].iter().all(|v| *v == 2),
        "every line read after the reload went through the new program"
    );
    assert_eq!(
        log.matches("runs on several threads").count(),
        1,
        "started on several threads once:\n{log}"
    );
    assert!(
        log.contains("transform rebuilt with its new options"),
        "{log}"
    );
}

#[test]
fn with_on_failure_exit_a_panic_in_one_lane_stops_the_process_and_the_next_start_delivers_everything(
) {
    const N: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_lines(d, 0, N);
    let out = d.join("out.json");
    let config = |api: SocketAddr, panic_after: u64| {
        pipeline(
            d,
            api,
            &format!(
                r#"
[transforms.pass]
type = "test_panic"
inputs = ["in"]
panic_after_events = {panic_after}
stateless = true
jitter_ms = 2
on_failure = "exit"
{sink}"#,
                sink = file_sink("pass", &out)
            ),
        )
    };
    let child = start(d, "run1", &config(free_addr(), 3000));
    // No signal: the failure itself stops the process.
    let status = wait_with_timeout(child, Duration::from_secs(60)).status;
    let log = weir_log(d, "run1");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(
        log.contains("on_failure = \"exit\" failed") && log.contains("injected panic"),
        "{log}"
    );
    let first = numbers(&written(&out));
    assert!(first.len() < N, "the panic lost a batch");
    assert!(
        first.windows(2).all(|w| w[0] < w[1]),
        "what was handed on before the panic kept the input's order"
    );

    let child = start(d, "run2", &config(free_addr(), u64::MAX));
    assert!(
        wait_until(Duration::from_secs(60), || {
            let got: std::collections::BTreeSet<usize> =
                numbers(&written(&out)).into_iter().collect();
            got.len() == N
        }),
        "the next start delivers every line:\n{}",
        weir_log(d, "run2")
    );
    sigterm(&child);
    let status = wait_with_timeout(child, Duration::from_secs(30)).status;
    assert_eq!(status.code(), Some(0), "{}", weir_log(d, "run2"));
}
