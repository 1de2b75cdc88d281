//! The accept loop, with the limits plain `axum::serve` lacks: a cap on
//! connections served at once (more wait in the kernel's accept queue), a
//! header-read timeout that also closes idle keep-alive connections, a
//! write timeout that closes a connection whose client stopped reading its
//! answer (else it would hold its slot, and what is queued for it, for as
//! long as it liked), and a clear, rate-limited log line when the cap is
//! reached.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::serve::Listener;
use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::sync::Semaphore;
use tower_layer::Layer;

use super::event_bus::ConnClose;

/// How often "connection limit reached" may be logged.
const CAP_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What one listener allows.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time to send a request's headers, and to keep an idle connection.
    pub header_timeout: Duration,
    /// Time a write may wait on a client that does not read. A connection
    /// with nothing to write (an idle event stream) is not affected.
    pub write_timeout: Duration,
}

/// Serve `app` on `listener` until the process ends.
pub async fn run<L: Listener>(mut listener: L, app: Router, limits: ServerLimits, name: &'static str) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut last_cap_log: Option<Instant> = None;
    let last_stall_log: Arc<Mutex<Option<Instant>>> = Arc::default();
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if last_cap_log.is_none_or(|t| t.elapsed() >= CAP_LOG_INTERVAL) {
                    last_cap_log = Some(Instant::now());
                    tracing::warn!(
                        listener = name,
                        max_connections = limits.max_connections,
                        "API connection limit reached; new connections wait until one closes (raise [api] max_connections if clients are legitimate)"
                    );
                }
                match slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    // The semaphore is never closed.
                    Err(_) => return,
                }
            }
        };
        let (io, _) = listener.accept().await;
        let close = ConnClose::default();
        let service = TowerToHyperService::new(Extension(close.clone()).layer(app.clone()));
        let last_stall_log = last_stall_log.clone();
        tokio::spawn(async move {
            let _slot = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(true);
            let mut io = tokio_io_timeout::TimeoutStream::new(io);
            io.set_write_timeout(Some(limits.write_timeout));
            let conn = builder.serve_connection(TokioIo::new(Box::pin(io)), service);
            tokio::select! {
                r = conn => {
                    if let Err(e) = r {
                        if timed_out_writing(&e) {
                            log_stalled_client(&last_stall_log, name, limits.write_timeout);
                        }
                        tracing::debug!(listener = name, error = %e, "API connection ended");
                    }
                }
                // An event subscriber cut off and not reading: drop the
                // connection, which closes it.
                _ = close.0.notified() => {
                    tracing::debug!(listener = name, "closed a cut-off event subscriber's connection");
                }
            }
        });
    }
}

/// Whether a connection ended because a write waited out the write timeout.
fn timed_out_writing(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = s.source();
    }
    false
}

/// Say, at most every [`CAP_LOG_INTERVAL`], that a client was closed for
/// not reading: the sign of a stuck or hostile client.
fn log_stalled_client(last: &Mutex<Option<Instant>>, name: &str, limit: Duration) {
    let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
    if last.is_none_or(|t| t.elapsed() >= CAP_LOG_INTERVAL) {
        *last = Some(Instant::now());
        tracing::warn!(
            listener = name,
            "closed an API connection whose client read nothing of its answer for {limit:?} ([api] write_timeout_ms); more are logged at debug level"
        );
    }
}
