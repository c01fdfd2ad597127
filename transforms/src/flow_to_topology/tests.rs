//! The service map of generated traffic with a known answer.

use std::path::PathBuf;

use serde_json::{json, Value as Json};
use weir_pipeline::event::{LogEvent, MetricValue, Value};

use super::*;

fn endpoint(ns: &str, app: &str, pod: &str, identity: u32) -> Json {
    json!({"namespace": ns, "pod_name": pod, "identity": identity,
        "labels": [format!("k8s:app={app}"), format!("k8s:io.kubernetes.pod.namespace={ns}")],
        "workloads": [{"name": app, "kind": "Deployment"}]})
}

/// A small traffic generator: flows as `hubble observe -o jsonpb` writes them.
struct Gen {
    flows: Vec<Json>,
    nanos: u64,
}

struct Conn<'a> {
    client: (&'a str, &'a str, &'a str, u32, &'a str),
    server: (&'a str, &'a str, &'a str, u32, &'a str),
    sport: u32,
    dport: u32,
}

impl Gen {
    fn new() -> Self {
        Gen {
            flows: Vec::new(),
            nanos: 0,
        }
    }

    fn time(&mut self) -> String {
        self.nanos += 1_000;
        format!("2026-11-20T10:00:00.{:09}Z", self.nanos)
    }

    fn ep(e: (&str, &str, &str, u32, &str)) -> Json {
        endpoint(e.0, e.1, e.2, e.3)
    }

    /// One TCP packet of `c` (`reply`: server to client), observed as the recorded Hubble
    /// flows are: at the sender's node leaving it (`EGRESS`, `TO_STACK`) or at the receiver's
    /// node entering it (`INGRESS`, `TO_ENDPOINT`).
    fn tcp(&mut self, c: &Conn<'_>, reply: bool, flags: Json, verdict: &str, dir: &str) {
        let (src, dst, sp, dp) = if reply {
            (c.server, c.client, c.dport, c.sport)
        } else {
            (c.client, c.server, c.sport, c.dport)
        };
        let (node, point) = if dir == "EGRESS" {
            (format!("node-{}", src.2), "TO_STACK")
        } else {
            (format!("node-{}", dst.2), "TO_ENDPOINT")
        };
        let mut f = json!({"time": self.time(), "verdict": verdict,
            "IP": {"source": src.4, "destination": dst.4, "ipVersion": "IPv4"},
            "l4": {"TCP": {"source_port": sp, "destination_port": dp, "flags": flags}},
            "source": Self::ep(src), "destination": Self::ep(dst), "Type": "L3_L4",
            "node_name": node, "event_type": {"type": 4, "sub_type": 0},
            "traffic_direction": dir, "trace_observation_point": point, "is_reply": reply});
        if verdict == "DROPPED" {
            f["drop_reason_desc"] = json!("POLICY_DENIED");
        }
        self.flows.push(json!({"flow": f}));
    }

    /// A connection seen at both ends: SYN at egress and ingress, SYN-ACK, ACK; with an HTTP
    /// exchange when `http` is `Some((code, latency_ns))`.
    fn connection(&mut self, c: &Conn<'_>, http: Option<(u32, u64)>) {
        self.tcp(c, false, json!({"SYN": true}), "FORWARDED", "EGRESS");
        self.tcp(c, false, json!({"SYN": true}), "FORWARDED", "INGRESS");
        self.tcp(
            c,
            true,
            json!({"SYN": true, "ACK": true}),
            "FORWARDED",
            "INGRESS",
        );
        self.tcp(c, false, json!({"ACK": true}), "FORWARDED", "EGRESS");
        if let Some((code, latency)) = http {
            let base = |g: &mut Gen, reply: bool| {
                let (src, dst, sp, dp) = if reply {
                    (c.server, c.client, c.dport, c.sport)
                } else {
                    (c.client, c.server, c.sport, c.dport)
                };
                json!({"time": g.time(), "verdict": "FORWARDED", "Type": "L7",
                    "IP": {"source": src.4, "destination": dst.4},
                    "l4": {"TCP": {"source_port": sp, "destination_port": dp}},
                    "source": Self::ep(src), "destination": Self::ep(dst),
                    "traffic_direction": "INGRESS", "is_reply": reply})
            };
            let mut req = base(self, false);
            req["l7"] = json!({"type": "REQUEST", "http": {"method": "GET", "url": "/"}});
            self.flows.push(json!({"flow": req}));
            let mut resp = base(self, true);
            resp["l7"] = json!({"type": "RESPONSE", "latency_ns": latency.to_string(),
                "http": {"method": "GET", "url": "/", "code": code}});
            self.flows.push(json!({"flow": resp}));
        }
    }

