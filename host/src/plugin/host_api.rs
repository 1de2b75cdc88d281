//! What a plugin can reach: the WIT imports, implemented against the
//! gateway, each checked against the operator's family file.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use genl_wire::consts::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE};
use genl_wire::{FamilyInfo, GenlHeader};
use tokio::sync::broadcast;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::genl::gateway::{events, kernel, log, output, types};
use super::budget::Budget;
use super::log_limit::{LogLimiter, one_line};
use super::metrics::PluginMetrics;
use super::output::CallOutputState;
use crate::config::Limits;
use crate::families::{FamilyResolver, ResolveError};
use crate::gateway::Listener;
use crate::netlink::{DumpParts, OwnedMessage, RequestBounds, RequestError, Requester};

/// Flags a plugin may add to a `do` request: the "new request" modifiers,
/// never REPLACE and EXCL together (that is NLM_F_DUMP, see below).
const ALLOWED_EXTRA_FLAGS: u16 = NLM_F_CREATE | NLM_F_EXCL | NLM_F_REPLACE | NLM_F_APPEND;

/// Most dumps one instance may have open at once: each holds a socket and
/// a part buffer.
pub const MAX_OPEN_DUMPS: usize = 4;

/// Longest event topic; topics are short names like "link".
pub const MAX_TOPIC: usize = 64;

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
    pub(crate) budget: Budget,
    pub(crate) limits: Limits,
    pub(crate) log_limiter: Arc<LogLimiter>,
    pub(crate) metrics: Arc<PluginMetrics>,
    /// When the running entry point must be done: checked by the epoch
    /// callback while wasm runs and used to size kernel waits.
    pub(crate) deadline: Option<Instant>,
    /// The running call's output; `None` outside `call`.
    pub(crate) output: Option<CallOutputState>,
    /// Dumps the plugin holds open (at most [`MAX_OPEN_DUMPS`]).
    pub(crate) open_dumps: usize,
}

/// Kernel waits end this long before the entry point's deadline (at least
/// [`MIN_KERNEL_MARGIN`]) so the plugin can still turn the `timeout` into
/// an answer: a slow kernel is a 504, never a plugin crash.
const KERNEL_MARGIN_DIVISOR: u32 = 5;
const MIN_KERNEL_MARGIN: Duration = Duration::from_millis(20);

impl PluginState {
    /// The bounds of one kernel request made now: the socket's own timeout,
    /// cut to end before the entry point's deadline; replies no larger than
    /// the plugin's limit (nor its memory, which they must fit in).
    fn request_bounds(&self) -> RequestBounds {
        let mut wait = self.kernel.requester.default_bounds().wait;
        if let Some(deadline) = self.deadline {
            let margin = (self.limits.call_timeout / KERNEL_MARGIN_DIVISOR).max(MIN_KERNEL_MARGIN);
            let left = deadline
                .saturating_duration_since(Instant::now())
                .saturating_sub(margin);
            wait = wait.min(left);
        }
        RequestBounds {
            wait,
            reply_bytes: self.limits.reply_bytes.min(self.limits.memory_bytes),
        }
    }

