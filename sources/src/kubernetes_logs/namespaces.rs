//! Namespace metadata from the Kubernetes API: the labels of each namespace, which events get
//! as `kubernetes.namespace_labels` (as in Vector).

use serde::Deserialize;
use weir_pipeline::event::Value;

use super::cache::{Cached, MetaCache};
use super::pods::{string_map, ObjectMeta};

/// The parts of the Kubernetes `Namespace` object that are used.
#[derive(Debug, Deserialize)]
pub struct Namespace {
    pub metadata: ObjectMeta,
}

/// What the API knows about one namespace, ready to be put into events.
#[derive(Debug, Clone, PartialEq)]
pub struct NamespaceMeta {
    pub name: String,
    /// `namespace_labels`: an object of strings.
    pub labels: Value,
}

impl NamespaceMeta {
    pub fn from_namespace(ns: &Namespace) -> NamespaceMeta {
        NamespaceMeta {
            name: ns.metadata.name.clone(),
            labels: string_map(&ns.metadata.labels),
        }
    }
}

impl Cached for NamespaceMeta {
    fn key(&self) -> &str {
        &self.name
    }
}

/// Namespaces by name.
pub type NamespaceCache = MetaCache<NamespaceMeta>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn namespace_labels_are_cached_by_name() {
        let ns: Namespace = serde_json::from_str(
            r#"{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"shop","uid":"u",
                "resourceVersion":"7","labels":{"kubernetes.io/metadata.name":"shop","team":"web"}},
                "spec":{"finalizers":["kubernetes"]},"status":{"phase":"Active"}}"#,
        )
        .unwrap();
        let meta = NamespaceMeta::from_namespace(&ns);
        let c = NamespaceCache::default();
        c.upsert(meta.clone());
        let g = c.generation();
        c.upsert(meta);
        assert_eq!(c.generation(), g, "the same labels again change nothing");
        let got = c.get("shop").unwrap();
        let Value::Object(labels) = &got.labels else {
            panic!("{:?}", got.labels)
        };
        assert_eq!(labels.get("team"), Some(&Value::from("web")));
        c.replace_all(Vec::new(), Instant::now());
        c.sweep(Instant::now(), std::time::Duration::ZERO);
        assert!(c.get("shop").is_none());
        assert!(c.generation() > g);
    }
}
