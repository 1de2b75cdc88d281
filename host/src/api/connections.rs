//! Who holds the API's connections: a cap per local user (by the client's
//! uid, on the Unix socket and on loopback TCP), so that one user cannot
//! hold every slot of a listener, and the counters `/metrics` shows for connections the
//! server refused or closed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

/// One of the API's listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// The Unix socket (`[api] socket`).
    Unix,
    /// Loopback TCP (`[api] tcp`).
    Tcp,
}

impl ListenerKind {
    /// Every listener, in the order `/metrics` lists them.
    pub const ALL: [ListenerKind; 2] = [Self::Unix, Self::Tcp];

    /// The name logs and `/metrics` use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unix => "unix",
            Self::Tcp => "tcp",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Unix => 0,
            Self::Tcp => 1,
        }
    }
}

/// Connections the server refused or closed, per listener.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    refused: [AtomicU64; 2],
    closed_not_reading: [AtomicU64; 2],
}

impl ConnectionStats {
    /// Connections refused because their user held its share or only
    /// root's reserve was left (answered 429, or closed unanswered past the
    /// refusal bound).
    pub fn refused(&self, listener: ListenerKind) -> u64 {
        self.refused[listener.index()].load(Relaxed)
    }

    /// Connections closed because a write to them waited out
    /// `[api] write_timeout_ms`.
    pub fn closed_not_reading(&self, listener: ListenerKind) -> u64 {
        self.closed_not_reading[listener.index()].load(Relaxed)
    }

    pub(super) fn note_refused(&self, listener: ListenerKind) {
        self.refused[listener.index()].fetch_add(1, Relaxed);
    }

    pub(super) fn note_closed_not_reading(&self, listener: ListenerKind) {
        self.closed_not_reading[listener.index()].fetch_add(1, Relaxed);
    }
}

/// The local user at the other end of an accepted connection, where the
/// transport can tell.
pub trait PeerUser {
    /// The peer's uid, if known.
    fn peer_uid(&self) -> Option<u32>;
}

impl PeerUser for tokio::net::UnixStream {
    fn peer_uid(&self) -> Option<u32> {
        // SO_PEERCRED: the credentials the client had when it connected.
        self.peer_cred().ok().map(|c| c.uid())
    }
}

impl PeerUser for tokio::net::TcpStream {
    /// The TCP listener is on loopback, so its client's socket is this
    /// machine's and the kernel's socket diagnostics name its owner.
    fn peer_uid(&self) -> Option<u32> {
        let (local, peer) = (self.local_addr().ok()?, self.peer_addr().ok()?);
        crate::netlink::tcp_peer_uid(local, peer)
            .inspect_err(|e| tracing::debug!(%peer, "no owner found for an API client's socket: {e}"))
            .ok()
    }
}

/// The user every peer whose uid is unknown counts as (`(uid_t)-1`, which
/// no process has).
pub(super) const UNKNOWN_USER: u32 = u32::MAX;

/// The connections each user holds on one listener, within a cap.
#[derive(Debug)]
pub(super) struct UserSlots {
    cap: usize,
    /// Only users holding at least one connection have an entry, so the
    /// map is bounded by the listener's own connection cap.
    held: Mutex<HashMap<u32, usize>>,
}

/// A user over its share, refused.
#[derive(Debug, Clone, Copy)]
pub(super) struct OverCap {
    pub uid: u32,
    pub cap: usize,
}

/// One connection counted against its user; given back when dropped.
#[derive(Debug)]
pub(super) struct UserSlot {
    slots: Arc<UserSlots>,
    uid: u32,
}

impl UserSlots {
    pub(super) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            cap,
            held: Mutex::default(),
        })
    }

    /// Count a connection of `uid` if its user holds fewer than the cap.
    /// Root is not counted (it can stop the gateway anyway, so capping it
    /// protects nothing). Peers whose user is unknown share one share
    /// ([`UNKNOWN_USER`]): a client that hides its owner gains nothing.
    pub(super) fn take(self: &Arc<Self>, uid: Option<u32>) -> Result<Option<UserSlot>, OverCap> {
        let uid = uid.unwrap_or(UNKNOWN_USER);
        if uid == 0 {
            return Ok(None);
        }
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(uid).or_insert(0);
        if *count >= self.cap {
            return Err(OverCap { uid, cap: self.cap });
        }
        *count += 1;
        Ok(Some(UserSlot {
            slots: self.clone(),
            uid,
        }))
    }

    #[cfg(test)]
    fn held(&self, uid: u32) -> Option<usize> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&uid)
            .copied()
    }
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.uid) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.uid);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_holds_at_most_its_cap_and_gets_a_slot_back_when_one_closes() {
        let slots = UserSlots::new(2);
        let a = slots.take(Some(1000)).unwrap();
        let b = slots.take(Some(1000)).unwrap();
        let over = slots.take(Some(1000)).unwrap_err();
        assert_eq!((over.uid, over.cap), (1000, 2));
        // Another user has its own share.
        let other = slots.take(Some(1001)).unwrap();
        assert!(other.is_some());
        drop(a);
        assert_eq!(slots.held(1000), Some(1));
        let again = slots.take(Some(1000)).unwrap();
        assert!(again.is_some());
        drop((b, again, other));
        // No entry is left for users holding nothing.
        assert_eq!((slots.held(1000), slots.held(1001)), (None, None));
    }

    #[test]
    fn root_is_not_counted_and_unknown_peers_share_one_share() {
        let slots = UserSlots::new(1);
        let held: Vec<_> = (0..5).map(|_| slots.take(Some(0)).unwrap()).collect();
        assert!(held.iter().all(Option::is_none));
        assert_eq!(slots.held(0), None);
        let unknown = slots.take(None).unwrap();
        assert!(unknown.is_some());
        assert_eq!(slots.take(None).unwrap_err().uid, UNKNOWN_USER);
    }
}
