//! `weir`: the command line. `run` a pipeline, `validate` configs, `test` their transforms
//! (`[[tests]]`), draw the `graph`, compute the service map of a flows file (`topology`), `list`
//! the component types this build has, and watch a running one: `tap` its events, `top` its
//! rates.

mod api;
mod api_nats;
mod api_tap;
mod cli;
mod console;
mod fault;
mod registry;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// mimalloc: events are allocated by a reader thread and freed by the worker that finishes
/// them; glibc malloc spent a fifth of the JSON pipeline's time consolidating those cross-thread
/// frees (see bench/RESULTS.md), mimalloc frees them to their owning heap cheaply.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process (`WEIR_THP=1` keeps them). mimalloc
/// asks for huge pages on its arena, and on hosts with THP in `madvise` mode each first touch
/// of a 2 MiB region then makes 2 MiB resident: an idle agent sat at 27 MiB instead of 21.
/// A node agent's memory is what its users budget (DaemonSet limits), so small pages win.
fn no_transparent_huge_pages() {
    if std::env::var_os("WEIR_THP").is_some_and(|v| v == "1") {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_THP_DISABLE) takes integer arguments only and changes a flag of
    // this process's memory map; it touches no memory of ours. Failure (an old kernel) is
    // harmless: THP then stays as the host configured it.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// The pipeline `weir run` uses when no `--config` is given: `config/quickstart.toml`.
pub const QUICKSTART: &str = include_str!("../config/quickstart.toml");

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "A fast, safe observability pipeline agent"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline until its sources end or it is stopped (Ctrl-C / SIGTERM).
    Run {
        /// Config files (TOML), merged. Default: the embedded quickstart pipeline.
        #[arg(short, long = "config", value_name = "FILE")]
        configs: Vec<PathBuf>,
        /// Worker threads of the runtime. Default: one per CPU.
        #[arg(long)]
        threads: Option<usize>,
        /// Seconds to drain and flush after the first stop signal; a second signal forces
        /// exit at once.
        #[arg(long, default_value_t = 30)]
        grace_period_secs: u64,
        /// Do not print the per-component summary when the pipeline ends.
        #[arg(long)]
        quiet: bool,
        /// Reload when the config files change (checked every second; follows symlinks, so
        /// a Kubernetes ConfigMap update is seen). SIGHUP and `POST /api/reload` reload too.
        #[arg(long)]
        watch_config: bool,
    },
    /// Check config files: every error, with file:line:col. Exits non-zero on any error.
    Validate {
        /// Config files; each is checked on its own unless --merge is given.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Treat the files as one pipeline (as `weir run -c a -c b` would).
        #[arg(long)]
        merge: bool,
        /// Skip the checks that touch this machine (data_dir writable, ports free).
        #[arg(long)]
        no_environment: bool,
    },
    /// Run the unit tests of config files (`[[tests]]`): feed their inputs to the transforms
    /// and check what comes out. No source or sink is started. Exits non-zero when a test fails.
    Test {
        /// Config files (TOML), merged into one pipeline (as `weir run -c a -c b` would).
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// Print the pipeline graph as DOT (Graphviz) or Mermaid.
    Graph {
        #[arg(short, long = "config", value_name = "FILE", required = true)]
        configs: Vec<PathBuf>,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Compute the service map of exported network flows (`hubble observe -o jsonpb` lines,
    /// optionally gzip-compressed, or Parquet): the `flow_to_topology` transform over the whole
    /// file.
    #[cfg(feature = "cli-topology")]
    Topology {
        /// The flows file: `.jsonl`, `.jsonl.gz`, or `.parquet` (as the `parquet` sink writes
        /// flows).
        #[arg(short, long, value_name = "FILE")]
        input: PathBuf,
        /// Output: the topology as JSON, a Graphviz DOT graph, or a Mermaid flowchart.
        #[arg(long, value_enum, default_value_t = TopologyFormat::Json)]
        format: TopologyFormat,
        /// What a node is.
        #[arg(long, value_enum, default_value_t = GranularityArg::Workload)]
        granularity: GranularityArg,
        /// At most this many edges; flows of further edges are counted, not mapped.
        #[arg(long, default_value_t = 10_000)]
        max_edges: usize,
    },
    /// Render a flame graph (interactive SVG) of a profile: `perf script` text, folded stacks
    /// (`stack COUNT` lines) or Parquet with `stack` and `count` columns (a file, or a
    /// directory of them), detected from the content.
    #[cfg(feature = "cli-flamegraph")]
    Flamegraph {
        /// The profile to draw.
        #[arg(short, long, value_name = "FILE")]
        input: PathBuf,
        /// Where the SVG goes.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// The title above the graph. Default: `Flame Graph: <input file name>`.
        #[arg(long)]
        title: Option<String>,
        /// For `perf script` input: a sample counts its `period` (as `stackcollapse-perf.pl`)
        /// or 1.
        #[arg(long, value_enum, default_value_t = WeightArg::Period)]
        weight: WeightArg,
    },
    /// Print the events leaving (or entering) components of a running Weir, as JSON lines
    /// (`{"component", "output", "event"}`) or logfmt, until stopped or --limit. Copies only:
    /// the pipeline never waits for a tap; what a slow tap could not take is dropped and
    /// reported as a `{"dropped": N}` line.
    Tap {
        /// The events leaving these components (globs over ids, or `id.output` for one
        /// output; repeatable). Default, when no --inputs-of either: every component.
        #[arg(long = "outputs-of", value_name = "GLOB")]
        outputs_of: Vec<String>,
        /// The events entering these components (globs over ids; repeatable).
        #[arg(long = "inputs-of", value_name = "GLOB")]
        inputs_of: Vec<String>,
        /// Print one event in N.
        #[arg(long, value_name = "N")]
        sample_rate: Option<u64>,
        /// Exit (0) after N events.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
        /// How each event is printed.
        #[arg(long, value_enum, default_value_t = TapFormat::Json)]
        format: TapFormat,
        /// The running Weir's API address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8686")]
        api: String,
        #[command(flatten)]
        nats: NatsOpts,
    },
    /// A live dashboard of a running Weir's components in the terminal: events/s and bytes/s
    /// in and out, errors, discarded events, buffer fill, latency. `q` quits.
    #[cfg(feature = "cli-top")]
    Top {
        /// The running Weir's API address.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8686")]
        api: String,
        #[command(flatten)]
        nats: NatsOpts,
        /// Seconds between refreshes.
        #[arg(long, value_name = "SECS", default_value_t = 1.0)]
        interval: f64,
    },
    /// List the source, transform and sink types of this build.
    List,
    /// Regenerate the documentation made from the code: docs/schemas/config.schema.json and
    /// the options tables of docs/components/*.md (between `<!-- options:begin ... -->` and
    /// `<!-- options:end -->`). For Weir's developers.
    #[command(hide = true)]
    GenerateDocs {
        /// Write nothing; list the stale files and exit 1 if there are any.
        #[arg(long)]
        check: bool,
        /// The documentation directory.
        #[arg(long, value_name = "DIR", default_value = "docs")]
        docs_dir: PathBuf,
    },
}

#[cfg(feature = "cli-topology")]
#[derive(Clone, Copy, ValueEnum)]
pub enum TopologyFormat {
    Json,
    Dot,
    Mermaid,
}

#[cfg(feature = "cli-topology")]
#[derive(Clone, Copy, ValueEnum)]
pub enum GranularityArg {
    Identity,
    Workload,
    Pod,
    Namespace,
    Ip,
}

#[cfg(feature = "cli-topology")]
impl From<GranularityArg> for weir_transforms::flow_to_topology::Granularity {
    fn from(g: GranularityArg) -> Self {
        use weir_transforms::flow_to_topology::Granularity as G;
        match g {
            GranularityArg::Identity => G::Identity,
            GranularityArg::Workload => G::Workload,
            GranularityArg::Pod => G::Pod,
            GranularityArg::Namespace => G::Namespace,
            GranularityArg::Ip => G::Ip,
        }
    }
}

#[cfg(feature = "cli-flamegraph")]
#[derive(Clone, Copy, ValueEnum)]
pub enum WeightArg {
    Period,
    Samples,
}

/// Reaching the API over NATS (`[api.nats]`) instead of `--api`. A token or a user and
/// password come from `$WEIR_NATS_TOKEN`, `$WEIR_NATS_USER` and `$WEIR_NATS_PASSWORD`.
#[derive(Args)]
struct NatsOpts {
    /// Reach the agent through this NATS server (URLs, comma separated) instead of --api.
    #[arg(long, value_name = "URL", requires = "node")]
    nats: Option<String>,
    /// With --nats: the agent's node name (its `[api.nats] node`).
    #[arg(long, value_name = "NAME", requires = "nats")]
    node: Option<String>,
    /// With --nats: a NATS credentials file (JWT and NKey seed).
    #[arg(long, value_name = "FILE", requires = "nats")]
    nats_credentials: Option<PathBuf>,
    /// With --nats: a PEM file of CA certificates to trust (turns TLS on).
    #[arg(long, value_name = "FILE", requires = "nats")]
    nats_ca_file: Option<PathBuf>,
    /// With --nats: a client certificate for mutual TLS (with --nats-key-file).
    #[arg(long, value_name = "FILE", requires = "nats")]
    nats_crt_file: Option<PathBuf>,
    /// With --nats: the private key of --nats-crt-file.
    #[arg(long, value_name = "FILE", requires = "nats")]
    nats_key_file: Option<PathBuf>,
    /// With --nats: send a token or password over a connection without TLS.
    #[arg(long, requires = "nats")]
    nats_allow_plaintext_credentials: bool,
}

impl NatsOpts {
    fn args(self) -> Option<cli::api_client::NatsArgs> {
        Some(cli::api_client::NatsArgs {
            url: self.nats?,
            node: self.node.unwrap_or_default(),
            credentials: self.nats_credentials,
            ca_file: self.nats_ca_file,
            crt_file: self.nats_crt_file,
            key_file: self.nats_key_file,
            allow_plaintext_credentials: self.nats_allow_plaintext_credentials,
        })
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum TapFormat {
    Json,
    Logfmt,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum GraphFormat {
    Dot,
    Mermaid,
}

fn main() -> ExitCode {
    no_transparent_huge_pages();
    let cli = Cli::parse();
    #[cfg(feature = "cli-top")]
    let draws = matches!(cli.command, Command::Top { .. });
    #[cfg(not(feature = "cli-top"))]
    let draws = false;
    // `tap` prints events on stdout: its stderr says only what went wrong.
    let quiet = matches!(cli.command, Command::Tap { .. });
    cli::init_logging(if draws {
        "error"
    } else if quiet {
        "warn"
    } else {
        "info"
    });
    let code = match cli.command {
        Command::Run {
            configs,
            threads,
            grace_period_secs,
            quiet,
            watch_config,
        } => cli::run::run(configs, threads, grace_period_secs, quiet, watch_config),
        Command::Validate {
            files,
            merge,
            no_environment,
        } => cli::validate::validate(&files, merge, !no_environment),
        Command::Test { files } => cli::test::test(&files),
        Command::Graph { configs, format } => cli::graph::graph(&configs, format),
        #[cfg(feature = "cli-topology")]
        Command::Topology {
            input,
            format,
            granularity,
            max_edges,
        } => cli::topology::topology(&input, format, granularity.into(), max_edges),
        #[cfg(feature = "cli-flamegraph")]
        Command::Flamegraph {
            input,
            output,
            title,
            weight,
        } => cli::flamegraph::flamegraph(&cli::flamegraph::Args {
            input,
            output,
            title,
            weight: match weight {
                WeightArg::Period => weir_transforms::stack_fold::Weight::Period,
                WeightArg::Samples => weir_transforms::stack_fold::Weight::Samples,
            },
        }),
        Command::Tap {
            outputs_of,
            inputs_of,
            sample_rate,
            limit,
            format,
            api,
            nats,
        } => cli::tap::tap(&cli::tap::Args {
            api,
            nats: nats.args(),
            outputs_of,
            inputs_of,
            sample_rate,
            limit,
            logfmt: matches!(format, TapFormat::Logfmt),
        }),
        #[cfg(feature = "cli-top")]
        Command::Top {
            api,
            nats,
            interval,
        } => cli::top::top(
            &api,
            nats.args().as_ref(),
            std::time::Duration::try_from_secs_f64(interval)
                .unwrap_or(std::time::Duration::from_secs(1)),
        ),
        Command::List => cli::list(),
        Command::GenerateDocs { check, docs_dir } => cli::docs::generate_docs(&docs_dir, check),
    };
    // Exit without waiting on reader threads blocked in read(2) (stdin): everything that
    // mattered has been drained and flushed by now.
    std::process::exit(code.into());
}

/// Exit codes.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const CONFIG: u8 = 78;
}

#[allow(dead_code)]
fn _assert_exit_code(c: u8) -> ExitCode {
    ExitCode::from(c)
}
