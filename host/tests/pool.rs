//! A family's plugin serves concurrent calls from a pool of instances:
//! calls run inside different instances at once, a crash discards only its
//! instance, and each instance has its own memory budget. Parallelism is
//! shown through state (a call held inside one instance until the test
//! creates the device it waits for), never through timing.

mod common;

use std::time::{Duration, Instant};

use common::{Gateway, Netns, TestConfig};
use serde_json::Value;

/// chaos serving netdev in the test's namespace, allowed DEV_GET (1 in
/// include/uapi/linux/netdev.h, `NETDEV_CMD_DEV_GET`) so `wait-for` can ask
/// for a device until it exists.
fn chaos_netdev(limits: &str) -> String {
    format!(
        "family = \"netdev\"\nplugin = \"chaos.wasm\"\n[commands]\ndo = [1]\n[limits]\ncall_timeout_ms = 60000\n{limits}"
    )
}

fn plugin_state(gw: &Gateway) -> Value {
    let out = gw.cli(&["plugins", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["family"] == "netdev")
        .cloned()
        .unwrap()
}

/// Wait (generously) until `busy` instances are inside a call.
fn wait_busy(gw: &Gateway, busy: u64) {
    wait_until(&format!("{busy} instance(s) busy"), || {
        plugin_state(gw)["pool"]["busy"] == busy
    });
}

/// `wait-for` input: NETDEV_A_DEV_IFINDEX (1) = `ifindex`, a device the
/// test creates when it wants the call to end.
fn wait_for(ifindex: u32) -> String {
    format!(r#"{{"cmd": 1, "attr": {{"type": 1, "value": {ifindex}}}}}"#)
}

#[test]
fn concurrent_calls_run_in_parallel_and_a_crash_leaves_the_others_serving() {
    let ns = Netns::new("pool");
    let config = TestConfig::new();
    config
        .netns(&ns)
        .family("chaos.toml", &chaos_netdev("instances = 2\nmemory_mib = 16\n"));
    let gw = Gateway::start(&config);

    let pool = plugin_state(&gw)["pool"].clone();
    assert_eq!(pool["size"], 2, "{pool}");
    assert_eq!(
        pool["live"], 1,
        "instances beyond the first are built on demand: {pool}"
    );
    assert_eq!(pool["memory_bytes_per_instance"], 16u64 << 20, "{pool}");
    assert_eq!(pool["memory_bytes_total"], 32u64 << 20, "{pool}");
    // The CLI's table: instances live of the size, memory per instance and in total.
    let table = String::from_utf8_lossy(&gw.cli(&["plugins"]).stdout).into_owned();
    let row = table
        .lines()
        .find(|l| l.starts_with("netdev"))
        .unwrap_or_default();
    assert!(
        table.contains("INSTANCES") && row.contains(" 1/2 ") && row.contains(" 16M/32M "),
        "{table}"
    );

    std::thread::scope(|s| {
        // A waits inside the first instance for a device that does not exist.
        let held = s.spawn(|| gw.call("netdev", "wait-for", &wait_for(4242)));
        wait_busy(&gw, 1);
        // With calls serialised, this would wait behind A until its
        // deadline: the device A waits for is created only after it.
        let (ok, v) = gw.call("netdev", "ping", "null");
        assert!(ok, "a second call did not run beside the first: {v}");
        let pool = plugin_state(&gw)["pool"].clone();
        assert_eq!(
            (pool["live"].as_u64(), pool["busy"].as_u64()),
            (Some(2), Some(1)),
            "{pool}"
        );
        ns.ip(&["link", "add", "gwpool0", "index", "4242", "type", "ifb"]);
        let (ok, v) = held.join().unwrap();
        assert!(ok, "the held call did not end once its device existed: {v}");
    });

    // Both instances are live and idle. A panic discards one of them; the
    // other serves the next call at once, without a rebuild.
    let (ok, v) = gw.call("netdev", "panic", "null");
    assert!(!ok);
    assert_eq!(v["error"]["code"], "plugin-crashed", "{v}");
    let (ok, v) = gw.call("netdev", "ping", "null");
    assert!(ok, "the surviving instance did not serve: {v}");
    let state = plugin_state(&gw);
    assert_eq!(
        state["restarts"], 0,
        "the call was served by a rebuilt instance: {state}"
    );
    assert_eq!(state["pool"]["live"], 1, "{state}");
}

#[test]
fn each_instance_has_its_own_memory_limit() {
    let ns = Netns::new("poolmem");
    let config = TestConfig::new();
    config
        .netns(&ns)
        .family("chaos.toml", &chaos_netdev("instances = 2\nmemory_mib = 12\n"));
    let gw = Gateway::start(&config);

    // Put 6 MiB into the second instance while the first is held.
    std::thread::scope(|s| {
        let held = s.spawn(|| gw.call("netdev", "wait-for", &wait_for(4343)));
        wait_busy(&gw, 1);
        let (ok, v) = gw.call("netdev", "hold", r#"{"mib": 6}"#);
        assert!(ok, "{v}");
        assert_eq!(v["held_mib"], 6);
        ns.ip(&["link", "add", "gwpool1", "index", "4343", "type", "ifb"]);
        assert!(held.join().unwrap().0);
    });
    // 6 MiB more in the first: 12 MiB and more between the two instances,
    // over one 12 MiB limit, and still within each instance's own.
    let (ok, v) = gw.call("netdev", "hold", r#"{"mib": 6}"#);
    assert!(ok, "an instance's budget was shared with another: {v}");
    assert_eq!(
        v["held_mib"], 6,
        "the call reached the instance that held 6 MiB already"
    );
    // 6 more in that same instance is over its limit: it traps and goes.
    let (ok, v) = gw.call("netdev", "hold", r#"{"mib": 6}"#);
    assert!(!ok);
    assert_eq!(v["error"]["code"], "plugin-crashed", "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("memory limit"), "{msg}");
    // The other instance still has its 6 MiB: instances share nothing.
    let (ok, v) = gw.call("netdev", "hold", r#"{"mib": 0}"#);
    assert!(ok, "{v}");
    assert_eq!(v["held_mib"], 6, "{v}");
}

/// A client call's errors with `code`, 0 before the first.
fn call_errors(gw: &Gateway, code: &str) -> u64 {
    gw.metric_if_any(&format!(
        "genl_gateway_plugin_call_errors_total{{family=\"netdev\",code=\"{code}\"}}"
    ))
    .unwrap_or(0)
}

/// Wait (generously) until `what` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Each call waiting for an instance holds its input, up to the API's body
/// limit. A call whose client hung up while every instance was busy ends
/// there and never runs, so calls abandoned faster than instances free up
/// cannot pile up past the connection cap (an adversarial probe grew the
/// gateway to 1.9 GB in 30 s that way).
#[test]
fn a_call_whose_client_left_while_it_waited_for_an_instance_never_runs() {
    const ABANDONED: u64 = 5;
    let ns = Netns::new("poolgone");
    let config = TestConfig::new();
    config
        .netns(&ns)
        .family("chaos.toml", &chaos_netdev("instances = 1\n"));
    let gw = Gateway::start(&config);
    let calls = || gw.metric("genl_gateway_plugin_calls_total{family=\"netdev\"}");

    std::thread::scope(|s| {
        // The only instance waits for a device that does not exist yet.
        let held = s.spawn(|| gw.call("netdev", "wait-for", &wait_for(4243)));
        wait_busy(&gw, 1);
        let body = format!(r#"{{"pad": "{}"}}"#, "a".repeat(256 << 10));
        for n in 1..=ABANDONED {
            let mut c = std::os::unix::net::UnixStream::connect(&gw.socket).unwrap();
            let req = format!(
                "POST /v1/families/netdev/ops/ping HTTP/1.1\r\nhost: gw\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            std::io::Write::write_all(&mut c, req.as_bytes()).unwrap();
            // The call has its input and waits for the instance; then the
            // client hangs up without reading an answer.
            wait_until("the call reached its plugin", || calls() == 1 + n);
        }
        wait_until("the abandoned calls ended while the instance was held", || {
            call_errors(&gw, "client-gone") == ABANDONED
        });
        assert_eq!(
            plugin_state(&gw)["pool"]["busy"],
            1,
            "the held call is still inside"
        );
        ns.ip(&["link", "add", "gwpool1", "index", "4243", "type", "ifb"]);
        let (ok, v) = held.join().unwrap();
        assert!(ok, "the held call did not end once its device existed: {v}");
    });
    // Only the held call ran: the abandoned ones never reached an instance.
    assert_eq!(calls(), 1 + ABANDONED);
    assert_eq!(call_errors(&gw, "client-gone"), ABANDONED);
    assert_eq!(plugin_state(&gw)["pool"]["busy"], 0);
}
