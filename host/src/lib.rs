//! genl-gateway: one host process owns the generic netlink sockets; each
//! family's logic runs in a sandboxed WebAssembly plugin; applications talk
//! to the gateway over HTTP/JSON.
//!
//! The modules follow the data path: [`config`] says what to serve,
//! [`netlink`] and [`families`] talk to the kernel, [`plugin`] runs the
//! components, [`gateway`] ties them together, [`api`] serves clients, and
//! [`client`] is the CLI's side of the API.

pub mod api;
pub mod client;
pub mod config;
pub mod families;
pub mod fleet;
pub mod gateway;
pub mod hints;
pub mod netlink;
pub mod plugin;
pub mod scaffold;
pub mod ynl_fallback;
