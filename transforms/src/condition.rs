//! Compiling VRL, shared by every transform here: whole programs for `remap`, boolean
//! conditions for `filter`, `route` and `sample`.
//!
//! Compilation happens once, when the transform is built. A compile error carries VRL's own
//! diagnostic (the offending line, a caret under the problem and a hint), so the user sees the
//! same message Vector would print. Warnings are logged once at build.

use std::fmt;
use std::sync::OnceLock;

use vrl::compiler::runtime::{Runtime, Terminate};
use vrl::compiler::state::{ExternalEnv, TypeState};
use vrl::compiler::{CompileConfig, Function, Program, TargetValueRef, TimeZone};
use vrl::diagnostic::{DiagnosticList, Formatter};
use vrl::value::{ObjectMap, Secrets, Value};
use weir_pipeline::metrics::ComponentMetrics;

/// The VRL standard library (the `stdlib-base` set), built once per process, with
/// `parse_json` replaced by Weir's drop-in of it ([`crate::vrl_json`]).
pub(crate) fn functions() -> &'static [Box<dyn Function>] {
    static FUNCTIONS: OnceLock<Vec<Box<dyn Function>>> = OnceLock::new();
    FUNCTIONS.get_or_init(|| {
        let mut all = vrl::stdlib::all();
        for f in &mut all {
            if f.identifier() == "parse_json" {
                *f = Box::new(crate::vrl_json::ParseJson);
            }
        }
        all
    })
}

/// Compiles a VRL program. `what` names it in messages (`condition`, `program in x.vrl`).
/// `read_only` forbids assignments to the event and its metadata (conditions must not edit
/// what they test).
pub(crate) fn compile_program(
    source: &str,
    what: &str,
    read_only: bool,
) -> Result<Program, String> {
    compile_raw(source, what, read_only)
        .map_err(|d| format!("invalid VRL {what}:{}", Formatter::new(source, d)))
}

fn compile_raw(source: &str, what: &str, read_only: bool) -> Result<Program, DiagnosticList> {
    if let Err(why) = nesting(source).check() {
        return Err(error_diagnostic(format!("the VRL {what} {why}")));
    }
    // VRL's parser and compiler recurse once per nesting level and per operator of a chain:
    // a 400-term `||` chain overflows a 2 MiB stack (found by fuzzing the config loader).
    // Compiling on a thread with a large stack (reserved, touched only as deep as needed)
    // turns such a program into a result instead of a crash.
    let compiled = std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("vrl-compile".into())
            .stack_size(COMPILE_STACK_BYTES)
            .spawn_scoped(scope, || {
                let state = TypeState {
                    local: Default::default(),
                    external: ExternalEnv::default(),
                };
                let mut config = CompileConfig::default();
                if read_only {
                    config.set_read_only();
                }
                vrl::compiler::compile_with_state(source, functions(), &state, config)
                    .map(|r| (r.program, r.warnings))
            })
            .map(|t| t.join())
    });
    let (program, warnings) = match compiled {
        Ok(Ok(r)) => r?,
        // A panic in the compiler, or no thread for it: an error of this program.
        Ok(Err(_)) | Err(_) => {
            return Err(error_diagnostic(format!(
                "the VRL {what} could not be compiled"
            )))
        }
    };
    if !warnings.is_empty() {
        tracing::warn!(
            "VRL {what} compiled with warnings:{}",
            Formatter::new(source, warnings)
        );
    }
    Ok(program)
}

fn error_diagnostic(message: String) -> DiagnosticList {
    DiagnosticList::from(vec![vrl::diagnostic::Diagnostic::new(
        vrl::diagnostic::Severity::Error,
        0,
        message,
        vec![],
        vec![],
    )])
}

/// How deep a program may nest: brackets, operators chained in one expression and `else if`
/// chains, counted together. VRL's compiler, its runtime and the drop of a program recurse once
/// per level: a few thousand levels overflow a thread's stack and abort the process (found by
/// fuzzing `weir test`). Real programs nest a few dozen levels at most.
const MAX_NESTING: usize = 256;

/// How deep function calls may nest. VRL 0.38 type-checks a fallible call's argument twice, so
/// compiling nested fallible calls takes time doubling with each level (`string!(` nested 20
/// deep: 30 s). Real programs nest a handful.
const MAX_CALL_NESTING: usize = 12;

/// The nesting of a VRL program, measured from its text before it is compiled.
#[derive(Debug, Default, PartialEq)]
struct Nesting {
    /// Brackets, chained operators and `else`s open at the deepest point.
    depth: usize,
    /// Function calls open at the deepest point.
    calls: usize,
}

