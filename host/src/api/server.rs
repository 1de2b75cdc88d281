//! The accept loop, with the limits plain `axum::serve` lacks: a cap on
//! connections served at once (more wait in the kernel's accept queue), a
//! share of that cap per local user and a few slots kept for root (more
//! are answered 429), a header-read timeout that also closes idle keep-alive
//! connections, a write timeout that closes a connection whose client
//! stopped reading its answer (else it would hold its slot, and what is
//! queued for it, for as long as it liked), and clear, rate-limited log
//! lines when a limit is reached.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use axum::serve::Listener;
use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_layer::Layer;

use super::connections::{
    ConnectionStats, ListenerKind, OverCap, PeerUser, UNKNOWN_USER, UserSlot, UserSlots,
};
use super::error::{ApiError, ErrorCode};
use super::event_bus::ConnClose;
use super::log_every::LogEvery;

/// Refusals (429 to a user over its share) answered at once, and per user;
/// connections past these are closed unanswered, so refusing costs a
/// bounded amount too.
const REFUSALS_AT_ONCE: usize = 16;
const REFUSALS_PER_USER: usize = 2;

/// Slots of a listener of `max_connections` kept for root: a sixteenth, at
/// most 8 (none for the smallest listeners).
fn root_reserve(max_connections: usize) -> usize {
    (max_connections / 16).min(8)
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// Its user holds its share.
    UserCap(OverCap),
    /// Every slot but root's reserve is taken.
    RootReserve { uid: Option<u32>, reserve: usize },
}

impl Refusal {
    /// The user refused; an unknown one counts as one user.
    fn uid(self) -> u32 {
        match self {
            Self::UserCap(over) => over.uid,
            Self::RootReserve { uid, .. } => uid.unwrap_or(UNKNOWN_USER),
        }
    }

    fn log(self, listener: &str) {
        match self {
            Self::UserCap(over) => tracing::warn!(
                listener,
                uid = over.uid,
                max_connections_per_user = over.cap,
                "a user holds as many API connections as one user may; its further connections are answered 429 (raise [api] max_connections_per_user if its clients are legitimate)"
            ),
            Self::RootReserve { uid, reserve } => tracing::warn!(
                listener,
                uid,
                reserved_for_root = reserve,
                "every API connection but those kept for root is taken; other users' further connections are answered 429 (raise [api] max_connections if the clients are legitimate)"
            ),
        }
    }

    fn message(self) -> String {
        match self {
            Self::UserCap(over) => format!(
                "your user (uid {}) holds {} connections to this listener, as many as one user may ([api] max_connections_per_user); close one, or reuse a keep-alive connection",
                over.uid, over.cap
            ),
            Self::RootReserve { reserve, .. } => format!(
                "every connection to this listener is taken but the {reserve} kept for root ([api] max_connections); retry later"
            ),
        }
    }
}

/// The slots a connection of `uid` takes, or why it is refused. Root takes
/// neither a user's share nor a slot outside the reserve.
fn admit(
    users: &Arc<UserSlots>,
    others: &Arc<Semaphore>,
    reserve: usize,
    uid: Option<u32>,
) -> Result<(Option<UserSlot>, Option<OwnedSemaphorePermit>), Refusal> {
    if uid == Some(0) {
        return Ok((None, None));
    }
    let user = users.take(uid).map_err(Refusal::UserCap)?;
    let other = others
        .clone()
        .try_acquire_owned()
        .map_err(|_| Refusal::RootReserve { uid, reserve })?;
    Ok((user, Some(other)))
}

/// What one listener allows.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections one local user (not root) may hold at once.
    pub max_connections_per_user: usize,
    /// Time to send a request's headers, and to keep an idle connection.
    pub header_timeout: Duration,
    /// Time a write may wait on a client that does not read. A connection
    /// with nothing to write (an idle event stream) is not affected.
    pub write_timeout: Duration,
}

/// Serve `app` on `listener` until the process ends.
pub async fn run<L>(
    mut listener: L,
    app: Router,
    limits: ServerLimits,
    kind: ListenerKind,
    stats: Arc<ConnectionStats>,
) where
    L: Listener,
    L::Io: PeerUser,
{
    let name = kind.as_str();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let users = UserSlots::new(limits.max_connections_per_user);
    // A few slots only root may take, so the operator can always connect:
    // a user with a range of subordinate uids (rootless containers) counts
    // as that many users.
    let reserve = root_reserve(limits.max_connections);
    let others = Arc::new(Semaphore::new(limits.max_connections - reserve));
    let refusals = Arc::new(Semaphore::new(REFUSALS_AT_ONCE));
    let refusing = UserSlots::new(REFUSALS_PER_USER);
    let cap_log = LogEvery::default();
    // One per kind of refusal, so one kind's warnings never hide the other's.
    let (user_cap_log, reserve_log) = (LogEvery::default(), LogEvery::default());
    let stall_log: Arc<LogEvery> = Arc::default();
    loop {
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                cap_log.emit(|| {
                    tracing::warn!(
                        listener = name,
                        max_connections = limits.max_connections,
                        "API connection limit reached; new connections wait until one closes (raise [api] max_connections if clients are legitimate)"
                    );
                });
                match slots.clone().acquire_owned().await {
                    Ok(p) => p,
                    // The semaphore is never closed.
                    Err(_) => return,
                }
            }
        };
        let (io, _) = listener.accept().await;
        let uid = io.peer_uid();
        let admitted = admit(&users, &others, reserve, uid);
        let (user_slot, other_slot) = match admitted {
            Ok(slots) => slots,
            Err(refusal) => {
                // A refused connection holds none of the listener's slots.
                drop(permit);
                stats.note_refused(kind);
                let log = match refusal {
                    Refusal::UserCap(_) => &user_cap_log,
                    Refusal::RootReserve { .. } => &reserve_log,
                };
                log.emit(|| refusal.log(name));
                // At most a few refusals per user at once: one that sends
                // no request head holds its refusal until the header
                // timeout, and must not take everyone else's.
                let turns = (
                    refusals.clone().try_acquire_owned(),
                    refusing.take(Some(refusal.uid())),
                );
                if let (Ok(turn), Ok(user_turn)) = turns {
                    tokio::spawn(async move {
                        let _turns = (turn, user_turn);
                        refuse(io, refusal, limits.header_timeout).await;
                    });
                }
                continue;
            }
        };
        let close = ConnClose::default();
        let service = TowerToHyperService::new(Extension(close.clone()).layer(app.clone()));
        let stall_log = stall_log.clone();
        let stats = stats.clone();
        tokio::spawn(async move {
            let _slots = (permit, user_slot, other_slot);
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
                            stats.note_closed_not_reading(kind);
                            stall_log.emit(|| {
                                tracing::warn!(
                                    listener = name,
                                    "closed an API connection whose client read nothing of its answer for {:?} ([api] write_timeout_ms); more are counted in /metrics (genl_gateway_api_connections_closed_not_reading_total)",
                                    limits.write_timeout
                                );
                            });
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

/// Answer a connection whose user is over its share with 429 and close
/// it. The answer follows the request's head, which a client sends before
/// it reads anything, so a refusal lasts at most about the header timeout.
async fn refuse<I>(io: I, refusal: Refusal, header_timeout: Duration)
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let service = hyper::service::service_fn(move |_req| {
        let answer = ApiError::new(ErrorCode::TooManyConnections, refusal.message()).into_response();
        async move { Ok::<_, Infallible>(answer) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(false);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    // Bounded even if the client never reads the answer.
    let _ = tokio::time::timeout(header_timeout.saturating_add(Duration::from_secs(5)), conn).await;
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
