//! OTLP messages to native events.
//!
//! - spans become [`Span`]s (ids checked: 16-byte trace ids, 8-byte span ids);
//! - each metric data point becomes a [`Metric`]: gauges are absolute gauges; monotonic sums
//!   are counters (cumulative: absolute, delta: incremental); non-monotonic sums are gauges;
//!   histograms (and exponential histograms, turned into explicit buckets) are aggregated
//!   histograms; summaries aggregated summaries. Data point attributes become tags; resource
//!   attributes become tags prefixed `resource.`, the scope `scope.name`/`scope.version`
//!   (the `otlp` sink turns them back);
//! - log records become log events with `message` (the body), `timestamp`,
//!   `observed_timestamp`, `severity_text`, `severity_number`, `attributes`, `resource`,
//!   `scope`, `trace_id`/`span_id` (hex) and `flags`.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric, number_data_point, AggregationTemporality,
    NumberDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind as OtlpKind;
use weir_pipeline::event::{
    Bucket, Event, EventMetadata, LogEvent, Metric, MetricKind, MetricValue, ObjectMap, Quantile,
    Span, SpanEvent, SpanKind, SpanLink, SpanStatus, Value,
};

/// A request that cannot be turned into events.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{what} has {len} bytes, not {want} (span `{span}`)")]
    IdLength {
        what: &'static str,
        len: usize,
        want: usize,
        span: String,
    },
}

/// An OTLP value as a native value.
pub fn any_value(v: Option<&AnyValue>) -> Value {
    let Some(v) = v.and_then(|v| v.value.as_ref()) else {
        return Value::Null;
    };
    match v {
        any_value::Value::StringValue(s) => Value::Bytes(Bytes::from(s.clone())),
        any_value::Value::BoolValue(b) => Value::Boolean(*b),
        any_value::Value::IntValue(i) => Value::Integer(*i),
        any_value::Value::DoubleValue(f) => Value::from_f64_or_zero(*f),
        any_value::Value::BytesValue(b) => Value::Bytes(Bytes::from(b.clone())),
        any_value::Value::ArrayValue(a) => {
            Value::Array(a.values.iter().map(|v| any_value(Some(v))).collect())
        }
        any_value::Value::KvlistValue(kv) => Value::Object(kv_object(&kv.values)),
    }
}

fn kv_object(kvs: &[KeyValue]) -> ObjectMap {
    kvs.iter()
        .map(|kv| (kv.key.as_str().into(), any_value(kv.value.as_ref())))
        .collect()
}

fn fixed<const N: usize>(
    what: &'static str,
    b: &[u8],
    span: &str,
) -> Result<[u8; N], ConvertError> {
    b.try_into().map_err(|_| ConvertError::IdLength {
        what,
        len: b.len(),
        want: N,
        span: span.to_string(),
    })
}

fn kind(k: i32) -> SpanKind {
    match OtlpKind::try_from(k) {
        Ok(OtlpKind::Internal) => SpanKind::Internal,
        Ok(OtlpKind::Server) => SpanKind::Server,
        Ok(OtlpKind::Client) => SpanKind::Client,
        Ok(OtlpKind::Producer) => SpanKind::Producer,
        Ok(OtlpKind::Consumer) => SpanKind::Consumer,
        _ => SpanKind::Unspecified,
    }
}

fn scope_parts(s: Option<&InstrumentationScope>) -> (String, String) {
    s.map(|s| (s.name.clone(), s.version.clone()))
        .unwrap_or_default()
}

fn resource_attrs(r: Option<&Resource>) -> &[KeyValue] {
    r.map(|r| r.attributes.as_slice()).unwrap_or(&[])
}

