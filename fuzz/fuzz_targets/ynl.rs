//! The YNL engine fed arbitrary input: kernel bytes decoded with every
//! attribute set and operation of the bundled specs (the first byte picks
//! the spec, the second the set), and arbitrary text loaded as a spec (and,
//! if it loads, described with every op's JSON Schemas). None may panic; a
//! malformed spec must be an error, not a crash; a decode that succeeds
//! must have written valid JSON.

#![no_main]

use std::sync::OnceLock;

use genl_plugin_sdk::ynl::Spec;
use libfuzzer_sys::fuzz_target;

const SPECS: &[&str] = &[
    include_str!("../../ynl-specs/netdev.yaml"),
    include_str!("../../ynl-specs/ethtool.yaml"),
    include_str!("../../ynl-specs/nlctrl.yaml"),
    include_str!("../../ynl-specs/ovs_flow.yaml"),
    include_str!("../../ynl-specs/nl80211.yaml"),
    include_str!("../../ynl-specs/devlink.yaml"),
    include_str!("../../ynl-specs/wireguard.yaml"),
    include_str!("../../ynl-specs/tcp_metrics.yaml"),
];

fn specs() -> &'static [Spec] {
    static LOADED: OnceLock<Vec<Spec>> = OnceLock::new();
    LOADED.get_or_init(|| SPECS.iter().filter_map(|t| Spec::load(t).ok()).collect())
}

fuzz_target!(|data: &[u8]| {
    let [which, set, rest @ ..] = data else { return };
    let specs = specs();
    let spec = &specs[usize::from(*which) % specs.len()];
    // Every set, including nests, sub-messages and structs it reaches.
    let mut names: Vec<String> = spec.ops.iter().filter_map(|o| o.attribute_set.clone()).collect();
    names.sort();
    names.dedup();
    if let Some(name) = names.get(usize::from(*set) % names.len().max(1)) {
        // The decoder writes JSON text itself: whatever it accepts must
        // come out as exactly one JSON value (decode_attrs parsing it
        // would only turn a writer bug into an error).
        let mut text = String::new();
        if spec.write_attrs(name, rest, &mut text).is_ok() {
            assert!(
                serde_json::from_str::<serde_json::Value>(&text).is_ok(),
                "the decoder wrote invalid JSON: {text}"
            );
        }
    }
    let service = genl_plugin_sdk::ynl::Service::new(spec.clone());
    if let Some(op) = spec.ops.get(usize::from(*set) % spec.ops.len().max(1)) {
        let mut text = String::new();
        if service.decode_text(op, rest, &mut text).is_ok() {
            assert!(
                serde_json::from_str::<serde_json::Value>(&text).is_ok(),
                "the decoder wrote invalid JSON: {text}"
            );
        }
        // Encoding arbitrary JSON must be refused cleanly, never panic.
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(rest)
            && let Some(set) = &op.attribute_set
        {
            let all: Vec<String> = spec.set(set).map(|s| s.attrs.iter().map(|a| a.name.clone()).collect()).unwrap_or_default();
            let _ = spec.encode_request(set, &all, op.fixed_header.as_deref(), &v);
        }
    }
    if let Ok(text) = std::str::from_utf8(rest)
        && let Ok(loaded) = Spec::load(text)
    {
        // Whatever loads must also give every op's input/output schema.
        let _ = genl_plugin_sdk::ynl::Service::new(loaded).describe();
    }
});
