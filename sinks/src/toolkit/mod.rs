//! The sink toolkit: what every sink that batches or sends requests shares, so that the same
//! option has the same name, the same checks and the same behaviour everywhere.
//!
//! - [`batch`]: the `batch` table (`max_events`, `max_bytes`, `timeout_secs`), with per-sink
//!   defaults ([`BatchDefaults`]), and the one batching stage ([`batch::run`]) that pulls
//!   from a sink's input, fills a batch until a limit, and hands it to the sink's sender with
//!   up to `request.concurrency` batches in flight;
//! - [`request`]: the `request` table (`concurrency`, `timeout_secs`,
//!   `retry_initial_backoff_secs`, `retry_max_duration_secs`, `retry_attempts`,
//!   `retry_statuses`, `reject_statuses`), with per-sink defaults ([`RequestDefaults`]), the
//!   retry loop state ([`Retries`]) and its stop-aware wait ([`Retries::wait`]);
//! - [`retry`]: the refusal policy of every sink: which answers are retried, which split the
//!   request (413), which reject its events ([`retry::Verdict`]);
//! - [`report`]: a failing sink says so once, then at most once a period, then when it
//!   recovers ([`FailureReporter`]);
//! - [`split`]: the halves of a request refused as too large ([`split::Parts`]).
//!
//! The names and shapes are Vector's, so a Vector user's sink settings carry over. Every
//! value is checked when the configuration is read (see
//! [`weir_pipeline::config::Secs`]), so no value can fail or panic later.

pub mod batch;
pub mod report;
pub mod request;
pub mod retry;
pub mod split;

pub use batch::{BatchConfig, BatchDefaults, BatchLimits};
pub use report::FailureReporter;
pub use request::{RequestConfig, RequestDefaults, Retries, Wait};
pub use retry::{RefusalPolicy, Verdict};
