//! `weir test`: the unit tests written in a configuration (`[[tests]]`).

use crate::harness::{weir, write_config};

/// A pipeline (stdin -> parse -> route -> sinks) whose tests are appended by each case.
const PIPELINE: &str = r#"
[api]
enabled = false

[sources.in]
type = "stdin"

[transforms.parse]
type = "remap"
inputs = ["in"]
source = '''
. = parse_json!(.message)
.service = downcase(string!(.service))
'''

[transforms.tag]
type = "remap"
inputs = ["parse"]
source = '.seen_by = "weir"'

[transforms.split]
type = "route"
inputs = ["tag"]
route.errors = '.status >= 500'

[sinks.errors]
type = "console"
inputs = ["split.errors"]

[sinks.rest]
type = "blackhole"
inputs = ["split._unmatched"]
"#;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn weir_test(tests: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "p.toml", &format!("{PIPELINE}{tests}"));
    let out = weir().arg("test").arg(&cfg).output().unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// One passing and one failing test: exit 1, each named with its outcome, and the failure
/// shows the assertion's message and the event that came out, as JSON.
#[test]
fn one_passing_one_failing_test() {
    let r = weir_test(
        r#"
[[tests]]
name = "service is lowercased"
[[tests.inputs]]
insert_at = "parse"
type = "raw"
value = '{"service": "API", "status": 200}'
[[tests.outputs]]
extract_from = "parse"
[[tests.outputs.conditions]]
type = "vrl"
source = 'assert_eq!(.service, "api")'

[[tests]]
name = "status is doubled"
[[tests.inputs]]
insert_at = "parse"
type = "log"
log_fields.message = '{"service": "db", "status": 200}'
[[tests.outputs]]
extract_from = "parse"
[[tests.outputs.conditions]]
type = "vrl"
source = 'assert_eq!(.status, 400, "the status was not doubled")'
"#,
    );
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout.contains("test service is lowercased ... passed"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("test status is doubled ... failed"),
        "{}",
        r.stdout
    );
    let failure = r
        .stdout
        .split("--- status is doubled ---")
        .nth(1)
        .unwrap_or_else(|| panic!("no failure report in:\n{}", r.stdout));
    assert!(
        failure.contains("event 1: the status was not doubled"),
        "{}",
        r.stdout
    );
    assert!(
        failure.contains(r#"{"service":"db","status":200}"#),
        "the event that came out is shown: {}",
        r.stdout
    );
    assert!(
        r.stdout.contains("test result: FAILED. 1 passed; 1 failed"),
        "{}",
        r.stdout
    );
}

/// Through a remap chain and a route's named output; `no_outputs_from` a route that must
/// stay silent; a list in `extract_from`; a VRL-built input. All pass: exit 0.
#[test]
fn a_remap_chain_and_a_named_route_output() {
    let r = weir_test(
        r#"
[[tests]]
name = "server errors are routed"
no_outputs_from = ["split._unmatched"]
[[tests.inputs]]
insert_at = "parse"
value = '{"service": "Web", "status": 503}'
[[tests.inputs]]
insert_at = "tag"
type = "vrl"
source = '.service = "direct"; .status = 500'
[[tests.outputs]]
extract_from = "split.errors"
[[tests.outputs.conditions]]
type = "vrl"
source = '''
assert_eq!(.service, "web")
assert_eq!(.seen_by, "weir")
'''
[[tests.outputs.conditions]]
source = '.service == "direct" && .seen_by == "weir"'
[[tests.outputs]]
extract_from = ["split.errors", "tag"]

[[tests]]
name = "the rest is unmatched"
no_outputs_from = ["split.errors"]
[[tests.inputs]]
insert_at = "parse"
value = '{"service": "Web", "status": 200}'
[[tests.outputs]]
extract_from = "split._unmatched"
[[tests.outputs.conditions]]
source = 'assert_eq!(.status, 200)'
"#,
    );
    assert_eq!(r.code, Some(0), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("test server errors are routed ... passed"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("test the rest is unmatched ... passed"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("test result: ok. 2 passed; 0 failed"),
        "{}",
        r.stdout
    );
}

/// A named output that stays empty, and one that must stay silent but does not: both are
/// failures that say which output; the errors the transforms counted are listed.
#[test]
fn silent_and_empty_outputs_are_reported() {
    let r = weir_test(
        r#"
[[tests]]
name = "wrongly expects an error"
no_outputs_from = ["split"]
[[tests.inputs]]
insert_at = "parse"
value = '{"service": "x", "status": 200}'
[[tests.inputs]]
insert_at = "parse"
value = 'not json'
[[tests.outputs]]
extract_from = "split.errors"
"#,
    );
    assert_eq!(r.code, Some(1), "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("outputs[0]: no event came out of split.errors"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("2 events came out of `split`"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("  parse: 1 remap\n  split: 1 condition\n"),
        "{}",
        r.stdout
    );
}

/// A windowed transform is flushed at the end of the test: what its window holds comes out.
#[test]
fn a_windowed_transform_is_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "p.toml",
        r#"
[api]
enabled = false
[sources.in]
type = "stdin"
decoding.codec = "json"
[transforms.count]
type = "log_to_metric"
inputs = ["in"]
[[transforms.count.metrics]]
type = "counter"
field = "status"
name = "responses_total"
[transforms.window]
type = "aggregate"
inputs = ["count"]
interval_secs = 60
[sinks.out]
type = "console"
inputs = ["window"]

[[tests]]
name = "three responses in one window"
[[tests.inputs]]
insert_at = "count"
type = "log"
log_fields = { status = 200 }
[[tests.inputs]]
insert_at = "count"
type = "log"
log_fields = { status = 500 }
[[tests.inputs]]
insert_at = "count"
type = "log"
log_fields = { status = 200 }
[[tests.outputs]]
extract_from = "window"
[[tests.outputs.conditions]]
source = 'assert_eq!(.name, "responses_total"); assert_eq!(.counter.value, 3.0)'
"#,
    );
    let out = weir().arg("test").arg(&cfg).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("test three responses in one window ... passed"),
        "{stdout}"
    );
}

