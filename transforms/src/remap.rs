//! `remap`: runs a Vector Remap Language (VRL) program on every log event.
//!
//! The program is compiled once when the transform is built, with the same compiler and
//! standard library Vector uses, so Vector `remap` programs run unchanged. Each log's fields
//! are handed to the program in place (no conversion); metrics and traces pass through.
//!
//! ```toml
//! [transforms.parse]
//! type = "remap"
//! inputs = ["in"]
//! source = '''
//! . = parse_json!(.message)
//! .env = "prod"
//! del(.password)
//! '''
//! ```

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use vrl::compiler::runtime::Terminate;
use vrl::compiler::Program;
use weir_pipeline::component::{
    Output, Transform, TransformConfig, TransformContext, TransformOutput,
};
use weir_pipeline::event::{Event, EventBatch, LogEvent, ObjectMap, Value};
use weir_pipeline::finalization::EventStatus;
use weir_pipeline::metrics::ComponentMetrics;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use crate::condition::{compile_program, VrlState};

/// The named output that receives dropped events when `reroute_dropped` is set.
pub const DROPPED_OUTPUT: &str = "dropped";

fn default_true() -> bool {
    true
}

/// Configuration of the `remap` transform.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RemapConfig {
    /// The VRL program, inline. Exactly one of `source` and `file` must be set.
    /// Default: none.
    #[serde(default)]
    pub source: Option<String>,

    /// A file that holds the VRL program. It is read once when the transform is built; a relative
    /// path is relative to the working directory. Exactly one of `source` and `file` must be set.
    /// Default: none.
    #[serde(default)]
    pub file: Option<PathBuf>,

    /// Drop an event when the program fails on it at runtime. When `false`, the event is passed on
    /// **unchanged, as it was before the program ran**. Either way, the error is counted and
    /// logged. Default: false.
    #[serde(default)]
    pub drop_on_error: bool,

    /// Drop an event when the program calls `abort`. When `false`, the event is passed on
    /// unchanged, as it was before the program ran. Default: `true`.
    #[serde(default = "default_true")]
    pub drop_on_abort: bool,

    /// Send events dropped by `drop_on_error` or `drop_on_abort` to the `dropped` output
    /// (read it as `ID.dropped`) instead of discarding them. Each such event is the original
    /// one with a `metadata.dropped` object added: `reason` (`error` or `abort`), `message`
    /// (the VRL error), `component` (this transform's id), `component_type` (`remap`) and
    /// `component_kind` (`transform`). Default: `false`.
    #[serde(default)]
    pub reroute_dropped: bool,
}

impl RemapConfig {
    /// The program text and how to name it in messages.
    fn program_source(&self) -> Result<(String, String), BoxError> {
        match (&self.source, &self.file) {
            (Some(s), None) => Ok((s.clone(), "program".to_string())),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!("cannot read the VRL program `{}`: {e}", path.display())
                })?;
                Ok((text, format!("program in `{}`", path.display())))
            }
            (Some(_), Some(_)) => {
                Err("`source` and `file` are both set: give the VRL program in only one".into())
            }
            (None, None) => Err(
                "no VRL program: set `source` (the program inline) or `file` (a .vrl file)".into(),
            ),
        }
    }
}

impl TransformConfig for RemapConfig {
    fn build(&self, cx: &TransformContext) -> Result<Box<dyn Transform>, BoxError> {
        Ok(Box::new(Remap::new(self, cx)?))
    }

    /// Each batch is transformed on its own (VRL's state is reset for every event).
    fn stateless(&self) -> bool {
        true
    }

    fn input(&self) -> DataType {
        DataType::ALL
    }

    fn outputs(&self) -> Vec<Output> {
        let mut outputs = vec![Output::default_output(DataType::ALL)];
        if self.reroute_dropped {
            outputs.push(Output::named(DROPPED_OUTPUT, DataType::ALL));
        }
        outputs
    }
}

/// Why an event did not come out of the program normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Error,
    Abort,
}

impl Failure {
    fn as_str(self) -> &'static str {
        match self {
            Failure::Error => "error",
            Failure::Abort => "abort",
        }
    }
}

/// The program left something other than an object (or an array of objects) as the event.
struct BadRoot(&'static str);

impl fmt::Display for BadRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the program set the event (`.`) to {}, but it must be an object or an array of objects",
            self.0
        )
    }
}

