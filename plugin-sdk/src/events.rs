//! Publishing decoded events to the gateway's subscribers.

use serde::Serialize;

/// Publish `payload` as JSON under `topic`.
pub fn publish<T: Serialize + ?Sized>(topic: &str, payload: &T) {
    // Serialising plain data (maps, numbers, strings) cannot fail; a value
    // that does fail is published as null rather than lost silently.
    let json = serde_json::to_string(payload).unwrap_or_else(|_| "null".to_owned());
    backend::publish(topic, &json)
}

#[cfg(target_arch = "wasm32")]
use crate::wasm::events as backend;

#[cfg(not(target_arch = "wasm32"))]
use crate::testing::events as backend;
