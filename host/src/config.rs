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
    /// Where compiled components are cached (None: no cache).
    pub cache_dir: Option<PathBuf>,
    /// Poll the plugin and families directories and reload on change.
    pub watch: bool,
    /// Count fuel in every plugin, so families may set `limits.fuel`.
    pub fuel_metering: bool,
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
}

/// Per-plugin resource limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Linear memory a plugin instance may grow to.
    pub memory_bytes: usize,
    /// Wall-clock time one call into the plugin may take.
    pub call_timeout: Duration,
    /// Fuel (roughly, wasm instructions) one call may burn; needs
    /// `limits.fuel_metering` in gateway.toml.
    pub fuel: Option<u64>,
    /// Log lines per second a plugin may write before lines are suppressed.
    pub log_lines_per_sec: u32,
    /// Consecutive crashes after which the plugin is marked failed.
    pub max_crashes: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            memory_bytes: 64 << 20,
            call_timeout: Duration::from_secs(5),
            fuel: None,
            log_lines_per_sec: 50,
            max_crashes: 5,
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
    /// Only in gateway.toml.
    fuel_metering: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNetlink {
    request_timeout_ms: Option<u64>,
    netns: Option<String>,
    receive_buffer_kib: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFamily {
    family: String,
    plugin: PathBuf,
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
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCommands {
    #[serde(default, rename = "do")]
    allow_do: Vec<u8>,
    #[serde(default, rename = "dump")]
    allow_dump: Vec<u8>,
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

fn base_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() { p } else { base.join(p) }
}

impl RawLimits {
    fn apply(self, path: &Path, defaults: Limits) -> Result<Limits, ConfigError> {
        let mut limits = defaults;
        if let Some(mib) = self.memory_mib {
            if !(1..=4096).contains(&mib) {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    key: "limits.memory_mib",
                    message: format!("{mib} is out of range; use 1 to 4096"),
                });
            }
            limits.memory_bytes = (mib as usize) << 20;
        }
        if let Some(ms) = self.call_timeout_ms {
            if !(1..=600_000).contains(&ms) {
                return Err(ConfigError::Invalid {
                    path: path.to_owned(),
                    key: "limits.call_timeout_ms",
                    message: format!("{ms} is out of range; use 1 to 600000"),
                });
            }
            limits.call_timeout = Duration::from_millis(ms);
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
        let mut tokens = Vec::new();
        for t in raw.api.tokens {
            let secret = match (t.token, t.token_file) {
                (Some(s), None) => s,
                (None, Some(file)) => {
                    let file = resolve(&base, file);
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
        let limits = raw.limits.apply(path, Limits::default())?;
        if limits.fuel.is_some() && raw.limits.fuel_metering != Some(true) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                key: "limits.fuel",
                message: "fuel limits need `fuel_metering = true` in [limits]".into(),
            });
        }
        Ok(Self {
            netns,
            receive_buffer,
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
        let mut families: Vec<Result<FamilyConfig, ConfigError>> =
            paths.iter().map(|p| self.load_family(p)).collect();
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
        let config = raw
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
            allow_do: raw.commands.allow_do,
            allow_dump: raw.commands.allow_dump,
            limits: raw.limits.apply(path, self.limits)?,
            config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
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
    }
}
