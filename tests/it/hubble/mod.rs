//! The `hubble` source and the `flow_to_topology` transform end to end: a test Hubble server
//! speaking real gRPC (same protobuf messages) replays recorded and generated flows.

mod gen;
mod server;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value as Json};
use weir_pipeline::component::{Sink, SinkConfig, SinkContext, SinkInput};
use weir_pipeline::config::{load_str, resolve_graph};
use weir_pipeline::event::Event;
use weir_pipeline::finalization::EventStatus;
use weir_pipeline::metrics::MetricsRegistry;
use weir_pipeline::topology::{self, RunningTopology};
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;
use weir_sources::hubble::convert;
use weir_sources::hubble::proto::{
    self, Flow, GetFlowsResponse, LostEvent, NodeStatusEvent, ResponseType, Timestamp,
};

use gen::Gen;
use server::{Replay, ServerTls, TestServer};

// ---------------------------------------------------------------------------------------
// Shared test data, a collecting sink, running a pipeline in-process.

/// `shared/testdata/hubble` ([`crate::harness::shared_testdata`]), or the test returns: skipped
/// on a developer machine, a failure under CI.
macro_rules! shared_or_skip {
    () => {
        match crate::harness::require(
            "the shared Hubble captures",
            crate::harness::shared_testdata("hubble"),
        ) {
            Some(d) => d,
            None => return,
        }
    };
}

fn gunzip_lines(path: &Path) -> Vec<String> {
    let mut s = String::new();
    flate2::read::MultiGzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut s)
        .unwrap();
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

type Buckets = Mutex<HashMap<String, Arc<Mutex<Vec<Event>>>>>;

fn collected() -> &'static Buckets {
    static C: OnceLock<Buckets> = OnceLock::new();
    C.get_or_init(Default::default)
}

/// The events collected under `name`.
fn bucket(name: &str) -> Arc<Mutex<Vec<Event>>> {
    Arc::clone(
        collected()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.into())
            .or_default(),
    )
}

/// `type = "collect"`: keeps what it receives under `name`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct CollectSink {
    name: String,
}

struct Collect(Arc<Mutex<Vec<Event>>>);

#[async_trait]
impl SinkConfig for CollectSink {
    async fn build(&self, _cx: SinkContext) -> Result<Box<dyn Sink>, BoxError> {
        Ok(Box::new(Collect(bucket(&self.name))))
    }
    fn input(&self) -> DataType {
        DataType::ALL
    }
}

#[async_trait]
impl Sink for Collect {
    async fn run(self: Box<Self>, mut input: SinkInput) -> Result<(), BoxError> {
        while let Some(mut batch) = input.next().await {
            batch.finalize(EventStatus::Delivered);
            self.0.lock().unwrap().extend(batch.events);
        }
        Ok(())
    }
}

async fn start(toml: &str) -> RunningTopology {
    let mut registry = crate::testkit::full_registry();
    registry.add_sink::<CollectSink>("collect", "test: keeps events");
    let config = load_str("hubble-test.toml", toml, &registry, &|_| None)
        .unwrap_or_else(|e| panic!("config: {e}\n{toml}"));
    let graph = resolve_graph(&config, false).unwrap_or_else(|e| panic!("graph: {e}"));
    topology::start(config, &graph).await.expect("start")
}

/// A unique name for this test's collections.
fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!(
        "{prefix}-{}",
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    )
}

/// `data_dir`, no API, the given source as `flows`, then `flows -> map (whole input) ->
/// collect <name>-map` and `flows -> collect <name>-raw`.
fn pipeline(data_dir: &Path, name: &str, source: &str) -> String {
    format!(
        r#"data_dir = "{dd}"
[api]
enabled = false

{source}

[transforms.map]
type = "flow_to_topology"
inputs = ["flows"]
window_secs = 0
granularity = "workload"

[sinks.map_out]
type = "collect"
inputs = ["map"]
name = "{name}-map"

[sinks.raw_out]
type = "collect"
inputs = ["flows"]
name = "{name}-raw"
"#,
        dd = data_dir.display()
    )
}

/// A `hubble` source asking for every buffered flow (`since` long ago, unless `extra` says).
fn hubble_source(addr: SocketAddr, extra: &str) -> String {
    let since = if extra.contains("since =") {
        ""
    } else {
        "since = \"2000-01-01T00:00:00Z\"\n"
    };
    format!(
        r#"[sources.flows]
type = "hubble"
address = "127.0.0.1:{port}"
max_backoff_secs = 1
{since}{extra}"#,
        port = addr.port()
    )
}

