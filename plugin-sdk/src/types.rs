//! The SDK's own Rust types for what crosses the WIT boundary. They mirror
//! `wit/gateway.wit` but do not depend on generated bindings, so plugin code
//! is the same on wasm and in native tests.

use std::collections::BTreeMap;

use genl_wire::{Attrs, KernelError};
use serde::Serialize;

/// The plugin's configuration: the `[config]` table of its family file.
pub type Config = BTreeMap<String, String>;

/// One generic netlink message of the plugin's family.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
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
    pub payload: Vec<u8>,
}

impl Message {
    /// A message with command `cmd` and `payload` (for tests).
    pub fn new(cmd: u8, payload: Vec<u8>) -> Self {
        Self {
            cmd,
            payload,
            ..Self::default()
        }
    }

    /// The message's attributes, for a family without a user header.
    pub fn attrs(&self) -> Attrs<'_> {
        Attrs::new(&self.payload)
    }

    /// The attributes after a user header of `hdrsize` bytes.
    pub fn attrs_after(&self, hdrsize: usize) -> Attrs<'_> {
        Attrs::new(self.payload.get(hdrsize..).unwrap_or(&[]))
    }
}

/// Why a request to the kernel did not produce an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The kernel answered with an error (extended ack included).
    Kernel(KernelError),
    /// The operator's family file does not allow this command.
    Denied(String),
    /// The request breaks the family's attribute policy; names the attribute.
    Invalid(String),
    /// The family is not registered in the kernel right now.
    FamilyAbsent(String),
    /// No answer within the request timeout.
    Timeout,
    /// Socket or protocol failure on the host side.
    Io(String),
    /// The kernel flagged a dump as interrupted by a concurrent change
    /// (NLM_F_DUMP_INTR); start it again for a consistent view.
    Interrupted,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RequestError::Kernel(e) => e.fmt(f),
            RequestError::Denied(m) => write!(f, "denied: {m}"),
            RequestError::Invalid(m) => write!(f, "invalid request: {m}"),
            RequestError::FamilyAbsent(m) => write!(f, "family absent: {m}"),
            RequestError::Timeout => f.write_str("the kernel did not answer in time"),
            RequestError::Io(m) => write!(f, "netlink I/O error: {m}"),
            RequestError::Interrupted => {
                f.write_str("the dump was interrupted by a concurrent change in the kernel; try again")
            }
        }
    }
}

impl std::error::Error for RequestError {}

/// How a client's call failed. `code` is stable and machine-readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// e.g. "bad-input", "not-found", "unknown-op", "kernel", "denied".
    pub code: String,
    /// For a person.
    pub message: String,
    /// The kernel's error behind it, if any.
    pub kernel: Option<KernelError>,
}

impl CallError {
    /// An error with `code` and `message`.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
            kernel: None,
        }
    }

    /// The input JSON does not fit the operation.
    pub fn bad_input(message: impl Into<String>) -> Self {
        Self::new("bad-input", message)
    }

    /// The thing asked for does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("not-found", message)
    }

    /// `Ok` for an op that takes no input: `null` or `{}`; anything else is
    /// a `bad-input` naming the first key, so input an op ignores can never
    /// look accepted.
    pub fn no_input(op: &str, input: &serde_json::Value) -> Result<(), Self> {
        match input {
            serde_json::Value::Null => Ok(()),
            serde_json::Value::Object(m) => match m.keys().next() {
                None => Ok(()),
                Some(k) => Err(Self::bad_input(format!(
                    "$.{k}: unknown key; '{op}' takes no input"
                ))),
            },
            _ => Err(Self::bad_input(format!(
                "$: '{op}' takes no input (null or {{}})"
            ))),
        }
    }

    /// The plugin does not offer `op`.
    pub fn unknown_op(op: &str) -> Self {
        Self::new("unknown-op", format!("no operation named '{op}'"))
    }

    /// A reply from the kernel could not be decoded.
    pub fn decode(err: genl_wire::WireError) -> Self {
        Self::new("decode", format!("malformed kernel reply: {err}"))
    }
}

