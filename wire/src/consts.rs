//! Numbers from `<linux/netlink.h>`, `<linux/genetlink.h>`.

/// `NETLINK_GENERIC` protocol number for `socket(2)`.
pub const NETLINK_GENERIC: i32 = 16;

/// Message types below this are netlink's own.
pub const NLMSG_NOOP: u16 = 1;
/// An error or an acknowledgement.
pub const NLMSG_ERROR: u16 = 2;
/// End of a dump.
pub const NLMSG_DONE: u16 = 3;
/// Data lost (never sent by genl families in practice).
pub const NLMSG_OVERRUN: u16 = 4;

/// A request.
pub const NLM_F_REQUEST: u16 = 0x1;
/// Part of a multi-part reply.
pub const NLM_F_MULTI: u16 = 0x2;
/// Ask for an acknowledgement.
pub const NLM_F_ACK: u16 = 0x4;
/// Echo the request back.
pub const NLM_F_ECHO: u16 = 0x8;
/// The dump was interrupted by a change; its content is inconsistent.
pub const NLM_F_DUMP_INTR: u16 = 0x10;
/// Dump was filtered as the request asked.
pub const NLM_F_DUMP_FILTERED: u16 = 0x20;
/// Return the whole table (GET requests).
pub const NLM_F_ROOT: u16 = 0x100;
/// Return all matching entries (GET requests).
pub const NLM_F_MATCH: u16 = 0x200;
/// A dump request.
pub const NLM_F_DUMP: u16 = NLM_F_ROOT | NLM_F_MATCH;
/// Replace an existing object (NEW requests).
pub const NLM_F_REPLACE: u16 = 0x100;
/// Do not touch an existing object (NEW requests).
pub const NLM_F_EXCL: u16 = 0x200;
/// Create if it does not exist (NEW requests).
pub const NLM_F_CREATE: u16 = 0x400;
/// Add to the end of a list (NEW requests).
pub const NLM_F_APPEND: u16 = 0x800;
/// On an NLMSG_ERROR: the request payload was not echoed (NETLINK_CAP_ACK).
pub const NLM_F_CAPPED: u16 = 0x100;
/// On an NLMSG_ERROR: extended-ack attributes follow.
pub const NLM_F_ACK_TLVS: u16 = 0x200;

/// Extended-ack attribute: the kernel's message (string).
pub const NLMSGERR_ATTR_MSG: u16 = 1;
/// Extended-ack attribute: offset of the offending attribute (u32).
pub const NLMSGERR_ATTR_OFFS: u16 = 2;

/// Socket option level for netlink.
pub const SOL_NETLINK: i32 = 270;
/// Join a multicast group.
pub const NETLINK_ADD_MEMBERSHIP: i32 = 1;
/// Leave a multicast group.
pub const NETLINK_DROP_MEMBERSHIP: i32 = 2;
/// Do not echo the request in error messages.
pub const NETLINK_CAP_ACK: i32 = 10;
/// Ask for extended acknowledgements.
pub const NETLINK_EXT_ACK: i32 = 11;
/// Report the multicast group of each datagram (struct nl_pktinfo).
pub const NETLINK_PKTINFO: i32 = 3;
/// Validate strictly (reject unknown attributes in dump requests).
pub const NETLINK_GET_STRICT_CHK: i32 = 12;

/// The nlctrl family's fixed id.
pub const GENL_ID_CTRL: u16 = 0x10;

/// Attribute flag: the payload is a nested attribute set.
pub const NLA_F_NESTED: u16 = 1 << 15;
/// Attribute flag: the payload is in network byte order.
pub const NLA_F_NET_BYTEORDER: u16 = 1 << 14;
/// Mask that strips the two flags above.
pub const NLA_TYPE_MASK: u16 = !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);

/// Op flag: needs CAP_NET_ADMIN.
pub const GENL_ADMIN_PERM: u32 = 0x01;
/// Op flag: has a `do` handler.
pub const GENL_CMD_CAP_DO: u32 = 0x02;
/// Op flag: has a `dump` handler.
pub const GENL_CMD_CAP_DUMP: u32 = 0x04;
/// Op flag: has an attribute policy.
pub const GENL_CMD_CAP_HASPOL: u32 = 0x08;
/// Op flag: needs CAP_NET_ADMIN in the user namespace.
pub const GENL_UNS_ADMIN_PERM: u32 = 0x10;
