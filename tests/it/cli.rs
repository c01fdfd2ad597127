//! `weir list` and `weir graph`.

use crate::harness::{weir, write_config};

/// Every type of the docs index (docs/components/README.md, which
/// `docs::type_names_agree_between_list_readme_and_docs_index` checks against the registry)
/// is printed by `weir list`, in its section, with a description.
#[test]
fn list_names_every_component_type() {
    let out = weir().arg("list").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let expected = crate::docs::docs_index_types();
    assert!(
        expected.len() >= 30,
        "too few types in the docs index: {expected:?}"
    );
    for (kind, name) in &expected {
        let header = match kind.as_str() {
            "source" => "Sources:",
            "transform" => "Transforms:",
            _ => "Sinks:",
        };
        let section = text
            .split(header)
            .nth(1)
            .unwrap_or_else(|| panic!("no `{header}` in:\n{text}"));
        let section = section.split("\n\n").next().unwrap_or_default();
        let line = section
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{kind} `{name}` missing from:\n{text}"));
        assert!(
            line.split_whitespace().count() > 1,
            "{kind} `{name}` has no description: {line:?}"
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
