//! Checks made before loading anything: privileges, kernel BTF, tracefs. Each failure says
//! what is missing and how to grant it, instead of a bare `EPERM` from the `bpf` syscall.

use std::path::{Path, PathBuf};

/// What the environment lacks for an eBPF source.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error(
        "{component}: missing privileges to load eBPF programs: the process needs CAP_BPF and \
         CAP_PERFMON (kernel 5.8+) or CAP_SYS_ADMIN; run Weir as root, or grant them with \
         `setcap cap_bpf,cap_perfmon+ep weir`, or in Kubernetes set the container's \
         securityContext.capabilities.add to [\"BPF\", \"PERFMON\"] (or privileged: true)"
    )]
    Privileges { component: &'static str },
    #[error(
        "{component}: the kernel exposes no BTF at /sys/kernel/btf/vmlinux; the eBPF programs \
         are CO-RE and need a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distribution \
         kernels since 5.4 have it)"
    )]
    NoBtf { component: &'static str },
    #[error(
        "{component}: tracefs is not mounted at /sys/kernel/tracing (or \
         /sys/kernel/debug/tracing) and mounting it failed ({cause}); mount it with \
         `mount -t tracefs tracefs /sys/kernel/tracing`, or in Kubernetes mount the host's \
         /sys/kernel/tracing into the container (hostPath volume)"
    )]
    NoTracefs {
        component: &'static str,
        cause: String,
    },
    #[error("{component}: this source needs Linux")]
    NotLinux { component: &'static str },
}

/// Capability numbers (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set of this process, from /proc/self/status.
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

/// Whether the capabilities allow loading tracing programs.
pub fn has_privileges() -> bool {
    match effective_caps() {
        Some(caps) => {
            let has = |c: u32| caps & (1u64 << c) != 0;
            has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
        }
        None => false,
    }
}

/// Where tracefs is mounted, if it is.
pub fn tracefs_path() -> Option<&'static Path> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("events").is_dir())
}

/// Where the cgroup v2 (unified) hierarchy is mounted, from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        left.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// Mounts tracefs at /sys/kernel/tracing.
fn mount_tracefs() -> Result<(), String> {
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    // SAFETY: all pointers are valid NUL-terminated strings; data may be null for tracefs.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

/// Checks privileges and BTF, and when `tracefs` is true makes sure tracefs is mounted
/// (mounting it when it is not and we are allowed to).
pub fn check(component: &'static str, tracefs: bool) -> Result<(), EnvError> {
    if !cfg!(target_os = "linux") {
        return Err(EnvError::NotLinux { component });
    }
    if !has_privileges() {
        return Err(EnvError::Privileges { component });
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(EnvError::NoBtf { component });
    }
    if tracefs && tracefs_path().is_none() {
        mount_tracefs().map_err(|cause| EnvError::NoTracefs { component, cause })?;
        tracing::info!(component, "mounted tracefs at /sys/kernel/tracing");
    }
    raise_memlock();
    Ok(())
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; lift it when we may.
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid rlimit struct.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) };
    if rc != 0 {
        tracing::debug!(
            "could not lift RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// CLOCK_MONOTONIC (what `bpf_ktime_get_ns` and `task_struct.start_time` use) to wall clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Wall-clock nanoseconds at monotonic zero.
    offset_ns: i128,
}

impl Clock {
    pub fn new() -> Self {
        let mono = monotonic_ns();
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i128)
            .unwrap_or(0);
        Self {
            offset_ns: wall - mono as i128,
        }
    }

    /// The wall-clock time of a monotonic timestamp.
    pub fn wall(&self, mono_ns: u64) -> chrono::DateTime<chrono::Utc> {
        let ns = self.offset_ns + mono_ns as i128;
        let secs = ns.div_euclid(1_000_000_000) as i64;
        let nanos = ns.rem_euclid(1_000_000_000) as u32;
        chrono::DateTime::from_timestamp(secs, nanos).unwrap_or_default()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// The current CLOCK_MONOTONIC time in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A NUL-terminated C string in a fixed buffer, lossily decoded.
pub fn c_str(buf: &[u8]) -> String {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}
