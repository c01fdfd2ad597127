//! The reverse of [`super::convert`]: a line of `hubble observe -o jsonpb` (protobuf's JSON
//! mapping of a `GetFlowsResponse`) back into the protobuf message.
//!
//! Used to replay exported flows over the real wire protocol (the test Hubble server), and to
//! check that the event mapping loses nothing (a flow survives proto -> JSON -> proto). It
//! accepts what protojson accepts: proto field names or their lowerCamelCase JSON names, enums
//! as names or numbers, 64-bit integers as strings or numbers, RFC 3339 timestamps. Unknown
//! fields are ignored, like unknown protobuf fields.

use serde_json::{Map, Value};

use super::convert::parse_timestamp;
use super::proto::{self, EnumTable, GetFlowsResponse, ResponseType, Timestamp};

/// Why a JSON document is not a Hubble response.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum JsonpbError {
    #[error("not a JSON object")]
    NotAnObject,
    #[error("no `flow`, `lost_events` or `node_status` field: not a Hubble GetFlows response")]
    NotAResponse,
    #[error("`{path}`: expected {expected}")]
    Field {
        path: String,
        expected: &'static str,
    },
}

type Result<T> = std::result::Result<T, JsonpbError>;

/// One object being read, with its path for error messages.
struct Reader<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

fn to_camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

impl<'a> Reader<'a> {
    fn new(v: &'a Value, path: String) -> Result<Self> {
        match v {
            Value::Object(map) => Ok(Self { map, path }),
            _ => Err(JsonpbError::Field {
                path,
                expected: "an object",
            }),
        }
    }

    /// The field by its proto name or its JSON (lowerCamelCase) name; `null` counts as absent.
    fn get(&self, name: &str) -> Option<(&'a Value, String)> {
        let v = self
            .map
            .get(name)
            .or_else(|| self.map.get(&to_camel(name)))?;
        if v.is_null() {
            return None;
        }
        Some((v, format!("{}.{name}", self.path)))
    }

    fn err<T>(path: String, expected: &'static str) -> Result<T> {
        Err(JsonpbError::Field { path, expected })
    }

    fn string(&self, name: &str) -> Result<String> {
        match self.get(name) {
            None => Ok(String::new()),
            Some((Value::String(s), _)) => Ok(s.clone()),
            Some((_, p)) => Self::err(p, "a string"),
        }
    }

