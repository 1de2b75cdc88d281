//! The one wasmtime engine of the process and the linker every plugin is
//! instantiated with.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use super::bindings::Plugin;
use super::host_api::PluginState;

/// How often the engine's epoch advances; call deadlines are counted in
/// these ticks.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Why a plugin could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The `.wasm` file is not there.
    #[error(
        "plugin file {0} does not exist (build the plugins with scripts/build-plugins.sh, or fix `plugin` in the family file)"
    )]
    Missing(String),
    /// The file is not a valid component or does not match the contract.
    #[error("plugin {path} is not a usable genl:gateway@0.1.0 component: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// wasmtime's explanation.
        reason: String,
    },
    /// Instantiation or a call trapped (crash, deadline, memory limit).
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The plugin's `init` refused its configuration.
    #[error("plugin init failed: {0}")]
    Init(String),
    /// The engine could not be set up.
    #[error("wasm engine: {0}")]
    Engine(String),
}

/// The engine and linker shared by all plugins.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<PluginState>>,
}

impl Runtime {
    /// Build the engine and start its epoch ticker.
    pub fn new() -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Epoch interruption bounds each call's wall time at a cost of a
        // load and compare per loop back-edge, far cheaper than fuel.
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| PluginError::Engine(e.to_string()))?;
        Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| PluginError::Engine(e.to_string()))?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .map_err(|e| PluginError::Engine(format!("epoch ticker thread: {e}")))?;
        Ok(Self {
            engine,
            linker: Arc::new(linker),
        })
    }

    /// Compile a component from `path`.
    pub fn compile(&self, path: &Path) -> Result<Component, PluginError> {
        if !path.is_file() {
            return Err(PluginError::Missing(path.display().to_string()));
        }
        Component::from_file(&self.engine, path).map_err(|e| PluginError::Invalid {
            path: path.display().to_string(),
            reason: format!("{e:#}"),
        })
    }
}
