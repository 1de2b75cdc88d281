//! A family's listener socket: joins the family's multicast groups, takes
//! its unicast notifications, and feeds them in kernel order to the plugin
//! through a bounded queue. Rebuilt when the family re-registers (its group
//! ids change) and closed when it goes away.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use genl_wire::FamilyInfo;
use tokio::sync::mpsc;

use crate::netlink::{ListenerStats, Notification, NotificationSink, Requester, SocketOptions};
use crate::plugin::{Delivery, LoadedPlugin};

/// How many queued notifications one dispatch hands the plugin at once.
const BATCH: usize = 64;

/// One family's listener.
pub struct Listener {
    family: Arc<str>,
    groups: Vec<String>,
    opts: SocketOptions,
    socket: RwLock<Option<Arc<Requester>>>,
    joined: RwLock<HashMap<u32, Arc<str>>>,
    /// Its counters.
    pub stats: Arc<ListenerStats>,
}

impl Listener {
    /// A listener for `family` joining `groups`; returns the receiving end
    /// of its queue of `queue` entries.
    pub fn new(
        family: Arc<str>,
        groups: Vec<String>,
        mut opts: SocketOptions,
        queue: usize,
    ) -> (Arc<Self>, mpsc::Receiver<Notification>) {
        let (tx, rx) = mpsc::channel(queue);
        let stats = Arc::new(ListenerStats::default());
        opts.sink = Some(NotificationSink {
            queue: tx,
            stats: stats.clone(),
            lost: Arc::new(AtomicBool::new(false)),
        });
        let listener = Arc::new(Self {
            family,
            groups,
            opts,
            socket: RwLock::default(),
            joined: RwLock::default(),
            stats,
        });
        (listener, rx)
    }

    /// Open a fresh socket for the family as `info` describes it and join
    /// its configured groups. A rebuild (not the first open) tells the
    /// plugin that notifications may have been lost in between.
    pub fn rebuild(&self, info: &FamilyInfo) -> std::io::Result<()> {
        let socket = Requester::open(self.opts.clone())?;
        let mut joined = HashMap::new();
        for name in &self.groups {
            match info.group_id(name) {
                Some(id) => {
                    socket.join_group(id)?;
                    joined.insert(id, Arc::<str>::from(name.as_str()));
                }
                None => tracing::warn!(
                    family = %self.family,
                    group = %name,
                    "the family has no multicast group of this name (see GET /v1/families/{})",
                    self.family
                ),
            }
        }
        tracing::info!(family = %self.family, groups = ?joined.values().collect::<Vec<_>>(), portid = socket.portid(), "listening");
        *self.joined.write().unwrap_or_else(PoisonError::into_inner) = joined;
        let previous = self
            .socket
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(socket);
        if let (Some(_), Some(sink)) = (previous, &self.opts.sink) {
            sink.lost.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Close the socket (the family went away).
    pub fn clear(&self) {
        self.socket.write().unwrap_or_else(PoisonError::into_inner).take();
        self.joined
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The current socket, if the family is present.
    pub fn socket(&self) -> Option<Arc<Requester>> {
        self.socket.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Notifications waiting in the plugin's queue.
    pub fn queue_depth(&self) -> usize {
        self.opts
            .sink
            .as_ref()
            .map_or(0, |s| s.queue.max_capacity() - s.queue.capacity())
    }

    /// The groups joined now, by name.
    pub fn joined(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .joined
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|n| n.to_string())
            .collect();
        names.sort();
        names
    }

    fn group_name(&self, id: u32) -> Arc<str> {
        if id == 0 {
            return Arc::from("");
        }
        self.joined
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
            .unwrap_or_else(|| Arc::from(id.to_string()))
    }
}

/// Deliver `listener`'s notifications to `plugin` until the gateway stops.
pub async fn dispatch(
    listener: Arc<Listener>,
    mut rx: mpsc::Receiver<Notification>,
    plugin: Arc<LoadedPlugin>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let items = batch.drain(..).map(|n| match n {
            Notification::Message(message) => Delivery::Message {
                group: listener.group_name(message.group),
                message,
            },
            Notification::Lost => Delivery::Lost,
        });
        plugin.notify(items.collect()).await;
    }
}
