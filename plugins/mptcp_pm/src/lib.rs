//! The mptcp_pm plugin: the in-kernel MPTCP path manager's endpoints and
//! limits, and MPTCP connection events, served from the kernel's own spec
//! (`ynl-specs/mptcp_pm.yaml`) through the SDK's YNL engine: no attribute
//! table of its own.
//!
//! Operations:
//! - every spec operation as the `ynl` plugin names it, with the spec's
//!   JSON (`add-addr`, `del-addr`, `get-addr`, `get-addr-dump`,
//!   `flush-addrs`, `set-limits`, `get-limits`, `set-flags`, `announce`,
//!   `remove`, `subflow-create`, `subflow-destroy`);
//! - the friendlier endpoint operations, with addresses as text and the
//!   address family filled in: `endpoint-get {"id"}`, `endpoint-dump`,
//!   `limits-get` (read); `endpoint-add {"addr4"|"addr6", "id"?, "port"?,
//!   "flags"?, "if-idx"?}`, `endpoint-del {"id"}`, `endpoint-flush`,
//!   `limits-set {"subflows"?, "rcv-add-addrs"?}` (change kernel state: the
//!   family file must allow commands 1, 2, 4, 5).
//!
//! Events: topic `connection` from the `mptcp_pm_events` group, `{"event":
//! NAME, "cmd": N, "attrs": {...}}` with the spec's event name and
//! attributes (addresses as text).

use std::net::{Ipv4Addr, Ipv6Addr};

use genl_plugin_sdk::prelude::*;
use genl_plugin_sdk::ynl::{Service, Spec};
use serde_json::Map;

/// The kernel's mptcp_pm spec (SPDX line kept in the file).
const SPEC: &str = include_str!("../../../ynl-specs/mptcp_pm.yaml");

/// Address families (linux/socket.h), filled in from the address given.
const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;

/// The friendlier operations: (name, spec operation, summary, writes).
const ENDPOINT_OPS: &[(&str, &str, &str, bool)] = &[
    ("endpoint-get", "get-addr", "One endpoint: {\"id\": N}", false),
    ("endpoint-dump", "get-addr-dump", "Every endpoint", false),
    ("limits-get", "get-limits", "The path manager's limits", false),
    (
        "endpoint-add",
        "add-addr",
        "Add an endpoint: {\"addr4\"|\"addr6\", \"id\"?, \"flags\"?, \"port\"?, \"if-idx\"?}",
        true,
    ),
    (
        "endpoint-del",
        "del-addr",
        "Delete an endpoint: {\"id\": N}",
        true,
    ),
    ("endpoint-flush", "flush-addrs", "Delete every endpoint", true),
    (
        "limits-set",
        "set-limits",
        "Set limits: {\"subflows\"?, \"rcv-add-addrs\"?}",
        true,
    ),
];

/// Serves the mptcp_pm family.
pub struct MptcpPm {
    service: Service,
}

/// An address as the spec carries it: `addr4`/`saddr4`/`daddr4` are
/// big-endian u32s, `addr6`... are 16 bytes in hex.
fn address_to_spec(map: &mut Map<String, Value>, key: &str) -> Result<(), CallError> {
    let Some(Value::String(text)) = map.get(key) else {
        return Ok(());
    };
    let value = if key.ends_with('4') {
        let a: Ipv4Addr = text
            .parse()
            .map_err(|_| CallError::bad_input(format!("'{key}' must be an IPv4 address")))?;
        json!(u32::from(a))
    } else {
        let a: Ipv6Addr = text
            .parse()
            .map_err(|_| CallError::bad_input(format!("'{key}' must be an IPv6 address")))?;
        json!(a.octets().iter().map(|b| format!("{b:02x}")).collect::<String>())
    };
    map.insert(key.to_owned(), value);
    Ok(())
}

