//! The API over NATS (`[api.nats]`) against a real `nats-server` on an ephemeral loopback port,
//! with an agent whose HTTP API is off: `health`, `graph`, `metrics`, a tap (the protocol
//! itself and `weir tap --nats`), `weir top --nats` in a pseudo-terminal, and a `POST` that
//! reaches the router (`reload`, which reloads the agent's configuration).

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use weir_connect::nats::async_nats::{self, HeaderMap};

use crate::harness::{start_weir, stop_clean, wait_with_timeout, weir, weir_log};
use crate::nats::Server;
use crate::tap_top::{Screen, PTY_DRIVER};

const NODE: &str = "edge-1";

/// An agent (demo -> blackhole) with its HTTP API off and its API on NATS as `edge-1`.
fn agent(dir: &Path, url: &str) -> Child {
    let config = format!(
        r#"
data_dir = "{data}"

[api]
enabled = false

[api.nats]
url = "{url}"
node = "{NODE}"

[sources.demo]
type = "demo"
format = "json"
rate = 500

[sinks.out]
type = "blackhole"
inputs = ["demo"]
"#,
        data = dir.join("data").display()
    );
    start_weir(dir, "agent", &config, false)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn header(m: &async_nats::Message, k: &str) -> Option<String> {
    m.headers
        .as_ref()
        .and_then(|h| h.get(k))
        .map(|v| v.as_str().to_string())
}

/// A request with `Weir-*` headers; the first answer (retried while the agent connects).
async fn ask(
    client: &async_nats::Client,
    name: &str,
    headers: &[(&str, &str)],
) -> async_nats::Message {
    let mut h = HeaderMap::new();
    for (k, v) in headers {
        h.insert(*k, *v);
    }
    let subject = format!("weir.{NODE}.api.{name}");
    for _ in 0..120 {
        match client
            .request_with_headers(subject.clone(), h.clone(), "".into())
            .await
        {
            Ok(m) => return m,
            // No responders yet: the agent is still connecting.
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
    panic!("no answer on {subject}");
}

fn status(m: &async_nats::Message) -> u16 {
    header(m, "Weir-Status")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no Weir-Status: {m:?}"))
}

#[test]
fn an_agent_reached_only_by_nats_answers_health_graph_metrics_tap_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = Server::start(dir.path()) else {
        return;
    };
    let url = server.url();
    let child = agent(dir.path(), &url);
    let rt = runtime();
    rt.block_on(async {
        let client = async_nats::connect(&url).await.unwrap();

        // health: 200 with the same JSON as over HTTP, in one message.
        let m = ask(&client, "health", &[]).await;
        assert_eq!(status(&m), 200, "{}", weir_log(dir.path(), "agent"));
        assert_eq!(header(&m, "Weir-Stream"), None);
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["ok"], true, "{v}");
        assert!(v["uptime_secs"].is_u64(), "{v}");

        // graph (what `weir top` polls): both components, the demo's counters moving.
        let mut sent = 0;
        for _ in 0..100 {
            let m = ask(&client, "graph", &[]).await;
            assert_eq!(status(&m), 200);
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            let ids: Vec<&str> = v["components"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap())
                .collect();
            assert_eq!(ids, ["demo", "out"], "{v}");
            assert_eq!(v["edges"][0]["from"], "demo", "{v}");
            sent = v["components"][0]["sent_events"].as_u64().unwrap();
            if sent > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(sent > 0, "the demo sent nothing");

        // metrics: the Prometheus text, with its content type.
        let m = ask(&client, "metrics", &[]).await;
        assert_eq!(status(&m), 200);
        assert!(header(&m, "Content-Type")
            .unwrap()
            .starts_with("text/plain"));
        let text = String::from_utf8_lossy(&m.payload);
        assert!(
            text.lines()
                .any(|l| l.starts_with("weir_component_sent_events_total")
                    && l.contains("component_id=\"demo\"")),
            "{text}"
        );

        // A POST reaches the router: `graph` is GET only (405). `reload` reloads the agent's
        // configuration file, here with a sink added.
        let m = ask(&client, "graph", &[("Weir-Method", "POST")]).await;
        assert_eq!(status(&m), 405);
        let cfg = dir.path().join("agent.toml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        std::fs::write(
            &cfg,
            format!("{text}\n[sinks.more]\ntype = \"blackhole\"\ninputs = [\"demo\"]\n"),
        )
        .unwrap();
        let m = ask(&client, "reload", &[("Weir-Method", "POST")]).await;
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(status(&m), 200, "{v}");
        assert_eq!(v["summary"]["added"], serde_json::json!(["more"]), "{v}");
        let m = ask(&client, "graph", &[]).await;
        let v: Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(v["components"].as_array().map(Vec::len), Some(3), "{v}");
        // A bad query is the router's 400, as over HTTP.
        let m = ask(&client, "tap", &[("Weir-Query", "limit=0")]).await;
        assert_eq!(status(&m), 400);
        assert!(String::from_utf8_lossy(&m.payload).contains("limit"));

        // A tap with a limit: a first message naming the keep-alive subject, the events in
        // `more` messages, an `end`.
        let (messages, _) = tap(&client, "outputs_of=demo&limit=3", None).await;
        let first = &messages[0];
        assert_eq!(status(first), 200);
        assert!(first.payload.is_empty());
        let keepalive = header(first, "Weir-Keepalive").unwrap();
        assert!(
            keepalive.starts_with(&format!("weir.{NODE}.keepalive.")),
            "{keepalive}"
        );
        let last = messages.last().unwrap();
        assert_eq!(header(last, "Weir-Stream").as_deref(), Some("end"));
        for m in &messages[..messages.len() - 1] {
            assert_eq!(header(m, "Weir-Stream").as_deref(), Some("more"));
        }
        let body: Vec<u8> = messages.iter().flat_map(|m| m.payload.to_vec()).collect();
        let lines: Vec<Value> = String::from_utf8_lossy(&body)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        for l in &lines {
            assert_eq!(l["component"], "demo", "{l}");
            assert!(l["event"]["message"].is_string(), "{l}");
        }

        // A tap without a limit ends when the requester says `stop` on the keep-alive
        // subject.
        let (messages, events) = tap(&client, "outputs_of=demo", Some(20)).await;
        assert!(events >= 20, "{events}");
        assert_eq!(
            header(messages.last().unwrap(), "Weir-Stream").as_deref(),
            Some("end")
        );
    });

    // `weir tap --nats`: the same events as over HTTP.
    let out = wait_with_timeout(
        weir()
            .args(["tap", "--nats", &url, "--node", NODE])
            .args(["--outputs-of", "demo", "--limit", "5", "--format", "logfmt"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    for l in lines {
        assert!(l.starts_with("component=demo "), "{l}");
    }

    // A node no agent serves: said, exit 1.
    let out = wait_with_timeout(
        weir()
            .args(["tap", "--nats", &url, "--node", "nobody", "--limit", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no agent answers on weir.nobody.api.tap"),
        "{stderr}"
    );

    stop_clean(dir.path(), "agent", child);
    drop(server);
}

/// Taps over the raw protocol: every message until `end`; with `stop_after`, says `stop` on
/// the keep-alive subject once that many events came. Returns the messages and the events.
async fn tap(
    client: &async_nats::Client,
    query: &str,
    stop_after: Option<usize>,
) -> (Vec<async_nats::Message>, usize) {
    let inbox = client.new_inbox();
    let mut sub = client.subscribe(inbox.clone()).await.unwrap();
    let mut h = HeaderMap::new();
    h.insert("Weir-Query", query);
    client
        .publish_with_reply_and_headers(format!("weir.{NODE}.api.tap"), inbox, h, "".into())
        .await
        .unwrap();
    let mut messages = Vec::new();
    let mut events = 0;
    let mut stopped = false;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .expect("the tap went quiet")
            .unwrap();
        events += m.payload.iter().filter(|b| **b == b'\n').count();
        let end = header(&m, "Weir-Stream").as_deref() != Some("more");
        messages.push(m);
        if end {
            return (messages, events);
        }
        if !stopped && stop_after.is_some_and(|n| events >= n) {
            let k = header(&messages[0], "Weir-Keepalive").unwrap();
            client.publish(k, "stop".into()).await.unwrap();
            stopped = true;
        }
    }
}

#[test]
fn top_over_nats_shows_every_component_moving_and_quits_on_q() {
    let dir = tempfile::tempdir().unwrap();
    let Some(server) = Server::start(dir.path()) else {
        return;
    };
    let url = server.url();
    let child = agent(dir.path(), &url);
    let raw = dir.path().join("top.raw");
    let out = wait_with_timeout(
        std::process::Command::new("python3")
            .arg("-c")
            .arg(PTY_DRIVER)
            .arg(&raw)
            .arg("5")
            .args([env!("CARGO_BIN_EXE_weir"), "top", "--nats", &url])
            .args(["--node", NODE, "--interval", "0.5"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );
    let bytes = std::fs::read(&raw).unwrap_or_default();
    let mut screen = Screen::new(50, 200);
    let mut moving = std::collections::BTreeSet::new();
    let mut at = 0;
    let mut all = String::new();
    while at + 4 <= bytes.len() {
        let n = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let chunk = String::from_utf8_lossy(&bytes[at + 4..at + 4 + n]).into_owned();
        at += 4 + n;
        screen.feed(&chunk);
        all.push_str(&chunk);
        for l in screen.lines() {
            let t: Vec<&str> = l.split_whitespace().collect();
            if t.len() >= 5 && ["demo", "out"].contains(&t[0]) && (t[3] != "0" || t[4] != "0") {
                moving.insert(t[0].to_string());
            }
        }
    }
    assert_eq!(
        out.status.code(),
        Some(0),
        "weir top: {}\n{all:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(moving.len(), 2, "moving: {moving:?}\n{all:?}");
    assert!(all.contains(&format!("node {NODE}")), "{all:?}");
    assert!(
        all.ends_with("\x1b[?1049l"),
        "the terminal is not restored last"
    );
    stop_clean(dir.path(), "agent", child);
    drop(server);
}

/// The authorization example of docs/api.md, as it is written there, on a real nats-server:
/// the agent serves under its own user; a viewer reads health and graph but may not tap; an
/// operator taps (with `weir tap`, and by the raw protocol, keep-alive included).
#[test]
fn the_documented_authorization_lets_viewers_read_and_operators_tap() {
    let dir = tempfile::tempdir().unwrap();
    let Some(bin) = crate::harness::require(
        "nats-server",
        crate::harness::find_program("nats-server", &["/usr/sbin"]),
    ) else {
        return;
    };
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/api.md")).unwrap();
    let conf = doc
        .split("```conf\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/api.md has a ```conf block");
    let conf_path = dir.path().join("nats-server.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let addr = crate::harness::free_addr();
    let log = std::fs::File::create(dir.path().join("nats-server.log")).unwrap();
    let mut server = std::process::Command::new(bin)
        .arg("-c")
        .arg(&conf_path)
        .args(["-a", "127.0.0.1", "-p", &addr.port().to_string()])
        .env("AGENT_PASSWORD", "agent-secret")
        .env("VIEWER_PASSWORD", "viewer-secret")
        .env("OPERATOR_PASSWORD", "operator-secret")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    assert!(
        crate::harness::wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(addr).is_ok()
        }),
        "nats-server: {}",
        std::fs::read_to_string(dir.path().join("nats-server.log")).unwrap_or_default()
    );
    let url = format!("nats://{addr}");
    let node = "edge-17";
    let config = format!(
        r#"
data_dir = "{data}"

[api]
enabled = false

[api.nats]
url = "{url}"
node = "{node}"
auth.user = "edge-17"
auth.password = "agent-secret"
allow_plaintext_credentials = true

[sources.demo]
type = "demo"
format = "json"
rate = 500

[sinks.out]
type = "blackhole"
inputs = ["demo"]
"#,
        data = dir.path().join("data").display()
    );
    let child = start_weir(dir.path(), "agent", &config, false);
    let as_user = |user: &'static str, password: &'static str| {
        async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
            .connect(url.clone())
    };

    let rt = runtime();
    rt.block_on(async {
        let viewer = as_user("grafana", "viewer-secret").await.unwrap();
        let subject = |name: &str| format!("weir.{node}.api.{name}");
        // The viewer reads health and graph (retried while the agent connects).
        let mut health = None;
        for _ in 0..120 {
            if let Ok(m) = viewer.request(subject("health"), "".into()).await {
                health = Some(m);
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let health = health.unwrap_or_else(|| panic!("{}", weir_log(dir.path(), "agent")));
        assert_eq!(status(&health), 200);
        let graph = viewer.request(subject("graph"), "".into()).await.unwrap();
        assert_eq!(status(&graph), 200);
        // ... but may not publish to the tap: the server refuses it, the agent never sees it.
        let tap = tokio::time::timeout(
            Duration::from_secs(3),
            viewer.request(subject("tap"), "".into()),
        )
        .await;
        assert!(
            !matches!(tap, Ok(Ok(_))),
            "the viewer tapped: {:?}",
            tap.map(|r| r.map(|m| m.payload))
        );

        // The operator taps by the raw protocol and stops it on the keep-alive subject.
        let operator = as_user("oncall", "operator-secret").await.unwrap();
        let inbox = operator.new_inbox();
        let mut sub = operator.subscribe(inbox.clone()).await.unwrap();
        let mut h = HeaderMap::new();
        h.insert("Weir-Query", "outputs_of=demo");
        operator
            .publish_with_reply_and_headers(subject("tap"), inbox, h, "".into())
            .await
            .unwrap();
        let first = sub.next().await.unwrap();
        assert_eq!(status(&first), 200);
        let keepalive = header(&first, "Weir-Keepalive").unwrap();
        let events = sub.next().await.unwrap();
        assert!(!events.payload.is_empty());
        operator.publish(keepalive, "stop".into()).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), sub.next())
                .await
                .expect("the tap ends on stop")
                .unwrap();
            if header(&m, "Weir-Stream").as_deref() == Some("end") {
                break;
            }
        }
    });

    // `weir tap` as the operator, the password from the environment.
    let out = wait_with_timeout(
        weir()
            .args(["tap", "--nats", &url, "--node", node])
            .args(["--nats-allow-plaintext-credentials", "--limit", "3"])
            .env("WEIR_NATS_USER", "oncall")
            .env("WEIR_NATS_PASSWORD", "operator-secret")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
        Duration::from_secs(60),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);

    stop_clean(dir.path(), "agent", child);
    let _ = server.kill();
    let _ = server.wait();
}
