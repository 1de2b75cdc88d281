//! docs/plugin-guide.md, followed as a new author would: its `sh` blocks run
//! verbatim from an empty directory outside the workspace, its `rust` blocks
//! become the crate's `src/lib.rs` and its `toml` block the `family.toml`,
//! for `IOAM6`, a family the project does not bundle. The served plugin is
//! then checked against iproute2's `ip ioam`. The example before the
//! tutorial compiles in the same crate. A wrong guide fails here.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Gateway, Netns, TestConfig, binary, workspace};
use serde_json::{Value, json};

/// One fenced block of the tutorial: its language and text.
struct Block {
    lang: String,
    text: String,
}

/// The guide's fenced blocks: before the tutorial (examples, compiled
/// too) and the tutorial's, in order (the reference sections are not steps).
fn guide_blocks() -> (Vec<Block>, Vec<Block>) {
    let guide = std::fs::read_to_string(workspace().join("docs/plugin-guide.md")).unwrap();
    let start = guide
        .find("This tutorial writes a plugin for `IOAM6`")
        .expect("the guide's IOAM6 tutorial");
    let end = guide.find("## Reference").unwrap_or(guide.len());
    (blocks(&guide[..start]), blocks(&guide[start..end]))
}

fn blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for line in text.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(lang)) => {
                current = Some(Block {
                    lang: lang.trim().to_owned(),
                    text: String::new(),
                })
            }
            (Some(_), Some("")) => blocks.extend(current.take()),
            (Some(b), _) => {
                b.text.push_str(line);
                b.text.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

fn path_with(dirs: &[&Path]) -> std::ffi::OsString {
    let mut all: Vec<PathBuf> = dirs.iter().map(|d| d.to_path_buf()).collect();
    all.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(all).unwrap()
}

#[test]
fn the_guide_takes_a_new_family_from_scaffold_to_served() {
    let (intro, blocks) = guide_blocks();
    let intro_rust: String = intro
        .iter()
        .filter(|b| b.lang == "rust")
        .map(|b| b.text.as_str())
        .collect();
    assert!(intro_rust.contains("Service"), "the guide's YNL example is gone");
    let langs: Vec<&str> = blocks.iter().map(|b| b.lang.as_str()).collect();
    assert!(
        langs.iter().filter(|l| **l == "sh").count() >= 3
            && langs.contains(&"rust")
            && langs.contains(&"toml"),
        "the tutorial lost its steps: {langs:?}"
    );

    let ns = Netns::new("guide");
    let work = tempfile::tempdir().unwrap();
    let config = TestConfig::new();
    config.netns(&ns);
    config.private_plugins();
    let crate_dir = work.path().join("ioam6");
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace().join("target"));
    let bin_dir = Path::new(binary()).parent().unwrap().to_owned();
    let cargo_dir = Path::new(env!("CARGO")).parent().unwrap().to_owned();
    let path = path_with(&[&bin_dir, &cargo_dir]);

    let mut lib_rs = String::new();
    let mut gateway: Option<Gateway> = None;
    for block in &blocks {
        match block.lang.as_str() {
            "sh" => {
                if block.text.contains("genl-gateway call") && gateway.is_none() {
                    gateway = Some(Gateway::start(&config));
                }
                let out = Command::new("ip")
                    .args(["netns", "exec", &ns.name, "sh", "-ec", &block.text])
                    .current_dir(work.path())
                    .env("PATH", &path)
                    .env("GENL_GATEWAY", workspace())
                    .env("GENL_GATEWAY_CONFIG", config.path())
                    .env("GENL_GATEWAY_SOCKET", config.socket())
                    .env("CARGO_TARGET_DIR", &target)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "the guide's commands failed:\n{}\nstdout:\n{}\nstderr:\n{}",
                    block.text,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                if block.text.contains("new-plugin") {
                    // Not a step for authors (who have the network): the
                    // workspace's lock file pins the versions it built, so
                    // the crate builds offline from what is compiled.
                    std::fs::copy(workspace().join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();
                    // The examples before the tutorial compile (and their
                    // tests run) as a test-only module of the same crate.
                    std::fs::write(crate_dir.join("src/guide_intro.rs"), &intro_rust).unwrap();
                    std::fs::copy(
                        workspace().join("ynl-specs/netdev.yaml"),
                        crate_dir.join("netdev.yaml"),
                    )
                    .unwrap();
                }
            }
            "rust" => {
                lib_rs.push_str(&block.text);
                lib_rs.push('\n');
                let with_intro = format!("{lib_rs}\n#[cfg(test)]\nmod guide_intro;\n");
                std::fs::write(crate_dir.join("src/lib.rs"), with_intro).unwrap();
            }
            "toml" => std::fs::write(crate_dir.join("family.toml"), &block.text).unwrap(),
            _ => {}
        }
    }
    let gw = gateway.expect("the guide calls the served plugin");

    // What the kernel holds, by iproute2.
    let ip_namespaces = || -> Vec<Value> {
        let out = Command::new("ip")
            .args(["-n", &ns.name, "-j", "ioam", "namespace", "show"])
            .output()
            .expect("run ip (iproute2; scripts/setup.sh installs it)");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    assert_eq!(ip_namespaces(), [json!({"namespace": 123, "data": "deadbeef"})]);
    let (ok, dump) = gw.call("IOAM6", "namespace-dump", "null");
    assert!(ok, "{dump}");
    let from_ip: Vec<Value> = ip_namespaces()
        .iter()
        .map(|n| {
            let data = u32::from_str_radix(n["data"].as_str().unwrap(), 16).unwrap();
            json!({"ns-id": n["namespace"], "ns-data": data})
        })
        .collect();
    assert_eq!(dump, Value::Array(from_ip));

    // Input cannot add attributes, and the family file's refusals hold.
    for bad in [
        r#"{"ns-id": 5, "unknown": {"2": ["01000000"]}}"#,
        r#"{"ns-id": 5, "attr-2": "01000000"}"#,
        r#"{"ns-id": 5, "dta": 1}"#,
    ] {
        let (ok, v) = gw.call("IOAM6", "namespace-add", bad);
        assert!(!ok);
        assert_eq!(v["error"]["code"], "bad-input", "{bad}: {v}");
    }
    let (_, v) = gw.call("IOAM6", "namespace-add", r#"{"ns-id": 123}"#);
    assert_eq!(v["error"]["code"], "exists", "{v}");
    let (_, v) = gw.call("IOAM6", "namespace-del", r#"{"ns-id": 123}"#);
    assert_eq!(v["error"]["code"], "denied", "{v}");
    assert_eq!(ip_namespaces().len(), 1, "nothing else reached the kernel");
}
