//! The `otlp` sink and source over gRPC, against a collector double and a client built from
//! the collector's own service types (`opentelemetry-proto`, tonic).
//!
//! The double ([`Collector`]) serves `opentelemetry.proto.collector.trace.v1.TraceService/Export`
//! and answers each call from a script: a failure with a `google.rpc.RetryInfo` detail in
//! `grpc-status-details-bin` (as a collector does when it sheds load), a `partial_success`,
//! or OK. It records every call (when it came, which span ids it carried) and the spans it
//! accepted.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};
use weir_pipeline::topology::RunningTopology;

use crate::harness::{free_addr, http_get, wait_until};

/// `google.rpc.Status` and `google.rpc.RetryInfo` (`google/rpc/status.proto`,
/// `google/rpc/error_details.proto`), field for field.
mod rpc {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        pub retry_delay: Option<Duration>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Duration {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

/// A gRPC error carrying `RetryInfo { retry_delay }`, as the Go and Java gRPC status helpers
/// encode it.
fn status_with_retry_info(code: Code, message: &str, delay: Duration) -> Status {
    let info = rpc::RetryInfo {
        retry_delay: Some(rpc::Duration {
            seconds: delay.as_secs() as i64,
            nanos: delay.subsec_nanos() as i32,
        }),
    };
    let details = rpc::Status {
        code: code as i32,
        message: message.to_string(),
        details: vec![rpc::Any {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: info.encode_to_vec(),
        }],
    };
    Status::with_details(code, message, details.encode_to_vec().into())
}

/// How the double answers one call.
enum Answer {
    /// This code, with `RetryInfo` of this delay.
    Fail(Code, Duration),
    /// OK with `partial_success { rejected_spans, error_message }`.
    Partial(i64, &'static str),
}

#[derive(Default)]
struct Calls {
    /// Answers for the next calls, in order; OK when empty.
    script: VecDeque<Answer>,
    /// Every call: when it arrived and the span ids it carried.
    calls: Vec<(Instant, Vec<Vec<u8>>)>,
    /// Span ids of the calls answered OK (partial success included).
    accepted: Vec<Vec<u8>>,
}

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Calls>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let ids: Vec<Vec<u8>> = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|s| s.span_id.clone())
            .collect();
        let mut c = self.0.lock().unwrap();
        c.calls.push((Instant::now(), ids.clone()));
        match c.script.pop_front() {
            Some(Answer::Fail(code, delay)) => Err(status_with_retry_info(
                code,
                "the collector is overloaded",
                delay,
            )),
            Some(Answer::Partial(rejected_spans, error_message)) => {
                c.accepted.extend(ids);
                Ok(Response::new(ExportTraceServiceResponse {
                    partial_success: Some(ExportTracePartialSuccess {
                        rejected_spans,
                        error_message: error_message.into(),
                    }),
                }))
            }
            None => {
                c.accepted.extend(ids);
                Ok(Response::new(ExportTraceServiceResponse::default()))
            }
        }
    }
}

impl Collector {
    fn with_script(script: Vec<Answer>) -> Collector {
        let c = Collector::default();
        c.0.lock().unwrap().script = script.into();
        c
    }

    /// Serves on an ephemeral port (on the current runtime) and returns its address.
    async fn start(self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(self))
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        addr
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.0.lock().unwrap()
    }
}

