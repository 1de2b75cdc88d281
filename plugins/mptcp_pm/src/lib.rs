//! The mptcp_pm plugin: the in-kernel MPTCP path manager's endpoints and
//! limits, and MPTCP connection events.
//!
//! Operations: `endpoint-get {"id"}`, `endpoint-dump`, `limits-get` (read);
//! `endpoint-add {"addr4"|"addr6", "id"?, "port"?, "flags"?, "if-idx"?}`,
//! `endpoint-del {"id"}`, `endpoint-flush`, `limits-set {"subflows"?,
//! "rcv-add-addrs"?}` (change kernel state: the family file must allow
//! commands 1, 2, 4, 5).
//!
//! Events: topic `connection` from the `mptcp_pm_events` group.

use genl_plugin_sdk::ops::{do_json, dump_json};
use genl_plugin_sdk::prelude::*;
use genl_plugin_sdk::schema::{Field, Kind, decode};

const ADD_ADDR: u8 = 1;
const DEL_ADDR: u8 = 2;
const GET_ADDR: u8 = 3;
const FLUSH_ADDRS: u8 = 4;
const SET_LIMITS: u8 = 5;
const GET_LIMITS: u8 = 6;

const AF_INET: u64 = 2;
const AF_INET6: u64 = 10;

/// The `address` attribute set.
pub const ADDRESS: &[Field] = &[
    Field::new(1, "family", Kind::U16),
    Field::new(2, "id", Kind::U8),
    Field::new(3, "addr4", Kind::Ipv4),
    Field::new(4, "addr6", Kind::Ipv6),
    Field::new(5, "port", Kind::U16),
    Field::new(6, "flags", Kind::U32),
    Field::new(7, "if-idx", Kind::S32),
];

/// The `attr` attribute set (requests and replies).
pub const ATTR: &[Field] = &[
    Field::new(1, "addr", Kind::Nested(ADDRESS)),
    Field::new(2, "rcv-add-addrs", Kind::U32),
    Field::new(3, "subflows", Kind::U32),
    Field::new(4, "token", Kind::U32),
    Field::new(5, "loc-id", Kind::U8),
    Field::new(6, "addr-remote", Kind::Nested(ADDRESS)),
];

/// The `event-attr` attribute set.
pub const EVENT: &[Field] = &[
    Field::new(1, "token", Kind::U32),
    Field::new(2, "family", Kind::U16),
    Field::new(3, "loc-id", Kind::U8),
    Field::new(4, "rem-id", Kind::U8),
    Field::new(5, "saddr4", Kind::Ipv4),
    Field::new(6, "saddr6", Kind::Ipv6),
    Field::new(7, "daddr4", Kind::Ipv4),
    Field::new(8, "daddr6", Kind::Ipv6),
    Field::new(9, "sport", Kind::U16Be),
    Field::new(10, "dport", Kind::U16Be),
    Field::new(11, "backup", Kind::U8),
    Field::new(12, "error", Kind::U8),
    Field::new(13, "flags", Kind::U16),
    Field::new(14, "timeout", Kind::U32),
    Field::new(15, "if-idx", Kind::S32),
    Field::new(16, "reset-reason", Kind::U32),
    Field::new(17, "reset-flags", Kind::U32),
    Field::new(18, "server-side", Kind::U8),
];

const EVENT_NAMES: &[(u8, &str)] = &[
    (1, "created"),
    (2, "established"),
    (3, "closed"),
    (6, "announced"),
    (7, "removed"),
    (10, "sub-established"),
    (11, "sub-closed"),
    (13, "sub-priority"),
    (15, "listener-created"),
    (16, "listener-closed"),
];

/// Serves the mptcp_pm family.
pub struct MptcpPm;

/// `{"id": N, ...}` from the client becomes `{"addr": {...}}`, with the
/// address family filled in from the address given.
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
    Ok(json!({ "addr": addr }))
}

impl Plugin for MptcpPm {
    fn init(_config: Config) -> Result<Self, String> {
        Ok(MptcpPm)
    }

