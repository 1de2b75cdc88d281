//! A generic netlink socket: neli's low-level [`neli::socket::NlSocket`]
//! (socket, bind, non-blocking mode, multicast membership, extended ack,
//! sending raw bytes), plus the few things neli lacks or does with more
//! work than the gateway needs, each done on its file descriptor here and
//! nowhere else:
//!
//! - opening the socket inside another network namespace (`setns` on a
//!   short-lived thread);
//! - `NETLINK_CAP_ACK` (errors need not echo the whole request back);
//! - `SO_RCVBUFFORCE` (root may exceed `rmem_max`; neli sets `SO_RCVBUF`);
//! - `NETLINK_PKTINFO` and a `recvmsg` that reads it: neli's `recv` reports
//!   the sender's group only as a 32-bit mask, which cannot name the
//!   generic netlink groups numbered above 32;
//! - reads with a plain `recv(2)`: neli's `recv` is a `recvfrom` that has
//!   the kernel copy out the sender's address on every read, which the
//!   gateway never uses;
//! - waiting for readability from async code without keeping the socket in
//!   epoll between waits (see [`NlSocket::readable`]).
//!
//! This module holds the crate's only `unsafe` for sockets.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use genl_wire::consts::{NETLINK_CAP_ACK, NETLINK_PKTINFO, SOL_NETLINK};
use neli::consts::socket::{Msg, NlFamily};
use neli::utils::Groups;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// An open, bound, non-blocking generic netlink socket.
pub struct NlSocket {
    inner: neli::socket::NlSocket,
    portid: u32,
}

impl std::fmt::Debug for NlSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NlSocket")
            .field("fd", &self.inner.as_raw_fd())
            .field("portid", &self.portid)
            .finish()
    }
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

