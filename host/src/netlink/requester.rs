//! One request socket shared by every plugin: requests go out tagged with a
//! sequence number, a reader task routes each reply to the request it
//! answers, and a request completes at its ACK, error or NLMSG_DONE.
//!
//! The kernel runs at most one dump per socket at a time (a second one gets
//! EBUSY), so dumps take turns on a lock while `do` requests interleave
//! freely with them.
//!
//! The same type serves a family's listener socket: there, messages that
//! answer no request (multicast and unicast notifications) go to a
//! [`NotificationSink`] instead of being dropped.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use genl_wire::consts::{
    NETLINK_CAP_ACK, NETLINK_EXT_ACK, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, SOL_NETLINK,
};
use genl_wire::message::genl_request;
use genl_wire::{GenlHeader, KernelError, Messages, NlHeader, WireError};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::dump_stream::DumpStream;
use super::socket::NlSocket;

/// Receive buffer for one datagram. Dump parts are at most 32 KiB on
/// current kernels; the margin costs nothing.
const RECV_BUF: usize = 256 << 10;

/// How many times a dump interrupted by a concurrent change is retried.
const DUMP_INTR_RETRIES: usize = 3;

/// A message copied out of the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedMessage {
    /// Its netlink header.
    pub header: NlHeader,
    /// The multicast group it was sent to; 0 for unicast.
    pub group: u32,
    /// Everything after the netlink header.
    pub payload: Vec<u8>,
}

/// What a listener socket delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notification {
    /// A notification from the kernel, in the order the kernel sent it.
    Message(OwnedMessage),
    /// Notifications were lost before this point: the socket overran
    /// (ENOBUFS) or the plugin's queue was full. The receiver should
    /// resynchronise, e.g. with a dump.
    Lost,
}

/// Counters of one listener socket.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Notifications received from the kernel.
    pub received: AtomicU64,
    /// Notifications dropped because the plugin's queue was full.
    pub dropped: AtomicU64,
    /// Times the kernel reported an overrun (ENOBUFS).
    pub overruns: AtomicU64,
}

/// Where a listener socket's notifications go.
#[derive(Clone)]
pub struct NotificationSink {
    /// The plugin's bounded queue.
    pub queue: mpsc::Sender<Notification>,
    /// The family's counters.
    pub stats: Arc<ListenerStats>,
    /// Set when something was lost and the receiver has not been told yet.
    pub lost: Arc<AtomicBool>,
}

impl NotificationSink {
    fn deliver(&self, n: Notification) {
        if self.lost.load(Ordering::Relaxed) {
            if self.queue.try_send(Notification::Lost).is_err() {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.lost.store(false, Ordering::Relaxed);
        }
        if self.queue.try_send(n).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            self.lost.store(true, Ordering::Relaxed);
        }
    }
}

/// How to open a [`Requester`].
#[derive(Clone, Default)]
pub struct SocketOptions {
    /// The network namespace to open the socket in.
    pub netns: Option<Arc<File>>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// SO_RCVBUF(FORCE) size.
    pub receive_buffer: usize,
    /// For a listener socket: where notifications go.
    pub sink: Option<NotificationSink>,
}

/// What one request made on a plugin's behalf may cost: how long it may
/// wait (for the dump turn and for the kernel together) and how many bytes
/// of replies the host collects for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestBounds {
    /// Longest wait, dump turn included.
    pub wait: Duration,
    /// Most reply bytes (netlink payloads) collected.
    pub reply_bytes: usize,
}

/// Why a request did not produce an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    /// The kernel answered with an error.
    #[error("{0}")]
    Kernel(KernelError),
    /// No answer within the timeout.
    #[error("the kernel did not answer within {0:?}")]
    Timeout(Duration),
    /// The dump kept being interrupted by concurrent changes.
    #[error("the dump was interrupted by concurrent changes {0} times in a row; try again")]
    DumpInterrupted(usize),
    /// Socket failure or an undecodable reply.
    #[error("netlink I/O: {0}")]
    Io(String),
    /// A `do` carried flags that would make the kernel run it as a dump.
    #[error(
        "flags {0:#x} include NLM_F_DUMP (REPLACE|EXCL together), which generic netlink runs as a dump; use a dump request"
    )]
    DumpFlagsOnDo(u16),
    /// The replies were larger than the request's bound.
    #[error("the kernel's reply exceeded the {0}-byte limit for one request")]
    ReplyTooLarge(usize),
}

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
    sock: Arc<AsyncFd<NlSocket>>,
    pending: PendingMap,
    sink: Option<NotificationSink>,
    /// The receive buffer, and the right to receive: one receiver at a time,
    /// routing what it read before the next reads, so a request's reply is
    /// always routed before the ACK or DONE that follows it.
    recv: Mutex<Vec<u8>>,
}

