//! The process-wide memory limit (`memory_limit`): above it, sources pause instead of reading.
//!
//! Every buffer adds the estimated bytes of the batches it holds
//! ([`EventBatch::estimated_bytes`](crate::event::EventBatch::estimated_bytes)) to one shared
//! counter, [`MemoryBudget::buffered`], and takes them off when its consumer takes the batch:
//! one atomic add per batch. A source's [`SourceSender`](crate::component::SourceSender)
//! checks the budget before each send (one atomic load) and, when it is exceeded, waits until it
//! is not: every source pauses at once, whatever it reads, while transforms and sinks go on
//! draining. The budget is exceeded when
//!
//! - the buffers hold more than half of the limit ([`BUFFER_SHARE`]: the other half is for
//!   what the estimate does not see: the copies sinks encode, read buffers, the allocator's
//!   slack, the program itself), or
//! - the process's resident memory (polled every [`RSS_POLL`]) is over the limit while the
//!   buffers hold more than a sixteenth of it ([`RSS_FLOOR_SHARE`]): pausing only helps while
//!   draining the buffers can free something, so memory held elsewhere (a sink's series, a
//!   window) never pauses the sources for good.
//!
//! Never while the buffers are empty: then nothing would drain, and however small the limit,
//! a source always gets one batch through.
//!
//! Without `memory_limit` in the configuration, the limit is 80% of the cgroup's memory limit
//! when the process runs in one (cgroup v2 `memory.max`, or v1 `memory.limit_in_bytes`, the
//! smallest along the path to the root), and there is none otherwise.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The share of the limit that buffered events may take before sources pause: one half.
pub const BUFFER_SHARE: u64 = 2;
/// Resident memory over the limit pauses the sources only while buffers hold more than the
/// limit divided by this.
pub const RSS_FLOOR_SHARE: u64 = 16;
/// How often the resident memory is read, when there is a limit and the buffers hold enough
/// for it to matter (more than the limit divided by [`RSS_FLOOR_SHARE`]).
pub const RSS_POLL: Duration = Duration::from_millis(25);
/// How often it is read otherwise (an idle agent wakes up 4 times a second for it).
pub const RSS_POLL_IDLE: Duration = Duration::from_millis(250);
/// The share of the cgroup's limit taken as the default `memory_limit`, in percent.
pub const CGROUP_DEFAULT_PERCENT: u64 = 80;
/// How often a pause is logged at most.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Where the limit in force came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitOrigin {
    /// `memory_limit` in the configuration.
    Configured,
    /// A share of the cgroup's limit, read from this file.
    Cgroup(PathBuf),
    /// No limit (none configured, no cgroup limit, or `memory_limit = 0`).
    None,
}

/// The process-wide memory budget, shared by every buffer and source of a pipeline.
#[derive(Debug)]
pub struct MemoryBudget {
    /// 0: no limit.
    limit: u64,
    origin: LimitOrigin,
    buffered: AtomicU64,
    rss: AtomicU64,
    rss_over: AtomicBool,
    pauses: AtomicU64,
    waiting: AtomicUsize,
    notify: Notify,
    last_log: Mutex<Option<Instant>>,
}

impl MemoryBudget {
    /// A budget without a limit: it counts, and never pauses anything.
    pub fn unlimited() -> Arc<Self> {
        Self::new(0, LimitOrigin::None)
    }

    /// A budget of `limit` bytes (0: none).
    pub fn new(limit: u64, origin: LimitOrigin) -> Arc<Self> {
        let origin = if limit == 0 {
            LimitOrigin::None
        } else {
            origin
        };
        Arc::new(Self {
            limit,
            origin,
            buffered: AtomicU64::new(0),
            rss: AtomicU64::new(0),
            rss_over: AtomicBool::new(false),
            pauses: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            notify: Notify::new(),
            last_log: Mutex::new(None),
        })
    }

    /// The budget of a configuration's `memory_limit`: `Some(0)` is no limit, `None` the
    /// cgroup's default.
    pub fn from_config(memory_limit: Option<u64>) -> Arc<Self> {
        match memory_limit {
            Some(n) => Self::new(n, LimitOrigin::Configured),
            None => match cgroup_limit() {
                Some((bytes, file)) => Self::new(
                    bytes / 100 * CGROUP_DEFAULT_PERCENT,
                    LimitOrigin::Cgroup(file),
                ),
                None => Self::unlimited(),
            },
        }
    }

