//! `ebpf_tcp`'s kernel-side filters: the configured ports, pids and cgroups, put into the maps
//! that `bpf/tcp.bpf.c` checks before a connection is tracked or reported.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use aya::maps::{CgroupArray, HashMap as BpfHashMap};
use aya::Ebpf;

use crate::env::cgroup2_mount;

/// Bits of `filters` in bpf/tcp.h (`TCP_FILTER_*`).
const FILTER_PORTS: u32 = 1;
const FILTER_PIDS: u32 = 2;
const FILTER_CGROUPS: u32 = 4;
/// `TCP_MAX_CGROUPS` in bpf/tcp.h.
pub const MAX_CGROUPS: usize = 64;
/// The most ports or pids a filter takes (map sizes).
pub const MAX_LISTED: usize = 4096;

/// A filter that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("ebpf_tcp: `ports` contains 0; ports are 1 to 65535")]
    PortZero,
    #[error("ebpf_tcp: `{field}` lists {len} entries; at most {max}")]
    TooMany {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error(
        "ebpf_tcp: `cgroups`: no cgroup v2 file system is mounted (looked in /proc/self/mountinfo); \
         the cgroup filter needs the unified hierarchy"
    )]
    NoCgroup2,
    #[error("ebpf_tcp: `cgroups`: {path}: {cause}")]
    Cgroup { path: PathBuf, cause: String },
    #[error("ebpf_tcp: filling the kernel map `{map}`: {cause}")]
    Map { map: &'static str, cause: String },
}

/// The filters of one `ebpf_tcp` source, resolved (cgroup directories open).
pub struct Filters {
    ports: Vec<u16>,
    pids: Vec<u32>,
    cgroups: Vec<File>,
}

impl Filters {
    /// Checks the lists and opens the cgroup directories. A cgroup is a directory of the
    /// cgroup v2 hierarchy: absolute (`/sys/fs/cgroup/system.slice`), or relative to the
    /// cgroup v2 mount, with or without a leading `/` (`/system.slice`, as in
    /// `/proc/<pid>/cgroup`).
    pub fn resolve(ports: &[u16], pids: &[u32], cgroups: &[String]) -> Result<Self, FilterError> {
        if ports.contains(&0) {
            return Err(FilterError::PortZero);
        }
        for (field, len, max) in [
            ("ports", ports.len(), MAX_LISTED),
            ("pids", pids.len(), MAX_LISTED),
            ("cgroups", cgroups.len(), MAX_CGROUPS),
        ] {
            if len > max {
                return Err(FilterError::TooMany { field, len, max });
            }
        }
        let mut dirs = Vec::with_capacity(cgroups.len());
        if !cgroups.is_empty() {
            let root = cgroup2_mount().ok_or(FilterError::NoCgroup2)?;
            for c in cgroups {
                let path = cgroup_dir(&root, Path::new(c));
                let err = |cause: String| FilterError::Cgroup {
                    path: path.clone(),
                    cause,
                };
                if !path.join("cgroup.procs").exists() {
                    return Err(err(format!(
                        "not a cgroup v2 directory (the cgroup v2 mount is {})",
                        root.display()
                    )));
                }
                dirs.push(File::open(&path).map_err(|e| err(e.to_string()))?);
            }
        }
        Ok(Self {
            ports: ports.to_vec(),
            pids: pids.to_vec(),
            cgroups: dirs,
        })
    }

    /// The `filters` bits for the loader.
    pub fn flags(&self) -> u32 {
        let mut f = 0;
        if !self.ports.is_empty() {
            f |= FILTER_PORTS;
        }
        if !self.pids.is_empty() {
            f |= FILTER_PIDS;
        }
        if !self.cgroups.is_empty() {
            f |= FILTER_CGROUPS;
        }
        f
    }

    pub fn cgroup_count(&self) -> u32 {
        self.cgroups.len() as u32
    }