/// The running `remap` transform.
struct Remap {
    program: Program,
    state: VrlState,
    drop_on_error: bool,
    drop_on_abort: bool,
    reroute_dropped: bool,
    /// Keep a copy of each event's fields before running: only when a failure can happen and
    /// the original must then be passed on (the program edits the event in place).
    keep_original: bool,
    component: Arc<str>,
    metrics: Arc<ComponentMetrics>,
    /// Errors seen in the current batch, reported once per batch.
    errors: u64,
    first_error: Option<String>,
}

impl Remap {
    fn new(config: &RemapConfig, cx: &TransformContext) -> Result<Self, BoxError> {
        let (source, what) = config.program_source()?;
        let program = compile_program(&source, &what, false)?;

        let info = program.info();
        let forward_on_error = !config.drop_on_error || config.reroute_dropped;
        let forward_on_abort = !config.drop_on_abort || config.reroute_dropped;
        // A program that may leave a non-object root fails on such events like on an error.
        let may_break_root = !program
            .final_type_info()
            .state
            .external
            .target_kind()
            .is_object();
        let keep_original = (forward_on_error && (info.fallible || may_break_root))
            || (forward_on_abort && info.abortable);

        Ok(Self {
            program,
            state: VrlState::new(),
            drop_on_error: config.drop_on_error,
            drop_on_abort: config.drop_on_abort,
            reroute_dropped: config.reroute_dropped,
            keep_original,
            component: Arc::clone(&cx.id),
            metrics: Arc::clone(&cx.metrics),
            errors: 0,
            first_error: None,
        })
    }

    fn remap_log(&mut self, mut log: LogEvent, out: &mut TransformOutput, discarded: &mut u64) {
        let original = if self.keep_original {
            Some(log.value().clone())
        } else {
            None
        };
        match self.state.run(&self.program, log.value_mut()) {
            Ok(_) => {
                let bad_root = match log.value() {
                    Value::Object(_) => {
                        out.push(Event::Log(log));
                        return;
                    }
                    Value::Array(items) if items.iter().all(|v| matches!(v, Value::Object(_))) => {
                        None
                    }
                    Value::Array(_) => Some("an array that holds non-objects"),
                    other => Some(kind_name(other)),
                };
                match bad_root {
                    Some(kind) => self.fail(
                        log,
                        original,
                        Failure::Error,
                        &BadRoot(kind),
                        out,
                        discarded,
                    ),
                    None => {
                        let (value, mut metadata) = log.into_parts();
                        let items = match value {
                            Value::Array(items) => items,
                            _ => Vec::new(),
                        };
                        if items.is_empty() {
                            // The program made no event of this one: done.
                            metadata.finalize(EventStatus::Delivered);
                        }
                        let n = items.len();
                        for (i, item) in items.into_iter().enumerate() {
                            // Each event made holds the acknowledgement; the last takes the
                            // original's hold.
                            let md = if i + 1 == n {
                                std::mem::take(&mut metadata)
                            } else {
                                metadata.clone()
                            };
                            out.push(Event::Log(LogEvent::from_value(item, md)));
                        }
                    }
                }
            }
            Err(Terminate::Abort(e)) => {
                self.fail(log, original, Failure::Abort, &e, out, discarded);
            }
            Err(t) => self.fail(log, original, Failure::Error, &t, out, discarded),
        }
    }

    fn fail(
        &mut self,
        mut log: LogEvent,
        original: Option<Value>,
        failure: Failure,
        message: &dyn fmt::Display,
        out: &mut TransformOutput,
        discarded: &mut u64,
    ) {
        if failure == Failure::Error {
            self.errors += 1;
            if self.first_error.is_none() {
                self.first_error = Some(format!("VRL program failed: {message}"));
            }
        }
        let drop = match failure {
            Failure::Error => self.drop_on_error,
            Failure::Abort => self.drop_on_abort,
        };
        if drop && !self.reroute_dropped {
            *discarded += 1;
            // An error is a verdict on this event; an abort is the program's choice: done.
            log.metadata.finalize(match failure {
                Failure::Error => EventStatus::Rejected,
                Failure::Abort => EventStatus::Delivered,
            });
            return;
        }
        if let Some(v) = original {
            *log.value_mut() = v;
        }
        if drop {
            let mut dropped = ObjectMap::new();
            dropped.insert("reason".into(), Value::from(failure.as_str()));
            dropped.insert("message".into(), Value::from(message.to_string()));
            dropped.insert("component".into(), Value::from(&*self.component));
            dropped.insert("component_type".into(), Value::from("remap"));
            dropped.insert("component_kind".into(), Value::from("transform"));
            insert_dropped(&mut log, dropped);
            out.push_named(DROPPED_OUTPUT, Event::Log(log));
        } else {
            out.push(Event::Log(log));
        }
    }
}

