//! The netdev plugin: network devices' XDP features, queues, NAPI
//! instances, page pools and queue statistics (`netdev` genl family),
//! served from the kernel's own spec (`ynl-specs/netdev.yaml`) through the
//! SDK's YNL engine: no attribute table of its own.
//!
//! Operations: every spec operation as the `ynl` plugin names it (`NAME`
//! for a do, `NAME-dump` for a dump: `dev-get`, `dev-get-dump`,
//! `queue-get`, `queue-get-dump`, `napi-get`, `napi-get-dump`,
//! `page-pool-get`, `page-pool-get-dump`, `page-pool-stats-get`,
//! `page-pool-stats-get-dump`, `qstats-get-dump`, `bind-rx`, `bind-tx`,
//! `napi-set`, `queue-create`...), plus the shorter dump names this plugin
//! has always offered: `dev-dump`, `queue-dump`, `napi-dump`,
//! `page-pool-dump`, `qstats-dump` (each the `X-get-dump` of the spec).
//!
//! Events: each spec notification under its own name (`dev-add-ntf`...);
//! topic `dev` (`{"action": "added"|"deleted"|"changed", "dev": {...}}`)
//! from the `mgmt` group and `page-pool` from the `page-pool` group; and
//! topic `resync` with a fresh device count after notifications were lost.

use genl_plugin_sdk::prelude::*;
use genl_plugin_sdk::ynl::{Service, Spec};

/// The kernel's netdev spec (SPDX line kept in the file).
const SPEC: &str = include_str!("../../../ynl-specs/netdev.yaml");

/// The dump names offered before the plugin moved onto the spec, and the
/// spec operation each one is the dump of.
const SHORT_DUMPS: &[(&str, &str)] = &[
    ("dev-dump", "dev-get-dump"),
    ("queue-dump", "queue-get-dump"),
    ("napi-dump", "napi-get-dump"),
    ("page-pool-dump", "page-pool-get-dump"),
    ("qstats-dump", "qstats-get-dump"),
];

/// Spec notifications republished under the plugin's older topics:
/// (spec operation, topic, action).
const CHANGE_TOPICS: &[(&str, &str, &str)] = &[
    ("dev-add-ntf", "dev", "added"),
    ("dev-del-ntf", "dev", "deleted"),
    ("dev-change-ntf", "dev", "changed"),
    ("page-pool-add-ntf", "page-pool", "added"),
    ("page-pool-del-ntf", "page-pool", "deleted"),
    ("page-pool-change-ntf", "page-pool", "changed"),
];

/// Serves the netdev family.
pub struct Netdev {
    service: Service,
}

impl Netdev {
    /// The spec operation a client's `op` names.
    fn spec_op(op: &str) -> &str {
        SHORT_DUMPS
            .iter()
            .find(|(short, _)| *short == op)
            .map_or(op, |(_, spec)| spec)
    }
}

impl Plugin for Netdev {
    fn init(_config: Config) -> Result<Self, String> {
        let spec = Spec::load(SPEC).map_err(|e| format!("the bundled netdev spec: {e}"))?;
        Ok(Netdev {
            service: Service::new(spec),
        })
    }

    fn describe(&self) -> PluginDescription {
        let mut d = self.service.describe().version(env!("CARGO_PKG_VERSION"));
        for (short, spec) in SHORT_DUMPS {
            d = d.op(short, &format!("{spec}, by its shorter name"), false);
        }
        d.topic("dev").topic("page-pool").topic("resync")
    }

    fn call(&mut self, op: &str, input: Value) -> Result<Value, CallError> {
        self.service.serve(Self::spec_op(op), &input)
    }

    fn on_notification(&mut self, _group: &str, message: Message) {
        let Some((name, decoded)) = self.service.notification(&message) else {
            log::debug(&format!("ignoring netdev notification {}", message.cmd));
            return;
        };
        let payload = match decoded {
            Ok(v) => v,
            Err(e) => {
                log::warn(&format!("malformed netdev {name}: {}", e.message));
                return;
            }
        };
        if let Some((_, topic, action)) = CHANGE_TOPICS.iter().find(|(n, ..)| *n == name) {
            events::publish(topic, &json!({"action": action, *topic: payload}));
        }
        events::publish(&name, &payload);
    }

    fn on_events_lost(&mut self) {
        // Subscribers cannot trust an incremental view any more: tell them,
        // with the device count from a fresh dump so they can re-read.
        let devices = self
            .service
            .call("dev-get-dump", &Value::Null)
            .map(|v| v.as_array().map_or(0, Vec::len))
            .ok();
        log::warn("netdev notifications were lost; published a resync event");
        events::publish(
            "resync",
            &json!({"reason": "notifications lost", "devices": devices}),
        );
    }
}

export_plugin!(Netdev);

#[cfg(test)]
mod tests;
