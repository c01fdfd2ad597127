//! Turning TOML text into a [`Config`]: interpolation, parsing with spans, the common component
//! keys, then each component's own typed config. Errors are collected, not returned at the first.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::error::{ConfigError, ConfigErrors, Location};
use super::{
    interpolate, suggest, ApiConfig, BufferConfig, Config, InputRef, SinkEntry, SourceEntry,
    TransformEntry,
};
use crate::component::Registry;
use crate::vocabulary::{ComponentKind, OnFailure};

/// A configuration text and the name it is reported under.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The name errors are reported under (the file's path).
    pub name: String,
    /// The TOML text.
    pub text: String,
}

const TOP_LEVEL_KEYS: &[&str] = &[
    "data_dir",
    "memory_limit",
    "api",
    "sources",
    "transforms",
    "sinks",
    "tests",
];
const SOURCE_COMMON: &[&str] = &["type", "acknowledgements", "on_failure"];
const TRANSFORM_COMMON: &[&str] = &["type", "inputs", "on_failure"];
const SINK_COMMON: &[&str] = &["type", "inputs", "buffer", "on_failure"];

/// Reads and merges files. Errors of every file are reported together.
pub fn load_files(
    paths: &[PathBuf],
    registry: &Registry,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut sources = Vec::new();
    let mut errors = Vec::new();
    for p in paths {
        match std::fs::read_to_string(p) {
            Ok(text) => sources.push(ConfigSource {
                name: p.display().to_string(),
                text,
            }),
            Err(e) => errors.push(ConfigError::new(format!(
                "cannot read config file {}: {e}",
                p.display()
            ))),
        }
    }
    if paths.is_empty() {
        errors.push(ConfigError::new("no configuration file given"));
    }
    match load_sources(&sources, registry, env) {
        Ok(c) if errors.is_empty() => Ok(c),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(mut e) => {
            errors.append(&mut e.0);
            Err(ConfigErrors(errors))
        }
    }
}

/// Parses one configuration text (tests, embedded defaults).
pub fn load_str(
    name: &str,
    text: &str,
    registry: &Registry,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    load_sources(
        &[ConfigSource {
            name: name.to_string(),
            text: text.to_string(),
        }],
        registry,
        env,
    )
}

/// Parses and merges several configuration texts.
pub fn load_sources(
    sources: &[ConfigSource],
    registry: &Registry,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut cx = Loader {
        registry,
        config: Config {
            data_dir: PathBuf::from("./weir-data"),
            ..Default::default()
        },
        errors: Vec::new(),
        data_dir_set: None,
        memory_limit_set: None,
        api_set: None,
    };
    for s in sources {
        cx.load_one(s, env);
    }
    if cx.errors.is_empty() {
        Ok(cx.config)
    } else {
        // Report in reading order: file by file, top to bottom.
        let files = cx.config.files.clone();
        cx.errors.sort_by_key(|e| match &e.location {
            Some(l) => (
                files
                    .iter()
                    .position(|f| *f == l.file)
                    .unwrap_or(usize::MAX),
                l.line,
                l.column,
            ),
            None => (usize::MAX, 0, 0),
        });
        Err(ConfigErrors(cx.errors))
    }
}

struct Loader<'r> {
    registry: &'r Registry,
    config: Config,
    errors: Vec<ConfigError>,
    data_dir_set: Option<Location>,
    memory_limit_set: Option<Location>,
    api_set: Option<Location>,
}

/// One file being read.
struct FileCx<'a> {
    file: Arc<str>,
    text: &'a str,
}

impl FileCx<'_> {
    fn loc(&self, span: &Range<usize>) -> Location {
        Location::at(&self.file, self.text, span.start)
    }
}

/// Syntax errors reported per file and kind: after the first ones, most follow from them, and
/// thousands (a garbled file) would take long to place and longer to read.
const MAX_SYNTAX_ERRORS: usize = 20;

