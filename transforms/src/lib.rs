//! # weir-transforms: the transforms of Weir
//!
//! A transform reads events from its `inputs`, changes, drops or routes them, and passes them
//! on. This crate holds the transform types, each in its own module, and [`register`], which
//! adds them to the binary's [`Registry`].
//!
//! | `type`   | what it does                                                              |
//! |----------|---------------------------------------------------------------------------|
//! | `remap`  | runs a Vector Remap Language (VRL) program on each log ([`remap`])         |
//! | `filter` | keeps the logs for which a VRL condition is true ([`filter`])             |
//! | `route`  | sends events to named outputs by VRL conditions ([`route`])               |
//! | `sample` | keeps one event in every `rate`, optionally by key ([`sample`])           |
//! | `stack_fold` | folds stack samples into `root;...;leaf count` lines ([`stack_fold`]) |
//! | `flow_to_topology` | network flows into a service map per window ([`flow_to_topology`]) |
//! | `log_to_metric` | makes counters, gauges, histograms, summaries, sets from log fields ([`log_to_metric`]) |
//! | `aggregate` | rolls metrics up per interval: sums increments, keeps the last absolute value ([`aggregate`]) |
//!
//! VRL is compiled with the `vrl` crate, the same compiler and standard library as Vector, so
//! Vector programs and conditions run unchanged. Programs are compiled once when the pipeline
//! starts, and a compile error shows VRL's diagnostic with the offending line. Each log's
//! fields are the `Value` VRL works on, so a program runs on them in place.

use weir_pipeline::component::Registry;

#[cfg(feature = "aggregate")]
pub mod aggregate;
#[cfg(feature = "vrl")]
mod condition;
#[cfg(feature = "filter")]
pub mod filter;
#[cfg(feature = "flow_to_topology")]
pub mod flow_to_topology;
#[cfg(any(
    feature = "aggregate",
    feature = "flow_to_topology",
    feature = "stack_fold"
))]
mod holds;
#[cfg(feature = "log_to_metric")]
pub mod log_to_metric;
#[cfg(feature = "remap")]
pub mod remap;
#[cfg(feature = "route")]
pub mod route;
#[cfg(feature = "sample")]
pub mod sample;
#[cfg(feature = "stack_fold")]
pub mod stack_fold;
pub mod unit_test;
#[cfg(feature = "vrl")]
mod vrl_json;

#[cfg(feature = "aggregate")]
pub use aggregate::AggregateConfig;
#[cfg(feature = "filter")]
pub use filter::FilterConfig;
#[cfg(feature = "flow_to_topology")]
pub use flow_to_topology::FlowToTopologyConfig;
#[cfg(feature = "log_to_metric")]
pub use log_to_metric::LogToMetricConfig;
#[cfg(feature = "remap")]
pub use remap::RemapConfig;
#[cfg(feature = "route")]
pub use route::RouteConfig;
#[cfg(feature = "sample")]
pub use sample::SampleConfig;
#[cfg(feature = "stack_fold")]
pub use stack_fold::StackFoldConfig;

/// Adds every transform type this build has (one cargo feature each) to `registry`.
#[allow(unused_variables)] // a build with none of them registers nothing
pub fn register(registry: &mut Registry) {
    #[cfg(feature = "aggregate")]
    registry.add_transform::<AggregateConfig>(
        "aggregate",
        "Roll metrics up per interval: sum counters, keep the last gauge, merge histograms.",
    );
    #[cfg(feature = "remap")]
    registry.add_transform::<RemapConfig>(
        "remap",
        "Modify, parse and restructure logs with a Vector Remap Language (VRL) program.",
    );
    #[cfg(feature = "filter")]
    registry.add_transform::<FilterConfig>(
        "filter",
        "Keep only the logs for which a VRL condition is true.",
    );
    #[cfg(feature = "route")]
    registry.add_transform::<RouteConfig>(
        "route",
        "Split events into named outputs by VRL conditions.",
    );
    #[cfg(feature = "flow_to_topology")]
    registry.add_transform::<FlowToTopologyConfig>(
        "flow_to_topology",
        "Turn network flows (Hubble jsonpb) into a service map per window: topology events and/or metrics.",
    );
    #[cfg(feature = "log_to_metric")]
    registry.add_transform::<LogToMetricConfig>(
        "log_to_metric",
        "Make counters, gauges, histograms, summaries and sets from log fields.",
    );
    #[cfg(feature = "sample")]
    registry.add_transform::<SampleConfig>(
        "sample",
        "Keep one event in every `rate`, optionally keeping or dropping whole keys together.",
    );
    #[cfg(feature = "stack_fold")]
    registry.add_transform::<StackFoldConfig>(
        "stack_fold",
        "Fold stack samples into `root;...;leaf` stacks with counts, per window and group.",
    );
}

#[cfg(all(
    test,
    feature = "aggregate",
    feature = "filter",
    feature = "flow_to_topology",
    feature = "log_to_metric",
    feature = "remap",
    feature = "route",
    feature = "sample",
    feature = "stack_fold"
))]
mod tests {
    use super::*;

    #[test]
    fn registers_all() {
        let mut r = Registry::default();
        register(&mut r);
        let names: Vec<&str> = r.transforms.keys().copied().collect();
        assert_eq!(
            names,
            vec![
                "aggregate",
                "filter",
                "flow_to_topology",
                "log_to_metric",
                "remap",
                "route",
                "sample",
                "stack_fold"
            ]
        );
        assert!(r.transforms.values().all(|t| !t.description.is_empty()));
    }

    #[test]
    fn registered_parser_builds_a_config() {
        let mut r = Registry::default();
        register(&mut r);
        let parse = |ty: &str, text: &str| {
            let de = toml::de::ValueDeserializer::parse(text).unwrap();
            (r.transforms[ty].parse)(de)
        };
        assert!(parse("filter", "{ condition = '.a == 1' }").is_ok());
        assert!(parse("remap", "{ source = '.a = 1', drop_on_error = true }").is_ok());
        assert!(parse("route", "{ route = { a = 'true' } }").is_ok());
        assert!(parse("sample", "{ rate = 3, key_field = 'k' }").is_ok());
        assert!(parse("sample", "{ rate = 3, bogus = 1 }").is_err());
    }
}
