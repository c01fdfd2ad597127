//! What counts as retriable: the failure policy of every sink, in one place.
//!
//! A connection error, a timeout or a response that cannot be read is always worth another
//! attempt. For answers, each protocol has its rule ([`HttpRules`]); the sinks call
//! [`http_status_retriable`] and [`grpc_code_retriable`] and nothing else decides.

/// Which HTTP statuses a sink retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRules {
    /// 408, 429 and every 5xx (elasticsearch).
    Standard,
    /// 429, 502, 503 and 504, as the OTLP/HTTP specification says (otlp).
    Otlp,
    /// 429 and every 5xx, as the remote write specification says; 408 is not retried
    /// (prometheus_remote_write).
    RemoteWrite,
}

/// Whether a request answered with `status` may succeed if sent again.
pub fn http_status_retriable(status: u16, rules: HttpRules) -> bool {
    match rules {
        HttpRules::Standard => matches!(status, 408 | 429 | 500..=599),
        HttpRules::Otlp => matches!(status, 429 | 502 | 503 | 504),
        HttpRules::RemoteWrite => status == 429 || (500..=599).contains(&status),
    }
}

/// Whether a gRPC call that failed with `code` may succeed if made again (the OTLP/gRPC
/// specification's list, plus `UNKNOWN`, which proxies answer for a connection lost).
#[cfg(feature = "otlp")]
pub fn grpc_code_retriable(code: tonic::Code) -> bool {
    use tonic::Code;
    matches!(
        code,
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        for s in [408, 429, 500, 503, 599] {
            assert!(http_status_retriable(s, HttpRules::Standard), "{s}");
        }
        for s in [400, 401, 404, 413, 200] {
            assert!(!http_status_retriable(s, HttpRules::Standard), "{s}");
        }
        assert!(!http_status_retriable(500, HttpRules::Otlp));
        assert!(!http_status_retriable(408, HttpRules::Otlp));
        assert!(http_status_retriable(503, HttpRules::Otlp));
        assert!(!http_status_retriable(408, HttpRules::RemoteWrite));
        assert!(http_status_retriable(500, HttpRules::RemoteWrite));
        assert!(grpc_code_retriable(tonic::Code::Unavailable));
        assert!(!grpc_code_retriable(tonic::Code::InvalidArgument));
    }
}