/// `n` spans of one trace, span ids 1..=n.
fn spans(n: u8) -> ExportTraceServiceRequest {
    let spans = (1..=n)
        .map(|i| Span {
            trace_id: vec![7; 16],
            span_id: vec![i; 8],
            name: format!("op-{i}"),
            start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(i),
            end_time_unix_nano: 1_700_000_000_000_500_000 + u64::from(i),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn one_log(body: &str) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(body.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Starts `toml` in process with every real component and the test ones, and waits until
/// `listens` accepts connections.
async fn start(toml: &str, listens: SocketAddr) -> RunningTopology {
    let r = crate::testkit::full_registry();
    let config = weir_pipeline::config::load_str("t.toml", toml, &r, &|_| None)
        .unwrap_or_else(|e| panic!("{e}"));
    let graph =
        weir_pipeline::config::resolve_graph(&config, false).unwrap_or_else(|e| panic!("{e}"));
    let running = weir_pipeline::topology::start(config, &graph)
        .await
        .expect("start");
    let up = tokio::task::spawn_blocking(move || {
        wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(listens).is_ok()
        })
    })
    .await
    .unwrap();
    assert!(up, "the otlp source listens on {listens}");
    running
}

/// otlp source (gRPC) -> otlp sink (gRPC) -> `collector`.
fn relay_config(data: &std::path::Path, grpc: SocketAddr, collector: SocketAddr) -> String {
    format!(
        r#"
data_dir = "{data}"
[api]
enabled = false
[sources.otel]
type = "otlp"
grpc.address = "{grpc}"
http.enabled = false
[sinks.out]
type = "otlp"
inputs = ["otel.traces"]
protocol = "grpc"
endpoint = "http://{collector}"
batch.timeout_secs = 0.05
request.retry_initial_backoff_secs = 0.01
request.retry_max_duration_secs = 5
"#,
        data = data.display()
    )
}

/// A collector shedding load (`UNAVAILABLE`, then `RESOURCE_EXHAUSTED`, each with
/// `RetryInfo { retry_delay: 1s }`): the sink waits at least that long (its own backoff is
/// 10 ms), sends again, and every span arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sink_waits_the_retry_delay_the_collector_asks_for() {
    for code in [Code::Unavailable, Code::ResourceExhausted] {
        let delay = Duration::from_secs(1);
        let collector = Collector::with_script(vec![Answer::Fail(code, delay)]);
        let caddr = collector.clone().start().await;
        let data = tempfile::tempdir().unwrap();
        let grpc = free_addr();
        let running = start(&relay_config(data.path(), grpc, caddr), grpc).await;
        let sink = running.registry.get("out").unwrap();

        let mut client = TraceServiceClient::connect(format!("http://{grpc}"))
            .await
            .unwrap();
        client.export(spans(5)).await.expect("the source takes it");
        let c = collector.clone();
        let done = tokio::task::spawn_blocking(move || {
            wait_until(Duration::from_secs(20), || c.lock().accepted.len() >= 5)
        })
        .await
        .unwrap();
        assert!(done, "{code:?}: the spans arrive after the retry");
        running.shutdown_token().cancel();
        tokio::time::timeout(Duration::from_secs(10), running.wait())
            .await
            .expect("drains");

        let calls = collector.lock();
        let want: Vec<Vec<u8>> = (1..=5).map(|i| vec![i; 8]).collect();
        assert_eq!(calls.calls.len(), 2, "{code:?}: one refusal, one retry");
        assert_eq!(calls.calls[0].1, want, "{code:?}: the first attempt");
        assert_eq!(calls.calls[1].1, want, "{code:?}: the same spans again");
        let waited = calls.calls[1].0 - calls.calls[0].0;
        assert!(
            waited >= delay,
            "{code:?}: sent again after {waited:?}, before the {delay:?} the collector asked for"
        );
        assert_eq!(calls.accepted, want, "{code:?}: every span exactly once");
        let errors = sink.errors();
        assert_eq!(
            errors.get("request_failed"),
            Some(&1),
            "{code:?}: {errors:?}"
        );
        assert_eq!(sink.sent_events(), 5, "{code:?}");
    }
}

/// `partial_success { rejected_spans: 2 }`: counted on `/metrics` as
/// `weir_component_errors_total{error_type="partial_success"} 2`, logged with the collector's
/// message, and not sent again.
#[test]
fn sink_counts_and_logs_a_partial_success_without_retrying() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let collector = Collector::with_script(vec![Answer::Partial(
        2,
        "2 spans rejected: end time before start time",
    )]);
    let caddr = rt.block_on(collector.clone().start());
    let dir = tempfile::tempdir().unwrap();
    let (grpc, api) = (free_addr(), free_addr());
    let toml = relay_config(dir.path(), grpc, caddr).replace(
        "[api]\nenabled = false",
        &format!("[api]\naddress = \"{api}\""),
    );
    let child = crate::harness::start_weir(dir.path(), "partial", &toml, false);
    let _kill = KillOnDrop(Some(child));
    assert!(
        wait_until(Duration::from_secs(20), || {
            std::net::TcpStream::connect(grpc).is_ok() && http_get(api, "/health").is_ok()
        }),
        "weir starts: {}",
        crate::harness::weir_log(dir.path(), "partial")
    );
    rt.block_on(async {
        let mut client = TraceServiceClient::connect(format!("http://{grpc}"))
            .await
            .unwrap();
        client.export(spans(5)).await.expect("the source takes it");
    });
    let counted = |body: &str| {
        body.lines().any(|l| {
            l.starts_with("weir_component_errors_total")
                && l.contains("component_id=\"out\"")
                && l.contains("error_type=\"partial_success\"")
                && l.trim_end().ends_with(" 2")
        })
    };
    assert!(
        wait_until(Duration::from_secs(20), || http_get(api, "/metrics")
            .is_ok_and(|(_, b)| counted(&b))),
        "the rejected spans are counted:\n{}",
        http_get(api, "/metrics").map(|r| r.1).unwrap_or_default()
    );
    let mut kill = _kill;
    let child = kill.0.take().unwrap();
    crate::harness::stop_clean(dir.path(), "partial", child);
    let log = crate::harness::weir_log(dir.path(), "partial");
    assert!(
        log.contains("the receiver rejected 2 item(s)")
            && log.contains("2 spans rejected: end time before start time"),
        "the collector's message is logged:\n{log}"
    );
    let calls = collector.lock();
    assert_eq!(calls.calls.len(), 1, "a partial success is not sent again");
    assert_eq!(calls.accepted.len(), 5);
}

