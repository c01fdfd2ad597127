//! The collectors: each reads its files under the proc root (or the cgroup root, the utmp
//! file, `statvfs` of mount points) and appends metrics named like node_exporter's.
//!
//! The files are parsed by hand: each is a few lines of whitespace-separated numbers, and
//! reading them directly keeps every path relative to a configurable root (a host `/proc`
//! mounted at `/host/proc`, or a fake tree in tests).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use regex::Regex;
use weir_pipeline::event::{Metric, MetricKind, MetricValue};

use super::utmp::{self, LoginLog};

/// Where a collector failed: which collector and why (the others still run).
#[derive(Debug, thiserror::Error)]
#[error("{collector}: {message}")]
pub struct CollectError {
    pub collector: &'static str,
    pub message: String,
}

fn err(collector: &'static str, message: impl Into<String>) -> CollectError {
    CollectError {
        collector,
        message: message.into(),
    }
}

fn read(collector: &'static str, path: &Path) -> Result<String, CollectError> {
    std::fs::read_to_string(path).map_err(|e| err(collector, format!("{}: {e}", path.display())))
}

pub fn counter(name: &str, value: f64) -> Metric {
    Metric::new(name, MetricKind::Absolute, MetricValue::Counter { value })
}

pub fn gauge(name: &str, value: f64) -> Metric {
    Metric::new(name, MetricKind::Absolute, MetricValue::Gauge { value })
}

/// The filesystem types node_exporter leaves out by default (pseudo and container layers).
pub const DEFAULT_FS_TYPES_EXCLUDE: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "fusectl",
    "hugetlbfs",
    "iso9660",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "procfs",
    "pstore",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tracefs",
];
/// Mount points left out by default.
pub const DEFAULT_MOUNT_POINTS_EXCLUDE: &str =
    r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";
/// Partitions and virtual devices left out of disk I/O by default (node_exporter's default).
pub const DEFAULT_DISKS_EXCLUDE: &str = r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$";

/// Everything the collectors need, resolved from the config.
#[derive(Debug, Clone)]
pub struct Host {
    pub proc_root: PathBuf,
    pub rootfs: PathBuf,
    pub utmp_path: PathBuf,
    pub wtmp_path: PathBuf,
    pub btmp_path: Option<PathBuf>,
    /// What the `logins` collector has read of wtmp and btmp (it reads on from there).
    pub login_logs: Arc<Mutex<LoginLogs>>,
    pub cgroup_root: Option<PathBuf>,
    pub cgroup_max_depth: usize,
    pub cpu_per_cpu: bool,
    pub disks_exclude: Regex,
    pub fs_types_exclude: Vec<String>,
    pub mount_points_exclude: Regex,
    /// Clock ticks per second of `/proc/stat` (USER_HZ).
    pub ticks_per_sec: f64,
}

/// The state of the `logins` collector.
#[derive(Debug, Default)]
pub struct LoginLogs {
    pub wtmp: LoginLog,
    pub btmp: LoginLog,
}

impl Host {
    fn proc(&self, rel: &str) -> PathBuf {
        self.proc_root.join(rel)
    }

    /// `/proc/stat`: CPU time per mode (and per CPU), boot time, context switches, forks,
    /// running and blocked processes.
    pub fn cpu(&self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        const MODES: [&str; 8] = [
            "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
        ];
        let text = read("cpu", &self.proc("stat"))?;
        for line in text.lines() {
            let mut parts = line.split_whitespace();
            let Some(key) = parts.next() else { continue };
            let nums: Vec<f64> = parts.filter_map(|p| p.parse().ok()).collect();
            if let Some(cpu) = key.strip_prefix("cpu") {
                let per_cpu = !cpu.is_empty();
                if per_cpu != self.cpu_per_cpu {
                    continue;
                }
                // `guest` and `guest_nice` are already included in `user` and `nice`.
                for (mode, v) in MODES.iter().zip(&nums) {
                    let mut m = counter("node_cpu_seconds_total", v / self.ticks_per_sec)
                        .with_tag("mode", *mode);
                    if per_cpu {
                        m = m.with_tag("cpu", cpu);
                    }
                    out.push(m);
                }
                continue;
            }
            let Some(&v) = nums.first() else { continue };
            match key {
                "ctxt" => out.push(counter("node_context_switches_total", v)),
                "btime" => out.push(gauge("node_boot_time_seconds", v)),
                "processes" => out.push(counter("node_forks_total", v)),
                "procs_running" => out.push(gauge("node_procs_running", v)),
                "procs_blocked" => out.push(gauge("node_procs_blocked", v)),
                "intr" => out.push(counter("node_intr_total", v)),
                _ => {}
            }
        }
        if !out.iter().any(|m| m.name == "node_cpu_seconds_total") {
            return Err(err(
                "cpu",
                format!("no cpu lines in {}", self.proc("stat").display()),
            ));
        }
        Ok(())
    }