/// A test naming an unknown transform, an unknown output and a source: configuration errors
/// (exit 78) at the value's file:line:col, with a suggestion; nothing runs.
#[test]
fn a_test_naming_an_unknown_component_is_a_located_error() {
    let r = weir_test(
        r#"
[[tests]]
name = "typos"
[[tests.inputs]]
insert_at = "prase"
value = "x"
[[tests.inputs]]
insert_at = "in"
value = "x"
[[tests.outputs]]
extract_from = "split.erors"
[[tests.outputs]]
extract_from = "split"
[[tests.outputs.conditions]]
source = '.a =='
"#,
    );
    assert_eq!(r.code, Some(78), "{}\n{}", r.stdout, r.stderr);
    assert!(!r.stdout.contains("test typos"), "{}", r.stdout);
    // PIPELINE has 38 lines (it starts with a newline); the tests start after it.
    let line = |n: usize| format!("p.toml:{}:", PIPELINE.lines().count() + n);
    let expect = [
        format!(
            "{}13: tests[\"typos\"].inputs[0].insert_at: unknown transform `prase`, did you mean `parse`?",
            line(5)
        ),
        format!(
            "{}13: tests[\"typos\"].inputs[1].insert_at: `in` is a source: a test feeds its events to a transform (sources are not run)",
            line(8)
        ),
        format!(
            "{}16: tests[\"typos\"].outputs[0].extract_from: `split` has no output named `erors`, did you mean `split.errors`?",
            line(11)
        ),
    ];
    for e in &expect {
        assert!(
            r.stderr.contains(e.as_str()),
            "missing {e}\nin:\n{}",
            r.stderr
        );
    }
    assert!(
        r.stderr.contains(&format!(
            "{}16: tests[\"typos\"].outputs[1].extract_from: `split` has only named outputs: read one of `split._unmatched`, `split.errors`",
            line(13)
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!(
            "{}10: tests[\"typos\"].outputs[1].conditions[0].source: invalid VRL condition",
            line(15)
        )),
        "{}",
        r.stderr
    );
}

/// `weir validate` and `weir run` ignore the tests; a malformed test is still an error at
/// its place, for every command.
#[test]
fn validate_ignores_tests_but_not_malformed_ones() {
    let dir = tempfile::tempdir().unwrap();
    let ok = write_config(
        dir.path(),
        "ok.toml",
        &format!(
            "{PIPELINE}\n[[tests]]\nname = \"t\"\n[[tests.inputs]]\ninsert_at = \"nowhere\"\nvalue = \"x\"\n[[tests.outputs]]\nextract_from = \"nowhere\"\n"
        ),
    );
    let out = weir()
        .args(["validate", "--no-environment"])
        .arg(&ok)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = write_config(
        dir.path(),
        "bad.toml",
        &format!("{PIPELINE}\n[[tests]]\nname = \"t\"\n[[tests.inputs]]\ninsert_at = \"parse\"\nvalu = \"x\"\n"),
    );
    let out = weir()
        .args(["validate", "--no-environment"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown field `valu`, did you mean `value`?"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("bad.toml:{}:1", PIPELINE.lines().count() + 6)),
        "{stderr}"
    );
}
