//! `console`: events to stdout or stderr.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use weir_pipeline::codec::EncodingConfig;
use weir_pipeline::component::{Sink, SinkConfig, SinkContext, SinkInput};
use weir_pipeline::finalization::EventStatus;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    #[default]
    Stdout,
    Stderr,
}

/// `type = "console"`: one encoded event per line on stdout or stderr.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Where the lines go: `stdout` or `stderr`.
    #[serde(default)]
    pub target: Target,
    /// How each event is written: `encoding.codec` is `json`, `text`, `logfmt` or `folded`. See
    /// [codecs](codecs.md#encoding). Default: `{ codec = "json" }`.
    #[serde(default)]
    pub encoding: EncodingConfig,
}

#[async_trait]
impl SinkConfig for ConsoleConfig {
    async fn build(&self, _cx: SinkContext) -> Result<Box<dyn Sink>, BoxError> {
        Ok(Box::new(self.clone()))
    }

    fn input(&self) -> DataType {
        DataType::ALL
    }
}

#[async_trait]
impl Sink for ConsoleConfig {
    async fn run(self: Box<Self>, mut input: SinkInput) -> Result<(), BoxError> {
        let mut out: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = match self.target {
            Target::Stdout => Box::new(tokio::io::stdout()),
            Target::Stderr => Box::new(tokio::io::stderr()),
        };
        let codec = self.encoding.codec;
        let metrics = input.metrics().clone();
        let mut buf = Vec::with_capacity(64 * 1024);
        while let Some(mut batch) = input.next().await {
            buf.clear();
            let mut sent = 0;
            for e in batch.iter() {
                match codec.encode(e, &mut buf) {
                    Ok(()) => {
                        buf.push(b'\n');
                        sent += 1;
                    }
                    Err(err) => {
                        e.metadata().update_status(EventStatus::Rejected);
                        metrics.error("encode", 1, &err);
                    }
                }
            }
            let r = async {
                out.write_all(&buf).await?;
                out.flush().await
            }
            .await;
            match r {
                Ok(()) => {
                    metrics.add_sent(sent);
                    metrics.add_sent_bytes(buf.len() as u64);
                    batch.finalize(EventStatus::Delivered);
                }
                Err(e) => {
                    batch.finalize(EventStatus::Errored);
                    return Err(format!("cannot write to {:?}: {e}", self.target).into());
                }
            }
        }
        Ok(())
    }
}