    /// `/proc/meminfo`, with (`swap`) or without (`memory`) the `Swap*` lines.
    fn meminfo(
        &self,
        collector: &'static str,
        swap: bool,
        out: &mut Vec<Metric>,
    ) -> Result<(), CollectError> {
        let text = read(collector, &self.proc("meminfo"))?;
        let before = out.len();
        for line in text.lines() {
            let Some((key, rest)) = line.split_once(':') else {
                continue;
            };
            if key.starts_with("Swap") != swap {
                continue;
            }
            let mut parts = rest.split_whitespace();
            let Some(v) = parts.next().and_then(|v| v.parse::<f64>().ok()) else {
                continue;
            };
            // `Active(anon)` -> `Active_anon`, as node_exporter names it.
            let key: String = key
                .trim_end_matches(')')
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            out.push(match parts.next() {
                Some("kB") => gauge(&format!("node_memory_{key}_bytes"), v * 1024.0),
                _ => gauge(&format!("node_memory_{key}"), v),
            });
        }
        if out.len() == before && !swap {
            return Err(err(collector, "no values in meminfo"));
        }
        Ok(())
    }

    pub fn memory(&self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        self.meminfo("memory", false, out)
    }

    /// Swap sizes (meminfo) and pages swapped in and out (`/proc/vmstat`).
    pub fn swap(&self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        self.meminfo("swap", true, out)?;
        let text = read("swap", &self.proc("vmstat"))?;
        for line in text.lines() {
            let mut p = line.split_whitespace();
            if let (Some(k @ ("pswpin" | "pswpout")), Some(v)) =
                (p.next(), p.next().and_then(|v| v.parse::<f64>().ok()))
            {
                out.push(counter(&format!("node_vmstat_{k}"), v));
            }
        }
        Ok(())
    }

    /// `/proc/loadavg`.
    pub fn load(&self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        let text = read("load", &self.proc("loadavg"))?;
        let v: Vec<f64> = text
            .split_whitespace()
            .take(3)
            .filter_map(|p| p.parse().ok())
            .collect();
        let [l1, l5, l15] = v[..] else {
            return Err(err(
                "load",
                format!("unexpected loadavg: {:?}", text.trim()),
            ));
        };
        out.push(gauge("node_load1", l1));
        out.push(gauge("node_load5", l5));
        out.push(gauge("node_load15", l15));
        Ok(())
    }