fn file_source(path: &Path, codec: &str) -> String {
    format!(
        r#"[sources.flows]
type = "file"
include = ["{}"]
read_from = "beginning"
decoding.codec = "{codec}"
"#,
        path.display()
    )
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a pipeline to its end (a source that ends by itself).
async fn run_to_end(toml: &str) -> Arc<MetricsRegistry> {
    let running = start(toml).await;
    let registry = Arc::clone(&running.registry);
    let outcomes = tokio::time::timeout(Duration::from_secs(60), running.wait())
        .await
        .expect("the pipeline ends");
    for o in outcomes {
        assert!(o.error.is_none(), "{}: {:?}", o.id, o.error);
    }
    registry
}

/// Runs a pipeline until its source `flows` has sent `n` events, then stops it.
async fn run_until_received(toml: &str, n: u64) -> Arc<MetricsRegistry> {
    let running = start(toml).await;
    let registry = Arc::clone(&running.registry);
    let r = Arc::clone(&registry);
    wait_for(&format!("{n} events"), Duration::from_secs(60), || {
        r.get("flows").map(|m| m.received_events()).unwrap_or(0) >= n
    })
    .await;
    running.shutdown_token().cancel();
    let outcomes = tokio::time::timeout(Duration::from_secs(30), running.wait())
        .await
        .expect("the pipeline stops");
    for o in outcomes {
        assert!(o.error.is_none(), "{}: {:?}", o.id, o.error);
    }
    registry
}

fn take(name: &str) -> Vec<Json> {
    std::mem::take(&mut *bucket(name).lock().unwrap_or_else(|p| p.into_inner()))
        .iter()
        .map(Event::to_json_value)
        .collect()
}

/// The one topology event of a run.
fn topology_of(name: &str) -> Json {
    let mut t = take(&format!("{name}-map"));
    assert_eq!(t.len(), 1, "one window over the whole input");
    t.remove(0)
}

/// Compares a topology event with a truth file's edges (every edge, every count given).
fn assert_matches_truth(topo: &Json, truth: &Json) {
    let ours: BTreeMap<&str, &Json> = topo["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_str().unwrap(), e))
        .collect();
    let want = truth["edges"].as_object().unwrap();
    assert_eq!(
        ours.keys().copied().collect::<BTreeSet<_>>(),
        want.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        "the edges"
    );
    let n = |v: &Json| v.as_u64().unwrap_or(0);
    for (id, fields) in want {
        let e = ours[id.as_str()];
        for (k, v) in fields.as_object().unwrap() {
            match k.as_str() {
                "dropped" => assert_eq!(n(&e["verdicts"]["DROPPED"]), n(v), "{id}: {k}"),
                "http_responses" => {
                    for (class, c) in v.as_object().unwrap() {
                        assert_eq!(n(&e[k][class]), n(c), "{id}: {k}.{class}");
                    }
                }
                _ => assert_eq!(&e[k], v, "{id}: {k}"),
            }
        }
    }
    assert_eq!(topo["flows"], truth["flows"], "flows in the map");
    assert_eq!(topo["overflow_flows"], 0);
}

fn counter(registry: &MetricsRegistry, id: &str, name: &str, label: Option<&str>) -> u64 {
    let m = registry.get(id).unwrap();
    m.counters()
        .iter()
        .filter(|(n, l, _)| {
            *n == name && label.is_none_or(|want| l.as_ref().is_some_and(|(_, v)| v == want))
        })
        .map(|(_, _, v)| *v)
        .sum()
}

fn errors(registry: &MetricsRegistry, id: &str, kind: &str) -> u64 {
    registry
        .get(id)
        .unwrap()
        .errors()
        .get(kind)
        .copied()
        .unwrap_or(0)
}

/// Drops what protobuf cannot tell from absent (proto3 default values: 0, "", false, [],
/// {}), which a jsonpb file may spell out or not.
fn strip_defaults(v: &mut Json) -> bool {
    match v {
        Json::Object(o) => {
            o.retain(|_, v| !strip_defaults(v));
            o.is_empty()
        }
        Json::Array(a) => {
            for v in a.iter_mut() {
                strip_defaults(v);
            }
            a.is_empty()
        }
        Json::Number(n) => n.as_f64() == Some(0.0),
        Json::String(s) => s.is_empty(),
        Json::Bool(b) => !*b,
        Json::Null => true,
    }
}

/// The flows of events (without what a file source adds around them), defaults dropped.
fn flows_only(events: &[Json]) -> Vec<Json> {
    events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            if let Some(o) = e.as_object_mut() {
                o.retain(|k, _| k == "flow" || k == "node_name" || k == "time");
            }
            strip_defaults(&mut e);
            // One instant, one spelling (a file may carry 9 digits where protojson writes 6).
            let canonical = |t: Option<&mut Json>| {
                if let Some(t) = t {
                    if let Some(ts) = t.as_str().and_then(convert::parse_timestamp) {
                        *t = Json::from(convert::format_timestamp(ts));
                    }
                }
            };
            canonical(e.get_mut("time"));
            canonical(e.get_mut("flow").and_then(|f| f.get_mut("time")));
            e
        })
        .collect()
}

