//! A per-plugin token bucket for log lines, so a plugin that spams its log
//! cannot flood the gateway's. Suppressed lines are counted and reported
//! once the plugin is allowed to log again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

/// The bucket: `rate` lines a second, bursts of up to four seconds' worth.
pub struct LogLimiter {
    rate: f64,
    state: Mutex<(f64, Instant)>,
    suppressed_now: AtomicU64,
    /// Lines suppressed since start.
    pub suppressed_total: AtomicU64,
}

/// What to do with one line.
pub enum Verdict {
    /// Log it.
    Log,
    /// Log it, after saying that this many lines were dropped before it.
    LogAfterSuppressing(u64),
    /// Drop it.
    Suppress,
}

impl LogLimiter {
    /// A bucket refilled at `lines_per_sec`.
    pub fn new(lines_per_sec: u32) -> Self {
        let rate = f64::from(lines_per_sec.max(1));
        Self {
            rate,
            state: Mutex::new((rate * 4.0, Instant::now())),
            suppressed_now: AtomicU64::new(0),
            suppressed_total: AtomicU64::new(0),
        }
    }

    /// Take a token for one line.
    pub fn check(&self) -> Verdict {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, last) = &mut *state;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.rate * 4.0);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            match self.suppressed_now.swap(0, Ordering::Relaxed) {
                0 => Verdict::Log,
                n => Verdict::LogAfterSuppressing(n),
            }
        } else {
            self.suppressed_now.fetch_add(1, Ordering::Relaxed);
            self.suppressed_total.fetch_add(1, Ordering::Relaxed);
            Verdict::Suppress
        }
    }

    /// Run `log` for one line of `plugin`, if the bucket allows.
    pub fn emit(&self, plugin: &str, log: impl FnOnce()) {
        match self.check() {
            Verdict::Log => log(),
            Verdict::LogAfterSuppressing(n) => {
                tracing::warn!(
                    plugin,
                    suppressed = n,
                    "plugin log rate limit: {n} lines were suppressed"
                );
                log();
            }
            Verdict::Suppress => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_beyond_the_bucket_is_suppressed_and_counted() {
        let l = LogLimiter::new(10);
        let logged = (0..1000)
            .filter(|_| !matches!(l.check(), Verdict::Suppress))
            .count();
        // 40 tokens of burst, plus whatever refilled during the loop.
        assert!((40..60).contains(&logged), "{logged}");
        assert_eq!(l.suppressed_total.load(Ordering::Relaxed) as usize, 1000 - logged);
    }
}
