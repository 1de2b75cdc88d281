//! Hardening of the netlink core and of reloads (issue 14): names a client
//! sends never grow the resolver, families added at run time get their
//! notifications, TASKSTATS works with `[netlink] netns`, counters survive
//! reloads, and a slow plugin holds up neither the API nor other families.

mod common;

use std::time::{Duration, Instant};

use common::{Gateway, NLCTRL, Netns, TestConfig, http, wait_output};
use serde_json::{Value, json};

const NETDEV: &str =
    "family = \"netdev\"\nplugin = \"netdev.wasm\"\ngroups = [\"mgmt\"]\n[commands]\ndo = [1]\ndump = [1]\n";

/// The gateway's resident set in KiB, from /proc.
fn rss_kib(gw: &Gateway) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", gw.child.id())).expect("/proc/PID/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

fn get(gw: &Gateway, path: &str) -> (u16, Vec<u8>) {
    http(&gw.socket.display().to_string(), "GET", path, &[], b"")
}

#[test]
fn junk_family_names_are_refused_and_the_resolver_caches_stay_bounded() {
    let ns = Netns::new("names");
    let config = TestConfig::new();
    config.netns(&ns).family("nlctrl.toml", NLCTRL);
    let gw = Gateway::start(&config);
    // How many families the kernel has in this namespace, from iproute2:
    // only those can ever be worth remembering.
    let out = ns.exec(&["genl", "ctrl", "list"]);
    assert!(
        out.status.success(),
        "genl ctrl list: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let kernel_families = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("Name:"))
        .count() as u64;
    assert!(
        kernel_families >= 3,
        "genl ctrl list shows {kernel_families} families"
    );

    // Warm up what a real lookup allocates once (ethtool has a large policy).
    let (status, body) = get(&gw, "/v1/families/ethtool");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let before = rss_kib(&gw);

    for i in 0..3000 {
        // The kernel would stop at the NUL and answer for ethtool.
        let (status, body) = get(&gw, &format!("/v1/families/ethtool%00{i:07}"));
        assert_ne!(
            status,
            200,
            "a name with a NUL was answered: {}",
            String::from_utf8_lossy(&body)
        );
        let v: Value = serde_json::from_slice(&body).expect("error bodies are JSON");
        assert!(v["error"]["code"].is_string(), "{v}");
    }
    for i in 0..500 {
        // Longer than GENL_NAMSIZ - 1 (15 bytes).
        let (status, _) = get(&gw, &format!("/v1/families/averylongname{i:06}"));
        assert_ne!(status, 200);
        // Valid but absent: not found, and nothing to remember.
        let (status, _) = get(&gw, &format!("/v1/families/absent{i:06}"));
        assert_eq!(status, 404);
    }
    let after = rss_kib(&gw);
    assert!(
        after.saturating_sub(before) < 32 * 1024,
        "the gateway grew from {before} KiB to {after} KiB on junk names"
    );
    let families = gw.metric("genl_gateway_resolver_cache_entries{cache=\"families\"}");
    let policies = gw.metric("genl_gateway_resolver_cache_entries{cache=\"policies\"}");
    assert!(
        families <= kernel_families && policies <= kernel_families,
        "cached {families} families and {policies} policies; the kernel has {kernel_families}"
    );
    // The real family still resolves.
    let (status, body) = get(&gw, "/v1/families/ethtool");
    assert_eq!(status, 200);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["name"], "ethtool");
}

#[test]
fn a_family_file_added_at_run_time_gets_its_notifications() {
    let ns = Netns::new("added");
    let config = TestConfig::new();
    config.netns(&ns).family("nlctrl.toml", NLCTRL);
    let gw = Gateway::start(&config);

    config.family("netdev.toml", NETDEV);
    let out = gw.cli(&["reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let netdev = v
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["family"] == "netdev")
        .cloned()
        .unwrap_or_else(|| panic!("netdev not reloaded: {v}"));
    assert_eq!(netdev["result"], "added", "{v}");

    let v: Value = serde_json::from_slice(&gw.cli(&["family", "netdev"]).stdout).unwrap();
    assert_eq!(v["listener"]["groups"], json!(["mgmt"]), "{v}");

    let events = gw.subscribe("netdev", "dev", 1);
    ns.ip(&["link", "add", "ifbnew", "type", "ifb"]);
    let events = wait_output(events, 20, "netdev events after the family was added");
    assert_eq!(events[0]["payload"]["action"], "added", "{events:?}");
    assert_eq!(
        events[0]["payload"]["dev"]["ifindex"],
        json!(ns.ifindexes().last().copied())
    );
}

#[test]
fn taskstats_exit_records_arrive_with_a_netns_configured() {
    let ns = Netns::new("tstats");
    let config = TestConfig::new();
    config.netns(&ns).family(
        "taskstats.toml",
        "family = \"TASKSTATS\"\nplugin = \"taskstats.wasm\"\n[commands]\ndo = [1]\n",
    );
    let gw = Gateway::start(&config);
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let (ok, v) = gw.call(
        "TASKSTATS",
        "listen",
        &json!({"cpumask": format!("0-{}", cpus - 1)}).to_string(),
    );
    assert!(ok, "{v}");
    let exits = gw.subscribe("TASKSTATS", "exit", u64::MAX);
    let child = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        u64::from(c.id())
    };
    let seen = exits.until(30, "exit records with [netlink] netns", |events| {
        events.iter().any(|e| e["payload"]["pid"].as_u64() == Some(child))
    });
    let ours = seen
        .iter()
        .find(|e| e["payload"]["pid"].as_u64() == Some(child))
        .unwrap();
    assert_eq!(ours["payload"]["stats"]["comm"], "true");
}

