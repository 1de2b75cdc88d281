//! The NATS micro-service announcement (`$SRV.PING`, `$SRV.INFO`,
//! `$SRV.STATS`), so standard NATS tooling (`nats micro ls`) and
//! `genl-gateway fleet hosts` list the fleet.
//!
//! async-nats's service answers the three verbs; its endpoints would
//! subscribe with a queue group, which breaks scatter-gather on
//! `PREFIX.all.call.>`, so the calls are plain subscriptions
//! ([`super::calls`]) and the service registers none: the call subjects
//! are in the metadata instead.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::service::ServiceExt;

use super::calls::CALL_TOKEN;
use super::config::ALL_HOSTS;
use crate::gateway::Gateway;

/// The service name every gateway announces.
pub const SERVICE_NAME: &str = "genl-gateway";

/// Metadata keys of the announcement.
pub mod meta {
    /// This host's name on the bus.
    pub const HOST: &str = "host";
    /// The subject prefix.
    pub const PREFIX: &str = "prefix";
    /// Whether calls are served (`true`/`false`).
    pub const CALLS: &str = "calls";
    /// `read` or `write`: `[bus.calls] access`.
    pub const ACCESS: &str = "access";
    /// The call subjects this host answers on.
    pub const SUBJECTS: &str = "subjects";
}

/// Announce this gateway on the bus, for as long as the process runs.
pub fn spawn(gateway: Arc<Gateway>) {
    let Some(bus) = gateway.bus.clone() else {
        return;
    };
    tokio::spawn(async move {
        let config = bus.config();
        let calls = &config.calls;
        let metadata = HashMap::from([
            (meta::HOST.to_owned(), config.host.clone()),
            (meta::PREFIX.to_owned(), config.prefix.clone()),
            (meta::CALLS.to_owned(), calls.enabled.to_string()),
            (
                meta::ACCESS.to_owned(),
                format!("{:?}", calls.access).to_lowercase(),
            ),
            (
                meta::SUBJECTS.to_owned(),
                format!(
                    "{p}.{h}.{CALL_TOKEN}.>, {p}.{ALL_HOSTS}.{CALL_TOKEN}.>",
                    p = config.prefix,
                    h = config.host
                ),
            ),
        ]);
        let service = bus
            .client()
            .service_builder()
            .description(format!("generic netlink gateway of host {}", config.host))
            .metadata(metadata)
            .start(SERVICE_NAME, env!("CARGO_PKG_VERSION"))
            .await;
        match service {
            Ok(service) => {
                tracing::info!(host = %config.host, "bus: announced as NATS service '{SERVICE_NAME}'");
                // The service answers while it lives: keep it for the process.
                std::future::pending::<()>().await;
                drop(service);
            }
            Err(e) => {
                tracing::error!(error = %e, "bus: cannot announce the gateway as a NATS service; `fleet hosts` will not list it (calls are unaffected)")
            }
        }
    });
}
