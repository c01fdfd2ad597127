//! The `kafka` source and sink against a real Kafka-protocol broker started here on an
//! ephemeral loopback port: `tansu` (a Kafka-API-compatible broker in Rust, in-memory storage;
//! `scripts/install-test-deps.sh` builds it into /var/tmp/tansu), with the real `weir` binary on both sides: an
//! agent (stdin -> kafka sink) and aggregators (kafka source -> file sink). The tests' own
//! producer and readers are librdkafka clients (rdkafka), like any Kafka application.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientConfig;
use weir_connect::kafka::rdkafka;

use crate::harness::{
    find_program, free_addr, lines, metric, require, start_weir, stop_clean, wait_until,
    wait_with_timeout, weir_log,
};

/// `tansu` on PATH, else where `scripts/install-test-deps.sh` installs it. Without it the tests
/// are skipped, or fail under CI.
fn tansu_bin() -> PathBuf {
    let installed = Path::new("/var/tmp/tansu/bin/tansu");
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("tansu"))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| installed.to_path_buf())
}

/// A tansu broker with in-memory storage on a loopback port, stopped on drop.
struct Broker {
    child: Option<Child>,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Broker {
    fn start(dir: &Path) -> Option<Self> {
        require("tansu", find_program("tansu", &["/var/tmp/tansu/bin"]))?;
        let addr = free_addr();
        // tansu reads a `.env` in its working directory: run it from an empty one.
        let cwd = dir.join("tansu");
        std::fs::create_dir_all(&cwd).unwrap();
        let log = File::create(dir.join("tansu.log")).unwrap();
        let url = format!("tcp://{addr}");
        let child = Command::new(tansu_bin())
            .current_dir(&cwd)
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .env_remove("STORAGE_ENGINE")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "start {} ({e}); scripts/install-test-deps.sh installs it: cargo install tansu --version 0.6.0 --features dynostore --root /var/tmp/tansu",
                    tansu_bin().display()
                )
            });
        let b = Broker {
            child: Some(child),
            addr,
            dir: dir.to_path_buf(),
        };
        assert!(
            wait_until(Duration::from_secs(20), || TcpStream::connect(addr).is_ok()),
            "tansu listens: {}",
            b.log()
        );
        Some(b)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("tansu.log")).unwrap_or_default()
    }

    fn servers(&self) -> String {
        self.addr.to_string()
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        let out = Command::new(tansu_bin())
            .current_dir(self.dir.join("tansu"))
            .args(["topic", "create", name, "--partitions"])
            .arg(partitions.to_string())
            .arg("--broker")
            .arg(format!("tcp://{}", self.addr))
            .output()
            .expect("run tansu topic create");
        assert!(
            out.status.success(),
            "tansu topic create {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Broker {
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

fn producer(servers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("linger.ms", "5")
        .create()
        .expect("create the test producer")
}

/// Produces `payloads` to `topic`, partition `i % partitions`, and waits for every report.
fn produce(
    rt: &tokio::runtime::Runtime,
    servers: &str,
    topic: &str,
    partitions: i32,
    payloads: &[String],
) {
    let p = producer(servers);
    rt.block_on(async {
        for chunk in payloads.chunks(1000).enumerate() {
            let (c, chunk) = chunk;
            let mut waiting = Vec::new();
            for (j, payload) in chunk.iter().enumerate() {
                let i = c * 1000 + j;
                let rec = FutureRecord::<(), str>::to(topic)
                    .payload(payload.as_str())
                    .partition(i as i32 % partitions);
                waiting.push(
                    p.send_result(rec)
                        .map_err(|(e, _)| e)
                        .expect("queue a record"),
                );
            }
            for w in waiting {
                w.await.unwrap().map_err(|(e, _)| e).expect("record stored");
            }
        }
    });
}

/// Every record of `topic` (all partitions, from the start): (partition, offset, key,
/// headers, payload).
type Record = (i32, i64, Option<String>, BTreeMap<String, String>, String);

fn read_topic(servers: &str, topic: &str, partitions: i32, expect: usize) -> Vec<Record> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", "weir-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while out.len() < expect && std::time::Instant::now() < deadline {
        let Some(m) = c.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("read a record");
        let mut headers = BTreeMap::new();
        if let Some(h) = m.headers() {
            use rdkafka::message::Headers;
            for hd in h.iter() {
                headers.insert(
                    hd.key.to_string(),
                    String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        out.push((
            m.partition(),
            m.offset(),
            m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
            headers,
            String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
        ));
    }
    out
}

/// The group's committed offset per partition (-1001, librdkafka's "invalid", when none).
fn committed(servers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", servers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("fetch committed offsets");
    (0..partitions)
        .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o,
            _ => -1001,
        })
        .collect()
}

fn event_line(i: usize) -> String {
    let service = ["web", "db", "cache"][i % 3];
    format!(
        r#"{{"service":"{service}","n":{i},"meta":{{"tenant":"t{}"}},"message":"request {i} served"}}"#,
        i % 2
    )
}

fn aggregator_config(
    dir: &Path,
    name: &str,
    servers: &str,
    source: &str,
    api: Option<SocketAddr>,
) -> String {
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
type = "kafka"
bootstrap_servers = "{servers}"
auto_offset_reset = "earliest"
decoding.codec = "json"
acknowledgements = true
{source}
[sinks.out]
type = "file"
inputs = ["bus"]
path = "{out}"
"#,
        data = dir.join(format!("{name}-data")).display(),
        out = dir.join(format!("{name}.out")).display(),
    )
}

fn agent_config(dir: &Path, servers: &str, sink: &str) -> String {
    format!(
        r#"
data_dir = "{data}"
[api]
enabled = false
[sources.in]
type = "stdin"
decoding.codec = "json"
[sinks.bus]
type = "kafka"
inputs = ["in"]
bootstrap_servers = "{servers}"
{sink}
"#,
        data = dir.join("agent-data").display(),
    )
}

/// Runs an agent that produces `n` event lines with `sink` options, to completion.
fn run_agent(dir: &Path, servers: &str, sink: &str, n: usize) {
    let mut agent = start_weir(dir, "agent", &agent_config(dir, servers, sink), true);
    {
        let mut stdin = agent.stdin.take().unwrap();
        for i in 0..n {
            writeln!(stdin, "{}", event_line(i)).unwrap();
        }
    }
    let out = wait_with_timeout(agent, Duration::from_secs(90));
    assert_eq!(out.status.code(), Some(0), "{}", weir_log(dir, "agent"));
}

/// An aggregator's output: n -> every copy of the event written.
fn parse_out(path: &Path) -> BTreeMap<u64, Vec<serde_json::Value>> {
    let mut by_n: BTreeMap<u64, Vec<serde_json::Value>> = BTreeMap::new();
    for l in lines(path) {
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        by_n.entry(v["n"].as_u64().unwrap()).or_default().push(v);
    }
    by_n
}

#[test]
fn round_trip_agent_to_kafka_to_aggregator_exact_events() {
    const N: usize = 3000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(broker) = Broker::start(d) else {
        return;
    };
    for s in ["web", "db", "cache"] {
        broker.create_topic(&format!("logs-{s}"), 2);
    }
    let servers = broker.servers();
    run_agent(
        d,
        &servers,
        "topic = \"logs-{{ service }}\"\nkey_field = \"service\"\nheaders_key = \"meta\"",
        N,
    );

    let agg = start_weir(
        d,
        "agg",
        &aggregator_config(
            d,
            "agg",
            &servers,
            "group_id = \"aggregators\"\ntopics = [\"^logs-.*\"]\ncommit_interval_ms = 200",
            None,
        ),
        false,
    );
    let out = d.join("agg.out");
    assert!(
        wait_until(Duration::from_secs(90), || lines(&out).len() >= N),
        "aggregator wrote {} of {N}: {}\n{}",
        lines(&out).len(),
        weir_log(d, "agg"),
        broker.log()
    );
    stop_clean(d, "agg", agg);
    let by_n = parse_out(&out);
    assert_eq!(lines(&out).len(), N, "no duplicates without failures");
    assert_eq!(by_n.len(), N);
    let mut high = BTreeMap::new();
    for i in 0..N {
        let v = &by_n[&(i as u64)][0];
        let sent: serde_json::Value = serde_json::from_str(&event_line(i)).unwrap();
        for k in ["service", "n", "message", "meta"] {
            assert_eq!(v[k], sent[k], "event {i} field {k}");
        }
        let service = sent["service"].as_str().unwrap();
        assert_eq!(v["topic"], format!("logs-{service}"), "event {i}: {v}");
        assert_eq!(v["message_key"], service, "the key is the service field");
        assert_eq!(
            v["headers"]["tenant"], sent["meta"]["tenant"],
            "event {i}: {v}"
        );
        let (p, o) = (
            v["partition"].as_i64().unwrap(),
            v["offset"].as_i64().unwrap(),
        );
        let h = high
            .entry((v["topic"].as_str().unwrap().to_string(), p))
            .or_insert(-1);
        *h = (*h).max(o);
    }
    // Everything read was committed: the group's offset is one past the last record read.
    for s in ["web", "db", "cache"] {
        let topic = format!("logs-{s}");
        let want: Vec<i64> = (0..2)
            .map(|p| high.get(&(topic.clone(), p)).map_or(-1001, |h| h + 1))
            .collect();
        assert_eq!(
            committed(&servers, "aggregators", &topic, 2),
            want,
            "{topic}"
        );
    }
}

#[test]
fn compression_options_deliver_the_same_records() {
    const N: usize = 500;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(broker) = Broker::start(d) else {
        return;
    };
    let servers = broker.servers();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("c-{codec}");
        broker.create_topic(&topic, 1);
        run_agent(
            d,
            &servers,
            &format!("topic = \"{topic}\"\ncompression = \"{codec}\"\nencoding.codec = \"json\""),
            N,
        );
        let got = read_topic(&servers, &topic, 1, N);
        assert_eq!(got.len(), N, "{codec}: {}", weir_log(d, "agent"));
        for (i, (_, offset, _, _, payload)) in got.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(payload).unwrap();
            let sent: serde_json::Value = serde_json::from_str(&event_line(i)).unwrap();
            assert_eq!(v, sent, "{codec}: record {i} is the event, in order");
            assert_eq!(*offset, i as i64, "{codec}");
        }
    }
}

