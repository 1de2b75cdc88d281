//! The policy fallback for families with no YNL spec (`spec =
//! "kernel-policy"`): a spec written from what the running kernel says about
//! the family, its ops and multicast groups from GETFAMILY and its attribute
//! types from GETPOLICY, handed to the bundled `ynl` plugin as `spec-yaml`.
//!
//! Attributes are named by their numbers (`"1"`, `"2"`, ...) since the
//! kernel reports no names; operations are `cmd-N` (`cmd-N-dump` for the
//! dump). The kernel publishes the policies of requests only, so replies are
//! read with the attributes the family's requests use: each op's set is its
//! own policy plus every top-level attribute the family's other ops agree
//! on (an attribute typed differently by two ops is shown as hex).
//!
//! The text is JSON, which is YAML too, so no YAML writer is needed and
//! nothing the kernel sends can break its quoting.

use std::collections::BTreeMap;

use genl_wire::FamilyInfo;
use genl_wire::policy::{AttrPolicy, AttrType, Policies};
use serde_json::{Map, Value, json};

/// The family file's `spec` value that asks for the fallback.
pub const KERNEL_POLICY: &str = "kernel-policy";

/// The `[config]` key telling the `ynl` plugin its spec came from the
/// kernel's policy (so its description says so).
pub const ORIGIN_KEY: &str = "spec-origin";

/// GENL_ADMIN_PERM and GENL_UNS_ADMIN_PERM (<linux/genetlink.h>).
const GENL_ADMIN_PERM: u32 = 0x01;
const GENL_UNS_ADMIN_PERM: u32 = 0x10;
/// GENL_CMD_CAP_DO and GENL_CMD_CAP_DUMP.
const GENL_CMD_CAP_DO: u32 = 0x02;
const GENL_CMD_CAP_DUMP: u32 = 0x04;

/// Most attribute sets one generated spec holds. The kernel's largest
/// families have a few hundred policies; a bound keeps a strange one from
/// making the host build an unbounded text.
pub const MAX_SETS: usize = 4096;

/// The set for nests whose policy the kernel does not publish: every
/// attribute in it comes out as `attr-N` hex.
const UNTYPED: &str = "untyped";

fn set_name(idx: u32) -> String {
    format!("policy-{idx}")
}

/// The YNL attribute for one policy entry.
fn attribute(number: u16, p: &AttrPolicy, policies: &Policies) -> Value {
    let nested = |idx: Option<u32>| match idx {
        Some(i) if policies.sets.contains_key(&i) => set_name(i),
        _ => UNTYPED.to_owned(),
    };
    let mut a = Map::new();
    a.insert("name".into(), number.to_string().into());
    a.insert("value".into(), number.into());
    let mut checks = Map::new();
    let kind = match p.kind {
        AttrType::Flag => "flag",
        AttrType::U8 => "u8",
        AttrType::U16 => "u16",
        AttrType::U32 => "u32",
        AttrType::U64 => "u64",
        AttrType::S8 => "s8",
        AttrType::S16 => "s16",
        AttrType::S32 => "s32",
        AttrType::S64 => "s64",
        AttrType::Uint => "uint",
        AttrType::Sint => "sint",
        AttrType::String | AttrType::NulString => "string",
        AttrType::Bitfield32 => "bitfield32",
        AttrType::Nested => {
            a.insert("nested-attributes".into(), nested(p.policy_idx).into());
            "nest"
        }
        AttrType::NestedArray => {
            a.insert("sub-type".into(), "nest".into());
            a.insert("nested-attributes".into(), nested(p.policy_idx).into());
            "indexed-array"
        }
        // NLA_BINARY, and anything the kernel may add later: bytes, shown
        // as hex so nothing is lost.
        AttrType::Binary | AttrType::Invalid | AttrType::Unknown(_) => {
            a.insert("display-hint".into(), "hex".into());
            "binary"
        }
    };
    a.insert("type".into(), kind.into());
    let (min, max): (Option<Value>, Option<Value>) = match p.kind {
        AttrType::U8 | AttrType::U16 | AttrType::U32 | AttrType::U64 | AttrType::Uint => {
            (p.min_u.map(Value::from), p.max_u.map(Value::from))
        }
        AttrType::S8 | AttrType::S16 | AttrType::S32 | AttrType::S64 | AttrType::Sint => {
            (p.min_s.map(Value::from), p.max_s.map(Value::from))
        }
        _ => (None, None),
    };
    if let Some(min) = min {
        checks.insert("min".into(), min);
    }
    if let Some(max) = max {
        checks.insert("max".into(), max);
    }
    if matches!(p.kind, AttrType::Binary | AttrType::String | AttrType::NulString) {
        if let Some(min) = p.min_len {
            checks.insert("min-len".into(), min.into());
        }
        if let Some(max) = p.max_len {
            checks.insert("max-len".into(), max.into());
        }
    }
    if !checks.is_empty() {
        a.insert("checks".into(), Value::Object(checks));
    }
    Value::Object(a)
}

