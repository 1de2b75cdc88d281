//! Plugin authors' path, end to end: the tcp_metrics plugin (the kernel's
//! spec through the SDK's YNL engine, plus `ip tcp_metrics`'s units) against
//! the real kernel, and a freshly scaffolded crate built, tested and loaded.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Gateway, NLCTRL, Netns, TestConfig, binary, workspace};
use serde_json::Value;

/// A loopback TCP connection inside `ns`, so the kernel caches metrics for
/// 127.0.0.1.
fn loopback_connection(ns: &Netns) {
    let script = "import socket,threading\n\
s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); port=s.getsockname()[1]\n\
def srv():\n    c,_=s.accept(); c.recv(1<<20); c.sendall(b'y'*50000); c.close()\n\
t=threading.Thread(target=srv); t.start()\n\
c=socket.create_connection(('127.0.0.1',port)); c.sendall(b'x'*50000); c.shutdown(1)\n\
while c.recv(65536): pass\n\
c.close(); t.join()\n";
    let out = ns.exec(&["python3", "-c", script]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Every entry `ip -n NS -j tcp_metrics show` prints. iproute2 must run
/// and succeed (scripts/setup.sh installs it): a failure is the test's.
fn iproute2_entries(ns: &Netns) -> Vec<Value> {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "-j", "tcp_metrics", "show"])
        .output()
        .expect("run ip (iproute2; scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "ip tcp_metrics show failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout) {
        Ok(Value::Array(entries)) => entries,
        other => panic!("ip -j tcp_metrics show: not a JSON array: {other:?}"),
    }
}

/// iproute2's entry for 127.0.0.1, if it has one.
fn iproute2_loopback(ns: &Netns) -> Option<Value> {
    iproute2_entries(ns).into_iter().find(|e| e["dst"] == "127.0.0.1")
}

/// Milliseconds from iproute2's seconds (it prints them to the ms).
fn ms(seconds: &Value) -> u64 {
    (seconds.as_f64().expect("seconds") * 1000.0).round() as u64
}

/// The plugin's `entry` says what iproute2 printed, field by field.
/// `before` and `after` are iproute2's entry read just before and just
/// after the plugin's, so the age lies between theirs.
fn assert_matches_iproute2(entry: &Value, before: &Value, after: &Value) {
    let mut ip_vals = Vec::new();
    for (key, ip) in before.as_object().unwrap() {
        match key.as_str() {
            "dst" => assert_eq!(entry["addr-ipv4"], *ip, "dst: {entry}"),
            "source" => assert_eq!(entry["saddr-ipv4"], *ip, "source: {entry}"),
            "age" => {
                let age = entry["age-ms"].as_u64().expect("age-ms");
                assert!(
                    ms(ip) <= age && age <= ms(&after["age"]),
                    "age {age} ms: {before} {after}"
                );
                assert_eq!(ms(&entry["age"]), age, "age in seconds: {entry}");
            }
            // iproute2's JSON has these in seconds; its text in us.
            "rtt" | "rttvar" => {
                let us = (ip.as_f64().unwrap() * 1e6).round() as u64;
                assert_eq!(
                    entry["vals"][format!("{key}-us")],
                    us,
                    "{key}: {entry} vs {before}"
                );
                ip_vals.push(format!("{key}-us"));
            }
            "cwnd" | "ssthresh" | "reordering" => {
                assert_eq!(entry["vals"][key], *ip, "{key}: {entry} vs {before}");
                ip_vals.push(key.clone());
            }
            other => panic!("iproute2 shows `{other}`, which this test does not compare yet: {before}"),
        }
    }
    let mut plugin_vals: Vec<String> = entry["vals"].as_object().unwrap().keys().cloned().collect();
    plugin_vals.sort();
    ip_vals.sort();
    assert_eq!(plugin_vals, ip_vals, "metrics iproute2 does not show: {entry}");
    let unchanged = |v: &Value| {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("age");
        v
    };
    assert_eq!(
        unchanged(before),
        unchanged(after),
        "the entry changed while compared"
    );
}

#[test]
fn tcp_metrics_plugin_reads_and_deletes_real_entries() {
    let ns = Netns::new("tcpm");
    loopback_connection(&ns);
    assert!(
        iproute2_loopback(&ns).is_some(),
        "the kernel cached no metrics for the loopback connection"
    );

    let config = TestConfig::new();
    config.netns(&ns).family(
        "tcp_metrics.toml",
        "family = \"tcp_metrics\"\nplugin = \"tcp_metrics.wasm\"\n[commands]\ndo = [1, 2]\ndump = [1]\n",
    );
    let gw = Gateway::start(&config);

    let before = iproute2_loopback(&ns).unwrap();
    let (ok, all) = gw.call("tcp_metrics", "dump", "null");
    let after = iproute2_loopback(&ns).unwrap();
    assert!(ok, "{all}");
    assert_eq!(
        all.as_array().unwrap().len(),
        iproute2_entries(&ns).len(),
        "{all}"
    );
    let entry = all
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["addr-ipv4"] == "127.0.0.1")
        .unwrap_or_else(|| panic!("no 127.0.0.1 entry: {all}"));
    assert_matches_iproute2(entry, &before, &after);

    let before = iproute2_loopback(&ns).unwrap();
    let (ok, one) = gw.call("tcp_metrics", "get", r#"{"addr": "127.0.0.1"}"#);
    let after = iproute2_loopback(&ns).unwrap();
    assert!(ok, "{one}");
    assert_matches_iproute2(&one, &before, &after);

    let (ok, v) = gw.call("tcp_metrics", "delete", r#"{"addr": "127.0.0.1"}"#);
    assert!(ok, "{v}");
    assert_eq!(iproute2_loopback(&ns), None, "iproute2 still sees the entry");
    let (ok, v) = gw.call("tcp_metrics", "get", r#"{"addr": "127.0.0.1"}"#);
    assert!(!ok);
    assert_eq!(v["error"]["code"], "not-found", "{v}");
}

fn cargo(dir: &Path, args: &[&str]) {
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| workspace().join("target").display().to_string());
    let out = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("run cargo");
    assert!(
        out.status.success(),
        "cargo {args:?} in {}:\n{}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_scaffolded_plugin_builds_tests_and_loads_as_it_is() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .args(["new-plugin", "hello", "TASKSTATS", "--dir"])
        .arg(tmp.path().join("hello"))
        .arg("--sdk")
        .arg(workspace().join("plugin-sdk"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dir = tmp.path().join("hello");
    // The workspace's lock file pins the same dependency versions, so the
    // build reuses what the workspace already compiled.
    std::fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    cargo(&dir, &["test", "--quiet"]);
    cargo(
        &dir,
        &["build", "--quiet", "--release", "--target", "wasm32-wasip2"],
    );

    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target"));
    let wasm = target.join("wasm32-wasip2/release/hello_plugin.wasm");
    let config = TestConfig::new();
    let plugins = config.private_plugins();
    std::fs::copy(&wasm, plugins.join("hello.wasm")).unwrap();
    let family_file = std::fs::read_to_string(dir.join("family.toml")).unwrap();
    config
        .family("nlctrl.toml", NLCTRL)
        .family("hello.toml", &family_file);
    let gw = Gateway::start(&config);
    let (ok, info) = gw.call("TASKSTATS", "info", "null");
    assert!(ok, "{info}");
    let (_, kernel) = gw.call("nlctrl", "get", r#"{"name": "TASKSTATS"}"#);
    assert_eq!(info["name"], "TASKSTATS");
    assert_eq!(info["id"], kernel["id"]);
}
