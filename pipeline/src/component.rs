//! The contracts between the runtime and components, and the registry of component types.
//!
//! A component type is a config struct (serde, `deny_unknown_fields`, doc comments) that
//! implements [`SourceConfig`], [`TransformConfig`] or [`SinkConfig`], registered under its TOML
//! `type` name with [`Registry::add_source`] and friends. Building the config yields the running
//! piece:
//!
//! - a source is a future ([`Source`]) that pushes batches into its [`SourceSender`] until it is
//!   done or its [`SourceContext::shutdown`] token fires;
//! - a transform is a synchronous [`Transform`]: batch in, batches out per named output, with an
//!   optional timer for windowed work and a flush at the end;
//! - a sink is a [`Sink`] that pulls batches from its buffer ([`SinkInput`]) and finalizes them.
//!   A sink may also declare named outputs ([`SinkConfig::outputs`], e.g. a `dead_letter`
//!   output of refused events) and send new events to them through [`SinkOutputs`].

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;

use crate::buffer::ClosedError;
use crate::buffer::{BufferReceiver, Fanout};
use crate::codec::{register_decoder, FrameDecoder};
use crate::event::{Event, EventBatch};
use crate::finalization::EventStatus;
use crate::memory::MemoryBudget;
use crate::metrics::{ComponentMetrics, MetricsRegistry};
use crate::shutdown::ShutdownToken;
use crate::vocabulary::DataType;
use crate::BoxError;

/// One output of a component: the default (`name = None`) or a named one (`route.errors`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The output's name: `None` for the default output.
    pub name: Option<String>,
    /// The event types it carries.
    pub data_type: DataType,
}

impl Output {
    /// The default output, carrying `data_type`.
    pub fn default_output(data_type: DataType) -> Self {
        Self {
            name: None,
            data_type,
        }
    }

    /// The output `name`, carrying `data_type`.
    pub fn named(name: impl Into<String>, data_type: DataType) -> Self {
        Self {
            name: Some(name.into()),
            data_type,
        }
    }
}

/// Something a component claims exclusively, checked for conflicts before start.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// A TCP port it listens on.
    Tcp(SocketAddr),
    /// A UDP port it binds.
    Udp(SocketAddr),
    /// Standard input (only one component may read it).
    Stdin,
}

/// A running source.
pub type Source = BoxFuture<'static, Result<(), BoxError>>;

/// What a source is given to run.
pub struct SourceContext {
    /// The component's id (its key in the configuration).
    pub id: Arc<str>,
    /// Where the source sends its batches.
    pub out: SourceSender,
    /// Fires when the pipeline stops: the source then stops reading and returns.
    pub shutdown: ShutdownToken,
    /// The user asked this source for end-to-end acknowledgements.
    pub acknowledgements: bool,
    /// The pipeline's `data_dir`, where the source keeps its state (checkpoints).
    pub data_dir: PathBuf,
    /// The source's counters.
    pub metrics: Arc<ComponentMetrics>,
    /// Every component's metrics (for a source that reports them as events).
    pub registry: Arc<MetricsRegistry>,
}

/// Where a source sends its batches: the default output and any named ones. Dropping it ends
/// the source's outputs (the downstream drains and flushes), also when the source goes on
/// waiting for its last acknowledgements.
pub struct SourceSender {
    default: Option<Fanout>,
    named: BTreeMap<String, Fanout>,
    metrics: Arc<ComponentMetrics>,
    /// Told when the source drops its sender on purpose (not in a panic), so its supervisor
    /// lets go of the copies of the outputs it keeps for a restart.
    ended: Option<tokio::sync::oneshot::Sender<()>>,
    /// The process-wide memory budget: a send waits while it is exceeded.
    memory: Option<Arc<MemoryBudget>>,
}

impl SourceSender {
    /// A sender to the `default` output (`None`: nobody reads it) and the `named` ones.
    pub fn new(
        default: Option<Fanout>,
        named: BTreeMap<String, Fanout>,
        metrics: Arc<ComponentMetrics>,
    ) -> Self {
        Self {
            default,
            named,
            metrics,
            ended: None,
            memory: None,
        }
    }

    /// Makes every send wait while `memory` is exceeded (the source pauses at its read loop).
    pub fn with_memory(mut self, memory: Option<Arc<MemoryBudget>>) -> Self {
        self.memory = memory;
        self
    }

