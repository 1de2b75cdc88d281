//! Every number here comes from the kernel's UAPI header (read at test
//! time), never from the spec the plugin encodes and decodes with.

use std::collections::BTreeMap;

use super::*;
use genl_plugin_sdk::FamilyInfo;
use genl_plugin_sdk::testing::FakeKernel;

/// linux/ethtool_netlink.h of the kernel source scripts/setup.sh extracts.
fn header_text() -> String {
    genl_plugin_sdk::uapi::header("ethtool_netlink.h")
}

/// The enum of ethtool_netlink.h whose first member is `first`, as
/// number -> name.
fn ethtool_enum(first: &str) -> BTreeMap<u8, String> {
    let members = genl_plugin_sdk::uapi::enums(&header_text())
        .into_iter()
        .find(|e| e.first().is_some_and(|(n, _)| n == first))
        .unwrap_or_else(|| panic!("no enum starting with {first} in ethtool_netlink.h"));
    members
        .into_iter()
        .filter_map(|(n, v)| Some((u8::try_from(v).ok()?, n)))
        .collect()
}

/// The value of member `name` of any enum in the header.
fn value(name: &str) -> u16 {
    genl_plugin_sdk::uapi::enums(&header_text())
        .into_iter()
        .flatten()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| u16::try_from(v).ok())
        .unwrap_or_else(|| panic!("{name} not in ethtool_netlink.h"))
}

fn plugin() -> Ethtool {
    Ethtool::init(Config::new()).unwrap()
}

#[test]
fn every_command_the_header_names_is_sent_as_the_header_numbers_it() {
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
    let mut p = plugin();
    let ops = p.describe().ops;
    let mut checked = 0;
    for op in &ops {
        let spec_op = op.name.strip_suffix("-dump").unwrap_or(&op.name);
        let spec_op = SHORT_DUMPS
            .iter()
            .find(|(short, _)| *short == op.name)
            .map_or(spec_op, |(_, s)| s.strip_suffix("-dump").unwrap_or(s));
        let expected = format!("ETHTOOL_MSG_{}", spec_op.to_uppercase().replace('-', "_"));
        let Some(cmd) = user.iter().find(|(_, n)| **n == expected).map(|(c, _)| *c) else {
            // A command newer than the header: nothing independent to check.
            continue;
        };
        let before = kernel.requests().len();
        // The kernel's answer does not matter here, only what was sent.
        let _ = p.call(&op.name, Value::Null);
        let sent = &kernel.requests()[before..];
        assert_eq!(sent.len(), 1, "{}: {sent:?}", op.name);
        assert_eq!(
            sent[0].cmd, cmd,
            "{} sends {} for {expected}",
            op.name, sent[0].cmd
        );
        assert_eq!(
            op.writes,
            !expected.contains("_GET"),
            "{} ({expected}) described as writes={}",
            op.name,
            op.writes
        );
        checked += 1;
    }
    // 6.12's header names 45 commands; most have a do and a dump.
    assert!(checked >= 70, "only {checked} ops checked: {ops:?}");
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
            assert!(name.contains("_GET"), "[commands] {kind} allows {n} = {name}");
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} commands in {path}");
}

/// A notification as the kernel builds it: the header nest with the
/// device's name, and `extra` (attribute, u32) pairs.
fn notification(cmd_name: &str, header_attr: &str, extra: &[(&str, u32)]) -> Message {
    let mut w = AttrWriter::new();
    let h = w.begin_nested(value(header_attr));
    w.put_str(value("ETHTOOL_A_HEADER_DEV_NAME"), "ifb1").unwrap();
    w.end_nested(h).unwrap();
    for (attr, v) in extra {
        w.put_u32(value(attr), *v);
    }
    let cmd = u8::try_from(value(cmd_name)).unwrap();
    Message::new(cmd, w.finish())
}

#[test]
fn monitor_notifications_are_published_by_kind() {
    let kernel = FakeKernel::new(FamilyInfo::default());
    let mut p = plugin();
    p.on_notification(
        "monitor",
        notification(
            "ETHTOOL_MSG_CHANNELS_NTF",
            "ETHTOOL_A_CHANNELS_HEADER",
            &[("ETHTOOL_A_CHANNELS_RX_COUNT", 1)],
        ),
    );
    p.on_notification(
        "monitor",
        notification("ETHTOOL_MSG_FEATURES_NTF", "ETHTOOL_A_FEATURES_HEADER", &[]),
    );
    let events = kernel.events();
    assert_eq!(events[0].0, "monitor");
    assert_eq!(events[0].1["kind"], "channels");
    assert_eq!(
        events[0].1["data"],
        json!({"header": {"dev-name": "ifb1"}, "rx-count": 1})
    );
    assert_eq!(events[1].0, "channels-ntf");
    assert_eq!(events[2].1["kind"], "features");
    assert_eq!(events[2].1["data"]["header"]["dev-name"], "ifb1");
}

#[test]
fn the_device_shorthand_becomes_the_request_header() {
    let kernel = FakeKernel::new(FamilyInfo::default());
    let get = u8::try_from(value("ETHTOOL_MSG_FEATURES_GET")).unwrap();
    kernel.on_do(get, |_| Ok(vec![]));
    let mut p = plugin();
    for input in [
        json!({"dev-name": "ifb0"}),
        json!({"header": {"dev-name": "ifb0"}}),
    ] {
        let before = kernel.requests().len();
        p.call("features-get", input).unwrap();
        let sent = &kernel.requests()[before];
        let attrs: Vec<_> = Attrs::new(&sent.payload).map(|a| a.unwrap()).collect();
        assert_eq!(attrs.len(), 1);
        assert_eq!(attrs[0].kind(), value("ETHTOOL_A_FEATURES_HEADER"));
        let name = Attrs::new(attrs[0].bytes())
            .find(value("ETHTOOL_A_HEADER_DEV_NAME"))
            .unwrap()
            .unwrap();
        assert_eq!(name.str().unwrap(), "ifb0");
    }
}

#[test]
fn get_input_other_than_the_device_is_refused_by_name() {
    let kernel = FakeKernel::new(FamilyInfo::default());
    let mut p = plugin();
    for (bad, key) in [
        (json!({"dev-name": "veth0", "rx-count": 4}), "rx-count"),
        (
            json!({"header": {"dev-name": "veth0"}, "rx-count": 4}),
            "rx-count",
        ),
        (json!({"dev-index": 2, "flags": 1}), "flags"),
    ] {
        let err = p.call("channels-get", bad.clone()).unwrap_err();
        assert_eq!(err.code, "bad-input", "{bad}");
        assert!(err.message.contains(key), "{}", err.message);
    }
    for op in ["channels-dump", "channels-get-dump"] {
        let err = p.call(op, json!({"rx-count": 4})).unwrap_err();
        assert!(err.message.contains("rx-count"), "{}", err.message);
    }
    assert_eq!(p.call("nope-get", json!({})).unwrap_err().code, "unknown-op");
    assert!(kernel.requests().is_empty(), "{:?}", kernel.requests());
}
