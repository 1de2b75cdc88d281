//! A family's pool of plugin instances: calls run in parallel, one per
//! instance, and instances beyond the first are created only when
//! concurrent calls find every existing one busy.
//!
//! Each caller first takes a turn (a semaphore with one permit per enabled
//! instance), then an idle instance. A holder of a turn holds at most one
//! instance, so a caller with a turn always finds one free. The first
//! instance also takes notifications (`first`), in order, one batch at a
//! time, as when a plugin had one instance.
//!
//! Instances beyond the first take a slot of the engine's pooling
//! allocator from a reservation shared by all families
//! (`runtime::EXTRA_PLUGIN_INSTANCES`), at most `max_extra` per family;
//! the reservations are returned when the pool (a plugin version) is
//! dropped, e.g. after a reload.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Mutex, MutexGuard, OwnedSemaphorePermit, Semaphore, SemaphorePermit};

/// One instance place of the pool.
#[derive(Debug)]
pub struct Slot<T> {
    /// The instance, if built and not discarded after a crash.
    pub live: Option<T>,
    /// Whether an instance was ever built here: building again is a
    /// restart after a crash, building the first time is growth.
    pub built: bool,
    /// Its position in the pool (0 takes notifications).
    pub index: usize,
}

/// The pool's counts, as `plugins` and `/metrics` show them.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct PoolCounts {
    /// Most instances the family file allows (`limits.instances`).
    pub size: usize,
    /// Instances the pool may use now: the first plus the extra slots it
    /// reserved so far (at most `size`).
    pub enabled: usize,
    /// Instances built and not discarded.
    pub live: usize,
    /// Instances inside a call or notification now.
    pub busy: usize,
}

/// A family's instances.
pub struct Pool<T> {
    slots: Vec<Mutex<Slot<T>>>,
    turns: Semaphore,
    enabled: AtomicUsize,
    reserved: std::sync::Mutex<Vec<OwnedSemaphorePermit>>,
    extra: Arc<Semaphore>,
    max_extra: usize,
    busy: AtomicUsize,
    live: AtomicUsize,
}

/// An instance held for one call or one batch of notifications. Fields
/// drop in order: the place is free before its turn is returned, so the
/// next turn holder finds it.
pub struct Lease<'a, T> {
    slot: MutexGuard<'a, Slot<T>>,
    _turn: SemaphorePermit<'a>,
    pool: &'a Pool<T>,
}

impl<T> Deref for Lease<'_, T> {
    type Target = Slot<T>;
    fn deref(&self) -> &Slot<T> {
        &self.slot
    }
}

impl<T> DerefMut for Lease<'_, T> {
    fn deref_mut(&mut self) -> &mut Slot<T> {
        &mut self.slot
    }
}

