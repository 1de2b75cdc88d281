//! The gateway: the configured families, their plugins and listeners, and
//! the kernel connection they share. The API reads it; reloads swap
//! families in and out of it.

mod listener;
mod loading;
mod reload;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockWriteGuard};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::broadcast;
use tokio::task::AbortHandle;

pub use listener::Listener;
pub use reload::{ReloadOutcome, ReloadResult, log_outcome};

use crate::config::{FamilyConfig, GatewayConfig};
use crate::families::FamilyResolver;
use crate::netlink::{Requester, SocketOptions};
use crate::plugin::{CallFailure, Event, LoadedPlugin, PluginMetrics, Runtime, RuntimeOptions};
use loading::LoadingSet;

/// Receive buffer limit of each request socket: it holds the replies to
/// one request at a time, so a few MiB is ample (memory is spent only as
/// replies queue up).
const REQUEST_RCVBUF: usize = 4 << 20;

/// Events published but not yet fanned out to subscribers: room for a
/// burst while the fan-out task waits for a thread. An event is dropped
/// from it as soon as the fan-out has taken it.
const EVENT_INTAKE: usize = 65_536;

/// How often the file watcher looks at the plugin and families directories.
const WATCH_INTERVAL: Duration = Duration::from_millis(500);

/// A configured family and what became of its plugin. Immutable: a reload
/// builds a new entry and swaps it in.
pub struct FamilyEntry {
    /// Its configuration.
    pub config: FamilyConfig,
    /// The plugin, or why it could not be loaded.
    pub plugin: Result<Arc<LoadedPlugin>, String>,
    /// Its listener socket (when the plugin loaded).
    pub listener: Option<Arc<Listener>>,
    dispatcher: Option<AbortHandle>,
    /// For a `spec = "kernel-policy"` family: the kernel's description of
    /// the family its spec was written from (`None`: it was absent), so a
    /// family that appears or re-registers gets a new spec.
    policy_source: Option<Arc<genl_wire::FamilyInfo>>,
}

impl Drop for FamilyEntry {
    fn drop(&mut self) {
        // Replaced or removed: stop delivering to this version and close
        // its socket (the dispatcher holds the listener and the plugin).
        if let Some(d) = &self.dispatcher {
            d.abort();
        }
        if let Some(l) = &self.listener {
            l.clear();
        }
    }
}

/// Why a client's call failed before or inside the plugin.
#[derive(Debug)]
pub enum CallError {
    /// No family file names this family; the configured family it most
    /// likely meant (another case), if any.
    UnknownFamily {
        /// The name asked for.
        family: String,
        /// A configured family spelt differently.
        did_you_mean: Option<String>,
    },
    /// The family is configured but the kernel does not have it.
    FamilyAbsent(String),
    /// The family's plugin is still being compiled and initialised (at
    /// start-up or in a reload); answered 503 `plugin-loading`.
    PluginLoading(String),
    /// The family's plugin could not be loaded.
    PluginFailed {
        /// The family.
        family: String,
        /// Why.
        reason: String,
    },
    /// The plugin did not answer.
    Call {
        /// The family.
        family: String,
        /// How.
        failure: CallFailure,
    },
}

