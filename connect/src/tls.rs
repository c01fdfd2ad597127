//! The one `tls` table of every client and every server of Weir, with Vector's option names
//! (`enabled`, `ca_file`, `crt_file`, `key_file`, `key_pass`, `verify_certificate`,
//! `verify_hostname`, `server_name`), so that a Vector user's settings carry over.
//!
//! - [`TlsClientConfig`]: a component that connects (sinks, the `hubble`, `kafka` and `nats`
//!   sources). Turned into a [`rustls::ClientConfig`] (ring, the webpki roots plus
//!   `ca_file`), from which the HTTP clients (`crate::http`, reqwest), the gRPC clients
//!   (`crate::grpc`, tonic) and the NATS client are built; the Kafka components map the same
//!   options to librdkafka's `ssl.*` properties (`crate::kafka`).
//! - [`TlsServerConfig`]: a component that listens (`prometheus_exporter`, the `otlp`
//!   source). The same names; `ca_file` there is the CAs client certificates must be signed
//!   by (mutual TLS).
//!
//! Every file is read and parsed when the component is built (and by `weir validate`), so a
//! wrong path or a key that does not match its certificate stops Weir at start with the same
//! message for every component: "`tls.crt_file` /etc/weir/client.crt: No such file or
//! directory".

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

pub use rustls;
pub use tokio_rustls;

/// `tls` of a component that connects (the data lives in the core, so that `[api.nats]` has it
/// too; [`ClientTls`] builds it into rustls).
pub use weir_pipeline::config::TlsClientConfig;

/// `tls` of a component that listens (the data lives in the core, so that `[api]` has it
/// too; [`ServerTls`] builds it into rustls).
pub use weir_pipeline::config::TlsServerConfig;

/// A `tls` option that cannot be used: the message names the option and the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// A file that cannot be read or parsed.
    #[error("`tls.{option}` {}: {reason}", path.display())]
    File {
        option: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("`tls.crt_file` and `tls.key_file` go together")]
    CertWithoutKey,
    #[error("`tls.crt_file` and `tls.key_file` are required to serve TLS")]
    ServerWithoutCert,
    #[error("`tls.verify_certificate = true` needs `tls.ca_file` (the CAs client certificates must be signed by)")]
    ClientAuthWithoutCa,
    #[error("`tls.key_pass`: {0} cannot decrypt a private key; give it an unencrypted `tls.key_file` (e.g. `openssl pkey -in enc.key -out plain.key`)")]
    KeyPassUnsupported(&'static str),
    #[error("`tls.{0}` is not supported by {1}")]
    Unsupported(&'static str, &'static str),
    #[error("`tls.enabled` is {enabled} but `{option}` `{url}` is {scheme}")]
    SchemeMismatch {
        enabled: bool,
        option: &'static str,
        url: String,
        scheme: &'static str,
    },
    #[error("`tls.server_name` `{0}` is not a DNS name or IP address")]
    ServerName(String),
    #[error("TLS: {0}")]
    Rustls(String),
}

/// An I/O error without the `(os error N)` suffix, so the message is the same whatever the
/// platform's number.
fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn file_error(option: &'static str, path: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::File {
        option,
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn read(option: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| file_error(option, path, io_reason(&e)))
}

/// The certificates of a PEM file (at least one).
pub fn load_certs(
    option: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(option, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(option, path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(option, path, "no PEM certificate in the file"));
    }
    Ok(certs)
}

const ENCRYPTED_KEY: &[u8] = b"-----BEGIN ENCRYPTED PRIVATE KEY-----";

