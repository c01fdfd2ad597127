//! The options every sink shares (`batch.*`, `request.*`, durations), driven through every
//! sink that has them: a bad value gives the same message, at its file:line:col, whichever
//! the sink; good values load; an old option name says its new name.

use weir_pipeline::config::load_str;

use crate::harness::{weir, write_config};
use crate::testkit::full_registry;

/// Every sink with a `batch` table, with its required options.
const BATCHING: &[(&str, &str)] = &[
    ("elasticsearch", "endpoints = [\"http://127.0.0.1:9\"]\n"),
    ("otlp", "endpoint = \"http://127.0.0.1:9\"\n"),
    (
        "prometheus_remote_write",
        "endpoint = \"http://127.0.0.1:9/api/v1/write\"\n",
    ),
    ("parquet", "path = \"/tmp/weir-never-written/\"\n"),
];

/// Every sink with a `request` table, with its required options.
const REQUESTING: &[(&str, &str)] = &[
    ("elasticsearch", "endpoints = [\"http://127.0.0.1:9\"]\n"),
    ("otlp", "endpoint = \"http://127.0.0.1:9\"\n"),
    (
        "prometheus_remote_write",
        "endpoint = \"http://127.0.0.1:9/api/v1/write\"\n",
    ),
    (
        "nats",
        "url = \"nats://127.0.0.1:9\"\nsubject = \"x\"\njetstream = true\n",
    ),
    (
        "kafka",
        "bootstrap_servers = \"127.0.0.1:9\"\ntopic = \"x\"\n",
    ),
];

const SECS: &str = "expected a positive number of seconds, at most 31536000 (one year)";
const COUNT: &str = "expected a positive integer (at least 1)";
const CONCURRENCY: &str = "expected an integer from 1 to 65536";

/// A pipeline with one sink of `kind` (fed by a demo source), `extra` at the end.
fn config(kind: &str, required: &str, extra: &str) -> String {
    format!(
        "[sources.in]\ntype = \"demo\"\n[sinks.s]\ntype = \"{kind}\"\ninputs = [\"in\"]\n{required}{extra}"
    )
}

/// The errors of a config, as `weir validate` prints them.
fn errors(text: &str) -> Vec<String> {
    match load_str("f.toml", text, &full_registry(), &|_| None) {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// `line` is the last line of `text`: where its value starts, as `f.toml:L:C`.
fn value_location(text: &str, line: &str) -> String {
    let l = text.lines().count();
    let col = line.find(" = ").map_or(0, |i| i + 3) + 1;
    format!("f.toml:{l}:{col}")
}

/// The last line of `text` is `prefix` and a key: where the key starts, as `f.toml:L:C`.
fn key_location(text: &str, prefix: &str) -> String {
    format!("f.toml:{}:{}", text.lines().count(), prefix.len() + 1)
}

/// (option line, the message after "invalid value: ").
fn bad_batch_values() -> Vec<(&'static str, String)> {
    vec![
        ("batch.max_events = 0", format!("`0`, {COUNT}")),
        ("batch.max_events = -5", format!("`-5`, {COUNT}")),
        ("batch.max_bytes = 0", format!("`0`, {COUNT}")),
        ("batch.timeout_secs = 1e20", format!("`1e20`, {SECS}")),
        ("batch.timeout_secs = -1", format!("`-1`, {SECS}")),
        ("batch.timeout_secs = 0", format!("`0`, {SECS}")),
        ("batch.timeout_secs = nan", format!("`NaN`, {SECS}")),
        ("batch.timeout_secs = inf", format!("`inf`, {SECS}")),
        (
            "batch.timeout_secs = 31536001",
            format!("`31536001`, {SECS}"),
        ),
    ]
}

fn bad_request_values(kind: &str) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("request.concurrency = 0", format!("`0`, {CONCURRENCY}")),
        (
            "request.concurrency = 65537",
            format!("`65537`, {CONCURRENCY}"),
        ),
        (
            "request.retry_initial_backoff_secs = 0",
            format!("`0`, {SECS}"),
        ),
        (
            "request.retry_max_duration_secs = 1e20",
            format!("`1e20`, {SECS}"),
        ),
        (
            "request.retry_max_duration_secs = -0.5",
            format!("`-0.5`, {SECS}"),
        ),
    ];
    // kafka has no `request.timeout_secs` (librdkafka's `message_timeout_ms` is its timeout).
    if kind != "kafka" {
        v.push(("request.timeout_secs = nan", format!("`NaN`, {SECS}")));
        v.push(("request.timeout_secs = 1e20", format!("`1e20`, {SECS}")));
        v.push(("request.timeout_secs = -1", format!("`-1`, {SECS}")));
    }
    v
}