/// An OTLP value as a native value, taking its strings and bytes over (no copy).
pub fn into_value(v: Option<AnyValue>) -> Value {
    let Some(v) = v.and_then(|v| v.value) else {
        return Value::Null;
    };
    match v {
        any_value::Value::StringValue(s) => Value::Bytes(Bytes::from(s)),
        any_value::Value::BoolValue(b) => Value::Boolean(b),
        any_value::Value::IntValue(i) => Value::Integer(i),
        any_value::Value::DoubleValue(f) => Value::from_f64_or_zero(f),
        any_value::Value::BytesValue(b) => Value::Bytes(Bytes::from(b)),
        any_value::Value::ArrayValue(a) => {
            Value::Array(a.values.into_iter().map(|v| into_value(Some(v))).collect())
        }
        any_value::Value::KvlistValue(kv) => Value::Object(
            kv.values
                .into_iter()
                .map(|kv| (kv.key.into(), into_value(kv.value)))
                .collect(),
        ),
    }
}

fn into_map(kvs: Vec<KeyValue>) -> BTreeMap<String, Value> {
    kvs.into_iter()
        .map(|kv| (kv.key, into_value(kv.value)))
        .collect()
}

/// Spans of an export request, or the first invalid id. The request is taken apart: names,
/// attribute keys and values move into the events; only the resource and scope are copied,
/// once per span.
pub fn traces(
    req: ExportTraceServiceRequest,
    source: &Option<Arc<str>>,
) -> Result<Vec<Event>, ConvertError> {
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let resource = into_map(rs.resource.map(|r| r.attributes).unwrap_or_default());
        for ss in rs.scope_spans {
            let (scope_name, scope_version) = scope_parts(ss.scope.as_ref());
            for s in ss.spans {
                let trace_id = fixed("trace_id", &s.trace_id, &s.name)?;
                let span_id = fixed("span_id", &s.span_id, &s.name)?;
                let parent_span_id = if s.parent_span_id.is_empty() {
                    None
                } else {
                    Some(fixed("parent_span_id", &s.parent_span_id, &s.name)?)
                };
                let links = s
                    .links
                    .into_iter()
                    .map(|l| {
                        Ok(SpanLink {
                            trace_id: fixed("link trace_id", &l.trace_id, &s.name)?,
                            span_id: fixed("link span_id", &l.span_id, &s.name)?,
                            trace_state: l.trace_state,
                            attributes: into_map(l.attributes),
                        })
                    })
                    .collect::<Result<_, ConvertError>>()?;
                let mut span = Span::new(trace_id, span_id, s.name);
                span.parent_span_id = parent_span_id;
                span.trace_state = s.trace_state;
                span.kind = kind(s.kind);
                span.start_time_unix_nano = s.start_time_unix_nano;
                span.end_time_unix_nano = s.end_time_unix_nano;
                span.attributes = into_map(s.attributes);
                span.events = s
                    .events
                    .into_iter()
                    .map(|e| SpanEvent {
                        time_unix_nano: e.time_unix_nano,
                        name: e.name,
                        attributes: into_map(e.attributes),
                    })
                    .collect();
                span.links = links;
                if let Some(st) = s.status {
                    span.status = SpanStatus {
                        code: st.code,
                        message: st.message,
                    };
                }
                span.resource = resource.clone();
                span.scope_name = scope_name.clone();
                span.scope_version = scope_version.clone();
                span.metadata = EventMetadata::new(source.clone());
                out.push(Event::from(span));
            }
        }
    }
    Ok(out)
}

fn nanos_to_time(n: u64) -> Option<DateTime<Utc>> {
    (n != 0).then(|| DateTime::from_timestamp_nanos(n.min(i64::MAX as u64) as i64))
}

/// A tag value: strings as they are, other values in their text form.
fn tag_text(v: &Value) -> String {
    match v.to_str_lossy() {
        Some(s) => s.into_owned(),
        None => v.to_string_lossy().into_owned(),
    }
}

