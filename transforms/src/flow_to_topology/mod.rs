//! `flow_to_topology`: network flows (Hubble's jsonpb shape, from the `hubble` source or a
//! file of exported flows) into a quantified service map, per tumbling window.
//!
//! ```toml
//! [transforms.map]
//! type = "flow_to_topology"
//! inputs = ["flows"]
//! window_secs = 60
//! granularity = "workload"
//! output = "both"
//! ```
//!
//! Each flow is counted on one edge (source node, destination node, destination port, L4
//! protocol); a reply is counted on the edge of its connection (client -> server:port). Per
//! edge and window: flows by verdict, connections opened (once per connection, however many
//! observation points saw its SYN, see [`window`]), drops by reason, HTTP requests, responses
//! by status and latency (from `l7.latency_ns` of responses), DNS queries and responses by
//! rcode, and bytes when flows carry a `bytes` field.
//!
//! Windows are cut by Weir's clock (every `window_secs`), not by the flows' timestamps, and
//! the open window is emitted when the input ends, so replaying a file with a long window (or
//! `window_secs = 0`) gives one map of the whole file. Memory is bounded: at most `max_edges`
//! edges and `max_tracked_connections` connections per window; what does not fit is counted
//! (`overflow_flows`, `untracked_connections` in the event, and the `edge_overflow` error), and
//! each edge counts at most 1000 distinct drop reasons, HTTP status codes and DNS rcodes (a
//! further value is counted as a `label_overflow` error, its flow still counts on the edge).
//!
//! Acknowledgements: the window holds the acknowledgements of the flows counted in it (and of
//! those past `max_edges`, counted in `overflow_flows`) until what it emits has been delivered;
//! a crash (kill -9) replays at most the open window. Events that are not flows are rejected.

mod flow;
mod hash;
mod node;
mod output;
mod window;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use weir_pipeline::component::{
    Output, Transform, TransformConfig, TransformContext, TransformOutput,
};
use weir_pipeline::event::{Event, EventBatch};
use weir_pipeline::finalization::{EventStatus, FinalizerSet};
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

pub use flow::{parse_rfc3339_nanos, FlowView};
pub use node::Granularity;
pub use output::edge_id;

use output::WindowInfo;
use window::Window;

use crate::holds::{attach_since, OutputMark};

/// What the transform emits.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// Counters and histograms per edge (`hubble_flows_processed_total`, ...).
    Metrics,
    /// One `topology` log event per window, with nodes and edges. The default.
    #[default]
    Topology,
    /// Both.
    Both,
}

/// Configuration of the `flow_to_topology` transform.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlowToTopologyConfig {
    /// Length of a window, in seconds. A window is emitted when it ends (if it saw a flow) and when
    /// the input ends. `0`: one window over the whole input, emitted at its end (replaying files).
    /// At most 366 days. Default: 60.
    #[serde(default = "default_window")]
    pub window_secs: u64,
    /// What a node is. Default: `workload`.
    #[serde(default)]
    pub granularity: Granularity,
    /// What is emitted per window. Default: `topology`.
    #[serde(default)]
    pub output: OutputKind,
    /// At most this many edges per window (at least 1); flows of further edges are counted in
    /// `overflow_flows` and as `edge_overflow` errors, not mapped. Default: 10000.
    #[serde(default = "default_max_edges")]
    pub max_edges: usize,
    /// At most this many connections remembered per window to count each once; past it, a
    /// SYN is counted without that check (`untracked_connections`). Default: 1000000.
    #[serde(default = "default_max_connections")]
    pub max_tracked_connections: usize,
}

fn default_window() -> u64 {
    60
}
fn default_max_edges() -> usize {
    10_000
}
fn default_max_connections() -> usize {
    1_000_000
}

impl Default for FlowToTopologyConfig {
    fn default() -> Self {
        Self {
            window_secs: default_window(),
            granularity: Granularity::default(),
            output: OutputKind::default(),
            max_edges: default_max_edges(),
            max_tracked_connections: default_max_connections(),
        }
    }
}

/// The longest window: about a year (a longer one is `window_secs = 0`).
const MAX_WINDOW_SECS: u64 = 366 * 86_400;

impl TransformConfig for FlowToTopologyConfig {
    fn build(&self, cx: &TransformContext) -> Result<Box<dyn Transform>, BoxError> {
        if self.window_secs > MAX_WINDOW_SECS {
            return Err(format!(
                "`window_secs` is at most {MAX_WINDOW_SECS} (a year); use 0 for one window over the whole input"
            )
            .into());
        }
        if self.max_edges == 0 {
            return Err("`max_edges` must be at least 1".into());
        }
        Ok(Box::new(FlowToTopology::new(
            self.clone(),
            Arc::clone(&cx.metrics),
        )))
    }

