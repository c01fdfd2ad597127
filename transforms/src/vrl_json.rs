//! VRL's `parse_json`, with the same results and errors as the standard library's, built
//! with Weir's JSON parser: strings without escapes become slices of the text parsed instead
//! of copies, and each object is sorted once and built leaf by leaf instead of by one insert
//! per key (see `weir_pipeline::codec::parse_json_text`). In a `remap` that parses each
//! line (`. = parse_json!(.message)`), this is most of the program's time.
//!
//! Everything but running the common form is the standard library's: the parameters, the
//! argument checks, the type definition, and the whole call when `max_depth` is given (a
//! rare form, left to its own implementation).

use bytestring::ByteString;
use vrl::compiler::prelude::{
    ArgumentList, Compiled, Context, Example, Expression, ExpressionExt, Function,
    FunctionCompileContext, Parameter, Resolved, TypeInfo, TypeState, VrlValueConvert,
};
use vrl::value::Value;
use weir_pipeline::codec::parse_json_text;

/// The standard library's function, which this one stands in for.
const STDLIB: vrl::stdlib::ParseJson = vrl::stdlib::ParseJson;

/// VRL's `parse_json`. Drop-in: same name, parameters, type and behaviour.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ParseJson;

impl Function for ParseJson {
    fn identifier(&self) -> &'static str {
        STDLIB.identifier()
    }
    fn summary(&self) -> &'static str {
        STDLIB.summary()
    }
    fn usage(&self) -> &'static str {
        STDLIB.usage()
    }
    fn category(&self) -> &'static str {
        STDLIB.category()
    }
    fn internal_failure_reasons(&self) -> &'static [&'static str] {
        STDLIB.internal_failure_reasons()
    }
    fn return_kind(&self) -> u16 {
        STDLIB.return_kind()
    }
    fn return_rules(&self) -> &'static [&'static str] {
        STDLIB.return_rules()
    }
    fn notices(&self) -> &'static [&'static str] {
        STDLIB.notices()
    }
    fn pure(&self) -> bool {
        STDLIB.pure()
    }
    fn examples(&self) -> &'static [Example] {
        STDLIB.examples()
    }
    fn parameters(&self) -> &'static [Parameter] {
        STDLIB.parameters()
    }

    fn compile(
        &self,
        state: &TypeState,
        ctx: &mut FunctionCompileContext,
        arguments: ArgumentList,
    ) -> Compiled {
        let stdlib = STDLIB.compile(state, ctx, arguments.clone())?;
        if arguments.optional("max_depth").is_some() {
            return Ok(stdlib);
        }
        Ok(Box::new(ParseJsonFn {
            value: arguments.required("value"),
            lossy: arguments.optional("lossy"),
            stdlib,
        }))
    }
}

/// A compiled `parse_json(value[, lossy])`.
#[derive(Debug, Clone)]
struct ParseJsonFn {
    value: Box<dyn Expression>,
    lossy: Option<Box<dyn Expression>>,
    /// The standard library's compiled call: its type is this one's.
    stdlib: Box<dyn Expression>,
}

impl Expression for ParseJsonFn {
    fn resolve(&self, ctx: &mut Context) -> Resolved {
        let value = self.value.resolve(ctx)?;
        let lossy = self
            .lossy
            .map_resolve_with_default(ctx, || Value::Boolean(true))?
            .try_boolean()?;
        let text = match value {
            Value::String(s) => s,
            Value::Bytes(b) => match ByteString::try_from(b.clone()) {
                Ok(s) => s,
                // Lossy: invalid UTF-8 becomes U+FFFD, as in the standard library.
                Err(_) if lossy => ByteString::from(String::from_utf8_lossy(&b).into_owned()),
                // Not lossy: the standard library's parse, for its exact error.
                Err(_) => {
                    let bytes = b.strip_prefix(BOM_BYTES).unwrap_or(&b);
                    return Ok(serde_json::from_slice::<Value>(bytes)
                        .map_err(|e| format!("unable to parse json: {e}"))?);
                }
            },
            // Not a string: the standard library's conversion error.
            other => {
                return Err(other.try_bytes().err().map_or_else(
                    || "unable to parse json: expected a string".into(),
                    Into::into,
                ))
            }
        };
        // Lossy, the standard library strips every leading BOM; otherwise one.
        let start = if lossy {
            text.trim_start_matches(BOM)
        } else {
            text.strip_prefix(BOM).unwrap_or(&text)
        };
        let text = if start.len() == text.len() {
            text
        } else {
            text.slice_ref(start)
        };
        Ok(parse_json_text(&text).map_err(|e| format!("unable to parse json: {e}"))?)
    }

    fn type_info(&self, state: &TypeState) -> TypeInfo {
        self.stdlib.type_info(state)
    }
}

