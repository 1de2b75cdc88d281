//! The kernel side: generic netlink sockets, requests with replies routed by
//! sequence number, and family resolution through nlctrl.

mod dump_stream;
mod requester;
mod socket;

pub use dump_stream::{DumpStream, PartError};
pub use requester::{
    ListenerStats, Notification, NotificationSink, OwnedMessage, RequestBounds, RequestError, Requester,
    SocketOptions,
};
pub use socket::NlSocket;
