//! One loaded plugin: its compiled, pre-linked component and the pool of
//! instances that serve calls. Calls run in parallel, one per instance
//! (`plugin::pool`); a trap discards its instance and the next call that
//! takes its place builds a fresh one. Notifications go to the first
//! instance, in order.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::broadcast;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

use super::bindings::genl::gateway::types;
use super::bindings::{Plugin, PluginPre};
use super::budget::{Budget, check_caps};
use super::host_api::{Event, KernelAccess, MAX_TOPIC, PluginState, to_wit_message};
use super::input_schema::{InputSchema, Patterns};
use super::log_limit::{LogLimiter, one_line};
use super::metrics::PluginMetrics;
use super::output::{CallOutput, CallOutputState, OutputFault, OutputSink};
use super::phase::PluginPhase;
use super::pool::{Lease, Pool, PoolCounts};
use super::runtime::{MAX_EXTRA_PER_FAMILY, PluginError, Runtime, WIT_PACKAGES_LOADED};
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
    /// Whether the plugin gave an input schema (the schemas themselves
    /// are served per operation and in the OpenAPI document, not listed).
    pub typed: bool,
    /// Its input schema, checked when the plugin loaded; every call's
    /// input is checked against it before the plugin runs.
    #[serde(skip)]
    pub input_schema: Option<Arc<InputSchema>>,
    /// Its output schema (JSON Schema 2020-12), for clients.
    #[serde(skip)]
    pub output_schema: Option<Arc<serde_json::Value>>,
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
    /// Why the last reload of its family failed, if it did and this
    /// version stayed loaded in its place.
    pub failed_reload: Option<String>,
    /// Log lines suppressed by the rate limit.
    pub log_lines_suppressed: u64,
    /// Events refused at publish (bad topic, too large, not JSON).
    pub events_refused: u64,
    /// Notifications not delivered because the plugin was failed, backing
    /// off or could not start.
    pub notifications_dropped: u64,
    /// The limits it runs under.
    pub limits: LimitsView,
    /// Its instances and the memory they may hold.
    pub pool: PoolView,
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

/// A plugin's pool of instances as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PoolView {
    /// Instances counted as the pool's state now.
    #[serde(flatten)]
    pub counts: PoolCounts,
    /// Linear memory one instance may hold (each has its own).
    pub memory_bytes_per_instance: usize,
    /// Linear memory the whole pool may hold: size times the limit of one
    /// instance.
    pub memory_bytes_total: usize,
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
    pool: Pool<Live>,
    restarts: AtomicU64,
    crashes: Mutex<Crashes>,
    last_error: Mutex<Option<String>>,
    /// Why the last reload of this family failed while this version stayed
    /// loaded; cleared when a reload finds this version's files unchanged.
    failed_reload: Mutex<Option<String>>,
    /// Counters for `/metrics`.
    pub metrics: Arc<PluginMetrics>,
}

fn trap(e: wasmtime::Error) -> String {
    // The root cause (e.g. "wasm trap: interrupt", "unreachable") first,
    // then wasmtime's context; one line.
    one_line(&format!("{e:#}"), MAX_TRAP_TEXT)
}

/// Most random bytes one WASI call may ask for (std asks for 16 to seed a
/// hash map).
const MAX_RANDOM_BYTES: u64 = 64 << 10;

/// Most bytes one host call may copy out of a plugin whatever its memory
/// limit: wasmtime's own default.
const MAX_HOSTCALL_COPY: usize = 128 << 20;

/// Longest trap text kept: it names the plugin's own functions (its name
/// section), so it is the plugin's text and is escaped and cut as such.
const MAX_TRAP_TEXT: usize = 4096;

/// The error the epoch callback raises when an entry point's wall-clock
/// deadline passes while wasm runs.
#[derive(Debug, thiserror::Error)]
#[error("wall-clock deadline exceeded")]
struct DeadlineExceeded;

/// Why an entry point stopped without an answer.
enum Stop {
    /// Its wall-clock deadline passed (in wasm or in a host call).
    Deadline,
    /// It trapped (panic, unreachable, memory or fuel limit, ...).
    Trap(String),
}

