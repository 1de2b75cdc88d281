//! Bad configuration and bad requests: one clear error line, never a panic,
//! and the rest of the gateway keeps serving.

mod common;

use std::process::Command;

use common::{Gateway, NLCTRL, TestConfig, binary};
use serde_json::Value;

fn serve_error(config: &std::path::Path) -> String {
    let out = Command::new(binary())
        .args(["serve", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve should fail");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one error line, got:\n{stderr}");
    stderr
}

#[test]
fn missing_and_malformed_config_files_give_one_line() {
    let config = TestConfig::new();
    let e = serve_error(&config.dir.path().join("absent.toml"));
    assert!(
        e.starts_with("error: ") && e.contains("absent.toml: cannot read"),
        "{e}"
    );

    std::fs::write(config.path(), "[api]\nsocket = 3\n").unwrap();
    let e = serve_error(&config.path());
    assert!(
        e.contains("gateway.toml") && e.contains("line 2") && e.contains("socket"),
        "{e}"
    );

    std::fs::write(config.path(), "[api]\nsocket = \"x.sock\"\n").unwrap();
    let e = serve_error(&config.path());
    assert!(e.contains("missing field `plugins`"), "{e}");
}

#[test]
fn absent_family_missing_plugin_and_broken_file_leave_the_rest_serving() {
    let config = TestConfig::new();
    config
        .family("nlctrl.toml", NLCTRL)
        .family(
            "ghost.toml",
            "family = \"no_such_fam\"\nplugin = \"nlctrl.wasm\"\n",
        )
        .family(
            "lost.toml",
            "family = \"netdev\"\nplugin = \"does-not-exist.wasm\"\n",
        )
        .family("broken.toml", "family = \"ethtool\"\nplugin = [\n");
    let gw = Gateway::start(&config);

    // A family the kernel does not have: a clear error, not a crash.
    let out = gw.cli(&["call", "no_such_fam", "list"]);
    assert_eq!(out.status.code(), Some(2));
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["error"]["code"], "family-absent", "{err}");
    assert!(err["error"]["message"].as_str().unwrap().contains("no_such_fam"));

    // A plugin path that does not exist: the family is reported, not served.
    let out = gw.cli(&["call", "netdev", "dev-get"]);
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["error"]["code"], "plugin-unavailable", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does-not-exist.wasm does not exist"),
        "{err}"
    );

    // Unknown family, unknown op, bad JSON.
    let err: Value = serde_json::from_slice(&gw.cli(&["call", "nosuch", "x"]).stdout).unwrap();
    assert_eq!(err["error"]["code"], "unknown-family");
    let err: Value = serde_json::from_slice(&gw.cli(&["call", "nlctrl", "frob"]).stdout).unwrap();
    assert_eq!(err["error"]["code"], "unknown-op");
    let out = gw.cli(&["call", "nlctrl", "get", "{not json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not JSON"));

    // The good family still answers.
    assert!(gw.cli(&["call", "nlctrl", "list"]).status.success());

    // Each problem is one log line naming its file.
    let log = gw.log_text();
    assert!(!log.contains("panicked"), "{log}");
    for needle in ["ghost.toml", "lost.toml", "broken.toml"] {
        assert_eq!(
            log.lines().filter(|l| l.contains(needle)).count(),
            1,
            "{needle} in:\n{log}"
        );
    }
    let families: Value = serde_json::from_slice(&gw.cli(&["families", "--json"]).stdout).unwrap();
    let ghost = families
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "no_such_fam")
        .unwrap();
    assert_eq!(ghost["present"], false);
}

#[test]
fn cli_usage_errors_and_connection_errors_have_their_own_exit_codes() {
    // Exit codes from docs/operations.md: 64 usage, 1 could not run, 2 the
    // gateway answered with an error.
    let doc = std::fs::read_to_string(common::workspace().join("docs/operations.md")).unwrap();
    assert!(doc.contains("| 64 | usage error"), "docs/operations.md");
    for args in [
        &["call"][..],
        &["frobnicate"],
        &["call", "nlctrl", "list", "--bogus"],
    ] {
        let out = Command::new(binary()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(!out.stderr.is_empty());
    }
    let out = Command::new(binary()).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(binary())
        .args(["call", "nlctrl", "list", "--socket"])
        .arg(dir.path().join("absent.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    // The OS's words for ENOENT, from libc, once.
    // SAFETY: strerror returns a valid NUL-terminated string.
    let enoent = unsafe { std::ffi::CStr::from_ptr(libc::strerror(libc::ENOENT)) }
        .to_string_lossy()
        .into_owned();
    assert_eq!(err.matches(&enoent).count(), 1, "{err}");
    assert!(err.contains("cannot connect to the gateway"), "{err}");
}
