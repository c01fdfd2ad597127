//! `weir topology`: the service map of a file of exported flows, without writing a config.
//!
//! It builds and runs the same pipeline a config would (a reader of the file -> the
//! `flow_to_topology` transform with one window over the whole input -> an in-memory sink), then
//! prints the map as JSON, DOT or Mermaid.
//!
//! Input: JSON lines as `hubble observe -o jsonpb` writes them, optionally gzip-compressed
//! (`.gz`, or detected by its magic bytes), or a Parquet file of flows (`.parquet`, as the
//! `parquet` sink writes them: the flow's objects as structs), read by the `parquet` source.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use weir_pipeline::codec::DecodingConfig;
use weir_pipeline::component::{
    Output, Sink, SinkConfig, SinkContext, SinkInput, Source, SourceConfig, SourceContext,
};
use weir_pipeline::config::{
    resolve_graph, BufferConfig, Config, InputRef, Location, SinkEntry, SourceEntry, TransformEntry,
};
use weir_pipeline::event::Event;
use weir_pipeline::finalization::EventStatus;
use weir_pipeline::topology;
use weir_pipeline::vocabulary::{DataType, OnFailure};
use weir_pipeline::BoxError;
use weir_sources::parquet::ParquetSourceConfig;
use weir_sources::stdin::{read_loop, StdinConfig};
use weir_transforms::flow_to_topology::{FlowToTopologyConfig, Granularity, OutputKind};

use crate::TopologyFormat;

/// Longest line accepted (a flow is a few KiB; anything past this is not one).
const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Reads a jsonl or jsonl.gz file into events (the `flow_file` step of the built pipeline).
#[derive(Debug)]
struct FlowFileSource {
    path: PathBuf,
}

fn open(path: &Path) -> std::io::Result<Box<dyn Read + Send>> {
    let mut file = std::fs::File::open(path)?;
    let mut magic = [0u8; 2];
    let n = file.read(&mut magic)?;
    let file = std::io::Read::chain(std::io::Cursor::new(magic[..n].to_vec()), file);
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(file)))
    } else {
        Ok(Box::new(file))
    }
}

#[async_trait]
impl SourceConfig for FlowFileSource {
    async fn build(&self, mut cx: SourceContext) -> Result<Source, BoxError> {
        let input =
            open(&self.path).map_err(|e| format!("cannot open {}: {e}", self.path.display()))?;
        Ok(Box::pin(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel(4);
            let cfg = StdinConfig {
                decoding: DecodingConfig {
                    codec: weir_records::flow::HubbleJsonpb::decoder(),
                },
                max_line_bytes: MAX_LINE_BYTES,
            };
            let id = cx.id.clone();
            let metrics = cx.metrics.clone();
            let reader =
                tokio::task::spawn_blocking(move || read_loop(input, cfg, id, metrics, tx));
            while let Some(batch) = rx.recv().await {
                if cx.out.send(batch).await.is_err() {
                    break;
                }
            }
            reader
                .await
                .map_err(|e| format!("the file reader failed: {e}"))?;
            Ok(())
        }))
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::default_output(DataType::LOG)]
    }
}

/// Keeps every event it receives.
#[derive(Debug)]
struct CollectSink {
    events: Arc<Mutex<Vec<Event>>>,
}

struct Collect {
    events: Arc<Mutex<Vec<Event>>>,
}

#[async_trait]
impl SinkConfig for CollectSink {
    async fn build(&self, _cx: SinkContext) -> Result<Box<dyn Sink>, BoxError> {
        Ok(Box::new(Collect {
            events: Arc::clone(&self.events),
        }))
    }

    fn input(&self) -> DataType {
        DataType::ALL
    }
}

#[async_trait]
impl Sink for Collect {
    async fn run(self: Box<Self>, mut input: SinkInput) -> Result<(), BoxError> {
        while let Some(mut batch) = input.next().await {
            batch.finalize(EventStatus::Delivered);
            match self.events.lock() {
                Ok(mut v) => v.extend(batch.events),
                Err(p) => p.into_inner().extend(batch.events),
            }
        }
        Ok(())
    }
}

