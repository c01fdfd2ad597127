//! The one HTTP client stack of Weir's HTTP sinks (`elasticsearch`, `otlp` over HTTP,
//! `prometheus_remote_write`): `reqwest` over rustls, with the TLS of the shared `tls` table
//! ([`crate::tls::TlsClientConfig`]), plus the header helpers they share.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use weir_pipeline::config::Secret;

use crate::tls::{ClientTls, TlsClientConfig, TlsError};

pub use reqwest;

/// Which HTTP versions a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVersions {
    /// HTTP/1.1, or HTTP/2 when a TLS server offers it (ALPN).
    Negotiated,
    /// HTTP/1.1 only (one request per connection at a time: a sender that keeps requests in
    /// order on its own connection).
    Http1Only,
}

/// A `reqwest` client builder with the TLS of `tls` (the built-in roots when `None`): every
/// file is read and checked here.
pub fn client_builder(
    tls: Option<&TlsClientConfig>,
    versions: HttpVersions,
) -> Result<reqwest::ClientBuilder, TlsError> {
    let default = TlsClientConfig::default();
    let t = TlsClientConfig::unless_disabled(tls).unwrap_or(&default);
    let alpn: &[&[u8]] = match versions {
        HttpVersions::Negotiated => &[b"h2", b"http/1.1"],
        HttpVersions::Http1Only => &[b"http/1.1"],
    };
    let cfg = t.rustls_client_config(alpn)?;
    let mut b = reqwest::Client::builder().use_preconfigured_tls(cfg);
    if versions == HttpVersions::Http1Only {
        b = b.http1_only();
    }
    Ok(b)
}

/// A client with the TLS settings, a request timeout and a connect timeout (at most 10 s).
pub fn build_client(
    tls: Option<&TlsClientConfig>,
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    client_builder(tls, HttpVersions::Negotiated)
        .map_err(|e| e.to_string())?
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))
}

/// The `headers` option as a header map, with an error naming the header that is invalid.
/// Header values are secrets (an `Authorization` or an API key is often set here): marked
/// sensitive, so that the client never logs them either.
pub fn header_map(
    headers: &BTreeMap<String, Secret>,
) -> Result<reqwest::header::HeaderMap, String> {
    let mut map = reqwest::header::HeaderMap::new();
    for (k, v) in headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| format!("`headers`: `{k}`: {e}"))?;
        let mut value = reqwest::header::HeaderValue::from_str(v.expose())
            .map_err(|e| format!("`headers.{k}`: {e}"))?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

/// Whether `headers` carry a credential: an `authorization` header, or one whose name has
/// `key` or `token` in it (`x-api-key`, `x-auth-token`).
pub fn carries_credentials(headers: &BTreeMap<String, Secret>) -> bool {
    headers.keys().any(|k| {
        let k = k.to_ascii_lowercase();
        k == "authorization" || k.contains("key") || k.contains("token")
    })
}

/// The value of an `Authorization: Basic` header (marked sensitive, so it is never logged).
pub fn basic_auth(user: &str, password: &str) -> Result<reqwest::header::HeaderValue, String> {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut v = reqwest::header::HeaderValue::from_str(&format!("Basic {encoded}"))
        .map_err(|_| "`auth` cannot be sent in an HTTP header".to_string())?;
    v.set_sensitive(true);
    Ok(v)
}

/// An error and its sources, `: `-separated (reqwest's own message alone says little:
/// "error sending request").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Reads a response body of at most `max` bytes: a longer one is an error, so a server
/// cannot make a sink hold an answer of any size. (The client decompresses nothing: reqwest
/// is built without its gzip, brotli, deflate and zstd features.)
pub async fn read_capped(mut resp: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|n| n > max as u64) {
        return Err(format!("the response body is over {max} bytes"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e))? {
        if body.len() + chunk.len() > max {
            return Err(format!("the response body is over {max} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_rfc4648_base64() {
        assert_eq!(
            basic_auth("user", "pa ss").unwrap(),
            "Basic dXNlcjpwYSBzcw=="
        );
        assert_eq!(basic_auth("f", "").unwrap(), "Basic Zjo=");
    }

    #[test]
    fn builds_with_and_without_tls_files() {
        build_client(None, Duration::from_secs(1)).unwrap();
        let t = TlsClientConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        let e = build_client(Some(&t), Duration::from_secs(1)).unwrap_err();
        assert_eq!(
            e,
            "`tls.ca_file` /nonexistent/ca.pem: No such file or directory"
        );
    }
}
