//! `otlp`: traces, metrics and logs to any OpenTelemetry backend (Jaeger, Tempo, an
//! OpenTelemetry Collector, another Weir) over OTLP/gRPC or OTLP/HTTP (protobuf or JSON).
//!
//! ```toml
//! [sinks.jaeger]
//! type = "otlp"
//! inputs = ["otel.traces"]
//! protocol = "grpc"
//! endpoint = "http://jaeger-collector:4317"
//! compression = "gzip"
//! headers.authorization = "Bearer …"
//! ```
//!
//! Events are collected (the toolkit's batching stage) until `batch.max_events`,
//! `batch.max_bytes` (estimated) or `batch.timeout_secs`, then turned into at most one export
//! request per signal, grouped by resource and scope, with `request.concurrency` batches
//! exported at once:
//!
//! - spans ([`Span`]) as they are;
//! - metrics: counters are monotonic sums (incremental: delta, absolute: cumulative), absolute
//!   gauges gauges, incremental gauges non-monotonic delta sums, aggregated histograms and
//!   summaries histograms and summaries; tags are data point attributes, except `resource.*`
//!   (resource attributes) and `scope.name`/`scope.version` (as the `otlp` source writes
//!   them). Sets and raw distributions have no OTLP form: rejected and counted;
//! - logs: `message` is the body; `timestamp`, `observed_timestamp`, `severity_text`,
//!   `severity_number`, `trace_id`/`span_id` (hex), `flags`, `resource`, `scope` and
//!   `attributes` map to their OTLP fields; the fields named in `resource_fields`
//!   (`kubernetes`...) become resource attributes (objects flattened to dotted names), every
//!   other field an attribute.
//!
//! Refusals follow the toolkit's policy, the same for every sink ([`crate::toolkit::retry`]):
//! connection errors, HTTP 401, 403, 404, 407, 408, 429 and 5xx, and gRPC `UNAUTHENTICATED`,
//! `PERMISSION_DENIED`, `NOT_FOUND`, `UNAVAILABLE`, `RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED`,
//! `ABORTED`, `CANCELLED`, `UNKNOWN`, `INTERNAL`, `UNIMPLEMENTED`, `DATA_LOSS` are retried with
//! backoff until delivered (honouring the server's `RetryInfo` / `Retry-After`), which is
//! more than the OTLP specification retries: a credential or a route is not a verdict on the
//! data. HTTP 413 and a gRPC "message larger than max" split the export in halves; other
//! 4xx and `INVALID_ARGUMENT` reject its events. `request.retry_statuses` and
//! `request.reject_statuses` change this. A `partial_success` answer is counted and logged
//! with its message.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::metrics::v1::{
    self as pm, metric::Data, number_data_point, AggregationTemporality, NumberDataPoint,
    ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{self as pt, ResourceSpans, ScopeSpans};
use prost::Message;
use serde::{Deserialize, Serialize};
use tonic::codec::CompressionEncoding;
use weir_pipeline::component::{Sink, SinkConfig, SinkContext, SinkInput};
use weir_pipeline::config::{Concurrency, Count, Secret, Secs};
use weir_pipeline::event::{
    finalize_events, parse_path, Event, FieldPath, LogEvent, Metric, MetricKind, MetricValue, Span,
    SpanKind, Value,
};
use weir_pipeline::finalization::EventStatus;
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use crate::http::{
    build_client, gzip, header_map, retry_after, snippet, ClientTls, TlsClientConfig,
};
use crate::toolkit::batch::{self, BatchLimits};
use crate::toolkit::request::unless_stopped;
use crate::toolkit::split::{halves_of_vec, Parts};
use crate::toolkit::{
    BatchConfig, BatchDefaults, FailureReporter, RefusalPolicy, RequestConfig, RequestDefaults,
    Verdict, Wait,
};
use weir_pipeline::shutdown::ShutdownToken;

/// The longest OTLP/HTTP response read (a `partial_success` message, an error text).
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// gRPC or HTTP.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    #[default]
    Grpc,
    Http,
}

/// OTLP/HTTP body encoding.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum HttpEncoding {
    #[default]
    Protobuf,
    Json,
}

/// Request compression.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

/// The otlp sink's `batch` defaults: 1000 events, 10000000 bytes (estimated from the
/// events' fields), 1 second.
#[derive(Debug)]
pub struct OtlpBatch;

impl BatchDefaults for OtlpBatch {
    const MAX_EVENTS: Count = Count::of(1000);
    const MAX_BYTES: Count = Count::of(10_000_000);
    const TIMEOUT: Secs = Secs::from_secs(1);
}

/// The otlp sink's `request` defaults: one export in flight, 10 seconds per request, retries
/// from 0.1 to 30 seconds apart, forever.
#[derive(Debug)]
pub struct OtlpRequest;

impl RequestDefaults for OtlpRequest {
    const CONCURRENCY: Concurrency = Concurrency::of(1);
    const TIMEOUT: Secs = Secs::from_secs(10);
}