/// Metrics of an export request: one event per data point.
pub fn metrics(req: ExportMetricsServiceRequest, source: &Option<Arc<str>>) -> Vec<Event> {
    let mut out = Vec::new();
    for rm in &req.resource_metrics {
        let mut base = BTreeMap::new();
        for kv in resource_attrs(rm.resource.as_ref()) {
            base.insert(
                format!("resource.{}", kv.key),
                tag_text(&any_value(kv.value.as_ref())),
            );
        }
        for sm in &rm.scope_metrics {
            let mut scope_tags = base.clone();
            let (name, version) = scope_parts(sm.scope.as_ref());
            if !name.is_empty() {
                scope_tags.insert("scope.name".into(), name);
            }
            if !version.is_empty() {
                scope_tags.insert("scope.version".into(), version);
            }
            for m in &sm.metrics {
                let Some(data) = &m.data else { continue };
                let mut push =
                    |attrs: &[KeyValue], t: u64, kind: MetricKind, value: MetricValue| {
                        let mut tags = scope_tags.clone();
                        for kv in attrs {
                            tags.insert(kv.key.clone(), tag_text(&any_value(kv.value.as_ref())));
                        }
                        let mut metric = Metric::new(m.name.clone(), kind, value);
                        metric.tags = tags;
                        metric.timestamp = nanos_to_time(t);
                        metric.metadata = EventMetadata::new(source.clone());
                        out.push(Event::from(metric));
                    };
                let kind_of = |t: i32| {
                    if t == AggregationTemporality::Delta as i32 {
                        MetricKind::Incremental
                    } else {
                        MetricKind::Absolute
                    }
                };
                match data {
                    metric::Data::Gauge(g) => {
                        for p in &g.data_points {
                            push(
                                &p.attributes,
                                p.time_unix_nano,
                                MetricKind::Absolute,
                                MetricValue::Gauge { value: number(p) },
                            );
                        }
                    }
                    metric::Data::Sum(s) => {
                        let kind = kind_of(s.aggregation_temporality);
                        for p in &s.data_points {
                            let value = number(p);
                            let v = if s.is_monotonic {
                                MetricValue::Counter { value }
                            } else {
                                MetricValue::Gauge { value }
                            };
                            push(&p.attributes, p.time_unix_nano, kind, v);
                        }
                    }
                    metric::Data::Histogram(h) => {
                        let kind = kind_of(h.aggregation_temporality);
                        for p in &h.data_points {
                            let buckets = p
                                .bucket_counts
                                .iter()
                                .enumerate()
                                .map(|(i, c)| Bucket {
                                    upper_limit: p
                                        .explicit_bounds
                                        .get(i)
                                        .copied()
                                        .unwrap_or(f64::INFINITY),
                                    count: *c,
                                })
                                .collect();
                            push(
                                &p.attributes,
                                p.time_unix_nano,
                                kind,
                                MetricValue::AggregatedHistogram {
                                    buckets,
                                    count: p.count,
                                    sum: p.sum.unwrap_or(0.0),
                                },
                            );
                        }
                    }
                    metric::Data::ExponentialHistogram(h) => {
                        let kind = kind_of(h.aggregation_temporality);
                        for p in &h.data_points {
                            let base = 2f64.powf(2f64.powi(-p.scale));
                            let mut buckets = Vec::new();
                            // Negative buckets, most negative first: (-base^(i+1), -base^i].
                            if let Some(Buckets {
                                offset,
                                bucket_counts,
                            }) = &p.negative
                            {
                                for (i, c) in bucket_counts.iter().enumerate().rev() {
                                    let idx = *offset as i64 + i as i64;
                                    buckets.push(Bucket {
                                        upper_limit: -base.powf(idx as f64),
                                        count: *c,
                                    });
                                }
                            }
                            buckets.push(Bucket {
                                upper_limit: 0.0,
                                count: p.zero_count,
                            });
                            if let Some(Buckets {
                                offset,
                                bucket_counts,
                            }) = &p.positive
                            {
                                for (i, c) in bucket_counts.iter().enumerate() {
                                    let idx = *offset as i64 + i as i64;
                                    buckets.push(Bucket {
                                        upper_limit: base.powf((idx + 1) as f64),
                                        count: *c,
                                    });
                                }
                            }
                            push(
                                &p.attributes,
                                p.time_unix_nano,
                                kind,
                                MetricValue::AggregatedHistogram {
                                    buckets,
                                    count: p.count,
                                    sum: p.sum.unwrap_or(0.0),
                                },
                            );
                        }
                    }
                    metric::Data::Summary(s) => {
                        for p in &s.data_points {
                            push(
                                &p.attributes,
                                p.time_unix_nano,
                                MetricKind::Absolute,
                                MetricValue::AggregatedSummary {
                                    quantiles: p
                                        .quantile_values
                                        .iter()
                                        .map(|q| Quantile {
                                            quantile: q.quantile,
                                            value: q.value,
                                        })
                                        .collect(),
                                    count: p.count,
                                    sum: p.sum,
                                },
                            );
                        }
                    }
                }
            }
        }
    }
    out
}

