//! # weir-connect: connection code components share
//!
//! The core (`weir-pipeline`) knows no external system. What components have in common to
//! connect lives here: the one `tls` table of every client and server, the HTTP and gRPC
//! client stacks, and what the `kafka` source and sink, or the `nats` source and sink, share,
//! each system behind its cargo feature, so a build without Kafka compiles no librdkafka:
//!
//! - `kafka` (feature `kafka`): the Kafka client options (brokers, TLS, SASL, librdkafka
//!   pass-through) and the client context that routes librdkafka's logs and errors.
//! - `nats` (feature `nats`): the NATS connection options (servers, auth, TLS, reconnects).
//! - [`tls`]: the one `tls` table of every client and server (Vector's option names), built
//!   into rustls client and server configurations, with the same error text everywhere.
//! - `http` (feature `http`): the HTTP client stack of the HTTP sinks (reqwest over [`tls`]).
//! - `grpc` (feature `grpc`): gRPC clients (tonic) over [`tls`].
//! - `server` (feature `server`): the one server stack of every listener (the `otlp` source,
//!   `prometheus_exporter`, the API): TLS, bearer tokens, connection and request-size limits,
//!   timeouts, bounded gzip for gRPC.
//! - [`grpc_status`]: the `grpc-status-details-bin` detail of a gRPC error (retry delays), as
//!   OTLP servers send it.

#[cfg(feature = "grpc")]
pub mod grpc;
pub mod grpc_status;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "server")]
pub mod server;
pub mod tls;

/// The check every component that sends credentials makes when it is built: credentials
/// (`what`, e.g. "`auth.password`") go to `endpoint` only over TLS (`encrypted`), unless the
/// component's `allow_plaintext_credentials` is set (a trusted network, a local test server),
/// which is then logged once as a warning.
pub fn plaintext_credentials(
    what: &str,
    endpoint: &str,
    encrypted: bool,
    allowed: bool,
) -> Result<(), String> {
    if encrypted {
        return Ok(());
    }
    if allowed {
        tracing::warn!(
            endpoint,
            "{what} is sent unencrypted (allow_plaintext_credentials = true)"
        );
        return Ok(());
    }
    Err(format!(
        "{what} would be sent unencrypted to {endpoint}: use TLS (https://, tls://), or set \
         `allow_plaintext_credentials = true` if the network between them is trusted"
    ))
}