/// Equal lists of events, showing the first difference (not thousands of events).
fn assert_same_events(got: &[Json], want: &[Json]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "event {i} differs");
    }
    assert_eq!(got.len(), want.len(), "number of events");
}

// ---------------------------------------------------------------------------------------
// The tests.

/// The recorded boutique capture, over gRPC and from a file: the map is the truth, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boutique_over_grpc_and_from_a_file_reproduces_the_truth() {
    let dir = shared_or_skip!();
    let truth: Json =
        serde_json::from_slice(&std::fs::read(dir.join("boutique-truth.json")).unwrap()).unwrap();
    let lines = gunzip_lines(&dir.join("boutique-flows.jsonl.gz"));
    assert_eq!(lines.len() as u64, truth["flows"].as_u64().unwrap());

    let replay = Replay::new();
    for l in &lines {
        replay.push_json(l);
    }
    let srv = TestServer::start(Arc::clone(&replay), "127.0.0.1:0".parse().unwrap(), None);
    let data = tempfile::tempdir().unwrap();
    let name = unique("boutique-grpc");
    let reg = run_to_end(&pipeline(
        data.path(),
        &name,
        &hubble_source(srv.addr, "follow = false"),
    ))
    .await;
    let grpc_topo = topology_of(&name);
    assert_matches_truth(&grpc_topo, &truth);
    let grpc_raw = take(&format!("{name}-raw"));
    assert_eq!(grpc_raw.len(), lines.len());
    assert_eq!(reg.get("flows").unwrap().errors_total(), 0);
    assert_eq!(reg.get("map").unwrap().errors_total(), 0);

    // The same lines read by the file source (gzip as it is) give the same events and map,
    // whether flows are decoded as any JSON or held in typed form.
    let strip = |t: &Json| {
        let mut t = t.clone();
        for k in ["window_start", "window_end"] {
            t.as_object_mut().unwrap().remove(k);
        }
        t
    };
    for codec in ["json", "hubble_jsonpb"] {
        let data = tempfile::tempdir().unwrap();
        let name = unique(&format!("boutique-file-{codec}"));
        let reg = run_until_received(
            &pipeline(
                data.path(),
                &name,
                &file_source(&dir.join("boutique-flows.jsonl.gz"), codec),
            ),
            lines.len() as u64,
        )
        .await;
        let file_topo = topology_of(&name);
        assert_matches_truth(&file_topo, &truth);
        let file_raw = take(&format!("{name}-raw"));
        assert_same_events(&flows_only(&file_raw), &flows_only(&grpc_raw));
        assert_eq!(strip(&file_topo), strip(&grpc_topo), "{codec}");
        assert_eq!(reg.get("map").unwrap().errors_total(), 0);
    }
}

/// Every flow, held in typed form (by the `hubble_jsonpb` codec, or by the `hubble` source
/// from its protobuf), reads for `flow_to_topology` exactly as its tree of fields does, and
/// that tree is the one the `json` codec (or the source without a typed form) gives.
fn assert_typed_flows_read_like_their_tree(lines: &[String]) {
    use weir_pipeline::codec::Decoder;
    use weir_pipeline::event::{LogEvent, TypedLog};
    use weir_records::flow::FlowLog;
    use weir_transforms::flow_to_topology::FlowView;

    let decode = |codec: Decoder, line: &str| {
        let mut out = Vec::new();
        codec
            .decode(
                bytes::Bytes::copy_from_slice(line.as_bytes()),
                &None,
                &mut out,
            )
            .unwrap();
        assert_eq!(out.len(), 1);
        match out.pop() {
            Some(Event::Log(l)) => l,
            other => panic!("not a log: {other:?}"),
        }
    };
    let mut typed_lines = 0;
    for line in lines {
        let tree = decode(Decoder::Json, line);
        let typed = decode(weir_records::flow::HubbleJsonpb::decoder(), line);
        if typed.typed::<FlowLog>().is_some() {
            typed_lines += 1;
        }
        let want = format!("{:?}", FlowView::read(tree.value()));
        assert_eq!(format!("{:?}", FlowView::of(&typed)), want, "{line}");
        assert_eq!(typed.value(), tree.value(), "{line}");

        let json: Json = serde_json::from_str(line).unwrap();
        let Ok(resp) = weir_sources::hubble::jsonpb::response_from_json(&json) else {
            continue;
        };
        let Some(flow) = convert::flow_response_to_typed(resp.clone()) else {
            continue;
        };
        let tree = convert::flow_response_to_value(resp).unwrap();
        assert_eq!(
            format!("{:?}", FlowView::from_typed(&flow)),
            format!("{:?}", FlowView::read(&tree)),
            "{line}"
        );
        assert_eq!(flow.to_value(), tree, "{line}");
        let event = LogEvent::from_typed(flow, Default::default());
        assert_eq!(event.value(), &tree);
    }
    assert!(typed_lines > 0, "no line was held in typed form");
}

