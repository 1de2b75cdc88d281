//! A family's listener socket: a reader task takes everything the kernel
//! sends it. Messages that answer no request (multicast and unicast
//! notifications) go to a [`NotificationSink`]; replies to the few
//! requests made on it (registrations for unicast notifications, which the
//! kernel ties to the sending socket) are routed by sequence number.
//!
//! The kernel runs at most one dump per socket, so dumps on this socket
//! take turns; `do` requests interleave freely with them.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use genl_wire::consts::NLM_F_DUMP_INTR;
use genl_wire::{Messages, WireError};
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::requester::{Notification, NotificationSink, OwnedMessage, RequestBounds, RequestError};
use super::socket::NlSocket;

/// Receive buffer for one datagram.
const RECV_BUF: usize = 256 << 10;

struct Pending {
    parts: Vec<OwnedMessage>,
    /// Payload bytes collected so far, and the most allowed.
    bytes: usize,
    max_bytes: usize,
    interrupted: bool,
    done: oneshot::Sender<Result<(Vec<OwnedMessage>, bool), RequestError>>,
}

type PendingMap = Mutex<HashMap<u32, Pending>>;

/// What the reader task and the requesting tasks share.
struct Shared {
    sock: AsyncFd<NlSocket>,
    pending: PendingMap,
    sink: NotificationSink,
    /// The receive buffer, and the right to receive: one receiver at a time,
    /// routing what it read before the next reads, so a request's reply is
    /// always routed before the ACK or DONE that follows it.
    recv: Mutex<Vec<u8>>,
}

/// A listener socket with its reader task.
pub(super) struct ListenerSocket {
    shared: Arc<Shared>,
    pub(super) dump_turn: tokio::sync::Mutex<()>,
    reader: AbortHandle,
}

impl Drop for ListenerSocket {
    fn drop(&mut self) {
        // The reader holds the socket; stopping it closes the socket.
        self.reader.abort();
    }
}

impl ListenerSocket {
    /// Start the reader task for `sock` on the current runtime.
    pub(super) fn start(sock: NlSocket, sink: NotificationSink) -> std::io::Result<Self> {
        sock.enable_pktinfo()?;
        let shared = Arc::new(Shared {
            sock: sock.into_async()?,
            pending: PendingMap::default(),
            sink,
            recv: Mutex::new(vec![0; RECV_BUF]),
        });
        let reader = tokio::spawn(read_loop(shared.clone())).abort_handle();
        Ok(Self {
            shared,
            dump_turn: tokio::sync::Mutex::new(()),
            reader,
        })
    }

    pub(super) fn socket(&self) -> &NlSocket {
        self.shared.sock.get_ref()
    }

    /// Send `request` (sequence number `seq`) and wait for its answer.
    pub(super) async fn exchange(
        &self,
        seq: u32,
        request: &[u8],
        deadline: Instant,
        bounds: RequestBounds,
    ) -> Result<(Vec<OwnedMessage>, bool), RequestError> {
        let (tx, rx) = oneshot::channel();
        let pending = &self.shared.pending;
        lock(pending).insert(
            seq,
            Pending {
                parts: Vec::new(),
                bytes: 0,
                max_bytes: bounds.reply_bytes,
                interrupted: false,
                done: tx,
            },
        );
        if let Err(e) = self.shared.sock.get_ref().send(request) {
            lock(pending).remove(&seq);
            return Err(RequestError::Io(format!("send: {e}")));
        }
        self.receive_now(seq);
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RequestError::Io("the netlink reader stopped".into())),
            Err(_) => {
                lock(pending).remove(&seq);
                Err(RequestError::Timeout(bounds.wait))
            }
        }
    }

    /// The reply is usually in the socket already (generic netlink answers
    /// inside sendmsg): receive it on this thread until request `seq`
    /// completes or the socket is empty. Whatever else arrives is routed
    /// exactly as the reader would route it.
    fn receive_now(&self, seq: u32) {
        // Someone else is receiving; they will route this reply.
        let Ok(mut buf) = self.shared.recv.try_lock() else {
            return;
        };
        while lock(&self.shared.pending).contains_key(&seq) {
            if self.shared.recv_and_route(&mut buf).is_err() {
                break;
            }
        }
    }
}

