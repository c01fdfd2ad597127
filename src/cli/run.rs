use std::path::PathBuf;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use weir_pipeline::config::{resolve_graph, TlsServerConfig};
use weir_pipeline::topology;

use super::{load, print_errors};

pub fn run(configs: Vec<PathBuf>, threads: Option<usize>, grace_secs: u64, quiet: bool) -> u8 {
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
    rt.block_on(run_async(configs, grace_secs, quiet))
}

async fn run_async(configs: Vec<PathBuf>, grace_secs: u64, quiet: bool) -> u8 {
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
    // Hot reload is not built yet: SIGHUP must not kill the agent (its default action).
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::warn!("SIGHUP received: configuration reload is not supported yet; restart weir to apply changes");
                }
            });
        }
        Err(e) => tracing::warn!("cannot install the SIGHUP handler: {e}"),
    }
    let names = config.files.join(", ");
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
    let api_task = if api.enabled {
        match crate::api::serve(
            &api,
            registry.clone(),
            running.components.clone(),
            running.taps.clone(),
            console,
        )
        .await
        {
            Ok((t, bound)) => {
                eprintln!(
                    "{}",
                    console_line(bound, TlsServerConfig::wanted(api.tls.as_ref()))
                );
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
    let outcomes = tokio::select! {
        o = &mut wait => Some(o),
        why = stop_signal => {
            tracing::info!(grace_period_secs = grace_secs, "{why}: draining in-flight events and flushing sinks (send it again to force exit)");
            None
        }
        f = fatal_failure => {
            tracing::error!(component = %f.id, kind = f.kind.as_str(), grace_period_secs = grace_secs, "a component with on_failure = \"exit\" failed ({}); stopping the pipeline", f.error);
            failed = Some(f);
            None
        }
    };
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