    fn strings(&self, name: &str) -> Result<Vec<String>> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some((Value::Array(items), p)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    _ => Self::err(p.clone(), "a list of strings"),
                })
                .collect(),
            Some((_, p)) => Self::err(p, "a list of strings"),
        }
    }

    fn int(&self, name: &str, expected: &'static str) -> Result<Option<i128>> {
        let Some((v, p)) = self.get(name) else {
            return Ok(None);
        };
        let n = match v {
            Value::Number(n) => n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from)),
            Value::String(s) => s.parse::<i128>().ok(),
            _ => None,
        };
        match n {
            Some(n) => Ok(Some(n)),
            None => Self::err(p, expected),
        }
    }

    fn u32(&self, name: &str) -> Result<u32> {
        match self.int(name, "an unsigned 32-bit integer")? {
            None => Ok(0),
            Some(n) => u32::try_from(n).or_else(|_| {
                Self::err(
                    format!("{}.{name}", self.path),
                    "an unsigned 32-bit integer",
                )
            }),
        }
    }

    fn i32(&self, name: &str) -> Result<i32> {
        match self.int(name, "a 32-bit integer")? {
            None => Ok(0),
            Some(n) => i32::try_from(n)
                .or_else(|_| Self::err(format!("{}.{name}", self.path), "a 32-bit integer")),
        }
    }

    fn u64(&self, name: &str) -> Result<u64> {
        match self.int(name, "an unsigned 64-bit integer")? {
            None => Ok(0),
            Some(n) => u64::try_from(n).or_else(|_| {
                Self::err(
                    format!("{}.{name}", self.path),
                    "an unsigned 64-bit integer",
                )
            }),
        }
    }

    fn bool(&self, name: &str) -> Result<Option<bool>> {
        match self.get(name) {
            None => Ok(None),
            Some((Value::Bool(b), _)) => Ok(Some(*b)),
            Some((_, p)) => Self::err(p, "true or false"),
        }
    }

    fn enm(&self, name: &str, table: EnumTable) -> Result<i32> {
        match self.get(name) {
            None => Ok(0),
            Some((Value::String(s), p)) => match proto::enum_value(table, s) {
                Some(v) => Ok(v),
                None => Self::err(p, "one of the enum's names"),
            },
            Some((Value::Number(n), p)) => match n.as_i64().and_then(|n| i32::try_from(n).ok()) {
                Some(v) => Ok(v),
                None => Self::err(p, "an enum number"),
            },
            Some((_, p)) => Self::err(p, "an enum name or number"),
        }
    }

    fn ts(&self, name: &str) -> Result<Option<Timestamp>> {
        match self.get(name) {
            None => Ok(None),
            Some((Value::String(s), p)) => match parse_timestamp(s) {
                Some(t) => Ok(Some(t)),
                None => Self::err(p, "an RFC 3339 timestamp"),
            },
            Some((_, p)) => Self::err(p, "an RFC 3339 timestamp"),
        }
    }

    fn obj(&self, name: &str) -> Result<Option<Reader<'a>>> {
        match self.get(name) {
            None => Ok(None),
            Some((v, p)) => Reader::new(v, p).map(Some),
        }
    }

    fn objs(&self, name: &str) -> Result<Vec<Reader<'a>>> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some((Value::Array(items), p)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| Reader::new(v, format!("{p}[{i}]")))
                .collect(),
            Some((_, p)) => Self::err(p, "a list of objects"),
        }
    }
}

/// Parses one jsonpb document (`{"flow": {...}, "node_name": ..., "time": ...}`). A bare flow
/// object (with `verdict`, `IP`, `l4` ... at the top) is accepted too.
pub fn response_from_json(v: &Value) -> Result<GetFlowsResponse> {
    if !v.is_object() {
        return Err(JsonpbError::NotAnObject);
    }
    let r = Reader::new(v, String::new())?;
    let response_types = if let Some(f) = r.obj("flow")? {
        ResponseType::Flow(flow(&f)?)
    } else if let Some(l) = r.obj("lost_events")? {
        ResponseType::LostEvents(proto::LostEvent {
            source: l.enm("source", proto::LOST_EVENT_SOURCE)?,
            num_events_lost: l.u64("num_events_lost")?,
            cpu: l
                .int("cpu", "a 32-bit integer")?
                .map(|n| proto::Int32Value {
                    value: i32::try_from(n).unwrap_or_default(),
                }),
        })
    } else if let Some(n) = r.obj("node_status")? {
        ResponseType::NodeStatus(proto::NodeStatusEvent {
            state_change: n.enm("state_change", proto::NODE_STATE)?,
            node_names: n.strings("node_names")?,
            message: n.string("message")?,
        })
    } else if ["verdict", "IP", "l4", "source", "destination"]
        .iter()
        .any(|k| r.get(k).is_some())
    {
        let f = flow(&r)?;
        return Ok(GetFlowsResponse {
            node_name: f.node_name.clone(),
            time: f.time,
            response_types: Some(ResponseType::Flow(f)),
        });
    } else {
        return Err(JsonpbError::NotAResponse);
    };
    Ok(GetFlowsResponse {
        response_types: Some(response_types),
        node_name: r.string("node_name")?,
        time: r.ts("time")?,
    })
}

