//! End-to-end tests of Weir: the real `weir` binary and the real runtime. One test binary,
//! one module per concern.

// This is test code: a failed unwrap()/expect() is a failed run, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod acknowledgements;
mod api_nats;
mod backpressure;
mod broken_configs;
mod cli;
mod config_examples;
mod config_tests;
mod console;
mod disk_buffer;
mod docs;
mod ebpf;
mod ebpf_io;
mod ebpf_memory;
mod ebpf_sched;
mod elasticsearch;
mod file_rotation;
mod file_sink;
mod file_source;
mod garbage;
mod grafana;
mod harness;
mod host_metrics;
mod hubble;
mod kafka;
mod kubernetes_deploy;
mod kubernetes_logs;
mod listeners;
mod memory;
mod nats;
mod otlp;
mod otlp_grpc;
mod parallel;
mod parquet;
mod perf;
mod prometheus;
mod refusals;
mod reload;
mod secrets;
mod shutdown;
mod sink_options;
mod supervision;
mod tap_top;
mod testkit;
mod tls_options;