impl From<RequestError> for CallError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Kernel(k) => CallError {
                code: "kernel".into(),
                message: k.to_string(),
                kernel: Some(k),
            },
            RequestError::Denied(m) => CallError::new("denied", m),
            RequestError::Invalid(m) => CallError::new("invalid-request", m),
            RequestError::FamilyAbsent(m) => CallError::new("family-absent", m),
            RequestError::Timeout => CallError::new("timeout", "the kernel did not answer in time"),
            RequestError::Io(m) => CallError::new("io", m),
            e @ RequestError::Interrupted => CallError::new("dump-interrupted", e.to_string()),
        }
    }
}

impl From<genl_wire::WireError> for CallError {
    fn from(e: genl_wire::WireError) -> Self {
        CallError::decode(e)
    }
}

/// A request that does not fit netlink's 64 KiB attributes came from the
/// client's input: tell them to send less.
impl From<genl_wire::attr::TooLarge> for CallError {
    fn from(e: genl_wire::attr::TooLarge) -> Self {
        CallError::bad_input(format!("the request is too large: {e}"))
    }
}

/// Client input that does not fit the operation (every codec's input error):
/// `bad-input`, naming the JSON path and what would be accepted.
impl From<crate::ynl::EncodeError> for CallError {
    fn from(e: crate::ynl::EncodeError) -> Self {
        CallError::bad_input(e.to_string())
    }
}

/// A kernel reply the YNL engine could not decode.
impl From<crate::ynl::DecodeError> for CallError {
    fn from(e: crate::ynl::DecodeError) -> Self {
        CallError::new("decode", format!("malformed kernel reply: {e}"))
    }
}

/// One operation a plugin offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpDescription {
    /// Name clients call it by.
    pub name: String,
    /// One sentence.
    pub summary: String,
    /// Whether it may change kernel state.
    pub writes: bool,
    /// Its input as a JSON Schema (2020-12) document; the host checks
    /// every call against it before the plugin runs.
    pub input_schema: Option<String>,
    /// Its output as a JSON Schema (2020-12) document, for clients.
    pub output_schema: Option<String>,
}

/// What a plugin offers: built with [`PluginDescription::new`] and chained
/// [`op`](PluginDescription::op) / [`topic`](PluginDescription::topic) calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginDescription {
    /// The family served.
    pub family: String,
    /// The plugin's version.
    pub version: String,
    /// Operations.
    pub ops: Vec<OpDescription>,
    /// Event topics.
    pub topics: Vec<String>,
}

impl PluginDescription {
    /// A description for `family`, versioned as the calling crate... callers
    /// usually pass `env!("CARGO_PKG_VERSION")` through [`Self::version`].
    pub fn new(family: &str) -> Self {
        Self {
            family: family.to_owned(),
            version: "0.0.0".to_owned(),
            ops: Vec::new(),
            topics: Vec::new(),
        }
    }

    /// Set the plugin's version.
    pub fn version(mut self, version: &str) -> Self {
        self.version = version.to_owned();
        self
    }

    /// Add an operation (without schemas: clients see no typed interface
    /// for it, and the plugin alone checks its input).
    pub fn op(mut self, name: &str, summary: &str, writes: bool) -> Self {
        self.ops.push(OpDescription {
            name: name.to_owned(),
            summary: summary.to_owned(),
            writes,
            input_schema: None,
            output_schema: None,
        });
        self
    }

    /// Add an operation with JSON Schema (2020-12) documents of its input
    /// and output (either may be `None`). The host refuses input that does
    /// not fit `input` with a 400 naming the field, before the plugin runs,
    /// so `input` must accept everything the operation accepts.
    pub fn op_with_schema(
        mut self,
        name: &str,
        summary: &str,
        writes: bool,
        input: Option<&serde_json::Value>,
        output: Option<&serde_json::Value>,
    ) -> Self {
        self.ops.push(OpDescription {
            name: name.to_owned(),
            summary: summary.to_owned(),
            writes,
            input_schema: input.map(serde_json::Value::to_string),
            output_schema: output.map(serde_json::Value::to_string),
        });
        self
    }

    /// Add an event topic.
    pub fn topic(mut self, topic: &str) -> Self {
        self.topics.push(topic.to_owned());
        self
    }
}

/// Log severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very detailed.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the plugin survived.
    Warn,
    /// Something failed.
    Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_timeout_becomes_the_timeout_call_error() {
        // The host answers call-error code "timeout" with 504; a kernel
        // wait that ran out must reach clients as that, not as `io`.
        assert_eq!(CallError::from(RequestError::Timeout).code, "timeout");
    }
}