impl Loader<'_> {
    /// Says how many errors of `what` were not shown, if `found` is over the limit.
    fn more_errors(&mut self, found: usize, what: &str, file: &Arc<str>) {
        if found > MAX_SYNTAX_ERRORS {
            self.errors.push(ConfigError::new(format!(
                "{} more {what} errors in {file} not shown (the first {MAX_SYNTAX_ERRORS} are)",
                found - MAX_SYNTAX_ERRORS
            )));
        }
    }

    fn load_one(&mut self, src: &ConfigSource, env: &dyn Fn(&str) -> Option<String>) {
        let file: Arc<str> = Arc::from(src.name.as_str());
        self.config.files.push(Arc::clone(&file));
        let (text, interp_errors) = interpolate(&src.text, env);
        let n = interp_errors.len();
        for e in interp_errors.into_iter().take(MAX_SYNTAX_ERRORS) {
            self.errors
                .push(ConfigError::new(e.message).at(Location::at(&file, &src.text, e.offset)));
        }
        self.more_errors(n, "environment reference", &file);
        let fcx = FileCx { file, text: &text };
        let (root, parse_errors) = DeTable::parse_recoverable(&text);
        let n = parse_errors.len();
        for e in parse_errors.into_iter().take(MAX_SYNTAX_ERRORS) {
            let loc = e.span().map(|s| fcx.loc(&s));
            let mut err = ConfigError::new(format!("invalid TOML: {}", e.message().trim()));
            err.location = loc;
            self.errors.push(err);
        }
        self.more_errors(n, "TOML", &fcx.file);
        let root = root.into_inner();
        for (key, value) in root {
            let key_span = key.span();
            let name = key.into_inner();
            match name.as_ref() {
                "data_dir" => self.data_dir(&fcx, value),
                "memory_limit" => self.memory_limit(&fcx, value),
                "api" => self.api(&fcx, value),
                "sources" => self.section(&fcx, ComponentKind::Source, value),
                "transforms" => self.section(&fcx, ComponentKind::Transform, value),
                "sinks" => self.section(&fcx, ComponentKind::Sink, value),
                "tests" => self.tests(&fcx, value),
                other => {
                    let mut msg = format!("unknown top-level key `{other}`");
                    if let Some(s) = suggest(other, TOP_LEVEL_KEYS.iter().copied()) {
                        msg.push_str(&format!(", did you mean `{s}`?"));
                    } else {
                        msg.push_str(&format!(", expected one of {}", list(TOP_LEVEL_KEYS)));
                    }
                    self.errors
                        .push(ConfigError::new(msg).at(fcx.loc(&key_span)).field(other));
                }
            }
        }
    }

    fn data_dir(&mut self, fcx: &FileCx<'_>, value: Spanned<DeValue<'_>>) {
        let span = value.span();
        match value.into_inner() {
            DeValue::String(s) => {
                let loc = fcx.loc(&span);
                if let Some(prev) = &self.data_dir_set {
                    if self.config.data_dir != Path::new(s.as_ref()) {
                        self.errors.push(
                            ConfigError::new(format!(
                                "`data_dir` is set again with a different value (first set at {prev})"
                            ))
                            .at(loc)
                            .field("data_dir"),
                        );
                        return;
                    }
                }
                self.config.data_dir = PathBuf::from(s.as_ref());
                self.data_dir_set = Some(loc);
            }
            other => self.errors.push(
                ConfigError::new(format!(
                    "invalid type: {}, expected a string (a directory path)",
                    kind_name(&other)
                ))
                .at(fcx.loc(&span))
                .field("data_dir"),
            ),
        }
    }

    fn memory_limit(&mut self, fcx: &FileCx<'_>, value: Spanned<DeValue<'_>>) {
        let span = value.span();
        let loc = fcx.loc(&span);
        let n = match value.into_inner() {
            DeValue::Integer(i) => u64::from_str_radix(i.as_str(), i.radix()).ok(),
            _ => None,
        };
        let Some(n) = n else {
            self.errors.push(
                ConfigError::new(
                    "invalid value, expected a number of bytes (an integer, 0 for no limit)",
                )
                .at(loc)
                .field("memory_limit"),
            );
            return;
        };
        if let Some(prev) = &self.memory_limit_set {
            if self.config.memory_limit != Some(n) {
                self.errors.push(
                    ConfigError::new(format!(
                        "`memory_limit` is set again with a different value (first set at {prev})"
                    ))
                    .at(loc)
                    .field("memory_limit"),
                );
                return;
            }
        }
        self.config.memory_limit = Some(n);
        self.memory_limit_set = Some(loc);
    }

    fn api(&mut self, fcx: &FileCx<'_>, value: Spanned<DeValue<'_>>) {
        let span = value.span();
        let fields = field_spans(&value);
        match <ApiConfig as serde::Deserialize>::deserialize(toml::de::ValueDeserializer::from(
            value,
        )) {
            Ok(api) => {
                if let Some(prev) = &self.api_set {
                    self.errors.push(
                        ConfigError::new(format!("`[api]` is set twice (first at {prev})"))
                            .at(fcx.loc(&span)),
                    );
                }
                self.api_set = Some(fcx.loc(&span));
                if let Some(Err(e)) = api.auth.as_ref().map(|a| a.check()) {
                    self.errors
                        .push(ConfigError::new(e).at(fcx.loc(&span)).field("api"));
                }
                self.config.api = api;
            }
            Err(e) => self
                .errors
                .push(serde_error(fcx, &e, &span, &fields, "api".into(), &[])),
        }
    }

    /// `[[tests]]`: parsed and placed here, so that a malformed test is an error for every
    /// command; what the tests name is checked by `weir test`.
    fn tests(&mut self, fcx: &FileCx<'_>, value: Spanned<DeValue<'_>>) {
        let span = value.span();
        let DeValue::Array(items) = value.into_inner() else {
            self.errors.push(
                ConfigError::new(
                    "`tests` must be an array of tables: write each test as `[[tests]]`",
                )
                .at(fcx.loc(&span))
                .field("tests"),
            );
            return;
        };
        let first = self.config.tests.len();
        for (i, item) in items.into_iter().enumerate() {
            let sp = item.span();
            let fields = field_spans(&item);
            let name = match item.get_ref() {
                DeValue::Table(t) => t.get("name").and_then(|n| match n.get_ref() {
                    DeValue::String(s) => Some(s.to_string()),
                    _ => None,
                }),
                _ => None,
            };
            let who = match &name {
                Some(n) => format!("tests[{n:?}]"),
                None => format!("tests[{}]", first + i),
            };
            match <super::UnitTest as serde::Deserialize>::deserialize(
                toml::de::ValueDeserializer::from(item),
            ) {
                Ok(mut test) => {
                    test.location = Some(fcx.loc(&sp));
                    test.place(&|s| fcx.loc(s));
                    self.config.tests.push(test);
                }
                Err(e) => self
                    .errors
                    .push(serde_error(fcx, &e, &sp, &fields, who, &[])),
            }
        }
    }

    fn section(&mut self, fcx: &FileCx<'_>, kind: ComponentKind, value: Spanned<DeValue<'_>>) {
        let span = value.span();
        let DeValue::Table(table) = value.into_inner() else {
            self.errors.push(
                ConfigError::new(format!(
                    "`{}` must be a table of components (`[{}.ID]`)",
                    kind.section(),
                    kind.section()
                ))
                .at(fcx.loc(&span)),
            );
            return;
        };
        for (id, body) in table {
            let id_span = id.span();
            let id = id.into_inner().into_owned();
            self.component(fcx, kind, id, id_span, body);
        }
    }

    fn component(
        &mut self,
        fcx: &FileCx<'_>,
        kind: ComponentKind,
        id: String,
        id_span: Range<usize>,
        body: Spanned<DeValue<'_>>,
    ) {
        let qualified = format!("{}.{id}", kind.section());
        let loc = fcx.loc(&id_span);
        if id.is_empty()
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            self.errors.push(
                ConfigError::new(format!(
                    "invalid component id `{id}`: use letters, digits, `_` and `-` (a `.` would clash with named outputs)"
                ))
                .at(loc.clone())
                .component(&qualified),
            );
        }
        if let Some(prev) = self.existing_location(&id) {
            self.errors.push(
                ConfigError::new(format!(
                    "duplicate component id `{id}` (already defined at {prev}); ids are shared by sources, transforms and sinks"
                ))
                .at(loc)
                .component(&qualified),
            );
            return;
        }
        let body_span = body.span();
        let fingerprint = fingerprint(&body);
        let DeValue::Table(mut table) = body.into_inner() else {
            self.errors.push(
                ConfigError::new("a component must be a table with at least a `type`")
                    .at(fcx.loc(&body_span))
                    .component(&qualified),
            );
            return;
        };
        let mut ok = true;

        // `type`
        let type_name = match table.remove("type") {
            Some(v) => {
                let sp = v.span();
                match v.into_inner() {
                    DeValue::String(s) => Some((s.into_owned(), sp)),
                    other => {
                        self.errors.push(
                            ConfigError::new(format!(
                                "invalid type: {}, expected a string",
                                kind_name(&other)
                            ))
                            .at(fcx.loc(&sp))
                            .component(&qualified)
                            .field("type"),
                        );
                        None
                    }
                }
            }
            None => {
                self.errors.push(
                    ConfigError::new("missing field `type`")
                        .at(loc.clone())
                        .component(&qualified)
                        .field("type"),
                );
                None
            }
        };

        // `inputs`
        let inputs = if kind == ComponentKind::Source {
            if let Some(v) = table.remove("inputs") {
                self.errors.push(
                    ConfigError::new(
                        "a source has no `inputs`; did you mean to make it a transform or a sink?",
                    )
                    .at(fcx.loc(&v.span()))
                    .component(&qualified)
                    .field("inputs"),
                );
            }
            Vec::new()
        } else {
            match table.remove("inputs") {
                Some(v) => match self.inputs(fcx, &qualified, v) {
                    Some(i) => i,
                    None => {
                        ok = false;
                        Vec::new()
                    }
                },
                None => {
                    self.errors.push(
                        ConfigError::new(
                            "missing field `inputs`: list the components this one reads from",
                        )
                        .at(loc.clone())
                        .component(&qualified)
                        .field("inputs"),
                    );
                    ok = false;
                    Vec::new()
                }
            }
        };

        // `buffer` (sinks)
        let mut buffer = BufferConfig::default();
        if kind == ComponentKind::Sink {
            if let Some(v) = table.remove("buffer") {
                let sp = v.span();
                let fields = field_spans(&v);
                match <BufferConfig as serde::Deserialize>::deserialize(
                    toml::de::ValueDeserializer::from(v),
                ) {
                    Ok(b) if b.max_events == 0 => {
                        self.errors.push(
                            ConfigError::new("`max_events` must be at least 1")
                                .at(fcx.loc(&sp))
                                .component(&qualified)
                                .field("buffer.max_events"),
                        );
                        ok = false;
                    }
                    Ok(b)
                        if b.kind == super::BufferType::Disk
                            && (b.max_size as u64) < crate::buffer::disk::MIN_DISK_BYTES =>
                    {
                        self.errors.push(
                            ConfigError::new(format!(
                                "`max_size` of a disk buffer must be at least {} bytes",
                                crate::buffer::disk::MIN_DISK_BYTES
                            ))
                            .at(fcx.loc(&sp))
                            .component(&qualified)
                            .field("buffer.max_size"),
                        );
                        ok = false;
                    }
                    Ok(b)
                        if b.kind == super::BufferType::Memory
                            && (b.max_size == 0
                                || b.max_size > crate::buffer::MAX_BUFFER_BYTES) =>
                    {
                        self.errors.push(
                            ConfigError::new(format!(
                                "`max_size` must be from 1 to {} bytes",
                                crate::buffer::MAX_BUFFER_BYTES
                            ))
                            .at(fcx.loc(&sp))
                            .component(&qualified)
                            .field("buffer.max_size"),
                        );
                        ok = false;
                    }
                    Ok(b) => buffer = b,
                    Err(e) => {
                        let mut err = serde_error(fcx, &e, &sp, &fields, qualified.clone(), &[]);
                        err.field = Some(format!(
                            "buffer{}",
                            err.field.map(|f| format!(".{f}")).unwrap_or_default()
                        ));
                        self.errors.push(err);
                        ok = false;
                    }
                }
            }
        }

        // `on_failure` (every component)
        let mut on_failure = OnFailure::default();
        if let Some(v) = table.remove("on_failure") {
            let sp = v.span();
            match v.into_inner() {
                DeValue::String(s) if s == "restart" => on_failure = OnFailure::Restart,
                DeValue::String(s) if s == "exit" => on_failure = OnFailure::Exit,
                other => {
                    let got = match &other {
                        DeValue::String(s) => format!("`{s}`"),
                        other => kind_name(other).to_string(),
                    };
                    self.errors.push(
                        ConfigError::new(format!(
                            "invalid value: {got}, expected `restart` or `exit`"
                        ))
                        .at(fcx.loc(&sp))
                        .component(&qualified)
                        .field("on_failure"),
                    );
                    ok = false;
                }
            }
        }

        // `acknowledgements` (sources; unset: on when the source can)
        let mut acknowledgements = None;
        if kind == ComponentKind::Source {
            if let Some(v) = table.remove("acknowledgements") {
                let sp = v.span();
                match v.into_inner() {
                    DeValue::Boolean(b) => acknowledgements = Some(b),
                    other => {
                        self.errors.push(
                            ConfigError::new(format!(
                                "invalid type: {}, expected a boolean",
                                kind_name(&other)
                            ))
                            .at(fcx.loc(&sp))
                            .component(&qualified)
                            .field("acknowledgements"),
                        );
                        ok = false;
                    }
                }
            }
        }

        let Some((type_name, type_span)) = type_name else {
            return;
        };
        let common: &[&str] = match kind {
            ComponentKind::Source => SOURCE_COMMON,
            ComponentKind::Transform => TRANSFORM_COMMON,
            ComponentKind::Sink => SINK_COMMON,
        };
        let rest = Spanned::new(body_span.clone(), DeValue::Table(table));
        let fields = field_spans(&rest);
        let de = toml::de::ValueDeserializer::from(rest);
        let reg = self.registry;
        macro_rules! build {
            ($map:expr) => {{
                match $map.get(type_name.as_str()) {
                    None => {
                        let mut msg = format!("unknown {} type `{type_name}`", kind.as_str());
                        match suggest(&type_name, $map.keys().copied()) {
                            Some(s) => msg.push_str(&format!(", did you mean `{s}`?")),
                            None => msg.push_str(&format!(
                                "; this build has: {}",
                                $map.keys().copied().collect::<Vec<_>>().join(", ")
                            )),
                        }
                        self.errors.push(
                            ConfigError::new(msg)
                                .at(fcx.loc(&type_span))
                                .component(&qualified)
                                .field("type"),
                        );
                        None
                    }
                    Some(t) => match (t.parse)(de) {
                        Ok(c) => Some(c),
                        Err(e) => {
                            self.errors.push(serde_error(
                                fcx,
                                &e,
                                &body_span,
                                &fields,
                                qualified.clone(),
                                common,
                            ));
                            None
                        }
                    },
                }
            }};
        }
        match kind {
            ComponentKind::Source => {
                if let Some(config) = build!(reg.sources) {
                    if ok {
                        self.config.sources.insert(
                            id,
                            SourceEntry {
                                type_name,
                                fingerprint,
                                acknowledgements: acknowledgements
                                    .unwrap_or_else(|| config.can_acknowledge()),
                                config,
                                on_failure,
                                location: loc,
                            },
                        );
                    }
                }
            }
            ComponentKind::Transform => {
                if let Some(config) = build!(reg.transforms) {
                    if ok {
                        self.config.transforms.insert(
                            id,
                            TransformEntry {
                                type_name,
                                fingerprint,
                                config,
                                inputs,
                                on_failure,
                                location: loc,
                            },
                        );
                    }
                }
            }
            ComponentKind::Sink => {
                if let Some(config) = build!(reg.sinks) {
                    if ok {
                        self.config.sinks.insert(
                            id,
                            SinkEntry {
                                type_name,
                                fingerprint,
                                config,
                                inputs,
                                buffer,
                                on_failure,
                                location: loc,
                            },
                        );
                    }
                }
            }
        }
    }

    fn existing_location(&self, id: &str) -> Option<Location> {
        self.config
            .sources
            .get(id)
            .map(|e| e.location.clone())
            .or_else(|| self.config.transforms.get(id).map(|e| e.location.clone()))
            .or_else(|| self.config.sinks.get(id).map(|e| e.location.clone()))
    }

    fn inputs(
        &mut self,
        fcx: &FileCx<'_>,
        qualified: &str,
        v: Spanned<DeValue<'_>>,
    ) -> Option<Vec<InputRef>> {
        let sp = v.span();
        let DeValue::Array(items) = v.into_inner() else {
            self.errors.push(
                ConfigError::new("`inputs` must be an array of component ids, e.g. [\"in\"]")
                    .at(fcx.loc(&sp))
                    .component(qualified)
                    .field("inputs"),
            );
            return None;
        };
        if items.is_empty() {
            self.errors.push(
                ConfigError::new("`inputs` is empty: list the components this one reads from")
                    .at(fcx.loc(&sp))
                    .component(qualified)
                    .field("inputs"),
            );
            return None;
        }
        let mut out = Vec::new();
        for item in items {
            let isp = item.span();
            match item.into_inner() {
                DeValue::String(s) => out.push(InputRef {
                    text: s.into_owned(),
                    location: fcx.loc(&isp),
                }),
                other => {
                    self.errors.push(
                        ConfigError::new(format!(
                            "invalid type: {} in `inputs`, expected a string",
                            kind_name(&other)
                        ))
                        .at(fcx.loc(&isp))
                        .component(qualified)
                        .field("inputs"),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }
}

/// The key and value span of each entry of a table value, then those of the tables in it
/// (two levels down, with dotted names: `tls.ca_file`, `grpc.tls.crt_file`).
fn field_spans(v: &Spanned<DeValue<'_>>) -> Vec<(String, Range<usize>, Range<usize>)> {
    let mut out = Vec::new();
    if let DeValue::Table(t) = v.get_ref() {
        out.extend(
            t.iter()
                .map(|(k, v)| (k.get_ref().to_string(), k.span(), v.span())),
        );
        nested_spans("", v, 0, &mut out);
    }
    out
}

fn nested_spans(
    prefix: &str,
    v: &Spanned<DeValue<'_>>,
    depth: usize,
    out: &mut Vec<(String, Range<usize>, Range<usize>)>,
) {
    let DeValue::Table(t) = v.get_ref() else {
        return;
    };
    for (k, v) in t.iter() {
        let name = format!("{prefix}{}", k.get_ref());
        if depth > 0 {
            out.push((name.clone(), k.span(), v.span()));
        }
        if depth < 2 {
            nested_spans(&format!("{name}."), v, depth + 1, out);
        }
    }
}

/// Options renamed when the sinks got their shared `batch` and `request` tables: the old
/// name and the new one. An unknown field with an old name says where it went, when the
/// component has the new name's table.
const RENAMED: &[(&str, &str)] = &[
    ("batch_max_events", "batch.max_events"),
    ("batch_max_bytes", "batch.max_bytes"),
    ("batch_timeout_secs", "batch.timeout_secs"),
    ("max_rows", "batch.max_events"),
    ("max_bytes", "batch.max_bytes"),
    ("max_age_secs", "batch.timeout_secs"),
    ("concurrency", "request.concurrency"),
    ("max_inflight", "request.concurrency"),
    ("max_inflight_batches", "request.concurrency"),
    ("request_timeout_secs", "request.timeout_secs"),
    ("ack_timeout_secs", "request.timeout_secs"),
    (
        "retry_initial_backoff_secs",
        "request.retry_initial_backoff_secs",
    ),
    ("retry_max_backoff_secs", "request.retry_max_duration_secs"),
    ("max_retries", "request.retry_attempts"),
];

/// Where a renamed option went, if `name` is an old name and the component has its table.
fn renamed(name: &str, expected: &[String]) -> Option<&'static str> {
    RENAMED
        .iter()
        .find(|(old, new)| {
            *old == name
                && new
                    .split_once('.')
                    .is_some_and(|(table, _)| expected.iter().any(|e| e == table))
        })
        .map(|(_, new)| *new)
}

/// Turns a serde error from a component's typed config into a located, helpful error.
fn serde_error(
    fcx: &FileCx<'_>,
    e: &toml::de::Error,
    whole: &Range<usize>,
    fields: &[(String, Range<usize>, Range<usize>)],
    component: String,
    common: &[&str],
) -> ConfigError {
    let raw = e.message().trim().to_string();
    let mut field = None;
    let mut span = e.span();
    let mut message = raw.clone();
    if let Some(name) = backticked_after(&raw, "unknown field ") {
        field = Some(name.clone());
        if let Some((_, ks, _)) = fields.iter().find(|(k, _, _)| *k == name) {
            span = Some(ks.clone());
        } else if let Some((k, ks, _)) = span.as_ref().and_then(|s| {
            fields.iter().find(|(k, ks, _)| {
                k.ends_with(&format!(".{name}")) && ks.start <= s.start && s.start < ks.end
            })
        }) {
            // A field of a table (`tls.cert_file`): name it with its table.
            field = Some(k.clone());
            span = Some(ks.clone());
        }
        let expected = backticked_all(raw.split_once("expected").map_or("", |(_, r)| r));
        // The common keys (`type`, `inputs`...) are candidates at the top level only.
        let top_level = field.as_deref() == Some(name.as_str());
        let candidates: Vec<&str> = expected
            .iter()
            .map(String::as_str)
            .chain(common.iter().copied().filter(|_| top_level))
            .collect();
        message = format!("unknown field `{name}`");
        let renamed_tls = renamed_tls_option(&name).filter(|(new, _)| candidates.contains(new));
        match (renamed(&name, &expected), renamed_tls) {
            (Some(new), _) => message.push_str(&format!(": it is now `{new}`")),
            (None, Some((_, hint))) => message.push_str(&format!(": {hint}")),
            (None, None) => match suggest(&name, candidates.iter().copied()) {
                Some(s) => message.push_str(&format!(", did you mean `{s}`?")),
                None if !candidates.is_empty() => {
                    message.push_str(&format!(", expected one of {}", list(&candidates)))
                }
                None => message.push_str(": this component takes no options"),
            },
        }
    } else if let Some(name) = backticked_after(&raw, "missing field ") {
        field = Some(name);
        span = Some(whole.clone());
    } else if let Some(s) = &span {
        // The error points into one field's value: name that field (the innermost one).
        if let Some((k, _, _)) = fields
            .iter()
            .filter(|(_, _, vs)| vs.start <= s.start && s.end <= vs.end)
            .min_by_key(|(_, _, vs)| vs.len())
        {
            field = Some(k.clone());
        }
    }
    let mut err = ConfigError::new(message).component(component);
    err.field = field;
    err.location = Some(fcx.loc(span.as_ref().unwrap_or(whole)));
    err
}

/// The `tls` options Weir used to have under other names (and the names other agents use for
/// them), with what to write instead: every component's `tls` table now has the same options
/// (Vector's names). Only used when the table that refused the name has the new option.
fn renamed_tls_option(name: &str) -> Option<(&'static str, &'static str)> {
    Some(match name {
        "cert_file" | "cert_path" | "crt_path" => (
            "crt_file",
            "renamed `crt_file` (the `tls` table has the same options in every component)",
        ),
        "key_password" | "key_passphrase" => (
            "key_pass",
            "renamed `key_pass` (the `tls` table has the same options in every component)",
        ),
        "insecure" | "insecure_skip_verify" | "skip_verify" | "tls_skip_verify" => (
            "verify_certificate",
            "write `verify_certificate = false` (and/or `verify_hostname = false`)",
        ),
        "verify" | "verify_server_cert" => ("verify_certificate", "renamed `verify_certificate`"),
        "skip_hostname_verification" | "insecure_skip_hostname_verify" => {
            ("verify_hostname", "write `verify_hostname = false`")
        }
        _ => return None,
    })
}

fn backticked_after(msg: &str, prefix: &str) -> Option<String> {
    let rest = msg.strip_prefix(prefix)?;
    let rest = rest.strip_prefix('`')?;
    let end = rest.find('`')?;
    Some(rest[..end].to_string())
}

fn backticked_all(s: &str) -> Vec<String> {
    s.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, p)| p.to_string())
        .collect()
}

fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn kind_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "string",
        DeValue::Integer(_) => "integer",
        DeValue::Float(_) => "float",
        DeValue::Boolean(_) => "boolean",
        DeValue::Datetime(_) => "datetime",
        DeValue::Array(_) => "array",
        DeValue::Table(_) => "table",
    }
}

/// A digest of a component's table as parsed (after interpolation; the same whatever its
/// formatting, key order or place in the file): a reload rebuilds a component whose digest
/// changed. A digest rather than the text, so that no credential is kept twice.
fn fingerprint(body: &Spanned<DeValue<'_>>) -> u64 {
    use serde::Deserialize;
    use std::hash::{Hash, Hasher};
    let text = toml::Value::deserialize(toml::de::ValueDeserializer::from(body.clone()))
        .map(|v| format!("{v:?}"))
        .unwrap_or_default();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;
    use serde::Deserialize;

    use super::*;
    use crate::component::{Sink, SinkConfig, SinkContext};
    use crate::config::{Count, Secs};
    use crate::vocabulary::DataType;
    use crate::BoxError;

    // Read by serde only: the tests look at the errors.
    #[allow(dead_code)]
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct Limits {
        #[serde(default)]
        max_events: Option<Count>,
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize, schemars::JsonSchema)]
    #[serde(deny_unknown_fields)]
    struct TimedSink {
        #[serde(default)]
        timeout_secs: Option<Secs>,
        #[serde(default)]
        batch: Option<Limits>,
    }

    #[async_trait]
    impl SinkConfig for TimedSink {
        async fn build(&self, _cx: SinkContext) -> Result<Box<dyn Sink>, BoxError> {
            Err("not built in these tests".into())
        }
        fn input(&self) -> DataType {
            DataType::ALL
        }
    }

    fn errors(body: &str) -> Vec<String> {
        let mut reg = Registry::default();
        reg.add_sink::<TimedSink>("timed", "a sink with a duration");
        let text = format!("[sinks.out]\ntype = \"timed\"\ninputs = [\"in\"]\n{body}");
        match load_str("f.toml", &text, &reg, &|_| None) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    /// Found by fuzzing: a garbled file of 20,000 broken table headers gave 20,000 errors,
    /// each placed by scanning the text from its start (seconds of work).
    #[test]
    fn a_garbled_file_reports_its_first_syntax_errors_and_a_count() {
        let e = errors(&"[sou\n".repeat(20_000));
        let toml = e.iter().filter(|e| e.contains("invalid TOML")).count();
        assert_eq!(toml, MAX_SYNTAX_ERRORS, "{e:?}");
        assert!(e[0].starts_with("f.toml:4:5: invalid TOML"), "{}", e[0]);
        let more = format!(
            "{} more TOML errors in f.toml not shown (the first 20 are)",
            20_000 - MAX_SYNTAX_ERRORS
        );
        assert!(e.contains(&more), "{e:?}");
        assert!(e.len() < MAX_SYNTAX_ERRORS + 5, "{e:?}");
    }

    #[test]
    fn a_duration_out_of_range_is_a_located_error() {
        assert_eq!(
            errors("timeout_secs = 1e20\n"),
            ["f.toml:4:16: sinks.out.timeout_secs: invalid value: `1e20`, expected a positive number of seconds, at most 31536000 (one year)"]
        );
        assert_eq!(
            errors("timeout_secs = nan\n"),
            ["f.toml:4:16: sinks.out.timeout_secs: invalid value: `NaN`, expected a positive number of seconds, at most 31536000 (one year)"]
        );
        assert!(errors("timeout_secs = 2.5\n").is_empty());
    }

    #[test]
    fn a_zero_count_in_an_inner_table_is_a_located_error() {
        assert_eq!(
            errors("batch.max_events = 0\n"),
            ["f.toml:4:20: sinks.out.batch.max_events: invalid value: `0`, expected a positive integer (at least 1)"]
        );
        assert_eq!(
            errors("[sinks.out.batch]\nmax_events = 0\n"),
            ["f.toml:5:14: sinks.out.batch.max_events: invalid value: `0`, expected a positive integer (at least 1)"]
        );
    }

    #[test]
    fn a_renamed_option_names_its_new_name() {
        assert_eq!(
            errors("batch_max_events = 5\n"),
            ["f.toml:4:1: sinks.out.batch_max_events: unknown field `batch_max_events`: it is now `batch.max_events`"]
        );
        // Only where the component has the new name's table.
        assert_eq!(
            errors("max_inflight = 5\n"),
            ["f.toml:4:1: sinks.out.max_inflight: unknown field `max_inflight`, expected one of `timeout_secs`, `batch`, `type`, `inputs`, `buffer`, `on_failure`"]
        );
    }

    #[test]
    fn memory_limit_and_buffer_size_are_checked() {
        let mut reg = Registry::default();
        reg.add_sink::<TimedSink>("timed", "a sink with a duration");
        let load = |text: &str| load_str("f.toml", text, &reg, &|_| None);
        let sink = "[sinks.out]\ntype = \"timed\"\ninputs = [\"in\"]\n";
        let c = load(&format!("memory_limit = 134_217_728\n{sink}")).unwrap();
        assert_eq!(c.memory_limit, Some(128 << 20));
        assert_eq!(c.sinks["out"].buffer.max_size, 16 << 20);
        let c = load(&format!("{sink}buffer.max_size = 1024\n")).unwrap();
        assert_eq!(c.sinks["out"].buffer.max_size, 1024);
        assert_eq!(load(sink).unwrap().memory_limit, None);
        let e = |text: &str| match load(text) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        };
        assert_eq!(
            e(&format!("memory_limit = \"1GiB\"\n{sink}")),
            ["f.toml:1:16: memory_limit: invalid value, expected a number of bytes (an integer, 0 for no limit)"]
        );
        assert_eq!(
            e(&format!("{sink}buffer.max_size = 0\n")),
            ["f.toml:4:1: sinks.out.buffer.max_size: `max_size` must be from 1 to 4294967295 bytes"]
        );
        // A disk buffer: at least 256 KiB, and no 4 GiB ceiling (it is not a semaphore).
        assert_eq!(
            e(&format!("{sink}buffer.type = \"disk\"\nbuffer.max_size = 1024\n")),
            ["f.toml:4:1: sinks.out.buffer.max_size: `max_size` of a disk buffer must be at least 262144 bytes"]
        );
        let c = load(&format!(
            "{sink}buffer.type = \"disk\"\nbuffer.max_size = 17179869184\nbuffer.fsync = \"interval\"\n"
        ))
        .unwrap();
        assert_eq!(c.sinks["out"].buffer.kind, crate::config::BufferType::Disk);
        assert_eq!(
            c.sinks["out"].buffer.fsync,
            crate::config::FsyncPolicy::Interval
        );
    }
}
