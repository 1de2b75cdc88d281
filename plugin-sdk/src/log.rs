//! Logging into the gateway's log, tagged with the plugin's name.

use crate::types::Level;

/// Write one line at `level`.
pub fn log(level: Level, message: &str) {
    backend::log(level, message)
}

/// Write one line at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message)
}

/// Write one line at info level.
pub fn info(message: &str) {
    log(Level::Info, message)
}

/// Write one line at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message)
}

/// Write one line at error level.
pub fn error(message: &str) {
    log(Level::Error, message)
}

#[cfg(target_arch = "wasm32")]
use crate::wasm::log as backend;

#[cfg(not(target_arch = "wasm32"))]
use crate::testing::log as backend;
