//! A stand-in for the gateway, for unit tests of a plugin's logic with
//! plain `cargo test`: no wasm, no kernel.
//!
//! [`FakeKernel::new`] installs a fake for the current thread (each test has
//! its own). Register replies per command with [`FakeKernel::on_do`] and
//! [`FakeKernel::on_dump`], drive the plugin through its [`Plugin`] trait,
//! then inspect what it sent, logged and published.
//!
//! With [`FakeKernel::family_file`] it also applies the operator's family
//! file as the gateway does: a command its `[commands]` do not allow is
//! refused with the gateway's own `denied` message, so "this op must be
//! refused" is tested, not faked.
//!
//! ```
//! use genl_plugin_sdk::prelude::*;
//! use genl_plugin_sdk::testing::FakeKernel;
//!
//! let fake = FakeKernel::new(FamilyInfo::default());
//! fake.family_file("tcp_metrics.toml", "family = \"tcp_metrics\"\nplugin = \"tcp_metrics.wasm\"\n[commands]\ndo = [1]\n")
//!     .unwrap();
//! fake.on_do(2, |_| Ok(vec![]));
//! let err = CallError::from(kernel::do_request(2, &[]).unwrap_err());
//! assert_eq!(err.code, "denied");
//! assert!(err.message.contains("add it to [commands] do"));
//! ```
//!
//! [`Plugin`]: crate::Plugin

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use genl_wire::FamilyInfo;

use crate::types::{Level, Message, RequestError};

/// Whether a request was a `do`, a dump, or a `do` from the listener socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// NLM_F_REQUEST | NLM_F_ACK.
    Do,
    /// NLM_F_REQUEST | NLM_F_DUMP.
    Dump,
    /// A `do` sent from the listener socket ([`crate::kernel::listen_request`]).
    Listen,
}

/// A request the plugin made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Do or dump.
    pub kind: RequestKind,
    /// The genl command.
    pub cmd: u8,
    /// Extra NLM_F_* flags the plugin asked for.
    pub flags: u16,
    /// User header and attributes.
    pub payload: Vec<u8>,
}

type Handler = Box<dyn FnMut(&Request) -> Result<Vec<Message>, RequestError>>;

/// The allowlists of a family file, and its file name for refusals.
struct Allowed {
    file: String,
    family: String,
    allow_do: Vec<u8>,
    allow_dump: Vec<u8>,
}

impl Allowed {
    /// The gateway's refusal (host/src/plugin/host_api.rs), word for word;
    /// `host/tests/sdk_harness.rs` compares the two.
    fn check(&self, kind: RequestKind, cmd: u8) -> Result<(), RequestError> {
        let (name, list) = match kind {
            RequestKind::Dump => ("dump", &self.allow_dump),
            RequestKind::Do | RequestKind::Listen => ("do", &self.allow_do),
        };
        if list.contains(&cmd) {
            return Ok(());
        }
        Err(RequestError::Denied(format!(
            "command {cmd} of family {} is not allowed as a {name} request; add it to [commands] {name} in the operator's family file ({}) if the operator agrees",
            self.family, self.file
        )))
    }
}

/// Why a family file could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum FamilyFileError {
    /// Not readable.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, or not the shape of a family file.
    #[error("{file}: {message}")]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(serde::Deserialize)]
struct RawFamilyFile {
    family: String,
    #[serde(default)]
    commands: RawCommands,
}

#[derive(serde::Deserialize, Default)]
struct RawCommands {
    #[serde(default, rename = "do")]
    allow_do: Vec<u8>,
    #[serde(default, rename = "dump")]
    allow_dump: Vec<u8>,
}

#[derive(Default)]
struct State {
    family: Option<FamilyInfo>,
    allowed: Option<Allowed>,
    handlers: HashMap<(RequestKind, u8), Handler>,
    requests: Vec<Request>,
    logs: Vec<(Level, String)>,
    events: Vec<(String, serde_json::Value)>,
}

thread_local! {
    static STATE: RefCell<Option<Rc<RefCell<State>>>> = const { RefCell::new(None) };
}

fn state() -> Option<Rc<RefCell<State>>> {
    STATE.with(|s| s.borrow().clone())
}

/// The fake gateway for the current thread.
pub struct FakeKernel {
    state: Rc<RefCell<State>>,
}

impl FakeKernel {
    /// Install a fresh fake for this thread, serving `family`.
    pub fn new(family: FamilyInfo) -> Self {
        let state = Rc::new(RefCell::new(State {
            family: Some(family),
            ..State::default()
        }));
        STATE.with(|s| *s.borrow_mut() = Some(state.clone()));
        Self { state }
    }

    /// Apply the family file `text` (named `file`, as refusals show it):
    /// requests for commands its `[commands]` do not allow are refused with
    /// the gateway's `denied` message, before any handler runs.
    pub fn family_file(&self, file: &str, text: &str) -> Result<&Self, FamilyFileError> {
        let invalid = |message: String| FamilyFileError::Invalid {
            file: file.to_owned(),
            message,
        };
        let raw: RawFamilyFile = toml::from_str(text).map_err(|e| invalid(e.message().to_owned()))?;
        let name = std::path::Path::new(file)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("the family file");
        self.state.borrow_mut().allowed = Some(Allowed {
            file: name.to_owned(),
            family: raw.family,
            allow_do: raw.commands.allow_do,
            allow_dump: raw.commands.allow_dump,
        });
        Ok(self)
    }