/// The running gateway.
pub struct Gateway {
    /// Host configuration.
    pub config: GatewayConfig,
    /// Family resolution.
    pub resolver: Arc<FamilyResolver>,
    /// The wasm engine.
    pub runtime: Runtime,
    /// Events published by plugins.
    pub events: broadcast::Sender<Event>,
    /// Event subscribers cut off for falling behind.
    pub subscribers_cut_off: AtomicU64,
    /// Connections the API server refused or closed, per listener.
    pub api_connections: Arc<crate::api::ConnectionStats>,
    /// The fleet bus connection, with `[bus]`.
    pub bus: Option<Arc<crate::fleet::Bus>>,
    families: RwLock<BTreeMap<String, Arc<FamilyEntry>>>,
    broken_files: RwLock<BTreeMap<PathBuf, String>>,
    requester: Arc<Requester>,
    base: SocketOptions,
    /// One counter set per configured family, handed to each version of
    /// its plugin so a reload does not reset them.
    metrics: Mutex<HashMap<String, Arc<PluginMetrics>>>,
    /// Families whose plugin is loading now.
    loading: LoadingSet,
    /// One turn per family file: loads of the same file take turns, loads
    /// of different files never wait for each other.
    turns: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

impl Gateway {
    /// Connect to the kernel and start loading every family's plugin in
    /// the background: this returns once the kernel connection and the
    /// family watcher are up, so the API can answer at once; each family
    /// answers `plugin-loading` until its own plugin is ready. A family
    /// whose file or plugin is broken is reported (one log line) and
    /// skipped; the others load regardless.
    pub async fn start(config: GatewayConfig) -> anyhow::Result<Arc<Self>> {
        let netns = match &config.netns {
            Some(path) => Some(Arc::new(File::open(path).with_context(|| {
                format!(
                    "{}: netlink.netns: cannot open {} (does the namespace exist? `ip netns list`)",
                    config.path.display(),
                    path.display()
                )
            })?)),
            None => None,
        };
        let base = SocketOptions {
            netns,
            timeout: config.request_timeout,
            receive_buffer: REQUEST_RCVBUF,
            sink: None,
            request_sockets: config.request_sockets,
        };
        let requester = Requester::open(base.clone()).context("cannot open a generic netlink socket")?;
        let resolver = Arc::new(FamilyResolver::new(requester.clone()));
        let runtime = Runtime::new(&RuntimeOptions {
            fuel: config.fuel_metering,
            cache_dir: config.cache_dir.clone(),
            // Sized for the largest memory limit a family may set.
            max_memory_bytes: 4096 << 20,
        })?;
        // The intake of the API's per-family fan-out, which drains it at
        // once; subscribers' own queues are bounded by [api] event_backlog.
        let (events, _) = broadcast::channel(EVENT_INTAKE);
        let bus = match &config.bus {
            Some(b) => Some(crate::fleet::Bus::start(b.clone()).await?),
            None => None,
        };
        let gateway = Arc::new(Self {
            bus,
            config,
            resolver,
            runtime,
            events,
            subscribers_cut_off: AtomicU64::new(0),
            api_connections: Arc::default(),
            families: RwLock::default(),
            broken_files: RwLock::default(),
            requester,
            base,
            metrics: Mutex::default(),
            loading: LoadingSet::default(),
            turns: Mutex::default(),
        });
        // Before any plugin loads, so the bus sees every event from the first.
        if let Some(bus) = &gateway.bus
            && let Some(publisher) = crate::fleet::events::EventsPublisher::start(&gateway, bus)
        {
            bus.set_events(publisher);
        }
        // The watcher first, so a family appearing while plugins load is
        // seen; each load opens its family's listener when it swaps in.
        gateway.watch_families().await?;
        gateway.load_in_background();
        if gateway.config.watch {
            tokio::spawn(reload::watch_files(gateway.clone(), WATCH_INTERVAL));
        }
        Ok(gateway)
    }

    /// Join nlctrl's `notify` group and follow families coming and going.
    async fn watch_families(self: &Arc<Self>) -> anyhow::Result<()> {
        let nlctrl = self
            .resolver
            .resolve("nlctrl")
            .await
            .context("resolving nlctrl")?;
        let (watcher, rx) = Listener::new(
            "nlctrl (gateway)".into(),
            vec!["notify".into()],
            SocketOptions {
                receive_buffer: 1 << 20,
                ..self.base.clone()
            },
            1024,
        );
        watcher
            .rebuild(&nlctrl)
            .context("opening the family watcher socket")?;
        let gateway = self.clone();
        tokio::spawn(async move {
            // The watcher's socket lives as long as this task.
            let _watcher = watcher;
            watch::run(gateway, rx).await;
        });
        Ok(())
    }