/// `type = "otlp"`: see the module docs.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpSinkConfig {
    /// OTLP/gRPC (`grpc`) or OTLP/HTTP (`http`). Default: `grpc`.
    #[serde(default)]
    pub protocol: Protocol,
    /// The receiver: `http://host:4317` (gRPC) or the base URL `http://host:4318` (HTTP;
    /// `/v1/traces`, `/v1/metrics`, `/v1/logs` are appended). `https://` uses TLS. Required.
    pub endpoint: String,
    /// HTTP only: the body encoding, `protobuf` or `json`. Default: `protobuf`.
    #[serde(default)]
    pub encoding: HttpEncoding,
    /// Request compression (gRPC message compression, or `Content-Encoding: gzip`): `none` or
    /// `gzip`. Default: `none`.
    #[serde(default)]
    pub compression: Compression,
    /// Headers (gRPC metadata) on every request, such as `authorization`. Default: none.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// Send the credentials (`headers` that carry them: `authorization`, `*key*`, `*token*`) over a connection without TLS. Default: false: a
    /// component with credentials and a plain `http://` endpoint does not start.
    #[serde(default)]
    pub allow_plaintext_credentials: bool,
    /// TLS for `https://` (`ca_file`, `crt_file`, `key_file`, `verify_certificate`,
    /// `verify_hostname`, `server_name`: the `tls` table shared by every component, see
    /// docs/configuration.md). Default: the built-in (webpki) roots.
    #[serde(default)]
    pub tls: Option<TlsClientConfig>,
    /// When an export is sent: `max_events` (default 1000), `max_bytes` (estimated from
    /// the events' fields; default 10000000), `timeout_secs` after the first waiting event
    /// (default 1).
    #[serde(default)]
    pub batch: BatchConfig<OtlpBatch>,
    /// Logs: fields (paths) that become resource attributes, objects flattened to dotted names
    /// (`kubernetes` → `kubernetes.pod_name`, …), e.g. `["kubernetes", "host"]`. Default: empty.
    #[serde(default)]
    pub resource_fields: Vec<String>,
    /// How exports are sent: `concurrency` (default 1), `timeout_secs` (default 10),
    /// `retry_initial_backoff_secs` (default 0.1), `retry_max_duration_secs` (default 30),
    /// `retry_attempts` (default: unset, retry until delivered; the events of a request
    /// given up are finalized as errored).
    /// `retry_statuses` and `reject_statuses` (default: none) change which HTTP statuses
    /// are retried (401, 403, 404, 407, 408, 429, 5xx), split (413) or rejected (other 4xx).
    #[serde(default)]
    pub request: RequestConfig<OtlpRequest>,
}

#[async_trait]
impl SinkConfig for OtlpSinkConfig {
    async fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BoxError> {
        let timeout = self.request.timeout();
        let url = reqwest::Url::parse(&self.endpoint)
            .map_err(|e| format!("`endpoint` `{}`: {e}", self.endpoint))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(
                format!("`endpoint` `{}` must be http:// or https://", self.endpoint).into(),
            );
        }
        let resource_fields = self
            .resource_fields
            .iter()
            .map(|f| {
                parse_path(f)
                    .map(|p| (f.trim_start_matches('.').to_string(), p))
                    .map_err(|e| format!("`resource_fields`: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if weir_connect::http::carries_credentials(&self.headers) {
            weir_connect::plaintext_credentials(
                "a credential in `headers`",
                &self.endpoint,
                self.endpoint.starts_with("https://") || TlsClientConfig::wanted(self.tls.as_ref()),
                self.allow_plaintext_credentials,
            )?;
        }
        let transport = match self.protocol {
            Protocol::Grpc => {
                let mut metadata = tonic::metadata::MetadataMap::new();
                for (k, v) in &self.headers {
                    let key = tonic::metadata::MetadataKey::from_bytes(k.to_lowercase().as_bytes())
                        .map_err(|e| format!("`headers`: `{k}`: {e}"))?;
                    let mut val = tonic::metadata::MetadataValue::try_from(v.expose())
                        .map_err(|e| format!("`headers.{k}`: {e}"))?;
                    val.set_sensitive(true);
                    metadata.insert(key, val);
                }
                let (ep, tls) =
                    weir_connect::grpc::endpoint("endpoint", &self.endpoint, self.tls.as_ref())?;
                let ep = ep
                    .timeout(timeout)
                    .connect_timeout(timeout.min(Duration::from_secs(10)));
                Transport::Grpc {
                    channel: match tls {
                        Some(connector) => ep.connect_with_connector_lazy(connector),
                        None => ep.connect_lazy(),
                    },
                    metadata,
                }
            }
            Protocol::Http => {
                let headers = header_map(&self.headers)?;
                Transport::Http {
                    client: {
                        TlsClientConfig::check_scheme(
                            self.tls.as_ref(),
                            "endpoint",
                            &self.endpoint,
                        )?;
                        build_client(self.tls.as_ref(), timeout)?
                    },
                    base: self.endpoint.trim_end_matches('/').to_string(),
                    headers,
                    json: self.encoding == HttpEncoding::Json,
                }
            }
        };
        Ok(Box::new(OtlpSink {
            limits: self.batch.limits(),
            inner: Arc::new(Inner {
                transport,
                gzip: self.compression == Compression::Gzip,
                request: self.request.clone(),
                resource_fields,
                policy: self.request.policy(),
                reporter: FailureReporter::new(cx.metrics.clone()),
                stop: cx.stop.clone(),
                metrics: cx.metrics,
            }),
        }))
    }

    fn input(&self) -> DataType {
        DataType::ALL
    }

    fn check_environment(&self) -> Result<(), BoxError> {
        Ok(TlsClientConfig::check(self.tls.as_ref())?)
    }
}

enum Transport {
    Grpc {
        channel: tonic::transport::Channel,
        metadata: tonic::metadata::MetadataMap,
    },
    Http {
        client: reqwest::Client,
        base: String,
        headers: reqwest::header::HeaderMap,
        json: bool,
    },
}

struct OtlpSink {
    limits: BatchLimits,
    inner: Arc<Inner>,
}

/// What the exports in flight share.
struct Inner {
    transport: Transport,
    gzip: bool,
    request: RequestConfig<OtlpRequest>,
    resource_fields: Vec<(String, FieldPath)>,
    metrics: Arc<ComponentMetrics>,
    policy: RefusalPolicy,
    reporter: FailureReporter,
    stop: ShutdownToken,
}

/// A batch of events waiting to be exported, with their estimated size.
#[derive(Default)]
struct Pending {
    events: Vec<Event>,
    bytes: usize,
}

/// The otlp sink encodes when it sends (grouping by resource needs the whole batch): the
/// batching stage only collects events and their estimated size.
struct Collect;

impl batch::Encoder for Collect {
    type Batch = Pending;

    fn encode(&mut self, event: Event, p: &mut Pending) {
        p.bytes += batch::estimated_bytes(&event);
        p.events.push(event);
    }

    fn events(p: &Pending) -> usize {
        p.events.len()
    }

    fn bytes(p: &Pending) -> usize {
        p.bytes
    }
}

/// How one export went.
enum Outcome {
    /// Accepted; the count and message of a partial success.
    Ok(i64, String),
    Retry(String, Option<Duration>),
    /// Too large: split the export.
    TooLarge(String),
    Refused(String),
}

/// How [`Inner::deliver_one`] ended.
enum Delivery {
    /// The events are settled.
    Done,
    /// Refused as too large; the events are not settled.
    TooLarge(String),
    /// The sink was told to stop; the events are not settled.
    Stopped,
}

// ---- native -> OTLP ----

fn any(v: &Value) -> AnyValue {
    let value = match v {
        Value::Bytes(_) | Value::String(_) => {
            let b = v.as_bytes().map(|b| &b[..]).unwrap_or_default();
            match std::str::from_utf8(b) {
                Ok(s) => any_value::Value::StringValue(s.to_string()),
                Err(_) => any_value::Value::BytesValue(b.to_vec()),
            }
        }
        Value::Boolean(b) => any_value::Value::BoolValue(*b),
        Value::Integer(i) => any_value::Value::IntValue(*i),
        Value::Float(f) => any_value::Value::DoubleValue(f.into_inner()),
        Value::Array(a) => any_value::Value::ArrayValue(ArrayValue {
            values: a.iter().map(any).collect(),
        }),
        Value::Object(m) => any_value::Value::KvlistValue(KeyValueList {
            values: m.iter().map(|(k, v)| kv(k.as_str(), v)).collect(),
        }),
        Value::Timestamp(t) => {
            any_value::Value::StringValue(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        }
        Value::Null => return AnyValue { value: None },
        other => any_value::Value::StringValue(other.to_string_lossy().into_owned()),
    };
    AnyValue { value: Some(value) }
}

fn kv(k: &str, v: &Value) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: Some(any(v)),
    }
}

fn kvs(m: &BTreeMap<String, Value>) -> Vec<KeyValue> {
    m.iter().map(|(k, v)| kv(k, v)).collect()
}

fn str_kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_string())),
        }),
    }
}

