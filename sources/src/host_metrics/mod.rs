//! `host_metrics`: the machine's CPU, memory, swap, load, disks, filesystems, network, TCP
//! sockets, processes, logged-in users, SSH logins, uptime and (cgroup v2) per-container CPU
//! and memory, read from `/proc` (and `statvfs`, utmp and wtmp, the cgroup tree) every
//! interval, named like node_exporter's metrics so existing dashboards work.
//!
//! - [`collect`]: the collectors (one function each, parsing the files by hand).
//! - [`utmp`]: the login records of utmp, wtmp and btmp.
//!
//! This file holds the options and the scrape loop. A scrape runs on a blocking thread
//! (`statvfs` of a hung network mount must not stall the runtime); a collector that fails
//! is counted (`collect` errors, naming the collector) and the others still report.

pub mod collect;
pub mod utmp;

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use regex::Regex;
use serde::{Deserialize, Serialize};
use weir_pipeline::component::{Output, Source, SourceConfig, SourceContext};
use weir_pipeline::config::Secs;
use weir_pipeline::event::{Event, EventBatch, EventMetadata, Metric};
use weir_pipeline::vocabulary::DataType;
use weir_pipeline::BoxError;

use collect::{CollectError, Host};

/// A collector of `host_metrics`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Collector {
    Cpu,
    Memory,
    Swap,
    Load,
    Disk,
    Filesystem,
    Network,
    Tcp,
    Processes,
    Users,
    Logins,
    Uptime,
    Cgroups,
}

impl Collector {
    const DEFAULT: [Collector; 12] = [
        Collector::Cpu,
        Collector::Memory,
        Collector::Swap,
        Collector::Load,
        Collector::Disk,
        Collector::Filesystem,
        Collector::Network,
        Collector::Tcp,
        Collector::Processes,
        Collector::Users,
        Collector::Logins,
        Collector::Uptime,
    ];

    fn run(self, host: &Host, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        match self {
            Collector::Cpu => host.cpu(out),
            Collector::Memory => host.memory(out),
            Collector::Swap => host.swap(out),
            Collector::Load => host.load(out),
            Collector::Disk => host.disk(out),
            Collector::Filesystem => host.filesystem(out),
            Collector::Network => host.network(out),
            Collector::Tcp => host.tcp(out),
            Collector::Processes => host.processes(out),
            Collector::Users => host.users(out),
            Collector::Logins => host.logins(out),
            Collector::Uptime => host.uptime(out),
            Collector::Cgroups => host.cgroups(out),
        }
    }
}

/// `type = "host_metrics"`: metrics of the machine, every `scrape_interval_secs`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostMetricsConfig {
    /// Seconds between two scrapes. Default: 15.
    #[serde(default = "default_interval")]
    pub scrape_interval_secs: Secs,
    /// Which collectors run: `cpu`, `memory`, `swap`, `load`, `disk`, `filesystem`, `network`,
    /// `tcp`, `processes`, `users`, `logins`, `uptime`, `cgroups`. `cgroups` needs `cgroup_root`.
    /// Default: all but `cgroups`, plus `cgroups` when `cgroup_root` is set.
    #[serde(default)]
    pub collectors: Option<Vec<Collector>>,
    /// The proc filesystem read. In a container, mount the host's at `/host/proc` and point this at
    /// it. Checked at `weir run` (it must hold `stat`). Default: `/proc`.
    #[serde(default = "default_proc_root")]
    pub proc_root: PathBuf,
    /// Prefix of the mount points given to `statvfs` (the host's `/` mounted in a
    /// container, e.g. `/host/root`). Default: `/`.
    #[serde(default = "default_rootfs")]
    pub rootfs: PathBuf,
    /// The utmp file of logged-in users. Default: `/var/run/utmp`.
    #[serde(default = "default_utmp")]
    pub utmp_path: PathBuf,
    /// The wtmp file (every login and logout) that the `logins` collector reads remote (SSH) logins
    /// from. In a container, mount the host's `/var/log` and point this at it. Default:
    /// `/var/log/wtmp`.
    #[serde(default = "default_wtmp")]
    pub wtmp_path: PathBuf,
    /// The btmp file of failed logins (usually `/var/log/btmp`, readable by root only). When set,
    /// `logins` also reports failed remote logins. Default: none (failed logins are not reported).
    #[serde(default)]
    pub btmp_path: Option<PathBuf>,
    /// A cgroup v2 hierarchy, usually `/sys/fs/cgroup`: CPU and memory of each cgroup below it.
    /// Default: none (no cgroup metrics).
    #[serde(default)]
    pub cgroup_root: Option<PathBuf>,
    /// How deep below `cgroup_root` cgroups are reported (0: the root only). Default: 3.
    #[serde(default = "default_cgroup_depth")]
    pub cgroup_max_depth: usize,
    /// CPU time per CPU (`cpu` tag); `false` gives the machine-wide totals without a `cpu` tag.
    /// Default: true.
    #[serde(default = "default_true")]
    pub cpu_per_cpu: bool,
    /// Block devices left out of disk I/O (a regular expression on the device name).
    /// Default: partitions, loop, ram and floppy devices (node_exporter's default).
    #[serde(default = "default_disks_exclude")]
    pub disks_exclude: String,
    /// Filesystem types left out of filesystem usage. Default: pseudo filesystems
    /// (proc, sysfs, cgroup, tmpfs is kept, overlay, squashfs, ...) as node_exporter.
    #[serde(default = "default_fs_types_exclude")]
    pub filesystem_types_exclude: Vec<String>,
    /// Mount points left out of filesystem usage (a regular expression). Default:
    /// `/dev`, `/proc`, `/sys`, `/run/credentials/...` and container storage.
    #[serde(default = "default_mount_points_exclude")]
    pub mount_points_exclude: String,
    /// Namespace of every metric (Prometheus sinks prefix it with `_`). Default: none (the
    /// names already start with `node_` or `container_`).
    #[serde(default)]
    pub namespace: Option<String>,
}

