//! `demo`: realistic synthetic data, for the quickstart, examples and benchmarks: log lines
//! (here), Hubble flows (`flows.rs`), stack samples (`stacks.rs`), TCP connections
//! (`connections.rs`) and process events (`processes.rs`).

mod connections;
mod flows;
mod processes;
#[cfg(test)]
mod shape;
mod stacks;

use std::fmt::Write as _;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use weir_pipeline::component::{Output, Source, SourceConfig, SourceContext};
use weir_pipeline::event::{EventBatch, EventMetadata, LogEvent, Value, MAX_BATCH_EVENTS};
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

/// What the demo source generates: a log line format (written into `message`), or records of
/// another kind.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DemoFormat {
    /// An application's JSON access log (10 fields, about 5 % server errors).
    #[default]
    Json,
    /// Apache common log format.
    ApacheCommon,
    /// RFC 5424 syslog.
    Syslog,
    /// logfmt.
    Logfmt,
    /// Network flows of a small shop's microservices, as Hubble reports them: each event is
    /// one flow as the `hubble_jsonpb` codec reads a line of `hubble observe -o jsonpb`
    /// (HTTP responses with latencies and a few 503s, new connections, DNS lookups, drops by
    /// policy), for `flow_to_topology`.
    HubbleFlows,
    /// CPU profile samples of two processes in the `stack-sample` schema, for `stack_fold`.
    StackSamples,
    /// TCP connections between the shop's processes, as the `ebpf_tcp` source reports them
    /// (the same fields and types): closed connections with bytes, round-trip time,
    /// retransmissions and close reasons (a few resets and refused connects), and periodic
    /// `tcp_stats` reports of long-lived database connections whose counters grow.
    TcpConnections,
    /// Process events of the shop's node, as the `ebpf_process` source reports them (the same
    /// fields and types): forks, execs and exits of health probes, database backends and
    /// batch jobs, with exit codes, a few killed by signals, lifetimes and CPU time.
    ProcessEvents,
}

impl DemoFormat {
    /// The source type whose events this format's have the shape of.
    fn event_shape(self) -> Option<&'static str> {
        match self {
            Self::TcpConnections => Some("ebpf_tcp"),
            Self::ProcessEvents => Some("ebpf_process"),
            _ => None,
        }
    }
}

/// `type = "demo"`: generates log lines into the `message` field (plus `timestamp`), like a
/// real service would write them, so the pipeline has something real-shaped to parse; or,
/// with `format = "hubble_flows"`, `"stack_samples"`, `"tcp_connections"` or
/// `"process_events"`, network flows, profile samples, or connection and process events
/// shaped as the `ebpf_tcp` and `ebpf_process` sources' are.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DemoConfig {
    /// What to generate: log lines in `json`, `apache_common`, `syslog` or `logfmt`, or
    /// `hubble_flows` (network flows), `stack_samples` (profile samples), `tcp_connections`
    /// (`ebpf_tcp`'s connection events) or `process_events` (`ebpf_process`'s events).
    #[serde(default)]
    pub format: DemoFormat,
    /// Events per second. It must be a positive, finite number; this is checked when the source is
    /// built at `weir run`, not by `weir validate`. Default: none (as fast as the pipeline takes
    /// them).
    #[serde(default)]
    pub rate: Option<f64>,
    /// Stop after this many events. The source then ends; if it was the last source running, the
    /// pipeline drains and `weir run` exits 0. Default: none (run until stopped).
    #[serde(default)]
    pub count: Option<u64>,
    /// Seed of the random generator. The same seed gives the same sequence of lines (the timestamps
    /// differ). Default: 1.
    #[serde(default = "default_seed")]
    pub seed: u64,
}

fn default_seed() -> u64 {
    1
}

#[async_trait]
impl SourceConfig for DemoConfig {
    async fn build(&self, cx: SourceContext) -> Result<Source, BoxError> {
        if let Some(r) = self.rate {
            if !(r > 0.0 && r.is_finite()) {
                return Err(format!("`rate` must be a positive number, got {r}").into());
            }
        }
        let cfg = self.clone();
        Ok(Box::pin(run(cfg, cx)))
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::default_output(DataType::LOG)]
    }

    fn event_shape(&self) -> Option<&'static str> {
        self.format.event_shape()
    }
}