    /// The limit in bytes, if there is one.
    pub fn limit(&self) -> Option<u64> {
        (self.limit > 0).then_some(self.limit)
    }

    /// Where the limit came from.
    pub fn origin(&self) -> &LimitOrigin {
        &self.origin
    }

    /// The estimated bytes of the events in every buffer now.
    pub fn buffered(&self) -> u64 {
        self.buffered.load(Ordering::Relaxed)
    }

    /// The process's resident memory at the last poll (0 before the first, or without a limit).
    pub fn rss(&self) -> u64 {
        self.rss.load(Ordering::Relaxed)
    }

    /// How many times a source had to wait for the budget.
    pub fn pauses(&self) -> u64 {
        self.pauses.load(Ordering::Relaxed)
    }

    /// A buffer took a batch of `bytes`.
    pub(crate) fn add(&self, bytes: u64) {
        self.buffered.fetch_add(bytes, Ordering::Relaxed);
    }

    /// A batch of `bytes` left a buffer.
    pub(crate) fn sub(&self, bytes: u64) {
        self.buffered.fetch_sub(bytes, Ordering::Relaxed);
        // Only a paused source needs telling (one load on the hot path otherwise).
        if self.waiting.load(Ordering::Relaxed) > 0 && !self.exceeded() {
            self.notify.notify_waiters();
        }
    }

    /// Whether sources must pause now.
    pub fn exceeded(&self) -> bool {
        if self.limit == 0 {
            return false;
        }
        let buffered = self.buffered.load(Ordering::Relaxed);
        // Empty buffers: nothing would drain, so pausing could only deadlock (a tiny limit).
        let over_rss = self.rss_over.load(Ordering::Relaxed);
        buffered > 0
            && (buffered >= self.limit / BUFFER_SHARE
                || (over_rss && buffered >= self.limit / RSS_FLOOR_SHARE))
    }

    /// Returns at once while the budget holds; otherwise waits until it does (a source calls
    /// it before each send).
    pub async fn wait_for_room(&self, source: &str) {
        if !self.exceeded() {
            return;
        }
        self.pauses.fetch_add(1, Ordering::Relaxed);
        self.log_pause(source);
        self.waiting.fetch_add(1, Ordering::SeqCst);
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.exceeded() {
                break;
            }
            // A notification may be missed between the check and the wait when the resident
            // memory falls (the poller tells too, but a poll is cheap): wait a little at most.
            let _ = tokio::time::timeout(RSS_POLL, notified).await;
        }
        self.waiting.fetch_sub(1, Ordering::SeqCst);
    }

    fn log_pause(&self, source: &str) {
        let mut last = match self.last_log.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let now = Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < LOG_INTERVAL) {
            return;
        }
        *last = Some(now);
        drop(last);
        tracing::warn!(
            component = %source,
            limit = self.limit,
            buffered = self.buffered(),
            rss = self.rss(),
            "memory limit reached: sources pause until the buffers drain (memory_limit; logged at most every 10 s, counted in weir_memory_pauses_total)"
        );
    }

    /// Records the resident memory (the poller calls it).
    fn set_rss(&self, rss: u64) {
        self.rss.store(rss, Ordering::Relaxed);
        let over = self.limit > 0 && rss > self.limit;
        let was = self.rss_over.swap(over, Ordering::Relaxed);
        if was && !over && self.waiting.load(Ordering::Relaxed) > 0 {
            self.notify.notify_waiters();
        }
    }

    /// Polls the resident memory while `self` has a limit and other owners (the task ends
    /// when the pipeline drops its budget): every [`RSS_POLL`] while the buffers hold enough
    /// for it to matter, every [`RSS_POLL_IDLE`] otherwise.
    pub fn spawn_rss_poller(self: &Arc<Self>) {
        if self.limit == 0 {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let next = {
                    let Some(budget) = weak.upgrade() else { return };
                    if let Some(rss) = resident_bytes() {
                        budget.set_rss(rss);
                    }
                    if budget.buffered() >= budget.limit / RSS_FLOOR_SHARE {
                        RSS_POLL
                    } else {
                        RSS_POLL_IDLE
                    }
                };
                tokio::time::sleep(next).await;
            }
        });
    }
}