#[test]
fn aggregator_killed_mid_stream_resumes_from_committed_offsets_without_loss() {
    const N: usize = 20_000;
    const PARTITIONS: i32 = 3;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(broker) = Broker::start(d) else {
        return;
    };
    broker.create_topic("logs", PARTITIONS as u32);
    let servers = broker.servers();
    let rt = runtime();
    let payloads: Vec<String> = (0..N).map(event_line).collect();
    // Half the stream now, the rest while the aggregator is dead: a fast aggregator may have
    // written everything produced before its first commit, and the kill must still come
    // mid-stream. The cut is a multiple of PARTITIONS, so every record keeps the partition
    // of its index.
    const FIRST: usize = (N / 2) / PARTITIONS as usize * PARTITIONS as usize;
    produce(&rt, &servers, "logs", PARTITIONS, &payloads[..FIRST]);

    let cfg = aggregator_config(
        d,
        "agg",
        &servers,
        "group_id = \"agg\"\ntopics = [\"logs\"]\ncommit_interval_ms = 100\nsession_timeout_ms = 6000\nbatch_size = 200",
        None,
    );
    let out = d.join("agg.out");
    let mut agg = start_weir(d, "agg", &cfg, false);
    // Kill it once it has written some and committed some (the first commit may come after
    // thousands of events).
    assert!(
        wait_until(Duration::from_secs(60), || lines(&out).len() >= 2000
            && committed(&servers, "agg", "logs", PARTITIONS)
                .iter()
                .any(|o| *o > 0)),
        "{}",
        weir_log(d, "agg")
    );
    agg.kill().unwrap(); // SIGKILL: no chance to commit anything more.
    agg.wait().unwrap();
    let written_before = lines(&out).len();
    assert!(
        written_before < N,
        "killed mid-stream ({written_before} of {N} written)"
    );
    let at_kill = committed(&servers, "agg", "logs", PARTITIONS);
    assert!(
        at_kill.iter().any(|o| *o > 0),
        "offsets were committed while running: {at_kill:?}"
    );
    produce(&rt, &servers, "logs", PARTITIONS, &payloads[FIRST..]);

    let agg = start_weir(d, "agg", &cfg, false);
    assert!(
        wait_until(Duration::from_secs(120), || parse_out(&out).len() >= N),
        "after restart: {} distinct of {N}: {}",
        parse_out(&out).len(),
        weir_log(d, "agg")
    );
    stop_clean(d, "agg", agg);
    let by_n = parse_out(&out);
    assert_eq!(
        by_n.keys().copied().collect::<BTreeSet<_>>(),
        (0..N as u64).collect(),
        "every event arrived"
    );
    let mut duplicates = 0;
    for (n, copies) in &by_n {
        if copies.len() > 1 {
            duplicates += copies.len() - 1;
            let p = copies[0]["partition"].as_i64().unwrap() as usize;
            let o = copies[0]["offset"].as_i64().unwrap();
            assert!(
                o >= at_kill[p],
                "event {n} (partition {p} offset {o}) was committed (offset {}) yet came again",
                at_kill[p]
            );
        }
    }
    eprintln!(
        "killed after {written_before} written, committed {at_kill:?}; {duplicates} duplicates after the restart"
    );
    assert_eq!(lines(&out).len(), N + duplicates);
    let per_partition: Vec<i64> = (0..PARTITIONS)
        .map(|p| (0..N as i32).filter(|i| i % PARTITIONS == p).count() as i64)
        .collect();
    assert_eq!(
        committed(&servers, "agg", "logs", PARTITIONS),
        per_partition,
        "everything committed after the restart"
    );
}