    /// A warning about this plugin, through its log rate limit so a plugin
    /// cannot make the host flood the log on its behalf either.
    fn warn(&self, what: impl FnOnce()) {
        self.log_limiter.emit(&self.kernel.family, what);
    }
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
        // Boxed, as the other rare waits of a request are: wasmtime boxes
        // each host call's future, and one kept within the allocator's
        // per-thread cache (~1 KiB) is taken and freed there, not from the
        // shared heap, on every call.
        Box::pin(self.resolver.resolve(&self.family))
            .await
            .map_err(|e| match e {
                // A configured name was checked when its file was read.
                ResolveError::Absent(_) | ResolveError::InvalidName(_) => {
                    types::RequestError::FamilyAbsent(e.to_string())
                }
                ResolveError::Request { source, .. } => to_wit_error(source),
            })
    }

    /// The family file as refusals name it: its file name only, since
    /// refusals reach clients, who need not learn the host's paths.
    fn config_file(&self) -> &str {
        std::path::Path::new(&*self.config_path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("the family file")
    }

    fn check(&self, kind: &str, cmd: u8, allowed: &[u8]) -> Result<(), types::RequestError> {
        if allowed.contains(&cmd) {
            Ok(())
        } else {
            Err(types::RequestError::Denied(format!(
                "command {cmd} of family {} is not allowed as a {kind} request; add it to [commands] {kind} in the operator's family file ({}) if the operator agrees",
                self.family,
                self.config_file()
            )))
        }
    }

    /// Flags of a `do`: only the "new request" modifiers, and never the two
    /// that together make the kernel run it as a dump (outside the dump
    /// turn, and for a command perhaps allowed only as a `do`).
    fn check_do_flags(extra_flags: u16) -> Result<(), types::RequestError> {
        if extra_flags & !ALLOWED_EXTRA_FLAGS != 0 {
            return Err(types::RequestError::Denied(format!(
                "flags {extra_flags:#x} include bits other than NLM_F_CREATE, EXCL, REPLACE, APPEND"
            )));
        }
        if extra_flags & NLM_F_DUMP == NLM_F_DUMP {
            return Err(types::RequestError::Denied(format!(
                "flags {extra_flags:#x} carry NLM_F_REPLACE and NLM_F_EXCL together, which is NLM_F_DUMP: generic netlink would run this `do` as a dump; use dump-request"
            )));
        }
        Ok(())
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
        bounds: RequestBounds,
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
        match socket
            .do_request_bounded(family.id, genl, 0, &payload, bounds)
            .await
        {
            Ok(msgs) => msgs.into_iter().map(to_wit_message).collect(),
            Err(e) => Err(to_wit_error(e)),
        }
    }

    /// Start a dump for the plugin: checked, then on a socket of its own.
    async fn dump_start(
        &self,
        cmd: u8,
        payload: Vec<u8>,
        bounds: RequestBounds,
    ) -> Result<DumpParts, types::RequestError> {
        self.check("dump", cmd, &self.allow_dump)?;
        let family = self.family_info().await?;
        if self.validate {
            self.check_policy(&family, cmd, true, &payload).await?;
        }
        let genl = GenlHeader {
            cmd,
            version: u8::try_from(family.version).unwrap_or(u8::MAX),
        };
        self.requester
            .dump_parts(family.id, genl, &payload, bounds)
            .await
            .map_err(to_wit_error)
    }

    /// Send a request for the plugin: checked, then on the shared socket.
    async fn request(
        &self,
        dump: bool,
        cmd: u8,
        extra_flags: u16,
        payload: Vec<u8>,
        bounds: RequestBounds,
    ) -> Result<Vec<types::Message>, types::RequestError> {
        if dump {
            self.check("dump", cmd, &self.allow_dump)?;
        } else {
            self.check("do", cmd, &self.allow_do)?;
            Self::check_do_flags(extra_flags)?;
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
            Box::pin(self.requester.dump_bounded(family.id, genl, &payload, bounds)).await
        } else {
            self.requester
                .do_request_bounded(family.id, genl, extra_flags, &payload, bounds)
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
        // Retried already; the plugin's SDK names it `dump-interrupted`, as
        // it does a streamed dump's first flagged part.
        RequestError::DumpInterrupted(_) => types::RequestError::Interrupted,
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
        let bounds = self.request_bounds();
        self.kernel
            .request(false, cmd, extra_flags, payload, bounds)
            .await
    }

    async fn dump_start(
        &mut self,
        cmd: u8,
        payload: Vec<u8>,
    ) -> Result<Resource<DumpParts>, types::RequestError> {
        if self.open_dumps >= MAX_OPEN_DUMPS {
            return Err(types::RequestError::Denied(format!(
                "a plugin may hold at most {MAX_OPEN_DUMPS} dumps open at once; read them to the end or drop them"
            )));
        }
        let bounds = self.request_bounds();
        let dump = self.kernel.dump_start(cmd, payload, bounds).await?;
        let handle = self.table.push(dump).map_err(|e| {
            types::RequestError::Io(format!(
                "the plugin holds too many host resources ({e}; limits.host_resources)"
            ))
        })?;
        self.open_dumps += 1;
        Ok(handle)
    }

    async fn listen_request(
        &mut self,
        cmd: u8,
        payload: Vec<u8>,
    ) -> Result<Vec<types::Message>, types::RequestError> {
        let bounds = self.request_bounds();
        self.kernel.listen_request(cmd, payload, bounds).await
    }
}

impl kernel::HostDump for PluginState {
    async fn next_part(&mut self, dump: Resource<DumpParts>) -> Result<Option<Vec<u8>>, types::RequestError> {
        let bounds = self.request_bounds();
        let dump = self
            .table
            .get_mut(&dump)
            .map_err(|e| types::RequestError::Io(format!("no such dump: {e}")))?;
        let part = dump.next_part_within(bounds).await.map_err(to_wit_error)?;
        // The part the kernel flagged is replaced by the error: what it
        // holds may be inconsistent.
        if dump.interrupted() {
            return Err(types::RequestError::Interrupted);
        }
        Ok(part)
    }

    async fn drop(&mut self, dump: Resource<DumpParts>) -> wasmtime::Result<()> {
        // Dropping a dump not read to its end closes its socket: the kernel
        // ends the dump.
        self.table.delete(dump)?;
        self.open_dumps = self.open_dumps.saturating_sub(1);
        Ok(())
    }
}

impl output::Host for PluginState {
    async fn items(&mut self, items: Vec<String>) -> Result<(), String> {
        // The same wait a kernel request gets: it ends before the call's
        // deadline, so a slow client is an error the plugin returns, never
        // a crash.
        let wait = self.request_bounds().wait;
        match self.output.as_mut() {
            Some(out) => out.send(items, wait).await,
            None => Err("output.items works only while `call` runs".into()),
        }
    }

    async fn items_joined(&mut self, text: String) -> Result<(), String> {
        let wait = self.request_bounds().wait;
        match self.output.as_mut() {
            Some(out) => out.send_joined(text, wait).await,
            None => Err("output.items-joined works only while `call` runs".into()),
        }
    }
}

impl log::Host for PluginState {
    async fn log(&mut self, level: types::Level, message: String) {
        let plugin = &*self.kernel.family;
        let message = one_line(&message, self.limits.log_line_bytes);
        self.log_limiter.emit(plugin, || match level {
            types::Level::Trace => tracing::trace!(plugin, "{message}"),
            types::Level::Debug => tracing::debug!(plugin, "{message}"),
            types::Level::Info => tracing::info!(plugin, "{message}"),
            types::Level::Warn => tracing::warn!(plugin, "{message}"),
            types::Level::Error => tracing::error!(plugin, "{message}"),
        });
    }
}

/// Why an event was refused at publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventRefusal {
    /// Empty, too long, or with characters that cannot travel in an SSE
    /// `event:` line (controls, CR/LF).
    Topic,
    /// Topic plus payload over the plugin's `limits.event_kib`.
    TooLarge,
    /// Subscribers splice the payload into JSON.
    NotJson,
}