    /// Tells `ended` when this sender is dropped other than by a panic.
    pub fn on_end(mut self, ended: tokio::sync::oneshot::Sender<()>) -> Self {
        self.ended = Some(ended);
        self
    }

    /// Sends a batch to the default output, waiting while downstream is full (backpressure)
    /// and while the process-wide memory limit is exceeded.
    pub async fn send(&mut self, mut batch: EventBatch) -> Result<(), ClosedError> {
        if batch.is_empty() {
            return Ok(());
        }
        if let Some(m) = &self.memory {
            m.wait_for_room(&self.metrics.id).await;
        }
        self.metrics.add_sent(batch.len() as u64);
        match &mut self.default {
            Some(f) => f.send(batch).await,
            None => {
                // Nobody reads this output: done, as the configuration says.
                batch.finalize(EventStatus::Delivered);
                Ok(())
            }
        }
    }

    /// Sends a batch to a named output.
    pub async fn send_to(
        &mut self,
        output: &str,
        mut batch: EventBatch,
    ) -> Result<(), ClosedError> {
        if batch.is_empty() {
            return Ok(());
        }
        if let Some(m) = &self.memory {
            m.wait_for_room(&self.metrics.id).await;
        }
        self.metrics.add_sent(batch.len() as u64);
        match self.named.get_mut(output) {
            Some(f) => f.send(batch).await,
            None => {
                batch.finalize(EventStatus::Delivered);
                Ok(())
            }
        }
    }
}

impl Drop for SourceSender {
    fn drop(&mut self) {
        if let Some(tx) = self.ended.take() {
            if !std::thread::panicking() {
                let _ = tx.send(());
            }
        }
    }
}

/// A source type's configuration.
#[async_trait]
pub trait SourceConfig: Debug + Send + Sync {
    /// Builds the running source.
    async fn build(&self, cx: SourceContext) -> Result<Source, BoxError>;
    /// Its outputs: the default one and any named ones.
    fn outputs(&self) -> Vec<Output>;
    /// What it claims exclusively (ports, stdin), checked for conflicts before start. Default: nothing.
    fn resources(&self) -> Vec<Resource> {
        Vec::new()
    }
    /// Checks that need this machine, beyond [`Self::resources`]: that the files the
    /// component will read (certificates, keys...) exist and parse. `weir validate` runs it
    /// (unless `--no-environment`); `build` must fail the same way. Default: nothing to check.
    fn check_environment(&self) -> Result<(), BoxError> {
        Ok(())
    }
    /// Whether this source can hold back its progress until its events are delivered.
    fn can_acknowledge(&self) -> bool {
        false
    }
    /// The documented shape of its default output's events, when they have one that readers
    /// look for by name, whatever the source's type: the name of the component type that
    /// defines it (`ebpf_tcp`: connections; `ebpf_process`: process events). A source whose
    /// events stand in for another type's (`demo`'s synthetic connections) names that type.
    /// The web console finds the producers of its tables by it. Default: none.
    fn event_shape(&self) -> Option<&'static str> {
        None
    }
}

/// Events leaving a transform, per output.
#[derive(Debug, Default)]
pub struct TransformOutput {
    /// The events for the default output.
    pub default: Vec<Event>,
    /// The events for each named output.
    pub named: BTreeMap<String, Vec<Event>>,
}

impl TransformOutput {
    /// An output buffer with the named outputs declared up front.
    pub fn new(names: impl IntoIterator<Item = String>) -> Self {
        Self {
            default: Vec::new(),
            named: names.into_iter().map(|n| (n, Vec::new())).collect(),
        }
    }

    /// Pushes to the default output.
    pub fn push(&mut self, e: Event) {
        self.default.push(e);
    }

    /// Pushes to a named output. An undeclared name is a bug in the transform; the event goes
    /// to the default output instead of vanishing.
    pub fn push_named(&mut self, name: &str, e: Event) {
        match self.named.get_mut(name) {
            Some(v) => v.push(e),
            None => self.default.push(e),
        }
    }

    /// Whether no output holds an event.
    pub fn is_empty(&self) -> bool {
        self.default.is_empty() && self.named.values().all(Vec::is_empty)
    }
}

