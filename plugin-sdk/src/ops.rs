//! The usual shape of an operation: JSON input encoded as the request's
//! attributes, the kernel's replies decoded back to JSON.

use serde_json::Value;

use crate::kernel::{self, PartMessage};
use crate::output::{Item, Items};
use crate::schema::{Field, decode, encode};
use crate::types::{CallError, Message};

/// Encode `input` (null or an object) with `fields`; a mismatch is the
/// client's error.
pub fn request_attrs(input: &Value, fields: &[Field]) -> Result<Vec<u8>, CallError> {
    match input {
        Value::Null => Ok(Vec::new()),
        Value::Object(m) if m.is_empty() => Ok(Vec::new()),
        v => encode(v, fields).map_err(|e| CallError::bad_input(e.to_string())),
    }
}

/// Decode every message's attributes with `fields`.
pub fn decode_all(replies: &[Message], fields: &[Field]) -> Result<Vec<Value>, CallError> {
    replies
        .iter()
        .map(|m| decode(&m.payload, fields).map_err(CallError::decode))
        .collect()
}

/// A `do` request built from `input`; returns the single reply decoded
/// (`null` for commands that only acknowledge, an array if several).
pub fn do_json(cmd: u8, input: &Value, request: &[Field], reply: &[Field]) -> Result<Value, CallError> {
    do_json_with_flags(cmd, 0, input, request, reply)
}

/// [`do_json`] with extra NLM_F_* flags.
pub fn do_json_with_flags(
    cmd: u8,
    flags: u16,
    input: &Value,
    request: &[Field],
    reply: &[Field],
) -> Result<Value, CallError> {
    let attrs = request_attrs(input, request)?;
    let replies = kernel::do_request_with_flags(cmd, flags, &attrs)?;
    let mut values = decode_all(&replies, reply)?;
    Ok(match values.len() {
        0 => Value::Null,
        1 => values.remove(0),
        _ => Value::Array(values),
    })
}

/// A dump filtered by `input`; every entry decoded with `reply` and
/// streamed to the client part by part (see [`dump_items`]). Return the
/// result from `call`.
pub fn dump_json(cmd: u8, input: &Value, request: &[Field], reply: &[Field]) -> Result<Value, CallError> {
    let attrs = request_attrs(input, request)?;
    dump_items(cmd, &attrs, |m| {
        decode(m.payload, reply).map_err(CallError::decode)
    })
}

/// A dump of `cmd` with `payload`, each message turned into an item by
/// `item` and streamed to the client one dump part at a time: neither the
/// dump nor the output is ever whole in memory. Return the result from
/// `call` (natively, in tests, it is the array of items). An item is a
/// `Value`, or a `String` of JSON text already written ([`Item`]).
pub fn dump_items<T: Item>(
    cmd: u8,
    payload: &[u8],
    mut item: impl FnMut(PartMessage<'_>) -> Result<T, CallError>,
) -> Result<Value, CallError> {
    let mut dump = kernel::dump_start(cmd, payload)?;
    let mut items = Items::new();
    while let Some(part) = dump.next_part()? {
        let batch = part
            .messages()
            .map(|m| item(m?))
            .collect::<Result<Vec<_>, CallError>>()?;
        T::send(&mut items, batch)?;
    }
    Ok(items.finish())
}

/// [`dump_items`] for items written as JSON text: `write` appends each
/// message's item to the part's text, and each part crosses to the host
/// as one string ([`Items::send_joined`]), not a string an item. The
/// text's memory is reused from part to part.
pub fn dump_joined(
    cmd: u8,
    payload: &[u8],
    mut write: impl FnMut(PartMessage<'_>, &mut String) -> Result<(), CallError>,
) -> Result<Value, CallError> {
    let mut dump = kernel::dump_start(cmd, payload)?;
    let mut items = Items::new();
    let mut text = String::new();
    while let Some(part) = dump.next_part()? {
        text.clear();
        for m in part.messages() {
            write(m?, &mut text)?;
            text.push('\n');
        }
        items.send_joined(&text)?;
    }
    Ok(items.finish())
}