/// Whether `name` (an operation or a topic) is a plain name of at most `max`
/// bytes: ASCII letters, digits, `-`, `_` and `.`. Names become URL path
/// segments, SSE event names and table cells, where a bidi override, a line
/// separator or a look-alike letter would mislead whoever reads them.
pub(crate) fn plain_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn check_event(topic: &str, payload: &str, max_bytes: usize) -> Result<(), EventRefusal> {
    if !plain_name(topic, MAX_TOPIC) {
        return Err(EventRefusal::Topic);
    }
    if topic.len() + payload.len() > max_bytes {
        return Err(EventRefusal::TooLarge);
    }
    if super::json_check::check(payload).is_err() {
        return Err(EventRefusal::NotJson);
    }
    Ok(())
}

impl events::Host for PluginState {
    async fn publish(&mut self, topic: String, payload: String) {
        if let Err(why) = check_event(&topic, &payload, self.limits.event_bytes) {
            self.metrics.events_refused.fetch_add(1, Ordering::Relaxed);
            let plugin = &*self.kernel.family;
            let topic = one_line(&topic, MAX_TOPIC);
            let (size, limit) = (payload.len(), self.limits.event_bytes);
            self.warn(|| match why {
                EventRefusal::Topic => tracing::warn!(
                    plugin,
                    %topic,
                    "dropped an event: its topic is empty, longer than {MAX_TOPIC} bytes or has characters other than ASCII letters, digits, '-', '_' and '.'"
                ),
                EventRefusal::TooLarge => tracing::warn!(
                    plugin,
                    %topic,
                    size,
                    "dropped an event larger than the plugin's {limit}-byte limit (limits.event_kib)"
                ),
                EventRefusal::NotJson => {
                    tracing::warn!(plugin, %topic, "dropped an event whose payload is not JSON")
                }
            });
            return;
        }
        self.metrics.events_published.fetch_add(1, Ordering::Relaxed);
        // No subscriber is not an error: events are best-effort fan-out.
        let _ = self.events.send(Event {
            family: self.kernel.family.clone(),
            topic,
            payload,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The contract's `interrupted` is what a dump the kernel flagged
    /// (NLM_F_DUMP_INTR) ends in, on either way a plugin reads it: a
    /// collected dump whose retries the host used up must not arrive as
    /// `io`, which clients would see as a 502 instead of a 503 to retry.
    #[test]
    fn an_interrupted_collected_dump_reaches_the_plugin_as_interrupted() {
        let e = to_wit_error(RequestError::DumpInterrupted(3));
        assert!(matches!(e, types::RequestError::Interrupted), "{e:?}");
    }

    #[test]
    fn do_flags_never_make_a_dump() {
        // Values from <linux/netlink.h>: REPLACE 0x100, EXCL 0x200,
        // CREATE 0x400, APPEND 0x800; NLM_F_DUMP is ROOT|MATCH = 0x300.
        for ok in [0, 0x100, 0x200, 0x400, 0x800, 0x500, 0x600, 0xd00] {
            assert!(KernelAccess::check_do_flags(ok).is_ok(), "{ok:#x}");
        }
        for bad in [0x300, 0x700, 0xf00, 0x1, 0x8, 0x1000] {
            assert!(KernelAccess::check_do_flags(bad).is_err(), "{bad:#x}");
        }
    }

    #[test]
    fn event_topics_and_sizes_are_checked_at_publish() {
        assert_eq!(check_event("link", "{}", 100), Ok(()));
        assert_eq!(check_event("a\r\nb", "{}", 100), Err(EventRefusal::Topic));
        assert_eq!(check_event("", "{}", 100), Err(EventRefusal::Topic));
        assert_eq!(check_event("t\u{202e}x", "{}", 100), Err(EventRefusal::Topic));
        assert_eq!(check_event("page-pool.add_ntf", "{}", 100), Ok(()));
        assert_eq!(
            check_event("t", &format!("\"{}\"", "x".repeat(200)), 100),
            Err(EventRefusal::TooLarge)
        );
        assert_eq!(check_event("t", "{", 100), Err(EventRefusal::NotJson));
    }
}
