//! The bundled plugins against the real kernel, cross-checked with
//! independent tools (ethtool, /sys, the gateway's own policy view).

mod common;

use common::{Gateway, NLCTRL, Netns, TestConfig};
use serde_json::{Value, json};

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
    config.family("thermal.toml", "family = \"thermal\"\nplugin = \"thermal.wasm\"\ngroups = [\"event\"]\n[commands]\ndo = [3]\ndump = [1]\n");
    let gw = Gateway::start(&config);
    let (ok, zones) = gw.call("thermal", "zones", "null");
    assert!(ok, "{zones}");
    let sysfs = std::fs::read_dir("/sys/class/thermal")
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("thermal_zone"))
                .count()
        })
        .unwrap_or(0);
    assert_eq!(zones.as_array().unwrap().len(), sysfs, "{zones}");
}

#[test]
fn nlctrl_policy_agrees_with_the_gateways_own_view() {
    let config = TestConfig::new();
    config.family(
        "nlctrl.toml",
        "family = \"nlctrl\"\nplugin = \"nlctrl.wasm\"\n[commands]\ndo = [3]\ndump = [3, 10]\n",
    );
    let gw = Gateway::start(&config);
    let (ok, via_plugin) = gw.call("nlctrl", "policy", r#"{"name": "nlctrl"}"#);
    assert!(ok, "{via_plugin}");
    let host: Value = serde_json::from_slice(&gw.cli(&["family", "nlctrl"]).stdout).unwrap();
    assert_eq!(via_plugin, host["policy"]);
    // GETFAMILY's policy: CTRL_ATTR_FAMILY_NAME (2) is a string.
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
        .family("ethtool.toml", "family = \"ethtool\"\nplugin = \"ethtool.wasm\"\n[commands]\ndo = [2, 6, 11, 15, 18]\ndump = [11]\n")
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
