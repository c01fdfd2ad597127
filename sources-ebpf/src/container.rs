//! Container id and Kubernetes pod uid of a process, from its cgroup path
//! (`/proc/<pid>/cgroup`).
//!
//! Container runtimes name the cgroup of each container after its id, and the kubelet names
//! the cgroup of each pod after its uid. The formats recognised, by cgroup driver:
//!
//! | runtime | systemd driver | cgroupfs driver |
//! |---|---|---|
//! | containerd (CRI) | `.../kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope` | `/kubepods/burstable/pod<uid>/<id>` |
//! | CRI-O | `.../kubepods-pod<uid>.slice/crio-<id>.scope` | `/kubepods/pod<uid>/crio-<id>` |
//! | Docker | `/system.slice/docker-<id>.scope` | `/docker/<id>` |
//! | Podman | `/machine.slice/libpod-<id>.scope` | `/libpod_parent/libpod-<id>` |
//!
//! where `<id>` is 64 hex digits. CRI-O's `crio-conmon-<id>.scope` is the container's monitor
//! process, not the container: it yields the pod uid only.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use weir_pipeline::event::Value;

/// What a cgroup path says about the container of a process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The container id (64 hex digits).
    pub container_id: Option<String>,
    /// The Kubernetes pod uid, with dashes (`0b3e....-....`).
    pub pod_uid: Option<String>,
}

impl ContainerInfo {
    fn is_empty(&self) -> bool {
        self.container_id.is_none() && self.pod_uid.is_none()
    }
}

/// Parses one cgroup path (`/kubepods.slice/.../cri-containerd-<id>.scope`).
pub fn parse_path(path: &str) -> ContainerInfo {
    let mut info = ContainerInfo::default();
    for seg in path.split('/').rev() {
        if info.container_id.is_none() {
            info.container_id = container_id(seg);
        }
        if info.pod_uid.is_none() {
            info.pod_uid = pod_uid(seg);
        }
    }
    info
}

/// Parses the text of `/proc/<pid>/cgroup`; returns what it found and whether it came from
/// the cgroup v2 line (`0::/path`, the cgroup that `bpf_get_current_cgroup_id` names).
pub fn parse_proc_cgroup(text: &str) -> (ContainerInfo, bool) {
    let mut v1 = ContainerInfo::default();
    for line in text.lines() {
        // hierarchy-ID:controller-list:cgroup-path
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(_controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let info = parse_path(path);
        if id == "0" && !info.is_empty() {
            return (info, true);
        }
        if v1.container_id.is_none() {
            v1.container_id = info.container_id;
        }
        if v1.pod_uid.is_none() {
            v1.pod_uid = info.pod_uid;
        }
    }
    (v1, false)
}

/// A container id in one path segment.
fn container_id(seg: &str) -> Option<String> {
    let seg = seg.strip_suffix(".scope").unwrap_or(seg);
    if seg.starts_with("crio-conmon-") {
        return None;
    }
    let id = ["cri-containerd-", "crio-", "docker-", "libpod-"]
        .iter()
        .find_map(|p| seg.strip_prefix(p))
        .unwrap_or(seg);
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_ascii_lowercase())
}

/// A pod uid in one path segment: `pod<uid>` (cgroupfs) or `...-pod<uid_underscored>.slice`
/// (systemd).
fn pod_uid(seg: &str) -> Option<String> {
    let seg = seg.strip_suffix(".slice").unwrap_or(seg);
    let at = seg.rfind("pod")?;
    if at > 0 && !seg[..at].ends_with('-') {
        return None;
    }
    let uid = seg[at + 3..].replace('_', "-");
    is_uuid(&uid).then(|| uid.to_ascii_lowercase())
}

/// 8-4-4-4-12 hex digits.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The event values of a process's container, cached so a process is read once: by cgroup id
/// when the cgroup v2 path named the container (every process of that cgroup shares it, even
/// after the one first looked up exited), else by (pid, cgroup id). When the process is gone
/// before it is looked up, its cgroup v2 id is found in the cgroup v2 tree instead (the id is
/// the cgroup directory's inode number).
#[derive(Default)]
pub struct ContainerCache {
    by_cgroup: HashMap<u64, (Value, Value)>,
    by_process: HashMap<(u32, u64), (Value, Value)>,
    /// cgroup v2 id -> path under the mount, from the last walk of the tree.
    paths: HashMap<u64, String>,
    walked_at: Option<Instant>,
}

