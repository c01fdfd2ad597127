//! `stdin`: lines from standard input.
//!
//! A dedicated OS thread reads, frames and decodes (blocking reads on a pipe cannot be
//! cancelled, and keeping them off the async workers keeps the runtime responsive); it hands
//! whole batches to the async side through a small bounded channel, so backpressure reaches the
//! reads. On shutdown the source keeps forwarding while data still arrives (gaps under
//! [`DRAIN_IDLE`]), so input already written to the pipe is not lost, then stops.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use weir_pipeline::codec::{
    DecodingConfig, Frame, JsonLaziness, LineFramer, DEFAULT_MAX_LINE_BYTES,
};
use weir_pipeline::component::{Output, Resource, Source, SourceConfig, SourceContext};
use weir_pipeline::event::{EventBatch, MAX_BATCH_EVENTS};
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

/// After a shutdown signal, stop once no input has arrived for this long.
pub const DRAIN_IDLE: Duration = Duration::from_millis(250);

const READ_CHUNK: usize = 256 * 1024;

/// `type = "stdin"`: reads standard input line by line until EOF (then the pipeline drains and
/// `weir run` exits).
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StdinConfig {
    /// How each line becomes an event: `decoding.codec` is `bytes`, `json`, `logfmt`, `syslog` or
    /// `hubble_jsonpb`. See [codecs](codecs.md#decoding). Default: `{ codec = "bytes" }` (the line
    /// as `message`).
    #[serde(default)]
    pub decoding: DecodingConfig,
    /// Lines longer than this many bytes are skipped, up to the next newline, and counted as
    /// `oversized` errors. Default: 1048576 (1 MiB).
    #[serde(default = "default_max_line")]
    pub max_line_bytes: usize,
}

fn default_max_line() -> usize {
    DEFAULT_MAX_LINE_BYTES
}

#[async_trait]
impl SourceConfig for StdinConfig {
    async fn build(&self, cx: SourceContext) -> Result<Source, BoxError> {
        let cfg = self.clone();
        Ok(Box::pin(run(cfg, cx)))
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::default_output(DataType::LOG)]
    }

    fn resources(&self) -> Vec<Resource> {
        vec![Resource::Stdin]
    }
}

