//! Operator configuration: `gateway.toml` for the host, one file per family
//! in the drop-in directory (`families.d/*.toml`).
//!
//! Relative paths in a file are resolved against that file's directory, so
//! a configuration tree can be moved as a whole. Every error names the file,
//! and where it can the key, and says what to do.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use genl_plugin_sdk::ynl::{Spec, bundled};
use serde::Deserialize;

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source} (check the path and its permissions)")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not fit the schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (line, column, key).
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{path}: {key}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
}

impl ConfigError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            ConfigError::Read { path, .. }
            | ConfigError::Parse { path, .. }
            | ConfigError::Invalid { path, .. } => path,
        }
    }
}

/// `gateway.toml`.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where the file was read from.
    pub path: PathBuf,
    /// Client API settings.
    pub api: ApiConfig,
    /// Directory holding plugin `.wasm` files.
    pub plugin_dir: PathBuf,
    /// Directory holding one `.toml` per family.
    pub families_dir: PathBuf,
    /// Defaults for every family.
    pub limits: Limits,
    /// Timeout of one netlink request.
    pub request_timeout: Duration,
    /// The network namespace to talk to (a `/run/netns/NAME` path), or the
    /// gateway's own.
    pub netns: Option<PathBuf>,
    /// Default receive buffer of each family's listener socket.
    pub receive_buffer: usize,
    /// Most request sockets open at once (concurrent requests and dumps).
    pub request_sockets: usize,
    /// Where compiled components are cached (None: no cache).
    pub cache_dir: Option<PathBuf>,
    /// Poll the plugin and families directories and reload on change.
    pub watch: bool,
    /// Count fuel in every plugin, so families may set `limits.fuel`.
    pub fuel_metering: bool,
    /// The fleet bus, if `[bus]` is configured.
    pub bus: Option<crate::fleet::BusConfig>,
}

/// Client API settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Unix socket path.
    pub socket: PathBuf,
    /// The socket file's permission bits.
    pub socket_mode: u32,
    /// The group to give the socket file, if any.
    pub socket_group: Option<String>,
    /// Loopback TCP address, if enabled.
    pub tcp: Option<SocketAddr>,
    /// Bearer tokens accepted on TCP.
    pub tokens: Vec<Token>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Events a subscriber may fall behind before it is cut off.
    pub event_backlog: usize,
    /// Bytes of events a subscriber may fall behind before it is cut off.
    pub event_backlog_bytes: usize,
    /// Connections served at once (per listener); more wait in the
    /// kernel's accept queue.
    pub max_connections: usize,
    /// Connections one user (by the client's uid) may hold at once on
    /// each listener; more are answered 429 and closed. Root is
    /// not counted. At most `max_connections`; by default a quarter of it,
    /// at most 128.
    pub max_connections_per_user: usize,
    /// Time a client has to send a request's headers; also how long an
    /// idle keep-alive connection is kept.
    pub header_timeout: Duration,
    /// Time a client has to send a request's body.
    pub body_timeout: Duration,
    /// Time an answer may wait on a client that does not read it (its
    /// socket full) before the connection is closed.
    pub write_timeout: Duration,
}

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// List, describe, follow events, call read-only ops.
    Read,
    /// Also call ops that change kernel state.
    Write,
    /// Also reload plugins.
    Admin,
}

/// A bearer token for the TCP API.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// A name for logs.
    pub name: String,
    /// The secret.
    pub secret: String,
    /// Families it may reach; `*` for all.
    pub families: Vec<String>,
    /// What it may do.
    pub access: Access,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("families", &self.families)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

impl Token {
    /// Whether the token reaches `family`.
    pub fn covers(&self, family: &str) -> bool {
        self.families.iter().any(|f| f == "*" || f == family)
    }

    /// Whether the token reaches every family (`*`).
    pub fn covers_all(&self) -> bool {
        self.families.iter().any(|f| f == "*")
    }
}

/// Per-plugin resource limits. Every resource a plugin can make the host
/// spend on its behalf has one of these bounds (docs/threat-model.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory a plugin instance may hold, summed over all its
    /// memories.
    pub memory_bytes: usize,
    /// Wall-clock time one entry point (init, describe, call, a
    /// notification) may take, time in host calls included.
    pub call_timeout: Duration,
    /// Fuel (roughly, wasm instructions) one call may burn; needs
    /// `limits.fuel_metering` in gateway.toml.
    pub fuel: Option<u64>,
    /// Log lines per second a plugin may write (and the host may write
    /// about it) before lines are suppressed.
    pub log_lines_per_sec: u32,
    /// Consecutive crashes after which the plugin is marked failed.
    pub max_crashes: u32,
    /// Largest call output, error message or description the host takes
    /// from the plugin.
    pub output_bytes: usize,
    /// Largest event (topic plus payload) the plugin may publish.
    pub event_bytes: usize,
    /// Longest log line kept; the rest is cut.
    pub log_line_bytes: usize,
    /// Largest kernel reply (all messages of a dump) collected for one
    /// request of the plugin.
    pub reply_bytes: usize,
    /// Host resources (WASI streams, pollables, ...) a plugin instance may
    /// hold at once.
    pub host_resources: usize,
    /// Instances of the plugin that may serve calls at once (each its own
    /// store, memory and `init`), created as concurrent calls need them.
    pub instances: usize,
}

/// Most instances one family's plugin may have (`limits.instances`).
pub const MAX_INSTANCES_PER_FAMILY: u64 = 64;