/// Entries kept before the cache starts over.
const MAX_ENTRIES: usize = 16384;
/// The cgroup v2 tree is walked again at most this often (on a miss).
const WALK_EVERY: Duration = Duration::from_secs(1);
/// Bounds of a walk.
const WALK_MAX_DIRS: usize = 100_000;
const WALK_MAX_DEPTH: usize = 16;

fn to_value(s: Option<String>) -> Value {
    s.map_or(Value::Null, Value::from)
}

impl ContainerCache {
    /// `container_id` and `pod_uid` of process `pid` in cgroup `cgroup_id` (nulls when not in
    /// a container, or when neither the process nor its cgroup can be found).
    pub fn lookup(&mut self, pid: u32, cgroup_id: u64) -> (Value, Value) {
        if let Some(v) = self.by_cgroup.get(&cgroup_id) {
            return v.clone();
        }
        if let Some(v) = self.by_process.get(&(pid, cgroup_id)) {
            return v.clone();
        }
        if self.by_cgroup.len() + self.by_process.len() >= MAX_ENTRIES {
            self.by_cgroup.clear();
            self.by_process.clear();
        }
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            // Exited: look its cgroup up by id.
            let Some(path) = self.cgroup_path(cgroup_id) else {
                return (Value::Null, Value::Null);
            };
            let info = parse_path(&path);
            let values = (to_value(info.container_id), to_value(info.pod_uid));
            self.by_cgroup.insert(cgroup_id, values.clone());
            return values;
        };
        let (info, from_v2) = parse_proc_cgroup(&text);
        let values = (to_value(info.container_id), to_value(info.pod_uid));
        if from_v2 {
            self.by_cgroup.insert(cgroup_id, values.clone());
        } else {
            self.by_process.insert((pid, cgroup_id), values.clone());
        }
        values
    }

    /// The path (under the cgroup v2 mount) of the cgroup with this id, walking the tree
    /// again when it is not known and the last walk is old enough.
    fn cgroup_path(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.paths.get(&id) {
            return Some(p.clone());
        }
        if self.walked_at.is_some_and(|t| t.elapsed() < WALK_EVERY) {
            return None;
        }
        self.walked_at = Some(Instant::now());
        let root = crate::env::cgroup2_mount()?;
        self.paths.clear();
        walk(&root, &root, 0, &mut self.paths);
        self.paths.get(&id).cloned()
    }
}