struct KillOnDrop(Option<std::process::Child>);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Backpressure over gRPC: with the only sink stalled and its buffer full, an export is
/// refused with `RESOURCE_EXHAUSTED` (after `accept_timeout_secs`) and a `RetryInfo` of 1 s,
/// seen by a tonic client; once the sink moves, exports are accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pipeline_answers_resource_exhausted_over_grpc() {
    let data = tempfile::tempdir().unwrap();
    let grpc = free_addr();
    let toml = format!(
        r#"
data_dir = "{data}"
[api]
enabled = false
[sources.otel]
type = "otlp"
grpc.address = "{grpc}"
http.enabled = false
accept_timeout_secs = 0.3
# What is measured is the answer when the buffers are full; with acknowledgements (the
# default) the export would wait for the stalled sink's delivery instead.
acknowledgements = false
[sinks.stuck]
type = "gated"
inputs = ["otel.logs"]
name = "otlp-grpc-bp"
stalled = true
buffer.max_events = 1
"#,
        data = data.path().display()
    );
    let running = start(&toml, grpc).await;
    let source = running.registry.get("otel").unwrap();
    let mut client = LogsServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let mut codes = Vec::new();
    let mut refusal = None;
    for i in 0..4 {
        match client.export(one_log(&format!("log {i}"))).await {
            Ok(_) => codes.push(Code::Ok),
            Err(s) => {
                codes.push(s.code());
                refusal = Some(s);
                break;
            }
        }
    }
    assert_eq!(codes.last(), Some(&Code::ResourceExhausted), "{codes:?}");
    assert!(
        codes[..codes.len() - 1].iter().all(|c| *c == Code::Ok),
        "{codes:?}"
    );
    let refusal = refusal.unwrap();
    assert!(
        refusal.message().contains("backpressure"),
        "{}",
        refusal.message()
    );
    // Like HTTP's `Retry-After: 1`, the refusal asks the client to wait a second.
    let details = rpc::Status::decode(refusal.details()).expect("google.rpc.Status details");
    assert_eq!(details.code, Code::ResourceExhausted as i32);
    let info = details
        .details
        .iter()
        .find(|a| a.type_url == "type.googleapis.com/google.rpc.RetryInfo")
        .expect("a RetryInfo detail");
    let delay = rpc::RetryInfo::decode(info.value.as_slice())
        .unwrap()
        .retry_delay
        .unwrap();
    assert_eq!((delay.seconds, delay.nanos), (1, 0));
    assert!(source.errors().get("backpressure").is_some_and(|n| *n >= 1));
    crate::testkit::state("otlp-grpc-bp").open_gate();
    client
        .export(one_log("after"))
        .await
        .expect("accepted once the sink moves again");
    running.shutdown_token().cancel();
    tokio::time::timeout(Duration::from_secs(10), running.wait())
        .await
        .expect("drains");
}
