//! The refusal policy of every sink, in one place: what an answer means for the events of a
//! request.
//!
//! - **Retry** (block, back off, send the same events again; backpressure meanwhile): a
//!   connection error, a timeout, an answer that cannot be read, and the statuses that say
//!   nothing about the data: 401, 403, 407 (credentials, expired or not yet in place), 404 (a
//!   route or an index that is not there yet), 408, 429, every 5xx, and any status outside
//!   2xx/4xx (an unfollowed redirect: a route problem);
//! - **Split** (413, the request is too large): the request is cut in halves, each sent on
//!   its own (recursively); one event that is still too large is rejected, naming its size;
//! - **Reject** (a verdict on the data, not retried): every other 4xx (400, 409, 422...).
//!   Per-event verdicts inside a successful answer (an Elasticsearch item refused for its
//!   content) are classified the same way by the sinks that read them.
//!
//! Both lists can be changed per sink (`request.retry_statuses`, `request.reject_statuses`,
//! see [`crate::toolkit::request`]); the defaults are the same for every sink.
//!
//! This deliberately departs from two specifications: Prometheus remote write says that a 4xx
//! other than 429 must not be retried, and OTLP/HTTP retries only 429, 502, 503 and 504. An
//! expired credential, a missing permission or a route not deployed yet is not a verdict on
//! the data: rejecting would lose every event sent until it is fixed, so Weir holds them and
//! says so in its log instead.
//!
//! gRPC codes ([`RefusalPolicy::grpc`]): `UNAUTHENTICATED`, `PERMISSION_DENIED`, `NOT_FOUND`,
//! `UNAVAILABLE`, `RESOURCE_EXHAUSTED`, `DEADLINE_EXCEEDED`, `ABORTED`, `CANCELLED`,
//! `UNKNOWN`, `INTERNAL`, `DATA_LOSS` and `UNIMPLEMENTED` (a receiver that does not serve this
//! signal: a route problem, as a 404) are retried; a `RESOURCE_EXHAUSTED` whose message says
//! the message is larger than the limit (Go's gRPC) and `OUT_OF_RANGE` (tonic's answer to a
//! message over its limit) split; `INVALID_ARGUMENT`, `FAILED_PRECONDITION` and
//! `ALREADY_EXISTS` reject. A code is classified as its usual HTTP status (401, 403, 404, 503,
//! 429, 504, 500, 501, 400...) when that status is in one of the sink's lists, so the same two
//! options change both protocols.

/// What to do with the events of a request after an answer that is not a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the same events again after a backoff, as long as it takes.
    Retry,
    /// The request is too large: send its events again in two halves.
    Split,
    /// A verdict on the data: finalize the events as rejected.
    Reject,
}

/// The default classification of an HTTP status that is not a success.
pub fn default_verdict(status: u16) -> Verdict {
    match status {
        413 => Verdict::Split,
        401 | 403 | 404 | 407 | 408 | 429 => Verdict::Retry,
        400..=499 => Verdict::Reject,
        _ => Verdict::Retry,
    }
}

/// A sink's policy: the defaults above, with the statuses its configuration moves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefusalPolicy {
    /// Statuses retried whatever the default.
    pub retry: Vec<u16>,
    /// Statuses rejected whatever the default.
    pub reject: Vec<u16>,
}

impl RefusalPolicy {
    /// What an answer with HTTP `status` (not a 2xx) means.
    pub fn http(&self, status: u16) -> Verdict {
        if self.reject.contains(&status) {
            Verdict::Reject
        } else if self.retry.contains(&status) {
            Verdict::Retry
        } else {
            default_verdict(status)
        }
    }

    /// What a failed gRPC call means (see the module docs); `message` is the status message.
    #[cfg(feature = "otlp")]
    pub fn grpc(&self, code: tonic::Code, message: &str) -> Verdict {
        use tonic::Code;
        if let Some(status) = http_equivalent(code) {
            if self.reject.contains(&status) {
                return Verdict::Reject;
            }
            if self.retry.contains(&status) {
                return Verdict::Retry;
            }
        }
        match code {
            Code::ResourceExhausted if is_too_large(message) => Verdict::Split,
            Code::OutOfRange => Verdict::Split,
            Code::InvalidArgument | Code::FailedPrecondition | Code::AlreadyExists => {
                Verdict::Reject
            }
            _ => Verdict::Retry,
        }
    }
}

/// The HTTP status a gRPC code usually maps to (the table of `google.rpc.Code`), for the
/// codes a sink's lists may move.
#[cfg(feature = "otlp")]
pub fn http_equivalent(code: tonic::Code) -> Option<u16> {
    use tonic::Code;
    Some(match code {
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::ResourceExhausted => 429,
        Code::Internal | Code::Unknown | Code::DataLoss => 500,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Ok | Code::Cancelled => return None,
    })
}

/// Whether a gRPC `RESOURCE_EXHAUSTED` message says the message was over the size limit
/// (`grpc: received message larger than max (N vs. M)`, `message too large`).
#[cfg(feature = "otlp")]
fn is_too_large(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("larger than max") || m.contains("too large")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_statuses() {
        for s in [401, 403, 404, 407, 408, 429, 500, 502, 503, 504, 599, 301] {
            assert_eq!(default_verdict(s), Verdict::Retry, "{s}");
        }
        assert_eq!(default_verdict(413), Verdict::Split);
        for s in [400, 405, 409, 410, 415, 422, 499] {
            assert_eq!(default_verdict(s), Verdict::Reject, "{s}");
        }
    }

    #[test]
    fn the_lists_override_the_defaults() {
        let p = RefusalPolicy {
            retry: vec![409],
            reject: vec![401, 413, 503],
        };
        assert_eq!(p.http(409), Verdict::Retry);
        assert_eq!(p.http(401), Verdict::Reject);
        assert_eq!(p.http(413), Verdict::Reject);
        assert_eq!(p.http(503), Verdict::Reject);
        assert_eq!(p.http(403), Verdict::Retry);
        assert_eq!(p.http(400), Verdict::Reject);
        assert_eq!(RefusalPolicy::default().http(413), Verdict::Split);
    }

    #[cfg(feature = "otlp")]
    #[test]
    fn grpc_codes() {
        use tonic::Code;
        let p = RefusalPolicy::default();
        for c in [
            Code::Unauthenticated,
            Code::PermissionDenied,
            Code::NotFound,
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::DeadlineExceeded,
            Code::Aborted,
            Code::Cancelled,
            Code::Unknown,
            Code::Internal,
            Code::Unimplemented,
            Code::DataLoss,
        ] {
            assert_eq!(p.grpc(c, "x"), Verdict::Retry, "{c:?}");
        }
        assert_eq!(p.grpc(Code::InvalidArgument, "bad"), Verdict::Reject);
        assert_eq!(
            p.grpc(
                Code::ResourceExhausted,
                "grpc: received message larger than max (5000 vs. 4194304)"
            ),
            Verdict::Split
        );
        assert_eq!(
            p.grpc(Code::OutOfRange, "Error, decoded message length too large"),
            Verdict::Split
        );
        let p = RefusalPolicy {
            retry: vec![400],
            reject: vec![401],
        };
        assert_eq!(p.grpc(Code::Unauthenticated, ""), Verdict::Reject);
        assert_eq!(p.grpc(Code::InvalidArgument, ""), Verdict::Retry);
    }
}
