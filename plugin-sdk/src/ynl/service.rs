//! A family served from its spec: client operations, requests, replies and
//! notifications, all derived from the [`Spec`]. The bundled `ynl` plugin is
//! this and nothing else; a custom plugin can hold one and add behaviour.
//!
//! Client operation names are predictable: a spec operation `NAME` with a
//! `do` is offered as `NAME`, its `dump` as `NAME-dump`. Notifications are
//! published with the spec operation's name as the topic.

use serde_json::Value;

use super::spec::{Operation, Spec};
use super::{DecodeError, MessageShape};
use crate::types::{CallError, Message, PluginDescription};

/// How a client operation reaches the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One request, its reply (or an acknowledgement).
    Do,
    /// A dump: every object the kernel has.
    Dump,
}

/// One operation a client can call.
#[derive(Debug, Clone)]
pub struct ClientOp<'a> {
    /// The name clients call it by.
    pub name: &'a str,
    /// The spec operation behind it.
    pub op: &'a Operation,
    /// Do or dump.
    pub mode: Mode,
}

impl ClientOp<'_> {
    /// Whether it may change kernel state: dumps and `*-get`/`get*` do
    /// requests read, everything else is taken to write. The operator's
    /// command allowlist is the real gate; this only drives token access.
    pub fn writes(&self) -> bool {
        self.mode == Mode::Do && !(self.op.name.ends_with("-get") || self.op.name.starts_with("get"))
    }

    /// The attributes a client may send.
    pub fn request_attrs(&self) -> &[String] {
        let mode = match self.mode {
            Mode::Do => self.op.do_.as_ref(),
            Mode::Dump => self.op.dump.as_ref(),
        };
        mode.and_then(|m| m.request.as_deref()).unwrap_or_default()
    }
}

/// A family served from its spec.
#[derive(Debug, Clone)]
pub struct Service {
    spec: Spec,
    /// Every client operation: its name, its spec operation's position,
    /// do or dump. Named once here, not on every call.
    ops: Vec<(String, usize, Mode)>,
}

impl Service {
    /// Serve `spec`.
    pub fn new(spec: Spec) -> Self {
        let mut ops = Vec::new();
        for (i, op) in spec
            .ops
            .iter()
            .enumerate()
            .filter(|(_, o)| o.request_value.is_some())
        {
            if op.do_.is_some() {
                ops.push((op.name.clone(), i, Mode::Do));
            }
            if op.dump.is_some() {
                ops.push((format!("{}-dump", op.name), i, Mode::Dump));
            }
        }
        Self { spec, ops }
    }

