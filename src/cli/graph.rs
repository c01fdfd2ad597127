use std::fmt::Write as _;
use std::path::PathBuf;

use weir_pipeline::topology::describe;
use weir_pipeline::vocabulary::ComponentKind;

use super::load_graph;
use crate::GraphFormat;

pub fn graph(configs: &[PathBuf], format: GraphFormat) -> u8 {
    let (config, graph) = match load_graph(configs) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let comps = describe(&config, &graph);
    let mut out = String::new();
    let split = |input: &str| -> (String, Option<String>) {
        match input.split_once('.') {
            Some((c, o)) => (c.to_string(), Some(o.to_string())),
            None => (input.to_string(), None),
        }
    };
    match format {
        GraphFormat::Dot => {
            out.push_str("digraph weir {\n  rankdir=LR;\n");
            for c in &comps {
                let shape = match c.kind {
                    ComponentKind::Source => "trapezium",
                    ComponentKind::Transform => "box",
                    ComponentKind::Sink => "invtrapezium",
                };
                let _ = writeln!(
                    out,
                    "  \"{}\" [shape={shape} label=\"{}\\n({})\"];",
                    c.id, c.id, c.type_name
                );
            }
            for c in &comps {
                for i in &c.inputs {
                    let (from, port) = split(i);
                    match port {
                        Some(p) => {
                            let _ = writeln!(out, "  \"{from}\" -> \"{}\" [label=\"{p}\"];", c.id);
                        }
                        None => {
                            let _ = writeln!(out, "  \"{from}\" -> \"{}\";", c.id);
                        }
                    }
                }
            }
            out.push_str("}\n");
        }
        GraphFormat::Mermaid => {
            out.push_str("flowchart LR\n");
            for c in &comps {
                let label = format!("{} ({})", c.id, c.type_name);
                let _ = match c.kind {
                    ComponentKind::Source => writeln!(out, "  {}[/\"{label}\"/]", c.id),
                    ComponentKind::Transform => writeln!(out, "  {}[\"{label}\"]", c.id),
                    ComponentKind::Sink => writeln!(out, "  {}[\\\"{label}\"\\]", c.id),
                };
            }
            for c in &comps {
                for i in &c.inputs {
                    let (from, port) = split(i);
                    let _ = match port {
                        Some(p) => writeln!(out, "  {from} -->|{p}| {}", c.id),
                        None => writeln!(out, "  {from} --> {}", c.id),
                    };
                }
            }
        }
    }
    print!("{out}");
    crate::exit::OK
}