    /// Every configured family, by name (a snapshot).
    pub fn families(&self) -> Vec<(String, Arc<FamilyEntry>)> {
        let map = self.families.read().unwrap_or_else(PoisonError::into_inner);
        map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    fn families_mut(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Arc<FamilyEntry>>> {
        self.families.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// One configured family.
    pub fn family(&self, name: &str) -> Option<Arc<FamilyEntry>> {
        self.families
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Families whose plugin is being loaded now (at start-up or in a
    /// reload), by name. A family reloading while its previous version
    /// serves is listed here and in [`Gateway::families`].
    pub fn loading(&self) -> Vec<String> {
        self.loading.names()
    }

    /// Wait until every plugin being loaded now is loaded or has failed
    /// (`genl-gateway check` reports only then).
    pub async fn until_loaded(&self) {
        self.loading.until_empty().await;
    }

    /// The counters of family `name`, created on first use and kept across
    /// reloads of its plugin.
    fn metrics_for(&self, name: &str) -> Arc<PluginMetrics> {
        self.metrics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Forget the counters of a family no file configures any more.
    fn drop_metrics(&self, name: &str) {
        self.metrics
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
    }

    /// The turn of family file `path`.
    fn turn(&self, path: &Path) -> Arc<tokio::sync::Mutex<()>> {
        self.turns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(path.to_owned())
            .or_default()
            .clone()
    }

    /// The listener of configured family `name`, if its plugin loaded.
    pub fn listener(&self, name: &str) -> Option<Arc<Listener>> {
        self.family(name)?.listener.clone()
    }

    /// Family files that could not be read, with why.
    pub fn broken_files(&self) -> BTreeMap<PathBuf, String> {
        self.broken_files
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn broken_files_mut(&self) -> RwLockWriteGuard<'_, BTreeMap<PathBuf, String>> {
        self.broken_files.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Count and log an event subscriber cut off after missing `missed` events.
    pub fn note_subscriber_cut_off(&self, family: &str, missed: u64) {
        self.subscribers_cut_off
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(family, missed, "an event subscriber fell behind and was cut off");
    }

    /// Call `op` of `family`'s plugin with the JSON `input`; the output as
    /// one document.
    pub async fn call(&self, family: &str, op: &str, input: &str) -> Result<String, CallError> {
        match self
            .call_with_output(family, op, input, crate::plugin::OutputSink::Collect)
            .await?
        {
            crate::plugin::CallOutput::Document(doc) => Ok(doc),
            crate::plugin::CallOutput::Streamed { .. } => Err(CallError::Call {
                family: family.to_owned(),
                failure: crate::plugin::CallFailure::Plugin {
                    code: "bad-plugin-output".into(),
                    message: "streamed output where one document was asked for".into(),
                    kernel: None,
                },
            }),
        }
    }

    /// The entry and plugin serving `family` now, or the error a call of
    /// it answers with (unknown, still loading, failed): one place for the
    /// HTTP API and bus calls alike.
    pub fn serving(&self, family: &str) -> Result<(Arc<FamilyEntry>, Arc<LoadedPlugin>), CallError> {
        let Some(entry) = self.family(family) else {
            return Err(if self.loading.contains(family) {
                CallError::PluginLoading(family.to_owned())
            } else {
                let names = self.families();
                CallError::UnknownFamily {
                    family: family.to_owned(),
                    did_you_mean: crate::hints::did_you_mean(family, names.iter().map(|(n, _)| n.as_str()))
                        .map(str::to_owned),
                }
            });
        };
        let plugin = entry.plugin.as_ref().cloned().map_err(|reason| {
            // A failed version being replaced: the new one is on its way.
            if self.loading.contains(family) {
                CallError::PluginLoading(family.to_owned())
            } else {
                CallError::PluginFailed {
                    family: family.to_owned(),
                    reason: reason.clone(),
                }
            }
        })?;
        Ok((entry, plugin))
    }

    /// Call `op` of `family`'s plugin with the JSON `input`, streamed items
    /// going to `sink` as the plugin sends them.
    pub async fn call_with_output(
        &self,
        family: &str,
        op: &str,
        input: &str,
        sink: crate::plugin::OutputSink,
    ) -> Result<crate::plugin::CallOutput, CallError> {
        let (_, plugin) = self.serving(family)?;
        if self.resolver.cached(family).is_none() {
            // The watcher normally knows; a call racing a family's arrival
            // asks the kernel once rather than fail.
            self.resolver
                .resolve(family)
                .await
                .map_err(|e| CallError::FamilyAbsent(e.to_string()))?;
        }
        plugin
            .call_with_output(op, input, sink)
            .await
            .map_err(|failure| CallError::Call {
                family: family.to_owned(),
                failure,
            })
    }
}