/// A running transform.
pub trait Transform: Send {
    /// Handles one batch, pushing results into `out`.
    fn transform(&mut self, batch: EventBatch, out: &mut TransformOutput);

    /// For windowed transforms: how often [`Transform::on_tick`] runs.
    fn tick_interval(&self) -> Option<Duration> {
        None
    }

    /// Runs every [`Transform::tick_interval`]: emit what a window holds.
    fn on_tick(&mut self, _out: &mut TransformOutput) {}

    /// Called once when the input ends (shutdown, or every upstream finished): emit what is held.
    fn flush(&mut self, _out: &mut TransformOutput) {}
}

/// What a transform is given to build.
pub struct TransformContext {
    /// The component's id (its key in the configuration).
    pub id: Arc<str>,
    /// The pipeline's `data_dir`, where the transform may keep state.
    pub data_dir: PathBuf,
    /// The transform's counters.
    pub metrics: Arc<ComponentMetrics>,
}

/// A transform type's configuration.
pub trait TransformConfig: Debug + Send + Sync {
    /// Builds the running transform.
    fn build(&self, cx: &TransformContext) -> Result<Box<dyn Transform>, BoxError>;
    /// The event types it accepts.
    fn input(&self) -> DataType {
        DataType::ALL
    }
    /// Its outputs. [`DataType::ALL`] on an output means "whatever came in".
    fn outputs(&self) -> Vec<Output> {
        vec![Output::default_output(DataType::ALL)]
    }
    /// Whether the transform keeps nothing from one batch to the next: what it makes of a
    /// batch depends on that batch alone (no window, no group, no state carried over), it
    /// has no ticks, and its `flush` emits nothing. The runtime may then run several
    /// instances built from these options on several batches at once, one per worker
    /// thread, and hands on their outputs in the order the batches came in (so the order
    /// of each source's events is kept). Default: `false` (one instance, one batch at a
    /// time).
    fn stateless(&self) -> bool {
        false
    }
}

/// What a sink pulls its batches from.
pub struct SinkInput {
    rx: InputReceiver,
    metrics: Arc<ComponentMetrics>,
    /// Set by a reload that replaces or removes the sink.
    detach: Option<Arc<Detach>>,
    ended: bool,
}

/// How a reload takes a sink off its input: the sink sees its input end (flushes, delivers
/// and acknowledges what it took, and returns), either at once, leaving the buffer to the
/// instance that replaces it (`handoff`), or once the buffer has been quiet for
/// [`Detach::QUIET`] after its producers stopped sending to it (`drain`: a removed sink).
#[derive(Debug, Default)]
pub struct Detach {
    token: crate::shutdown::ShutdownToken,
    drain: std::sync::atomic::AtomicBool,
}

impl Detach {
    /// How long a removed sink's buffer must stay empty before its input ends.
    pub const QUIET: std::time::Duration = std::time::Duration::from_millis(250);

    /// Ends the input now; what the buffer holds stays for the next instance.
    pub fn handoff(&self) {
        self.token.cancel();
    }

    /// Ends the input once the buffer is drained and quiet.
    pub fn drain(&self) {
        self.drain.store(true, std::sync::atomic::Ordering::Release);
        self.token.cancel();
    }
}

/// The buffer a sink reads: its own, or its supervisor's, lent for one run (when the sink
/// fails, the lock is released and the buffer, with what it holds, goes to the next instance).
enum InputReceiver {
    Owned(BufferReceiver),
    Lent(tokio::sync::OwnedMutexGuard<BufferReceiver>),
}

impl SinkInput {
    /// An input reading `rx`, counting what it receives in `metrics`.
    pub fn new(rx: BufferReceiver, metrics: Arc<ComponentMetrics>) -> Self {
        Self {
            rx: InputReceiver::Owned(rx),
            metrics,
            detach: None,
            ended: false,
        }
    }

    /// An input reading a buffer its supervisor keeps, for one run of the sink.
    pub fn lent(
        rx: tokio::sync::OwnedMutexGuard<BufferReceiver>,
        metrics: Arc<ComponentMetrics>,
    ) -> Self {
        Self {
            rx: InputReceiver::Lent(rx),
            metrics,
            detach: None,
            ended: false,
        }
    }

    /// An input a reload can end ([`Detach`]).
    pub fn with_detach(mut self, detach: Arc<Detach>) -> Self {
        self.detach = Some(detach);
        self
    }

