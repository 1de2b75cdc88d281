//! `[bus.events]` in gateway.toml: where the plugins' events go on the bus
//! (the JetStream stream the gateway creates or checks at start) and how
//! much may wait while the bus is unreachable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::ConfigError;

/// `[bus.events]` as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEvents {
    enabled: Option<bool>,
    stream: Option<String>,
    subjects: Option<Vec<String>>,
    retention: Option<Retention>,
    replicas: Option<u64>,
    max_age_s: Option<u64>,
    max_bytes: Option<u64>,
    duplicate_window_s: Option<u64>,
    buffer_events: Option<u64>,
    buffer_kib: Option<u64>,
    spool_dir: Option<PathBuf>,
    ack_timeout_ms: Option<u64>,
}

/// The stream's retention policy (JetStream's own three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Retention {
    /// Keep messages until the stream's limits (age, bytes) drop them.
    Limits,
    /// Keep messages while a consumer has not acknowledged them.
    Interest,
    /// Keep each message until one consumer acknowledges it.
    Workqueue,
}

/// `[bus.events]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// Publish events to the bus at all.
    pub enabled: bool,
    /// The JetStream stream's name.
    pub stream: String,
    /// The stream's subjects (default `PREFIX.*.*.*`: every host's events,
    /// never a call subject, which has more tokens).
    pub subjects: Vec<String>,
    /// Retention policy.
    pub retention: Retention,
    /// Replicas (1, or 3 on a three-node cluster).
    pub replicas: usize,
    /// Oldest message kept (zero: no limit).
    pub max_age: Duration,
    /// Bytes the stream keeps (zero: no limit).
    pub max_bytes: u64,
    /// How long the stream remembers message ids to drop duplicates: a
    /// retried publish older than this would be stored twice.
    pub duplicate_window: Duration,
    /// Events that may wait for the bus (memory, and the spool).
    pub buffer_events: usize,
    /// Bytes of payload that may wait for the bus.
    pub buffer_bytes: usize,
    /// A directory where waiting events are also written, so a gateway
    /// restarted while the bus is down publishes them after the restart.
    pub spool_dir: Option<PathBuf>,
    /// Time allowed for one publish to be acknowledged before it is retried.
    pub ack_timeout: Duration,
}

impl RawEvents {
    /// Check `[bus.events]` of `path` (relative paths against `base`).
    pub(crate) fn resolve(self, path: &Path, base: &Path, prefix: &str) -> Result<EventsConfig, ConfigError> {
        let invalid = |key, message: String| ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message,
        };
        let stream = self.stream.unwrap_or_else(|| "GENL_EVENTS".to_owned());
        // JetStream refuses names with '.', '*', '>', whitespace or '/'.
        if !super::config::is_token(&stream) {
            return Err(invalid(
                "bus.events.stream",
                format!("'{stream}' is not a stream name: use letters, digits, '-' and '_'"),
            ));
        }
        let subjects = self.subjects.unwrap_or_else(|| vec![format!("{prefix}.*.*.*")]);
        if subjects.is_empty()
            || subjects
                .iter()
                .any(|s| s.is_empty() || s.chars().any(char::is_whitespace))
        {
            return Err(invalid(
                "bus.events.subjects",
                format!("list the stream's subjects, e.g. [\"{prefix}.*.*.*\"] (every host's events)"),
            ));
        }
        let replicas =
            crate::config::in_range(path, "bus.events.replicas", self.replicas.unwrap_or(1), 1..=5)?;
        let max_age_s = self.max_age_s.unwrap_or(7 * 24 * 3600);
        let duplicate_window_s = crate::config::in_range(
            path,
            "bus.events.duplicate_window_s",
            self.duplicate_window_s.unwrap_or(600),
            1..=7 * 24 * 3600,
        )?;
        if max_age_s != 0 && duplicate_window_s > max_age_s {
            return Err(invalid(
                "bus.events.duplicate_window_s",
                "is longer than max_age_s; JetStream refuses such a stream".into(),
            ));
        }
        let buffer_events = crate::config::in_range(
            path,
            "bus.events.buffer_events",
            self.buffer_events.unwrap_or(100_000),
            1..=10_000_000,
        )?;
        let buffer_kib = crate::config::in_range(
            path,
            "bus.events.buffer_kib",
            self.buffer_kib.unwrap_or(64 * 1024),
            1..=16 * 1024 * 1024,
        )?;
        let ack_timeout_ms = crate::config::in_range(
            path,
            "bus.events.ack_timeout_ms",
            self.ack_timeout_ms.unwrap_or(5_000),
            100..=600_000,
        )?;
        let to_usize = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        Ok(EventsConfig {
            enabled: self.enabled.unwrap_or(true),
            stream,
            subjects,
            retention: self.retention.unwrap_or(Retention::Limits),
            replicas: to_usize(replicas),
            max_age: Duration::from_secs(max_age_s),
            max_bytes: self.max_bytes.unwrap_or(1 << 30),
            duplicate_window: Duration::from_secs(duplicate_window_s),
            buffer_events: to_usize(buffer_events),
            buffer_bytes: to_usize(buffer_kib.saturating_mul(1024)),
            spool_dir: self.spool_dir.map(|d| crate::config::resolve(base, d)),
            ack_timeout: Duration::from_millis(ack_timeout_ms),
        })
    }
}
