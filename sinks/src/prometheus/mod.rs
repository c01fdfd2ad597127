//! The Prometheus sinks: [`exporter`] (`prometheus_exporter`, serves `/metrics` for scraping)
//! and [`remote_write`] (`prometheus_remote_write`, pushes with the remote write 1.0
//! protocol). Both fold incoming metrics into per-series running values and expand a series
//! into Prometheus samples with the code in [`common`]. [`request`] writes remote write
//! request bodies directly in the protobuf wire format ([`proto`] holds the messages).

pub mod common;
#[cfg(feature = "prometheus_exporter")]
pub mod exporter;
#[cfg(feature = "prometheus_remote_write")]
pub(crate) mod http;
#[cfg(feature = "prometheus_remote_write")]
pub mod proto;
#[cfg(feature = "prometheus_remote_write")]
pub mod remote_write;
#[cfg(feature = "prometheus_remote_write")]
pub mod request;

#[cfg(feature = "prometheus_exporter")]
pub use exporter::PrometheusExporterConfig;
#[cfg(feature = "prometheus_remote_write")]
pub use remote_write::RemoteWriteConfig;
