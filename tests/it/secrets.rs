//! No secret leaks: a pipeline with every credential option set runs (at debug level, its
//! sinks failing against closed ports, so that errors are logged), is validated, is asked for
//! everything the API serves (the console's pages and its components' configuration
//! included), and is stopped; no output contains a credential. And
//! credentials for a plain `http://` or `nats://` address are refused unless allowed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{free_addr, http_get, sigterm, wait_until, wait_with_timeout, weir};

/// Every credential of the config below: none may appear in any output.
const SECRETS: [&str; 10] = [
    "SECRET-es-password",
    "SECRET-es-header",
    "SECRET-rw-token",
    "SECRET-otlp-bearer",
    "SECRET-nats-token",
    "SECRET-nats-password",
    "SECRET-kafka-password",
    "SECRET-k8s-token",
    "SECRET-otlp-source-token",
    "SECRET-exporter-token-0",
];

/// A pipeline with every credential option, each component pointed at a closed port.
fn config(dir: &Path, api: std::net::SocketAddr) -> String {
    let closed = free_addr();
    let token = dir.join("token");
    std::fs::write(&token, "SECRET-k8s-token").unwrap();
    let root = dir.join("pods");
    std::fs::create_dir_all(&root).unwrap();
    format!(
        r#"
data_dir = "{data}"
[api]
address = "{api}"

[sources.demo]
type = "demo"
format = "json"
rate = 50

[sources.pods]
type = "kubernetes_logs"
root = "{root}"
[sources.pods.api]
endpoint = "http://{closed}"
token_file = "{token}"
allow_plaintext_credentials = true

[sources.otel_in]
type = "otlp"
grpc.address = "{grpc}"
http.address = "{http}"
auth.strategy = "bearer"
auth.token = "SECRET-otlp-source-token"

[sinks.exporter]
type = "prometheus_exporter"
inputs = ["demo_metrics"]
address = "{exporter}"
auth.strategy = "bearer"
auth.token = "SECRET-exporter-token-0"

[sources.bus]
type = "nats"
url = "nats://{closed}"
subject = "logs"
auth.user = "weir"
auth.password = "SECRET-nats-password"
allow_plaintext_credentials = true

[sinks.es]
type = "elasticsearch"
inputs = ["demo"]
endpoints = ["http://{closed}"]
auth.user = "weir"
auth.password = "SECRET-es-password"
headers.x-api-key = "SECRET-es-header"
allow_plaintext_credentials = true
request.retry_max_duration_secs = 1

[sinks.rw]
type = "prometheus_remote_write"
inputs = ["demo_metrics"]
endpoint = "http://{closed}/api/v1/write"
auth.strategy = "bearer"
auth.token = "SECRET-rw-token"
allow_plaintext_credentials = true

[transforms.demo_metrics]
type = "log_to_metric"
inputs = ["demo"]
[[transforms.demo_metrics.metrics]]
type = "counter"
field = "message"
name = "requests_total"

[sinks.otel]
type = "otlp"
inputs = ["demo"]
endpoint = "http://{closed}"
protocol = "http"
headers.authorization = "Bearer SECRET-otlp-bearer"
allow_plaintext_credentials = true

[sinks.nats_out]
type = "nats"
inputs = ["demo"]
url = "nats://{closed}"
subject = "out"
auth.token = "SECRET-nats-token"
allow_plaintext_credentials = true

[sinks.kafka_out]
type = "kafka"
inputs = ["demo"]
bootstrap_servers = "{closed}"
topic = "out"
sasl.mechanism = "PLAIN"
sasl.username = "weir"
sasl.password = "SECRET-kafka-password"
allow_plaintext_credentials = true
"#,
        data = dir.join("data").display(),
        grpc = free_addr(),
        http = free_addr(),
        exporter = free_addr(),
        root = root.display(),
        token = token.display(),
    )
}

/// Fails naming the output and the secret if `text` holds one.
fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{what} contains {s}:\n{text}");
    }
}

