//! Calls from the fleet (issue 16, items 3 and 4) against real NATS
//! servers: a three-node cluster on loopback with NATS authorization, and
//! five gateways as five hosts, each in its own network namespace with its
//! own ifb devices. Expected values come from iproute2 in each namespace
//! (`ip -j link`, `ip mptcp endpoint show`) and from a raw NATS client.

mod common;

use std::collections::BTreeSet;
use std::process::Output;
use std::time::Duration;

use common::nats::NatsCluster;
use common::{Gateway, NLCTRL, Netns, TestConfig};
use serde_json::{Value, json};

const HOSTS: usize = 5;

/// Three NATS users: the gateways, a read-only operator and a writer.
/// Read vs write is a subject token of its own, so NATS can grant it.
const AUTH: &str = r#"
accounts {
  FLEET {
    users: [
      { user: gateway, password: gw-pass,
        permissions: { publish: ["genl.>", "$SRV.>", "_INBOX.>"], subscribe: ["genl.>", "$SRV.>", "_INBOX.>"] } }
      { user: reader, password: reader-pass,
        permissions: { publish: ["genl.*.call.read.>", "$SRV.>"], subscribe: ["_INBOX.>"] } }
      { user: writer, password: writer-pass,
        permissions: { publish: ["genl.*.call.>", "$SRV.>"], subscribe: ["_INBOX.>"] } }
    ]
  }
}
"#;

const NETDEV: &str = "family = \"netdev\"\nplugin = \"netdev.wasm\"\n[commands]\ndo = [1]\ndump = [1]\n";

/// mptcp_pm with every command allowed; `write` is the family file's
/// `[bus] write` (writes over the bus enabled for this family).
fn mptcp(write: bool) -> String {
    format!(
        "family = \"mptcp_pm\"\nplugin = \"mptcp_pm.wasm\"\n[commands]\ndo = [1, 2, 3, 4, 5, 6]\ndump = [3]\n[bus]\nwrite = {write}\n"
    )
}

struct Host {
    name: String,
    ns: Netns,
    config: TestConfig,
    gw: Option<Gateway>,
}

/// A `[bus]` for `user` in `config` (password in a 0600 file).
fn bus_for(config: &TestConfig, nats: &NatsCluster, user: &str, password: &str) {
    let pw = config.dir.path().join(format!("{user}.pass"));
    std::fs::write(&pw, password).expect("password file");
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    config
        .set("bus", &nats.urls_toml())
        .set("bus", &format!("user = \"{user}\""))
        .set("bus", &format!("password_file = \"{}\"", pw.display()));
}

/// Five hosts: host `i` has devices with ifindex 1000*(i+1)+k, k <= i,
/// so no two hosts list the same devices. h3 takes bus calls for netdev
/// only; h4 does not enable mptcp_pm writes in its family file.
fn five_hosts(nats: &NatsCluster, tweak: impl Fn(usize, &TestConfig)) -> Vec<Host> {
    (0..HOSTS)
        .map(|i| {
            let name = format!("h{i}");
            let ns = Netns::new(&format!("bc{i}"));
            for k in 0..=i {
                let index = (1000 * (i + 1) + k).to_string();
                ns.ip(&["link", "add", &format!("ifb{k}"), "index", &index, "type", "ifb"]);
            }
            let config = TestConfig::new();
            config
                .netns(&ns)
                .family("nlctrl.toml", NLCTRL)
                .family("netdev.toml", NETDEV)
                .family("mptcp_pm.toml", &mptcp(i != 4));
            bus_for(&config, nats, "gateway", "gw-pass");
            config
                .set("bus", &format!("host = \"{name}\""))
                .set("bus", "max_reconnect_delay_ms = 500")
                .set("bus.calls", "access = \"write\"");
            if i == 3 {
                config.set("bus.calls", "families = [\"netdev\"]");
            }
            tweak(i, &config);
            let gw = Some(Gateway::start(&config));
            Host { name, ns, config, gw }
        })
        .collect()
}

