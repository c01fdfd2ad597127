//! `google.rpc.Status` with a `google.rpc.RetryInfo` detail (`google/rpc/status.proto`,
//! `google/rpc/error_details.proto`): the `grpc-status-details-bin` of a refusal that asks the
//! client to come back later. The OTLP source writes it, the OTLP sink reads it.

use std::time::Duration;

use prost::Message as _;

#[derive(Clone, PartialEq, prost::Message)]
struct Status {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<Any>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Any {
    #[prost(string, tag = "1")]
    type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<ProtoDuration>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ProtoDuration {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The encoded status (gRPC `code`, `message`) whose details ask the client to retry after
/// `seconds`.
pub fn encode_retry_info(code: i32, message: &str, seconds: i64) -> Vec<u8> {
    let info = RetryInfo {
        retry_delay: Some(ProtoDuration { seconds, nanos: 0 }),
    };
    Status {
        code,
        message: message.to_string(),
        details: vec![Any {
            type_url: RETRY_INFO_TYPE.into(),
            value: info.encode_to_vec(),
        }],
    }
    .encode_to_vec()
}

/// The retry delay in encoded status details, if they carry a `RetryInfo` (negative parts
/// read as zero). `None` for anything else, including bytes that do not decode.
pub fn decode_retry_delay(details: &[u8]) -> Option<Duration> {
    let st = Status::decode(details).ok()?;
    st.details.iter().find_map(|a| {
        if !a.type_url.ends_with("google.rpc.RetryInfo") {
            return None;
        }
        let d = RetryInfo::decode(a.value.as_slice()).ok()?.retry_delay?;
        Some(Duration::new(
            d.seconds.max(0) as u64,
            d.nanos.max(0) as u32,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_delay_round_trips_and_garbage_reads_as_none() {
        let bytes = encode_retry_info(8, "busy", 3);
        assert_eq!(decode_retry_delay(&bytes), Some(Duration::from_secs(3)));
        assert_eq!(decode_retry_delay(b"\xff\xff not a status"), None);
        assert_eq!(decode_retry_delay(&[]), None);
    }
}
