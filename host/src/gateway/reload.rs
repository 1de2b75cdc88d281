//! Loading and hot-reloading families. Start-up, SIGHUP, the API and the
//! file watcher all go through [`Gateway::reload`]: each family file is
//! read, its plugin compiled and initialised, and only then swapped in. A
//! file or plugin that fails leaves the version that was serving in place.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{FamilyEntry, Gateway, Listener, listener, watch};
use crate::config::{ConfigError, FamilyConfig};
use crate::netlink::SocketOptions;
use crate::plugin::{KernelAccess, LoadedPlugin};

/// What a reload did to one family file.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    /// The family file.
    pub file: String,
    /// The family, when the file could be read.
    pub family: Option<String>,
    /// "added", "reloaded", "unchanged", "removed" or "failed".
    pub result: &'static str,
    /// Why it failed.
    pub error: Option<String>,
    /// On failure: whether the previous version keeps serving.
    pub kept_previous: bool,
}

fn wasm_sha256(path: &Path) -> Option<String> {
    std::fs::read(path)
        .ok()
        .map(|b| format!("{:x}", Sha256::digest(b)))
}

impl Gateway {
    /// Re-read every family file; load what is new or changed, drop what
    /// was removed. Unchanged families keep running untouched.
    pub async fn reload(self: &Arc<Self>) -> Vec<ReloadOutcome> {
        let _turn = self.reload_turn.lock().await;
        let files = match self.config.load_families() {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("{e}; nothing reloaded");
                return vec![ReloadOutcome {
                    file: e.path().display().to_string(),
                    family: None,
                    result: "failed",
                    error: Some(e.to_string()),
                    kept_previous: true,
                }];
            }
        };
        let mut seen = BTreeSet::new();
        let mut outcomes = Vec::new();
        for parsed in files {
            let path = match &parsed {
                Ok(f) => f.path.clone(),
                Err(e) => e.path().to_owned(),
            };
            seen.insert(path.clone());
            outcomes.push(self.reload_file(&path, parsed, false).await);
        }
        // Families whose file is gone stop being served.
        let removed: Vec<(String, PathBuf)> = self
            .families()
            .into_iter()
            .filter(|(_, e)| !seen.contains(&e.config.path))
            .map(|(n, e)| (n, e.config.path.clone()))
            .collect();
        for (name, path) in removed {
            self.families_mut().remove(&name);
            tracing::info!(family = %name, "family file removed; no longer served");
            outcomes.push(ReloadOutcome {
                file: path.display().to_string(),
                family: Some(name),
                result: "removed",
                error: None,
                kept_previous: false,
            });
        }
        self.broken_files_mut().retain(|p, _| seen.contains(p));
        outcomes
    }

    /// Reload the family `name` from its file, even if nothing changed (a
    /// failed plugin starts afresh). `None` if no file configures it.
    pub async fn reload_family(self: &Arc<Self>, name: &str) -> Option<ReloadOutcome> {
        let _turn = self.reload_turn.lock().await;
        let path = self.family(name)?.config.path.clone();
        let parsed = self.config.load_family(&path);
        Some(self.reload_file(&path, parsed, true).await)
    }

    async fn reload_file(
        self: &Arc<Self>,
        path: &Path,
        parsed: Result<FamilyConfig, ConfigError>,
        force: bool,
    ) -> ReloadOutcome {
        let current = self.families().into_iter().find(|(_, e)| e.config.path == path);
        let outcome = |family: Option<&str>, result, error: Option<String>, kept_previous| ReloadOutcome {
            file: path.display().to_string(),
            family: family.map(str::to_owned),
            result,
            error,
            kept_previous,
        };
        let config = match parsed {
            Ok(c) => c,
            Err(e) => {
                let kept = current.is_some();
                tracing::error!(
                    "{e}; {}",
                    if kept {
                        "the previous version keeps serving"
                    } else {
                        "this family is skipped"
                    }
                );
                self.broken_files_mut().insert(path.to_owned(), e.to_string());
                return outcome(
                    current.as_ref().map(|(n, _)| n.as_str()),
                    "failed",
                    Some(e.to_string()),
                    kept,
                );
            }
        };
        self.broken_files_mut().remove(path);
        let old = current.map(|(_, e)| e).or_else(|| self.family(&config.family));
        if !force
            && let Some(old) = &old
            && old.config == config
            && let Ok(p) = &old.plugin
            && p.status().state != "failed"
            && wasm_sha256(&config.plugin).as_deref() == Some(p.sha256())
        {
            return outcome(Some(&config.family), "unchanged", None, false);
        }
        let name = config.family.clone();
        let entry = self.build_entry(config).await;
        match (&entry.plugin, &old) {
            (Err(e), Some(old)) if old.plugin.is_ok() => {
                tracing::error!(family = %name, "reload failed: {e}; the previous version keeps serving");
                outcome(Some(&name), "failed", Some(e.clone()), true)
            }
            (result, _) => {
                let error = result.as_ref().err().cloned();
                let entry = Arc::new(entry);
                // A file renamed to serve another family: the old name goes.
                if let Some(old) = old.as_ref().filter(|o| o.config.family != name) {
                    self.families_mut().remove(&old.config.family);
                }
                let verb = if old.is_some() { "reloaded" } else { "added" };
                self.families_mut().insert(name.clone(), entry);
                if self.resolver.cached(&name).is_some() {
                    watch::refresh(self, &name).await;
                }
                match error {
                    None => outcome(Some(&name), verb, None, false),
                    Some(e) => outcome(Some(&name), "failed", Some(e), false),
                }
            }
        }
    }

    /// Compile and initialise a family's plugin with a listener of its own.
    async fn build_entry(&self, family: FamilyConfig) -> FamilyEntry {
        let name: Arc<str> = family.family.as_str().into();
        let (listener, queue) = Listener::new(
            name.clone(),
            family.groups.clone(),
            SocketOptions {
                receive_buffer: family.receive_buffer,
                ..self.base.clone()
            },
            family.queue,
        );
        let access = KernelAccess {
            family: name,
            config_path: family.path.display().to_string().into(),
            allow_do: family.allow_do.as_slice().into(),
            allow_dump: family.allow_dump.as_slice().into(),
            validate: family.validate_requests,
            requester: self.requester.clone(),
            resolver: self.resolver.clone(),
            listener: listener.clone(),
        };
        match LoadedPlugin::load(&self.runtime, &family, access, self.events.clone()).await {
            Ok(p) => {
                tracing::info!(family = %family.family, plugin = %family.plugin.display(), ops = p.description().ops.len(), "plugin loaded");
                let dispatcher =
                    tokio::spawn(listener::dispatch(listener.clone(), queue, p.clone())).abort_handle();
                FamilyEntry {
                    config: family,
                    plugin: Ok(p),
                    listener: Some(listener),
                    dispatcher: Some(dispatcher),
                }
            }
            Err(e) => {
                tracing::error!("{}: {e}; this family is not served", family.path.display());
                FamilyEntry {
                    config: family,
                    plugin: Err(e.to_string()),
                    listener: None,
                    dispatcher: None,
                }
            }
        }
    }
}

