//! The VRL pieces of `weir test` (the `[[tests]]` of a configuration): conditions on the
//! events that come out of a transform, and input events built by a VRL program.
//!
//! Conditions compile as the `filter` and `route` conditions do (`condition.rs`: read-only,
//! the same standard library), so a condition that works in a `filter` works in a test. A
//! build without VRL (none of `remap`, `filter`, `route`, `sample`) refuses both with a
//! message that says so.

use weir_pipeline::event::Value;

#[cfg(feature = "vrl")]
use crate::condition::{Condition, ConditionError, VrlState};

/// A compiled test condition (`[[tests.outputs.conditions]]`, `type = "vrl"`).
#[derive(Debug)]
pub struct TestCondition {
    #[cfg(feature = "vrl")]
    condition: Condition,
}

#[cfg(not(feature = "vrl"))]
const NO_VRL: &str =
    "this build has no VRL (none of the transforms remap, filter, route, sample): VRL conditions and inputs cannot run";

impl TestCondition {
    /// Compiles a condition: a read-only VRL program that returns a boolean, or fails an
    /// `assert!`/`assert_eq!`. The error is VRL's diagnostic.
    pub fn compile(source: &str) -> Result<Self, String> {
        #[cfg(feature = "vrl")]
        {
            Ok(Self {
                condition: Condition::compile(source)?,
            })
        }
        #[cfg(not(feature = "vrl"))]
        {
            let _ = source;
            Err(NO_VRL.into())
        }
    }

    /// Checks the condition on an event's fields (`value` is left as it was). `Err` says why
    /// it is not met: the message of the failed assertion, the runtime error, or that the
    /// program returned `false`.
    pub fn check(&mut self, value: &mut Value) -> Result<(), String> {
        #[cfg(feature = "vrl")]
        {
            match self.condition.check(value) {
                Ok(true) => Ok(()),
                Ok(false) => Err("the condition returned false".into()),
                Err(ConditionError::Runtime(t)) => Err(assertion_message(t.to_string())),
                Err(e @ ConditionError::NotBoolean(_)) => Err(e.to_string()),
            }
        }
        #[cfg(not(feature = "vrl"))]
        {
            let _ = value;
            Err(NO_VRL.into())
        }
    }
}

/// A failure as the user wrote it: an assertion's message without VRL's
/// `function call error for "assert_eq" at (0:24): ` in front.
#[cfg(feature = "vrl")]
fn assertion_message(msg: String) -> String {
    if msg.starts_with("function call error for \"assert") {
        if let Some((_, rest)) = msg.split_once("): ") {
            return rest.to_string();
        }
    }
    msg
}

/// Runs the VRL program `source` on an empty event and returns the event's fields: a test
/// input of `type = "vrl"`.
pub fn event_from_vrl(source: &str) -> Result<Value, String> {
    #[cfg(feature = "vrl")]
    {
        let program = crate::condition::compile_program(source, "test input", false)?;
        let mut value = Value::Object(Default::default());
        VrlState::new()
            .run(&program, &mut value)
            .map_err(|e| format!("the VRL test input failed: {e}"))?;
        Ok(value)
    }
    #[cfg(not(feature = "vrl"))]
    {
        let _ = source;
        Err(NO_VRL.into())
    }
}

#[cfg(all(test, feature = "vrl"))]
mod tests {
    use super::*;

    #[test]
    fn assertions_say_what_failed() {
        let mut c = TestCondition::compile(r#"assert_eq!(.status, 200, "not ok")"#).unwrap();
        let mut ok = Value::from(serde_json::json!({"status": 200}));
        let mut bad = Value::from(serde_json::json!({"status": 500}));
        assert_eq!(c.check(&mut ok), Ok(()));
        assert_eq!(c.check(&mut bad).unwrap_err(), "not ok");
        let mut c = TestCondition::compile("assert_eq!(.status, 200)").unwrap();
        assert_eq!(
            c.check(&mut bad).unwrap_err(),
            "assertion failed: 500 == 200"
        );
        let mut c = TestCondition::compile(".status == 200").unwrap();
        assert_eq!(
            c.check(&mut bad).unwrap_err(),
            "the condition returned false"
        );
    }

    #[test]
    fn a_vrl_input_builds_an_event() {
        let v = event_from_vrl(r#".message = "hi"; .n = 1 + 1"#).unwrap();
        assert_eq!(v, Value::from(serde_json::json!({"message": "hi", "n": 2})));
        assert!(event_from_vrl(".x = ").is_err());
    }
}
