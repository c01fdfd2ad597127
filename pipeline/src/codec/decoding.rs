use std::sync::{Arc, RwLock};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::json::{
    check_json, parse_json_value, parse_json_with, JsonDefaults, JsonLaziness, JsonLog, JsonShape,
};
use super::logfmt;
use crate::event::{Event, EventMetadata, KeyString, LogEvent, ObjectMap, Value};

/// `decoding = { codec = "..." }`: how a source turns each frame (line) into an event.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DecodingConfig {
    /// `bytes` (default: the line becomes `message`), `json` (an object's fields; an array
    /// gives one event per element), `logfmt` (`k=v` pairs, values as strings) or `syslog`
    /// (RFC 5424 or 3164: `appname`, `facility`, `severity`, `hostname`, `procid`, `msgid`,
    /// `timestamp`, `message`, structured data as nested objects), or a codec registered by a
    /// component crate (`weir list` prints them).
    #[serde(default)]
    pub codec: Decoder,
}

/// A decoder that is not built into the core: a component crate implements it and registers
/// it ([`Registry::add_decoder`](crate::component::Registry::add_decoder)) under the name
/// users give as `decoding.codec`. The core never names one.
pub trait FrameDecoder: Send + Sync + std::fmt::Debug + 'static {
    /// The name users write as `decoding.codec` (`snake_case`).
    fn name(&self) -> &'static str;

    /// Decodes one frame into `out`, its events taken in at `ingest_time`.
    fn decode(
        &self,
        frame: Bytes,
        source_id: &Option<Arc<str>>,
        ingest_time: DateTime<Utc>,
        out: &mut Vec<Event>,
    ) -> Result<(), DecodeError>;
}

/// A decoder: one of the core's, or a registered one ([`FrameDecoder`]).
#[derive(Debug, Clone, Copy, Default)]
pub enum Decoder {
    /// Each frame as the `message` field, unparsed (the default).
    #[default]
    Bytes,
    /// Each frame is a JSON object (or an array of objects: one event each).
    Json,
    /// Each frame is `key=value` pairs (logfmt).
    Logfmt,
    /// Each frame is a syslog line (RFC 3164 or RFC 5424).
    Syslog,
    /// A decoder a component crate registered.
    Registered(&'static dyn FrameDecoder),
}

/// The names of the core's own decoders.
const BUILT_IN: [(&str, Decoder); 4] = [
    ("bytes", Decoder::Bytes),
    ("json", Decoder::Json),
    ("logfmt", Decoder::Logfmt),
    ("syslog", Decoder::Syslog),
];

/// The registered decoders. Written while the registry is filled (before any config is read),
/// read when a config names a codec; never on the path of an event.
static REGISTERED: RwLock<Vec<&'static dyn FrameDecoder>> = RwLock::new(Vec::new());

/// Makes a decoder known by its name (a second registration of a name replaces the first).
pub fn register_decoder(decoder: &'static dyn FrameDecoder) {
    let mut all = REGISTERED.write().unwrap_or_else(|e| e.into_inner());
    all.retain(|d| d.name() != decoder.name());
    all.push(decoder);
}

impl Decoder {
    /// The decoder users call `name`, if this build has it.
    pub fn by_name(name: &str) -> Option<Decoder> {
        if let Some((_, d)) = BUILT_IN.iter().find(|(n, _)| *n == name) {
            return Some(*d);
        }
        let all = REGISTERED.read().unwrap_or_else(|e| e.into_inner());
        all.iter()
            .find(|d| d.name() == name)
            .map(|d| Decoder::Registered(*d))
    }

    /// Every codec name this build knows: the core's, then the registered ones.
    pub fn names() -> Vec<&'static str> {
        let mut names: Vec<&'static str> = BUILT_IN.iter().map(|(n, _)| *n).collect();
        let all = REGISTERED.read().unwrap_or_else(|e| e.into_inner());
        names.extend(all.iter().map(|d| d.name()));
        names
    }

    /// The name users write for this decoder.
    pub fn name(&self) -> &'static str {
        match self {
            Decoder::Bytes => "bytes",
            Decoder::Json => "json",
            Decoder::Logfmt => "logfmt",
            Decoder::Syslog => "syslog",
            Decoder::Registered(d) => d.name(),
        }
    }
}

impl PartialEq for Decoder {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Decoder {}

impl Serialize for Decoder {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A codec name, one of those this build knows (the core's and the registered ones, as they
/// are when the schema is made: `weir generate-docs` fills the registry first).
impl schemars::JsonSchema for Decoder {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Decoder".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "enum": Decoder::names(),
        })
    }
}

