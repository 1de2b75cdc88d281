//! A non-blocking `AF_NETLINK` / `NETLINK_GENERIC` socket: the few system
//! calls the gateway needs, each checked, nothing more.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use genl_wire::consts::{NETLINK_ADD_MEMBERSHIP, NETLINK_GENERIC, NETLINK_PKTINFO, SOL_NETLINK};

/// An open, bound generic netlink socket.
#[derive(Debug)]
pub struct NlSocket {
    fd: OwnedFd,
    portid: u32,
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

    /// Open and bind a socket; the kernel assigns the port id.
    pub fn open() -> io::Result<Self> {
        // SAFETY: plain socket(2); the returned fd is owned from here on.
        let fd = check(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                NETLINK_GENERIC,
            )
        })?;
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        let len = size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // SAFETY: addr is a valid sockaddr_nl of `len` bytes.
        check(unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) })?;
        let mut len = len;
        // SAFETY: addr and len describe a writable sockaddr_nl buffer.
        check(unsafe { libc::getsockname(fd.as_raw_fd(), (&raw mut addr).cast(), &mut len) })?;
        Ok(Self {
            fd,
            portid: addr.nl_pid,
        })
    }

    /// The port id the kernel assigned.
    pub fn portid(&self) -> u32 {
        self.portid
    }

    /// Set an integer socket option.
    pub fn set_option(&self, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
        // SAFETY: value is a valid c_int for the duration of the call.
        check(unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&raw const value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        })
        .map(drop)
    }

    /// Ask for a receive buffer of `bytes`: SO_RCVBUFFORCE (root may exceed
    /// rmem_max), falling back to SO_RCVBUF.
    pub fn set_receive_buffer(&self, bytes: usize) -> io::Result<()> {
        let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        self.set_option(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes)
            .or_else(|_| self.set_option(libc::SOL_SOCKET, libc::SO_RCVBUF, bytes))
    }

    /// Join multicast group `group`.
    pub fn join_group(&self, group: u32) -> io::Result<()> {
        let group = libc::c_int::try_from(group).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        self.set_option(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
    }

    /// Send one datagram to the kernel.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: sockaddr_nl is plain data; zero is the kernel's address.
        let mut addr: libc::sockaddr_nl = unsafe { zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: buf is valid for reads of buf.len() bytes; addr is a valid sockaddr_nl.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast(),
                buf.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Receive one datagram into `buf`, with the multicast group it was
    /// sent to (0 for unicast; needs [`NlSocket::enable_pktinfo`]). A
    /// datagram larger than `buf` is an error, never silently truncated.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, u32)> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // Room for one cmsg carrying a u32 (struct nl_pktinfo), aligned.
        let mut control = [0u64; 4];
        // SAFETY: msghdr is plain data; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { zeroed() };
        msg.msg_iov = &raw mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control);
        // SAFETY: msg points at iov (valid for buf.len() bytes) and control,
        // both alive for the call.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &raw mut msg, libc::MSG_TRUNC) };
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
        let n = n as usize;
        if n > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "netlink datagram of {n} bytes exceeds the {}-byte receive buffer",
                    buf.len()
                ),
            ));
        }
        Ok((n, group))
    }

    /// Ask the kernel to say which multicast group each datagram came from.
    pub fn enable_pktinfo(&self) -> io::Result<()> {
        self.set_option(SOL_NETLINK, NETLINK_PKTINFO, 1)
    }
}

impl AsRawFd for NlSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