impl<T> Drop for Lease<'_, T> {
    fn drop(&mut self) {
        self.pool.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T> Lease<'_, T> {
    /// Put a freshly built instance in this place.
    pub fn install(&mut self, instance: T) {
        if self.slot.live.replace(instance).is_none() {
            self.pool.live.fetch_add(1, Ordering::Relaxed);
        }
        self.slot.built = true;
    }

    /// Throw this place's instance away (it trapped or was left mid-call);
    /// the next lease of the place builds a new one.
    pub fn discard(&mut self) {
        if self.slot.live.take().is_some() {
            self.pool.live.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<T> Pool<T> {
    /// A pool of at most `size` instances, none built yet; instances after
    /// the first reserve slots from `extra`, at most `max_extra` of them.
    pub fn new(size: usize, extra: Arc<Semaphore>, max_extra: usize) -> Self {
        let size = size.max(1);
        let slots = (0..size)
            .map(|index| {
                Mutex::new(Slot {
                    live: None,
                    built: false,
                    index,
                })
            })
            .collect::<Vec<_>>();
        Self {
            slots,
            turns: Semaphore::new(1),
            enabled: AtomicUsize::new(1),
            reserved: std::sync::Mutex::new(Vec::new()),
            extra,
            max_extra,
            busy: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
        }
    }

    /// Install the first instance (built while the plugin loads).
    pub fn install_first(&mut self, instance: T) {
        let first = self.slots[0].get_mut();
        if first.live.replace(instance).is_none() {
            *self.live.get_mut() += 1;
        }
        first.built = true;
    }

    /// An idle instance for a call, waiting at most `wait` for one; `None`
    /// if every instance stayed busy that long. When all are busy and the
    /// pool may grow, it grows by one first.
    pub async fn lease(&self, wait: Duration) -> Option<Lease<'_, T>> {
        let turn = match self.turns.try_acquire() {
            Ok(t) => t,
            Err(_) => {
                self.grow();
                tokio::time::timeout(wait, self.turns.acquire())
                    .await
                    .ok()?
                    .ok()?
            }
        };
        loop {
            if let Some(slot) = self.idle() {
                return Some(self.leased(slot, turn));
            }
            // Another turn holder is between two places of its scan; the
            // turns guarantee a free place, so look again.
            tokio::task::yield_now().await;
        }
    }

    /// The first instance, for notifications: they reach it in order.
    /// `None` only if the pool's turns were closed (never, as it is used).
    pub async fn first(&self) -> Option<Lease<'_, T>> {
        // A turn first, so callers that hold turns still find a free place.
        let turn = self.turns.acquire().await.ok()?;
        let slot = self.slots[0].lock().await;
        Some(self.leased(slot, turn))
    }

    /// A lease, counted busy until it is dropped. Counted only here, once
    /// nothing can cancel its making: a lease's caller may give up while
    /// it waits (its client left), and a count taken earlier would never
    /// be given back.
    fn leased<'a>(&'a self, slot: MutexGuard<'a, Slot<T>>, turn: SemaphorePermit<'a>) -> Lease<'a, T> {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Lease {
            slot,
            _turn: turn,
            pool: self,
        }
    }

    /// An idle place among the enabled ones, a live instance preferred (a
    /// place without one would have to build it).
    fn idle(&self) -> Option<MutexGuard<'_, Slot<T>>> {
        let enabled = &self.slots[..self.enabled.load(Ordering::Acquire)];
        for s in enabled {
            if let Ok(g) = s.try_lock()
                && g.live.is_some()
            {
                return Some(g);
            }
        }
        enabled.iter().find_map(|s| s.try_lock().ok())
    }

    /// Enable one more place if the pool's size and the shared reservation
    /// allow it.
    fn grow(&self) {
        let mut reserved = self.reserved.lock().unwrap_or_else(PoisonError::into_inner);
        let enabled = self.enabled.load(Ordering::Acquire);
        if enabled >= self.slots.len() || reserved.len() >= self.max_extra {
            return;
        }
        let Ok(permit) = self.extra.clone().try_acquire_owned() else {
            return;
        };
        reserved.push(permit);
        // The place becomes visible to scans before its turn exists.
        self.enabled.store(enabled + 1, Ordering::Release);
        self.turns.add_permits(1);
    }

    /// How many instances there are and how many are busy.
    pub fn counts(&self) -> PoolCounts {
        PoolCounts {
            size: self.slots.len(),
            enabled: self.enabled.load(Ordering::Acquire),
            live: self.live.load(Ordering::Relaxed),
            busy: self.busy.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(size: usize, extra: &Arc<Semaphore>, max_extra: usize) -> Pool<u32> {
        let mut p = Pool::new(size, extra.clone(), max_extra);
        p.install_first(0);
        p
    }

    #[tokio::test]
    async fn concurrent_leases_get_distinct_instances_up_to_the_size() {
        let extra = Arc::new(Semaphore::new(8));
        let p = pool(3, &extra, 8);
        let a = p.lease(Duration::from_secs(5)).await.unwrap();
        let mut b = p.lease(Duration::from_secs(5)).await.unwrap();
        let c = p.lease(Duration::from_secs(5)).await.unwrap();
        let mut got = [a.index, b.index, c.index];
        got.sort_unstable();
        assert_eq!(got, [0, 1, 2]);
        assert!(b.live.is_none(), "a grown place starts empty");
        b.install(7);
        assert_eq!(
            p.counts(),
            PoolCounts {
                size: 3,
                enabled: 3,
                live: 2,
                busy: 3
            }
        );
        // Full: a fourth waits, and gets the place one of them frees.
        assert!(p.lease(Duration::from_millis(1)).await.is_none());
        assert_eq!(extra.available_permits(), 6);
        drop(b);
        let again = p.lease(Duration::from_secs(5)).await.unwrap();
        assert_eq!(again.live, Some(7));
        drop((a, c, again));
        assert_eq!(p.counts().busy, 0);
        drop(p);
        assert_eq!(extra.available_permits(), 8, "a dropped pool returns its slots");
    }

    #[tokio::test]
    async fn a_family_takes_at_most_its_share_of_the_extra_slots() {
        let extra = Arc::new(Semaphore::new(4));
        let greedy = pool(64, &extra, 2);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(greedy.lease(Duration::from_millis(1)).await);
        }
        assert_eq!(held.iter().filter(|l| l.is_some()).count(), 3);
        assert!(greedy.lease(Duration::from_millis(1)).await.is_none());
        assert_eq!(extra.available_permits(), 2, "two left for the others");
        let other = pool(4, &extra, 2);
        let _o1 = other.lease(Duration::from_millis(1)).await.unwrap();
        let _o2 = other.lease(Duration::from_millis(1)).await.unwrap();
        assert_eq!(extra.available_permits(), 1);
    }

    #[tokio::test]
    async fn notifications_wait_for_the_first_instance() {
        let extra = Arc::new(Semaphore::new(4));
        let p = pool(2, &extra, 4);
        let call = p.lease(Duration::from_secs(1)).await.unwrap();
        assert_eq!(call.index, 0);
        let first = p.first();
        tokio::pin!(first);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), &mut first)
                .await
                .is_err()
        );
        drop(call);
        assert_eq!(first.await.map(|l| l.index), Some(0));
    }
}