fn flow(r: &Reader<'_>) -> Result<proto::Flow> {
    Ok(proto::Flow {
        time: r.ts("time")?,
        uuid: r.string("uuid")?,
        verdict: r.enm("verdict", proto::VERDICT)?,
        drop_reason: r.u32("drop_reason")?,
        auth_type: r.enm("auth_type", proto::AUTH_TYPE)?,
        ethernet: match r.obj("ethernet")? {
            Some(e) => Some(proto::Ethernet {
                source: e.string("source")?,
                destination: e.string("destination")?,
            }),
            None => None,
        },
        ip: match r.obj("IP")? {
            Some(ip) => Some(proto::Ip {
                source: ip.string("source")?,
                destination: ip.string("destination")?,
                ip_version: ip.enm("ipVersion", proto::IP_VERSION)?,
                encrypted: ip.bool("encrypted")?.unwrap_or(false),
            }),
            None => None,
        },
        l4: match r.obj("l4")? {
            Some(l4) => Some(layer4(&l4)?),
            None => None,
        },
        source: match r.obj("source")? {
            Some(e) => Some(endpoint(&e)?),
            None => None,
        },
        destination: match r.obj("destination")? {
            Some(e) => Some(endpoint(&e)?),
            None => None,
        },
        r#type: r.enm("Type", proto::FLOW_TYPE)?,
        node_name: r.string("node_name")?,
        node_labels: r.strings("node_labels")?,
        source_names: r.strings("source_names")?,
        destination_names: r.strings("destination_names")?,
        l7: match r.obj("l7")? {
            Some(l7) => Some(layer7(&l7)?),
            None => None,
        },
        reply: r.bool("reply")?.unwrap_or(false),
        event_type: match r.obj("event_type")? {
            Some(e) => Some(proto::CiliumEventType {
                r#type: e.i32("type")?,
                sub_type: e.i32("sub_type")?,
            }),
            None => None,
        },
        source_service: match r.obj("source_service")? {
            Some(s) => Some(service(&s)?),
            None => None,
        },
        destination_service: match r.obj("destination_service")? {
            Some(s) => Some(service(&s)?),
            None => None,
        },
        traffic_direction: r.enm("traffic_direction", proto::TRAFFIC_DIRECTION)?,
        policy_match_type: r.u32("policy_match_type")?,
        trace_observation_point: r
            .enm("trace_observation_point", proto::TRACE_OBSERVATION_POINT)?,
        drop_reason_desc: r.enm("drop_reason_desc", proto::DROP_REASON)?,
        is_reply: r.bool("is_reply")?.map(|value| proto::BoolValue { value }),
        debug_capture_point: r.enm("debug_capture_point", proto::DEBUG_CAPTURE_POINT)?,
        interface: match r.obj("interface")? {
            Some(i) => Some(proto::NetworkInterface {
                index: i.u32("index")?,
                name: i.string("name")?,
            }),
            None => None,
        },
        proxy_port: r.u32("proxy_port")?,
        trace_context: match r.obj("trace_context")? {
            Some(t) => Some(proto::TraceContext {
                parent: match t.obj("parent")? {
                    Some(p) => Some(proto::TraceParent {
                        trace_id: p.string("trace_id")?,
                    }),
                    None => None,
                },
            }),
            None => None,
        },
        sock_xlate_point: r.enm("sock_xlate_point", proto::SOCK_XLATE_POINT)?,
        socket_cookie: r.u64("socket_cookie")?,
        cgroup_id: r.u64("cgroup_id")?,
        // `Summary` is the field's JSON name too (it is capitalised in the proto).
        summary: r.string("Summary")?,
    })
}

