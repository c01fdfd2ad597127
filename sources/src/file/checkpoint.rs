//! Checkpoints: for each file fingerprint, the offset up to which its lines are done
//! (delivered, with acknowledgements; handed to the pipeline, without), plus where the file was
//! last seen. Kept in `<data_dir>/<source id>/checkpoints.json`, written atomically (a temporary
//! file, fsync, rename, fsync of the directory), so a crash leaves either the old or the new
//! file, never a torn one.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::fingerprint::Fingerprint;

/// The checkpoint file's name inside the source's data directory.
pub const FILE_NAME: &str = "checkpoints.json";
const VERSION: u32 = 1;
/// Checkpoints of files not seen for this long are forgotten.
pub const MAX_AGE_SECS: i64 = 24 * 3600;

/// What is remembered about one file content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub fingerprint: Fingerprint,
    /// Bytes of the file (decompressed bytes for gzip) that are done.
    pub offset: u64,
    /// Where the file was last seen.
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    /// The file was read to its end and will not grow (a gzip file): never read it again.
    #[serde(default)]
    pub done: bool,
    /// When the file was last seen (Unix seconds); entries unseen for long are pruned.
    pub updated: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    /// When the source first started (Unix seconds): a file born since then that no
    /// checkpoint knows was never seen, and is read at the next start if it was rotated away.
    #[serde(default)]
    watching_since: Option<i64>,
    checkpoints: Vec<Entry>,
}

