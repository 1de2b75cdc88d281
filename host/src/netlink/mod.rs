//! The kernel side: generic netlink sockets (neli's, with the options it
//! lacks set in `socket.rs`), a bounded pool of request sockets, listener
//! sockets for notifications, and family resolution through nlctrl; and
//! `sock_diag`, which names the user at the other end of a loopback TCP
//! connection to the API.

mod dump_parts;
mod listener_socket;
mod pool;
mod reader_threads;
mod requester;
mod sock_diag;
mod socket;

pub use dump_parts::DumpParts;
pub use pool::DEFAULT_REQUEST_SOCKETS;
pub use requester::{
    ListenerStats, Notification, NotificationSink, OwnedMessage, RequestBounds, RequestError, Requester,
    SocketOptions,
};
pub use sock_diag::tcp_peer_uid;
pub use socket::NlSocket;
