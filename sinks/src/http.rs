//! What the HTTP sinks (`elasticsearch`, `otlp`) share: TLS options, building a `reqwest`
//! client from them, checking header options, gzip, `Retry-After`. Which statuses are worth
//! retrying is the toolkit's ([`crate::toolkit::retry`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `tls`: how to trust the server (and, optionally, prove who we are).
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// A PEM file of CA certificates to trust in addition to the built-in (webpki) roots.
    /// Default: none.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A PEM client certificate (with `key_file`) for mutual TLS. Default: none.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The PEM private key of `cert_file`. Default: none.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Check the server's certificate and name. Turning this off is for tests only.
    /// Default: true.
    #[serde(default = "default_true")]
    pub verify_certificate: bool,
}

fn default_true() -> bool {
    true
}

fn read(what: &str, p: &PathBuf) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("`{what}` {}: {e}", p.display()))
}

/// The `headers` option as a header map, with an error naming the header that is invalid.
pub fn header_map(
    headers: &BTreeMap<String, String>,
) -> Result<reqwest::header::HeaderMap, String> {
    let mut map = reqwest::header::HeaderMap::new();
    for (k, v) in headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|e| format!("`headers`: `{k}`: {e}"))?;
        let value =
            reqwest::header::HeaderValue::from_str(v).map_err(|e| format!("`headers.{k}`: {e}"))?;
        map.insert(name, value);
    }
    Ok(map)
}

/// A client with the TLS settings, a request timeout and a connect timeout.
pub fn build_client(
    tls: Option<&TlsConfig>,
    timeout: Duration,
    http2_prior_knowledge: bool,
) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .pool_idle_timeout(Duration::from_secs(60));
    if http2_prior_knowledge {
        b = b.http2_prior_knowledge();
    }
    if let Some(t) = tls {
        if let Some(ca) = &t.ca_file {
            let pem = read("tls.ca_file", ca)?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("`tls.ca_file` {}: {e}", ca.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "`tls.ca_file` {}: no PEM certificate in the file",
                    ca.display()
                ));
            }
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        match (&t.cert_file, &t.key_file) {
            (Some(c), Some(k)) => {
                let mut pem = read("tls.cert_file", c)?;
                pem.push(b'\n');
                pem.extend(read("tls.key_file", k)?);
                let id = reqwest::Identity::from_pem(&pem)
                    .map_err(|e| format!("`tls.cert_file`/`tls.key_file`: {e}"))?;
                b = b.identity(id);
            }
            (None, None) => {}
            _ => return Err("`tls.cert_file` and `tls.key_file` go together".into()),
        }
        if !t.verify_certificate {
            b = b.danger_accept_invalid_certs(true);
        }
    }
    b.build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Gzips `data` (level 6, the usual trade-off).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::new(6),
    );
    // Writing to a Vec cannot fail.
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// A `Retry-After` header in seconds, capped at `cap`.
pub fn retry_after(headers: &reqwest::header::HeaderMap, cap: Duration) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: u64 = v.trim().parse().ok()?;
    Some(Duration::from_secs(secs).min(cap))
}

/// The first `max` characters of a body, for error messages.
pub fn snippet(body: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(body);
    let s = s.trim();
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