/// The attribute an op's set holds for a number the other ops type
/// differently: its bytes, as hex.
fn hex_attribute(number: u16) -> Value {
    json!({"name": number.to_string(), "value": number, "type": "binary", "display-hint": "hex"})
}

fn same_shape(a: &AttrPolicy, b: &AttrPolicy) -> bool {
    a.kind == b.kind && a.policy_idx == b.policy_idx
}

/// Why no spec could be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FallbackError {
    /// The kernel published more policy sets than the host takes.
    #[error(
        "family '{family}' publishes {sets} attribute policies; the kernel-policy fallback takes at most {MAX_SETS}"
    )]
    TooManyPolicies {
        /// The family.
        family: String,
        /// How many it published.
        sets: usize,
    },
}

/// The spec (as JSON text, which YNL loaders read as YAML) for `info` with
/// the attribute `policies` the kernel published for it.
pub fn spec_text(info: &FamilyInfo, policies: &Policies) -> Result<String, FallbackError> {
    if policies.sets.len() > MAX_SETS {
        return Err(FallbackError::TooManyPolicies {
            family: info.name.clone(),
            sets: policies.sets.len(),
        });
    }
    let mut sets: Vec<Value> = vec![json!({"name": UNTYPED, "attributes": []})];
    for (idx, attrs) in &policies.sets {
        let attributes: Vec<Value> = attrs.iter().map(|(n, p)| attribute(*n, p, policies)).collect();
        sets.push(json!({"name": set_name(*idx), "attributes": attributes}));
    }

    // The family's attribute space as its ops' top-level policies describe
    // it: what replies are read with.
    let mut family_wide: BTreeMap<u16, Option<&AttrPolicy>> = BTreeMap::new();
    let top_level = policies
        .ops
        .values()
        .flat_map(|o| [o.do_idx, o.dump_idx])
        .flatten();
    for idx in top_level {
        for (n, p) in policies.sets.get(&idx).into_iter().flatten() {
            family_wide
                .entry(*n)
                .and_modify(|seen| {
                    if seen.is_some_and(|s| !same_shape(s, p)) {
                        *seen = None;
                    }
                })
                .or_insert(Some(p));
        }
    }

    let mut ops = Vec::new();
    for op in &info.ops {
        let Ok(cmd) = u8::try_from(op.id) else {
            continue; // a genl command is a u8; anything else is not one
        };
        let pol = policies.ops.get(&op.id).copied().unwrap_or_default();
        let own = |idx: Option<u32>| idx.and_then(|i| policies.sets.get(&i));
        let names = |idx: Option<u32>| -> Vec<String> {
            own(idx)
                .map(|s| s.keys().map(u16::to_string).collect())
                .unwrap_or_default()
        };
        // This op's own policy wins; the family-wide attributes fill in
        // what its replies may carry besides.
        let mut attrs: BTreeMap<u16, Value> = BTreeMap::new();
        for (n, p) in &family_wide {
            attrs.insert(
                *n,
                match p {
                    Some(p) => attribute(*n, p, policies),
                    None => hex_attribute(*n),
                },
            );
        }
        for idx in [pol.dump_idx, pol.do_idx] {
            for (n, p) in own(idx).into_iter().flatten() {
                attrs.insert(*n, attribute(*n, p, policies));
            }
        }
        let set = format!("cmd-{cmd}");
        let all: Vec<String> = attrs.keys().map(u16::to_string).collect();
        sets.push(json!({"name": set, "attributes": attrs.into_values().collect::<Vec<_>>()}));
        let mut o = Map::new();
        o.insert("name".into(), set.clone().into());
        o.insert("value".into(), cmd.into());
        o.insert("attribute-set".into(), set.into());
        if op.flags & (GENL_ADMIN_PERM | GENL_UNS_ADMIN_PERM) != 0 {
            o.insert("flags".into(), json!(["admin-perm"]));
        }
        if op.flags & GENL_CMD_CAP_DO != 0 {
            o.insert(
                "do".into(),
                json!({"request": {"attributes": names(pol.do_idx)}, "reply": {"attributes": all}}),
            );
        }
        if op.flags & GENL_CMD_CAP_DUMP != 0 {
            o.insert(
                "dump".into(),
                json!({"request": {"attributes": names(pol.dump_idx)}, "reply": {"attributes": all}}),
            );
        }
        ops.push(Value::Object(o));
    }

    let groups: Vec<Value> = info
        .mcast_groups
        .iter()
        .map(|g| json!({"name": g.name}))
        .collect();
    let spec = json!({
        "name": info.name,
        "protocol": "genetlink",
        "doc": format!(
            "Written by genl-gateway from the kernel's attribute policy (GETPOLICY) of {} version {}: the family has no YNL spec.",
            info.name, info.version
        ),
        "attribute-sets": sets,
        "operations": {"list": ops},
        "mcast-groups": {"list": groups},
    });
    Ok(spec.to_string())
}

