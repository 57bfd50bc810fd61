//! In-process memos of what a process read from the store (or an upstream) and checked: bounded,
//! concurrent, optionally expiring.
//!
//! A Lambda environment or the local server answers many requests; without a memo each one pays
//! the same store round trips (in Lambda each is an S3 request) for things that cannot change:
//! a schematic by its content address, a release's catalog, a signed index record by its cache
//! key. What goes in here must be immutable for the key, or carry its own expiry (the version
//! list, a tag's digest), and must have been verified before it was put in: a memo never makes
//! an unverified value trusted, it only spares re-reading a verified one.
//!
//! The bound is a count of entries (values are small records); eviction is the cache crate's
//! (S3-FIFO), so a scan of one-off keys does not push out the hot ones.

use std::hash::Hash;
use std::time::{Duration, Instant};

/// A bounded, concurrent memo. Cheap to share behind an `Arc`; values are cloned out (keep them
/// small, or `Arc` them).
pub struct Memo<K, V> {
    cache: quick_cache::sync::Cache<K, Entry<V>>,
    ttl: Option<Duration>,
}

#[derive(Clone)]
struct Entry<V> {
    value: V,
    expires: Option<Instant>,
}

impl<K: Eq + Hash + Clone, V: Clone> Memo<K, V> {
    /// A memo of values that never change for their key, holding at most `capacity` of them.
    pub fn new(capacity: usize) -> Self {
        Self {
            cache: quick_cache::sync::Cache::new(capacity.max(1)),
            ttl: None,
        }
    }

    /// A memo whose entries expire `ttl` after they were put in.
    pub fn with_ttl(capacity: usize, ttl: Duration) -> Self {
        Self {
            ttl: Some(ttl),
            ..Self::new(capacity)
        }
    }

    /// The value of `key`, if present and not expired.
    pub fn get(&self, key: &K) -> Option<V> {
        let entry = self.cache.get(key)?;
        match entry.expires {
            Some(at) if Instant::now() >= at => {
                self.cache.remove(key);
                None
            }
            _ => Some(entry.value),
        }
    }

    /// Puts `value` in, with the memo's expiry.
    pub fn insert(&self, key: K, value: V) {
        let expires = self.ttl.and_then(|ttl| Instant::now().checked_add(ttl));
        self.insert_until(key, value, expires);
    }

    /// Puts `value` in, expiring at `expires` (`None`: never) whatever the memo's own expiry.
    pub fn insert_until(&self, key: K, value: V, expires: Option<Instant>) {
        self.cache.insert(key, Entry { value, expires });
    }

    /// Forgets `key` (a value found stale by a later check).
    pub fn remove(&self, key: &K) {
        self.cache.remove(key);
    }

    /// How many entries are held (expired ones included until they are looked up or evicted).
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }
}

impl<K: Eq + Hash + Clone, V: Clone> std::fmt::Debug for Memo<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo")
            .field("entries", &self.cache.len())
            .field("capacity", &self.cache.capacity())
            .field("ttl", &self.ttl)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_removes_and_bounds() {
        let memo = Memo::new(8);
        memo.insert("a", 1);
        assert_eq!(memo.get(&"a"), Some(1));
        memo.remove(&"a");
        assert_eq!(memo.get(&"a"), None);
        for i in 0..1000 {
            memo.insert(i.to_string().leak() as &str, i);
        }
        assert!(memo.len() <= 16, "bounded: {} entries", memo.len());
    }

    #[test]
    fn entries_expire() {
        let memo = Memo::with_ttl(8, Duration::from_millis(30));
        memo.insert(1, "x");
        assert_eq!(memo.get(&1), Some("x"));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(memo.get(&1), None, "expired");
        memo.insert_until(2, "y", None);
        assert_eq!(memo.get(&2), Some("y"), "an explicit expiry overrides the memo's");
    }
}
