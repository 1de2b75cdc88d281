//! Serves any generic netlink family from its YNL spec: the family file
//! names a bundled spec (`spec = "netdev"`) or the operator's own (`spec =
//! "specs/mine.yaml"`, which the gateway reads and passes as `spec-yaml`).
//! Operations, their inputs and outputs, and event topics all come from
//! the spec; this crate has no family knowledge of its own.

mod fallback;

use genl_plugin_sdk::prelude::*;
use genl_plugin_sdk::ynl::{Service, Spec, bundled};

/// The plugin: one [`Service`].
pub struct Ynl {
    service: Service,
    /// The host wrote the spec from the kernel's policy
    /// (`spec-origin = "kernel-policy"`).
    fallback: bool,
}

impl Ynl {
    fn spec_text(config: &Config) -> Result<&str, String> {
        if let Some(text) = config.get("spec-yaml").map(String::as_str) {
            return Ok(text);
        }
        let name = config.get("spec").ok_or_else(|| {
            "set `spec` in the family file: a bundled spec's name (e.g. \"netdev\") or a path to a .yaml"
                .to_owned()
        })?;
        bundled::text(name).ok_or_else(|| {
            format!(
                "no bundled spec named '{name}'; bundled: {}",
                bundled::names().collect::<Vec<_>>().join(", ")
            )
        })
    }
}

impl Plugin for Ynl {
    fn init(config: Config) -> Result<Self, String> {
        let spec = Spec::load(Self::spec_text(&config)?).map_err(|e| e.to_string())?;
        Ok(Self {
            service: Service::new(spec),
            fallback: config.get("spec-origin").map(String::as_str) == Some("kernel-policy"),
        })
    }

    fn describe(&self) -> PluginDescription {
        let d = self.service.describe();
        if self.fallback { fallback::describe(d) } else { d }
    }

    fn call(&mut self, op: &str, input: Value) -> Result<Value, CallError> {
        if self.fallback {
            fallback::call(&self.service, op, &input)
        } else {
            self.service.serve(op, &input)
        }
    }

    fn on_notification(&mut self, _group: &str, message: Message) {
        match self.service.notification(&message) {
            Some((topic, Ok(payload))) => events::publish(&topic, &payload),
            Some((topic, Err(e))) => log::warn(&format!("notification {topic} not decoded: {}", e.message)),
            None => log::debug(&format!(
                "command {} is no notification in the spec; ignored",
                message.cmd
            )),
        }
    }

    fn on_events_lost(&mut self) {
        events::publish("events-lost", &json!({"lost": true}));
    }
}

export_plugin!(Ynl);
