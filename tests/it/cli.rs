//! `weir list` and `weir graph`.

use crate::harness::{weir, write_config};

#[test]
fn list_names_every_component_type() {
    let out = weir().arg("list").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for t in [
        "demo",
        "stdin",
        "internal_metrics",
        "remap",
        "filter",
        "route",
        "sample",
        "console",
        "file",
        "blackhole",
        "aggregate",
        "prometheus_exporter",
        "prometheus_remote_write",
    ] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{t} "))),
            "`{t}` missing from:\n{text}"
        );
    }
}

#[test]
fn graph_renders_dot_and_mermaid_with_named_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "p.toml",
        r#"
[sources.in]
type = "stdin"
[transforms.router]
type = "route"
inputs = ["in"]
route.errors = '.level == "error"'
[sinks.errs]
type = "console"
inputs = ["router.errors"]
[sinks.rest]
type = "blackhole"
inputs = ["router._unmatched"]
"#,
    );
    let out = weir()
        .args(["graph", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dot = String::from_utf8_lossy(&out.stdout);
    assert!(dot.starts_with("digraph weir {"));
    assert!(dot.contains("\"in\" -> \"router\";"), "{dot}");
    assert!(
        dot.contains("\"router\" -> \"errs\" [label=\"errors\"];"),
        "{dot}"
    );
    assert!(
        dot.contains("\"router\" -> \"rest\" [label=\"_unmatched\"];"),
        "{dot}"
    );
    let out = weir()
        .args(["graph", "--format", "mermaid", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let mm = String::from_utf8_lossy(&out.stdout);
    assert!(mm.starts_with("flowchart LR"), "{mm}");
    assert!(mm.contains("router -->|errors| errs"), "{mm}");
    assert!(mm.contains("in --> router"), "{mm}");
}
