//! Every server Weir runs (the `otlp` source's gRPC and HTTP listeners, the API,
//! `prometheus_exporter`) shares one server stack (`weir_connect::server`). These tests drive
//! the real `weir` binary with real clients (tonic, reqwest, raw TCP):
//!
//! - a gzip bomb to OTLP/gRPC and OTLP/HTTP is refused (`RESOURCE_EXHAUSTED`, 413) and
//!   counted, Weir's peak RSS stays under 100 MiB, and the next valid request is delivered;
//! - with `auth` and `tls` on, OTLP (gRPC, HTTP) and the API refuse requests without the
//!   token (`UNAUTHENTICATED`, 401 with `WWW-Authenticate: Bearer`) and serve those with it,
//!   over TLS with a test CA; the API's `/health` stays open for probes;
//! - `max_connections`: the next connection is not served until one closes; a client that
//!   sends nothing, or half its headers, or half its body, does not hold its connection.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use prost::Message;
use tonic::codegen::Service;

use crate::harness::{free_addr, make_certs, start_weir, wait_until, weir_log};

/// The `weir` child, killed when the test ends (passed or not).
struct Weir(Child);

impl Drop for Weir {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// `mib` MiB of zeros, gzip'd (about a thousand times smaller).
fn gzip_bomb(mib: usize) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        e.write_all(&chunk).unwrap();
    }
    e.finish().unwrap()
}