/// A fingerprint of the watched files: name, size and modification time.
fn fingerprint(dirs: &[&Path], ext: &[&str]) -> BTreeMap<PathBuf, (u64, Option<SystemTime>)> {
    let mut out = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| ext.iter().any(|e| x == *e))
                && let Ok(m) = e.metadata()
            {
                out.insert(p, (m.len(), m.modified().ok()));
            }
        }
    }
    out
}

/// Poll the plugin and families directories; reload once a change has
/// settled (unchanged for one interval), so half-written files are skipped.
pub async fn watch_files(gateway: Arc<Gateway>, interval: Duration) {
    let dirs = [
        gateway.config.families_dir.as_path(),
        gateway.config.plugin_dir.as_path(),
    ];
    let mut last = fingerprint(&dirs, &["toml", "wasm"]);
    let mut pending = false;
    loop {
        tokio::time::sleep(interval).await;
        let now = fingerprint(&dirs, &["toml", "wasm"]);
        if now != last {
            last = now;
            pending = true;
        } else if pending {
            pending = false;
            tracing::info!("configuration or plugin files changed; reloading");
            for o in gateway.reload().await.iter().filter(|o| o.result != "unchanged") {
                tracing::info!(file = %o.file, family = ?o.family, result = o.result, error = ?o.error, "reload");
            }
        }
    }
}
