//! The signal a source watches to know it must stop.

pub use tokio_util::sync::CancellationToken as ShutdownToken;
