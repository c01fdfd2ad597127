pub mod api_client;
pub mod docs;
#[cfg(feature = "cli-flamegraph")]
pub mod flamegraph;
pub mod graph;
pub mod http;
pub mod run;
pub mod tap;
pub mod test;
#[cfg(feature = "cli-top")]
pub mod top;
#[cfg(feature = "cli-topology")]
pub mod topology;
pub mod validate;

use std::path::PathBuf;

use weir_pipeline::config::{load_files, load_str, resolve_graph, Config, ConfigErrors, Graph};

use crate::registry::registry;

/// Logs go to stderr; `WEIR_LOG` (or `RUST_LOG`) sets the filter, default `default` (`info`
/// for most commands; `error` for `weir top`, whose screen a log line would tear).
pub fn init_logging(default: &str) {
    let filter = std::env::var("WEIR_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

pub fn env_lookup(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The name the embedded quickstart is loaded under.
pub const QUICKSTART_NAME: &str = "<embedded quickstart>";

/// The text of a configuration loaded under `name` (a file, or the embedded quickstart).
pub fn config_text(name: &str) -> Option<String> {
    if name == QUICKSTART_NAME {
        return Some(crate::QUICKSTART.to_string());
    }
    std::fs::read_to_string(name).ok()
}

/// Loads the given files, or the embedded quickstart when there are none.
pub fn load(configs: &[PathBuf]) -> Result<Config, ConfigErrors> {
    let reg = registry();
    if configs.is_empty() {
        load_str(QUICKSTART_NAME, crate::QUICKSTART, &reg, &env_lookup)
    } else {
        load_files(configs, &reg, &env_lookup)
    }
}

/// Loads the files as one pipeline and resolves its graph (without the checks that touch
/// this machine); on errors, prints them and gives the exit code.
pub fn load_graph(configs: &[PathBuf]) -> Result<(Config, Graph), u8> {
    let loaded = load(configs).and_then(|c| resolve_graph(&c, false).map(|g| (c, g)));
    loaded.map_err(|e| {
        print_errors(&e);
        crate::exit::CONFIG
    })
}

pub fn print_errors(errors: &ConfigErrors) {
    for e in &errors.0 {
        eprintln!("error: {e}");
    }
    eprintln!(
        "{} error{} found",
        errors.0.len(),
        if errors.0.len() == 1 { "" } else { "s" }
    );
}

pub fn list() -> u8 {
    let reg = registry();
    println!("Sources:");
    for t in reg.sources.values() {
        println!("  {:<20} {}", t.name, t.description);
    }
    println!("\nTransforms:");
    for t in reg.transforms.values() {
        println!("  {:<20} {}", t.name, t.description);
    }
    println!("\nSinks:");
    for t in reg.sinks.values() {
        println!("  {:<20} {}", t.name, t.description);
    }
    println!("\nDecoders (decoding.codec):");
    for (name, description) in [
        ("bytes", "The frame as the `message` field"),
        (
            "json",
            "A JSON object's fields (an array: one event per object)",
        ),
        ("logfmt", "`key=value` pairs"),
        ("syslog", "RFC 5424 or RFC 3164 syslog lines"),
    ] {
        println!("  {name:<20} {description}");
    }
    for (name, description) in &reg.decoders {
        println!("  {name:<20} {description}");
    }
    crate::exit::OK
}