/// The spec served while the family is absent: no operations (calls answer
/// `family-absent` before reaching the plugin); replaced when it appears.
pub fn absent_spec_text(family: &str) -> String {
    json!({
        "name": family,
        "protocol": "genetlink",
        "doc": "The family is absent; its kernel-policy spec is written when it appears.",
        "attribute-sets": [],
        "operations": {"list": []},
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use genl_wire::ctrl::{McastGroup, OpInfo};
    use genl_wire::policy::OpPolicy;

    fn pol(kind: AttrType) -> AttrPolicy {
        AttrPolicy {
            kind,
            min_s: None,
            max_s: None,
            min_u: None,
            max_u: None,
            min_len: None,
            max_len: None,
            policy_idx: None,
            policy_maxtype: None,
            bitfield32_mask: None,
            mask: None,
        }
    }

    /// What `genl ctrl policy name IOAM6` shows on a 6.18 kernel: per-op
    /// policies, dumps without any.
    fn ioam6() -> (FamilyInfo, Policies) {
        let ops = (1..=7)
            .map(|id| OpInfo {
                id,
                flags: if id == 3 || id == 6 { 0x05 } else { 0x0b },
            })
            .collect();
        let info = FamilyInfo {
            name: "IOAM6".into(),
            id: 30,
            version: 1,
            hdrsize: 0,
            maxattr: 0,
            ops,
            mcast_groups: vec![McastGroup {
                name: "ioam6_events".into(),
                id: 10,
            }],
        };
        let mut p = Policies::default();
        let u = |k, max| AttrPolicy {
            min_u: Some(0),
            max_u: Some(max),
            ..pol(k)
        };
        p.sets.insert(
            0,
            [
                (1, u(AttrType::U16, 65535)),
                (2, u(AttrType::U32, u32::MAX.into())),
                (3, u(AttrType::U64, u64::MAX)),
            ]
            .into(),
        );
        p.sets.insert(
            2,
            [
                (4, u(AttrType::U32, u32::MAX.into())),
                (
                    5,
                    AttrPolicy {
                        max_len: Some(1020),
                        ..pol(AttrType::Binary)
                    },
                ),
            ]
            .into(),
        );
        p.ops.insert(
            1,
            OpPolicy {
                do_idx: Some(0),
                dump_idx: None,
            },
        );
        p.ops.insert(
            4,
            OpPolicy {
                do_idx: Some(2),
                dump_idx: None,
            },
        );
        (info, p)
    }

    #[test]
    fn the_written_spec_loads_with_the_engine_and_types_replies_family_wide() {
        let (info, p) = ioam6();
        let text = spec_text(&info, &p).expect("spec");
        let spec = genl_plugin_sdk::ynl::Spec::load(&text).expect("the engine loads it");
        assert_eq!(spec.mcast_groups, ["ioam6_events"]);
        let dump = spec.op("cmd-3").expect("cmd-3");
        assert!(dump.do_.is_none() && dump.dump.is_some() && dump.admin_perm);
        // The dump has no policy of its own; its replies are read with the
        // attributes op 1 and op 4 type.
        let set = spec.set("cmd-3").expect("set");
        assert_eq!(
            set.by_value(1).map(|a| a.kind),
            Some(genl_plugin_sdk::ynl::AttrKind::U16)
        );
        assert_eq!(
            set.by_value(3).map(|a| a.kind),
            Some(genl_plugin_sdk::ynl::AttrKind::U64)
        );
        assert_eq!(
            set.by_value(5).map(|a| a.kind),
            Some(genl_plugin_sdk::ynl::AttrKind::Binary)
        );
        // Requests carry only what the op's own policy accepts.
        let add = spec.op("cmd-1").expect("cmd-1");
        let req = add.do_.as_ref().and_then(|m| m.request.clone()).expect("request");
        assert_eq!(req, ["1", "2", "3"]);
        assert_eq!(set.by_value(5).map(|a| a.checks.max_len), Some(Some(1020)));
    }

    #[test]
    fn nests_without_a_published_policy_and_conflicting_types_stay_readable() {
        let mut p = Policies::default();
        p.sets.insert(
            0,
            [
                (1, pol(AttrType::U32)),
                (
                    2,
                    AttrPolicy {
                        policy_idx: Some(99), // never published
                        ..pol(AttrType::Nested)
                    },
                ),
                (
                    3,
                    AttrPolicy {
                        policy_idx: Some(0), // itself: recursion in the data, not in the spec
                        ..pol(AttrType::NestedArray)
                    },
                ),
            ]
            .into(),
        );
        p.sets.insert(1, [(1, pol(AttrType::String))].into());
        p.ops.insert(
            1,
            OpPolicy {
                do_idx: Some(0),
                dump_idx: Some(1),
            },
        );
        p.ops.insert(
            2,
            OpPolicy {
                do_idx: Some(1),
                dump_idx: None,
            },
        );
        let info = FamilyInfo {
            name: "x".into(),
            ops: vec![
                OpInfo { id: 1, flags: 0x0e },
                OpInfo { id: 2, flags: 0x0a },
                OpInfo { id: 300, flags: 0x0a },
            ],
            ..FamilyInfo::default()
        };
        let spec = genl_plugin_sdk::ynl::Spec::load(&spec_text(&info, &p).expect("spec")).expect("loads");
        assert!(spec.op("cmd-44").is_none() && spec.ops.len() == 2);
        // Attribute 1 is a u32 in policy 0 and a string in policy 1: in op
        // 2 (policy 1) it is the string, family-wide only hex.
        let two = spec.set("cmd-2").expect("set");
        assert_eq!(
            two.by_value(1).map(|a| a.kind),
            Some(genl_plugin_sdk::ynl::AttrKind::String)
        );
        assert_eq!(
            two.by_value(2).and_then(|a| a.nested.clone()).as_deref(),
            Some(UNTYPED)
        );
        // Garbage never fails a decode of an untyped nest.
        let garbage = [6u8, 0, 2, 0, 0xff, 0xff, 0, 0];
        let _ = spec.decode_attrs("cmd-2", &garbage);
        let _ = spec.decode_attrs("untyped", &[1, 2, 3]);
        assert!(spec.decode_attrs("untyped", &[5, 0, 7, 0, 9, 0, 0, 0]).is_ok());
    }

    #[test]
    fn the_absent_spec_loads_and_offers_nothing() {
        let spec = genl_plugin_sdk::ynl::Spec::load(&absent_spec_text("NOPE")).expect("loads");
        assert!(spec.ops.is_empty());
    }
}
