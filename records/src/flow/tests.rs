use bytes::Bytes;

use super::*;
use weir_pipeline::codec::parse_json_value;

const LINE: &str = r#"{"flow":{"time":"2026-11-20T10:00:00.000000017Z","verdict":"DROPPED","drop_reason_desc":"POLICY_DENIED","IP":{"source":"10.244.1.59","destination":"10.244.9.21","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":8001,"destination_port":"53291","flags":{"SYN":true}}},"source":{"ID":101,"identity":10001,"namespace":"shop","labels":["k8s:k8s-app=cart-k8s","k8s:app=cart","reserved:host",7],"pod_name":"cart-6d9f7c-34dad","workloads":[{"kind":"Deployment"},{"name":"cart","kind":"Deployment"}]},"destination":{"identity":2,"labels":["reserved:world"]},"destination_names":["","api.example.com"],"is_reply":false,"reply":true,"l7":{"type":"RESPONSE","latency_ns":"112421261","http":{"code":201}},"bytes":1.5e3},"node_name":"node-1","time":"2026-11-20T10:00:00.000000017Z"}"#;

fn log(line: &str) -> Option<FlowLog> {
    FlowLog::from_jsonpb_line(Bytes::copy_from_slice(line.as_bytes()))
}

#[test]
fn a_jsonpb_line_gives_the_summary_and_its_own_tree() {
    let f = log(LINE).unwrap();
    let s = f.summary();
    let t = |span| std::str::from_utf8(f.text(span)).unwrap();
    assert_eq!(s.verdict, 2);
    assert_eq!(s.drop_reason.map(t), Some("POLICY_DENIED"));
    assert!(!s.is_reply, "is_reply, a boolean, wins over reply");
    assert_eq!((t(s.src_ip), t(s.dst_ip)), ("10.244.1.59", "10.244.9.21"));
    assert_eq!((s.proto, s.src_port, s.dst_port), (Proto::Tcp, 8001, 53291));
    assert!(s.syn_only);
    let src = s.source.unwrap();
    assert_eq!(t(src.namespace), "shop");
    assert_eq!(t(src.workload), "cart");
    assert_eq!(src.app.map(t), Some("cart"));
    assert_eq!(src.k8s_app.map(t), Some("cart-k8s"));
    assert_eq!(src.reserved.map(t), Some("host"));
    assert_eq!(src.identity, 10001);
    let dst = s.destination.unwrap();
    assert_eq!((dst.identity, dst.reserved.map(t)), (2, Some("world")));
    assert_eq!(t(s.destination_name), "api.example.com");
    assert!(s.source_name.is_empty());
    assert_eq!(
        s.l7,
        Some(L7 {
            kind: L7Type::Response,
            latency_ns: Some(112_421_261),
            record: L7Record::Http { code: 201 },
        })
    );
    assert_eq!(s.bytes, Some(1500));
    assert_eq!(s.time_nanos, Some(1_795_168_800_000_000_017));
    let json = parse_json_value(&Bytes::from_static(LINE.as_bytes())).unwrap();
    assert_eq!(f.to_value(), json);
}