/// The default pool size: one instance per core, so one family can use
/// every core, within [`MAX_INSTANCES_PER_FAMILY`].
fn default_instances() -> usize {
    std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(to_usize(MAX_INSTANCES_PER_FAMILY))
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            call_timeout: Duration::from_secs(5),
            fuel: None,
            log_lines_per_sec: 50,
            max_crashes: 5,
            output_bytes: 1 << 20,
            event_bytes: 64 << 10,
            log_line_bytes: 2048,
            reply_bytes: 16 << 20,
            host_resources: 256,
            instances: default_instances(),
        }
    }
}

/// One family file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyConfig {
    /// Where the file was read from.
    pub path: PathBuf,
    /// The generic netlink family name, as `genl ctrl list` shows it.
    pub family: String,
    /// The plugin component.
    pub plugin: PathBuf,
    /// Multicast groups to join and deliver to the plugin.
    pub groups: Vec<String>,
    /// Commands the plugin may send as `do` requests.
    pub allow_do: Vec<u8>,
    /// Commands the plugin may dump.
    pub allow_dump: Vec<u8>,
    /// Limits for this family's plugin.
    pub limits: Limits,
    /// The plugin's own key/value configuration.
    pub config: BTreeMap<String, String>,
    /// Check the plugin's requests against the kernel's policy first.
    pub validate_requests: bool,
    /// Receive buffer of this family's listener socket.
    pub receive_buffer: usize,
    /// Notifications queued for the plugin before new ones are dropped.
    pub queue: usize,
    /// The family's part in the fleet bus (which topics go to it).
    pub bus: crate::fleet::FamilyBus,
}