fn is_encrypted(pem: &[u8]) -> bool {
    pem.windows(ENCRYPTED_KEY.len()).any(|w| w == ENCRYPTED_KEY)
        || pem.windows(10).any(|w| w == b"Proc-Type:")
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1, unencrypted).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("key_file", path)?;
    if is_encrypted(&pem) {
        return Err(file_error(
            "key_file",
            path,
            "the key is encrypted, and this component needs an unencrypted key",
        ));
    }
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let reason = match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PEM private key in the file".to_string()
            }
            e => format!("not a PEM private key: {e}"),
        };
        file_error("key_file", path, reason)
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate chain and key of `crt_file`/`key_file`, checked to belong together.
fn identity(
    crt: &Path,
    key: &Path,
    provider: &CryptoProvider,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = load_certs("crt_file", crt)?;
    let k = load_key(key)?;
    match rustls::sign::CertifiedKey::from_der(chain.clone(), k.clone_key(), provider) {
        Ok(_) => Ok((chain, k)),
        Err(rustls::Error::InconsistentKeys(_)) => Err(file_error(
            "key_file",
            key,
            format!(
                "is not the key of the certificate in `tls.crt_file` {}",
                crt.display()
            ),
        )),
        Err(e) => Err(file_error("key_file", key, e.to_string())),
    }
}

/// The CAs of `ca_file` as a root store (`with_builtin`: the webpki roots too).
fn roots(ca_file: Option<&PathBuf>, with_builtin: bool) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    if with_builtin {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(ca) = ca_file {
        for c in load_certs("ca_file", ca)? {
            roots
                .add(c)
                .map_err(|e| file_error("ca_file", ca, e.to_string()))?;
        }
    }
    Ok(roots)
}

/// `crt_file` and `key_file`, when given (both or neither).
fn pair(t: &TlsClientConfig) -> Result<Option<(&PathBuf, &PathBuf)>, TlsError> {
    match (&t.crt_file, &t.key_file) {
        (Some(c), Some(k)) => Ok(Some((c, k))),
        (None, None) => Ok(None),
        _ => Err(TlsError::CertWithoutKey),
    }
}

/// Builds a client's `tls` table into rustls (a trait: the table is the core's type).
pub trait ClientTls {
    /// For a component whose URL decides (`https://`): an `enabled` that says otherwise is a
    /// mistake. `option` names the URL's option (`endpoint`).
    fn check_scheme(tls: Option<&Self>, option: &'static str, url: &str) -> Result<(), TlsError>;

    /// Reads and checks the files of `tls` (unless `enabled = false`) as building the
    /// component does: for `weir validate`.
    fn check(tls: Option<&Self>) -> Result<(), TlsError>;

    /// The `rustls` configuration of a client: the webpki roots and `ca_file`, the client
    /// certificate, the checks asked for, and `alpn` (e.g. `[b"h2"]` for gRPC). Reads and
    /// checks every file.
    fn rustls_client_config(&self, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, TlsError>;

    /// Reads and parses every file without building a client configuration, for clients that
    /// do their own TLS (librdkafka): an encrypted key is accepted when `key_pass` is set.
    fn check_files(&self) -> Result<(), TlsError>;

    /// The name to check (and send as SNI): `server_name`, else `host`.
    fn server_name_for(&self, host: &str) -> Result<ServerName<'static>, TlsError>;
}

impl ClientTls for TlsClientConfig {
    /// For a component whose URL decides (`https://`): an `enabled` that says otherwise is a
    /// mistake. `option` names the URL's option (`endpoint`).
    fn check_scheme(tls: Option<&Self>, option: &'static str, url: &str) -> Result<(), TlsError> {
        let https = url
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"));
        match tls.and_then(|t| t.enabled) {
            Some(true) if !https => Err(TlsError::SchemeMismatch {
                enabled: true,
                option,
                url: url.to_string(),
                scheme: "not https://",
            }),
            Some(false) if https => Err(TlsError::SchemeMismatch {
                enabled: false,
                option,
                url: url.to_string(),
                scheme: "https://",
            }),
            _ => Ok(()),
        }
    }

    /// Reads and checks the files of `tls` (unless `enabled = false`) as building the
    /// component does: for `weir validate`.
    fn check(tls: Option<&Self>) -> Result<(), TlsError> {
        match TlsClientConfig::unless_disabled(tls) {
            Some(t) => t.rustls_client_config(&[]).map(|_| ()),
            None => Ok(()),
        }
    }

    /// The `rustls` configuration of a client: the webpki roots and `ca_file`, the client
    /// certificate, the checks asked for, and `alpn` (e.g. `[b"h2"]` for gRPC). Reads and
    /// checks every file.
    fn rustls_client_config(&self, alpn: &[&[u8]]) -> Result<rustls::ClientConfig, TlsError> {
        if self.key_pass.is_some() {
            return Err(TlsError::KeyPassUnsupported("this component"));
        }
        let pair = pair(self)?;
        let provider = provider();
        let roots = roots(self.ca_file.as_ref(), true)?;
        let identity = match pair {
            Some((c, k)) => Some(identity(c, k, &provider)?),
            None => None,
        };
        let name = match &self.server_name {
            Some(n) => {
                Some(ServerName::try_from(n.clone()).map_err(|_| TlsError::ServerName(n.clone()))?)
            }
            None => None,
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = if self.verify_certificate && self.verify_hostname && name.is_none() {
            builder.with_root_certificates(roots)
        } else {
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsError::Rustls(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Verifier {
                    webpki,
                    algorithms: provider.signature_verification_algorithms,
                    verify_certificate: self.verify_certificate,
                    verify_hostname: self.verify_hostname,
                    name,
                }))
        };
        let mut cfg = match identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| TlsError::Rustls(e.to_string()))?,
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(cfg)
    }

    /// Reads and parses every file without building a client configuration, for clients that
    /// do their own TLS (librdkafka): an encrypted key is accepted when `key_pass` is set.
    fn check_files(&self) -> Result<(), TlsError> {
        let pair = pair(self)?;
        if let Some(ca) = &self.ca_file {
            load_certs("ca_file", ca)?;
        }
        if let Some((c, k)) = pair {
            if self.key_pass.is_some() {
                load_certs("crt_file", c)?;
                read("key_file", k)?;
            } else {
                identity(c, k, &provider())?;
            }
        }
        Ok(())
    }

    /// The name to check (and send as SNI): `server_name`, else `host`.
    fn server_name_for(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        let n = self.server_name.as_deref().unwrap_or(host);
        let n = n.trim_start_matches('[').trim_end_matches(']');
        ServerName::try_from(n.to_string()).map_err(|_| TlsError::ServerName(n.to_string()))
    }
}

/// Builds a server's `tls` table into rustls (a trait: the table is the core's type).
pub trait ServerTls: Sized {
    /// The `rustls` configuration of a server (`None` when TLS is off), with `alpn` (e.g.
    /// `[b"h2"]` for gRPC, `[b"http/1.1"]`). Reads and checks every file.
    fn rustls_server_config(
        tls: Option<&Self>,
        alpn: &[&[u8]],
    ) -> Result<Option<rustls::ServerConfig>, TlsError>;