    /// `/proc/diskstats`: I/O per block device (partitions and virtual devices excluded).
    pub fn disk(&self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        // Field index (after major, minor, name) -> (metric, factor). Sectors are 512 bytes
        // whatever the device; times are milliseconds.
        const FIELDS: [(usize, &str, f64); 11] = [
            (0, "node_disk_reads_completed_total", 1.0),
            (1, "node_disk_reads_merged_total", 1.0),
            (2, "node_disk_read_bytes_total", 512.0),
            (3, "node_disk_read_time_seconds_total", 0.001),
            (4, "node_disk_writes_completed_total", 1.0),
            (5, "node_disk_writes_merged_total", 1.0),
            (6, "node_disk_written_bytes_total", 512.0),
            (7, "node_disk_write_time_seconds_total", 0.001),
            (8, "node_disk_io_now", 1.0),
            (9, "node_disk_io_time_seconds_total", 0.001),
            (10, "node_disk_io_time_weighted_seconds_total", 0.001),
        ];
        let text = read("disk", &self.proc("diskstats"))?;
        for line in text.lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() < 14 {
                continue;
            }
            let device = parts[2];
            if self.disks_exclude.is_match(device) {
                continue;
            }
            let nums: Vec<f64> = parts[3..]
                .iter()
                .map(|p| p.parse().unwrap_or(f64::NAN))
                .collect();
            for (i, name, factor) in FIELDS {
                let Some(v) = nums.get(i).filter(|v| v.is_finite()) else {
                    continue;
                };
                let m = if name == "node_disk_io_now" {
                    gauge(name, v * factor)
                } else {
                    counter(name, v * factor)
                };
                out.push(m.with_tag("device", device));
            }
        }
        Ok(())
    }

    /// Mounted filesystems (`/proc/1/mounts`, else `/proc/mounts`) and their `statvfs`.
    pub fn filesystem(&self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        let text = read("filesystem", &self.proc("1/mounts"))
            .or_else(|_| read("filesystem", &self.proc("mounts")))?;
        let mut seen = std::collections::BTreeSet::new();
        let mut problems = Vec::new();
        for line in text.lines() {
            let p: Vec<&str> = line.split_whitespace().collect();
            let [device, mount, fstype, options, ..] = p[..] else {
                continue;
            };
            let mount = unescape_mount(mount);
            if self.fs_types_exclude.iter().any(|t| t == fstype)
                || self.mount_points_exclude.is_match(&mount)
                || !seen.insert(mount.clone())
            {
                continue;
            }
            let path = self.rootfs.join(mount.trim_start_matches('/'));
            let st = match statvfs(&path) {
                Ok(s) => s,
                Err(e) => {
                    problems.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            let ro = options.split(',').any(|o| o == "ro");
            let tag = |m: Metric| {
                m.with_tag("device", device)
                    .with_tag("fstype", fstype)
                    .with_tag("mountpoint", mount.clone())
            };
            out.push(tag(gauge("node_filesystem_size_bytes", st.size)));
            out.push(tag(gauge("node_filesystem_free_bytes", st.free)));
            out.push(tag(gauge("node_filesystem_avail_bytes", st.avail)));
            out.push(tag(gauge("node_filesystem_files", st.files)));
            out.push(tag(gauge("node_filesystem_files_free", st.files_free)));
            out.push(tag(gauge(
                "node_filesystem_readonly",
                if ro { 1.0 } else { 0.0 },
            )));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(err("filesystem", problems.join("; ")))
        }
    }

    /// `/proc/net/dev`: traffic per network interface.
    pub fn network(&self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        const RX: [&str; 8] = [
            "bytes",
            "packets",
            "errs",
            "drop",
            "fifo",
            "frame",
            "compressed",
            "multicast",
        ];
        const TX: [&str; 8] = [
            "bytes",
            "packets",
            "errs",
            "drop",
            "fifo",
            "colls",
            "carrier",
            "compressed",
        ];
        let text = read("network", &self.proc("net/dev"))?;
        for line in text.lines().skip(2) {
            let Some((dev, rest)) = line.split_once(':') else {
                continue;
            };
            let dev = dev.trim();
            let nums: Vec<f64> = rest
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            if nums.len() < 16 {
                continue;
            }
            for (i, k) in RX.iter().enumerate() {
                out.push(
                    counter(&format!("node_network_receive_{k}_total"), nums[i])
                        .with_tag("device", dev),
                );
            }
            for (i, k) in TX.iter().enumerate() {
                out.push(
                    counter(&format!("node_network_transmit_{k}_total"), nums[8 + i])
                        .with_tag("device", dev),
                );
            }
        }
        Ok(())
    }

    /// `/proc/net/tcp` and `tcp6`: connections per state (node_exporter's tcpstat) and one
    /// `node_tcp_listening_port` series per listening socket.
    pub fn tcp(&self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        const STATES: [&str; 11] = [
            "established",
            "syn_sent",
            "syn_recv",
            "fin_wait1",
            "fin_wait2",
            "time_wait",
            "close",
            "close_wait",
            "last_ack",
            "listen",
            "closing",
        ];
        let mut counts = [0u64; 11];
        let mut listening = std::collections::BTreeSet::new();
        let mut read_any = false;
        for (file, family) in [("net/tcp", "ipv4"), ("net/tcp6", "ipv6")] {
            // tcp6 is absent when IPv6 is disabled.
            let Ok(text) = std::fs::read_to_string(self.proc(file)) else {
                continue;
            };
            read_any = true;
            for line in text.lines().skip(1) {
                let p: Vec<&str> = line.split_whitespace().collect();
                let (Some(local), Some(state)) = (p.get(1), p.get(3)) else {
                    continue;
                };
                let Ok(st) = u8::from_str_radix(state, 16) else {
                    continue;
                };
                if let Some(c) = counts.get_mut(usize::from(st).wrapping_sub(1)) {
                    *c += 1;
                }
                if st == 0x0A {
                    if let Some((addr, port)) = parse_socket(local) {
                        listening.insert((family, addr, port));
                    }
                }
            }
        }
        if !read_any {
            return Err(err(
                "tcp",
                format!("cannot read {}", self.proc("net/tcp").display()),
            ));
        }
        for (state, n) in STATES.iter().zip(counts) {
            out.push(gauge("node_tcp_connection_states", n as f64).with_tag("state", *state));
        }
        for (family, addr, port) in listening {
            out.push(
                gauge("node_tcp_listening_port", 1.0)
                    .with_tag("family", family)
                    .with_tag("address", addr)
                    .with_tag("port", port.to_string()),
            );
        }
        Ok(())
    }

    /// Processes: PIDs, threads, and processes per state (`/proc/<pid>/stat`).
    pub fn processes(&self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        let dir = std::fs::read_dir(&self.proc_root)
            .map_err(|e| err("processes", format!("{}: {e}", self.proc_root.display())))?;
        let mut pids = 0u64;
        let mut threads = 0u64;
        let mut states: BTreeMap<&'static str, u64> = BTreeMap::new();
        for e in dir.flatten() {
            let name = e.file_name();
            if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            // A process can exit between the listing and the read: skip it.
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // `pid (comm) S ...`: comm may hold spaces and parentheses; the state follows
            // the last `)`.
            let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            let f: Vec<&str> = after.split_whitespace().collect();
            pids += 1;
            // Field 20 of stat (num_threads) is the 18th after the comm.
            threads += f.get(17).and_then(|t| t.parse::<u64>().ok()).unwrap_or(1);
            let state = match f.first().copied() {
                Some("R") => "R",
                Some("S") => "S",
                Some("D") => "D",
                Some("Z") => "Z",
                Some("T" | "t") => "T",
                Some("I") => "I",
                _ => "other",
            };
            *states.entry(state).or_default() += 1;
        }
        out.push(gauge("node_processes_pids", pids as f64));
        out.push(gauge("node_processes_threads", threads as f64));
        for (s, n) in states {
            out.push(gauge("node_processes_state", n as f64).with_tag("state", s));
        }
        Ok(())
    }

    /// Logged-in users from utmp: sessions per user and in total.
    pub fn users(&self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        let data = std::fs::read(&self.utmp_path)
            .map_err(|e| err("users", format!("{}: {e}", self.utmp_path.display())))?;
        let sessions = utmp::sessions(&data);
        let mut per_user: BTreeMap<&str, u64> = BTreeMap::new();
        for s in &sessions {
            *per_user.entry(s.user.as_str()).or_default() += 1;
        }
        out.push(gauge("node_logged_in_users", per_user.len() as f64));
        out.push(gauge("node_logged_in_sessions", sessions.len() as f64));
        for (user, n) in per_user {
            out.push(gauge("node_logged_in_user_sessions", n as f64).with_tag("user", user));
        }
        Ok(())
    }

    /// Remote (SSH) logins from wtmp, per user: how many, and when the latest was; failed
    /// remote logins from btmp when `btmp_path` is set. Each file is read on from where
    /// the last scrape stopped.
    pub fn logins(&self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        let mut logs = self
            .login_logs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        logs.wtmp
            .update(&self.wtmp_path)
            .map_err(|e| err("logins", format!("{}: {e}", self.wtmp_path.display())))?;
        for (user, u) in &logs.wtmp.users {
            out.push(counter("node_ssh_logins_total", u.count as f64).with_tag("user", user));
            out.push(
                gauge("node_ssh_last_login_timestamp_seconds", u.last as f64)
                    .with_tag("user", user),
            );
        }
        if let Some(path) = &self.btmp_path {
            logs.btmp
                .update(path)
                .map_err(|e| err("logins", format!("{}: {e}", path.display())))?;
            out.push(counter(
                "node_ssh_failed_logins_total",
                logs.btmp.remote_attempts as f64,
            ));
        }
        Ok(())
    }

    /// `/proc/uptime` and the boot time it implies.
    pub fn uptime(&self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        let text = read("uptime", &self.proc("uptime"))?;
        let up: f64 = text
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| err("uptime", format!("unexpected uptime: {:?}", text.trim())))?;
        out.push(gauge("node_uptime_seconds", up));
        Ok(())
    }

    /// cgroup v2: CPU and memory of every cgroup below the root (down to `cgroup_max_depth`),
    /// named like cAdvisor's container metrics, tagged with the cgroup path.
    pub fn cgroups(&self, out: &mut Vec<Metric>) -> Result<(), CollectError> {
        let Some(root) = &self.cgroup_root else {
            return Ok(());
        };
        if !root.join("cgroup.controllers").exists() {
            return Err(err(
                "cgroups",
                format!(
                    "{} is not a cgroup v2 hierarchy (no cgroup.controllers)",
                    root.display()
                ),
            ));
        }
        let mut stack = vec![(root.clone(), 0usize)];
        while let Some((dir, depth)) = stack.pop() {
            let rel = dir.strip_prefix(root).unwrap_or(&dir);
            let name = format!("/{}", rel.display());
            let tag = |m: Metric| m.with_tag("cgroup", name.clone());
            if let Ok(text) = std::fs::read_to_string(dir.join("cpu.stat")) {
                for line in text.lines() {
                    let mut p = line.split_whitespace();
                    let (Some(k), Some(v)) =
                        (p.next(), p.next().and_then(|v| v.parse::<f64>().ok()))
                    else {
                        continue;
                    };
                    let m = match k {
                        "usage_usec" => counter("container_cpu_usage_seconds_total", v / 1e6),
                        "user_usec" => counter("container_cpu_user_seconds_total", v / 1e6),
                        "system_usec" => counter("container_cpu_system_seconds_total", v / 1e6),
                        "nr_periods" => counter("container_cpu_cfs_periods_total", v),
                        "nr_throttled" => counter("container_cpu_cfs_throttled_periods_total", v),
                        "throttled_usec" => {
                            counter("container_cpu_cfs_throttled_seconds_total", v / 1e6)
                        }
                        _ => continue,
                    };
                    out.push(tag(m));
                }
            }
            let num = |f: &str| {
                std::fs::read_to_string(dir.join(f))
                    .ok()
                    .and_then(|t| t.trim().parse::<f64>().ok())
            };
            if let Some(v) = num("memory.current") {
                out.push(tag(gauge("container_memory_usage_bytes", v)));
            }
            // `max` (no limit) does not parse and is left out.
            if let Some(v) = num("memory.max") {
                out.push(tag(gauge("container_spec_memory_limit_bytes", v)));
            }
            if let Some(v) = num("memory.swap.current") {
                out.push(tag(gauge("container_memory_swap", v)));
            }
            if depth < self.cgroup_max_depth {
                if let Ok(rd) = std::fs::read_dir(&dir) {
                    let mut children: Vec<PathBuf> = rd
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path())
                        .collect();
                    children.sort();
                    stack.extend(children.into_iter().rev().map(|c| (c, depth + 1)));
                }
            }
        }
        Ok(())
    }
}

