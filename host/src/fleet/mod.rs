//! The gateway on a NATS bus, for fleets (opt-in, `[bus]` in gateway.toml).
//!
//! We do not build a distributed system: every gateway joins an existing
//! NATS deployment as a client. This module holds the connection
//! ([`connection`]) and its configuration ([`config`]); the bus carries
//! the plugins' events into JetStream ([`events`], `[bus.events]` in
//! [`events_config`], read back by `fleet events` in [`replay`]) and
//! answers calls from the fleet.
//! A gateway whose bus is down keeps serving its local API as before.

pub mod calls;
pub mod calls_config;
pub mod config;
pub mod connection;
pub mod events;
pub mod events_config;
pub mod fleet_cli;
pub mod replay;
pub mod service;
mod spool;

pub use calls_config::CallsConfig;
pub use config::{BusConfig, Credentials, FamilyBus, Secret, TlsConfig};
pub use connection::{Bus, BusState};