impl Nesting {
    fn check(&self) -> Result<(), String> {
        if self.depth > MAX_NESTING {
            return Err(format!(
                "nests {} levels deep (brackets, operators chained in one expression, `else if`); \
                 at most {MAX_NESTING}",
                self.depth
            ));
        }
        if self.calls > MAX_CALL_NESTING {
            return Err(format!(
                "nests function calls {} deep; at most {MAX_CALL_NESTING}",
                self.calls
            ));
        }
        Ok(())
    }
}

/// Scans `source` as VRL's lexer would, far enough to see its structure: strings, raw strings
/// and comments are skipped; each open bracket is a level; in each bracket, every operator of
/// an expression is a level (`a || b || c` is a tree as deep as it is long, and so is
/// `a = b = c`), until a `,`, `;` or a line break ends the expression (a line ending with an
/// operator continues it). An over-estimate, never an under-estimate, of the depth of the
/// syntax tree.
fn nesting(source: &str) -> Nesting {
    struct Level {
        chain: usize,
        call: bool,
    }
    let b = source.as_bytes();
    let mut levels = vec![Level {
        chain: 0,
        call: false,
    }];
    let (mut depth, mut calls) = (0usize, 0usize);
    let mut max = Nesting::default();
    // The last significant byte: an identifier's last byte, an operator, a bracket...
    let mut last = b'\n';
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' | b'\'' => {
                i += 1;
                while i < b.len() && b[i] != c {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                last = c;
            }
            b'(' | b'[' | b'{' => {
                let call =
                    c == b'(' && (last == b'!' || last == b'_' || last.is_ascii_alphanumeric());
                levels.push(Level { chain: 0, call });
                depth += 1;
                calls += usize::from(call);
                last = c;
            }
            b')' | b']' | b'}' => {
                if levels.len() > 1 {
                    if let Some(l) = levels.pop() {
                        depth -= 1 + l.chain;
                        calls -= usize::from(l.call);
                    }
                }
                last = c;
            }
            b',' | b';' => {
                if let Some(l) = levels.last_mut() {
                    depth -= l.chain;
                    l.chain = 0;
                }
                last = c;
            }
            b'\n' => {
                if !OPERATOR.contains(&last) {
                    if let Some(l) = levels.last_mut() {
                        depth -= l.chain;
                        l.chain = 0;
                    }
                }
            }
            // A fallible call's `!` (`f!(`) is part of the call.
            b'!' if (last == b'_' || last.is_ascii_alphanumeric())
                && b.get(i + 1) == Some(&b'(') =>
            {
                last = c;
            }
            _ if OPERATOR.contains(&c) => {
                while i + 1 < b.len() && OPERATOR.contains(&b[i + 1]) {
                    i += 1;
                }
                if let Some(l) = levels.last_mut() {
                    l.chain += 1;
                    depth += 1;
                }
                last = b[i];
            }
            _ if c == b'_' || c.is_ascii_alphanumeric() => {
                let start = i;
                while i + 1 < b.len() && (b[i + 1] == b'_' || b[i + 1].is_ascii_alphanumeric()) {
                    i += 1;
                }
                if &b[start..=i] == b"else" {
                    if let Some(l) = levels.last_mut() {
                        l.chain += 1;
                        depth += 1;
                    }
                }
                last = b[i];
            }
            _ if c.is_ascii_whitespace() => {}
            _ => last = c,
        }
        max.depth = max.depth.max(depth);
        max.calls = max.calls.max(calls);
        i += 1;
    }
    max
}

/// The bytes VRL's operators are made of.
const OPERATOR: &[u8] = b"=!<>|&?+-*/%";

/// The stack of the thread VRL programs are compiled on.
const COMPILE_STACK_BYTES: usize = 512 << 20;

/// The VRL error code of an unhandled fallible expression (`E100`).
const UNHANDLED_ERROR: usize = 100;

/// Reusable run state: the runtime (variables), the `%` metadata object and the secrets.
/// Reset between events, never reallocated.
#[derive(Debug)]
pub(crate) struct VrlState {
    runtime: Runtime,
    metadata: Value,
    secrets: Secrets,
}

impl VrlState {
    pub(crate) fn new() -> Self {
        Self {
            runtime: Runtime::default(),
            metadata: Value::Object(ObjectMap::new()),
            secrets: Secrets::new(),
        }
    }

