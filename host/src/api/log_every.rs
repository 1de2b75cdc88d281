//! A warning the API logs at most once in a while: a client or a plugin
//! that repeats what caused it must not be able to flood the log.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often one such warning may be logged.
const INTERVAL: Duration = Duration::from_secs(10);

/// One warning's last time; [`LogEvery::emit`] logs it at most every
/// [`INTERVAL`].
#[derive(Debug, Default)]
pub(super) struct LogEvery(Mutex<Option<Instant>>);

impl LogEvery {
    /// Run `log` unless it ran less than [`INTERVAL`] ago.
    pub(super) fn emit(&self, log: impl FnOnce()) {
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|t| t.elapsed() >= INTERVAL) {
            *last = Some(Instant::now());
            log();
        }
    }
}
