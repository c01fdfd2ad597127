//! A table of broken configurations: each must give the expected message at the right
//! file:line:col. Loading collects every error; `weir validate` prints them all and fails.

use weir_pipeline::config::{load_str, resolve_graph};

use crate::testkit::full_registry;

fn env(name: &str) -> Option<String> {
    (name == "SET_VAR").then(|| "value".to_string())
}

/// All errors of a config, rendered as `weir validate` prints them.
fn errors_of(text: &str) -> Vec<String> {
    let reg = full_registry();
    match load_str("f.toml", text, &reg, &env) {
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        Ok(config) => match resolve_graph(&config, false) {
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
            Ok(_) => Vec::new(),
        },
    }
}

/// An `elasticsearch` sink without its `inputs` (it has a `dead_letter` output).
const ES: &str = "[sinks.es]\ntype = \"elasticsearch\"\nendpoints = [\"http://127.0.0.1:9\"]\n";

const OK_TAIL: &str = "\n[sinks.out]\ntype = \"console\"\ninputs = [\"in\"]\n";

#[test]
fn every_broken_config_gives_its_message_at_its_place() {
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "typo'd field",
            "[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"console\"\ninput = [\"in\"]\n".into(),
            "f.toml:5:1: sinks.out.input: unknown field `input`, did you mean `inputs`?",
        ),
        (
            "wrong type",
            format!("[sources.in]\ntype = \"stdin\"\nmax_line_bytes = \"big\"\n{OK_TAIL}"),
            "f.toml:3:18: sources.in.max_line_bytes: invalid type: string \"big\", expected usize",
        ),
        (
            "unknown input with suggestion",
            "[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"console\"\ninputs = [\"inn\"]\n".into(),
            "f.toml:5:11: sinks.out.inputs: unknown input `inn`, did you mean `in`?",
        ),
        (
            "cycle",
            format!(
                "[sources.in]\ntype = \"stdin\"\n[transforms.a]\ntype = \"sample\"\ninputs = [\"in\", \"b\"]\nrate = 2\n[transforms.b]\ntype = \"sample\"\ninputs = [\"a\"]\nrate = 2\n{OK_TAIL}"
            ),
            "f.toml:3:13: transforms.a.inputs: cycle in the pipeline between transforms `a`, `b`",
        ),
        (
            "metrics sink fed logs",
            "[sources.in]\ntype = \"stdin\"\n[sinks.m]\ntype = \"metrics_only\"\ninputs = [\"in\"]\n".into(),
            "f.toml:5:11: sinks.m.inputs: sink `m` (metrics_only) accepts only metrics, but its input `in` produces logs",
        ),
        (
            "unset environment variable",
            "[sources.in]\ntype = \"stdin\"\n[sinks.f]\ntype = \"file\"\ninputs = [\"in\"]\npath = \"${NOPE}/x.log\"\n".to_string(),
            "f.toml:6:9: environment variable `NOPE` is not set",
        ),
        (
            "required environment variable",
            format!("data_dir = \"${{DATA:?set DATA to the state directory}}\"\n[sources.in]\ntype = \"stdin\"\n{OK_TAIL}"),
            "f.toml:1:13: environment variable `DATA` is required: set DATA to the state directory",
        ),
        (
            "duplicate id across sections",
            format!("[sources.in]\ntype = \"stdin\"\n[transforms.in]\ntype = \"sample\"\ninputs = [\"in\"]\nrate = 2\n{OK_TAIL}"),
            "f.toml:3:13: transforms.in: duplicate component id `in` (already defined at f.toml:1:10)",
        ),
        (
            "unknown component type",
            "[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"consol\"\ninputs = [\"in\"]\n".into(),
            "f.toml:4:8: sinks.out.type: unknown sink type `consol`, did you mean `console`?",
        ),
        (
            "missing type",
            format!("[sources.in]\nmax_line_bytes = 10\n{OK_TAIL}"),
            "f.toml:1:10: sources.in.type: missing field `type`",
        ),
        (
            "invalid TOML",
            "[sources.in]\ntype = \"stdin\n".into(),
            "f.toml:2:",
        ),
        (
            "unknown top-level key",
            "[sources.in]\ntype = \"stdin\"\n[sink.out]\ntype = \"console\"\n".to_string(),
            "f.toml:3:2: sink: unknown top-level key `sink`, did you mean `sinks`?",
        ),
        (
            "unknown named output",
            "[sources.in]\ntype = \"stdin\"\n[transforms.router]\ntype = \"route\"\ninputs = [\"in\"]\nroute.errors = '.level == \"error\"'\n[sinks.out]\ntype = \"console\"\ninputs = [\"router.eror\"]\n".to_string(),
            "f.toml:9:11: sinks.out.inputs: `router` has no output named `eror`, did you mean `router.errors`?",
        ),
        (
            "empty inputs",
            "[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"console\"\ninputs = []\n".into(),
            "f.toml:5:10: sinks.out.inputs: `inputs` is empty",
        ),
        (
            "buffer option typo",
            "[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"console\"\ninputs = [\"in\"]\nbuffer.max_event = 10\n".to_string(),
            "sinks.out.buffer.max_event: unknown field `max_event`, did you mean `max_events`?",
        ),
        (
            "bad enum value",
            "[sources.in]\ntype = \"stdin\"\n[sinks.out]\ntype = \"console\"\ninputs = [\"in\"]\nbuffer.when_full = \"drop\"\n".to_string(),
            "unknown variant `drop`, expected `block` or `drop_newest`",
        ),
        (
            "unknown codec (the registered ones are listed)",
            "[sources.in]\ntype = \"stdin\"\ndecoding.codec = \"hubble_json\"\n[sinks.out]\ntype = \"console\"\ninputs = [\"in\"]\n".to_string(),
            "f.toml:3:18: sources.in.decoding.codec: unknown codec `hubble_json`, expected one of `bytes`, `json`, `logfmt`, `syslog`, `hubble_jsonpb`",
        ),
        (
            "two readers of stdin",
            "[sources.in]\ntype = \"stdin\"\n[sources.in2]\ntype = \"stdin\"\n[sinks.out]\ntype = \"console\"\ninputs = [\"in*\"]\n".to_string(),
            "f.toml:3:10: sources.in2: standard input is already used by sources.in",
        ),
        (
            "VRL program that does not compile",
            "[sources.in]\ntype = \"stdin\"\n[transforms.p]\ntype = \"remap\"\ninputs = [\"in\"]\nsource = \". = parse_jsn!(.message)\"\n[sinks.out]\ntype = \"console\"\ninputs = [\"p\"]\n".to_string(),
            "f.toml:3:13: transforms.p: ",
        ),
        (
            "a sink used as an input",
            "[sources.in]\ntype = \"stdin\"\n[sinks.a]\ntype = \"console\"\ninputs = [\"in\"]\n[sinks.b]\ntype = \"console\"\ninputs = [\"a\"]\n".to_string(),
            "f.toml:8:11: sinks.b.inputs: `a` is a sink and has no output to read from",
        ),
        (
            "route read without naming an output",
            "[sources.in]\ntype = \"stdin\"\n[transforms.router]\ntype = \"route\"\ninputs = [\"in\"]\nroute.errors = '.level == \"error\"'\n[sinks.out]\ntype = \"console\"\ninputs = [\"router\"]\n".to_string(),
            "f.toml:9:11: sinks.out.inputs: `router` has only named outputs: read one of `router._unmatched`, `router.errors`",
        ),
        (
            "acknowledgements on a source that cannot replay",
            format!("[sources.in]\ntype = \"stdin\"\nacknowledgements = true\n{OK_TAIL}"),
            "f.toml:1:10: sources.in.acknowledgements: source type `stdin` cannot hold back its input",
        ),
        (
            "a cycle through a sink's output",
            format!("[sources.in]\ntype = \"stdin\"\n{ES}inputs = [\"in\", \"t\"]\n[transforms.t]\ntype = \"sample\"\ninputs = [\"es.dead_letter\"]\nrate = 2\n"),
            "transforms.t.inputs: cycle in the pipeline between `es` (sink), `t` (transform): a component cannot read its own output",
        ),
        (
            "a sink output that does not exist",
            format!("[sources.in]\ntype = \"stdin\"\n{ES}inputs = [\"in\"]\n[sinks.out]\ntype = \"console\"\ninputs = [\"es.dead_letters\"]\n"),
            "f.toml:9:11: sinks.out.inputs: `es` has no output named `dead_letters`, did you mean `es.dead_letter`?",
        ),
        (
            "a sink with outputs read without naming one",
            format!("[sources.in]\ntype = \"stdin\"\n{ES}inputs = [\"in\"]\n[sinks.out]\ntype = \"console\"\ninputs = [\"es\"]\n"),
            "f.toml:9:11: sinks.out.inputs: `es` has only named outputs: read one of `es.dead_letter`",
        ),
        (
            "dead letters (logs) into a metrics sink",
            format!("[sources.in]\ntype = \"stdin\"\n{ES}inputs = [\"in\"]\n[sinks.m]\ntype = \"metrics_only\"\ninputs = [\"es.dead_letter\"]\n"),
            "f.toml:9:11: sinks.m.inputs: sink `m` (metrics_only) accepts only metrics, but its input `es.dead_letter` produces logs",
        ),
    ];
    let mut failures = Vec::new();
    for (name, text, expected) in &cases {
        let errors = errors_of(text);
        if !errors.iter().any(|e| e.contains(expected)) {
            failures.push(format!("{name}: expected `{expected}`, got {errors:#?}"));
        }
    }
    assert!(cases.len() >= 15);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn all_errors_are_reported_at_once() {
    let text = "[sources.in]\ntype = \"stdin\"\nmax_line_bytes = \"x\"\n[transforms.t]\ntype = \"sampel\"\ninputs = [\"in\"]\n[sinks.out]\ntype = \"console\"\ninputs = [\"in\"]\ntarget = \"stdot\"\n";
    let errors = errors_of(text);
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(errors[0].starts_with("f.toml:3:18: sources.in.max_line_bytes"));
    assert!(errors[1].contains("did you mean `sample`?"));
    assert!(errors[2].starts_with("f.toml:10:10: sinks.out.target"));
}

