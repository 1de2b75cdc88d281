//! A bounded pool of request sockets. A request takes one socket for its
//! whole exchange (a `do` until its ACK, a dump until its NLMSG_DONE) and
//! reads its own replies on it: no reader task, no routing table, and no
//! other task woken for a reply. One dump per socket is the kernel's rule,
//! so dumps of different families run side by side on different sockets.
//!
//! A socket goes back to the pool only when its exchange completed; one
//! left mid-exchange (timeout, cancelled caller, reply too large) is
//! closed, which also ends a dump the kernel was still producing on it.
//! Replies carrying another sequence number (a late answer to an earlier
//! request) are discarded, never handed to the socket's next user.

use std::fs::File;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use genl_wire::Messages;
use genl_wire::consts::NLM_F_DUMP_INTR;
use genl_wire::message::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::requester::RequestError;
use super::socket::NlSocket;

/// Receive buffer for one datagram. Dump parts are at most 32 KiB on
/// current kernels, but a family may size a `do` reply as it likes.
const RECV_BUF: usize = 256 << 10;

/// The receive buffer asked for while a dump is read by peeking (see
/// [`Lease::send_peeked_dump`]); the kernel doubles it, to 48 KiB.
///
/// `netlink_recvmsg` makes the next dump part after taking one, when the
/// queue holds at most half the buffer. A part is allocated at the size of
/// the largest read the socket has seen (32 KiB here, ~33 KiB counted with
/// its overhead), more than half of 48 KiB: a peek at a queued part makes
/// nothing, and the read that takes it off the emptied queue makes the
/// next. (A new socket has seen no read: its first part is ~4 KiB, and the
/// first peek builds the second inline, so its first dump overlaps less.)
/// So the consumer decodes a peeked part while a reader's discard has the
/// kernel make the next one on the other core. Any buffer would do for
/// correctness; this one only decides where the kernel's work happens.
const PEEKED_DUMP_RECEIVE_BUFFER: usize = 24 << 10;

/// A read checks the request's deadline before the first datagram and
/// then once in this many: a `do`'s ACK is read without a clock read, and
/// a dump overruns its deadline by a few parts at most.
const DEADLINE_CHECK_EVERY: u32 = 4;

/// Request sockets when the configuration names no number.
pub const DEFAULT_REQUEST_SOCKETS: usize = 8;

/// One socket with its receive buffer.
struct Pooled {
    sock: NlSocket,
    buf: Vec<u8>,
}

/// The request sockets of one [`super::Requester`].
pub(super) struct SocketPool {
    netns: Option<Arc<File>>,
    receive_buffer: usize,
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Pooled>>,
    first_portid: u32,
}

impl SocketPool {
    /// A pool of at most `size` sockets; one is opened now, so a bad
    /// namespace or a missing permission shows at start-up.
    pub(super) fn open(
        netns: Option<Arc<File>>,
        receive_buffer: usize,
        size: usize,
    ) -> std::io::Result<Self> {
        let first = open_socket(netns.as_deref(), receive_buffer)?;
        Ok(Self {
            netns,
            receive_buffer,
            permits: Arc::new(Semaphore::new(size.max(1))),
            first_portid: first.sock.portid(),
            idle: Mutex::new(vec![first]),
        })
    }

    /// The port id of the first socket opened (request sockets receive no
    /// notifications; this names the pool in logs).
    pub(super) fn portid(&self) -> u32 {
        self.first_portid
    }

    /// Take a socket, waiting for one until `deadline`.
    pub(super) async fn take(
        self: &Arc<Self>,
        deadline: Instant,
        wait: Duration,
    ) -> Result<Lease, RequestError> {
        let permit = tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| RequestError::Timeout(wait))?
            .map_err(|_| RequestError::Io("the request socket pool is closed".into()))?;
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let socket = match idle {
            Some(s) => s,
            None => open_socket(self.netns.as_deref(), self.receive_buffer)
                .map_err(|e| RequestError::Io(format!("opening a request socket: {e}")))?,
        };
        Ok(Lease {
            pool: self.clone(),
            socket: Some(socket),
            reusable: true,
            lowered_buffer: false,
            reads: 0,
            _permit: permit,
        })
    }
}

fn open_socket(netns: Option<&File>, receive_buffer: usize) -> std::io::Result<Pooled> {
    let sock = NlSocket::open_in(netns)?;
    sock.set_receive_buffer(receive_buffer)?;
    Ok(Pooled {
        sock,
        buf: vec![0; RECV_BUF],
    })
}

