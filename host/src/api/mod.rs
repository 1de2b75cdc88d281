//! The client API: HTTP/JSON on a Unix socket and, if configured, loopback
//! TCP. Every error is a JSON body with a stable code.

mod auth;
mod connections;
mod error;
mod event_bus;
mod extract;
mod log_every;
mod metrics;
pub mod openapi;
mod routes;
mod server;
mod socket;
mod strict_json;

use std::sync::Arc;

use anyhow::Context;
use tokio::net::{TcpListener, UnixListener};

pub use connections::{ConnectionStats, ListenerKind};
pub use error::{ApiError, ErrorCode, PLUGIN_CODE_DEFAULT, errno_status, errno_statuses};
pub use extract::MAX_FAMILY_NAME;
pub use routes::router;
pub(crate) use routes::run_call;
pub use server::ServerLimits;
pub use socket::{SocketError, ensure_free};

use crate::gateway::Gateway;

/// Bind the configured listeners and serve until the process ends.
pub async fn serve(gateway: Arc<Gateway>) -> anyhow::Result<()> {
    let api = &gateway.config.api;
    let app = router(gateway.clone());
    // Calls from the fleet share the API's call path; both start together.
    crate::fleet::calls::spawn(gateway.clone());
    crate::fleet::service::spawn(gateway.clone());
    let limits = ServerLimits {
        max_connections: api.max_connections,
        max_connections_per_user: api.max_connections_per_user,
        header_timeout: api.header_timeout,
        write_timeout: api.write_timeout,
    };

    // TCP first: once the Unix socket answers, every listener is up.
    let tcp = match api.tcp {
        Some(addr) => {
            let l = TcpListener::bind(addr).await.with_context(|| {
                format!("binding the TCP API on {addr} (is another gateway running? change [api] tcp)")
            })?;
            tracing::info!(%addr, "API listening on TCP");
            Some(l)
        }
        None => None,
    };

    let unix = socket::bind(&api.socket, api.socket_mode, api.socket_group.as_deref())?;
    unix.set_nonblocking(true)
        .context("making the API socket non-blocking")?;
    let unix = UnixListener::from_std(unix).context("registering the API socket")?;
    tracing::info!(socket = %api.socket.display(), "API listening on the Unix socket");

    let stats = gateway.api_connections.clone();
    let unix_server = server::run(unix, app.clone(), limits, ListenerKind::Unix, stats.clone());
    match tcp {
        Some(tcp) => {
            let app = app.layer(axum::middleware::from_fn_with_state(
                gateway.clone(),
                auth::require_token,
            ));
            tokio::join!(
                unix_server,
                server::run(tcp, app, limits, ListenerKind::Tcp, stats)
            );
        }
        None => unix_server.await,
    }
    Ok(())
}
