use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;

use tokio::signal::unix::{signal, SignalKind};
use weir_pipeline::config::{resolve_graph, TlsServerConfig};
use weir_pipeline::topology;

use super::{load, print_errors};

pub fn run(
    configs: Vec<PathBuf>,
    threads: Option<usize>,
    grace_secs: u64,
    quiet: bool,
    watch: bool,
) -> u8 {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().thread_name("weir-worker");
    if let Some(t) = threads {
        builder.worker_threads(t.max(1));
    }
    let rt = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return crate::exit::FAILED;
        }
    };
    rt.block_on(run_async(configs, grace_secs, quiet, watch))
}

/// A reload request: where to answer (status and JSON body), if anyone waits.
type ReloadReply = tokio::sync::oneshot::Sender<(StatusCode, serde_json::Value)>;

async fn run_async(configs: Vec<PathBuf>, grace_secs: u64, quiet: bool, watch: bool) -> u8 {
    let config = match load(&configs) {
        Ok(c) => c,
        Err(e) => {
            print_errors(&e);
            return crate::exit::CONFIG;
        }
    };
    let graph = match resolve_graph(&config, true) {
        Ok(g) => g,
        Err(e) => {
            print_errors(&e);
            return crate::exit::CONFIG;
        }
    };
    let api = config.api.clone();
    let mut sigterm = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install the SIGTERM handler: {e}");
            return crate::exit::FAILED;
        }
    };
    let mut sigint = match signal(SignalKind::interrupt()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot install the SIGINT handler: {e}");
            return crate::exit::FAILED;
        }
    };
    // Reloads: SIGHUP, `POST /api/reload` and `--watch-config` all ask the loop below, one
    // at a time. (SIGHUP must not kill the agent, its default action, even with nothing to
    // reload.)
    let (reload_tx, mut reload_rx) = tokio::sync::mpsc::channel::<ReloadReply>(4);
    let reloadable = !configs.is_empty();
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            let tx = reload_tx.clone();
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    if !reloadable {
                        tracing::warn!("SIGHUP received: the embedded quickstart has no configuration file to reload");
                        continue;
                    }
                    tracing::info!("SIGHUP received: reloading the configuration");
                    let (reply, _) = tokio::sync::oneshot::channel();
                    if tx.send(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
        Err(e) => tracing::warn!("cannot install the SIGHUP handler: {e}"),
    }
    if watch && reloadable {
        tokio::spawn(watch_config(configs.clone(), reload_tx.clone()));
    } else if watch {
        tracing::warn!(
            "--watch-config: the embedded quickstart has no configuration file to watch"
        );
    }
    let names = config.files.join(", ");
    // The ports the running pipeline holds: a reload does not find them "in use".
    let mut held = weir_pipeline::config::tcp_ports(&config);
    let console = crate::console::ConsoleConfig::from_config(
        &config,
        &weir_pipeline::config::Redactor::new(&crate::registry::registry()),
        &super::config_text,
        &super::env_lookup,
    );
    let mut running = match topology::start(config, &graph).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::exit::FAILED;
        }
    };
    let registry = running.registry.clone();
    let shutdown = running.shutdown_token();
    let stop = running.stop_token();
    let mut fatal = running.take_fatal();
    let components: crate::api::SharedComponents =
        Arc::new(RwLock::new(running.components.clone()));
    let api_task = if api.serves() {
        match crate::api::serve(
            &api,
            registry.clone(),
            components.clone(),
            reloadable.then(|| reload_tx.clone()),
            running.taps.clone(),
            console,
        )
        .await
        {
            Ok((t, bound)) => {
                if let Some(bound) = bound {
                    eprintln!(
                        "{}",
                        console_line(bound, TlsServerConfig::wanted(api.tls.as_ref()))
                    );
                }
                Some(t)
            }
            Err(e) => {
                eprintln!("error: API: {e}");
                shutdown.cancel();
                stop.cancel();
                return crate::exit::FAILED;
            }
        }
    } else {
        None
    };
    tracing::info!(config = %names, components = running.components.len(), api = api.enabled.then(|| api.address.to_string()), "weir started");

    let wait = running.wait();
    tokio::pin!(wait);
    // A component with `on_failure = "exit"` that failed: the pipeline stops, the exit is
    // non-zero whatever else happens.
    let mut failed: Option<topology::Fatal> = None;
    let stop_signal = async {
        tokio::select! { _ = sigterm.recv() => "stop signal received", _ = sigint.recv() => "stop signal received" }
    };
    let fatal_failure = async {
        match fatal.as_mut() {
            Some(rx) => match rx.recv().await {
                Some(f) => f,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    };
    drop(reload_tx);
    let outcomes = {
        tokio::pin!(stop_signal);
        tokio::pin!(fatal_failure);
        loop {
            tokio::select! {
                o = &mut wait => break Some(o),
                why = &mut stop_signal => {
                    tracing::info!(grace_period_secs = grace_secs, "{why}: draining in-flight events and flushing sinks (send it again to force exit)");
                    break None;
                }
                f = &mut fatal_failure => {
                    tracing::error!(component = %f.id, kind = f.kind.as_str(), grace_period_secs = grace_secs, "a component with on_failure = \"exit\" failed ({}); stopping the pipeline", f.error);
                    failed = Some(f);
                    break None;
                }
                Some(reply) = reload_rx.recv() => {
                    let answer = reload(&mut running, &configs, &registry, &components, &mut held).await;
                    let _ = reply.send(answer);
                }
            }
        }
    };
    // Reloads asked for from here on are answered "stopping" (their senders see it closed).
    drop(reload_rx);
    let outcomes = match outcomes {
        Some(o) => Some(o),
        None => {
            shutdown.cancel();
            tokio::select! {
                o = &mut wait => Some(o),
                _ = tokio::time::sleep(Duration::from_secs(grace_secs)) => {
                    tracing::error!("grace period of {grace_secs}s expired before the pipeline drained; giving up on what is not delivered");
                    None
                }
                _ = async { tokio::select! { _ = sigterm.recv() => {}, _ = sigint.recv() => {} } } => {
                    tracing::error!("second stop signal: forcing exit without draining");
                    None
                }
            }
        }
    };
    let drained = outcomes.is_some();
    if !drained {
        // Sinks still retrying give up now: what they hold is reported errored, so sources with
        // acknowledgements keep it (their checkpoints stay before it) for the next start.
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut wait).await;
    }
    if let Some(t) = api_task {
        t.abort();
    }
    let mut not_delivered_total = 0u64;
    for c in registry.components() {
        let errors = c.errors();
        let errors = if errors.is_empty() {
            "0".to_string()
        } else {
            errors
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        // What failed instances held, and without a full drain what is left.
        let not_delivered = c.lost_in_failures() + if drained { 0 } else { not_delivered(&c) };
        not_delivered_total += not_delivered;
        if !quiet || not_delivered > 0 {
            tracing::info!(
                component = %c.id,
                kind = c.kind.as_str(),
                received = c.received_events(),
                sent = c.sent_events(),
                discarded = c.discarded_events(),
                not_delivered,
                restarts = c.restarts(),
                errors = %errors,
                "summary"
            );
        }
    }
    let component_failed = outcomes
        .as_ref()
        .is_some_and(|o| o.iter().any(|o| o.error.is_some()));
    // A component that failed and was started again dropped what it held: not a clean run.
    let restarts: u64 = registry.components().iter().map(|c| c.restarts()).sum();
    if restarts > 0 {
        tracing::error!(restarts, "components failed during the run and were started again; the events they held were not delivered in this run (sources with acknowledgements read them again at the next start)");
    }
    if let Some(f) = &failed {
        tracing::error!(component = %f.id, not_delivered = not_delivered_total, "weir stopped because a component failed: {}", f.error);
        crate::exit::FAILED
    } else if !drained || component_failed || restarts > 0 || not_delivered_total > 0 {
        tracing::error!(
            not_delivered = not_delivered_total,
            "weir stopped without delivering everything: {not_delivered_total} event(s) not delivered (sources with acknowledgements read them again at the next start)"
        );
        crate::exit::FAILED
    } else {
        tracing::info!("weir stopped cleanly");
        crate::exit::OK
    }
}

/// Loads the configuration files again and applies them to the running pipeline: the answer
/// for `POST /api/reload` (also logged, counted in `weir_config_reloads_total{outcome}` and
/// shown by `/health`).
async fn reload(
    running: &mut topology::RunningTopology,
    configs: &[PathBuf],
    registry: &weir_pipeline::metrics::MetricsRegistry,
    components: &crate::api::SharedComponents,
    held: &mut std::collections::BTreeSet<std::net::SocketAddr>,
) -> (StatusCode, serde_json::Value) {
    let loaded = load(configs)
        .and_then(|c| weir_pipeline::config::resolve_graph_holding(&c, true, held).map(|g| (c, g)));
    let (config, graph) = match loaded {
        Ok(x) => x,
        Err(e) => {
            let errors: Vec<String> = e.0.iter().map(|e| e.to_string()).collect();
            tracing::error!(
                "configuration reload refused, the running pipeline stays: {} error(s):\n{}",
                errors.len(),
                errors.join("\n")
            );
            registry.record_reload("invalid", Some(errors.join("; ")));
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "outcome": "invalid", "errors": errors }),
            );
        }
    };
    held.extend(weir_pipeline::config::tcp_ports(&config));
    match running.reload(config, &graph).await {
        Ok(summary) => {
            tracing::info!(
                added = ?summary.added,
                removed = ?summary.removed,
                changed = ?summary.changed,
                unchanged = summary.unchanged,
                "configuration reloaded"
            );
            if !summary.left_for_restart.is_empty() {
                tracing::warn!(settings = ?summary.left_for_restart, "configuration reloaded; these settings take effect at the next start");
            }
            registry.record_reload("applied", None);
            if let Ok(mut c) = components.write() {
                *c = running.components.clone();
            }
            (
                StatusCode::OK,
                json!({ "outcome": "applied", "summary": summary }),
            )
        }
        Err(e) => {
            tracing::error!(outcome = e.outcome(), "configuration reload: {e}");
            registry.record_reload(e.outcome(), Some(e.to_string()));
            if let Ok(mut c) = components.write() {
                *c = running.components.clone();
            }
            let status = match e {
                topology::ReloadError::NeedsRestart(_) => StatusCode::CONFLICT,
                topology::ReloadError::Build(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            (
                status,
                json!({ "outcome": e.outcome(), "error": e.to_string() }),
            )
        }
    }
}

/// `--watch-config`: reads the configuration files every second and asks for a reload when
/// what they hold changed and then stayed the same for one more read (a file being written,
/// or a Kubernetes ConfigMap's symlink swap half done, is not reloaded). Reading follows
/// symlinks, so a swapped ConfigMap directory is seen.
async fn watch_config(configs: Vec<PathBuf>, tx: tokio::sync::mpsc::Sender<ReloadReply>) {
    let digest = || {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for c in &configs {
            match std::fs::read(c) {
                Ok(bytes) => bytes.hash(&mut h),
                Err(e) => e.kind().to_string().hash(&mut h),
            }
        }
        h.finish()
    };
    let mut applied = digest();
    let mut seen = applied;
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = digest();
        if now != applied && now == seen {
            applied = now;
            tracing::info!("--watch-config: the configuration files changed; reloading");
            let (reply, _) = tokio::sync::oneshot::channel();
            if tx.send(reply).await.is_err() {
                return;
            }
        }
        seen = now;
    }
}

/// How often `--watch-config` reads the configuration files.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// The events left in a component when the pipeline did not drain: in its input buffer, and
/// for a sink also in hand (received, neither sent nor discarded).
fn not_delivered(c: &weir_pipeline::metrics::ComponentMetrics) -> u64 {
    use weir_pipeline::vocabulary::ComponentKind;
    let buffered = c.buffer_fill().map_or(0, |(events, _)| events as u64);
    match c.kind {
        ComponentKind::Source => 0,
        ComponentKind::Transform => buffered,
        ComponentKind::Sink => buffered + c.in_hand(),
    }
}

/// The line `weir run` prints once the API listens: where to open the console.
fn console_line(bound: std::net::SocketAddr, tls: bool) -> String {
    let mut at = bound;
    // A wildcard address is not one a browser can open: this machine's loopback is.
    if at.ip().is_unspecified() {
        at.set_ip(match at {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let scheme = if tls { "https" } else { "http" };
    format!("Weir's console: {scheme}://{at}/")
}