    /// Reads and checks the files of `tls` as building the component does: for `weir
    /// validate`.
    fn check(tls: Option<&Self>) -> Result<(), TlsError> {
        Self::rustls_server_config(tls, &[]).map(|_| ())
    }

    /// [`Self::rustls_server_config`] as a `tokio-rustls` acceptor.
    fn acceptor(
        tls: Option<&Self>,
        alpn: &[&[u8]],
    ) -> Result<Option<tokio_rustls::TlsAcceptor>, TlsError> {
        Ok(Self::rustls_server_config(tls, alpn)?
            .map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c))))
    }
}

impl ServerTls for TlsServerConfig {
    /// The `rustls` configuration of a server (`None` when TLS is off), with `alpn` (e.g.
    /// `[b"h2"]` for gRPC, `[b"http/1.1"]`). Reads and checks every file.
    fn rustls_server_config(
        tls: Option<&Self>,
        alpn: &[&[u8]],
    ) -> Result<Option<rustls::ServerConfig>, TlsError> {
        let Some(t) = tls.filter(|t| Self::wanted(Some(t))) else {
            return Ok(None);
        };
        if t.key_pass.is_some() {
            return Err(TlsError::KeyPassUnsupported("a server"));
        }
        let provider = provider();
        let (chain, key) = match (&t.crt_file, &t.key_file) {
            (Some(c), Some(k)) => identity(c, k, &provider)?,
            (None, None) => return Err(TlsError::ServerWithoutCert),
            _ => return Err(TlsError::CertWithoutKey),
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = match (&t.ca_file, t.verify_certificate) {
            (None, Some(true)) => return Err(TlsError::ClientAuthWithoutCa),
            (None, _) => builder.with_no_client_auth(),
            (Some(ca), required) => {
                let roots = roots(Some(ca), false)?;
                let mut v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider.clone(),
                );
                if required == Some(false) {
                    v = v.allow_unauthenticated();
                }
                let v = v
                    .build()
                    .map_err(|e| file_error("ca_file", ca, e.to_string()))?;
                builder.with_client_cert_verifier(v)
            }
        };
        let mut cfg = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Some(cfg))
    }
}