/// An operator's configuration: only `[bus]`, as NATS user `user`.
fn operator(nats: &NatsCluster, user: &str, password: &str) -> TestConfig {
    let config = TestConfig::new();
    bus_for(&config, nats, user, password);
    config
}

fn fleet(config: &TestConfig, args: &[&str]) -> Output {
    std::process::Command::new(common::binary())
        .arg("fleet")
        .args(args)
        .arg("--config")
        .arg(config.path())
        .output()
        .expect("run fleet")
}

/// `fleet call ...`: the answers by host, and the summary.
fn fleet_call(config: &TestConfig, args: &[&str]) -> (Vec<Value>, Value) {
    let mut all = vec!["call"];
    all.extend_from_slice(args);
    let out = fleet(config, &all);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}\n{text}")))
        .collect();
    let summary = lines
        .pop()
        .and_then(|l| l.get("summary").cloned())
        .unwrap_or_else(|| {
            panic!(
                "no summary line:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    (lines, summary)
}

fn names(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|h| h.as_str().expect("host name").to_owned())
        .collect()
}

fn set(hosts: &[&str]) -> BTreeSet<String> {
    hosts.iter().map(|h| (*h).to_owned()).collect()
}

/// The ifindexes iproute2 lists in `ns` (`ip -j link`).
fn ip_link_indexes(ns: &Netns) -> Vec<u64> {
    let out = std::process::Command::new("ip")
        .args(["-n", &ns.name, "-j", "link"])
        .output()
        .expect("ip -j link");
    assert!(out.status.success());
    let links: Value = serde_json::from_slice(&out.stdout).expect("ip -j link is JSON");
    let mut v: Vec<u64> = links
        .as_array()
        .expect("a list")
        .iter()
        .map(|l| l["ifindex"].as_u64().expect("ifindex"))
        .collect();
    v.sort_unstable();
    v
}

/// The MPTCP endpoints iproute2 lists in `ns`.
fn mptcp_endpoints(ns: &Netns) -> String {
    let out = std::process::Command::new("ip")
        .args(["-n", &ns.name, "mptcp", "endpoint", "show"])
        .output()
        .expect("ip mptcp endpoint show");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn answer_of<'a>(answers: &'a [Value], host: &str) -> &'a Value {
    answers
        .iter()
        .find(|a| a["host"] == host)
        .unwrap_or_else(|| panic!("no answer from {host}: {answers:?}"))
}

