//! The netlink core against the real kernel, each test inside a private
//! network namespace it creates and removes.

mod common;

use common::{Gateway, Netns, TestConfig, wait_output};
use serde_json::{Value, json};

const NETDEV: &str =
    "family = \"netdev\"\nplugin = \"netdev.wasm\"\ngroups = [\"mgmt\"]\n[commands]\ndo = [1]\ndump = [1]\n";

#[test]
fn netdev_dump_returns_all_1000_ifb_devices() {
    let ns = Netns::new("dump");
    ns.add_ifbs(1000);
    let config = TestConfig::new();
    config.netns(&ns).family("netdev.toml", NETDEV);
    let gw = Gateway::start(&config);

    let (ok, devices) = gw.call("netdev", "dev-dump", "null");
    assert!(ok, "{devices}");
    let mut got: Vec<u64> = devices
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["ifindex"].as_u64().expect("every device has an ifindex"))
        .collect();
    got.sort_unstable();
    assert_eq!(got.len(), 1001, "1000 ifb + lo");
    assert_eq!(got, ns.ifindexes(), "the gateway and iproute2 disagree");

    // A `do` for one of them agrees with the dump.
    let (ok, one) = gw.call("netdev", "dev-get", &json!({"ifindex": got[500]}).to_string());
    assert!(ok);
    assert_eq!(one["ifindex"], got[500]);
}