impl Shared {
    /// Receive one datagram and route it. `Err` only for WouldBlock (the
    /// socket is empty); other errors are handled here.
    fn recv_and_route(&self, buf: &mut [u8]) -> std::io::Result<()> {
        match self.sock.get_ref().recv_with_group(buf) {
            Ok((n, group)) => route(&buf[..n], group, &self.pending, &self.sink),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Err(e),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                // The kernel dropped messages for this socket. Replies may be
                // among them, so waiting requests can never complete: fail
                // them. The receiver is told to resynchronise.
                let n = self.sink.stats.overruns.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(
                    overruns = n,
                    "notification socket overran (ENOBUFS); notifications were lost"
                );
                self.sink.lost.store(true, Ordering::Relaxed);
                fail_all(
                    &self.pending,
                    "the socket overran and replies were lost; try again",
                );
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // Spurious, nothing lost (see the request pool's reader).
                tracing::debug!("netlink socket: spurious EINVAL from a finished dump; ignored");
            }
            Err(e) => {
                tracing::warn!("netlink socket: {e}");
                fail_all(&self.pending, &format!("receive: {e}"));
            }
        }
        Ok(())
    }
}

fn lock(m: &PendingMap) -> std::sync::MutexGuard<'_, HashMap<u32, Pending>> {
    // The map holds no invariant a panicking holder could break halfway.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn read_loop(shared: Arc<Shared>) {
    loop {
        let mut guard = match shared.sock.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("netlink socket failed: {e}; requests will fail");
                fail_all(&shared.pending, &format!("socket: {e}"));
                return;
            }
        };
        // WouldBlock (the fast path may have emptied the socket) clears the
        // readiness and waits for the next datagram. The lock is held by a
        // fast-path receiver at most for the rest of one dump (no awaits).
        let _ = guard.try_io(|_| {
            let mut buf = shared.recv.lock().unwrap_or_else(PoisonError::into_inner);
            shared.recv_and_route(&mut buf)
        });
    }
}

fn route(datagram: &[u8], group: u32, pending: &PendingMap, sink: &NotificationSink) {
    let mut map = lock(pending);
    for msg in Messages::new(datagram) {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!("dropping malformed netlink datagram: {e}");
                return;
            }
        };
        let seq = msg.header.seq;
        // Notifications answer no request: multicast always, and unicast
        // ones carry seq 0 or a seq nobody waits for.
        let waiting = if group == 0 { map.get_mut(&seq) } else { None };
        let Some(p) = waiting else {
            sink.stats.received.fetch_add(1, Ordering::Relaxed);
            sink.deliver(Notification::Message(OwnedMessage {
                header: msg.header,
                group,
                payload: msg.payload.to_vec(),
            }));
            continue;
        };
        if msg.header.flags & NLM_F_DUMP_INTR != 0 {
            p.interrupted = true;
        }
        let outcome = match msg.completion() {
            Ok(None) if p.bytes.saturating_add(msg.payload.len()) > p.max_bytes => {
                // Stop collecting; the rest of a dump is still read (and
                // delivered as unmatched) so the socket stays usable.
                Err(RequestError::ReplyTooLarge(p.max_bytes))
            }
            Ok(None) => {
                p.bytes += msg.payload.len();
                p.parts.push(OwnedMessage {
                    header: msg.header,
                    group,
                    payload: msg.payload.to_vec(),
                });
                continue;
            }
            Ok(Some(Ok(()))) => Ok(()),
            Ok(Some(Err(e))) => Err(RequestError::Kernel(e)),
            Err(e) => Err(wire_error(e)),
        };
        if let Some(p) = map.remove(&seq) {
            let _ = p.done.send(outcome.map(|()| (p.parts, p.interrupted)));
        }
    }
}

fn wire_error(e: WireError) -> RequestError {
    RequestError::Io(format!("malformed reply: {e}"))
}

fn fail_all(pending: &PendingMap, why: &str) {
    for (_, p) in lock(pending).drain() {
        let _ = p.done.send(Err(RequestError::Io(why.to_owned())));
    }
}
