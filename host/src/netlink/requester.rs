//! Requests to the kernel: a `do` completes at its ACK or error, a dump at
//! its NLMSG_DONE, each bounded in time and reply bytes.
//!
//! The gateway's [`Requester`] is a bounded pool of request sockets (see
//! `pool.rs`): each request owns one socket from send to completion and
//! reads its own replies, so no other task is woken for them, and dumps of
//! different families run at once on different sockets. (A dump read part
//! by part hands its socket to a reader of its own after the first part,
//! so the kernel builds while the plugin decodes: `dump_parts.rs`.)
//!
//! The same type serves a family's listener socket (see
//! `listener_socket.rs`): there a reader task takes notifications, and
//! routes replies to the few requests made on that socket by sequence
//! number.

use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use genl_wire::consts::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use genl_wire::message::genl_request;
use genl_wire::{GenlHeader, KernelError, NlHeader};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::dump_parts::{DumpParts, PartHint, PartHints, ReaderAhead};
use super::listener_socket::ListenerSocket;
use super::pool::{DEFAULT_REQUEST_SOCKETS, Lease, Read, SocketPool};
use super::socket::NlSocket;

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
    pub(super) fn deliver(&self, n: Notification) {
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
    /// For request sockets: how many may be open at once (0: the default,
    /// 8). A request waits for a free one within its own deadline.
    pub request_sockets: usize,
}

/// What one request made on a plugin's behalf may cost: how long it may
/// wait (for a request socket and for the kernel together) and how many bytes
/// of replies the host collects for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestBounds {
    /// Longest wait, the wait for a request socket included.
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

/// Which sockets a [`Requester`] has.
enum Sockets {
    /// The gateway's request sockets.
    Pool(Arc<SocketPool>),
    /// A family's listener socket.
    Listener(ListenerSocket),
}

/// Netlink requests with their replies: over a pool of request sockets,
/// or, for a listener, over its one socket whose other messages are
/// notifications.
pub struct Requester {
    sockets: Sockets,
    next_seq: AtomicU32,
    timeout: Duration,
    /// Which dumps came in more than one part last time.
    part_hints: Arc<PartHints>,
}

