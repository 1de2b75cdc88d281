//! Families with no YNL spec, served through the policy fallback (`spec =
//! "kernel-policy"`): the gateway writes a spec from the kernel's GETFAMILY
//! and GETPOLICY answers. Checked against iproute2 (`ip ioam`, `ip sr`, and
//! `genl ctrl policy` for the types and ranges) in private namespaces.

mod common;

use common::{Gateway, Netns, TestConfig, http};
use serde_json::{Value, json};

fn fallback_family(config: &TestConfig, family: &str, do_cmds: &[u8], dump_cmds: &[u8]) {
    config.family(
        &format!("{family}.toml"),
        &format!(
            "family = \"{family}\"\nplugin = \"{}\"\nspec = \"kernel-policy\"\n[commands]\ndo = {do_cmds:?}\ndump = {dump_cmds:?}\n",
            common::plugin("ynl").display()
        ),
    );
}

/// `GET /v1/families/NAME` as JSON.
fn family_json(gw: &Gateway, name: &str) -> Value {
    let (status, body) = http(
        &gw.socket.display().to_string(),
        "GET",
        &format!("/v1/families/{name}"),
        &[],
        b"",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("family JSON")
}

/// A number iproute2 printed as hex, with or without `0x`.
fn hex_number(v: &Value) -> u64 {
    let s = v.as_str().expect("iproute2 prints these as hex strings");
    u64::from_str_radix(s.trim_start_matches("0x"), 16).expect("hex")
}

/// IOAM namespaces as `ip -j ioam namespace show` lists them, keyed the
/// way the fallback keys them: IOAM6_ATTR_NS_ID 1, NS_DATA 2, NS_DATA_WIDE 3
/// (<linux/ioam6_genl.h>).
fn ioam_namespaces(ns: &Netns) -> Vec<Value> {
    let out = ns.exec(&["ip", "-j", "ioam", "namespace", "show"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("ip -j JSON");
    let mut expected: Vec<Value> = listed
        .iter()
        .map(|n| {
            let mut o = json!({"1": n["namespace"]});
            if !n["data"].is_null() {
                o["2"] = hex_number(&n["data"]).into();
            }
            if !n["wide"].is_null() {
                o["3"] = hex_number(&n["wide"]).into();
            }
            o
        })
        .collect();
    expected.sort_by_key(|o| o["1"].as_u64());
    expected
}

fn sorted(v: &Value) -> Vec<Value> {
    let mut items = v.as_array().expect("a dump is an array").clone();
    items.sort_by_key(|o| o["1"].as_u64());
    items
}

#[test]
fn ioam6_is_read_and_written_through_the_kernels_policy() {
    let ns = Netns::new("fb-ioam");
    ns.ip(&[
        "ioam",
        "namespace",
        "add",
        "123",
        "data",
        "0xdeadbeef",
        "wide",
        "0x1234567890",
    ]);
    ns.ip(&["ioam", "namespace", "add", "7"]);
    let config = TestConfig::new();
    config.netns(&ns);
    // IOAM6_CMD_ADD_NAMESPACE 1, IOAM6_CMD_DUMP_NAMESPACES 3.
    fallback_family(&config, "IOAM6", &[1], &[3]);
    let gw = Gateway::start(&config);

    // The description says what it is.
    let family = family_json(&gw, "IOAM6");
    let description = &family["plugin"]["description"];
    assert_eq!(description["version"], "ynl kernel-policy fallback", "{family}");
    let ops = description["ops"].as_array().expect("ops");
    let dump = ops
        .iter()
        .find(|o| o["name"] == "cmd-3-dump")
        .unwrap_or_else(|| panic!("cmd-3-dump offered: {description}"));
    assert!(
        dump["summary"]
            .as_str()
            .is_some_and(|s| s.contains("kernel's attribute policy") && s.contains("no YNL spec")),
        "{dump}"
    );
    // Every command the kernel registers (genl ctrl get name IOAM6) is an op.
    let kernel_cmds: Vec<u64> = family["ops"]
        .as_array()
        .expect("kernel ops")
        .iter()
        .filter_map(|o| o["id"].as_u64())
        .collect();
    for cmd in kernel_cmds {
        assert!(
            ops.iter()
                .any(|o| o["name"] == format!("cmd-{cmd}") || o["name"] == format!("cmd-{cmd}-dump")),
            "command {cmd} is offered: {description}"
        );
    }

    // Read: the dump has no policy of its own; its replies are typed with
    // the attributes the family's other ops declare.
    let (ok, ours) = gw.call("IOAM6", "cmd-3-dump", "null");
    assert!(ok, "{ours}");
    assert_eq!(sorted(&ours), ioam_namespaces(&ns));
    assert_eq!(ioam_namespaces(&ns).len(), 2, "both namespaces listed");

    // Write: attribute numbers as keys, read back with iproute2.
    let (ok, out) = gw.call("IOAM6", "cmd-1", r#"{"1": 55, "2": 4096, "3": 1099511627776}"#);
    assert!(ok, "{out}");
    let listed = ioam_namespaces(&ns);
    assert!(
        listed.contains(&json!({"1": 55, "2": 4096, "3": 1_099_511_627_776u64})),
        "{listed:?}"
    );

    // The kernel's range for attribute 1 (`genl ctrl policy name IOAM6`:
    // policy[0]:attr[1]: type=U16 range:[0,65535]) is checked before the
    // kernel sees the request, naming the attribute.
    let out = ns.exec(&["genl", "ctrl", "policy", "name", "IOAM6"]);
    let policy = String::from_utf8_lossy(&out.stdout);
    assert!(
        policy.contains("attr[1]: type=U16 range:[0,65535]"),
        "genl ctrl policy: {policy}"
    );
    let (ok, e) = gw.call("IOAM6", "cmd-1", r#"{"1": 65536}"#);
    assert!(!ok);
    assert!(
        e.to_string().contains("\"1\"") || e.to_string().contains(".1"),
        "{e}"
    );
    // An attribute the op's policy does not accept is refused, listing
    // what it accepts.
    let (ok, e) = gw.call("IOAM6", "cmd-1", r#"{"1": 9, "6": true}"#);
    assert!(!ok);
    assert!(e.to_string().contains('6'), "{e}");
    assert_eq!(
        ioam_namespaces(&ns).len(),
        3,
        "nothing was added by refused calls"
    );
}

#[test]
fn seg6_tunnel_source_round_trips_through_the_fallback() {
    let ns = Netns::new("fb-seg6");
    ns.ip(&["sr", "tunsrc", "set", "2001:db8::1"]);
    let config = TestConfig::new();
    config.netns(&ns);
    // SEG6_CMD_SET_TUNSRC 3, SEG6_CMD_GET_TUNSRC 4 (<linux/seg6_genl.h>).
    fallback_family(&config, "SEG6", &[3, 4], &[]);
    let gw = Gateway::start(&config);

    // SEG6_ATTR_DST (1) is NLA_BINARY of 16 bytes: shown as hex.
    let hex = |addr: std::net::Ipv6Addr| {
        addr.octets()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (ok, ours) = gw.call("SEG6", "cmd-4", "null");
    assert!(ok, "{ours}");
    let shown = String::from_utf8_lossy(&ns.exec(&["ip", "sr", "tunsrc", "show"]).stdout).into_owned();
    let addr: std::net::Ipv6Addr = shown
        .split_whitespace()
        .last()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("ip sr tunsrc show: {shown}"));
    assert_eq!(ours, json!({"1": hex(addr)}));

    let new: std::net::Ipv6Addr = "2001:db8:0:f00::2".parse().expect("address");
    let (ok, out) = gw.call("SEG6", "cmd-3", &json!({"1": hex(new)}).to_string());
    assert!(ok, "{out}");
    let shown = String::from_utf8_lossy(&ns.exec(&["ip", "sr", "tunsrc", "show"]).stdout).into_owned();
    assert_eq!(shown.trim(), format!("tunsrc addr {new}"));
    // Longer than the kernel's max len (genl ctrl policy: max len:16).
    let (ok, e) = gw.call(
        "SEG6",
        "cmd-3",
        &json!({"1": "00 ".repeat(17).trim()}).to_string(),
    );
    assert!(!ok, "{e}");
}

#[test]
fn an_absent_family_answers_family_absent_and_says_it_waits() {
    let config = TestConfig::new();
    // No kernel has this family; the file still loads.
    fallback_family(&config, "GWFBNOSUCH", &[1], &[]);
    let gw = Gateway::start(&config);
    let family = family_json(&gw, "GWFBNOSUCH");
    assert_eq!(family["present"], false, "{family}");
    assert_eq!(family["plugin"]["state"], "ready", "{family}");
    assert_eq!(
        family["plugin"]["description"]["version"], "ynl kernel-policy fallback",
        "{family}"
    );
    let (ok, e) = gw.call("GWFBNOSUCH", "cmd-1", "null");
    assert!(!ok);
    assert_eq!(e["error"]["code"], "family-absent", "{e}");
}

/// The attributes of a netlink attribute stream, as (type, payload), read
/// here by hand (<linux/netlink.h>: u16 length, u16 type, 4-byte aligned).
fn attrs(bytes: &[u8]) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while rest.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        assert!((4..=rest.len()).contains(&len), "attribute length {len}");
        out.push((kind, rest[4..len].to_vec()));
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    out
}

#[test]
fn taskstats_replies_numbered_apart_from_requests_come_out_as_bytes() {
    // TASKSTATS answers only in the initial namespace: no private one here;
    // the request only reads.
    let config = TestConfig::new();
    // TASKSTATS_CMD_GET 1 (<linux/taskstats.h>).
    fallback_family(&config, "TASKSTATS", &[1], &[]);
    let gw = Gateway::start(&config);
    let pid = std::process::id();
    let (ok, ours) = gw.call("TASKSTATS", "cmd-1", &json!({"1": pid}).to_string());
    assert!(ok, "{ours}");
    // The reply's TASKSTATS_TYPE_AGGR_PID (4) is a nest where requests
    // carry TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK (4), a string: shown as
    // bytes, which hold TASKSTATS_TYPE_PID (1) = this process and
    // TASKSTATS_TYPE_STATS (3).
    let hex = ours["attr-4"]
        .as_str()
        .unwrap_or_else(|| panic!("attr-4 as hex: {ours}"));
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    let inner = attrs(&bytes);
    assert!(inner.contains(&(1, pid.to_ne_bytes().to_vec())), "{inner:?}");
    assert!(inner.iter().any(|(k, v)| *k == 3 && !v.is_empty()), "{inner:?}");
}
