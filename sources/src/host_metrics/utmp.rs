//! The login records of utmp (who is logged in), wtmp (every login and logout) and btmp
//! (failed logins): arrays of glibc's `struct utmp`, 384 bytes each on Linux (x86_64,
//! aarch64 and 32-bit alike: glibc keeps `ut_tv` as two `int32` there for compatibility).
//!
//! ```text
//! offset  size  field
//!      0     2  ut_type       (7 USER_PROCESS: a login; 8 DEAD_PROCESS: its logout; 6 LOGIN_PROCESS)
//!      4     4  ut_pid
//!      8    32  ut_line       (tty: `pts/0`, `tty1`, or `ssh:notty`)
//!     40     4  ut_id
//!     44    32  ut_user
//!     76   256  ut_host       (remote host; empty for a local console, `:0` for X)
//!    332     4  ut_exit
//!    336     4  ut_session
//!    340     4  ut_tv.tv_sec  (seconds since the epoch)
//!    344     4  ut_tv.tv_usec
//!    348    16  ut_addr_v6
//!    364    20  unused
//! ```
//!
//! Strings are NUL-padded and not always NUL-terminated (a 32-byte user name fills its
//! field). Numbers are in the machine's byte order.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Records read at once from wtmp.
const CHUNK_RECORDS: usize = 1024;
/// Size of one record.
pub const RECORD_SIZE: usize = 384;
/// `ut_type` of a login (a user's session started).
pub const USER_PROCESS: i16 = 7;
/// `ut_type` of a terminal waiting for a login (also what sshd writes to btmp).
pub const LOGIN_PROCESS: i16 = 6;
/// `ut_type` of a session that ended.
pub const DEAD_PROCESS: i16 = 8;

/// One record, its strings decoded (invalid UTF-8 replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: i16,
    pub pid: i32,
    pub line: String,
    pub user: String,
    pub host: String,
    /// Seconds since the Unix epoch.
    pub time: i64,
}

impl Record {
    /// A login from another machine: a host is recorded and it is not an X display
    /// (`:0`). On a server, these are SSH logins.
    pub fn is_remote(&self) -> bool {
        !self.host.is_empty() && !self.host.starts_with(':')
    }

    /// The record in the binary format (for tests, and for anything that writes one).
    pub fn to_bytes(&self) -> [u8; RECORD_SIZE] {
        fn put(r: &mut [u8], s: &str) {
            let n = s.len().min(r.len());
            r[..n].copy_from_slice(&s.as_bytes()[..n]);
        }
        let mut r = [0u8; RECORD_SIZE];
        r[0..2].copy_from_slice(&self.kind.to_ne_bytes());
        r[4..8].copy_from_slice(&self.pid.to_ne_bytes());
        put(&mut r[8..40], &self.line);
        // `ut_id`: the end of the line, as login and sshd write it.
        let id = self
            .line
            .get(self.line.len().saturating_sub(4)..)
            .unwrap_or("");
        put(&mut r[40..44], id);
        put(&mut r[44..76], &self.user);
        put(&mut r[76..332], &self.host);
        r[340..344].copy_from_slice(&(self.time as i32).to_ne_bytes());
        r
    }
}

fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn i32_at(r: &[u8], at: usize) -> i32 {
    i32::from_ne_bytes([r[at], r[at + 1], r[at + 2], r[at + 3]])
}

/// Decodes one record (`r` must be [`RECORD_SIZE`] bytes long).
fn decode(r: &[u8]) -> Record {
    Record {
        kind: i16::from_ne_bytes([r[0], r[1]]),
        pid: i32_at(r, 4),
        line: c_str(&r[8..40]),
        user: c_str(&r[44..76]),
        host: c_str(&r[76..332]),
        // tv_sec is unsigned in practice (glibc reads it back as uint32 for times past 2038).
        time: i64::from(i32_at(r, 340) as u32),
    }
}

/// The whole records of `data` (a trailing partial record, being written, is left out).
pub fn records(data: &[u8]) -> impl Iterator<Item = Record> + '_ {
    data.chunks_exact(RECORD_SIZE).map(decode)
}

/// The open sessions of a utmp file: its `USER_PROCESS` records with a user name.
pub fn sessions(data: &[u8]) -> Vec<Record> {
    records(data)
        .filter(|r| r.kind == USER_PROCESS && !r.user.is_empty())
        .collect()
}

/// Remote logins of one user, as read from wtmp so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserLogins {
    pub count: u64,
    /// The time of the latest one (seconds since the epoch).
    pub last: i64,
}

/// What has been read of a wtmp (or btmp) file, read on from where the last scrape
/// stopped. The file only grows until it is rotated (a new inode) or truncated (smaller than
/// what was read): then the counts start again from zero, which Prometheus sees as a
/// counter reset.
#[derive(Debug, Default)]
pub struct LoginLog {
    /// (device, inode) of the file read.
    file: Option<(u64, u64)>,
    /// Bytes read, always whole records.
    offset: u64,
    /// Remote logins per user (`USER_PROCESS` records with a remote host).
    pub users: BTreeMap<String, UserLogins>,
    /// Records with a user name, whatever their type (every record of btmp is a failed
    /// login).
    pub attempts: u64,
    /// Of those, the ones from a remote host.
    pub remote_attempts: u64,
}

impl LoginLog {
    /// Reads what was appended to `path` since the last call.
    pub fn update(&mut self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let mut f = std::fs::File::open(path)?;
        let meta = f.metadata()?;
        let id = (meta.dev(), meta.ino());
        if self.file != Some(id) || meta.len() < self.offset {
            *self = LoginLog {
                file: Some(id),
                ..LoginLog::default()
            };
        }
        let whole = (meta.len() - self.offset) / RECORD_SIZE as u64 * RECORD_SIZE as u64;
        if whole == 0 {
            return Ok(());
        }
        f.seek(SeekFrom::Start(self.offset))?;
        // A first read of a large wtmp goes in chunks of whole records.
        let mut buf = vec![0u8; (whole as usize).min(CHUNK_RECORDS * RECORD_SIZE)];
        let mut left = whole as usize;
        while left > 0 {
            let n = left.min(buf.len());
            f.read_exact(&mut buf[..n])?;
            left -= n;
            self.offset += n as u64;
            for r in records(&buf[..n]) {
                self.add(r);
            }
        }
        Ok(())
    }

    fn add(&mut self, r: Record) {
        if r.user.is_empty() {
            return;
        }
        self.attempts += 1;
        if r.is_remote() {
            self.remote_attempts += 1;
            if r.kind == USER_PROCESS {
                let u = self.users.entry(r.user).or_default();
                u.count += 1;
                u.last = u.last.max(r.time);
            }
        }
    }
}
