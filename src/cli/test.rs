//! `weir test FILE...`: runs the unit tests of a configuration (`[[tests]]`).
//!
//! The files are loaded and checked as one pipeline (as `weir run -c a -c b` would), then each
//! test runs on its own fresh instances of the transforms: no source or sink is built or
//! started. A test's inputs are fed to their `insert_at` transform; each transform downstream
//! of them, in the graph's order, gets everything its inputs produced in one batch and is then
//! flushed (so windowed transforms emit what they hold); what leaves every output is kept, and
//! the test's `outputs` and `no_outputs_from` are checked against it.
//!
//! Output: `test NAME ... passed` (or `failed`) per test, then for each failure what differed
//! (the condition's message, the events that came out as JSON). Exit: 0 when all pass, 1
//! when one fails, 78 for a configuration error (including a test naming an unknown
//! component).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::Arc;

use weir_pipeline::component::{Transform, TransformContext, TransformOutput};
use weir_pipeline::config::{
    suggest, Config, ConfigError, ConfigErrors, Graph, Located, OutputId, TestInputType, UnitTest,
};
use weir_pipeline::event::{Event, EventBatch, EventMetadata, LogEvent, Value};
use weir_pipeline::finalization::EventStatus;
use weir_pipeline::metrics::ComponentMetrics;
use weir_transforms::unit_test::{event_from_vrl, TestCondition};

use super::{load_graph, print_errors};

/// Loads `files` as one pipeline, runs its tests, prints the results.
pub fn test(files: &[PathBuf]) -> u8 {
    let (config, graph) = match load_graph(files) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    if config.tests.is_empty() {
        eprintln!(
            "error: no tests in {}: add a `[[tests]]` table",
            names.join(" + ")
        );
        return crate::exit::CONFIG;
    }
    let plans = match plan(&config, &graph) {
        Ok(p) => p,
        Err(e) => {
            print_errors(&e);
            return crate::exit::CONFIG;
        }
    };

    println!(
        "running {} test{} from {}",
        plans.len(),
        if plans.len() == 1 { "" } else { "s" },
        names.join(" + ")
    );
    let mut failures = Vec::new();
    for mut p in plans {
        let result = run(&config, &graph, &mut p);
        match result {
            Ok(()) => println!("test {} ... passed", p.test.name),
            Err(why) => {
                println!("test {} ... failed", p.test.name);
                failures.push((p.test.name.clone(), why));
            }
        }
    }
    let total = config.tests.len();
    if !failures.is_empty() {
        println!("\nfailures:");
        for (name, why) in &failures {
            println!("\n--- {name} ---\n{}", why.trim_end());
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failures.is_empty() { "ok" } else { "FAILED" },
        total - failures.len(),
        failures.len()
    );
    if failures.is_empty() {
        crate::exit::OK
    } else {
        crate::exit::FAILED
    }
}

/// One test, checked against the graph and compiled.
struct Plan<'c> {
    test: &'c UnitTest,
    /// The input events, with the transform each is fed to.
    inputs: Vec<(String, Value)>,
    /// Per `[[tests.outputs]]`: the outputs read, and the compiled conditions.
    outputs: Vec<PlannedOutput>,
    /// The `no_outputs_from` entries, each with the outputs it stands for.
    silent: Vec<(String, Vec<OutputId>)>,
}

/// One `[[tests.outputs]]` entry, resolved and compiled.
struct PlannedOutput {
    /// The outputs read.
    ids: Vec<OutputId>,
    /// The conditions, each with its source (for messages).
    conditions: Vec<(String, TestCondition)>,
}

/// Where a test's error is reported: the value's place, else the test's.
fn error_at<T>(test: &UnitTest, at: &Located<T>, field: String, message: String) -> ConfigError {
    let mut e = ConfigError::new(message)
        .component(format!("tests[{:?}]", test.name))
        .field(field);
    e.location = at.location.clone().or_else(|| test.location.clone());
    e
}