fn scope(name: &str, version: &str) -> Option<InstrumentationScope> {
    Some(InstrumentationScope {
        name: name.to_string(),
        version: version.to_string(),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
    })
}

fn resource(attributes: Vec<KeyValue>) -> Option<Resource> {
    Some(Resource {
        attributes,
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    })
}

fn span_kind(k: SpanKind) -> i32 {
    (match k {
        SpanKind::Unspecified => pt::span::SpanKind::Unspecified,
        SpanKind::Internal => pt::span::SpanKind::Internal,
        SpanKind::Server => pt::span::SpanKind::Server,
        SpanKind::Client => pt::span::SpanKind::Client,
        SpanKind::Producer => pt::span::SpanKind::Producer,
        SpanKind::Consumer => pt::span::SpanKind::Consumer,
    }) as i32
}

fn span(s: &Span) -> pt::Span {
    pt::Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: s.trace_state.clone(),
        parent_span_id: s.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags: 0,
        name: s.name.clone(),
        kind: span_kind(s.kind),
        start_time_unix_nano: s.start_time_unix_nano,
        end_time_unix_nano: s.end_time_unix_nano,
        attributes: kvs(&s.attributes),
        dropped_attributes_count: 0,
        events: s
            .events
            .iter()
            .map(|e| pt::span::Event {
                time_unix_nano: e.time_unix_nano,
                name: e.name.clone(),
                attributes: kvs(&e.attributes),
                dropped_attributes_count: 0,
            })
            .collect(),
        dropped_events_count: 0,
        links: s
            .links
            .iter()
            .map(|l| pt::span::Link {
                trace_id: l.trace_id.to_vec(),
                span_id: l.span_id.to_vec(),
                trace_state: l.trace_state.clone(),
                attributes: kvs(&l.attributes),
                dropped_attributes_count: 0,
                flags: 0,
            })
            .collect(),
        dropped_links_count: 0,
        status: Some(pt::Status {
            message: s.status.message.clone(),
            code: s.status.code,
        }),
    }
}

/// A span's resource attributes.
type Attributes = BTreeMap<String, Value>;
/// An instrumentation scope: name and version.
type ScopeKey<'a> = (&'a str, &'a str);

