//! Loading and hot-reloading families. Start-up, SIGHUP, the API and the
//! file watcher all go through [`Gateway::reload`]: each family file is
//! read, its plugin compiled and initialised, and only then swapped in. A
//! file or plugin that fails leaves the version that was serving in place.
//!
//! Each file loads in a task of its own, taking only that file's turn, so
//! one slow plugin holds up neither the API nor any other family
//! (docs/decisions/0010-background-plugin-loading.md).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::loading::LoadingMark;
use super::{FamilyEntry, Gateway, Listener, listener, watch};
use crate::config::{ConfigError, FamilyConfig, family_named_in};
use crate::families::{self, ResolveError};
use crate::netlink::SocketOptions;
use crate::plugin::{KernelAccess, LoadedPlugin, PluginPhase};
use crate::ynl_fallback;

/// What became of one family file in a reload (`result` in the API, in
/// lower case as before).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadResult {
    /// A family not served before is now.
    Added,
    /// A new version replaced the one serving.
    Reloaded,
    /// Nothing changed; the running version was left alone.
    Unchanged,
    /// Its file is gone; the family is no longer served.
    Removed,
    /// The file or plugin is broken (see `kept_previous`).
    Failed,
}

impl ReloadResult {
    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Reloaded => "reloaded",
            Self::Unchanged => "unchanged",
            Self::Removed => "removed",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for ReloadResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a reload did to one family file.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadOutcome {
    /// The family file.
    pub file: String,
    /// The family, when the file could be read.
    pub family: Option<String>,
    /// What happened.
    pub result: ReloadResult,
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
    /// was removed. Unchanged families keep running untouched. Files load
    /// concurrently; this returns when all of them are done.
    pub async fn reload(self: &Arc<Self>) -> Vec<ReloadOutcome> {
        self.reload_with(HashMap::new()).await
    }

    /// Start-up: mark every configured family loading (so calls answer
    /// `plugin-loading`, not `unknown-family`), then load them all in the
    /// background.
    pub(super) fn load_in_background(self: &Arc<Self>) {
        let marks: HashMap<PathBuf, LoadingMark> = match self.config.load_families() {
            Ok(files) => files
                .into_iter()
                .flatten()
                .map(|f| {
                    let mark = self.loading.mark(&f.family, f.path.clone());
                    (f.path, mark)
                })
                .collect(),
            Err(_) => HashMap::new(), // reload() reports it
        };
        let gateway = self.clone();
        tokio::spawn(async move {
            // Each failure was logged as it happened, naming its file.
            let outcomes = gateway.reload_with(marks).await;
            tracing::info!(
                files = outcomes.len(),
                "every family file has been loaded or reported"
            );
        });
    }

    /// [`Gateway::reload`], with start-up's marks handed to each file's load.
    async fn reload_with(self: &Arc<Self>, mut marks: HashMap<PathBuf, LoadingMark>) -> Vec<ReloadOutcome> {
        let files = match self.config.load_families() {
            Ok(f) => f,
            Err(e) => {
                tracing::error!("{e}; nothing reloaded");
                return vec![ReloadOutcome {
                    file: e.path().display().to_string(),
                    family: None,
                    result: ReloadResult::Failed,
                    error: Some(e.to_string()),
                    kept_previous: true,
                }];
            }
        };
        let mut seen = BTreeSet::new();
        // Families some file still configures, loaded or not: a family
        // whose file was renamed keeps its previous version while the
        // renamed file fails to load, as any other failed reload does.
        let configured: BTreeSet<String> = files
            .iter()
            .filter_map(|f| f.as_ref().ok().map(|f| f.family.clone()))
            .collect();
        let mut loads = tokio::task::JoinSet::new();
        for (i, parsed) in files.into_iter().enumerate() {
            let path = match &parsed {
                Ok(f) => f.path.clone(),
                Err(e) => e.path().to_owned(),
            };
            seen.insert(path.clone());
            let mark = marks.remove(&path);
            let gateway = self.clone();
            loads.spawn(async move {
                let _mark = mark;
                let turn = gateway.turn(&path);
                let _turn = turn.lock().await;
                // Read again in this file's turn, so a load that waited
                // never installs an older version than the one before it.
                // A file refused while scanning (a duplicate family) stays
                // refused.
                let parsed = match parsed {
                    Ok(_) => gateway.config.load_family(&path),
                    Err(e) => Err(e),
                };
                (i, gateway.reload_file(&path, parsed, false).await)
            });
        }
        let mut outcomes = Vec::new();
        while let Some(done) = loads.join_next().await {
            match done {
                Ok(o) => outcomes.push(o),
                Err(e) => tracing::error!("a family's load stopped unexpectedly: {e}"),
            }
        }
        outcomes.sort_by_key(|(i, _)| *i);
        let mut outcomes: Vec<ReloadOutcome> = outcomes.into_iter().map(|(_, o)| o).collect();
        // Families whose file is gone, and that no other file configures
        // now, stop being served.
        let removed: Vec<(String, PathBuf)> = self
            .families()
            .into_iter()
            .filter(|(name, e)| !seen.contains(&e.config.path) && !configured.contains(name))
            .map(|(n, e)| (n, e.config.path.clone()))
            .collect();
        for (name, path) in removed {
            let turn = self.turn(&path);
            let _turn = turn.lock().await;
            // Still this file's family (a load may have replaced it meanwhile)?
            if self.family(&name).is_none_or(|e| e.config.path != path) {
                continue;
            }
            self.families_mut().remove(&name);
            self.drop_metrics(&name);
            self.turns
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&path);
            tracing::info!(family = %name, "family file removed; no longer served");
            outcomes.push(ReloadOutcome {
                file: path.display().to_string(),
                family: Some(name),
                result: ReloadResult::Removed,
                error: None,
                kept_previous: false,
            });
        }
        self.broken_files_mut().retain(|p, _| seen.contains(p));
        outcomes
    }