/// A netlink socket with its reader task: requests with replies routed by
/// sequence number, and, for a listener, notifications to a sink.
pub struct Requester {
    shared: Arc<Shared>,
    next_seq: AtomicU32,
    dump_turn: tokio::sync::Mutex<()>,
    timeout: Duration,
    reader: AbortHandle,
    /// The namespace the socket was opened in, for dump sockets.
    netns: Option<Arc<File>>,
}

impl Drop for Requester {
    fn drop(&mut self) {
        // The reader holds the socket; stopping it closes the socket.
        self.reader.abort();
    }
}

impl Requester {
    /// Open the socket and start its reader task on the current runtime.
    pub fn open(opts: SocketOptions) -> std::io::Result<Arc<Self>> {
        let netns = opts.netns.clone();
        let sock = NlSocket::open_in(opts.netns.as_deref())?;
        sock.set_option(SOL_NETLINK, NETLINK_EXT_ACK, 1)?;
        // Errors need not echo the whole request back; ext-ack gives the
        // offset of the offending attribute instead.
        sock.set_option(SOL_NETLINK, NETLINK_CAP_ACK, 1)?;
        sock.enable_pktinfo()?;
        sock.set_receive_buffer(opts.receive_buffer)?;
        // SAFETY: NlSocket owns its fd (an OwnedFd) and never replaces it, so
        // the fd stays open and the same for the AsyncFd's whole life.
        let sock = unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let shared = Arc::new(Shared {
            sock: Arc::new(sock),
            pending: PendingMap::default(),
            sink: opts.sink,
            recv: Mutex::new(vec![0; RECV_BUF]),
        });
        let reader = tokio::spawn(read_loop(shared.clone())).abort_handle();
        // Start sequence numbers away from 0 so stray replies to a previous
        // process using the same port are unlikely to match.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        Ok(Arc::new(Self {
            shared,
            next_seq: AtomicU32::new(seed | 1),
            dump_turn: tokio::sync::Mutex::new(()),
            timeout: opts.timeout,
            reader,
            netns,
        }))
    }

    /// The socket's port id (where the kernel sends unicast notifications).
    pub fn portid(&self) -> u32 {
        self.shared.sock.get_ref().portid()
    }

    /// Join multicast group `id`.
    pub fn join_group(&self, id: u32) -> std::io::Result<()> {
        self.shared.sock.get_ref().join_group(id)
    }

    /// The bounds requests get when the caller names none: the socket's
    /// timeout, replies of any size.
    pub fn default_bounds(&self) -> RequestBounds {
        RequestBounds {
            wait: self.timeout,
            reply_bytes: usize::MAX,
        }
    }

    /// A `do` request; returns the reply messages before the ACK.
    pub async fn do_request(
        &self,
        family: u16,
        genl: GenlHeader,
        extra_flags: u16,
        payload: &[u8],
    ) -> Result<Vec<OwnedMessage>, RequestError> {
        self.do_request_bounded(family, genl, extra_flags, payload, self.default_bounds())
            .await
    }

    /// A `do` request within `bounds`. Flags that would make it a dump are
    /// refused before anything is sent.
    pub async fn do_request_bounded(
        &self,
        family: u16,
        genl: GenlHeader,
        extra_flags: u16,
        payload: &[u8],
        bounds: RequestBounds,
    ) -> Result<Vec<OwnedMessage>, RequestError> {
        if extra_flags & NLM_F_DUMP == NLM_F_DUMP {
            return Err(RequestError::DumpFlagsOnDo(extra_flags));
        }
        let flags = NLM_F_REQUEST | NLM_F_ACK | extra_flags;
        let deadline = tokio::time::Instant::now() + bounds.wait;
        self.exchange(family, genl, flags, payload, deadline, bounds)
            .await
            .map(|(m, _)| m)
    }

    /// A dump; returns every message up to NLMSG_DONE. A dump the kernel
    /// flags as interrupted (NLM_F_DUMP_INTR) is retried a few times.
    pub async fn dump(
        &self,
        family: u16,
        genl: GenlHeader,
        payload: &[u8],
    ) -> Result<Vec<OwnedMessage>, RequestError> {
        self.dump_bounded(family, genl, payload, self.default_bounds())
            .await
    }

    /// A dump within `bounds`: the wait for the dump turn counts against
    /// the same deadline as the kernel's answer.
    pub async fn dump_bounded(
        &self,
        family: u16,
        genl: GenlHeader,
        payload: &[u8],
        bounds: RequestBounds,
    ) -> Result<Vec<OwnedMessage>, RequestError> {
        let deadline = tokio::time::Instant::now() + bounds.wait;
        let _turn = tokio::time::timeout_at(deadline, self.dump_turn.lock())
            .await
            .map_err(|_| RequestError::Timeout(bounds.wait))?;
        for _ in 0..DUMP_INTR_RETRIES {
            let (msgs, interrupted) = self
                .exchange(
                    family,
                    genl,
                    NLM_F_REQUEST | NLM_F_DUMP,
                    payload,
                    deadline,
                    bounds,
                )
                .await?;
            if !interrupted {
                return Ok(msgs);
            }
            tracing::debug!(
                family,
                cmd = genl.cmd,
                "dump interrupted by a concurrent change; retrying"
            );
        }
        Err(RequestError::DumpInterrupted(DUMP_INTR_RETRIES))
    }

    /// A dump read part by part on a socket of its own in this socket's
    /// namespace (see [`DumpStream`]): no dump turn, and the kernel holds
    /// the rest of the dump until the caller reads it.
    pub fn dump_stream(
        &self,
        family: u16,
        genl: GenlHeader,
        payload: &[u8],
    ) -> Result<DumpStream, RequestError> {
        DumpStream::start(self.netns.as_deref(), family, genl, payload)
    }

    async fn exchange(
        &self,
        family: u16,
        genl: GenlHeader,
        flags: u16,
        payload: &[u8],
        deadline: tokio::time::Instant,
        bounds: RequestBounds,
    ) -> Result<(Vec<OwnedMessage>, bool), RequestError> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let request = genl_request(family, flags, seq, genl, payload);
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
        if let Err(e) = self.shared.sock.get_ref().send(&request) {
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

    /// The fast path. Generic netlink answers a `do` inside sendmsg, and
    /// produces each further dump part while the previous one is read, so
    /// the reply is usually in the socket already: receive it on this
    /// thread until request `seq` completes or the socket is empty, instead
    /// of waiting for the reader task to be woken and to wake us. Whatever
    /// else arrives is routed exactly as the reader would route it.
    fn receive_now(&self, seq: u32) {
        // Someone else is receiving (the reader, or another request on the
        // fast path); they will route this reply.
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
        match self.sock.get_ref().recv(buf) {
            Ok((n, group)) => route(&buf[..n], group, &self.pending, self.sink.as_ref()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Err(e),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                // The kernel dropped messages for this socket. Replies may be
                // among them, so waiting requests can never complete: fail
                // them. A listener's receiver is told to resynchronise.
                match &self.sink {
                    Some(sink) => {
                        let n = sink.stats.overruns.fetch_add(1, Ordering::Relaxed) + 1;
                        tracing::warn!(
                            overruns = n,
                            "notification socket overran (ENOBUFS); notifications were lost"
                        );
                        sink.lost.store(true, Ordering::Relaxed);
                    }
                    None => tracing::warn!("netlink request socket overran (ENOBUFS)"),
                }
                fail_all(
                    &self.pending,
                    "the socket overran and replies were lost; try again",
                );
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                // A spurious socket error, nothing lost: after dequeuing a
                // datagram, netlink_recvmsg continues a dump it saw running
                // (checked without the lock); when that dump (just started
                // by the next request, right after the previous DONE) has
                // already finished, netlink_dump returns -EINVAL, and the
                // next recvmsg reports it. The queued messages are intact.
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

fn route(datagram: &[u8], group: u32, pending: &PendingMap, sink: Option<&NotificationSink>) {
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
            match sink {
                Some(sink) => {
                    sink.stats.received.fetch_add(1, Ordering::Relaxed);
                    sink.deliver(Notification::Message(OwnedMessage {
                        header: msg.header,
                        group,
                        payload: msg.payload.to_vec(),
                    }));
                }
                None => tracing::trace!(seq, "message for no waiting request (timed out?)"),
            }
            continue;
        };
        if msg.header.flags & NLM_F_DUMP_INTR != 0 {
            p.interrupted = true;
        }
        let outcome = match msg.completion() {
            Ok(None) if p.bytes.saturating_add(msg.payload.len()) > p.max_bytes => {
                // Stop collecting; the rest of a dump is still read (and
                // dropped, the seq being gone) so the socket stays usable.
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
