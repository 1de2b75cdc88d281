//! Follows nlctrl's `notify` group so the gateway tracks families as they
//! come and go: a configured family that appears is resolved and its groups
//! joined; one that re-registers is re-resolved and re-joined; one that goes
//! away is shown absent until it returns. A `spec = "kernel-policy"`
//! family that appears or re-registers is reloaded with a spec written
//! afresh from the kernel's policy. No restart needed.

use std::sync::Arc;

use genl_wire::ctrl::{CTRL_CMD_DELFAMILY, CTRL_CMD_DELMCAST_GRP, CTRL_CMD_NEWFAMILY, CTRL_CMD_NEWMCAST_GRP};
use genl_wire::{FamilyInfo, GenlHeader};
use tokio::sync::mpsc;

use super::Gateway;
use crate::families::ResolveError;
use crate::netlink::{Notification, OwnedMessage};

/// Run the watcher over the notifications of nlctrl's `notify` group.
pub async fn run(gateway: Arc<Gateway>, mut rx: mpsc::Receiver<Notification>) {
    while let Some(n) = rx.recv().await {
        match n {
            Notification::Message(m) => handle(&gateway, &m).await,
            Notification::Lost => {
                tracing::warn!("family notifications were lost; re-resolving every configured family");
                for (name, _) in gateway.families() {
                    refresh(&gateway, &name).await;
                }
            }
        }
    }
}

async fn handle(gateway: &Arc<Gateway>, m: &OwnedMessage) {
    let Ok(genl) = GenlHeader::parse(&m.payload) else {
        return;
    };
    let Ok(info) = FamilyInfo::decode(&m.payload[GenlHeader::SIZE..]) else {
        tracing::warn!("malformed nlctrl notification ignored");
        return;
    };
    if gateway.family(&info.name).is_none() {
        return;
    }
    match genl.cmd {
        CTRL_CMD_NEWFAMILY | CTRL_CMD_NEWMCAST_GRP | CTRL_CMD_DELMCAST_GRP => {
            tracing::info!(family = %info.name, id = info.id, cmd = genl.cmd, "family registered or changed");
            refresh(gateway, &info.name).await;
        }
        CTRL_CMD_DELFAMILY => {
            tracing::warn!(family = %info.name, "family went away; calls fail until it returns");
            gateway.resolver.forget(&info.name);
            if let Some(l) = gateway.listener(&info.name) {
                l.clear();
            }
        }
        _ => {}
    }
}

/// Resolve `name` afresh and rebuild its listener (and its spec, for a
/// kernel-policy family that changed).
pub async fn refresh(gateway: &Arc<Gateway>, name: &str) {
    if let Err(e) = reopen(gateway, name).await {
        tracing::warn!("{e}");
    }
    respec_if_stale(gateway, name);
}

/// Reload a `spec = "kernel-policy"` family whose spec was written from
/// another state of the family than the kernel's now (it was absent, or
/// re-registered), so its operations follow the kernel. Runs in a task of
/// its own: the watcher keeps reading while the plugin loads.
pub fn respec_if_stale(gateway: &Arc<Gateway>, name: &str) {
    if !gateway.policy_spec_stale(name) {
        return;
    }
    tracing::info!(
        family = name,
        "the family changed; writing its spec from the kernel's policy again"
    );
    let gateway = gateway.clone();
    let name = name.to_owned();
    tokio::spawn(async move {
        if let Some(o) = gateway.reload_family(&name).await {
            super::log_outcome(&o);
        }
    });
}

/// Resolve `name` afresh and rebuild its listener, or close the listener
/// and say why the family cannot be resolved. A socket that cannot be
/// opened is logged here (the family still resolves).
pub async fn reopen(gateway: &Gateway, name: &str) -> Result<(), ResolveError> {
    match gateway.resolver.resolve(name).await {
        Ok(info) => {
            if let Some(Err(e)) = gateway.listener(name).map(|l| l.rebuild(&info)) {
                tracing::error!(family = name, "cannot open its listener socket: {e}");
            }
            Ok(())
        }
        Err(e) => {
            if let Some(l) = gateway.listener(name) {
                l.clear();
            }
            Err(e)
        }
    }
}
