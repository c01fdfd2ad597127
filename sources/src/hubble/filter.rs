//! `whitelist` / `blacklist` entries: the TOML form of Hubble's `FlowFilter`, applied by the
//! server (so unwanted flows never cross the network).

use serde::{Deserialize, Serialize};

use super::proto::{self, EnumTable, FlowFilter};

/// One filter. Every field that is set must match; a list matches when any of its elements
/// does. All fields default to empty (no condition).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Flows from or to these namespaces. Like `hubble observe --namespace`, the filter is
    /// sent twice: once with `source_pod = "<ns>/"`, once with `destination_pod = "<ns>/"`.
    #[serde(default)]
    pub namespace: Vec<String>,
    /// Flow UUIDs.
    #[serde(default)]
    pub uuid: Vec<String>,
    /// Source IPs or CIDRs (`10.0.0.1`, `10.0.0.0/8`).
    #[serde(default)]
    pub source_ip: Vec<String>,
    /// Source pod name prefixes, optionally in a namespace (`frontend`, `boutique/frontend-`,
    /// `boutique/` for the whole namespace).
    #[serde(default)]
    pub source_pod: Vec<String>,
    /// Source FQDNs (`*.example.com`).
    #[serde(default)]
    pub source_fqdn: Vec<String>,
    /// Source label selectors (`k8s:app=frontend`, Kubernetes selector syntax).
    #[serde(default)]
    pub source_label: Vec<String>,
    /// Source service names (same syntax as `source_pod`).
    #[serde(default)]
    pub source_service: Vec<String>,
    /// Destination IPs or CIDRs.
    #[serde(default)]
    pub destination_ip: Vec<String>,
    /// Destination pod name prefixes, optionally in a namespace.
    #[serde(default)]
    pub destination_pod: Vec<String>,
    /// Destination FQDNs.
    #[serde(default)]
    pub destination_fqdn: Vec<String>,
    /// Destination label selectors.
    #[serde(default)]
    pub destination_label: Vec<String>,
    /// Destination service names.
    #[serde(default)]
    pub destination_service: Vec<String>,
    /// `INGRESS` or `EGRESS`.
    #[serde(default)]
    pub traffic_direction: Vec<String>,
    /// `FORWARDED`, `DROPPED`, `ERROR`, `AUDIT`, `REDIRECTED`, `TRACED` or `TRANSLATED`.
    #[serde(default)]
    pub verdict: Vec<String>,
    /// HTTP status code prefixes (`404`, `5+`).
    #[serde(default)]
    pub http_status_code: Vec<String>,
    /// L4 or L7 protocols (`tcp`, `udp`, `icmp`, `http`, `dns`, `kafka`).
    #[serde(default)]
    pub protocol: Vec<String>,
    /// L4 source ports.
    #[serde(default)]
    pub source_port: Vec<u16>,
    /// L4 destination ports.
    #[serde(default)]
    pub destination_port: Vec<u16>,
    /// `true` for replies only, `false` for requests only.
    #[serde(default)]
    pub reply: Vec<bool>,
    /// DNS query patterns (RE2 regular expressions).
    #[serde(default)]
    pub dns_query: Vec<String>,
    /// Source security identities.
    #[serde(default)]
    pub source_identity: Vec<u32>,
    /// Destination security identities.
    #[serde(default)]
    pub destination_identity: Vec<u32>,
    /// HTTP methods (`GET`).
    #[serde(default)]
    pub http_method: Vec<String>,
    /// HTTP path regular expressions.
    #[serde(default)]
    pub http_path: Vec<String>,
    /// Node name patterns (`kind-worker*`, `cluster/`).
    #[serde(default)]
    pub node_name: Vec<String>,
    /// `IPv4` or `IPv6`.
    #[serde(default)]
    pub ip_version: Vec<String>,
}