/// The export request for the spans of a batch, grouped by resource and scope. A span finds
/// its group by comparing its native resource map and scope with those of the groups so far
/// (the last one first), so the OTLP form of a resource is built once per group, not per
/// span.
pub fn traces_request<'a>(spans: impl Iterator<Item = &'a Span>) -> ExportTraceServiceRequest {
    let mut out: Vec<ResourceSpans> = Vec::new();
    // Parallel to `out`: each group's resource, and the (name, version) of its scopes.
    let mut keys: Vec<(&Attributes, Vec<ScopeKey>)> = Vec::new();
    let mut last = (0, 0);
    for s in spans {
        let same_as_last = keys.get(last.0).is_some_and(|(r, scopes)| {
            *r == &s.resource
                && scopes.get(last.1) == Some(&(s.scope_name.as_str(), s.scope_version.as_str()))
        });
        if !same_as_last {
            let ri = match keys.iter().position(|(r, _)| *r == &s.resource) {
                Some(i) => i,
                None => {
                    out.push(ResourceSpans {
                        resource: resource(kvs(&s.resource)),
                        scope_spans: Vec::new(),
                        schema_url: String::new(),
                    });
                    keys.push((&s.resource, Vec::new()));
                    out.len() - 1
                }
            };
            let scope_key = (s.scope_name.as_str(), s.scope_version.as_str());
            let si = match keys[ri].1.iter().position(|k| *k == scope_key) {
                Some(i) => i,
                None => {
                    out[ri].scope_spans.push(ScopeSpans {
                        scope: scope(&s.scope_name, &s.scope_version),
                        spans: Vec::new(),
                        schema_url: String::new(),
                    });
                    keys[ri].1.push(scope_key);
                    out[ri].scope_spans.len() - 1
                }
            };
            last = (ri, si);
        }
        out[last.0].scope_spans[last.1].spans.push(span(s));
    }
    ExportTraceServiceRequest {
        resource_spans: out,
    }
}

fn nanos(t: Option<chrono::DateTime<chrono::Utc>>) -> u64 {
    t.and_then(|t| t.timestamp_nanos_opt())
        .map(|n| n.max(0) as u64)
        .unwrap_or(0)
}

/// One OTLP metric (with one data point) for `m`, or why it has none.
fn metric(m: &Metric, attributes: Vec<KeyValue>) -> Result<pm::Metric, &'static str> {
    let time_unix_nano = nanos(m.timestamp);
    let temporality = match m.kind {
        MetricKind::Incremental => AggregationTemporality::Delta,
        MetricKind::Absolute => AggregationTemporality::Cumulative,
    } as i32;
    let number = |value: f64| NumberDataPoint {
        attributes: attributes.clone(),
        start_time_unix_nano: 0,
        time_unix_nano,
        exemplars: Vec::new(),
        flags: 0,
        value: Some(number_data_point::Value::AsDouble(value)),
    };
    let data = match &m.value {
        MetricValue::Counter { value } => Data::Sum(pm::Sum {
            data_points: vec![number(*value)],
            aggregation_temporality: temporality,
            is_monotonic: true,
        }),
        MetricValue::Gauge { value } if m.kind == MetricKind::Absolute => Data::Gauge(pm::Gauge {
            data_points: vec![number(*value)],
        }),
        MetricValue::Gauge { value } => Data::Sum(pm::Sum {
            data_points: vec![number(*value)],
            aggregation_temporality: temporality,
            is_monotonic: false,
        }),
        MetricValue::AggregatedHistogram {
            buckets,
            count,
            sum,
        } => {
            let mut bounds = Vec::new();
            let mut counts = Vec::new();
            for b in buckets {
                counts.push(b.count);
                if b.upper_limit.is_finite() {
                    bounds.push(b.upper_limit);
                }
            }
            if counts.len() == bounds.len() {
                // No +Inf bucket: OTLP has one more count than bounds.
                counts.push(0);
            }
            Data::Histogram(pm::Histogram {
                data_points: vec![pm::HistogramDataPoint {
                    attributes: attributes.clone(),
                    start_time_unix_nano: 0,
                    time_unix_nano,
                    count: *count,
                    sum: Some(*sum),
                    bucket_counts: counts,
                    explicit_bounds: bounds,
                    exemplars: Vec::new(),
                    flags: 0,
                    min: None,
                    max: None,
                }],
                aggregation_temporality: temporality,
            })
        }
        MetricValue::AggregatedSummary {
            quantiles,
            count,
            sum,
        } => Data::Summary(pm::Summary {
            data_points: vec![pm::SummaryDataPoint {
                attributes: attributes.clone(),
                start_time_unix_nano: 0,
                time_unix_nano,
                count: *count,
                sum: *sum,
                quantile_values: quantiles
                    .iter()
                    .map(|q| pm::summary_data_point::ValueAtQuantile {
                        quantile: q.quantile,
                        value: q.value,
                    })
                    .collect(),
                flags: 0,
            }],
        }),
        MetricValue::Set { .. } => return Err("a set has no OTLP form"),
        MetricValue::Distribution { .. } => {
            return Err("a raw distribution has no OTLP form (aggregate it first)")
        }
    };
    Ok(pm::Metric {
        name: m.full_name(),
        description: String::new(),
        unit: String::new(),
        metadata: Vec::new(),
        data: Some(data),
    })
}