#[test]
fn typed_flows_read_like_their_tree_boutique_and_upstream() {
    let dir = shared_or_skip!();
    let mut lines = gunzip_lines(&dir.join("boutique-flows.jsonl.gz"));
    let text = std::fs::read_to_string(dir.join("upstream-samples.jsonl")).unwrap();
    lines.extend(
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string),
    );
    assert_typed_flows_read_like_their_tree(&lines);
}

#[test]
fn typed_flows_read_like_their_tree_generated() {
    let g = Gen::shop(1_000_000, 20);
    assert_typed_flows_read_like_their_tree(&g.lines);
}

/// Our own generated traffic, with the map worked out while generating it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_flows_over_grpc_and_from_a_file_give_the_known_map() {
    let g = Gen::shop(1_000_000, 60);
    let truth = g.truth_json();
    let replay = Replay::new();
    for l in &g.lines {
        replay.push_json(l);
    }
    let srv = TestServer::start(Arc::clone(&replay), "127.0.0.1:0".parse().unwrap(), None);
    let data = tempfile::tempdir().unwrap();
    let name = unique("gen-grpc");
    run_to_end(&pipeline(
        data.path(),
        &name,
        &hubble_source(
            srv.addr,
            "follow = false\n[[sources.flows.whitelist]]\nnamespace = [\"shop\"]\n[[sources.flows.blacklist]]\nverdict = [\"ERROR\"]\n",
        ),
    ))
    .await;
    let topo = topology_of(&name);
    assert_matches_truth(&topo, &truth);
    let edge = topo["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "shop/api -> shop/db:5432/TCP")
        .unwrap();
    assert_eq!(edge["drops"], json!({"POLICY_DENIED": 5}));
    let grpc_raw = take(&format!("{name}-raw"));
    // Each event is the line it was made from: the live stream and the jsonpb export agree.
    let lines: Vec<Json> = g
        .lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_same_events(&grpc_raw, &lines);
    // The filters reached the server as protobuf filters.
    let req = replay.requests.lock().unwrap()[0].clone();
    assert!(!req.follow);
    // `namespace` is sent as two filters, like `hubble observe --namespace`.
    assert_eq!(req.whitelist.len(), 2);
    assert_eq!(req.whitelist[0].source_pod, vec!["shop/".to_string()]);
    assert_eq!(req.whitelist[1].destination_pod, vec!["shop/".to_string()]);
    assert_eq!(req.blacklist[0].verdict, vec![3]);
    drop(srv);

    let data = tempfile::tempdir().unwrap();
    let path = data.path().join("flows.jsonl");
    std::fs::write(&path, g.lines.join("\n") + "\n").unwrap();
    let name = unique("gen-file");
    run_until_received(
        &pipeline(data.path(), &name, &file_source(&path, "hubble_jsonpb")),
        g.lines.len() as u64,
    )
    .await;
    assert_matches_truth(&topology_of(&name), &truth);
    assert_same_events(
        &flows_only(&take(&format!("{name}-raw"))),
        &flows_only(&lines),
    );
}