const SERVICES: &[&str] = &[
    "frontend",
    "cart",
    "checkout",
    "payment",
    "shipping",
    "catalog",
    "recommendation",
];
const PATHS: &[&str] = &[
    "/",
    "/api/cart",
    "/api/checkout",
    "/api/products",
    "/api/products/{id}",
    "/api/payment",
    "/healthz",
    "/api/recommendations",
];
const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE"];
const MESSAGES: &[&str] = &[
    "request completed",
    "cache miss, fetched from database",
    "user session refreshed",
    "rendered product page",
    "payment authorised",
];
const ERRORS: &[&str] = &[
    "upstream timed out after 5000ms",
    "connection refused by payment-gateway:443",
    "database deadlock detected, transaction rolled back",
];

/// A moment, formatted for the demo lines: taken once per batch (the lines of a batch are
/// made at the same moment), so formatting the time is not paid per event.
pub struct Stamp {
    /// `2026-11-21T08:00:00.001Z`
    iso: String,
    /// `21/Nov/2026:08:00:00 +0000`
    clf: String,
}

impl Stamp {
    pub fn at(t: DateTime<Utc>) -> Self {
        Self {
            iso: t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            clf: t.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
        }
    }

    pub fn now() -> Self {
        Self::at(Utc::now())
    }
}

/// Writes one line into `buf` (the `message` of event `seq`, made at `stamp`). Public for
/// `weir-bench`, whose baselines generate the same events.
pub fn generate(format: DemoFormat, rng: &mut SmallRng, seq: u64, stamp: &Stamp, buf: &mut String) {
    buf.clear();
    let service = SERVICES[rng.random_range(0..SERVICES.len())];
    let method = METHODS[rng.random_range(0..METHODS.len())];
    let path = PATHS[rng.random_range(0..PATHS.len())];
    let roll: u32 = rng.random_range(0..100);
    let status = match roll {
        0..=4 => [500, 502, 503][rng.random_range(0..3)],
        5..=12 => [400, 401, 404, 429][rng.random_range(0..4)],
        13..=20 => 201,
        _ => 200,
    };
    let duration_ms: f64 = if status >= 500 {
        rng.random_range(800.0..5000.0)
    } else {
        rng.random_range(0.5..120.0)
    };
    let user = rng.random_range(1000..9999);
    let ip = [
        10,
        rng.random_range(0..255u8),
        rng.random_range(0..255u8),
        rng.random_range(1..255u8),
    ];
    let level = if status >= 500 {
        "error"
    } else if status >= 400 {
        "warn"
    } else {
        "info"
    };
    let msg = if status >= 500 {
        ERRORS[rng.random_range(0..ERRORS.len())]
    } else {
        MESSAGES[rng.random_range(0..MESSAGES.len())]
    };
    let bytes = rng.random_range(120..48_000);
    let _ = match format {
        DemoFormat::Json => write!(
            buf,
            r#"{{"timestamp":"{}","level":"{level}","service":"{service}","method":"{method}","path":"{path}","status":{status},"duration_ms":{duration_ms:.2},"bytes":{bytes},"user_id":"u-{user}","client_ip":"{}.{}.{}.{}","request_id":"{seq:016x}","message":"{msg}"}}"#,
            stamp.iso, ip[0], ip[1], ip[2], ip[3]
        ),
        DemoFormat::ApacheCommon => write!(
            buf,
            r#"{}.{}.{}.{} - u-{user} [{}] "{method} {path} HTTP/1.1" {status} {bytes}"#,
            ip[0], ip[1], ip[2], ip[3], stamp.clf
        ),
        DemoFormat::Syslog => write!(
            buf,
            "<{}>1 {} node-{} {service} {} ID{} - {msg} (status {status})",
            if status >= 500 { 11 } else { 14 },
            stamp.iso,
            rng.random_range(1..6),
            rng.random_range(100..40000),
            rng.random_range(1..100)
        ),
        // Lines only: `run` generates the other kinds itself.
        DemoFormat::Logfmt
        | DemoFormat::HubbleFlows
        | DemoFormat::StackSamples
        | DemoFormat::TcpConnections
        | DemoFormat::ProcessEvents => write!(
            buf,
            r#"ts={} level={level} service={service} method={method} path={path} status={status} duration_ms={duration_ms:.2} msg="{msg}""#,
            stamp.iso
        ),
    };
}

