//! The gateway: the configured families, their plugins and listeners, and
//! the kernel connection they share. Built once by `serve`; the API reads it.

mod listener;
mod watch;

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::broadcast;

pub use listener::Listener;

use crate::config::{FamilyConfig, GatewayConfig};
use crate::families::{FamilyResolver, ResolveError};
use crate::netlink::{Requester, SocketOptions};
use crate::plugin::{CallFailure, Event, KernelAccess, LoadedPlugin, Runtime};

/// How many unread events a subscriber may lag before it loses some.
const EVENT_BACKLOG: usize = 4096;

/// Receive buffer of the shared request socket: replies to one request at
/// a time per dump, so a few MiB is ample.
const REQUEST_RCVBUF: usize = 4 << 20;

/// A configured family and what became of its plugin.
pub struct FamilyEntry {
    /// Its configuration.
    pub config: FamilyConfig,
    /// The plugin, or why it could not be loaded.
    pub plugin: Result<Arc<LoadedPlugin>, String>,
    /// Its listener socket (when the plugin loaded).
    pub listener: Option<Arc<Listener>>,
}

/// Why a client's call failed before or inside the plugin.
#[derive(Debug)]
pub enum CallError {
    /// No family file names this family.
    UnknownFamily(String),
    /// The family is configured but the kernel does not have it.
    FamilyAbsent(String),
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
    /// Configured families by name.
    pub families: BTreeMap<String, FamilyEntry>,
    /// Family files that could not be read, with why.
    pub broken_files: Vec<String>,
    /// Events published by plugins.
    pub events: broadcast::Sender<Event>,
    /// Event subscribers cut off for falling behind.
    pub subscribers_cut_off: std::sync::atomic::AtomicU64,
}

impl Gateway {
    /// Connect to the kernel and load every family's plugin. A family whose
    /// file or plugin is broken is reported (one log line) and skipped; the
    /// others load regardless.
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
        };
        let requester = Requester::open(base.clone()).context("cannot open a generic netlink socket")?;
        let resolver = Arc::new(FamilyResolver::new(requester.clone()));
        let runtime = Runtime::new()?;
        let (events, _) = broadcast::channel(EVENT_BACKLOG);

        let mut families = BTreeMap::new();
        let mut broken_files = Vec::new();
        let mut dispatchers = Vec::new();
        for family in config.load_families()? {
            let family = match family {
                Ok(f) => f,
                Err(e) => {
                    tracing::error!("{e}; this family is skipped");
                    broken_files.push(e.to_string());
                    continue;
                }
            };
            match resolver.resolve(&family.family).await {
                Ok(info) => tracing::info!(family = %family.family, id = info.id, "family resolved"),
                Err(e @ ResolveError::Absent(_)) => {
                    tracing::warn!(
                        "{}: {e}; calls to it fail until it appears",
                        family.path.display()
                    );
                }
                Err(e) => tracing::warn!("{}: {e}", family.path.display()),
            }
            let name: Arc<str> = family.family.as_str().into();
            let (listener, queue) = Listener::new(
                name.clone(),
                family.groups.clone(),
                SocketOptions {
                    receive_buffer: family.receive_buffer,
                    ..base.clone()
                },
                family.queue,
            );
            let access = KernelAccess {
                family: name,
                config_path: family.path.display().to_string().into(),
                allow_do: family.allow_do.as_slice().into(),
                allow_dump: family.allow_dump.as_slice().into(),
                validate: family.validate_requests,
                requester: requester.clone(),
                resolver: resolver.clone(),
                listener: listener.clone(),
            };
            let (plugin, listener) = match LoadedPlugin::load(&runtime, &family, access, events.clone()).await
            {
                Ok(p) => {
                    tracing::info!(family = %family.family, plugin = %family.plugin.display(), ops = p.description().ops.len(), "plugin loaded");
                    dispatchers.push((listener.clone(), queue, p.clone()));
                    (Ok(p), Some(listener))
                }
                Err(e) => {
                    tracing::error!("{}: {e}; this family is not served", family.path.display());
                    (Err(e.to_string()), None)
                }
            };
            families.insert(
                family.family.clone(),
                FamilyEntry {
                    config: family,
                    plugin,
                    listener,
                },
            );
        }
        let gateway = Arc::new(Self {
            config,
            resolver,
            families,
            broken_files,
            events,
            subscribers_cut_off: Default::default(),
        });

        for (listener, queue, plugin) in dispatchers {
            tokio::spawn(listener::dispatch(listener, queue, plugin));
        }
        for name in gateway.families.keys() {
            if gateway.resolver.cached(name).is_some() {
                watch::refresh(&gateway, name).await;
            }
        }
        gateway.watch_families(&base).await?;
        Ok(gateway)
    }

    /// Join nlctrl's `notify` group and follow families coming and going.
    async fn watch_families(self: &Arc<Self>, base: &SocketOptions) -> anyhow::Result<()> {
        let nlctrl = self
            .resolver
            .resolve("nlctrl")
            .await
            .context("resolving nlctrl")?;
        let group = nlctrl.group_id("notify").context("nlctrl has no notify group")?;
        let (watcher, rx) = Listener::new(
            "nlctrl (gateway)".into(),
            vec!["notify".into()],
            SocketOptions {
                receive_buffer: 1 << 20,
                ..base.clone()
            },
            1024,
        );
        watcher
            .rebuild(&nlctrl)
            .context("opening the family watcher socket")?;
        tracing::debug!(group, "watching families");
        let gateway = self.clone();
        tokio::spawn(async move {
            // The watcher's socket lives as long as this task.
            let _watcher = watcher;
            watch::run(gateway, rx).await;
        });
        Ok(())
    }

    /// The listener of configured family `name`, if its plugin loaded.
    pub fn listener(&self, name: &str) -> Option<&Arc<Listener>> {
        self.families.get(name)?.listener.as_ref()
    }

    /// Count and log an event subscriber cut off after missing `missed` events.
    pub fn note_subscriber_cut_off(&self, family: &str, missed: u64) {
        self.subscribers_cut_off
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(family, missed, "an event subscriber fell behind and was cut off");
    }

    /// Call `op` of `family`'s plugin with the JSON `input`.
    pub async fn call(&self, family: &str, op: &str, input: &str) -> Result<String, CallError> {
        let entry = self
            .families
            .get(family)
            .ok_or_else(|| CallError::UnknownFamily(family.to_owned()))?;
        let plugin = entry.plugin.as_ref().map_err(|reason| CallError::PluginFailed {
            family: family.to_owned(),
            reason: reason.clone(),
        })?;
        if self.resolver.cached(family).is_none() {
            // The watcher normally knows; a call racing a family's arrival
            // asks the kernel once rather than fail.
            self.resolver
                .resolve(family)
                .await
                .map_err(|e| CallError::FamilyAbsent(e.to_string()))?;
        }
        plugin.call(op, input).await.map_err(|failure| CallError::Call {
            family: family.to_owned(),
            failure,
        })
    }
}