/// Relay is killed mid-stream and comes back on the same port: the source reconnects,
/// resumes `since` the last flow it emitted, and drops the overlap it already had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_stream_loses_and_duplicates_nothing() {
    // 10 ms apart: about 9 s of flows; the overlap asked for on resume is 2 s.
    let g = Gen::shop(10_000_000, 60);
    let total = g.lines.len();
    let first = Replay::new();
    for l in &g.lines {
        first.push_json(l);
    }
    *first.pace.lock().unwrap() = Some((20, Duration::from_millis(15)));
    let srv = TestServer::start(Arc::clone(&first), "127.0.0.1:0".parse().unwrap(), None);
    let addr = srv.addr;

    let data = tempfile::tempdir().unwrap();
    let name = unique("restart");
    let running = start(&pipeline(
        data.path(),
        &name,
        &hubble_source(addr, "resume_overlap_secs = 2"),
    ))
    .await;
    let registry = Arc::clone(&running.registry);
    let raw = bucket(&format!("{name}-raw"));
    wait_for("a third of the flows", Duration::from_secs(30), || {
        raw.lock().unwrap().len() >= total / 3
    })
    .await;
    srv.kill();
    let at_kill = raw.lock().unwrap().len();
    assert!(at_kill < total, "killed mid-stream ({at_kill} of {total})");

    // The restarted server has every flow (Relay gets them again from the nodes' buffers).
    let second = Replay::new();
    for l in &g.lines {
        second.push_json(l);
    }
    let _srv2 = TestServer::start(Arc::clone(&second), addr, None);
    wait_for("every flow", Duration::from_secs(30), || {
        raw.lock().unwrap().len() >= total
    })
    .await;
    // Nothing more arrives: give stragglers a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    running.shutdown_token().cancel();
    tokio::time::timeout(Duration::from_secs(30), running.wait())
        .await
        .unwrap();

    let got = take(&format!("{name}-raw"));
    let uuids: Vec<&str> = got
        .iter()
        .map(|e| e["flow"]["uuid"].as_str().unwrap())
        .collect();
    let unique_uuids: BTreeSet<&str> = uuids.iter().copied().collect();
    assert_eq!(uuids.len(), unique_uuids.len(), "no flow twice");
    assert_eq!(uuids.len(), total, "no flow lost");
    // The second call resumed from the flows already seen, not from the start.
    let req = second.requests.lock().unwrap()[0].clone();
    let since = server::nanos(req.since.expect("since on resume"));
    let newest_seen = got[at_kill - 1]["flow"]["time"]
        .as_str()
        .unwrap()
        .to_string();
    let newest = chrono::DateTime::parse_from_rfc3339(&newest_seen)
        .unwrap()
        .timestamp_nanos_opt()
        .unwrap() as i128;
    assert!(
        since > 1_795_168_800 * 1_000_000_000 && since <= newest,
        "resumed since {since}, newest seen at the kill {newest}"
    );
    assert!(counter(&registry, "flows", "hubble_duplicate_flows_total", None) > 0);
    assert!(counter(&registry, "flows", "hubble_reconnects_total", None) >= 1);
    // The map counts each connection once, across the restart.
    assert_matches_truth(&topology_of(&name), &g.truth_json());
}

/// The two upstream samples (sparse: no uuid, no identities, no workloads) decode, and the
/// events are the samples themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_samples_decode() {
    let dir = shared_or_skip!();
    let text = std::fs::read_to_string(dir.join("upstream-samples.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 2);
    let replay = Replay::new();
    for l in &lines {
        replay.push_json(l);
    }
    let srv = TestServer::start(Arc::clone(&replay), "127.0.0.1:0".parse().unwrap(), None);
    let data = tempfile::tempdir().unwrap();
    let name = unique("samples");
    let reg = run_to_end(&pipeline(
        data.path(),
        &name,
        &hubble_source(srv.addr, "follow = false\nsince = \"1970-01-01T00:00:00Z\""),
    ))
    .await;
    let got = take(&format!("{name}-raw"));
    assert_eq!(got.len(), 2);
    for (e, l) in got.iter().zip(&lines) {
        let want: Json = serde_json::from_str(l).unwrap();
        assert_eq!(e["flow"], want["flow"]);
    }
    let topo = topology_of(&name);
    assert_eq!(topo["flows"], 2);
    let ids: Vec<&str> = topo["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![
            "1.1.1.1 -> 2.2.2.2:8080/TCP",
            "default/xwing -> default/deathstar-7848d6c4d5-th9v2:80/TCP"
        ]
    );
    assert_eq!(reg.get("flows").unwrap().errors_total(), 0);
}

/// A response that is not valid protobuf (cut short, or garbage) is counted and skipped; the
/// stream goes on. Lines of a file that are not flows (or not JSON) likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_responses_and_lines_are_counted_and_skipped() {
    let g = Gen::shop(1_000_000, 5);
    let replay = Replay::new();
    let half = g.lines.len() / 2;
    for l in &g.lines[..half] {
        replay.push_json(l);
    }
    let good = weir_sources::hubble::jsonpb::response_from_json(
        &serde_json::from_str(&g.lines[0]).unwrap(),
    )
    .unwrap();
    let bytes = prost::Message::encode_to_vec(&good);
    let cut = &bytes[..bytes.len() - 3];
    assert!(<GetFlowsResponse as prost::Message>::decode(cut).is_err());
    let t = 1_795_168_800i128 * 1_000_000_000 + 1;
    replay.push_raw(t, bytes::Bytes::copy_from_slice(cut));
    replay.push_raw(t, bytes::Bytes::from_static(b"\xff\xff\xff\xff"));
    for l in &g.lines[half..] {
        replay.push_json(l);
    }
    let srv = TestServer::start(Arc::clone(&replay), "127.0.0.1:0".parse().unwrap(), None);
    let data = tempfile::tempdir().unwrap();
    let name = unique("malformed");
    let reg = run_to_end(&pipeline(
        data.path(),
        &name,
        &hubble_source(srv.addr, "follow = false"),
    ))
    .await;
    assert_eq!(take(&format!("{name}-raw")).len(), g.lines.len());
    assert_eq!(errors(&reg, "flows", "decode"), 2);
    assert_matches_truth(&topology_of(&name), &g.truth_json());

    // A file with a JSON line that is not a flow and a line that is not JSON.
    let data = tempfile::tempdir().unwrap();
    let path = data.path().join("flows.jsonl");
    let mut text = g.lines[..half].join("\n");
    text.push_str("\n{\"hello\": \"not a flow\"}\nthis is not JSON\n");
    text.push_str(&g.lines[half..].join("\n"));
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    let name = unique("malformed-file");
    let reg = run_until_received(
        &pipeline(data.path(), &name, &file_source(&path, "hubble_jsonpb")),
        g.lines.len() as u64 + 1,
    )
    .await;
    assert_eq!(errors(&reg, "map", "not_a_flow"), 1);
    assert!(
        reg.get("flows").unwrap().errors_total() >= 1,
        "the non-JSON line"
    );
    assert_matches_truth(&topology_of(&name), &g.truth_json());
}

