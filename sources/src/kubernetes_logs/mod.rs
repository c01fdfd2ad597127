//! `kubernetes_logs`: the logs of every container on this node, read from the files the kubelet
//! keeps (`<root>/<namespace>_<pod>_<uid>/<container>/<n>.log`), with the pod's metadata.
//!
//! - [`parser`]: the runtime's line formats (CRI, Docker json-file), detected per file;
//! - [`handler`]: lines to events (partial pieces joined, codec, fields);
//! - [`pods`]: metadata from the path, and what the API says about pods;
//! - [`namespaces`]: what the API says about namespaces (their labels);
//! - [`cache`]: the local copy of either, read without waiting on the API;
//! - [`api`]: a list+watch client for the pods of this node and for namespaces.
//!
//! Files are followed by the `file` source's tailer (rotation, truncation, checkpoints,
//! acknowledgements, open-file bound), with this source's [`handler::PodLines`] in place of
//! the file source's line handler.

pub mod api;
pub mod cache;
pub mod handler;
pub mod namespaces;
pub mod parser;
pub mod pods;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use weir_pipeline::codec::DecodingConfig;
use weir_pipeline::component::{Output, Source, SourceConfig, SourceContext};
use weir_pipeline::config::SecsOrZero;
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use crate::file::discovery::Discovery;
use crate::file::fingerprint::{FingerprintConfig, Fingerprinter};
use crate::file::lines::CharsetConfig;
use crate::file::tail::{TailConfig, Tailer};
use crate::file::{self, ReadFrom};
use api::{Client, Endpoint, Reporter, Watcher};
use namespaces::{NamespaceCache, NamespaceMeta};
use pods::{PodCache, PodMeta};

/// The service account's files, mounted in every pod that has one.
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// How long the start waits for the first list of pods before reading files.
const INITIAL_LIST_WAIT: Duration = Duration::from_secs(5);

/// `type = "kubernetes_logs"`: container logs of this node, with pod metadata.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesLogsConfig {
    /// The directory of pod logs, laid out `<namespace>_<pod>_<uid>/<container>/<n>.log`.
    /// Default: `/var/log/pods`.
    #[serde(default = "default_root")]
    pub root: PathBuf,
    /// Globs of log file paths to leave out (matched against the full path, e.g.
    /// `"/var/log/pods/kube-system_*/**"`). Default: none.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Leave out this pod's own logs (no feedback loop when the output goes to stdout). The
    /// pod is found from `POD_NAMESPACE` and `POD_NAME` (the downward API), else from the host
    /// name (a pod's host name is its name). Default: true.
    #[serde(default = "yes")]
    pub exclude_self: bool,
    /// Where files start when the source has no checkpoints yet (its first start): `beginning` or
    /// `end`. Files that appear later are read from their beginning. Default: `beginning`.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// The root is walked for new files at most this often, in milliseconds. Default: 1000.
    #[serde(default = "file::default_cooldown")]
    pub glob_minimum_cooldown_ms: u64,
    /// A message (after partial pieces are joined) longer than this many bytes is skipped and
    /// counted as an `oversized` error. Default: 1048576.
    #[serde(default = "file::default_max_line")]
    pub max_line_bytes: usize,
    /// The most log files open at once; idle ones are closed to let others in. Default: 512.
    #[serde(default = "file::default_max_open")]
    pub max_open_files: usize,
    /// A rotated (`0.log` renamed to `0.log.<time>`) or deleted log is read to its end, then
    /// released after this long without new data, in milliseconds. Default: 5000.
    #[serde(default = "file::default_rotate_wait")]
    pub rotate_wait_ms: u64,
    /// Files not modified for this many seconds are not opened. Default: none.
    #[serde(default)]
    pub ignore_older_secs: Option<SecsOrZero>,
    /// How each container message becomes an event. `bytes`: the message is `message`. `json`: a
    /// JSON message's fields become the event's (a Docker line `{"log":"{\"a\":1}\n"}` gives `a =
    /// 1`); a message that is not JSON stays in `message` and counts a `decode` error. Also
    /// `logfmt`, `syslog`. See [codecs](codecs.md#decoding). Default: `{ codec = "bytes" }`.
    #[serde(default)]
    pub decoding: DecodingConfig,
    /// Pod metadata from the Kubernetes API. Default: on, in-cluster.
    #[serde(default)]
    pub api: ApiConfig,
}

