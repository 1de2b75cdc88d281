//! Serving a spec the gateway wrote from the kernel's attribute policy
//! (`spec = "kernel-policy"`, host/src/ynl_fallback.rs). The kernel
//! publishes the types of requests only, so a reply may carry an attribute
//! whose bytes do not fit the type its number has in requests; each
//! top-level attribute is decoded on its own, and one that does not fit is
//! shown as `"attr-N": "<hex>"` instead of failing the whole reply.

use genl_plugin_sdk::prelude::*;
use genl_plugin_sdk::ynl::{Mode, Service, Spec, unknown_key};
use serde_json::Map;

/// What the description says about every operation.
pub const NOTE: &str = "typed from the kernel's attribute policy (GETPOLICY): this family has no YNL spec; attributes are keyed by number";

/// The version the description shows.
pub const VERSION: &str = "ynl kernel-policy fallback";

/// Label the description as the fallback's.
pub fn describe(mut d: PluginDescription) -> PluginDescription {
    d.version = VERSION.to_owned();
    for op in &mut d.ops {
        op.summary = format!("{}; {NOTE}", op.summary);
    }
    d
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decode a reply's attributes with `set`, one top-level attribute at a
/// time. Never fails: bytes that do not fit come out as hex.
pub fn decode(spec: &Spec, set: &str, payload: &[u8]) -> Value {
    let mut out = Map::new();
    let mut seen: Map<String, Value> = Map::new();
    for attr in Attrs::new(payload) {
        let Ok(attr) = attr else {
            out.insert("malformed".into(), Value::Bool(true));
            break;
        };
        let body = attr.bytes();
        let len = 4 + body.len();
        let mut one = Vec::with_capacity(len + 3);
        one.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_ne_bytes());
        one.extend_from_slice(&attr.kind().to_ne_bytes());
        one.extend_from_slice(body);
        one.resize(len.next_multiple_of(4), 0);
        let (key, value) = match spec.decode_attrs(set, &one) {
            Ok(m) if m.len() == 1 => m.into_iter().next().unwrap_or_default(),
            Ok(m) if m.is_empty() => continue, // padding
            _ => (unknown_key(attr.kind()), Value::String(hex(body))),
        };
        // Repeats become arrays, in the order the kernel sent them.
        match seen.get_mut(&key) {
            Some(Value::Array(items)) => items.push(value),
            Some(_) => {}
            None => {
                if let Some(first) = out.remove(&key) {
                    seen.insert(key, Value::Array(vec![first, value]));
                } else {
                    out.insert(key, value);
                }
            }
        }
    }
    for (k, v) in seen {
        out.insert(k, v);
    }
    Value::Object(out)
}

/// Call client operation `name` of `service` with `input`.
pub fn call(service: &Service, name: &str, input: &Value) -> Result<Value, CallError> {
    let op = service.client_op(name).ok_or_else(|| CallError::unknown_op(name))?;
    let cmd = op.op.request_value.ok_or_else(|| CallError::unknown_op(name))?;
    let payload = service.encode(&op, input)?;
    let set = op.op.attribute_set.as_deref().unwrap_or_default();
    let spec = service.spec();
    match op.mode {
        Mode::Do => {
            let replies = kernel::do_request(cmd, &payload)?;
            Ok(replies
                .first()
                .map_or(Value::Null, |m| decode(spec, set, &m.payload)))
        }
        Mode::Dump => {
            let replies = kernel::dump_request(cmd, &payload)?;
            Ok(Value::Array(
                replies.iter().map(|m| decode(spec, set, &m.payload)).collect(),
            ))
        }
    }
}