impl FamilyConfig {
    /// Whether the file says `spec = "kernel-policy"`: the plugin's spec is
    /// written from the kernel's attribute policy (see
    /// [`crate::ynl_fallback`]).
    pub fn uses_kernel_policy(&self) -> bool {
        self.config.get("spec").map(String::as_str) == Some(crate::ynl_fallback::KERNEL_POLICY)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    api: RawApi,
    plugins: RawPlugins,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    netlink: RawNetlink,
    bus: Option<crate::fleet::config::RawBus>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    socket: PathBuf,
    socket_mode: Option<String>,
    socket_group: Option<String>,
    tcp: Option<String>,
    max_body_bytes: Option<usize>,
    event_backlog: Option<usize>,
    event_backlog_bytes: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_user: Option<usize>,
    header_timeout_ms: Option<u64>,
    body_timeout_ms: Option<u64>,
    write_timeout_ms: Option<u64>,
    #[serde(default)]
    tokens: Vec<RawToken>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: String,
    token: Option<String>,
    token_file: Option<PathBuf>,
    #[serde(default = "all_families")]
    families: Vec<String>,
    access: Access,
}

fn all_families() -> Vec<String> {
    vec!["*".to_owned()]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlugins {
    dir: PathBuf,
    families_dir: PathBuf,
    cache_dir: Option<PathBuf>,
    watch: Option<bool>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory_mib: Option<u64>,
    call_timeout_ms: Option<u64>,
    fuel: Option<u64>,
    log_lines_per_sec: Option<u32>,
    max_crashes: Option<u32>,
    output_kib: Option<u64>,
    event_kib: Option<u64>,
    log_line_bytes: Option<u64>,
    reply_mib: Option<u64>,
    host_resources: Option<u64>,
    instances: Option<u64>,
    /// Only in gateway.toml.
    fuel_metering: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNetlink {
    request_timeout_ms: Option<u64>,
    netns: Option<String>,
    receive_buffer_kib: Option<usize>,
    request_sockets: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFamily {
    family: String,
    plugin: PathBuf,
    /// A YNL spec for the plugin: a bundled spec's name, or a `.yaml` file.
    spec: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    commands: RawCommands,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    config: BTreeMap<String, toml::Value>,
    validate_requests: Option<bool>,
    receive_buffer_kib: Option<usize>,
    queue: Option<usize>,
    #[serde(default)]
    bus: crate::fleet::config::RawFamilyBus,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCommands {
    #[serde(default, rename = "do")]
    allow_do: Vec<CommandRef>,
    #[serde(default, rename = "dump")]
    allow_dump: Vec<CommandRef>,
}

/// A command in an allowlist: its number, or (with a `spec`) the name of
/// the spec's operation.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum CommandRef {
    Number(u8),
    Name(String),
}

/// What an allowlisted command is, according to the family's spec.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Grant {
    /// `do` or `dump`.
    pub kind: &'static str,
    /// The command number sent to the kernel.
    pub cmd: u8,
    /// The spec's operation with that request number, if the spec has one.
    pub op: Option<String>,
    /// Whether the spec offers that operation in this mode.
    pub in_spec: bool,
    /// The kernel requires CAP_NET_ADMIN for it (`admin-perm` in the spec).
    pub admin_perm: bool,
}

/// The YNL spec a family's plugin is given, if any: the text passed as
/// `[config] spec-yaml`, or the bundled spec named by `[config] spec`.
fn family_spec(config: &BTreeMap<String, String>) -> Option<Result<Spec, String>> {
    if let Some(text) = config.get("spec-yaml") {
        return Some(Spec::load(text).map_err(|e| e.to_string()));
    }
    let name = config.get("spec")?;
    // The host writes that spec from the kernel's policy when the family is
    // present; there is nothing to load from the file.
    if name == crate::ynl_fallback::KERNEL_POLICY {
        return None;
    }
    Some(match bundled::load(name) {
        Some(r) => r.map_err(|e| e.to_string()),
        None => Err(format!(
            "no bundled spec named '{name}'; bundled: {}",
            bundled::names().collect::<Vec<_>>().join(", ")
        )),
    })
}

/// Resolve an allowlist: numbers stay, operation names become the spec's
/// request numbers (the operation must have that mode).
fn resolve_commands(list: &[CommandRef], dump: bool, spec: Option<&Spec>) -> Result<Vec<u8>, String> {
    let kind = if dump { "dump" } else { "do" };
    list.iter()
        .map(|c| match c {
            CommandRef::Number(n) => Ok(*n),
            CommandRef::Name(name) => {
                let spec = spec.ok_or_else(|| {
                    format!("'{name}': command names need a `spec` for the family; use numbers otherwise")
                })?;
                let op = spec.op(name).ok_or_else(|| {
                    let names: Vec<&str> = spec
                        .ops
                        .iter()
                        .filter(|o| o.request_value.is_some())
                        .map(|o| o.name.as_str())
                        .collect();
                    format!(
                        "'{name}' is not an operation of spec '{}'; its operations: {}",
                        spec.name,
                        names.join(", ")
                    )
                })?;
                let has_mode = if dump { op.dump.is_some() } else { op.do_.is_some() };
                match (op.request_value, has_mode) {
                    (Some(v), true) => Ok(v),
                    _ => Err(format!("'{name}' has no {kind} in spec '{}'", spec.name)),
                }
            }
        })
        .collect()
}

impl FamilyConfig {
    /// Each allowlisted command with what the family's spec says it is
    /// (empty `op` without a spec), so an operator sees what they granted.
    pub fn grants(&self) -> Vec<Grant> {
        let spec = family_spec(&self.config).and_then(Result::ok);
        let grant = |kind: &'static str, cmd: u8| {
            let op = spec
                .as_ref()
                .and_then(|s| s.ops.iter().find(|o| o.request_value == Some(cmd)));
            Grant {
                kind,
                cmd,
                op: op.map(|o| o.name.clone()),
                in_spec: op.is_some_and(|o| {
                    if kind == "dump" {
                        o.dump.is_some()
                    } else {
                        o.do_.is_some()
                    }
                }),
                admin_perm: op.is_some_and(|o| o.admin_perm),
            }
        };
        self.allow_do
            .iter()
            .map(|c| grant("do", *c))
            .chain(self.allow_dump.iter().map(|c| grant("dump", *c)))
            .collect()
    }
}

/// Largest YNL spec file read for a plugin (the kernel's largest, nl80211,
/// is about 200 KiB).
const MAX_SPEC_BYTES: u64 = 4 << 20;

/// The `[config]` entry that hands a family file's `spec` to its plugin: a
/// bundled spec by name (`spec`), or the text of a `.yaml` file, read here
/// because plugins cannot read files (`spec-yaml`).
fn spec_entry(family_file: &Path, spec: &str) -> Result<(&'static str, String), String> {
    if spec == crate::ynl_fallback::KERNEL_POLICY {
        // Written from the kernel's policy when the family is present
        // (gateway::reload), since it may be absent now.
        return Ok(("spec", spec.to_owned()));
    }
    let is_file = spec.ends_with(".yaml") || spec.ends_with(".yml") || spec.contains('/');
    if !is_file {
        return Ok(("spec", spec.to_owned()));
    }
    let dir = family_file.parent().unwrap_or(Path::new("."));
    let path = resolve(dir, PathBuf::from(spec));
    let meta = std::fs::metadata(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if meta.len() > MAX_SPEC_BYTES {
        return Err(format!(
            "{} is {} bytes; a spec may have at most {MAX_SPEC_BYTES}",
            path.display(),
            meta.len()
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(("spec-yaml", text))
}

/// A buffer size in KiB within what netlink sockets can take.
fn check_kib(
    path: &Path,
    key: &'static str,
    kib: Option<usize>,
    default: usize,
) -> Result<usize, ConfigError> {
    let kib = kib.unwrap_or(default);
    if !(1..=1 << 20).contains(&kib) {
        return Err(ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message: format!("{kib} is out of range; use 1 to 1048576 (KiB)"),
        });
    }
    Ok(kib << 10)
}

/// Refuse a file holding a secret that anyone but its owner may read or
/// change, or that someone other than root or the gateway's user owns, as
/// ssh does with private keys.
pub(crate) fn check_secret_file(path: &Path, what: &str, key: &'static str) -> Result<(), ConfigError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |message| ConfigError::Invalid {
        path: path.to_owned(),
        key,
        message,
    };
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(invalid(format!(
            "holds {what} but its mode is {mode:04o}, so other users may read it; run `chmod 600 {}`",
            path.display()
        )));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(invalid(format!(
            "holds {what} but is owned by uid {}, neither root nor the gateway's user (uid {euid}); run `chown {euid} {}`",
            meta.uid(),
            path.display()
        )));
    }
    Ok(())
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        // toml's message spans several lines (a source excerpt); keep it on
        // one so each error is one log line.
        message: e.to_string().split_whitespace().collect::<Vec<_>>().join(" "),
    })
}

/// The family a family file names, read without the rest of the file's
/// checks (no spec is parsed); `None` if the file does not parse.
pub fn family_named_in(path: &Path) -> Option<String> {
    let text = read(path).ok()?;
    parse::<RawFamily>(path, &text).ok().map(|raw| raw.family)
}

fn base_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub(crate) fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() { p } else { base.join(p) }
}