/// Run one entry point of an instance under its wall-clock deadline. The
/// epoch callback stops wasm that runs past it; the timeout here stops one
/// that waits past it in a host call (a WASI sleep, a kernel wait, a lock).
/// Either way the instance is left mid-call and must be discarded.
async fn bounded<T>(deadline: Instant, entry: impl Future<Output = wasmtime::Result<T>>) -> Result<T, Stop> {
    match tokio::time::timeout_at(tokio::time::Instant::from_std(deadline), entry).await {
        Err(_) => Err(Stop::Deadline),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if e.downcast_ref::<DeadlineExceeded>().is_some() || Instant::now() >= deadline => {
            Err(Stop::Deadline)
        }
        Ok(Err(e)) => Err(Stop::Trap(trap(e))),
    }
}

/// Most operations and topics a description may list.
const MAX_OPS: usize = 1024;
const MAX_TOPICS: usize = 256;
/// Longest operation name (it is a URL path segment).
const MAX_OP_NAME: usize = 64;
/// Most bytes of schemas one plugin's description may carry: the host
/// keeps them for as long as the plugin is loaded.
const MAX_SCHEMA_BYTES: usize = 16 << 20;
/// Longest error code a plugin may answer with.
const MAX_CODE: usize = 48;

/// The plugin's description, checked against the bounds a client-facing
/// listing must keep: sizes, counts, and names without control characters.
fn check_description(d: &types::PluginDescription, max_bytes: usize) -> Result<(), String> {
    if d.ops.len() > MAX_OPS || d.topics.len() > MAX_TOPICS {
        return Err(format!(
            "it lists {} operations and {} topics (at most {MAX_OPS} and {MAX_TOPICS})",
            d.ops.len(),
            d.topics.len()
        ));
    }
    let size = d.family.len()
        + d.version.len()
        + d.ops
            .iter()
            .map(|o| o.name.len() + o.summary.len())
            .sum::<usize>()
        + d.topics.iter().map(String::len).sum::<usize>();
    if size > max_bytes {
        return Err(format!(
            "it is {size} bytes, over the plugin's {max_bytes}-byte limit (limits.output_kib)"
        ));
    }
    let schemas: usize = d
        .ops
        .iter()
        .flat_map(|o| [&o.input_schema, &o.output_schema])
        .map(|s| s.as_ref().map_or(0, String::len))
        .sum();
    if schemas > MAX_SCHEMA_BYTES {
        return Err(format!(
            "its operation schemas are {schemas} bytes together, over the {MAX_SCHEMA_BYTES}-byte limit"
        ));
    }
    let bad_name = |n: &str, max: usize| !super::host_api::plain_name(n, max);
    if let Some(o) = d.ops.iter().find(|o| bad_name(&o.name, MAX_OP_NAME)) {
        return Err(format!(
            "operation name '{}' is empty, longer than {MAX_OP_NAME} bytes or has characters other than ASCII letters, digits, '-', '_' and '.'",
            one_line(&o.name, MAX_OP_NAME)
        ));
    }
    if let Some(t) = d.topics.iter().find(|t| bad_name(t, MAX_TOPIC)) {
        return Err(format!(
            "topic '{}' is empty, longer than {MAX_TOPIC} bytes or has characters other than ASCII letters, digits, '-', '_' and '.'",
            one_line(t, MAX_TOPIC)
        ));
    }
    Ok(())
}

/// An operation as the host keeps it: its schemas parsed, the input
/// schema checked usable.
fn op_description(o: types::OpDescription, patterns: &mut Patterns) -> Result<OpDescription, String> {
    let input_schema = o
        .input_schema
        .map(|text| InputSchema::compile_with(&text, patterns))
        .transpose()
        .map_err(|e| format!("operation '{}': {e}", one_line(&o.name, MAX_OP_NAME)))?
        .map(Arc::new);
    let output_schema = o
        .output_schema
        .map(|text| serde_json::from_str::<serde_json::Value>(&text))
        .transpose()
        .map_err(|e| {
            format!(
                "operation '{}': the output schema is not JSON: {e}",
                one_line(&o.name, MAX_OP_NAME)
            )
        })?
        .map(Arc::new);
    Ok(OpDescription {
        name: o.name,
        summary: o.summary,
        writes: o.writes,
        typed: input_schema.is_some(),
        input_schema,
        output_schema,
    })
}