impl NlSocket {
    /// Open and bind a socket in the network namespace `netns` (a
    /// `/run/netns/NAME` file), or in the gateway's own when `None`.
    ///
    /// A socket belongs to the namespace it was created in for its whole
    /// life, so only the creation runs on a short-lived thread that enters
    /// the namespace; the rest of the process (the API listeners) stays put.
    pub fn open_in(netns: Option<&std::fs::File>) -> io::Result<Self> {
        let Some(ns) = netns else { return Self::open() };
        let ns = ns.as_raw_fd();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    // SAFETY: setns on this thread only; ns is an open namespace fd
                    // kept alive by the caller for the duration of the scope.
                    check(unsafe { libc::setns(ns, libc::CLONE_NEWNET) }).map_err(|e| {
                        io::Error::new(e.kind(), format!("entering the network namespace: {e}"))
                    })?;
                    Self::open()
                })
                .join()
                .map_err(|_| io::Error::other("the namespace thread panicked"))?
        })
    }

    /// Open and bind a non-blocking socket with extended and capped acks;
    /// the kernel assigns the port id.
    pub fn open() -> io::Result<Self> {
        let inner = neli::socket::NlSocket::connect(NlFamily::Generic, None, Groups::empty())?;
        inner.nonblock()?;
        inner.enable_ext_ack(true)?;
        let portid = inner.pid()?;
        let sock = Self { inner, portid };
        sock.set_int_option(SOL_NETLINK, NETLINK_CAP_ACK, 1)?;
        Ok(sock)
    }

    /// The port id the kernel assigned.
    pub fn portid(&self) -> u32 {
        self.portid
    }

    fn set_int_option(&self, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
        // SAFETY: value is a valid c_int for the duration of the call, and
        // the length passed is its size.
        check(unsafe {
            libc::setsockopt(
                self.inner.as_raw_fd(),
                level,
                name,
                (&raw const value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        })
        .map(drop)
    }

    /// Ask for a receive buffer of `bytes`: SO_RCVBUFFORCE (root may exceed
    /// rmem_max), falling back to neli's SO_RCVBUF.
    pub fn set_receive_buffer(&self, bytes: usize) -> io::Result<()> {
        let forced = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        self.set_int_option(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, forced)
            .or_else(|_| self.inner.set_recv_buffer_size(bytes))
    }

    /// Join multicast group `group`.
    pub fn join_group(&self, group: u32) -> io::Result<()> {
        self.inner.add_mcast_membership(Groups::new_groups(&[group]))
    }

    /// Ask the kernel to say which multicast group each datagram came from
    /// (read by [`NlSocket::recv_with_group`]).
    pub fn enable_pktinfo(&self) -> io::Result<()> {
        self.set_int_option(SOL_NETLINK, NETLINK_PKTINFO, 1)
    }

    /// Send one datagram to the kernel.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.inner.send(buf, Msg::empty())
    }

    /// Receive one datagram into `buf` (WouldBlock when the socket is
    /// empty). A datagram larger than `buf` is an error, never silently
    /// truncated.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.recv_raw(buf, libc::MSG_TRUNC)?;
        fits(n, buf.len())
    }

    /// `recv(2)` without the sender's address: neli's `recv` is a
    /// `recvfrom` that has the kernel copy the address out on every read,
    /// and the gateway never uses it (a request socket takes only the
    /// kernel's answers).
    fn recv_raw(&self, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
        // SAFETY: buf is valid for writes of buf.len() bytes for the call.
        let n = unsafe { libc::recv(self.inner.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
        usize::try_from(n).map_err(|_| io::Error::last_os_error())
    }

    /// Copy the datagram at the head of the queue into `buf` and leave it
    /// queued (MSG_PEEK); as [`NlSocket::recv`] otherwise. For a dump read
    /// with [`NlSocket::discard`]: see `pool.rs`, `Lease::peek_dump`.
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.recv_raw(buf, libc::MSG_PEEK | libc::MSG_TRUNC)?;
        fits(n, buf.len())
    }

    /// Take the datagram at the head of the queue without copying it (one
    /// already read with [`NlSocket::peek`]); its length. WouldBlock when
    /// the socket is empty.
    pub fn discard(&self) -> io::Result<usize> {
        self.recv_raw(&mut [], libc::MSG_TRUNC)
    }

    /// Receive one datagram into `buf`, with the multicast group it was
    /// sent to (0 for unicast; needs [`NlSocket::enable_pktinfo`]). A
    /// datagram larger than `buf` is an error, never silently truncated.
    pub fn recv_with_group(&self, buf: &mut [u8]) -> io::Result<(usize, u32)> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // Room for one cmsg carrying a u32 (struct nl_pktinfo), aligned.
        let mut control = [0u64; 4];
        // SAFETY: msghdr is plain data; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control);
        // SAFETY: msg points at iov (valid for buf.len() bytes) and control,
        // both alive for the call.
        let n = unsafe { libc::recvmsg(self.inner.as_raw_fd(), &raw mut msg, libc::MSG_TRUNC) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut group = 0u32;
        // SAFETY: the CMSG_* macros walk the control buffer the kernel filled
        // in, within msg_controllen.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&raw const msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == SOL_NETLINK && (*cmsg).cmsg_type == NETLINK_PKTINFO {
                    group = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<u32>());
                }
                cmsg = libc::CMSG_NXTHDR(&raw const msg, cmsg);
            }
        }
        Ok((fits(n as usize, buf.len())?, group))
    }

    /// Register the socket in the runtime's epoll set for good: for a
    /// listener, whose reader task waits for notifications.
    pub fn into_async(self) -> io::Result<AsyncFd<Self>> {
        // SAFETY: the AsyncFd owns the socket, which owns its descriptor and
        // never replaces it, so the descriptor stays open and the same for
        // the AsyncFd's whole life.
        unsafe { AsyncFd::register_with_interest(self, Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))
    }

    /// Wait until the socket has something to read, at most `limit`; false
    /// when the time ran out.
    ///
    /// The socket joins the runtime's epoll set only for this wait: a
    /// socket kept in epoll between requests wakes an idle worker thread
    /// for every datagram, replies its owner has already read included.
    pub async fn readable(&self, limit: Duration) -> io::Result<bool> {
        // SAFETY: the AsyncFd lives only inside this function, while `self`
        // (which owns the descriptor) is borrowed, so the descriptor stays
        // open and the same for the whole registration; dropping the
        // AsyncFd removes it from epoll before `self` can be closed.
        let registered =
            unsafe { AsyncFd::register_with_interest(self.inner.as_raw_fd(), Interest::READABLE) }
                .map_err(|e| io::Error::other(e.to_string()))?;
        match tokio::time::timeout(limit, registered.readable()).await {
            Ok(ready) => ready.map(|_| true),
            Err(_) => Ok(false),
        }
    }
}

