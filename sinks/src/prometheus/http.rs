//! The remote write client: the shared HTTP client stack (`weir_connect::http`: reqwest over
//! the shared `tls` table), HTTP/1.1 only, one pool for the sink. Each remote-write shard
//! sends its requests one after the other, so the pool holds one keep-alive connection per
//! shard.

use std::time::Duration;

use bytes::Bytes;
use weir_connect::http::{client_builder, error_chain, HttpVersions};
use weir_connect::tls::{ClientTls, TlsClientConfig};

/// The longest response body kept (for error messages).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Where and how to send: parsed, and the client built, once at build.
#[derive(Clone)]
pub struct Endpoint {
    url: reqwest::Url,
    client: reqwest::Client,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.url.as_str())
    }
}

impl Endpoint {
    /// Parses `http://host:port/path` or `https://...`, and builds the client with the
    /// `tls` options (every file is read and checked here).
    pub fn parse(url: &str, tls: Option<&TlsClientConfig>) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| format!("`endpoint` `{url}` is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!(
                "`endpoint` `{url}` must start with http:// or https://"
            ));
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(format!("`endpoint` `{url}` has no host"));
        }
        TlsClientConfig::check_scheme(tls, "endpoint", url).map_err(|e| e.to_string())?;
        let client = client_builder(tls, HttpVersions::Http1Only)
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))?;
        Ok(Self {
            url: parsed,
            client,
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

/// A shard's client (the shared pool of the sink's endpoint).
pub struct Client {
    endpoint: Endpoint,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Self {
        Self { endpoint }
    }

    /// The endpoint's URL, for messages.
    pub fn url(&self) -> &str {
        self.endpoint.url.as_str()
    }

    /// POSTs `body` with `headers`.
    pub async fn post(
        &mut self,
        headers: &[(http::HeaderName, http::HeaderValue)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Response, SendError> {
        let ep = &self.endpoint;
        let target = || ep.url.as_str().to_string();
        let mut map = http::HeaderMap::with_capacity(headers.len());
        for (k, v) in headers {
            map.append(k.clone(), v.clone());
        }
        let result = ep
            .client
            .post(ep.url.clone())
            .headers(map)
            .timeout(timeout)
            .body(body)
            .send()
            .await;
        let mut resp = match result {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Err(SendError::Timeout(target(), timeout)),
            Err(e) if e.is_connect() => {
                return Err(SendError::Connect(target(), connect_reason(&e)))
            }
            Err(e) => return Err(SendError::Request(target(), error_chain(&e))),
        };
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // Read the body (so the connection can be used again), keeping the first 64 KiB.
        let mut kept = Vec::new();
        let body = loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    let room = MAX_RESPONSE_BYTES.saturating_sub(kept.len());
                    kept.extend_from_slice(&c[..c.len().min(room)]);
                    if room < c.len() {
                        break String::from_utf8_lossy(&kept).into_owned();
                    }
                }
                Ok(None) => break String::from_utf8_lossy(&kept).into_owned(),
                Err(e) if e.is_timeout() => return Err(SendError::Timeout(target(), timeout)),
                Err(e) => break format!("(body unreadable: {})", error_chain(&e)),
            }
        };
        Ok(Response {
            status,
            retry_after,
            body,
        })
    }
}

/// reqwest's connect error with its causes, without the URL it repeats ("error sending
/// request for url (...)"): the TCP or TLS reason.
fn connect_reason(e: &reqwest::Error) -> String {
    let full = error_chain(e);
    match std::error::Error::source(e) {
        Some(s) => {
            let tail = error_chain(s);
            if tail.is_empty() {
                full
            } else {
                tail
            }
        }
        None => full,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:9090/api/v1/write", None).unwrap();
        assert_eq!(format!("{e:?}"), "http://127.0.0.1:9090/api/v1/write");
        assert!(Endpoint::parse("ftp://x/", None).is_err());
        let err = Endpoint::parse(
            "https://x/",
            Some(&TlsClientConfig {
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..Default::default()
            }),
        )
        .unwrap_err();
        assert_eq!(
            err,
            "`tls.ca_file` /nonexistent/ca.pem: No such file or directory"
        );
    }
}
