//! A stand-in for the gateway, for unit tests of a plugin's logic with
//! plain `cargo test`: no wasm, no kernel.
//!
//! [`FakeKernel::new`] installs a fake for the current thread (each test has
//! its own). Register replies per command with [`FakeKernel::on_do`] and
//! [`FakeKernel::on_dump`], drive the plugin through its [`Plugin`] trait,
//! then inspect what it sent, logged and published.
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

#[derive(Default)]
struct State {
    family: Option<FamilyInfo>,
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

    pub fn dump_request(cmd: u8, payload: &[u8]) -> Result<Vec<Message>, RequestError> {
        request(RequestKind::Dump, cmd, 0, payload)
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
