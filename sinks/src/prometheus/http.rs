//! A small HTTP/1.1 client for remote write: one keep-alive connection per sender (each
//! remote-write shard sends its requests one after the other, so no pool is needed), plain TCP
//! or TLS (rustls with the `ring` provider), built on `hyper`'s connection API.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The longest response body kept (for error messages).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// `tls`: how to verify the server and, for mutual TLS, who we are.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA certificates to trust. Default: the system's bundle
    /// (`/etc/ssl/certs/ca-certificates.crt`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for mutual TLS (with `key_file`). Default: none.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`. Default: none.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// The name to verify in the server's certificate. Default: the host of the endpoint.
    #[serde(default)]
    pub server_name: Option<String>,
}

const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

fn tls_client_config(t: &TlsConfig) -> Result<rustls::ClientConfig, String> {
    let ca = t
        .ca_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(SYSTEM_CA));
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&ca)
        .map_err(|e| format!("`tls.ca_file` {}: {e}", ca.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("`tls.ca_file` {}: {e}", ca.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("`tls.ca_file` {}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!(
            "`tls.ca_file` {}: no certificate found",
            ca.display()
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    let cfg = match (&t.cert_file, &t.key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("`tls.cert_file` {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("`tls.key_file` {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("TLS client certificate: {e}"))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("`tls.cert_file` and `tls.key_file` go together".into()),
    };
    Ok(cfg)
}

/// Where and how to send: parsed once at build.
#[derive(Clone)]
pub struct Endpoint {
    host: String,
    port: u16,
    /// `host[:port]` for the `Host` header.
    authority: String,
    path: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}{}",
            if self.tls.is_some() { "https" } else { "http" },
            self.authority,
            self.path
        )
    }
}

impl Endpoint {
    /// Parses `http://host:port/path` or `https://...` (which needs a CA: `tls.ca_file` or
    /// the system bundle).
    pub fn parse(url: &str, tls: Option<&TlsConfig>) -> Result<Self, String> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("`endpoint` `{url}` is not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "`endpoint` `{url}` must start with http:// or https://"
                ))
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("`endpoint` `{url}` has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| host.clone());
        let path = uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_else(|| "/".into());
        if tls.is_some() && !https {
            return Err("`tls` is set but `endpoint` is http://".into());
        }
        let tls = if https {
            let t = tls.cloned().unwrap_or_default();
            let cfg = tls_client_config(&t)?;
            let name = t.server_name.clone().unwrap_or_else(|| host.clone());
            let name = ServerName::try_from(name.clone())
                .map_err(|e| format!("TLS server name `{name}`: {e}"))?;
            Some((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
        } else {
            None
        };
        Ok(Self {
            host,
            port,
            authority,
            path,
            tls,
            connect_timeout: Duration::from_secs(10),
        })
    }
}

/// Why a request got no HTTP response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, String),
    #[error("request to {0} failed: {1}")]
    Request(String, String),
    #[error("no response from {0} within {1:?}")]
    Timeout(String, Duration),
}

/// An HTTP response: status, `Retry-After` in seconds when given, and the body as text.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub retry_after: Option<Duration>,
    pub body: String,
}

/// A client holding at most one connection.
pub struct Client {
    endpoint: Endpoint,
    conn: Option<SendRequest<Full<Bytes>>>,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            conn: None,
        }
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, SendError> {
        let ep = &self.endpoint;
        let where_ = || format!("{}:{}", ep.host, ep.port);
        let tcp = tokio::time::timeout(
            ep.connect_timeout,
            tokio::net::TcpStream::connect((ep.host.as_str(), ep.port)),
        )
        .await
        .map_err(|_| SendError::Connect(where_(), "timed out".into()))?
        .map_err(|e| SendError::Connect(where_(), e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let err = |e: hyper::Error| SendError::Connect(where_(), e.to_string());
        match &ep.tls {
            None => {
                let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .map_err(err)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(tx)
            }
            Some((connector, name)) => {
                let tls =
                    tokio::time::timeout(ep.connect_timeout, connector.connect(name.clone(), tcp))
                        .await
                        .map_err(|_| {
                            SendError::Connect(where_(), "TLS handshake timed out".into())
                        })?
                        .map_err(|e| SendError::Connect(where_(), format!("TLS: {e}")))?;
                let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                    .await
                    .map_err(err)?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(tx)
            }
        }
    }

    /// POSTs `body` with `headers`, reconnecting when the connection was closed.
    pub async fn post(
        &mut self,
        headers: &[(http::HeaderName, http::HeaderValue)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response, SendError> {
        let ep = self.endpoint.clone();
        let target = format!("{ep:?}");
        let fut = async {
            let mut conn = match self.conn.take() {
                Some(c) if !c.is_closed() => c,
                _ => self.connect().await?,
            };
            conn.ready()
                .await
                .map_err(|e| SendError::Request(target.clone(), e.to_string()))?;
            let mut req = http::Request::post(ep.path.as_str())
                .header(http::header::HOST, ep.authority.as_str())
                .header(http::header::CONTENT_LENGTH, body.len());
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let req = req
                .body(Full::new(body))
                .map_err(|e| SendError::Request(target.clone(), e.to_string()))?;
            let resp = conn
                .send_request(req)
                .await
                .map_err(|e| SendError::Request(target.clone(), e.to_string()))?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = match Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
            {
                Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
                Err(e) => format!("(body unreadable: {e})"),
            };
            // Keep the connection for the next request.
            self.conn = Some(conn);
            Ok(Response {
                status,
                retry_after,
                body,
            })
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => {
                self.conn = None;
                Err(SendError::Timeout(target, timeout))
            }
        }
    }
}

/// Standard base64 (with padding), for the basic auth header.
pub fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pa ss"), "dXNlcjpwYSBzcw==");
    }

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:9090/api/v1/write", None).unwrap();
        assert_eq!(format!("{e:?}"), "http://127.0.0.1:9090/api/v1/write");
        assert_eq!(e.port, 9090);
        assert!(Endpoint::parse("ftp://x/", None).is_err());
        let err = Endpoint::parse(
            "https://x/",
            Some(&TlsConfig {
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..Default::default()
            }),
        )
        .unwrap_err();
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}
