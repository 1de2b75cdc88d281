//! A non-blocking `AF_NETLINK` / `NETLINK_GENERIC` socket: the few system
//! calls the gateway needs, each checked, nothing more.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use genl_wire::consts::{NETLINK_ADD_MEMBERSHIP, NETLINK_GENERIC, SOL_NETLINK};

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
    pub fn set_option(
        &self,
        level: libc::c_int,
        name: libc::c_int,
        value: libc::c_int,
    ) -> io::Result<()> {
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
        let group = libc::c_int::try_from(group)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
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

    /// Receive one datagram into `buf`. A datagram larger than `buf` is an
    /// error (never silently truncated).
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: buf is valid for writes of buf.len() bytes.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
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
        Ok(n)
    }
}

impl AsRawFd for NlSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