fn default_interval() -> Secs {
    Secs::from_secs(15)
}
fn default_proc_root() -> PathBuf {
    PathBuf::from("/proc")
}
fn default_rootfs() -> PathBuf {
    PathBuf::from("/")
}
fn default_utmp() -> PathBuf {
    PathBuf::from("/var/run/utmp")
}
fn default_wtmp() -> PathBuf {
    PathBuf::from("/var/log/wtmp")
}
fn default_cgroup_depth() -> usize {
    3
}
fn default_true() -> bool {
    true
}
fn default_disks_exclude() -> String {
    collect::DEFAULT_DISKS_EXCLUDE.to_string()
}
fn default_fs_types_exclude() -> Vec<String> {
    collect::DEFAULT_FS_TYPES_EXCLUDE
        .iter()
        .map(|s| s.to_string())
        .collect()
}
fn default_mount_points_exclude() -> String {
    collect::DEFAULT_MOUNT_POINTS_EXCLUDE.to_string()
}

impl HostMetricsConfig {
    /// The collectors that run, in a fixed order.
    pub fn collectors(&self) -> Result<Vec<Collector>, String> {
        let mut v = match &self.collectors {
            Some(v) => {
                if v.contains(&Collector::Cgroups) && self.cgroup_root.is_none() {
                    return Err("the `cgroups` collector needs `cgroup_root`".into());
                }
                v.clone()
            }
            None => {
                let mut v = Collector::DEFAULT.to_vec();
                if self.cgroup_root.is_some() {
                    v.push(Collector::Cgroups);
                }
                v
            }
        };
        v.sort();
        v.dedup();
        if v.is_empty() {
            return Err("`collectors` is empty: nothing to collect".into());
        }
        Ok(v)
    }

    /// Resolves the options into what the collectors read.
    pub fn host(&self) -> Result<Host, String> {
        let re = |s: &str, field: &str| {
            Regex::new(s).map_err(|e| format!("`{field}`: not a regular expression: {e}"))
        };
        Ok(Host {
            proc_root: self.proc_root.clone(),
            rootfs: self.rootfs.clone(),
            utmp_path: self.utmp_path.clone(),
            wtmp_path: self.wtmp_path.clone(),
            btmp_path: self.btmp_path.clone(),
            login_logs: Arc::default(),
            cgroup_root: self.cgroup_root.clone(),
            cgroup_max_depth: self.cgroup_max_depth,
            cpu_per_cpu: self.cpu_per_cpu,
            disks_exclude: re(&self.disks_exclude, "disks_exclude")?,
            fs_types_exclude: self.filesystem_types_exclude.clone(),
            mount_points_exclude: re(&self.mount_points_exclude, "mount_points_exclude")?,
            ticks_per_sec: collect::ticks_per_sec(),
        })
    }
}

/// One scrape: every collector's metrics, stamped with the same time, and the failures.
pub fn scrape(host: &Host, collectors: &[Collector]) -> (Vec<Metric>, Vec<CollectError>) {
    let now = chrono::Utc::now();
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for c in collectors {
        let mut part = Vec::new();
        match c.run(host, &mut part) {
            Ok(()) => out.append(&mut part),
            Err(e) => {
                // What a failing collector found before failing is still valid.
                out.append(&mut part);
                errors.push(e);
            }
        }
    }
    for m in &mut out {
        m.timestamp = Some(now);
    }
    (out, errors)
}

#[async_trait]
impl SourceConfig for HostMetricsConfig {
    async fn build(&self, mut cx: SourceContext) -> Result<Source, BoxError> {
        let collectors: Arc<[Collector]> = self.collectors()?.into();
        let host = Arc::new(self.host()?);
        if !host.proc_root.join("stat").exists() {
            return Err(format!(
                "`proc_root` {} is not a proc filesystem (no `stat` in it)",
                host.proc_root.display()
            )
            .into());
        }
        let period = self.scrape_interval_secs.duration();
        let namespace = self.namespace.clone();
        Ok(Box::pin(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cx.shutdown.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let (h, c) = (host.clone(), collectors.clone());
                let (metrics, errors) =
                    match tokio::task::spawn_blocking(move || scrape(&h, &c)).await {
                        Ok(r) => r,
                        Err(e) => {
                            cx.metrics
                                .error("collect", 1, &format_args!("scrape task: {e}"));
                            continue;
                        }
                    };
                for e in &errors {
                    cx.metrics.error("collect", 1, e);
                }
                let events: Vec<Event> = metrics
                    .into_iter()
                    .map(|mut m| {
                        m.namespace = namespace.clone();
                        m.metadata = EventMetadata::new(Some(cx.id.clone()));
                        Event::from(m)
                    })
                    .collect();
                cx.metrics.add_received(events.len() as u64, 0);
                if cx.out.send(EventBatch::new(events)).await.is_err() {
                    break;
                }
            }
            Ok(())
        }))
    }

    fn outputs(&self) -> Vec<Output> {
        vec![Output::default_output(DataType::METRIC)]
    }
}

#[cfg(test)]
mod tests;
