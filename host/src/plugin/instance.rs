//! One loaded plugin: its compiled, pre-linked component and the live
//! instance that serves calls. Calls into an instance are serialised; a
//! trap discards the instance and the next call builds a fresh one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::broadcast;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, StoreLimitsBuilder};
use wasmtime_wasi::WasiCtxBuilder;

use super::bindings::{Plugin, PluginPre};
use super::host_api::to_wit_message;
use super::host_api::{Event, KernelAccess, PluginState};
use super::log_limit::LogLimiter;
use super::metrics::PluginMetrics;
use super::phase::PluginPhase;
use super::runtime::{EPOCH_TICK, PluginError, Runtime};
use super::stdio::LogStream;
use crate::config::{FamilyConfig, Limits};
use crate::netlink::OwnedMessage;

/// What a plugin says it offers (its `describe`).
#[derive(Debug, Clone, Serialize)]
pub struct Description {
    /// The family it serves.
    pub family: String,
    /// Its version.
    pub version: String,
    /// Its operations.
    pub ops: Vec<OpDescription>,
    /// Its event topics.
    pub topics: Vec<String>,
}

/// One operation of a plugin.
#[derive(Debug, Clone, Serialize)]
pub struct OpDescription {
    /// Name.
    pub name: String,
    /// One sentence.
    pub summary: String,
    /// Whether it may change kernel state.
    pub writes: bool,
}

/// A plugin's state as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    /// The `.wasm` file.
    pub path: String,
    /// SHA-256 of the `.wasm`.
    pub sha256: String,
    /// Whether the compiled component came from the cache.
    pub from_cache: bool,
    /// Ready, restarting (backing off after a crash) or failed.
    pub state: PluginPhase,
    /// How many times the instance was rebuilt after a crash.
    pub restarts: u64,
    /// Crashes since the last successful call.
    pub consecutive_crashes: u32,
    /// The last crash or failure, if any.
    pub last_error: Option<String>,
    /// Log lines suppressed by the rate limit.
    pub log_lines_suppressed: u64,
    /// The limits it runs under.
    pub limits: LimitsView,
    /// What the plugin offers.
    pub description: Description,
}

/// Limits as the API shows them.
#[derive(Debug, Clone, Serialize)]
pub struct LimitsView {
    /// Memory limit in bytes.
    pub memory_bytes: usize,
    /// Per-call deadline in milliseconds.
    pub call_timeout_ms: u128,
    /// Fuel per call, if metered.
    pub fuel: Option<u64>,
}

/// Crash bookkeeping: consecutive crashes back off exponentially and end
/// in `failed` until the plugin is reloaded.
#[derive(Debug, Default)]
struct Crashes {
    consecutive: u32,
    retry_at: Option<Instant>,
    failed: bool,
}

/// First backoff after a crash; doubles per consecutive crash.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest backoff.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// Why a call did not return the plugin's answer.
#[derive(Debug, Clone)]
pub enum CallFailure {
    /// The plugin answered with an error.
    Plugin {
        /// Its stable code.
        code: String,
        /// Its message.
        message: String,
        /// The kernel error behind it.
        kernel: Option<genl_wire::KernelError>,
    },
    /// The plugin trapped (panic, deadline, memory limit); its instance was
    /// discarded.
    Crashed(String),
    /// No instance could be built (its `init` fails or traps), or it
    /// crashed too often and is marked failed.
    Unavailable(String),
    /// It crashed recently and is backing off before the next restart.
    Restarting {
        /// When the next attempt is allowed.
        retry_after: Duration,
        /// The crash it is recovering from.
        last_error: String,
    },
}

/// One item for a plugin's notification entry points.
#[derive(Debug)]
pub enum Delivery {
    /// A kernel notification of `group` ("" for unicast).
    Message {
        /// The group's name.
        group: Arc<str>,
        /// The message.
        message: OwnedMessage,
    },
    /// Notifications were lost before the next one.
    Lost,
}

