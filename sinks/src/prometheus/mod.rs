//! The Prometheus sinks: [`exporter`] (`prometheus_exporter`, serves `/metrics` for scraping)
//! and [`remote_write`] (`prometheus_remote_write`, pushes with the remote write 1.0
//! protocol). Both fold incoming metrics into per-series running values and expand a series
//! into Prometheus samples with the code in [`common`]. [`request`] writes remote write
//! request bodies directly in the protobuf wire format ([`proto`] holds the messages).

pub mod common;
pub mod exporter;
pub(crate) mod http;
pub mod proto;
pub mod remote_write;
pub mod request;

pub use exporter::PrometheusExporterConfig;
pub use remote_write::RemoteWriteConfig;