/// `value` if it lies in `range`, else an error naming `key` and the range.
pub(crate) fn in_range(
    path: &Path,
    key: &'static str,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message: format!(
                "{value} is out of range; use {} to {}",
                range.start(),
                range.end()
            ),
        })
    }
}

fn to_usize(n: u64) -> usize {
    // Every range checked above fits in usize on the 64-bit targets the
    // gateway runs on; saturate rather than wrap elsewhere.
    usize::try_from(n).unwrap_or(usize::MAX)
}

impl RawLimits {
    fn apply(self, path: &Path, defaults: Limits) -> Result<Limits, ConfigError> {
        let mut limits = defaults;
        if let Some(mib) = self.memory_mib {
            limits.memory_bytes = to_usize(in_range(path, "limits.memory_mib", mib, 1..=4096)?) << 20;
        }
        if let Some(ms) = self.call_timeout_ms {
            limits.call_timeout =
                Duration::from_millis(in_range(path, "limits.call_timeout_ms", ms, 1..=600_000)?);
        }
        if let Some(fuel) = self.fuel {
            limits.fuel = Some(fuel);
        }
        if let Some(n) = self.log_lines_per_sec {
            limits.log_lines_per_sec = n.max(1);
        }
        if let Some(n) = self.max_crashes {
            limits.max_crashes = n.max(1);
        }
        if let Some(kib) = self.output_kib {
            limits.output_bytes = to_usize(in_range(path, "limits.output_kib", kib, 1..=65_536)?) << 10;
        }
        if let Some(kib) = self.event_kib {
            limits.event_bytes = to_usize(in_range(path, "limits.event_kib", kib, 1..=16_384)?) << 10;
        }
        if let Some(n) = self.log_line_bytes {
            limits.log_line_bytes = to_usize(in_range(path, "limits.log_line_bytes", n, 80..=65_536)?);
        }
        if let Some(mib) = self.reply_mib {
            limits.reply_bytes = to_usize(in_range(path, "limits.reply_mib", mib, 1..=4096)?) << 20;
        }
        if let Some(n) = self.host_resources {
            limits.host_resources = to_usize(in_range(path, "limits.host_resources", n, 16..=65_536)?);
        }
        if let Some(n) = self.instances {
            limits.instances = to_usize(in_range(
                path,
                "limits.instances",
                n,
                1..=MAX_INSTANCES_PER_FAMILY,
            )?);
        }
        Ok(limits)
    }
}