/// The byte order mark the standard library strips before parsing.
const BOM: char = '\u{feff}';
const BOM_BYTES: &[u8] = "\u{feff}".as_bytes();

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use vrl::compiler::runtime::Runtime;
    use vrl::compiler::state::ExternalEnv;
    use vrl::compiler::{CompileConfig, Program, TargetValueRef, TimeZone};
    use vrl::value::{ObjectMap, Secrets};

    use super::*;

    fn compile(source: &str, functions: &[Box<dyn Function>]) -> Program {
        let state = TypeState {
            local: Default::default(),
            external: ExternalEnv::default(),
        };
        vrl::compiler::compile_with_state(source, functions, &state, CompileConfig::default())
            .map(|r| r.program)
            .unwrap_or_else(|e| panic!("{source}: {e:?}"))
    }

    /// The program's result on an event whose `m` is `input`, as text that tells
    /// `Value::String` from `Value::Bytes`, or the error's message.
    fn run(program: &Program, input: &Value) -> String {
        let mut event = ObjectMap::new();
        event.insert("m".into(), input.clone());
        let mut value = Value::Object(event);
        let mut metadata = Value::Object(ObjectMap::new());
        let mut secrets = Secrets::new();
        let mut target = TargetValueRef {
            value: &mut value,
            metadata: &mut metadata,
            secrets: &mut secrets,
        };
        match Runtime::default().resolve(&mut target, program, &TimeZone::default()) {
            Ok(v) => format!("{v:?}"),
            Err(e) => format!("error: {e}"),
        }
    }

    /// Runs `source` with the standard library and with Weir's `parse_json` on each input:
    /// the same results, the same errors, the same type.
    fn same_as_stdlib(source: &str, inputs: &[Value]) {
        let stdlib = compile(source, &vrl::stdlib::all());
        let ours = compile(source, crate::condition::functions());
        // (The local bindings are a hash map: printed in no fixed order.)
        let (want, got) = (stdlib.final_type_info(), ours.final_type_info());
        assert_eq!(
            format!("{:?}", want.result),
            format!("{:?}", got.result),
            "{source}"
        );
        assert_eq!(
            format!("{:?}", want.state.external),
            format!("{:?}", got.state.external),
            "{source}"
        );
        for input in inputs {
            let want = run(&stdlib, input);
            let got = run(&ours, input);
            assert_eq!(got, want, "{source} on {input:?}");
        }
    }

    fn bytes(b: &'static [u8]) -> Value {
        Value::Bytes(Bytes::from_static(b))
    }

    fn inputs() -> Vec<Value> {
        let texts: &[&[u8]] = &[
            br#"{"a":"plain","b":"esc\"aped\\ \/ \n\t","c":"\u00e9\u4e2d\ud83d\ude00"}"#,
            "{\"unicode\":\"é中😀\",\"é\":1}".as_bytes(),
            br#"{"i":-3,"z":0,"big":9223372036854775807,"bigger":9223372036854775808,"u":18446744073709551615,"neg":-9223372036854775808,"f":1.5,"e":1e3,"e2":-2.5E-3,"ff":1.0}"#,
            br#"{"o":{"p":{"q":[1,[2,{"r":null}]]}},"arr":[],"obj":{}}"#,
            br#"{"t":true,"f":false,"n":null}"#,
            br#"{"dup":1,"a":2,"dup":3,"dup":{"x":1}}"#,
            br#"[1,"two",{"three":3},null,true,1.25]"#,
            br#""just a string""#,
            br#""esc\u0041ped""#,
            b"42",
            b"-0",
            b"1e400",
            b"null",
            b"  {\"spaced\" : 1 }  ",
            b"",
            b"   ",
            b"{",
            b"{\"a\":1} x",
            b"{ INVALID }",
            b"{\"a\":01}",
            b"[1,]",
            b"\"\\ud800\"",
            b"\xef\xbb\xbf{\"bom\":1}",
            b"\xef\xbb\xbf\xef\xbb\xbf{\"two boms\":1}",
            b"{\"bad\":\"\xff\xfe\"}",
            b"\xff{\"a\":1}",
            b"{\"k\xc3\":1}",
        ];
        let mut v: Vec<Value> = texts.iter().map(|t| bytes(t)).collect();
        // The same texts, as `Value::String` where they are UTF-8.
        v.extend(
            texts
                .iter()
                .filter_map(|t| std::str::from_utf8(t).ok())
                .map(Value::from),
        );
        // Not strings.
        v.extend([Value::Integer(1), Value::Null, Value::Boolean(true)]);
        v
    }

    #[test]
    fn parse_json_matches_the_standard_library() {
        for source in [
            "v, err = parse_json(string!(.m)); [v, err]",
            "v, err = parse_json(string!(.m), lossy: true); [v, err]",
            "v, err = parse_json(string!(.m), lossy: false); [v, err]",
            "v, err = parse_json(string!(.m), max_depth: 1); [v, err]",
            "v, err = parse_json(string!(.m), max_depth: 2, lossy: false); [v, err]",
            ". = parse_json(string!(.m)) ?? {}\n.",
            "parse_json!(string!(.m))",
            "parse_json!(string!(.m), lossy: false)",
        ] {
            same_as_stdlib(source, &inputs());
        }
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        same_as_stdlib("parse_json!(string!(.m))", &[Value::from(deep)]);
    }

    /// Weir's function is the one programs get: its strings are slices of the line parsed,
    /// where the standard library's are copies.
    #[test]
    fn programs_get_the_function_that_slices() {
        let line = Bytes::from_static(br#"{"a":"plain"}"#);
        let inside = |functions: &[Box<dyn Function>]| {
            let program = compile(". = parse_json!(string!(.m))", functions);
            let mut event = ObjectMap::new();
            event.insert("m".into(), Value::Bytes(line.clone()));
            let mut value = Value::Object(event);
            let mut metadata = Value::Object(ObjectMap::new());
            let mut secrets = Secrets::new();
            let mut target = TargetValueRef {
                value: &mut value,
                metadata: &mut metadata,
                secrets: &mut secrets,
            };
            Runtime::default()
                .resolve(&mut target, &program, &TimeZone::default())
                .unwrap();
            let Some(Value::String(a)) = value.as_object().and_then(|m| m.get("a")).cloned() else {
                panic!("{value:?}")
            };
            let (p, base) = (a.as_ptr() as usize, line.as_ptr() as usize);
            p >= base && p < base + line.len()
        };
        assert!(inside(crate::condition::functions()));
        assert!(!inside(&vrl::stdlib::all()));
    }
}