/// Checks what each test names and compiles its programs. Every error of every test is
/// reported at once.
fn plan<'c>(config: &'c Config, graph: &Graph) -> Result<Vec<Plan<'c>>, ConfigErrors> {
    let mut errors = Vec::new();
    let mut plans = Vec::new();
    let mut seen = BTreeSet::new();
    for test in &config.tests {
        let mut p = Plan {
            test,
            inputs: Vec::new(),
            outputs: Vec::new(),
            silent: Vec::new(),
        };
        let who = format!("tests[{:?}]", test.name);
        if !seen.insert(test.name.as_str()) {
            let mut e = ConfigError::new(format!("two tests are named {:?}", test.name))
                .component(&who)
                .field("name");
            e.location = test.location.clone();
            errors.push(e);
        }
        if test.all_inputs().next().is_none() {
            let mut e = ConfigError::new(
                "a test needs at least one input: add `[[tests.inputs]]` with `insert_at`",
            )
            .component(&who);
            e.location = test.location.clone();
            errors.push(e);
        }
        if test.outputs.is_empty() && test.no_outputs_from.is_empty() {
            let mut e = ConfigError::new(
                "a test checks nothing: add `[[tests.outputs]]` (with `extract_from`) or `no_outputs_from`",
            )
            .component(&who);
            e.location = test.location.clone();
            errors.push(e);
        }
        let field_name = |i: usize| {
            if test.input.is_some() {
                if i == 0 {
                    "input".to_string()
                } else {
                    format!("inputs[{}]", i - 1)
                }
            } else {
                format!("inputs[{i}]")
            }
        };
        for (i, input) in test.all_inputs().enumerate() {
            let field = field_name(i);
            let id = input.insert_at.value.as_str();
            if let Err(msg) = transform_named(config, id) {
                errors.push(error_at(
                    test,
                    &input.insert_at,
                    format!("{field}.insert_at"),
                    msg,
                ));
            }
            let event = match input.kind {
                TestInputType::Raw => match &input.value {
                    Some(v) => {
                        let mut log = LogEvent::default();
                        log.insert_field("message", v.as_str());
                        Ok(log.value().clone())
                    }
                    None => Err("`type = \"raw\"` needs `value` (the log's `message`)".into()),
                },
                TestInputType::Log => match &input.log_fields {
                    Some(_) => input.log_fields_value(),
                    None => Err("`type = \"log\"` needs `log_fields`".into()),
                },
                TestInputType::Vrl => match &input.source {
                    Some(s) => event_from_vrl(&s.value),
                    None => Err("`type = \"vrl\"` needs `source` (a VRL program)".into()),
                },
            };
            let extra = match input.kind {
                TestInputType::Raw => [
                    ("log_fields", input.log_fields.is_some()),
                    ("source", input.source.is_some()),
                ],
                TestInputType::Log => [
                    ("value", input.value.is_some()),
                    ("source", input.source.is_some()),
                ],
                TestInputType::Vrl => [
                    ("value", input.value.is_some()),
                    ("log_fields", input.log_fields.is_some()),
                ],
            };
            for (key, set) in extra {
                if set {
                    errors.push(error_at(
                        test,
                        &input.insert_at,
                        format!("{field}.{key}"),
                        format!("`{key}` does not apply to an input of this `type`"),
                    ));
                }
            }
            match event {
                Ok(v) => p.inputs.push((id.to_string(), v)),
                Err(msg) => {
                    let at = input.source.as_ref().unwrap_or(&input.insert_at);
                    errors.push(error_at(test, at, field, msg));
                }
            }
        }
        for (i, output) in test.outputs.iter().enumerate() {
            let mut ids = Vec::new();
            for name in output.extract_from.value.names() {
                match output_named(config, graph, name, false) {
                    Ok(mut o) => ids.append(&mut o),
                    Err(msg) => errors.push(error_at(
                        test,
                        &output.extract_from,
                        format!("outputs[{i}].extract_from"),
                        msg,
                    )),
                }
            }
            let mut conditions = Vec::new();
            for (j, c) in output.conditions.iter().enumerate() {
                match TestCondition::compile(&c.source.value) {
                    Ok(compiled) => conditions.push((c.source.value.trim().to_string(), compiled)),
                    Err(msg) => errors.push(error_at(
                        test,
                        &c.source,
                        format!("outputs[{i}].conditions[{j}].source"),
                        msg,
                    )),
                }
            }
            p.outputs.push(PlannedOutput { ids, conditions });
        }
        for (i, n) in test.no_outputs_from.iter().enumerate() {
            match output_named(config, graph, &n.value, true) {
                Ok(ids) => p.silent.push((n.value.clone(), ids)),
                Err(msg) => errors.push(error_at(test, n, format!("no_outputs_from[{i}]"), msg)),
            }
        }
        plans.push(p);
    }
    if errors.is_empty() {
        Ok(plans)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// `Ok` when `id` is a transform; else what it is.
fn transform_named(config: &Config, id: &str) -> Result<(), String> {
    if config.transforms.contains_key(id) {
        return Ok(());
    }
    if config.sources.contains_key(id) {
        return Err(format!(
            "`{id}` is a source: a test feeds its events to a transform (sources are not run)"
        ));
    }
    if config.sinks.contains_key(id) {
        return Err(format!(
            "`{id}` is a sink: a test feeds its events to a transform (sinks are not run)"
        ));
    }
    let mut msg = format!("unknown transform `{id}`");
    match suggest(id, config.transforms.keys().map(String::as_str)) {
        Some(s) => msg.push_str(&format!(", did you mean `{s}`?")),
        None if config.transforms.is_empty() => msg.push_str(": the pipeline has no transforms"),
        None => msg.push_str(&format!(
            "; the transforms are {}",
            config
                .transforms
                .keys()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
    Err(msg)
}

/// The outputs `name` stands for: `id.output`, or `id`: a transform's default output, or
/// with `every` all of its outputs (`no_outputs_from`).
fn output_named(
    config: &Config,
    graph: &Graph,
    name: &str,
    every: bool,
) -> Result<Vec<OutputId>, String> {
    let of = |id: &str| -> Vec<OutputId> {
        graph
            .outputs
            .keys()
            .filter(|o| o.component == id)
            .cloned()
            .collect()
    };
    if config.transforms.contains_key(name) {
        let all = of(name);
        if every && !all.is_empty() {
            return Ok(all);
        }
        if let Some(default) = all.iter().find(|o| o.output.is_none()) {
            return Ok(vec![default.clone()]);
        }
        let names: Vec<String> = all.iter().map(|o| format!("`{o}`")).collect();
        return Err(format!(
            "`{name}` has only named outputs: read one of {}",
            names.join(", ")
        ));
    }
    if let Some((id, output)) = name.split_once('.') {
        if config.transforms.contains_key(id) {
            let all = of(id);
            if let Some(o) = all.iter().find(|o| o.output.as_deref() == Some(output)) {
                return Ok(vec![o.clone()]);
            }
            let names: Vec<String> = all.iter().map(ToString::to_string).collect();
            let mut msg = format!("`{id}` has no output named `{output}`");
            match suggest(name, names.iter().map(String::as_str)) {
                Some(s) => msg.push_str(&format!(", did you mean `{s}`?")),
                None => msg.push_str(&format!("; its outputs are {}", names.join(", "))),
            }
            return Err(msg);
        }
        return transform_named(config, id).map(|_| Vec::new());
    }
    transform_named(config, name).map(|_| Vec::new())
}

/// Runs one test; `Err` says what differed.
fn run(config: &Config, graph: &Graph, plan: &mut Plan<'_>) -> Result<(), String> {
    let (mut emitted, errors) = match feed(config, graph, &plan.inputs) {
        Ok(e) => e,
        Err(e) => return Err(format!("{e}\n")),
    };
    let mut report = String::new();
    for (i, PlannedOutput { ids, conditions }) in plan.outputs.iter_mut().enumerate() {
        let from = ids
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let events: Vec<&Event> = ids
            .iter()
            .filter_map(|o| emitted.get(o))
            .flatten()
            .collect();
        if events.is_empty() {
            let _ = writeln!(report, "outputs[{i}]: no event came out of {from}");
            continue;
        }
        let n = conditions.len();
        let mut failed = Vec::new();
        for (j, (source, condition)) in conditions.iter_mut().enumerate() {
            let mut why = Vec::new();
            let met = events.iter().any(|e| {
                let mut value = fields(e);
                match condition.check(&mut value) {
                    Ok(()) => true,
                    Err(msg) => {
                        why.push(msg);
                        false
                    }
                }
            });
            if !met {
                failed.push((j, source.as_str(), why));
            }
        }
        if failed.is_empty() {
            continue;
        }
        let _ = writeln!(
            report,
            "outputs[{i}] ({from}): {} of {} condition{} not met by any of the {} event{}:",
            failed.len(),
            n,
            if n == 1 { "" } else { "s" },
            events.len(),
            if events.len() == 1 { "" } else { "s" },
        );
        for (j, source, why) in failed {
            let _ = writeln!(report, "  condition[{j}]: {}", one_line(source));
            for (k, w) in why.iter().enumerate() {
                let _ = writeln!(report, "    event {}: {}", k + 1, one_line(w));
            }
        }
        let _ = writeln!(report, "  events that came out of {from} (as JSON):");
        for e in &events {
            let _ = writeln!(report, "    {}", e.to_json_value());
        }
    }
    for (name, ids) in &plan.silent {
        let events: Vec<&Event> = ids
            .iter()
            .filter_map(|o| emitted.get(o))
            .flatten()
            .collect();
        if !events.is_empty() {
            let _ = writeln!(
                report,
                "no_outputs_from: {} event{} came out of `{name}` (as JSON):",
                events.len(),
                if events.len() == 1 { "" } else { "s" }
            );
            for e in &events {
                let _ = writeln!(report, "    {}", e.to_json_value());
            }
        }
    }
    // The test's events end here.
    for events in emitted.values_mut() {
        EventBatch::new(std::mem::take(events)).finalize(EventStatus::Delivered);
    }
    if !report.is_empty() && !errors.is_empty() {
        let _ = writeln!(
            report,
            "errors counted by the transforms during the test (logged above):"
        );
        for (id, kinds) in errors {
            let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
            let _ = writeln!(report, "  {id}: {}", kinds.join(", "));
        }
    }
    if report.is_empty() {
        Ok(())
    } else {
        Err(report)
    }
}

/// What a condition sees: a log's fields, a metric's or span's JSON form.
fn fields(e: &Event) -> Value {
    match e {
        Event::Log(l) => l.value().clone(),
        other => Value::from(other.to_json_value()),
    }
}

/// A message on one line (VRL diagnostics span several).
fn one_line(s: &str) -> String {
    let lines: Vec<&str> = s
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect();
    lines.join(" / ")
}

/// What left every output, and the errors each transform counted (by kind).
type Fed = (
    BTreeMap<OutputId, Vec<Event>>,
    Vec<(String, BTreeMap<&'static str, u64>)>,
);

/// Feeds the inputs to fresh instances of the transforms downstream of them, in the graph's
/// order, flushing each after its input.
fn feed(config: &Config, graph: &Graph, inputs: &[(String, Value)]) -> Result<Fed, String> {
    let consumers = graph.consumers();
    // The transforms the inputs reach.
    let mut reached: BTreeSet<&str> = BTreeSet::new();
    let mut todo: Vec<&str> = inputs.iter().map(|(id, _)| id.as_str()).collect();
    while let Some(id) = todo.pop() {
        if !config.transforms.contains_key(id) || !reached.insert(id) {
            continue;
        }
        for (o, cs) in &consumers {
            if o.component == id {
                todo.extend(cs.iter().map(String::as_str));
            }
        }
    }
    let mut queues: BTreeMap<&str, Vec<Event>> = BTreeMap::new();
    for (id, value) in inputs {
        queues
            .entry(id.as_str())
            .or_default()
            .push(Event::Log(LogEvent::from_value(
                value.clone(),
                EventMetadata::new(None),
            )));
    }
    let mut emitted: BTreeMap<OutputId, Vec<Event>> = BTreeMap::new();
    let mut errors = Vec::new();
    for id in &graph.transform_order {
        if !reached.contains(id.as_str()) {
            continue;
        }
        let Some(entry) = config.transforms.get(id) else {
            continue;
        };
        let metrics = ComponentMetrics::detached(id);
        let cx = TransformContext {
            id: Arc::from(id.as_str()),
            data_dir: config.data_dir.clone(),
            metrics: Arc::clone(&metrics),
        };
        let mut transform: Box<dyn Transform> = entry
            .config
            .build(&cx)
            .map_err(|e| format!("transform `{id}` failed to build: {e}"))?;
        let mut out =
            TransformOutput::new(entry.config.outputs().into_iter().filter_map(|o| o.name));
        let batch = EventBatch::new(queues.remove(id.as_str()).unwrap_or_default());
        let ran = catch_unwind(AssertUnwindSafe(|| {
            if !batch.is_empty() {
                transform.transform(batch, &mut out);
            }
            transform.flush(&mut out);
        }));
        if ran.is_err() {
            return Err(format!("transform `{id}` panicked"));
        }
        let counted = metrics.errors();
        if counted.values().any(|n| *n > 0) {
            errors.push((id.clone(), counted));
        }
        let TransformOutput { default, named } = out;
        let outputs =
            std::iter::once((None, default)).chain(named.into_iter().map(|(n, e)| (Some(n), e)));
        for (name, events) in outputs {
            let oid = OutputId {
                component: id.clone(),
                output: name,
            };
            if events.is_empty() {
                continue;
            }
            for c in consumers.get(&oid).into_iter().flatten() {
                if reached.contains(c.as_str()) {
                    queues
                        .entry(c.as_str())
                        .or_default()
                        .extend(events.iter().cloned());
                }
            }
            emitted.entry(oid).or_default().extend(events);
        }
    }
    Ok((emitted, errors))
}

#[cfg(test)]
mod fuzz {
    use weir_pipeline::config::{load_str, resolve_graph};

    use super::{plan, run};

    /// Configurations with `[[tests]]` (the examples that have them, and one with a route,
    /// a remap chain and a window), mutated, loaded, planned and run as `weir test` does:
    /// errors or failures, never a panic.
    #[test]
    fn fuzz_unit_tests() {
        let root = weir_testing::repo_root();
        // The end-to-end tests' configurations: the shared pipeline, with each case's tests.
        let snippets: Vec<&str> = include_str!("../../tests/it/config_tests.rs")
            .split("r#\"")
            .skip(1)
            .filter_map(|s| s.split("\"#").next())
            .collect();
        let pipeline = snippets.first().copied().unwrap_or_default();
        let mut seeds: Vec<Vec<u8>> = snippets
            .iter()
            .filter(|s| s.contains("[[tests]]"))
            .map(|s| {
                if s.contains("[sources.") {
                    s.as_bytes().to_vec()
                } else {
                    format!("{pipeline}{s}").into_bytes()
                }
            })
            .collect();
        let mut files: Vec<_> = std::fs::read_dir(root.join("config/examples"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read(&f).unwrap();
            if String::from_utf8_lossy(&text).contains("[[tests]]") {
                seeds.push(text);
            }
        }
        assert!(
            seeds.len() > 4,
            "too few seeds with [[tests]]: {}",
            seeds.len()
        );
        let registry = crate::registry::registry();
        weir_testing::fuzz::Fuzz::new("unit_tests")
            .seeds(seeds)
            .dict([
                "[[tests]]",
                "[[tests.inputs]]",
                "[[tests.outputs]]",
                "[[tests.outputs.conditions]]",
                "insert_at = ",
                "extract_from = ",
                "no_outputs_from = [",
                "type = \"log\"",
                "type = \"vrl\"",
                "log_fields = {",
                "source = '",
                "value = '",
                "\"",
                "'",
                "]",
                "\n",
                ".errors",
                "._unmatched",
                "assert_eq!(",
            ])
            .run(|input| {
                let text = String::from_utf8_lossy(input);
                let Ok(config) = load_str("fuzz.toml", &text, &registry, &|_| None) else {
                    return;
                };
                let Ok(graph) = resolve_graph(&config, false) else {
                    return;
                };
                if let Ok(plans) = plan(&config, &graph) {
                    for mut p in plans {
                        let _ = run(&config, &graph, &mut p);
                    }
                }
            });
    }
}
