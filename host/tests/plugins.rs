//! The bundled plugins against the real kernel, cross-checked with
//! independent sources: ethtool, /sys, raw netlink sockets parsed by hand,
//! the kernel's UAPI headers.

mod common;

use std::collections::BTreeMap;

use common::{Gateway, NLCTRL, Netns, TestConfig, normalise, workspace, ynl_cli};
use serde_json::{Value, json};

/// The bundled family file `config/families.d/NAME`.
fn bundled_family(name: &str) -> String {
    std::fs::read_to_string(workspace().join("config/families.d").join(name)).expect("bundled family file")
}

#[test]
fn taskstats_reads_a_task_and_publishes_exit_records() {
    let config = TestConfig::new();
    config.family(
        "taskstats.toml",
        "family = \"TASKSTATS\"\nplugin = \"taskstats.wasm\"\n[commands]\ndo = [1]\n",
    );
    let gw = Gateway::start(&config);

    let me = std::process::id();
    let (ok, v) = gw.call("TASKSTATS", "pid", &json!({"pid": me}).to_string());
    assert!(ok, "{v}");
    assert_eq!(v["pid"], me);
    assert_eq!(v["stats"]["pid"], me);
    assert!(v["stats"]["version"].as_u64().unwrap() >= 8);

    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (ok, v) = gw.call(
        "TASKSTATS",
        "listen",
        &json!({"cpumask": format!("0-{}", cpus - 1)}).to_string(),
    );
    assert!(ok, "{v}");
    let exits = gw.subscribe("TASKSTATS", "exit", u64::MAX);
    let children: Vec<u64> = (0..5)
        .map(|_| {
            let mut c = std::process::Command::new("true").spawn().unwrap();
            c.wait().unwrap();
            u64::from(c.id())
        })
        .collect();
    // Every task on the machine that exits is reported; wait for ours.
    let pid_of = |e: &Value| e["payload"]["pid"].as_u64();
    let seen = exits.until(30, "exit records", |events| {
        children
            .iter()
            .all(|c| events.iter().any(|e| pid_of(e) == Some(*c)))
    });
    let ours = seen.iter().find(|e| pid_of(e) == Some(children[0])).unwrap();
    assert_eq!(ours["payload"]["stats"]["comm"], "true");
    assert_eq!(ours["payload"]["stats"]["pid"], children[0]);
}

