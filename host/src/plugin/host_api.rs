//! What a plugin can reach: the WIT imports, implemented against the
//! gateway, each checked against the operator's family file.

use std::sync::Arc;

use genl_wire::consts::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use genl_wire::{FamilyInfo, GenlHeader};
use tokio::sync::broadcast;
use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::genl::gateway::{events, kernel, log, types};
use super::log_limit::LogLimiter;
use super::metrics::PluginMetrics;
use crate::families::{FamilyResolver, ResolveError};
use crate::gateway::Listener;
use crate::netlink::{OwnedMessage, RequestError, Requester};

/// Flags a plugin may add to a `do` request.
const ALLOWED_EXTRA_FLAGS: u16 = NLM_F_CREATE | NLM_F_EXCL | NLM_F_REPLACE | NLM_F_APPEND;

/// An event a plugin published.
#[derive(Debug, Clone)]
pub struct Event {
    /// The family whose plugin published it.
    pub family: Arc<str>,
    /// The plugin's topic.
    pub topic: String,
    /// The JSON payload, as the plugin wrote it.
    pub payload: String,
}

/// A plugin's access to the kernel: its own family, the commands its family
/// file allows, nothing else.
#[derive(Clone)]
pub struct KernelAccess {
    /// The family name.
    pub family: Arc<str>,
    /// The family file, named in refusals.
    pub config_path: Arc<str>,
    /// Commands allowed as `do`.
    pub allow_do: Arc<[u8]>,
    /// Commands allowed as dumps.
    pub allow_dump: Arc<[u8]>,
    /// The shared request socket.
    pub requester: Arc<Requester>,
    /// The family resolver.
    pub resolver: Arc<FamilyResolver>,
    /// Check requests against the family's policy before sending.
    pub validate: bool,
    /// The family's listener socket, for `listen-request`.
    pub listener: Arc<Listener>,
}

/// The per-store state of one plugin instance.
pub struct PluginState {
    pub(crate) kernel: KernelAccess,
    pub(crate) events: broadcast::Sender<Event>,
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limits: StoreLimits,
    pub(crate) log_limiter: Arc<LogLimiter>,
    pub(crate) metrics: Arc<PluginMetrics>,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl KernelAccess {
    async fn family_info(&self) -> Result<Arc<FamilyInfo>, types::RequestError> {
        if let Some(f) = self.resolver.cached(&self.family) {
            return Ok(f);
        }
        self.resolver.resolve(&self.family).await.map_err(|e| match e {
            // A configured name was checked when its file was read.
            ResolveError::Absent(_) | ResolveError::InvalidName(_) => {
                types::RequestError::FamilyAbsent(e.to_string())
            }
            ResolveError::Request { source, .. } => to_wit_error(source),
        })
    }

    fn check(&self, kind: &str, cmd: u8, allowed: &[u8]) -> Result<(), types::RequestError> {
        if allowed.contains(&cmd) {
            Ok(())
        } else {
            Err(types::RequestError::Denied(format!(
                "command {cmd} of family {} is not allowed as a {kind} request; add it to [commands] {kind} in {} if the operator agrees",
                self.family, self.config_path
            )))
        }
    }

    async fn check_policy(
        &self,
        family: &FamilyInfo,
        cmd: u8,
        dump: bool,
        payload: &[u8],
    ) -> Result<(), types::RequestError> {
        let policies = match self.resolver.policies(&self.family).await {
            Ok(p) => p,
            Err(e) => {
                // No policy to check against is not a reason to refuse: the
                // kernel still validates.
                tracing::debug!(family = %self.family, "no policy for validation: {e}");
                return Ok(());
            }
        };
        let attrs = payload.get(family.hdrsize as usize..).unwrap_or_default();
        policies.validate(u32::from(cmd), dump, attrs).map_err(|v| {
            types::RequestError::Invalid(format!(
                "command {cmd} of {}: {v} (checked against the kernel's policy before sending)",
                self.family
            ))
        })
    }

    /// A `do` from the listener socket (registrations for unicast
    /// notifications).
    async fn listen_request(
        &self,
        cmd: u8,
        payload: Vec<u8>,
    ) -> Result<Vec<types::Message>, types::RequestError> {
        self.check("do", cmd, &self.allow_do)?;
        let family = self.family_info().await?;
        if self.validate {
            self.check_policy(&family, cmd, false, &payload).await?;
        }
        let socket = self.listener.socket().ok_or_else(|| {
            types::RequestError::FamilyAbsent(format!("family {} has no listener socket now", self.family))
        })?;
        let genl = GenlHeader {
            cmd,
            version: u8::try_from(family.version).unwrap_or(u8::MAX),
        };
        match socket.do_request(family.id, genl, 0, &payload).await {
            Ok(msgs) => msgs.into_iter().map(to_wit_message).collect(),
            Err(e) => Err(to_wit_error(e)),
        }
    }

    /// Send a request for the plugin: checked, then on the shared socket.
    async fn request(
        &self,
        dump: bool,
        cmd: u8,
        extra_flags: u16,
        payload: Vec<u8>,
    ) -> Result<Vec<types::Message>, types::RequestError> {
        if dump {
            self.check("dump", cmd, &self.allow_dump)?;
        } else {
            self.check("do", cmd, &self.allow_do)?;
        }
        if extra_flags & !ALLOWED_EXTRA_FLAGS != 0 {
            return Err(types::RequestError::Denied(format!(
                "flags {extra_flags:#x} include bits other than NLM_F_CREATE, EXCL, REPLACE, APPEND"
            )));
        }
        let family = self.family_info().await?;
        if self.validate {
            self.check_policy(&family, cmd, dump, &payload).await?;
        }
        let genl = GenlHeader {
            cmd,
            version: u8::try_from(family.version).unwrap_or(u8::MAX),
        };
        let result = if dump {
            self.requester.dump(family.id, genl, &payload).await
        } else {
            self.requester
                .do_request(family.id, genl, extra_flags, &payload)
                .await
        };
        match result {
            Ok(msgs) => msgs.into_iter().map(to_wit_message).collect(),
            Err(e) => Err(to_wit_error(e)),
        }
    }
}

pub(crate) fn to_wit_message(m: OwnedMessage) -> Result<types::Message, types::RequestError> {
    let genl = GenlHeader::parse(&m.payload)
        .map_err(|e| types::RequestError::Io(format!("reply without a genl header: {e}")))?;
    let mut payload = m.payload;
    payload.drain(..GenlHeader::SIZE);
    Ok(types::Message {
        nl: types::NlHeader {
            seq: m.header.seq,
            portid: m.header.portid,
            flags: m.header.flags,
        },
        genl: types::GenlHeader {
            cmd: genl.cmd,
            version: genl.version,
        },
        payload,
    })
}

/// The WIT form of a kernel error.
pub(crate) fn to_wit_netlink_error(e: genl_wire::KernelError) -> types::NetlinkError {
    types::NetlinkError {
        errno: e.errno,
        message: e.message,
        offset: e.offset,
    }
}

fn to_wit_error(e: RequestError) -> types::RequestError {
    match e {
        RequestError::Kernel(k) => types::RequestError::Kernel(to_wit_netlink_error(k)),
        RequestError::Timeout(_) => types::RequestError::Timeout,
        other => types::RequestError::Io(other.to_string()),
    }
}

/// The WIT form of a family.
pub(crate) fn to_wit_family(f: &FamilyInfo) -> types::FamilyInfo {
    types::FamilyInfo {
        name: f.name.clone(),
        id: f.id,
        version: f.version,
        hdrsize: f.hdrsize,
        maxattr: f.maxattr,
        ops: f
            .ops
            .iter()
            .map(|o| types::OpInfo {
                id: o.id,
                flags: o.flags,
            })
            .collect(),
        mcast_groups: f
            .mcast_groups
            .iter()
            .map(|g| types::McastGroup {
                name: g.name.clone(),
                id: g.id,
            })
            .collect(),
    }
}

impl types::Host for PluginState {}

impl kernel::Host for PluginState {
    async fn family(&mut self) -> Result<types::FamilyInfo, types::RequestError> {
        self.kernel.family_info().await.map(|f| to_wit_family(&f))
    }