#[test]
fn weir_validate_prints_every_error_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let bad = crate::harness::write_config(
        dir.path(),
        "bad.toml",
        "[sources.in]\ntype = \"stdinn\"\n[sinks.out]\ntype = \"console\"\ninputs = [\"nope\"]\n",
    );
    let bad2 = crate::harness::write_config(
        dir.path(),
        "bad2.toml",
        "[sinks.x]\ntype = \"console\"\ninput = [\"a\"]\n",
    );
    let out = crate::harness::weir()
        .args(["validate", "--no-environment"])
        .arg(&bad)
        .arg(&bad2)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    let b = bad.display();
    assert!(
        stderr.contains(&format!(
            "{b}:2:8: sources.in.type: unknown source type `stdinn`, did you mean `stdin`?"
        )),
        "{stderr}"
    );
    let b2 = bad2.display();
    assert!(
        stderr.contains(&format!(
            "{b2}:3:1: sinks.x.input: unknown field `input`, did you mean `inputs`?"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("errors found"), "{stderr}");
}

/// A sink's output is read when it is named, and is not matched by a pattern (so `*` does
/// not start reading dead letters).
#[test]
fn a_sink_output_is_read_by_name_only() {
    let text = format!(
        "[sources.in]\ntype = \"stdin\"\n{ES}inputs = [\"in\"]\n[sinks.all]\ntype = \"console\"\ninputs = [\"*\"]\n[sinks.dead]\ntype = \"console\"\ninputs = [\"es.dead_letter\"]\n"
    );
    let config = load_str("f.toml", &text, &full_registry(), &env).unwrap();
    let graph = resolve_graph(&config, false).unwrap_or_else(|e| panic!("{e}"));
    let inputs =
        |id: &str| -> Vec<String> { graph.inputs[id].iter().map(|o| o.to_string()).collect() };
    assert_eq!(inputs("all"), vec!["in"]);
    assert_eq!(inputs("dead"), vec!["es.dead_letter"]);
}
