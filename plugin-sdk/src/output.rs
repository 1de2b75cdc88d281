//! A call's output streamed to the client as items, a batch at a time
//! (usually one dump part's objects): the client receives a JSON array (or
//! NDJSON) while the plugin still decodes, and neither side holds the
//! whole output.
//!
//! ```no_run
//! use genl_plugin_sdk::output::Items;
//! use genl_plugin_sdk::prelude::*;
//!
//! fn list() -> Result<Value, CallError> {
//!     let mut items = Items::new();
//!     items.send(vec![json!({"id": 1}), json!({"id": 2})])?;
//!     items.send(vec![json!({"id": 3})])?;
//!     // Return this from `Plugin::call`.
//!     Ok(items.finish())
//! }
//! ```
//!
//! On wasm the items go to the host as they are sent and the call's
//! output is "the items"; natively (in `cargo test`) they are collected and
//! [`Items::finish`] returns them as one array, so a plugin's tests see the
//! same JSON a client does.

use serde_json::Value;

use crate::types::CallError;

/// The items of the running call's output.
#[derive(Debug)]
pub struct Items {
    #[cfg(not(target_arch = "wasm32"))]
    collected: Vec<Value>,
}

impl Items {
    /// Start the call's output as items. Once started, whatever `call`
    /// returns, the client gets the items (none is `[]`); errors still
    /// reach it.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        #[cfg(target_arch = "wasm32")]
        crate::wasm::output::begin();
        Self {
            #[cfg(not(target_arch = "wasm32"))]
            collected: Vec::new(),
        }
    }

    /// Send a batch of items. An error means the output is over (the client
    /// went away or reads too slowly, or an item was refused): stop and
    /// return the error from `call`.
    pub fn send(&mut self, batch: Vec<Value>) -> Result<(), CallError> {
        if batch.is_empty() {
            return Ok(());
        }
        #[cfg(target_arch = "wasm32")]
        {
            let texts = batch
                .iter()
                .map(serde_json::to_string)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CallError::new("internal", format!("an item is not JSON: {e}")))?;
            crate::wasm::output::items(&texts).map_err(|m| CallError::new("output-closed", m))
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            self.collected.extend(batch);
            Ok(())
        }
    }

    /// Send a batch of items already written as JSON text (by the YNL
    /// engine's decoder, say), without turning them into values first.
    /// Each must be one JSON value: the host checks, and refuses the
    /// output otherwise.
    pub fn send_texts(&mut self, batch: Vec<String>) -> Result<(), CallError> {
        if batch.is_empty() {
            return Ok(());
        }
        #[cfg(target_arch = "wasm32")]
        {
            crate::wasm::output::items(&batch).map_err(|m| CallError::new("output-closed", m))
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            for text in batch {
                self.collected.push(parse(&text)?);
            }
            Ok(())
        }
    }

    /// What `call` returns: on wasm `null` (the items are the output),
    /// natively the collected array.
    pub fn finish(self) -> Value {
        #[cfg(target_arch = "wasm32")]
        {
            Value::Null
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            Value::Array(self.collected)
        }
    }
}

impl Items {
    /// Send the items written one after another in `text`, each one JSON
    /// value, separated by whitespace (a line break after each, say): a
    /// batch as one string, where [`Items::send_texts`] takes a string an
    /// item, so a dump part of a thousand objects crosses to the host as
    /// one string. The host checks every item, and refuses the output if
    /// one is not JSON.
    pub fn send_joined(&mut self, text: &str) -> Result<(), CallError> {
        if text.trim_ascii().is_empty() {
            return Ok(());
        }
        #[cfg(target_arch = "wasm32")]
        {
            crate::wasm::output::items_joined(text).map_err(|m| CallError::new("output-closed", m))
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
                let value =
                    value.map_err(|e| CallError::new("internal", format!("an output is not JSON: {e}")))?;
                self.collected.push(value);
            }
            Ok(())
        }
    }
}

/// What can be sent as an item: a value, or JSON text already written
/// (see [`Items::send_texts`]).
pub trait Item: Sized {
    /// Send `batch` as items of `items`.
    fn send(items: &mut Items, batch: Vec<Self>) -> Result<(), CallError>;
}

impl Item for Value {
    fn send(items: &mut Items, batch: Vec<Self>) -> Result<(), CallError> {
        items.send(batch)
    }
}

impl Item for String {
    fn send(items: &mut Items, batch: Vec<Self>) -> Result<(), CallError> {
        items.send_texts(batch)
    }
}

/// Make `text`, one JSON document, the running call's output as it is:
/// return the result from `call`. For output already written as JSON text
/// (the YNL engine's decoder writes text), it saves parsing it into a
/// value only to serialise it again. On wasm the result is `null` and the
/// text goes to the client; natively (in `cargo test`) it is the parsed
/// value, so a plugin's tests see what a client does.
pub fn document(text: String) -> Result<Value, CallError> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::wasm::output::document(text);
        Ok(Value::Null)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        parse(&text)
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn parse(text: &str) -> Result<Value, CallError> {
    serde_json::from_str(text).map_err(|e| CallError::new("internal", format!("an output is not JSON: {e}")))
}