/// `api = { ... }`: enrichment from the Kubernetes API.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Ask the Kubernetes API for pod (and namespace) metadata. Default: true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The API server, `https://host:port` or `http://host:port`. Default: in a pod,
    /// `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`; elsewhere none (path
    /// metadata only).
    #[serde(default)]
    pub endpoint: Option<String>,
    /// A file holding the bearer token, read again for every request (bound tokens rotate).
    /// Default: the service account's `token`, if that file exists.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Send the token to an `http://` endpoint (no TLS). Default: false: with a token and an
    /// `http://` endpoint the source does not start.
    #[serde(default)]
    pub allow_plaintext_credentials: bool,
    /// The CA certificates (PEM) that sign the API server's certificate, for `https`. Default: the
    /// service account's `ca.crt`, if it exists.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Only this node's pods are listed and watched (`fieldSelector=spec.nodeName=...`). An empty
    /// string counts as unset. Default: `$NODE_NAME`; if that is unset, every pod of the cluster.
    #[serde(default)]
    pub node_name: Option<String>,
    /// A deleted pod's (or namespace's) metadata is kept this long, so its last lines are still
    /// enriched, in milliseconds. Default: 60000.
    #[serde(default = "default_delay_deletion")]
    pub delay_deletion_ms: u64,
    /// Also list and watch namespaces, to add `kubernetes.namespace_labels`. Needs `list` and
    /// `watch` of `namespaces` (a cluster-wide permission); set it to `false` if the agent's RBAC
    /// does not grant that. Default: true.
    #[serde(default = "yes")]
    pub namespace_labels: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            endpoint: None,
            token_file: None,
            allow_plaintext_credentials: false,
            ca_file: None,
            node_name: None,
            delay_deletion_ms: default_delay_deletion(),
            namespace_labels: true,
        }
    }
}

fn default_root() -> PathBuf {
    PathBuf::from("/var/log/pods")
}
fn yes() -> bool {
    true
}
fn default_delay_deletion() -> u64 {
    60_000
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A glob that matches a path literally (glob metacharacters escaped).
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('[');
            out.push(c);
            out.push(']');
        } else {
            out.push(c);
        }
    }
    out
}

impl KubernetesLogsConfig {
    /// The include and exclude globs for the tailer.
    fn globs(&self) -> (Vec<String>, Vec<String>) {
        let root = glob_escape(&self.root.to_string_lossy());
        let root = root.trim_end_matches('/');
        let include = vec![format!("{root}/*_*_*/*/*.log")];
        let mut exclude = self.exclude.clone();
        if self.exclude_self {
            match (env("POD_NAMESPACE"), env("POD_NAME")) {
                (Some(ns), Some(pod)) => exclude.push(format!(
                    "{root}/{}_{}_*/**",
                    glob_escape(&ns),
                    glob_escape(&pod)
                )),
                _ => {
                    if let Ok(h) = hostname::get() {
                        let h = h.to_string_lossy();
                        if !h.is_empty() {
                            exclude.push(format!("{root}/*_{}_*/**", glob_escape(&h)));
                        }
                    }
                }
            }
        }
        (include, exclude)
    }

    fn tail_config(&self) -> Result<TailConfig, String> {
        let (include, exclude) = self.globs();
        let discovery = Discovery::new(&include, &exclude).map_err(|e| e.to_string())?;
        if self.max_open_files == 0 {
            return Err("`max_open_files` must be at least 1".into());
        }
        if self.max_line_bytes == 0 {
            return Err("`max_line_bytes` must be at least 1".into());
        }
        Ok(TailConfig {
            discovery,
            glob_cooldown: Duration::from_millis(self.glob_minimum_cooldown_ms.max(10)),
            read_from_end: self.read_from == ReadFrom::End,
            fingerprinter: Fingerprinter::new(&FingerprintConfig::default(), b'\n'),
            delimiter: b'\n',
            // A CRI line holds its prefix as well as the message; the message limit is
            // applied after the prefix is taken off.
            max_line_bytes: self.max_line_bytes.saturating_add(4096),
            charset: CharsetConfig::Utf8,
            ignore_older: self.ignore_older_secs.map(SecsOrZero::duration),
            max_open_files: self.max_open_files,
            rotate_wait: Duration::from_millis(self.rotate_wait_ms),
            remove_after: None,
        })
    }

    /// The API endpoint to use, or why there is none.
    fn endpoint(&self) -> Result<Option<Endpoint>, String> {
        if !self.api.enabled {
            return Ok(None);
        }
        let sa = PathBuf::from(SA_DIR);
        let mut e = match &self.api.endpoint {
            Some(url) => Endpoint::parse(url)?,
            None => match (
                env("KUBERNETES_SERVICE_HOST"),
                env("KUBERNETES_SERVICE_PORT"),
            ) {
                (Some(host), port) => {
                    let port = port.unwrap_or_else(|| "443".into());
                    let host = if host.contains(':') {
                        format!("[{host}]")
                    } else {
                        host
                    };
                    Endpoint::parse(&format!("https://{host}:{port}"))?
                }
                (None, _) => return Ok(None),
            },
        };
        e.token_file = self
            .api
            .token_file
            .clone()
            .or_else(|| Some(sa.join("token")).filter(|p| p.exists()));
        e.ca_file = self
            .api
            .ca_file
            .clone()
            .or_else(|| Some(sa.join("ca.crt")).filter(|p| p.exists()));
        if e.token_file.is_some() {
            weir_connect::plaintext_credentials(
                "the service account token (`api.token_file`)",
                &e.display(),
                e.scheme_https,
                self.api.allow_plaintext_credentials,
            )
            .map_err(|m| format!("`api`: {m}"))?;
        }
        Ok(Some(e))
    }
}

