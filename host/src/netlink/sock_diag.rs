//! Who owns the other end of a loopback TCP connection: one
//! `SOCK_DIAG_BY_FAMILY` request (`<linux/inet_diag.h>`) for the client's
//! socket, whose answer carries its owner's uid. The API's TCP listener
//! uses it to give loopback clients the same per-user share as the Unix
//! socket's, where `SO_PEERCRED` says it.

use std::io;
use std::net::{IpAddr, SocketAddr};

use genl_wire::consts::NLM_F_REQUEST;
use genl_wire::{Messages, NlHeader};
use neli::consts::socket::{Msg, NlFamily};
use neli::utils::Groups;

/// `SOCK_DIAG_BY_FAMILY` (`<linux/sock_diag.h>`).
const SOCK_DIAG_BY_FAMILY: u16 = 20;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, then
/// `struct inet_diag_sockid` (48 bytes).
const REQ_LEN: usize = 8 + SOCKID_LEN;
/// `struct inet_diag_sockid`: sport, dport (big-endian), src[4], dst[4]
/// (big-endian words), if, cookie[2].
const SOCKID_LEN: usize = 48;
/// `idiag_uid` in `struct inet_diag_msg`: after family, state, timer,
/// retrans, the sockid, expires, rqueue and wqueue.
const MSG_UID_OFFSET: usize = 4 + SOCKID_LEN + 12;
/// `TCP_LISTEN` in `idiag_state` (`<net/tcp_states.h>`).
const TCP_LISTEN: u8 = 10;
/// `INET_DIAG_NOCOOKIE`: look the socket up by its addresses.
const NO_COOKIE: u32 = u32::MAX;

/// The uid owning the local TCP socket at `peer` that is connected to
/// `local`, if the kernel knows one (a client in this network namespace).
pub fn tcp_peer_uid(local: SocketAddr, peer: SocketAddr) -> io::Result<u32> {
    let socket = neli::socket::NlSocket::connect(NlFamily::SockOrInetDiag, None, Groups::empty())?;
    // The kernel answers inside sendmsg, so the answer is queued when the
    // send returns; a read that would wait is a missing answer, never a
    // wait for a client.
    socket.nonblock()?;
    let ask = |interface: u32| -> io::Result<u32> {
        socket.send(&request(local, peer, interface)?, Msg::empty())?;
        let mut buf = [0u8; 512];
        let (n, _) = socket.recv(&mut buf[..], Msg::empty())?;
        parse_uid(buf.get(..n).unwrap_or_default())
    };
    // A socket bound to a device (SO_BINDTODEVICE, open to any user) is
    // found only by that device's index, here loopback's.
    ask(0).or_else(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => ask(LOOPBACK_INDEX),
        _ => Err(e),
    })
}

/// Loopback's interface index: always 1, the first device of a namespace.
const LOOPBACK_INDEX: u32 = 1;

/// The request for the client's socket: its own address first (`src`),
/// the listener's second (`dst`), as the kernel's lookup reads them.
fn request(local: SocketAddr, peer: SocketAddr, interface: u32) -> io::Result<Vec<u8>> {
    let (family, src, dst) = match (peer.ip(), local.ip()) {
        (IpAddr::V4(p), IpAddr::V4(l)) => {
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src[..4].copy_from_slice(&p.octets());
            dst[..4].copy_from_slice(&l.octets());
            (libc::AF_INET, src, dst)
        }
        (IpAddr::V6(p), IpAddr::V6(l)) => (libc::AF_INET6, p.octets(), l.octets()),
        _ => {
            return Err(io::Error::other(
                "the two ends of a connection in different address families",
            ));
        }
    };
    let len = NlHeader::SIZE + REQ_LEN;
    let mut m = Vec::with_capacity(len);
    NlHeader {
        len: u32::try_from(len).unwrap_or(u32::MAX),
        kind: SOCK_DIAG_BY_FAMILY,
        flags: NLM_F_REQUEST,
        seq: 1,
        portid: 0,
    }
    .write(&mut m);
    m.push(u8::try_from(family).unwrap_or(u8::MAX));
    m.push(u8::try_from(libc::IPPROTO_TCP).unwrap_or(u8::MAX));
    m.push(0); // no extensions
    m.push(0);
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // any state
    m.extend_from_slice(&peer.port().to_be_bytes());
    m.extend_from_slice(&local.port().to_be_bytes());
    m.extend_from_slice(&src);
    m.extend_from_slice(&dst);
    m.extend_from_slice(&interface.to_ne_bytes()); // 0: not bound to one
    m.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    m.extend_from_slice(&NO_COOKIE.to_ne_bytes());
    Ok(m)
}

/// The uid of the answer's first message, or the kernel's error.
fn parse_uid(answer: &[u8]) -> io::Result<u32> {
    let malformed = |e: genl_wire::WireError| io::Error::other(format!("a malformed sock_diag answer: {e}"));
    let msg = Messages::new(answer)
        .next()
        .ok_or_else(|| io::Error::other("an empty sock_diag answer"))?
        .map_err(malformed)?;
    if let Some(Err(e)) = msg.completion().map_err(malformed)? {
        return Err(io::Error::from_raw_os_error(e.errno));
    }
    match msg.header.kind {
        // The kernel's lookup falls back to a listening socket when no
        // connected one matches: that is not the client's.
        SOCK_DIAG_BY_FAMILY if msg.payload.get(1) == Some(&TCP_LISTEN) => Err(io::Error::other(
            "sock_diag found a listening socket, not the client's",
        )),
        SOCK_DIAG_BY_FAMILY => msg
            .payload
            .get(MSG_UID_OFFSET..MSG_UID_OFFSET + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
            .ok_or_else(|| io::Error::other("a truncated sock_diag answer")),
        other => Err(io::Error::other(format!(
            "an unexpected sock_diag answer (type {other})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The uid the kernel names for both ends of a loopback connection this
    /// process made is this process's, as /proc says.
    #[test]
    fn a_loopback_clients_uid_is_its_owners() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, peer) = listener.accept().unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let uid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(tcp_peer_uid(server.local_addr().unwrap(), peer).unwrap(), uid);
        // A connection that does not exist is the kernel's ENOENT.
        drop((client, server));
        let gone: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let e = tcp_peer_uid(listener.local_addr().unwrap(), gone).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}");
    }

    #[test]
    fn truncated_answers_are_errors() {
        assert!(parse_uid(&[]).is_err());
        let mut short = Vec::new();
        NlHeader {
            len: 20,
            kind: SOCK_DIAG_BY_FAMILY,
            ..NlHeader::default()
        }
        .write(&mut short);
        short.extend_from_slice(&[0; 4]);
        assert!(parse_uid(&short).is_err());
    }
}