/// Refuse, with one line naming both versions, a component built against
/// another version of the contract: the linker's own error would be a
/// missing-import puzzle.
fn check_contract_version(
    engine: &Engine,
    component: &wasmtime::component::Component,
    path: &std::path::Path,
) -> Result<(), PluginError> {
    let ty = component.component_type();
    let names = ty
        .imports(engine)
        .map(|(n, _)| n)
        .chain(ty.exports(engine).map(|(n, _)| n));
    for name in names {
        let Some(rest) = name.strip_prefix("genl:gateway/") else {
            continue;
        };
        let version = rest.split_once('@').map_or("", |(_, v)| v);
        let found = format!("genl:gateway@{version}");
        if !WIT_PACKAGES_LOADED.contains(&found.as_str()) {
            return Err(PluginError::WitVersion {
                path: path.display().to_string(),
                found: if version.is_empty() {
                    "an unversioned genl:gateway".into()
                } else {
                    found
                },
            });
        }
    }
    Ok(())
}

/// Whether `code` is a short lowercase name like "not-found".
fn valid_code(code: &str) -> bool {
    !code.is_empty()
        && code.len() <= MAX_CODE
        && code
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut at = max;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
        text.push_str("... [cut]");
    }
    text
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
        check_contract_version(&runtime.engine, &compiled.component, &family.plugin)?;
        // A component that instantiates modules it imports has no static
        // count; the store's budget still caps it at instantiation.
        if let Some(needs) = compiled.component.resources_required() {
            check_caps(needs.num_memories, needs.num_tables).map_err(|reason| PluginError::Invalid {
                path: family.plugin.display().to_string(),
                reason,
            })?;
        }
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
            pool: Pool::new(
                family.limits.instances,
                runtime.extra_instances.clone(),
                MAX_EXTRA_PER_FAMILY,
            ),
            restarts: AtomicU64::new(0),
            crashes: Mutex::new(Crashes::default()),
            last_error: Mutex::new(None),
            failed_reload: Mutex::new(None),
            metrics,
        };
        let mut live = plugin.instantiate().await?;
        let deadline = plugin.arm(&mut live.store);
        let d = bounded(deadline, live.plugin.call_describe(&mut live.store))
            .await
            .map_err(|stop| match stop {
                Stop::Deadline => PluginError::Trap(format!(
                    "describe did not finish within the {:?} deadline (limits.call_timeout_ms)",
                    plugin.limits.call_timeout
                )),
                Stop::Trap(msg) => PluginError::Trap(format!("in describe: {msg}")),
            })?;
        check_description(&d, plugin.limits.output_bytes)
            .map_err(|why| PluginError::Description(format!("the plugin's describe is unusable: {why}")))?;
        if d.family != family.family {
            // Only the family file decides what a plugin serves; a name it
            // claims would mislead whoever reads the listing.
            tracing::warn!(
                plugin = %family.family,
                claimed = %one_line(&d.family, 64),
                "the plugin describes itself as another family; it serves only the family of its file, and the listing shows that"
            );
        }
        // The patterns of all its operations are bounded together.
        let mut patterns = Patterns::default();
        let ops = d
            .ops
            .into_iter()
            .map(|o| op_description(o, &mut patterns))
            .collect::<Result<Vec<_>, String>>()
            .map_err(|why| PluginError::Description(format!("the plugin's describe is unusable: {why}")))?;
        plugin.description = Description {
            family: family.family.clone(),
            version: d.version,
            ops,
            topics: d.topics,
        };
        plugin.pool.install_first(live);
        Ok(Arc::new(plugin))
    }

    /// Arm one entry point's limits: its wall-clock deadline (returned) and,
    /// if metered, its fuel. The epoch callback checks the deadline every
    /// tick and otherwise yields, so a busy plugin shares its thread.
    fn arm(&self, store: &mut Store<PluginState>) -> Instant {
        let deadline = Instant::now() + self.limits.call_timeout;
        store.data_mut().deadline = Some(deadline);
        store.set_epoch_deadline(1);
        if self.fuel_metering {
            // Cannot fail with metering on; without a limit a call may burn
            // as much as its deadline allows.
            let _ = store.set_fuel(self.limits.fuel.unwrap_or(u64::MAX));
        }
        deadline
    }

    async fn instantiate(&self) -> Result<Live, PluginError> {
        let family = self.access.family.clone();
        let max_line = self.limits.log_line_bytes;
        let wasi = WasiCtxBuilder::new()
            .stdout(LogStream::new(
                family.clone(),
                "stdout",
                self.limiter.clone(),
                max_line,
            ))
            .stderr(LogStream::new(
                family.clone(),
                "stderr",
                self.limiter.clone(),
                max_line,
            ))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            // wasmtime-wasi's 64 MiB default is generated inside one host
            // call the epoch cannot interrupt: ~100 ms of a core per call,
            // and host memory outside the plugin's budget.
            .max_random_size(MAX_RANDOM_BYTES)
            .build();
        // Every host resource (stream, pollable, ...) the plugin holds is an
        // entry here; a full table makes the next one fail.
        let mut table = ResourceTable::new();
        table.set_max_capacity(self.limits.host_resources);
        let mut store = Store::new(
            &self.engine,
            PluginState {
                kernel: self.access.clone(),
                events: self.events.clone(),
                wasi,
                table,
                budget: Budget::new(self.limits.memory_bytes),
                limits: self.limits,
                log_limiter: self.limiter.clone(),
                metrics: self.metrics.clone(),
                deadline: None,
                output: None,
                open_dumps: 0,
            },
        );
        store.limiter(|s| &mut s.budget);
        // What one host call (or a returned result) may make the host copy
        // out of the plugin. Lists of strings can name the same bytes many
        // times, so without this a plugin of a few MiB could make the host
        // allocate wasmtime's default of 128 MiB per call, outside its
        // memory limit. Real data fits its memory, so the limit is that,
        // and never more than wasmtime's default.
        store.set_hostcall_fuel(self.limits.memory_bytes.min(MAX_HOSTCALL_COPY));
        store.epoch_deadline_callback(|ctx| match ctx.data().deadline {
            Some(d) if Instant::now() >= d => Err(wasmtime::Error::new(DeadlineExceeded)),
            // Yield to the executor every tick: other plugins, the API and
            // the netlink reader get the thread at least every tick.
            _ => Ok(UpdateDeadline::Yield(1)),
        });
        // Instantiation (start functions included) and init share one
        // deadline: together they are the plugin's `init`.
        let deadline = self.arm(&mut store);
        let stopped = |stop: Stop| match stop {
            Stop::Deadline => PluginError::Trap(format!(
                "init did not finish within the {:?} deadline (limits.call_timeout_ms)",
                self.limits.call_timeout
            )),
            Stop::Trap(msg) => PluginError::Trap(format!("in init: {msg}")),
        };
        let plugin = bounded(deadline, self.pre.instantiate_async(&mut store))
            .await
            .map_err(stopped)?;
        match bounded(deadline, plugin.call_init(&mut store, &self.config))
            .await
            .map_err(stopped)?
        {
            Ok(()) => Ok(Live { store, plugin }),
            // Logged and listed: escaped, so it cannot forge a log line or
            // a table row.
            Err(msg) => Err(PluginError::Init(one_line(&msg, self.limits.log_line_bytes))),
        }
    }

    /// The leased place's instance, built if the place has none (first
    /// use, or the last one crashed), unless the plugin is backing off or
    /// has failed. A failed plugin serves nothing, not even from the
    /// instances that did not crash, until it is reloaded.
    async fn ensure_live<'a>(&self, slot: &'a mut Lease<'_, Live>) -> Result<&'a mut Live, CallFailure> {
        {
            let crashes = self.crashes.lock().unwrap_or_else(PoisonError::into_inner);
            if crashes.failed {
                return Err(CallFailure::Unavailable(format!(
                    "failed after {} consecutive crashes (last: {}); fix it and reload",
                    crashes.consecutive,
                    self.last_error().unwrap_or_default()
                )));
            }
        }
        if slot.live.is_none() {
            {
                let crashes = self.crashes.lock().unwrap_or_else(PoisonError::into_inner);
                let last_error = || self.last_error().unwrap_or_default();
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
                    if slot.built {
                        self.restarts.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(plugin = %self.access.family, instance = slot.index, "plugin instance rebuilt");
                    } else {
                        tracing::debug!(plugin = %self.access.family, instance = slot.index, "plugin instance added for concurrent calls");
                    }
                    slot.install(live);
                }
                Err(e) => {
                    let msg = e.to_string();
                    self.crashed(&msg);
                    return Err(CallFailure::Unavailable(msg));
                }
            }
        }
        slot.live
            .as_mut()
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

    /// Record that a reload of this family failed and this version stays
    /// loaded (`None`: a reload found this version's files as they are).
    pub fn set_failed_reload(&self, why: Option<String>) {
        *self.failed_reload.lock().unwrap_or_else(PoisonError::into_inner) = why;
    }

    fn failed_reload(&self) -> Option<String> {
        self.failed_reload
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn health(&self) -> PluginPhase {
        let c = self.crashes.lock().unwrap_or_else(PoisonError::into_inner);
        if c.failed {
            PluginPhase::Failed
        } else if c.retry_at.is_some_and(|t| t > Instant::now()) {
            PluginPhase::Restarting
        } else {
            PluginPhase::Ready
        }
    }

    /// Hand `batch` to the plugin's notification entry points, in order,
    /// each under its own deadline. A failed or backing-off plugin gets
    /// none (they are counted as dropped). A trap or an expired deadline
    /// discards the instance and the rest of the batch.
    pub async fn notify(&self, batch: Vec<Delivery>) {
        let plugin = &*self.access.family;
        let dropped = |n: usize, why: &str| {
            self.metrics
                .notifications_dropped
                .fetch_add(n as u64, Ordering::Relaxed);
            self.limiter.emit(plugin, || {
                tracing::warn!(plugin, dropped = n, "notifications dropped: {why}");
            });
        };
        if self.health() != PluginPhase::Ready {
            dropped(batch.len(), "the plugin is failed or backing off after a crash");
            return;
        }
        let Some(mut slot) = self.pool.first().await else {
            dropped(batch.len(), "the plugin's instances are gone");
            return;
        };
        let live = match self.ensure_live(&mut slot).await {
            Ok(l) => l,
            Err(e) => {
                dropped(batch.len(), &format!("{e:?}"));
                return;
            }
        };
        let total = batch.len();
        for (i, item) in batch.into_iter().enumerate() {
            let deadline = self.arm(&mut live.store);
            let (what, result) = match item {
                Delivery::Message { group, message } => match to_wit_message(message) {
                    Ok(m) => {
                        self.metrics
                            .notifications_delivered
                            .fetch_add(1, Ordering::Relaxed);
                        let entry = live.plugin.call_on_notification(&mut live.store, &group, &m);
                        ("on-notification", bounded(deadline, entry).await)
                    }
                    Err(e) => {
                        dropped(1, &format!("{e:?}"));
                        continue;
                    }
                },
                Delivery::Lost => {
                    let entry = live.plugin.call_on_events_lost(&mut live.store);
                    ("on-events-lost", bounded(deadline, entry).await)
                }
            };
            if let Err(stop) = result {
                let msg = match stop {
                    Stop::Deadline => format!(
                        "{what} did not finish within the {:?} deadline (limits.call_timeout_ms)",
                        self.limits.call_timeout
                    ),
                    Stop::Trap(msg) => format!("in {what}: {msg}"),
                };
                tracing::error!(plugin, "plugin crashed: {msg}; its instance is discarded");
                self.crashed(&msg);
                slot.discard();
                let rest = total - i - 1;
                if rest > 0 {
                    dropped(rest, "the plugin crashed earlier in the batch");
                }
                return;
            }
        }
        live.store.data_mut().deadline = None;
    }

    /// Call `op` with the JSON `input`; its output as one document (items
    /// a plugin streams are collected into an array, within the output
    /// limit).
    pub async fn call(&self, op: &str, input: &str) -> Result<String, CallFailure> {
        match self.call_with_output(op, input, OutputSink::Collect).await? {
            CallOutput::Document(doc) => Ok(doc),
            CallOutput::Streamed { .. } => {
                Err(self.bad_output("streamed output where one document was asked for".into()))
            }
        }
    }

    /// Call `op` with the JSON `input`, the items the plugin streams going
    /// to `sink` as they come.
    pub async fn call_with_output(
        &self,
        op: &str,
        input: &str,
        sink: OutputSink,
    ) -> Result<CallOutput, CallFailure> {
        let started = Instant::now();
        self.metrics.calls.fetch_add(1, Ordering::Relaxed);
        let result = self.call_inner(op, input, sink).await;
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

    /// A failure clients see as 504 `timeout`.
    fn timed_out(&self, message: String) -> CallFailure {
        CallFailure::Plugin {
            code: "timeout".into(),
            message,
            kernel: None,
        }
    }

    /// A failure clients see as 502 `bad-plugin-output`.
    fn bad_output(&self, why: String) -> CallFailure {
        let family = &self.access.family;
        self.limiter.emit(family, || {
            tracing::warn!(plugin = %family, "unusable plugin output: {why}");
        });
        CallFailure::Plugin {
            code: "bad-plugin-output".into(),
            message: format!("the plugin of family '{family}' answered with unusable output: {why}"),
            kernel: None,
        }
    }

    async fn call_inner(&self, op: &str, input: &str, sink: OutputSink) -> Result<CallOutput, CallFailure> {
        let family = &*self.access.family;
        let limit = self.limits.call_timeout;
        // Each instance serves one call at a time; waiting for an idle one
        // is bounded by the same deadline, so a queue behind slow calls
        // ends in 504 instead of growing. A call whose client went away
        // while it waited ends then: nothing has started, and each waiting
        // call holds its input, so calls abandoned faster than instances
        // free up would otherwise pile up past the API's connection cap.
        let lease = tokio::select! {
            biased;
            lease = self.pool.lease(limit) => lease,
            () = sink.reader_gone() => return Err(Self::client_gone_before_start()),
        };
        let mut slot = lease.ok_or_else(|| {
            self.timed_out(format!(
                "every instance of the plugin of family '{family}' stayed busy with earlier calls for the whole {limit:?} deadline (limits.instances sets how many); this call did not start"
            ))
        })?;
        let live = self.ensure_live(&mut slot).await?;
        let deadline = self.arm(&mut live.store);
        live.store.data_mut().output = Some(CallOutputState::new(sink, self.limits.output_bytes));
        let result = bounded(deadline, live.plugin.call_call(&mut live.store, op, input)).await;
        // Taking the output closes its stream, which tells the client's
        // side the call is over.
        let output = slot.live.as_mut().and_then(|live| {
            let state = live.store.data_mut();
            state.deadline = None;
            state.output.take()
        });
        match result {
            Ok(answer) => {
                self.succeeded();
                let output =
                    output.ok_or_else(|| self.bad_output("the call's output went missing".into()))?;
                let returned = match answer {
                    // A document the plugin returned is checked here; items
                    // were each checked as they came, and an array collected
                    // from them is not parsed again.
                    Ok(types::CallOutput::Document(doc)) => Some(self.check_output(doc)?),
                    Ok(types::CallOutput::Items) => None,
                    // An output that failed explains the plugin's error
                    // better than the plugin can.
                    Err(e) => {
                        return Err(output
                            .finish_with_error()
                            .map_or_else(|| self.plugin_error(e), |f| self.output_fault(f)));
                    }
                };
                output.finish(returned).map_err(|fault| self.output_fault(fault))
            }
            Err(Stop::Deadline) => {
                let msg = format!(
                    "the plugin of family '{family}' did not answer `{}` within its {limit:?} deadline (limits.call_timeout_ms); its instance is discarded and rebuilt on the next call",
                    one_line(op, MAX_OP_NAME)
                );
                tracing::error!(plugin = family, "{msg}");
                self.crashed(&msg);
                slot.discard();
                Err(self.timed_out(msg))
            }
            Err(Stop::Trap(msg)) => {
                tracing::error!(plugin = family, op = %one_line(op, MAX_OP_NAME), "plugin crashed: {msg}; its instance is discarded and rebuilt on the next call");
                self.crashed(&msg);
                slot.discard();
                Err(CallFailure::Crashed(msg))
            }
        }
    }

    /// The failure of a call whose client went away before an instance
    /// was free to start it.
    fn client_gone_before_start() -> CallFailure {
        CallFailure::Plugin {
            code: "client-gone".into(),
            message: "the client went away while the call waited for a free instance; it did not start"
                .into(),
            kernel: None,
        }
    }

    /// The failure a call whose output ended early answers with.
    fn output_fault(&self, fault: OutputFault) -> CallFailure {
        match fault {
            OutputFault::BadOutput(why) => self.bad_output(why),
            OutputFault::ClientGone => CallFailure::Plugin {
                code: "client-gone".into(),
                message: "the client went away before the output ended".into(),
                kernel: None,
            },
            OutputFault::ClientTooSlow(wait) => self.timed_out(format!(
                "the client did not read the output for {wait:?}, as long as the call's deadline allowed"
            )),
        }
    }

    /// The plugin's answer, if it is JSON within the output limit.
    fn check_output(&self, out: String) -> Result<String, CallFailure> {
        if out.len() > self.limits.output_bytes {
            return Err(self.bad_output(format!(
                "{} bytes, over its {}-byte limit (limits.output_kib)",
                out.len(),
                self.limits.output_bytes
            )));
        }
        if let Err(e) = super::json_check::check(&out) {
            return Err(self.bad_output(format!("not JSON ({e})")));
        }
        Ok(out)
    }

    /// The plugin's error, within bounds: a code that is a short lowercase
    /// name, a message no longer than the output limit.
    fn plugin_error(&self, e: types::CallError) -> CallFailure {
        if !valid_code(&e.code) {
            return self.bad_output(format!(
                "the error code '{}' is not a lowercase name of at most {MAX_CODE} bytes",
                one_line(&e.code, MAX_CODE)
            ));
        }
        let max = self.limits.output_bytes;
        CallFailure::Plugin {
            code: e.code,
            message: truncate(e.message, max),
            kernel: e.kernel.map(|k| genl_wire::KernelError {
                errno: k.errno,
                message: k.message.map(|m| truncate(m, max)),
                offset: k.offset,
            }),
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
        let consecutive_crashes = self
            .crashes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .consecutive;
        PluginStatus {
            path: self.path.display().to_string(),
            sha256: self.sha256.clone(),
            from_cache: self.from_cache,
            state: self.health(),
            restarts: self.restarts.load(Ordering::Relaxed),
            consecutive_crashes,
            last_error: self.last_error(),
            failed_reload: self.failed_reload(),
            log_lines_suppressed: self.limiter.suppressed_total.load(Ordering::Relaxed),
            events_refused: self.metrics.events_refused.load(Ordering::Relaxed),
            notifications_dropped: self.metrics.notifications_dropped.load(Ordering::Relaxed),
            limits: LimitsView {
                memory_bytes: self.limits.memory_bytes,
                call_timeout_ms: self.limits.call_timeout.as_millis(),
                fuel: self.limits.fuel,
            },
            pool: self.pool_view(),
            description: self.description.clone(),
        }
    }

    /// The pool's instances and memory limits.
    pub fn pool_view(&self) -> PoolView {
        let counts = self.pool.counts();
        PoolView {
            counts,
            memory_bytes_per_instance: self.limits.memory_bytes,
            memory_bytes_total: self.limits.memory_bytes.saturating_mul(counts.size),
        }
    }

    /// SHA-256 of the plugin's `.wasm`.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}
