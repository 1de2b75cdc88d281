//! The ethtool plugin: link settings, link state, features, rings and
//! channels of network devices (`ethtool` genl family).
//!
//! Operations (read-only), each `X-get {"dev-name"|"dev-index"}` (no other
//! key) and `X-dump` (no input): `linkinfo`, `linkmodes`, `linkstate`,
//! `features`, `rings`, `channels`. Each sends only the ETHTOOL_MSG_X_GET
//! command; the tests check that against the kernel's UAPI header.
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

/// What a GET request may carry: the request header, nothing else.
const HEADER_REQUEST: &[Field] = &[Field::new(1, "header", Kind::Nested(HEADER))];

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

/// One kind of device settings the plugin reads.
struct Settings {
    /// Op prefix: `NAME-get`, `NAME-dump`.
    name: &'static str,
    /// The ETHTOOL_MSG_*_GET request (user->kernel enum). Only GETs: every
    /// op of this plugin is read-only, and the bundled family file allows
    /// nothing else.
    get: u8,
    /// The attribute set of the request's reply and of its notification.
    fields: &'static [Field],
    /// The ETHTOOL_MSG_*_NTF notification (kernel->user enum), if any.
    ntf: Option<u8>,
}

const SETTINGS: &[Settings] = &[
    Settings {
        name: "linkinfo",
        get: 2,
        fields: LINKINFO,
        ntf: Some(3),
    },
    Settings {
        name: "linkmodes",
        get: 4,
        fields: LINKMODES,
        ntf: Some(5),
    },
    Settings {
        name: "linkstate",
        get: 6,
        fields: LINKSTATE,
        ntf: None,
    },
    Settings {
        name: "features",
        get: 11,
        fields: FEATURES,
        ntf: Some(13),
    },
    Settings {
        name: "rings",
        get: 15,
        fields: RINGS,
        ntf: Some(17),
    },
    Settings {
        name: "channels",
        get: 17,
        fields: CHANNELS,
        ntf: Some(19),
    },
];

/// Serves the ethtool family.
pub struct Ethtool;

/// The keys a `*-get` input may have: the device, nothing else. Anything
/// more would reach the kernel inside the request (the reply's attribute
/// set is also the SET request's), so it is refused, not ignored.
const DEVICE_KEYS: [&str; 2] = ["dev-name", "dev-index"];

/// `{"dev-name": ..}` and/or `{"dev-index": ..}` becomes `{"header": {...}}`.
fn header_input(input: &Value) -> Result<Value, CallError> {
    let usage = "expected {\"dev-name\": \"...\"} or {\"dev-index\": N}";
    let Value::Object(m) = input else {
        return Err(CallError::bad_input(usage));
    };
    if let Some(key) = m.keys().find(|k| !DEVICE_KEYS.contains(&k.as_str())) {
        return Err(CallError::bad_input(format!("unknown key '{key}': {usage}")));
    }
    if m.is_empty() {
        return Err(CallError::bad_input(usage));
    }
    Ok(json!({"header": m}))
}

/// A dump takes no input: every device of the namespace.
fn dump_input(input: &Value) -> Result<(), CallError> {
    match input {
        Value::Null => Ok(()),
        Value::Object(m) => match m.keys().next() {
            None => Ok(()),
            Some(key) => Err(CallError::bad_input(format!(
                "unknown key '{key}': a dump takes no input (null or {{}})"
            ))),
        },
        _ => Err(CallError::bad_input("a dump takes no input (null or {})")),
    }
}

impl Plugin for Ethtool {
    fn init(_config: Config) -> Result<Self, String> {
        Ok(Ethtool)
    }

