//! The SDK for genl-gateway plugins.
//!
//! A plugin serves one generic netlink family. It implements [`Plugin`],
//! exports itself with [`export_plugin!`], and uses [`kernel`], [`log`] and
//! [`events`] to reach the host. Attributes are read with [`Attrs`] and
//! written with [`AttrWriter`], both re-exported from the wire crate the host
//! itself uses.
//!
//! The same plugin crate compiles for `wasm32-wasip2` (the component the
//! gateway loads) and for the host target, where [`testing`] stands in for
//! the gateway so the plugin's logic runs under plain `cargo test`.
//!
//! ```
//! use genl_plugin_sdk::prelude::*;
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn init(_config: Config) -> Result<Self, String> { Ok(Hello) }
//!     fn describe(&self) -> PluginDescription {
//!         PluginDescription::new("nlctrl").op("hello", "Say hello", false)
//!     }
//!     fn call(&mut self, op: &str, _input: Value) -> Result<Value, CallError> {
//!         match op {
//!             "hello" => Ok(json!({"hello": "world"})),
//!             _ => Err(CallError::unknown_op(op)),
//!         }
//!     }
//! }
//!
//! export_plugin!(Hello);
//! ```

// Lets `attr_set!` name the SDK the same way inside it as in plugins.
extern crate self as genl_plugin_sdk;

pub mod events;
mod hex;
pub mod input;
pub mod kernel;
pub mod log;
pub mod ops;
pub mod output;
pub mod schema;
pub mod typed;
mod types;
#[cfg(not(target_arch = "wasm32"))]
pub mod uapi;
pub mod ynl;

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod wasm;

pub use genl_wire::{self as wire, Attr, AttrWriter, Attrs, FamilyInfo, KernelError, McastGroup, OpInfo};
/// The serde the SDK's types implement, for generic helpers without a
/// dependency of their own.
pub use serde;
/// The JSON values plugins receive and return.
pub use serde_json;
pub use types::{CallError, Config, Level, Message, OpDescription, PluginDescription, RequestError};

/// What a plugin implements. Only [`Plugin::init`], [`Plugin::describe`] and
/// [`Plugin::call`] are required; notifications are ignored by default.
pub trait Plugin: Sized + 'static {
    /// Build the plugin from the `[config]` table of its family file. An
    /// error is shown to the operator and the plugin does not serve.
    fn init(config: Config) -> Result<Self, String>;

    /// The operations and event topics the plugin offers.
    fn describe(&self) -> PluginDescription;

    /// Serve a client's call of `op` with its JSON input.
    fn call(&mut self, op: &str, input: serde_json::Value) -> Result<serde_json::Value, CallError>;

    /// A kernel notification: a multicast message of `group`, or a unicast
    /// one when `group` is empty.
    fn on_notification(&mut self, group: &str, message: Message) {
        let _ = (group, message);
    }

    /// Notifications were lost (socket overrun or full queue); resynchronise.
    fn on_events_lost(&mut self) {
        log::warn("notifications were lost");
    }
}

/// Everything a plugin usually needs, in one import.
pub mod prelude {
    pub use crate::{
        Attr, AttrWriter, Attrs, CallError, Config, FamilyInfo, Level, Message, OpDescription, Plugin,
        PluginDescription, RequestError, events, export_plugin, kernel, log,
    };
    pub use serde_json::{Value, json};
}

/// Export a type that implements [`Plugin`] as the component's entry points.
/// On non-wasm targets this expands to nothing, so the crate also builds
/// natively for its unit tests.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type GenlGatewayPluginExport = $crate::wasm::Export<$plugin>;
    $crate::wasm::bindings::export!(GenlGatewayPluginExport with_types_in $crate::wasm::bindings);
        };
    };
}
