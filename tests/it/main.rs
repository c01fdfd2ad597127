//! End-to-end tests of Weir: the real `weir` binary and the real runtime. One test binary,
//! one module per concern.

mod acknowledgements;
mod backpressure;
mod broken_configs;
mod cli;
mod config_examples;
mod elasticsearch;
mod ebpf;
mod file_source;
mod garbage;
mod harness;
mod host_metrics;
mod parquet;
mod prometheus;
mod nats;
mod otlp;
mod perf;
mod hubble;
mod kubernetes_deploy;
mod kubernetes_logs;
mod shutdown;
mod testkit;
