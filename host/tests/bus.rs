//! The fleet bus connection (issue 16, item 1) against real NATS servers:
//! a three-node cluster on loopback with JetStream. The gateway connects
//! in the background, shows the state in /healthz and /metrics, keeps
//! serving its local API while the whole bus is down, and reconnects.

mod common;

use std::time::{Duration, Instant};

use common::nats::NatsCluster;
use common::{Gateway, NLCTRL, Netns, TestConfig};

fn bus_state(gw: &Gateway) -> String {
    gw.health()["bus"]["state"]
        .as_str()
        .unwrap_or("absent")
        .to_owned()
}

fn wait_state(gw: &Gateway, want: &str, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while bus_state(gw) != want {
        assert!(
            Instant::now() < deadline,
            "bus state is {} after {secs} s, want {want}; /healthz: {}\n{}",
            bus_state(gw),
            gw.health(),
            gw.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_gateway_joins_the_bus_survives_its_loss_and_reconnects() {
    let mut nats = NatsCluster::start(3, "");
    let ns = Netns::new("bus");
    let config = TestConfig::new();
    config
        .netns(&ns)
        .family("nlctrl.toml", NLCTRL)
        .set("bus", &nats.urls_toml())
        .set("bus", "host = \"host-a\"")
        .set("bus", "max_reconnect_delay_ms = 500");
    let gw = Gateway::start(&config);
    wait_state(&gw, "connected", 30);
    assert_eq!(gw.health()["bus"]["host"], "host-a");
    let plugins = gw.cli(&["plugins"]);
    let text = String::from_utf8_lossy(&plugins.stdout);
    assert!(text.contains("bus: connected as host host-a"), "{text}");
    assert_eq!(gw.metric("genl_gateway_bus_connected"), 1);

    // The whole bus goes away: the local API serves exactly as before.
    nats.kill_all();
    wait_state(&gw, "disconnected", 30);
    assert_eq!(gw.metric("genl_gateway_bus_connected"), 0);
    let (ok, out) = gw.call("nlctrl", "list", "{}");
    assert!(ok, "nlctrl list while the bus is down: {out}");
    assert!(gw.log_text().contains("bus: lost the NATS server"));

    // It comes back: the gateway reconnects by itself.
    nats.restart_all();
    wait_state(&gw, "connected", 30);
    assert!(gw.metric("genl_gateway_bus_connects_total") >= 2);
    assert!(gw.metric("genl_gateway_bus_disconnects_total") >= 1);
}

#[test]
fn a_gateway_whose_bus_never_answers_serves_locally() {
    // A port nothing listens on.
    let port = common::free_port();
    let ns = Netns::new("nobus");
    let config = TestConfig::new();
    config
        .netns(&ns)
        .family("nlctrl.toml", NLCTRL)
        .set("bus", &format!("urls = [\"nats://127.0.0.1:{port}\"]"));
    let gw = Gateway::start(&config);
    let (ok, out) = gw.call("nlctrl", "list", "{}");
    assert!(ok, "{out}");
    assert_eq!(bus_state(&gw), "connecting");
}

#[test]
fn bus_secrets_are_checked_and_never_logged() {
    let config = TestConfig::new();
    config.family("nlctrl.toml", NLCTRL);
    let dir = config.dir.path();
    let pw = dir.join("nats.pass");
    std::fs::write(&pw, "s3cret-Password-xyz\n").unwrap();
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    config
        .set("bus", "urls = [\"nats://127.0.0.1:4222\"]")
        .set("bus", "user = \"gw\"")
        .set("bus", "password_file = \"nats.pass\"");
    let check = |args: &[&str]| {
        let out = std::process::Command::new(common::binary())
            .args(args)
            .arg("--config")
            .arg(config.path())
            .output()
            .expect("run check");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    let (ok, text) = check(&["check"]);
    assert!(!ok, "a world-readable password file must be refused:\n{text}");
    assert!(text.contains("chmod 600") && text.contains("nats.pass"), "{text}");
    assert!(!text.contains("s3cret"), "the password leaked: {text}");

    // Credentials in a URL are refused, and the URL is not echoed back.
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    config.set("bus", "urls = [\"nats://gw:s3cret-inline@127.0.0.1:4222\"]");
    let (ok, text) = check(&["check"]);
    assert!(!ok && text.contains("bus.urls"), "{text}");
    assert!(!text.contains("s3cret-inline"), "{text}");

    // `all` addresses every host: no host may take it.
    config
        .set("bus", "urls = [\"nats://127.0.0.1:4222\"]")
        .set("bus", "host = \"all\"");
    let (ok, text) = check(&["check"]);
    assert!(!ok && text.contains("bus.host"), "{text}");
}
