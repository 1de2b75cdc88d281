//! The netlink header (`struct nlmsghdr`) and the generic netlink header
//! (`struct genlmsghdr`). Both are in host byte order.

use crate::WireError;

/// `struct nlmsghdr`: 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NlHeader {
    /// Length of the whole message, header included.
    pub len: u32,
    /// Message type: a family id, or one of the NLMSG_* control types.
    pub kind: u16,
    /// NLM_F_* flags.
    pub flags: u16,
    /// Sequence number.
    pub seq: u32,
    /// Sender's port id.
    pub portid: u32,
}

impl NlHeader {
    /// Encoded size.
    pub const SIZE: usize = 16;

    /// Read a header from the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        let b: &[u8; Self::SIZE] =
            buf.get(..Self::SIZE)
                .and_then(|s| s.try_into().ok())
                .ok_or(WireError::Truncated {
                    what: "netlink header",
                    need: Self::SIZE,
                    have: buf.len(),
                })?;
        Ok(Self {
            len: u32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
            kind: u16::from_ne_bytes([b[4], b[5]]),
            flags: u16::from_ne_bytes([b[6], b[7]]),
            seq: u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            portid: u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
        })
    }

    /// Append the encoded header to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.len.to_ne_bytes());
        out.extend_from_slice(&self.kind.to_ne_bytes());
        out.extend_from_slice(&self.flags.to_ne_bytes());
        out.extend_from_slice(&self.seq.to_ne_bytes());
        out.extend_from_slice(&self.portid.to_ne_bytes());
    }
}

/// `struct genlmsghdr`: 4 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GenlHeader {
    /// Family-specific command.
    pub cmd: u8,
    /// Family interface version.
    pub version: u8,
}

impl GenlHeader {
    /// Encoded size (two bytes are reserved).
    pub const SIZE: usize = 4;

    /// Read a header from the start of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, WireError> {
        match buf.get(..Self::SIZE) {
            Some(b) => Ok(Self {
                cmd: b[0],
                version: b[1],
            }),
            None => Err(WireError::Truncated {
                what: "genl header",
                need: Self::SIZE,
                have: buf.len(),
            }),
        }
    }

    /// Append the encoded header to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[self.cmd, self.version, 0, 0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nl_header_round_trips() {
        let h = NlHeader {
            len: 36,
            kind: 0x10,
            flags: 0x305,
            seq: 7,
            portid: 99,
        };
        let mut out = Vec::new();
        h.write(&mut out);
        assert_eq!(out.len(), NlHeader::SIZE);
        assert_eq!(NlHeader::parse(&out), Ok(h));
    }

    #[test]
    fn short_headers_are_errors() {
        assert!(NlHeader::parse(&[0; 15]).is_err());
        assert!(GenlHeader::parse(&[1, 2, 0]).is_err());
    }
}
