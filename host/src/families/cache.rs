//! A map with a fixed capacity that evicts its least recently used entry,
//! so what clients can make the resolver remember has a bound.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

/// A bounded least-recently-used map from family name to `V`. Capacities
/// here are small (hundreds), so eviction scans for the oldest entry
/// rather than keeping a second index.
pub struct BoundedCache<V> {
    capacity: usize,
    inner: Mutex<Inner<V>>,
}

struct Inner<V> {
    tick: u64,
    map: HashMap<String, (V, u64)>,
}

impl<V: Clone> BoundedCache<V> {
    /// An empty cache holding at most `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner {
                tick: 0,
                map: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<V>> {
        // A panic while holding the lock leaves a consistent map (every
        // mutation is a single call), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entry for `key`, marking it recently used.
    pub fn get(&self, key: &str) -> Option<V> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let (value, used) = inner.map.get_mut(key)?;
        *used = tick;
        Some(value.clone())
    }

    /// Insert or replace `key`, evicting the least recently used entry if
    /// the cache is full; returns the value it replaced.
    pub fn insert(&self, key: &str, value: V) -> Option<V> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        if !inner.map.contains_key(key)
            && inner.map.len() >= self.capacity
            && let Some(oldest) = inner
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
        {
            inner.map.remove(&oldest);
        }
        inner.map.insert(key.to_owned(), (value, tick)).map(|(v, _)| v)
    }

    /// Remove `key`.
    pub fn remove(&self, key: &str) -> Option<V> {
        self.lock().map.remove(key).map(|(v, _)| v)
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its capacity.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_holds_more_than_its_capacity_and_evicts_the_least_recently_used() {
        let c = BoundedCache::new(3);
        for (i, k) in ["a", "b", "c"].iter().enumerate() {
            c.insert(k, i);
        }
        assert_eq!(c.get("a"), Some(0)); // "b" is now the oldest
        c.insert("d", 3);
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("b"), None);
        assert_eq!(c.get("a"), Some(0));
        for i in 0..10_000 {
            c.insert(&format!("k{i}"), i);
        }
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn replacing_an_entry_does_not_evict_another() {
        let c = BoundedCache::new(2);
        c.insert("a", 1);
        c.insert("b", 2);
        assert_eq!(c.insert("a", 3), Some(1));
        assert_eq!((c.get("a"), c.get("b")), (Some(3), Some(2)));
    }
}