fn number(p: &NumberDataPoint) -> f64 {
    match p.value {
        Some(number_data_point::Value::AsDouble(d)) => d,
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        None => 0.0,
    }
}

fn hex(b: &[u8]) -> Value {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push_str(&format!("{x:02x}"));
    }
    Value::Bytes(Bytes::from(s))
}

/// Log records of an export request.
pub fn logs(req: ExportLogsServiceRequest, source: &Option<Arc<str>>) -> Vec<Event> {
    let mut out = Vec::new();
    for rl in &req.resource_logs {
        let resource = Value::Object(kv_object(resource_attrs(rl.resource.as_ref())));
        for sl in &rl.scope_logs {
            let (name, version) = scope_parts(sl.scope.as_ref());
            let mut scope = ObjectMap::new();
            scope.insert("name".into(), Value::from(name));
            scope.insert("version".into(), Value::from(version));
            let scope = Value::Object(scope);
            for r in &sl.log_records {
                let mut m = ObjectMap::new();
                m.insert("message".into(), any_value(r.body.as_ref()));
                if let Some(t) = nanos_to_time(r.time_unix_nano) {
                    m.insert("timestamp".into(), Value::Timestamp(t));
                }
                if let Some(t) = nanos_to_time(r.observed_time_unix_nano) {
                    m.insert("observed_timestamp".into(), Value::Timestamp(t));
                }
                if !r.severity_text.is_empty() {
                    m.insert(
                        "severity_text".into(),
                        Value::from(r.severity_text.as_str()),
                    );
                }
                if r.severity_number != 0 {
                    m.insert(
                        "severity_number".into(),
                        Value::Integer(r.severity_number as i64),
                    );
                }
                m.insert("attributes".into(), Value::Object(kv_object(&r.attributes)));
                m.insert("resource".into(), resource.clone());
                m.insert("scope".into(), scope.clone());
                if !r.trace_id.is_empty() {
                    m.insert("trace_id".into(), hex(&r.trace_id));
                }
                if !r.span_id.is_empty() {
                    m.insert("span_id".into(), hex(&r.span_id));
                }
                if r.flags != 0 {
                    m.insert("flags".into(), Value::Integer(r.flags as i64));
                }
                if !r.event_name.is_empty() {
                    m.insert("event_name".into(), Value::from(r.event_name.as_str()));
                }
                let mut l = LogEvent::from_map(m);
                l.metadata = EventMetadata::new(source.clone());
                out.push(Event::Log(l));
            }
        }
    }
    out
}

#[cfg(test)]
mod fuzz {
    use prost::Message;

    use super::*;