/// The spec's address fields as text, the way `ip mptcp` shows them.
fn addresses_as_text(value: &mut Value) {
    let Value::Object(map) = value else { return };
    for (key, v) in map.iter_mut() {
        let text = if key.ends_with("addr4") {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(|n| Ipv4Addr::from(n).to_string())
        } else if key.ends_with("addr6") {
            v.as_str().and_then(|h| {
                let bytes: Vec<u8> = (0..h.len())
                    .step_by(2)
                    .map(|i| h.get(i..i + 2).and_then(|d| u8::from_str_radix(d, 16).ok()))
                    .collect::<Option<_>>()?;
                let octets: [u8; 16] = bytes.try_into().ok()?;
                Some(Ipv6Addr::from(octets).to_string())
            })
        } else {
            addresses_as_text(v);
            None
        };
        if let Some(text) = text {
            *v = Value::String(text);
        }
    }
}

/// `{"id": N, "addr4": "...", ...}` from the client becomes `{"addr":
/// {...}}`, with the address family filled in from the address given.
fn addr_input(input: &Value) -> Result<Value, CallError> {
    let Value::Object(map) = input else {
        return Err(CallError::bad_input("expected an object describing the endpoint"));
    };
    let mut addr = map.clone();
    if !addr.contains_key("family") {
        if addr.contains_key("addr4") {
            addr.insert("family".into(), AF_INET.into());
        } else if addr.contains_key("addr6") {
            addr.insert("family".into(), AF_INET6.into());
        }
    }
    address_to_spec(&mut addr, "addr4")?;
    address_to_spec(&mut addr, "addr6")?;
    Ok(json!({ "addr": addr }))
}

impl MptcpPm {
    fn endpoint_op(&self, op: &str, spec_op: &str, input: &Value) -> Result<Value, CallError> {
        let endpoint = |mut v: Value| {
            addresses_as_text(&mut v);
            v.get("addr").cloned().unwrap_or(v)
        };
        match op {
            "endpoint-get" => self.service.call(spec_op, &addr_input(input)?).map(endpoint),
            "endpoint-dump" => CallError::no_input(op, input)
                .and_then(|()| self.service.serve_mapped(spec_op, &Value::Null, endpoint)),
            "limits-get" => {
                CallError::no_input(op, input).and_then(|()| self.service.call(spec_op, &Value::Null))
            }
            "endpoint-add" => self
                .service
                .call(spec_op, &addr_input(input)?)
                .map(|_| json!({"added": true})),
            "endpoint-del" => self
                .service
                .call(spec_op, &addr_input(input)?)
                .map(|_| json!({"deleted": true})),
            "endpoint-flush" => CallError::no_input(op, input)
                .and_then(|()| self.service.call(spec_op, &Value::Null))
                .map(|_| json!({"flushed": true})),
            "limits-set" => self.service.call(spec_op, input).map(|_| json!({"set": true})),
            _ => Err(CallError::unknown_op(op)),
        }
    }
}

impl Plugin for MptcpPm {
    fn init(_config: Config) -> Result<Self, String> {
        let spec = Spec::load(SPEC).map_err(|e| format!("the bundled mptcp_pm spec: {e}"))?;
        Ok(MptcpPm {
            service: Service::new(spec),
        })
    }

    fn describe(&self) -> PluginDescription {
        let mut d = self.service.describe().version(env!("CARGO_PKG_VERSION"));
        for (name, _, summary, writes) in ENDPOINT_OPS {
            d = d.op(name, summary, *writes);
        }
        d.topic("connection")
    }

    fn call(&mut self, op: &str, input: Value) -> Result<Value, CallError> {
        match ENDPOINT_OPS.iter().find(|(name, ..)| *name == op) {
            Some((name, spec_op, ..)) => self.endpoint_op(name, spec_op, &input),
            None => self.service.serve(op, &input),
        }
    }

    fn on_notification(&mut self, _group: &str, message: Message) {
        let spec = self.service.spec();
        let name = spec
            .enumeration("event-type")
            .and_then(|e| e.name_of(u64::from(message.cmd)))
            .unwrap_or("unknown");
        match spec.decode_attrs("event-attr", &message.payload) {
            Ok(attrs) => {
                let mut attrs = Value::Object(attrs);
                addresses_as_text(&mut attrs);
                events::publish(
                    "connection",
                    &json!({"event": name, "cmd": message.cmd, "attrs": attrs}),
                );
            }
            Err(e) => log::warn(&format!("malformed mptcp event: {e}")),
        }
    }
}

export_plugin!(MptcpPm);

#[cfg(test)]
mod tests;