struct Pki {
    ca_pem: String,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(
        DnType::CommonName,
        "hubble-ca.default.hubble-grpc.cilium.io",
    );
    let ca_key = KeyPair::generate().unwrap();
    let ca = p.self_signed(&ca_key).unwrap();
    Pki {
        ca_pem: ca.pem(),
        ca,
        ca_key,
    }
}

impl Pki {
    /// (cert PEM, key PEM) for `name`, signed by the CA.
    fn issue(&self, name: &str, client: bool) -> (String, String) {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair};
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// TLS as Relay does it: a certificate for `*.default.hubble-grpc.cilium.io`, reached at
/// 127.0.0.1 with `tls.server_name`; and mutual TLS with a client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_server_name_and_mutual_tls() {
    let pki = pki();
    let (cert, key) = pki.issue("*.default.hubble-grpc.cilium.io", false);
    let (client_cert, client_key) = pki.issue("weir.default.hubble-grpc.cilium.io", true);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let (cert_file, key_file) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_file, &client_cert).unwrap();
    std::fs::write(&key_file, &client_key).unwrap();

    let g = Gen::shop(1_000_000, 4);
    let replay = Replay::new();
    for l in &g.lines {
        replay.push_json(l);
    }
    let tls = ServerTls {
        cert_pem: cert,
        key_pem: key,
        client_ca_pem: None,
    };
    let srv = TestServer::start(
        Arc::clone(&replay),
        "127.0.0.1:0".parse().unwrap(),
        Some(tls.clone()),
    );
    let tls_opts = format!(
        "follow = false\ntls.ca_file = \"{}\"\ntls.server_name = \"relay.default.hubble-grpc.cilium.io\"",
        ca_file.display()
    );
    let name = unique("tls");
    run_to_end(&pipeline(
        dir.path(),
        &name,
        &hubble_source(srv.addr, &tls_opts),
    ))
    .await;
    assert_eq!(take(&format!("{name}-raw")).len(), g.lines.len());
    assert_matches_truth(&topology_of(&name), &g.truth_json());

    // Without `server_name`, 127.0.0.1 is not a name of the certificate: no flow gets in.
    let name = unique("tls-wrong-name");
    let opts = format!("follow = false\ntls.ca_file = \"{}\"", ca_file.display());
    let running = start(&pipeline(
        dir.path(),
        &name,
        &hubble_source(srv.addr, &opts),
    ))
    .await;
    let reg = Arc::clone(&running.registry);
    wait_for("a failed handshake", Duration::from_secs(20), || {
        reg.get("flows").unwrap().errors_total() > 0
    })
    .await;
    running.shutdown_token().cancel();
    running.wait().await;
    assert!(take(&format!("{name}-raw")).is_empty());
    drop(srv);

    // Mutual TLS: the server asks for a client certificate signed by the CA.
    let srv = TestServer::start(
        Arc::clone(&replay),
        "127.0.0.1:0".parse().unwrap(),
        Some(ServerTls {
            client_ca_pem: Some(pki.ca_pem.clone()),
            ..tls
        }),
    );
    let opts = format!(
        "{tls_opts}\ntls.crt_file = \"{}\"\ntls.key_file = \"{}\"",
        cert_file.display(),
        key_file.display()
    );
    let name = unique("mtls");
    // A data directory of its own: in the first one, the source resumes after the flows the
    // first run delivered (all of them).
    let mtls_data = dir.path().join("mtls");
    std::fs::create_dir_all(&mtls_data).unwrap();
    run_to_end(&pipeline(
        &mtls_data,
        &name,
        &hubble_source(srv.addr, &opts),
    ))
    .await;
    assert_eq!(take(&format!("{name}-raw")).len(), g.lines.len());
}

