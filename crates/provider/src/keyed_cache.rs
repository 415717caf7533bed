//! Things that are costly to build (API clients, rate limiters), kept by key and shared by every reconcile.
//!
//! Building may be async and slow (loading cloud configuration, reading a kubeconfig), so the cache never holds
//! its lock across a build: a caller looks, builds outside the lock when nothing is there, and inserts. Two callers
//! that miss at once both build and the second insert wins; that costs a build, never a wrong answer.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

pub struct KeyedCache<K, V> {
    entries: Mutex<HashMap<K, V>>,
}

impl<K, V> Default for KeyedCache<K, V> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash, V: Clone> KeyedCache<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of what is kept under `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.lock().get(key).cloned()
    }

    /// Keeps `value` under `key`, replacing what was there.
    pub fn insert(&self, key: K, value: V) {
        self.lock().insert(key, value);
    }

    /// Forgets `key` (a cluster that is gone, say).
    pub fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.lock().remove(key);
    }

    /// What is kept under `key`, made by `make` (under the lock: it must be quick) when nothing is.
    pub fn get_or_insert_with(&self, key: K, make: impl FnOnce() -> V) -> V {
        self.lock().entry(key).or_insert_with(make).clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, V>> {
        // A panic elsewhere while holding the lock leaves the map whole: every operation is one map call.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_replaces_and_forgets_by_key() {
        let cache: KeyedCache<String, u32> = KeyedCache::new();
        assert_eq!(cache.get("a"), None);
        cache.insert("a".into(), 1);
        cache.insert("a".into(), 2);
        assert_eq!(cache.get("a"), Some(2));
        assert_eq!(cache.get_or_insert_with("a".into(), || 9), 2);
        assert_eq!(cache.get_or_insert_with("b".into(), || 9), 9);
        cache.remove("a");
        assert_eq!(cache.get("a"), None);
        assert_eq!(cache.get("b"), Some(9));
    }
}
