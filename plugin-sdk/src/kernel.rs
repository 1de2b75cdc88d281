//! Requests to the kernel on the plugin's own family. The host checks every
//! command against the operator's allowlist before it is sent.

use genl_wire::{FamilyInfo, GenlHeader, Messages};

use crate::types::{Message, RequestError};

/// The plugin's family as the kernel registered it.
pub fn family() -> Result<FamilyInfo, RequestError> {
    backend::family()
}

/// A `do` request: command `cmd`, `payload` (user header then attributes).
/// Returns the kernel's replies (none for commands that only acknowledge).
pub fn do_request(cmd: u8, payload: &[u8]) -> Result<Vec<Message>, RequestError> {
    backend::do_request(cmd, 0, payload)
}

/// A `do` request with extra NLM_F_CREATE / EXCL / REPLACE / APPEND flags.
pub fn do_request_with_flags(cmd: u8, flags: u16, payload: &[u8]) -> Result<Vec<Message>, RequestError> {
    backend::do_request(cmd, flags, payload)
}

/// A dump request, collected: every message of the dump, until NLMSG_DONE.
/// The whole dump is then in the plugin's memory at once; for output to a
/// client, read it part by part with [`dump_start`] (or
/// [`crate::ops::dump_items`]) instead.
pub fn dump_request(cmd: u8, payload: &[u8]) -> Result<Vec<Message>, RequestError> {
    let mut dump = dump_start(cmd, payload)?;
    let mut out = Vec::new();
    while let Some(part) = dump.next_part()? {
        for m in part.messages() {
            out.push(m?.to_owned());
        }
    }
    Ok(out)
}

/// Start a dump of command `cmd` with `payload` (user header then
/// attributes); read it with [`Dump::next_part`]. The kernel produces the
/// next part only when this one has been read, so a dump of any size costs
/// a part or two of memory. Dropping the [`Dump`] abandons the rest.
pub fn dump_start(cmd: u8, payload: &[u8]) -> Result<Dump, RequestError> {
    backend::dump_start(cmd, payload).map(|inner| Dump { inner })
}

/// A dump in progress.
pub struct Dump {
    inner: backend::Dump,
}

impl Dump {
    /// The next part: the messages of one datagram as the kernel sent
    /// them; `None` at the end of the dump. An error ends the dump
    /// ([`RequestError::Interrupted`] when the kernel flagged it as
    /// interrupted by a concurrent change).
    pub fn next_part(&mut self) -> Result<Option<DumpPart>, RequestError> {
        self.inner.next_part().map(|p| p.map(|bytes| DumpPart { bytes }))
    }
}

impl Iterator for Dump {
    type Item = Result<DumpPart, RequestError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_part().transpose()
    }
}

/// One part of a dump: whole netlink messages in one buffer (one
/// allocation for the part, not one per message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpPart {
    bytes: Vec<u8>,
}

impl DumpPart {
    /// A part from raw netlink bytes (for tests and fakes).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self { bytes }
    }

    /// The raw bytes: netlink header, genl header, payload, per message.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The part's messages, borrowed from it.
    pub fn messages(&self) -> impl Iterator<Item = Result<PartMessage<'_>, RequestError>> {
        Messages::new(&self.bytes).map(|m| {
            let m = m.map_err(|e| RequestError::Io(format!("malformed dump part: {e}")))?;
            let (genl, payload) = m
                .genl()
                .map_err(|e| RequestError::Io(format!("a dump message without a genl header: {e}")))?;
            Ok(PartMessage {
                seq: m.header.seq,
                portid: m.header.portid,
                flags: m.header.flags,
                cmd: genl.cmd,
                version: genl.version,
                payload,
            })
        })
    }
}

/// One message of a [`DumpPart`], borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartMessage<'a> {
    /// Sequence number.
    pub seq: u32,
    /// Sender's port id (0 for the kernel).
    pub portid: u32,
    /// NLM_F_* flags.
    pub flags: u16,
    /// Generic netlink command.
    pub cmd: u8,
    /// Family interface version.
    pub version: u8,
    /// User header (if the family has one) then attributes.
    pub payload: &'a [u8],
}

impl PartMessage<'_> {
    /// An owned copy.
    pub fn to_owned(&self) -> Message {
        Message {
            seq: self.seq,
            portid: self.portid,
            flags: self.flags,
            cmd: self.cmd,
            version: self.version,
            payload: self.payload.to_vec(),
        }
    }
}

/// Messages as one dump part's bytes (each 4-byte aligned), as the host
/// hands them over; for fakes.
pub fn encode_part(messages: &[Message]) -> DumpPart {
    let mut bytes = Vec::new();
    for m in messages {
        let genl = GenlHeader {
            cmd: m.cmd,
            version: m.version,
        };
        bytes.extend(genl_wire::message::genl_request(
            0, m.flags, m.seq, genl, &m.payload,
        ));
        bytes.resize(genl_wire::align4(bytes.len()), 0);
    }
    DumpPart { bytes }
}

/// A `do` request sent from the family's listener socket, so that a
/// registration (TASKSTATS_CMD_ATTR_REGISTER_CPUMASK) makes the kernel send
/// its unicast notifications to this plugin's `on_notification`.
pub fn listen_request(cmd: u8, payload: &[u8]) -> Result<Vec<Message>, RequestError> {
    backend::listen_request(cmd, payload)
}

#[cfg(target_arch = "wasm32")]
use crate::wasm::kernel as backend;

#[cfg(not(target_arch = "wasm32"))]
use crate::testing::kernel as backend;
