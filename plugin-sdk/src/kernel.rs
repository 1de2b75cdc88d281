//! Requests to the kernel on the plugin's own family. The host checks every
//! command against the operator's allowlist before it is sent.

use genl_wire::FamilyInfo;

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

/// A dump request: every message of the dump, until NLMSG_DONE.
pub fn dump_request(cmd: u8, payload: &[u8]) -> Result<Vec<Message>, RequestError> {
    backend::dump_request(cmd, payload)
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