/// `lost_events` and `node_status` responses become counters (on the API's /metrics) and
/// log lines of the real binary.
#[test]
fn lost_events_and_node_status_become_metrics_and_log_lines() {
    use crate::harness::{free_addr, http_get, sigterm, wait_until, wait_with_timeout, weir};
    let replay = Replay::new();
    let t = |s: i64| {
        Some(Timestamp {
            seconds: 1_795_168_800 + s,
            nanos: 0,
        })
    };
    replay.push(&GetFlowsResponse {
        response_types: Some(ResponseType::NodeStatus(NodeStatusEvent {
            state_change: 1,
            node_names: vec!["node-a".into(), "node-b".into()],
            ..Default::default()
        })),
        node_name: "relay".into(),
        time: t(1),
    });
    replay.push(&GetFlowsResponse {
        response_types: Some(ResponseType::LostEvents(LostEvent {
            source: 3,
            num_events_lost: 42,
            ..Default::default()
        })),
        node_name: "node-a".into(),
        time: t(2),
    });
    replay.push(&GetFlowsResponse {
        response_types: Some(ResponseType::NodeStatus(NodeStatusEvent {
            state_change: 2,
            node_names: vec!["node-b".into()],
            message: "connection refused".into(),
        })),
        node_name: "relay".into(),
        time: t(3),
    });
    replay.push(&GetFlowsResponse {
        response_types: Some(ResponseType::Flow(Flow {
            time: t(4),
            uuid: "u-1".into(),
            verdict: 1,
            ..Default::default()
        })),
        node_name: "node-a".into(),
        time: t(4),
    });
    let srv = TestServer::start(Arc::clone(&replay), "127.0.0.1:0".parse().unwrap(), None);
    let dir = tempfile::tempdir().unwrap();
    let api = free_addr();
    let config = crate::harness::write_config(
        dir.path(),
        "hubble.toml",
        &format!(
            r#"data_dir = "{dd}"
[api]
enabled = true
address = "{api}"

[sources.flows]
type = "hubble"
address = "127.0.0.1:{port}"
since = "2000-01-01T00:00:00Z"

[sinks.out]
type = "blackhole"
inputs = ["flows"]
"#,
            dd = dir.path().display(),
            port = srv.addr.port()
        ),
    );
    let child = weir()
        .args(["run", "--config"])
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut body = String::new();
    let ok = wait_until(Duration::from_secs(20), || {
        body = http_get(api, "/metrics").map(|r| r.1).unwrap_or_default();
        body.contains("weir_hubble_lost_events_total")
            && body.contains("NODE_UNAVAILABLE")
            && body.contains("weir_component_received_events_total")
    });
    sigterm(&child);
    let out = wait_with_timeout(child, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(ok, "metrics: {body}\nstderr: {stderr}");
    let line = |name: &str, label: &str| {
        body.lines()
            .find(|l| l.starts_with(name) && l.contains(label))
            .unwrap_or_else(|| panic!("no {name} {label} in {body}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        line(
            "weir_hubble_lost_events_total",
            "source=\"HUBBLE_RING_BUFFER\""
        ),
        "42"
    );
    assert_eq!(
        line("weir_hubble_node_status_total", "state=\"NODE_CONNECTED\""),
        "1"
    );
    assert_eq!(
        line(
            "weir_hubble_node_status_total",
            "state=\"NODE_UNAVAILABLE\""
        ),
        "1"
    );
    assert!(
        stderr.contains("Hubble lost 42 events at HUBBLE_RING_BUFFER"),
        "{stderr}"
    );
    assert!(
        stderr.contains("NODE_UNAVAILABLE node-b: connection refused"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let _ = proto::NODE_STATE;
}

/// `weir topology` on the boutique capture: JSON is the truth; DOT and Mermaid draw it.
#[test]
fn weir_topology_on_the_boutique_capture() {
    use crate::harness::weir;
    let dir = shared_or_skip!();
    let truth: Json =
        serde_json::from_slice(&std::fs::read(dir.join("boutique-truth.json")).unwrap()).unwrap();
    let gz = dir.join("boutique-flows.jsonl.gz");
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("flows.jsonl");
    std::fs::write(&plain, gunzip_lines(&gz).join("\n") + "\n").unwrap();
    let run = |input: &Path, format: &str| {
        let out = weir()
            .args(["topology", "--input"])
            .arg(input)
            .args(["--format", format])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    for input in [&gz, &plain] {
        let topo: Json = serde_json::from_str(&run(input, "json")).unwrap();
        assert_matches_truth(&topo, &truth);
    }
    let dot = run(&gz, "dot");
    assert!(dot.starts_with("digraph topology {"), "{dot}");
    assert!(
        dot.contains("\"boutique/frontend\" -> \"boutique/checkoutservice\" [label=\"5050/TCP, 44 conn, 44 req, 4 5xx, avg 91.2 ms\"];"),
        "{dot}"
    );
    let mermaid = run(&gz, "mermaid");
    assert!(mermaid.starts_with("flowchart LR\n"), "{mermaid}");
    assert!(
        mermaid.contains("[\"world(api.example.com)\"]"),
        "{mermaid}"
    );
    assert_eq!(
        mermaid.matches(" -->|").count(),
        truth["edges"].as_object().unwrap().len()
    );
}

/// Flows written to Parquet by the `parquet` sink, mapped by `weir topology --input x.parquet`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_topology_reads_flows_from_parquet() {
    let g = Gen::shop(1_000_000, 40);
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("flows.jsonl");
    std::fs::write(&jsonl, g.lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("pq");
    let toml = format!(
        r#"data_dir = "{dd}"
[api]
enabled = false

{source}
[sinks.pq]
type = "parquet"
inputs = ["flows"]
path = "{out}/"
"#,
        dd = dir.path().display(),
        source = file_source(&jsonl, "hubble_jsonpb"),
        out = out.display()
    );
    run_until_received(&toml, g.lines.len() as u64).await;
    let files: Vec<PathBuf> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let run = crate::harness::weir()
        .args(["topology", "--format", "json", "--input"])
        .arg(&files[0])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let topo: Json = serde_json::from_slice(&run.stdout).unwrap();
    assert_matches_truth(&topo, &g.truth_json());
}

/// Issue 26: weir restarted mid-stream, the server keeping a ring of flows (Hubble's buffer:
/// the oldest dropped as new ones come) and flows still arriving while weir is down. Every
/// flow of this test has the same time, the hardest case for a resume position made of a
/// time: the second run asks `since` that time and must tell, by flow identity, the ones
/// the first run delivered from the ones it did not. Every flow is delivered exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weir_restarted_mid_stream_delivers_every_flow_exactly_once() {
    let g = Gen::shop(0, 400);
    let total = g.lines.len();
    assert!(total > 3000, "{total} flows");
    let ring = Replay::ring(total / 2);
    let srv = TestServer::start(Arc::clone(&ring), "127.0.0.1:0".parse().unwrap(), None);
    // Live flows: 30 every 10 ms.
    let feeder = {
        let (ring, lines) = (Arc::clone(&ring), g.lines.clone());
        tokio::spawn(async move {
            for chunk in lines.chunks(30) {
                for l in chunk {
                    ring.push_json(l);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let data = tempfile::tempdir().unwrap();
    let name = unique("weir-restart");
    let toml = format!(
        r#"data_dir = "{dd}"
[api]
enabled = false

{source}
[sinks.raw_out]
type = "collect"
inputs = ["flows"]
name = "{name}-raw"
"#,
        dd = data.path().display(),
        source = hubble_source(
            srv.addr,
            "acknowledgements = true\nresume_overlap_secs = 0\n"
        ),
    );
    let raw = bucket(&format!("{name}-raw"));

    let first = start(&toml).await;
    wait_for("a third of the flows", Duration::from_secs(60), || {
        raw.lock().unwrap().len() >= total / 3
    })
    .await;
    first.shutdown_token().cancel();
    for o in tokio::time::timeout(Duration::from_secs(60), first.wait())
        .await
        .expect("the first run stops")
    {
        assert!(o.error.is_none(), "{}: {:?}", o.id, o.error);
    }
    let first_run = raw.lock().unwrap().len();
    assert!(
        first_run < total,
        "stopped mid-stream ({first_run} of {total})"
    );
    assert!(data.path().join("flows/resume.bin").exists());
    // Down for a moment: the ring moves on meanwhile.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requests_before = ring.requests.lock().unwrap().len();

    let second = start(&toml).await;
    feeder.await.unwrap();
    wait_for("every flow", Duration::from_secs(60), || {
        raw.lock().unwrap().len() >= total
    })
    .await;
    // Nothing more should come: give duplicates a moment to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    second.shutdown_token().cancel();
    tokio::time::timeout(Duration::from_secs(60), second.wait())
        .await
        .expect("the second run stops");

    let got = take(&format!("{name}-raw"));
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &got {
        *counts
            .entry(e["flow"]["uuid"].as_str().unwrap())
            .or_default() += 1;
    }
    let dups = counts.values().filter(|c| **c > 1).count();
    println!(
        "hubble restart: {total} flows, {first_run} in the first run, {} in all, {dups} repeated",
        got.len()
    );
    assert_eq!(dups, 0, "no flow twice");
    assert_eq!(counts.len(), total, "no flow lost");
    assert_eq!(got.len(), total);
    // The second run resumed at the flows' time, not the configured `since` (2000).
    let req = ring.requests.lock().unwrap()[requests_before].clone();
    let since = server::nanos(req.since.expect("since on restart"));
    assert!(
        since > 1_700_000_000 * 1_000_000_000,
        "the second run asked since {since}"
    );
    // And the ring had dropped flows by then: the oldest flows were not there to be asked.
    assert!(ring.oldest().is_some());
}
