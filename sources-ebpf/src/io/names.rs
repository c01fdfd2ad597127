//! Names for what the kernel counts by number: disks (`/sys/dev/block/<major>:<minor>`) and
//! cgroups (the path of a cgroup v2 id, which is its directory's inode number).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::stats::major_minor;

/// Entries kept before a cache starts over.
const MAX_ENTRIES: usize = 16384;
/// The cgroup v2 tree is walked again at most this often (on a miss).
const WALK_EVERY: Duration = Duration::from_secs(10);

/// A disk's `device` (its name, `vda`) and `device_number` (`254:0`) tags.
#[derive(Clone)]
pub(super) struct Disk {
    pub name: Arc<str>,
    pub number: Arc<str>,
}

/// Disk names by kernel dev_t.
#[derive(Default)]
pub(super) struct Disks {
    by_dev: HashMap<u32, Disk>,
}

impl Disks {
    /// The name comes from the `/sys/dev/block/<major>:<minor>` link (to
    /// `.../block/<name>`); without one (a disk gone since), the number stands for it.
    pub fn lookup(&mut self, dev: u32) -> Disk {
        if let Some(d) = self.by_dev.get(&dev) {
            return d.clone();
        }
        if self.by_dev.len() >= MAX_ENTRIES {
            self.by_dev.clear();
        }
        let (major, minor) = major_minor(dev);
        let number: Arc<str> = format!("{major}:{minor}").into();
        let name = std::fs::read_link(format!("/sys/dev/block/{number}"))
            .ok()
            .and_then(|p| {
                p.file_name()
                    .map(|n| Arc::from(n.to_string_lossy().as_ref()))
            })
            .unwrap_or_else(|| number.clone());
        let d = Disk { name, number };
        self.by_dev.insert(dev, d.clone());
        d
    }
}

/// cgroup v2 paths (as `/proc/<pid>/cgroup` shows them, `/system.slice/x.service`) by id.
#[derive(Default)]
pub(super) struct Cgroups {
    by_id: HashMap<u64, Arc<str>>,
    walked_at: Option<Instant>,
}

impl Cgroups {
    /// The path of cgroup `id`, where process `pid` was: read from `/proc/<pid>/cgroup` and
    /// checked against the id (the process may have moved since), else found by walking the
    /// cgroup v2 tree. Unknown (no cgroup v2, or a cgroup removed since): the id in decimal.
    pub fn lookup(&mut self, pid: u32, id: u64) -> Arc<str> {
        if let Some(p) = self.by_id.get(&id) {
            return p.clone();
        }
        if self.by_id.len() >= MAX_ENTRIES {
            self.by_id.clear();
        }
        let mount = crate::env::cgroup2_mount();
        let found = mount.as_ref().and_then(|m| {
            from_proc(m, pid, id).or_else(|| {
                if self.walked_at.is_some_and(|t| t.elapsed() < WALK_EVERY) {
                    return None;
                }
                self.walked_at = Some(Instant::now());
                let mut all = HashMap::new();
                if let Ok(root) = std::fs::metadata(m) {
                    all.insert(root.ino(), "/".to_string());
                }
                crate::container::walk(m, m, 0, &mut all);
                let hit = all.remove(&id);
                for (ino, path) in all {
                    if self.by_id.len() < MAX_ENTRIES {
                        self.by_id.insert(ino, path.into());
                    }
                }
                hit
            })
        });
        let path: Arc<str> = found.map_or_else(|| id.to_string().into(), Arc::from);
        self.by_id.insert(id, path.clone());
        path
    }
}

/// The cgroup v2 path of `pid` when it is still the cgroup `id`.
fn from_proc(mount: &Path, pid: u32, id: u64) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = mount.join(path.trim_start_matches('/'));
    (std::fs::metadata(dir).ok()?.ino() == id).then(|| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_disk_is_named_by_its_number() {
        // Major 4095 is not a block device anyone registers.
        let d = Disks::default().lookup((4095 << 20) | 7);
        assert_eq!(&*d.name, "4095:7");
        assert_eq!(&*d.number, "4095:7");
    }

    #[test]
    fn this_process_cgroup_is_found_by_id() {
        let Some(mount) = crate::env::cgroup2_mount() else {
            crate::test_support::skip_unless_required("a cgroup v2 mount", "none is mounted");
            return;
        };
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = text.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
        let id = std::fs::metadata(mount.join(path.trim_start_matches('/')))
            .unwrap()
            .ino();
        let mut c = Cgroups::default();
        assert_eq!(&*c.lookup(std::process::id(), id), path);
        // A pid that is not there: found by walking the tree.
        let mut c = Cgroups::default();
        assert_eq!(&*c.lookup(u32::MAX, id), path);
        // Not a cgroup at all.
        assert_eq!(&*c.lookup(u32::MAX, u64::MAX), u64::MAX.to_string());
    }
}
