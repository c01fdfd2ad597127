use std::path::PathBuf;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use weir_pipeline::config::resolve_graph;
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
    let running = match topology::start(config, &graph).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::exit::FAILED;
        }
    };
    let registry = running.registry.clone();
    let shutdown = running.shutdown_token();
    let api_task = if api.enabled {
        match crate::api::serve(api.address, registry.clone(), running.components.clone()).await {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("error: API: {e}");
                shutdown.cancel();
                return crate::exit::FAILED;
            }
        }
    } else {
        None
    };
    tracing::info!(config = %names, components = running.components.len(), api = api.enabled.then(|| api.address.to_string()), "weir started");

    let wait = running.wait();
    tokio::pin!(wait);
    let outcomes = tokio::select! {
        o = &mut wait => o,
        _ = async { tokio::select! { _ = sigterm.recv() => {}, _ = sigint.recv() => {} } } => {
            tracing::info!(grace_period_secs = grace_secs, "stop signal received: draining in-flight events and flushing sinks (send it again to force exit)");
            shutdown.cancel();
            tokio::select! {
                o = &mut wait => o,
                _ = tokio::time::sleep(Duration::from_secs(grace_secs)) => {
                    tracing::error!("grace period of {grace_secs}s expired before the pipeline drained; exiting");
                    return crate::exit::FAILED;
                }
                _ = async { tokio::select! { _ = sigterm.recv() => {}, _ = sigint.recv() => {} } } => {
                    tracing::error!("second stop signal: forcing exit without draining");
                    return crate::exit::FAILED;
                }
            }
        }
    };
    if let Some(t) = api_task {
        t.abort();
    }
    if !quiet {
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
            tracing::info!(
                component = %c.id,
                kind = c.kind.as_str(),
                received = c.received_events(),
                sent = c.sent_events(),
                discarded = c.discarded_events(),
                errors = %errors,
                "summary"
            );
        }
    }
    if outcomes.iter().any(|o| o.error.is_some()) {
        crate::exit::FAILED
    } else {
        tracing::info!("weir stopped cleanly");
        crate::exit::OK
    }
}
