//! Whole netlink messages: splitting a receive buffer, building genl
//! requests, and decoding NLMSG_ERROR (with extended ack) and NLMSG_DONE.

use crate::attr::Attrs;
use crate::consts::{
    NLM_F_ACK_TLVS, NLM_F_CAPPED, NLMSG_DONE, NLMSG_ERROR, NLMSGERR_ATTR_MSG, NLMSGERR_ATTR_OFFS,
};
use crate::header::{GenlHeader, NlHeader};
use crate::{WireError, align4};

/// One netlink message borrowed from a receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// The netlink header.
    pub header: NlHeader,
    /// Everything after the netlink header, up to `header.len`.
    pub payload: &'a [u8],
}

impl<'a> Message<'a> {
    /// For a genl message: its genl header and what follows it (the
    /// family's user header, then attributes).
    pub fn genl(&self) -> Result<(GenlHeader, &'a [u8]), WireError> {
        let genl = GenlHeader::parse(self.payload)?;
        Ok((genl, &self.payload[GenlHeader::SIZE..]))
    }

    /// What the message says about the end of a request: `None` for a data
    /// message, `Some(Ok(()))` for an ACK or a successful NLMSG_DONE, and
    /// `Some(Err(_))` for a kernel error.
    pub fn completion(&self) -> Result<Option<Result<(), KernelError>>, WireError> {
        match self.header.kind {
            NLMSG_ERROR => KernelError::parse(self.header.flags, self.payload).map(|e| match e {
                None => Some(Ok(())),
                Some(e) => Some(Err(e)),
            }),
            NLMSG_DONE => {
                // DONE carries an int status (and, since 6.x, ext-ack TLVs).
                let status = match self.payload.get(..4) {
                    Some(b) => i32::from_ne_bytes([b[0], b[1], b[2], b[3]]),
                    None => 0,
                };
                if status < 0 {
                    let mut err = KernelError {
                        errno: status.saturating_neg(),
                        message: None,
                        offset: None,
                    };
                    if self.header.flags & NLM_F_ACK_TLVS != 0 {
                        err.read_tlvs(&self.payload[4..])?;
                    }
                    Ok(Some(Err(err)))
                } else {
                    Ok(Some(Ok(())))
                }
            }
            _ => Ok(None),
        }
    }
}

/// Iterates the messages packed in one datagram.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Messages<'a> {
    /// Iterate the messages in `buf` (one `recv` worth of bytes).
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            rest: buf,
            failed: false,
        }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Message<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let header = match NlHeader::parse(self.rest) {
            Ok(h) => h,
            Err(e) => {
                self.failed = true;
                return Some(Err(e));
            }
        };
        let len = header.len as usize;
        if len < NlHeader::SIZE || len > self.rest.len() {
            self.failed = true;
            return Some(Err(WireError::BadLength {
                what: "netlink message",
                len,
                available: self.rest.len(),
            }));
        }
        let msg = Message {
            header,
            payload: &self.rest[NlHeader::SIZE..len],
        };
        self.rest = &self.rest[align4(len).min(self.rest.len())..];
        Some(Ok(msg))
    }
}

/// An error the kernel answered with, decoded from NLMSG_ERROR or
/// NLMSG_DONE, extended-ack details included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError {
    /// The positive errno.
    pub errno: i32,
    /// NLMSGERR_ATTR_MSG: the kernel's explanation.
    pub message: Option<String>,
    /// NLMSGERR_ATTR_OFFS: offset of the offending attribute in the request.
    pub offset: Option<u32>,
}

impl KernelError {
    /// Decode the payload of an NLMSG_ERROR. `Ok(None)` is an ACK.
    pub fn parse(flags: u16, payload: &[u8]) -> Result<Option<Self>, WireError> {
        let code = payload.get(..4).ok_or(WireError::Truncated {
            what: "nlmsgerr",
            need: 4,
            have: payload.len(),
        })?;
        let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
        if code == 0 {
            return Ok(None);
        }
        let mut err = KernelError {
            errno: code.saturating_neg(),
            message: None,
            offset: None,
        };
        if flags & NLM_F_ACK_TLVS != 0 {
            // After the error code comes the offending request's header, and
            // its payload too unless NETLINK_CAP_ACK capped it.
            let echoed = NlHeader::parse(&payload[4..])?;
            let skip = if flags & NLM_F_CAPPED != 0 {
                NlHeader::SIZE
            } else {
                align4(echoed.len as usize)
            };
            let tlvs = payload.get(4 + skip..).ok_or(WireError::BadLength {
                what: "echoed request",
                len: skip,
                available: payload.len() - 4,
            })?;
            err.read_tlvs(tlvs)?;
        }
        Ok(Some(err))
    }