/// The export request for the metrics of a batch; the indexes of metrics with no OTLP form.
pub fn metrics_request<'a>(
    metrics: impl Iterator<Item = (usize, &'a Metric)>,
) -> (ExportMetricsServiceRequest, Vec<(usize, &'static str)>) {
    let mut out: Vec<ResourceMetrics> = Vec::new();
    let mut bad = Vec::new();
    for (i, m) in metrics {
        let mut res = Vec::new();
        let (mut sname, mut sversion) = ("", "");
        let mut attrs = Vec::new();
        for (k, v) in &m.tags {
            if let Some(r) = k.strip_prefix("resource.") {
                res.push(str_kv(r, v));
            } else if k == "scope.name" {
                sname = v;
            } else if k == "scope.version" {
                sversion = v;
            } else {
                attrs.push(str_kv(k, v));
            }
        }
        let om = match metric(m, attrs) {
            Ok(om) => om,
            Err(e) => {
                bad.push((i, e));
                continue;
            }
        };
        let res = resource(res);
        let rm = match out.iter().position(|r| r.resource == res) {
            Some(i) => &mut out[i],
            None => {
                out.push(ResourceMetrics {
                    resource: res,
                    scope_metrics: Vec::new(),
                    schema_url: String::new(),
                });
                let n = out.len() - 1;
                &mut out[n]
            }
        };
        let sc = scope(sname, sversion);
        let sm = match rm.scope_metrics.iter().position(|x| x.scope == sc) {
            Some(i) => &mut rm.scope_metrics[i],
            None => {
                rm.scope_metrics.push(ScopeMetrics {
                    scope: sc,
                    metrics: Vec::new(),
                    schema_url: String::new(),
                });
                let n = rm.scope_metrics.len() - 1;
                &mut rm.scope_metrics[n]
            }
        };
        sm.metrics.push(om);
    }
    (
        ExportMetricsServiceRequest {
            resource_metrics: out,
        },
        bad,
    )
}

fn unhex(v: Option<&Value>) -> Vec<u8> {
    let Some(b) = v.and_then(Value::as_bytes) else {
        return Vec::new();
    };
    if b.len() % 2 != 0 {
        return Vec::new();
    }
    let d = |c: u8| (c as char).to_digit(16).map(|x| x as u8);
    b.chunks(2)
        .map(|p| Some(d(p[0])? << 4 | d(p[1])?))
        .collect::<Option<Vec<u8>>>()
        .unwrap_or_default()
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<KeyValue>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                flatten(&format!("{prefix}.{k}"), v, out);
            }
        }
        other => out.push(kv(prefix, other)),
    }
}

fn time_of(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Timestamp(t)) => nanos(Some(*t)),
        Some(v @ (Value::Bytes(_) | Value::String(_))) => v
            .to_str_lossy()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(&s).ok())
            .map(|t| nanos(Some(t.with_timezone(&chrono::Utc))))
            .unwrap_or(0),
        Some(Value::Integer(i)) => (*i).max(0) as u64,
        _ => 0,
    }
}

/// The OTLP fields of a log event that are not attributes.
const LOG_FIELDS: &[&str] = &[
    "message",
    "timestamp",
    "observed_timestamp",
    "severity_text",
    "severity_number",
    "trace_id",
    "span_id",
    "flags",
    "resource",
    "scope",
    "attributes",
    "event_name",
];

fn log_record(
    l: &LogEvent,
    resource_fields: &[(String, FieldPath)],
) -> (Vec<KeyValue>, (String, String), LogRecord) {
    let mut res = Vec::new();
    if let Some(Value::Object(m)) = l.get_field("resource") {
        for (k, v) in m {
            res.push(kv(k.as_str(), v));
        }
    }
    for (name, path) in resource_fields {
        if let Some(v) = l.get(path) {
            flatten(name, v, &mut res);
        }
    }
    let text = |f: &str| {
        l.get_field(f)
            .and_then(Value::to_str_lossy)
            .map(|s| s.into_owned())
            .unwrap_or_default()
    };
    let scope = match l.get_field("scope") {
        Some(Value::Object(m)) => {
            let t = |f: &str| {
                m.get(f)
                    .and_then(Value::to_str_lossy)
                    .map(|s| s.into_owned())
                    .unwrap_or_default()
            };
            (t("name"), t("version"))
        }
        _ => Default::default(),
    };
    let mut attributes = Vec::new();
    if let Some(Value::Object(m)) = l.get_field("attributes") {
        for (k, v) in m {
            attributes.push(kv(k.as_str(), v));
        }
    }
    let top: Vec<&str> = resource_fields
        .iter()
        .filter_map(|(n, _)| (!n.contains('.')).then_some(n.as_str()))
        .collect();
    if let Some(m) = l.as_map() {
        for (k, v) in m {
            if !LOG_FIELDS.contains(&k.as_str()) && !top.contains(&k.as_str()) {
                attributes.push(kv(k.as_str(), v));
            }
        }
    }
    let int = |f: &str| match l.get_field(f) {
        Some(Value::Integer(i)) => *i,
        _ => 0,
    };
    let record = LogRecord {
        time_unix_nano: time_of(l.get_field("timestamp")),
        observed_time_unix_nano: time_of(l.get_field("observed_timestamp")),
        severity_number: int("severity_number") as i32,
        severity_text: text("severity_text"),
        body: l.get_field("message").map(any),
        attributes,
        dropped_attributes_count: 0,
        flags: int("flags") as u32,
        trace_id: unhex(l.get_field("trace_id")),
        span_id: unhex(l.get_field("span_id")),
        event_name: text("event_name"),
    };
    (res, scope, record)
}