#[test]
fn a_bad_shared_option_gives_the_same_located_error_for_every_sink() {
    let mut cases = Vec::new();
    for (kind, required) in BATCHING {
        for (line, msg) in bad_batch_values() {
            cases.push((*kind, *required, line, msg));
        }
    }
    for (kind, required) in REQUESTING {
        for (line, msg) in bad_request_values(kind) {
            cases.push((*kind, *required, line, msg));
        }
    }
    let mut failures = Vec::new();
    for (kind, required, line, msg) in cases {
        let text = config(kind, required, &format!("{line}\n"));
        let field = &line[..line.find(" = ").unwrap_or(0)];
        let want = format!(
            "{}: sinks.s.{field}: invalid value: {msg}",
            value_location(&text, line)
        );
        let got = errors(&text);
        if got != [want.clone()] {
            failures.push(format!("{kind}, `{line}`:\n  want {want}\n  got  {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn good_shared_options_load_for_every_sink() {
    for (kind, required) in BATCHING {
        let text = config(
            kind,
            required,
            "batch.max_events = 5\nbatch.max_bytes = 100000\nbatch.timeout_secs = 0.25\n",
        );
        assert_eq!(errors(&text), Vec::<String>::new(), "{kind}");
        // As a table too, and integer seconds.
        let text = config(
            kind,
            required,
            "[sinks.s.batch]\nmax_events = 1\ntimeout_secs = 31536000\n",
        );
        assert_eq!(errors(&text), Vec::<String>::new(), "{kind}");
    }
    for (kind, required) in REQUESTING {
        let mut extra = String::from(
            "request.concurrency = 65536\nrequest.retry_initial_backoff_secs = 0.01\nrequest.retry_max_duration_secs = 2\n",
        );
        if *kind != "kafka" {
            extra.push_str("request.timeout_secs = 2.5\n");
        }
        extra.push_str("request.retry_attempts = 0\n");
        assert_eq!(
            errors(&config(kind, required, &extra)),
            Vec::<String>::new(),
            "{kind}"
        );
    }
}

#[test]
fn an_unknown_shared_option_is_named_with_the_valid_ones() {
    for (kind, required) in BATCHING {
        let text = config(kind, required, "batch.max_size = 5\n");
        assert_eq!(
            errors(&text),
            [format!(
                "{}: sinks.s.batch.max_size: unknown field `max_size`, expected one of `max_events`, `max_bytes`, `timeout_secs`",
                key_location(&text, "batch.")
            )],
            "{kind}"
        );
    }
    for (kind, required) in REQUESTING {
        let text = config(kind, required, "request.concurency = 5\n");
        assert_eq!(
            errors(&text),
            [format!(
                "{}: sinks.s.request.concurency: unknown field `concurency`, did you mean `concurrency`?",
                key_location(&text, "request.")
            )],
            "{kind}"
        );
    }
}

#[test]
fn an_option_a_sink_does_not_have_says_what_to_use() {
    let kafka = REQUESTING[4];
    let text = config(kafka.0, kafka.1, "request.timeout_secs = 5\n");
    let got = errors(&text);
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].ends_with("`request.timeout_secs` does not apply to this sink: use `message_timeout_ms` (librdkafka's `message.timeout.ms`)"),
        "{got:?}"
    );
    assert!(got[0].starts_with("f.toml:"), "{got:?}");
}

#[test]
fn an_old_option_name_names_the_new_one() {
    let cases = [
        (
            "prometheus_remote_write",
            "batch_max_events = 5",
            "batch.max_events",
        ),
        (
            "prometheus_remote_write",
            "batch_timeout_secs = 1",
            "batch.timeout_secs",
        ),
        (
            "prometheus_remote_write",
            "concurrency = 2",
            "request.concurrency",
        ),
        (
            "prometheus_remote_write",
            "request_timeout_secs = 2",
            "request.timeout_secs",
        ),
        (
            "prometheus_remote_write",
            "retry_max_backoff_secs = 2",
            "request.retry_max_duration_secs",
        ),
        ("elasticsearch", "max_retries = 2", "request.retry_attempts"),
        (
            "elasticsearch",
            "retry_initial_backoff_secs = 2",
            "request.retry_initial_backoff_secs",
        ),
        ("otlp", "request_timeout_secs = 2", "request.timeout_secs"),
        ("nats", "max_inflight = 2", "request.concurrency"),
        ("nats", "ack_timeout_secs = 2", "request.timeout_secs"),
        ("kafka", "max_inflight_batches = 2", "request.concurrency"),
        ("parquet", "max_rows = 2", "batch.max_events"),
        ("parquet", "max_age_secs = 2", "batch.timeout_secs"),
        ("parquet", "max_bytes = 2", "batch.max_bytes"),
    ];
    for (kind, line, new) in cases {
        let required = BATCHING
            .iter()
            .chain(REQUESTING)
            .find(|(k, _)| *k == kind)
            .map(|(_, r)| *r)
            .unwrap_or_default();
        let text = config(kind, required, &format!("{line}\n"));
        let old = &line[..line.find(" = ").unwrap_or(0)];
        let l = text.lines().count();
        assert_eq!(
            errors(&text),
            [format!(
                "f.toml:{l}:1: sinks.s.{old}: unknown field `{old}`: it is now `{new}`"
            )],
            "{kind}"
        );
    }
}

/// The case of the issue, through the binary: `weir validate` reports the value at its place
/// and fails, where it used to pass and the sink then panicked at start.
#[test]
fn weir_validate_rejects_a_duration_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "es.toml",
        &config(
            "elasticsearch",
            "endpoints = [\"http://127.0.0.1:9\"]\n",
            "request.timeout_secs = 1e20\n",
        ),
    );
    let out = weir().arg("validate").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let want = format!(
        "{}:7:24: sinks.s.request.timeout_secs: invalid value: `1e20`, {SECS}",
        path.display()
    );
    assert!(text.contains(&want), "want {want}\n got {text}");
}