#[test]
fn no_credential_appears_in_logs_errors_validate_or_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let api = free_addr();
    let cfg = dir.path().join("secrets.toml");
    std::fs::write(&cfg, config(dir.path(), api)).unwrap();

    // `weir validate`, of the config and of the config with a mistake next to the secrets.
    let out = weir().arg("validate").arg(&cfg).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert_no_secret("weir validate", &text);
    let broken = dir.path().join("broken.toml");
    let bad = config(dir.path(), api)
        .replace("auth.user = \"weir\"\nauth.password = \"SECRET-es-password\"", "auth.user = \"weir\"\nauth.password = \"SECRET-es-password\"\nauth.pasword = \"SECRET-es-password\"")
        .replace("sasl.mechanism = \"PLAIN\"", "sasl.mechanism = \"PLAN\"");
    std::fs::write(&broken, bad).unwrap();
    let out = weir().arg("validate").arg(&broken).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "the broken config validated:\n{text}"
    );
    assert!(
        text.contains("pasword"),
        "the mistake is not named:\n{text}"
    );
    assert_no_secret("weir validate (broken config)", &text);

    // `weir run` at debug level: every component logs what it does, and every sink fails.
    let log = std::fs::File::create(dir.path().join("run.log")).unwrap();
    let child = weir()
        .env("WEIR_LOG", "debug")
        .args(["run", "--grace-period-secs", "2", "--config"])
        .arg(&cfg)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let log_text = || std::fs::read_to_string(dir.path().join("run.log")).unwrap_or_default();
    // Wait until the sinks have failed at least once (their errors are what could leak).
    let failed = wait_until(Duration::from_secs(30), || {
        let l = log_text();
        ["es", "rw", "otel", "nats_out", "kafka_out", "pods", "bus"]
            .iter()
            .all(|c| {
                l.contains(&format!("component={c}")) || l.contains(&format!("component_id={c}"))
            })
    });
    let mut served = String::new();
    for path in [
        "/health",
        "/metrics",
        "/api/graph",
        "/api/console/components",
        "/",
        "/console/app.js",
        "/console/style.css",
    ] {
        if let Ok((_, body)) = http_get(api, path) {
            served.push_str(&body);
        }
    }
    assert!(
        served.contains("kafka_out"),
        "the API did not answer:\n{served}"
    );
    // The console shows every component's configuration (so the search above saw it), each
    // credential redacted in place.
    let (_, components) = http_get(api, "/api/console/components").unwrap();
    let components: serde_json::Value = serde_json::from_str(&components).unwrap();
    let texts: Vec<(&str, &str)> = components["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let id = c["id"].as_str().unwrap();
            let text = c["config"]["text"].as_str();
            assert!(text.is_some(), "{id}'s configuration is not shown: {c}");
            (id, text.unwrap_or_default())
        })
        .collect();
    assert_eq!(texts.len(), 11, "{components}");
    let es = texts.iter().find(|(id, _)| *id == "es").unwrap().1;
    for line in [
        "password = \"**REDACTED**\"",
        "x-api-key = \"**REDACTED**\"",
        "user = \"weir\"",
    ] {
        assert!(es.lines().any(|l| l == line), "no `{line}` in:\n{es}");
    }
    assert_no_secret("the API", &served);
    sigterm(&child);
    let _ = wait_with_timeout(child, Duration::from_secs(30));
    let text = log_text();
    assert!(
        failed,
        "not every component logged (the test would prove nothing):\n{text}"
    );
    assert!(text.contains("DEBUG"), "not at debug level:\n{text}");
    assert_no_secret("the log of `weir run`", &text);
}

#[test]
fn credentials_for_a_plain_address_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let closed = free_addr();
    for (name, component) in [
        (
            "elasticsearch",
            format!("type = \"elasticsearch\"\ninputs = [\"demo\"]\nendpoints = [\"http://{closed}\"]\nauth.user = \"u\"\nauth.password = \"p\""),
        ),
        (
            "prometheus_remote_write",
            format!("type = \"prometheus_remote_write\"\ninputs = [\"m\"]\nendpoint = \"http://{closed}/w\"\nauth.strategy = \"bearer\"\nauth.token = \"t\""),
        ),
        (
            "otlp",
            format!("type = \"otlp\"\ninputs = [\"demo\"]\nendpoint = \"http://{closed}\"\nprotocol = \"http\"\nheaders.authorization = \"Bearer t\""),
        ),
        (
            "nats",
            format!("type = \"nats\"\ninputs = [\"demo\"]\nurl = \"nats://{closed}\"\nsubject = \"s\"\nauth.token = \"t\""),
        ),
        (
            "kafka",
            format!("type = \"kafka\"\ninputs = [\"demo\"]\nbootstrap_servers = \"{closed}\"\ntopic = \"t\"\nsasl.mechanism = \"PLAIN\"\nsasl.username = \"u\"\nsasl.password = \"p\""),
        ),
    ] {
        let config = format!(
            "data_dir = \"{}\"\n[api]\nenabled = false\n[sources.demo]\ntype = \"demo\"\nformat = \"json\"\n[transforms.m]\ntype = \"log_to_metric\"\ninputs = [\"demo\"]\n[[transforms.m.metrics]]\ntype = \"counter\"\nfield = \"status\"\nname = \"n\"\n[sinks.out]\n{component}\n",
            dir.path().join(name).display()
        );
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, &config).unwrap();
        let out = run_briefly(&path);
        assert!(
            out.contains("would be sent unencrypted") && out.contains("allow_plaintext_credentials"),
            "{name}: the plain credentials were not refused:\n{out}"
        );
        // Allowed, the component starts (and only warns).
        std::fs::write(&path, format!("{config}allow_plaintext_credentials = true\n")).unwrap();
        let out = run_briefly(&path);
        assert!(
            !out.contains("would be sent unencrypted") && out.contains("is sent unencrypted"),
            "{name}: allowed, the component did not start with a warning:\n{out}"
        );
    }
}

/// Runs `weir run` on `config` until it says whether it sends credentials unencrypted (or
/// exits); its output.
fn run_briefly(config: &Path) -> String {
    let log_path = config.with_extension("log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["run", "--grace-period-secs", "1", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let said = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait_until(Duration::from_secs(20), || said().contains("unencrypted"));
    sigterm(&child);
    let _ = wait_with_timeout(child, Duration::from_secs(20));
    said()
}
