//! Per-plugin counters and a call-latency histogram, read by `/metrics`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Upper bounds of the latency histogram's buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.1, 1.0, 10.0,
];

/// Error codes counted under their own label: the SDK's codes and the
/// host's. Any other code a plugin returns is counted as "other".
pub const KNOWN_CODES: &[&str] = &[
    "bad-input",
    "not-found",
    "unknown-op",
    "denied",
    "invalid-request",
    "kernel",
    "decode",
    "timeout",
    "family-absent",
    "io",
    "internal",
    "not-initialised",
    "plugin-crashed",
    "plugin-unavailable",
    "plugin-restarting",
    "bad-plugin-output",
    "dump-interrupted",
    // The client went away: before the call could start, or mid-output.
    "client-gone",
];

/// Counters of one plugin.
#[derive(Debug, Default)]
pub struct PluginMetrics {
    /// Calls into `call`.
    pub calls: AtomicU64,
    /// Failed calls by error code.
    errors: Mutex<BTreeMap<String, u64>>,
    /// Traps (crashes) in any entry point.
    pub traps: AtomicU64,
    /// Notifications handed to the plugin.
    pub notifications_delivered: AtomicU64,
    /// Events the plugin published.
    pub events_published: AtomicU64,
    /// Events refused at publish (bad topic, too large, not JSON).
    pub events_refused: AtomicU64,
    /// Notifications not handed to the plugin because it was failed,
    /// backing off or could not start.
    pub notifications_dropped: AtomicU64,
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_ns: AtomicU64,
}

impl PluginMetrics {
    /// Record one call's latency.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_ns
            .fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Count a failed call. Codes a plugin chose are labels of
    /// `/metrics`, so only known codes are kept as they are; any other is
    /// counted as "other" and the label set stays bounded.
    pub fn error(&self, code: &str) {
        let label = KNOWN_CODES
            .iter()
            .find(|k| **k == code)
            .copied()
            .unwrap_or("other");
        *self
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(label.to_owned())
            .or_default() += 1;
    }

    /// Failed calls by code.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Cumulative bucket counts (Prometheus `le` semantics), count, sum in seconds.
    pub fn histogram(&self) -> (Vec<u64>, u64, f64) {
        let mut cumulative = 0;
        let buckets = self
            .buckets
            .iter()
            .map(|b| {
                cumulative += b.load(Relaxed);
                cumulative
            })
            .collect();
        (
            buckets,
            self.latency_count.load(Relaxed),
            self.latency_sum_ns.load(Relaxed) as f64 / 1e9,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_a_plugin_invents_share_one_label() {
        let m = PluginMetrics::default();
        for i in 0..1000 {
            m.error(&format!("made-up-{i}"));
        }
        m.error("timeout");
        let errors = m.errors();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!((errors["other"], errors["timeout"]), (1000, 1));
    }
}
