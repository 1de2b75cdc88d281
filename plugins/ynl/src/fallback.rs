//! Serving a spec the gateway wrote from the kernel's attribute policy
//! (`spec = "kernel-policy"`, host/src/ynl_fallback.rs). The kernel
//! publishes the types of requests only, so a reply may carry an attribute
//! whose bytes do not fit the type its number has in requests; each
//! top-level attribute is decoded on its own, and one that does not fit is
//! shown as `"attr-N": "<hex>"` instead of failing the whole reply.

use genl_plugin_sdk::prelude::*;
use genl_plugin_sdk::ynl::{AttrKind, Mode, Service, Spec, unknown_key};
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

/// Whether `body` can be what the policy says an attribute of this number
/// is in requests. The engine reads a longer integer's first bytes and any
/// bytes as text; here a reply attribute must fit exactly, else it is shown
/// as bytes rather than as a wrong value.
fn fits(kind: AttrKind, body: &[u8]) -> bool {
    match kind {
        AttrKind::Flag => body.is_empty(),
        AttrKind::Uint | AttrKind::Sint => matches!(body.len(), 4 | 8),
        AttrKind::Bitfield32 => body.len() == 8,
        AttrKind::String => {
            let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
            body[end..].iter().all(|&b| b == 0)
                && std::str::from_utf8(&body[..end]).is_ok_and(|t| !t.chars().any(char::is_control))
        }
        k => k.fixed_int().is_none_or(|(size, _)| body.len() == size),
    }
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
        let fits = spec
            .set(set)
            .and_then(|s| s.by_value(attr.kind()))
            .is_none_or(|def| fits(def.kind, body));
        let decoded = if fits {
            spec.decode_attrs(set, &one).ok()
        } else {
            None
        };
        let (key, value) = match decoded {
            Some(m) if m.len() == 1 => m.into_iter().next().unwrap_or_default(),
            Some(m) if m.is_empty() => continue, // padding
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
    let op = service
        .client_op(name)
        .ok_or_else(|| CallError::unknown_op(name))?;
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
        Mode::Dump => genl_plugin_sdk::ops::dump_items(cmd, &payload, |m| Ok(decode(spec, set, m.payload))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TASKSTATS numbers its replies apart from its requests
    /// (<linux/taskstats.h>: TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK and
    /// TASKSTATS_TYPE_AGGR_PID are both 4): a nest where requests carry a
    /// string comes out as bytes, and truncated or garbage bytes never fail.
    #[test]
    fn reply_attributes_that_do_not_fit_their_request_type_come_out_as_hex() {
        let spec = Spec::load(
            r#"{"name": "t", "attribute-sets": [{"name": "s", "attributes": [
                {"name": "1", "value": 1, "type": "u32"},
                {"name": "4", "value": 4, "type": "string"},
                {"name": "5", "value": 5, "type": "flag"}]}],
              "operations": {"list": []}}"#,
        )
        .expect("spec");
        // AGGR_PID { PID = 42 }, then PID as a u16, then a real string.
        let mut w = AttrWriter::new();
        let n = w.begin_nested(4);
        w.put_u32(1, 42);
        w.end_nested(n).expect("nest");
        w.put_u16(1, 7);
        let bytes = w.finish();
        let out = decode(&spec, "s", &bytes);
        assert_eq!(out, json!({"attr-4": "080001002a000000", "attr-1": "0700"}));
        let mut w = AttrWriter::new();
        w.put_str(4, "0-3").expect("short");
        w.put_u32(1, 9).put_u32(1, 10);
        assert_eq!(decode(&spec, "s", &w.finish()), json!({"4": "0-3", "1": [9, 10]}));
        for cut in 0..bytes.len() {
            let _ = decode(&spec, "s", &bytes[..cut]);
            let _ = decode(&spec, "s", &bytes[cut..]);
        }
    }
}
