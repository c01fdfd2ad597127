//! The Hubble protobuf messages Weir reads, written by hand with the field numbers of Cilium's
//! `api/v1/flow/flow.proto`, `api/v1/observer/observer.proto` and `api/v1/relay/relay.proto`.
//!
//! Only the messages and fields Weir uses are declared. Fields a newer Cilium adds are skipped
//! by the decoder (protobuf's unknown-field rule), so a newer Relay keeps working; they do not
//! appear in the events until they are declared here.
//!
//! Enums are declared as `int32` fields (their wire form) with name tables ([`enum_name`]):
//! an unknown value from a newer Cilium is kept as its number instead of failing the decode.

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `google.protobuf.BoolValue`: a bool that can be absent.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct BoolValue {
    #[prost(bool, tag = "1")]
    pub value: bool,
}

/// `google.protobuf.Int32Value`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Int32Value {
    #[prost(int32, tag = "1")]
    pub value: i32,
}

/// `flow.Flow`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Flow {
    #[prost(message, optional, tag = "1")]
    pub time: Option<Timestamp>,
    #[prost(string, tag = "34")]
    pub uuid: String,
    /// [`VERDICT`].
    #[prost(int32, tag = "2")]
    pub verdict: i32,
    /// Deprecated upstream in favour of `drop_reason_desc`; still sent.
    #[prost(uint32, tag = "3")]
    pub drop_reason: u32,
    /// [`AUTH_TYPE`].
    #[prost(int32, tag = "35")]
    pub auth_type: i32,
    #[prost(message, optional, tag = "4")]
    pub ethernet: Option<Ethernet>,
    #[prost(message, optional, tag = "5")]
    pub ip: Option<Ip>,
    #[prost(message, optional, tag = "6")]
    pub l4: Option<Layer4>,
    #[prost(message, optional, tag = "8")]
    pub source: Option<Endpoint>,
    #[prost(message, optional, tag = "9")]
    pub destination: Option<Endpoint>,
    /// [`FLOW_TYPE`].
    #[prost(int32, tag = "10")]
    pub r#type: i32,
    #[prost(string, tag = "11")]
    pub node_name: String,
    #[prost(string, repeated, tag = "37")]
    pub node_labels: Vec<String>,
    #[prost(string, repeated, tag = "13")]
    pub source_names: Vec<String>,
    #[prost(string, repeated, tag = "14")]
    pub destination_names: Vec<String>,
    #[prost(message, optional, tag = "15")]
    pub l7: Option<Layer7>,
    /// Deprecated upstream in favour of `is_reply`.
    #[prost(bool, tag = "16")]
    pub reply: bool,
    #[prost(message, optional, tag = "19")]
    pub event_type: Option<CiliumEventType>,
    #[prost(message, optional, tag = "20")]
    pub source_service: Option<Service>,
    #[prost(message, optional, tag = "21")]
    pub destination_service: Option<Service>,
    /// [`TRAFFIC_DIRECTION`].
    #[prost(int32, tag = "22")]
    pub traffic_direction: i32,
    #[prost(uint32, tag = "23")]
    pub policy_match_type: u32,
    /// [`TRACE_OBSERVATION_POINT`].
    #[prost(int32, tag = "24")]
    pub trace_observation_point: i32,
    /// [`DROP_REASON`].
    #[prost(int32, tag = "25")]
    pub drop_reason_desc: i32,
    #[prost(message, optional, tag = "26")]
    pub is_reply: Option<BoolValue>,
    /// [`DEBUG_CAPTURE_POINT`].
    #[prost(int32, tag = "27")]
    pub debug_capture_point: i32,
    #[prost(message, optional, tag = "28")]
    pub interface: Option<NetworkInterface>,
    #[prost(uint32, tag = "29")]
    pub proxy_port: u32,
    #[prost(message, optional, tag = "30")]
    pub trace_context: Option<TraceContext>,
    /// [`SOCK_XLATE_POINT`].
    #[prost(int32, tag = "31")]
    pub sock_xlate_point: i32,
    #[prost(uint64, tag = "32")]
    pub socket_cookie: u64,
    #[prost(uint64, tag = "33")]
    pub cgroup_id: u64,
    /// Deprecated upstream (a human summary such as `TCP Flags: SYN`); still sent.
    #[prost(string, tag = "100000")]
    pub summary: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ethernet {
    #[prost(string, tag = "1")]
    pub source: String,
    #[prost(string, tag = "2")]
    pub destination: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ip {
    #[prost(string, tag = "1")]
    pub source: String,
    #[prost(string, tag = "2")]
    pub destination: String,
    /// [`IP_VERSION`].
    #[prost(int32, tag = "3")]
    pub ip_version: i32,
    #[prost(bool, tag = "4")]
    pub encrypted: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Layer4 {
    #[prost(oneof = "Protocol", tags = "1, 2, 3, 4, 5")]
    pub protocol: Option<Protocol>,
}

/// `flow.Layer4.protocol`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Protocol {
    #[prost(message, tag = "1")]
    Tcp(Tcp),
    #[prost(message, tag = "2")]
    Udp(Udp),
    #[prost(message, tag = "3")]
    IcmpV4(Icmp),
    #[prost(message, tag = "4")]
    IcmpV6(Icmp),
    #[prost(message, tag = "5")]
    Sctp(Udp),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Tcp {
    #[prost(uint32, tag = "1")]
    pub source_port: u32,
    #[prost(uint32, tag = "2")]
    pub destination_port: u32,
    #[prost(message, optional, tag = "3")]
    pub flags: Option<TcpFlags>,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct TcpFlags {
    #[prost(bool, tag = "1")]
    pub fin: bool,
    #[prost(bool, tag = "2")]
    pub syn: bool,
    #[prost(bool, tag = "3")]
    pub rst: bool,
    #[prost(bool, tag = "4")]
    pub psh: bool,
    #[prost(bool, tag = "5")]
    pub ack: bool,
    #[prost(bool, tag = "6")]
    pub urg: bool,
    #[prost(bool, tag = "7")]
    pub ece: bool,
    #[prost(bool, tag = "8")]
    pub cwr: bool,
    #[prost(bool, tag = "9")]
    pub ns: bool,
}

/// `flow.UDP`, and `flow.SCTP` (the same two ports).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Udp {
    #[prost(uint32, tag = "1")]
    pub source_port: u32,
    #[prost(uint32, tag = "2")]
    pub destination_port: u32,
}

/// `flow.ICMPv4` and `flow.ICMPv6`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Icmp {
    #[prost(uint32, tag = "1")]
    pub r#type: u32,
    #[prost(uint32, tag = "2")]
    pub code: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Endpoint {
    #[prost(uint32, tag = "1")]
    pub id: u32,
    #[prost(uint32, tag = "2")]
    pub identity: u32,
    #[prost(string, tag = "7")]
    pub cluster_name: String,
    #[prost(string, tag = "3")]
    pub namespace: String,
    /// `k8s:app=frontend`, `reserved:world`, ...
    #[prost(string, repeated, tag = "4")]
    pub labels: Vec<String>,
    #[prost(string, tag = "5")]
    pub pod_name: String,
    #[prost(message, repeated, tag = "6")]
    pub workloads: Vec<Workload>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Workload {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub kind: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Layer7 {
    /// [`L7_FLOW_TYPE`].
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(uint64, tag = "2")]
    pub latency_ns: u64,
    #[prost(oneof = "Record", tags = "100, 101, 102")]
    pub record: Option<Record>,
}

/// `flow.Layer7.record`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Record {
    #[prost(message, tag = "100")]
    Dns(Dns),
    #[prost(message, tag = "101")]
    Http(Http),
    #[prost(message, tag = "102")]
    Kafka(Kafka),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Dns {
    #[prost(string, tag = "1")]
    pub query: String,
    #[prost(string, repeated, tag = "2")]
    pub ips: Vec<String>,
    #[prost(uint32, tag = "3")]
    pub ttl: u32,
    #[prost(string, repeated, tag = "4")]
    pub cnames: Vec<String>,
    #[prost(string, tag = "5")]
    pub observation_source: String,
    #[prost(uint32, tag = "6")]
    pub rcode: u32,
    #[prost(string, repeated, tag = "7")]
    pub qtypes: Vec<String>,
    #[prost(string, repeated, tag = "8")]
    pub rrtypes: Vec<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Http {
    #[prost(uint32, tag = "1")]
    pub code: u32,
    #[prost(string, tag = "2")]
    pub method: String,
    #[prost(string, tag = "3")]
    pub url: String,
    #[prost(string, tag = "4")]
    pub protocol: String,
    #[prost(message, repeated, tag = "5")]
    pub headers: Vec<HttpHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct HttpHeader {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Kafka {
    #[prost(int32, tag = "1")]
    pub error_code: i32,
    #[prost(int32, tag = "2")]
    pub api_version: i32,
    #[prost(string, tag = "3")]
    pub api_key: String,
    #[prost(int32, tag = "4")]
    pub correlation_id: i32,
    #[prost(string, tag = "5")]
    pub topic: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Service {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub namespace: String,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct CiliumEventType {
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(int32, tag = "2")]
    pub sub_type: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NetworkInterface {
    #[prost(uint32, tag = "1")]
    pub index: u32,
    #[prost(string, tag = "2")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TraceContext {
    #[prost(message, optional, tag = "1")]
    pub parent: Option<TraceParent>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TraceParent {
    #[prost(string, tag = "1")]
    pub trace_id: String,
}

/// `flow.LostEvent`: events lost before Hubble could capture them.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LostEvent {
    /// [`LOST_EVENT_SOURCE`].
    #[prost(int32, tag = "1")]
    pub source: i32,
    #[prost(uint64, tag = "2")]
    pub num_events_lost: u64,
    #[prost(message, optional, tag = "3")]
    pub cpu: Option<Int32Value>,
}

/// `relay.NodeStatusEvent`: Relay's word on the nodes behind a request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeStatusEvent {
    /// [`NODE_STATE`].
    #[prost(int32, tag = "1")]
    pub state_change: i32,
    #[prost(string, repeated, tag = "2")]
    pub node_names: Vec<String>,
    #[prost(string, tag = "3")]
    pub message: String,
}

/// `flow.FlowFilter`: every set field must match (a list matches when any element does).
#[derive(Clone, PartialEq, prost::Message)]
pub struct FlowFilter {
    #[prost(string, repeated, tag = "29")]
    pub uuid: Vec<String>,
    #[prost(string, repeated, tag = "1")]
    pub source_ip: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub source_pod: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pub source_fqdn: Vec<String>,
    #[prost(string, repeated, tag = "10")]
    pub source_label: Vec<String>,
    #[prost(string, repeated, tag = "16")]
    pub source_service: Vec<String>,
    #[prost(string, repeated, tag = "3")]
    pub destination_ip: Vec<String>,
    #[prost(string, repeated, tag = "4")]
    pub destination_pod: Vec<String>,
    #[prost(string, repeated, tag = "8")]
    pub destination_fqdn: Vec<String>,
    #[prost(string, repeated, tag = "11")]
    pub destination_label: Vec<String>,
    #[prost(string, repeated, tag = "17")]
    pub destination_service: Vec<String>,
    /// [`TRAFFIC_DIRECTION`] values.
    #[prost(int32, repeated, tag = "30")]
    pub traffic_direction: Vec<i32>,
    /// [`VERDICT`] values.
    #[prost(int32, repeated, tag = "5")]
    pub verdict: Vec<i32>,
    #[prost(string, repeated, tag = "9")]
    pub http_status_code: Vec<String>,
    #[prost(string, repeated, tag = "12")]
    pub protocol: Vec<String>,
    #[prost(string, repeated, tag = "13")]
    pub source_port: Vec<String>,
    #[prost(string, repeated, tag = "14")]
    pub destination_port: Vec<String>,
    #[prost(bool, repeated, tag = "15")]
    pub reply: Vec<bool>,
    #[prost(string, repeated, tag = "18")]
    pub dns_query: Vec<String>,
    #[prost(uint32, repeated, tag = "19")]
    pub source_identity: Vec<u32>,
    #[prost(uint32, repeated, tag = "20")]
    pub destination_identity: Vec<u32>,
    #[prost(string, repeated, tag = "21")]
    pub http_method: Vec<String>,
    #[prost(string, repeated, tag = "22")]
    pub http_path: Vec<String>,
    #[prost(string, repeated, tag = "24")]
    pub node_name: Vec<String>,
    /// [`IP_VERSION`] values.
    #[prost(int32, repeated, tag = "25")]
    pub ip_version: Vec<i32>,
}

/// `observer.GetFlowsRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetFlowsRequest {
    #[prost(uint64, tag = "1")]
    pub number: u64,
    #[prost(bool, tag = "9")]
    pub first: bool,
    #[prost(bool, tag = "3")]
    pub follow: bool,
    #[prost(message, repeated, tag = "5")]
    pub blacklist: Vec<FlowFilter>,
    #[prost(message, repeated, tag = "6")]
    pub whitelist: Vec<FlowFilter>,
    #[prost(message, optional, tag = "7")]
    pub since: Option<Timestamp>,
    #[prost(message, optional, tag = "8")]
    pub until: Option<Timestamp>,
}

/// `observer.GetFlowsResponse`: a flow, or a protocol message about the stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GetFlowsResponse {
    #[prost(oneof = "ResponseType", tags = "1, 2, 3")]
    pub response_types: Option<ResponseType>,
    #[prost(string, tag = "1000")]
    pub node_name: String,
    #[prost(message, optional, tag = "1001")]
    pub time: Option<Timestamp>,
}

/// `observer.GetFlowsResponse.response_types`.
// A flow is the common case: boxing it would cost an allocation per flow to save space in
// the rare status/lost messages.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ResponseType {
    #[prost(message, tag = "1")]
    Flow(Flow),
    #[prost(message, tag = "2")]
    NodeStatus(NodeStatusEvent),
    #[prost(message, tag = "3")]
    LostEvents(LostEvent),
}

/// The gRPC path of the server-streaming call.
pub const GET_FLOWS_PATH: &str = "/observer.Observer/GetFlows";

/// A protobuf enum: its numbers and names, as in the upstream `.proto`.
pub type EnumTable = &'static [(i32, &'static str)];

/// The name of `value` in `table`, if it has one.
pub fn enum_name(table: EnumTable, value: i32) -> Option<&'static str> {
    table.iter().find(|(v, _)| *v == value).map(|(_, n)| *n)
}

/// The number of `name` in `table`, if it is one of its names.
pub fn enum_value(table: EnumTable, name: &str) -> Option<i32> {
    table.iter().find(|(_, n)| *n == name).map(|(v, _)| *v)
}

pub const VERDICT: EnumTable = &[
    (0, "VERDICT_UNKNOWN"),
    (1, "FORWARDED"),
    (2, "DROPPED"),
    (3, "ERROR"),
    (4, "AUDIT"),
    (5, "REDIRECTED"),
    (6, "TRACED"),
    (7, "TRANSLATED"),
];

pub const FLOW_TYPE: EnumTable = &[(0, "UNKNOWN_TYPE"), (1, "L3_L4"), (2, "L7"), (3, "SOCK")];

pub const AUTH_TYPE: EnumTable = &[(0, "DISABLED"), (1, "SPIRE"), (2, "TEST_ALWAYS_FAIL")];

pub const TRACE_OBSERVATION_POINT: EnumTable = &[
    (0, "UNKNOWN_POINT"),
    (1, "TO_PROXY"),
    (2, "TO_HOST"),
    (3, "TO_STACK"),
    (4, "TO_OVERLAY"),
    (101, "TO_ENDPOINT"),
    (5, "FROM_ENDPOINT"),
    (6, "FROM_PROXY"),
    (7, "FROM_HOST"),
    (8, "FROM_STACK"),
    (9, "FROM_OVERLAY"),
    (10, "FROM_NETWORK"),
    (11, "TO_NETWORK"),
];

pub const L7_FLOW_TYPE: EnumTable = &[
    (0, "UNKNOWN_L7_TYPE"),
    (1, "REQUEST"),
    (2, "RESPONSE"),
    (3, "SAMPLE"),
];

pub const IP_VERSION: EnumTable = &[(0, "IP_NOT_USED"), (1, "IPv4"), (2, "IPv6")];

pub const TRAFFIC_DIRECTION: EnumTable = &[
    (0, "TRAFFIC_DIRECTION_UNKNOWN"),
    (1, "INGRESS"),
    (2, "EGRESS"),
];

pub const DEBUG_CAPTURE_POINT: EnumTable = &[
    (0, "DBG_CAPTURE_POINT_UNKNOWN"),
    (4, "DBG_CAPTURE_DELIVERY"),
    (5, "DBG_CAPTURE_FROM_LB"),
    (6, "DBG_CAPTURE_AFTER_V46"),
    (7, "DBG_CAPTURE_AFTER_V64"),
    (8, "DBG_CAPTURE_PROXY_PRE"),
    (9, "DBG_CAPTURE_PROXY_POST"),
    (10, "DBG_CAPTURE_SNAT_PRE"),
    (11, "DBG_CAPTURE_SNAT_POST"),
];

pub const SOCK_XLATE_POINT: EnumTable = &[
    (0, "SOCK_XLATE_POINT_UNKNOWN"),
    (1, "SOCK_XLATE_POINT_PRE_DIRECTION_FWD"),
    (2, "SOCK_XLATE_POINT_POST_DIRECTION_FWD"),
    (3, "SOCK_XLATE_POINT_PRE_DIRECTION_REV"),
    (4, "SOCK_XLATE_POINT_POST_DIRECTION_REV"),
];

pub const LOST_EVENT_SOURCE: EnumTable = &[
    (0, "UNKNOWN_LOST_EVENT_SOURCE"),
    (1, "PERF_EVENT_RING_BUFFER"),
    (2, "OBSERVER_EVENTS_QUEUE"),
    (3, "HUBBLE_RING_BUFFER"),
];

pub const NODE_STATE: EnumTable = &[
    (0, "UNKNOWN_NODE_STATE"),
    (1, "NODE_CONNECTED"),
    (2, "NODE_UNAVAILABLE"),
    (3, "NODE_GONE"),
    (4, "NODE_ERROR"),
];

pub const DROP_REASON: EnumTable = &[
    (0, "DROP_REASON_UNKNOWN"),
    (130, "INVALID_SOURCE_MAC"),
    (131, "INVALID_DESTINATION_MAC"),
    (132, "INVALID_SOURCE_IP"),
    (133, "POLICY_DENIED"),
    (134, "INVALID_PACKET_DROPPED"),
    (135, "CT_TRUNCATED_OR_INVALID_HEADER"),
    (136, "CT_MISSING_TCP_ACK_FLAG"),
    (137, "CT_UNKNOWN_L4_PROTOCOL"),
    (138, "CT_CANNOT_CREATE_ENTRY_FROM_PACKET"),
    (139, "UNSUPPORTED_L3_PROTOCOL"),
    (140, "MISSED_TAIL_CALL"),
    (141, "ERROR_WRITING_TO_PACKET"),
    (142, "UNKNOWN_L4_PROTOCOL"),
    (143, "UNKNOWN_ICMPV4_CODE"),
    (144, "UNKNOWN_ICMPV4_TYPE"),
    (145, "UNKNOWN_ICMPV6_CODE"),
    (146, "UNKNOWN_ICMPV6_TYPE"),
    (147, "ERROR_RETRIEVING_TUNNEL_KEY"),
    (148, "ERROR_RETRIEVING_TUNNEL_OPTIONS"),
    (149, "INVALID_GENEVE_OPTION"),
    (150, "UNKNOWN_L3_TARGET_ADDRESS"),
    (151, "STALE_OR_UNROUTABLE_IP"),
    (152, "NO_MATCHING_LOCAL_CONTAINER_FOUND"),
    (153, "ERROR_WHILE_CORRECTING_L3_CHECKSUM"),
    (154, "ERROR_WHILE_CORRECTING_L4_CHECKSUM"),
    (155, "CT_MAP_INSERTION_FAILED"),
    (156, "INVALID_IPV6_EXTENSION_HEADER"),
    (157, "IP_FRAGMENTATION_NOT_SUPPORTED"),
    (158, "SERVICE_BACKEND_NOT_FOUND"),
    (160, "NO_TUNNEL_OR_ENCAPSULATION_ENDPOINT"),
    (161, "FAILED_TO_INSERT_INTO_PROXYMAP"),
    (162, "REACHED_EDT_RATE_LIMITING_DROP_HORIZON"),
    (163, "UNKNOWN_CONNECTION_TRACKING_STATE"),
    (164, "LOCAL_HOST_IS_UNREACHABLE"),
    (165, "NO_CONFIGURATION_AVAILABLE_TO_PERFORM_POLICY_DECISION"),
    (166, "UNSUPPORTED_L2_PROTOCOL"),
    (167, "NO_MAPPING_FOR_NAT_MASQUERADE"),
    (168, "UNSUPPORTED_PROTOCOL_FOR_NAT_MASQUERADE"),
    (169, "FIB_LOOKUP_FAILED"),
    (170, "ENCAPSULATION_TRAFFIC_IS_PROHIBITED"),
    (171, "INVALID_IDENTITY"),
    (172, "UNKNOWN_SENDER"),
    (173, "NAT_NOT_NEEDED"),
    (174, "IS_A_CLUSTERIP"),
    (175, "FIRST_LOGICAL_DATAGRAM_FRAGMENT_NOT_FOUND"),
    (176, "FORBIDDEN_ICMPV6_MESSAGE"),
    (177, "DENIED_BY_LB_SRC_RANGE_CHECK"),
    (178, "SOCKET_LOOKUP_FAILED"),
    (179, "SOCKET_ASSIGN_FAILED"),
    (180, "PROXY_REDIRECTION_NOT_SUPPORTED_FOR_PROTOCOL"),
    (181, "POLICY_DENY"),
    (182, "VLAN_FILTERED"),
    (183, "INVALID_VNI"),
    (184, "INVALID_TC_BUFFER"),
    (185, "NO_SID"),
    (186, "MISSING_SRV6_STATE"),
    (187, "NAT46"),
    (188, "NAT64"),
    (189, "AUTH_REQUIRED"),
    (190, "CT_NO_MAP_FOUND"),
    (191, "SNAT_NO_MAP_FOUND"),
    (192, "INVALID_CLUSTER_ID"),
    (193, "UNSUPPORTED_PROTOCOL_FOR_DSR_ENCAP"),
    (194, "NO_EGRESS_GATEWAY"),
    (196, "TTL_EXCEEDED"),
    (197, "NO_NODE_ID"),
    (202, "DROP_HOST_NOT_READY"),
    (203, "DROP_EP_NOT_READY"),
];

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn unknown_fields_and_enum_values_are_kept_or_skipped() {
        // A flow with a field this build does not know (tag 21001, a newer Cilium's policy
        // list) and a verdict number it has no name for.
        let mut buf = Vec::new();
        let known = Flow {
            verdict: 42,
            node_name: "n1".into(),
            ..Default::default()
        };
        known.encode(&mut buf).unwrap();
        // field 21001, wire type 2 (length-delimited), 3 bytes.
        prost::encoding::encode_key(21001, prost::encoding::WireType::LengthDelimited, &mut buf);
        prost::encoding::encode_varint(3, &mut buf);
        buf.extend_from_slice(b"abc");
        let f = Flow::decode(&buf[..]).unwrap();
        assert_eq!(f.verdict, 42);
        assert_eq!(f.node_name, "n1");
        assert_eq!(enum_name(VERDICT, f.verdict), None);
        assert_eq!(enum_name(VERDICT, 2), Some("DROPPED"));
        assert_eq!(enum_value(DROP_REASON, "POLICY_DENIED"), Some(133));
    }

    #[test]
    fn a_truncated_message_is_an_error_not_a_panic() {
        let resp = GetFlowsResponse {
            response_types: Some(ResponseType::Flow(Flow {
                uuid: "u".repeat(40),
                ..Default::default()
            })),
            node_name: "node".into(),
            time: None,
        };
        let bytes = resp.encode_to_vec();
        for cut in 1..bytes.len() {
            let _ = GetFlowsResponse::decode(&bytes[..cut]);
        }
        assert!(GetFlowsResponse::decode(&bytes[..bytes.len() - 3]).is_err());
    }
}
