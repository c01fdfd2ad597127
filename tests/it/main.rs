//! End-to-end tests of Weir: the real `weir` binary and the real runtime. One test binary,
//! one module per concern.

mod acknowledgements;
mod backpressure;
mod broken_configs;
mod cli;
mod config_examples;
mod ebpf;
mod file_source;
mod garbage;
mod harness;
mod shutdown;
mod testkit;