impl<'de> Deserialize<'de> for Decoder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Decoder::by_name(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown codec `{name}`, expected one of {}",
                Decoder::names()
                    .iter()
                    .map(|n| format!("`{n}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }
}

/// A frame that could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The frame is not valid JSON.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The frame is valid JSON but not an object (its kind given).
    #[error("JSON value is a {0}, expected an object (or an array of objects)")]
    NotAnObject(&'static str),
    /// The frame is not valid logfmt.
    #[error("invalid logfmt: {0}")]
    Logfmt(String),
    /// A syslog frame is not valid UTF-8.
    #[error("invalid UTF-8 in a syslog line")]
    Utf8,
}

impl Decoder {
    /// Decodes one frame into `out`, its events taken in now.
    pub fn decode(
        self,
        frame: Bytes,
        source_id: &Option<Arc<str>>,
        out: &mut Vec<Event>,
    ) -> Result<(), DecodeError> {
        self.decode_at(frame, source_id, Utc::now(), out)
    }

    /// As [`decode_at`](Self::decode_at), and every event also gets the fields of `defaults`
    /// it does not have. With the `json` codec a line whose value is an object may, as
    /// `laziness` decides, be only checked here (same parser, same errors) and become a
    /// [`JsonLog`], its tree parsed the first time something reads the fields. A source that
    /// adds fields only when absent passes them as `defaults` to keep that laziness (an insert
    /// would build the tree).
    pub fn decode_lazy<D: JsonDefaults>(
        self,
        laziness: &JsonLaziness,
        frame: Bytes,
        source_id: &Option<Arc<str>>,
        ingest_time: DateTime<Utc>,
        defaults: D,
        out: &mut Vec<Event>,
    ) -> Result<(), DecodeError> {
        if matches!(self, Decoder::Json) {
            let (lazy, probe) = laziness.next();
            if lazy {
                match check_json(&frame)? {
                    JsonShape::Object => {
                        let meta = EventMetadata::at(source_id.clone(), ingest_time);
                        let log = JsonLog::checked(frame, defaults, probe);
                        out.push(LogEvent::from_typed(log, meta).into());
                        return Ok(());
                    }
                    JsonShape::Other(kind) => return Err(DecodeError::NotAnObject(kind)),
                    // One event per element: decoded at once below.
                    JsonShape::Array => {}
                }
            } else {
                // Parsed at once, with the source's fields in the same build of the map.
                let meta = || EventMetadata::at(source_id.clone(), ingest_time);
                match parse_json_with(&frame, &defaults)? {
                    v @ Value::Object(_) => out.push(LogEvent::from_value(v, meta()).into()),
                    Value::Array(items) => {
                        if let Some(bad) = items.iter().find(|i| !matches!(i, Value::Object(_))) {
                            return Err(DecodeError::NotAnObject(bad.kind_str_static()));
                        }
                        for mut i in items {
                            if let Value::Object(m) = &mut i {
                                defaults.fill(m);
                            }
                            out.push(LogEvent::from_value(i, meta()).into());
                        }
                    }
                    other => return Err(DecodeError::NotAnObject(other.kind_str_static())),
                }
                return Ok(());
            }
        }
        let first = out.len();
        self.decode_at(frame, source_id, ingest_time, out)?;
        for ev in &mut out[first..] {
            if let Some(Value::Object(m)) = ev.as_log_mut().map(|l| l.value_mut()) {
                defaults.fill(m);
            }
        }
        Ok(())
    }

    /// Decodes one frame into `out`, its events taken in at `ingest_time` (the time of the
    /// read that brought the frame, shared by every frame of that read).
    pub fn decode_at(
        self,
        frame: Bytes,
        source_id: &Option<Arc<str>>,
        ingest_time: DateTime<Utc>,
        out: &mut Vec<Event>,
    ) -> Result<(), DecodeError> {
        let meta = || EventMetadata::at(source_id.clone(), ingest_time);
        match self {
            Decoder::Bytes => {
                out.push(LogEvent::from_message_with(frame, meta()).into());
            }
            Decoder::Registered(d) => return d.decode(frame, source_id, ingest_time, out),
            Decoder::Json => match parse_json_value(&frame)? {
                v @ Value::Object(_) => out.push(LogEvent::from_value(v, meta()).into()),
                Value::Array(items) => {
                    if let Some(bad) = items.iter().find(|i| !matches!(i, Value::Object(_))) {
                        return Err(DecodeError::NotAnObject(bad.kind_str_static()));
                    }
                    for i in items {
                        out.push(LogEvent::from_value(i, meta()).into());
                    }
                }
                other => return Err(DecodeError::NotAnObject(other.kind_str_static())),
            },
            Decoder::Logfmt => {
                let m = logfmt::parse(&frame).map_err(DecodeError::Logfmt)?;
                out.push(LogEvent::from_value(Value::Object(m), meta()).into());
            }
            Decoder::Syslog => {
                let s = std::str::from_utf8(&frame).map_err(|_| DecodeError::Utf8)?;
                let msg = syslog_loose::parse_message(s, syslog_loose::Variant::Either);
                let mut m = ObjectMap::new();
                let mut put = |k: &str, v: Value| {
                    m.insert(KeyString::from(k), v);
                };
                put(
                    "message",
                    Value::Bytes(Bytes::copy_from_slice(msg.msg.as_bytes())),
                );
                if let Some(t) = msg.timestamp {
                    put("timestamp", Value::Timestamp(t.with_timezone(&Utc)));
                }
                let text = |s: &str| Value::Bytes(Bytes::copy_from_slice(s.as_bytes()));
                if let Some(h) = msg.hostname {
                    put("hostname", text(h));
                }
                if let Some(a) = msg.appname {
                    put("appname", text(a));
                }
                if let Some(f) = msg.facility {
                    put("facility", text(f.as_str()));
                }
                if let Some(sv) = msg.severity {
                    put("severity", text(sv.as_str()));
                }
                if let Some(p) = msg.procid {
                    match p {
                        syslog_loose::ProcId::PID(n) => put("procid", Value::Integer(n as i64)),
                        syslog_loose::ProcId::Name(n) => put("procid", text(n)),
                    }
                }
                if let Some(id) = msg.msgid {
                    put("msgid", text(id));
                }
                for el in msg.structured_data {
                    let mut params = ObjectMap::new();
                    for (k, v) in el.params {
                        params.insert(KeyString::from(k), text(v));
                    }
                    put(el.id, Value::Object(params));
                }
                out.push(LogEvent::from_value(Value::Object(m), meta()).into());
            }
        }
        Ok(())
    }
}

trait KindStr {
    fn kind_str_static(&self) -> &'static str;
}

impl KindStr for Value {
    fn kind_str_static(&self) -> &'static str {
        match self {
            Value::Bytes(_) | Value::String(_) | Value::Regex(_) => "string",
            Value::Integer(_) => "integer",
            Value::Float(_) => "float",
            Value::Boolean(_) => "boolean",
            Value::Timestamp(_) => "timestamp",
            Value::Object(_) => "object",
            Value::Array(_) => "array",
            Value::Null => "null",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Encoder;

    fn one(d: Decoder, line: &'static [u8]) -> Result<LogEvent, DecodeError> {
        let mut out = Vec::new();
        d.decode(Bytes::from_static(line), &None, &mut out)?;
        assert_eq!(out.len(), 1);
        match out.pop() {
            Some(Event::Log(l)) => Ok(l),
            other => panic!("expected a log, got {other:?}"),
        }
    }

    #[test]
    fn decodes_each_codec() {
        let l = one(Decoder::Bytes, b"\xff raw").unwrap();
        assert_eq!(
            l.get_field("message"),
            Some(&Value::Bytes(Bytes::from_static(b"\xff raw")))
        );
        let l = one(Decoder::Json, br#"{"a":{"b":[1]}}"#).unwrap();
        assert!(l
            .get(&crate::event::parse_path("a.b[0]").unwrap())
            .is_some());
        assert!(one(Decoder::Json, b"42").is_err());
        let l = one(Decoder::Logfmt, b"a=1 b=\"x y\"").unwrap();
        assert_eq!(
            l.get_field("b"),
            Some(&Value::Bytes(Bytes::from_static(b"x y")))
        );
        let l = one(
            Decoder::Syslog,
            b"<34>1 2024-10-11T22:14:15.003Z mymachine su 77 ID47 [ex@1 k=\"v\"] 'su root' failed",
        )
        .unwrap();
        assert_eq!(
            l.get_field("appname"),
            Some(&Value::Bytes(Bytes::from_static(b"su")))
        );
        assert_eq!(
            l.get_field("severity"),
            Some(&Value::Bytes(Bytes::from_static(b"crit")))
        );
        assert_eq!(l.get_field("procid"), Some(&Value::Integer(77)));
        assert!(matches!(
            l.get_field("timestamp"),
            Some(Value::Timestamp(_))
        ));
    }

    #[derive(Debug)]
    struct Tag;

    impl JsonDefaults for Tag {
        fn push(&self, fields: &mut Vec<(KeyString, Value)>) {
            fields.push(("host".into(), Value::from("node-1")));
        }
    }

    #[test]
    fn lazy_json_gives_the_eager_fields_and_errors() {
        let cases: [&[u8]; 25] = [
            br#"{"a":1,"b":"x","c":[1,2,{"d":null}],"e":{"f":true}}"#,
            b"  {\"ws\" : 1 }  ",
            br#"{"z":1,"a":2,"z":3}"#,
            br#"{"host":"own"}"#,
            br#"{"host":"first","a":1,"host":"last"}"#,
            br#"{"esc":"a\"b\\c\u00e9\ud83d\ude00","\u006b":1}"#,
            br#"{"lone":"\ud800"}"#,
            br#"{"big":1e400}"#,
            br#"{"u":18446744073709551615,"i":-9223372036854775808,"f":-0.0,"g":1.5e-7}"#,
            br#"{"bad":01}"#,
            b"{\"ctl\":\"a\x01b\"}",
            b"{\"utf8\":\"\xff\"}",
            b"{\"k\xfe\":1}",
            b"",
            b"   ",
            b"{} trailing",
            b"{\"a\":1",
            b"42",
            b"\"s\"",
            b"null",
            b"18446744073709551616",
            b"[{\"a\":1},{\"b\":2}]",
            b"[{\"a\":1},3]",
            b"[]",
            b"{\"deep\":[[[[{\"x\":[]}]]]]}",
        ];
        for line in cases {
            lazy_matches_eager(line);
        }
    }

    /// Decodes `line` eagerly and lazily: the same error, or the same events (the lazy ones
    /// with `Tag`'s defaults, added as an insert after the parse would: only where absent).
    /// `decode_lazy` is checked in both of its modes (held lazily, and parsed at once with
    /// the defaults built into the map).
    fn lazy_matches_eager(line: &[u8]) {
        for laziness in [JsonLaziness::new(), JsonLaziness::eager_for_tests()] {
            decode_lazy_matches_eager(line, &laziness);
        }
    }

    fn decode_lazy_matches_eager(line: &[u8], laziness: &JsonLaziness) {
        let show = format!(
            "{} (eager: {})",
            String::from_utf8_lossy(line),
            laziness.is_eager()
        );
        let mut eager = Vec::new();
        let e = Decoder::Json.decode(Bytes::copy_from_slice(line), &None, &mut eager);
        let mut lazy = Vec::new();
        let l = Decoder::Json.decode_lazy(
            laziness,
            Bytes::copy_from_slice(line),
            &None,
            Utc::now(),
            Tag,
            &mut lazy,
        );
        match (e, l) {
            (Err(e), Err(l)) => assert_eq!(l.to_string(), e.to_string(), "{show}"),
            (Ok(()), Ok(())) => {
                assert_eq!(lazy.len(), eager.len(), "{show}");
                for (l, e) in lazy.iter().zip(&eager) {
                    let (l, e) = (l.as_log().unwrap(), e.as_log().unwrap());
                    let mut want = e.value().clone();
                    if let Value::Object(m) = &mut want {
                        if !m.contains_key("host") {
                            m.insert("host".into(), Value::from("node-1"));
                        }
                    }
                    assert_eq!(l.value(), &want, "{show}");
                }
            }
            (e, l) => panic!("{show}: eager gave {e:?}, lazy {l:?}"),
        }
    }

    /// Every decoder on mutated real lines: no panic, and what decodes encodes with every
    /// encoder without a panic (an error is fine: a `folded` encoding of a log that is not a
    /// stack). JSON lines also decode lazily to what they decode eagerly.
    #[test]
    fn fuzz_decoders() {
        let mut seeds: Vec<Vec<u8>> = vec![
            br#"{"a":1,"b":"x","c":[1,2,{"d":null}],"e":{"f":true}}"#.to_vec(),
            br#"{"esc":"a\"b\\c\u00e9\ud83d\ude00","n":-1.5e3}"#.to_vec(),
            br#"[{"a":1},{"b":2}]"#.to_vec(),
            b"ts=2024-10-11T22:14:15Z level=info msg=\"user \\\"x\\\" logged in\" dur=1.5ms ok"
                .to_vec(),
            b"<34>1 2024-10-11T22:14:15.003Z mymachine su 77 ID47 [ex@1 k=\"v\"] 'su root' failed"
                .to_vec(),
            b"<13>Oct 11 22:14:15 host app[42]: a BSD line".to_vec(),
            b"<165>1 2003-10-11T22:14:15.003Z - - - - -".to_vec(),
            "plain text é\u{1F600}".as_bytes().to_vec(),
        ];
        if let Some(dir) = weir_testing::require(
            "the shared Hubble samples (JSON lines)",
            weir_testing::shared_testdata("hubble"),
        ) {
            let text = std::fs::read(dir.join("upstream-samples.jsonl")).unwrap();
            seeds.extend(text.split(|&b| b == b'\n').map(<[u8]>::to_vec));
        }
        weir_testing::fuzz::Fuzz::new("decoders")
            .seeds(seeds)
            .dict([
                "{",
                "}",
                "[",
                "]",
                "\"",
                ":",
                ",",
                "\\u",
                "\\ud800",
                "true",
                "null",
                "=",
                "<13>",
                "1 ",
                " - ",
                "[x@1 a=\"b\"]",
                "T",
                "Z",
            ])
            .run(|line| {
                for d in [
                    Decoder::Bytes,
                    Decoder::Json,
                    Decoder::Logfmt,
                    Decoder::Syslog,
                ] {
                    let mut out = Vec::new();
                    if d.decode(Bytes::copy_from_slice(line), &None, &mut out)
                        .is_ok()
                    {
                        for ev in &out {
                            for enc in [
                                Encoder::Json,
                                Encoder::Text,
                                Encoder::Logfmt,
                                Encoder::Folded,
                            ] {
                                let _ = enc.encode(ev, &mut Vec::new());
                            }
                        }
                    }
                }
                lazy_matches_eager(line);
            });
    }

    #[test]
    fn a_lazy_json_object_is_parsed_only_when_read() {
        let mut out = Vec::new();
        Decoder::Json
            .decode_lazy(
                &JsonLaziness::new(),
                Bytes::from_static(br#"{"host":"own","n":2}"#),
                &None,
                Utc::now(),
                Tag,
                &mut out,
            )
            .unwrap();
        let log = out[0].as_log().unwrap();
        let raw = log.typed::<JsonLog<Tag>>().map(|j| j.raw().clone());
        assert_eq!(raw.as_deref(), Some(&br#"{"host":"own","n":2}"#[..]));
        // The line's own field wins over the default.
        assert_eq!(log.get_field("host"), Some(&Value::from("own")));
        assert_eq!(log.get_field("n"), Some(&Value::from(2)));
        let mut json = Vec::new();
        log.write_json(&mut json).unwrap();
        assert_eq!(json, br#"{"host":"own","n":2}"#);
    }

    #[test]
    fn lines_are_parsed_at_once_while_their_trees_get_built_and_held_lazily_otherwise() {
        let laziness = JsonLaziness::new();
        let line = Bytes::from_static(br#"{"a":1}"#);
        let lazy_count = |out: &[Event]| {
            out.iter()
                .filter(|e| e.as_log().is_some_and(|l| l.typed::<JsonLog>().is_some()))
                .count()
        };
        let run = |read: bool, lines: u64| {
            let mut out = Vec::new();
            for _ in 0..lines {
                Decoder::Json
                    .decode_lazy(&laziness, line.clone(), &None, Utc::now(), (), &mut out)
                    .unwrap();
                if read {
                    assert_eq!(
                        out.last().unwrap().as_log().unwrap().get_field("a"),
                        Some(&Value::from(1))
                    );
                }
            }
            out
        };
        // Starts lazy.
        let window = 256 * super::super::PROBE_EVERY;
        // (The decision falls on the window's last probe, the lines after it follow it.)
        let out = run(true, window);
        let every = super::super::PROBE_EVERY as usize;
        assert_eq!(lazy_count(&out), out.len() - every + 1);
        // Every probe was built: from now on only the probes are lazy.
        assert!(laziness.is_eager());
        let out = run(false, window);
        assert_eq!(lazy_count(&out), out.len() / every + every - 1);
        // The events of that window were not read: lazy again, eager results identical.
        assert!(!laziness.is_eager());
        let out = run(false, 10);
        assert_eq!(lazy_count(&out), 10);
        let mut eager = Vec::new();
        Decoder::Json
            .decode(line.clone(), &None, &mut eager)
            .unwrap();
        assert_eq!(
            out[0].as_log().unwrap().value(),
            eager[0].as_log().unwrap().value()
        );
    }
}