/// What one datagram said about the request being answered.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// A message carried NLM_F_DUMP_INTR.
    pub interrupted: bool,
    /// The request ended here (ACK, error or NLMSG_DONE).
    pub end: Option<Result<(), RequestError>>,
}

/// How [`Lease::next`] reads a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Read {
    /// Take it off the socket.
    Take,
    /// Copy it and leave it queued, for a [`Lease::discard`] to take.
    Peek,
}

/// One socket, held by one request from send to completion.
pub(super) struct Lease {
    pool: Arc<SocketPool>,
    socket: Option<Pooled>,
    /// False from a send until the exchange completes.
    reusable: bool,
    /// The receive buffer was lowered for a peeked dump and is restored
    /// before the socket is reused.
    lowered_buffer: bool,
    /// Datagrams taken or peeked so far, for [`DEADLINE_CHECK_EVERY`].
    reads: u32,
    // Released after `drop` has put the socket back.
    _permit: OwnedSemaphorePermit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(socket) = self.socket.take()
            && self.reusable
        {
            self.pool
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(socket);
        }
    }
}

impl Lease {
    fn pooled(&mut self) -> Result<&mut Pooled, RequestError> {
        self.socket
            .as_mut()
            .ok_or_else(|| RequestError::Io("the request socket was closed".into()))
    }

    /// Send one request; the socket stays out of the pool until its answer
    /// has been read to the end.
    pub(super) fn send(&mut self, request: &[u8]) -> Result<(), RequestError> {
        self.reusable = false;
        self.pooled()?
            .sock
            .send(request)
            .map(drop)
            .map_err(|e| RequestError::Io(format!("send: {e}")))
    }

    /// Send a dump request whose parts will be read with [`Read::Peek`]
    /// and [`Lease::discard`], the receive buffer lowered meanwhile (see
    /// [`PEEKED_DUMP_RECEIVE_BUFFER`]).
    pub(super) fn send_peeked_dump(&mut self, request: &[u8]) -> Result<(), RequestError> {
        // Not lowered, the dump is still read whole and in order, only
        // without the overlap: worth a log line, not a failed request.
        match self.pooled()?.sock.set_receive_buffer(PEEKED_DUMP_RECEIVE_BUFFER) {
            Ok(()) => self.lowered_buffer = true,
            Err(e) => tracing::debug!("lowering a dump socket's receive buffer: {e}"),
        }
        self.send(request)
    }

    /// Mark the exchange complete: the socket may serve the next request.
    pub(super) fn complete(&mut self) {
        if self.lowered_buffer {
            // A `do` reply and its ACK must fit whatever their size: a
            // socket left with the dump's small buffer is closed instead.
            let restored = self
                .socket
                .as_ref()
                .is_some_and(|s| s.sock.set_receive_buffer(self.pool.receive_buffer).is_ok());
            if !restored {
                return;
            }
            self.lowered_buffer = false;
        }
        self.reusable = true;
    }