async fn run(cfg: DemoConfig, mut cx: SourceContext) -> Result<(), BoxError> {
    let mut rng = SmallRng::seed_from_u64(cfg.seed);
    let mut line = String::with_capacity(512);
    let batch_size = match cfg.rate {
        Some(r) => ((r / 10.0).ceil() as usize).clamp(1, MAX_BATCH_EVENTS),
        None => MAX_BATCH_EVENTS,
    };
    let mut ticker = cfg.rate.map(|r| {
        let mut i = tokio::time::interval(Duration::from_secs_f64(batch_size as f64 / r));
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    let source_id = Some(cx.id.clone());
    let mut seq: u64 = 0;
    let mut connections = connections::Connections::default();
    let mut processes = processes::Processes::default();
    loop {
        if cfg.count.is_some_and(|c| seq >= c) {
            break;
        }
        if let Some(t) = ticker.as_mut() {
            tokio::select! {
                _ = cx.shutdown.cancelled() => break,
                _ = t.tick() => {}
            }
        } else if cx.shutdown.is_cancelled() {
            break;
        }
        let n = match cfg.count {
            Some(c) => batch_size.min((c - seq) as usize),
            None => batch_size,
        };
        let mut batch = EventBatch::with_capacity(n);
        let mut bytes = 0u64;
        let at = Utc::now();
        let stamp = Stamp::at(at);
        let now = Value::Timestamp(at);
        for _ in 0..n {
            let meta = EventMetadata::at(source_id.clone(), at);
            let log = match cfg.format {
                DemoFormat::HubbleFlows => {
                    flows::generate(&mut rng, at, &mut line);
                    bytes += line.len() as u64;
                    match flows::flow(&line) {
                        Some(flow) => LogEvent::from_typed(flow, meta),
                        None => {
                            return Err(format!(
                                "the demo flow generator wrote an unreadable flow: {line}"
                            )
                            .into())
                        }
                    }
                }
                DemoFormat::StackSamples => {
                    let log = LogEvent::from_value(stacks::generate(&mut rng, at), meta);
                    bytes += log.estimated_bytes() as u64;
                    log
                }
                DemoFormat::TcpConnections => {
                    let log = LogEvent::from_value(connections.generate(&mut rng, at), meta);
                    bytes += log.estimated_bytes() as u64;
                    log
                }
                DemoFormat::ProcessEvents => {
                    let log = LogEvent::from_value(processes.generate(&mut rng, at), meta);
                    bytes += log.estimated_bytes() as u64;
                    log
                }
                _ => {
                    generate(cfg.format, &mut rng, seq, &stamp, &mut line);
                    bytes += line.len() as u64;
                    let mut log =
                        LogEvent::from_message_with(Bytes::copy_from_slice(line.as_bytes()), meta);
                    log.insert_field("timestamp", now.clone());
                    log
                }
            };
            seq += 1;
            batch.push(log);
        }
        cx.metrics.add_received(n as u64, bytes);
        tokio::select! {
            _ = cx.shutdown.cancelled() => break,
            r = cx.out.send(batch) => if r.is_err() { break },
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_parse_and_carry_errors() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut buf = String::new();
        let mut errors = 0;
        for i in 0..2000 {
            generate(DemoFormat::Json, &mut rng, i, &Stamp::now(), &mut buf);
            let v: serde_json::Value = serde_json::from_str(&buf).unwrap();
            assert_eq!(v.as_object().unwrap().len(), 12);
            if v["status"].as_u64().unwrap() >= 500 {
                assert_eq!(v["level"], "error");
                errors += 1;
            }
        }
        assert!(
            (40..=200).contains(&errors),
            "about 5% errors, got {errors}"
        );
    }

    #[test]
    fn other_formats_decode_with_their_codec() {
        use weir_pipeline::codec::Decoder;
        let mut rng = SmallRng::seed_from_u64(7);
        let mut buf = String::new();
        for (f, d) in [
            (DemoFormat::Syslog, Decoder::Syslog),
            (DemoFormat::Logfmt, Decoder::Logfmt),
        ] {
            generate(f, &mut rng, 1, &Stamp::now(), &mut buf);
            let mut out = Vec::new();
            d.decode(Bytes::copy_from_slice(buf.as_bytes()), &None, &mut out)
                .unwrap();
            let log = out[0].as_log().unwrap();
            assert!(log.as_map().unwrap().len() >= 5, "{f:?}: {buf}");
        }
    }
}
