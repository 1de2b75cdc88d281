//! Families served with zero code: the bundled `ynl` plugin and a kernel
//! spec, compared field by field with the kernel's own YNL library (Debian's
//! linux-source-6.12, `tools/net/ynl`) run against the same kernel, in the
//! same private namespace, with the same spec file.

mod common;

use common::{Gateway, Netns, TestConfig, normalise, oracle_dir, spec_path, ynl_cli};
use serde_json::{Value, json};

fn ynl_family(config: &TestConfig, family: &str, spec: &str, do_cmds: &[u8], dump_cmds: &[u8]) {
    config.family(
        &format!("{family}.toml"),
        &format!(
            "family = \"{family}\"\nplugin = \"{}\"\nspec = \"{spec}\"\n[commands]\ndo = {do_cmds:?}\ndump = {dump_cmds:?}\n",
            common::plugin("ynl").display()
        ),
    );
}

#[test]
fn netdev_from_its_spec_matches_the_kernels_ynl_library() {
    let ns = Netns::new("ynl-netdev");
    ns.ip_batch("link add ifb0 type ifb\nlink add ifb1 type ifb\nlink add va type veth peer name vb\nlink set va up\n");
    let config = TestConfig::new();
    config.netns(&ns);
    ynl_family(&config, "netdev", "netdev", &[1], &[1]);
    let gw = Gateway::start(&config);

    let (ok, ours) = gw.call("netdev", "dev-get-dump", "null");
    assert!(ok, "{ours}");
    let theirs = ynl_cli(&ns, "netdev", "--dump", "dev-get", &Value::Null).expect("YNL CLI dump");
    assert_eq!(normalise(&ours), normalise(&theirs));
    let ifindexes: Vec<u64> = ours
        .as_array()
        .expect("array")
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
    }
}

