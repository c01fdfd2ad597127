//! The options every server of Weir shares (the `otlp` source, the `prometheus_exporter`
//! sink, the API): the server `tls` table and the `auth` table, as plain data. The code that
//! uses them (rustls, the connection limits, the token check) is in `weir-connect`
//! (`tls.rs`, `server.rs`); the core only needs their shape, so that `[api]` can have them.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Secret;

/// `tls` of a component that listens: the certificate it serves and, for mutual TLS, the CAs
/// client certificates must be signed by.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsServerConfig {
    /// Serve TLS. Default: true when any other `tls` option is set.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// A PEM file of the CAs that must have signed the clients' certificates: with it,
    /// clients must present a certificate (mutual TLS). Default: none (no client
    /// certificate asked for).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The PEM certificate (chain) served. Required when TLS is on.
    #[serde(default)]
    pub crt_file: Option<PathBuf>,
    /// The PEM private key of `crt_file`. Required when TLS is on.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The passphrase of an encrypted `key_file`: not supported by the servers; give them
    /// an unencrypted key. Default: none.
    #[serde(default)]
    pub key_pass: Option<Secret>,
    /// With `ca_file`: `true` refuses clients without a certificate, `false` accepts them
    /// (a certificate that is presented is still checked). Default: true when `ca_file` is
    /// set.
    #[serde(default)]
    pub verify_certificate: Option<bool>,
}

impl TlsServerConfig {
    /// Whether TLS is on: `enabled`, or else any other option set.
    pub fn wanted(tls: Option<&Self>) -> bool {
        tls.is_some_and(|t| {
            t.enabled.unwrap_or(
                t.ca_file.is_some()
                    || t.crt_file.is_some()
                    || t.key_file.is_some()
                    || t.key_pass.is_some()
                    || t.verify_certificate.is_some(),
            )
        })
    }
}

/// How clients of a server authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ServerAuthStrategy {
    /// An `Authorization: Bearer <token>` header (gRPC: the `authorization` metadata, as
    /// OpenTelemetry exporters send it with `OTEL_EXPORTER_OTLP_HEADERS`).
    Bearer,
}

/// `auth` of a component that listens: the token every request must carry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerAuthConfig {
    /// How clients authenticate: `bearer` (the only strategy).
    pub strategy: ServerAuthStrategy,
    /// The token clients must send (`Authorization: Bearer <token>`). Keep it out of the
    /// file with environment interpolation (`token = "${WEIR_TOKEN}"`). Printable ASCII
    /// without spaces, at least 16 characters.
    pub token: Secret,
}

/// The shortest token accepted: a guessable token is no protection.
pub const MIN_TOKEN_CHARS: usize = 16;

impl ServerAuthConfig {
    /// Checks the token: printable ASCII without spaces (what a header can carry), at least
    /// [`MIN_TOKEN_CHARS`] characters. The message never contains the token.
    pub fn check(&self) -> Result<(), String> {
        let token = self.token.expose();
        if token.len() < MIN_TOKEN_CHARS {
            return Err(format!(
                "`auth.token` is {} characters long: at least {MIN_TOKEN_CHARS} are required",
                token.len()
            ));
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "`auth.token` must be printable ASCII without spaces (it is sent in an HTTP header)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The default `max_connections` of the API and of `prometheus_exporter` (a few scrapers and
/// probes).
pub const DEFAULT_SMALL_SERVER_CONNECTIONS: usize = 64;
/// The default `idle_timeout_secs` of every server.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 60;
/// The default `request_read_timeout_secs` of every server.
pub const DEFAULT_REQUEST_READ_TIMEOUT_SECS: u64 = 30;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_checked_and_never_printed() {
        let a: ServerAuthConfig = toml::from_str("strategy = 'bearer'\ntoken = 'short'").unwrap();
        let e = a.check().unwrap_err();
        assert!(!e.contains("short"), "{e}");
        let a: ServerAuthConfig =
            toml::from_str("strategy = 'bearer'\ntoken = 'a token with spaces in it'").unwrap();
        assert!(a.check().is_err());
        let a: ServerAuthConfig =
            toml::from_str("strategy = 'bearer'\ntoken = 's3cr3t-t0ken-0123456789'").unwrap();
        a.check().unwrap();
        assert!(!format!("{a:?}").contains("s3cr3t"));
        assert!(toml::from_str::<ServerAuthConfig>("strategy = 'basic'\ntoken = 'x'").is_err());
    }
}