/// The peak resident set of a process (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `weir_component_errors_total` of `component` for `error_type`, from the API's `/metrics`.
fn errors_of(metrics_text: &str, component: &str, error_type: &str) -> u64 {
    metrics_text
        .lines()
        .filter(|l| l.starts_with("weir_component_errors_total"))
        .filter(|l| l.contains(&format!("component_id=\"{component}\"")))
        .filter(|l| l.contains(&format!("error_type=\"{error_type}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn listening(a: SocketAddr) -> bool {
    TcpStream::connect(a).is_ok()
}

fn q(p: &Path) -> String {
    format!("\"{}\"", p.display())
}

/// 1 GiB of zeros in about 1 MiB of gzip, to each OTLP listener (default `max_request_bytes`,
/// 16 MiB): refused, counted, Weir's peak RSS under 100 MiB; a valid request right after is
/// delivered (gRPC: gzip'd by the client, so inflated within the limit too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bombs_to_otlp_grpc_and_http_are_refused_within_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (grpc, http, api) = (free_addr(), free_addr(), free_addr());
    let out = dir.path().join("out.json");
    let config = format!(
        r#"
data_dir = "{data}"
[api]
address = "{api}"
[sources.otel]
type = "otlp"
grpc.address = "{grpc}"
http.address = "{http}"
[sinks.out]
type = "file"
inputs = ["otel.logs"]
path = {out}
encoding.codec = "json"
"#,
        data = dir.path().display(),
        out = q(&out),
    );
    let weir = Weir(start_weir(dir.path(), "bomb", &config, false));
    assert!(
        wait_until(Duration::from_secs(30), || listening(grpc)
            && listening(http)
            && listening(api)),
        "weir starts: {}",
        weir_log(dir.path(), "bomb")
    );
    let bomb = Bytes::from(gzip_bomb(1024));
    assert!(bomb.len() < 4 << 20, "{}", bomb.len());

    // OTLP/gRPC: one message, compressed flag set, `grpc-encoding: gzip`.
    let mut frame = vec![1u8];
    frame.extend_from_slice(&(bomb.len() as u32).to_be_bytes());
    frame.extend_from_slice(&bomb);
    let mut channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let req = http::Request::builder()
        .method("POST")
        .uri(format!(
            "http://{grpc}/opentelemetry.proto.collector.logs.v1.LogsService/Export"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-encoding", "gzip")
        .body(tonic::body::Body::new(http_body_util::Full::new(
            Bytes::from(frame),
        )))
        .unwrap();
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .unwrap();
    let resp = channel.call(req).await.unwrap();
    let (parts, body) = resp.into_parts();
    let trailers = http_body_util::BodyExt::collect(body)
        .await
        .ok()
        .and_then(|c| c.trailers().cloned())
        .unwrap_or_default();
    let status = parts
        .headers
        .get("grpc-status")
        .or_else(|| trailers.get("grpc-status"))
        .map(|v| v.to_str().unwrap().to_string());
    let message = parts
        .headers
        .get("grpc-message")
        .or_else(|| trailers.get("grpc-message"))
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert_eq!(
        status.as_deref(),
        Some("8"),
        "RESOURCE_EXHAUSTED; message: {message}"
    );
    assert!(message.contains("max_request_bytes"), "{message}");

    // The next request, gzip'd by the client, is accepted.
    let mut client = LogsServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    client
        .export(one_log("after the gRPC bomb"))
        .await
        .expect("a valid gzip'd request after the bomb is accepted");

    // OTLP/HTTP: the same bomb as a gzip'd body.
    let http_client = reqwest::Client::new();
    let resp = http_client
        .post(format!("http://{http}/v1/logs"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(bomb.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 413);
    let text = resp.text().await.unwrap();
    assert!(text.contains("max_request_bytes"), "{text}");
    let resp = http_client
        .post(format!("http://{http}/v1/logs"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(gzip(&one_log("after the HTTP bomb").encode_to_vec()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);

    let delivered = |s: &str| std::fs::read_to_string(&out).is_ok_and(|t| t.contains(s));
    assert!(
        wait_until(Duration::from_secs(10), || delivered("after the gRPC bomb")
            && delivered("after the HTTP bomb")),
        "both valid requests delivered: {:?}",
        std::fs::read_to_string(&out)
    );
    let (_, metrics) = crate::harness::http_get(api, "/metrics").unwrap();
    assert_eq!(errors_of(&metrics, "otel", "too_large"), 2, "{metrics}");
    let peak = peak_rss_kib(weir.0.id());
    assert!(peak < 100 * 1024, "weir's peak RSS is {} MiB", peak / 1024);
}

const TOKEN: &str = "weir-test-token-0123456789";

/// `auth` and `tls` on every listener: OTLP/gRPC, OTLP/HTTP and the API over TLS (a test
/// CA), each refusing requests without the token and serving those with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_and_api_with_tls_and_a_bearer_token() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, crt, key) = make_certs(dir.path());
    let (grpc, http, api) = (free_addr(), free_addr(), free_addr());
    let tls = |prefix: &str| {
        format!(
            "{prefix}tls.crt_file = {}\n{prefix}tls.key_file = {}\n",
            q(&crt),
            q(&key)
        )
    };
    let config = format!(
        r#"
data_dir = "{data}"
[api]
address = "{api}"
auth.strategy = "bearer"
auth.token = "{TOKEN}"
{api_tls}
[sources.otel]
type = "otlp"
grpc.address = "{grpc}"
http.address = "{http}"
auth.strategy = "bearer"
auth.token = "{TOKEN}"
{grpc_tls}{http_tls}
[sinks.out]
type = "blackhole"
inputs = ["otel.logs"]
"#,
        data = dir.path().display(),
        api_tls = tls(""),
        grpc_tls = tls("grpc."),
        http_tls = tls("http."),
    );
    let _weir = Weir(start_weir(dir.path(), "auth", &config, false));
    assert!(
        wait_until(Duration::from_secs(30), || listening(grpc)
            && listening(http)
            && listening(api)),
        "weir starts: {}",
        weir_log(dir.path(), "auth")
    );
    let pem = std::fs::read(&ca).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let bearer = format!("Bearer {TOKEN}");

    // The API: /metrics needs the token, /health does not (probes).
    let url = format!("https://localhost:{}/metrics", api.port());
    let r = client.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let challenge = r
        .headers()
        .get("www-authenticate")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    let r = client
        .get(&url)
        .header("authorization", "Bearer not-the-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = client
        .get(&url)
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = client
        .get(format!("https://localhost:{}/health", api.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "/health is open for probes");
    // Plain HTTP to the TLS port gets nothing.
    assert!(crate::harness::http_get(api, "/health").map_or(true, |(s, _)| s != 200));

    // OTLP/HTTP.
    let url = format!("https://localhost:{}/v1/logs", http.port());
    let body = one_log("over HTTPS").encode_to_vec();
    let send = |auth: Option<&str>| {
        let mut rb = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body.clone());
        if let Some(a) = auth {
            rb = rb.header("authorization", a);
        }
        rb.send()
    };
    let r = send(None).await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = send(Some(&bearer)).await.unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // OTLP/gRPC over TLS.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(&pem))
        .domain_name("localhost");
    let channel =
        tonic::transport::Channel::from_shared(format!("https://localhost:{}", grpc.port()))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut grpc_client = LogsServiceClient::new(channel);
    let refused = grpc_client
        .export(one_log("no token"))
        .await
        .expect_err("no token: refused");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let mut req = tonic::Request::new(one_log("over gRPC with TLS"));
    req.metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    grpc_client
        .export(req)
        .await
        .expect("with the token: accepted");

    let metrics = client
        .get(format!("https://localhost:{}/metrics", api.port()))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        errors_of(&metrics, "otel", "unauthenticated"),
        2,
        "{metrics}"
    );
    let delivered = metrics
        .lines()
        .find(|l| {
            l.starts_with("weir_component_received_events_total")
                && l.contains("component_id=\"out\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(delivered, Some(2.0), "{metrics}");
}

/// Reads what the server sends: waits up to `wait` for the first byte, then reads until the
/// server closes the connection or pauses (a whole response on a kept-alive connection):
/// (bytes, closed).
fn read_for(s: &mut TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                s.set_read_timeout(Some(Duration::from_millis(300)))
                    .unwrap();
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (got, false)
            }
            Err(_) => return (got, true),
        }
    }
}

fn status_of(response: &[u8]) -> Option<u16> {
    std::str::from_utf8(response)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// `max_connections = 2` on OTLP/HTTP: a third connection is not served while two are
/// open, and is served once one closes. On the API (`idle_timeout_secs` and
/// `request_read_timeout_secs` short): a connection that sends nothing, one that sends half
/// its headers and (OTLP/HTTP) one that sends half its body are all ended by the server.
#[test]
fn connection_limit_and_slow_clients() {
    let dir = tempfile::tempdir().unwrap();
    let (http, api) = (free_addr(), free_addr());
    let config = format!(
        r#"
data_dir = "{data}"
[api]
address = "{api}"
idle_timeout_secs = 0.5
request_read_timeout_secs = 0.5
[sources.otel]
type = "otlp"
grpc.enabled = false
http.address = "{http}"
max_connections = 2
request_read_timeout_secs = 0.5
[sinks.out]
type = "blackhole"
inputs = ["otel.logs"]
"#,
        data = dir.path().display(),
    );
    let _weir = Weir(start_weir(dir.path(), "limits", &config, false));
    assert!(
        wait_until(Duration::from_secs(30), || crate::harness::http_get(
            api, "/health"
        )
        .is_ok_and(|(s, _)| s == 200)),
        "weir starts: {}",
        weir_log(dir.path(), "limits")
    );
    // `listening` would take a connection: wait for the HTTP listener through the API.
    let request = |close: bool| {
        let body = r#"{"resourceLogs":[]}"#;
        format!(
            "POST /v1/logs HTTP/1.1\r\nHost: weir\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        )
    };
    let mut first = TcpStream::connect(http).unwrap();
    let mut second = TcpStream::connect(http).unwrap();
    // Both are served (keep-alive: they stay open afterwards).
    for s in [&mut first, &mut second] {
        s.write_all(request(false).as_bytes()).unwrap();
        let (got, _) = read_for(s, Duration::from_secs(10));
        assert_eq!(
            status_of(&got),
            Some(200),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    let mut third = TcpStream::connect(http).unwrap();
    third.write_all(request(true).as_bytes()).unwrap();
    let (got, closed) = read_for(&mut third, Duration::from_millis(1500));
    assert!(
        got.is_empty() && !closed,
        "the third connection waits while two are open: {}",
        String::from_utf8_lossy(&got)
    );
    drop(first);
    let (got, _) = read_for(&mut third, Duration::from_secs(10));
    assert_eq!(
        status_of(&got),
        Some(200),
        "served once one closed: {}",
        String::from_utf8_lossy(&got)
    );

    // Slow clients on the API: nothing sent, half the headers sent.
    let mut silent = TcpStream::connect(api).unwrap();
    let (got, closed) = read_for(&mut silent, Duration::from_secs(20));
    assert!(closed && got.is_empty(), "an idle connection is closed");
    let mut half = TcpStream::connect(api).unwrap();
    half.write_all(b"GET /health HTTP/1.1\r\nHost: weir\r\n")
        .unwrap();
    let (got, closed) = read_for(&mut half, Duration::from_secs(20));
    assert!(
        closed && status_of(&got) != Some(200),
        "half a request head is not waited for forever: {}",
        String::from_utf8_lossy(&got)
    );
    // Half a body on OTLP/HTTP: answered with an error, not waited for.
    let mut slow = TcpStream::connect(http).unwrap();
    slow.write_all(
        b"POST /v1/logs HTTP/1.1\r\nHost: weir\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"resourceLogs\":",
    )
    .unwrap();
    let (got, _) = read_for(&mut slow, Duration::from_secs(20));
    let status = status_of(&got);
    assert!(
        status.is_some_and(|s| (400..500).contains(&s)),
        "half a body is answered with a 4xx: {}",
        String::from_utf8_lossy(&got)
    );
}
