//! The netlink and generic netlink wire format, shared by the gateway host
//! and the plugin SDK so that both read and write messages the same way.
//!
//! Everything here is plain bytes in, typed values out: no sockets, no
//! allocation on the read path, and every malformed input is a
//! [`WireError`], never a panic or an out-of-bounds read.

#![forbid(unsafe_code)]

pub mod attr;
pub mod consts;
pub mod ctrl;
pub mod errno;
pub mod header;
pub mod message;
pub mod policy;

pub use attr::{Attr, AttrWriter, Attrs, Nested};
pub use ctrl::{FamilyInfo, McastGroup, OpInfo};
pub use errno::errno_name;
pub use header::{GenlHeader, NlHeader};
pub use message::{KernelError, Message, Messages};

/// Why bytes could not be read as netlink.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than a header needs.
    #[error("truncated {what}: need {need} bytes, have {have}")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes the header needs.
        need: usize,
        /// Bytes that were there.
        have: usize,
    },
    /// A length field that points outside its container.
    #[error("bad {what} length {len} (container has {available} bytes)")]
    BadLength {
        /// What was being read.
        what: &'static str,
        /// The declared length.
        len: usize,
        /// Bytes available for it.
        available: usize,
    },
    /// An attribute payload of the wrong size for the requested type.
    #[error("attribute {kind}: expected {expected}, payload has {len} bytes")]
    BadPayload {
        /// The attribute type number.
        kind: u16,
        /// What the getter wanted.
        expected: &'static str,
        /// The payload's length.
        len: usize,
    },
    /// A string attribute that is not UTF-8.
    #[error("attribute {kind}: string is not valid UTF-8")]
    BadString {
        /// The attribute type number.
        kind: u16,
    },
}

/// Round `len` up to netlink's 4-byte alignment.
#[inline]
pub const fn align4(len: usize) -> usize {
    (len + 3) & !3
}