    /// `max_entries` for the `ports` and `pids` maps (a map holds at least one entry).
    pub fn map_sizes(&self) -> (u32, u32) {
        (
            self.ports.len().max(1) as u32,
            self.pids.len().max(1) as u32,
        )
    }

    /// Puts the lists into the loaded object's maps (before any program is attached).
    pub fn fill(&self, bpf: &mut Ebpf) -> Result<(), FilterError> {
        let map_err = |map: &'static str| {
            move |e: aya::maps::MapError| FilterError::Map {
                map,
                cause: e.to_string(),
            }
        };
        let missing = |map: &'static str| FilterError::Map {
            map,
            cause: "missing from the object".into(),
        };
        let mut ports: BpfHashMap<_, u16, u8> =
            BpfHashMap::try_from(bpf.map_mut("ports").ok_or_else(|| missing("ports"))?)
                .map_err(map_err("ports"))?;
        for p in &self.ports {
            ports.insert(p, 1, 0).map_err(map_err("ports"))?;
        }
        let mut pids: BpfHashMap<_, u32, u8> =
            BpfHashMap::try_from(bpf.map_mut("pids").ok_or_else(|| missing("pids"))?)
                .map_err(map_err("pids"))?;
        for p in &self.pids {
            pids.insert(p, 1, 0).map_err(map_err("pids"))?;
        }
        let mut cgroups =
            CgroupArray::try_from(bpf.map_mut("cgroups").ok_or_else(|| missing("cgroups"))?)
                .map_err(map_err("cgroups"))?;
        for (i, dir) in self.cgroups.iter().enumerate() {
            cgroups
                .set(i as u32, dir.as_raw_fd(), 0)
                .map_err(map_err("cgroups"))?;
        }
        Ok(())
    }
}

/// The directory of cgroup `path` given the cgroup v2 mount `root`.
fn cgroup_dir(root: &Path, path: &Path) -> PathBuf {
    if path.starts_with(root) {
        path.to_path_buf()
    } else {
        root.join(path.strip_prefix("/").unwrap_or(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_resolve_against_the_mount() {
        let root = Path::new("/sys/fs/cgroup");
        assert_eq!(
            cgroup_dir(root, Path::new("/sys/fs/cgroup/system.slice")),
            Path::new("/sys/fs/cgroup/system.slice")
        );
        assert_eq!(
            cgroup_dir(root, Path::new("/kubepods.slice/x.scope")),
            Path::new("/sys/fs/cgroup/kubepods.slice/x.scope")
        );
        assert_eq!(
            cgroup_dir(root, Path::new("system.slice")),
            Path::new("/sys/fs/cgroup/system.slice")
        );
    }

    #[test]
    fn lists_are_checked() {
        assert!(matches!(
            Filters::resolve(&[80, 0], &[], &[]),
            Err(FilterError::PortZero)
        ));
        let many: Vec<String> = (0..65).map(|i| format!("c{i}")).collect();
        assert!(matches!(
            Filters::resolve(&[], &[], &many),
            Err(FilterError::TooMany {
                field: "cgroups",
                ..
            })
        ));
        let f = Filters::resolve(&[80, 443], &[1], &[]).unwrap();
        assert_eq!(f.flags(), FILTER_PORTS | FILTER_PIDS);
        assert_eq!(f.map_sizes(), (2, 1));
        let none = Filters::resolve(&[], &[], &[]).unwrap();
        assert_eq!(none.flags(), 0);
        assert_eq!(none.map_sizes(), (1, 1));
    }

    #[test]
    fn a_missing_cgroup_is_named() {
        let err = Filters::resolve(&[], &[], &["/weir-no-such-cgroup".into()])
            .err()
            .unwrap();
        if cgroup2_mount().is_none() {
            assert!(matches!(err, FilterError::NoCgroup2), "{err}");
            return;
        }
        let err = err.to_string();
        assert!(err.contains("weir-no-such-cgroup"), "{err}");
        assert!(err.contains("not a cgroup v2 directory"), "{err}");
    }
}