    /// The next batch, or `None` when every upstream has finished (shutdown drains to here).
    pub async fn next(&mut self) -> Option<EventBatch> {
        if self.ended {
            return None;
        }
        let rx: &mut BufferReceiver = match &mut self.rx {
            InputReceiver::Owned(rx) => rx,
            InputReceiver::Lent(rx) => rx,
        };
        let b = match &self.detach {
            None => rx.recv().await,
            Some(d) => {
                let detached = tokio::select! {
                    biased;
                    _ = d.token.cancelled() => true,
                    b = rx.recv() => match b {
                        Some(b) => {
                            self.metrics.add_received(b.len() as u64, 0);
                            return Some(b);
                        }
                        None => false,
                    },
                };
                if detached && d.drain.load(std::sync::atomic::Ordering::Acquire) {
                    tokio::time::timeout(Detach::QUIET, rx.recv())
                        .await
                        .ok()
                        .flatten()
                } else {
                    None
                }
            }
        };
        match b {
            Some(b) => {
                self.metrics.add_received(b.len() as u64, 0);
                Some(b)
            }
            None => {
                self.ended = true;
                None
            }
        }
    }

    /// The sink's counters.
    pub fn metrics(&self) -> &Arc<ComponentMetrics> {
        &self.metrics
    }
}

/// A running sink.
#[async_trait]
pub trait Sink: Send {
    /// Runs until the input ends, delivering and finalizing every batch.
    async fn run(self: Box<Self>, input: SinkInput) -> Result<(), BoxError>;
}

/// What a sink is given to build.
pub struct SinkContext {
    /// The component's id (its key in the configuration).
    pub id: Arc<str>,
    /// The pipeline's `data_dir`, where the sink may keep state.
    pub data_dir: PathBuf,
    /// The sink's counters.
    pub metrics: Arc<ComponentMetrics>,
    /// Every component's metrics.
    pub registry: Arc<MetricsRegistry>,
    /// Where the sink sends events to its named outputs ([`SinkConfig::outputs`]).
    pub outputs: SinkOutputs,
    /// Fires when the sink must give up at once: the grace period of a shutdown expired, or
    /// the sink is being replaced. Retry loops end when it fires and leave their batches
    /// unfinalized (errored), so sources with acknowledgements keep them for the next start.
    pub stop: ShutdownToken,
}

/// The named outputs of a sink (`es.dead_letter`): events a sink makes from what it could
/// not deliver, sent on to other components. The events sent here are new events; the ones
/// the sink took from its input are still finalized by the sink.
#[derive(Debug, Default)]
pub struct SinkOutputs {
    named: BTreeMap<String, Fanout>,
}

impl SinkOutputs {
    /// Outputs sending to `named` (output name -> its consumers).
    pub fn new(named: BTreeMap<String, Fanout>) -> Self {
        Self { named }
    }

    /// Whether some component reads `output`: a sink can skip building events nobody reads.
    pub fn is_connected(&self, output: &str) -> bool {
        self.named.get(output).is_some_and(|f| !f.is_empty())
    }

    /// Sends a batch to a named output, waiting while its consumers are full
    /// (backpressure). Nothing happens when nobody reads the output. The error means every
    /// consumer has stopped.
    pub async fn send_to(&mut self, output: &str, batch: EventBatch) -> Result<(), ClosedError> {
        match self.named.get_mut(output) {
            Some(f) if !batch.is_empty() && !f.is_empty() => f.send(batch).await,
            _ => Ok(()),
        }
    }
}

/// A sink type's configuration.
#[async_trait]
pub trait SinkConfig: Debug + Send + Sync {
    /// Builds the running sink.
    async fn build(&self, cx: SinkContext) -> Result<Box<dyn Sink>, BoxError>;
    /// The event types it accepts.
    fn input(&self) -> DataType;
    /// Named outputs other components can read (`inputs = ["ID.NAME"]`). Default: none.
    /// Every output of a sink is named; [`DataType::ALL`] means "whatever came in".
    fn outputs(&self) -> Vec<Output> {
        Vec::new()
    }
    /// What it claims exclusively (ports), checked for conflicts before start. Default: nothing.
    fn resources(&self) -> Vec<Resource> {
        Vec::new()
    }
    /// Checks that need this machine, beyond [`Self::resources`]: that the files the
    /// component will read (certificates, keys...) exist and parse. `weir validate` runs it
    /// (unless `--no-environment`); `build` must fail the same way. Default: nothing to check.
    fn check_environment(&self) -> Result<(), BoxError> {
        Ok(())
    }
}