    fn input(&self) -> DataType {
        DataType::LOG
    }

    fn outputs(&self) -> Vec<Output> {
        let t = match self.output {
            OutputKind::Metrics => DataType::METRIC,
            OutputKind::Topology => DataType::LOG,
            OutputKind::Both => DataType::LOG.union(DataType::METRIC),
        };
        vec![Output::default_output(t)]
    }
}

/// The running transform.
pub struct FlowToTopology {
    cfg: FlowToTopologyConfig,
    window: Window,
    started: DateTime<Utc>,
    metrics: Arc<ComponentMetrics>,
    /// The acknowledgements of the flows counted in the open window.
    holds: FinalizerSet,
}

impl FlowToTopology {
    pub fn new(cfg: FlowToTopologyConfig, metrics: Arc<ComponentMetrics>) -> Self {
        Self {
            window: Window::new(cfg.granularity, cfg.max_edges, cfg.max_tracked_connections),
            cfg,
            started: Utc::now(),
            metrics,
            holds: FinalizerSet::default(),
        }
    }

    /// Emits the open window (if it saw anything), hands its acknowledgements to what it
    /// emitted, and starts the next.
    fn close_window(&mut self, out: &mut TransformOutput) {
        let mark = OutputMark::of(out);
        self.emit_window(out);
        attach_since(std::mem::take(&mut self.holds), out, &mark);
    }

    fn emit_window(&mut self, out: &mut TransformOutput) {
        let now = Utc::now();
        if self.window.is_empty() {
            self.started = now;
            self.window.take();
            return;
        }
        let info = WindowInfo {
            start: self.started,
            end: now,
            granularity: self.cfg.granularity,
            flows: self.window.flows,
            overflow_flows: self.window.overflow_flows,
            untracked_connections: self.window.untracked_connections,
            first_flow_nanos: self.window.first_flow_nanos,
            last_flow_nanos: self.window.last_flow_nanos,
        };
        if info.overflow_flows > 0 {
            self.metrics.error(
                "edge_overflow",
                info.overflow_flows,
                &format_args!(
                    "flow_to_topology: {} flows of this window were not mapped: the window reached max_edges ({})",
                    info.overflow_flows, self.cfg.max_edges
                ),
            );
        }
        if self.window.overflow_labels > 0 {
            self.metrics.error(
                "label_overflow",
                self.window.overflow_labels,
                &format_args!(
                    "flow_to_topology: {} drop reasons, HTTP status codes or DNS rcodes of this window were not counted by value: their edge had {} distinct values already",
                    self.window.overflow_labels,
                    window::MAX_LABELS_PER_EDGE
                ),
            );
        }
        let mut edges = self.window.take();
        self.started = now;
        if matches!(self.cfg.output, OutputKind::Topology | OutputKind::Both) {
            out.push(output::topology_event(&info, &mut edges));
        }
        if matches!(self.cfg.output, OutputKind::Metrics | OutputKind::Both) {
            output::metric_events(&info, &edges, &mut out.default);
        }
    }
}

impl Transform for FlowToTopology {
    fn transform(&mut self, batch: EventBatch, _out: &mut TransformOutput) {
        let mut not_flows = 0u64;
        for mut event in batch {
            let hold = event.metadata_mut().notifier.take();
            let counted = match &event {
                Event::Log(log) => match FlowView::of(log) {
                    Some(f) => {
                        // Counted, or past `max_edges` in `overflow_flows`: in the window
                        // either way.
                        self.window.add(&f);
                        true
                    }
                    None => false,
                },
                _ => false,
            };
            if counted {
                self.holds.absorb(hold);
            } else {
                not_flows += 1;
                // A verdict on the event: it is not a flow.
                if let Some(h) = hold {
                    h.finalize(EventStatus::Rejected);
                }
            }
        }
        // The flows are consumed into the map: they do not go on.
        if not_flows > 0 {
            self.metrics.error(
                "not_a_flow",
                not_flows,
                &format_args!(
                    "flow_to_topology: {not_flows} events of a batch are not network flows (no `flow` object with IP, l4, verdict, source or destination); skipped"
                ),
            );
        }
    }

    fn tick_interval(&self) -> Option<Duration> {
        (self.cfg.window_secs > 0).then(|| Duration::from_secs(self.cfg.window_secs))
    }

    fn on_tick(&mut self, out: &mut TransformOutput) {
        self.close_window(out);
    }

    fn flush(&mut self, out: &mut TransformOutput) {
        self.close_window(out);
    }
}

#[cfg(test)]
mod tests;
