//! Pod metadata: what the log paths say, and what the Kubernetes API adds, kept in a local
//! cache ([`PodCache`]) that the reading thread consults without waiting.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use bytes::Bytes;
use serde::Deserialize;
use weir_pipeline::event::{ObjectMap, Value};

use super::cache::{Cached, MetaCache};

/// The label or annotation that keeps a pod's logs out (`"true"`).
pub const EXCLUDE_KEY: &str = "weir.io/exclude";

/// What `<root>/<namespace>_<pod>_<uid>/<container>/<n>.log` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMeta {
    pub namespace: String,
    pub pod_name: String,
    pub pod_uid: String,
    pub container_name: String,
}

impl PathMeta {
    /// Parses a container log path; `None` if it does not have that shape. Namespaces, pod
    /// names and uids cannot contain `_`, so the split is unambiguous.
    pub fn from_path(path: &Path) -> Option<PathMeta> {
        let container = path.parent()?;
        let pod_dir = container.parent()?;
        let container_name = container.file_name()?.to_str()?;
        let mut parts = pod_dir.file_name()?.to_str()?.splitn(3, '_');
        let (ns, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
        if ns.is_empty() || pod.is_empty() || uid.is_empty() || container_name.is_empty() {
            return None;
        }
        Some(PathMeta {
            namespace: ns.to_string(),
            pod_name: pod.to_string(),
            pod_uid: uid.to_string(),
            container_name: container_name.to_string(),
        })
    }
}

/// What the API knows about one pod, ready to be put into events.
#[derive(Debug, Clone, PartialEq)]
pub struct PodMeta {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    /// `pod_labels`, `pod_annotations`, `pod_node_name`, `pod_owner`, `pod_ip` (those known).
    pub fields: ObjectMap,
    /// Container name to image (`container_image`).
    pub images: HashMap<String, String>,
    /// Labelled or annotated `weir.io/exclude: "true"`.
    pub excluded: bool,
}

// The parts of the Kubernetes `Pod` object that are used (field names as the API spells
// them; unknown fields are ignored, as a client must).

#[derive(Debug, Deserialize)]
pub struct Pod {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: PodStatus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub uid: String,
    #[serde(default)]
    pub resource_version: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub owner_references: Vec<OwnerReference>,
}

#[derive(Debug, Deserialize)]
pub struct OwnerReference {
    pub kind: String,
    pub name: String,
    #[serde(default)]
    pub controller: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub init_containers: Vec<Container>,
    #[serde(default)]
    pub ephemeral_containers: Vec<Container>,
}

#[derive(Debug, Deserialize)]
pub struct Container {
    pub name: String,
    #[serde(default)]
    pub image: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<String>,
}

pub(super) fn string_map(m: &BTreeMap<String, String>) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.as_str().into(), Value::Bytes(Bytes::from(v.clone()))))
            .collect(),
    )
}

fn text(s: &str) -> Value {
    Value::Bytes(Bytes::from(s.to_string()))
}

impl PodMeta {
    pub fn from_pod(pod: &Pod) -> PodMeta {
        let m = &pod.metadata;
        let mut fields = ObjectMap::new();
        fields.insert("pod_labels".into(), string_map(&m.labels));
        fields.insert("pod_annotations".into(), string_map(&m.annotations));
        if let Some(n) = &pod.spec.node_name {
            fields.insert("pod_node_name".into(), text(n));
        }
        let owner = m
            .owner_references
            .iter()
            .find(|o| o.controller == Some(true))
            .or_else(|| m.owner_references.first());
        if let Some(o) = owner {
            fields.insert("pod_owner".into(), text(&format!("{}/{}", o.kind, o.name)));
        }
        if let Some(ip) = &pod.status.pod_ip {
            fields.insert("pod_ip".into(), text(ip));
        }
        let images = pod
            .spec
            .containers
            .iter()
            .chain(&pod.spec.init_containers)
            .chain(&pod.spec.ephemeral_containers)
            .filter_map(|c| Some((c.name.clone(), c.image.clone()?)))
            .collect();
        let flag = |map: &BTreeMap<String, String>| {
            map.get(EXCLUDE_KEY)
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        };
        PodMeta {
            uid: m.uid.clone(),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            fields,
            images,
            excluded: flag(&m.labels) || flag(&m.annotations),
        }
    }
}

impl Cached for PodMeta {
    fn key(&self) -> &str {
        &self.uid
    }
}

/// Pods by uid.
pub type PodCache = MetaCache<PodMeta>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_metadata() {
        let m = PathMeta::from_path(Path::new(
            "/var/log/pods/kube-system_coredns-5d78c9869d-abcde_0c1d2e3f-aaaa-bbbb-cccc-1234567890ab/coredns/0.log",
        ))
        .unwrap();
        assert_eq!(m.namespace, "kube-system");
        assert_eq!(m.pod_name, "coredns-5d78c9869d-abcde");
        assert_eq!(m.pod_uid, "0c1d2e3f-aaaa-bbbb-cccc-1234567890ab");
        assert_eq!(m.container_name, "coredns");
        assert!(PathMeta::from_path(Path::new("/var/log/pods/nounderscore/c/0.log")).is_none());
    }

    use std::time::{Duration, Instant};

    #[test]
    fn cache_keeps_deleted_pods_for_the_delay() {
        let pod: Pod = serde_json::from_str(
            r#"{"metadata":{"name":"p","namespace":"n","uid":"u1","labels":{"weir.io/exclude":"true"},
                "ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"p-1","uid":"x","controller":true}]},
                "spec":{"nodeName":"node-1","containers":[{"name":"c","image":"nginx:1"}]},
                "status":{"podIP":"10.0.0.1"}}"#,
        )
        .unwrap();
        let meta = PodMeta::from_pod(&pod);
        assert!(meta.excluded);
        assert_eq!(meta.fields.get("pod_owner"), Some(&text("ReplicaSet/p-1")));
        assert_eq!(meta.images.get("c").map(String::as_str), Some("nginx:1"));
        let c = PodCache::default();
        let t0 = Instant::now();
        c.upsert(meta);
        let g = c.generation();
        c.delete("u1", t0);
        c.sweep(t0 + Duration::from_millis(500), Duration::from_secs(1));
        assert!(c.get("u1").is_some());
        c.sweep(t0 + Duration::from_secs(2), Duration::from_secs(1));
        assert!(c.get("u1").is_none());
        assert!(c.generation() > g);
    }
}