    /// `c` closed by FIN-ACK from each side, then the client's last ACK, each seen at both
    /// ends.
    fn fin(&mut self, c: &Conn<'_>) {
        for reply in [false, true] {
            let flags = json!({"FIN": true, "ACK": true});
            self.tcp(c, reply, flags.clone(), "FORWARDED", "EGRESS");
            self.tcp(c, reply, flags, "FORWARDED", "INGRESS");
        }
        self.tcp(c, false, json!({"ACK": true}), "FORWARDED", "EGRESS");
        self.tcp(c, false, json!({"ACK": true}), "FORWARDED", "INGRESS");
    }

    /// `c` reset by the server, seen at both ends.
    fn rst(&mut self, c: &Conn<'_>) {
        self.tcp(c, true, json!({"RST": true}), "FORWARDED", "EGRESS");
        self.tcp(c, true, json!({"RST": true}), "FORWARDED", "INGRESS");
    }

    /// A connection denied by policy at the server: forwarded at the client's egress, dropped
    /// at the server's ingress, retransmitted once (dropped again).
    fn denied(&mut self, c: &Conn<'_>) {
        self.tcp(c, false, json!({"SYN": true}), "FORWARDED", "EGRESS");
        self.tcp(c, false, json!({"SYN": true}), "DROPPED", "INGRESS");
        self.tcp(c, false, json!({"SYN": true}), "FORWARDED", "EGRESS");
        self.tcp(c, false, json!({"SYN": true}), "DROPPED", "INGRESS");
    }

    fn dns(&mut self, client: (&str, &str, &str, u32, &str), rcode: Option<u32>) {
        let dns = endpoint("kube-system", "coredns", "coredns-1", 102);
        let t = self.time();
        self.flows.push(json!({"flow": {"time": t, "verdict": "FORWARDED", "Type": "L7",
            "IP": {"source": client.4, "destination": "10.0.0.53"},
            "l4": {"UDP": {"source_port": 40000, "destination_port": 53}},
            "source": Self::ep(client), "destination": dns, "is_reply": false,
            "l7": {"type": "REQUEST", "dns": {"query": "api.shop.svc.cluster.local.", "qtypes": ["A"]}}}}));
        if let Some(rcode) = rcode {
            let t = self.time();
            let dns = endpoint("kube-system", "coredns", "coredns-1", 102);
            self.flows.push(
                json!({"flow": {"time": t, "verdict": "FORWARDED", "Type": "L7",
                "IP": {"source": "10.0.0.53", "destination": client.4},
                "l4": {"UDP": {"source_port": 53, "destination_port": 40000}},
                "source": dns, "destination": Self::ep(client), "is_reply": true,
                "l7": {"type": "RESPONSE", "dns": {"query": "x.", "rcode": rcode}}}}),
            );
        }
    }

    fn world(&mut self, client: (&str, &str, &str, u32, &str), sport: u32) {
        let t = self.time();
        self.flows.push(json!({"flow": {"time": t, "verdict": "FORWARDED",
            "IP": {"source": client.4, "destination": "142.250.0.1"},
            "l4": {"TCP": {"source_port": sport, "destination_port": 443, "flags": {"SYN": true}}},
            "source": Self::ep(client), "destination": {"identity": 2, "labels": ["reserved:world"]},
            "destination_names": ["api.example.com"], "is_reply": false}}));
    }