/// `/proc/mounts` escapes spaces, tabs, newlines and backslashes as octal (`\040`).
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `0100007F:1F90` (IPv4) or 32 hex digits (IPv6), each 32-bit word in host (little-endian
/// on x86 and arm64) order -> (address, port).
pub fn parse_socket(s: &str) -> Option<(String, u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..addr.len() / 8)
        .map(|i| u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok())
        .collect::<Option<_>>()?;
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    let ip = match bytes.len() {
        4 => std::net::IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]]),
        16 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&bytes);
            std::net::IpAddr::from(a)
        }
        _ => return None,
    };
    Some((ip.to_string(), port))
}

struct Vfs {
    size: f64,
    free: f64,
    avail: f64,
    files: f64,
    files_free: f64,
}

fn statvfs(path: &Path) -> std::io::Result<Vfs> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path holds a NUL byte"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable memory of the
    // right type; statvfs(3) fills it completely when it returns 0.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so the struct is initialised.
    let st = unsafe { st.assume_init() };
    let frsize = st.f_frsize as f64;
    Ok(Vfs {
        size: st.f_blocks as f64 * frsize,
        free: st.f_bfree as f64 * frsize,
        avail: st.f_bavail as f64 * frsize,
        files: st.f_files as f64,
        files_free: st.f_ffree as f64,
    })
}

/// USER_HZ, the unit of `/proc/stat` CPU times.
pub fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}
