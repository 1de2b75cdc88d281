//! Plugins: WebAssembly components compiled and run by wasmtime, one per
//! configured family, each in its own store with its own limits.

mod budget;
mod host_api;
mod input_schema;
mod instance;
pub(crate) mod json_check;
mod log_limit;
mod metrics;
mod output;
mod phase;
mod pool;
mod runtime;
mod stdio;

pub use host_api::{Event, KernelAccess, MAX_TOPIC};
pub use input_schema::{InputSchema, Refusal, SchemaError};
pub use instance::{CallFailure, Delivery, Description, LoadedPlugin, OpDescription, PluginStatus, PoolView};
pub use log_limit::one_line;
pub use metrics::{LATENCY_BUCKETS, PluginMetrics};
pub use output::{CallOutput, OutputFormat, OutputSink};
pub use phase::PluginPhase;
pub use pool::PoolCounts;
pub use runtime::{PluginError, Runtime, RuntimeOptions, WIT_PACKAGE};

/// Bindings generated from `wit/gateway.wit`.
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "genl:gateway/plugin",
        imports: { default: async },
        exports: { default: async },
        with: { "genl:gateway/kernel.dump": crate::netlink::DumpParts },
    });
}
