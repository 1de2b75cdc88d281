//! The ethtool plugin: every command of the `ethtool` genl family, served
//! from the kernel's own spec (`ynl-specs/ethtool.yaml`) through the SDK's
//! YNL engine: no attribute or command table of its own.
//!
//! Operations: every spec operation as the `ynl` plugin names it (`NAME`
//! for a do, `NAME-dump` for a dump): `linkinfo-get`, `linkinfo-get-dump`,
//! `features-set`, `channels-set`, `rings-set`, `cable-test-act`,
//! `rss-get-dump`... The state-changing ones (`*-set`, `*-act`) reach the
//! kernel only if the family file's allowlist names their commands; the
//! bundled one allows only the GET commands.
//!
//! What the plugin adds to the spec:
//! - a shorthand for the request header: `{"dev-name": "eth0"}` (or
//!   `"dev-index"`) is taken as `{"header": {"dev-name": "eth0"}}` by any
//!   operation whose request carries a header; every other key must be the
//!   spec's, and an unknown one is refused by name, never sent;
//! - the dump names it has always offered: `linkinfo-dump`,
//!   `linkmodes-dump`, `linkstate-dump`, `features-dump`, `rings-dump`,
//!   `channels-dump` (each the `X-get-dump` of the spec).
//!
//! Events: each spec notification under its own name (`features-ntf`...),
//! and all of them on topic `monitor` as `{"kind": "features", "cmd": N,
//! "data": {...}}` (the kind is the notification's name without `-ntf`).

use genl_plugin_sdk::prelude::*;
use genl_plugin_sdk::ynl::{ClientOp, Service, Spec};
use serde_json::Map;

/// The kernel's ethtool spec (SPDX line kept in the file).
const SPEC: &str = include_str!("../../../ynl-specs/ethtool.yaml");

/// The dump names offered before the plugin moved onto the spec, and the
/// spec operation each one is the dump of.
const SHORT_DUMPS: &[(&str, &str)] = &[
    ("linkinfo-dump", "linkinfo-get-dump"),
    ("linkmodes-dump", "linkmodes-get-dump"),
    ("linkstate-dump", "linkstate-get-dump"),
    ("features-dump", "features-get-dump"),
    ("rings-dump", "rings-get-dump"),
    ("channels-dump", "channels-get-dump"),
];

/// The request header's members a client may give at the top level.
const DEVICE_KEYS: [&str; 2] = ["dev-name", "dev-index"];

/// Serves the ethtool family.
pub struct Ethtool {
    service: Service,
}

/// Whether a spec operation only reads: its name says `get`, as every
/// ETHTOOL_MSG_*_GET (and PLCA_GET_CFG/STATUS) does.
fn reads(spec_op: &str) -> bool {
    spec_op.split('-').any(|w| w == "get")
}

/// `{"dev-name": .., "rx-count": ..}` becomes `{"header": {"dev-name": ..},
/// "rx-count": ..}` for an operation whose request has a header; input that
/// already has a header, or names no device, is left for the spec to judge.
fn with_header(op: &ClientOp<'_>, input: Value) -> Value {
    let Value::Object(mut map) = input else {
        return input;
    };
    let takes_header = op.request_attrs().iter().any(|a| a == "header");
    if !takes_header || map.contains_key("header") {
        return Value::Object(map);
    }
    let mut header = Map::new();
    for key in DEVICE_KEYS {
        if let Some(v) = map.remove(key) {
            header.insert(key.to_owned(), v);
        }
    }
    if !header.is_empty() {
        map.insert("header".to_owned(), Value::Object(header));
    }
    Value::Object(map)
}

/// An op's input schema with the top-level `dev-name`/`dev-index`
/// shorthand for its request header added.
fn with_shorthand(schema: &str) -> String {
    let Ok(mut v) = serde_json::from_str::<Value>(schema) else {
        return schema.to_owned();
    };
    if let Some(props) = v.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert(
            "dev-name".into(),
            serde_json::json!({"type": "string", "description": "the device, for header.dev-name"}),
        );
        props.insert(
            "dev-index".into(),
            serde_json::json!({"type": "integer", "minimum": 0, "maximum": u32::MAX, "description": "the device, for header.dev-index"}),
        );
    }
    v.to_string()
}

impl Plugin for Ethtool {
    fn init(_config: Config) -> Result<Self, String> {
        let spec = Spec::load(SPEC).map_err(|e| format!("the bundled ethtool spec: {e}"))?;
        Ok(Ethtool {
            service: Service::new(spec),
        })
    }

    fn describe(&self) -> PluginDescription {
        let mut d = self.service.describe().version(env!("CARGO_PKG_VERSION"));
        // The service guesses from the name's ending; ethtool's PLCA reads
        // are `plca-get-cfg` and `plca-get-status`.
        for op in &mut d.ops {
            if let Some(client) = self.service.client_op(&op.name) {
                op.writes = !reads(&client.op.name);
                // `call` also takes the device shorthand (see
                // `with_header`): the published schema must accept it too,
                // or the gateway refuses it before the plugin sees it.
                if client.request_attrs().iter().any(|a| a == "header") {
                    op.input_schema = op.input_schema.take().map(|s| with_shorthand(&s));
                }
            }
        }
        for (short, spec) in SHORT_DUMPS {
            d = d.op(short, &format!("{spec}, by its shorter name"), false);
        }
        d.topic("monitor")
    }

    fn call(&mut self, op: &str, input: Value) -> Result<Value, CallError> {
        let name = SHORT_DUMPS
            .iter()
            .find(|(short, _)| *short == op)
            .map_or(op, |(_, spec)| spec);
        let client = self
            .service
            .client_op(name)
            .ok_or_else(|| CallError::unknown_op(op))?;
        let input = with_header(&client, input);
        self.service.serve(name, &input)
    }

    fn on_notification(&mut self, _group: &str, message: Message) {
        let Some((name, decoded)) = self.service.notification(&message) else {
            log::debug(&format!("ignoring ethtool notification {}", message.cmd));
            return;
        };
        match decoded {
            Ok(data) => {
                let kind = name.strip_suffix("-ntf").unwrap_or(&name);
                events::publish(
                    "monitor",
                    &json!({"kind": kind, "cmd": message.cmd, "data": data}),
                );
                events::publish(&name, &data);
            }
            Err(e) => log::warn(&format!("malformed ethtool {name}: {}", e.message)),
        }
    }
}

export_plugin!(Ethtool);

#[cfg(test)]
mod tests;