    fn events(&self) -> Vec<Event> {
        self.flows
            .iter()
            .map(|f| {
                Event::Log(LogEvent::from_value(
                    Value::from(f.clone()),
                    Default::default(),
                ))
            })
            .collect()
    }

    /// The same flows as lines of `hubble observe -o jsonpb` decoded by `hubble_jsonpb`: held
    /// in typed form.
    fn typed_events(&self) -> Vec<Event> {
        let mut out = Vec::new();
        for f in &self.flows {
            let line = serde_json::to_vec(f).unwrap();
            weir_records::flow::HubbleJsonpb::decoder()
                .decode(line.into(), &None, &mut out)
                .unwrap();
        }
        for e in &out {
            assert!(e
                .as_log()
                .unwrap()
                .typed::<weir_records::flow::FlowLog>()
                .is_some());
        }
        out
    }
}

const WEB: (&str, &str, &str, u32, &str) = ("shop", "web", "web-5d9-a", 100, "10.0.1.1");
const API: (&str, &str, &str, u32, &str) = ("shop", "api", "api-7c4-b", 200, "10.0.2.2");

fn generated() -> Gen {
    let mut g = Gen::new();
    for i in 0..10 {
        let c = Conn {
            client: WEB,
            server: API,
            sport: 30_000 + i,
            dport: 8080,
        };
        // 8 x 200 with 10 ms, 1 x 404 with 20 ms, 1 x 503 with 2 s.
        let http = match i {
            0 => (404, 20_000_000),
            1 => (503, 2_000_000_000),
            _ => (200, 10_000_000),
        };
        g.connection(&c, Some(http));
    }
    for i in 0..3 {
        g.denied(&Conn {
            client: WEB,
            server: API,
            sport: 31_000 + i,
            dport: 8080,
        });
    }
    g.dns(WEB, Some(0));
    g.dns(WEB, Some(3));
    g.dns(WEB, None);
    g.world(WEB, 50_000);
    g.world(WEB, 50_001);
    g
}

fn build(cfg: FlowToTopologyConfig) -> (FlowToTopology, Arc<ComponentMetrics>) {
    let cx = TransformContext {
        id: Arc::from("map"),
        data_dir: PathBuf::new(),
        metrics: ComponentMetrics::detached("map"),
    };
    let m = Arc::clone(&cx.metrics);
    (FlowToTopology::new(cfg, m.clone()), m)
}

fn run(t: &mut FlowToTopology, events: Vec<Event>, out: &mut TransformOutput) {
    // In batches of 7, so state carries across batches.
    let mut it = events.into_iter().peekable();
    while it.peek().is_some() {
        let b: Vec<Event> = it.by_ref().take(7).collect();
        t.transform(EventBatch::new(b), out);
    }
}

fn topology(out: &TransformOutput) -> Vec<Json> {
    out.default
        .iter()
        .filter(|e| e.as_log().is_some())
        .map(Event::to_json_value)
        .collect()
}

fn edge<'a>(topo: &'a Json, id: &str) -> &'a Json {
    topo["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id)
        .unwrap_or_else(|| panic!("no edge {id} in {topo:#}"))
}

