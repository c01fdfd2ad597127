//! Supervision end to end: components that die (panics injected by the `test_panic` types,
//! registered with `WEIR_TEST_COMPONENTS=1`) are restarted or stop the process, `/health`
//! says so, nothing they held is reported delivered, and the next start delivers the rest.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::harness::{free_addr, http_get, metric, sigterm, wait_until, wait_with_timeout, weir};

const LINES: usize = 3000;

fn write_input(dir: &Path) {
    write_lines(dir, LINES);
}

fn write_lines(dir: &Path, n: usize) {
    let text: String = (0..n).map(|i| format!("line-{i}\n")).collect();
    std::fs::write(dir.join("in.log"), text).unwrap();
}

/// Starts `weir run` with the fault-injecting types, logging to `<dir>/<name>.log`.
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
        .args(["run", "--grace-period-secs", "10", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn log_of(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

/// The `line-N` messages in a file written by the `file` sink (text) or `test_panic` (JSON).
fn messages(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            if l.starts_with('{') {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["message"].as_str().unwrap().to_string()
            } else {
                l.to_string()
            }
        })
        .collect()
}

fn all_lines() -> BTreeSet<String> {
    (0..LINES).map(|i| format!("line-{i}")).collect()
}

fn missing(path: &Path) -> usize {
    let got: BTreeSet<String> = messages(path).into_iter().collect();
    all_lines().difference(&got).count()
}

/// `dir/in.log` read by a file source `in` (acknowledgements by default), with `rest` (the
/// other components) after it; the API on `api`, or off.
fn file_pipeline(dir: &Path, api: Option<std::net::SocketAddr>, rest: &str) -> String {
    let api = match api {
        Some(a) => format!("address = \"{a}\""),
        None => "enabled = false".to_string(),
    };
    format!(
        "data_dir = \"{data}\"\n[api]\n{api}\n[sources.in]\ntype = \"file\"\ninclude = [\"{input}\"]\n{rest}",
        data = dir.join("data").display(),
        input = dir.join("in.log").display(),
    )
}

/// A file source (acknowledgements by default) feeding a good `file` sink and a sink that
/// panics once after 1,000 events.
fn fan_out_config(
    dir: &Path,
    api: std::net::SocketAddr,
    panic_after: u64,
    on_failure: &str,
) -> String {
    file_pipeline(
        dir,
        Some(api),
        &format!(
            r#"
[sinks.good]
type = "file"
inputs = ["in"]
path = "{good}"
encoding.codec = "text"
[sinks.bad]
type = "test_panic"
inputs = ["in"]
path = "{bad}"
panic_after_events = {panic_after}
on_failure = "{on_failure}"
"#,
            good = dir.join("good.log").display(),
            bad = dir.join("bad.log").display(),
        ),
    )
}

#[test]
fn a_sink_that_panics_is_restarted_the_other_keeps_delivering_and_the_next_start_delivers_the_rest()
{
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_input(d);
    let api = free_addr();
    let child = start(d, "run1", &fan_out_config(d, api, 1000, "restart"));
    assert!(
        wait_until(Duration::from_secs(30), || messages(&d.join("good.log"))
            .len()
            >= LINES),
        "the good sink delivers every line while the other fails:\n{}",
        log_of(d, "run1")
    );
    assert!(
        wait_until(Duration::from_secs(30), || metric(
            api,
            "weir_component_restarts_total",
            "bad"
        ) == Some(1.0)),
        "the failed sink is started again once:\n{}",
        log_of(d, "run1")
    );
    assert_eq!(metric(api, "weir_component_failed", "bad"), Some(0.0));
    let (status, _) = http_get(api, "/health").unwrap();
    assert_eq!(status, 200, "healthy again after the restart");
    let lost = missing(&d.join("bad.log"));
    assert!(
        lost > 0,
        "the batch the sink held when it panicked is not written by it"
    );
    sigterm(&child);
    let out = wait_with_timeout(child, Duration::from_secs(30));
    let log = log_of(d, "run1");
    assert_ne!(
        out.status.code(),
        Some(0),
        "a run where a component failed is not a clean one:\n{log}"
    );
    assert!(log.contains("injected panic after"), "{log}");
    assert!(log.contains("component started again"), "{log}");
    assert!(!log.contains("weir stopped cleanly"), "{log}");

    // The next start reads again from before the batch that was not delivered.
    let api = free_addr();
    let child = start(d, "run2", &fan_out_config(d, api, u64::MAX, "restart"));
    assert!(
        wait_until(Duration::from_secs(30), || missing(&d.join("bad.log")) == 0),
        "after the restart both sinks have every line ({} still missing):\n{}",
        missing(&d.join("bad.log")),
        log_of(d, "run2")
    );
    assert_eq!(missing(&d.join("good.log")), 0);
    sigterm(&child);
    let out = wait_with_timeout(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", log_of(d, "run2"));
}

#[test]
fn with_on_failure_exit_a_panicking_transform_stops_the_process_and_the_next_start_delivers_everything(
) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_input(d);
    let config = |api: std::net::SocketAddr, panic_after: u64| {
        file_pipeline(
            d,
            Some(api),
            &format!(
                r#"
[transforms.pass]
type = "test_panic"
inputs = ["in"]
panic_after_events = {panic_after}
on_failure = "exit"
[sinks.out]
type = "file"
inputs = ["pass"]
path = "{out}"
encoding.codec = "text"
"#,
                out = d.join("out.log").display(),
            ),
        )
    };
    let child = start(d, "run1", &config(free_addr(), 1000));
    // No signal: the failure itself stops the process.
    let out = wait_with_timeout(child, Duration::from_secs(30));
    let log = log_of(d, "run1");
    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(
        log.contains("on_failure = \"exit\" failed") && log.contains("injected panic"),
        "{log}"
    );
    assert!(!log.contains("weir stopped cleanly"), "{log}");
    assert!(missing(&d.join("out.log")) > 0, "the panic lost a batch");

    let child = start(d, "run2", &config(free_addr(), u64::MAX));
    assert!(
        wait_until(Duration::from_secs(30), || missing(&d.join("out.log")) == 0),
        "the next start delivers every line ({} missing):\n{}",
        missing(&d.join("out.log")),
        log_of(d, "run2")
    );
    sigterm(&child);
    let out = wait_with_timeout(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", log_of(d, "run2"));
}

#[test]
fn health_is_503_naming_a_component_that_keeps_failing_and_sigterm_reports_what_was_not_delivered()
{
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Fewer lines than the sink's buffer holds: the source sends them all, and every one is
    // then in the buffer or was in the hands of an instance that panicked.
    let lines = 500;
    write_lines(d, lines);
    let api = free_addr();
    let config = file_pipeline(
        d,
        Some(api),
        &format!(
            r#"
[sinks.bad]
type = "test_panic"
inputs = ["in"]
path = "{bad}"
panic_after_events = 1
panics = 1000
"#,
            bad = d.join("bad.log").display(),
        ),
    );
    let child = start(d, "run", &config);
    let mut body = String::new();
    assert!(
        wait_until(Duration::from_secs(30), || match http_get(api, "/health") {
            Ok((503, b)) => {
                body = b;
                true
            }
            _ => false,
        }),
        "/health turns 503 while the sink is down:\n{}",
        log_of(d, "run")
    );
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ok"], false, "{body}");
    let down = &v["components"][0];
    assert_eq!(down["component"], "bad", "{body}");
    assert_eq!(down["state"], "restarting", "{body}");
    assert!(
        down["error"].as_str().unwrap().contains("injected panic"),
        "{body}"
    );
    assert_eq!(metric(api, "weir_component_failed", "bad"), Some(1.0));
    assert!(messages(&d.join("bad.log")).is_empty(), "nothing written");
    sigterm(&child);
    let out = wait_with_timeout(child, Duration::from_secs(30));
    let log = log_of(d, "run");
    assert_eq!(out.status.code(), Some(1), "{log}");
    // Every line is in the sink's buffer or was in its hands: all not delivered.
    assert!(
        log.contains(&format!("{lines} event(s) not delivered")),
        "the exit names the count:\n{log}"
    );
}

#[test]
fn kill_9_loops_with_default_settings_lose_nothing() {
    // No `acknowledgements` in the config: the default must be lossless.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = d.join("in.log");
    let out = d.join("out.log");
    let config = file_pipeline(
        d,
        None,
        &format!(
            r#"
[sinks.out]
type = "file"
inputs = ["in"]
path = "{out}"
encoding.codec = "text"
"#,
            out = out.display(),
        ),
    );
    let total = 200_000;
    let written = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let input = input.clone();
        let written = written.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::File::create(&input).unwrap();
            for chunk in 0..200 {
                let text: String = (chunk * 1000..(chunk + 1) * 1000)
                    .map(|i| format!("line-{i}\n"))
                    .collect();
                f.write_all(text.as_bytes()).unwrap();
                std::thread::sleep(Duration::from_millis(15));
            }
            written.store(true, std::sync::atomic::Ordering::Release);
        })
    };
    let expected: BTreeSet<String> = (0..total).map(|i| format!("line-{i}")).collect();
    let missing_now = || {
        let got: BTreeSet<String> = messages(&out).into_iter().collect();
        expected.difference(&got).count()
    };
    for round in 0..5 {
        let name = format!("kill{round}");
        let mut child = start(d, &name, &config);
        let before = messages(&out).len();
        // Killed while it is moving: once it has written more than before. (On a slow
        // machine the writer may be done and every line delivered already: then a round has
        // nothing left to do, which is fine.)
        let moved = wait_until(Duration::from_secs(10), || messages(&out).len() > before);
        assert!(
            moved || (written.load(std::sync::atomic::Ordering::Acquire) && missing_now() == 0),
            "round {round} makes no progress and lines are missing:\n{}",
            log_of(d, &name)
        );
        std::thread::sleep(Duration::from_millis(100 + 70 * round as u64));
        child.kill().unwrap();
        child.wait().unwrap();
    }
    writer.join().unwrap();
    let child = start(d, "last", &config);
    assert!(
        wait_until(Duration::from_secs(60), || missing_now() == 0),
        "{} of {total} lines missing after five kill -9 and a restart:\n{}",
        missing_now(),
        log_of(d, "last")
    );
    sigterm(&child);
    let status = wait_with_timeout(child, Duration::from_secs(30));
    assert_eq!(status.status.code(), Some(0), "{}", log_of(d, "last"));
    let written = messages(&out).len();
    eprintln!(
        "kill -9 x5: {total} lines, {written} written ({} read again after a kill)",
        written - total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_sink_outage_exits_within_the_grace_period_with_the_count_and_the_next_start_delivers(
) {
    use crate::elasticsearch::{Double, Flavor};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let n = 1000;
    write_lines(&d, n);
    let config = |endpoint: std::net::SocketAddr, api: std::net::SocketAddr| {
        file_pipeline(
            &d,
            Some(api),
            &format!(
                r#"
[sinks.es]
type = "elasticsearch"
inputs = ["in"]
endpoints = ["http://{endpoint}"]
index = "logs"
request.retry_max_duration_secs = 1
"#,
            ),
        )
    };
    // Nothing listens there: every request fails, the sink retries.
    let down = free_addr();
    let api = free_addr();
    let cfg = config(down, api);
    let dd = d.clone();
    let (code, log) = tokio::task::spawn_blocking(move || {
        let child = start(&dd, "outage", &cfg);
        assert!(
            wait_until(Duration::from_secs(30), || metric(
                api,
                "weir_component_received_events_total",
                "es"
            ) == Some(n as f64)),
            "the sink takes the lines in:\n{}",
            log_of(&dd, "outage")
        );
        sigterm(&child);
        // The grace period is 10 s: the exit comes soon after, not after the retries.
        let out = wait_with_timeout(child, Duration::from_secs(25));
        (out.status.code(), log_of(&dd, "outage"))
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("grace period of 10s expired"), "{log}");
    assert!(
        log.contains(&format!("{n} event(s) not delivered")),
        "the exit says how many:\n{log}"
    );

    // The next start, with the endpoint up, delivers every line once.
    let double = Double::of(Flavor::Es8);
    let up = double.clone().start().await;
    let api = free_addr();
    let cfg = config(up, api);
    let dd = d.clone();
    let db = double.clone();
    let (code, log) = tokio::task::spawn_blocking(move || {
        let child = start(&dd, "after", &cfg);
        let stored = wait_until(Duration::from_secs(30), || db.lock().stored.len() >= n);
        sigterm(&child);
        let out = wait_with_timeout(child, Duration::from_secs(30));
        assert!(
            stored,
            "delivered after the restart:\n{}",
            log_of(&dd, "after")
        );
        (out.status.code(), log_of(&dd, "after"))
    })
    .await
    .unwrap();
    assert_eq!(code, Some(0), "{log}");
    let st = double.lock();
    let got: BTreeSet<String> = st
        .stored
        .iter()
        .map(|(_, doc)| doc["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(st.stored.len(), n, "each line once");
    assert_eq!(got.len(), n);
}
