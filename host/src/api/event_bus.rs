//! Per-family fan-out of plugin events to SSE subscribers.
//!
//! One task takes every published event off the gateway's intake channel
//! and hands it, with `try_send`, to the queue of each subscriber of that
//! event's family. Each queue is bounded in events and in bytes; a
//! subscriber whose queue is full is cut off at once (counted and logged),
//! so a reader that stopped reading never holds memory or the publisher,
//! and a busy family never touches a quiet family's subscribers.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, broadcast, mpsc};

use super::log_every::LogEvery;
use crate::gateway::Gateway;
use crate::plugin::Event;

/// How long a cut-off subscriber may take to read its final `lagged`
/// event before its connection is closed under it.
const LAGGED_GRACE: Duration = Duration::from_secs(30);

/// Closes the HTTP connection a request came on (set per connection by the
/// accept loop): the only way to end a response whose client stopped
/// reading, since its body is then never polled.
#[derive(Clone, Default)]
pub struct ConnClose(pub Arc<Notify>);

/// What one subscriber's queue may hold.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// Events.
    pub events: usize,
    /// Bytes of topic and payload.
    pub bytes: usize,
}

/// State shared by a subscriber's queue (publisher side) and its stream.
struct Shared {
    queued_bytes: AtomicUsize,
    lagged: AtomicBool,
    finished: AtomicBool,
    /// Wakes the stream when it is cut off while waiting.
    wake: Notify,
    close: Option<ConnClose>,
}

struct Entry {
    id: u64,
    topics: Option<HashSet<String>>,
    tx: mpsc::Sender<Arc<Event>>,
    shared: Arc<Shared>,
}

/// The fan-out.
pub struct EventBus {
    families: Mutex<HashMap<Arc<str>, Vec<Entry>>>,
    next_id: AtomicU64,
    limits: QueueLimits,
    /// Events dropped because SSE cannot carry their topic.
    pub bad_topics: AtomicU64,
    bad_topic_log: LogEvery,
}

/// Whether SSE can carry `topic` as an event name: no CR, LF or other
/// control characters (axum's encoder asserts on CR and LF).
pub fn sse_safe_topic(topic: &str) -> bool {
    !topic.is_empty() && !topic.chars().any(char::is_control)
}

