//! The `nats` source and sink against the real `nats-server` (JetStream on, a temporary store
//! directory, an ephemeral loopback port), with the real `weir` binary on both sides: an agent
//! (stdin -> nats sink) and an aggregator (nats source -> file sink).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use weir_connect::nats::async_nats;
use weir_connect::nats::async_nats::jetstream;

use crate::harness::{
    find_program, free_addr, lines, metric, require, sigterm, start_weir, stop_clean, wait_until,
    wait_with_timeout, weir_log,
};

fn nats_server_bin() -> PathBuf {
    for p in ["/usr/sbin/nats-server", "/usr/bin/nats-server"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("nats-server")
}

/// A `nats-server -js` on a loopback port with its store in a temporary directory (also used
/// by `api_nats.rs`).
pub(crate) struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    store: PathBuf,
    log: PathBuf,
}

impl Server {
    /// `None` without a nats-server: the test is skipped, or fails under CI.
    pub(crate) fn start(dir: &Path) -> Option<Self> {
        require("nats-server", find_program("nats-server", &["/usr/sbin"]))?;
        let mut s = Server {
            child: None,
            addr: free_addr(),
            store: dir.join("nats-store"),
            log: dir.join("nats-server.log"),
        };
        s.spawn();
        Some(s)
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(nats_server_bin())
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.addr.port().to_string())
            .arg("-sd")
            .arg(&self.store)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        assert!(
            wait_until(Duration::from_secs(10), || TcpStream::connect(self.addr)
                .is_ok()),
            "nats-server listens: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Stops the server (SIGTERM: it flushes its store), waits for it to exit.
    fn stop(&mut self) {
        if let Some(c) = self.child.take() {
            sigterm(&c);
            wait_with_timeout(c, Duration::from_secs(20));
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn client(url: &str) -> async_nats::Client {
    async_nats::connect(url)
        .await
        .expect("connect to nats-server")
}

async fn create_stream(js: &jetstream::Context, name: &str, subjects: &str) {
    js.create_stream(jetstream::stream::Config {
        name: name.to_string(),
        subjects: vec![subjects.to_string()],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("create stream");
}

/// Every message of `stream`, in order: (subject, payload).
async fn read_stream(js: &jetstream::Context, stream: &str) -> Vec<(String, String)> {
    let s = js.get_stream(stream).await.unwrap();
    let total = s.get_info().await.unwrap().state.messages as usize;
    let consumer: jetstream::consumer::PullConsumer = s
        .create_consumer(jetstream::consumer::pull::Config {
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut msgs = consumer.messages().await.unwrap();
    use futures::StreamExt;
    while out.len() < total {
        let m = tokio::time::timeout(Duration::from_secs(10), msgs.next())
            .await
            .expect("stream read in time")
            .unwrap()
            .unwrap();
        out.push((
            m.subject.to_string(),
            String::from_utf8_lossy(&m.payload).into_owned(),
        ));
    }
    out
}

async fn consumer_info(js: &jetstream::Context, stream: &str, name: &str) -> (u64, usize, u64) {
    let mut c: jetstream::consumer::PullConsumer = js
        .get_stream(stream)
        .await
        .unwrap()
        .get_consumer(name)
        .await
        .unwrap();
    let i = c.info().await.unwrap();
    (
        i.ack_floor.stream_sequence,
        i.num_ack_pending,
        i.num_pending,
    )
}

fn aggregator_config(dir: &Path, url: &str, source: &str, api: Option<SocketAddr>) -> String {
    let api = match api {
        Some(a) => format!("address = \"{a}\""),
        None => "enabled = false".into(),
    };
    format!(
        r#"
data_dir = "{data}"
[api]
{api}
[sources.bus]
type = "nats"
url = "{url}"
decoding.codec = "json"
{source}
[sinks.out]
type = "file"
inputs = ["bus"]
path = "{out}"
"#,
        data = dir.join("agg-data").display(),
        out = dir.join("out.log").display(),
    )
}

fn agent_config(dir: &Path, url: &str, sink: &str, api: Option<SocketAddr>) -> String {
    let api = match api {
        Some(a) => format!("address = \"{a}\""),
        None => "enabled = false".into(),
    };
    format!(
        r#"
data_dir = "{data}"
[api]
{api}
[sources.in]
type = "stdin"
decoding.codec = "json"
[sinks.bus]
type = "nats"
inputs = ["in"]
url = "{url}"
subject = "logs.{{{{ service }}}}"
{sink}
"#,
        data = dir.join("agent-data").display(),
    )
}

fn event_line(i: usize) -> String {
    let service = ["web", "db", "cache"][i % 3];
    format!(r#"{{"service":"{service}","n":{i},"message":"request {i} served"}}"#)
}

/// Parses the aggregator's output: n -> (subject, whole event), and the count of each n.
/// A last line without its newline is being written: it is left for the next look.
fn parse_out(path: &Path) -> (BTreeMap<u64, serde_json::Value>, BTreeMap<u64, usize>) {
    let mut by_n = BTreeMap::new();
    let mut counts = BTreeMap::new();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    for l in complete.lines() {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let n = v["n"].as_u64().unwrap();
        *counts.entry(n).or_insert(0) += 1;
        by_n.insert(n, v);
    }
    (by_n, counts)
}

#[test]
fn jetstream_round_trip_agent_to_aggregator_exact_events() {
    const N: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(server) = Server::start(d) else {
        return;
    };
    let rt = runtime();
    let _enter = rt.enter();
    let js = rt.block_on(async { jetstream::new(client(&server.url()).await) });
    rt.block_on(create_stream(&js, "LOGS", "logs.>"));

    let agg = start_weir(
        d,
        "aggregator",
        &aggregator_config(
            d,
            &server.url(),
            "jetstream = true\nstream = \"LOGS\"\nconsumer = \"agg\"\nacknowledgements = true",
            None,
        ),
        false,
    );
    let mut agent = start_weir(
        d,
        "agent",
        &agent_config(d, &server.url(), "jetstream = true", None),
        true,
    );
    {
        let mut stdin = agent.stdin.take().unwrap();
        for i in 0..N {
            writeln!(stdin, "{}", event_line(i)).unwrap();
        }
    }
    let out = wait_with_timeout(agent, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", weir_log(d, "agent"));

    let out_path = d.join("out.log");
    assert!(
        wait_until(Duration::from_secs(60), || lines(&out_path).len() >= N),
        "aggregator wrote {} of {N}: {}",
        lines(&out_path).len(),
        weir_log(d, "aggregator")
    );
    stop_clean(d, "aggregator", agg);
    let (by_n, counts) = parse_out(&out_path);
    assert_eq!(lines(&out_path).len(), N, "no duplicates without failures");
    assert_eq!(counts.len(), N);
    for i in 0..N {
        let v = &by_n[&(i as u64)];
        let sent: serde_json::Value = serde_json::from_str(&event_line(i)).unwrap();
        for k in ["service", "n", "message"] {
            assert_eq!(v[k], sent[k], "event {i} field {k}");
        }
        assert_eq!(
            v["subject"],
            format!("logs.{}", sent["service"].as_str().unwrap()),
            "event {i} carries its subject"
        );
        assert!(
            v["headers"]["Nats-Msg-Id"].as_str().is_some(),
            "event {i} carries the message's headers: {v}"
        );
    }
    // Everything was acknowledged to the server.
    let (floor, ack_pending, pending) = rt.block_on(consumer_info(&js, "LOGS", "agg"));
    assert_eq!((floor, ack_pending, pending), (N as u64, 0, 0));
}

#[test]
fn core_sink_and_queue_group_source_carry_exact_messages_and_headers() {
    const N: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(server) = Server::start(d) else {
        return;
    };
    let rt = runtime();
    let _enter = rt.enter();
    let nc = rt.block_on(client(&server.url()));

    // Sink: stdin -> core NATS, read by a plain subscriber.
    let mut sub = rt.block_on(nc.subscribe("logs.>")).unwrap();
    rt.block_on(nc.flush()).unwrap();
    let mut agent = start_weir(
        d,
        "agent",
        &agent_config(d, &server.url(), "encoding.codec = \"json\"", None),
        true,
    );
    {
        let mut stdin = agent.stdin.take().unwrap();
        for i in 0..N {
            writeln!(stdin, "{}", event_line(i)).unwrap();
        }
    }
    let out = wait_with_timeout(agent, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", weir_log(d, "agent"));
    let got: Vec<(String, String)> = rt.block_on(async {
        use futures::StreamExt;
        let mut v = Vec::new();
        while v.len() < N {
            let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .expect("all messages arrive")
                .unwrap();
            v.push((
                m.subject.to_string(),
                String::from_utf8_lossy(&m.payload).into_owned(),
            ));
        }
        v
    });
    for (i, (subject, payload)) in got.iter().enumerate() {
        let sent: serde_json::Value = serde_json::from_str(&event_line(i)).unwrap();
        assert_eq!(
            subject,
            &format!("logs.{}", sent["service"].as_str().unwrap())
        );
        let p: serde_json::Value = serde_json::from_str(payload).unwrap();
        assert_eq!(p, sent, "message {i} is the event, in order");
    }

    // Source: a core subscription in a queue group -> file.
    let agg = start_weir(
        d,
        "aggregator",
        &aggregator_config(
            d,
            &server.url(),
            "subject = \"app.>\"\nqueue_group = \"aggregators\"",
            None,
        ),
        false,
    );
    let out_path = d.join("out.log");
    // Core NATS keeps nothing: probe until the subscription is live.
    let live = wait_until(Duration::from_secs(20), || {
        rt.block_on(async {
            nc.publish("app.probe", r#"{"n":999999}"#.into())
                .await
                .unwrap();
            nc.flush().await.unwrap();
        });
        !lines(&out_path).is_empty()
    });
    assert!(live, "subscription live: {}", weir_log(d, "aggregator"));
    rt.block_on(async {
        for i in 0..N {
            let mut h = async_nats::HeaderMap::new();
            h.insert("X-Tenant", format!("t{}", i % 2).as_str());
            nc.publish_with_headers(format!("app.{i}"), h, event_line(i).into())
                .await
                .unwrap();
        }
        nc.flush().await.unwrap();
    });
    assert!(
        wait_until(Duration::from_secs(30), || {
            parse_out(&out_path)
                .0
                .keys()
                .filter(|n| **n < 999_999)
                .count()
                >= N
        }),
        "{}",
        weir_log(d, "aggregator")
    );
    stop_clean(d, "aggregator", agg);
    let (by_n, counts) = parse_out(&out_path);
    for i in 0..N {
        let v = &by_n[&(i as u64)];
        assert_eq!(counts[&(i as u64)], 1);
        assert_eq!(v["message"], format!("request {i} served"));
        assert_eq!(v["subject"], format!("app.{i}"));
        assert_eq!(v["headers"]["X-Tenant"], format!("t{}", i % 2));
    }
}

#[test]
fn jetstream_source_killed_mid_stream_loses_nothing_and_redelivers_only_unacked() {
    const N: usize = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(server) = Server::start(d) else {
        return;
    };
    let rt = runtime();
    let _enter = rt.enter();
    let js = rt.block_on(async { jetstream::new(client(&server.url()).await) });
    rt.block_on(async {
        create_stream(&js, "LOGS", "logs.>").await;
        let mut acks = Vec::new();
        for i in 0..N {
            acks.push(js.publish("logs.web", event_line(i).into()).await.unwrap());
            if acks.len() == 1000 {
                for a in acks.drain(..) {
                    a.await.unwrap();
                }
            }
        }
        for a in acks {
            a.await.unwrap();
        }
    });
    let source = "jetstream = true\nstream = \"LOGS\"\nconsumer = \"agg\"\nacknowledgements = true\nack_wait_secs = 2\nbatch_size = 200";
    let cfg = aggregator_config(d, &server.url(), source, None);
    let out_path = d.join("out.log");
    let mut agg = start_weir(d, "aggregator", &cfg, false);
    assert!(
        wait_until(Duration::from_secs(60), || lines(&out_path).len() >= 3000),
        "{}",
        weir_log(d, "aggregator")
    );
    agg.kill().unwrap(); // SIGKILL: no chance to acknowledge anything more.
    agg.wait().unwrap();
    let written_before = lines(&out_path).len();
    let (floor, ack_pending, _) = rt.block_on(consumer_info(&js, "LOGS", "agg"));
    assert!(
        written_before < N,
        "killed mid-stream ({written_before} of {N} written)"
    );

    let agg = start_weir(d, "aggregator", &cfg, false);
    assert!(
        wait_until(Duration::from_secs(90), || parse_out(&out_path).1.len()
            >= N),
        "after restart: {} distinct of {N}: {}",
        parse_out(&out_path).1.len(),
        weir_log(d, "aggregator")
    );
    assert!(
        wait_until(Duration::from_secs(20), || rt
            .block_on(consumer_info(&js, "LOGS", "agg"))
            == (N as u64, 0, 0)),
        "everything acknowledged after the restart"
    );
    stop_clean(d, "aggregator", agg);
    let (by_n, counts) = parse_out(&out_path);
    assert_eq!(
        by_n.keys().copied().collect::<BTreeSet<_>>(),
        (0..N as u64).collect(),
        "every event arrived"
    );
    let duplicates: usize = counts.values().map(|c| c - 1).sum();
    // Only messages delivered and not acknowledged at the kill can come twice; everything at
    // or below the ack floor never does.
    assert!(
        duplicates <= ack_pending,
        "{duplicates} duplicates, but only {ack_pending} messages were unacknowledged at the kill"
    );
    for (n, c) in &counts {
        if *c > 1 {
            assert!(
                *n >= floor,
                "event {n} (stream sequence {}) was acknowledged (floor {floor}) yet came again",
                n + 1
            );
        }
    }
    assert_eq!(lines(&out_path).len(), N + duplicates);
}

#[test]
fn jetstream_sink_survives_a_server_restart_without_loss() {
    const N: usize = 4000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(mut server) = Server::start(d) else {
        return;
    };
    let rt = runtime();
    let _enter = rt.enter();
    let url = server.url();
    let js = rt.block_on(async { jetstream::new(client(&url).await) });
    rt.block_on(create_stream(&js, "LOGS", "logs.>"));
    let api = free_addr();
    let mut agent = start_weir(
        d,
        "agent",
        &agent_config(
            d,
            &url,
            "jetstream = true\nrequest.timeout_secs = 1",
            Some(api),
        ),
        true,
    );
    let mut stdin = agent.stdin.take().unwrap();
    for i in 0..N / 2 {
        writeln!(stdin, "{}", event_line(i)).unwrap();
    }
    stdin.flush().unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || metric(
            api,
            "weir_component_sent_events_total",
            "bus"
        )
        .is_some_and(|v| v >= (N / 4) as f64)),
        "{}",
        weir_log(d, "agent")
    );
    server.stop();
    // Written while the server is down: the sink holds and retries.
    for i in N / 2..N {
        writeln!(stdin, "{}", event_line(i)).unwrap();
    }
    stdin.flush().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    server.spawn();
    assert!(
        wait_until(Duration::from_secs(30), || metric(
            api,
            "weir_nats_reconnects_total",
            "bus"
        )
        .is_some_and(|v| v >= 1.0)),
        "the reconnect is reported: {}",
        weir_log(d, "agent")
    );
    drop(stdin);
    let out = wait_with_timeout(agent, Duration::from_secs(90));
    assert_eq!(out.status.code(), Some(0), "{}", weir_log(d, "agent"));

    let js = rt.block_on(async { jetstream::new(client(&url).await) });
    let got = rt.block_on(read_stream(&js, "LOGS"));
    let mut seen = BTreeSet::new();
    for (_, payload) in &got {
        let v: serde_json::Value = serde_json::from_str(payload).unwrap();
        assert!(
            seen.insert(v["n"].as_u64().unwrap()),
            "stored twice (deduplication by Nats-Msg-Id failed): {payload}"
        );
    }
    assert_eq!(seen, (0..N as u64).collect(), "nothing lost");
}

/// Core NATS with the server down: the sink holds its batch until the client has written it
/// (flush), so nothing is counted as sent meanwhile and the stdin source waits; when the
/// server is back, everything goes out and Weir stops cleanly.
#[test]
fn core_sink_holds_batches_while_the_server_is_down() {
    const N: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(mut server) = Server::start(d) else {
        return;
    };
    let api = free_addr();
    let mut agent = start_weir(
        d,
        "core",
        &agent_config(d, &server.url(), "request.timeout_secs = 1", Some(api)),
        true,
    );
    let mut stdin = agent.stdin.take().unwrap();
    let sent = || metric(api, "weir_component_sent_events_total", "bus").unwrap_or(0.0);
    for i in 0..N / 2 {
        writeln!(stdin, "{}", event_line(i)).unwrap();
    }
    stdin.flush().unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || sent() >= (N / 2) as f64),
        "{}",
        weir_log(d, "core")
    );
    server.stop();
    for i in N / 2..N {
        writeln!(stdin, "{}", event_line(i)).unwrap();
    }
    stdin.flush().unwrap();
    // The flush fails (no server): the batch is held, not counted as sent.
    assert!(
        wait_until(Duration::from_secs(30), || {
            let log = weir_log(d, "core");
            log.contains("cannot flush to NATS")
        }),
        "the sink did not wait for the server: {}",
        weir_log(d, "core")
    );
    assert_eq!(sent(), (N / 2) as f64, "{}", weir_log(d, "core"));
    server.spawn();
    drop(stdin);
    assert!(
        wait_until(Duration::from_secs(60), || sent() >= N as f64
            || agent.try_wait().ok().flatten().is_some()),
        "{}",
        weir_log(d, "core")
    );
    let out = wait_with_timeout(agent, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", weir_log(d, "core"));
    assert!(
        weir_log(d, "core").contains("component=bus kind=\"sink\" received=300 sent=300"),
        "{}",
        weir_log(d, "core")
    );
}

#[test]
fn undecodable_jetstream_message_is_counted_logged_and_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(server) = Server::start(d) else {
        return;
    };
    let rt = runtime();
    let _enter = rt.enter();
    let js = rt.block_on(async { jetstream::new(client(&server.url()).await) });
    rt.block_on(async {
        create_stream(&js, "LOGS", "logs.>").await;
        for p in [event_line(0), "{not json".to_string(), event_line(2)] {
            js.publish("logs.web", p.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
    let api = free_addr();
    let agg = start_weir(
        d,
        "aggregator",
        &aggregator_config(
            d,
            &server.url(),
            "jetstream = true\nstream = \"LOGS\"\nconsumer = \"agg\"\nacknowledgements = true\nack_wait_secs = 1",
            Some(api),
        ),
        false,
    );
    let out_path = d.join("out.log");
    assert!(
        wait_until(Duration::from_secs(30), || lines(&out_path).len() >= 2),
        "{}",
        weir_log(d, "aggregator")
    );
    assert!(
        wait_until(Duration::from_secs(10), || rt
            .block_on(consumer_info(&js, "LOGS", "agg"))
            == (3, 0, 0)),
        "all three acknowledged, the bad one included"
    );
    // Past ack_wait: nothing comes back.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        metric(api, "weir_component_errors_total", "bus"),
        Some(1.0),
        "the bad message is counted once"
    );
    assert_eq!(
        metric(api, "weir_nats_redelivered_total", "bus"),
        None,
        "nothing was delivered twice"
    );
    stop_clean(d, "aggregator", agg);
    let (by_n, _) = parse_out(&out_path);
    assert_eq!(by_n.keys().copied().collect::<Vec<_>>(), vec![0, 2]);
    assert_eq!(lines(&out_path).len(), 2);
    let log = weir_log(d, "aggregator");
    assert!(
        log.contains("logs.web") && log.contains("stream sequence 2"),
        "the error names the subject and stream sequence: {log}"
    );
}