    fn describe(&self) -> PluginDescription {
        PluginDescription::new("mptcp_pm")
            .version(env!("CARGO_PKG_VERSION"))
            .op("endpoint-get", "One endpoint: {\"id\": N}", false)
            .op("endpoint-dump", "Every endpoint", false)
            .op("limits-get", "The path manager's limits", false)
            .op(
                "endpoint-add",
                "Add an endpoint: {\"addr4\"|\"addr6\", \"id\"?, \"flags\"?, \"port\"?, \"if-idx\"?}",
                true,
            )
            .op("endpoint-del", "Delete an endpoint: {\"id\": N}", true)
            .op("endpoint-flush", "Delete every endpoint", true)
            .op(
                "limits-set",
                "Set limits: {\"subflows\"?, \"rcv-add-addrs\"?}",
                true,
            )
            .topic("connection")
    }

    fn call(&mut self, op: &str, input: Value) -> Result<Value, CallError> {
        let endpoint = |v: Value| v.get("addr").cloned().unwrap_or(v);
        match op {
            "endpoint-get" => do_json(GET_ADDR, &addr_input(&input)?, ATTR, ATTR).map(endpoint),
            "endpoint-dump" => dump_json(GET_ADDR, &Value::Null, ATTR, ATTR).map(|v| {
                Value::Array(
                    v.as_array()
                        .into_iter()
                        .flatten()
                        .cloned()
                        .map(endpoint)
                        .collect(),
                )
            }),
            "limits-get" => do_json(GET_LIMITS, &Value::Null, ATTR, ATTR),
            "endpoint-add" => {
                do_json(ADD_ADDR, &addr_input(&input)?, ATTR, ATTR).map(|_| json!({"added": true}))
            }
            "endpoint-del" => {
                do_json(DEL_ADDR, &addr_input(&input)?, ATTR, ATTR).map(|_| json!({"deleted": true}))
            }
            "endpoint-flush" => {
                do_json(FLUSH_ADDRS, &Value::Null, ATTR, ATTR).map(|_| json!({"flushed": true}))
            }
            "limits-set" => do_json(SET_LIMITS, &input, ATTR, ATTR).map(|_| json!({"set": true})),
            _ => Err(CallError::unknown_op(op)),
        }
    }

    fn on_notification(&mut self, _group: &str, message: Message) {
        let name = EVENT_NAMES
            .iter()
            .find(|(c, _)| *c == message.cmd)
            .map_or("unknown", |(_, n)| n);
        match decode(&message.payload, EVENT) {
            Ok(v) => events::publish(
                "connection",
                &json!({"event": name, "cmd": message.cmd, "attrs": v}),
            ),
            Err(e) => log::warn(&format!("malformed mptcp event: {e}")),
        }
    }
}

export_plugin!(MptcpPm);

#[cfg(test)]
mod tests {
    use super::*;
    use genl_plugin_sdk::testing::FakeKernel;
    use genl_plugin_sdk::{FamilyInfo, KernelError, schema::encode};

    #[test]
    fn endpoint_add_fills_the_family_and_maps_kernel_errors() {
        let kernel = FakeKernel::new(FamilyInfo::default());
        kernel.on_do(ADD_ADDR, |req| {
            let v = decode(&req.payload, ATTR).unwrap();
            assert_eq!(v["addr"]["family"], 2);
            assert_eq!(v["addr"]["addr4"], "192.0.2.1");
            Err(RequestError::Kernel(KernelError {
                errno: 22,
                message: Some("address already in use".into()),
                offset: None,
            }))
        });
        let err = MptcpPm
            .call("endpoint-add", json!({"addr4": "192.0.2.1", "id": 1}))
            .unwrap_err();
        assert_eq!(err.code, "kernel");
        assert_eq!(
            err.kernel.unwrap().message.as_deref(),
            Some("address already in use")
        );
    }

    #[test]
    fn dump_unwraps_addr_and_events_are_named() {
        let kernel = FakeKernel::new(FamilyInfo::default());
        kernel.on_dump(GET_ADDR, |_| {
            let a = encode(
                &json!({"addr": {"family": 2, "id": 3, "addr4": "10.0.0.1"}}),
                ATTR,
            )
            .unwrap();
            Ok(vec![Message::new(GET_ADDR, a)])
        });
        let v = MptcpPm.call("endpoint-dump", Value::Null).unwrap();
        assert_eq!(v, json!([{"family": 2, "id": 3, "addr4": "10.0.0.1"}]));
        let ev = encode(&json!({"token": 9}), EVENT).unwrap();
        MptcpPm.on_notification("mptcp_pm_events", Message::new(2, ev));
        assert_eq!(kernel.events()[0].1["event"], "established");
    }
}