    /// Reload the family `name` from its file, even if nothing changed (a
    /// failed plugin starts afresh). `None` if no file configures it. Waits
    /// only for a load of the same file already under way.
    pub async fn reload_family(self: &Arc<Self>, name: &str) -> Option<ReloadOutcome> {
        let path = match self.family(name) {
            Some(e) => {
                // Its file renamed, and the renamed one's plugin failed:
                // the version serving names the old file (gone, or reused
                // for another family), and the file to read is the new.
                // Nearly always its own file, which names it: known
                // without loading the file (and parsing its spec) twice.
                let own = e.config.path.clone();
                if family_named_in(&own).as_deref() == Some(name) {
                    own
                } else {
                    match self.config.load_family(&own) {
                        Ok(c) if c.family != name => self.config.family_file(name).unwrap_or(own),
                        Err(_) if !own.exists() => self.config.family_file(name).unwrap_or(own),
                        _ => own,
                    }
                }
            }
            None => self.loading.file(name)?,
        };
        let turn = self.turn(&path);
        let _turn = turn.lock().await;
        let parsed = self.config.load_family(&path);
        Some(self.reload_file(&path, parsed, true).await)
    }

    /// Load one file, in its turn.
    async fn reload_file(
        self: &Arc<Self>,
        path: &Path,
        parsed: Result<FamilyConfig, ConfigError>,
        force: bool,
    ) -> ReloadOutcome {
        // The family this file serves. A family whose file was renamed,
        // kept while the renamed file's plugin failed, still names this
        // path: a new file here is not that family's, unless it says so.
        let current = self.families().into_iter().find(|(name, e)| {
            e.config.path == path
                && (parsed.as_ref().is_ok_and(|c| c.family == *name)
                    || self.config.family_file(name).is_none_or(|p| p == path))
        });
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
                let failed = current
                    .as_ref()
                    .and_then(|(_, entry)| entry.plugin.as_ref().ok())
                    .is_some_and(|p| p.status().state == PluginPhase::Failed);
                tracing::error!(
                    "{e}; {}",
                    match (kept, failed) {
                        (true, false) => "the previous version keeps serving",
                        (true, true) =>
                            "the previous version stays loaded, but it has failed and serves nothing",
                        (false, _) => "this family is skipped",
                    }
                );
                self.broken_files_mut().insert(path.to_owned(), e.to_string());
                return outcome(
                    current.as_ref().map(|(n, _)| n.as_str()),
                    ReloadResult::Failed,
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
            && p.status().state != PluginPhase::Failed
            && wasm_sha256(&config.plugin).as_deref() == Some(p.sha256())
        {
            p.set_failed_reload(None);
            return outcome(Some(&config.family), ReloadResult::Unchanged, None, false);
        }
        let name = config.family.clone();
        let entry = {
            let _loading = self.loading.mark(&name, path.to_owned());
            self.build_entry_off_the_workers(config).await
        };
        let loaded = old.as_ref().and_then(|o| o.plugin.as_ref().ok());
        match (&entry.plugin, loaded) {
            (Err(e), Some(loaded)) => {
                if loaded.status().state == PluginPhase::Failed {
                    tracing::error!(
                        family = %name,
                        "reload failed: {e}; the previous version stays loaded, but it has failed \
                         and serves nothing: fix the plugin and reload"
                    );
                } else {
                    tracing::error!(family = %name, "reload failed: {e}; the previous version keeps serving");
                }
                loaded.set_failed_reload(Some(e.clone()));
                outcome(Some(&name), ReloadResult::Failed, Some(e.clone()), true)
            }
            (result, _) => {
                let error = result.as_ref().err().cloned();
                let entry = Arc::new(entry);
                // A file renamed to serve another family: the old name goes.
                if let Some(old) = old.as_ref().filter(|o| o.config.family != name) {
                    self.families_mut().remove(&old.config.family);
                    self.drop_metrics(&old.config.family);
                }
                let verb = if old.is_some() {
                    ReloadResult::Reloaded
                } else {
                    ReloadResult::Added
                };
                self.families_mut().insert(name.clone(), entry);
                // Every new version has a new listener: open it and join
                // its groups now if the kernel has the family (else the
                // watcher does when it appears).
                match watch::reopen(self, &name).await {
                    Ok(()) => {}
                    Err(e @ ResolveError::Absent(_)) => {
                        tracing::warn!("{}: {e}; calls to it fail until it appears", path.display());
                    }
                    Err(e) => tracing::warn!("{}: {e}", path.display()),
                }
                // The family may have appeared while this version loaded.
                watch::respec_if_stale(self, &name);
                match error {
                    None => outcome(Some(&name), verb, None, false),
                    Some(e) => outcome(Some(&name), ReloadResult::Failed, Some(e), false),
                }
            }
        }
    }

    /// [`Gateway::build_entry`] on the blocking pool: compiling a component
    /// is CPU-bound and synchronous, and would otherwise occupy an async
    /// worker (this machine may have two) and stall the API while it runs.
    async fn build_entry_off_the_workers(self: &Arc<Self>, family: FamilyConfig) -> FamilyEntry {
        let gateway = self.clone();
        let handle = tokio::runtime::Handle::current();
        let config = family.clone();
        match tokio::task::spawn_blocking(move || handle.block_on(gateway.build_entry(family))).await {
            Ok(entry) => entry,
            Err(e) => {
                tracing::error!(
                    "{}: loading the plugin stopped: {e}; this family is not served",
                    config.path.display()
                );
                FamilyEntry {
                    config,
                    plugin: Err(format!("loading the plugin stopped: {e}")),
                    listener: None,
                    dispatcher: None,
                    policy_source: None,
                }
            }
        }
    }

    /// Compile and initialise a family's plugin with a listener of its own.
    async fn build_entry(&self, family: FamilyConfig) -> FamilyEntry {
        let name: Arc<str> = family.family.as_str().into();
        let mut listen = SocketOptions {
            receive_buffer: family.receive_buffer,
            ..self.base.clone()
        };
        if listen.netns.is_some() && families::notifies_only_initial_netns(&family.family) {
            // Its notifications exist only in the gateway's own namespace
            // (the initial one, for a daemon on the host); opening the
            // listener in [netlink] netns would register it where nothing
            // is ever sent.
            tracing::info!(
                family = %family.family,
                "the kernel sends this family's notifications only in the initial network namespace; its listener stays in the gateway's own"
            );
            listen.netns = None;
        }
        let (listener, queue) = Listener::new(name.clone(), family.groups.clone(), listen, family.queue);
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
        let metrics = self.metrics_for(&family.family);
        let (plugin_config, policy_source) = match self.kernel_policy_config(&family).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("{}: {e}; this family is not served", family.path.display());
                return FamilyEntry {
                    config: family,
                    plugin: Err(e),
                    listener: None,
                    dispatcher: None,
                    policy_source: None,
                };
            }
        };
        let loaded = LoadedPlugin::load(
            &self.runtime,
            plugin_config.as_ref().unwrap_or(&family),
            access,
            self.events.clone(),
            metrics,
        )
        .await;
        match loaded {
            Ok(p) => {
                tracing::info!(family = %family.family, plugin = %family.plugin.display(), ops = p.description().ops.len(), "plugin loaded");
                let dispatcher =
                    tokio::spawn(listener::dispatch(listener.clone(), queue, p.clone())).abort_handle();
                FamilyEntry {
                    config: family,
                    plugin: Ok(p),
                    listener: Some(listener),
                    dispatcher: Some(dispatcher),
                    policy_source,
                }
            }
            Err(e) => {
                tracing::error!("{}: {e}; this family is not served", family.path.display());
                FamilyEntry {
                    config: family,
                    plugin: Err(e.to_string()),
                    listener: None,
                    dispatcher: None,
                    policy_source: None,
                }
            }
        }
    }
}

