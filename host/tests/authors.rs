//! Plugin authors' tools against the real gateway: the native harness
//! (`FakeKernel`) refuses what a family file does not allow with the very
//! message the gateway gives, family name hints, and `check` on allowlists.

mod common;

use std::process::Command;

use common::{Gateway, Netns, TestConfig, binary};
use genl_plugin_sdk::testing::FakeKernel;
use genl_plugin_sdk::{CallError, FamilyInfo, kernel};

#[test]
fn fake_kernel_refuses_what_the_family_file_does_not_allow_as_the_gateway_does() {
    // chaos serves tcp_metrics with GET (1) allowed only as a `do`; its
    // `request` op sends any command, so the gateway's refusal is real.
    let family_file = "family = \"tcp_metrics\"\nplugin = \"chaos.wasm\"\n[commands]\ndo = [1]\n";
    let ns = Netns::new("harness");
    let config = TestConfig::new();
    config.netns(&ns).family("chaos.toml", family_file);
    let gw = Gateway::start(&config);

    for (input, dump) in [(r#"{"cmd": 2}"#, false), (r#"{"cmd": 1, "dump": true}"#, true)] {
        let (ok, v) = gw.call("tcp_metrics", "request", input);
        assert!(!ok, "{v}");
        assert_eq!(v["error"]["code"], "denied", "{v}");
        let gateway_message = v["error"]["message"].as_str().unwrap().to_owned();

        let fake = FakeKernel::new(FamilyInfo::default());
        fake.load_family_file(config.dir.path().join("families.d/chaos.toml"))
            .unwrap();
        fake.on_do(2, |_| Ok(vec![])).on_dump(1, |_| Ok(vec![]));
        let refused = if dump {
            kernel::dump_request(1, &[])
        } else {
            kernel::do_request(2, &[])
        };
        let err = CallError::from(refused.unwrap_err());
        assert_eq!(err.code, "denied");
        assert_eq!(err.message, gateway_message);
        assert!(
            fake.requests().is_empty(),
            "a refused request never reaches the kernel"
        );
    }

    // What the file allows still reaches the fake's handler.
    let fake = FakeKernel::new(FamilyInfo::default());
    fake.load_family_file(config.dir.path().join("families.d/chaos.toml"))
        .unwrap();
    fake.on_do(1, |_| Ok(vec![]));
    assert!(kernel::do_request(1, &[]).is_ok());
    assert_eq!(fake.requests().len(), 1);
}

/// The commands `genl ctrl get name FAMILY` lists (iproute2; a missing
/// tool fails the test).
fn iproute2_commands(ns: &Netns, family: &str) -> Vec<u32> {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "genl", "ctrl", "get", "name", family])
        .output()
        .expect("run genl (iproute2; scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "genl ctrl get name {family}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let ids: Vec<u32> = text
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("ID-0x"))
        .map(|h| u32::from_str_radix(h, 16).unwrap())
        .collect();
    assert!(!ids.is_empty(), "genl listed no commands for {family}: {text}");
    ids
}

/// Whether `genl ctrl list` in `ns` has a family named exactly `name`.
fn iproute2_has_family(ns: &Netns, name: &str) -> bool {
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "genl", "ctrl", "list"])
        .output()
        .expect("run genl (iproute2; scripts/setup.sh installs it)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim().strip_prefix("Name: ") == Some(name))
}