impl GatewayConfig {
    /// Read and check `gateway.toml`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let raw: RawGateway = parse(path, &read(path)?)?;
        let base = base_dir(path);
        let tcp = match raw.api.tcp {
            None => None,
            Some(s) => {
                let addr: SocketAddr = s.parse().map_err(|e| ConfigError::Invalid {
                    path: path.to_owned(),
                    key: "api.tcp",
                    message: format!("'{s}' is not an address:port ({e}); e.g. \"127.0.0.1:7411\""),
                })?;
                if !addr.ip().is_loopback() {
                    return Err(ConfigError::Invalid {
                        path: path.to_owned(),
                        key: "api.tcp",
                        message: format!(
                            "{addr} is not a loopback address; the TCP API listens on loopback only"
                        ),
                    });
                }
                Some(addr)
            }
        };
        let invalid = |key, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        let socket_mode = match &raw.api.socket_mode {
            None => 0o660,
            Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| {
                    invalid(
                        "api.socket_mode",
                        format!("'{m}' is not an octal mode like \"0660\""),
                    )
                })?,
        };
        let mut tokens: Vec<Token> = Vec::new();
        if raw.api.tokens.iter().any(|t| t.token.is_some()) {
            check_secret_file(path, "inline [[api.tokens]] secrets", "api.tokens")?;
        }
        for t in raw.api.tokens {
            let secret = match (t.token, t.token_file) {
                (Some(s), None) => s,
                (None, Some(file)) => {
                    let file = resolve(&base, file);
                    check_secret_file(&file, &format!("the secret of token '{}'", t.name), "api.tokens")?;
                    read(&file)?.trim().to_owned()
                }
                _ => {
                    return Err(invalid(
                        "api.tokens",
                        format!("token '{}': give exactly one of `token` and `token_file`", t.name),
                    ));
                }
            };
            if secret.len() < 16 {
                return Err(invalid(
                    "api.tokens",
                    format!(
                        "token '{}' is shorter than 16 characters; use e.g. `openssl rand -hex 24`",
                        t.name
                    ),
                ));
            }
            if let Some(other) = tokens.iter().find(|o| o.secret == secret) {
                return Err(invalid(
                    "api.tokens",
                    format!(
                        "tokens '{}' and '{}' have the same secret, so one could act as the other; give each its own (`openssl rand -hex 24`)",
                        other.name, t.name
                    ),
                ));
            }
            tokens.push(Token {
                name: t.name,
                secret,
                families: t.families,
                access: t.access,
            });
        }
        if tcp.is_some() && tokens.is_empty() {
            return Err(invalid(
                "api.tcp",
                "the TCP API needs at least one [[api.tokens]] entry (the Unix socket needs none)".into(),
            ));
        }
        let max_connections = raw.api.max_connections.unwrap_or(512);
        if !(1..=65_536).contains(&max_connections) {
            return Err(invalid(
                "api.max_connections",
                format!("{max_connections} is out of range; use 1 to 65536"),
            ));
        }
        // By default a quarter of the listener, so one user never holds it
        // all, however small the operator makes it.
        let max_connections_per_user = raw
            .api
            .max_connections_per_user
            .unwrap_or((max_connections / 4).clamp(1, 128));
        if !(1..=max_connections).contains(&max_connections_per_user) {
            return Err(invalid(
                "api.max_connections_per_user",
                format!(
                    "{max_connections_per_user} is out of range; use 1 to max_connections ({max_connections}), or one user may hold every connection"
                ),
            ));
        }
        let timeout_ms = |key, v: Option<u64>, default: u64| match v.unwrap_or(default) {
            ms @ 1..=600_000 => Ok(ms),
            ms => Err(invalid(key, format!("{ms} is out of range; use 1 to 600000"))),
        };
        let event_backlog_bytes = raw.api.event_backlog_bytes.unwrap_or(4 << 20);
        if !(1024..=1 << 30).contains(&event_backlog_bytes) {
            return Err(invalid(
                "api.event_backlog_bytes",
                format!("{event_backlog_bytes} is out of range; use 1024 to 1073741824"),
            ));
        }
        let header_timeout_ms = timeout_ms("api.header_timeout_ms", raw.api.header_timeout_ms, 10_000)?;
        let body_timeout_ms = timeout_ms("api.body_timeout_ms", raw.api.body_timeout_ms, 10_000)?;
        let write_timeout_ms = timeout_ms("api.write_timeout_ms", raw.api.write_timeout_ms, 30_000)?;
        let request_timeout_ms = raw.netlink.request_timeout_ms.unwrap_or(5000);
        if !(1..=600_000).contains(&request_timeout_ms) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                key: "netlink.request_timeout_ms",
                message: format!("{request_timeout_ms} is out of range; use 1 to 600000"),
            });
        }
        let netns = raw.netlink.netns.map(|ns| {
            if ns.contains('/') {
                PathBuf::from(ns)
            } else {
                Path::new("/run/netns").join(ns)
            }
        });
        let receive_buffer = check_kib(
            path,
            "netlink.receive_buffer_kib",
            raw.netlink.receive_buffer_kib,
            4096,
        )?;
        let request_sockets = raw
            .netlink
            .request_sockets
            .unwrap_or(crate::netlink::DEFAULT_REQUEST_SOCKETS);
        if !(1..=256).contains(&request_sockets) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                key: "netlink.request_sockets",
                message: format!("{request_sockets} is out of range; use 1 to 256"),
            });
        }
        let limits = raw.limits.apply(path, Limits::default())?;
        if limits.fuel.is_some() && raw.limits.fuel_metering != Some(true) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                key: "limits.fuel",
                message: "fuel limits need `fuel_metering = true` in [limits]".into(),
            });
        }
        let bus = match raw.bus {
            Some(b) => Some(b.resolve(path, &base)?),
            None => None,
        };
        Ok(Self {
            bus,
            netns,
            receive_buffer,
            request_sockets,
            cache_dir: raw.plugins.cache_dir.map(|d| resolve(&base, d)),
            watch: raw.plugins.watch.unwrap_or(true),
            fuel_metering: raw.limits.fuel_metering.unwrap_or(false),
            path: path.to_owned(),
            api: ApiConfig {
                socket: resolve(&base, raw.api.socket),
                socket_mode,
                socket_group: raw.api.socket_group,
                tcp,
                tokens,
                max_body_bytes: raw.api.max_body_bytes.unwrap_or(1 << 20),
                event_backlog: raw.api.event_backlog.unwrap_or(4096).max(1),
                event_backlog_bytes,
                max_connections,
                max_connections_per_user,
                header_timeout: Duration::from_millis(header_timeout_ms),
                body_timeout: Duration::from_millis(body_timeout_ms),
                write_timeout: Duration::from_millis(write_timeout_ms),
            },
            plugin_dir: resolve(&base, raw.plugins.dir),
            families_dir: resolve(&base, raw.plugins.families_dir),
            limits,
            request_timeout: Duration::from_millis(request_timeout_ms),
        })
    }

    /// Read every `*.toml` in the families directory, in name order. Each
    /// file stands alone: a broken one is returned as an error beside the
    /// good ones, so it never stops the others.
    pub fn load_families(&self) -> Result<Vec<Result<FamilyConfig, ConfigError>>, ConfigError> {
        let mut families: Vec<Result<FamilyConfig, ConfigError>> =
            self.family_files()?.iter().map(|p| self.load_family(p)).collect();
        // A family served twice would route its messages ambiguously.
        for i in 0..families.len() {
            let dup = match &families[i] {
                Ok(f) => families[..i]
                    .iter()
                    .flatten()
                    .find(|g| g.family == f.family)
                    .map(|g| (f.path.clone(), f.family.clone(), g.path.clone())),
                Err(_) => None,
            };
            if let Some((path, family, first)) = dup {
                families[i] = Err(ConfigError::Invalid {
                    path,
                    key: "family",
                    message: format!(
                        "'{family}' is already configured in {}; keep one file per family",
                        first.display()
                    ),
                });
            }
        }
        Ok(families)
    }

    /// The `*.toml` files of the families directory, in name order.
    fn family_files(&self) -> Result<Vec<PathBuf>, ConfigError> {
        let dir = &self.families_dir;
        let entries = std::fs::read_dir(dir).map_err(|source| ConfigError::Read {
            path: dir.clone(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        Ok(paths)
    }

    /// The file that configures family `name`, as [`Self::load_families`]
    /// has it: the first in name order that names it and loads (a later
    /// one is refused as a duplicate). Only the files naming it are
    /// loaded, so only their specs are parsed.
    pub fn family_file(&self, name: &str) -> Option<PathBuf> {
        self.family_files()
            .ok()?
            .into_iter()
            .filter(|p| family_named_in(p).as_deref() == Some(name))
            .find(|p| self.load_family(p).is_ok())
    }

    /// Read one family file.
    pub fn load_family(&self, path: &Path) -> Result<FamilyConfig, ConfigError> {
        let raw: RawFamily = parse(path, &read(path)?)?;
        let invalid = |key, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        // The resolver's own check: a name it would refuse can never serve.
        if let Err(e) = crate::families::FamilyName::parse(&raw.family) {
            return Err(invalid("family", format!("{e} (1 to 15 printable bytes)")));
        }
        let plugin = resolve(&self.plugin_dir, raw.plugin);
        let mut config: BTreeMap<String, String> = raw
            .config
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    toml::Value::String(s) => s,
                    other => other.to_string(),
                };
                (k, v)
            })
            .collect();
        if let Some(spec) = raw.spec {
            let (key, value) = spec_entry(path, &spec).map_err(|m| invalid("spec", m))?;
            if config.contains_key("spec") || config.contains_key("spec-yaml") {
                return Err(invalid(
                    "spec",
                    "is set both here and in [config]; keep one".into(),
                ));
            }
            config.insert(key.to_owned(), value);
        }
        // A spec that does not load is the operator's to fix now, not a
        // plugin failure later; it also names the allowlist's commands.
        let spec = match family_spec(&config) {
            Some(Ok(spec)) => Some(spec),
            Some(Err(e)) => return Err(invalid("spec", e)),
            None => None,
        };
        let allow_do = resolve_commands(&raw.commands.allow_do, false, spec.as_ref())
            .map_err(|m| invalid("commands.do", m))?;
        let allow_dump = resolve_commands(&raw.commands.allow_dump, true, spec.as_ref())
            .map_err(|m| invalid("commands.dump", m))?;
        if raw.limits.fuel_metering.is_some() {
            return Err(invalid(
                "limits.fuel_metering",
                "is engine-wide: set it in gateway.toml".into(),
            ));
        }
        if raw.limits.fuel.is_some() && !self.fuel_metering {
            return Err(invalid(
                "limits.fuel",
                "needs `fuel_metering = true` in the [limits] of gateway.toml (and a restart)".into(),
            ));
        }
        let receive_buffer = match raw.receive_buffer_kib {
            Some(kib) => check_kib(path, "receive_buffer_kib", Some(kib), 0)?,
            None => self.receive_buffer,
        };
        let queue = raw.queue.unwrap_or(1024);
        if !(1..=1 << 20).contains(&queue) {
            return Err(invalid(
                "queue",
                format!("{queue} is out of range; use 1 to 1048576"),
            ));
        }
        Ok(FamilyConfig {
            validate_requests: raw.validate_requests.unwrap_or(true),
            receive_buffer,
            queue,
            path: path.to_owned(),
            family: raw.family,
            plugin,
            groups: raw.groups,
            allow_do,
            allow_dump,
            limits: raw.limits.apply(path, self.limits)?,
            config,
            bus: raw.bus.resolve(path)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlists_take_the_specs_operation_names() {
        let spec = bundled::load("netdev").expect("bundled").expect("loads");
        let names = |v: &[&str]| {
            v.iter()
                .map(|s| CommandRef::Name((*s).to_owned()))
                .collect::<Vec<_>>()
        };
        // Numbers from the kernel's UAPI header linux/netdev.h:
        // NETDEV_CMD_DEV_GET = 1, NETDEV_CMD_QSTATS_GET = 12.
        assert_eq!(
            resolve_commands(&names(&["dev-get"]), false, Some(&spec)),
            Ok(vec![1])
        );
        assert_eq!(
            resolve_commands(&names(&["qstats-get"]), true, Some(&spec)),
            Ok(vec![12])
        );
        let e = resolve_commands(&names(&["qstats-get"]), false, Some(&spec)).expect_err("dump only");
        assert!(e.contains("no do"), "{e}");
        let e = resolve_commands(&names(&["dev-gte"]), false, Some(&spec)).expect_err("typo");
        assert!(e.contains("dev-get"), "lists the operations: {e}");
        let e = resolve_commands(&names(&["dev-get"]), false, None).expect_err("no spec");
        assert!(e.contains("need a `spec`"), "{e}");
        assert_eq!(
            resolve_commands(&[CommandRef::Number(7)], false, None),
            Ok(vec![7])
        );
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    fn chmod(p: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn secrets_readable_by_others_and_shared_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // Inline tokens in a group-readable gateway.toml.
        let gw = write(dir.path(), "gateway.toml", GATEWAY);
        chmod(&gw, 0o640);
        let e = GatewayConfig::load(&gw).unwrap_err().to_string();
        assert!(e.contains(&format!("chmod 600 {}", gw.display())), "{e}");
        chmod(&gw, 0o600);
        assert!(GatewayConfig::load(&gw).is_ok());

        // A world-readable token file.
        let secret = write(dir.path(), "secret", "fedcba9876543210fedcba\n");
        chmod(&secret, 0o644);
        let with_file = GATEWAY.replace(
            "[plugins]",
            "[[api.tokens]]\nname = \"dash\"\ntoken_file = \"secret\"\naccess = \"read\"\n[plugins]",
        );
        let gw = write(dir.path(), "gateway.toml", &with_file);
        let e = GatewayConfig::load(&gw).unwrap_err().to_string();
        assert!(
            e.contains("token 'dash'") && e.contains(&format!("chmod 600 {}", secret.display())),
            "{e}"
        );
        chmod(&secret, 0o600);
        assert!(GatewayConfig::load(&gw).is_ok());
        // Owned by a user that is neither root nor us.
        std::os::unix::fs::chown(&secret, Some(65534), None).unwrap();
        let e = GatewayConfig::load(&gw).unwrap_err().to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
        std::os::unix::fs::chown(&secret, Some(0), None).unwrap();

        // Two tokens, one secret: refused, both named.
        let dup = GATEWAY.replace(
            "[plugins]",
            "[[api.tokens]]\nname = \"boss\"\ntoken = \"0123456789abcdef0123\"\naccess = \"admin\"\n[plugins]",
        );
        let gw = write(dir.path(), "gateway.toml", &dup);
        let e = GatewayConfig::load(&gw).unwrap_err().to_string();
        assert!(e.contains("tokens 'ops' and 'boss' have the same secret"), "{e}");
    }

    const GATEWAY: &str = r#"
        [api]
        socket = "run/api.sock"
        tcp = "127.0.0.1:7411"
        [[api.tokens]]
        name = "ops"
        token = "0123456789abcdef0123"
        access = "read"
        [plugins]
        dir = "plugins"
        families_dir = "families.d"
        [limits]
        memory_mib = 32
    "#;

    #[test]
    fn loads_gateway_and_families_with_relative_paths() {
        let dir = tempfile::tempdir().unwrap();
        let gw = write(dir.path(), "gateway.toml", GATEWAY);
        std::fs::create_dir(dir.path().join("families.d")).unwrap();
        write(
            &dir.path().join("families.d"),
            "a.toml",
            "family = \"nlctrl\"\nplugin = \"nlctrl.wasm\"\ngroups = [\"notify\"]\n[commands]\ndo = [3]\ndump = [3]\n[config]\nverbose = true\n",
        );
        write(
            &dir.path().join("families.d"),
            "b.toml",
            "family = \"nlctrl\"\nplugin = \"x.wasm\"\n",
        );
        write(
            &dir.path().join("families.d"),
            "c.toml",
            "family = \"netdev\"\nplugin = \n",
        );
        let cfg = GatewayConfig::load(&gw).unwrap();
        assert_eq!(cfg.api.socket, dir.path().join("run/api.sock"));
        assert_eq!(cfg.limits.memory_bytes, 32 << 20);
        let fams = cfg.load_families().unwrap();
        let a = fams[0].as_ref().unwrap();
        assert_eq!(a.plugin, dir.path().join("plugins/nlctrl.wasm"));
        assert_eq!(a.allow_do, [3]);
        assert_eq!(a.config["verbose"], "true");
        let dup = fams[1].as_ref().unwrap_err().to_string();
        assert!(
            dup.contains("b.toml: family: 'nlctrl' is already configured"),
            "{dup}"
        );
        let bad = fams[2].as_ref().unwrap_err().to_string();
        assert!(bad.contains("c.toml") && bad.contains("line 2"), "{bad}");
        assert!(!bad.contains('\n'));
    }

    #[test]
    fn errors_name_file_key_and_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = GatewayConfig::load(&dir.path().join("nope.toml"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("nope.toml: cannot read"), "{missing}");
        let gw = write(
            dir.path(),
            "g.toml",
            &GATEWAY.replace("127.0.0.1:7411", "10.0.0.1:80"),
        );
        let e = GatewayConfig::load(&gw).unwrap_err().to_string();
        assert!(e.contains("api.tcp") && e.contains("loopback"), "{e}");
        let gw = write(dir.path(), "g2.toml", &format!("{GATEWAY}\nbogus = 1\n"));
        let e = GatewayConfig::load(&gw).unwrap_err().to_string();
        assert!(e.contains("unknown field") && e.contains("bogus"), "{e}");
        let gw = write(
            dir.path(),
            "g3.toml",
            &GATEWAY.replace("memory_mib = 32", "memory_mib = 0"),
        );
        let e = GatewayConfig::load(&gw).unwrap_err().to_string();
        assert!(e.contains("limits.memory_mib: 0 is out of range"), "{e}");
        let gw = write(
            dir.path(),
            "g4.toml",
            &GATEWAY.replace("memory_mib = 32", "event_kib = 0"),
        );
        let e = GatewayConfig::load(&gw).unwrap_err().to_string();
        assert!(
            e.contains("limits.event_kib: 0 is out of range; use 1 to 16384"),
            "{e}"
        );
    }

    #[test]
    fn request_sockets_have_a_default_and_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let gw = write(dir.path(), "gateway.toml", GATEWAY);
        assert_eq!(GatewayConfig::load(&gw).unwrap().request_sockets, 8);
        let gw = write(
            dir.path(),
            "g1.toml",
            &format!("{GATEWAY}\n[netlink]\nrequest_sockets = 3\n"),
        );
        assert_eq!(GatewayConfig::load(&gw).unwrap().request_sockets, 3);
        for bad in [0, 257] {
            let gw = write(
                dir.path(),
                "g2.toml",
                &format!("{GATEWAY}\n[netlink]\nrequest_sockets = {bad}\n"),
            );
            let e = GatewayConfig::load(&gw).unwrap_err().to_string();
            assert!(
                e.contains(&format!(
                    "netlink.request_sockets: {bad} is out of range; use 1 to 256"
                )),
                "{e}"
            );
        }
    }

    /// The test gateway file with `lines` added to its `[api]`.
    fn with_api(lines: &str) -> String {
        GATEWAY.replace(
            "socket = \"run/api.sock\"",
            &format!("socket = \"run/api.sock\"\n{lines}"),
        )
    }

    #[test]
    fn api_timeouts_have_defaults_and_a_bound() {
        let dir = tempfile::tempdir().unwrap();
        let gw = write(dir.path(), "gateway.toml", GATEWAY);
        let api = GatewayConfig::load(&gw).unwrap().api;
        assert_eq!(
            (api.header_timeout, api.body_timeout, api.write_timeout),
            (
                Duration::from_secs(10),
                Duration::from_secs(10),
                Duration::from_secs(30)
            )
        );
        let gw = write(dir.path(), "g1.toml", &with_api("write_timeout_ms = 2500"));
        assert_eq!(
            GatewayConfig::load(&gw).unwrap().api.write_timeout,
            Duration::from_millis(2500)
        );
        for bad in [0, 600_001] {
            let gw = write(
                dir.path(),
                "g2.toml",
                &with_api(&format!("write_timeout_ms = {bad}")),
            );
            let e = GatewayConfig::load(&gw).unwrap_err().to_string();
            assert!(
                e.contains(&format!(
                    "api.write_timeout_ms: {bad} is out of range; use 1 to 600000"
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn the_per_user_connection_cap_defaults_to_a_quarter_of_the_listener_and_never_exceeds_it() {
        let dir = tempfile::tempdir().unwrap();
        let with = |name: &str, lines: &str| GatewayConfig::load(&write(dir.path(), name, &with_api(lines)));
        let api = with("g0.toml", "").unwrap().api;
        assert_eq!((api.max_connections, api.max_connections_per_user), (512, 128));
        let api = with("g1.toml", "max_connections_per_user = 300").unwrap().api;
        assert_eq!(api.max_connections_per_user, 300);
        // A quarter of a smaller listener, at least one.
        let api = with("g2.toml", "max_connections = 64").unwrap().api;
        assert_eq!(api.max_connections_per_user, 16);
        let api = with("g3.toml", "max_connections = 2").unwrap().api;
        assert_eq!(api.max_connections_per_user, 1);
        for bad in [0, 513] {
            let e = with("g4.toml", &format!("max_connections_per_user = {bad}"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!(
                    "api.max_connections_per_user: {bad} is out of range; use 1 to max_connections (512)"
                )),
                "{e}"
            );
        }
    }

    #[test]
    fn size_limits_have_defaults_and_families_override_them() {
        let dir = tempfile::tempdir().unwrap();
        let gw = write(
            dir.path(),
            "gateway.toml",
            &GATEWAY.replace("memory_mib = 32", "output_kib = 8\nhost_resources = 64"),
        );
        std::fs::create_dir(dir.path().join("families.d")).unwrap();
        let fam = write(
            &dir.path().join("families.d"),
            "a.toml",
            "family = \"nlctrl\"\nplugin = \"x.wasm\"\n[limits]\nevent_kib = 2\nlog_line_bytes = 100\nreply_mib = 3\n",
        );
        let cfg = GatewayConfig::load(&gw).unwrap();
        let f = cfg.load_family(&fam).unwrap();
        assert_eq!(
            (
                f.limits.output_bytes,
                f.limits.host_resources,
                f.limits.event_bytes,
                f.limits.log_line_bytes,
                f.limits.reply_bytes
            ),
            (8 << 10, 64, 2 << 10, 100, 3 << 20)
        );
    }

    #[test]
    fn the_pool_size_defaults_to_the_cores_and_a_family_sets_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let gw = write(dir.path(), "gateway.toml", GATEWAY);
        std::fs::create_dir(dir.path().join("families.d")).unwrap();
        let plain = write(
            &dir.path().join("families.d"),
            "a.toml",
            "family = \"nlctrl\"\nplugin = \"x.wasm\"\n",
        );
        let sized = write(
            &dir.path().join("families.d"),
            "b.toml",
            "family = \"netdev\"\nplugin = \"x.wasm\"\n[limits]\ninstances = 3\n",
        );
        let cfg = GatewayConfig::load(&gw).unwrap();
        // The cores as coreutils' nproc counts them, not as the code does.
        let nproc = std::process::Command::new("nproc")
            .output()
            .expect("nproc (coreutils)");
        let cores: usize = String::from_utf8_lossy(&nproc.stdout).trim().parse().unwrap();
        assert_eq!(cfg.load_family(&plain).unwrap().limits.instances, cores.min(64));
        assert_eq!(cfg.load_family(&sized).unwrap().limits.instances, 3);
        let zero = write(
            &dir.path().join("families.d"),
            "c.toml",
            "family = \"netdev\"\nplugin = \"x.wasm\"\n[limits]\ninstances = 0\n",
        );
        let e = cfg.load_family(&zero).unwrap_err().to_string();
        assert!(e.contains("limits.instances: 0 is out of range"), "{e}");
    }
}
