//! The Prometheus remote write 1.0 messages, written from the protocol specification
//! (`WriteRequest` carries `TimeSeries`; a series is sorted `Label`s plus `Sample`s in
//! timestamp order). Only the fields a sender needs are defined; metadata (field 3) is not
//! sent. The sink does not build these: [`super::request`] writes the same bytes directly;
//! they serve to read a request back (tests, and the series names in an error message).

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