/// How long a client may take to finish its TLS handshake with a server.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Checks the server's certificate as `verify_certificate`, `verify_hostname` and
/// `server_name` ask.
#[derive(Debug)]
struct Verifier {
    webpki: Arc<WebPkiServerVerifier>,
    algorithms: WebPkiSupportedAlgorithms,
    verify_certificate: bool,
    verify_hostname: bool,
    name: Option<ServerName<'static>>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.verify_certificate {
            return Ok(ServerCertVerified::assertion());
        }
        let name = self.name.as_ref().unwrap_or(server_name);
        // The chain is checked before the name: a name error means the chain is good.
        match self
            .webpki
            .verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.verify_hostname => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(toml_text: &str) -> TlsClientConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[test]
    fn missing_files_name_the_option_and_the_path() {
        let e = client("ca_file = '/nonexistent/ca.pem'")
            .rustls_client_config(&[])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`tls.ca_file` /nonexistent/ca.pem: No such file or directory"
        );
        let e = client("crt_file = '/nonexistent/c.crt'\nkey_file = '/nonexistent/c.key'")
            .check_files()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`tls.crt_file` /nonexistent/c.crt: No such file or directory"
        );
        let e = client("crt_file = '/x'")
            .rustls_client_config(&[])
            .unwrap_err();
        assert_eq!(e, TlsError::CertWithoutKey);
        let e = TlsServerConfig::rustls_server_config(
            Some(&toml::from_str("crt_file = '/nonexistent/s.crt'\nkey_file = '/k'").unwrap()),
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "`tls.crt_file` /nonexistent/s.crt: No such file or directory"
        );
    }

    #[test]
    fn enabled_defaults() {
        assert!(!TlsClientConfig::wanted(None));
        assert!(!TlsClientConfig::wanted(Some(&client(""))));
        assert!(TlsClientConfig::wanted(Some(&client("enabled = true"))));
        assert!(TlsClientConfig::wanted(Some(&client(
            "verify_hostname = false"
        ))));
        assert!(!TlsClientConfig::wanted(Some(&client(
            "enabled = false\nca_file = '/x'"
        ))));
        assert!(TlsClientConfig::check_scheme(
            Some(&client("enabled = true")),
            "endpoint",
            "http://x"
        )
        .is_err());
        assert!(TlsClientConfig::check_scheme(
            Some(&client("enabled = false")),
            "endpoint",
            "HTTPS://x"
        )
        .is_err());
        assert!(TlsClientConfig::check_scheme(
            Some(&client("ca_file = '/x'")),
            "endpoint",
            "http://x"
        )
        .is_ok());
        let off: TlsServerConfig = toml::from_str("enabled = false\ncrt_file = '/x'").unwrap();
        assert!(TlsServerConfig::rustls_server_config(Some(&off), &[])
            .unwrap()
            .is_none());
        let empty: TlsServerConfig = toml::from_str("verify_certificate = true").unwrap();
        assert_eq!(
            TlsServerConfig::rustls_server_config(Some(&empty), &[]).unwrap_err(),
            TlsError::ServerWithoutCert
        );
    }

    #[test]
    fn old_names_are_unknown() {
        for old in ["cert_file = '/x'", "key_password = 'p'", "insecure = true"] {
            assert!(toml::from_str::<TlsClientConfig>(old).is_err(), "{old}");
        }
    }

    #[test]
    fn key_pass_is_refused_by_rustls_clients() {
        let e = client("key_pass = 'p'")
            .rustls_client_config(&[])
            .unwrap_err();
        assert!(e.to_string().starts_with("`tls.key_pass`"), "{e}");
        // librdkafka decrypts: only the files are checked.
        client("key_pass = 'p'").check_files().unwrap();
    }
}
