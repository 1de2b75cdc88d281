//! The kernel side: generic netlink sockets, requests with replies routed by
//! sequence number, and family resolution through nlctrl.

mod requester;
mod socket;

pub use requester::{OwnedMessage, RequestError, Requester};
pub use socket::NlSocket;
