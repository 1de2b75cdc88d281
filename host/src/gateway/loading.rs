//! Which families have a plugin being compiled and initialised right now,
//! so a call to one answers `plugin-loading` rather than `unknown-family`
//! while start-up and reloads run in the background.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

#[derive(Debug)]
struct Loading {
    file: PathBuf,
    /// Marks held: start-up marks every family before its load begins,
    /// and the load marks it again.
    marks: usize,
}

type Map = BTreeMap<String, Loading>;

/// The families being loaded. Bounded by the family files: one entry per
/// configured family at most.
#[derive(Debug, Clone)]
pub struct LoadingSet {
    map: Arc<Mutex<Map>>,
    /// How many families are loading, for [`LoadingSet::until_empty`].
    count: Arc<watch::Sender<usize>>,
}

impl Default for LoadingSet {
    fn default() -> Self {
        Self {
            map: Arc::default(),
            count: Arc::new(watch::Sender::new(0)),
        }
    }
}

/// Holds a family in the [`LoadingSet`] until dropped.
#[derive(Debug)]
pub struct LoadingMark {
    set: LoadingSet,
    family: String,
}

impl LoadingSet {
    fn lock(&self) -> MutexGuard<'_, Map> {
        // Every mutation is one call; a poisoned map is still consistent.
        self.map.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wait until no family is loading.
    pub async fn until_empty(&self) {
        let mut rx = self.count.subscribe();
        // The sender lives in `self`, so this cannot fail while we wait.
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Mark `family` (configured in `file`) loading until the mark drops.
    pub fn mark(&self, family: &str, file: PathBuf) -> LoadingMark {
        let mut map = self.lock();
        let entry = map.entry(family.to_owned()).or_insert(Loading { file, marks: 0 });
        entry.marks += 1;
        self.count.send_replace(map.len());
        LoadingMark {
            set: self.clone(),
            family: family.to_owned(),
        }
    }

    /// Whether `family` is loading.
    pub fn contains(&self, family: &str) -> bool {
        self.lock().contains_key(family)
    }

    /// The file of loading `family`.
    pub fn file(&self, family: &str) -> Option<PathBuf> {
        self.lock().get(family).map(|l| l.file.clone())
    }

    /// Every loading family, by name.
    pub fn names(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }
}

impl Drop for LoadingMark {
    fn drop(&mut self) {
        let mut map = self.set.lock();
        if let Some(l) = map.get_mut(&self.family) {
            l.marks = l.marks.saturating_sub(1);
            if l.marks == 0 {
                map.remove(&self.family);
            }
        }
        self.set.count.send_replace(map.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_stays_loading_until_its_last_mark_drops() {
        let set = LoadingSet::default();
        let start = set.mark("netdev", "netdev.toml".into());
        let load = set.mark("netdev", "netdev.toml".into());
        drop(start);
        assert!(set.contains("netdev"));
        drop(load);
        assert!(!set.contains("netdev"));
        assert!(set.names().is_empty());
    }
}
