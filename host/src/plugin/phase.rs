//! Where a plugin stands (its `state` in the API), as an enum.

use serde::Serialize;

/// Where a family's plugin stands. Serialised in lower case, as the API
/// has always shown it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginPhase {
    /// Being compiled and initialised; calls answer `plugin-loading`.
    Loading,
    /// Serving calls.
    Ready,
    /// Backing off after a crash; rebuilt on the next call after the backoff.
    Restarting,
    /// Crashed too often, or never loaded; serves nothing until reloaded.
    Failed,
}

impl PluginPhase {
    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Loading => "loading",
            Self::Ready => "ready",
            Self::Restarting => "restarting",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for PluginPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for PluginPhase {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