fn chaos(extra: &str) -> String {
    format!("family = \"TASKSTATS\"\nplugin = \"chaos.wasm\"\n{extra}")
}

#[test]
fn metrics_counters_survive_a_reload() {
    let config = TestConfig::new();
    config.private_plugins();
    config
        .family("nlctrl.toml", NLCTRL)
        .family("chaos.toml", &chaos("[config]\ntag = \"v1\"\n"));
    let gw = Gateway::start(&config);
    for _ in 0..5 {
        assert_eq!(gw.call("TASKSTATS", "ping", "null").1["pong"], "v1");
    }
    let (ok, _) = gw.call("TASKSTATS", "no-such-op", "null");
    assert!(!ok);
    let calls = "genl_gateway_plugin_calls_total{family=\"TASKSTATS\"}";
    assert_eq!(gw.metric(calls), 6);

    config.family("chaos.toml", &chaos("[config]\ntag = \"v2\"\n"));
    let out = gw.cli(&["reload", "TASKSTATS"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"], "reloaded", "{v}");
    assert_eq!(gw.call("TASKSTATS", "ping", "null").1["pong"], "v2");
    assert_eq!(gw.metric(calls), 7, "the reload reset the counters");
}

/// `families_loading` from /healthz.
fn loading(gw: &Gateway) -> u64 {
    gw.health()["families_loading"]
        .as_u64()
        .expect("families_loading")
}

#[test]
fn a_slow_plugin_holds_up_neither_the_api_nor_other_families() {
    let config = TestConfig::new();
    config.private_plugins();
    // chaos's init sleeps far longer than anything below takes; the
    // generous call deadline keeps the sandbox from stopping it.
    let slow = chaos("[limits]\ncall_timeout_ms = 60000\n[config]\ninit = \"sleep\"\nsleep_ms = \"30000\"\n");
    config.family("nlctrl.toml", NLCTRL).family("chaos.toml", &slow);
    let gw = Gateway::start_loading(&config);

    // The API answers while chaos is still in its init, and other
    // families are served.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (ok, v) = loop {
        let (ok, v) = gw.call("nlctrl", "get", r#"{"name": "nlctrl"}"#);
        if ok || v["error"]["code"] != "plugin-loading" || Instant::now() > deadline {
            break (ok, v);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(ok, "nlctrl is not served while chaos loads: {v}");
    let (ok, v) = gw.call("TASKSTATS", "ping", "null");
    assert!(!ok);
    assert_eq!(v["error"]["code"], "plugin-loading", "{v}");
    let (status, body) = http(
        &gw.socket.display().to_string(),
        "POST",
        "/v1/families/TASKSTATS/ops/ping",
        &[],
        b"null",
    );
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert_eq!(loading(&gw), 1);

    // Reloading another family does not wait for chaos.
    let out = gw.cli(&["reload", "nlctrl"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"], "reloaded", "{v}");
    assert!(gw.call("nlctrl", "get", r#"{"name": "nlctrl"}"#).0);
    assert_eq!(loading(&gw), 1, "chaos finished loading before the checks ran");
}

#[test]
fn a_reload_of_a_slow_plugin_keeps_the_old_version_and_blocks_no_other_reload() {
    let config = TestConfig::new();
    config.private_plugins();
    config.family("nlctrl.toml", NLCTRL).family(
        "chaos.toml",
        &chaos("[limits]\ncall_timeout_ms = 60000\n[config]\ntag = \"v1\"\n"),
    );
    let gw = Gateway::start(&config);
    assert_eq!(gw.call("TASKSTATS", "ping", "null").1["pong"], "v1");

    config.family(
        "chaos.toml",
        &chaos("[limits]\ncall_timeout_ms = 60000\n[config]\ntag = \"v2\"\ninit = \"sleep\"\nsleep_ms = \"30000\"\n"),
    );
    let socket = gw.socket.display().to_string();
    let slow_reload =
        std::thread::spawn(move || http(&socket, "POST", "/v1/plugins/TASKSTATS/reload", &[], b""));
    let deadline = Instant::now() + Duration::from_secs(20);
    while loading(&gw) == 0 {
        assert!(Instant::now() < deadline, "the reload of chaos never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    // v1 serves while v2 initialises; nlctrl reloads meanwhile.
    assert_eq!(gw.call("TASKSTATS", "ping", "null").1["pong"], "v1");
    let out = gw.cli(&["reload", "nlctrl"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"], "reloaded", "{v}");
    assert_eq!(loading(&gw), 1, "chaos finished loading before the checks ran");
    assert!(!slow_reload.is_finished());
    drop(gw);
    let _ = slow_reload.join();
}
