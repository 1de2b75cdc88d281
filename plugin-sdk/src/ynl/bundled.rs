//! The kernel's YNL specs that ship with the gateway (`ynl-specs/`), by
//! family name. Behind the `bundled-specs` feature: about 600 KiB of text
//! that only the generic `ynl` plugin and the host need; a custom plugin
//! embeds just its own spec.

use super::{Spec, SpecError};

const BUNDLED: &[(&str, &str)] = &[
    ("binder", include_str!("../../../ynl-specs/binder.yaml")),
    (
        "dev-energymodel",
        include_str!("../../../ynl-specs/dev-energymodel.yaml"),
    ),
    ("devlink", include_str!("../../../ynl-specs/devlink.yaml")),
    ("dpll", include_str!("../../../ynl-specs/dpll.yaml")),
    ("drm_ras", include_str!("../../../ynl-specs/drm_ras.yaml")),
    ("ethtool", include_str!("../../../ynl-specs/ethtool.yaml")),
    ("fou", include_str!("../../../ynl-specs/fou.yaml")),
    ("handshake", include_str!("../../../ynl-specs/handshake.yaml")),
    ("lockd", include_str!("../../../ynl-specs/lockd.yaml")),
    ("mptcp_pm", include_str!("../../../ynl-specs/mptcp_pm.yaml")),
    ("net_shaper", include_str!("../../../ynl-specs/net_shaper.yaml")),
    ("netdev", include_str!("../../../ynl-specs/netdev.yaml")),
    ("nfsd", include_str!("../../../ynl-specs/nfsd.yaml")),
    ("nl80211", include_str!("../../../ynl-specs/nl80211.yaml")),
    ("nlctrl", include_str!("../../../ynl-specs/nlctrl.yaml")),
    ("ovpn", include_str!("../../../ynl-specs/ovpn.yaml")),
    (
        "ovs_datapath",
        include_str!("../../../ynl-specs/ovs_datapath.yaml"),
    ),
    ("ovs_flow", include_str!("../../../ynl-specs/ovs_flow.yaml")),
    ("ovs_packet", include_str!("../../../ynl-specs/ovs_packet.yaml")),
    ("ovs_vport", include_str!("../../../ynl-specs/ovs_vport.yaml")),
    ("psp", include_str!("../../../ynl-specs/psp.yaml")),
    (
        "sunrpc_cache",
        include_str!("../../../ynl-specs/sunrpc_cache.yaml"),
    ),
    ("tcp_metrics", include_str!("../../../ynl-specs/tcp_metrics.yaml")),
    ("team", include_str!("../../../ynl-specs/team.yaml")),
    ("wireguard", include_str!("../../../ynl-specs/wireguard.yaml")),
];

/// The names of the bundled specs, sorted.
pub fn names() -> impl Iterator<Item = &'static str> {
    BUNDLED.iter().map(|(n, _)| *n)
}

/// The YAML text of bundled spec `name`.
pub fn text(name: &str) -> Option<&'static str> {
    BUNDLED.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Load bundled spec `name`; `None` if there is no such spec.
pub fn load(name: &str) -> Option<Result<Spec, SpecError>> {
    text(name).map(Spec::load)
}