    fn describe(&self) -> PluginDescription {
        let mut d = PluginDescription::new("ethtool").version(env!("CARGO_PKG_VERSION"));
        for Settings { name, .. } in SETTINGS {
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
        for s in SETTINGS {
            if op.strip_suffix("-get") == Some(s.name) {
                return do_json(s.get, &header_input(&input)?, HEADER_REQUEST, s.fields);
            }
            if op.strip_suffix("-dump") == Some(s.name) {
                dump_input(&input)?;
                return dump_json(s.get, &Value::Null, HEADER_REQUEST, s.fields);
            }
        }
        Err(CallError::unknown_op(op))
    }

    fn on_notification(&mut self, _group: &str, message: Message) {
        let known = SETTINGS.iter().find(|s| s.ntf == Some(message.cmd));
        let (kind, fields) = known.map_or(("other", HEADER), |s| (s.name, s.fields));
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

    /// The numbered members of every `enum { ... }` in a C header, in order
    /// (an entry whose `= value` is not a plain number ends its enum's
    /// numbering; in UAPI headers only the `*_MAX` ones are like that).
    fn c_enums(text: &str) -> Vec<Vec<(String, i64)>> {
        let mut clean = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("/*") {
            clean.push_str(&rest[..start]);
            rest = rest[start..]
                .find("*/")
                .map_or("", |end| &rest[start + end + 2..]);
        }
        clean.push_str(rest);
        let mut enums = Vec::new();
        let mut rest = clean.as_str();
        while let Some(at) = rest.find("enum") {
            rest = &rest[at + 4..];
            let (Some(open), Some(close)) = (rest.find('{'), rest.find('}')) else {
                break;
            };
            if open > close || rest[..open].contains(';') {
                continue;
            }
            let mut members = Vec::new();
            let mut next = 0i64;
            for entry in rest[open + 1..close]
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
            {
                let (name, value) = match entry.split_once('=') {
                    Some((n, v)) => {
                        let v = v.trim();
                        let parsed = match v.strip_prefix("0x") {
                            Some(h) => i64::from_str_radix(h, 16).ok(),
                            None => v.parse().ok(),
                        };
                        let Some(parsed) = parsed else { break };
                        (n.trim(), parsed)
                    }
                    None => (entry, next),
                };
                members.push((name.to_owned(), value));
                next = value + 1;
            }
            enums.push(members);
            rest = &rest[close..];
        }
        enums
    }

    /// The kernel's UAPI header `linux/NAME`, read at test time: the
    /// installed one (linux-libc-dev), else one of /usr/src's kernel
    /// headers. Missing headers fail the test: scripts/setup.sh installs them.
    fn uapi_header(name: &str) -> String {
        let mut candidates = vec![std::path::PathBuf::from("/usr/include/linux").join(name)];
        if let Ok(dir) = std::fs::read_dir("/usr/src") {
            for e in dir.flatten() {
                candidates.push(e.path().join("include/uapi/linux").join(name));
            }
        }
        candidates
            .iter()
            .find_map(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_else(|| {
                panic!("no linux/{name} in {candidates:?}: run scripts/setup.sh (linux-libc-dev)")
            })
    }

    /// The enum of ethtool_netlink.h whose first member is `first`, as
    /// number -> name.
    fn ethtool_enum(first: &str) -> std::collections::BTreeMap<u8, String> {
        let mut text = uapi_header("ethtool_netlink.h");
        // Newer kernels generate the message enums into a second header.
        if let Ok(generated) = std::fs::read_to_string("/usr/include/linux/ethtool_netlink_generated.h") {
            text.push_str(&generated);
        }
        let members = c_enums(&text)
            .into_iter()
            .find(|e| e.first().is_some_and(|(n, _)| n == first))
            .unwrap_or_else(|| panic!("no enum starting with {first} in ethtool_netlink.h"));
        members
            .into_iter()
            .filter_map(|(n, v)| Some((u8::try_from(v).ok()?, n)))
            .collect()
    }

    #[test]
    fn every_command_the_plugin_sends_is_the_headers_get_for_its_op() {
        let user = ethtool_enum("ETHTOOL_MSG_USER_NONE");
        assert_eq!(
            user.get(&17).map(String::as_str),
            Some("ETHTOOL_MSG_CHANNELS_GET"),
            "header parsed wrong: {user:?}"
        );
        let kernel = FakeKernel::new(FamilyInfo::default());
        for cmd in 0..=u8::MAX {
            kernel.on_do(cmd, |_| Ok(vec![]));
            kernel.on_dump(cmd, |_| Ok(vec![]));
        }
        let ops = Ethtool.describe().ops;
        assert!(ops.len() >= 12, "{ops:?}");
        for op in &ops {
            assert!(!op.writes, "{} is described as writing", op.name);
            let (settings, kind) = op.name.rsplit_once('-').unwrap();
            let input = if kind == "get" {
                json!({"dev-name": "eth0"})
            } else {
                Value::Null
            };
            let before = kernel.requests().len();
            Ethtool.call(&op.name, input).unwrap();
            let sent = &kernel.requests()[before..];
            assert_eq!(sent.len(), 1, "{}: {sent:?}", op.name);
            let expected = format!("ETHTOOL_MSG_{}_GET", settings.to_uppercase());
            assert_eq!(
                user.get(&sent[0].cmd),
                Some(&expected),
                "{} sends command {}",
                op.name,
                sent[0].cmd
            );
        }
    }

    #[test]
    fn the_bundled_allowlist_holds_only_get_commands() {
        let user = ethtool_enum("ETHTOOL_MSG_USER_NONE");
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/families.d/ethtool.toml"
        );
        let file: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
        let commands = file["commands"].as_table().unwrap();
        let mut checked = 0;
        for kind in ["do", "dump"] {
            for n in commands
                .get(kind)
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                let n = u8::try_from(n.as_integer().unwrap()).unwrap();
                let name = user.get(&n).map_or("(not in the header)", String::as_str);
                assert!(name.ends_with("_GET"), "[commands] {kind} allows {n} = {name}");
                checked += 1;
            }
        }
        assert!(checked > 0, "no commands in {path}");
    }

    #[test]
    fn notifications_are_named_by_the_headers_ntf_numbers() {
        let kernel_enum = ethtool_enum("ETHTOOL_MSG_KERNEL_NONE");
        let fake = FakeKernel::new(FamilyInfo::default());
        let mut expected = Vec::new();
        for (cmd, name) in &kernel_enum {
            let Some(settings) = name
                .strip_prefix("ETHTOOL_MSG_")
                .and_then(|n| n.strip_suffix("_NTF"))
            else {
                continue;
            };
            let settings = settings.to_lowercase();
            if SETTINGS.iter().any(|s| s.name == settings) {
                let ntf = encode(&json!({"header": {"dev-name": "ifb1"}}), HEADER_REQUEST).unwrap();
                Ethtool.on_notification("monitor", Message::new(*cmd, ntf));
                expected.push(settings);
            }
        }
        let kinds: Vec<String> = fake
            .events()
            .iter()
            .map(|(_, v)| v["kind"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kinds, expected);
        assert_eq!(
            expected.len(),
            5,
            "linkinfo, linkmodes, features, rings, channels: {expected:?}"
        );
    }

    #[test]
    fn get_input_other_than_the_device_is_refused_by_name() {
        let kernel = FakeKernel::new(FamilyInfo::default());
        for bad in [
            json!({"dev-name": "veth0", "rx-count": 4}),
            json!({"header": {"dev-name": "veth0"}, "rx-count": 4}),
            json!({"dev-index": 2, "flags": 1}),
        ] {
            let err = Ethtool.call("channels-get", bad.clone()).unwrap_err();
            assert_eq!(err.code, "bad-input", "{bad}");
            let key = bad
                .as_object()
                .unwrap()
                .keys()
                .find(|k| !DEVICE_KEYS.contains(&k.as_str()))
                .unwrap();
            assert!(err.message.contains(&format!("'{key}'")), "{}", err.message);
        }
        let err = Ethtool.call("channels-dump", json!({"rx-count": 4})).unwrap_err();
        assert!(err.message.contains("'rx-count'"), "{}", err.message);
        assert!(kernel.requests().is_empty(), "{:?}", kernel.requests());
    }
}