    /// Runs `program` on `value` in place, then resets the state for the next event.
    pub(crate) fn run(&mut self, program: &Program, value: &mut Value) -> Result<Value, Terminate> {
        let mut target = TargetValueRef {
            value,
            metadata: &mut self.metadata,
            secrets: &mut self.secrets,
        };
        let result = self
            .runtime
            .resolve(&mut target, program, &TimeZone::default());
        self.runtime.clear();
        // Secrets set by a program belong to its event (an empty map costs nothing).
        self.secrets = Secrets::new();
        match &mut self.metadata {
            // Clearing an empty map is free; a used one keeps no state across events.
            Value::Object(m) => m.clear(),
            other => *other = Value::Object(ObjectMap::new()),
        }
        result
    }
}

/// Why a condition could not be decided for an event.
#[derive(Debug)]
pub(crate) enum ConditionError {
    /// The expression failed at runtime.
    Runtime(Terminate),
    /// It returned something other than a boolean.
    NotBoolean(Value),
}

impl fmt::Display for ConditionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConditionError::Runtime(t) => write!(f, "condition failed: {t}"),
            ConditionError::NotBoolean(v) => write!(
                f,
                "condition returned {} instead of a boolean",
                v.kind_str()
            ),
        }
    }
}

/// Condition errors of one batch, reported to the metrics once per batch.
#[derive(Debug, Default)]
pub(crate) struct ErrorTally {
    count: u64,
    first: Option<String>,
}

impl ErrorTally {
    pub(crate) fn add(&mut self, e: &ConditionError) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(e.to_string());
        }
    }

    /// Counts the errors as kind `condition` (and logs the first, rate-limited), then resets.
    pub(crate) fn report(&mut self, metrics: &ComponentMetrics) {
        if self.count > 0 {
            let message = self.first.take().unwrap_or_default();
            metrics.error("condition", self.count, &message);
            self.count = 0;
        }
    }
}

const CAUGHT_VALUE: &str = "__weir_condition_value";
const CAUGHT_ERROR: &str = "__weir_condition_error";

/// A compiled VRL boolean expression (`.status >= 500`), with its own run state.
#[derive(Debug)]
pub(crate) struct Condition {
    program: Program,
    state: VrlState,
}

impl Condition {
    /// Compiles `source`. Fails if it does not compile, if it tries to modify the event, or if
    /// its type can never be a boolean (a condition like `.status` or `upcase(.x)`).
    ///
    /// Unlike a `remap` program, a condition may leave errors unhandled (`.status >= 500`
    /// fails when `.status` is not a number): such a condition is run with its error caught,
    /// and an event it fails on is reported as a [`ConditionError::Runtime`].
    pub(crate) fn compile(source: &str) -> Result<Self, String> {
        let program = match compile_raw(source, "condition", true) {
            Ok(p) => p,
            Err(d) if !d.is_empty() && d.iter().all(|d| d.code == UNHANDLED_ERROR) => {
                // Catch the error and turn it into an abort that carries its message.
                let wrapped = format!(
                    "{CAUGHT_VALUE}, {CAUGHT_ERROR} = {{\n{source}\n}}\n\
                     if {CAUGHT_ERROR} != null {{ abort (string({CAUGHT_ERROR}) ?? \"error\") }}\n\
                     {CAUGHT_VALUE}"
                );
                compile_raw(&wrapped, "condition", true)
                    .map_err(|_| format!("invalid VRL condition:{}", Formatter::new(source, d)))?
            }
            Err(d) => {
                return Err(format!(
                    "invalid VRL condition:{}",
                    Formatter::new(source, d)
                ))
            }
        };
        let result = program.final_type_info().result;
        if !result.kind().contains_boolean() {
            return Err(format!(
                "the VRL condition `{}` must return a boolean, but it returns {}",
                source.trim(),
                result.kind()
            ));
        }
        Ok(Self {
            program,
            state: VrlState::new(),
        })
    }

