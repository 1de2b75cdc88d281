//! Typed interfaces for clients: each operation's input and output JSON
//! Schema, served per operation and as one OpenAPI 3.1 document, and input
//! refused by the host before the plugin runs.
//!
//! The oracles: the kernel's own YNL library (`tools/net/ynl/lib`, nlspec)
//! reads the spec for the expected attributes, types, checks and enum names;
//! `openapi-spec-validator` (installed by scripts/setup.sh) judges the
//! OpenAPI document; the plugin's call counter in /metrics shows whether
//! the plugin ran.

mod common;

use std::path::PathBuf;

use common::{Gateway, Netns, TestConfig, http, workspace};
use serde_json::{Value, json};

fn oracle_dir() -> PathBuf {
    std::env::var("GENL_ORACLE_DIR")
        .unwrap_or_else(|_| "/usr/local/share/genl-gateway/linux-source-6.12".into())
        .into()
}

/// What the kernel's nlspec says operation `op` of spec `spec` takes and
/// gives: per mode, request and reply attributes with type, checks, enum
/// entries and (one level deep) the nested set's attributes.
fn nlspec(spec: &str, op: &str) -> Value {
    let lib = oracle_dir().join("tools/net/ynl");
    assert!(
        lib.join("lib/nlspec.py").is_file(),
        "{} is missing: scripts/setup.sh extracts the kernel's YNL library",
        lib.display()
    );
    let script = r#"
import sys, json
sys.path.insert(0, sys.argv[1])
from lib import SpecFamily
f = SpecFamily(sys.argv[2], schema_path="")
op = f.msgs[sys.argv[3]]
def info(a, depth):
    d = {"type": a.type, "checks": a.yaml.get("checks", {})}
    if a.yaml.get("enum"):
        d["enum"] = [e.name for e in f.consts[a.yaml["enum"]].entries.values()]
    if a.type == "nest" and depth < 1:
        s = f.attr_sets[a.yaml["nested-attributes"]]
        d["nested"] = {n: info(x, depth + 1) for n, x in s.items() if x.type not in ("pad", "unused")}
    return d
out = {}
for mode in ("do", "dump"):
    if mode in op.yaml:
        m = op.yaml[mode] or {}
        out[mode] = {k: {n: info(op.attr_set[n], 0) for n in (m.get(k) or {}).get("attributes", [])} for k in ("request", "reply")}
print(json.dumps(out))
"#;
    let spec_file = workspace().join("ynl-specs").join(format!("{spec}.yaml"));
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&lib)
        .arg(&spec_file)
        .arg(op)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "nlspec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("nlspec JSON")
}

/// Integer bounds of a YNL type, from the C types they name.
fn type_range(t: &str) -> Option<(i128, i128)> {
    Some(match t {
        "u8" => (0, 255),
        "u16" => (0, 65_535),
        "u32" => (0, 4_294_967_295),
        "u64" | "uint" => (0, 18_446_744_073_709_551_615),
        "s8" => (-128, 127),
        "s16" => (-32_768, 32_767),
        "s32" => (-2_147_483_648, 2_147_483_647),
        "s64" | "sint" => (i64::MIN as i128, i64::MAX as i128),
        _ => return None,
    })
}

fn as_i128(v: &Value) -> Option<i128> {
    v.as_i64().map(i128::from).or_else(|| v.as_u64().map(i128::from))
}

/// Follow a `$ref` within `doc`.
fn deref<'a>(doc: &'a Value, s: &'a Value) -> &'a Value {
    match s.get("$ref").and_then(Value::as_str) {
        Some(r) => doc
            .pointer(r.strip_prefix('#').expect("local ref"))
            .unwrap_or_else(|| panic!("dangling {r}")),
        None => s,
    }
}