/// Records the inode number and path (relative to `root`, with a leading `/`) of every
/// directory under `dir`.
pub(crate) fn walk(root: &Path, dir: &Path, depth: usize, out: &mut HashMap<u64, String>) {
    if depth > WALK_MAX_DEPTH || out.len() >= WALK_MAX_DIRS {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if !ft.is_dir() {
            continue;
        }
        let path = e.path();
        if let (Ok(meta), Ok(rel)) = (e.metadata(), path.strip_prefix(root)) {
            out.insert(meta.ino(), format!("/{}", rel.display()));
        }
        walk(root, &path, depth + 1, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "8a1b6e3f0c2d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3c4d5e6f708192a3b";
    const UID: &str = "0b3e6e2a-5f4c-4d8e-9a1b-2c3d4e5f6a7b";

    fn info(id: Option<&str>, uid: Option<&str>) -> ContainerInfo {
        ContainerInfo {
            container_id: id.map(String::from),
            pod_uid: uid.map(String::from),
        }
    }

    #[test]
    fn containerd_under_kubepods_systemd_driver() {
        let path = format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        assert_eq!(parse_path(&path), info(Some(ID), Some(UID)));
        // Guaranteed QoS pods sit directly under kubepods.slice.
        let path = format!(
            "/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        assert_eq!(parse_path(&path), info(Some(ID), Some(UID)));
    }

    #[test]
    fn containerd_under_kubepods_cgroupfs_driver() {
        let path = format!("/kubepods/besteffort/pod{UID}/{ID}");
        assert_eq!(parse_path(&path), info(Some(ID), Some(UID)));
    }

    #[test]
    fn cri_o_and_its_conmon() {
        let u = UID.replace('-', "_");
        let path = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-{ID}.scope"
        );
        assert_eq!(parse_path(&path), info(Some(ID), Some(UID)));
        let conmon = format!(
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u}.slice/crio-conmon-{ID}.scope"
        );
        assert_eq!(parse_path(&conmon), info(None, Some(UID)));
        assert_eq!(
            parse_path(&format!("/kubepods/pod{UID}/crio-{ID}")),
            info(Some(ID), Some(UID))
        );
    }

    #[test]
    fn docker_and_podman_outside_kubernetes() {
        assert_eq!(
            parse_path(&format!("/system.slice/docker-{ID}.scope")),
            info(Some(ID), None)
        );
        assert_eq!(parse_path(&format!("/docker/{ID}")), info(Some(ID), None));
        assert_eq!(
            parse_path(&format!("/machine.slice/libpod-{ID}.scope")),
            info(Some(ID), None)
        );
        // kind and other nested setups: the kubelet's slices under another slice.
        let path = format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        assert_eq!(parse_path(&path), info(Some(ID), Some(UID)));
    }

    #[test]
    fn host_processes_have_neither() {
        for path in [
            "/",
            "/user.slice/user-1000.slice/session-2.scope",
            "/system.slice/containerd.service",
            "/system.slice/docker.service",
            "/kubepods.slice/kubepods-burstable.slice",
            // Not quite an id or a uid.
            "/docker/8a1b6e3f",
            "/kubepods/podnot-a-uid",
            "/system.slice/ipod-0b3e6e2a_5f4c_4d8e_9a1b_2c3d4e5f6a7b.slice",
        ] {
            assert_eq!(parse_path(path), ContainerInfo::default(), "{path}");
        }
    }

    #[test]
    fn proc_cgroup_prefers_the_unified_line() {
        let v2 = format!(
            "0::/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{ID}.scope\n",
            UID.replace('-', "_")
        );
        assert_eq!(parse_proc_cgroup(&v2), (info(Some(ID), Some(UID)), true));
        // A hybrid host (cgroup v1 controllers, an empty unified hierarchy): the v1 lines name
        // the container, and the result is not tied to the v2 cgroup id.
        let hybrid = format!(
            "12:memory:/docker/{ID}\n11:cpu,cpuacct:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/\n"
        );
        assert_eq!(parse_proc_cgroup(&hybrid), (info(Some(ID), None), false));
        assert_eq!(
            parse_proc_cgroup("0::/init.scope\n"),
            (ContainerInfo::default(), false)
        );
        assert_eq!(
            parse_proc_cgroup("garbage"),
            (ContainerInfo::default(), false)
        );
    }

    #[test]
    fn this_process_is_looked_up_from_proc() {
        let me = std::process::id();
        let text = std::fs::read_to_string(format!("/proc/{me}/cgroup")).unwrap();
        let (want, _) = parse_proc_cgroup(&text);
        let mut cache = ContainerCache::default();
        let got = cache.lookup(me, 1);
        assert_eq!(got, (to_value(want.container_id), to_value(want.pod_uid)));
        assert_eq!(cache.lookup(u32::MAX, 2), (Value::Null, Value::Null));
    }

    #[test]
    fn an_exited_process_is_found_by_its_cgroup_id() {
        let Some(root) = crate::env::cgroup2_mount() else {
            crate::test_support::skip_unless_required("a cgroup v2 mount", "none is mounted");
            return;
        };
        // A cgroup named like a containerd container of a pod, with nobody in it.
        let top = root.join(format!("weir-unit-{}.slice", std::process::id()));
        let leaf = top
            .join(format!("kubepods-pod{}.slice", UID.replace('-', "_")))
            .join(format!("cri-containerd-{ID}.scope"));
        if let Err(e) = std::fs::create_dir_all(&leaf) {
            // Not allowed to make cgroups here (not root); CI runs as root.
            let why = format!("cannot create {}: {e}", leaf.display());
            crate::test_support::skip_unless_required("to create a cgroup (root)", &why);
            return;
        }
        let id = std::fs::metadata(&leaf).unwrap().ino();
        let mut cache = ContainerCache::default();
        let got = cache.lookup(u32::MAX, id);
        let _ = std::fs::remove_dir(&leaf);
        let _ = std::fs::remove_dir(leaf.parent().unwrap());
        let _ = std::fs::remove_dir(&top);
        assert_eq!(got, (Value::from(ID), Value::from(UID)));
    }
}
