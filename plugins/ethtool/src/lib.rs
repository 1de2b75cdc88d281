//! The ethtool plugin: link settings, link state, features, rings and
//! channels of network devices (`ethtool` genl family).
//!
//! Operations (read-only), each `X-get {"dev-name"|"dev-index"}` and
//! `X-dump`: `linkinfo`, `linkmodes`, `linkstate`, `features`, `rings`,
//! `channels`.
//!
//! Events: topic `monitor` from the `monitor` group (settings changed).

use genl_plugin_sdk::ops::{do_json, dump_json};
use genl_plugin_sdk::prelude::*;
use genl_plugin_sdk::schema::{Field, Kind, decode};

/// ETHTOOL_FLAG_COMPACT_BITSETS is not set: bitsets come with bit names.
const HEADER: &[Field] = &[
    Field::new(1, "dev-index", Kind::U32),
    Field::new(2, "dev-name", Kind::Str),
    Field::new(3, "flags", Kind::U32),
    Field::new(4, "phy-index", Kind::U32),
];

const BIT: &[Field] = &[
    Field::new(1, "index", Kind::U32),
    Field::new(2, "name", Kind::Str),
    Field::new(3, "value", Kind::Flag),
];
const BITS: &[Field] = &[Field::new(1, "bit", Kind::Nested(BIT)).multi()];
const BITSET: &[Field] = &[
    Field::new(1, "nomask", Kind::Flag),
    Field::new(2, "size", Kind::U32),
    Field::new(3, "bits", Kind::Nested(BITS)),
    Field::new(4, "value", Kind::Binary),
    Field::new(5, "mask", Kind::Binary),
];

const LINKINFO: &[Field] = &[
    Field::new(1, "header", Kind::Nested(HEADER)),
    Field::new(2, "port", Kind::U8),
    Field::new(3, "phyaddr", Kind::U8),
    Field::new(4, "tp-mdix", Kind::U8),
    Field::new(5, "tp-mdix-ctrl", Kind::U8),
    Field::new(6, "transceiver", Kind::U8),
];
const LINKMODES: &[Field] = &[
    Field::new(1, "header", Kind::Nested(HEADER)),
    Field::new(2, "autoneg", Kind::U8),
    Field::new(3, "ours", Kind::Nested(BITSET)),
    Field::new(4, "peer", Kind::Nested(BITSET)),
    Field::new(5, "speed", Kind::U32),
    Field::new(6, "duplex", Kind::U8),
    Field::new(7, "master-slave-cfg", Kind::U8),
    Field::new(8, "master-slave-state", Kind::U8),
    Field::new(9, "lanes", Kind::U32),
    Field::new(10, "rate-matching", Kind::U8),
];
const LINKSTATE: &[Field] = &[
    Field::new(1, "header", Kind::Nested(HEADER)),
    Field::new(2, "link", Kind::U8),
    Field::new(3, "sqi", Kind::U32),
    Field::new(4, "sqi-max", Kind::U32),
    Field::new(5, "ext-state", Kind::U8),
    Field::new(6, "ext-substate", Kind::U8),
    Field::new(7, "ext-down-cnt", Kind::U32),
];
const FEATURES: &[Field] = &[
    Field::new(1, "header", Kind::Nested(HEADER)),
    Field::new(2, "hw", Kind::Nested(BITSET)),
    Field::new(3, "wanted", Kind::Nested(BITSET)),
    Field::new(4, "active", Kind::Nested(BITSET)),
    Field::new(5, "nochange", Kind::Nested(BITSET)),
];
const RINGS: &[Field] = &[
    Field::new(1, "header", Kind::Nested(HEADER)),
    Field::new(2, "rx-max", Kind::U32),
    Field::new(3, "rx-mini-max", Kind::U32),
    Field::new(4, "rx-jumbo-max", Kind::U32),
    Field::new(5, "tx-max", Kind::U32),
    Field::new(6, "rx", Kind::U32),
    Field::new(7, "rx-mini", Kind::U32),
    Field::new(8, "rx-jumbo", Kind::U32),
    Field::new(9, "tx", Kind::U32),
    Field::new(10, "rx-buf-len", Kind::U32),
    Field::new(11, "tcp-data-split", Kind::U8),
    Field::new(12, "cqe-size", Kind::U32),
    Field::new(13, "tx-push", Kind::U8),
    Field::new(14, "rx-push", Kind::U8),
];
const CHANNELS: &[Field] = &[
    Field::new(1, "header", Kind::Nested(HEADER)),
    Field::new(2, "rx-max", Kind::U32),
    Field::new(3, "tx-max", Kind::U32),
    Field::new(4, "other-max", Kind::U32),
    Field::new(5, "combined-max", Kind::U32),
    Field::new(6, "rx-count", Kind::U32),
    Field::new(7, "tx-count", Kind::U32),
    Field::new(8, "other-count", Kind::U32),
    Field::new(9, "combined-count", Kind::U32),
];

