//! The NATS connection: one client per gateway, connecting in the
//! background and reconnecting forever with a capped exponential backoff.
//! Its state is watched (for `/healthz`, `/metrics` and the log), never
//! waited on by the local API.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

use super::config::{BusConfig, Credentials};

/// The bus connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BusState {
    /// Not connected yet since start.
    Connecting,
    /// Connected to a server.
    Connected,
    /// Lost its server; reconnecting.
    Disconnected,
}

impl BusState {
    /// The state's name, as in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            BusState::Connecting => "connecting",
            BusState::Connected => "connected",
            BusState::Disconnected => "disconnected",
        }
    }
}

/// Why the bus could not be set up (configuration; never the network:
/// an unreachable server is retried in the background).
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The `.creds` file could not be read or parsed.
    #[error("bus: cannot use the NATS credentials file {path}: {source}")]
    Creds {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The client refused the options.
    #[error("bus: cannot start the NATS client: {0}")]
    Connect(String),
}

/// Counters of the connection.
#[derive(Debug, Default)]
pub struct BusStats {
    /// Times the connection was established (the first time included).
    pub connects: AtomicU64,
    /// Times the connection was lost.
    pub disconnects: AtomicU64,
    /// Errors the server reported (authorization violations, ...).
    pub server_errors: AtomicU64,
}

/// This gateway's connection to the fleet bus.
pub struct Bus {
    config: BusConfig,
    client: async_nats::Client,
    stats: Arc<BusStats>,
    /// The events publisher, once started (`[bus.events]`).
    events: std::sync::OnceLock<Arc<super::events::EventsPublisher>>,
    calls: super::calls::CallStats,
}

impl Bus {
    /// Start connecting to the bus in the background; returns at once
    /// with a client whose publishes and requests wait (bounded by their
    /// own timeouts) until a server is reached.
    pub async fn start(config: BusConfig) -> Result<Arc<Self>, BusError> {
        let stats = Arc::new(BusStats::default());
        let mut opts = connect_options(&config).await?;
        let max_delay = config.max_reconnect_delay;
        let events = stats.clone();
        let host = config.host.clone();
        opts = opts
            .name(format!("genl-gateway {}", config.host))
            .connection_timeout(config.connect_timeout)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempts| backoff(attempts, max_delay))
            .event_callback(move |event| {
                let stats = events.clone();
                let host = host.clone();
                async move { note_event(&stats, &host, event) }
            });
        let client = opts
            .connect(config.urls.clone())
            .await
            .map_err(|e| BusError::Connect(e.to_string()))?;
        tracing::info!(
            host = %config.host,
            prefix = %config.prefix,
            servers = ?config.urls,
            credentials = config.credentials.kind(),
            "bus: connecting to NATS in the background"
        );
        Ok(Arc::new(Self {
            config,
            client,
            stats,
            events: std::sync::OnceLock::new(),
            calls: super::calls::CallStats::default(),
        }))
    }

    /// The NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// The bus configuration.
    pub fn config(&self) -> &BusConfig {
        &self.config
    }

    /// The connection's counters.
    pub fn stats(&self) -> &BusStats {
        &self.stats
    }

    /// The counters of calls from the fleet.
    pub fn call_stats(&self) -> &super::calls::CallStats {
        &self.calls
    }

    /// The connection's state now.
    pub fn state(&self) -> BusState {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => BusState::Connected,
            async_nats::connection::State::Pending if self.stats.connects.load(Ordering::Relaxed) == 0 => {
                BusState::Connecting
            }
            _ => BusState::Disconnected,
        }
    }

    /// The events publisher, if events go to the bus.
    pub fn events(&self) -> Option<&Arc<super::events::EventsPublisher>> {
        self.events.get()
    }

    /// Record the events publisher (once, at start).
    pub(crate) fn set_events(&self, publisher: Arc<super::events::EventsPublisher>) {
        let _ = self.events.set(publisher);
    }

    /// The JetStream context of this connection.
    pub fn jetstream(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(self.client.clone())
    }

    /// A status document for `/healthz` and the CLI.
    pub fn status(&self) -> serde_json::Value {
        serde_json::json!({
            "state": self.state(),
            "host": self.config.host,
            "prefix": self.config.prefix,
            "connects": self.stats.connects.load(Ordering::Relaxed),
            "disconnects": self.stats.disconnects.load(Ordering::Relaxed),
            "events": self.events().map(|e| e.status()),
        })
    }
}

/// Client options for `config`'s credentials and TLS (shared by the
/// gateway and the fleet CLI).
pub async fn connect_options(config: &BusConfig) -> Result<async_nats::ConnectOptions, BusError> {
    let mut opts = match &config.credentials {
        Credentials::None => async_nats::ConnectOptions::new(),
        Credentials::UserPassword { user, password } => {
            async_nats::ConnectOptions::with_user_and_password(user.clone(), password.expose().to_owned())
        }
        Credentials::Token(t) => async_nats::ConnectOptions::with_token(t.expose().to_owned()),
        Credentials::NkeySeed(s) => async_nats::ConnectOptions::with_nkey(s.expose().to_owned()),
        Credentials::CredsFile(path) => async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|source| BusError::Creds {
                path: path.clone(),
                source,
            })?,
    };
    if let Some(ca) = &config.tls.ca_file {
        opts = opts.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&config.tls.cert_file, &config.tls.key_file) {
        opts = opts.add_client_certificate(cert.clone(), key.clone());
    }
    if config.tls.required {
        opts = opts.require_tls(true);
    }
    Ok(opts)
}

/// 100 ms doubling per attempt, capped at `max`.
fn backoff(attempts: usize, max: Duration) -> Duration {
    let shift = u32::try_from(attempts.min(16)).unwrap_or(16);
    Duration::from_millis(100u64 << shift).min(max)
}

fn note_event(stats: &BusStats, host: &str, event: async_nats::Event) {
    match event {
        async_nats::Event::Connected => {
            stats.connects.fetch_add(1, Ordering::Relaxed);
            tracing::info!(host, "bus: connected to NATS");
        }
        async_nats::Event::Disconnected => {
            stats.disconnects.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                host,
                "bus: lost the NATS server; reconnecting (the local API keeps serving)"
            );
        }
        async_nats::Event::ServerError(e) => {
            stats.server_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(host, error = %e, "bus: the NATS server reported an error (check the gateway's NATS permissions)");
        }
        other => tracing::debug!(host, event = %other, "bus: NATS client event"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let max = Duration::from_secs(5);
        assert_eq!(backoff(0, max), Duration::from_millis(100));
        assert_eq!(backoff(3, max), Duration::from_millis(800));
        assert_eq!(backoff(1000, max), max);
    }
}