/// The reader of `input`: the `parquet` source for `.parquet`, else JSON lines.
fn reader(input: &Path) -> Result<(&'static str, Box<dyn SourceConfig>), String> {
    if input.extension().is_some_and(|x| x == "parquet") {
        let cfg: ParquetSourceConfig = serde_json::from_value(serde_json::json!({
            "paths": [input.to_string_lossy()],
            "progress": "never",
        }))
        .map_err(|e| format!("parquet reader: {e}"))?;
        Ok(("parquet", Box::new(cfg)))
    } else {
        Ok((
            "flow_file",
            Box::new(FlowFileSource {
                path: input.to_path_buf(),
            }),
        ))
    }
}

/// The built pipeline: file -> flow_to_topology -> collect.
fn pipeline(
    input: &Path,
    map: FlowToTopologyConfig,
    events: Arc<Mutex<Vec<Event>>>,
) -> Result<Config, String> {
    let (type_name, source) = reader(input)?;
    let file: Arc<str> = Arc::from("<weir topology>");
    let here = Location {
        file,
        line: 1,
        column: 1,
    };
    let input_ref = |id: &str| InputRef {
        text: id.to_string(),
        location: here.clone(),
    };
    let mut config = Config::default();
    config.api.enabled = false;
    config.sources.insert(
        "flows".into(),
        SourceEntry {
            fingerprint: 0,
            type_name: type_name.into(),
            config: source,
            acknowledgements: false,
            on_failure: OnFailure::Exit,
            location: here.clone(),
        },
    );
    config.transforms.insert(
        "map".into(),
        TransformEntry {
            fingerprint: 0,
            type_name: "flow_to_topology".into(),
            config: Box::new(map),
            inputs: vec![input_ref("flows")],
            on_failure: OnFailure::Exit,
            location: here.clone(),
        },
    );
    config.sinks.insert(
        "collect".into(),
        SinkEntry {
            fingerprint: 0,
            type_name: "collect".into(),
            config: Box::new(CollectSink { events }),
            inputs: vec![input_ref("map")],
            buffer: BufferConfig::default(),
            on_failure: OnFailure::Exit,
            location: here,
        },
    );
    Ok(config)
}

/// Runs the map over `input` and returns the topology event as JSON (plus the number of lines
/// that were not flows).
async fn compute(
    input: &Path,
    granularity: Granularity,
    max_edges: usize,
) -> Result<(serde_json::Value, u64), String> {
    let events = Arc::new(Mutex::new(Vec::new()));
    let map = FlowToTopologyConfig {
        window_secs: 0,
        granularity,
        output: OutputKind::Topology,
        max_edges,
        ..Default::default()
    };
    let config = pipeline(input, map, Arc::clone(&events))?;
    let graph = resolve_graph(&config, false).map_err(|e| {
        e.0.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let running = topology::start(config, &graph)
        .await
        .map_err(|e| e.to_string())?;
    let registry = Arc::clone(&running.registry);
    let outcomes = running.wait().await;
    if let Some(e) = outcomes.iter().find_map(|o| o.error.clone()) {
        return Err(e);
    }
    let skipped: u64 = registry.components().iter().map(|c| c.errors_total()).sum();
    let events = match events.lock() {
        Ok(mut v) => std::mem::take(&mut *v),
        Err(p) => std::mem::take(&mut *p.into_inner()),
    };
    let topo = events
        .iter()
        .find(|e| e.as_log().is_some())
        .map(Event::to_json_value)
        .unwrap_or_else(|| {
            serde_json::json!({"type": "topology", "granularity": granularity.label(),
                "flows": 0, "nodes": [], "edges": []})
        });
    Ok((topo, skipped))
}

fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A short edge label: port/protocol and the counts that are not zero.
fn edge_label(e: &serde_json::Value) -> String {
    let mut parts = vec![format!(
        "{}/{}",
        e["destination_port"],
        e["protocol"].as_str().unwrap_or("?")
    )];
    let n = |k: &str| e[k].as_u64().unwrap_or(0);
    if n("connections") > 0 {
        parts.push(format!("{} conn", n("connections")));
    }
    if n("http_requests") > 0 {
        let errors: u64 = e["http_responses"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.starts_with('5'))
                    .filter_map(|(_, v)| v.as_u64())
                    .sum()
            })
            .unwrap_or(0);
        parts.push(format!("{} req, {errors} 5xx", n("http_requests")));
        if n("latency_ns_count") > 0 {
            let avg = n("latency_ns_sum") as f64 / n("latency_ns_count") as f64 / 1e6;
            parts.push(format!("avg {avg:.1} ms"));
        }
    }
    if n("dns_queries") > 0 {
        parts.push(format!("{} dns", n("dns_queries")));
    }
    let drops: u64 = e["drops"]
        .as_object()
        .map(|m| m.values().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0);
    if drops > 0 {
        parts.push(format!("{drops} dropped"));
    }
    parts.join(", ")
}

