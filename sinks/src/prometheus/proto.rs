//! The Prometheus remote write 1.0 messages, written from the protocol specification
//! (`WriteRequest` carries `TimeSeries`; a series is sorted `Label`s plus `Sample`s in
//! timestamp order). Only the fields a sender needs are defined; metadata (field 3) is not
//! sent.

/// The body of a remote write request (before snappy compression).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

/// One series: its labels (`__name__` included, sorted by name) and samples (oldest first).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, prost::Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// Encodes and snappy-compresses (block format, as the protocol requires) a request.
pub fn encode(req: &WriteRequest, scratch: &mut Vec<u8>) -> Result<Vec<u8>, snap::Error> {
    use prost::Message;
    scratch.clear();
    scratch.reserve(req.encoded_len());
    // Encoding into a Vec cannot run out of space.
    let _ = req.encode(scratch);
    snap::raw::Encoder::new().compress_vec(scratch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn round_trips_through_snappy_and_protobuf() {
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: vec![
                    Label {
                        name: "__name__".into(),
                        value: "up".into(),
                    },
                    Label {
                        name: "job".into(),
                        value: "w".into(),
                    },
                ],
                samples: vec![Sample {
                    value: 1.5,
                    timestamp: 1_700_000_000_000,
                }],
            }],
        };
        let body = encode(&req, &mut Vec::new()).unwrap();
        let raw = snap::raw::Decoder::new().decompress_vec(&body).unwrap();
        // Field 1 (timeseries), wire type 2 (length-delimited).
        assert_eq!(raw[0], 0x0a);
        assert_eq!(WriteRequest::decode(raw.as_slice()).unwrap(), req);
    }
}