    /// [`FakeKernel::family_file`] read from `path` (e.g. the plugin's
    /// `family.toml`).
    pub fn load_family_file(&self, path: impl AsRef<std::path::Path>) -> Result<&Self, FamilyFileError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| FamilyFileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        self.family_file(&path.display().to_string(), &text)
    }

    /// Answer requests of `kind` and `cmd` with `handler`.
    pub fn on(
        &self,
        kind: RequestKind,
        cmd: u8,
        handler: impl FnMut(&Request) -> Result<Vec<Message>, RequestError> + 'static,
    ) -> &Self {
        self.state
            .borrow_mut()
            .handlers
            .insert((kind, cmd), Box::new(handler));
        self
    }

    /// Answer `do` requests of `cmd` with `handler`.
    pub fn on_do(
        &self,
        cmd: u8,
        handler: impl FnMut(&Request) -> Result<Vec<Message>, RequestError> + 'static,
    ) -> &Self {
        self.on(RequestKind::Do, cmd, handler)
    }

    /// Answer dump requests of `cmd` with `handler`.
    pub fn on_dump(
        &self,
        cmd: u8,
        handler: impl FnMut(&Request) -> Result<Vec<Message>, RequestError> + 'static,
    ) -> &Self {
        self.on(RequestKind::Dump, cmd, handler)
    }

    /// Answer listener-socket requests of `cmd` with `handler`.
    pub fn on_listen(
        &self,
        cmd: u8,
        handler: impl FnMut(&Request) -> Result<Vec<Message>, RequestError> + 'static,
    ) -> &Self {
        self.on(RequestKind::Listen, cmd, handler)
    }

    /// Every request the plugin made, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.state.borrow().requests.clone()
    }

    /// Every line the plugin logged.
    pub fn logs(&self) -> Vec<(Level, String)> {
        self.state.borrow().logs.clone()
    }

    /// Every event the plugin published, payloads parsed as JSON.
    pub fn events(&self) -> Vec<(String, serde_json::Value)> {
        self.state.borrow().events.clone()
    }
}

fn request(kind: RequestKind, cmd: u8, flags: u16, payload: &[u8]) -> Result<Vec<Message>, RequestError> {
    let Some(state) = state() else {
        return Err(RequestError::Io("no FakeKernel installed on this thread".into()));
    };
    let req = Request {
        kind,
        cmd,
        flags,
        payload: payload.to_vec(),
    };
    if let Some(allowed) = &state.borrow().allowed {
        allowed.check(kind, cmd)?;
    }
    state.borrow_mut().requests.push(req.clone());
    // The handler runs without the state borrowed, so it may itself inspect
    // the fake.
    let handler = state.borrow_mut().handlers.remove(&(kind, cmd));
    match handler {
        Some(mut h) => {
            let out = h(&req);
            state.borrow_mut().handlers.entry((kind, cmd)).or_insert(h);
            out
        }
        None => Err(RequestError::Io(format!(
            "FakeKernel has no reply for {kind:?} command {cmd}"
        ))),
    }
}

pub(crate) mod kernel {
    use super::*;

    pub fn family() -> Result<FamilyInfo, RequestError> {
        state()
            .and_then(|s| s.borrow().family.clone())
            .ok_or_else(|| RequestError::FamilyAbsent("no FakeKernel installed on this thread".into()))
    }

    pub fn do_request(cmd: u8, flags: u16, payload: &[u8]) -> Result<Vec<Message>, RequestError> {
        request(RequestKind::Do, cmd, flags, payload)
    }

    /// A fake dump: the handler's whole answer as one part.
    pub struct Dump {
        part: Option<Vec<u8>>,
    }

    impl Dump {
        pub fn next_part(&mut self) -> Result<Option<Vec<u8>>, RequestError> {
            Ok(self.part.take())
        }
    }

    pub fn dump_start(cmd: u8, payload: &[u8]) -> Result<Dump, RequestError> {
        let messages = request(RequestKind::Dump, cmd, 0, payload)?;
        let part = crate::kernel::encode_part(&messages).bytes().to_vec();
        Ok(Dump {
            part: (!part.is_empty()).then_some(part),
        })
    }

    pub fn listen_request(cmd: u8, payload: &[u8]) -> Result<Vec<Message>, RequestError> {
        request(RequestKind::Listen, cmd, 0, payload)
    }
}

pub(crate) mod log {
    use super::*;

    pub fn log(level: Level, message: &str) {
        if let Some(s) = state() {
            s.borrow_mut().logs.push((level, message.to_owned()));
        }
    }
}

pub(crate) mod events {
    use super::*;

    pub fn publish(topic: &str, payload: &str) {
        if let Some(s) = state() {
            let value = serde_json::from_str(payload).unwrap_or(serde_json::Value::Null);
            s.borrow_mut().events.push((topic.to_owned(), value));
        }
    }
}