fn render(topo: &serde_json::Value, format: TopologyFormat) -> String {
    let empty = Vec::new();
    let nodes = topo["nodes"].as_array().unwrap_or(&empty);
    let edges = topo["edges"].as_array().unwrap_or(&empty);
    let mut out = String::new();
    match format {
        TopologyFormat::Json => {
            out = serde_json::to_string_pretty(topo).unwrap_or_default();
            out.push('\n');
        }
        TopologyFormat::Dot => {
            out.push_str("digraph topology {\n  rankdir=LR;\n  node [shape=box];\n");
            for n in nodes {
                let id = n["id"].as_str().unwrap_or("?");
                let shape = if n["kind"] == "world" {
                    " shape=ellipse"
                } else {
                    ""
                };
                let _ = writeln!(out, "  \"{}\" [label=\"{}\"{shape}];", quote(id), quote(id));
            }
            for e in edges {
                let _ = writeln!(
                    out,
                    "  \"{}\" -> \"{}\" [label=\"{}\"];",
                    quote(e["source"].as_str().unwrap_or("?")),
                    quote(e["destination"].as_str().unwrap_or("?")),
                    quote(&edge_label(e))
                );
            }
            out.push_str("}\n");
        }
        TopologyFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            // Mermaid ids must be plain words: number the nodes.
            let ids: BTreeMap<&str, usize> = nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n["id"].as_str().unwrap_or("?"), i))
                .collect();
            let mermaid = |s: &str| s.replace('"', "#quot;");
            for (id, i) in &ids {
                let _ = writeln!(out, "  n{i}[\"{}\"]", mermaid(id));
            }
            for e in edges {
                let (Some(s), Some(d)) = (
                    e["source"].as_str().and_then(|s| ids.get(s)),
                    e["destination"].as_str().and_then(|d| ids.get(d)),
                ) else {
                    continue;
                };
                let _ = writeln!(out, "  n{s} -->|\"{}\"| n{d}", mermaid(&edge_label(e)));
            }
        }
    }
    out
}

/// `weir topology`.
pub fn topology(
    input: &Path,
    format: TopologyFormat,
    granularity: Granularity,
    max_edges: usize,
) -> u8 {
    if !input.is_file() {
        eprintln!("error: {}: no such file", input.display());
        return crate::exit::CONFIG;
    }
    if max_edges == 0 {
        eprintln!("error: --max-edges must be at least 1");
        return crate::exit::CONFIG;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return crate::exit::FAILED;
        }
    };
    match rt.block_on(compute(input, granularity, max_edges)) {
        Ok((topo, skipped)) => {
            if skipped > 0 {
                eprintln!(
                    "warning: {skipped} lines of {} were not flows and were skipped",
                    input.display()
                );
            }
            print!("{}", render(&topo, format));
            crate::exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            crate::exit::FAILED
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_and_mermaid_quote_names() {
        let topo = serde_json::json!({"nodes": [
            {"id": "shop/web", "kind": "workload"}, {"id": "world(a\"b)", "kind": "world"}],
            "edges": [{"source": "shop/web", "destination": "world(a\"b)", "destination_port": 443,
                "protocol": "TCP", "connections": 2, "http_requests": 0, "dns_queries": 0,
                "drops": {"POLICY_DENIED": 1}}]});
        let dot = render(&topo, TopologyFormat::Dot);
        assert!(
            dot.contains(
                "\"shop/web\" -> \"world(a\\\"b)\" [label=\"443/TCP, 2 conn, 1 dropped\"];"
            ),
            "{dot}"
        );
        let mermaid = render(&topo, TopologyFormat::Mermaid);
        assert!(
            mermaid.contains("n0 -->|\"443/TCP, 2 conn, 1 dropped\"| n1"),
            "{mermaid}"
        );
        assert!(mermaid.contains("n1[\"world(a#quot;b)\"]"), "{mermaid}");
    }
}