#[test]
fn two_aggregators_in_one_group_split_the_partitions() {
    const N: usize = 4000;
    const PARTITIONS: i32 = 4;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(broker) = Broker::start(d) else {
        return;
    };
    broker.create_topic("shared", PARTITIONS as u32);
    let servers = broker.servers();
    let source = "group_id = \"split\"\ntopics = [\"shared\"]\ncommit_interval_ms = 200\nsession_timeout_ms = 6000";
    let a = start_weir(
        d,
        "a",
        &aggregator_config(d, "a", &servers, source, None),
        false,
    );
    let b = start_weir(
        d,
        "b",
        &aggregator_config(d, "b", &servers, source, None),
        false,
    );
    // Both are members with their share before anything is produced.
    let assigned = |name: &str| {
        weir_log(d, name)
            .lines()
            .rfind(|l| l.contains("partitions assigned"))
            .map(str::to_string)
    };
    assert!(
        wait_until(Duration::from_secs(60), || {
            let (la, lb) = (assigned("a"), assigned("b"));
            la.is_some_and(|l| l.contains("shared/")) && lb.is_some_and(|l| l.contains("shared/"))
        }),
        "both joined the group:\n{}\n{}",
        weir_log(d, "a"),
        weir_log(d, "b")
    );
    let rt = runtime();
    let payloads: Vec<String> = (0..N).map(event_line).collect();
    produce(&rt, &servers, "shared", PARTITIONS, &payloads);
    let (out_a, out_b) = (d.join("a.out"), d.join("b.out"));
    assert!(
        wait_until(Duration::from_secs(90), || parse_out(&out_a).len()
            + parse_out(&out_b).len()
            >= N),
        "read {} + {} of {N}:\n{}\n{}",
        lines(&out_a).len(),
        lines(&out_b).len(),
        weir_log(d, "a"),
        weir_log(d, "b")
    );
    stop_clean(d, "a", a);
    stop_clean(d, "b", b);
    let partitions = |path: &Path| -> BTreeSet<i64> {
        parse_out(path)
            .values()
            .map(|c| c[0]["partition"].as_i64().unwrap())
            .collect()
    };
    let (pa, pb) = (partitions(&out_a), partitions(&out_b));
    assert!(
        !pa.is_empty() && !pb.is_empty(),
        "both got partitions: {pa:?} {pb:?}"
    );
    assert!(
        pa.is_disjoint(&pb),
        "each partition is read by one member: {pa:?} {pb:?}"
    );
    assert_eq!(pa.union(&pb).count(), PARTITIONS as usize);
    let (ea, eb) = (parse_out(&out_a), parse_out(&out_b));
    let mut all: Vec<u64> = ea.keys().chain(eb.keys()).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..N as u64).collect::<Vec<_>>(),
        "every event once, in one member"
    );
    assert_eq!(lines(&out_a).len() + lines(&out_b).len(), N);
}