#[test]
fn lines_the_typed_reader_leaves_to_the_json_codec() {
    // Not JSON, not an object, no flow object, a flow that is not an object.
    for line in [
        "{\"flow\":{\"verdict\":\"FORWARDED\"}",
        "{\"flow\":{}} trailing",
        "[{\"flow\":{}}]",
        "42",
        r#"{"node_status":{"state":"NODE_CONNECTED"}}"#,
        r#"{"flow":"FORWARDED"}"#,
        r#"{"flow":null}"#,
        // A string the summary needs has an escape, or a key it needs is duplicated.
        r#"{"flow":{"IP":{"source":"10.0.0.\u0031"}}}"#,
        r#"{"flow":{"verdict":"FORWARDED","verdict":"DROPPED"}}"#,
        r#"{"flow":{}, "flow":{}}"#,
    ] {
        assert!(log(line).is_none(), "{line}");
    }
    assert!(
        FlowLog::from_jsonpb_line(Bytes::from_static(b"{\"flow\":{\"a\":\"\xff\"}}")).is_none()
    );
    // Escapes where the summary does not look are fine, and in the tree.
    let f = log(r#"{"flow":{"Summary":"a \"quoted\" word","verdict":"FORWARDED"}}"#).unwrap();
    assert_eq!(f.summary().verdict, 1);
    let tree = f.to_value();
    let summary = tree
        .as_object()
        .and_then(|r| r.get("flow"))
        .and_then(Value::as_object)
        .and_then(|f| f.get("Summary"));
    assert_eq!(
        summary,
        Some(&Value::Bytes(Bytes::from_static(b"a \"quoted\" word")))
    );
}

#[test]
fn odd_field_types_read_as_the_tree_reader_reads_them() {
    // An object field holding an array or a string is absent; a string field holding a
    // number is absent; a non-array label list has no labels.
    let f = log(
        r#"{"flow":{"IP":["10.0.0.1","10.0.0.2"],"verdict":3,"l4":{"TCP":null,"UDP":{"source_port":-1,"destination_port":18446744073709551615},"ICMPv4":null},"source":{"labels":"k8s:app=x","identity":"5","namespace":null},"destination":[1],"l7":{"dns":{"rcode":"3"},"latency_ns":true}}}"#,
    )
    .unwrap();
    let s = f.summary();
    assert!(s.src_ip.is_empty() && s.dst_ip.is_empty());
    assert_eq!(s.verdict, 0);
    assert_eq!((s.proto, s.src_port, s.dst_port), (Proto::Udp, 0, u32::MAX));
    let src = s.source.unwrap();
    assert_eq!((src.app, src.identity), (None, 0));
    assert!(src.namespace.is_empty());
    assert!(s.destination.is_none());
    let l7 = s.l7.unwrap();
    assert_eq!(
        (l7.record, l7.latency_ns),
        (L7Record::Dns { rcode: 3 }, None)
    );
    let icmp = log(r#"{"flow":{"l4":{"ICMPv6":null}}}"#).unwrap();
    assert_eq!(icmp.summary().proto, Proto::IcmpV6);
}

#[test]
fn a_tree_producer_builds_its_own_tree() {
    #[derive(Debug)]
    struct Fixed;
    impl FlowTree for Fixed {
        fn to_value(&self) -> Value {
            Value::from(serde_json::json!({"flow": {"verdict": "FORWARDED"}}))
        }
    }
    let mut text = TextBuilder::default();
    let src_ip = text.push(b"10.0.0.1");
    assert!(text.push(b"").is_empty());
    let f = FlowLog::new(
        text.finish(),
        FlowSummary {
            verdict: 1,
            src_ip,
            ..Default::default()
        },
        Box::new(Fixed),
    );
    assert_eq!(f.text(f.summary().src_ip), b"10.0.0.1");
    assert_eq!(f.to_value(), Fixed.to_value());
}

#[test]
fn rfc3339_parses_like_chrono() {
    for s in [
        "2026-11-20T10:00:00.000215049Z",
        "1970-01-01T00:20:34.567800Z",
        "2000-02-29T23:59:59Z",
        "2023-08-21T12:12:18.5+02:00",
    ] {
        let c = chrono::DateTime::parse_from_rfc3339(s).unwrap();
        assert_eq!(
            parse_rfc3339_nanos(s.as_bytes()),
            c.timestamp_nanos_opt(),
            "{s}"
        );
    }
    assert_eq!(parse_rfc3339_nanos(b"2026-11-20"), None);
    assert_eq!(parse_rfc3339_nanos(b"2026-11-20T10:00:00.Z"), None);
    assert_eq!(parse_rfc3339_nanos(b"2026-11-20T10:00:00Q"), None);
}

/// Hubble's jsonpb lines (the boutique capture, upstream's samples), mutated: a line is a
/// flow or an error, never a panic; every span of the summary lies within its text, and the
/// flow's tree can be read whole.
#[test]
fn fuzz_hubble_jsonpb() {
    let mut lines = weir_testing::shared_lines("hubble", "boutique-flows.jsonl.gz");
    lines.extend(weir_testing::shared_lines(
        "hubble",
        "upstream-samples.jsonl",
    ));
    // Every 50th line: the capture has thousands of nearly identical flows.
    let mut seeds: Vec<Vec<u8>> = lines.iter().step_by(50).cloned().collect();
    seeds.push(LINE.as_bytes().to_vec());
    weir_testing::fuzz::Fuzz::new("hubble_jsonpb")
        .seeds(seeds)
        .dict([
            "\"flow\"",
            "\"time\"",
            "\"verdict\"",
            "\"IP\"",
            "\"l4\"",
            "\"TCP\"",
            "\"UDP\"",
            "\"source\"",
            "\"destination\"",
            "\"labels\"",
            "\"l7\"",
            "\"latency_ns\"",
            "\"is_reply\"",
            "\"workloads\"",
            "\"reserved:",
            "k8s:app=",
            "null",
            "\"\\u0000\"",
            "1e400",
            "-1",
            "\"2026-11-20T10:00:00.999999999999Z\"",
        ])
        .run(|line| {
            if let Some(f) = FlowLog::from_jsonpb_line(Bytes::copy_from_slice(line)) {
                let s = *f.summary();
                let mut spans = vec![s.src_ip, s.dst_ip, s.source_name, s.destination_name];
                spans.extend(s.drop_reason);
                for e in [s.source, s.destination].into_iter().flatten() {
                    spans.extend([e.namespace, e.pod_name, e.workload]);
                    spans.extend([e.app, e.k8s_app, e.reserved].into_iter().flatten());
                }
                for span in spans {
                    let _ = f.text(span);
                }
            }
            let mut out = Vec::new();
            if crate::flow::codec::HubbleJsonpb::decoder()
                .decode(Bytes::copy_from_slice(line), &None, &mut out)
                .is_ok()
            {
                for ev in &out {
                    let mut json = Vec::new();
                    let _ = ev.as_log().map(|l| l.write_json(&mut json));
                }
            }
        });
}
