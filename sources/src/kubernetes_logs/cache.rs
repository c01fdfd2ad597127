//! A local copy of what the API said about one kind of object (pods by uid, namespaces by
//! name), written by its watcher and read by the reading thread without waiting on the API.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// What a cache holds: one object's metadata, ready to be put into events.
pub trait Cached: PartialEq {
    /// The key it is found by (a pod's uid, a namespace's name).
    fn key(&self) -> &str;
}

struct CacheEntry<T> {
    meta: Arc<T>,
    /// When the API said the object was deleted (or it went missing from a new list).
    deleted_at: Option<Instant>,
}

/// Objects by key. Every change bumps [`MetaCache::generation`], so readers can keep what
/// they built from it until it changes.
pub struct MetaCache<T> {
    entries: RwLock<HashMap<String, CacheEntry<T>>>,
    generation: AtomicU64,
}

impl<T> Default for MetaCache<T> {
    fn default() -> Self {
        Self {
            entries: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }
}

impl<T: Cached> MetaCache<T> {
    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, CacheEntry<T>>> {
        match self.entries.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        let g = match self.entries.read() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.get(key).map(|e| e.meta.clone())
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn len(&self) -> usize {
        match self.entries.read() {
            Ok(g) => g.len(),
            Err(p) => p.into_inner().len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An object was added or changed.
    pub fn upsert(&self, meta: T) {
        let mut g = self.write();
        let unchanged = g
            .get(meta.key())
            .is_some_and(|e| *e.meta == meta && e.deleted_at.is_none());
        if !unchanged {
            g.insert(
                meta.key().to_string(),
                CacheEntry {
                    meta: Arc::new(meta),
                    deleted_at: None,
                },
            );
            drop(g);
            self.bump();
        }
    }

    /// An object was deleted: its metadata stays until [`MetaCache::sweep`] finds it older
    /// than the deletion delay, so the last lines of a deleted pod are still enriched.
    pub fn delete(&self, key: &str, now: Instant) {
        let mut g = self.write();
        if let Some(e) = g.get_mut(key) {
            e.deleted_at.get_or_insert(now);
        }
    }

    /// A fresh list: objects not in it count as deleted now.
    pub fn replace_all(&self, all: Vec<T>, now: Instant) {
        let keys: HashSet<String> = all.iter().map(|p| p.key().to_string()).collect();
        {
            let mut g = self.write();
            for (key, e) in g.iter_mut() {
                if !keys.contains(key) {
                    e.deleted_at.get_or_insert(now);
                }
            }
        }
        for p in all {
            self.upsert(p);
        }
    }

    /// Forgets objects deleted more than `delay` ago.
    pub fn sweep(&self, now: Instant, delay: Duration) {
        let mut g = self.write();
        let before = g.len();
        g.retain(|_, e| e.deleted_at.is_none_or(|d| now.duration_since(d) < delay));
        if g.len() != before {
            drop(g);
            self.bump();
        }
    }
}