/// The alternatives a schema allows (its `anyOf`, or itself).
fn branches<'a>(doc: &'a Value, s: &'a Value) -> Vec<&'a Value> {
    let s = deref(doc, s);
    match s.get("anyOf").and_then(Value::as_array) {
        Some(any) => any.iter().map(|b| deref(doc, b)).collect(),
        None => vec![s],
    }
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

/// Check one input attribute's schema against nlspec's word on it.
fn check_input_attr(doc: &Value, schema: &Value, info: &Value, at: &str) {
    let t = info["type"].as_str().expect("type");
    let alts = branches(doc, schema);
    if let Some((mut lo, mut hi)) = type_range(t) {
        if let Some(min) = as_i128(&info["checks"]["min"]) {
            lo = lo.max(min);
        }
        if let Some(max) = as_i128(&info["checks"]["max"]) {
            hi = hi.min(max);
        }
        let int = alts
            .iter()
            .find(|b| b["type"] == "integer")
            .unwrap_or_else(|| panic!("{at}: no integer form in {schema}"));
        assert_eq!(as_i128(&int["minimum"]), Some(lo), "{at}: minimum");
        assert_eq!(as_i128(&int["maximum"]), Some(hi), "{at}: maximum");
        if let Some(names) = info.get("enum") {
            let named = alts
                .iter()
                .find(|b| b.get("enum").is_some())
                .unwrap_or_else(|| panic!("{at}: enum names missing in {schema}"));
            let mut want: Vec<&str> = names
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let mut got: Vec<&str> = named["enum"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            want.sort();
            got.sort();
            assert_eq!(got, want, "{at}: enum names");
        }
        return;
    }
    match t {
        "string" => {
            let s = alts[0];
            assert_eq!(s["type"], "string", "{at}");
            if let Some(max) = info["checks"]["max-len"].as_u64() {
                assert_eq!(s["maxLength"].as_u64(), Some(max), "{at}: maxLength");
            }
        }
        "flag" => assert_eq!(alts[0]["type"], "boolean", "{at}"),
        "binary" => assert!(
            alts.iter()
                .any(|b| b["type"] == "string" || b["type"] == "object"),
            "{at}"
        ),
        "nest" => {
            let set = alts[0];
            assert_eq!(set["type"], "object", "{at}");
            assert_eq!(set["additionalProperties"], false, "{at}: input sets are closed");
            let nested = &info["nested"];
            assert_eq!(keys(&set["properties"]), keys(nested), "{at}: nested attributes");
            for (name, sub) in nested.as_object().unwrap() {
                check_input_attr(doc, &set["properties"][name], sub, &format!("{at}.{name}"));
            }
        }
        other => panic!("{at}: type {other} not covered by this test"),
    }
}

/// Compare the served schemas of `op` (mode `mode`) with nlspec.
fn compare_with_nlspec(gw: &Gateway, family: &str, spec: &str, op: &str, spec_op: &str, mode: &str) {
    let (status, body) = http(
        &gw.socket.display().to_string(),
        "GET",
        &format!("/v1/families/{family}/ops/{op}/schema"),
        &[],
        b"",
    );
    let served: Value = serde_json::from_slice(&body).expect("schema JSON");
    assert_eq!(status, 200, "{served}");
    let oracle = nlspec(spec, spec_op);
    let want = &oracle[mode];
    let input = &served["input"];
    assert_eq!(input["$schema"], "https://json-schema.org/draft/2020-12/schema");
    assert_eq!(input["additionalProperties"], false, "{op}: input is closed");
    assert_eq!(
        keys(&input["properties"]),
        keys(&want["request"]),
        "{op}: request attributes"
    );
    for (name, info) in want["request"].as_object().unwrap() {
        check_input_attr(input, &input["properties"][name], info, &format!("{op}.{name}"));
    }
    let output = &served["output"];
    let reply = if mode == "dump" { &output["items"] } else { output };
    assert_eq!(
        keys(&reply["properties"]),
        keys(&want["reply"]),
        "{op}: reply attributes"
    );
}

fn ynl_family(config: &TestConfig, family: &str, do_cmds: &[u8], dump_cmds: &[u8]) {
    config.family(
        &format!("{family}.toml"),
        &format!(
            "family = \"{family}\"\nplugin = \"{}\"\nspec = \"{family}\"\n[commands]\ndo = {do_cmds:?}\ndump = {dump_cmds:?}\n",
            common::plugin("ynl").display()
        ),
    );
}

#[test]
fn served_schemas_carry_the_specs_attributes_types_and_checks() {
    let ns = Netns::new("schema-spec");
    let config = TestConfig::new();
    config.netns(&ns);
    ynl_family(&config, "netdev", &[1], &[1]);
    ynl_family(&config, "ethtool", &[17], &[17]);
    let gw = Gateway::start(&config);

    compare_with_nlspec(&gw, "netdev", "netdev", "dev-get", "dev-get", "do");
    compare_with_nlspec(&gw, "netdev", "netdev", "dev-get-dump", "dev-get", "dump");
    compare_with_nlspec(&gw, "ethtool", "ethtool", "channels-get", "channels-get", "do");
    compare_with_nlspec(
        &gw,
        "ethtool",
        "ethtool",
        "channels-get-dump",
        "channels-get",
        "dump",
    );

    // The CLI shows the input fields a person would type.
    let out = gw.cli(&["op", "ethtool", "channels-get"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("input fields:"), "{text}");
    assert!(
        text.lines().any(|l| l.trim_start().starts_with("header  object")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("header.dev-name  string")),
        "{text}"
    );
    let out = gw.cli(&["op", "ethtool", "no-such-op"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("unknown-op"));
}

#[test]
fn bad_input_is_refused_by_the_host_before_the_plugin_runs() {
    let ns = Netns::new("schema-refuse");
    ns.ip_batch("link add ifb0 type ifb\n");
    let config = TestConfig::new();
    config.netns(&ns);
    ynl_family(&config, "ethtool", &[17], &[17]);
    let gw = Gateway::start(&config);
    let socket = gw.socket.display().to_string();
    let calls = || -> u64 {
        let (_, body) = http(&socket, "GET", "/metrics", &[], b"");
        let text = String::from_utf8_lossy(&body).into_owned();
        text.lines()
            .find(|l| l.starts_with("genl_gateway_plugin_call_duration_seconds_count{family=\"ethtool\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };

    let before = calls();
    for (input, field) in [
        (
            json!({"header": {"dev-name": "ifb0", "bogus": 1}}),
            "$.header.bogus",
        ),
        (json!({"header": {"dev-index": "one"}}), "$.header.dev-index"),
        (json!({"header": {"dev-index": -1}}), "$.header.dev-index"),
        (
            json!({"header": {"flags": ["no-such-flag"]}}),
            "$.header.flags[0]",
        ),
        (json!({"rx-count": 1}), "$.rx-count"),
    ] {
        let (status, body) = http(
            &socket,
            "POST",
            "/v1/families/ethtool/ops/channels-get",
            &[],
            input.to_string().as_bytes(),
        );
        let e: Value = serde_json::from_slice(&body).expect("error JSON");
        assert_eq!(status, 400, "{input}: {e}");
        assert_eq!(e["error"]["code"], "bad-input", "{e}");
        let message = e["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with(&format!("{field}:")), "{input}: {message}");
    }
    assert_eq!(calls(), before, "the plugin ran for input its schema refuses");

    // Good input reaches the plugin (and the kernel), so the counter works.
    let (ok, v) = gw.call("ethtool", "channels-get", r#"{"header": {"dev-name": "ifb0"}}"#);
    assert!(
        calls() > before,
        "a call the schema accepts did not reach the plugin: {ok} {v}"
    );
}

#[test]
fn the_openapi_document_is_valid_and_scoped() {
    const NETDEV_READER: &str = "netdev-reader-token-0001";
    let validator = std::env::var("GENL_OPENAPI_VENV")
        .unwrap_or_else(|_| "/usr/local/share/genl-gateway/openapi-venv".into());
    let python = PathBuf::from(validator).join("bin/python");
    assert!(
        python.is_file(),
        "{} is missing: scripts/setup.sh installs openapi-spec-validator",
        python.display()
    );
    let ns = Netns::new("schema-openapi");
    let config = TestConfig::new();
    config.netns(&ns);
    ynl_family(&config, "netdev", &[1], &[1]);
    ynl_family(&config, "ethtool", &[17], &[17]);
    config.family(
        "nlctrl.toml",
        &format!(
            "family = \"nlctrl\"\nplugin = \"{}\"\n[commands]\ndo = [3, 10]\ndump = [3, 10]\n",
            common::plugin("nlctrl").display()
        ),
    );
    let port = common::free_port();
    config.set(
        "api",
        &format!(
            "tcp = \"127.0.0.1:{port}\"\n[[api.tokens]]\nname = \"netdev-reader\"\ntoken = \"{NETDEV_READER}\"\nfamilies = [\"netdev\"]\naccess = \"read\""
        ),
    );
    let gw = Gateway::start(&config);

    // On TCP a scoped token sees its own families' operations only.
    let bearer = format!("Bearer {NETDEV_READER}");
    let (status, body) = http(
        &format!("127.0.0.1:{port}"),
        "GET",
        "/v1/openapi.json",
        &[("authorization", &bearer)],
        b"",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let scoped: Value = serde_json::from_slice(&body).expect("JSON");
    let families: Vec<&str> = scoped["paths"]
        .as_object()
        .expect("paths")
        .keys()
        .filter_map(|p| p.strip_prefix("/v1/families/"))
        .filter_map(|p| p.split('/').next())
        .filter(|f| !f.starts_with('{'))
        .collect();
    assert!(families.contains(&"netdev"), "{families:?}");
    assert!(families.iter().all(|f| *f == "netdev"), "{families:?}");

    let (status, body) = http(
        &gw.socket.display().to_string(),
        "GET",
        "/v1/openapi.json",
        &[],
        b"",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let doc: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/families/netdev/ops/dev-get",
        "/v1/families/ethtool/ops/channels-get-dump",
        "/v1/families/nlctrl/ops/list",
        "/v1/families/{family}/ops/{op}/schema",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    let file = config.dir.path().join("openapi.json");
    std::fs::write(&file, &body).expect("write");
    let out = std::process::Command::new(&python)
        .args([
            "-c",
            "import sys, json\nfrom openapi_spec_validator import validate\nvalidate(json.load(open(sys.argv[1])))\nprint('valid')",
        ])
        .arg(&file)
        .output()
        .expect("run the validator");
    assert!(
        out.status.success(),
        "openapi-spec-validator refused the document: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The gateway refuses a component built against `old` (a fixture built
/// by an older SDK) with one line naming both versions and the fix.
fn refused_with_one_clear_line(fixture: &str, old: &str) {
    let fixture = workspace().join("host/tests/fixtures").join(fixture);
    let config = TestConfig::new();
    config.family(
        "acpi_event.toml",
        &format!("family = \"acpi_event\"\nplugin = \"{}\"\n", fixture.display()),
    );
    let out = std::process::Command::new(common::binary())
        .args(["check", "--config"])
        .arg(config.path())
        .output()
        .expect("run check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{text}");
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("genl:gateway@")).collect();
    assert_eq!(lines.len(), 1, "{text}");
    let line = lines[0];
    for part in [
        &format!("built against genl:gateway@{old}"),
        "this gateway implements genl:gateway@0.3.1",
        "rebuild it with the current genl-plugin-sdk",
    ] {
        assert!(line.contains(part), "{line}");
    }
}

#[test]
fn a_component_built_against_0_1_0_is_refused_with_one_clear_line() {
    refused_with_one_clear_line("plugin-wit-0.1.0.wasm", "0.1.0");
}

#[test]
fn a_component_built_against_0_2_0_is_refused_with_one_clear_line() {
    // 0.2.0 collected a dump into one list; 0.3 streams it.
    refused_with_one_clear_line("plugin-wit-0.2.0.wasm", "0.2.0");
}