impl Requester {
    /// Open the sockets: a listener socket (with its reader task on the
    /// current runtime) when `opts.sink` is set, else the request pool.
    pub fn open(opts: SocketOptions) -> std::io::Result<Arc<Self>> {
        let sockets = match opts.sink {
            Some(sink) => {
                let sock = NlSocket::open_in(opts.netns.as_deref())?;
                sock.set_receive_buffer(opts.receive_buffer)?;
                Sockets::Listener(ListenerSocket::start(sock, sink)?)
            }
            None => {
                let size = match opts.request_sockets {
                    0 => DEFAULT_REQUEST_SOCKETS,
                    n => n,
                };
                Sockets::Pool(Arc::new(SocketPool::open(opts.netns, opts.receive_buffer, size)?))
            }
        };
        // Start sequence numbers away from 0 so stray replies to a previous
        // process using the same port are unlikely to match.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        Ok(Arc::new(Self {
            sockets,
            next_seq: AtomicU32::new(seed | 1),
            timeout: opts.timeout,
            part_hints: Arc::default(),
        }))
    }

    /// The socket's port id (where the kernel sends unicast
    /// notifications); for a request pool, its first socket's.
    pub fn portid(&self) -> u32 {
        match &self.sockets {
            Sockets::Pool(pool) => pool.portid(),
            Sockets::Listener(l) => l.socket().portid(),
        }
    }

    /// Join multicast group `id` (listener sockets only: request sockets
    /// take no notifications).
    pub fn join_group(&self, id: u32) -> std::io::Result<()> {
        match &self.sockets {
            Sockets::Pool(_) => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "request sockets join no multicast groups; open a listener socket",
            )),
            Sockets::Listener(l) => l.socket().join_group(id),
        }
    }

    /// The bounds requests get when the caller names none: the socket's
    /// timeout, replies of any size.
    pub fn default_bounds(&self) -> RequestBounds {
        RequestBounds {
            wait: self.timeout,
            reply_bytes: usize::MAX,
        }
    }

    fn seq(&self) -> u32 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// A request with the next sequence number.
    fn request(&self, family: u16, flags: u16, genl: GenlHeader, payload: &[u8]) -> (u32, Vec<u8>) {
        let seq = self.seq();
        (seq, genl_request(family, flags, seq, genl, payload))
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
        let deadline = Instant::now() + bounds.wait;
        match &self.sockets {
            Sockets::Pool(pool) => {
                let mut lease = pool.take(deadline, bounds.wait).await?;
                let (seq, request) = self.request(family, flags, genl, payload);
                collect(&mut lease, seq, &request, deadline, bounds)
                    .await
                    .map(|(m, _)| m)
            }
            Sockets::Listener(l) => {
                let (seq, request) = self.request(family, flags, genl, payload);
                l.exchange(seq, &request, deadline, bounds).await.map(|(m, _)| m)
            }
        }
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

    /// A dump within `bounds`: the wait for a socket counts against the
    /// same deadline as the kernel's answer.
    pub async fn dump_bounded(
        &self,
        family: u16,
        genl: GenlHeader,
        payload: &[u8],
        bounds: RequestBounds,
    ) -> Result<Vec<OwnedMessage>, RequestError> {
        let deadline = Instant::now() + bounds.wait;
        let flags = NLM_F_REQUEST | NLM_F_DUMP;
        for _ in 0..DUMP_INTR_RETRIES {
            let (msgs, interrupted) = match &self.sockets {
                Sockets::Pool(pool) => {
                    let mut lease = pool.take(deadline, bounds.wait).await?;
                    let (seq, request) = self.request(family, flags, genl, payload);
                    collect(&mut lease, seq, &request, deadline, bounds).await?
                }
                Sockets::Listener(l) => {
                    let _turn = tokio::time::timeout_at(deadline, l.dump_turn.lock())
                        .await
                        .map_err(|_| RequestError::Timeout(bounds.wait))?;
                    let (seq, request) = self.request(family, flags, genl, payload);
                    l.exchange(seq, &request, deadline, bounds).await?
                }
            };
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

    /// A dump read part by part: each [`DumpParts::next_part`] is one
    /// datagram's worth of messages, raw, as the kernel sent them, the
    /// next one read ahead by a task of its own. The dump holds a request
    /// socket until it ends or is dropped. Request sockets only.
    pub async fn dump_parts(
        &self,
        family: u16,
        genl: GenlHeader,
        payload: &[u8],
        bounds: RequestBounds,
    ) -> Result<DumpParts, RequestError> {
        let Sockets::Pool(pool) = &self.sockets else {
            return Err(RequestError::Io(
                "a dump part by part needs a request socket, not a listener".into(),
            ));
        };
        let deadline = Instant::now() + bounds.wait;
        let mut lease = pool.take(deadline, bounds.wait).await?;
        let (seq, request) = self.request(family, NLM_F_REQUEST | NLM_F_DUMP, genl, payload);
        let hint = PartHint::new(&self.part_hints, family, genl.cmd);
        // A dump that came in several parts last time gets its reader
        // woken now, so that the wakeup overlaps the kernel's making of
        // the first part inside the send instead of following it.
        let ahead = if hint.expects_many() {
            ReaderAhead::start()
        } else {
            None
        };
        lease.send_peeked_dump(&request)?;
        Ok(DumpParts::start(lease, seq, bounds, ahead, hint))
    }
}

/// Send `request` (sequence number `seq`) on `lease` and collect its reply
/// messages; true when the kernel flagged the dump as interrupted.
async fn collect(
    lease: &mut Lease,
    seq: u32,
    request: &[u8],
    deadline: Instant,
    bounds: RequestBounds,
) -> Result<(Vec<OwnedMessage>, bool), RequestError> {
    lease.send(request)?;
    let mut parts = Vec::new();
    let mut bytes = 0usize;
    let mut interrupted = false;
    loop {
        let scan = lease
            .next(Read::Take, seq, deadline, bounds.wait, |msg, _, _| {
                bytes = bytes.saturating_add(msg.payload.len());
                if bytes > bounds.reply_bytes {
                    // The socket is closed, not drained: that also ends the
                    // rest of a dump.
                    return Err(RequestError::ReplyTooLarge(bounds.reply_bytes));
                }
                parts.push(OwnedMessage {
                    header: msg.header,
                    group: 0,
                    payload: msg.payload.to_vec(),
                });
                Ok(())
            })
            .await?;
        interrupted |= scan.interrupted;
        if let Some(end) = scan.end {
            lease.complete();
            return end.map(|()| (parts, interrupted));
        }
    }
}

#[cfg(test)]
mod tests {
    use genl_wire::FamilyInfo;
    use genl_wire::ctrl::{CTRL_CMD_GETFAMILY, getfamily_by_name};

    use super::*;

    const GETFAMILY: GenlHeader = GenlHeader {
        cmd: CTRL_CMD_GETFAMILY,
        version: 2,
    };

    /// A reply the previous user of a socket left unread (as a request that
    /// timed out after its send would) is dropped by its sequence number;
    /// the next request on the socket gets its own answer.
    #[tokio::test]
    async fn a_late_reply_on_a_reused_socket_is_discarded_by_sequence_number() {
        let r = Requester::open(SocketOptions {
            timeout: Duration::from_secs(10),
            receive_buffer: 1 << 20,
            request_sockets: 1,
            ..SocketOptions::default()
        })
        .unwrap();
        let Sockets::Pool(pool) = &r.sockets else {
            panic!("a requester without a sink has a pool")
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut lease = pool.take(deadline, Duration::from_secs(10)).await.unwrap();
        let stale = getfamily_by_name("netdev").unwrap();
        lease
            .send(&genl_request(
                0x10,
                NLM_F_REQUEST | NLM_F_ACK,
                r.seq(),
                GETFAMILY,
                &stale,
            ))
            .unwrap();
        // Back to the pool with the reply and ACK still queued on it.
        lease.complete();
        drop(lease);

        let attrs = getfamily_by_name("nlctrl").unwrap();
        let replies = r.do_request(0x10, GETFAMILY, 0, &attrs).await.unwrap();
        assert_eq!(replies.len(), 1, "one reply, not the stale one beside it");
        let info = FamilyInfo::decode(&replies[0].payload[GenlHeader::SIZE..]).unwrap();
        assert_eq!(info.name, "nlctrl");
    }
}
