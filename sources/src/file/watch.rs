//! Directory change notifications (inotify), so files are seen when they appear, not at the
//! next discovery pass. A file created and renamed away between two passes (an 8 MB/s log
//! rotated every 0.2 s) is followed to its new name through the rename's event pair.
//!
//! The directories watched are those of the files discovery found, and the fixed directory
//! part of each `include` pattern. Polling ([`super::discovery`]) stays: on file systems
//! without inotify (some network and FUSE ones), when the watch limit
//! (`fs.inotify.max_user_watches`) is reached, or when the event queue overflows, the tailer
//! falls back to its passes, which also look for files rotated away between two of them.

use std::collections::{HashMap, VecDeque};
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What happened in a watched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A file was created (or linked) at this path.
    Created(PathBuf),
    /// A file was renamed. `from` is `None` when it came from an unwatched directory.
    Moved { from: Option<PathBuf>, to: PathBuf },
    /// Events were lost (the kernel's queue overflowed): look at everything again.
    Overflow,
}

/// Renames whose first half was seen and whose second half was not yet (bounded).
const MAX_PENDING_MOVES: usize = 1024;
const EVENT_HEADER: usize = std::mem::size_of::<libc::inotify_event>();

/// An inotify instance and the directories it watches.
pub struct Watcher {
    fd: OwnedFd,
    dirs: HashMap<PathBuf, i32>,
    wds: HashMap<i32, PathBuf>,
    /// `IN_MOVED_FROM` halves by cookie, waiting for their `IN_MOVED_TO`.
    moves: VecDeque<(u32, PathBuf)>,
    buf: Vec<u8>,
    /// A watch could not be added (the limit was reached): said once.
    warned: bool,
}

impl Watcher {
    /// A new watcher, or why there is none (the tailer then only polls).
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain system call; the descriptor it returns is owned below.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: `fd` is a new, valid descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            dirs: HashMap::new(),
            wds: HashMap::new(),
            moves: VecDeque::new(),
            buf: vec![0; 64 * 1024],
            warned: false,
        })
    }

    /// Watches `dir` (nothing if it is watched already). Returns an error the caller reports
    /// once (the directory is then only polled).
    pub fn watch(&mut self, dir: &Path) -> Result<(), io::Error> {
        if self.dirs.contains_key(dir) {
            return Ok(());
        }
        let c = CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mask = libc::IN_CREATE | libc::IN_MOVED_FROM | libc::IN_MOVED_TO | libc::IN_ONLYDIR;
        // SAFETY: `c` is a valid NUL-terminated path and `fd` an inotify descriptor.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        self.dirs.insert(dir.to_path_buf(), wd);
        self.wds.insert(wd, dir.to_path_buf());
        Ok(())
    }

    /// Whether an error adding a watch should still be reported (only the first is).
    pub fn first_failure(&mut self) -> bool {
        !std::mem::replace(&mut self.warned, true)
    }

    pub fn watched(&self) -> usize {
        self.dirs.len()
    }

    /// Waits up to `timeout` for an event to be readable; returns whether one is.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut p = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        n > 0 && p.revents & libc::POLLIN != 0
    }

    /// Reads every event queued (without blocking) into `out`.
    pub fn read(&mut self, out: &mut Vec<Change>) {
        loop {
            // SAFETY: `buf` is valid for `buf.len()` bytes.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                )
            };
            if n <= 0 {
                // EAGAIN (nothing more), or an error: the passes still find everything.
                return;
            }
            let n = n as usize;
            let mut at = 0;
            while at + EVENT_HEADER <= n {
                // SAFETY: the kernel wrote a whole event header at `at`; read unaligned.
                let ev: libc::inotify_event =
                    unsafe { std::ptr::read_unaligned(self.buf[at..].as_ptr().cast()) };
                let name_start = at + EVENT_HEADER;
                let name_end = (name_start + ev.len as usize).min(n);
                let raw = &self.buf[name_start..name_end];
                let name = &raw[..raw.iter().position(|b| *b == 0).unwrap_or(raw.len())];
                at = name_end;
                if ev.mask & libc::IN_Q_OVERFLOW != 0 {
                    out.push(Change::Overflow);
                    continue;
                }
                if ev.mask & libc::IN_IGNORED != 0 {
                    // The directory is gone (or unmounted): forget it; rediscovered later.
                    if let Some(dir) = self.wds.remove(&ev.wd) {
                        self.dirs.remove(&dir);
                    }
                    continue;
                }
                let Some(dir) = self.wds.get(&ev.wd) else {
                    continue;
                };
                if name.is_empty() || ev.mask & libc::IN_ISDIR != 0 {
                    continue;
                }
                let path = dir.join(OsStr::from_bytes(name));
                if ev.mask & libc::IN_CREATE != 0 {
                    out.push(Change::Created(path));
                } else if ev.mask & libc::IN_MOVED_FROM != 0 {
                    if self.moves.len() >= MAX_PENDING_MOVES {
                        self.moves.pop_front();
                    }
                    self.moves.push_back((ev.cookie, path));
                } else if ev.mask & libc::IN_MOVED_TO != 0 {
                    let from = self
                        .moves
                        .iter()
                        .position(|(c, _)| *c == ev.cookie)
                        .and_then(|i| self.moves.remove(i))
                        .map(|(_, p)| p);
                    out.push(Change::Moved { from, to: path });
                }
            }
        }
    }
}

/// The part of a glob before its first metacharacter's path component: the directory that
/// holds every match of a pattern like `/var/log/app/*.log` (`/var/log/app`). `None` when
/// the pattern's directory has metacharacters itself.
pub fn fixed_dir(pattern: &str) -> Option<PathBuf> {
    let p = Path::new(pattern);
    let dir = p.parent()?;
    let s = dir.to_string_lossy();
    if s.is_empty() || s.contains(['*', '?', '[', '{']) {
        return None;
    }
    Some(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creations_and_renames_are_reported_with_both_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Watcher::new().unwrap();
        w.watch(dir.path()).unwrap();
        let a = dir.path().join("app.log");
        let b = dir.path().join("app.log.1");
        std::fs::write(&a, b"x\n").unwrap();
        std::fs::rename(&a, &b).unwrap();
        assert!(w.wait(Duration::from_secs(5)));
        let mut got = Vec::new();
        w.read(&mut got);
        assert_eq!(
            got,
            vec![
                Change::Created(a.clone()),
                Change::Moved {
                    from: Some(a),
                    to: b
                }
            ]
        );
        assert_eq!(
            fixed_dir("/var/log/app/*.log"),
            Some(PathBuf::from("/var/log/app"))
        );
        assert_eq!(fixed_dir("/var/log/pods/*/*/*.log"), None);
    }
}
