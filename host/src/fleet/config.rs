//! `[bus]` in gateway.toml and the per-family `[bus]` table of a family
//! file. Secrets come from files (mode 0600), never inline, and never
//! reach a log line: [`Secret`]'s `Debug` prints a placeholder.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// The subject token a single host may never take: it addresses every host.
pub const ALL_HOSTS: &str = "all";

/// `[bus]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBus {
    urls: Vec<String>,
    host: Option<String>,
    prefix: Option<String>,
    user: Option<String>,
    password_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
    nkey_seed_file: Option<PathBuf>,
    creds_file: Option<PathBuf>,
    #[serde(default)]
    tls: RawTls,
    connect_timeout_ms: Option<u64>,
    max_reconnect_delay_ms: Option<u64>,
    #[serde(default)]
    events: super::events_config::RawEvents,
    #[serde(default)]
    calls: super::calls_config::RawCalls,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    required: bool,
}

/// The per-family `[bus]` table of a family file, as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFamilyBus {
    topics: Option<Vec<String>>,
    write: Option<bool>,
}

/// A secret read from a file. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for handing to the NATS client only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// How the gateway authenticates to NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// No credentials (a server without authorization, tests).
    None,
    /// `user` and `password_file`.
    UserPassword {
        /// The NATS user.
        user: String,
        /// Its password.
        password: Secret,
    },
    /// `token_file`.
    Token(Secret),
    /// `nkey_seed_file`: an nkey user seed (`SU...`).
    NkeySeed(Secret),
    /// `creds_file`: a decentralised-auth `.creds` file (JWT and seed).
    CredsFile(PathBuf),
}

impl Credentials {
    /// A name for the kind of credentials, for logs and status output.
    pub fn kind(&self) -> &'static str {
        match self {
            Credentials::None => "none",
            Credentials::UserPassword { .. } => "user-password",
            Credentials::Token(_) => "token",
            Credentials::NkeySeed(_) => "nkey",
            Credentials::CredsFile(_) => "creds-file",
        }
    }
}

/// `[bus.tls]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// CA certificates to trust for the servers (PEM).
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM).
    pub key_file: Option<PathBuf>,
    /// Refuse a server that does not offer TLS.
    pub required: bool,
}

/// `[bus]`: how this gateway joins the fleet's NATS bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusConfig {
    /// Server URLs (several for a cluster), e.g. `nats://10.0.0.1:4222`.
    pub urls: Vec<String>,
    /// This host's name on the bus: one subject token.
    pub host: String,
    /// The subject prefix, one or more tokens (e.g. `genl` or `corp.genl`).
    pub prefix: String,
    /// How to authenticate.
    pub credentials: Credentials,
    /// TLS settings.
    pub tls: TlsConfig,
    /// Time allowed for one connection attempt.
    pub connect_timeout: Duration,
    /// The longest wait between reconnection attempts (the wait doubles
    /// from 100 ms up to it; attempts never stop).
    pub max_reconnect_delay: Duration,
    /// `[bus.events]`: the plugins' events on the bus.
    pub events: super::events_config::EventsConfig,
    /// `[bus.calls]`: what calls from the fleet may do here.
    pub calls: super::calls_config::CallsConfig,
}

/// A family's part in the bus (the `[bus]` table of its family file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyBus {
    /// Event topics published to the bus: exact names, or `*` for all.
    /// Default: all.
    pub topics: Vec<String>,
    /// Whether ops that change kernel state may be called over the bus
    /// (`write = true`; default false). `[bus.calls]` must allow writes too.
    pub write: bool,
}

impl Default for FamilyBus {
    fn default() -> Self {
        Self {
            topics: vec!["*".to_owned()],
            write: false,
        }
    }
}

impl FamilyBus {
    /// Whether events of `topic` go to the bus.
    pub fn publishes(&self, topic: &str) -> bool {
        self.topics.iter().any(|t| t == "*" || t == topic)
    }
}

/// Whether `s` is one NATS subject token the gateway accepts in names it
/// builds subjects from: not empty, and only ASCII letters, digits, `-`
/// and `_` (so no `.`, wildcards, whitespace or control characters).
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// This machine's host name as one subject token: dots become `_`
/// (`web01.dc1` -> `web01_dc1`), anything else outside a token's
/// characters becomes `-`.
pub fn default_host() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = raw
        .trim()
        .chars()
        .map(|c| match c {
            '.' => '_',
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => c,
            _ => '-',
        })
        .collect();
    if name.is_empty() {
        "localhost".to_owned()
    } else {
        name
    }
}