fn layer4(r: &Reader<'_>) -> Result<proto::Layer4> {
    let ports = |p: &Reader<'_>| -> Result<proto::Udp> {
        Ok(proto::Udp {
            source_port: p.u32("source_port")?,
            destination_port: p.u32("destination_port")?,
        })
    };
    let icmp = |p: &Reader<'_>| -> Result<proto::Icmp> {
        Ok(proto::Icmp {
            r#type: p.u32("type")?,
            code: p.u32("code")?,
        })
    };
    let protocol = if let Some(t) = r.obj("TCP")? {
        let p = ports(&t)?;
        Some(proto::Protocol::Tcp(proto::Tcp {
            source_port: p.source_port,
            destination_port: p.destination_port,
            flags: match t.obj("flags")? {
                Some(f) => {
                    let b = |n: &str| -> Result<bool> { Ok(f.bool(n)?.unwrap_or(false)) };
                    Some(proto::TcpFlags {
                        fin: b("FIN")?,
                        syn: b("SYN")?,
                        rst: b("RST")?,
                        psh: b("PSH")?,
                        ack: b("ACK")?,
                        urg: b("URG")?,
                        ece: b("ECE")?,
                        cwr: b("CWR")?,
                        ns: b("NS")?,
                    })
                }
                None => None,
            },
        }))
    } else if let Some(u) = r.obj("UDP")? {
        Some(proto::Protocol::Udp(ports(&u)?))
    } else if let Some(s) = r.obj("SCTP")? {
        Some(proto::Protocol::Sctp(ports(&s)?))
    } else if let Some(i) = r.obj("ICMPv4")? {
        Some(proto::Protocol::IcmpV4(icmp(&i)?))
    } else if let Some(i) = r.obj("ICMPv6")? {
        Some(proto::Protocol::IcmpV6(icmp(&i)?))
    } else {
        None
    };
    Ok(proto::Layer4 { protocol })
}

fn endpoint(r: &Reader<'_>) -> Result<proto::Endpoint> {
    Ok(proto::Endpoint {
        id: r.u32("ID")?,
        identity: r.u32("identity")?,
        cluster_name: r.string("cluster_name")?,
        namespace: r.string("namespace")?,
        labels: r.strings("labels")?,
        pod_name: r.string("pod_name")?,
        workloads: r
            .objs("workloads")?
            .iter()
            .map(|w| {
                Ok(proto::Workload {
                    name: w.string("name")?,
                    kind: w.string("kind")?,
                })
            })
            .collect::<Result<_>>()?,
    })
}

fn service(r: &Reader<'_>) -> Result<proto::Service> {
    Ok(proto::Service {
        name: r.string("name")?,
        namespace: r.string("namespace")?,
    })
}

fn layer7(r: &Reader<'_>) -> Result<proto::Layer7> {
    let record = if let Some(d) = r.obj("dns")? {
        Some(proto::Record::Dns(proto::Dns {
            query: d.string("query")?,
            ips: d.strings("ips")?,
            ttl: d.u32("ttl")?,
            cnames: d.strings("cnames")?,
            observation_source: d.string("observation_source")?,
            rcode: d.u32("rcode")?,
            qtypes: d.strings("qtypes")?,
            rrtypes: d.strings("rrtypes")?,
        }))
    } else if let Some(h) = r.obj("http")? {
        Some(proto::Record::Http(proto::Http {
            code: h.u32("code")?,
            method: h.string("method")?,
            url: h.string("url")?,
            protocol: h.string("protocol")?,
            headers: h
                .objs("headers")?
                .iter()
                .map(|x| {
                    Ok(proto::HttpHeader {
                        key: x.string("key")?,
                        value: x.string("value")?,
                    })
                })
                .collect::<Result<_>>()?,
        }))
    } else if let Some(k) = r.obj("kafka")? {
        Some(proto::Record::Kafka(proto::Kafka {
            error_code: k.i32("error_code")?,
            api_version: k.i32("api_version")?,
            api_key: k.string("api_key")?,
            correlation_id: k.i32("correlation_id")?,
            topic: k.string("topic")?,
        }))
    } else {
        None
    };
    Ok(proto::Layer7 {
        r#type: r.enm("type", proto::L7_FLOW_TYPE)?,
        latency_ns: r.u64("latency_ns")?,
        record,
    })
}