/// The export request for the logs of a batch.
pub fn logs_request<'a>(
    logs: impl Iterator<Item = &'a LogEvent>,
    resource_fields: &[(String, FieldPath)],
) -> ExportLogsServiceRequest {
    let mut out: Vec<ResourceLogs> = Vec::new();
    for l in logs {
        let (res, (sname, sversion), record) = log_record(l, resource_fields);
        let res = resource(res);
        let rl = match out.iter().position(|r| r.resource == res) {
            Some(i) => &mut out[i],
            None => {
                out.push(ResourceLogs {
                    resource: res,
                    scope_logs: Vec::new(),
                    schema_url: String::new(),
                });
                let n = out.len() - 1;
                &mut out[n]
            }
        };
        let sc = scope(&sname, &sversion);
        let sl = match rl.scope_logs.iter().position(|x| x.scope == sc) {
            Some(i) => &mut rl.scope_logs[i],
            None => {
                rl.scope_logs.push(ScopeLogs {
                    scope: sc,
                    log_records: Vec::new(),
                    schema_url: String::new(),
                });
                let n = rl.scope_logs.len() - 1;
                &mut rl.scope_logs[n]
            }
        };
        sl.log_records.push(record);
    }
    ExportLogsServiceRequest { resource_logs: out }
}

// ---- sending ----

fn grpc_outcome<T>(
    r: Result<tonic::Response<T>, tonic::Status>,
    partial: impl FnOnce(T) -> (i64, String),
    cap: Duration,
    policy: &RefusalPolicy,
) -> Outcome {
    match r {
        Ok(resp) => {
            let (n, m) = partial(resp.into_inner());
            Outcome::Ok(n, m)
        }
        Err(s) => {
            let msg = format!("gRPC {:?}: {}", s.code(), s.message());
            match policy.grpc(s.code(), s.message()) {
                Verdict::Retry => Outcome::Retry(
                    msg,
                    weir_connect::grpc_status::decode_retry_delay(s.details()).map(|d| d.min(cap)),
                ),
                Verdict::Split => Outcome::TooLarge(msg),
                Verdict::Reject => Outcome::Refused(msg),
            }
        }
    }
}

/// A signal's request, encoded once (protobuf, or OTLP/JSON for HTTP with `encoding =
/// "json"`) and sent as these bytes on every attempt.
struct Request {
    signal: Signal,
    body: bytes::Bytes,
}

#[derive(Clone, Copy)]
enum Signal {
    Traces,
    Metrics,
    Logs,
}

impl Signal {
    fn path(self) -> &'static str {
        match self {
            Signal::Traces => "traces",
            Signal::Metrics => "metrics",
            Signal::Logs => "logs",
        }
    }
    fn grpc_method(self) -> &'static str {
        match self {
            Signal::Traces => "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            Signal::Metrics => "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            Signal::Logs => "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
        }
    }
}

impl Request {
    fn new<T: Message + Serialize>(signal: Signal, m: &T, json: bool) -> Request {
        let body = if json { to_json(m) } else { m.encode_to_vec() };
        Request {
            signal,
            body: body.into(),
        }
    }
}

/// A gRPC codec for messages already encoded: the export request goes out as its bytes (no
/// copy of the request per attempt), and the answer comes back as bytes for
/// [`partial_success`] to decode.
#[derive(Clone, Copy, Default)]
struct Encoded;

impl tonic::codec::Codec for Encoded {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
    type Encoder = Encoded;
    type Decoder = Encoded;
    fn encoder(&mut self) -> Encoded {
        Encoded
    }
    fn decoder(&mut self) -> Encoded {
        Encoded
    }
}