#[test]
fn a_family_name_in_the_wrong_case_gets_a_hint_from_the_api_and_cli() {
    let ns = Netns::new("hintcall");
    let config = TestConfig::new();
    config
        .netns(&ns)
        .family("chaos.toml", "family = \"TASKSTATS\"\nplugin = \"chaos.wasm\"\n");
    let gw = Gateway::start(&config);
    // Through the CLI, which prints the API's answer.
    let (ok, v) = gw.call("taskstats", "ping", "{}");
    assert!(!ok);
    assert_eq!(v["error"]["code"], "unknown-family", "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("did you mean 'TASKSTATS'?"), "{msg}");
    // A name with no near miss gets no guess.
    let (_, v) = gw.call("wireguard", "ping", "{}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(!msg.contains("did you mean"), "{msg}");
}

#[test]
fn check_names_the_kernels_spelling_and_commands_the_family_lacks() {
    let ns = Netns::new("hintcheck");
    // The kernel's own names and commands, from iproute2.
    assert!(iproute2_has_family(&ns, "TASKSTATS"));
    assert!(!iproute2_has_family(&ns, "taskstats"));
    let tcp_commands = iproute2_commands(&ns, "tcp_metrics");
    let missing: u8 = (1..=255u8)
        .find(|c| !tcp_commands.contains(&u32::from(*c)))
        .unwrap();
    let present = u8::try_from(tcp_commands[0]).unwrap();

    let config = TestConfig::new();
    config
        .netns(&ns)
        .family("taskstats.toml", "family = \"taskstats\"\nplugin = \"chaos.wasm\"\n")
        .family(
            "tcpm.toml",
            &format!(
                "family = \"tcp_metrics\"\nplugin = \"chaos.wasm\"\n[commands]\ndo = [{present}, {missing}]\ndump = [{present}]\n"
            ),
        );
    let out = Command::new(binary())
        .args(["check", "--json", "--config"])
        .arg(config.path())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = v["families"].as_array().unwrap();
    let row = |f: &str| rows.iter().find(|r| r["family"] == f).unwrap().clone();
    let warnings = |f: &str| -> Vec<String> {
        row(f)["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_owned())
            .collect()
    };
    let t = warnings("taskstats");
    assert!(t.len() == 1 && t[0].contains("family = \"TASKSTATS\""), "{t:?}");
    let m = warnings("tcp_metrics");
    assert_eq!(m.len(), 1, "{m:?}");
    assert!(m[0].contains(&format!("command {missing},")), "{m:?}");
    assert!(m[0].starts_with("[commands] do"), "{m:?}");

    // The text form shows them too.
    let out = Command::new(binary())
        .args(["check", "--config"])
        .arg(config.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("warn   taskstats"), "{text}");
    assert!(text.contains("warn   tcp_metrics"), "{text}");
}

#[test]
fn no_bundled_plugin_lets_client_input_add_attributes() {
    // Every family file the project ships, every op its plugin describes:
    // a key the op does not document, and the typed codec's old `unknown`
    // map, are refused as bad input, so they never reach the kernel as
    // attributes. Written over what the plugins describe, so it holds for
    // whichever codec each plugin uses. Each file is given every command
    // the kernel has (iproute2's list), so the refusal tested is the input's,
    // not the allowlist's; the namespace is the test's own.
    let ns = Netns::new("noattrs");
    let config = TestConfig::new();
    config.netns(&ns);
    let shipped = common::workspace().join("config/families.d");
    let mut absent = Vec::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&shipped).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let mut table: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let family = table["family"].as_str().unwrap().to_owned();
        if iproute2_has_family(&ns, &family) {
            let all: Vec<toml::Value> = iproute2_commands(&ns, &family)
                .into_iter()
                .map(|c| toml::Value::Integer(c.into()))
                .collect();
            let mut commands = toml::Table::new();
            commands.insert("do".into(), toml::Value::Array(all.clone()));
            commands.insert("dump".into(), toml::Value::Array(all));
            table.insert("commands".into(), toml::Value::Table(commands));
        } else {
            absent.push(family);
        }
        config.family(
            path.file_name().unwrap().to_str().unwrap(),
            &toml::to_string(&table).unwrap(),
        );
        files += 1;
    }
    assert!(files >= 5, "only {files} shipped family files");
    let gw = Gateway::start(&config);
    let plugins = gw.cli(&["plugins", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&plugins.stdout).unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for p in v["plugins"].as_array().unwrap() {
        let family = p["family"].as_str().unwrap();
        // Nothing can reach a family the kernel does not have.
        let expected = if absent.iter().any(|a| a == family) {
            "family-absent"
        } else {
            "bad-input"
        };
        // An events-only plugin (acpi_event) has no ops to call.
        for op in p["description"]["ops"].as_array().into_iter().flatten() {
            let op = op["name"].as_str().unwrap();
            for input in [r#"{"zz-undocumented": 1}"#, r#"{"unknown": {"5": ["deadbeef"]}}"#] {
                let (ok, v) = gw.call(family, op, input);
                checked += 1;
                let refused = !ok && (v["error"]["code"] == "bad-input" || v["error"]["code"] == expected);
                if !refused {
                    failures.push(format!("{family} {op} {input}: {v}"));
                }
            }
        }
    }
    assert!(checked >= 20, "only {checked} calls");
    assert!(
        failures.is_empty(),
        "accepted or not refused as bad input:\n{}",
        failures.join("\n")
    );
}