    fn read_tlvs(&mut self, tlvs: &[u8]) -> Result<(), WireError> {
        for attr in Attrs::new(tlvs) {
            let attr = attr?;
            match attr.kind() {
                NLMSGERR_ATTR_MSG => self.message = Some(attr.str()?.to_owned()),
                NLMSGERR_ATTR_OFFS => self.offset = Some(attr.u32()?),
                _ => {}
            }
        }
        Ok(())
    }

    /// The errno's symbolic name, e.g. "EEXIST"; `E?` for a number Linux
    /// does not define.
    pub fn errno_name(&self) -> &'static str {
        crate::errno::errno_name(self.errno).unwrap_or("E?")
    }
}

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "kernel error {} (errno {})", self.errno_name(), self.errno)?;
        if let Some(m) = &self.message {
            write!(f, ": {m}")?;
        }
        if let Some(o) = self.offset {
            write!(f, " (attribute at offset {o})")?;
        }
        Ok(())
    }
}

impl std::error::Error for KernelError {}

/// Build a complete genl request: netlink header, genl header, payload.
pub fn genl_request(family_id: u16, flags: u16, seq: u32, genl: GenlHeader, payload: &[u8]) -> Vec<u8> {
    let len = NlHeader::SIZE + GenlHeader::SIZE + payload.len();
    let mut out = Vec::with_capacity(align4(len));
    NlHeader {
        len: len as u32,
        kind: family_id,
        flags,
        seq,
        portid: 0,
    }
    .write(&mut out);
    genl.write(&mut out);
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::AttrWriter;
    use crate::consts::NLM_F_REQUEST;

    fn error_message(code: i32, flags: u16, tlvs: &[u8]) -> Vec<u8> {
        let request = genl_request(0x20, NLM_F_REQUEST, 5, GenlHeader::default(), &[]);
        let mut payload = code.to_ne_bytes().to_vec();
        payload.extend_from_slice(&request[..NlHeader::SIZE]);
        payload.extend_from_slice(tlvs);
        let mut out = Vec::new();
        NlHeader {
            len: (NlHeader::SIZE + payload.len()) as u32,
            kind: NLMSG_ERROR,
            flags,
            seq: 5,
            portid: 0,
        }
        .write(&mut out);
        out.extend_from_slice(&payload);
        out
    }

    #[test]
    fn ack_and_ext_ack_errors_decode() {
        let ack = error_message(0, NLM_F_CAPPED, &[]);
        let msg = Messages::new(&ack).next().unwrap().unwrap();
        assert_eq!(msg.completion(), Ok(Some(Ok(()))));

        let mut w = AttrWriter::new();
        w.put_str(NLMSGERR_ATTR_MSG, "address already in use").unwrap();
        w.put_u32(NLMSGERR_ATTR_OFFS, 20);
        let tlvs = w.finish();
        let err = error_message(-17, NLM_F_CAPPED | NLM_F_ACK_TLVS, &tlvs);
        let msg = Messages::new(&err).next().unwrap().unwrap();
        let e = msg.completion().unwrap().unwrap().unwrap_err();
        assert_eq!(e.errno, 17);
        assert_eq!(e.message.as_deref(), Some("address already in use"));
        assert_eq!(e.offset, Some(20));
        assert_eq!(
            e.to_string(),
            "kernel error EEXIST (errno 17): address already in use (attribute at offset 20)"
        );
    }

    #[test]
    fn the_most_negative_error_code_does_not_overflow() {
        // Found by the fuzzer: an NLMSG_ERROR carrying i32::MIN.
        let msg = error_message(i32::MIN, 0, &[]);
        let m = Messages::new(&msg).next().unwrap().unwrap();
        assert_eq!(m.completion().unwrap().unwrap().unwrap_err().errno, i32::MAX);
        let mut done = Vec::new();
        NlHeader {
            len: 20,
            kind: NLMSG_DONE,
            ..Default::default()
        }
        .write(&mut done);
        done.extend_from_slice(&i32::MIN.to_ne_bytes());
        let m = Messages::new(&done).next().unwrap().unwrap();
        assert!(m.completion().unwrap().unwrap().is_err());
    }

    #[test]
    fn truncated_datagrams_are_errors() {
        let req = genl_request(
            0x10,
            NLM_F_REQUEST,
            1,
            GenlHeader { cmd: 3, version: 1 },
            &[1, 2, 3, 4],
        );
        for cut in 0..req.len() {
            let res: Result<Vec<_>, _> = Messages::new(&req[..cut]).collect();
            assert!(cut == 0 || res.is_err(), "cut {cut}");
        }
        let whole: Vec<_> = Messages::new(&req).collect::<Result<_, _>>().unwrap();
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].genl().unwrap().0, GenlHeader { cmd: 3, version: 1 });
    }
}
