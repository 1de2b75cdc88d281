//! One request socket shared by every plugin: requests go out tagged with a
//! sequence number, a reader task routes each reply to the request it
//! answers, and a request completes at its ACK, error or NLMSG_DONE.
//!
//! The kernel runs at most one dump per socket at a time (a second one gets
//! EBUSY), so dumps take turns on a lock while `do` requests interleave
//! freely with them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use genl_wire::consts::{
    NETLINK_CAP_ACK, NETLINK_EXT_ACK, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
    SOL_NETLINK,
};
use genl_wire::message::genl_request;
use genl_wire::{GenlHeader, KernelError, Messages, NlHeader, WireError};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;

use super::socket::NlSocket;

/// Receive buffer for one datagram. Dump parts are at most 32 KiB on
/// current kernels; the margin costs nothing.
const RECV_BUF: usize = 256 << 10;

/// How many times a dump interrupted by a concurrent change is retried.
const DUMP_INTR_RETRIES: usize = 3;

/// A reply message, copied out of the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedMessage {
    /// Its netlink header.
    pub header: NlHeader,
    /// Everything after the netlink header.
    pub payload: Vec<u8>,
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
}

struct Pending {
    parts: Vec<OwnedMessage>,
    interrupted: bool,
    done: oneshot::Sender<Result<(Vec<OwnedMessage>, bool), RequestError>>,
}

type PendingMap = Mutex<HashMap<u32, Pending>>;

/// The shared request socket.
pub struct Requester {
    sock: Arc<AsyncFd<NlSocket>>,
    pending: Arc<PendingMap>,
    next_seq: AtomicU32,
    dump_turn: tokio::sync::Mutex<()>,
    timeout: Duration,
}

impl Requester {
    /// Open the socket and start its reader task on the current runtime.
    pub fn open(timeout: Duration) -> std::io::Result<Arc<Self>> {
        let sock = NlSocket::open()?;
        sock.set_option(SOL_NETLINK, NETLINK_EXT_ACK, 1)?;
        // Errors need not echo the whole request back; ext-ack gives the
        // offset of the offending attribute instead.
        sock.set_option(SOL_NETLINK, NETLINK_CAP_ACK, 1)?;
        sock.set_receive_buffer(4 << 20)?;
        // SAFETY: NlSocket owns its fd (an OwnedFd) and never replaces it, so
        // the fd stays open and the same for the AsyncFd's whole life.
        let sock = unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let sock = Arc::new(sock);
        let pending: Arc<PendingMap> = Arc::default();
        tokio::spawn(read_loop(sock.clone(), pending.clone()));
        // Start sequence numbers away from 0 so stray replies to a previous
        // process using the same port are unlikely to match.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(1);
        Ok(Arc::new(Self {
            sock,
            pending,
            next_seq: AtomicU32::new(seed | 1),
            dump_turn: tokio::sync::Mutex::new(()),
            timeout,
        }))
    }

    /// A `do` request; returns the reply messages before the ACK.
    pub async fn do_request(
        &self,
        family: u16,
        genl: GenlHeader,
        extra_flags: u16,
        payload: &[u8],
    ) -> Result<Vec<OwnedMessage>, RequestError> {
        let flags = NLM_F_REQUEST | NLM_F_ACK | extra_flags;
        self.exchange(family, genl, flags, payload)
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
        let _turn = self.dump_turn.lock().await;
        for _ in 0..DUMP_INTR_RETRIES {
            let (msgs, interrupted) = self
                .exchange(family, genl, NLM_F_REQUEST | NLM_F_DUMP, payload)
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

    async fn exchange(
        &self,
        family: u16,
        genl: GenlHeader,
        flags: u16,
        payload: &[u8],
    ) -> Result<(Vec<OwnedMessage>, bool), RequestError> {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let request = genl_request(family, flags, seq, genl, payload);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(
            seq,
            Pending {
                parts: Vec::new(),
                interrupted: false,
                done: tx,
            },
        );
        if let Err(e) = self.sock.get_ref().send(&request) {
            lock(&self.pending).remove(&seq);
            return Err(RequestError::Io(format!("send: {e}")));
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RequestError::Io("the netlink reader stopped".into())),
            Err(_) => {
                lock(&self.pending).remove(&seq);
                Err(RequestError::Timeout(self.timeout))
            }
        }
    }
}

fn lock(m: &PendingMap) -> std::sync::MutexGuard<'_, HashMap<u32, Pending>> {
    // The map holds no invariant a panicking holder could break halfway.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn read_loop(sock: Arc<AsyncFd<NlSocket>>, pending: Arc<PendingMap>) {
    let mut buf = vec![0u8; RECV_BUF];
    loop {
        let mut guard = match sock.readable().await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!("netlink request socket failed: {e}; requests will fail");
                fail_all(&pending, &format!("socket: {e}"));
                return;
            }
        };
        let n = match guard.try_io(|s| s.get_ref().recv(&mut buf)) {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                // ENOBUFS here means replies were lost: the requests waiting
                // for them can never complete, so fail them now.
                tracing::warn!("netlink request socket: {e}");
                fail_all(&pending, &format!("receive: {e}"));
                continue;
            }
            Err(_would_block) => continue,
        };
        route(&buf[..n], &pending);
    }
}

fn route(datagram: &[u8], pending: &PendingMap) {
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
        let Some(p) = map.get_mut(&seq) else {
            tracing::trace!(seq, "reply for no waiting request (timed out?)");
            continue;
        };
        if msg.header.flags & NLM_F_DUMP_INTR != 0 {
            p.interrupted = true;
        }
        let outcome = match msg.completion() {
            Ok(None) => {
                p.parts.push(OwnedMessage {
                    header: msg.header,
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
