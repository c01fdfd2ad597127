//! The Kafka client options shared by the `kafka` source and sink: brokers, TLS, SASL (PLAIN,
//! SCRAM) and the `librdkafka_options` pass-through, turned into one librdkafka
//! [`ClientConfig`]; and [`KafkaClientContext`], which sends librdkafka's own logs and errors to
//! `tracing` and the component's metrics (`weir_component_errors_total{error_type="kafka"}`).
//!
//! librdkafka is built from source by `rdkafka-sys` (OpenSSL for TLS and SCRAM, zlib for
//! gzip, zstd; lz4 and snappy are part of librdkafka), so no system librdkafka is needed.

use std::collections::BTreeMap;
use std::sync::Arc;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::KafkaError;
use serde::{Deserialize, Serialize};

pub use rdkafka;

use weir_pipeline::config::Secret;
use weir_pipeline::metrics::ComponentMetrics;

use crate::tls::{ClientTls, TlsClientConfig, TlsError};

/// The SASL mechanisms librdkafka is built with here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// `sasl`: SASL authentication (`security.protocol` `SASL_PLAINTEXT`, or `SASL_SSL` with `tls`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KafkaSaslConfig {
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`. Required.
    pub mechanism: SaslMechanism,
    /// User name. Required.
    pub username: String,
    /// Password. Required.
    pub password: Secret,
}

/// A configuration mistake in the client options.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConfigError {
    #[error("`bootstrap_servers` is empty: give one or more brokers, e.g. \"127.0.0.1:9092\"")]
    NoServer,
    #[error("{0}")]
    Plaintext(String),
    #[error("{0}")]
    Tls(#[from] TlsError),
    #[error("`librdkafka_options`: {0:?} is set by Weir ({1}); remove it")]
    Reserved(String, &'static str),
    #[error("the Kafka client options are invalid: {0}")]
    Client(#[from] KafkaError),
}

/// What [`client_config`] needs: the component's connection options.
#[derive(Debug, Clone, Copy)]
pub struct KafkaConnect<'a> {
    /// Brokers to bootstrap from, comma separated (`host:port`).
    pub bootstrap_servers: &'a str,
    /// `tls` (security.protocol `SSL`, or `SASL_SSL` with `sasl`): on when `tls.enabled`,
    /// or when another `tls` option is set.
    pub tls: Option<&'a TlsClientConfig>,
    pub sasl: Option<&'a KafkaSaslConfig>,
    /// `allow_plaintext_credentials`: SASL `PLAIN` (which sends the password) without TLS.
    pub allow_plaintext_credentials: bool,
    /// Raw librdkafka properties, applied last.
    pub librdkafka_options: &'a BTreeMap<String, String>,
    /// Properties the component sets itself and that `librdkafka_options` may not change,
    /// with why.
    pub reserved: &'a [(&'a str, &'static str)],
}

/// The librdkafka configuration for these options: `bootstrap.servers`, `security.protocol`,
/// TLS and SASL properties, then `librdkafka_options`.
pub fn client_config(c: KafkaConnect<'_>) -> Result<ClientConfig, KafkaConfigError> {
    let servers: Vec<&str> = c
        .bootstrap_servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if servers.is_empty() {
        return Err(KafkaConfigError::NoServer);
    }
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", servers.join(","));
    // librdkafka's logs go through KafkaClientContext::log; debug-level ones only when asked.
    cfg.set_log_level(RDKafkaLogLevel::Info);
    let tls = c.tls.filter(|t| TlsClientConfig::wanted(Some(t)));
    let protocol = match (tls.is_some(), c.sasl.is_some()) {
        (false, false) => "plaintext",
        (true, false) => "ssl",
        (false, true) => "sasl_plaintext",
        (true, true) => "sasl_ssl",
    };
    cfg.set("security.protocol", protocol);
    // SCRAM proves the password without sending it; PLAIN sends it as it is.
    if c.sasl
        .is_some_and(|s| matches!(s.mechanism, SaslMechanism::Plain))
    {
        crate::plaintext_credentials(
            "`sasl.password` (mechanism PLAIN)",
            c.bootstrap_servers,
            tls.is_some(),
            c.allow_plaintext_credentials,
        )
        .map_err(KafkaConfigError::Plaintext)?;
    }
    if let Some(t) = tls {
        set_tls(&mut cfg, t)?;
    }
    if let Some(s) = c.sasl {
        cfg.set("sasl.mechanism", s.mechanism.as_str());
        cfg.set("sasl.username", &s.username);
        cfg.set("sasl.password", s.password.expose());
    }
    for (k, v) in c.librdkafka_options {
        if let Some((_, why)) = c.reserved.iter().find(|(r, _)| r == k) {
            return Err(KafkaConfigError::Reserved(k.clone(), why));
        }
        cfg.set(k, v);
    }
    // librdkafka checks names and values when the native configuration is built: a typo in
    // `librdkafka_options` fails here, at start, with librdkafka's message.
    cfg.create_native_config()?;
    Ok(cfg)
}

/// Reads and checks the files of `tls` (unless `enabled = false`), as [`client_config`]
/// does: for `weir validate`.
pub fn check_tls(tls: Option<&TlsClientConfig>) -> Result<(), TlsError> {
    let Some(t) = TlsClientConfig::unless_disabled(tls) else {
        return Ok(());
    };
    if t.server_name.is_some() {
        return Err(TlsError::Unsupported(
            "server_name",
            "the kafka components (librdkafka checks each broker by the name it advertises)",
        ));
    }
    t.check_files()
}

/// The shared `tls` options as librdkafka's `ssl.*` properties (OpenSSL does the TLS): the
/// files are read and parsed here first, so a wrong path fails at start with the same
/// message as in every other component.
fn set_tls(cfg: &mut ClientConfig, t: &TlsClientConfig) -> Result<(), TlsError> {
    check_tls(Some(t))?;
    if let Some(ca) = &t.ca_file {
        cfg.set("ssl.ca.location", ca.display().to_string());
    }
    if let (Some(crt), Some(key)) = (&t.crt_file, &t.key_file) {
        cfg.set("ssl.certificate.location", crt.display().to_string());
        cfg.set("ssl.key.location", key.display().to_string());
    }
    if let Some(p) = &t.key_pass {
        cfg.set("ssl.key.password", p.expose());
    }
    if !t.verify_certificate {
        cfg.set("enable.ssl.certificate.verification", "false");
    }
    cfg.set(
        "ssl.endpoint.identification.algorithm",
        if t.verify_hostname { "https" } else { "none" },
    );
    Ok(())
}

/// Routes librdkafka's logs to `tracing` and its errors to the component's metrics.
#[derive(Clone)]
pub struct KafkaClientContext {
    pub metrics: Arc<ComponentMetrics>,
}

impl ClientContext for KafkaClientContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let id = &self.metrics.id;
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(component = %id, facility = fac, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(component = %id, facility = fac, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(component = %id, facility = fac, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(component = %id, facility = fac, "librdkafka: {message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Connection errors are retried by librdkafka on its own; they are counted and logged
        // (rate-limited) so an unreachable cluster is visible.
        self.metrics.error(
            "kafka",
            1,
            &format_args!("Kafka client error: {error}: {reason}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_tls_sasl_and_pass_through() {
        let opts: BTreeMap<String, String> =
            [("socket.timeout.ms".to_string(), "1234".to_string())].into();
        let tls = TlsClientConfig {
            enabled: Some(true),
            verify_hostname: false,
            verify_certificate: false,
            ..Default::default()
        };
        let sasl = KafkaSaslConfig {
            mechanism: SaslMechanism::ScramSha512,
            username: "u".into(),
            password: Secret::new("p"),
        };
        let c = client_config(KafkaConnect {
            bootstrap_servers: " a:9092, b:9092 ,",
            tls: Some(&tls),
            sasl: Some(&sasl),
            allow_plaintext_credentials: false,
            librdkafka_options: &opts,
            reserved: &[],
        })
        .unwrap();
        assert_eq!(c.get("bootstrap.servers"), Some("a:9092,b:9092"));
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("ssl.endpoint.identification.algorithm"), Some("none"));
        assert_eq!(c.get("enable.ssl.certificate.verification"), Some("false"));
        assert_eq!(c.get("socket.timeout.ms"), Some("1234"));

        let plain = client_config(KafkaConnect {
            bootstrap_servers: "a:9092",
            tls: Some(&TlsClientConfig::default()),
            sasl: None,
            allow_plaintext_credentials: false,
            librdkafka_options: &BTreeMap::new(),
            reserved: &[],
        })
        .unwrap();
        assert_eq!(plain.get("security.protocol"), Some("plaintext"));

        let missing = TlsClientConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = client_config(KafkaConnect {
            bootstrap_servers: "a:9092",
            tls: Some(&missing),
            sasl: None,
            allow_plaintext_credentials: false,
            librdkafka_options: &BTreeMap::new(),
            reserved: &[],
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`tls.ca_file` /nonexistent/ca.pem: No such file or directory"
        );

        let bad: BTreeMap<String, String> = [("no.such.property".into(), "1".into())].into();
        let e = client_config(KafkaConnect {
            bootstrap_servers: "a:9092",
            tls: None,
            sasl: None,
            allow_plaintext_credentials: false,
            librdkafka_options: &bad,
            reserved: &[],
        })
        .unwrap_err();
        assert!(e.to_string().contains("no.such.property"), "{e}");

        let reserved: BTreeMap<String, String> =
            [("enable.auto.offset.store".into(), "true".into())].into();
        let e = client_config(KafkaConnect {
            bootstrap_servers: "a:9092",
            tls: None,
            sasl: None,
            allow_plaintext_credentials: false,
            librdkafka_options: &reserved,
            reserved: &[(
                "enable.auto.offset.store",
                "offsets are stored after delivery",
            )],
        })
        .unwrap_err();
        assert!(e.to_string().contains("after delivery"), "{e}");
        assert!(matches!(
            client_config(KafkaConnect {
                bootstrap_servers: " , ",
                tls: None,
                sasl: None,
                allow_plaintext_credentials: false,
                librdkafka_options: &BTreeMap::new(),
                reserved: &[],
            }),
            Err(KafkaConfigError::NoServer)
        ));
    }
}