impl EventBus {
    /// Start fanning out `gateway`'s events.
    pub fn start(gateway: Arc<Gateway>, limits: QueueLimits) -> Arc<Self> {
        let bus = Arc::new(Self {
            families: Mutex::default(),
            next_id: AtomicU64::new(0),
            limits,
            bad_topics: AtomicU64::new(0),
            bad_topic_log: LogEvery::default(),
        });
        let mut intake = gateway.events.subscribe();
        let weak = Arc::downgrade(&bus);
        tokio::spawn(async move {
            loop {
                let ev = match intake.recv().await {
                    Ok(ev) => ev,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        // The fan-out itself fell behind: which families
                        // lost what is unknown, so every subscriber is told.
                        let Some(bus) = weak.upgrade() else { return };
                        bus.cut_off_all(&gateway, n);
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                let Some(bus) = weak.upgrade() else { return };
                bus.publish(&gateway, ev);
            }
        });
        bus
    }

    fn families(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Vec<Entry>>> {
        self.families.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hand `ev` to each subscriber of its family that wants its topic.
    fn publish(&self, gw: &Gateway, ev: Event) {
        if !sse_safe_topic(&ev.topic) {
            self.bad_topics.fetch_add(1, Relaxed);
            self.bad_topic_log.emit(|| {
                tracing::warn!(
                    family = %ev.family,
                    topic = ?ev.topic,
                    "dropped an event whose topic SSE cannot carry (empty, CR, LF or control characters); the plugin should use plain topic names"
                );
            });
            return;
        }
        let size = ev.topic.len() + ev.payload.len();
        let ev = Arc::new(ev);
        let mut families = self.families();
        let Some(subs) = families.get_mut(&*ev.family) else {
            return;
        };
        subs.retain(|s| {
            if s.topics.as_ref().is_some_and(|t| !t.contains(&ev.topic)) {
                return true;
            }
            let before = s.shared.queued_bytes.fetch_add(size, Relaxed);
            if before + size > self.limits.bytes || s.tx.try_send(ev.clone()).is_err() {
                s.shared.queued_bytes.fetch_sub(size, Relaxed);
                cut_off(gw, &ev.family, &s.shared);
                return false;
            }
            true
        });
    }

    fn cut_off_all(&self, gw: &Gateway, missed: u64) {
        tracing::warn!(
            missed,
            "the event fan-out fell behind; every subscriber is cut off"
        );
        for (family, subs) in self.families().drain() {
            for s in subs {
                cut_off(gw, &family, &s.shared);
            }
        }
    }

    /// Subscribe to `family`'s events (all topics, or `topics`).
    pub fn subscribe(
        self: &Arc<Self>,
        family: &str,
        topics: Option<HashSet<String>>,
        close: Option<ConnClose>,
    ) -> Subscription {
        let (tx, rx) = mpsc::channel(self.limits.events.max(1));
        let shared = Arc::new(Shared {
            queued_bytes: AtomicUsize::new(0),
            lagged: AtomicBool::new(false),
            finished: AtomicBool::new(false),
            wake: Notify::new(),
            close,
        });
        let id = self.next_id.fetch_add(1, Relaxed);
        let family: Arc<str> = family.into();
        self.families().entry(family.clone()).or_default().push(Entry {
            id,
            topics,
            tx,
            shared: shared.clone(),
        });
        Subscription {
            bus: self.clone(),
            family,
            id,
            rx,
            shared,
        }
    }

    /// Subscribers of `family` now.
    pub fn subscribers(&self, family: &str) -> usize {
        self.families().get(family).map_or(0, Vec::len)
    }

    /// Subscribers of every family now.
    pub fn total(&self) -> usize {
        self.families().values().map(Vec::len).sum()
    }
}

/// Mark a subscriber lagged, wake its stream to send the final `lagged`
/// event, and close its connection if it does not read that in time.
fn cut_off(gw: &Gateway, family: &str, shared: &Arc<Shared>) {
    shared.lagged.store(true, Relaxed);
    shared.wake.notify_one();
    gw.note_subscriber_cut_off(family, 0);
    if let Some(close) = shared.close.clone() {
        let shared = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(LAGGED_GRACE).await;
            if !shared.finished.load(Relaxed) {
                close.0.notify_one();
            }
        });
    }
}

/// One subscriber's end: events of its family, or the news it was cut off.
pub struct Subscription {
    bus: Arc<EventBus>,
    family: Arc<str>,
    id: u64,
    rx: mpsc::Receiver<Arc<Event>>,
    shared: Arc<Shared>,
}

/// What a subscriber receives next.
pub enum Received {
    /// An event.
    Event(Arc<Event>),
    /// It fell behind and is cut off; nothing follows.
    Lagged,
}

impl Subscription {
    /// The next event, `Lagged` once cut off, `None` when the bus is gone.
    pub async fn next(&mut self) -> Option<Received> {
        if self.shared.lagged.load(Relaxed) {
            return Some(Received::Lagged);
        }
        tokio::select! {
            ev = self.rx.recv() => {
                let ev = ev?;
                self.shared.queued_bytes.fetch_sub(ev.topic.len() + ev.payload.len(), Relaxed);
                if self.shared.lagged.load(Relaxed) {
                    return Some(Received::Lagged);
                }
                Some(Received::Event(ev))
            }
            _ = self.shared.wake.notified() => Some(Received::Lagged),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.shared.finished.store(true, Relaxed);
        let mut families = self.bus.families();
        if let Some(subs) = families.get_mut(&self.family) {
            subs.retain(|s| s.id != self.id);
            if subs.is_empty() {
                families.remove(&self.family);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sse_safe_topic;

    #[test]
    fn topics_sse_cannot_carry_are_caught() {
        assert!(sse_safe_topic("dev"));
        assert!(sse_safe_topic("page-pool.add"));
        for bad in ["", "a\nb", "a\rb", "a\0b", "a\u{1b}b"] {
            assert!(!sse_safe_topic(bad), "{bad:?}");
        }
    }
}