/// Wait until every gateway answers discovery (they connect in the
/// background).
fn wait_discovered(op: &TestConfig, want: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let out = fleet(op, &["hosts", "--json", "--wait-ms", "1500"]);
        let hosts: Vec<Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if hosts.len() >= want {
            return hosts;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {want} gateways answer $SRV.PING: {hosts:?}\n{}",
            hosts.len(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn fleet_calls_answer_per_host_respect_scopes_and_name_the_silent() {
    let nats = NatsCluster::start(3, AUTH);
    let mut hosts = five_hosts(&nats, |_, _| {});
    let reader = operator(&nats, "reader", "reader-pass");
    let writer = operator(&nats, "writer", "writer-pass");
    let owned: Vec<String> = hosts.iter().map(|h| h.name.clone()).collect();
    let all_names: Vec<&str> = owned.iter().map(String::as_str).collect();

    // Discovery: one line per gateway, with its scope.
    let found = wait_discovered(&reader, HOSTS);
    let found_names: BTreeSet<String> = found
        .iter()
        .map(|h| h["host"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(found_names, set(&all_names), "{found:?}");
    assert!(
        found
            .iter()
            .all(|h| h["calls"] == "write" && h["prefix"] == "genl")
    );

    // Every host answers with its own devices, as iproute2 lists them there.
    let (answers, summary) = fleet_call(
        &reader,
        &["netdev", "dev-dump", "--hosts", "*", "--timeout", "20000"],
    );
    assert_eq!(names(&summary["answered"]), set(&all_names), "{summary}");
    assert!(names(&summary["failed"]).is_empty() && names(&summary["silent"]).is_empty());
    for h in &hosts {
        let a = answer_of(&answers, &h.name);
        assert_eq!(a["status"], 200, "{a}");
        let mut got: Vec<u64> = a["output"]
            .as_array()
            .unwrap_or_else(|| panic!("{a}"))
            .iter()
            .map(|d| d["ifindex"].as_u64().expect("ifindex"))
            .collect();
        got.sort_unstable();
        assert_eq!(got, ip_link_indexes(&h.ns), "host {}", h.name);
    }

    // A glob addresses some hosts only.
    let (answers, summary) = fleet_call(&reader, &["netdev", "dev-dump", "--hosts", "db*"]);
    assert!(
        answers.is_empty() && names(&summary["answered"]).is_empty(),
        "{summary}"
    );
    let (answers, summary) = fleet_call(
        &reader,
        &["netdev", "dev-dump", "--hosts", "h?", "--timeout", "20000"],
    );
    assert_eq!(answers.len(), HOSTS, "{summary}");

    // A host whose [bus.calls] does not cover the family answers 403.
    let (answers, summary) = fleet_call(&reader, &["nlctrl", "list", "--timeout", "20000"]);
    assert_eq!(names(&summary["failed"]), set(&["h3"]), "{summary}");
    assert_eq!(names(&summary["answered"]).len(), HOSTS - 1);
    let denied = answer_of(&answers, "h3");
    assert_eq!(
        (denied["status"].clone(), denied["error"]["code"].clone()),
        (json!(403), json!("forbidden")),
        "{denied}"
    );
    assert!(
        denied["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("[bus.calls]")
    );

    // Writes: a read-only NATS user is refused by the servers themselves;
    // on the read subject every host refuses the write op; no kernel
    // state changes anywhere.
    let before: Vec<String> = hosts.iter().map(|h| mptcp_endpoints(&h.ns)).collect();
    let add = r#"{"addr4": "10.77.0.1", "id": 7}"#;
    let (answers, summary) = fleet_call(
        &reader,
        &["mptcp_pm", "endpoint-add", add, "--write", "--timeout", "3000"],
    );
    assert!(answers.is_empty(), "{answers:?}");
    assert_eq!(names(&summary["silent"]), set(&all_names), "{summary}");
    assert!(
        summary["server_errors"]
            .to_string()
            .contains("Permissions Violation"),
        "{summary}"
    );
    let (answers, summary) = fleet_call(&reader, &["mptcp_pm", "endpoint-add", add, "--timeout", "20000"]);
    assert_eq!(names(&summary["failed"]), set(&all_names), "{summary}");
    for a in &answers {
        assert_eq!(a["status"], 403, "{a}");
    }
    let after: Vec<String> = hosts.iter().map(|h| mptcp_endpoints(&h.ns)).collect();
    assert_eq!(before, after, "a read-only user changed kernel state");
    assert!(after.iter().all(|e| !e.contains("10.77.0.1")));

    // A writer may: on the hosts that allow it (h3 does not take mptcp_pm
    // calls; h4's family file does not enable writes over the bus).
    let (answers, summary) = fleet_call(
        &writer,
        &["mptcp_pm", "endpoint-add", add, "--write", "--timeout", "20000"],
    );
    assert_eq!(names(&summary["answered"]), set(&["h0", "h1", "h2"]), "{summary}");
    assert_eq!(names(&summary["failed"]), set(&["h3", "h4"]), "{summary}");
    assert!(
        answer_of(&answers, "h4")["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("write = true"),
        "{answers:?}"
    );
    for (i, h) in hosts.iter().enumerate() {
        let has = mptcp_endpoints(&h.ns).contains("10.77.0.1 id 7");
        assert_eq!(has, i < 3, "host {}: {}", h.name, mptcp_endpoints(&h.ns));
    }

    // One host stopped: named silent within the timeout (the operator
    // expects it from the inventory; discovery no longer finds it).
    drop(hosts[4].gw.take());
    let (answers, summary) = fleet_call(
        &reader,
        &[
            "netdev",
            "dev-dump",
            "--expect",
            &all_names.join(","),
            "--timeout",
            "5000",
        ],
    );
    assert_eq!(names(&summary["silent"]), set(&["h4"]), "{summary}");
    assert_eq!(names(&summary["answered"]).len(), HOSTS - 1, "{summary}");
    assert_eq!(answers.len(), HOSTS - 1);

    // It comes back and answers again.
    hosts[4].gw = Some(Gateway::start(&hosts[4].config));
    wait_discovered(&reader, HOSTS);
    let (_, summary) = fleet_call(&reader, &["netdev", "dev-dump", "--timeout", "20000"]);
    assert_eq!(names(&summary["answered"]), set(&all_names), "{summary}");
}

/// A raw request on `subject` with `payload`, as the gateway user.
async fn request(client: &async_nats::Client, subject: &str, payload: Vec<u8>) -> Result<Value, String> {
    let reply = tokio::time::timeout(
        Duration::from_secs(20),
        client.request(subject.to_owned(), payload.into()),
    )
    .await
    .map_err(|_| "no answer in 20 s".to_owned())?
    .map_err(|e| e.to_string())?;
    serde_json::from_slice(&reply.payload).map_err(|e| format!("answer is not JSON: {e}"))
}

/// The next answer on an inbox subscription, within 20 s.
async fn next_answer(sub: &mut async_nats::Subscriber) -> Value {
    let m = tokio::time::timeout(Duration::from_secs(20), futures_util::StreamExt::next(sub))
        .await
        .expect("an answer within 20 s")
        .expect("subscription open");
    serde_json::from_slice(&m.payload).expect("JSON answer")
}

#[test]
fn bad_input_from_the_bus_gets_clear_errors_and_disturbs_nothing() {
    let nats = NatsCluster::start(3, AUTH);
    // h0 runs one bus call at a time, and serves the chaos plugin (as the
    // ethtool family, which every namespace has) with room for an answer
    // larger than the bus's max_payload.
    let hosts = five_hosts(&nats, |i, config| {
        if i == 0 {
            config.set("bus.calls", "max_concurrent = 1").family(
                "ethtool.toml",
                "family = \"ethtool\"\nplugin = \"chaos.wasm\"\n[limits]\noutput_kib = 2048\n",
            );
        }
    });
    let reader = operator(&nats, "reader", "reader-pass");
    wait_discovered(&reader, HOSTS);
    let url = nats.urls()[0].clone();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = async_nats::ConnectOptions::with_user_and_password("gateway".into(), "gw-pass".into())
            .connect(url)
            .await
            .expect("connect as the gateway user");
        let code = |v: &Value| (v["status"].clone(), v["error"]["code"].clone());
        let ok = request(&client, "genl.h0.call.read.netdev.dev-dump", b"null".to_vec())
            .await
            .expect("a good call");
        assert_eq!(ok["status"], 200, "{ok}");

        let cases: &[(&str, &[u8], u16, &str)] = &[
            (
                "genl.h0.call.read.netdev.dev-get",
                b"{\"ifindex\":",
                400,
                "bad-json",
            ),
            (
                "genl.h0.call.read.netdev.dev-get",
                b"{\"ifindex\": 1, \"ifindex\": 2}",
                400,
                "bad-json",
            ),
            (
                "genl.h0.call.read.netdev.dev-get",
                b"{\"ifindex\": \"one\"}",
                400,
                "bad-input",
            ),
            (
                "genl.h1.call.read.nosuchfamily.dump",
                b"null",
                404,
                "unknown-family",
            ),
            ("genl.h1.call.read.netdev.no-such-op", b"null", 404, "unknown-op"),
            ("genl.h2.call.admin.netdev.dev-dump", b"null", 400, "bad-path"),
            ("genl.h2.call.read.netdev", b"null", 400, "bad-path"),
            (
                "genl.h2.call.read.netdev.dev-dump.extra",
                b"null",
                400,
                "bad-path",
            ),
        ];
        for (subject, payload, status, want) in cases {
            let v = request(&client, subject, payload.to_vec()).await.expect(subject);
            assert_eq!(code(&v), (json!(status), json!(want)), "{subject}: {v}");
            assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        }

        // A huge payload: over this host's [bus.calls] max_input_bytes
        // (64 KiB) is answered 413; over the server's max_payload (1 MB)
        // never leaves the client.
        let big = format!("{{\"ifindex\": 1, \"pad\": \"{}\"}}", "x".repeat(200_000));
        let v = request(&client, "genl.h0.call.read.netdev.dev-get", big.into_bytes())
            .await
            .expect("huge");
        assert_eq!(code(&v), (json!(413), json!("body-too-large")), "{v}");
        let huge = vec![b' '; 2 << 20];
        assert!(
            request(&client, "genl.h0.call.read.netdev.dev-dump", huge)
                .await
                .is_err(),
            "a payload over max_payload must be refused"
        );

        // Over [bus.calls] max_concurrent: answered `busy` at once. The
        // two requests leave one connection in order, and the gateway
        // takes the first one's permit before it reads the second.
        let (slow_inbox, busy_inbox) = (client.new_inbox(), client.new_inbox());
        let mut slow = client.subscribe(slow_inbox.clone()).await.expect("sub");
        let mut busy = client.subscribe(busy_inbox.clone()).await.expect("sub");
        let sleep = "genl.h0.call.read.ethtool.sleep";
        client
            .publish_with_reply(sleep, slow_inbox, b"{\"ms\": 3000}".to_vec().into())
            .await
            .expect("publish");
        client
            .publish_with_reply(sleep, busy_inbox, b"{\"ms\": 1}".to_vec().into())
            .await
            .expect("publish");
        client.flush().await.expect("flush");
        let v = next_answer(&mut busy).await;
        assert_eq!(code(&v), (json!(503), json!("busy")), "{v}");
        let v = next_answer(&mut slow).await;
        assert_eq!(v["status"], 200, "{v}");

        // An answer over the server's max_payload (1 MB) is replaced by an
        // error that says so.
        let v = request(
            &client,
            "genl.h0.call.read.ethtool.big-output",
            b"{\"bytes\": 1100000}".to_vec(),
        )
        .await
        .expect("big output");
        assert_eq!(code(&v), (json!(502), json!("bad-plugin-output")), "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("max_payload"),
            "{v}"
        );

        // A subject for a host that does not exist reaches no gateway.
        let none = request(&client, "genl.h9.call.read.netdev.dev-dump", b"null".to_vec()).await;
        assert!(none.is_err(), "{none:?}");

        // Every gateway still serves, over the bus and locally.
        for h in &hosts {
            let subject = format!("genl.{}.call.read.netdev.dev-dump", h.name);
            let v = request(&client, &subject, b"null".to_vec()).await.expect("after");
            assert_eq!(v["status"], 200, "{v}");
        }
    });
    for h in &hosts {
        let gw = h.gw.as_ref().expect("running");
        let (ok, out) = gw.call("netdev", "dev-dump", "null");
        assert!(ok, "{out}");
    }
    // h0 counted what it refused.
    let socket = hosts[0]
        .gw
        .as_ref()
        .expect("running")
        .socket
        .display()
        .to_string();
    let (status, body) = common::http(&socket, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    let metric = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    };
    assert_eq!(metric("genl_gateway_bus_calls_busy_total"), 1);
    assert!(metric("genl_gateway_bus_call_errors_total") >= 6, "{text}");
}
