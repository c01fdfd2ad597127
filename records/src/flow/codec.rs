//! The `hubble_jsonpb` codec: lines of `hubble observe -o jsonpb` with each flow held in
//! typed form ([`FlowLog`]), registered by the binary like a component.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use weir_pipeline::codec::{DecodeError, Decoder, FrameDecoder};
use weir_pipeline::event::{Event, EventMetadata, LogEvent};

use super::FlowLog;

/// `hubble observe -o jsonpb` lines. A line with a `flow` object becomes a [`FlowLog`] event
/// (the whole line validated as JSON, the fields `flow_to_topology` needs read, the tree
/// built from the line only if something else reads the fields); any other line is decoded
/// exactly as by `json`, errors included.
#[derive(Debug)]
pub struct HubbleJsonpb;

/// The codec, as registered (`decoding.codec = "hubble_jsonpb"`).
pub static HUBBLE_JSONPB: HubbleJsonpb = HubbleJsonpb;

impl HubbleJsonpb {
    /// This codec as a [`Decoder`].
    pub fn decoder() -> Decoder {
        Decoder::Registered(&HUBBLE_JSONPB)
    }
}

impl FrameDecoder for HubbleJsonpb {
    fn name(&self) -> &'static str {
        "hubble_jsonpb"
    }

    fn decode(
        &self,
        frame: Bytes,
        source_id: &Option<Arc<str>>,
        ingest_time: DateTime<Utc>,
        out: &mut Vec<Event>,
    ) -> Result<(), DecodeError> {
        // The typed reader refuses whatever it does not take as a flow (invalid JSON
        // included): `json` then gives those lines their fields, or their error.
        if let Some(flow) = FlowLog::from_jsonpb_line(frame.clone()) {
            let meta = EventMetadata::at(source_id.clone(), ingest_time);
            out.push(LogEvent::from_typed(flow, meta).into());
            return Ok(());
        }
        Decoder::Json.decode_at(frame, source_id, ingest_time, out)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use weir_pipeline::codec::{Decoder, DEFAULT_MAX_LINE_BYTES};
    use weir_pipeline::event::{parse_path, Event, Value};

    use super::HubbleJsonpb;
    use crate::flow::FlowLog;

    fn decode_all(d: Decoder, line: &[u8]) -> Result<Vec<Event>, String> {
        let mut out = Vec::new();
        d.decode(Bytes::copy_from_slice(line), &None, &mut out)
            .map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn the_codec_is_found_by_its_name_once_registered() {
        let mut r = weir_pipeline::component::Registry::default();
        crate::register(&mut r);
        assert_eq!(
            Decoder::by_name("hubble_jsonpb"),
            Some(HubbleJsonpb::decoder())
        );
        assert!(Decoder::names().contains(&"hubble_jsonpb"));
    }

    const FLOW: &[u8] = br#"{"flow":{"time":"2026-11-20T10:00:00.000000017Z","verdict":"FORWARDED","IP":{"source":"10.244.1.59","destination":"10.244.9.21","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":8001,"destination_port":53291,"flags":{"ACK":true}}},"source":{"ID":101,"identity":10001,"namespace":"shop","labels":["k8s:app=cart"],"pod_name":"cart-6d9f7c-34dad","workloads":[{"name":"cart","kind":"Deployment"}]},"Type":"L7","is_reply":true,"l7":{"type":"RESPONSE","latency_ns":"112421261","http":{"code":201,"method":"GET","url":"http://cart:8001/api?q=\"x\""}}},"node_name":"node-1","time":"2026-11-20T10:00:00.000000017Z"}"#;

    #[test]
    fn hubble_jsonpb_holds_a_flow_typed_with_the_json_codec_fields() {
        let typed = decode_all(HubbleJsonpb::decoder(), FLOW).unwrap();
        let tree = decode_all(Decoder::Json, FLOW).unwrap();
        let (Some(typed), Some(tree)) = (typed[0].as_log(), tree[0].as_log()) else {
            panic!("not logs");
        };
        let flow = typed.typed::<FlowLog>().unwrap();
        assert_eq!(flow.text(flow.summary().src_ip), b"10.244.1.59");
        assert_eq!(typed.value(), tree.value());
        assert_eq!(
            typed.get(&parse_path("flow.l7.http.url").unwrap()).cloned(),
            Some(Value::from("http://cart:8001/api?q=\"x\""))
        );
    }

    #[test]
    fn hubble_jsonpb_reports_what_json_reports_for_other_lines() {
        let cases: [&[u8]; 10] = [
            b"",
            b"\x00\x01garbage\xff",
            b"{\"flow\":{\"verdict\":\"FORWARDED\"}",
            b"{\"flow\":{\"verdict\":\"\xff\"}}",
            b"{\"flow\":{}} {}",
            b"\"a string\"",
            b"[{\"flow\":{}}, 3]",
            b"[{\"flow\":{\"verdict\":\"DROPPED\"}}, {\"a\":1}]",
            br#"{"node_status":{"state_change":"NODE_CONNECTED"},"time":"2026-11-20T10:00:00Z"}"#,
            br#"{"flow":{"IP":{"source":"10.0.0.\u0031"}},"flow":null}"#,
        ];
        for line in cases {
            let json = decode_all(Decoder::Json, line);
            let hubble = decode_all(HubbleJsonpb::decoder(), line);
            let show = String::from_utf8_lossy(line);
            match (json, hubble) {
                (Err(j), Err(h)) => assert_eq!(h, j, "{show}"),
                (Ok(j), Ok(h)) => {
                    assert_eq!(h.len(), j.len(), "{show}");
                    for (h, j) in h.iter().zip(&j) {
                        let (h, j) = (h.as_log().unwrap(), j.as_log().unwrap());
                        assert!(h.typed::<FlowLog>().is_none(), "{show}");
                        assert_eq!(h.value(), j.value(), "{show}");
                    }
                }
                (j, h) => panic!("{show}: json gave {j:?}, hubble_jsonpb {h:?}"),
            }
        }
        // The errors say what and where.
        let err = decode_all(
            HubbleJsonpb::decoder(),
            b"{\"flow\":{\"verdict\":\"\xff\"}}",
        )
        .unwrap_err();
        assert!(err.contains("invalid") && err.contains("column"), "{err}");
    }

    #[test]
    fn hubble_jsonpb_takes_a_large_flow_line() {
        // A flow with 20,000 labels (about 600 KiB), under the framer's default limit.
        let mut line =
            br#"{"flow":{"verdict":"FORWARDED","source":{"namespace":"a","labels":["#.to_vec();
        for i in 0..20_000 {
            line.extend_from_slice(format!("\"k8s:label{i}=value{i}\",").as_bytes());
        }
        line.extend_from_slice(br#""k8s:app=big"]}}}"#);
        assert!(line.len() > 500_000 && line.len() < DEFAULT_MAX_LINE_BYTES);
        let out = decode_all(HubbleJsonpb::decoder(), &line).unwrap();
        let log = out[0].as_log().unwrap();
        let flow = log.typed::<FlowLog>().unwrap();
        let app = flow.summary().source.and_then(|s| s.app);
        assert_eq!(app.map(|a| flow.text(a)), Some(&b"big"[..]));
        assert_eq!(
            log.value(),
            decode_all(Decoder::Json, &line).unwrap()[0]
                .as_log()
                .unwrap()
                .value()
        );
    }
}