#[test]
fn thermal_zones_match_sysfs() {
    let config = TestConfig::new();
    config.family("thermal.toml", &bundled_family("thermal.toml"));
    let gw = Gateway::start(&config);
    let (ok, zones) = gw.call("thermal", "zones", "null");
    assert!(ok, "{zones}");
    // /sys/class/thermal/thermal_zoneN: zone id N, its `type` is the name
    // the kernel reports. A machine without zones has the directory empty
    // of them (this test then checks the empty answer; the decoding of
    // real pairs is tested in the plugin's crate on header-built bytes).
    let mut sysfs: Vec<(u64, String)> = std::fs::read_dir("/sys/class/thermal")
        .expect("/sys/class/thermal (CONFIG_THERMAL)")
        .flatten()
        .filter_map(|e| {
            let id = e
                .file_name()
                .to_string_lossy()
                .strip_prefix("thermal_zone")?
                .parse()
                .ok()?;
            let name = std::fs::read_to_string(e.path().join("type")).expect("zone type");
            Some((id, name.trim_end().to_owned()))
        })
        .collect();
    sysfs.sort();
    let mut via_plugin: Vec<(u64, String)> = zones
        .as_array()
        .unwrap()
        .iter()
        .map(|z| {
            (
                z["tz-id"].as_u64().unwrap(),
                z["tz-name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    via_plugin.sort();
    assert_eq!(via_plugin, sysfs, "{zones}");
}

/// Every member of every enum of the UAPI header `linux/NAME`, by name.
fn uapi_names(name: &str) -> BTreeMap<String, i64> {
    genl_plugin_sdk::uapi::members(name).into_iter().collect()
}

/// The attributes of `buf`, parsed by hand: (type without flag bits, payload).
fn raw_attrs(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= buf.len() {
        let len = usize::from(u16::from_ne_bytes([buf[at], buf[at + 1]]));
        let kind = u16::from_ne_bytes([buf[at + 2], buf[at + 3]]) & 0x3fff;
        assert!(len >= 4 && at + len <= buf.len(), "malformed attribute at {at}");
        out.push((kind, &buf[at + 4..at + len]));
        at += (len + 3) & !3;
    }
    out
}

/// A generic netlink dump of `cmd` on `family` with `attrs`, over a raw
/// socket: every reply's attributes. Shares no code with the gateway.
fn raw_genl_dump(family: u16, cmd: u8, attrs: &[u8]) -> Vec<Vec<u8>> {
    // nlmsghdr(16) + genlmsghdr(4), NLM_F_REQUEST | NLM_F_DUMP.
    let mut req = Vec::new();
    req.extend_from_slice(&u32::try_from(20 + attrs.len()).unwrap().to_ne_bytes());
    req.extend_from_slice(&family.to_ne_bytes());
    req.extend_from_slice(&(0x1u16 | 0x300).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes());
    req.extend_from_slice(&0u32.to_ne_bytes());
    req.extend_from_slice(&[cmd, 1, 0, 0]);
    req.extend_from_slice(attrs);
    let mut replies = Vec::new();
    // SAFETY: plain socket calls on a descriptor this function owns and
    // closes; every buffer outlives the call that uses it.
    unsafe {
        let fd = libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_GENERIC,
        );
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as u16;
        let sent = libc::sendto(
            fd,
            req.as_ptr().cast(),
            req.len(),
            0,
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        );
        assert_eq!(
            sent as usize,
            req.len(),
            "sendto: {}",
            std::io::Error::last_os_error()
        );
        let mut buf = vec![0u8; 1 << 16];
        'recv: loop {
            let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
            assert!(n > 0, "recv: {}", std::io::Error::last_os_error());
            let data = &buf[..n as usize];
            let mut off = 0;
            while off + 16 <= data.len() {
                let len = u32::from_ne_bytes(data[off..off + 4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes(data[off + 4..off + 6].try_into().unwrap());
                match kind {
                    3 => break 'recv,
                    2 => panic!(
                        "the kernel answered the raw dump with an error: {:?}",
                        &data[off..off + len]
                    ),
                    _ => replies.push(data[off + 20..off + len].to_vec()),
                }
                off += (len + 3) & !3;
            }
        }
        libc::close(fd);
    }
    replies
}

/// `family`'s attribute policies from a raw CTRL_CMD_GETPOLICY dump, every
/// number from the UAPI headers (genetlink.h, netlink.h), in the JSON shape
/// docs/api.md gives the `policy` op.
fn raw_policy(family: &str) -> Value {
    let ctrl = uapi_names("genetlink.h");
    let nl = uapi_names("netlink.h");
    let types: BTreeMap<i64, String> = nl
        .iter()
        .filter_map(|(n, v)| {
            Some((
                *v,
                n.strip_prefix("NL_ATTR_TYPE_")?.to_lowercase().replace('_', "-"),
            ))
        })
        .collect();
    // (header name, JSON key, payload width and signedness)
    let bounds = [
        ("NL_POLICY_TYPE_ATTR_MIN_VALUE_S", "min-s", true),
        ("NL_POLICY_TYPE_ATTR_MAX_VALUE_S", "max-s", true),
        ("NL_POLICY_TYPE_ATTR_MIN_VALUE_U", "min-u", false),
        ("NL_POLICY_TYPE_ATTR_MAX_VALUE_U", "max-u", false),
        ("NL_POLICY_TYPE_ATTR_MIN_LENGTH", "min-len", false),
        ("NL_POLICY_TYPE_ATTR_MAX_LENGTH", "max-len", false),
        ("NL_POLICY_TYPE_ATTR_POLICY_IDX", "policy-idx", false),
        ("NL_POLICY_TYPE_ATTR_POLICY_MAXTYPE", "policy-maxtype", false),
        ("NL_POLICY_TYPE_ATTR_BITFIELD32_MASK", "bitfield32-mask", false),
        ("NL_POLICY_TYPE_ATTR_MASK", "mask", false),
    ];
    let number = |payload: &[u8], signed: bool| -> Value {
        match (payload.len(), signed) {
            (4, false) => json!(u32::from_ne_bytes(payload.try_into().unwrap())),
            (8, false) => json!(u64::from_ne_bytes(payload.try_into().unwrap())),
            (4, true) => json!(i32::from_ne_bytes(payload.try_into().unwrap())),
            (8, true) => json!(i64::from_ne_bytes(payload.try_into().unwrap())),
            (n, _) => panic!("a policy number of {n} bytes"),
        }
    };
    let id = |name: &str| u16::try_from(ctrl[name]).unwrap();
    let mut name_attr = Vec::new();
    let name_z = format!("{family}\0");
    name_attr.extend_from_slice(&u16::try_from(4 + name_z.len()).unwrap().to_ne_bytes());
    name_attr.extend_from_slice(&id("CTRL_ATTR_FAMILY_NAME").to_ne_bytes());
    name_attr.extend_from_slice(name_z.as_bytes());
    name_attr.resize(name_attr.len().next_multiple_of(4), 0);
    // GENL_ID_CTRL is NLMSG_MIN_TYPE, 0x10 (a #define, not an enum).
    let cmd = u8::try_from(ctrl["CTRL_CMD_GETPOLICY"]).unwrap();
    let (mut sets, mut ops) = (serde_json::Map::new(), serde_json::Map::new());
    for reply in raw_genl_dump(0x10, cmd, &name_attr) {
        for (kind, payload) in raw_attrs(&reply) {
            if kind == id("CTRL_ATTR_POLICY") {
                for (idx, set) in raw_attrs(payload) {
                    let entry = sets.entry(idx.to_string()).or_insert_with(|| json!({}));
                    for (attr, policy) in raw_attrs(set) {
                        let mut p = serde_json::Map::new();
                        for (k, v) in raw_attrs(policy) {
                            let k = i64::from(k);
                            if k == nl["NL_POLICY_TYPE_ATTR_TYPE"] {
                                let t = i64::from(u32::from_ne_bytes(v.try_into().unwrap()));
                                let name = types
                                    .get(&t)
                                    .unwrap_or_else(|| panic!("type {t} not in netlink.h"));
                                p.insert("type".into(), json!(name));
                            } else if let Some((_, key, signed)) =
                                bounds.iter().find(|(n, ..)| nl.get(*n) == Some(&k))
                            {
                                p.insert((*key).into(), number(v, *signed));
                            }
                        }
                        entry[attr.to_string()] = Value::Object(p);
                    }
                }
            } else if kind == id("CTRL_ATTR_OP_POLICY") {
                for (op, which) in raw_attrs(payload) {
                    let mut p = json!({"do": null, "dump": null});
                    for (k, v) in raw_attrs(which) {
                        let idx = json!(u32::from_ne_bytes(v.try_into().unwrap()));
                        if k == id("CTRL_ATTR_POLICY_DO") {
                            p["do"] = idx;
                        } else if k == id("CTRL_ATTR_POLICY_DUMP") {
                            p["dump"] = idx;
                        }
                    }
                    ops.insert(op.to_string(), p);
                }
            }
        }
    }
    json!({"sets": sets, "ops": ops})
}

#[test]
fn nlctrl_policy_matches_a_raw_getpolicy_dump() {
    let config = TestConfig::new();
    config.family(
        "nlctrl.toml",
        "family = \"nlctrl\"\nplugin = \"nlctrl.wasm\"\n[commands]\ndo = [3]\ndump = [3, 10]\n",
    );
    let gw = Gateway::start(&config);
    let (ok, via_plugin) = gw.call("nlctrl", "policy", r#"{"name": "nlctrl"}"#);
    assert!(ok, "{via_plugin}");
    let raw = raw_policy("nlctrl");
    assert!(!raw["sets"].as_object().unwrap().is_empty(), "{raw}");
    assert_eq!(
        via_plugin, raw,
        "the nlctrl plugin and a raw GETPOLICY dump disagree"
    );
    // GETFAMILY's policy: CTRL_ATTR_FAMILY_NAME (2) is a NUL-terminated string.
    let idx = via_plugin["ops"]["3"]["do"].as_u64().unwrap().to_string();
    assert_eq!(via_plugin["sets"][&idx]["2"]["type"], "nul-string");
}

#[test]
fn ethtool_and_netdev_read_what_ethtool_and_iproute2_see() {
    let ns = Netns::new("ethtool");
    ns.ip(&["link", "add", "ifb0", "type", "ifb"]);
    let config = TestConfig::new();
    config
        .netns(&ns)
        .family("nlctrl.toml", NLCTRL)
        .family("ethtool.toml", &bundled_family("ethtool.toml"))
        .family("netdev.toml", "family = \"netdev\"\nplugin = \"netdev.wasm\"\n[commands]\ndo = [1]\ndump = [1, 5, 10, 11, 12]\n");
    let gw = Gateway::start(&config);

    let (ok, f) = gw.call("ethtool", "features-get", r#"{"dev-name": "ifb0"}"#);
    assert!(ok, "{f}");
    assert_eq!(f["header"]["dev-name"], "ifb0");
    let active: Vec<(String, bool)> = f["active"]["bits"]["bit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["name"].as_str().unwrap().to_owned(), b["value"] == true))
        .collect();
    // ethtool -k prints "name: on|off"; every feature the plugin reports as
    // active must be "on" there.
    let out = ns.exec(&["ethtool", "-k", "ifb0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let on: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().split_once(": "))
        .filter(|(_, v)| v.starts_with("on"))
        .map(|(k, _)| k)
        .collect();
    assert!(!active.is_empty());
    for (name, value) in &active {
        if *value {
            assert!(
                on.contains(&name.as_str()),
                "{name} active for the plugin but not for ethtool -k"
            );
        }
    }
    let (ok, dump) = gw.call("ethtool", "features-dump", "null");
    assert!(ok, "{dump}");
    assert_eq!(dump.as_array().unwrap().len(), 2, "lo and ifb0");
    for op in ["linkinfo-get", "linkstate-get", "channels-get", "rings-get"] {
        let (_, v) = gw.call("ethtool", op, r#"{"dev-name": "ifb0"}"#);
        // ifb does not implement every ethtool op; the kernel's answer, not a
        // crash, either way.
        assert!(
            v.get("header").is_some() || v["error"]["code"] == "kernel",
            "{op}: {v}"
        );
    }
    for op in ["queue-dump", "napi-dump", "page-pool-dump", "qstats-dump"] {
        let (ok, v) = gw.call("netdev", op, "null");
        assert!(ok && v.is_array(), "{op}: {v}");
    }
}

/// `ethtool -l DEV` in `ns`, as the ethtool family's channel attribute
/// names: "Pre-set maximums" are `*-max`, "Current hardware settings" are
/// `*-count`; `n/a` (the kernel sent no such attribute) is left out.
/// `None` when ethtool says the device has no channels.
fn ethtool_channels(ns: &Netns, dev: &str) -> Option<BTreeMap<String, u64>> {
    let out = ns.exec(&["ethtool", "-l", dev]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        assert!(
            stderr.contains("Operation not supported"),
            "ethtool -l {dev} failed: {stderr}"
        );
        return None;
    }
    let mut channels = BTreeMap::new();
    let mut suffix = None;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if line.starts_with("Pre-set maximums") {
            suffix = Some("max");
        } else if line.starts_with("Current hardware settings") {
            suffix = Some("count");
        } else if let (Some(suffix), Some((name, value))) = (suffix, line.split_once(':'))
            && let Ok(v) = value.trim().parse()
        {
            channels.insert(format!("{}-{suffix}", name.trim().to_lowercase()), v);
        }
    }
    assert!(!channels.is_empty(), "no channels parsed from ethtool -l {dev}");
    Some(channels)
}

/// A `channels-get`/`-dump` entry without its header, as `ethtool_channels`.
fn plugin_channels(entry: &Value) -> BTreeMap<String, u64> {
    entry
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "header")
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or_else(|| panic!("{k}: {v}"))))
        .collect()
}

#[test]
fn ethtool_channels_match_ethtool_and_a_get_cannot_set_them() {
    let ns = Netns::new("chan");
    // veth reports channels (`ethtool -l`); ifb does not.
    ns.ip(&["link", "add", "veth0", "type", "veth", "peer", "name", "veth1"]);
    ns.ip(&["link", "add", "ifb0", "type", "ifb"]);
    let config = TestConfig::new();
    config
        .netns(&ns)
        .family("nlctrl.toml", NLCTRL)
        .family("ethtool.toml", &bundled_family("ethtool.toml"));
    let gw = Gateway::start(&config);

    let before = ethtool_channels(&ns, "veth0").expect("veth has channels on this kernel");
    let (ok, got) = gw.call("ethtool", "channels-get", r#"{"dev-name": "veth0"}"#);
    assert!(ok, "{got}");
    assert_eq!(got["header"]["dev-name"], "veth0");
    assert_eq!(
        plugin_channels(&got),
        before,
        "channels-get and ethtool -l disagree: {got}"
    );

    // The dump: exactly the devices ethtool -l shows channels for.
    let (ok, dump) = gw.call("ethtool", "channels-dump", "null");
    assert!(ok, "{dump}");
    let via_plugin: BTreeMap<String, BTreeMap<String, u64>> = dump
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["header"]["dev-name"].as_str().unwrap().to_owned(),
                plugin_channels(e),
            )
        })
        .collect();
    let via_ethtool: BTreeMap<String, BTreeMap<String, u64>> = ["lo", "veth0", "veth1", "ifb0"]
        .into_iter()
        .filter_map(|d| Some((d.to_owned(), ethtool_channels(&ns, d)?)))
        .collect();
    assert_eq!(via_plugin, via_ethtool, "channels-dump and ethtool -l disagree");

    // A count in a get's input is refused, naming it, and changes nothing
    // (it once reached the kernel in a CHANNELS_SET). The header may be
    // given as the spec has it or by the device alone.
    let target = if before["rx-max"] != before["rx-count"] {
        before["rx-max"]
    } else {
        1
    };
    for input in [
        json!({"dev-name": "veth0", "rx-count": target}),
        json!({"header": {"dev-name": "veth0"}, "rx-count": target}),
    ] {
        let (ok, v) = gw.call("ethtool", "channels-get", &input.to_string());
        assert!(!ok, "{input} was accepted: {v}");
        assert_eq!(v["error"]["code"], "bad-input", "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("rx-count"),
            "{v}"
        );
        assert_eq!(
            ethtool_channels(&ns, "veth0").as_ref(),
            Some(&before),
            "{input} changed veth0"
        );
    }
}

#[test]
fn nlctrl_getpolicy_numbers_mask_and_pad_as_the_kernel_does() {
    let config = TestConfig::new();
    config.family(
        "nlctrl.toml",
        "family = \"nlctrl\"\nplugin = \"nlctrl.wasm\"\n[commands]\ndo = [3]\ndump = [3, 10]\n",
    );
    let gw = Gateway::start(&config);
    // ethtool's request header: flags is NLA_POLICY_MASK(NLA_U32, ...), so
    // the kernel reports NL_POLICY_TYPE_ATTR_MASK for it.
    let (ok, via_plugin) = gw.call("nlctrl", "getpolicy-dump", r#"{"family-name": "ethtool"}"#);
    assert!(ok, "{via_plugin}");
    let raw = raw_policy("ethtool");
    let mut masks = 0;
    for (idx, set) in raw["sets"].as_object().unwrap() {
        for (attr, policy) in set.as_object().unwrap() {
            let Some(mask) = policy.get("mask") else { continue };
            let ours = via_plugin
                .as_array()
                .unwrap()
                .iter()
                .map(|m| &m["policy"])
                .find(|p| {
                    p["policy-id"].as_u64() == idx.parse().ok() && p["attr-id"].as_u64() == attr.parse().ok()
                })
                .unwrap_or_else(|| panic!("policy {idx} attr {attr} missing: {via_plugin}"));
            assert_eq!(&ours["mask"], mask, "policy {idx} attr {attr}: {ours}");
            assert_eq!(ours["type"], policy["type"], "policy {idx} attr {attr}: {ours}");
            masks += 1;
        }
    }
    assert!(masks > 0, "ethtool reported no masked attribute: {raw}");
}

#[test]
fn ethtool_plugin_answers_every_get_as_the_kernels_ynl_library_does() {
    let ns = Netns::new("eth-ynl");
    ns.ip_batch(
        "link add va type veth peer name vb\nlink set va up\nlink set vb up\nlink add ifb0 type ifb\n",
    );
    let config = TestConfig::new();
    config
        .netns(&ns)
        .family("nlctrl.toml", NLCTRL)
        .family("ethtool.toml", &bundled_family("ethtool.toml"));
    let gw = Gateway::start(&config);
    let family: Value = serde_json::from_slice(&gw.cli(&["family", "ethtool"]).stdout).unwrap();
    let gets: Vec<String> = family["plugin"]["description"]["ops"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["name"].as_str())
        .filter(|n| n.split('-').any(|w| w == "get") && !n.ends_with("-dump"))
        .map(str::to_owned)
        .collect();
    assert!(gets.len() >= 26, "{gets:?}");
    let (mut compared, mut refused) = (0, 0);
    for op in &gets {
        // The dump, every device of the namespace.
        let (ok, ours) = gw.call("ethtool", &format!("{op}-dump"), "null");
        if !ok && ours["error"]["code"] == "denied" {
            // Newer than the bundled allowlist (e.g. tsconfig-get): refused
            // before the kernel, as configured.
            refused += 1;
            continue;
        }
        match ynl_cli(&ns, "ethtool", "--dump", op, &Value::Null) {
            Ok(theirs) => {
                assert!(ok, "{op} dump: the YNL CLI answered {theirs}, the gateway {ours}");
                assert_eq!(normalise(&ours), normalise(&theirs), "{op} dump");
                compared += 1;
            }
            Err(text) => assert!(
                !ok,
                "{op} dump: the YNL CLI failed ({text}), the gateway answered {ours}"
            ),
        }
        for dev in ["va", "ifb0"] {
            // The device shorthand on our side, the spec's header on theirs.
            let (ok, ours) = gw.call("ethtool", op, &json!({"dev-name": dev}).to_string());
            match ynl_cli(&ns, "ethtool", "--do", op, &json!({"header": {"dev-name": dev}})) {
                Ok(theirs) => {
                    assert!(
                        ok,
                        "{op} on {dev}: the YNL CLI answered {theirs}, the gateway {ours}"
                    );
                    assert_eq!(normalise(&ours), normalise(&theirs), "{op} on {dev}");
                    compared += 1;
                }
                Err(text) => assert!(
                    !ok,
                    "{op} on {dev}: the YNL CLI failed ({text}), the gateway answered {ours}"
                ),
            }
        }
    }
    assert!(compared >= 20, "only {compared} answers compared");
    assert!(refused <= 2, "{refused} GETs refused by the bundled allowlist");
}

#[test]
fn ethtool_writes_are_refused_by_default_and_read_back_by_ethtool_when_allowed() {
    let ns = Netns::new("eth-set");
    ns.ip(&[
        "link",
        "add",
        "veth0",
        "numrxqueues",
        "4",
        "numtxqueues",
        "4",
        "type",
        "veth",
        "peer",
        "name",
        "veth1",
        "numrxqueues",
        "4",
        "numtxqueues",
        "4",
    ]);
    ns.ip(&["link", "add", "ifb0", "type", "ifb"]);
    let feature_on = |name: &str| -> bool {
        let out = ns.exec(&["ethtool", "-k", "ifb0"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")).map(str::to_owned))
            .unwrap_or_else(|| panic!("ethtool -k shows no {name}: {text}"));
        line.starts_with("on")
    };
    assert!(feature_on("tx-checksum-ip-generic"));
    let off = json!({"dev-name": "ifb0",
        "wanted": {"bits": {"bit": [{"name": "tx-checksum-ip-generic"}]}}})
    .to_string();

    // The bundled allowlist: a SET is refused before the kernel.
    let config = TestConfig::new();
    config
        .netns(&ns)
        .family("nlctrl.toml", NLCTRL)
        .family("ethtool.toml", &bundled_family("ethtool.toml"));
    let gw = Gateway::start(&config);
    let (ok, v) = gw.call("ethtool", "features-set", &off);
    assert!(!ok);
    assert_eq!(v["error"]["code"], "denied", "{v}");
    assert!(feature_on("tx-checksum-ip-generic"), "a denied SET changed ifb0");
    drop(gw);

    // FEATURES_SET (12) and CHANNELS_SET (18) granted.
    config.family(
        "ethtool.toml",
        "family = \"ethtool\"\nplugin = \"ethtool.wasm\"\n[commands]\ndo = [11, 12, 17, 18]\ndump = [11, 17]\n",
    );
    let gw = Gateway::start(&config);
    let (ok, v) = gw.call("ethtool", "features-set", &off);
    assert!(ok, "{v}");
    assert!(
        !feature_on("tx-checksum-ip-generic"),
        "ethtool -k still shows it on"
    );

    let before = ethtool_channels(&ns, "veth0").expect("veth has channels");
    let target = if before["rx-count"] == 2 { 3 } else { 2 };
    assert!(before["rx-max"] >= target, "{before:?}");
    let (ok, v) = gw.call(
        "ethtool",
        "channels-set",
        &json!({"dev-name": "veth0", "rx-count": target}).to_string(),
    );
    assert!(ok, "{v}");
    let after = ethtool_channels(&ns, "veth0").expect("veth has channels");
    assert_eq!(
        after["rx-count"], target,
        "ethtool -l after channels-set: {after:?}"
    );
    let (ok, got) = gw.call("ethtool", "channels-get", r#"{"dev-name": "veth0"}"#);
    assert!(ok, "{got}");
    assert_eq!(plugin_channels(&got), after);
}

#[test]
fn netdev_plugin_answers_as_the_kernels_ynl_library_does() {
    let ns = Netns::new("nd-ynl");
    // No IPv6: no neighbour discovery traffic to move qstats between reads.
    let out = ns.exec(&[
        "sysctl",
        "-qw",
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    ns.ip_batch(
        "link add va type veth peer name vb\nlink set va up\nlink set vb up\nlink add ifb0 type ifb\n",
    );
    let config = TestConfig::new();
    config
        .netns(&ns)
        .family("nlctrl.toml", NLCTRL)
        .family("netdev.toml", &bundled_family("netdev.toml"));
    let gw = Gateway::start(&config);

    for op in ["dev-get", "queue-get", "napi-get", "page-pool-get", "qstats-get"] {
        let (ok, ours) = gw.call("netdev", &format!("{op}-dump"), "null");
        assert!(ok, "{op}-dump: {ours}");
        let theirs =
            ynl_cli(&ns, "netdev", "--dump", op, &Value::Null).unwrap_or_else(|e| panic!("{op}: {e}"));
        assert_eq!(normalise(&ours), normalise(&theirs), "{op}-dump");
    }
    // The short name is the same dump.
    let (ok, short) = gw.call("netdev", "dev-dump", "null");
    assert!(ok, "{short}");
    let (_, long) = gw.call("netdev", "dev-get-dump", "null");
    assert_eq!(short, long);
    let ifindexes: Vec<u64> = short
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["ifindex"].as_u64())
        .collect();
    assert_eq!(ifindexes, ns.ifindexes(), "every device iproute2 lists");
    for ifindex in ifindexes {
        let input = json!({"ifindex": ifindex});
        let (ok, ours) = gw.call("netdev", "dev-get", &input.to_string());
        assert!(ok, "{ours}");
        let theirs = ynl_cli(&ns, "netdev", "--do", "dev-get", &input).expect("YNL CLI do");
        assert_eq!(normalise(&ours), normalise(&theirs), "ifindex {ifindex}");
        // XDP features come out as the spec's flag names, not a number.
        assert!(ours["xdp-features"].is_array(), "{ours}");
    }
}

#[test]
fn mptcp_pm_spec_ops_match_the_kernels_ynl_library_and_ip_mptcp() {
    let ns = Netns::new("mp-ynl");
    ns.ip(&["mptcp", "endpoint", "add", "10.9.0.1", "id", "5", "signal"]);
    ns.ip(&[
        "mptcp",
        "limits",
        "set",
        "subflows",
        "3",
        "add_addr_accepted",
        "4",
    ]);
    let config = TestConfig::new();
    config.netns(&ns).family(
        "mptcp_pm.toml",
        "family = \"mptcp_pm\"\nplugin = \"mptcp_pm.wasm\"\n[commands]\ndo = [1, 3, 6]\ndump = [3]\n",
    );
    let gw = Gateway::start(&config);
    for (mode, op, ours_op, input) in [
        ("--dump", "get-addr", "get-addr-dump", Value::Null),
        ("--do", "get-addr", "get-addr", json!({"addr": {"id": 5}})),
        ("--do", "get-limits", "get-limits", Value::Null),
    ] {
        let (ok, ours) = gw.call("mptcp_pm", ours_op, &input.to_string());
        assert!(ok, "{ours_op}: {ours}");
        let theirs = ynl_cli(&ns, "mptcp_pm", mode, op, &input).unwrap_or_else(|e| panic!("{op}: {e}"));
        assert_eq!(normalise(&ours), normalise(&theirs), "{ours_op}");
    }
    // The friendlier op agrees with ip mptcp's own view of the limits.
    let (ok, limits) = gw.call("mptcp_pm", "limits-get", "null");
    assert!(ok, "{limits}");
    assert_eq!(
        (limits["subflows"].clone(), limits["rcv-add-addrs"].clone()),
        (json!(3), json!(4))
    );

    // A write through the spec's own op, read back with iproute2.
    let (ok, v) = gw.call(
        "mptcp_pm",
        "add-addr",
        &json!({"addr": {"family": 2, "id": 6, "addr4": u32::from(std::net::Ipv4Addr::new(10, 9, 0, 2))}})
            .to_string(),
    );
    assert!(ok, "{v}");
    let out = ns.exec(&["ip", "mptcp", "endpoint", "show", "id", "6"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("10.9.0.2") && text.contains("id 6"),
        "ip mptcp endpoint show: {text}"
    );
}

#[test]
fn tcp_metrics_spec_ops_match_the_kernels_ynl_library_and_ip() {
    let ns = Netns::new("tm-ynl");
    // One loopback connection, so the kernel caches metrics for 127.0.0.1.
    let script = "import socket,threading\n\
s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); port=s.getsockname()[1]\n\
def srv():\n    c,_=s.accept(); c.recv(1<<20); c.sendall(b'y'*50000); c.close()\n\
t=threading.Thread(target=srv); t.start()\n\
c=socket.create_connection(('127.0.0.1',port)); c.sendall(b'x'*50000); c.shutdown(1)\n\
while c.recv(65536): pass\n\
c.close(); t.join()\n";
    let out = ns.exec(&["python3", "-c", script]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let config = TestConfig::new();
    config.netns(&ns).family(
        "tcp_metrics.toml",
        "family = \"tcp_metrics\"\nplugin = \"tcp_metrics.wasm\"\n[commands]\ndo = [1, 2]\ndump = [1]\n",
    );
    let gw = Gateway::start(&config);
    // The age moves between the two reads; everything else must agree.
    let without_age = |v: &Value| -> Value {
        let mut v = normalise(v);
        for e in v.as_array_mut().into_iter().flatten() {
            e.as_object_mut().map(|o| o.remove("age"));
        }
        v
    };
    let (ok, ours) = gw.call("tcp_metrics", "get-dump", "null");
    assert!(ok, "{ours}");
    let theirs = ynl_cli(&ns, "tcp_metrics", "--dump", "get", &Value::Null).expect("YNL CLI dump");
    assert!(!ours.as_array().unwrap().is_empty(), "no entries: {ours}");
    assert_eq!(without_age(&ours), without_age(&theirs));

    // The spec's `del`, read back with iproute2.
    let (ok, v) = gw.call("tcp_metrics", "del", r#"{"addr-ipv4": "127.0.0.1"}"#);
    assert!(ok, "{v}");
    let out = ns.exec(&["ip", "tcp_metrics", "show", "127.0.0.1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("127.0.0.1"),
        "ip tcp_metrics still shows it: {text}"
    );
}
