//! The kernel side: generic netlink sockets (neli's, with the options it
//! lacks set in `socket.rs`), a bounded pool of request sockets, listener
//! sockets for notifications, and family resolution through nlctrl.

mod listener_socket;
mod pool;
mod requester;
mod socket;

pub use pool::DEFAULT_REQUEST_SOCKETS;
pub use requester::{
    DumpParts, ListenerStats, Notification, NotificationSink, OwnedMessage, RequestBounds, RequestError,
    Requester, SocketOptions,
};
pub use socket::NlSocket;