/// The VRL name of a value's type.
fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Bytes(_) | Value::String(_) => "string",
        Value::Regex(_) => "regex",
        Value::Integer(_) => "integer",
        Value::Float(_) => "float",
        Value::Boolean(_) => "boolean",
        Value::Timestamp(_) => "timestamp",
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::Null => "null",
    }
}

/// Sets `metadata.dropped` on the event, creating `metadata` if needed.
fn insert_dropped(log: &mut LogEvent, dropped: ObjectMap) {
    if !matches!(log.value(), Value::Object(_)) {
        let old = std::mem::replace(log.value_mut(), Value::Object(ObjectMap::new()));
        log.insert_field("message", old);
    }
    if let Value::Object(root) = log.value_mut() {
        let metadata = root
            .entry("metadata".into())
            .or_insert_with(|| Value::Object(ObjectMap::new()));
        if !matches!(metadata, Value::Object(_)) {
            *metadata = Value::Object(ObjectMap::new());
        }
        if let Value::Object(m) = metadata {
            m.insert("dropped".into(), Value::Object(dropped));
        }
    }
}

impl Transform for Remap {
    fn transform(&mut self, batch: EventBatch, out: &mut TransformOutput) {
        let mut discarded = 0;
        for event in batch {
            match event {
                Event::Log(log) => self.remap_log(log, out, &mut discarded),
                other => out.push(other),
            }
        }
        if discarded > 0 {
            self.metrics.add_discarded(discarded);
        }
        if self.errors > 0 {
            let message = self.first_error.take().unwrap_or_default();
            self.metrics.error("remap", self.errors, &message);
            self.errors = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use weir_pipeline::event::Metric;
    use weir_pipeline::event::{MetricKind, MetricValue};

    use super::*;

    fn ctx() -> TransformContext {
        TransformContext {
            id: Arc::from("t"),
            data_dir: PathBuf::new(),
            metrics: ComponentMetrics::detached("t"),
        }
    }

    fn build(toml_text: &str) -> (Box<dyn Transform>, Arc<ComponentMetrics>) {
        let config: RemapConfig = toml::from_str(toml_text).unwrap();
        let cx = ctx();
        let t = config.build(&cx).unwrap();
        (t, cx.metrics)
    }

    fn build_err(toml_text: &str) -> String {
        let config: RemapConfig = toml::from_str(toml_text).unwrap();
        match config.build(&ctx()) {
            Ok(_) => panic!("expected a build error"),
            Err(e) => e.to_string(),
        }
    }

    fn log(json: &str) -> Event {
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        Event::Log(LogEvent::from_value(Value::from(v), Default::default()))
    }

    fn json(e: &Event) -> serde_json::Value {
        e.to_json_value()
    }

    fn j(s: &str) -> serde_json::Value {
        serde_json::from_str(s).unwrap()
    }

    fn run(t: &mut Box<dyn Transform>, events: Vec<Event>) -> TransformOutput {
        let mut out = TransformOutput::new([DROPPED_OUTPUT.to_string()]);
        t.transform(EventBatch::new(events), &mut out);
        out
    }

    #[test]
    fn parse_json_and_edit_fields() {
        let (mut t, metrics) = build(
            r#"
            source = '''
            . = parse_json!(.message)
            .env = "prod"
            .status = to_int!(.status) + 1
            del(.password)
            .user.name = upcase!(.user.name)
            '''
            "#,
        );
        let out = run(
            &mut t,
            vec![log(
                r#"{"message": "{\"status\": \"200\", \"password\": \"x\", \"user\": {\"name\": \"ann\"}}"}"#,
            )],
        );
        assert_eq!(out.default.len(), 1);
        assert_eq!(
            json(&out.default[0]),
            j(r#"{"status": 201, "env": "prod", "user": {"name": "ANN"}}"#)
        );
        assert!(out.named[DROPPED_OUTPUT].is_empty());
        assert_eq!(metrics.errors_total(), 0);
    }

    #[test]
    fn runtime_error_passes_original_through_and_counts() {
        let (mut t, metrics) = build(
            r#"
            source = '''
            .touched = true
            . = parse_json!(.message)
            '''
            "#,
        );
        let out = run(
            &mut t,
            vec![
                log(r#"{"message": "not json"}"#),
                log(r#"{"message": "{\"a\": 1}"}"#),
            ],
        );
        assert_eq!(out.default.len(), 2);
        // Unchanged: not even the assignment made before the failure.
        assert_eq!(json(&out.default[0]), j(r#"{"message": "not json"}"#));
        assert_eq!(json(&out.default[1]), j(r#"{"a": 1}"#));
        assert_eq!(metrics.errors().get("remap"), Some(&1));
        assert_eq!(metrics.discarded_events(), 0);
    }

    #[test]
    fn drop_on_error_discards_and_counts() {
        let (mut t, metrics) = build(
            r#"
            source = ". = parse_json!(.message)"
            drop_on_error = true
            "#,
        );
        let out = run(
            &mut t,
            vec![
                log(r#"{"message": "nope"}"#),
                log(r#"{"message": "{\"b\": 2}"}"#),
            ],
        );
        assert_eq!(out.default.len(), 1);
        assert_eq!(json(&out.default[0]), j(r#"{"b": 2}"#));
        assert_eq!(metrics.errors().get("remap"), Some(&1));
        assert_eq!(metrics.discarded_events(), 1);
    }

    #[test]
    fn drop_on_error_reroute_dropped_sends_to_dropped_output() {
        let (mut t, metrics) = build(
            r#"
            source = '''
            .x = 1
            . = parse_json!(.message)
            '''
            drop_on_error = true
            reroute_dropped = true
            "#,
        );
        let out = run(&mut t, vec![log(r#"{"message": "nope"}"#)]);
        assert!(out.default.is_empty());
        let dropped = &out.named[DROPPED_OUTPUT];
        assert_eq!(dropped.len(), 1);
        let v = json(&dropped[0]);
        assert_eq!(v["message"], j(r#""nope""#));
        assert!(v.get("x").is_none(), "the original event is rerouted: {v}");
        let meta = &v["metadata"]["dropped"];
        assert_eq!(meta["reason"], "error");
        assert_eq!(meta["component"], "t");
        assert_eq!(meta["component_type"], "remap");
        assert_eq!(meta["component_kind"], "transform");
        let msg = meta["message"].as_str().unwrap();
        assert!(msg.contains("parse_json"), "{msg}");
        assert_eq!(metrics.errors().get("remap"), Some(&1));
        assert_eq!(metrics.discarded_events(), 0);
    }

    #[test]
    fn outputs_include_dropped_only_when_rerouting() {
        let c: RemapConfig = toml::from_str("source = '.a = 1'").unwrap();
        assert_eq!(c.outputs(), vec![Output::default_output(DataType::ALL)]);
        let c: RemapConfig = toml::from_str("source = '.a = 1'\nreroute_dropped = true").unwrap();
        assert_eq!(
            c.outputs(),
            vec![
                Output::default_output(DataType::ALL),
                Output::named("dropped", DataType::ALL)
            ]
        );
    }

    #[test]
    fn abort_drops_by_default() {
        let (mut t, metrics) = build(
            r#"
            source = '''
            if .level == "debug" { abort }
            .seen = true
            '''
            "#,
        );
        let out = run(
            &mut t,
            vec![log(r#"{"level": "debug"}"#), log(r#"{"level": "info"}"#)],
        );
        assert_eq!(out.default.len(), 1);
        assert_eq!(
            json(&out.default[0]),
            j(r#"{"level": "info", "seen": true}"#)
        );
        assert_eq!(metrics.errors_total(), 0);
        assert_eq!(metrics.discarded_events(), 1);
    }

    #[test]
    fn abort_passes_original_when_not_dropping() {
        let (mut t, _) = build(
            r#"
            source = '''
            .changed = true
            if .level == "debug" { abort "no debug" }
            '''
            drop_on_abort = false
            "#,
        );
        let out = run(&mut t, vec![log(r#"{"level": "debug"}"#)]);
        assert_eq!(out.default.len(), 1);
        assert_eq!(json(&out.default[0]), j(r#"{"level": "debug"}"#));
    }

    #[test]
    fn abort_rerouted_with_message() {
        let (mut t, _) = build(
            r#"
            source = 'abort "no thanks"'
            reroute_dropped = true
            "#,
        );
        let out = run(&mut t, vec![log(r#"{"a": 1}"#)]);
        assert!(out.default.is_empty());
        let v = json(&out.named[DROPPED_OUTPUT][0]);
        assert_eq!(
            v,
            j(
                r#"{"a": 1, "metadata": {"dropped": {"reason": "abort", "message": "no thanks",
                "component": "t", "component_type": "remap", "component_kind": "transform"}}}"#
            )
        );
    }

    #[test]
    fn array_of_objects_becomes_several_events() {
        let (mut t, metrics) = build(
            r#"
            source = '''
            . = [{"n": 1}, {"n": 2}, {"n": 3}]
            '''
            "#,
        );
        let out = run(&mut t, vec![log(r#"{"message": "x"}"#)]);
        let got: Vec<_> = out.default.iter().map(json).collect();
        assert_eq!(
            got,
            vec![j(r#"{"n": 1}"#), j(r#"{"n": 2}"#), j(r#"{"n": 3}"#)]
        );
        assert_eq!(metrics.errors_total(), 0);
    }

    #[test]
    fn non_object_root_is_an_error() {
        let (mut t, metrics) = build(
            r#"
            source = '''
            . = .message
            '''
            "#,
        );
        let out = run(
            &mut t,
            vec![log(r#"{"message": "x"}"#), log(r#"{"message": {"o": 1}}"#)],
        );
        assert_eq!(out.default.len(), 2);
        // The first one passes unchanged, the second became its inner object.
        assert_eq!(json(&out.default[0]), j(r#"{"message": "x"}"#));
        assert_eq!(json(&out.default[1]), j(r#"{"o": 1}"#));
        assert_eq!(metrics.errors().get("remap"), Some(&1));
    }

    #[test]
    fn metrics_pass_untouched() {
        let (mut t, _) = build("source = '.a = 1'");
        let m = Metric::new(
            "hits",
            MetricKind::Incremental,
            MetricValue::Counter { value: 2.0 },
        );
        let out = run(&mut t, vec![Event::from(m)]);
        assert_eq!(out.default.len(), 1);
        let Event::Metric(m) = &out.default[0] else {
            panic!("not a metric")
        };
        assert_eq!(m.name, "hits");
    }

    #[test]
    fn variables_and_metadata_do_not_leak_between_events() {
        let (mut t, _) = build(
            r#"
            source = '''
            .had_meta = exists(%seen)
            %seen = true
            '''
            "#,
        );
        let out = run(&mut t, vec![log(r#"{}"#), log(r#"{}"#)]);
        assert_eq!(json(&out.default[0]), j(r#"{"had_meta": false}"#));
        assert_eq!(json(&out.default[1]), j(r#"{"had_meta": false}"#));
    }

    #[test]
    fn compile_error_shows_the_diagnostic() {
        let err = build_err("source = '.a = upcase(.b'");
        assert!(err.contains("invalid VRL program"), "{err}");
        assert!(err.contains(".a = upcase(.b"), "the line is shown: {err}");

        let err = build_err("source = '.a = parse_json(.b)'");
        assert!(err.contains("E100") || err.contains("unhandled"), "{err}");
    }

    #[test]
    fn source_xor_file() {
        assert!(build_err("").contains("no VRL program"));
        let err = build_err("source = '.a = 1'\nfile = 'x.vrl'");
        assert!(err.contains("both set"), "{err}");
        let err = build_err("file = '/nonexistent/weir/x.vrl'");
        assert!(err.contains("cannot read"), "{err}");
    }

    #[test]
    fn program_from_file() {
        let dir = std::env::temp_dir().join(format!("weir-remap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p.vrl");
        std::fs::write(&path, ".from_file = true\n").unwrap();
        let toml_text = format!("file = {:?}", path.display().to_string());
        let (mut t, _) = build(&toml_text);
        let out = run(&mut t, vec![log(r#"{"a": 1}"#)]);
        assert_eq!(json(&out.default[0]), j(r#"{"a": 1, "from_file": true}"#));

        std::fs::write(&path, ".x = \n").unwrap();
        let err = build_err(&toml_text);
        assert!(err.contains("p.vrl"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_option_is_rejected() {
        assert!(toml::from_str::<RemapConfig>("source = '.a = 1'\nsourc = 'x'").is_err());
    }
}
