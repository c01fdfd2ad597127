//! # weir-records: record types a producer and a consumer agree on
//!
//! Some events have a fixed schema that more than one component knows: a source makes them
//! and a transform or a sink reads them without building the tree of their fields. Their
//! typed forms live here, outside the core (which knows no component) and outside any one
//! component crate:
//!
//! - [`flow`]: a network flow (Cilium Hubble's) in typed form, [`flow::FlowLog`]
//!   (`docs/schemas/flow.md`), made by the `hubble` source and the `hubble_jsonpb` codec
//!   ([`flow::HubbleJsonpb`], registered like a component) and read by `flow_to_topology`.
//! - [`stack`]: a profiler's stack sample, [`stack::StackSample`]
//!   (`docs/schemas/stack-sample.md`), made by `perf` and `ebpf_profile` and folded by
//!   `stack_fold`.
//!
//! Each type implements the core's [`TypedLog`](weir_pipeline::event::TypedLog): every other
//! component sees the same fields as a tree, built on first read.

pub mod flow;
pub mod stack;

use weir_pipeline::component::Registry;

/// Registers the codecs of this crate (`hubble_jsonpb`).
pub fn register(r: &mut Registry) {
    r.add_decoder(
        &flow::HUBBLE_JSONPB,
        "Lines of `hubble observe -o jsonpb`, flows held in typed form",
    );
}
