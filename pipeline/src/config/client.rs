//! The options of Weir's clients that the core's own config needs too (`[api.nats]`): the
//! client `tls` table and the NATS `auth` table, as plain data. The code that uses them
//! (rustls, the NATS client) is in `weir-connect` (`tls.rs`, `nats.rs`), which re-exports
//! them for the components.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Secret;

fn default_true() -> bool {
    true
}

/// `tls` of a component that connects: how to check the server and, for mutual TLS, who we
/// are.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsClientConfig {
    /// Use TLS. Default: what the address says where it has a scheme (`https://`,
    /// `tls://`); otherwise true when any other `tls` option is set.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// A PEM file of CA certificates to trust, in addition to the built-in (webpki) roots.
    /// Default: none (the built-in roots only).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A PEM certificate (chain) to present to the server, for mutual TLS (with `key_file`).
    /// Default: none.
    #[serde(default)]
    pub crt_file: Option<PathBuf>,
    /// The PEM private key of `crt_file`. Default: none.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The passphrase of an encrypted `key_file`: the `kafka` components only (librdkafka
    /// decrypts it); the others need an unencrypted key. Default: none.
    #[serde(default)]
    pub key_pass: Option<Secret>,
    /// Check that the server's certificate is signed by a trusted CA and valid. `false` is
    /// for tests only: anyone in the middle can read and change the traffic. Default: true.
    #[serde(default = "default_true")]
    pub verify_certificate: bool,
    /// Check that the server's certificate is issued for the name connected to (or
    /// `server_name`). Default: true.
    #[serde(default = "default_true")]
    pub verify_hostname: bool,
    /// The name to check the server's certificate against (and to send as SNI where the
    /// client lets us), when it is not the host of the address. Default: the host of the
    /// address.
    #[serde(default)]
    pub server_name: Option<String>,
}

impl Default for TlsClientConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            ca_file: None,
            crt_file: None,
            key_file: None,
            key_pass: None,
            verify_certificate: true,
            verify_hostname: true,
            server_name: None,
        }
    }
}

impl TlsClientConfig {
    /// Whether an option other than `enabled` is set (they imply TLS).
    fn any_option(&self) -> bool {
        self.ca_file.is_some()
            || self.crt_file.is_some()
            || self.key_file.is_some()
            || self.key_pass.is_some()
            || self.server_name.is_some()
            || !self.verify_certificate
            || !self.verify_hostname
    }

    /// Whether TLS is on for a component whose address has no scheme that decides: `enabled`,
    /// or else any other option set.
    pub fn wanted(tls: Option<&Self>) -> bool {
        tls.is_some_and(|t| t.enabled.unwrap_or_else(|| t.any_option()))
    }

    /// `tls` unless it says `enabled = false` (its other options are then ignored).
    pub fn unless_disabled(tls: Option<&Self>) -> Option<&Self> {
        tls.filter(|t| t.enabled != Some(false))
    }
}

/// `auth`: how to authenticate to the NATS server. Set at most one method.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatsAuthConfig {
    /// User name (with `password`). Default: unset.
    #[serde(default)]
    pub user: Option<String>,
    /// Password (with `user`). Default: unset.
    #[serde(default)]
    pub password: Option<Secret>,
    /// Token. Default: unset.
    #[serde(default)]
    pub token: Option<Secret>,
    /// NKey seed (`SU...`), used to sign the server's nonce. Default: unset.
    #[serde(default)]
    pub nkey_seed: Option<Secret>,
    /// Path of a credentials file (JWT and NKey seed, `.creds`). Default: unset.
    #[serde(default)]
    pub credentials_file: Option<PathBuf>,
}