#[cfg(test)]
mod tests {
    use super::super::convert::flow_response_to_value;
    use super::*;

    const SAMPLE: &str = r#"{"flow":{"time":"2026-11-20T10:00:00.013869070Z","uuid":"451abd81","verdict":"FORWARDED","IP":{"source":"10.244.3.121","destination":"10.244.3.74","ipVersion":"IPv4"},"l4":{"TCP":{"source_port":8080,"destination_port":33685,"flags":{"SYN":true,"ACK":true}}},"source":{"ID":2081,"identity":10153,"namespace":"boutique","labels":["k8s:app=recommendationservice"],"pod_name":"recommendationservice-21f7296ab-lpzpt","workloads":[{"name":"recommendationservice","kind":"Deployment"}]},"destination":{"identity":2,"labels":["reserved:world"]},"Type":"L7","node_name":"kind-worker2","event_type":{"type":129},"traffic_direction":"INGRESS","is_reply":true,"l7":{"type":"RESPONSE","http":{"method":"GET","url":"http://recommendationservice:8080/cart","protocol":"HTTP/1.1","code":200},"latency_ns":"5502936"},"destination_names":["api.example.com"],"Summary":"HTTP/1.1 200 5ms (GET http://recommendationservice:8080/cart)"},"node_name":"kind-worker2","time":"2026-11-20T10:00:00.013869070Z"}"#;

    #[test]
    fn jsonpb_survives_json_to_proto_to_event() {
        let json: Value = serde_json::from_str(SAMPLE).unwrap();
        let resp = response_from_json(&json).unwrap();
        let back = flow_response_to_value(resp).unwrap();
        assert_eq!(serde_json::to_value(&back).unwrap(), json);
    }

    #[test]
    fn camel_case_names_and_numbers_are_accepted() {
        let json = serde_json::json!({"flow": {"verdict": 2, "dropReasonDesc": "POLICY_DENIED",
            "l4": {"UDP": {"sourcePort": 53, "destinationPort": "1234"}}, "isReply": false}});
        let resp = response_from_json(&json).unwrap();
        let Some(ResponseType::Flow(f)) = resp.response_types else {
            panic!("not a flow")
        };
        assert_eq!(f.verdict, 2);
        assert_eq!(f.drop_reason_desc, 133);
        assert_eq!(f.is_reply, Some(proto::BoolValue { value: false }));
        assert_eq!(
            f.l4.unwrap().protocol,
            Some(proto::Protocol::Udp(proto::Udp {
                source_port: 53,
                destination_port: 1234
            }))
        );
    }

    #[test]
    fn json_that_is_not_a_flow_is_an_error() {
        let err = |s: &str| response_from_json(&serde_json::from_str(s).unwrap()).unwrap_err();
        assert_eq!(err("[1,2]"), JsonpbError::NotAnObject);
        assert_eq!(err(r#"{"message":"hello"}"#), JsonpbError::NotAResponse);
        assert_eq!(
            err(r#"{"flow":{"verdict":"MAYBE"}}"#).to_string(),
            "`.flow.verdict`: expected one of the enum's names"
        );
        assert_eq!(
            err(r#"{"flow":{"l4":{"TCP":{"source_port":-1}}}}"#).to_string(),
            "`.flow.l4.TCP.source_port`: expected an unsigned 32-bit integer"
        );
        assert!(matches!(
            err(r#"{"flow":{"time":"noon"}}"#),
            JsonpbError::Field { .. }
        ));
    }

    #[test]
    fn lost_events_and_node_status_parse() {
        let json = serde_json::json!({"lost_events": {"source": "HUBBLE_RING_BUFFER", "num_events_lost": "12"}, "node_name": "n"});
        let resp = response_from_json(&json).unwrap();
        assert_eq!(
            resp.response_types,
            Some(ResponseType::LostEvents(proto::LostEvent {
                source: 3,
                num_events_lost: 12,
                cpu: None
            }))
        );
    }
}
