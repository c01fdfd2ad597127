//! The pipeline graph: resolving `inputs` (named outputs, globs), then the checks that need the
//! whole graph: unknown inputs, cycles, event types that a consumer cannot take, resources
//! claimed twice, an unwritable `data_dir`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::error::{ConfigError, ConfigErrors};
use super::{suggest, Config, InputRef};
use crate::component::{Output, Resource};
use crate::vocabulary::{ComponentKind, DataType};

/// One output of one component: `id` (default output) or `id.name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutputId {
    /// The component's id.
    pub component: String,
    /// The named output, or `None` for the default one.
    pub output: Option<String>,
}

impl fmt::Display for OutputId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.output {
            Some(o) => write!(f, "{}.{o}", self.component),
            None => f.write_str(&self.component),
        }
    }
}

/// The resolved graph.
#[derive(Debug, Clone, Default)]
pub struct Graph {
    /// For each transform and sink, the outputs it reads.
    pub inputs: BTreeMap<String, Vec<OutputId>>,
    /// Every output of every source, transform and sink, with the event types it can carry.
    pub outputs: BTreeMap<OutputId, DataType>,
    /// Transforms in an order where each comes after its inputs.
    pub transform_order: Vec<String>,
    /// Transforms and sinks with outputs, each after its inputs (what the event types are
    /// propagated along).
    pub relay_order: Vec<String>,
}

impl Graph {
    /// The consumers of each output.
    pub fn consumers(&self) -> BTreeMap<OutputId, Vec<String>> {
        let mut m: BTreeMap<OutputId, Vec<String>> = BTreeMap::new();
        for (consumer, ins) in &self.inputs {
            for i in ins {
                m.entry(i.clone()).or_default().push(consumer.clone());
            }
        }
        m
    }
}

fn declared_outputs(config: &Config) -> BTreeMap<OutputId, (ComponentKind, Output)> {
    let mut m = BTreeMap::new();
    for (id, s) in &config.sources {
        for o in s.config.outputs() {
            m.insert(
                OutputId {
                    component: id.clone(),
                    output: o.name.clone(),
                },
                (ComponentKind::Source, o),
            );
        }
    }
    for (id, t) in &config.transforms {
        for o in t.config.outputs() {
            m.insert(
                OutputId {
                    component: id.clone(),
                    output: o.name.clone(),
                },
                (ComponentKind::Transform, o),
            );
        }
    }
    for (id, s) in &config.sinks {
        // A sink has only named outputs.
        for o in s.config.outputs().into_iter().filter(|o| o.name.is_some()) {
            m.insert(
                OutputId {
                    component: id.clone(),
                    output: o.name.clone(),
                },
                (ComponentKind::Sink, o),
            );
        }
    }
    m
}

/// The components whose outputs feed others and that read inputs themselves: transforms, and
/// sinks with outputs. Only they can be part of a cycle.
fn relays(config: &Config) -> BTreeMap<String, ComponentKind> {
    let mut m: BTreeMap<String, ComponentKind> = config
        .transforms
        .keys()
        .map(|id| (id.clone(), ComponentKind::Transform))
        .collect();
    for (id, s) in &config.sinks {
        if s.config.outputs().iter().any(|o| o.name.is_some()) {
            m.insert(id.clone(), ComponentKind::Sink);
        }
    }
    m
}

/// Resolves and checks the graph. `check_environment` adds the checks that touch the machine
/// (data_dir writable, ports free, the files components read: `check_environment` of each
/// source and sink).
pub fn resolve_graph(config: &Config, check_environment: bool) -> Result<Graph, ConfigErrors> {
    resolve_graph_holding(config, check_environment, &BTreeSet::new())
}

/// The TCP ports a configuration listens on (the API's and its components').
pub fn tcp_ports(config: &Config) -> BTreeSet<std::net::SocketAddr> {
    let mut ports: BTreeSet<_> = config
        .sources
        .values()
        .flat_map(|s| s.config.resources())
        .chain(config.sinks.values().flat_map(|s| s.config.resources()))
        .filter_map(|r| match r {
            Resource::Tcp(a) => Some(a),
            _ => None,
        })
        .collect();
    if config.api.enabled {
        ports.insert(config.api.address);
    }
    ports
}