#[test]
fn undecodable_record_is_counted_logged_and_committed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let Some(broker) = Broker::start(d) else {
        return;
    };
    broker.create_topic("bad", 1);
    let servers = broker.servers();
    let rt = runtime();
    produce(
        &rt,
        &servers,
        "bad",
        1,
        &[event_line(0), "{not json".to_string(), event_line(2)],
    );
    let api = free_addr();
    let agg = start_weir(
        d,
        "agg",
        &aggregator_config(
            d,
            "agg",
            &servers,
            "group_id = \"g\"\ntopics = [\"bad\"]\ncommit_interval_ms = 100",
            Some(api),
        ),
        false,
    );
    let out = d.join("agg.out");
    assert!(
        wait_until(Duration::from_secs(60), || lines(&out).len() >= 2),
        "{}",
        weir_log(d, "agg")
    );
    assert!(
        wait_until(Duration::from_secs(20), || committed(
            &servers, "g", "bad", 1
        ) == vec![3]),
        "all three committed, the bad one included: {:?}",
        committed(&servers, "g", "bad", 1)
    );
    assert_eq!(
        metric(api, "weir_component_errors_total", "bus"),
        Some(1.0),
        "the bad record is counted once"
    );
    stop_clean(d, "agg", agg);
    let by_n = parse_out(&out);
    assert_eq!(by_n.keys().copied().collect::<Vec<_>>(), vec![0, 2]);
    assert_eq!(lines(&out).len(), 2);
    let log = weir_log(d, "agg");
    assert!(
        log.contains("topic bad partition 0 offset 1"),
        "the error names the topic, partition and offset: {log}"
    );
}