/// Why the checkpoints could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot create the checkpoint directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid checkpoint file ({reason}); it was moved to {moved} and every file will be read from its beginning")]
    Corrupt {
        path: PathBuf,
        reason: String,
        moved: PathBuf,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The checkpoint table of one source.
#[derive(Debug)]
pub struct Checkpoints {
    dir: PathBuf,
    entries: HashMap<Fingerprint, Entry>,
    /// A checkpoint file existed when the source started (so this is not its first start).
    existed: bool,
    /// When the source first started (Unix seconds), kept across restarts.
    watching_since: i64,
    dirty: bool,
}

impl Checkpoints {
    /// An empty table for `dir` (nothing read from disk).
    pub fn empty(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            entries: HashMap::new(),
            existed: false,
            watching_since: chrono::Utc::now().timestamp(),
            dirty: false,
        }
    }

    /// Loads the table from `dir`, creating the directory. A corrupt file is moved aside (the
    /// error says where) and the table starts empty but counts as existing, so files are read
    /// from their beginning: duplicates rather than loss.
    pub fn load(dir: &Path) -> (Self, Option<CheckpointError>) {
        let mut me = Self::empty(dir);
        if let Err(source) = std::fs::create_dir_all(dir) {
            return (
                me,
                Some(CheckpointError::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                }),
            );
        }
        let path = dir.join(FILE_NAME);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (me, None),
            Err(source) => {
                me.existed = true;
                return (me, Some(CheckpointError::Read { path, source }));
            }
        };
        me.existed = true;
        match serde_json::from_slice::<OnDisk>(&text) {
            Ok(d) if d.version == VERSION => {
                // A file written before this was kept: its last write is a safe lower bound.
                let written = std::fs::metadata(&path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| d.as_secs() as i64);
                if let Some(t) = d.watching_since.or(written) {
                    me.watching_since = t;
                }
                me.entries = d
                    .checkpoints
                    .into_iter()
                    .map(|e| (e.fingerprint, e))
                    .collect();
                (me, None)
            }
            other => {
                let reason = match other {
                    Ok(d) => format!("unknown version {}", d.version),
                    Err(e) => e.to_string(),
                };
                let moved = dir.join(format!(
                    "{FILE_NAME}.corrupt-{}",
                    chrono::Utc::now().format("%Y%m%dT%H%M%S")
                ));
                let _ = std::fs::rename(&path, &moved);
                (
                    me,
                    Some(CheckpointError::Corrupt {
                        path,
                        reason,
                        moved,
                    }),
                )
            }
        }
    }

    /// When the source first started (Unix seconds).
    pub fn watching_since(&self) -> i64 {
        self.watching_since
    }

    /// Whether a checkpoint file existed at start.
    pub fn existed(&self) -> bool {
        self.existed
    }

    pub fn get(&self, fp: &Fingerprint) -> Option<&Entry> {
        self.entries.get(fp)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records where the file with `fp` is now (creating its entry at offset 0).
    pub fn touch(&mut self, fp: Fingerprint, path: &Path, dev: u64, ino: u64, now: i64) {
        let e = self.entries.entry(fp).or_insert_with(|| Entry {
            fingerprint: fp,
            offset: 0,
            path: path.to_path_buf(),
            dev,
            ino,
            done: false,
            updated: now,
        });
        if e.path != path || e.dev != dev || e.ino != ino {
            e.path = path.to_path_buf();
            e.dev = dev;
            e.ino = ino;
            self.dirty = true;
        }
        if now - e.updated >= 60 {
            e.updated = now;
            self.dirty = true;
        }
    }

    /// Sets the done offset of `fp` (positions arrive in order, so a smaller offset is a
    /// reset after truncation, not a step back).
    pub fn set_offset(&mut self, fp: Fingerprint, offset: u64, done: bool, now: i64) {
        let e = self.entries.entry(fp).or_insert_with(|| Entry {
            fingerprint: fp,
            offset,
            path: PathBuf::new(),
            dev: 0,
            ino: 0,
            done,
            updated: now,
        });
        if e.offset != offset || e.done != done {
            e.offset = offset;
            e.done = done;
            self.dirty = true;
        }
    }

    /// Forgets entries not seen for `max_age_secs`.
    pub fn prune(&mut self, now: i64, max_age_secs: i64) {
        let before = self.entries.len();
        self.entries.retain(|_, e| now - e.updated <= max_age_secs);
        if self.entries.len() != before {
            self.dirty = true;
        }
    }

    /// Marks the table as needing a write (a write failed).
    pub fn set_dirty(&mut self) {
        self.dirty = true;
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The table as the bytes of the checkpoint file; clears the dirty flag.
    pub fn snapshot(&mut self) -> Vec<u8> {
        self.dirty = false;
        let mut checkpoints: Vec<Entry> = self.entries.values().cloned().collect();
        checkpoints.sort_by(|a, b| a.path.cmp(&b.path).then(a.fingerprint.cmp(&b.fingerprint)));
        serde_json::to_vec_pretty(&OnDisk {
            version: VERSION,
            watching_since: Some(self.watching_since),
            checkpoints,
        })
        .unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Writes `bytes` as the checkpoint file of `dir`: temporary file, fsync, rename, fsync of
/// the directory.
pub fn write_atomically(dir: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let path = dir.join(FILE_NAME);
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let werr = |source| CheckpointError::Write {
        path: path.clone(),
        source,
    };
    let mut f = File::create(&tmp).map_err(werr)?;
    f.write_all(bytes).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    drop(f);
    std::fs::rename(&tmp, &path).map_err(werr)?;
    // The rename itself is durable only once the directory is synced.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (mut t, err) = Checkpoints::load(dir.path());
        assert!(err.is_none());
        assert!(!t.existed());
        let a = Fingerprint::Checksum(1);
        let b = Fingerprint::DevInode(3, 4);
        t.touch(a, Path::new("/var/log/a.log"), 1, 2, 100);
        t.set_offset(a, 4096, false, 100);
        t.set_offset(b, 10, true, 100);
        assert!(t.is_dirty());
        write_atomically(dir.path(), &t.snapshot()).unwrap();
        assert!(!t.is_dirty());
        let (back, err) = Checkpoints::load(dir.path());
        assert!(err.is_none());
        assert!(back.existed());
        assert_eq!(back.len(), 2);
        assert_eq!(back.get(&a), t.get(&a));
        assert_eq!(back.get(&a).unwrap().path, Path::new("/var/log/a.log"));
        assert!(back.get(&b).unwrap().done);
        assert_eq!(back.watching_since(), t.watching_since());
        assert!(!dir.path().join("checkpoints.json.tmp").exists());
    }

    #[test]
    fn corrupt_file_is_moved_aside_and_counts_as_existing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), b"{ not json").unwrap();
        let (t, err) = Checkpoints::load(dir.path());
        assert!(matches!(err, Some(CheckpointError::Corrupt { .. })));
        assert!(
            t.existed(),
            "files are read from the beginning, not the end"
        );
        assert!(t.is_empty());
        assert!(!dir.path().join(FILE_NAME).exists());
    }

    #[test]
    fn prune_forgets_old_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Checkpoints::empty(dir.path());
        t.touch(Fingerprint::Checksum(1), Path::new("a"), 1, 1, 0);
        t.touch(Fingerprint::Checksum(2), Path::new("b"), 1, 2, 1000);
        t.prune(1000, 500);
        assert_eq!(t.len(), 1);
        assert!(t.get(&Fingerprint::Checksum(2)).is_some());
    }
}