/// The process's resident memory (`VmRSS` of `/proc/self/status`), in bytes.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The memory limit of the cgroup this process runs in, and the file it was read from: the
/// smallest `memory.max` (cgroup v2) or `memory.limit_in_bytes` (v1) from the process's cgroup up
/// to the root of the hierarchy (`max`, or v1's huge "unlimited" value, is no limit).
pub fn cgroup_limit() -> Option<(u64, PathBuf)> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_limit_in(&cgroups, Path::new("/sys/fs/cgroup"))
}

/// [`cgroup_limit`] for the text of `/proc/self/cgroup` and the cgroup mount `root`.
pub fn cgroup_limit_in(proc_cgroup: &str, root: &Path) -> Option<(u64, PathBuf)> {
    let mut found: Option<(u64, PathBuf)> = None;
    for line in proc_cgroup.lines() {
        // `hierarchy-id:controllers:path`; v2 is `0::path`.
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let (base, file) = if id == "0" && controllers.is_empty() {
            // The unified hierarchy: mounted at the root, or at `unified` on hybrid hosts.
            let base = if root.join("cgroup.controllers").exists() {
                root.to_path_buf()
            } else {
                root.join("unified")
            };
            (base, "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (root.join("memory"), "memory.limit_in_bytes")
        } else {
            continue;
        };
        let rel = Path::new(path.trim())
            .strip_prefix("/")
            .unwrap_or(Path::new(""));
        for dir in rel.ancestors() {
            let f = base.join(dir).join(file);
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            let Ok(n) = text.trim().parse::<u64>() else {
                continue; // `max`
            };
            // cgroup v1 says "unlimited" with a number near i64::MAX.
            if n >= (1 << 62) {
                continue;
            }
            if found.as_ref().is_none_or(|(m, _)| n < *m) {
                found = Some((n, f));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup_limit_is_the_smallest_up_the_path() {
        let dir = std::env::temp_dir().join(format!("weir-cgroup-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.as_path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("cgroup.controllers"), "memory\n").unwrap();
        std::fs::write(root.join("a/memory.max"), "268435456\n").unwrap();
        std::fs::write(root.join("a/b/memory.max"), "max\n").unwrap();
        let (n, f) = cgroup_limit_in("0::/a/b\n", root).unwrap();
        assert_eq!(n, 256 << 20);
        assert_eq!(f, root.join("a/memory.max"));
        std::fs::write(root.join("a/b/memory.max"), "134217728\n").unwrap();
        assert_eq!(cgroup_limit_in("0::/a/b\n", root).unwrap().0, 128 << 20);
        std::fs::write(root.join("a/b/memory.max"), "max\n").unwrap();
        std::fs::write(root.join("a/memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_limit_in("0::/a/b\n", root), None);

        // cgroup v1 (hybrid host): the memory controller's hierarchy.
        std::fs::create_dir_all(root.join("memory/x")).unwrap();
        std::fs::write(
            root.join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        std::fs::write(root.join("memory/x/memory.limit_in_bytes"), "1048576\n").unwrap();
        let text = "4:memory:/x\n0::/\n";
        assert_eq!(cgroup_limit_in(text, root).unwrap().0, 1 << 20);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn sources_wait_while_the_buffers_hold_half_the_limit() {
        let b = MemoryBudget::new(1000, LimitOrigin::Configured);
        b.add(499);
        b.wait_for_room("s").await;
        assert_eq!(b.pauses(), 0);
        b.add(1);
        assert!(b.exceeded());
        let b2 = b.clone();
        let waiter = tokio::spawn(async move { b2.wait_for_room("s").await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        b.sub(100);
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(b.pauses(), 1);
        // Resident memory over the limit pauses only while the buffers hold something.
        b.set_rss(2000);
        assert!(b.exceeded());
        b.sub(400);
        assert!(!b.exceeded());
        assert!(!MemoryBudget::unlimited().exceeded());
        // Never while the buffers are empty, however small the limit.
        let tiny = MemoryBudget::new(1, LimitOrigin::Configured);
        tiny.set_rss(1 << 30);
        assert!(!tiny.exceeded());
        tiny.add(1);
        assert!(tiny.exceeded());
    }
}
