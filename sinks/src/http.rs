//! What the HTTP sinks (`elasticsearch`, `otlp`) share: gzip, `Retry-After`, snippets of
//! answers. The HTTP client itself (reqwest over the shared `tls` table) and the header
//! helpers are in `weir_connect::http`, also used by `prometheus_remote_write`; which statuses
//! are worth retrying is the toolkit's ([`crate::toolkit::retry`]).

use std::io::Write;
use std::time::Duration;

pub use weir_connect::http::{build_client, header_map};
pub use weir_connect::tls::{ClientTls, TlsClientConfig};

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
