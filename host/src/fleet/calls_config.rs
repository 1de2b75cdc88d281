//! `[bus.calls]`: the scope calls from the fleet have on this gateway,
//! like one of the API's tokens (families, access), plus their bounds.
//! Read-only by default: a write op over the bus also needs `write = true`
//! in its family file's `[bus]`.

use std::path::Path;

use serde::Deserialize;

use crate::config::{Access, ConfigError};

/// `[bus.calls]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCalls {
    enabled: Option<bool>,
    families: Option<Vec<String>>,
    access: Option<Access>,
    max_concurrent: Option<u64>,
    max_input_bytes: Option<u64>,
}

/// What calls from the fleet may do on this gateway, and their bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallsConfig {
    /// Whether the gateway answers calls from the bus at all (default true;
    /// it still announces itself for `fleet hosts` when false).
    pub enabled: bool,
    /// Families bus calls may reach; `*` for all (default `*`).
    pub families: Vec<String>,
    /// `read` (default) or `write`.
    pub access: Access,
    /// Bus calls running at once; one more is answered `busy` at once.
    pub max_concurrent: usize,
    /// The largest input (the message payload) a bus call may carry; the
    /// NATS server's `max_payload` bounds it before it reaches us.
    pub max_input_bytes: usize,
}

impl Default for CallsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            families: vec!["*".to_owned()],
            access: Access::Read,
            max_concurrent: 16,
            max_input_bytes: 64 << 10,
        }
    }
}

impl CallsConfig {
    /// Whether bus calls reach `family`.
    pub fn covers(&self, family: &str) -> bool {
        self.families.iter().any(|f| f == "*" || f == family)
    }
}

impl RawCalls {
    /// Check `[bus.calls]` of `path`.
    pub(crate) fn resolve(self, path: &Path) -> Result<CallsConfig, ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        let d = CallsConfig::default();
        let access = self.access.unwrap_or(d.access);
        if access == Access::Admin {
            return Err(invalid(
                "bus.calls.access",
                "bus calls cannot reload plugins: use \"read\" or \"write\"".into(),
            ));
        }
        let families = self.families.unwrap_or(d.families);
        if let Some(bad) = families
            .iter()
            .find(|f| f.as_str() != "*" && !super::config::is_token(f))
        {
            return Err(invalid(
                "bus.calls.families",
                format!(
                    "'{bad}' is not a family name a subject can carry (letters, digits, '-', '_') or \"*\""
                ),
            ));
        }
        let max_concurrent = crate::config::in_range(
            path,
            "bus.calls.max_concurrent",
            self.max_concurrent.unwrap_or(d.max_concurrent as u64),
            1..=1024,
        )?;
        let max_input_bytes = crate::config::in_range(
            path,
            "bus.calls.max_input_bytes",
            self.max_input_bytes.unwrap_or(d.max_input_bytes as u64),
            2..=(8 << 20),
        )?;
        Ok(CallsConfig {
            enabled: self.enabled.unwrap_or(d.enabled),
            families,
            access,
            max_concurrent: usize::try_from(max_concurrent).unwrap_or(d.max_concurrent),
            max_input_bytes: usize::try_from(max_input_bytes).unwrap_or(d.max_input_bytes),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(text: &str) -> Result<CallsConfig, String> {
        let raw: RawCalls = toml::from_str(text).map_err(|e| e.to_string())?;
        raw.resolve(Path::new("gateway.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn read_only_by_default_and_admin_refused() {
        let d = resolve("").expect("defaults");
        assert_eq!(d, CallsConfig::default());
        assert_eq!(d.access, Access::Read);
        assert!(d.covers("netdev"));
        let w = resolve("access = \"write\"\nfamilies = [\"mptcp_pm\"]").expect("write");
        assert_eq!(w.access, Access::Write);
        assert!(w.covers("mptcp_pm") && !w.covers("netdev"));
        let e = resolve("access = \"admin\"").expect_err("admin");
        assert!(e.contains("bus.calls.access"), "{e}");
        let e = resolve("families = [\"a.b\"]").expect_err("not a token");
        assert!(e.contains("bus.calls.families"), "{e}");
        let e = resolve("max_concurrent = 0").expect_err("zero");
        assert!(e.contains("bus.calls.max_concurrent"), "{e}");
        assert!(resolve("acess = \"write\"").is_err(), "unknown keys are errors");
    }
}