#[test]
fn generated_traffic_gives_the_known_map() {
    let g = generated();
    let (mut t, metrics) = build(FlowToTopologyConfig::default());
    let mut out = TransformOutput::default();
    run(&mut t, g.events(), &mut out);
    assert!(out.default.is_empty(), "nothing before the window ends");
    t.flush(&mut out);
    let topo = topology(&out);
    assert_eq!(topo.len(), 1);
    let topo = &topo[0];
    assert_eq!(topo["flows"], g.flows.len());
    assert_eq!(topo["granularity"], "workload");
    assert_eq!(topo["first_flow_time"], "2026-11-20T10:00:00.000001Z");

    let e = edge(topo, "shop/web -> shop/api:8080/TCP");
    // 10 connections opened, each seen at both ends; the 3 denied ones are not opened.
    assert_eq!(e["connections"], 10);
    assert_eq!(
        e["verdicts"],
        json!({"FORWARDED": 10 * 6 + 3 * 2, "DROPPED": 6})
    );
    assert_eq!(e["drops"], json!({"POLICY_DENIED": 6}));
    assert_eq!(e["http_requests"], 10);
    assert_eq!(e["http_responses"], json!({"2xx": 8, "4xx": 1, "5xx": 1}));
    assert_eq!(e["http_status"], json!({"200": 8, "404": 1, "503": 1}));
    assert_eq!(e["latency_ns_count"], 10);
    assert_eq!(
        e["latency_ns_sum"],
        8 * 10_000_000 + 20_000_000 + 2_000_000_000u64
    );
    // Cumulative buckets: 8 at <= 10 ms, 9 at <= 25 ms, all 10 at <= 2.5 s.
    let h = e["latency_histogram"].as_array().unwrap();
    assert_eq!(h[1], json!({"le": 0.01, "count": 8}));
    assert_eq!(h[2], json!({"le": 0.025, "count": 9}));
    assert_eq!(h[7]["count"], 9);
    assert_eq!(h[8], json!({"le": 2.5, "count": 10}));
    assert_eq!(h[11], json!({"le": "+Inf", "count": 10}));
    // Replies were counted on the connection's edge: there is no api -> web edge.
    assert!(topo["edges"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| !e["id"].as_str().unwrap().starts_with("shop/api")));

    let dns = edge(topo, "shop/web -> kube-system/coredns:53/UDP");
    assert_eq!(dns["dns_queries"], 3);
    assert_eq!(dns["dns_rcodes"], json!({"NOERROR": 1, "NXDOMAIN": 1}));
    let world = edge(topo, "shop/web -> world(api.example.com):443/TCP");
    assert_eq!(world["connections"], 2);

    let nodes: Vec<&str> = topo["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        nodes,
        vec![
            "kube-system/coredns",
            "shop/api",
            "shop/web",
            "world(api.example.com)"
        ]
    );
    assert_eq!(metrics.errors_total(), 0);
}