#[test]
fn input_is_checked_against_the_spec_before_the_kernel_sees_it() {
    let ns = Netns::new("ynl-input");
    let config = TestConfig::new();
    config.netns(&ns);
    ynl_family(&config, "netdev", "netdev", &[1], &[1]);
    let gw = Gateway::start(&config);

    // A key the op does not document is refused, naming it and what is
    // accepted; nothing reaches the kernel as a raw attribute.
    let (ok, e) = gw.call("netdev", "dev-get", r#"{"ifindex": 1, "xdp-features": 3}"#);
    assert!(!ok);
    assert_eq!(e["error"]["code"], "bad-input", "{e}");
    let msg = e["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("$.xdp-features") && msg.contains("accepted: ifindex"),
        "{msg}"
    );
    // The spec's checks: ifindex has `min: 1`.
    let (ok, e) = gw.call("netdev", "dev-get", r#"{"ifindex": 0}"#);
    assert!(!ok);
    assert_eq!(e["error"]["code"], "bad-input", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("$.ifindex"),
        "{e}"
    );
    // Type range.
    let (ok, e) = gw.call("netdev", "dev-get", r#"{"ifindex": 4294967296}"#);
    assert!(!ok, "{e}");
    // A command the family file does not allow is refused by the host.
    let (ok, e) = gw.call("netdev", "page-pool-get-dump", "null");
    assert!(!ok);
    assert_eq!(e["error"]["code"], "denied", "{e}");
}

#[test]
fn ethtool_get_commands_from_the_spec_match_the_kernels_ynl_library() {
    let ns = Netns::new("ynl-ethtool");
    ns.ip_batch(
        "link add va type veth peer name vb\nlink set va up\nlink set vb up\nlink add ifb0 type ifb\n",
    );
    let spec =
        genl_plugin_sdk::ynl::Spec::load(&std::fs::read_to_string(spec_path("ethtool")).expect("spec"))
            .expect("ethtool spec");
    // Every GET the spec has that takes a device header; the allowlist is
    // exactly those commands.
    let gets: Vec<(String, u8)> = spec
        .ops
        .iter()
        .filter(|o| o.name.ends_with("-get") && o.do_.is_some())
        .filter(|o| {
            o.do_
                .as_ref()
                .and_then(|m| m.request.as_ref())
                .is_some_and(|r| r.iter().any(|a| a == "header"))
        })
        .filter_map(|o| Some((o.name.clone(), o.request_value?)))
        .collect();
    assert!(gets.len() >= 20, "{gets:?}");
    let cmds: Vec<u8> = gets.iter().map(|(_, c)| *c).collect();
    let config = TestConfig::new();
    config.netns(&ns);
    ynl_family(&config, "ethtool", "ethtool", &cmds, &cmds);
    let gw = Gateway::start(&config);

    let mut compared = 0;
    for dev in ["va", "ifb0"] {
        for (op, _) in &gets {
            let input = json!({"header": {"dev-name": dev}});
            let theirs = ynl_cli(&ns, "ethtool", "--do", op, &input);
            let (ok, ours) = gw.call("ethtool", op, &input.to_string());
            match theirs {
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
    assert!(compared >= 8, "only {compared} ethtool GETs answered on veth/ifb");
}

#[test]
fn nlctrl_from_its_spec_matches_the_kernels_ynl_library() {
    // Families that are not namespace-aware are hidden in other
    // namespaces: both sides look from the same one.
    let ns = Netns::new("ynl-nlctrl");
    let config = TestConfig::new();
    config.netns(&ns);
    ynl_family(&config, "nlctrl", "nlctrl", &[3], &[3]);
    let gw = Gateway::start(&config);
    let input = json!({"family-name": "netdev"});
    let (ok, ours) = gw.call("nlctrl", "getfamily", &input.to_string());
    assert!(ok, "{ours}");
    let theirs = ynl_cli(&ns, "nlctrl", "--do", "getfamily", &input).expect("YNL CLI");
    assert_eq!(normalise(&ours), normalise(&theirs));
    let (ok, ours) = gw.call("nlctrl", "getfamily-dump", "null");
    assert!(ok, "{ours}");
    let theirs = ynl_cli(&ns, "nlctrl", "--dump", "getfamily", &Value::Null).expect("YNL CLI");
    assert_eq!(normalise(&ours), normalise(&theirs));
}

/// `ETHTOOL_MSG_<NAME>` from the kernel's UAPI header (the request enum).
fn ethtool_header_number(name: &str) -> u8 {
    let header = oracle_dir().join("include/uapi/linux/ethtool_netlink.h");
    let text = std::fs::read_to_string(&header).unwrap_or_else(|e| panic!("{}: {e}", header.display()));
    let body = &text[text.find("ETHTOOL_MSG_USER_NONE").expect("request enum")..];
    for (n, item) in body.split(',').map(str::trim).enumerate() {
        let item = item.split("/*").next().unwrap_or_default().trim();
        if item == name {
            return u8::try_from(n).expect("a command number");
        }
    }
    panic!("{name} not in {}", header.display())
}

#[test]
fn allowlists_by_operation_name_and_check_shows_what_was_granted() {
    let config = TestConfig::new();
    config.family(
        "ethtool.toml",
        &format!(
            "family = \"ethtool\"\nplugin = \"{}\"\nspec = \"ethtool\"\n[commands]\ndo = [\"channels-get\", \"channels-set\"]\ndump = [\"channels-get\"]\n",
            common::plugin("ynl").display()
        ),
    );
    let out = std::process::Command::new(common::binary())
        .args(["check", "--config"])
        .arg(config.path())
        .output()
        .expect("check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let get = ethtool_header_number("ETHTOOL_MSG_CHANNELS_GET");
    let set = ethtool_header_number("ETHTOOL_MSG_CHANNELS_SET");
    let line = |kind: &str, n: u8| {
        text.lines()
            .find(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() >= 3 && w[0] == kind && w[1] == n.to_string()
            })
            .unwrap_or_else(|| panic!("no `{kind} {n}` line in:\n{text}"))
            .to_owned()
    };
    assert!(
        line("do", get).contains("channels-get") && !line("do", get).contains("admin-perm"),
        "{text}"
    );
    let set_line = line("do", set);
    assert!(
        set_line.contains("channels-set") && set_line.contains("admin-perm"),
        "{text}"
    );
    assert!(line("dump", get).contains("channels-get"), "{text}");

    // A name the spec does not have is refused with the spec's operations.
    config.family(
        "ethtool.toml",
        &format!(
            "family = \"ethtool\"\nplugin = \"{}\"\nspec = \"ethtool\"\n[commands]\ndo = [\"chanels-get\"]\n",
            common::plugin("ynl").display()
        ),
    );
    let out = std::process::Command::new(common::binary())
        .args(["check", "--config"])
        .arg(config.path())
        .output()
        .expect("check");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("chanels-get") && all.contains("channels-get"),
        "{all}"
    );
}