fn fits(n: usize, room: usize) -> io::Result<usize> {
    if n > room {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("netlink datagram of {n} bytes exceeds the {room}-byte receive buffer"),
        ));
    }
    Ok(n)
}

impl AsRawFd for NlSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use genl_wire::GenlHeader;
    use genl_wire::consts::{NLM_F_ACK, NLM_F_REQUEST};
    use genl_wire::ctrl::{CTRL_CMD_GETFAMILY, getfamily_by_name};
    use genl_wire::message::genl_request;

    use super::*;

    /// Send nlctrl's GETFAMILY for nlctrl with an ACK: the kernel queues a
    /// reply and the ACK, two datagrams, before `send` returns.
    fn ask_nlctrl_about_itself(sock: &NlSocket) {
        let genl = GenlHeader {
            cmd: CTRL_CMD_GETFAMILY,
            version: 2,
        };
        let attrs = getfamily_by_name("nlctrl").unwrap();
        sock.send(&genl_request(0x10, NLM_F_REQUEST | NLM_F_ACK, 1, genl, &attrs))
            .unwrap();
    }

    /// The wait a request makes when its reply is not there yet: an empty
    /// socket is not readable, one with the kernel's answer queued is, and
    /// the socket can join epoll again for a later wait.
    #[tokio::test]
    async fn a_wait_for_readability_sees_a_queued_reply_and_can_be_repeated() {
        let sock = NlSocket::open().unwrap();
        assert!(
            !sock.readable(Duration::from_millis(50)).await.unwrap(),
            "nothing was sent"
        );
        ask_nlctrl_about_itself(&sock);
        assert!(sock.readable(Duration::from_secs(10)).await.unwrap());
        let mut buf = vec![0; 64 << 10];
        let n = sock.recv(&mut buf).unwrap();
        assert!(n > 0);
        // The ACK is still queued: a second registration reports it too.
        assert!(sock.readable(Duration::from_secs(10)).await.unwrap());
        sock.recv(&mut buf).unwrap();
        let empty = sock.recv(&mut buf).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
    }

    /// Reads report a datagram's whole length, as the kernel's header
    /// gives it: a peek leaves it queued, a buffer too small for it is an
    /// error naming both sizes (never a cut datagram), and a discard
    /// takes the next one without a buffer.
    #[tokio::test]
    async fn reads_report_the_kernels_length_and_refuse_a_short_buffer() {
        let sock = NlSocket::open().unwrap();
        ask_nlctrl_about_itself(&sock);
        assert!(sock.readable(Duration::from_secs(10)).await.unwrap());
        let mut buf = vec![0; 64 << 10];
        let n = sock.peek(&mut buf).unwrap();
        // The reply is one message: its nlmsg_len is the datagram's length.
        let nlmsg_len = u32::from_ne_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(n, nlmsg_len);
        assert!(n > 16, "nlctrl's description is more than a header");
        assert_eq!(sock.peek(&mut buf).unwrap(), n, "a peek leaves it queued");

        let short = sock.recv(&mut [0; 16]).unwrap_err();
        assert_eq!(short.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            short.to_string(),
            format!("netlink datagram of {n} bytes exceeds the 16-byte receive buffer")
        );
        // That read took the reply; the ACK is next: a struct nlmsgerr of
        // 36 bytes (header, error 0, the request's header; a success never
        // echoes the request's payload).
        assert_eq!(sock.discard().unwrap(), 36);
        let empty = sock.discard().unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
    }
}