impl Gateway {
    /// For a `spec = "kernel-policy"` family: the configuration its plugin
    /// gets, with the spec written from the kernel's policy (or, while the
    /// family is absent, a spec with no operations), and the family
    /// description it was written from. `(None, None)` for other families.
    async fn kernel_policy_config(
        &self,
        family: &FamilyConfig,
    ) -> Result<(Option<FamilyConfig>, Option<Arc<genl_wire::FamilyInfo>>), String> {
        if !family.uses_kernel_policy() {
            return Ok((None, None));
        }
        let name = family.family.as_str();
        let (text, source) = match self.resolver.resolve(name).await {
            Ok(info) => {
                let policies = self
                    .resolver
                    .policies(name)
                    .await
                    .map_err(|e| format!("spec = \"kernel-policy\": {e}"))?;
                let text = ynl_fallback::spec_text(&info, &policies)
                    .map_err(|e| format!("spec = \"kernel-policy\": {e}"))?;
                tracing::info!(
                    family = name,
                    ops = info.ops.len(),
                    policies = policies.sets.len(),
                    "spec written from the kernel's attribute policy"
                );
                (text, Some(info))
            }
            Err(ResolveError::Absent(_)) => (ynl_fallback::absent_spec_text(name), None),
            Err(e) => return Err(format!("spec = \"kernel-policy\": {e}")),
        };
        let mut config = family.clone();
        config.config.remove("spec");
        config.config.insert("spec-yaml".into(), text);
        config.config.insert(
            ynl_fallback::ORIGIN_KEY.into(),
            ynl_fallback::KERNEL_POLICY.into(),
        );
        Ok((Some(config), source))
    }

    /// Whether `name` serves a kernel-policy spec written from another
    /// state of the family than the kernel's now (it appeared, or
    /// re-registered with other ops, groups or policies).
    pub(super) fn policy_spec_stale(&self, name: &str) -> bool {
        let Some(entry) = self.family(name) else {
            return false;
        };
        if !entry.config.uses_kernel_policy() {
            return false;
        }
        let now = self.resolver.cached(name);
        match (&entry.policy_source, now) {
            (None, None) => false,
            (Some(_), None) => false, // gone: calls answer family-absent; keep it until it returns
            (None, Some(_)) => true,
            (Some(then), Some(now)) => {
                then.id != now.id
                    || then.version != now.version
                    || then.ops != now.ops
                    || then
                        .mcast_groups
                        .iter()
                        .map(|g| &g.name)
                        .ne(now.mcast_groups.iter().map(|g| &g.name))
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
            for o in gateway.reload().await {
                log_outcome(&o);
            }
        }
    }
}

/// One log line for a reload outcome that changed something.
pub fn log_outcome(o: &ReloadOutcome) {
    if o.result != ReloadResult::Unchanged {
        tracing::info!(file = %o.file, family = ?o.family, result = %o.result, error = ?o.error, "reload");
    }
}
