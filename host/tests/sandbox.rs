//! The plugin sandbox: a misbehaving plugin (plugins/chaos) is stopped,
//! contained, restarted or refused, and the gateway keeps answering other
//! families' calls throughout.

mod common;

use std::time::{Duration, Instant};

use common::{Gateway, NLCTRL, Netns, TestConfig};
use serde_json::{Value, json};

/// chaos serves a family of its own here: TASKSTATS (present everywhere,
/// never touched by these tests) with no commands allowed.
fn chaos(extra: &str) -> String {
    format!("family = \"TASKSTATS\"\nplugin = \"chaos.wasm\"\n{extra}")
}

fn plugin_state(gw: &Gateway, family: &str) -> Value {
    let out = gw.cli(&["plugins", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["family"] == family)
        .cloned()
        .unwrap()
}

fn others_still_answer(gw: &Gateway) {
    let (ok, v) = gw.call("nlctrl", "get", r#"{"name": "nlctrl"}"#);
    assert!(ok, "nlctrl stopped answering: {v}");
}

/// Call until the plugin is out of its crash backoff.
fn call_after_backoff(gw: &Gateway, op: &str) -> (bool, Value) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (ok, v) = gw.call("TASKSTATS", op, "null");
        if v["error"]["code"] != "plugin-restarting" || Instant::now() > deadline {
            return (ok, v);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_endless_loop_is_stopped_at_its_deadline() {
    let config = TestConfig::new();
    config
        .family("nlctrl.toml", NLCTRL)
        .family("chaos.toml", &chaos("[limits]\ncall_timeout_ms = 300\n"));
    let gw = Gateway::start(&config);
    let started = Instant::now();
    let (ok, v) = gw.call("TASKSTATS", "loop", "null");
    assert!(!ok);
    assert_eq!(v["error"]["code"], "timeout", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("TASKSTATS") && msg.contains("deadline"), "{msg}");
    assert!(started.elapsed() < Duration::from_secs(10));
    others_still_answer(&gw);
    // Restarted from a fresh instance.
    let (ok, v) = call_after_backoff(&gw, "ping");
    assert!(ok, "{v}");
    assert_eq!(plugin_state(&gw, "TASKSTATS")["restarts"], 1);
}

#[test]
fn unbounded_memory_growth_is_stopped_at_its_limit() {
    let config = TestConfig::new();
    config
        .family("nlctrl.toml", NLCTRL)
        .family("chaos.toml", &chaos("[limits]\nmemory_mib = 16\n"));
    let gw = Gateway::start(&config);
    let (ok, v) = gw.call("TASKSTATS", "grow", "null");
    assert!(!ok);
    assert_eq!(v["error"]["code"], "plugin-crashed", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("memory"), "{v}");
    others_still_answer(&gw);
    assert!(call_after_backoff(&gw, "ping").0);
}

#[test]
fn panics_and_traps_in_call_are_contained_and_restarted() {
    let config = TestConfig::new();
    config
        .family("nlctrl.toml", NLCTRL)
        .family("chaos.toml", &chaos(""));
    let gw = Gateway::start(&config);
    for op in ["panic", "trap"] {
        let (ok, v) = call_after_backoff(&gw, op);
        assert!(!ok);
        assert_eq!(v["error"]["code"], "plugin-crashed", "{op}: {v}");
        others_still_answer(&gw);
        let (ok, v) = call_after_backoff(&gw, "ping");
        assert!(ok, "{op}: not restarted: {v}");
    }
    let state = plugin_state(&gw, "TASKSTATS");
    assert_eq!(state["restarts"], 2);
    assert_eq!(state["state"], "ready");
    assert!(
        gw.log_text().contains("chaos: panic in call"),
        "the panic message is logged"
    );
}

#[test]
fn panics_traps_and_refusals_in_init_are_contained() {
    let config = TestConfig::new();
    config
        .family("nlctrl.toml", NLCTRL)
        .family(
            "a.toml",
            "family = \"TASKSTATS\"\nplugin = \"chaos.wasm\"\n[config]\ninit = \"panic\"\n",
        )
        .family(
            "b.toml",
            "family = \"thermal\"\nplugin = \"chaos.wasm\"\n[config]\ninit = \"trap\"\n",
        )
        .family(
            "c.toml",
            "family = \"acpi_event\"\nplugin = \"chaos.wasm\"\n[config]\ninit = \"fail\"\n",
        );
    let gw = Gateway::start(&config);
    others_still_answer(&gw);
    for (family, needle) in [
        ("TASKSTATS", "init"),
        ("thermal", "init"),
        ("acpi_event", "refuses"),
    ] {
        let (ok, v) = gw.call(family, "ping", "null");
        assert!(!ok);
        assert_eq!(v["error"]["code"], "plugin-unavailable", "{family}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{family}: {v}"
        );
        assert_eq!(plugin_state(&gw, family)["state"], "failed");
    }
}

#[test]
fn a_crash_loop_ends_in_failed_until_reloaded() {
    let config = TestConfig::new();
    config
        .family("nlctrl.toml", NLCTRL)
        .family("chaos.toml", &chaos("[limits]\nmax_crashes = 3\n"));
    let gw = Gateway::start(&config);
    for _ in 0..3 {
        let (_, v) = call_after_backoff(&gw, "panic");
        assert_eq!(v["error"]["code"], "plugin-crashed", "{v}");
    }
    let state = plugin_state(&gw, "TASKSTATS");
    assert_eq!(state["state"], "failed", "{state}");
    assert_eq!(state["consecutive_crashes"], 3);
    let (_, v) = gw.call("TASKSTATS", "ping", "null");
    assert_eq!(v["error"]["code"], "plugin-unavailable", "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("3 consecutive crashes"),
        "{v}"
    );
    others_still_answer(&gw);
    // An operator's reload starts it afresh.
    let out = gw.cli(&["reload", "TASKSTATS"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(gw.call("TASKSTATS", "ping", "null").0);
}

#[test]
fn commands_outside_the_allowlist_never_reach_the_kernel() {
    // chaos on nlctrl with only GETFAMILY dumps allowed: a `do` of another
    // command, e.g. 1 (what netdev calls dev-get), is refused by the host.
    let config = TestConfig::new();
    config.family(
        "chaos.toml",
        "family = \"nlctrl\"\nplugin = \"chaos.wasm\"\n[commands]\ndump = [3]\n",
    );
    let gw = Gateway::start(&config);
    let (ok, v) = gw.call("nlctrl", "request", r#"{"cmd": 1}"#);
    assert!(!ok);
    assert_eq!(v["error"]["code"], "denied", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("[commands] do"),
        "{v}"
    );
    let (ok, v) = gw.call("nlctrl", "request", r#"{"cmd": 3, "dump": true}"#);
    assert!(ok, "{v}");

    // A state-changing command the file does not allow: mptcp endpoint-add
    // is refused, and a dump shows the kernel never saw it.
    let ns = Netns::new("deny");
    let config = TestConfig::new();
    config.netns(&ns).family(
        "mptcp_pm.toml",
        "family = \"mptcp_pm\"\nplugin = \"mptcp_pm.wasm\"\n[commands]\ndo = [3, 6]\ndump = [3]\n",
    );
    let gw = Gateway::start(&config);
    let (ok, v) = gw.call("mptcp_pm", "endpoint-add", r#"{"addr4": "10.9.0.1", "id": 1}"#);
    assert!(!ok);
    assert_eq!(v["error"]["code"], "denied", "{v}");
    assert_eq!(gw.call("mptcp_pm", "endpoint-dump", "null").1, json!([]));
}

#[test]
fn log_spam_is_rate_limited() {
    let config = TestConfig::new();
    config
        .family("nlctrl.toml", NLCTRL)
        .family("chaos.toml", &chaos("[limits]\nlog_lines_per_sec = 5\n"));
    let gw = Gateway::start(&config);
    let (ok, v) = gw.call("TASKSTATS", "spam", r#"{"lines": 1000}"#);
    assert!(ok, "{v}");
    // Give the stdout stream a moment to flush into the log.
    std::thread::sleep(Duration::from_millis(300));
    let log = gw.log_text();
    let lines = log
        .lines()
        .filter(|l| l.contains("chaos spam line") || l.contains("chaos log line"))
        .count();
    assert!(lines <= 40, "{lines} plugin lines reached the log");
    let suppressed = plugin_state(&gw, "TASKSTATS")["log_lines_suppressed"]
        .as_u64()
        .unwrap();
    assert!(suppressed >= 1900, "{suppressed}");
    others_still_answer(&gw);
}

/// A gateway serving nlctrl and chaos (tag v1) from `config`, v1 answering.
fn serving_chaos_v1(config: &TestConfig) -> Gateway {
    config
        .family("nlctrl.toml", NLCTRL)
        .family("chaos.toml", &chaos("[config]\ntag = \"v1\"\n"));
    let gw = Gateway::start(config);
    assert_eq!(gw.call("TASKSTATS", "ping", "null").1["pong"], "v1");
    gw
}

/// v1 still serves TASKSTATS, and says its last reload failed.
fn v1_serves_with_a_failed_reload(gw: &Gateway) {
    assert_eq!(gw.call("TASKSTATS", "ping", "null").1["pong"], "v1");
    let state = plugin_state(gw, "TASKSTATS");
    assert_eq!(state["state"], "ready", "{state}");
    assert!(
        state["failed_reload"].as_str().is_some_and(|why| !why.is_empty()),
        "{state}"
    );
}

#[test]
fn a_family_file_renamed_with_a_broken_plugin_keeps_the_serving_version_until_fixed() {
    let config = TestConfig::new();
    let plugins = config.private_plugins();
    let gw = serving_chaos_v1(&config);

    // The file renamed, now naming a broken plugin: its load fails, and
    // the version serving stays, though its own file is gone.
    std::fs::write(plugins.join("broken.wasm"), b"\0asm not really").unwrap();
    let families = config.path().with_file_name("families.d");
    std::fs::remove_file(families.join("chaos.toml")).unwrap();
    config.family(
        "taskstats.toml",
        "family = \"TASKSTATS\"\nplugin = \"broken.wasm\"\n[config]\ntag = \"v2\"\n",
    );
    for _ in 0..2 {
        // Twice: a later reload must not remove it either.
        let out = gw.cli(&["reload"]);
        let outcomes: Value = serde_json::from_slice(&out.stdout).unwrap();
        let taskstats: Vec<&Value> = outcomes
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["family"] == "TASKSTATS")
            .collect();
        assert_eq!(taskstats.len(), 1, "{outcomes}");
        assert_eq!(
            (&taskstats[0]["result"], &taskstats[0]["kept_previous"]),
            (&json!("failed"), &json!(true)),
            "{outcomes}"
        );
        assert!(
            taskstats[0]["file"].as_str().unwrap().ends_with("taskstats.toml"),
            "{outcomes}"
        );
        v1_serves_with_a_failed_reload(&gw);
    }

    // The old name reused for another family: that family is added, and
    // the renamed one's version stays.
    config.family(
        "chaos.toml",
        "family = \"netdev\"\nplugin = \"chaos.wasm\"\n[config]\ntag = \"z\"\n",
    );
    let out = gw.cli(&["reload"]);
    let outcomes: Value = serde_json::from_slice(&out.stdout).unwrap();
    let results: Vec<(&str, &str, bool)> = outcomes
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["family"] != "nlctrl")
        .map(|o| {
            (
                o["family"].as_str().unwrap_or(""),
                o["result"].as_str().unwrap_or(""),
                o["kept_previous"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        results,
        [("netdev", "added", false), ("TASKSTATS", "failed", true)],
        "{outcomes}"
    );
    assert_eq!(gw.call("netdev", "ping", "null").1["pong"], "z");
    assert_eq!(gw.call("TASKSTATS", "ping", "null").1["pong"], "v1");
    // Reloaded by name, it reads its renamed file, not the reused one.
    let out = gw.cli(&["reload", "TASKSTATS"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (&v["result"], &v["kept_previous"]),
        (&json!("failed"), &json!(true)),
        "{v}"
    );
    assert!(v["file"].as_str().unwrap().ends_with("taskstats.toml"), "{v}");
    assert_eq!(gw.call("netdev", "ping", "null").1["pong"], "z");

    // Fixed, and reloaded by family name: the renamed file is the one read.
    config.family("taskstats.toml", &chaos("[config]\ntag = \"v2\"\n"));
    let out = gw.cli(&["reload", "TASKSTATS"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(out.status.success(), "{v}");
    assert_eq!(v["result"], "reloaded", "{v}");
    assert_eq!(gw.call("TASKSTATS", "ping", "null").1["pong"], "v2");
    assert!(plugin_state(&gw, "TASKSTATS")["failed_reload"].is_null());

    // Its file deleted: the family goes, the other stays.
    std::fs::remove_file(families.join("taskstats.toml")).unwrap();
    let out = gw.cli(&["reload"]);
    let outcomes: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        outcomes
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o["family"] == "TASKSTATS" && o["result"] == "removed"),
        "{outcomes}"
    );
    let (ok, v) = gw.call("TASKSTATS", "ping", "null");
    assert!(!ok, "{v}");
    assert_eq!(gw.call("netdev", "ping", "null").1["pong"], "z");
    others_still_answer(&gw);
}

#[test]
fn hot_reload_swaps_good_versions_and_keeps_the_old_one_on_a_broken_one() {
    let config = TestConfig::new();
    let plugins = config.private_plugins();
    config.set("plugins", "watch = true");
    let gw = serving_chaos_v1(&config);

    // A broken .wasm, reloaded through the API: refused, v1 keeps serving.
    std::fs::write(plugins.join("chaos.wasm"), b"\0asm not really").unwrap();
    let out = gw.cli(&["reload", "TASKSTATS"]);
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["result"].clone(), v["kept_previous"].clone()),
        (json!("failed"), json!(true)),
        "{v}"
    );
    // What serves says its reload failed, in the API and the table, where
    // it used to show `ready` and nothing else.
    v1_serves_with_a_failed_reload(&gw);
    let table = String::from_utf8_lossy(&gw.cli(&["plugins"]).stdout).into_owned();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("TASKSTATS") && l.contains("reload failed, the previous version stays")),
        "{table}"
    );

    // The serving version's file back: a reload finds it unchanged, and
    // the failure is no longer shown.
    std::fs::copy(common::plugin("chaos"), plugins.join("chaos.wasm")).unwrap();
    let out = gw.cli(&["reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    let state = plugin_state(&gw, "TASKSTATS");
    assert!(state["failed_reload"].is_null(), "{state}");
    assert_eq!(gw.call("TASKSTATS", "ping", "null").1["pong"], "v1");

    // A good version dropped in: the file watcher picks it up.
    config.family("chaos.toml", &chaos("[config]\ntag = \"v2\"\n"));
    let deadline = Instant::now() + Duration::from_secs(15);
    while gw.call("TASKSTATS", "ping", "null").1["pong"] != "v2" {
        assert!(
            Instant::now() < deadline,
            "the watcher did not reload:\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // SIGHUP reloads too, on a gateway without the file watcher (so only
    // the signal can be what reloads); a broken family file keeps the
    // version serving.
    drop(gw);
    config.set("plugins", "watch = false");
    let gw = Gateway::start(&config);
    assert_eq!(gw.call("TASKSTATS", "ping", "null").1["pong"], "v2");
    let hup = |gw: &Gateway| {
        let pid = gw.child.id().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-HUP", &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    config.family("chaos.toml", &chaos("[config]\ntag = \"v3\"\n"));
    hup(&gw);
    let deadline = Instant::now() + Duration::from_secs(15);
    while gw.call("TASKSTATS", "ping", "null").1["pong"] != "v3" {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload:\n{}",
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    config.family("chaos.toml", "family = \"TASKSTATS\"\nplugin = [\n");
    hup(&gw);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let v: Value = serde_json::from_slice(&gw.cli(&["plugins", "--json"]).stdout).unwrap();
        if v["broken_files"].as_array().unwrap().len() == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not re-read the files: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(gw.call("TASKSTATS", "ping", "null").1["pong"], "v3");
    others_still_answer(&gw);
}

#[test]
fn a_warm_cache_loads_every_plugin_without_compiling() {
    let config = TestConfig::new();
    let cache = config.dir.path().join("cache");
    config.set("plugins", &format!("cache_dir = \"{}\"", cache.display()));
    config
        .family("nlctrl.toml", NLCTRL)
        .family("chaos.toml", &chaos(""))
        .family("netdev.toml", "family = \"netdev\"\nplugin = \"netdev.wasm\"\n");
    let cold = Gateway::start(&config);
    let v: Value = serde_json::from_slice(&cold.cli(&["plugins", "--json"]).stdout).unwrap();
    assert_eq!(v["cache"], json!({"compiled": 3, "hits": 0}), "{v}");
    drop(cold);

    let warm = Gateway::start(&config);
    let v: Value = serde_json::from_slice(&warm.cli(&["plugins", "--json"]).stdout).unwrap();
    assert_eq!(v["cache"], json!({"compiled": 0, "hits": 3}), "{v}");
    assert!(
        v["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["from_cache"] == true)
    );
    assert_eq!(
        warm.log_text().matches("loaded from the compiled cache").count(),
        3
    );
    assert!(warm.call("nlctrl", "list", "null").0);
}

#[test]
fn fuel_limits_stop_a_plugin_where_the_operator_asks() {
    let config = TestConfig::new();
    config.set("limits", "fuel_metering = true");
    config.family("nlctrl.toml", NLCTRL).family(
        "chaos.toml",
        &chaos("[limits]\nfuel = 5000000\ncall_timeout_ms = 60000\n"),
    );
    let gw = Gateway::start(&config);
    assert!(
        gw.call("TASKSTATS", "ping", "null").0,
        "a small call fits its fuel"
    );
    let started = Instant::now();
    let (ok, v) = gw.call("TASKSTATS", "loop", "null");
    assert!(!ok);
    assert!(v["error"]["message"].as_str().unwrap().contains("fuel"), "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped by fuel, not the deadline"
    );
    others_still_answer(&gw);
}
