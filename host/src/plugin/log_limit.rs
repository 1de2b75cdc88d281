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

/// Line and paragraph separators and the bidi controls: invisible, they
/// break lines or reorder what a terminal shows.
fn is_layout_char(c: char) -> bool {
    matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` made safe for one log line: control characters (newlines
/// included), Unicode's line and paragraph separators and bidi controls
/// escaped, so a plugin cannot start what looks like a gateway line or
/// reorder one, and cut to `max` bytes with a note saying how much was cut.
pub fn one_line(text: &str, max: usize) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(text.len().min(max) + 16);
    for (at, c) in text.char_indices() {
        if out.len() >= max {
            let _ = write!(out, "... [{} more bytes cut]", text.len() - at);
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || is_layout_char(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_cannot_forge_another_and_is_cut_at_its_bound() {
        let forged = "ok\n2025-01-01T00:00:00Z ERROR genl_gateway::api: FORGED\r\u{1b}[31m";
        let line = one_line(forged, 1000);
        assert!(!line.contains(['\n', '\r', '\u{1b}']), "{line}");
        assert!(line.contains("ok\\n2025") && line.contains("\\u{1b}"), "{line}");
        let long = "x".repeat(10_000);
        let cut = one_line(&long, 100);
        assert!(cut.starts_with(&"x".repeat(100)), "{cut}");
        assert!(cut.ends_with("... [9900 more bytes cut]"), "{cut}");
    }

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
