//! The gateway: the configured families, their plugins, and the kernel
//! connection they share. Built once by `serve`; the API reads it.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::config::{FamilyConfig, GatewayConfig};
use crate::families::{FamilyResolver, ResolveError};
use crate::netlink::Requester;
use crate::plugin::{CallFailure, Event, KernelAccess, LoadedPlugin, Runtime};

/// How many unread events a subscriber may lag before it loses some.
const EVENT_BACKLOG: usize = 4096;

/// A configured family and what became of its plugin.
pub struct FamilyEntry {
    /// Its configuration.
    pub config: FamilyConfig,
    /// The plugin, or why it could not be loaded.
    pub plugin: Result<Arc<LoadedPlugin>, String>,
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
}

impl Gateway {
    /// Connect to the kernel and load every family's plugin. A family whose
    /// file or plugin is broken is reported (one log line) and skipped; the
    /// others load regardless.
    pub async fn start(config: GatewayConfig) -> anyhow::Result<Arc<Self>> {
        let requester = Requester::open(config.request_timeout)
            .map_err(|e| anyhow::anyhow!("cannot open a generic netlink socket: {e}"))?;
        let resolver = Arc::new(FamilyResolver::new(requester.clone()));
        let runtime = Runtime::new()?;
        let (events, _) = broadcast::channel(EVENT_BACKLOG);

        let mut families = BTreeMap::new();
        let mut broken_files = Vec::new();
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
                Ok(info) => {
                    tracing::info!(family = %family.family, id = info.id, "family resolved")
                }
                Err(e @ ResolveError::Absent(_)) => {
                    tracing::warn!(
                        "{}: {e}; calls to it fail until it appears",
                        family.path.display()
                    );
                }
                Err(e) => tracing::warn!("{}: {e}", family.path.display()),
            }
            let access = KernelAccess {
                family: family.family.as_str().into(),
                config_path: family.path.display().to_string().into(),
                allow_do: family.allow_do.as_slice().into(),
                allow_dump: family.allow_dump.as_slice().into(),
                requester: requester.clone(),
                resolver: resolver.clone(),
            };
            let plugin = match LoadedPlugin::load(&runtime, &family, access, events.clone()).await {
                Ok(p) => {
                    tracing::info!(family = %family.family, plugin = %family.plugin.display(), ops = p.description().ops.len(), "plugin loaded");
                    Ok(p)
                }
                Err(e) => {
                    tracing::error!("{}: {e}; this family is not served", family.path.display());
                    Err(e.to_string())
                }
            };
            families.insert(
                family.family.clone(),
                FamilyEntry {
                    config: family,
                    plugin,
                },
            );
        }
        Ok(Arc::new(Self {
            config,
            resolver,
            families,
            broken_files,
            events,
        }))
    }

    /// Call `op` of `family`'s plugin with the JSON `input`.
    pub async fn call(&self, family: &str, op: &str, input: &str) -> Result<String, CallError> {
        let entry = self
            .families
            .get(family)
            .ok_or_else(|| CallError::UnknownFamily(family.to_owned()))?;
        let plugin = entry
            .plugin
            .as_ref()
            .map_err(|reason| CallError::PluginFailed {
                family: family.to_owned(),
                reason: reason.clone(),
            })?;
        if self.resolver.cached(family).is_none() {
            // Not seen yet: it may have appeared since start-up.
            self.resolver
                .resolve(family)
                .await
                .map_err(|e| CallError::FamilyAbsent(e.to_string()))?;
        }
        plugin
            .call(op, input)
            .await
            .map_err(|failure| CallError::Call {
                family: family.to_owned(),
                failure,
            })
    }
}
