//! The client API: HTTP/JSON on a Unix socket and, if configured, loopback
//! TCP. Every error is a JSON body with a stable code.

mod auth;
mod error;
mod metrics;
mod routes;

use std::sync::Arc;

use anyhow::Context;
use tokio::net::{TcpListener, UnixListener};

pub use error::ApiError;
pub use routes::router;

use crate::gateway::Gateway;

/// Bind the configured listeners and serve until the process ends.
pub async fn serve(gateway: Arc<Gateway>) -> anyhow::Result<()> {
    let api = &gateway.config.api;
    let app = router(gateway.clone());

    if let Some(dir) = api.socket.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the socket directory {}", dir.display()))?;
    }
    // A socket file left by a previous run would make bind fail.
    match std::fs::remove_file(&api.socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("removing the stale socket {}", api.socket.display()));
        }
    }
    let unix = UnixListener::bind(&api.socket).with_context(|| {
        format!(
            "binding the API socket {} (set [api] socket in the config)",
            api.socket.display()
        )
    })?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&api.socket, std::fs::Permissions::from_mode(api.socket_mode))
            .with_context(|| format!("setting the mode of {}", api.socket.display()))?;
    }
    if let Some(group) = &api.socket_group {
        let gid = group_id(group).with_context(|| format!("[api] socket_group: no group named '{group}'"))?;
        std::os::unix::fs::chown(&api.socket, None, Some(gid))
            .with_context(|| format!("giving {} to group {group}", api.socket.display()))?;
    }
    tracing::info!(socket = %api.socket.display(), "API listening on the Unix socket");

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

    let unix_server = axum::serve(unix, app.clone());
    match tcp {
        Some(tcp) => {
            let app = app.layer(axum::middleware::from_fn_with_state(
                gateway.clone(),
                auth::require_token,
            ));
            let tcp_server = axum::serve(tcp, app);
            tokio::try_join!(async { unix_server.await }, async { tcp_server.await })?;
        }
        None => unix_server.await?,
    }
    Ok(())
}

/// The id of group `name`, from the system's group database.
fn group_id(name: &str) -> Option<u32> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: getgrnam reads a NUL-terminated name; the returned record is
    // read at once, before any other call could reuse its static storage.
    let gr = unsafe { libc::getgrnam(name.as_ptr()) };
    // SAFETY: non-null gr points at a valid struct group.
    (!gr.is_null()).then(|| unsafe { (*gr).gr_gid })
}