#[async_trait]
impl SourceConfig for KubernetesLogsConfig {
    async fn build(&self, cx: SourceContext) -> Result<Source, BoxError> {
        let tail_cfg = self.tail_config()?;
        let endpoint = self.endpoint()?;
        let pods = Arc::new(PodCache::default());
        let namespaces = Arc::new(NamespaceCache::default());
        let delay_deletion = Duration::from_millis(self.api.delay_deletion_ms);
        let watchers = match endpoint {
            Some(e) => {
                let node_name = self
                    .api
                    .node_name
                    .clone()
                    .filter(|n| !n.is_empty())
                    .or_else(|| env("NODE_NAME"));
                if node_name.is_none() {
                    tracing::info!(component = %cx.id, "no api.node_name and no NODE_NAME: watching every pod of the cluster");
                }
                let client = Arc::new(Client::new(e)?);
                let down = Arc::new(AtomicBool::new(false));
                let pod_watcher = Watcher::<PodMeta> {
                    client: client.clone(),
                    selector: api::node_selector(node_name.as_deref()),
                    cache: pods.clone(),
                    delay_deletion,
                    metrics: cx.metrics.clone(),
                    reporter: Reporter::Api { down: down.clone() },
                };
                let ns_watcher = self.api.namespace_labels.then(|| Watcher::<NamespaceMeta> {
                    client,
                    selector: String::new(),
                    cache: namespaces.clone(),
                    delay_deletion,
                    metrics: cx.metrics.clone(),
                    reporter: Reporter::Part { api_down: down },
                });
                Some((pod_watcher, ns_watcher))
            }
            None => {
                if self.api.enabled {
                    tracing::warn!(component = %cx.id, "no Kubernetes API access (not in a pod: KUBERNETES_SERVICE_HOST is not set, and api.endpoint is not given): events carry the metadata of their path only (namespace, pod, uid, container)");
                }
                None
            }
        };
        let handler = handler::PodLines::new(
            self.decoding.codec,
            cx.id.clone(),
            cx.metrics.clone(),
            watchers.as_ref().map(|_| pods.clone()),
            watchers
                .as_ref()
                .and_then(|w| w.1.as_ref())
                .map(|_| namespaces.clone()),
            self.max_line_bytes,
        );
        let (table, dir) = file::load_checkpoints(&cx)?;
        let tailer = Tailer::new(tail_cfg, handler, cx.metrics.clone(), table.clone());
        let shutdown = cx.shutdown.clone();
        Ok(Box::pin(async move {
            let stop_watchers = shutdown.child_token();
            if let Some((pod_watcher, ns_watcher)) = watchers {
                // Metadata first, so the first lines read are enriched (bounded: a slow API
                // does not hold the logs back). Namespaces start after the pods' first answer,
                // so that an unreachable API is reported once, by the pods watcher.
                let deadline = tokio::time::Instant::now() + INITIAL_LIST_WAIT;
                let (tx, rx) = tokio::sync::oneshot::channel();
                tokio::spawn(pod_watcher.run(stop_watchers.clone(), tx));
                tokio::select! {
                    _ = tokio::time::timeout_at(deadline, rx) => {}
                    _ = shutdown.cancelled() => {}
                }
                if let Some(w) = ns_watcher {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    tokio::spawn(w.run(stop_watchers.clone(), tx));
                    tokio::select! {
                        _ = tokio::time::timeout_at(deadline, rx) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
            }
            let res = file::run(tailer, table, dir, cx).await;
            stop_watchers.cancel();
            res
        }))
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::default_output(DataType::LOG)]
    }

    fn can_acknowledge(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_escape_the_root_and_exclude_self() {
        let c: KubernetesLogsConfig = toml::from_str("root = \"/tmp/a[1]/pods/\"").unwrap();
        let (inc, exc) = c.globs();
        assert_eq!(inc, vec!["/tmp/a[[]1[]]/pods/*_*_*/*/*.log".to_string()]);
        assert_eq!(exc.len(), 1, "{exc:?}");
        let d = Discovery::new(&inc, &[]).unwrap();
        let _ = d;
    }
}