    async fn do_request(
        &mut self,
        cmd: u8,
        extra_flags: u16,
        payload: Vec<u8>,
    ) -> Result<Vec<types::Message>, types::RequestError> {
        self.kernel.request(false, cmd, extra_flags, payload).await
    }

    async fn dump_request(
        &mut self,
        cmd: u8,
        payload: Vec<u8>,
    ) -> Result<Vec<types::Message>, types::RequestError> {
        self.kernel.request(true, cmd, 0, payload).await
    }

    async fn listen_request(
        &mut self,
        cmd: u8,
        payload: Vec<u8>,
    ) -> Result<Vec<types::Message>, types::RequestError> {
        self.kernel.listen_request(cmd, payload).await
    }
}

impl log::Host for PluginState {
    async fn log(&mut self, level: types::Level, message: String) {
        let plugin = &*self.kernel.family;
        self.log_limiter.emit(plugin, || match level {
            types::Level::Trace => tracing::trace!(plugin, "{message}"),
            types::Level::Debug => tracing::debug!(plugin, "{message}"),
            types::Level::Info => tracing::info!(plugin, "{message}"),
            types::Level::Warn => tracing::warn!(plugin, "{message}"),
            types::Level::Error => tracing::error!(plugin, "{message}"),
        });
    }
}

impl events::Host for PluginState {
    async fn publish(&mut self, topic: String, payload: String) {
        // Subscribers splice the payload into JSON: refuse anything else
        // rather than hand them a corrupt stream.
        if serde_json::from_str::<serde::de::IgnoredAny>(&payload).is_err() {
            tracing::warn!(plugin = %self.kernel.family, %topic, "dropped an event whose payload is not JSON");
            return;
        }
        self.metrics
            .events_published
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // No subscriber is not an error: events are best-effort fan-out.
        let _ = self.events.send(Event {
            family: self.kernel.family.clone(),
            topic,
            payload,
        });
    }
}
