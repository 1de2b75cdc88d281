//! The one wasmtime engine of the process, the linker every plugin is
//! instantiated with, and the on-disk cache of compiled components.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::bindings::Plugin;
use super::budget::{MAX_INSTANCES, MAX_MEMORIES, MAX_TABLES};
use super::host_api::PluginState;

/// How often the engine's epoch advances. At each tick running wasm checks
/// its wall-clock deadline and yields to the executor, so this is also the
/// longest a busy plugin holds a worker thread at a stretch.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Pool slots every family may count on: enough for [`POOL_PLUGIN_INSTANCES`]
/// plugin instances at their per-component caps. A family's first instance
/// (the one that also takes notifications) and a reload's candidate come
/// from here, two per family, as before plugins had several instances.
const POOL_PLUGIN_INSTANCES: u32 = 64;

/// Slots for a family's further instances (`limits.instances` above 1),
/// shared by all families and taken as concurrent calls need them. One
/// family holds at most [`MAX_EXTRA_PER_FAMILY`] of them, so one busy or
/// hostile family cannot take the slots every other family reloads from
/// or grows into; a family that finds none serves with the instances it has.
pub const EXTRA_PLUGIN_INSTANCES: u32 = 64;

/// Most extra slots one family may hold.
pub const MAX_EXTRA_PER_FAMILY: usize = (EXTRA_PLUGIN_INSTANCES / 4) as usize;

/// The contract this host implements (`wit/gateway.wit`'s package).
pub const WIT_PACKAGE: &str = "genl:gateway@0.3.1";

/// The contracts whose plugins this host loads: its own and the earlier
/// ones of the same minor version, whose imports are a subset of its own
/// (wasmtime's linker matches 0.3.0 imports to the 0.3.1 definitions).
pub const WIT_PACKAGES_LOADED: [&str; 2] = ["genl:gateway@0.3.0", WIT_PACKAGE];

/// Why a plugin could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The `.wasm` file is not there.
    #[error(
        "plugin file {0} does not exist (build the plugins with scripts/build-plugins.sh, or fix `plugin` in the family file)"
    )]
    Missing(String),
    /// The file could not be read.
    #[error("reading plugin {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The file is not a valid component or does not match the contract.
    #[error("plugin {path} is not a usable {WIT_PACKAGE} component: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// wasmtime's explanation.
        reason: String,
    },
    /// The component was built against another version of the contract.
    #[error(
        "plugin {path} was built against {found} but this gateway implements {WIT_PACKAGE}; rebuild it with the current genl-plugin-sdk (scripts/build-plugins.sh)"
    )]
    WitVersion {
        /// The file.
        path: String,
        /// The package version it imports, e.g. `genl:gateway@0.1.0`.
        found: String,
    },
    /// Instantiation or a call trapped (crash, deadline, memory limit).
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The plugin's `init` refused its configuration.
    #[error("plugin init failed: {0}")]
    Init(String),
    /// The plugin's `describe` breaks the bounds of a description.
    #[error("{0}")]
    Description(String),
    /// The engine could not be set up.
    #[error("wasm engine: {0}")]
    Engine(String),
}

/// Engine-wide settings, from `gateway.toml`.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// Count fuel in every plugin (needed for per-family `fuel`).
    pub fuel: bool,
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Largest memory any plugin may have, for sizing the pooling allocator.
    pub max_memory_bytes: usize,
}

/// Counters of the compiled-component cache.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Components compiled from wasm.
    pub compiled: AtomicU64,
    /// Components loaded from the cache without compiling.
    pub hits: AtomicU64,
}

/// A compiled component and where it came from.
pub struct Compiled {
    /// The component.
    pub component: Component,
    /// SHA-256 of the `.wasm`, hex.
    pub sha256: String,
    /// Whether it came from the cache.
    pub cached: bool,
}