    /// Requests of every signal in OTLP/JSON, as the specification's examples write them.
    const LOGS: &str = r#"{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}},{"key":"host.cpus","value":{"intValue":"8"}}]},"scopeLogs":[{"scope":{"name":"lib","version":"1.0"},"logRecords":[{"timeUnixNano":"1544712660300000000","observedTimeUnixNano":"1544712660300000000","severityNumber":10,"severityText":"Information","traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","body":{"stringValue":"Example log record"},"attributes":[{"key":"bytes","value":{"bytesValue":"aGVsbG8="}},{"key":"list","value":{"arrayValue":{"values":[{"boolValue":true},{"doubleValue":1.5}]}}},{"key":"map","value":{"kvlistValue":{"values":[{"key":"k","value":{"stringValue":"v"}}]}}}]}]}]}]}"#;
    const TRACES: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},"scopeSpans":[{"scope":{"name":"lib"},"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","parentSpanId":"eee19b7ec3c1b173","name":"GET /cart","kind":2,"startTimeUnixNano":"1544712660000000000","endTimeUnixNano":"1544712661000000000","attributes":[{"key":"http.status","value":{"intValue":"200"}}],"events":[{"timeUnixNano":"1544712660500000000","name":"retry","attributes":[]}],"links":[{"traceId":"5b8efff798038103d269b633813fc60d","spanId":"eee19b7ec3c1b175"}],"status":{"code":2,"message":"boom"}}]}]}]}"#;
    const METRICS: &str = r#"{"resourceMetrics":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop"}}]},"scopeMetrics":[{"scope":{"name":"lib"},"metrics":[{"name":"requests","unit":"1","sum":{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{"asInt":"42","startTimeUnixNano":"1544712660000000000","timeUnixNano":"1544712661000000000","attributes":[{"key":"code","value":{"stringValue":"200"}}]}]}},{"name":"temp","gauge":{"dataPoints":[{"asDouble":21.5,"timeUnixNano":"1544712661000000000"}]}},{"name":"latency","histogram":{"aggregationTemporality":1,"dataPoints":[{"count":"3","sum":0.6,"bucketCounts":["1","1","1"],"explicitBounds":[0.1,0.5],"timeUnixNano":"1544712661000000000"}]}},{"name":"size","exponentialHistogram":{"aggregationTemporality":2,"dataPoints":[{"count":"4","sum":10,"scale":2,"zeroCount":"1","positive":{"offset":-2,"bucketCounts":["1","2"]},"negative":{"offset":0,"bucketCounts":["0"]},"timeUnixNano":"1544712661000000000"}]}},{"name":"rpc","summary":{"dataPoints":[{"count":"2","sum":1.0,"quantileValues":[{"quantile":0.5,"value":0.4},{"quantile":0.99,"value":0.6}],"timeUnixNano":"1544712661000000000"}]}}]}]}]}"#;

    /// Decodes `input` as a request of each signal, in protobuf (`json` false) or JSON, and
    /// converts what decodes.
    fn convert_all(input: &[u8], json: bool) {
        fn decode<T: Message + Default + serde::de::DeserializeOwned>(
            input: &[u8],
            json: bool,
        ) -> Option<T> {
            if json {
                serde_json::from_slice(input).ok()
            } else {
                T::decode(input).ok()
            }
        }
        let source = None;
        if let Some(r) = decode::<ExportLogsServiceRequest>(input, json) {
            let _ = logs(r, &source);
        }
        if let Some(r) = decode::<ExportTraceServiceRequest>(input, json) {
            let _ = traces(r, &source);
        }
        if let Some(r) = decode::<ExportMetricsServiceRequest>(input, json) {
            let _ = metrics(r, &source);
        }
    }

    fn dict() -> [&'static str; 14] {
        [
            "\"stringValue\"",
            "\"intValue\"",
            "\"doubleValue\"",
            "\"arrayValue\"",
            "\"kvlistValue\"",
            "\"bytesValue\"",
            "\"timeUnixNano\"",
            "\"traceId\"",
            "\"spanId\"",
            "\"18446744073709551615\"",
            "\"-1\"",
            "NaN",
            "1e400",
            "null",
        ]
    }

    /// OTLP/JSON requests of every signal, mutated: converted or refused, never a panic.
    #[test]
    fn fuzz_otlp_json() {
        weir_testing::fuzz::Fuzz::new("otlp_json")
            .seeds([LOGS, TRACES, METRICS])
            .dict(dict())
            .run(|input| convert_all(input, true));
    }

    /// The same requests in protobuf (what OTLP/gRPC and OTLP/HTTP carry), mutated.
    #[test]
    fn fuzz_otlp_protobuf() {
        let logs: ExportLogsServiceRequest = serde_json::from_str(LOGS).unwrap();
        let traces: ExportTraceServiceRequest = serde_json::from_str(TRACES).unwrap();
        let metrics: ExportMetricsServiceRequest = serde_json::from_str(METRICS).unwrap();
        assert_eq!(self::logs(logs.clone(), &None).len(), 1);
        weir_testing::fuzz::Fuzz::new("otlp_protobuf")
            .seeds([
                logs.encode_to_vec(),
                traces.encode_to_vec(),
                metrics.encode_to_vec(),
            ])
            .run(|input| convert_all(input, false));
    }
}
