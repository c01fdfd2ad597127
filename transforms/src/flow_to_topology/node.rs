//! Naming the two ends of a flow at the configured granularity.

use std::fmt::Write as _;

use super::flow::EndpointView;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What one node of the map stands for.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// A Cilium security identity (`identity:<n>`).
    Identity,
    /// A workload (`namespace/name`): the first of `workloads`, else the `app` or `k8s-app`
    /// label, else the pod name. The default.
    #[default]
    Workload,
    /// A pod (`namespace/pod`).
    Pod,
    /// A namespace.
    Namespace,
    /// An IP address.
    Ip,
}

impl Granularity {
    /// The metric label suffix (`source_workload`, `source_pod`, ...).
    pub fn label(self) -> &'static str {
        match self {
            Granularity::Identity => "identity",
            Granularity::Workload => "workload",
            Granularity::Pod => "pod",
            Granularity::Namespace => "namespace",
            Granularity::Ip => "ip",
        }
    }
}

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NodeKind {
    Workload,
    Pod,
    Namespace,
    Identity,
    Ip,
    /// Outside the cluster (`reserved:world`), named by its DNS name when Hubble knows it.
    World,
    /// Another reserved identity (`host`, `remote-node`, `kube-apiserver`, `health`, ...).
    Reserved,
    /// Nothing to name it by.
    Unknown,
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Workload => "workload",
            NodeKind::Pod => "pod",
            NodeKind::Namespace => "namespace",
            NodeKind::Identity => "identity",
            NodeKind::Ip => "ip",
            NodeKind::World => "world",
            NodeKind::Reserved => "reserved",
            NodeKind::Unknown => "unknown",
        }
    }
}

/// A node named from a flow, borrowing from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeRef<'a> {
    pub kind: NodeKind,
    pub namespace: &'a [u8],
    pub name: &'a [u8],
    pub identity: u32,
}

/// A node kept in the map.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    pub kind: NodeKind,
    pub namespace: Bytes,
    pub name: Bytes,
    pub identity: u32,
}

impl NodeRef<'_> {
    pub fn to_owned(self) -> Node {
        Node {
            kind: self.kind,
            namespace: Bytes::copy_from_slice(self.namespace),
            name: Bytes::copy_from_slice(self.name),
            identity: self.identity,
        }
    }

    pub fn matches(&self, n: &Node) -> bool {
        self.kind == n.kind
            && self.identity == n.identity
            && self.name == &n.name[..]
            && self.namespace == &n.namespace[..]
    }

    /// Feeds the node into a hash.
    pub fn hash_into(&self, h: &mut super::hash::FxHasher) {
        h.write_u64(self.kind as u64 | (u64::from(self.identity) << 8));
        h.write_bytes(self.namespace);
        h.write_u64(0xff);
        h.write_bytes(self.name);
    }
}

impl Node {
    /// The node's id in the topology: `ns/name`, `ns`, `identity:<n>`, an IP,
    /// `world(<dns name>)`, a reserved name, or `unknown`.
    pub fn id(&self) -> String {
        let ns = String::from_utf8_lossy(&self.namespace);
        let name = String::from_utf8_lossy(&self.name);
        match self.kind {
            NodeKind::Workload | NodeKind::Pod => format!("{ns}/{name}"),
            NodeKind::Namespace => ns.into_owned(),
            NodeKind::Identity => format!("identity:{}", self.identity),
            NodeKind::Ip | NodeKind::Reserved => name.into_owned(),
            NodeKind::World if name.is_empty() => "world".into(),
            NodeKind::World => format!("world({name})"),
            NodeKind::Unknown => "unknown".into(),
        }
    }

    /// The node's name without its namespace (the metric label value).
    pub fn short_name(&self) -> String {
        match self.kind {
            NodeKind::Identity => {
                let mut s = String::new();
                let _ = write!(s, "{}", self.identity);
                s
            }
            NodeKind::Namespace => String::from_utf8_lossy(&self.namespace).into_owned(),
            NodeKind::World | NodeKind::Unknown => self.id(),
            _ => String::from_utf8_lossy(&self.name).into_owned(),
        }
    }
}