fn enums(field: &str, table: EnumTable, names: &[String]) -> Result<Vec<i32>, String> {
    names
        .iter()
        .map(|n| {
            proto::enum_value(table, n)
                .filter(|v| *v != 0)
                .ok_or_else(|| {
                    let valid: Vec<&str> = table.iter().skip(1).map(|(_, n)| *n).collect();
                    format!(
                        "`{field}`: unknown value `{n}` (one of {})",
                        valid.join(", ")
                    )
                })
        })
        .collect()
}

impl FilterConfig {
    /// The protobuf filters this entry stands for (two when `namespace` is set).
    pub fn to_proto(&self) -> Result<Vec<FlowFilter>, String> {
        let base = FlowFilter {
            uuid: self.uuid.clone(),
            source_ip: self.source_ip.clone(),
            source_pod: self.source_pod.clone(),
            source_fqdn: self.source_fqdn.clone(),
            source_label: self.source_label.clone(),
            source_service: self.source_service.clone(),
            destination_ip: self.destination_ip.clone(),
            destination_pod: self.destination_pod.clone(),
            destination_fqdn: self.destination_fqdn.clone(),
            destination_label: self.destination_label.clone(),
            destination_service: self.destination_service.clone(),
            traffic_direction: enums(
                "traffic_direction",
                proto::TRAFFIC_DIRECTION,
                &self.traffic_direction,
            )?,
            verdict: enums("verdict", proto::VERDICT, &self.verdict)?,
            http_status_code: self.http_status_code.clone(),
            protocol: self.protocol.clone(),
            source_port: self.source_port.iter().map(u16::to_string).collect(),
            destination_port: self.destination_port.iter().map(u16::to_string).collect(),
            reply: self.reply.clone(),
            dns_query: self.dns_query.clone(),
            source_identity: self.source_identity.clone(),
            destination_identity: self.destination_identity.clone(),
            http_method: self.http_method.clone(),
            http_path: self.http_path.clone(),
            node_name: self.node_name.clone(),
            ip_version: enums("ip_version", proto::IP_VERSION, &self.ip_version)?,
        };
        if self.namespace.is_empty() {
            return Ok(vec![base]);
        }
        let prefixes: Vec<String> = self
            .namespace
            .iter()
            .map(|ns| format!("{}/", ns.trim_end_matches('/')))
            .collect();
        let mut from = base.clone();
        from.source_pod.extend(prefixes.iter().cloned());
        let mut to = base;
        to.destination_pod.extend(prefixes);
        Ok(vec![from, to])
    }
}

/// All entries of a list as protobuf filters.
pub fn to_proto(list: &[FilterConfig], what: &str) -> Result<Vec<FlowFilter>, String> {
    let mut out = Vec::new();
    for (i, f) in list.iter().enumerate() {
        out.extend(f.to_proto().map_err(|e| format!("{what}[{i}]: {e}"))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_becomes_a_source_and_a_destination_filter() {
        let f: FilterConfig = toml::from_str(
            "namespace = ['boutique']\nverdict = ['DROPPED']\ndestination_port = [80]",
        )
        .unwrap();
        let p = f.to_proto().unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].source_pod, vec!["boutique/"]);
        assert!(p[0].destination_pod.is_empty());
        assert_eq!(p[1].destination_pod, vec!["boutique/"]);
        assert!(p.iter().all(|f| f.verdict == vec![2]));
        assert!(p.iter().all(|f| f.destination_port == vec!["80"]));
    }

    #[test]
    fn unknown_enum_names_are_config_errors() {
        let f: FilterConfig = toml::from_str("verdict = ['DROPED']").unwrap();
        let e = to_proto(&[f], "whitelist").unwrap_err();
        assert!(
            e.starts_with("whitelist[0]: `verdict`: unknown value `DROPED`"),
            "{e}"
        );
        assert!(toml::from_str::<FilterConfig>("verdicts = ['DROPPED']").is_err());
    }
}
