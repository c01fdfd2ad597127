//! # weir-connect: connection code a source and a sink of the same system share
//!
//! The core (`weir-pipeline`) knows no external system. What the `kafka` source and sink, or
//! the `nats` source and sink, have in common lives here, each behind the cargo feature of its
//! system, so a build without Kafka compiles no librdkafka:
//!
//! - `kafka` (feature `kafka`): the Kafka client options (brokers, TLS, SASL, librdkafka
//!   pass-through) and the client context that routes librdkafka's logs and errors.
//! - `nats` (feature `nats`): the NATS connection options (servers, auth, TLS, reconnects).
//! - [`grpc_status`]: the `grpc-status-details-bin` detail of a gRPC error (retry delays), as
//!   OTLP servers send it.

pub mod grpc_status;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "nats")]
pub mod nats;