impl tonic::codec::Encoder for Encoded {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn encode(
        &mut self,
        item: bytes::Bytes,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        use bytes::BufMut as _;
        dst.put(item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Encoded {
    type Item = bytes::Bytes;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<bytes::Bytes>, tonic::Status> {
        use bytes::Buf as _;
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Inner {
    async fn send(&self, req: &Request) -> Outcome {
        let cap = self.request.max_backoff();
        match &self.transport {
            Transport::Grpc { channel, metadata } => {
                let mut client = tonic::client::Grpc::new(channel.clone())
                    .accept_compressed(CompressionEncoding::Gzip);
                if self.gzip {
                    client = client.send_compressed(CompressionEncoding::Gzip);
                }
                if let Err(e) = client.ready().await {
                    return Outcome::Retry(format!("gRPC channel: {e}"), None);
                }
                let mut r = tonic::Request::new(req.body.clone());
                *r.metadata_mut() = metadata.clone();
                let method = http::uri::PathAndQuery::from_static(req.signal.grpc_method());
                grpc_outcome(
                    client.unary(r, method, Encoded).await,
                    |body| partial_success(req.signal, &body, false),
                    cap,
                    &self.policy,
                )
            }
            Transport::Http {
                client,
                base,
                headers,
                json,
            } => {
                let url = format!("{base}/v1/{}", req.signal.path());
                let body = if self.gzip {
                    bytes::Bytes::from(gzip(&req.body))
                } else {
                    req.body.clone()
                };
                self.metrics.add_sent_bytes(body.len() as u64);
                let mut r = client.post(&url).headers(headers.clone()).header(
                    reqwest::header::CONTENT_TYPE,
                    if *json {
                        "application/json"
                    } else {
                        "application/x-protobuf"
                    },
                );
                if self.gzip {
                    r = r.header(reqwest::header::CONTENT_ENCODING, "gzip");
                }
                let resp = match r.body(body).send().await {
                    Ok(r) => r,
                    Err(e) => return Outcome::Retry(format!("POST {url}: {e}"), None),
                };
                let status = resp.status().as_u16();
                let after = retry_after(resp.headers(), cap);
                // A response over the cap reads as empty, like an unreadable one.
                let bytes = weir_connect::http::read_capped(resp, MAX_RESPONSE_BYTES)
                    .await
                    .unwrap_or_default();
                if (200..300).contains(&status) {
                    let (n, m) = partial_success(req.signal, &bytes, *json);
                    return Outcome::Ok(n, m);
                }
                let msg = format!("POST {url}: HTTP {status}: {}", snippet(&bytes, 300));
                match self.policy.http(status) {
                    Verdict::Retry => Outcome::Retry(msg, after),
                    Verdict::Split => Outcome::TooLarge(msg),
                    Verdict::Reject => Outcome::Refused(msg),
                }
            }
        }
    }

    /// Sends one request until it is accepted, refused, or retries run out; finalizes
    /// `events` accordingly (not when it is too large or the sink is stopped).
    async fn deliver_one(&self, req: &Request, events: &mut [Event]) -> Delivery {
        let mut retries = self.request.retries();
        loop {
            if self.stop.is_cancelled() {
                return Delivery::Stopped;
            }
            let Some(outcome) = unless_stopped(self.send(req), &self.stop).await else {
                return Delivery::Stopped;
            };
            match outcome {
                Outcome::Ok(rejected, msg) => {
                    self.reporter.success();
                    if rejected > 0 || !msg.is_empty() {
                        self.metrics.error(
                            "partial_success",
                            rejected.max(0) as u64,
                            &format_args!(
                                "the receiver rejected {rejected} item(s) of an export: {msg}"
                            ),
                        );
                    }
                    self.metrics.add_sent(events.len() as u64);
                    finalize_events(events, EventStatus::Delivered);
                    return Delivery::Done;
                }
                Outcome::TooLarge(msg) => {
                    self.reporter.success();
                    return Delivery::TooLarge(msg);
                }
                Outcome::Refused(msg) => {
                    self.reporter.success();
                    self.metrics.error(
                        "rejected",
                        events.len() as u64,
                        &format_args!("{} event(s) refused, not retried: {msg}", events.len()),
                    );
                    finalize_events(events, EventStatus::Rejected);
                    return Delivery::Done;
                }
                Outcome::Retry(msg, after) => {
                    self.reporter.failure(&msg);
                    match retries.wait(after, &self.stop).await {
                        Wait::Again => {}
                        Wait::GaveUp => {
                            let attempts = retries.failed();
                            self.metrics.error(
                                "gave_up",
                                events.len() as u64,
                                &format_args!("giving up after {attempts} attempts: {msg}"),
                            );
                            finalize_events(events, EventStatus::Errored);
                            return Delivery::Done;
                        }
                        Wait::Stopped => return Delivery::Stopped,
                    }
                }
            }
        }
    }

    /// The export request of `events` (all of `signal`).
    fn request_of(&self, signal: Signal, events: &[Event]) -> Request {
        let json = matches!(self.transport, Transport::Http { json: true, .. });
        match signal {
            Signal::Traces => {
                let req = traces_request(events.iter().filter_map(|e| match e {
                    Event::Trace(s) => Some(&**s),
                    _ => None,
                }));
                Request::new(signal, &req, json)
            }
            Signal::Metrics => {
                // The metrics without an OTLP form were taken out before.
                let (req, _) =
                    metrics_request(events.iter().enumerate().filter_map(|(i, e)| match e {
                        Event::Metric(m) => Some((i, &**m)),
                        _ => None,
                    }));
                Request::new(signal, &req, json)
            }
            Signal::Logs => {
                let req = logs_request(
                    events.iter().filter_map(Event::as_log),
                    &self.resource_fields,
                );
                Request::new(signal, &req, json)
            }
        }
    }

    /// Exports the events of one signal: one request (`first`, when already made), or its
    /// halves (recursively) when the receiver says it is too large. Returns false when the
    /// sink was stopped.
    async fn deliver(
        &self,
        signal: Signal,
        events: Vec<Event>,
        mut first: Option<Request>,
    ) -> bool {
        let mut parts = Parts::new(events);
        while let Some(mut events) = parts.next() {
            let req = match first.take() {
                Some(r) => r,
                None => self.request_of(signal, &events),
            };
            match self.deliver_one(&req, &mut events).await {
                Delivery::Done => {}
                Delivery::TooLarge(msg) => {
                    if let Err(mut one) = parts.split(events, halves_of_vec) {
                        let size = req.body.len();
                        self.metrics.error(
                            "rejected",
                            one.len() as u64,
                            &format_args!(
                                "an export of one {} item of {size} bytes is too large for the receiver, even alone; rejected ({msg})",
                                signal.path()
                            ),
                        );
                        finalize_events(&mut one, EventStatus::Rejected);
                    }
                }
                Delivery::Stopped => {
                    let mut left = events;
                    for more in parts.drain() {
                        left.extend(more);
                    }
                    finalize_events(&mut left, EventStatus::Errored);
                    let n = left.len() as u64;
                    self.metrics.error(
                        "stopped",
                        n,
                        &format_args!(
                            "stopped while retrying: {n} event(s) not delivered, left unacknowledged (errored)"
                        ),
                    );
                    return false;
                }
            }
        }
        true
    }

    /// Exports a batch (one request per signal) and hands back its emptied buffer.
    async fn flush(self: Arc<Self>, mut pending: Pending) -> Pending {
        let (mut traces, mut metrics, mut logs) = (Vec::new(), Vec::new(), Vec::new());
        pending.bytes = 0;
        for e in pending.events.drain(..) {
            match e {
                Event::Trace(_) => traces.push(e),
                Event::Metric(_) => metrics.push(e),
                Event::Log(_) => logs.push(e),
            }
        }
        let json = matches!(self.transport, Transport::Http { json: true, .. });
        let mut metrics_req = None;
        if !metrics.is_empty() {
            let (req, bad) =
                metrics_request(metrics.iter().enumerate().filter_map(|(i, e)| match e {
                    Event::Metric(m) => Some((i, &**m)),
                    _ => None,
                }));
            for (i, why) in bad.iter().rev() {
                let mut e = metrics.remove(*i);
                self.metrics.error("unsupported", 1, why);
                e.finalize(EventStatus::Rejected);
            }
            // Made without the metrics just taken out: the request of those left.
            metrics_req = Some(Request::new(Signal::Metrics, &req, json));
        }
        let mut stopped = false;
        for (signal, mut events, first) in [
            (Signal::Traces, traces, None),
            (Signal::Metrics, metrics, metrics_req),
            (Signal::Logs, logs, None),
        ] {
            if events.is_empty() {
                continue;
            }
            if stopped {
                // Given up with the signal before it.
                finalize_events(&mut events, EventStatus::Errored);
                self.metrics.error(
                    "stopped",
                    events.len() as u64,
                    &format_args!(
                        "stopped: {} event(s) not delivered, left unacknowledged (errored)",
                        events.len()
                    ),
                );
                continue;
            }
            stopped = !self.deliver(signal, events, first).await;
        }
        pending
    }
}

fn to_json<T: Serialize>(m: &T) -> Vec<u8> {
    serde_json::to_vec(m).unwrap_or_default()
}

/// The `partial_success` of an export answer (protobuf or OTLP/JSON): rejected items and
/// the receiver's message; nothing when the answer is empty or does not decode.
fn partial_success(signal: Signal, body: &[u8], json: bool) -> (i64, String) {
    fn dec<T: Message + Default + serde::de::DeserializeOwned>(b: &[u8], json: bool) -> Option<T> {
        if b.is_empty() {
            return None;
        }
        if json {
            serde_json::from_slice(b).ok()
        } else {
            T::decode(b).ok()
        }
    }
    match signal {
        Signal::Traces => dec::<ExportTraceServiceResponse>(body, json)
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_spans, p.error_message)),
        Signal::Metrics => dec::<ExportMetricsServiceResponse>(body, json)
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_data_points, p.error_message)),
        Signal::Logs => dec::<ExportLogsServiceResponse>(body, json)
            .and_then(|r| r.partial_success)
            .map(|p| (p.rejected_log_records, p.error_message)),
    }
    .unwrap_or_default()
}

#[async_trait]
impl Sink for OtlpSink {
    /// The toolkit's batching stage, with `request.concurrency` exports in flight.
    async fn run(self: Box<Self>, mut input: SinkInput) -> Result<(), BoxError> {
        let inner = Arc::clone(&self.inner);
        let concurrency = inner.request.concurrency();
        batch::run(&mut input, self.limits, concurrency, &mut Collect, |p| {
            Arc::clone(&inner).flush(p)
        })
        .await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_pipeline::event::Bucket;

    #[test]
    fn histograms_get_an_inf_bucket_and_tags_split() {
        let m = Metric::new(
            "latency",
            MetricKind::Absolute,
            MetricValue::AggregatedHistogram {
                buckets: vec![
                    Bucket {
                        upper_limit: 0.1,
                        count: 2,
                    },
                    Bucket {
                        upper_limit: 1.0,
                        count: 3,
                    },
                ],
                count: 5,
                sum: 1.5,
            },
        )
        .with_tag("resource.service.name", "api")
        .with_tag("scope.name", "lib")
        .with_tag("route", "/x");
        let (req, bad) = metrics_request([(0, &m)].into_iter());
        assert!(bad.is_empty());
        let rm = &req.resource_metrics[0];
        assert_eq!(
            rm.resource.as_ref().unwrap().attributes,
            vec![str_kv("service.name", "api")]
        );
        let sm = &rm.scope_metrics[0];
        assert_eq!(sm.scope.as_ref().unwrap().name, "lib");
        let Some(Data::Histogram(h)) = &sm.metrics[0].data else {
            panic!()
        };
        let p = &h.data_points[0];
        assert_eq!(p.explicit_bounds, vec![0.1, 1.0]);
        assert_eq!(p.bucket_counts, vec![2, 3, 0]);
        assert_eq!(p.attributes, vec![str_kv("route", "/x")]);
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
    }

    #[test]
    fn log_fields_map_to_otlp() {
        let mut l = LogEvent::default();
        l.insert_field("message", "hello");
        l.insert_field("severity_text", "WARN");
        l.insert_field("severity_number", 13);
        l.insert_field("trace_id", "0102030405060708090a0b0c0d0e0f10");
        l.insert_field("app", "shop");
        l.insert(&parse_path("kubernetes.pod").unwrap(), "p-1");
        let rf = vec![("kubernetes".to_string(), parse_path("kubernetes").unwrap())];
        let req = logs_request([&l].into_iter(), &rf);
        let rl = &req.resource_logs[0];
        assert_eq!(
            rl.resource.as_ref().unwrap().attributes,
            vec![str_kv("kubernetes.pod", "p-1")]
        );
        let r = &rl.scope_logs[0].log_records[0];
        assert_eq!(r.severity_text, "WARN");
        assert_eq!(r.severity_number, 13);
        assert_eq!(r.trace_id, (1..=16).collect::<Vec<u8>>());
        assert_eq!(r.attributes, vec![str_kv("app", "shop")]);
        assert_eq!(
            r.body,
            Some(AnyValue {
                value: Some(any_value::Value::StringValue("hello".into()))
            })
        );
    }
}