#[test]
fn mptcp_endpoints_and_the_kernels_extended_ack() {
    let ns = Netns::new("mptcp");
    let config = TestConfig::new();
    config.netns(&ns).family(
        "mptcp_pm.toml",
        "family = \"mptcp_pm\"\nplugin = \"mptcp_pm.wasm\"\n[commands]\ndo = [1, 2, 3, 4, 6]\ndump = [3]\n",
    );
    let gw = Gateway::start(&config);

    // limits-set (command 5) is not in this allowlist: refused before the kernel.
    let (ok, v) = gw.call("mptcp_pm", "limits-set", r#"{"subflows": 2}"#);
    assert!(!ok);
    assert_eq!(v["error"]["code"], "denied", "{v}");
    drop(gw);
    config.family(
        "mptcp_pm.toml",
        "family = \"mptcp_pm\"\nplugin = \"mptcp_pm.wasm\"\n[commands]\ndo = [1, 2, 3, 4, 5, 6]\ndump = [3]\n",
    );
    let gw = Gateway::start(&config);

    let (ok, v) = gw.call(
        "mptcp_pm",
        "endpoint-add",
        r#"{"addr4": "10.9.0.1", "id": 5, "flags": 1}"#,
    );
    assert!(ok, "{v}");
    let (ok, v) = gw.call("mptcp_pm", "endpoint-get", r#"{"id": 5}"#);
    assert!(ok, "{v}");
    assert_eq!(
        (v["addr4"].clone(), v["id"].clone(), v["flags"].clone()),
        (json!("10.9.0.1"), json!(5), json!(1))
    );
    let (ok, v) = gw.call("mptcp_pm", "endpoint-dump", "null");
    assert!(ok);
    assert_eq!(v.as_array().unwrap().len(), 1, "{v}");

    // The same id for another address: the kernel refuses, and its
    // extended-ack text reaches the client.
    let (ok, v) = gw.call("mptcp_pm", "endpoint-add", r#"{"addr4": "10.9.0.2", "id": 5}"#);
    assert!(!ok);
    assert_eq!(v["error"]["code"], "kernel", "{v}");
    assert_eq!(v["error"]["kernel"]["name"], "EBUSY");
    let msg = v["error"]["kernel"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("duplicate"), "ext-ack message missing: {v}");

    let (ok, v) = gw.call("mptcp_pm", "endpoint-del", r#"{"id": 5}"#);
    assert!(ok, "{v}");
    let (_, v) = gw.call("mptcp_pm", "endpoint-dump", "null");
    assert_eq!(v, json!([]));

    // Limits round-trip, and a flush empties the table.
    let (ok, v) = gw.call("mptcp_pm", "limits-set", r#"{"subflows": 3, "rcv-add-addrs": 4}"#);
    assert!(ok, "{v}");
    let (ok, v) = gw.call("mptcp_pm", "limits-get", "null");
    assert!(ok, "{v}");
    assert_eq!(
        (v["subflows"].clone(), v["rcv-add-addrs"].clone()),
        (json!(3), json!(4)),
        "{v}"
    );
    for (id, addr) in [(7, "10.9.0.7"), (8, "10.9.0.8")] {
        assert!(
            gw.call(
                "mptcp_pm",
                "endpoint-add",
                &json!({"addr4": addr, "id": id}).to_string()
            )
            .0
        );
    }
    assert_eq!(
        gw.call("mptcp_pm", "endpoint-dump", "null")
            .1
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (ok, v) = gw.call("mptcp_pm", "endpoint-flush", "null");
    assert!(ok, "{v}");
    assert_eq!(gw.call("mptcp_pm", "endpoint-dump", "null").1, json!([]));
}

#[test]
fn a_configured_family_the_kernel_lacks_is_listed_absent() {
    let ns = Netns::new("absent");
    let config = TestConfig::new();
    config.netns(&ns).family("netdev.toml", NETDEV).family(
        "ghost.toml",
        "family = \"genl_test\"\nplugin = \"netdev.wasm\"\ngroups = [\"genl_mcgrp0\"]\n",
    );
    let gw = Gateway::start(&config);
    let out = gw.cli(&["family", "genl_test"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["present"], false, "{v}");
    assert_eq!(v["plugin"]["state"], "ready");
    let (ok, v) = gw.call("genl_test", "dev-dump", "null");
    assert!(!ok);
    assert_eq!(v["error"]["code"], "family-absent");
    assert!(v["error"]["message"].as_str().unwrap().contains("genl_test"));
    // The rest keeps working.
    assert!(gw.call("netdev", "dev-dump", "null").0);
}

#[test]
fn netdev_and_ethtool_notifications_reach_their_plugins() {
    let ns = Netns::new("ntf");
    let config = TestConfig::new();
    config.netns(&ns).family("netdev.toml", NETDEV).family(
        "ethtool.toml",
        "family = \"ethtool\"\nplugin = \"ethtool.wasm\"\ngroups = [\"monitor\"]\n[commands]\ndo = [11]\ndump = [11]\n",
    );
    let gw = Gateway::start(&config);
    let netdev_events = gw.subscribe("netdev", "dev", 2);
    let ethtool_events = gw.subscribe("ethtool", "monitor", 1);

    ns.ip(&["link", "add", "ifbx", "type", "ifb"]);
    ns.ip(&["link", "add", "ifby", "type", "ifb"]);
    let out = ns.exec(&["ethtool", "-K", "ifbx", "tx", "off"]);
    assert!(
        out.status.success(),
        "ethtool -K: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let events = wait_output(netdev_events, 20, "netdev events");
    assert_eq!(events.len(), 2);
    for e in &events {
        assert_eq!(e["family"], "netdev");
        assert_eq!(e["payload"]["action"], "added");
        assert!(e["payload"]["dev"]["ifindex"].as_u64().is_some());
    }
    let events = wait_output(ethtool_events, 20, "ethtool events");
    assert_eq!(events[0]["payload"]["kind"], "features");
    assert_eq!(events[0]["payload"]["data"]["header"]["dev-name"], "ifbx");

    let v: Value = serde_json::from_slice(&gw.cli(&["family", "netdev"]).stdout).unwrap();
    assert_eq!(v["listener"]["groups"], json!(["mgmt"]));
    assert!(v["listener"]["received"].as_u64().unwrap() >= 2);
}

#[test]
fn an_overrun_is_counted_survived_and_signalled_to_the_plugin() {
    let ns = Netns::new("overrun");
    let config = TestConfig::new();
    // The smallest receive buffer the kernel allows: a burst overruns it.
    config
        .netns(&ns)
        .family("netdev.toml", &format!("receive_buffer_kib = 1\n{NETDEV}"));
    let gw = Gateway::start(&config);
    let resync = gw.subscribe("netdev", "resync", 1);

    ns.add_ifbs(500);

    let events = wait_output(resync, 30, "resync event");
    assert_eq!(events[0]["payload"]["reason"], "notifications lost");
    // The plugin resynchronised with a dump taken mid-burst: some of the
    // devices existed by then.
    let seen = events[0]["payload"]["devices"]
        .as_u64()
        .expect("the resync dump succeeded");
    assert!((1..=501).contains(&seen), "{}", events[0]);

    let v: Value = serde_json::from_slice(&gw.cli(&["family", "netdev"]).stdout).unwrap();
    assert!(v["listener"]["overruns"].as_u64().unwrap() >= 1, "{v}");
    let (ok, all) = gw.call("netdev", "dev-dump", "null");
    assert!(ok, "the gateway keeps serving");
    assert_eq!(all.as_array().unwrap().len(), 501);
    assert!(gw.log_text().contains("overran"));
}

#[test]
fn requests_are_checked_against_the_kernels_policy() {
    let ns = Netns::new("policy");
    let config = TestConfig::new();
    config.netns(&ns).family(
        "netdev.toml",
        "family = \"netdev\"\nplugin = \"netdev.wasm\"\n[commands]\ndo = [1, 10]\ndump = [1]\n",
    );
    let gw = Gateway::start(&config);
    // The spec's own checks stop some input in the plugin: ifindex >= 1.
    let (ok, v) = gw.call("netdev", "dev-get", r#"{"ifindex": 0}"#);
    assert!(!ok);
    assert_eq!(v["error"]["code"], "bad-input", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("ifindex"), "{v}");
    // A queue type given as a number passes the plugin, but the kernel's
    // queue-get policy caps NETDEV_A_QUEUE_TYPE (attribute 3) at 1 (tx).
    let (ok, v) = gw.call("netdev", "queue-get", r#"{"ifindex": 1, "id": 0, "type": 2}"#);
    assert!(!ok);
    assert_eq!(v["error"]["code"], "invalid-request", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("attribute 3"),
        "{v}"
    );

    let v: Value = serde_json::from_slice(&gw.cli(&["family", "netdev"]).stdout).unwrap();
    let do_idx = v["policy"]["ops"]["1"]["do"]
        .as_u64()
        .expect("dev-get has a do policy");
    assert_eq!(
        v["policy"]["sets"][do_idx.to_string()]["1"]["type"],
        "u32",
        "{}",
        v["policy"]
    );
}