struct Live {
    store: Store<PluginState>,
    plugin: Plugin,
}

/// A loaded plugin.
pub struct LoadedPlugin {
    path: PathBuf,
    sha256: String,
    from_cache: bool,
    engine: Engine,
    fuel_metering: bool,
    pre: PluginPre<PluginState>,
    access: KernelAccess,
    events: broadcast::Sender<Event>,
    limits: Limits,
    limiter: Arc<LogLimiter>,
    config: Vec<(String, String)>,
    description: Description,
    live: tokio::sync::Mutex<Option<Live>>,
    restarts: AtomicU64,
    crashes: Mutex<Crashes>,
    last_error: Mutex<Option<String>>,
    /// Counters for `/metrics`.
    pub metrics: Arc<PluginMetrics>,
}

fn trap(e: wasmtime::Error) -> String {
    // The root cause (e.g. "wasm trap: interrupt", "unreachable") first,
    // then wasmtime's context; one line.
    format!("{e:#}").replace('\n', " ")
}

impl LoadedPlugin {
    /// Compile, link, instantiate and initialise the plugin of `family`,
    /// counting into `metrics` (the gateway keeps one set per family, so
    /// counters survive reloads).
    pub async fn load(
        runtime: &Runtime,
        family: &FamilyConfig,
        access: KernelAccess,
        events: broadcast::Sender<Event>,
        metrics: Arc<PluginMetrics>,
    ) -> Result<Arc<Self>, PluginError> {
        let compiled = runtime.compile(&family.plugin)?;
        let invalid = |e: wasmtime::Error| PluginError::Invalid {
            path: family.plugin.display().to_string(),
            reason: trap(e),
        };
        let pre = runtime
            .linker
            .instantiate_pre(&compiled.component)
            .map_err(invalid)?;
        let pre = PluginPre::new(pre).map_err(invalid)?;
        let mut plugin = Self {
            path: family.plugin.clone(),
            sha256: compiled.sha256,
            from_cache: compiled.cached,
            engine: runtime.engine.clone(),
            fuel_metering: runtime.fuel,
            pre,
            access,
            events,
            limits: family.limits,
            limiter: Arc::new(LogLimiter::new(family.limits.log_lines_per_sec)),
            config: family.config.clone().into_iter().collect(),
            description: Description {
                family: family.family.clone(),
                version: String::new(),
                ops: Vec::new(),
                topics: Vec::new(),
            },
            live: tokio::sync::Mutex::new(None),
            restarts: AtomicU64::new(0),
            crashes: Mutex::new(Crashes::default()),
            last_error: Mutex::new(None),
            metrics,
        };
        let mut live = plugin.instantiate().await?;
        plugin.arm(&mut live.store);
        let d = live
            .plugin
            .call_describe(&mut live.store)
            .await
            .map_err(|e| PluginError::Trap(format!("in describe: {}", trap(e))))?;
        plugin.description = Description {
            family: d.family,
            version: d.version,
            ops: d
                .ops
                .into_iter()
                .map(|o| OpDescription {
                    name: o.name,
                    summary: o.summary,
                    writes: o.writes,
                })
                .collect(),
            topics: d.topics,
        };
        *plugin.live.get_mut() = Some(live);
        Ok(Arc::new(plugin))
    }

    /// Arm the per-call limits: the wall-clock deadline and, if metered,
    /// the fuel.
    fn arm(&self, store: &mut Store<PluginState>) {
        let ticks = self
            .limits
            .call_timeout
            .as_millis()
            .div_ceil(EPOCH_TICK.as_millis())
            .max(1);
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        if self.fuel_metering {
            // Cannot fail with metering on; without a limit a call may burn
            // as much as its deadline allows.
            let _ = store.set_fuel(self.limits.fuel.unwrap_or(u64::MAX));
        }
    }

