//! The documentation made from the code is up to date, and every place that names the
//! component types agrees: `weir list`, the README's "What is here" table, the index of
//! docs/components/ and the options tables of the component pages.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::harness::weir;

/// The command that regenerates the schema and the options tables.
const REGENERATE: &str = "cargo run -- generate-docs";

/// (kind, type): `("source", "file")`.
pub type TypeSet = BTreeSet<(String, String)>;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// The types `weir list` prints, by section.
pub fn listed_types() -> TypeSet {
    let out = weir().arg("list").output().unwrap();
    assert!(out.status.success(), "weir list failed: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let mut kind = "";
    let mut set = TypeSet::new();
    for line in text.lines() {
        match line.trim_end() {
            "Sources:" => kind = "source",
            "Transforms:" => kind = "transform",
            "Sinks:" => kind = "sink",
            // Codecs are listed after the components; they have their own page (codecs.md).
            l if l.starts_with("Decoders") => kind = "decoder",
            _ if kind == "decoder" => {}
            l if l.starts_with("  ") => {
                let name = l.split_whitespace().next().unwrap();
                assert!(!kind.is_empty(), "a type before any section in:\n{text}");
                set.insert((kind.to_string(), name.to_string()));
            }
            _ => {}
        }
    }
    set
}

/// The first backticked word of each row of the tables under `## Sources`, `## Transforms`
/// and `## Sinks` of docs/components/README.md, with the page it links to.
pub fn docs_index() -> Vec<(String, String, String)> {
    let text = read(&repo().join("docs/components/README.md"));
    let mut kind = "";
    let mut rows = Vec::new();
    for line in text.lines() {
        if let Some(h) = line.strip_prefix("## ") {
            kind = match h.trim() {
                "Sources" => "source",
                "Transforms" => "transform",
                "Sinks" => "sink",
                _ => "",
            };
            continue;
        }
        if kind.is_empty() || !line.starts_with("| [`") {
            continue;
        }
        // | [`file`](file_source.md) | ...
        let rest = &line["| [`".len()..];
        let name = &rest[..rest.find('`').unwrap()];
        let link = &rest[rest.find("](").unwrap() + 2..];
        let page = &link[..link.find(')').unwrap()];
        let page = page.split('#').next().unwrap();
        rows.push((kind.to_string(), name.to_string(), page.to_string()));
    }
    rows
}

pub fn docs_index_types() -> TypeSet {
    docs_index().into_iter().map(|(k, n, _)| (k, n)).collect()
}

/// The types of the README's "What is here" table (`| sources | `demo`, ... |`).
fn readme_types() -> TypeSet {
    let text = read(&repo().join("README.md"));
    let section = text
        .split("## What is here")
        .nth(1)
        .expect("README.md has a \"What is here\" section");
    let mut set = TypeSet::new();
    for line in section.lines().take_while(|l| !l.starts_with("## ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 3 {
            continue;
        }
        let kind = match cells[1] {
            "sources" => "source",
            "transforms" => "transform",
            "sinks" => "sink",
            _ => continue,
        };
        // Each entry starts with the backticked type: `remap` (VRL), `filter`, ...
        for entry in cells[2].split(", ") {
            let name = entry.trim().trim_start_matches('`');
            let name = &name[..name.find('`').unwrap_or(name.len())];
            set.insert((kind.to_string(), name.to_string()));
        }
    }
    set
}

/// The `(kind, type)` of each options marker of a page.
fn markers(page: &str) -> TypeSet {
    page.lines()
        .filter_map(|l| l.trim().strip_prefix("<!-- options:begin "))
        .filter_map(|l| {
            let (mut kind, mut name) = (None, None);
            for tok in l.trim_end_matches("-->").split_whitespace() {
                match tok.split_once('=') {
                    Some(("kind", k)) => kind = Some(k.to_string()),
                    Some(("type", n)) => name = Some(n.to_string()),
                    _ => {}
                }
            }
            Some((kind?, name?))
        })
        .collect()
}

fn diff(a_name: &str, a: &TypeSet, b_name: &str, b: &TypeSet) -> String {
    let only_a: Vec<_> = a.difference(b).collect();
    let only_b: Vec<_> = b.difference(a).collect();
    format!("only in {a_name}: {only_a:?}\nonly in {b_name}: {only_b:?}")
}

#[test]
fn generated_docs_are_up_to_date() {
    let out = weir()
        .args(["generate-docs", "--check", "--docs-dir"])
        .arg(repo().join("docs"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the generated documentation (docs/schemas/config.schema.json, the options tables of \
         docs/components/*.md) is out of date with the code, or a page lacks its options markers. \
         Run `{REGENERATE}` and commit the result. The check said:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn type_names_agree_between_list_readme_and_docs_index() {
    let listed = listed_types();
    assert!(
        listed.len() >= 30,
        "too few types in `weir list`: {listed:?}"
    );
    let index = docs_index_types();
    assert_eq!(
        listed,
        index,
        "`weir list` and docs/components/README.md disagree:\n{}",
        diff("weir list", &listed, "docs/components/README.md", &index)
    );
    let readme = readme_types();
    assert_eq!(
        listed,
        readme,
        "`weir list` and the \"What is here\" table of README.md disagree:\n{}",
        diff("weir list", &listed, "README.md", &readme)
    );
}

#[test]
fn every_registered_type_has_a_page_with_its_options_table() {
    let dir = repo().join("docs/components");
    let index = docs_index();
    let mut missing = Vec::new();
    for (kind, name, page) in &index {
        let path = dir.join(page);
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if !markers(&text).contains(&(kind.clone(), name.clone())) {
            missing.push(format!(
                "{kind} `{name}`: {} has no `<!-- options:begin type={name} kind={kind} -->` \
                 ... `<!-- options:end -->` block",
                path.display()
            ));
        }
    }
    // And every registered type is in the index (so it has a page).
    let indexed: TypeSet = index
        .iter()
        .map(|(k, n, _)| (k.clone(), n.clone()))
        .collect();
    for (kind, name) in listed_types().difference(&indexed) {
        missing.push(format!(
            "{kind} `{name}` is registered but has no page in docs/components/README.md"
        ));
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}