type ParseFn<T> = fn(toml::de::ValueDeserializer<'_>) -> Result<Box<T>, toml::de::Error>;

/// Makes the JSON Schema of a component type's own options (its config struct, without the
/// common keys `type`, `inputs`, `buffer`, `acknowledgements`): `<C as JsonSchema>::json_schema`.
/// The schemas of nested types are added to the generator's definitions (or inlined, as its
/// settings say). Used by `weir generate-docs` for `docs/schemas/config.schema.json` and the
/// options tables of `docs/components/`.
pub type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

/// A registered component type.
pub struct ComponentType<T: ?Sized> {
    /// The TOML `type` name.
    pub name: &'static str,
    /// One line for `weir list`.
    pub description: &'static str,
    /// Deserialises the component's table into its configuration.
    pub parse: ParseFn<T>,
    /// The JSON Schema of its options.
    pub schema: SchemaFn,
}

fn parse_source<C: SourceConfig + DeserializeOwned + 'static>(
    d: toml::de::ValueDeserializer<'_>,
) -> Result<Box<dyn SourceConfig>, toml::de::Error> {
    Ok(Box::new(<C as serde::Deserialize>::deserialize(d)?))
}

fn parse_transform<C: TransformConfig + DeserializeOwned + 'static>(
    d: toml::de::ValueDeserializer<'_>,
) -> Result<Box<dyn TransformConfig>, toml::de::Error> {
    Ok(Box::new(<C as serde::Deserialize>::deserialize(d)?))
}

fn parse_sink<C: SinkConfig + DeserializeOwned + 'static>(
    d: toml::de::ValueDeserializer<'_>,
) -> Result<Box<dyn SinkConfig>, toml::de::Error> {
    Ok(Box::new(<C as serde::Deserialize>::deserialize(d)?))
}

/// The component types this build has, by TOML `type` name.
#[derive(Default)]
pub struct Registry {
    /// The source types, by name.
    pub sources: BTreeMap<&'static str, ComponentType<dyn SourceConfig>>,
    /// The transform types, by name.
    pub transforms: BTreeMap<&'static str, ComponentType<dyn TransformConfig>>,
    /// The sink types, by name.
    pub sinks: BTreeMap<&'static str, ComponentType<dyn SinkConfig>>,
    /// The codecs component crates registered (`decoding.codec` names beyond the core's).
    pub decoders: BTreeMap<&'static str, &'static str>,
}

impl Registry {
    /// Registers the source type `C` as `name`.
    pub fn add_source<C: SourceConfig + DeserializeOwned + JsonSchema + 'static>(
        &mut self,
        name: &'static str,
        description: &'static str,
    ) {
        self.sources.insert(
            name,
            ComponentType {
                name,
                description,
                parse: parse_source::<C>,
                schema: C::json_schema,
            },
        );
    }

    /// Registers the transform type `C` as `name`.
    pub fn add_transform<C: TransformConfig + DeserializeOwned + JsonSchema + 'static>(
        &mut self,
        name: &'static str,
        description: &'static str,
    ) {
        self.transforms.insert(
            name,
            ComponentType {
                name,
                description,
                parse: parse_transform::<C>,
                schema: C::json_schema,
            },
        );
    }

    /// Registers the sink type `C` as `name`.
    pub fn add_sink<C: SinkConfig + DeserializeOwned + JsonSchema + 'static>(
        &mut self,
        name: &'static str,
        description: &'static str,
    ) {
        self.sinks.insert(
            name,
            ComponentType {
                name,
                description,
                parse: parse_sink::<C>,
                schema: C::json_schema,
            },
        );
    }

    /// Registers a decoder (a `decoding.codec` name) that a component crate provides, with a
    /// one-line description for `weir list`.
    pub fn add_decoder(&mut self, decoder: &'static dyn FrameDecoder, description: &'static str) {
        register_decoder(decoder);
        self.decoders.insert(decoder.name(), description);
    }
}