#[test]
fn metrics_output_has_hubble_style_labels() {
    let g = generated();
    let (mut t, _) = build(FlowToTopologyConfig {
        output: OutputKind::Metrics,
        ..Default::default()
    });
    let mut out = TransformOutput::default();
    run(&mut t, g.events(), &mut out);
    t.flush(&mut out);
    assert!(out.default.iter().all(|e| matches!(e, Event::Metric(_))));
    let find = |name: &str, extra: &[(&str, &str)]| {
        out.default
            .iter()
            .filter_map(|e| match e {
                Event::Metric(m) => Some(m),
                _ => None,
            })
            .find(|m| {
                m.name == name
                    && m.tags.get("destination_workload").map(String::as_str) == Some("api")
                    && extra
                        .iter()
                        .all(|(k, v)| m.tags.get(*k).map(String::as_str) == Some(*v))
            })
            .unwrap_or_else(|| panic!("no {name} {extra:?}"))
            .clone()
    };
    let opened = find("tcp_connections_opened_total", &[]);
    assert_eq!(opened.value, MetricValue::Counter { value: 10.0 });
    assert_eq!(opened.namespace.as_deref(), Some("hubble"));
    for (k, v) in [
        ("source_namespace", "shop"),
        ("source_workload", "web"),
        ("destination_namespace", "shop"),
        ("destination_port", "8080"),
        ("protocol", "TCP"),
    ] {
        assert_eq!(opened.tags.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert_eq!(
        find("flows_processed_total", &[("verdict", "DROPPED")]).value,
        MetricValue::Counter { value: 6.0 }
    );
    assert_eq!(
        find("policy_drops_total", &[("reason", "POLICY_DENIED")]).value,
        MetricValue::Counter { value: 6.0 }
    );
    assert_eq!(
        find(
            "http_responses_total",
            &[("status", "503"), ("status_class", "5xx")]
        )
        .value,
        MetricValue::Counter { value: 1.0 }
    );
    match find("http_request_duration_seconds", &[]).value {
        MetricValue::AggregatedHistogram { count, sum, .. } => {
            assert_eq!(count, 10);
            assert!((sum - 2.1).abs() < 1e-9, "{sum}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn windows_split_the_counts_and_a_straddling_connection_counts_once() {
    let g = generated();
    let events = g.events();
    // Cut between the egress SYN and the ingress SYN of the first connection.
    let (first, rest) = events.split_at(1);
    let (mut t, _) = build(FlowToTopologyConfig::default());
    let mut out = TransformOutput::default();
    run(&mut t, first.to_vec(), &mut out);
    t.on_tick(&mut out);
    run(&mut t, rest.to_vec(), &mut out);
    t.on_tick(&mut out);
    // An empty window emits nothing.
    t.on_tick(&mut out);
    t.flush(&mut out);
    let topo = topology(&out);
    assert_eq!(topo.len(), 2);
    let id = "shop/web -> shop/api:8080/TCP";
    assert_eq!(edge(&topo[0], id)["connections"], 1);
    assert_eq!(edge(&topo[1], id)["connections"], 9);
    assert_eq!(
        topo[0]["flows"].as_u64().unwrap() + topo[1]["flows"].as_u64().unwrap(),
        g.flows.len() as u64
    );
}

/// One client reusing its 4-tuple three times: the first connection closed by FIN, the second
/// by RST, the third still open; every SYN seen at both ends, the first retransmitted.
fn reused_tuple() -> Gen {
    let mut g = Gen::new();
    let c = Conn {
        client: WEB,
        server: API,
        sport: 40_000,
        dport: 8080,
    };
    g.connection(&c, Some((200, 1_000_000)));
    g.tcp(&c, false, json!({"SYN": true}), "FORWARDED", "EGRESS");
    g.fin(&c);
    g.connection(&c, None);
    g.rst(&c);
    g.connection(&c, Some((200, 1_000_000)));
    g
}

/// The connections counted on web -> api when `events` are mapped in one window.
fn connections(events: Vec<Event>) -> Json {
    let (mut t, metrics) = build(FlowToTopologyConfig::default());
    let mut out = TransformOutput::default();
    run(&mut t, events, &mut out);
    t.flush(&mut out);
    assert_eq!(metrics.errors_total(), 0);
    edge(&topology(&out)[0], "shop/web -> shop/api:8080/TCP")["connections"].clone()
}

#[test]
fn a_tuple_reused_after_fin_or_rst_is_a_new_connection_and_a_syn_at_both_ends_counts_once() {
    let g = reused_tuple();
    // As the flows happened, as trees and as `hubble_jsonpb` lines (typed).
    assert_eq!(connections(g.events()), 3);
    assert_eq!(connections(g.typed_events()), 3);
    // The two nodes' flows do not arrive interleaved as they happened: all of one node's,
    // then all of the other's, either way round (the flows' times order them).
    for server_first in [false, true] {
        let mut flows = g.flows.clone();
        flows.sort_by_key(|f| {
            let on_server = f["flow"]["node_name"] == "node-api-7c4-b";
            on_server != server_first
        });
        let events = flows
            .into_iter()
            .map(|f| Event::Log(LogEvent::from_value(Value::from(f), Default::default())))
            .collect();
        assert_eq!(connections(events), 3, "server first: {server_first}");
    }
    // Ten SYNs of one connection (both ends, retransmitted) with no FIN or RST: one.
    let mut once = Gen::new();
    let c = Conn {
        client: WEB,
        server: API,
        sport: 40_001,
        dport: 8080,
    };
    for _ in 0..5 {
        once.tcp(&c, false, json!({"SYN": true}), "FORWARDED", "EGRESS");
        once.tcp(&c, false, json!({"SYN": true}), "FORWARDED", "INGRESS");
    }
    assert_eq!(connections(once.events()), 1);
}

#[test]
fn edges_over_the_cap_are_counted_not_mapped() {
    let g = generated();
    let (mut t, metrics) = build(FlowToTopologyConfig {
        max_edges: 1,
        ..Default::default()
    });
    let mut out = TransformOutput::default();
    run(&mut t, g.events(), &mut out);
    t.flush(&mut out);
    let topo = &topology(&out)[0];
    assert_eq!(topo["edges"].as_array().unwrap().len(), 1);
    // The DNS (5 flows) and world (2) flows did not fit.
    assert_eq!(topo["overflow_flows"], 5 + 2);
    assert_eq!(metrics.errors().get("edge_overflow"), Some(&7));
}

#[test]
fn an_edge_counts_a_bounded_number_of_drop_reasons() {
    let mut g = generated();
    let dropped = g
        .flows
        .iter()
        .find(|f| f["flow"]["verdict"] == "DROPPED")
        .cloned()
        .unwrap();
    g.flows.clear();
    let n = super::window::MAX_LABELS_PER_EDGE + 50;
    for i in 0..n {
        let mut f = dropped.clone();
        f["flow"]["drop_reason_desc"] = json!(format!("REASON_{i}"));
        g.flows.push(f);
    }
    // A known reason still counts past the cap.
    let mut again = dropped;
    again["flow"]["drop_reason_desc"] = json!("REASON_0");
    g.flows.push(again);
    let (mut t, metrics) = build(FlowToTopologyConfig::default());
    let mut out = TransformOutput::default();
    run(&mut t, g.events(), &mut out);
    t.flush(&mut out);
    let topo = &topology(&out)[0];
    let edges = topo["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0]["flows"], n + 1);
    let drops = edges[0]["drops"].as_object().unwrap();
    assert_eq!(drops.len(), super::window::MAX_LABELS_PER_EDGE);
    assert_eq!(drops["REASON_0"], 2);
    assert_eq!(metrics.errors().get("label_overflow"), Some(&50));
}

#[test]
fn events_that_are_not_flows_are_counted_and_skipped() {
    let (mut t, metrics) = build(FlowToTopologyConfig::default());
    let mut out = TransformOutput::default();
    let mut events = generated().events();
    events.insert(3, LogEvent::from_map(Default::default()).into());
    events.insert(
        5,
        Event::Log(LogEvent::from_value(
            Value::from(json!({"message": "GET / 200", "flow": "not an object"})),
            Default::default(),
        )),
    );
    run(&mut t, events, &mut out);
    t.flush(&mut out);
    assert_eq!(metrics.errors().get("not_a_flow"), Some(&2));
    let topo = &topology(&out)[0];
    assert_eq!(topo["flows"], generated().flows.len());
}

#[test]
fn granularities_name_nodes_differently() {
    for (g, id) in [
        (
            Granularity::Pod,
            "shop/web-5d9-a -> shop/api-7c4-b:8080/TCP",
        ),
        (Granularity::Namespace, "shop -> shop:8080/TCP"),
        (
            Granularity::Identity,
            "identity:100 -> identity:200:8080/TCP",
        ),
        (Granularity::Ip, "10.0.1.1 -> 10.0.2.2:8080/TCP"),
    ] {
        let (mut t, _) = build(FlowToTopologyConfig {
            granularity: g,
            ..Default::default()
        });
        let mut out = TransformOutput::default();
        run(&mut t, generated().events(), &mut out);
        t.flush(&mut out);
        assert_eq!(edge(&topology(&out)[0], id)["connections"], 10, "{g:?}");
    }
}

#[test]
fn config_is_checked() {
    let cfg: FlowToTopologyConfig = toml::from_str("").unwrap();
    assert_eq!(cfg.window_secs, 60);
    assert_eq!(cfg.granularity, Granularity::Workload);
    assert!(toml::from_str::<FlowToTopologyConfig>("granularity = 'service'").is_err());
    assert!(toml::from_str::<FlowToTopologyConfig>("windows_secs = 1").is_err());
    let cx = TransformContext {
        id: Arc::from("t"),
        data_dir: PathBuf::new(),
        metrics: ComponentMetrics::detached("t"),
    };
    let err = |text: &str| {
        toml::from_str::<FlowToTopologyConfig>(text)
            .unwrap()
            .build(&cx)
            .err()
            .unwrap()
            .to_string()
    };
    assert!(err("max_edges = 0").contains("max_edges"));
    assert!(err("window_secs = 99999999999").contains("window_secs"));
    let both: FlowToTopologyConfig = toml::from_str("output = 'both'").unwrap();
    assert_eq!(
        both.outputs()[0].data_type,
        DataType::LOG.union(DataType::METRIC)
    );
}

#[test]
fn typed_flows_give_the_same_map_and_metrics_as_trees() {
    let strip = |mut t: Json| {
        for k in ["window_start", "window_end"] {
            t.as_object_mut().unwrap().remove(k);
        }
        t
    };
    for g in [
        Granularity::Workload,
        Granularity::Pod,
        Granularity::Namespace,
        Granularity::Identity,
        Granularity::Ip,
    ] {
        let mut results = Vec::new();
        for typed in [false, true] {
            let (mut t, metrics) = build(FlowToTopologyConfig {
                granularity: g,
                output: OutputKind::Both,
                ..Default::default()
            });
            let mut out = TransformOutput::default();
            let gen = generated();
            let events = if typed {
                gen.typed_events()
            } else {
                gen.events()
            };
            run(&mut t, events, &mut out);
            t.flush(&mut out);
            let topo = strip(topology(&out).remove(0));
            let metrics_out: Vec<Json> = out
                .default
                .iter()
                .filter(|e| e.as_log().is_none())
                .map(|e| {
                    let mut m = e.to_json_value();
                    m.as_object_mut().unwrap().remove("timestamp");
                    m
                })
                .collect();
            assert!(!metrics_out.is_empty());
            assert_eq!(metrics.errors_total(), 0);
            results.push((topo, metrics_out));
        }
        assert_eq!(results[0], results[1], "{g:?}");
    }
}

#[test]
fn the_window_holds_acknowledgements_until_what_it_emits_is_delivered() {
    use crate::holds::testing::{acked_batch, all_held, deliver, status};
    let (mut t, _) = build(FlowToTopologyConfig {
        output: OutputKind::Both,
        ..Default::default()
    });
    let mut out = TransformOutput::default();
    let (flows, mut rx) = acked_batch(generated().events());
    let (garbage, mut rx_garbage) =
        acked_batch(vec![LogEvent::from_map(Default::default()).into()]);
    t.transform(flows, &mut out);
    t.transform(garbage, &mut out);
    assert!(out.is_empty());
    assert_eq!(status(&mut rx_garbage), Some(EventStatus::Rejected));
    assert_eq!(status(&mut rx), None, "the window is open");
    t.on_tick(&mut out);
    assert!(out.default.len() > 1, "a topology event and metrics");
    assert!(all_held(&out));
    assert_eq!(status(&mut rx), None, "emitted, not delivered yet");
    deliver(&mut out);
    assert_eq!(status(&mut rx), Some(EventStatus::Delivered));

    // Lost with the window open: errored, so the source reads it again.
    let (flows, mut rx) = acked_batch(generated().events());
    t.transform(flows, &mut TransformOutput::default());
    drop(t);
    assert_eq!(status(&mut rx), Some(EventStatus::Errored));
}
