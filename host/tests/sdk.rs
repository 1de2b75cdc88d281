//! Plugin authors' path, end to end: the tcp_metrics plugin (written with
//! the SDK's typed attribute sets, as the tutorial shows) against the real
//! kernel, and a freshly scaffolded crate built, tested and loaded.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Gateway, NLCTRL, Netns, TestConfig, binary, workspace};

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

/// cwnd of 127.0.0.1 as iproute2 reports it.
fn iproute2_cwnd(ns: &Netns) -> Option<u64> {
    let out = Command::new("ip")
        .args(["-n", &ns.name, "tcp_metrics", "show", "127.0.0.1"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    words.find(|w| *w == "cwnd")?;
    words.next()?.parse().ok()
}

#[test]
fn tcp_metrics_plugin_reads_and_deletes_real_entries() {
    let ns = Netns::new("tcpm");
    loopback_connection(&ns);
    let cwnd = iproute2_cwnd(&ns).expect("the kernel cached metrics for the loopback connection");

    let config = TestConfig::new();
    config.netns(&ns).family(
        "tcp_metrics.toml",
        "family = \"tcp_metrics\"\nplugin = \"tcp_metrics.wasm\"\n[commands]\ndo = [1, 2]\ndump = [1]\n",
    );
    let gw = Gateway::start(&config);

    let (ok, all) = gw.call("tcp_metrics", "dump", "null");
    assert!(ok, "{all}");
    let entry = all
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["addr-ipv4"] == "127.0.0.1")
        .unwrap_or_else(|| panic!("no 127.0.0.1 entry: {all}"));
    assert_eq!(
        entry["vals"]["cwnd"], cwnd,
        "gateway and iproute2 disagree: {entry}"
    );
    assert!(entry["vals"]["rtt-us"].as_u64().is_some());

    let (ok, one) = gw.call("tcp_metrics", "get", r#"{"addr": "127.0.0.1"}"#);
    assert!(ok, "{one}");
    assert_eq!(one["vals"]["cwnd"], cwnd);

    let (ok, v) = gw.call("tcp_metrics", "delete", r#"{"addr": "127.0.0.1"}"#);
    assert!(ok, "{v}");
    assert_eq!(iproute2_cwnd(&ns), None, "iproute2 still sees the entry");
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