    /// The spec.
    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    /// Every operation clients can call, in spec order.
    pub fn client_ops(&self) -> Vec<ClientOp<'_>> {
        self.ops.iter().filter_map(|e| self.entry(e)).collect()
    }

    /// The client operation named `name`.
    pub fn client_op(&self, name: &str) -> Option<ClientOp<'_>> {
        self.ops
            .iter()
            .find(|(n, ..)| n == name)
            .and_then(|e| self.entry(e))
    }

    fn entry<'a>(&'a self, (name, i, mode): &'a (String, usize, Mode)) -> Option<ClientOp<'a>> {
        Some(ClientOp {
            name,
            op: self.spec.ops.get(*i)?,
            mode: *mode,
        })
    }

    /// What the plugin offers: the spec's operations and notifications.
    pub fn describe(&self) -> PluginDescription {
        let mut d = PluginDescription::new(&self.spec.name).version("ynl");
        for op in self.client_ops() {
            let summary = match (op.mode, op.op.admin_perm) {
                (Mode::Do, false) => format!("{} (do)", op.op.name),
                (Mode::Do, true) => format!("{} (do, needs CAP_NET_ADMIN in the kernel)", op.op.name),
                (Mode::Dump, false) => format!("{} (dump)", op.op.name),
                (Mode::Dump, true) => format!("{} (dump, needs CAP_NET_ADMIN in the kernel)", op.op.name),
            };
            let input = self.spec.input_schema(&op);
            let output = self.spec.output_schema(&op);
            d = d.op_with_schema(op.name, &summary, op.writes(), Some(&input), Some(&output));
        }
        for op in self.spec.ops.iter().filter(|o| o.notification.is_some()) {
            d = d.topic(&op.name);
        }
        d
    }

    /// The request payload (fixed header, then attributes) of `op` for
    /// the client's `input`.
    pub fn encode(&self, op: &ClientOp<'_>, input: &Value) -> Result<Vec<u8>, CallError> {
        let set = op.op.attribute_set.as_deref().unwrap_or_default();
        if set.is_empty() {
            return match input {
                Value::Null => Ok(Vec::new()),
                Value::Object(o) if o.is_empty() => Ok(Vec::new()),
                _ => Err(CallError::bad_input(format!("{} takes no input", op.name))),
            };
        }
        self.spec
            .encode_request(set, op.request_attrs(), op.op.fixed_header.as_deref(), input)
            .map_err(|e| CallError::bad_input(e.to_string()))
    }

    /// One reply or notification message as JSON: the fixed header's
    /// members and the attributes, side by side (as the YNL CLI shows them).
    pub fn decode(&self, op: &Operation, payload: &[u8]) -> Result<Value, CallError> {
        let mut text = String::new();
        self.decode_text(op, payload, &mut text)?;
        serde_json::from_str(&text).map_err(|e| {
            CallError::new(
                "internal",
                format!("the decoder wrote no JSON ({e}); please report it"),
            )
        })
    }

    /// [`Service::decode`] as JSON text, appended to `out`: what a client
    /// gets, without building values on the way.
    pub fn decode_text(&self, op: &Operation, payload: &[u8], out: &mut String) -> Result<(), CallError> {
        self.shape(op)?.write(payload, out).map_err(malformed)
    }

    /// How `op`'s replies are decoded.
    fn shape(&self, op: &Operation) -> Result<MessageShape<'_>, CallError> {
        self.spec
            .message_shape(op.fixed_header.as_deref(), op.attribute_set.as_deref())
            .map_err(malformed)
    }

    /// A buffer for one message's JSON text, about the payload's size:
    /// sized once instead of regrown as it is written.
    fn text_for(payload: &[u8]) -> String {
        String::with_capacity(Self::text_len(payload))
    }

    /// About the length of the JSON text of a message of `payload`'s size.
    fn text_len(payload: &[u8]) -> usize {
        payload.len() + payload.len() / 2 + 32
    }

    /// Call client operation `name` with `input` through the kernel and
    /// return its output whole: a dump's objects as one array. For using
    /// the answer inside the plugin; to answer a client, [`Service::serve`]
    /// streams a dump instead.
    pub fn call(&self, name: &str, input: &Value) -> Result<Value, CallError> {
        let op = self.client_op(name).ok_or_else(|| CallError::unknown_op(name))?;
        let (cmd, payload) = self.request(&op, input)?;
        match op.mode {
            Mode::Do => Self::do_reply(cmd, &payload, |t| self.decode(op.op, t)),
            Mode::Dump => {
                let mut out = Vec::new();
                for part in crate::kernel::dump_start(cmd, &payload)? {
                    for m in part?.messages() {
                        out.push(self.decode(op.op, m?.payload)?);
                    }
                }
                Ok(Value::Array(out))
            }
        }
    }

    /// Serve a client's call of operation `name`: a `do`'s reply as one
    /// document, a dump's objects decoded and streamed part by part as the
    /// call's output items ([`crate::output::Items`]; natively, in tests,
    /// the result is their array). Return the result from `Plugin::call`.
    /// The output goes out as the decoder writes it, JSON text, never
    /// built as values.
    pub fn serve(&self, name: &str, input: &Value) -> Result<Value, CallError> {
        let op = self.client_op(name).ok_or_else(|| CallError::unknown_op(name))?;
        let (cmd, payload) = self.request(&op, input)?;
        match op.mode {
            Mode::Do => Self::do_reply(cmd, &payload, |payload| {
                let mut text = Self::text_for(payload);
                self.decode_text(op.op, payload, &mut text)?;
                crate::output::document(text)
            }),
            // Decoded part by part: a dump of any size costs a part of
            // memory here and in the host.
            Mode::Dump => {
                let shape = self.shape(op.op)?;
                crate::ops::dump_joined(cmd, &payload, |m, text| {
                    text.reserve(Self::text_len(m.payload));
                    shape.write(m.payload, text).map_err(malformed)
                })
            }
        }
    }

    /// [`Service::serve`], each output object (a `do`'s document, or each
    /// object of a dump) passed through `map` first.
    pub fn serve_mapped(
        &self,
        name: &str,
        input: &Value,
        mut map: impl FnMut(Value) -> Value,
    ) -> Result<Value, CallError> {
        let op = self.client_op(name).ok_or_else(|| CallError::unknown_op(name))?;
        let (cmd, payload) = self.request(&op, input)?;
        match op.mode {
            Mode::Do => Self::do_reply(cmd, &payload, |t| self.decode(op.op, t).map(&mut map)),
            Mode::Dump => {
                crate::ops::dump_items(cmd, &payload, |m| self.decode(op.op, m.payload).map(&mut map))
            }
        }
    }

    /// The command and request payload of client operation `op`.
    fn request(&self, op: &ClientOp<'_>, input: &Value) -> Result<(u8, Vec<u8>), CallError> {
        let cmd = op
            .op
            .request_value
            .ok_or_else(|| CallError::unknown_op(op.name))?;
        Ok((cmd, self.encode(op, input)?))
    }

    /// A `do`: its reply's payload through `reply`, or `null` for a bare
    /// acknowledgement.
    fn do_reply(
        cmd: u8,
        payload: &[u8],
        reply: impl FnOnce(&[u8]) -> Result<Value, CallError>,
    ) -> Result<Value, CallError> {
        match crate::kernel::do_request(cmd, payload)?.first() {
            Some(m) => reply(&m.payload),
            None => Ok(Value::Null),
        }
    }

    /// A kernel notification as `(topic, payload)`: the spec operation whose
    /// notification command it carries, and its decoded content. `None` for
    /// a command the spec does not describe as a notification.
    pub fn notification(&self, message: &Message) -> Option<(String, Result<Value, CallError>)> {
        let op = self
            .spec
            .ops
            .iter()
            .find(|o| o.notification.is_some() && o.reply_value == Some(message.cmd))?;
        Some((op.name.clone(), self.decode(op, &message.payload)))
    }
}

fn malformed(e: DecodeError) -> CallError {
    CallError::new("decode", format!("malformed kernel reply: {e}"))
}