/// The engine and linker shared by all plugins.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<PluginState>>,
    /// Whether fuel is counted.
    pub fuel: bool,
    /// Whether the pooling allocator is in use.
    pub pooling: bool,
    cache_dir: Option<PathBuf>,
    engine_hash: String,
    /// Cache counters.
    pub cache: CacheStats,
    /// Reservations of the extra instance slots ([`EXTRA_PLUGIN_INSTANCES`]).
    pub(crate) extra_instances: Arc<tokio::sync::Semaphore>,
}

fn engine_config(opts: &RuntimeOptions, pooling: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    // Epoch interruption bounds each call's wall time at the cost of a load
    // and compare per loop back-edge, far cheaper than fuel.
    config.epoch_interruption(true);
    config.consume_fuel(opts.fuel);
    // For `perf`: name the plugins' compiled functions in /tmp/perf-PID.map.
    if std::env::var_os("GENL_GATEWAY_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    if pooling {
        // Slots for a few dozen plugins; each memory slot reserves address
        // space (not memory) up to the largest plugin memory limit.
        // Each component is capped (memories, tables, core instances), so a
        // hostile plugin with hundreds of memories fails to instantiate
        // instead of draining the pool every other family reloads from.
        let (memories, tables, instances) = (
            u32::try_from(MAX_MEMORIES).unwrap_or(u32::MAX),
            u32::try_from(MAX_TABLES).unwrap_or(u32::MAX),
            u32::try_from(MAX_INSTANCES).unwrap_or(u32::MAX),
        );
        let mut pool = PoolingAllocationConfig::default();
        let plugin_instances = POOL_PLUGIN_INSTANCES + EXTRA_PLUGIN_INSTANCES;
        pool.total_component_instances(plugin_instances * 4)
            .total_core_instances(plugin_instances * instances)
            .total_memories(plugin_instances * memories)
            .total_tables(plugin_instances * tables)
            .max_memories_per_component(memories)
            .max_tables_per_component(tables)
            // The pool's per-module defaults (one memory, one table) would
            // refuse a multi-memory module the on-demand allocator and the
            // store's budget accept; the caps are per component, the same
            // under either allocator.
            .max_memories_per_module(memories)
            .max_tables_per_module(tables)
            .max_core_instances_per_component(instances)
            .max_memory_size(opts.max_memory_bytes.max(1 << 20));
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

impl Runtime {
    /// Build the engine (pooling allocator if the machine allows it) and
    /// start its epoch ticker.
    pub fn new(opts: &RuntimeOptions) -> Result<Self, PluginError> {
        let (engine, pooling) = match Engine::new(&engine_config(opts, true)) {
            Ok(e) => (e, true),
            Err(e) => {
                tracing::info!("pooling allocator unavailable ({e:#}); using on-demand allocation");
                let e = Engine::new(&engine_config(opts, false))
                    .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
                (e, false)
            }
        };
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

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = format!("{:016x}", hasher.finish());
        let cache_dir = opts
            .cache_dir
            .as_ref()
            .and_then(|dir| match prepare_cache_dir(dir) {
                Ok(()) => Some(dir.clone()),
                Err(why) => {
                    tracing::warn!(dir = %dir.display(), "compiled-component cache disabled: {why}");
                    None
                }
            });
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            fuel: opts.fuel,
            pooling,
            cache_dir,
            engine_hash,
            cache: CacheStats::default(),
            extra_instances: Arc::new(tokio::sync::Semaphore::new(EXTRA_PLUGIN_INSTANCES as usize)),
        })
    }

    /// Compile the component at `path`, or load it from the cache when the
    /// same bytes were compiled by a compatible engine before.
    pub fn compile(&self, path: &Path) -> Result<Compiled, PluginError> {
        if !path.is_file() {
            return Err(PluginError::Missing(path.display().to_string()));
        }
        let bytes = std::fs::read(path).map_err(|e| PluginError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let sha256 = format!("{:x}", Sha256::digest(&bytes));
        let cache_file = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{sha256}-{}.cwasm", self.engine_hash)));
        let usable = |f: &PathBuf| match std::fs::symlink_metadata(f) {
            Ok(meta) => match untrusted(&meta, false) {
                None => true,
                Some(why) => {
                    tracing::warn!(file = %f.display(), "ignoring a cache entry that is not the gateway's own: {why}");
                    false
                }
            },
            Err(_) => false,
        };
        if let Some(file) = cache_file.as_ref().filter(|f| usable(f)) {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same compatibility hash (it is in the name),
            // into a cache directory only the gateway (root or its own uid)
            // can write, checked at start-up; the file itself was just
            // checked to be a regular file of that owner that nobody else
            // can write. A file that does not deserialise is recompiled.
            match unsafe { Component::deserialize_file(&self.engine, file) } {
                Ok(component) => {
                    self.cache.hits.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(plugin = %path.display(), "loaded from the compiled cache (no compilation)");
                    return Ok(Compiled {
                        component,
                        sha256,
                        cached: true,
                    });
                }
                Err(e) => tracing::warn!(file = %file.display(), "ignoring unusable cache entry: {e:#}"),
            }
        }
        let component = Component::new(&self.engine, &bytes).map_err(|e| PluginError::Invalid {
            path: path.display().to_string(),
            reason: format!("{e:#}"),
        })?;
        self.cache.compiled.fetch_add(1, Ordering::Relaxed);
        tracing::info!(plugin = %path.display(), "compiled");
        if let Some(file) = cache_file {
            // Write then rename, so a concurrent reader never sees half a file.
            let tmp = file.with_extension("tmp");
            let written = component
                .serialize()
                .map_err(|e| e.to_string())
                .and_then(|b| write_private(&tmp, &b).map_err(|e| e.to_string()))
                .and_then(|()| std::fs::rename(&tmp, &file).map_err(|e| e.to_string()));
            if let Err(e) = written {
                tracing::warn!(file = %file.display(), "could not cache the compiled component: {e}");
            }
        }
        Ok(Compiled {
            component,
            sha256,
            cached: false,
        })
    }
}

/// Write `bytes` to a new file only its owner can read or write.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// Why a cache directory or file cannot be trusted with machine code, if
/// it cannot: it must be a real directory or regular file (no symlink),
/// owned by root or the gateway's user, writable by nobody else.
fn untrusted(meta: &std::fs::Metadata, dir: bool) -> Option<String> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let kind_ok = if dir { meta.is_dir() } else { meta.is_file() };
    if !kind_ok {
        return Some(format!(
            "not a {} (a symlink or another kind of file)",
            if dir { "directory" } else { "regular file" }
        ));
    }
    if meta.uid() != 0 && meta.uid() != euid {
        return Some(format!(
            "owned by uid {}, neither root nor the gateway's uid {euid}; chown it",
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Some(format!(
            "writable by group or others (mode {:o}); chmod go-w it",
            mode & 0o7777
        ));
    }
    None
}

/// Create the cache directory (mode 0700) if needed and check that only
/// the gateway can write it: whoever writes it chooses the machine code
/// the gateway runs.
fn prepare_cache_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create it: {e}"))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    match untrusted(&meta, true) {
        None => Ok(()),
        Some(why) => Err(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_cache_dir_others_can_write_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cache");
        prepare_cache_dir(&dir).unwrap();
        // Independent of the code under test: the mode as stat(2) reports it.
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare_cache_dir(&dir).unwrap_err();
        assert!(e.contains("writable by group or others"), "{e}");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = prepare_cache_dir(&link).unwrap_err();
        assert!(e.contains("symlink"), "{e}");
        // Owned by another user (nobody, uid 65534).
        std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
        let e = prepare_cache_dir(&dir).unwrap_err();
        assert!(e.contains("uid 65534"), "{e}");
    }
}