/// (name, request command, attribute set, notification command).
const KINDS: &[(&str, u8, &[Field], Option<u8>)] = &[
    ("linkinfo", 2, LINKINFO, Some(3)),
    ("linkmodes", 4, LINKMODES, Some(5)),
    ("linkstate", 6, LINKSTATE, None),
    ("features", 11, FEATURES, Some(13)),
    ("rings", 15, RINGS, Some(17)),
    ("channels", 18, CHANNELS, Some(19)),
];

/// Serves the ethtool family.
pub struct Ethtool;

/// `{"dev-name": ..}` or `{"dev-index": ..}` becomes `{"header": {...}}`.
fn header_input(input: &Value) -> Result<Value, CallError> {
    match input {
        Value::Object(m) if m.contains_key("header") => Ok(input.clone()),
        Value::Object(m) if m.contains_key("dev-name") || m.contains_key("dev-index") => {
            Ok(json!({"header": m}))
        }
        _ => Err(CallError::bad_input(
            "expected {\"dev-name\": \"...\"} or {\"dev-index\": N}",
        )),
    }
}

impl Plugin for Ethtool {
    fn init(_config: Config) -> Result<Self, String> {
        Ok(Ethtool)
    }

    fn describe(&self) -> PluginDescription {
        let mut d = PluginDescription::new("ethtool").version(env!("CARGO_PKG_VERSION"));
        for (name, ..) in KINDS {
            d = d
                .op(
                    &format!("{name}-get"),
                    "One device: {\"dev-name\"} or {\"dev-index\"}",
                    false,
                )
                .op(&format!("{name}-dump"), "Every device", false);
        }
        d.topic("monitor")
    }

    fn call(&mut self, op: &str, input: Value) -> Result<Value, CallError> {
        for (name, cmd, fields, _) in KINDS {
            if op.strip_suffix("-get") == Some(name) {
                return do_json(*cmd, &header_input(&input)?, fields, fields);
            }
            if op.strip_suffix("-dump") == Some(name) {
                return dump_json(*cmd, &Value::Null, fields, fields);
            }
        }
        Err(CallError::unknown_op(op))
    }

    fn on_notification(&mut self, _group: &str, message: Message) {
        let known = KINDS.iter().find(|k| k.3 == Some(message.cmd));
        let (kind, fields) = known.map_or(("other", HEADER), |k| (k.0, k.2));
        match decode(&message.payload, fields) {
            Ok(v) => events::publish("monitor", &json!({"kind": kind, "cmd": message.cmd, "data": v})),
            Err(e) => log::warn(&format!("malformed ethtool notification: {e}")),
        }
    }
}

export_plugin!(Ethtool);

#[cfg(test)]
mod tests {
    use super::*;
    use genl_plugin_sdk::FamilyInfo;
    use genl_plugin_sdk::schema::encode;
    use genl_plugin_sdk::testing::FakeKernel;

    #[test]
    fn get_builds_the_header_and_decodes_bitsets() {
        let kernel = FakeKernel::new(FamilyInfo::default());
        kernel.on_do(11, |req| {
            assert_eq!(decode(&req.payload, FEATURES).unwrap(), json!({"header": {"dev-name": "ifb0"}}));
            let reply = encode(
                &json!({"header": {"dev-index": 3, "dev-name": "ifb0"},
                        "active": {"size": 64, "bits": {"bit": [{"index": 0, "name": "tx-sg", "value": true}]}}}),
                FEATURES,
            )
            .unwrap();
            Ok(vec![Message::new(11, reply)])
        });
        let v = Ethtool.call("features-get", json!({"dev-name": "ifb0"})).unwrap();
        assert_eq!(v["active"]["bits"]["bit"][0]["name"], "tx-sg");
        assert_eq!(
            Ethtool.call("features-get", json!({})).unwrap_err().code,
            "bad-input"
        );
        assert_eq!(
            Ethtool.call("nope-get", json!({})).unwrap_err().code,
            "unknown-op"
        );
    }

    #[test]
    fn monitor_notifications_are_published_by_kind() {
        let kernel = FakeKernel::new(FamilyInfo::default());
        let ntf = encode(&json!({"header": {"dev-name": "ifb1"}, "rx-count": 1}), CHANNELS).unwrap();
        Ethtool.on_notification("monitor", Message::new(19, ntf));
        let (topic, v) = &kernel.events()[0];
        assert_eq!(topic, "monitor");
        assert_eq!(v["kind"], "channels");
        assert_eq!(v["data"]["header"]["dev-name"], "ifb1");
    }
}
