//! A dump read part by part, on a netlink socket of its own.
//!
//! The kernel fills the next dump part only when the reader has taken the
//! previous one (netlink_recvmsg continues the dump while the socket's
//! queue is under half its receive buffer), so a dump read on demand costs
//! a part or two of memory, however many objects it returns. A socket of
//! its own keeps that backpressure from stalling anyone else's replies,
//! and lets dumps of any family run side by side (the kernel's rule is one
//! dump per socket).

use std::fs::File;
use std::time::Duration;

use genl_wire::consts::{
    NETLINK_CAP_ACK, NETLINK_EXT_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, SOL_NETLINK,
};
use genl_wire::message::genl_request;
use genl_wire::{GenlHeader, Messages, align4};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::requester::{RequestBounds, RequestError};
use super::socket::NlSocket;

/// Receive buffer for one part. The kernel sizes dump parts to the
/// reader's buffer, capped at 32 KiB (netlink_recvmsg's max_recvmsg_len);
/// a larger one is reported, not cut.
const PART_BUF: usize = 64 << 10;

/// Why the next part did not come.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PartError {
    /// The request failed: kernel error, timeout, socket error, a part
    /// over the bound.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The kernel flagged the dump as interrupted by a concurrent change
    /// (NLM_F_DUMP_INTR): what it returned may be inconsistent.
    #[error("the dump was interrupted by a concurrent change; start it again")]
    Interrupted,
}

/// A dump in progress.
pub struct DumpStream {
    sock: AsyncFd<NlSocket>,
    seq: u32,
    buf: Vec<u8>,
    /// NLMSG_DONE (or an error) was seen: no more parts.
    finished: bool,
}

impl std::fmt::Debug for DumpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DumpStream")
            .field("seq", &self.seq)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl DumpStream {
    /// Open a socket in `netns` and send the dump request of `family`'s
    /// command `genl` with `payload`. Must run inside the Tokio runtime.
    pub fn start(
        netns: Option<&File>,
        family: u16,
        genl: GenlHeader,
        payload: &[u8],
    ) -> Result<Self, RequestError> {
        let io = |what: &str, e: std::io::Error| RequestError::Io(format!("dump socket {what}: {e}"));
        let sock = NlSocket::open_in(netns).map_err(|e| io("open", e))?;
        sock.set_option(SOL_NETLINK, NETLINK_EXT_ACK, 1)
            .map_err(|e| io("NETLINK_EXT_ACK", e))?;
        sock.set_option(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            .map_err(|e| io("NETLINK_CAP_ACK", e))?;
        // The only request on this socket: any seq will do.
        let seq = 1;
        let request = genl_request(family, NLM_F_REQUEST | NLM_F_DUMP, seq, genl, payload);
        sock.send(&request).map_err(|e| io("send", e))?;
        // SAFETY: NlSocket owns its fd (an OwnedFd) and never replaces it, so
        // the fd stays open and the same for the AsyncFd's whole life.
        let sock = unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE) }
            .map_err(|e| RequestError::Io(format!("dump socket register: {e}")))?;
        Ok(Self {
            sock,
            seq,
            buf: vec![0; PART_BUF],
            finished: false,
        })
    }

    /// The next part: the whole data messages of one datagram, `None`
    /// after NLMSG_DONE. Waits at most `bounds.wait`; a part larger than
    /// `bounds.reply_bytes` is an error.
    pub async fn next_part(&mut self, bounds: RequestBounds) -> Result<Option<Vec<u8>>, PartError> {
        loop {
            if self.finished {
                return Ok(None);
            }
            let n = self.recv(bounds.wait).await?;
            // Fail closed: whatever goes wrong below ends the dump.
            self.finished = true;
            let datagram = &self.buf[..n];
            let (end, done) = self.data_end(datagram)?;
            if end > bounds.reply_bytes {
                return Err(RequestError::ReplyTooLarge(bounds.reply_bytes).into());
            }
            self.finished = done;
            if end > 0 {
                return Ok(Some(datagram[..end].to_vec()));
            }
        }
    }

    /// Where the data messages of `datagram` end, and whether the dump
    /// ended in it (NLMSG_DONE). Kernel errors and interruptions are errors.
    fn data_end(&self, datagram: &[u8]) -> Result<(usize, bool), PartError> {
        let mut end = 0;
        for msg in Messages::new(datagram) {
            let msg = msg.map_err(|e| RequestError::Io(format!("malformed dump part: {e}")))?;
            // No seq check: nothing else arrives on this socket (no groups
            // joined, one request), and some families fill their dump
            // messages with seq 0 (thermal's TZ_GET_ID dumpit) where
            // NLMSG_DONE carries the request's.
            match msg.completion() {
                Ok(None) if msg.header.flags & NLM_F_DUMP_INTR != 0 => return Err(PartError::Interrupted),
                Ok(None) => end += align4(msg.header.len as usize),
                Ok(Some(Ok(()))) => return Ok((end.min(datagram.len()), true)),
                Ok(Some(Err(e))) => return Err(RequestError::Kernel(e).into()),
                Err(e) => return Err(RequestError::Io(format!("malformed dump end: {e}")).into()),
            }
        }
        Ok((end.min(datagram.len()), false))
    }

    /// Receive one datagram into the buffer within `wait`.
    async fn recv(&mut self, wait: Duration) -> Result<usize, RequestError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut guard = tokio::time::timeout_at(deadline, self.sock.readable())
                .await
                .map_err(|_| RequestError::Timeout(wait))?
                .map_err(|e| RequestError::Io(format!("dump socket: {e}")))?;
            let buf = &mut self.buf;
            match guard.try_io(|s| s.get_ref().recv(buf)) {
                Ok(Ok((n, _))) => return Ok(n),
                Ok(Err(e)) => return Err(RequestError::Io(format!("dump socket receive: {e}"))),
                // Readiness was stale; wait again.
                Err(_) => continue,
            }
        }
    }
}