/// [`resolve_graph`] for a reload: the ports in `held` are the running pipeline's, not
/// checked for being free.
pub fn resolve_graph_holding(
    config: &Config,
    check_environment: bool,
    held: &BTreeSet<std::net::SocketAddr>,
) -> Result<Graph, ConfigErrors> {
    let mut errors = Vec::new();
    let declared = declared_outputs(config);
    let mut graph = Graph::default();

    if config.sources.is_empty() {
        errors.push(ConfigError::new(
            "the pipeline has no sources: add at least one `[sources.ID]`",
        ));
    }
    if config.sinks.is_empty() {
        errors.push(ConfigError::new(
            "the pipeline has no sinks: add at least one `[sinks.ID]`",
        ));
    }

    let consumers = config
        .transforms
        .iter()
        .map(|(id, t)| (id, ComponentKind::Transform, &t.inputs))
        .chain(
            config
                .sinks
                .iter()
                .map(|(id, s)| (id, ComponentKind::Sink, &s.inputs)),
        );
    for (id, kind, inputs) in consumers {
        let qualified = format!("{}.{id}", kind.section());
        let mut resolved = BTreeSet::new();
        for input in inputs {
            match resolve_input(config, &declared, id, input) {
                Ok(ids) => resolved.extend(ids),
                Err(msg) => errors.push(
                    ConfigError::new(msg)
                        .at(input.location.clone())
                        .component(&qualified)
                        .field("inputs"),
                ),
            }
        }
        graph
            .inputs
            .insert(id.clone(), resolved.into_iter().collect());
    }

    // Cycles and a topological order of transforms and sinks with outputs (Kahn).
    let relays = relays(config);
    let mut indegree: BTreeMap<&str, usize> = BTreeMap::new();
    for id in relays.keys() {
        let n = graph.inputs[id]
            .iter()
            .filter(|o| relays.contains_key(&o.component))
            .map(|o| o.component.as_str())
            .collect::<BTreeSet<_>>()
            .len();
        indegree.insert(id, n);
    }
    let mut ready: Vec<&str> = indegree
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(id, _)| *id)
        .collect();
    while let Some(id) = ready.pop() {
        graph.relay_order.push(id.to_string());
        for (other, ins) in &graph.inputs {
            if !relays.contains_key(other) {
                continue;
            }
            let reads = ins
                .iter()
                .map(|o| o.component.as_str())
                .collect::<BTreeSet<_>>();
            if reads.contains(id) {
                if let Some(n) = indegree.get_mut(other.as_str()) {
                    *n -= 1;
                    if *n == 0 {
                        ready.push(other);
                    }
                }
            }
        }
    }
    graph.transform_order = graph
        .relay_order
        .iter()
        .filter(|id| config.transforms.contains_key(*id))
        .cloned()
        .collect();
    if graph.relay_order.len() < relays.len() {
        let in_cycle: Vec<(&str, ComponentKind)> = relays
            .iter()
            .filter(|(id, _)| !graph.relay_order.contains(id))
            .map(|(id, k)| (id.as_str(), *k))
            .collect();
        let listed = if in_cycle.iter().all(|(_, k)| *k == ComponentKind::Transform) {
            format!(
                "transforms {}",
                in_cycle
                    .iter()
                    .map(|(c, _)| format!("`{c}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            in_cycle
                .iter()
                .map(|(c, k)| format!("`{c}` ({})", k.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut err = ConfigError::new(format!(
            "cycle in the pipeline between {listed}: a component cannot read its own output"
        ));
        // Reported on the first transform of the cycle, else on its first sink.
        let first = in_cycle
            .iter()
            .find(|(_, k)| *k == ComponentKind::Transform)
            .or(in_cycle.first());
        if let Some((first, kind)) = first {
            err = err
                .component(format!("{}.{first}", kind.section()))
                .field("inputs");
            err.location = match kind {
                ComponentKind::Sink => config.sinks.get(*first).map(|s| s.location.clone()),
                _ => config.transforms.get(*first).map(|t| t.location.clone()),
            };
        }
        errors.push(err);
    }

    // Event types, propagated in topological order.
    for (oid, (kind, o)) in &declared {
        if *kind == ComponentKind::Source {
            graph.outputs.insert(oid.clone(), o.data_type);
        }
    }
    for t in &graph.relay_order {
        let (kind, type_name, input, outputs, location) = match config.transforms.get(t) {
            Some(e) => (
                ComponentKind::Transform,
                &e.type_name,
                e.config.input(),
                e.config.outputs(),
                &e.location,
            ),
            None => match config.sinks.get(t) {
                Some(e) => (
                    ComponentKind::Sink,
                    &e.type_name,
                    e.config.input(),
                    e.config.outputs(),
                    &e.location,
                ),
                None => continue,
            },
        };
        let incoming = graph.inputs[t]
            .iter()
            .filter_map(|o| graph.outputs.get(o))
            .fold(DataType::NONE, |a, b| a.union(*b));
        let accepted = incoming.intersect(input);
        // A sink's mismatch is reported below, input by input.
        if kind == ComponentKind::Transform && !incoming.is_empty() && accepted.is_empty() {
            let mut err = ConfigError::new(format!(
                "`{t}` ({type_name}) accepts {input} but its inputs produce {incoming}"
            ))
            .component(format!("transforms.{t}"))
            .field("inputs");
            err.location = Some(location.clone());
            errors.push(err);
        }
        for o in outputs {
            if kind == ComponentKind::Sink && o.name.is_none() {
                continue;
            }
            let ty = if o.data_type == DataType::ALL {
                accepted
            } else {
                o.data_type
            };
            graph.outputs.insert(
                OutputId {
                    component: t.clone(),
                    output: o.name.clone(),
                },
                ty,
            );
        }
    }
    for (id, s) in &config.sinks {
        let wants = s.config.input();
        for oid in &graph.inputs[id] {
            let Some(has) = graph.outputs.get(oid) else {
                continue;
            };
            if !has.is_empty() && has.intersect(wants).is_empty() {
                let loc = s
                    .inputs
                    .iter()
                    .find(|i| i.text == oid.to_string() || i.text.contains('*'))
                    .map(|i| i.location.clone())
                    .unwrap_or_else(|| s.location.clone());
                errors.push(
                    ConfigError::new(format!(
                        "sink `{id}` ({}) accepts only {wants}, but its input `{oid}` produces {has}",
                        s.type_name
                    ))
                    .at(loc)
                    .component(format!("sinks.{id}"))
                    .field("inputs"),
                );
            }
        }
    }

    for (id, s) in &config.sources {
        if s.acknowledgements && !s.config.can_acknowledge() {
            let mut err = ConfigError::new(format!(
                "source type `{}` cannot hold back its input until delivery, so it does not support acknowledgements",
                s.type_name
            ))
            .component(format!("sources.{id}"))
            .field("acknowledgements");
            err.location = Some(s.location.clone());
            errors.push(err);
        }
    }

    // Transforms are cheap to build: building them here catches program errors (a VRL
    // program that does not compile) before anything starts.
    for (id, t) in &config.transforms {
        let cx = crate::component::TransformContext {
            id: std::sync::Arc::from(id.as_str()),
            data_dir: config.data_dir.clone(),
            metrics: crate::metrics::ComponentMetrics::detached(id),
        };
        if let Err(e) = t.config.build(&cx) {
            let mut err = ConfigError::new(e.to_string()).component(format!("transforms.{id}"));
            err.location = Some(t.location.clone());
            errors.push(err);
        }
    }

    // Resources claimed twice.
    let mut claimed: BTreeMap<Resource, String> = BTreeMap::new();
    if config.api.enabled {
        claimed.insert(
            Resource::Tcp(config.api.address),
            "the API (`[api]`)".into(),
        );
    }
    let claims = config
        .sources
        .iter()
        .map(|(id, s)| (format!("sources.{id}"), s.config.resources(), &s.location))
        .chain(
            config
                .sinks
                .iter()
                .map(|(id, s)| (format!("sinks.{id}"), s.config.resources(), &s.location)),
        );
    for (who, resources, loc) in claims {
        for r in resources {
            if let Some(prev) = claimed.get(&r) {
                errors.push(
                    ConfigError::new(format!(
                        "{} is already used by {prev}",
                        describe_resource(&r)
                    ))
                    .at(loc.clone())
                    .component(&who),
                );
            } else {
                claimed.insert(r, who.clone());
            }
        }
    }
    if check_environment {
        for (r, who) in &claimed {
            if let Resource::Tcp(addr) = r {
                if held.contains(addr) {
                    continue;
                }
                if let Err(e) = std::net::TcpListener::bind(addr) {
                    errors.push(ConfigError::new(format!(
                        "{who} cannot listen on {addr}: {e} (another process has the port?)"
                    )));
                }
            }
        }
        let checks = config
            .sources
            .iter()
            .map(|(id, s)| {
                (
                    format!("sources.{id}"),
                    s.config.check_environment(),
                    &s.location,
                )
            })
            .chain(config.sinks.iter().map(|(id, s)| {
                (
                    format!("sinks.{id}"),
                    s.config.check_environment(),
                    &s.location,
                )
            }));
        for (who, result, loc) in checks {
            if let Err(e) = result {
                errors.push(
                    ConfigError::new(e.to_string())
                        .at(loc.clone())
                        .component(who),
                );
            }
        }
        if let Err(e) = check_writable(&config.data_dir) {
            errors.push(
                ConfigError::new(format!(
                    "data_dir `{}` is not writable: {e}",
                    config.data_dir.display()
                ))
                .field("data_dir"),
            );
        }
    }

    if errors.is_empty() {
        Ok(graph)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn describe_resource(r: &Resource) -> String {
    match r {
        Resource::Tcp(a) => format!("TCP address {a}"),
        Resource::Udp(a) => format!("UDP address {a}"),
        Resource::Stdin => "standard input".into(),
    }
}

fn check_writable(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".weir-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"ok")?;
    std::fs::remove_file(&probe)
}

fn resolve_input(
    config: &Config,
    declared: &BTreeMap<OutputId, (ComponentKind, Output)>,
    me: &str,
    input: &InputRef,
) -> Result<Vec<OutputId>, String> {
    let text = input.text.trim();
    if text.contains('*') || text.contains('?') || text.contains('[') {
        let glob = globset::Glob::new(text)
            .map_err(|e| format!("invalid input pattern `{text}`: {e}"))?
            .compile_matcher();
        // A sink's outputs are read only when named: a pattern matches sources and
        // transforms, so that `inputs = ["*"]` does not start reading dead letters.
        let hits: Vec<OutputId> = declared
            .iter()
            .filter(|(o, (kind, _))| {
                *kind != ComponentKind::Sink && o.component != me && glob.is_match(o.to_string())
            })
            .map(|(o, _)| o.clone())
            .collect();
        if hits.is_empty() {
            return Err(format!(
                "input pattern `{text}` matches no source or transform"
            ));
        }
        return Ok(hits);
    }
    let exact = OutputId {
        component: text.to_string(),
        output: None,
    };
    if declared.contains_key(&exact) {
        if text == me {
            return Err(format!("`{me}` lists itself as an input"));
        }
        return Ok(vec![exact]);
    }
    if let Some((c, o)) = text.split_once('.') {
        let named = OutputId {
            component: c.to_string(),
            output: Some(o.to_string()),
        };
        if declared.contains_key(&named) {
            if c == me {
                return Err(format!("`{me}` lists its own output `{text}` as an input"));
            }
            return Ok(vec![named]);
        }
        if config.kind_of(c).is_some() {
            let names: Vec<String> = declared
                .keys()
                .filter(|k| k.component == c)
                .map(|k| k.to_string())
                .collect();
            if names.is_empty() && config.sinks.contains_key(c) {
                return Err(format!("`{c}` is a sink and has no output to read from"));
            }
            let mut msg = format!("`{c}` has no output named `{o}`");
            match suggest(text, names.iter().map(String::as_str)) {
                Some(s) => msg.push_str(&format!(", did you mean `{s}`?")),
                None => msg.push_str(&format!("; its outputs are {}", names.join(", "))),
            }
            return Err(msg);
        }
    }
    let has_outputs = declared.keys().any(|k| k.component == text);
    if config.sinks.contains_key(text) && !has_outputs {
        return Err(format!("`{text}` is a sink and has no output to read from"));
    }
    if config.kind_of(text).is_some() {
        let names: Vec<String> = declared
            .keys()
            .filter(|k| k.component == text)
            .map(|k| format!("`{k}`"))
            .collect();
        return Err(format!(
            "`{text}` has only named outputs: read one of {}",
            names.join(", ")
        ));
    }
    let names: Vec<String> = declared.keys().map(|k| k.to_string()).collect();
    let mut msg = format!("unknown input `{text}`");
    if let Some(s) = suggest(text, names.iter().map(String::as_str)) {
        msg.push_str(&format!(", did you mean `{s}`?"));
    } else if !names.is_empty() {
        msg.push_str(&format!(
            "; the sources and transforms are {}",
            names.join(", ")
        ));
    }
    Err(msg)
}