impl RawBus {
    /// Check `[bus]` of `path` and read its secret files (relative paths
    /// against `base`).
    pub(crate) fn resolve(self, path: &Path, base: &Path) -> Result<BusConfig, ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        if self.urls.is_empty() {
            return Err(invalid(
                "bus.urls",
                "is empty; list the NATS servers, e.g. [\"nats://127.0.0.1:4222\"], or remove [bus]".into(),
            ));
        }
        for url in &self.urls {
            let scheme_ok = ["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|s| url.starts_with(s));
            if url.contains('@') {
                return Err(invalid(
                    "bus.urls",
                    "a URL holds credentials ('@'): config files are readable by operators and URLs reach logs; put them in `password_file`, `token_file`, `nkey_seed_file` or `creds_file`".into(),
                ));
            }
            if !scheme_ok || url.chars().any(char::is_whitespace) {
                return Err(invalid(
                    "bus.urls",
                    format!("'{url}' is not a NATS URL; write nats://HOST:PORT (or tls://HOST:PORT)"),
                ));
            }
        }
        let host = match self.host {
            Some(h) => h,
            None => default_host(),
        };
        if !is_token(&host) || host == ALL_HOSTS {
            return Err(invalid(
                "bus.host",
                format!(
                    "'{host}' cannot be a host's name on the bus: use letters, digits, '-' and '_' only (one subject token), and not '{ALL_HOSTS}'"
                ),
            ));
        }
        let prefix = self.prefix.unwrap_or_else(|| "genl".to_owned());
        if !prefix.split('.').all(is_token) {
            return Err(invalid(
                "bus.prefix",
                format!(
                    "'{prefix}' is not a subject prefix: dot-separated tokens of letters, digits, '-' and '_'"
                ),
            ));
        }
        let file = |p: PathBuf| crate::config::resolve(base, p);
        let secret = |p: PathBuf, what: &str| -> Result<Secret, ConfigError> {
            let p = file(p);
            crate::config::check_secret_file(&p, what, "bus")?;
            let text = std::fs::read_to_string(&p).map_err(|source| ConfigError::Read {
                path: p.clone(),
                source,
            })?;
            Ok(Secret(text.trim().to_owned()))
        };
        let credentials = match (
            self.user,
            self.password_file,
            self.token_file,
            self.nkey_seed_file,
            self.creds_file,
        ) {
            (None, None, None, None, None) => Credentials::None,
            (Some(user), Some(pw), None, None, None) => Credentials::UserPassword {
                user,
                password: secret(pw, "the NATS password")?,
            },
            (None, None, Some(t), None, None) => Credentials::Token(secret(t, "the NATS token")?),
            (None, None, None, Some(s), None) => Credentials::NkeySeed(secret(s, "the NATS nkey seed")?),
            (None, None, None, None, Some(c)) => {
                let c = file(c);
                crate::config::check_secret_file(&c, "NATS credentials", "bus")?;
                Credentials::CredsFile(c)
            }
            _ => {
                return Err(invalid(
                    "bus",
                    "give one kind of credentials: `user` with `password_file`, or `token_file`, or `nkey_seed_file`, or `creds_file`".into(),
                ));
            }
        };
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(invalid(
                "bus.tls",
                "`cert_file` and `key_file` go together: give both or neither".into(),
            ));
        }
        let tls = TlsConfig {
            ca_file: self.tls.ca_file.map(file),
            cert_file: self.tls.cert_file.map(file),
            key_file: self.tls.key_file.map(file),
            required: self.tls.required,
        };
        for f in [&tls.ca_file, &tls.cert_file, &tls.key_file]
            .into_iter()
            .flatten()
        {
            if !f.is_file() {
                return Err(invalid(
                    "bus.tls",
                    format!("{} does not exist or is not a file", f.display()),
                ));
            }
        }
        let connect_timeout = Duration::from_millis(crate::config::in_range(
            path,
            "bus.connect_timeout_ms",
            self.connect_timeout_ms.unwrap_or(5_000),
            100..=600_000,
        )?);
        let max_reconnect_delay = Duration::from_millis(crate::config::in_range(
            path,
            "bus.max_reconnect_delay_ms",
            self.max_reconnect_delay_ms.unwrap_or(5_000),
            100..=600_000,
        )?);
        let events = self.events.resolve(path, base, &prefix)?;
        let calls = self.calls.resolve(path)?;
        Ok(BusConfig {
            events,
            calls,
            urls: self.urls,
            host,
            prefix,
            credentials,
            tls,
            connect_timeout,
            max_reconnect_delay,
        })
    }
}

impl RawFamilyBus {
    /// Check a family file's `[bus]`.
    pub(crate) fn resolve(self, path: &Path) -> Result<FamilyBus, ConfigError> {
        let write = self.write.unwrap_or(false);
        let Some(topics) = self.topics else {
            return Ok(FamilyBus {
                write,
                ..FamilyBus::default()
            });
        };
        if let Some(bad) = topics.iter().find(|t| t.as_str() != "*" && !is_token(t)) {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                key: "bus.topics",
                message: format!("'{bad}' is not a topic name (letters, digits, '-' and '_') or \"*\""),
            });
        }
        Ok(FamilyBus { topics, write })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(is_token("web-01_a"));
        for bad in ["", "a.b", "a*", ">", "a b", "a\nb", "é"] {
            assert!(!is_token(bad), "{bad:?}");
        }
        assert!(is_token(&default_host()));
    }

    #[test]
    fn secrets_do_not_print() {
        let s = Secret("hunter2".into());
        let c = Credentials::Token(s);
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