    async fn instantiate(&self) -> Result<Live, PluginError> {
        let family = self.access.family.clone();
        let wasi = WasiCtxBuilder::new()
            .stdout(LogStream::new(family.clone(), "stdout", self.limiter.clone()))
            .stderr(LogStream::new(family.clone(), "stderr", self.limiter.clone()))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            &self.engine,
            PluginState {
                kernel: self.access.clone(),
                events: self.events.clone(),
                wasi,
                table: ResourceTable::new(),
                limits,
                log_limiter: self.limiter.clone(),
                metrics: self.metrics.clone(),
            },
        );
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        self.arm(&mut store);
        let plugin = self
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| PluginError::Trap(format!("instantiating: {}", trap(e))))?;
        self.arm(&mut store);
        match plugin.call_init(&mut store, &self.config).await {
            Ok(Ok(())) => Ok(Live { store, plugin }),
            Ok(Err(msg)) => Err(PluginError::Init(msg)),
            Err(e) => Err(PluginError::Trap(format!("in init: {}", trap(e)))),
        }
    }

    /// The live instance, built afresh if the last one crashed, unless the
    /// plugin is backing off or has failed.
    async fn ensure_live<'a>(&self, slot: &'a mut Option<Live>) -> Result<&'a mut Live, CallFailure> {
        if slot.is_none() {
            {
                let crashes = self.crashes.lock().unwrap_or_else(PoisonError::into_inner);
                let last_error = || self.last_error().unwrap_or_default();
                if crashes.failed {
                    return Err(CallFailure::Unavailable(format!(
                        "failed after {} consecutive crashes (last: {}); fix it and reload",
                        crashes.consecutive,
                        last_error()
                    )));
                }
                if let Some(at) = crashes.retry_at
                    && let Some(wait) = at.checked_duration_since(Instant::now())
                {
                    return Err(CallFailure::Restarting {
                        retry_after: wait,
                        last_error: last_error(),
                    });
                }
            }
            match self.instantiate().await {
                Ok(live) => {
                    self.restarts.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(plugin = %self.access.family, "plugin instance rebuilt");
                    *slot = Some(live);
                }
                Err(e) => {
                    let msg = e.to_string();
                    self.crashed(&msg);
                    return Err(CallFailure::Unavailable(msg));
                }
            }
        }
        slot.as_mut()
            .ok_or_else(|| CallFailure::Unavailable("no instance".into()))
    }

    /// Record a crash: back off exponentially, or give up after too many.
    fn crashed(&self, msg: &str) {
        self.metrics.traps.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(PoisonError::into_inner) = Some(msg.to_owned());
        let mut c = self.crashes.lock().unwrap_or_else(PoisonError::into_inner);
        c.consecutive += 1;
        if c.consecutive >= self.limits.max_crashes {
            c.failed = true;
            tracing::error!(plugin = %self.access.family, crashes = c.consecutive, "plugin crashed too often; marked failed until reloaded");
        } else {
            let backoff = BACKOFF_BASE
                .saturating_mul(1 << (c.consecutive - 1).min(16))
                .min(BACKOFF_MAX);
            c.retry_at = Some(Instant::now() + backoff);
        }
    }

    fn succeeded(&self) {
        let mut c = self.crashes.lock().unwrap_or_else(PoisonError::into_inner);
        c.consecutive = 0;
        c.retry_at = None;
    }

    fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Hand `batch` to the plugin's notification entry points, in order.
    /// A trap discards the instance and the rest of the batch.
    pub async fn notify(&self, batch: Vec<Delivery>) {
        let mut slot = self.live.lock().await;
        let live = match self.ensure_live(&mut slot).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(plugin = %self.access.family, dropped = batch.len(), "notifications dropped: {e:?}");
                return;
            }
        };
        for item in batch {
            self.arm(&mut live.store);
            self.metrics
                .notifications_delivered
                .fetch_add(1, Ordering::Relaxed);
            let result = match item {
                Delivery::Message { group, message } => match to_wit_message(message) {
                    Ok(m) => {
                        live.plugin
                            .call_on_notification(&mut live.store, &group, &m)
                            .await
                    }
                    Err(e) => {
                        tracing::warn!(plugin = %self.access.family, "notification dropped: {e:?}");
                        continue;
                    }
                },
                Delivery::Lost => live.plugin.call_on_events_lost(&mut live.store).await,
            };
            if let Err(e) = result {
                let msg = trap(e);
                tracing::error!(plugin = %self.access.family, "plugin crashed in a notification handler: {msg}; its instance is discarded");
                self.crashed(&msg);
                *slot = None;
                return;
            }
        }
    }

    /// Call `op` with the JSON `input`.
    pub async fn call(&self, op: &str, input: &str) -> Result<String, CallFailure> {
        let started = Instant::now();
        self.metrics.calls.fetch_add(1, Ordering::Relaxed);
        let result = self.call_inner(op, input).await;
        self.metrics.observe(started.elapsed());
        if let Err(e) = &result {
            self.metrics.error(match e {
                CallFailure::Plugin { code, .. } => code,
                CallFailure::Crashed(_) => "plugin-crashed",
                CallFailure::Unavailable(_) => "plugin-unavailable",
                CallFailure::Restarting { .. } => "plugin-restarting",
            });
        }
        result
    }

    async fn call_inner(&self, op: &str, input: &str) -> Result<String, CallFailure> {
        let mut slot = self.live.lock().await;
        let live = self.ensure_live(&mut slot).await?;
        self.arm(&mut live.store);
        let result = live.plugin.call_call(&mut live.store, op, input).await;
        if result.is_ok() {
            self.succeeded();
        }
        match result {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(CallFailure::Plugin {
                code: e.code,
                message: e.message,
                kernel: e.kernel.map(|k| genl_wire::KernelError {
                    errno: k.errno,
                    message: k.message,
                    offset: k.offset,
                }),
            }),
            Err(e) => {
                // The epoch deadline traps as `Interrupt`: say so plainly.
                let deadline = matches!(
                    e.downcast_ref::<wasmtime::Trap>(),
                    Some(wasmtime::Trap::Interrupt)
                );
                let mut msg = trap(e);
                if deadline {
                    msg = format!(
                        "exceeded its {:?} call deadline ({msg})",
                        self.limits.call_timeout
                    );
                }
                tracing::error!(plugin = %self.access.family, op, "plugin crashed: {msg}; its instance is discarded and rebuilt on the next call");
                self.crashed(&msg);
                *slot = None;
                Err(CallFailure::Crashed(msg))
            }
        }
    }

    /// The family this plugin serves.
    pub fn family(&self) -> &str {
        &self.access.family
    }

    /// What the plugin offers.
    pub fn description(&self) -> &Description {
        &self.description
    }

    /// The plugin's state for the API.
    pub fn status(&self) -> PluginStatus {
        let (state, consecutive_crashes) = {
            let c = self.crashes.lock().unwrap_or_else(PoisonError::into_inner);
            let state = if c.failed {
                PluginPhase::Failed
            } else if c.retry_at.is_some_and(|t| t > Instant::now()) {
                PluginPhase::Restarting
            } else {
                PluginPhase::Ready
            };
            (state, c.consecutive)
        };
        PluginStatus {
            path: self.path.display().to_string(),
            sha256: self.sha256.clone(),
            from_cache: self.from_cache,
            state,
            restarts: self.restarts.load(Ordering::Relaxed),
            consecutive_crashes,
            last_error: self.last_error(),
            log_lines_suppressed: self.limiter.suppressed_total.load(Ordering::Relaxed),
            limits: LimitsView {
                memory_bytes: self.limits.memory_bytes,
                call_timeout_ms: self.limits.call_timeout.as_millis(),
                fuel: self.limits.fuel,
            },
            description: self.description.clone(),
        }
    }

    /// SHA-256 of the plugin's `.wasm`.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}
