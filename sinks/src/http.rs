//! What the HTTP sinks (`elasticsearch`, `otlp`) share: checking duration options, gzip, and
//! which HTTP statuses are worth retrying. The HTTP client itself (reqwest over the shared
//! `tls` table) and the header helpers are in `weir_connect::http`, also used by
//! `prometheus_remote_write`.

use std::io::Write;
use std::time::Duration;

pub use weir_connect::http::{build_client, header_map};
pub use weir_connect::tls::TlsClientConfig;

/// A duration option given in seconds (`what` is its name in the config): it must be a
/// positive, finite number.
pub fn positive_secs(what: &str, v: f64) -> Result<Duration, String> {
    if v.is_finite() && v > 0.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(format!("`{what}` must be a positive number"))
    }
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

/// Statuses after which the same request may succeed later.
pub fn retriable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
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
