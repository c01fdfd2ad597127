//! The NATS connection shared by the `nats` source and sink: servers, authentication (user and
//! password, token, NKey seed, credentials file), TLS, and reconnects with backoff that are
//! logged and counted in the component's metrics (`weir_nats_disconnects_total`,
//! `weir_nats_reconnects_total`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub use async_nats;

use weir_pipeline::metrics::ComponentMetrics;

use crate::tls::{ClientTls, TlsClientConfig, TlsError};

/// `auth`: how to authenticate to the NATS server (the data lives in the core, so that
/// `[api.nats]` has it too).
pub use weir_pipeline::config::NatsAuthConfig;

/// A configuration mistake in the connection options.
#[derive(Debug, thiserror::Error)]
pub enum NatsConfigError {
    #[error("`url` is empty: give one or more servers, e.g. \"nats://127.0.0.1:4222\"")]
    NoServer,
    #[error("`url`: {0:?} is not a NATS server address: {1}")]
    BadUrl(String, String),
    #[error("`auth`: set only one of user/password, token, nkey_seed, credentials_file")]
    SeveralAuth,
    #[error("`auth`: `user` and `password` go together")]
    UserWithoutPassword,
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("`auth.credentials_file` {0}: {1}")]
    Credentials(String, std::io::Error),
    #[error("{0}")]
    Plaintext(String),
}

/// What [`connect`] needs: the component's connection options.
#[derive(Debug, Clone, Copy)]
pub struct NatsConnect<'a> {
    /// One or more server URLs, comma separated.
    pub url: &'a str,
    pub auth: &'a NatsAuthConfig,
    /// `tls`: on when `tls.enabled`, when another `tls` option is set, or with a `tls://`
    /// URL.
    pub tls: Option<&'a TlsClientConfig>,
    /// The connection name shown by the server (`weir-<component id>` when unset).
    pub name: Option<&'a str>,
    /// `allow_plaintext_credentials`: send a password or token without TLS.
    pub allow_plaintext_credentials: bool,
}

/// The delay before reconnect attempt `attempts` (1-based): 0 for the first, then doubling from
/// 100 ms up to 5 s.
pub fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let exp = (attempts - 2).min(6) as u32;
    Duration::from_millis(100 * 2u64.pow(exp)).min(Duration::from_secs(5))
}

/// Connects in the background: returns at once with a client that connects (and reconnects,
/// with backoff) on its own, so Weir starts while the server is down and catches up when it
/// comes. Connects, disconnects and reconnects are logged and counted in `metrics`.
pub async fn connect(
    c: NatsConnect<'_>,
    metrics: Arc<ComponentMetrics>,
) -> Result<async_nats::Client, NatsConfigError> {
    let servers: Vec<async_nats::ServerAddr> = c
        .url
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<async_nats::ServerAddr>()
                .map_err(|e| NatsConfigError::BadUrl(s.to_string(), e.to_string()))
        })
        .collect::<Result<_, _>>()?;
    if servers.is_empty() {
        return Err(NatsConfigError::NoServer);
    }
    let a = c.auth;
    let methods = [
        a.user.is_some() || a.password.is_some(),
        a.token.is_some(),
        a.nkey_seed.is_some(),
        a.credentials_file.is_some(),
    ];
    if methods.iter().filter(|m| **m).count() > 1 {
        return Err(NatsConfigError::SeveralAuth);
    }
    let tls_url = servers.iter().any(|s| s.as_url_str().starts_with("tls://"));
    let encrypted = tls_url || TlsClientConfig::wanted(c.tls);
    if a.password.is_some() || a.token.is_some() {
        crate::plaintext_credentials(
            "`auth.password` or `auth.token`",
            c.url,
            encrypted,
            c.allow_plaintext_credentials,
        )
        .map_err(NatsConfigError::Plaintext)?;
    }
    let mut opts = async_nats::ConnectOptions::new();
    match (&a.user, &a.password) {
        (Some(u), Some(p)) => opts = opts.user_and_password(u.clone(), p.expose().to_string()),
        (None, None) => {}
        _ => return Err(NatsConfigError::UserWithoutPassword),
    }
    if let Some(t) = &a.token {
        opts = opts.token(t.expose().to_string());
    }
    if let Some(seed) = &a.nkey_seed {
        opts = opts.nkey(seed.expose().to_string());
    }
    if let Some(path) = &a.credentials_file {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|e| NatsConfigError::Credentials(path.display().to_string(), e))?;
    }
    if let Some(t) = TlsClientConfig::unless_disabled(c.tls) {
        // Every file is read and checked here, also when TLS is off, so that a wrong path is
        // found at start.
        let cfg = t.rustls_client_config(&[])?;
        if TlsClientConfig::wanted(Some(t)) {
            opts = opts.require_tls(true);
        }
        opts = opts.tls_client_config(cfg);
    }
    let name = c
        .name
        .map(str::to_string)
        .unwrap_or_else(|| format!("weir-{}", metrics.id));
    let was_down = Arc::new(AtomicBool::new(false));
    let m = metrics.clone();
    opts = opts
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| {
            let m = m.clone();
            let was_down = was_down.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        if was_down.swap(false, Ordering::AcqRel) {
                            m.add_counter("nats_reconnects_total", None, 1);
                            tracing::info!(component = %m.id, "reconnected to NATS");
                        } else {
                            tracing::info!(component = %m.id, "connected to NATS");
                        }
                    }
                    async_nats::Event::Disconnected => {
                        was_down.store(true, Ordering::Release);
                        m.add_counter("nats_disconnects_total", None, 1);
                        tracing::warn!(component = %m.id, "disconnected from NATS; reconnecting with backoff");
                    }
                    async_nats::Event::SlowConsumer(_) => {
                        m.error(
                            "slow_consumer",
                            1,
                            &"the NATS client dropped messages: a subscription fell behind",
                        );
                    }
                    async_nats::Event::ServerError(e) => {
                        m.error("server", 1, &format_args!("NATS server error: {e}"));
                    }
                    async_nats::Event::ClientError(e) => {
                        m.error("client", 1, &format_args!("NATS client error: {e}"));
                    }
                    other => tracing::info!(component = %m.id, "NATS connection: {other}"),
                }
            }
        });
    // With `retry_on_initial_connect`, connecting only fails on bad options.
    opts.connect(servers)
        .await
        .map_err(|e| NatsConfigError::BadUrl(c.url.to_string(), e.to_string()))
}

/// Whether `s` can be published to: non-empty dot-separated tokens without whitespace or
/// wildcards.
pub fn is_valid_publish_subject(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|t| {
            !t.is_empty() && t != "*" && t != ">" && !t.bytes().any(|b| b.is_ascii_whitespace())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_delays() {
        assert!(is_valid_publish_subject("logs.web.1"));
        assert!(!is_valid_publish_subject("logs..web"));
        assert!(!is_valid_publish_subject("logs.*"));
        assert!(!is_valid_publish_subject("logs.a b"));
        assert!(!is_valid_publish_subject(""));
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        assert_eq!(reconnect_delay(2), Duration::from_millis(100));
        assert_eq!(reconnect_delay(3), Duration::from_millis(200));
        assert_eq!(reconnect_delay(50), Duration::from_secs(5));
    }
}
