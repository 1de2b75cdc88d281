//! The bundled YNL specs load, and the numbers the engine derives from them
//! agree with the kernel's own UAPI headers (an independent source: the
//! headers are what the kernel is compiled with).

use std::path::{Path, PathBuf};

use genl_plugin_sdk::ynl::Spec;

/// The kernel's UAPI headers, extracted from Debian's linux-source-6.12 by
/// scripts/setup.sh.
fn uapi(header: &str) -> String {
    format!("{}/include/uapi/linux/{header}", oracle_dir())
}

fn oracle_dir() -> String {
    std::env::var("GENL_ORACLE_DIR")
        .unwrap_or_else(|_| "/usr/local/share/genl-gateway/linux-source-6.12".into())
}

fn specs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ynl-specs")
}

fn load(name: &str) -> Spec {
    let text = std::fs::read_to_string(specs_dir().join(format!("{name}.yaml"))).expect("bundled spec");
    Spec::load(&text).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_bundled_spec_loads() {
    let mut n = 0;
    for entry in std::fs::read_dir(specs_dir()).expect("ynl-specs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            text.starts_with("# SPDX-License-Identifier: "),
            "{} lost its SPDX line",
            path.display()
        );
        let spec = Spec::load(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(!spec.ops.is_empty(), "{}: no operations", path.display());
        n += 1;
    }
    assert!(n >= 20, "only {n} specs bundled");
}

/// `enum NAME { A, B = 5, C, ... }` from a C header: entry names with values.
fn c_enum(header: &str, first_entry: &str) -> Vec<(String, i64)> {
    let text = std::fs::read_to_string(header)
        .unwrap_or_else(|e| panic!("{header}: {e} (scripts/setup.sh extracts the kernel's headers there)"));
    let start = text
        .find(first_entry)
        .unwrap_or_else(|| panic!("{first_entry} not in {header}"));
    let body = &text[start..];
    let body = &body[..body.find('}').expect("enum end")];
    let mut out = Vec::new();
    let mut next = 0i64;
    for item in body.split(',') {
        let item = item
            .lines()
            .map(|l| l.split("/*").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" ");
        let item = item.trim();
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        // `__X_CNT` and `X_MAX = __X_CNT - 1` close the enum.
        if item.starts_with("__") {
            break;
        }
        let (name, value) = match item.split_once('=') {
            Some((n, v)) => {
                let v = v.trim();
                let v = out
                    .iter()
                    .find(|(n, _): &&(String, i64)| n == v)
                    .map(|(_, x)| *x)
                    .unwrap_or_else(|| v.parse().unwrap_or_else(|_| panic!("value {v}")));
                (n.trim().to_owned(), v)
            }
            None => (item.to_owned(), next),
        };
        next = value + 1;
        out.push((name, value));
    }
    out
}

fn c_name(prefix: &str, op: &str, suffix: &str) -> String {
    format!("{prefix}{}{suffix}", op.to_uppercase().replace('-', "_"))
}

#[test]
fn ethtool_command_numbers_match_the_uapi_header() {
    let spec = load("ethtool");
    let requests = c_enum(&uapi("ethtool_netlink.h"), "ETHTOOL_MSG_USER_NONE");
    let replies = c_enum(&uapi("ethtool_netlink.h"), "ETHTOOL_MSG_KERNEL_NONE");
    let mut checked = 0;
    for op in &spec.ops {
        // The spec names ops after the GET request; the header has _GET and
        // _SET names, and replies _GET_REPLY / _NTF.
        if let Some(v) = op.request_value {
            let name = c_name("ETHTOOL_MSG_", &op.name, "");
            if let Some((_, want)) = requests.iter().find(|(n, _)| *n == name) {
                assert_eq!(i64::from(v), *want, "{name}");
                checked += 1;
            }
        }
        if let Some(v) = op.reply_value {
            let suffix = if op.notification.is_some() { "" } else { "_REPLY" };
            let name = c_name("ETHTOOL_MSG_", &op.name, suffix);
            if let Some((_, want)) = replies.iter().find(|(n, _)| *n == name) {
                assert_eq!(i64::from(v), *want, "{name}");
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 40,
        "only {checked} ethtool numbers found in the header"
    );
    let channels = spec.op("channels-get").expect("channels-get");
    assert_eq!(channels.request_value, Some(17), "ETHTOOL_MSG_CHANNELS_GET");
}

#[test]
fn netdev_numbers_match_the_uapi_header() {
    let spec = load("netdev");
    let cmds = c_enum(&uapi("netdev.h"), "NETDEV_CMD_DEV_GET");
    for (name, value) in &cmds {
        let Some(op_name) = name.strip_prefix("NETDEV_CMD_") else {
            continue;
        };
        let op_name = op_name.to_lowercase().replace('_', "-");
        let op = spec
            .op(&op_name)
            .unwrap_or_else(|| panic!("{op_name} not in the spec"));
        assert_eq!(op.request_value.map(i64::from), Some(*value), "{name}");
    }
    let attrs = c_enum(&uapi("netdev.h"), "NETDEV_A_DEV_IFINDEX");
    let dev = spec.set("dev").expect("dev set");
    for (name, value) in attrs
        .iter()
        .filter(|(n, _)| n.starts_with("NETDEV_A_DEV_") && !n.ends_with("MAX"))
    {
        let attr = name
            .trim_start_matches("NETDEV_A_DEV_")
            .to_lowercase()
            .replace('_', "-");
        let def = dev
            .by_name(&attr)
            .unwrap_or_else(|| panic!("{attr} not in the dev set"));
        assert_eq!(i64::from(def.value), *value, "{name}");
    }
}

#[test]
fn a_malformed_spec_is_one_clear_error() {
    let e = Spec::load(
        "name: x\nattribute-sets:\n  - name: a\n    attributes:\n      - name: b\n        type: u33\n",
    )
    .expect_err("bad type");
    let text = e.to_string();
    assert!(
        text.contains("'x'") && text.contains("attribute-sets.a.b") && text.contains("u33"),
        "{text}"
    );
    let e = Spec::load("name: y\nattribute-sets: [ { name: a, attributes: [ {name: n, type: nest, nested-attributes: nope} ] } ]\n")
        .expect_err("dangling nest");
    assert!(e.to_string().contains("nope"), "{e}");
    let e = Spec::load("name: z\n  bad: [yaml").expect_err("bad yaml");
    assert!(e.to_string().contains("YAML"), "{e}");
}
