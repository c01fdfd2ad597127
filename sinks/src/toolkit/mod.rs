//! The sink toolkit: what every sink that batches or sends requests shares, so that the same
//! option has the same name, the same checks and the same behaviour everywhere.
//!
//! - [`batch`]: the `batch` table (`max_events`, `max_bytes`, `timeout_secs`), with per-sink
//!   defaults ([`BatchDefaults`]), and the one batching stage ([`batch::run`]) that pulls
//!   from a sink's input, fills a batch until a limit, and hands it to the sink's sender with
//!   up to `request.concurrency` batches in flight;
//! - [`request`]: the `request` table (`concurrency`, `timeout_secs`,
//!   `retry_initial_backoff_secs`, `retry_max_duration_secs`, `retry_attempts`), with
//!   per-sink defaults ([`RequestDefaults`]), and the retry loop state ([`Retries`]);
//! - [`retry`]: what counts as retriable (HTTP statuses, gRPC codes): one place to change the
//!   failure policy.
//!
//! The names and shapes are Vector's, so a Vector user's sink settings carry over. Every
//! value is checked when the configuration is read (see
//! [`weir_pipeline::config::Secs`]), so no value can fail or panic later.

pub mod batch;
pub mod request;
pub mod retry;

pub use batch::{BatchConfig, BatchDefaults, BatchLimits};
pub use request::{RequestConfig, RequestDefaults, Retries};