    /// Evaluates the condition on a log's fields. The program is read-only, so `value` is left
    /// as it was.
    pub(crate) fn check(&mut self, value: &mut Value) -> Result<bool, ConditionError> {
        match self.state.run(&self.program, value) {
            Ok(Value::Boolean(b)) => Ok(b),
            Ok(other) => Err(ConditionError::NotBoolean(other)),
            Err(t) => Err(ConditionError::Runtime(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vrl::value::Value;

    fn obj(json: &str) -> Value {
        let j: serde_json::Value = serde_json::from_str(json).unwrap();
        Value::from(j)
    }

    #[test]
    fn condition_true_false() {
        let mut c = Condition::compile(".status >= 500").unwrap();
        let mut a = obj(r#"{"status": 503}"#);
        let mut b = obj(r#"{"status": 200}"#);
        assert!(c.check(&mut a).unwrap());
        assert!(!c.check(&mut b).unwrap());
        // Untouched.
        assert_eq!(a, obj(r#"{"status": 503}"#));
    }

    #[test]
    fn condition_runtime_error() {
        let mut c = Condition::compile(".status >= 500").unwrap();
        let mut v = obj(r#"{"status": "x"}"#);
        let err = c.check(&mut v).unwrap_err();
        assert!(matches!(err, ConditionError::Runtime(_)));
        let msg = err.to_string();
        assert_eq!(msg, "condition failed: expected string, got integer");
        // The next event is evaluated normally.
        let mut ok = obj(r#"{"status": 501}"#);
        assert!(c.check(&mut ok).unwrap());
    }

    #[test]
    fn condition_must_be_boolean() {
        let err = Condition::compile("upcase(\"a\")").unwrap_err();
        assert!(err.contains("must return a boolean"), "{err}");
        let err = Condition::compile(".a = 1\ntrue").unwrap_err();
        assert!(err.contains("invalid VRL condition"), "{err}");
    }

    #[test]
    fn condition_syntax_error_shows_line() {
        let err = Condition::compile(".status >=").unwrap_err();
        assert!(err.contains("invalid VRL condition"), "{err}");
        assert!(err.contains(".status >="), "{err}");
    }

    #[test]
    fn condition_of_any_type_is_accepted_and_non_boolean_is_an_error() {
        let mut c = Condition::compile(".flag").unwrap();
        let mut t = obj(r#"{"flag": true}"#);
        let mut s = obj(r#"{"flag": "yes"}"#);
        assert!(c.check(&mut t).unwrap());
        assert!(matches!(
            c.check(&mut s),
            Err(ConditionError::NotBoolean(_))
        ));
    }
}

#[cfg(test)]
mod deep {
    use super::*;

    /// Found by fuzzing the config loader: a long chain of comparisons overflowed the stack
    /// of the thread compiling it (the process aborted).
    #[test]
    fn a_very_long_chain_compiles_without_overflowing_the_stack() {
        let source = vec![".a == 1"; 120].join(" || ");
        let r = compile_program(&source, "condition", true);
        assert!(r.is_ok(), "{:?}", r.err());
    }

    /// Found by fuzzing `weir test`: an assignment chain thousands of terms long overflowed a
    /// 2 MiB stack outside the compiler (the process aborted). Programs deeper than the limit
    /// are refused with the reason; programs at the limit compile, run and drop on such a stack.
    #[test]
    fn programs_nesting_deeper_than_the_limit_are_refused_and_those_at_it_run() {
        let at_limit = [
            format!(".x = {}1", "a = ".repeat(MAX_NESTING - 1)),
            vec![".a == 1"; MAX_NESTING / 2].join(" ||\n "),
            format!(
                ".x = {}1{}",
                "(".repeat(MAX_NESTING - 1),
                ")".repeat(MAX_NESTING - 1)
            ),
            format!(
                "if .a == 0 {{ 0 }}{} else {{ 1 }}",
                " else if .a == 1 { 1 }".repeat(MAX_NESTING / 3)
            ),
            format!(
                ".x = {}.a{}",
                "string!(".repeat(MAX_CALL_NESTING),
                ")".repeat(MAX_CALL_NESTING)
            ),
        ];
        for source in at_limit {
            assert!(
                nesting(&source).check().is_ok(),
                "{:?} {}",
                nesting(&source),
                &source[..40]
            );
            std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || {
                    let program = compile_program(&source, "program", false).unwrap();
                    let mut value = Value::from(std::collections::BTreeMap::new());
                    let _ = VrlState::new().run(&program, &mut value);
                })
                .unwrap()
                .join()
                .unwrap();
        }
        let too_deep = [
            (
                format!(".x = {}1", "a = ".repeat(3000)),
                "nests 3001 levels deep",
            ),
            (vec![".a == 1"; 400].join(" || "), "levels deep"),
            (
                format!(".x = {}.a{}", "string!(".repeat(20), ")".repeat(20)),
                "nests function calls 20 deep; at most 12",
            ),
        ];
        for (source, want) in too_deep {
            let err = compile_program(&source, "program", false).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn strings_and_comments_do_not_count_and_lines_end_expressions() {
        let n = |s: &str| {
            let m = nesting(s);
            (m.depth, m.calls)
        };
        assert_eq!(n(".a = \"((((\" # ((((\n.b = s'))[['"), (1, 0));
        assert_eq!(n(".a = 1\n.b = 2\n.c = 3"), (1, 0));
        assert_eq!(n(".a = 1 +\n 2 +\n 3"), (3, 0));
        assert_eq!(n(".a = f(g!(1, 2), [3])"), (3, 2));
        assert_eq!(n(".a = \"\\\"(\""), (1, 0));
    }
}
