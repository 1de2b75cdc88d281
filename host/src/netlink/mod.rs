//! The kernel side: generic netlink sockets, requests with replies routed by
//! sequence number, and family resolution through nlctrl.

mod requester;
mod socket;

pub use requester::{
    ListenerStats, Notification, NotificationSink, OwnedMessage, RequestBounds, RequestError, Requester,
    SocketOptions,
};
pub use socket::NlSocket;