    /// Take the datagram at the head of the socket, read before with
    /// [`Read::Peek`], without copying it. On a dump, the kernel makes
    /// the next part inside this call.
    pub(super) fn discard(&mut self) -> Result<(), RequestError> {
        let pooled = self.pooled()?;
        // A pending socket error is reported before the queue is looked at
        // and leaves the datagram queued: see `next` for why these two
        // lose nothing during a dump. Each is reported once.
        for _ in 0..3 {
            match pooled.sock.discard() {
                Ok(_) => return Ok(()),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOBUFS)) => {}
                Err(e) => return Err(RequestError::Io(format!("receive: {e}"))),
            }
        }
        Err(RequestError::Io(
            "receive: the socket kept reporting errors".into(),
        ))
    }

    /// Read the next datagram answering `seq` and hand each of its data
    /// messages to `on_data` (with the message's bytes, header included,
    /// and the datagram's length, to size a copy once); messages with
    /// another sequence number are dropped. Waits for the
    /// kernel until `deadline` when the socket is empty.
    pub(super) async fn next(
        &mut self,
        read: Read,
        seq: u32,
        deadline: Instant,
        wait: Duration,
        mut on_data: impl FnMut(Message<'_>, &[u8], usize) -> Result<(), RequestError>,
    ) -> Result<Scan, RequestError> {
        // A peeked dump's ENOBUFS was just reported (see below).
        let mut deferred = false;
        loop {
            // Let other tasks of this worker run during a long dump; free
            // while the task has budget left.
            tokio::task::consume_budget().await;
            // A queued datagram is read without waiting, so the clock is
            // read only before a wait (below), before the first read (a
            // request whose time is up gets no answer) and then once in a
            // few datagrams, to end a dump whose parts keep coming past
            // its deadline.
            if self.reads.is_multiple_of(DEADLINE_CHECK_EVERY) && Instant::now() >= deadline {
                return Err(RequestError::Timeout(wait));
            }
            let pooled = self.pooled()?;
            let received = match read {
                Read::Take => pooled.sock.recv(&mut pooled.buf),
                Read::Peek => pooled.sock.peek(&mut pooled.buf),
            };
            if received.is_ok() {
                self.reads = self.reads.wrapping_add(1);
            }
            let pooled = self.pooled()?;
            match received {
                Ok(n) => {
                    let datagram = &pooled.buf[..n];
                    return scan(datagram, seq, &mut on_data);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && deferred => {
                    // ENOBUFS with nothing queued: netlink_dump could not
                    // allocate the next part, and no later read would ask
                    // it again (it is asked only after a datagram is taken).
                    return Err(RequestError::Io(
                        "the kernel could not allocate the next dump part (memory pressure); try again"
                            .into(),
                    ));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // Generic netlink answers a `do` inside sendmsg and
                    // makes each dump part while the previous one is read,
                    // so this wait is the exception: only then does the
                    // socket enter epoll.
                    let left = deadline.saturating_duration_since(Instant::now());
                    // Boxed: the future of every request holds this
                    // one's state, and the wait is rare (see
                    // `host_api::KernelAccess::family_info`).
                    let ready = Box::pin(pooled.sock.readable(left))
                        .await
                        .map_err(|e| RequestError::Io(format!("waiting for the kernel: {e}")))?;
                    if !ready {
                        return Err(RequestError::Timeout(wait));
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    // Spurious, nothing lost: after dequeuing a datagram,
                    // netlink_recvmsg continues a dump it saw running
                    // (checked without the lock); when that dump has already
                    // finished, netlink_dump returns -EINVAL and the next
                    // recvmsg reports it. The queued messages are intact.
                    tracing::debug!("netlink socket: spurious EINVAL from a finished dump; ignored");
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) && read == Read::Peek => {
                    // Nothing lost: a dump's parts are queued past the
                    // receive buffer's check, so during a peeked dump this
                    // says netlink_dump declined to make a part, either
                    // while others were queued (checked before it makes
                    // one; it makes it on a later read) or because it
                    // could not allocate one, which the next read tells
                    // apart: then nothing is queued.
                    tracing::debug!("netlink socket: dump part deferred");
                    deferred = true;
                    continue;
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Err(RequestError::Io(
                        "the request socket overran and replies were lost; try again".into(),
                    ));
                }
                Err(e) => return Err(RequestError::Io(format!("receive: {e}"))),
            }
        }
    }
}

fn scan(
    datagram: &[u8],
    seq: u32,
    on_data: &mut impl FnMut(Message<'_>, &[u8], usize) -> Result<(), RequestError>,
) -> Result<Scan, RequestError> {
    let mut out = Scan::default();
    let base = datagram.as_ptr() as usize;
    for msg in Messages::new(datagram) {
        let msg = msg.map_err(|e| RequestError::Io(format!("malformed reply: {e}")))?;
        // Seq 0: some families (thermal) leave the sequence number of their
        // dump messages unset. A request socket joins no group and a socket
        // left mid-exchange is closed, so nothing else can arrive here.
        if msg.header.seq != seq && msg.header.seq != 0 {
            tracing::trace!(
                seq = msg.header.seq,
                waiting = seq,
                "discarding a reply to an earlier request on this socket"
            );
            continue;
        }
        if msg.header.flags & NLM_F_DUMP_INTR != 0 {
            out.interrupted = true;
        }
        match msg.completion() {
            Ok(None) => {
                let start = msg.payload.as_ptr() as usize - base - genl_wire::NlHeader::SIZE;
                let end = start + msg.header.len as usize;
                on_data(msg, &datagram[start..end], datagram.len())?;
            }
            Ok(Some(result)) => {
                out.end = Some(result.map_err(RequestError::Kernel));
                return Ok(out);
            }
            Err(e) => return Err(RequestError::Io(format!("malformed reply: {e}"))),
        }
    }
    Ok(out)
}