async fn run(cfg: StdinConfig, mut cx: SourceContext) -> Result<(), BoxError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<EventBatch>(4);
    let metrics = cx.metrics.clone();
    let id = cx.id.clone();
    std::thread::Builder::new()
        .name("weir-stdin".into())
        .spawn(move || read_loop(std::io::stdin().lock(), cfg, id, metrics, tx))
        .map_err(|e| format!("cannot start the stdin reader thread: {e}"))?;
    loop {
        tokio::select! {
            b = rx.recv() => match b {
                Some(batch) => if cx.out.send(batch).await.is_err() { return Ok(()) },
                None => return Ok(()),
            },
            _ = cx.shutdown.cancelled() => break,
        }
    }
    // Draining: forward what is still arriving.
    while let Ok(Some(batch)) = tokio::time::timeout(DRAIN_IDLE, rx.recv()).await {
        if cx.out.send(batch).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Reads, frames and decodes `input` until EOF, sending full batches on `tx`.
pub fn read_loop(
    mut input: impl Read,
    cfg: StdinConfig,
    id: Arc<str>,
    metrics: Arc<ComponentMetrics>,
    tx: tokio::sync::mpsc::Sender<EventBatch>,
) {
    let source_id = Some(id);
    let decoder = cfg.decoding.codec;
    let laziness = JsonLaziness::new();
    let mut framer = LineFramer::new(b'\n', cfg.max_line_bytes);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut events = Vec::with_capacity(MAX_BATCH_EVENTS);
    let mut line_no: u64 = 0;
    let mut eof = false;
    // Reads land in a scratch buffer zeroed once; only what came is appended to `buf` (a pipe
    // that delivers a few lines per read does not pay for zeroing a whole chunk each time).
    let mut scratch = vec![0u8; READ_CHUNK];
    while !eof {
        let n = match input.read(&mut scratch) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                continue;
            }
            Err(e) => {
                metrics.error("io", 1, &format_args!("reading standard input failed: {e}"));
                0
            }
        };
        if buf.capacity() - buf.len() < n {
            buf.reserve(n.max(READ_CHUNK / 4));
        }
        buf.extend_from_slice(&scratch[..n]);
        metrics.add_received_bytes(n as u64);
        // Every line of this read was taken in now.
        let now = chrono::Utc::now();
        let mut handle = |frame: Frame, events: &mut Vec<_>| {
            line_no += 1;
            match frame {
                Frame::Line(line) => {
                    if let Err(e) =
                        decoder.decode_lazy(&laziness, line, &source_id, now, (), events)
                    {
                        metrics.error(
                            "decode",
                            1,
                            &format_args!("stdin line {line_no}: cannot decode: {e}"),
                        );
                    }
                }
                Frame::Oversized { bytes } => metrics.error(
                    "oversized",
                    1,
                    &format_args!(
                        "stdin line {line_no}: {bytes} bytes is over max_line_bytes ({}); skipped",
                        cfg.max_line_bytes
                    ),
                ),
            }
        };
        if n == 0 {
            eof = true;
            if let Some(f) = framer.finish(&mut buf) {
                handle(f, &mut events);
            }
        }
        while let Some(f) = framer.next_frame(&mut buf) {
            handle(f, &mut events);
            if events.len() >= MAX_BATCH_EVENTS {
                let full = std::mem::replace(&mut events, Vec::with_capacity(MAX_BATCH_EVENTS));
                metrics.add_received(full.len() as u64, 0);
                if tx.blocking_send(EventBatch::new(full)).is_err() {
                    return;
                }
            }
        }
        if !events.is_empty() {
            let part = std::mem::replace(&mut events, Vec::with_capacity(MAX_BATCH_EVENTS));
            metrics.add_received(part.len() as u64, 0);
            if tx.blocking_send(EventBatch::new(part)).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_pipeline::codec::Decoder;
    use weir_pipeline::event::Value;

    #[test]
    fn garbage_is_counted_and_neighbours_survive() {
        for codec in [Decoder::Json, weir_records::flow::HubbleJsonpb::decoder()] {
            let mut input = Vec::new();
            input.extend_from_slice(b"{\"a\":1}\n");
            input.extend_from_slice(b"{\"bad\":\"\xff\xfe\"}\n");
            input.extend(std::iter::repeat_n(b'x', 3000));
            input.extend_from_slice(b"\n{\"a\":2}\n{broken\n");
            // An oversized flow line is skipped like any other.
            input.extend_from_slice(b"{\"flow\":{\"verdict\":\"FORWARDED\",\"Summary\":\"");
            input.extend(std::iter::repeat_n(b'y', 3000));
            input.extend_from_slice(b"\"},\"a\":9}\n{\"a\":3}");
            let cfg = StdinConfig {
                decoding: DecodingConfig { codec },
                max_line_bytes: 1000,
            };
            let metrics = ComponentMetrics::detached("in");
            let (tx, mut rx) = tokio::sync::mpsc::channel(16);
            read_loop(&input[..], cfg, Arc::from("in"), metrics.clone(), tx);
            let mut got = Vec::new();
            while let Ok(b) = rx.try_recv() {
                for e in b {
                    got.push(e.as_log().unwrap().get_field("a").cloned().unwrap());
                }
            }
            assert_eq!(got, [1, 2, 3].map(Value::from), "{codec:?}");
            let errors = metrics.errors();
            assert_eq!(errors.get("decode"), Some(&2), "{codec:?}");
            assert_eq!(errors.get("oversized"), Some(&2), "{codec:?}");
        }
    }
}
