//! The floor: plain blocking netlink socket calls, requests built by hand
//! with the wire crate, no gateway code on the path.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use genl_wire::consts::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR};
use genl_wire::message::genl_request;
use genl_wire::{GenlHeader, Messages};

/// A blocking generic netlink socket.
pub struct Raw {
    fd: OwnedFd,
    buf: Vec<u8>,
    seq: u32,
}

impl Raw {
    /// Open a socket, in `netns` when given (on a short-lived thread).
    pub fn open(netns: Option<&std::fs::File>) -> io::Result<Self> {
        let open = || -> io::Result<OwnedFd> {
            // SAFETY: plain socket(2); the fd is owned from here on.
            let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 16) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: fresh fd.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let fd = match netns {
            None => open()?,
            Some(ns) => {
                let ns = ns.as_raw_fd();
                std::thread::scope(|s| {
                    s.spawn(|| {
                        // SAFETY: setns on this thread only.
                        if unsafe { libc::setns(ns, libc::CLONE_NEWNET) } != 0 {
                            return Err(io::Error::last_os_error());
                        }
                        open()
                    })
                    .join()
                    .map_err(|_| io::Error::other("setns thread panicked"))?
                })?
            }
        };
        let size: libc::c_int = 4 << 20;
        // SAFETY: valid int option.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const size).cast(),
                4,
            );
        }
        Ok(Self {
            fd,
            buf: vec![0; 256 << 10],
            seq: 1,
        })
    }

    /// One datagram into the buffer.
    fn recv(&mut self) -> io::Result<usize> {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                self.buf.len(),
                0,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn send(&mut self, family: u16, flags: u16, cmd: u8, version: u8, attrs: &[u8]) -> io::Result<u32> {
        self.seq += 1;
        let req = genl_request(family, flags, self.seq, GenlHeader { cmd, version }, attrs);
        // SAFETY: sockaddr_nl all-zero is the kernel's address.
        let mut addr: libc::sockaddr_nl = unsafe { zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: req and addr are valid for the call.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                req.as_ptr().cast(),
                req.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(self.seq)
        }
    }

    /// Receive until the request `seq` completes; returns its data messages.
    fn collect(&mut self, seq: u32) -> io::Result<usize> {
        let mut data = 0;
        loop {
            let n = self.recv()?;
            for m in Messages::new(&self.buf[..n]) {
                let m = m.map_err(io::Error::other)?;
                if m.header.seq != seq {
                    continue;
                }
                match m.header.kind {
                    NLMSG_ERROR | NLMSG_DONE => {
                        if let Ok(Some(Err(e))) = m.completion() {
                            return Err(io::Error::other(e.to_string()));
                        }
                        return Ok(data);
                    }
                    _ => data += 1,
                }
            }
        }
    }

    /// A `do` with ACK; returns the number of reply messages.
    pub fn do_request(&mut self, family: u16, cmd: u8, version: u8, attrs: &[u8]) -> io::Result<usize> {
        let seq = self.send(family, NLM_F_REQUEST | NLM_F_ACK, cmd, version, attrs)?;
        self.collect(seq)
    }

    /// A dump; returns each data message's attributes (after the genl
    /// header), copied out: the input of the decoder benchmarks.
    pub fn dump_payloads(&mut self, family: u16, cmd: u8, version: u8) -> io::Result<Vec<Vec<u8>>> {
        let seq = self.send(family, NLM_F_REQUEST | NLM_F_DUMP, cmd, version, &[])?;
        let mut out = Vec::new();
        loop {
            let n = self.recv()?;
            for m in Messages::new(&self.buf[..n]) {
                let m = m.map_err(io::Error::other)?;
                if m.header.seq != seq {
                    continue;
                }
                match m.header.kind {
                    NLMSG_ERROR | NLMSG_DONE => return Ok(out),
                    _ => out.push(m.payload.get(GenlHeader::SIZE..).unwrap_or_default().to_vec()),
                }
            }
        }
    }

    /// A dump; returns the number of messages.
    pub fn dump(&mut self, family: u16, cmd: u8, version: u8, attrs: &[u8]) -> io::Result<usize> {
        let seq = self.send(family, NLM_F_REQUEST | NLM_F_DUMP, cmd, version, attrs)?;
        self.collect(seq)
    }

    /// Resolve a family's id.
    pub fn family_id(&mut self, name: &str) -> io::Result<u16> {
        let attrs = genl_wire::ctrl::getfamily_by_name(name).map_err(io::Error::other)?;
        let seq = self.send(0x10, NLM_F_REQUEST, 3, 2, &attrs)?;
        let n = self.recv()?;
        for m in Messages::new(&self.buf[..n]).flatten() {
            if m.header.seq == seq
                && let Ok((_, rest)) = m.genl()
                && let Ok(info) = genl_wire::FamilyInfo::decode(rest)
            {
                return Ok(info.id);
            }
        }
        Err(io::Error::other(format!("no family {name}")))
    }

    /// Register for TASKSTATS exit records of `cpumask`, then count the
    /// records that arrive for `secs` seconds.
    pub fn taskstats_listen(&mut self, id: u16, cpumask: &str) -> io::Result<()> {
        let mut w = genl_wire::AttrWriter::new();
        w.put_str(3, cpumask).map_err(io::Error::other)?;
        self.do_request(id, 1, 1, &w.finish()).map(drop)
    }

    /// Receive whatever arrives within `timeout`; returns the pids of exit
    /// records (TASKSTATS_TYPE_AGGR_PID).
    pub fn recv_exits(&mut self, timeout: std::time::Duration) -> io::Result<Vec<u32>> {
        let tv = libc::timeval {
            tv_sec: timeout.as_secs() as i64,
            tv_usec: i64::from(timeout.subsec_micros()),
        };
        // SAFETY: valid timeval option.
        unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as u32,
            );
        }
        let n = match self.recv() {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut pids = Vec::new();
        for m in Messages::new(&self.buf[..n]).flatten() {
            let Ok((_, rest)) = m.genl() else { continue };
            for a in genl_wire::Attrs::new(rest).flatten() {
                if a.kind() == 4 {
                    for inner in a.nested().flatten() {
                        if inner.kind() == 1
                            && let Ok(pid) = inner.u32()
                        {
                            pids.push(pid);
                        }
                    }
                }
            }
        }
        Ok(pids)
    }
}