/// Names one end of a flow. `dns_name` is the first DNS name Hubble knows for its IP.
pub fn node_ref<'a>(
    granularity: Granularity,
    endpoint: Option<&EndpointView<'a>>,
    ip: &'a [u8],
    dns_name: &'a [u8],
) -> NodeRef<'a> {
    let by_ip = |ip: &'a [u8]| NodeRef {
        kind: if ip.is_empty() {
            NodeKind::Unknown
        } else {
            NodeKind::Ip
        },
        namespace: &[],
        name: ip,
        identity: 0,
    };
    if granularity == Granularity::Ip {
        return by_ip(ip);
    }
    let Some(ep) = endpoint else {
        return by_ip(ip);
    };
    let namespace = ep.namespace;
    let identity = ep.identity;
    if namespace.is_empty() {
        let world = |name: &'a [u8]| NodeRef {
            kind: NodeKind::World,
            namespace: &[],
            name,
            identity: 0,
        };
        return match ep.reserved {
            Some(b"world" | b"world-ipv4" | b"world-ipv6") => world(dns_name),
            Some(r) => NodeRef {
                kind: NodeKind::Reserved,
                namespace: &[],
                name: r,
                identity: 0,
            },
            // Reserved world identities (2, and 9/10 for the split IPv4/IPv6 worlds).
            None if matches!(identity, 2 | 9 | 10) => world(dns_name),
            None => by_ip(ip),
        };
    }
    let named = |kind, name: &'a [u8]| NodeRef {
        kind,
        namespace,
        name,
        identity: 0,
    };
    match granularity {
        Granularity::Namespace => named(NodeKind::Namespace, &[]),
        Granularity::Identity => NodeRef {
            kind: NodeKind::Identity,
            namespace,
            name: &[],
            identity,
        },
        Granularity::Pod => {
            if ep.pod_name.is_empty() {
                by_ip(ip)
            } else {
                named(NodeKind::Pod, ep.pod_name)
            }
        }
        Granularity::Workload | Granularity::Ip => {
            let name = Some(ep.workload)
                .filter(|w| !w.is_empty())
                .or(ep.app)
                .or(ep.k8s_app)
                .or_else(|| Some(ep.pod_name).filter(|p| !p.is_empty()));
            match name {
                Some(n) => named(NodeKind::Workload, n),
                None => by_ip(ip),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use weir_pipeline::event::Value;

    /// The node of a flow whose source is `endpoint` and whose source names are `names`.
    fn id_of(g: Granularity, endpoint: serde_json::Value, names: &[&str]) -> String {
        let v = Value::from(serde_json::json!({"flow": {
            "IP": {"source": "10.0.0.1"}, "source": endpoint, "source_names": names}}));
        let f = super::super::FlowView::read(&v).unwrap();
        node_ref(g, f.source.as_ref(), f.src_ip, f.source_name)
            .to_owned()
            .id()
    }

    #[test]
    fn workload_falls_back_to_labels_then_pod() {
        let full = serde_json::json!({"namespace": "shop", "pod_name": "cart-7f9-x2",
            "labels": ["k8s:app=cart-label", "k8s:io.kubernetes.pod.namespace=shop"],
            "workloads": [{"name": "cart", "kind": "Deployment"}], "identity": 1234});
        let id = |g| id_of(g, full.clone(), &[]);
        assert_eq!(id(Granularity::Workload), "shop/cart");
        assert_eq!(id(Granularity::Pod), "shop/cart-7f9-x2");
        assert_eq!(id(Granularity::Namespace), "shop");
        assert_eq!(id(Granularity::Identity), "identity:1234");
        assert_eq!(id(Granularity::Ip), "10.0.0.1");
        let labels = serde_json::json!({"namespace": "kube-system", "pod_name": "coredns-1",
            "labels": ["k8s:k8s-app=kube-dns"]});
        assert_eq!(
            id_of(Granularity::Workload, labels, &[]),
            "kube-system/kube-dns"
        );
        let pod = serde_json::json!({"namespace": "x", "pod_name": "lonely"});
        assert_eq!(id_of(Granularity::Workload, pod, &[]), "x/lonely");
    }

    #[test]
    fn world_is_named_by_dns_and_reserved_by_label() {
        let world = serde_json::json!({"identity": 2, "labels": ["reserved:world"]});
        assert_eq!(
            id_of(
                Granularity::Workload,
                world.clone(),
                &["", "api.example.com"]
            ),
            "world(api.example.com)"
        );
        assert_eq!(id_of(Granularity::Pod, world, &[]), "world");
        let host = serde_json::json!({"identity": 1, "labels": ["reserved:host"]});
        assert_eq!(id_of(Granularity::Workload, host, &[]), "host");
        let bare = serde_json::json!({"identity": 9});
        assert_eq!(id_of(Granularity::Workload, bare, &[]), "world");
        assert_eq!(
            node_ref(Granularity::Workload, None, b"", b"")
                .to_owned()
                .id(),
            "unknown"
        );
    }
}
