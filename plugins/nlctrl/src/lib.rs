//! The nlctrl plugin: the generic netlink controller, which knows every
//! family the kernel has.
//!
//! Operations:
//! - `list`: every family, with id, version, header size, max attribute,
//!   ops with their capability flags, and multicast groups.
//! - `get {"name": "..."}`: one family by name.
//! - `policy {"name": "...", "op"?: N}`: the attribute policies of a family
//!   (of one op), as the kernel reports them with CTRL_CMD_GETPOLICY.
//!
//! - the spec's own operations (`ynl-specs/nlctrl.yaml` through the SDK's
//!   YNL engine), with the YNL CLI's JSON: `getfamily {"family-name"}`,
//!   `getfamily-dump`, `getpolicy-dump {"family-name"|"family-id", "op"?}`.
//!
//! Events (topic `family`): a family or multicast group appeared or went
//! away, from nlctrl's `notify` group.
//!
//! `list`, `get` and `policy` decode with the wire crate the gateway itself
//! resolves families with (tested against the kernel there); the plugin
//! carries no attribute table of its own.

use genl_plugin_sdk::prelude::*;
use genl_plugin_sdk::wire::consts::{
    GENL_ADMIN_PERM, GENL_CMD_CAP_DO, GENL_CMD_CAP_DUMP, GENL_CMD_CAP_HASPOL, GENL_UNS_ADMIN_PERM,
};
use genl_plugin_sdk::wire::ctrl::{
    CTRL_ATTR_FAMILY_NAME, CTRL_CMD_DELFAMILY, CTRL_CMD_DELMCAST_GRP, CTRL_CMD_GETFAMILY, CTRL_CMD_GETPOLICY,
    CTRL_CMD_NEWFAMILY, CTRL_CMD_NEWMCAST_GRP, getfamily_by_name,
};
use genl_plugin_sdk::wire::policy::{CTRL_ATTR_OP, Policies};
use genl_plugin_sdk::ynl::{Service, Spec};

/// The kernel's nlctrl spec, with its `policy-attrs` numbering corrected
/// (see the note at the top of the file).
const SPEC: &str = include_str!("../../../ynl-specs/nlctrl.yaml");

/// The plugin keeps no kernel state: every answer comes fresh from the
/// kernel. It holds the spec its own operations are served from.
pub struct Nlctrl {
    service: Service,
}

impl Plugin for Nlctrl {
    fn init(_config: Config) -> Result<Self, String> {
        let spec = Spec::load(SPEC).map_err(|e| format!("the bundled nlctrl spec: {e}"))?;
        Ok(Nlctrl {
            service: Service::new(spec),
        })
    }

    fn describe(&self) -> PluginDescription {
        let mut d = PluginDescription::new("nlctrl")
            .version(env!("CARGO_PKG_VERSION"))
            .op("list", "Every generic netlink family the kernel has", false)
            .op("get", "One family by name: {\"name\": \"...\"}", false)
            .op(
                "policy",
                "A family's attribute policies: {\"name\": \"...\", \"op\"?: N}",
                false,
            )
            .topic("family");
        d.ops.extend(self.service.describe().ops);
        d
    }

    fn call(&mut self, op: &str, input: Value) -> Result<Value, CallError> {
        match op {
            "list" => CallError::no_input(op, &input).and_then(|()| list()),
            "get" => get(&input),
            "policy" => policy(&input),
            _ => self.service.serve(op, &input),
        }
    }

    fn on_notification(&mut self, _group: &str, message: Message) {
        let action = match message.cmd {
            CTRL_CMD_NEWFAMILY => "family-added",
            CTRL_CMD_DELFAMILY => "family-removed",
            CTRL_CMD_NEWMCAST_GRP => "group-added",
            CTRL_CMD_DELMCAST_GRP => "group-removed",
            other => {
                log::debug(&format!("ignoring nlctrl notification with command {other}"));
                return;
            }
        };
        match FamilyInfo::decode(&message.payload) {
            Ok(family) => events::publish(
                "family",
                &json!({"action": action, "family": family_json(&family)}),
            ),
            Err(e) => log::warn(&format!("malformed nlctrl notification: {e}")),
        }
    }
}

fn list() -> Result<Value, CallError> {
    genl_plugin_sdk::ops::dump_items(CTRL_CMD_GETFAMILY, &[], |m| {
        Ok(family_json(&FamilyInfo::decode(m.payload)?))
    })
}

fn get(input: &Value) -> Result<Value, CallError> {
    let name = input
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| CallError::bad_input("expected {\"name\": \"<family>\"}"))?;
    let payload = getfamily_by_name(name).map_err(|e| CallError::bad_input(e.to_string()))?;
    let replies = match kernel::do_request(CTRL_CMD_GETFAMILY, &payload) {
        Err(RequestError::Kernel(e)) if e.errno == 2 => {
            return Err(CallError::not_found(format!(
                "the kernel has no family named '{name}'"
            )));
        }
        other => other?,
    };
    let reply = replies
        .first()
        .ok_or_else(|| CallError::new("kernel", "GETFAMILY was acknowledged without a reply"))?;
    // Serialised straight from the decoded family, no `Value` between.
    let text = serde_json::to_string(&FamilyOut::from(&FamilyInfo::decode(&reply.payload)?))
        .map_err(|e| CallError::new("internal", format!("the family is not JSON: {e}")))?;
    genl_plugin_sdk::output::document(text)
}

fn policy(input: &Value) -> Result<Value, CallError> {
    let name = input
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| CallError::bad_input("expected {\"name\": \"<family>\", \"op\"?: N}"))?;
    let mut w = AttrWriter::new();
    w.put_str(CTRL_ATTR_FAMILY_NAME, name)
        .map_err(|e| CallError::bad_input(e.to_string()))?;
    if let Some(op) = input.get("op") {
        let op = op
            .as_u64()
            .and_then(|o| u32::try_from(o).ok())
            .ok_or_else(|| CallError::bad_input("'op' must be a command number"))?;
        w.put_u32(CTRL_ATTR_OP, op);
    }
    let replies = match kernel::dump_request(CTRL_CMD_GETPOLICY, &w.finish()) {
        Err(RequestError::Kernel(e)) if e.errno == 2 => {
            return Err(CallError::not_found(format!(
                "the kernel has no family named '{name}'"
            )));
        }
        other => other?,
    };
    let mut policies = Policies::default();
    for r in &replies {
        policies.absorb(&r.payload)?;
    }
    serde_json::to_value(&policies).map_err(|e| CallError::new("internal", e.to_string()))
}

/// The capability flags of an op, by name.
fn op_caps(flags: u32) -> Vec<&'static str> {
    [
        (GENL_CMD_CAP_DO, "do"),
        (GENL_CMD_CAP_DUMP, "dump"),
        (GENL_CMD_CAP_HASPOL, "has-policy"),
        (GENL_ADMIN_PERM, "admin-perm"),
        (GENL_UNS_ADMIN_PERM, "uns-admin-perm"),
    ]
    .into_iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, name)| name)
    .collect()
}

/// A family as clients see it (`get`, `list`, the `family` topic).
#[derive(serde::Serialize)]
struct FamilyOut<'a> {
    name: &'a str,
    id: u16,
    version: u32,
    hdrsize: u32,
    maxattr: u32,
    ops: Vec<OpOut>,
    mcast_groups: Vec<GroupOut<'a>>,
}

#[derive(serde::Serialize)]
struct OpOut {
    id: u32,
    flags: u32,
    caps: Vec<&'static str>,
}

#[derive(serde::Serialize)]
struct GroupOut<'a> {
    name: &'a str,
    id: u32,
}

impl<'a> From<&'a FamilyInfo> for FamilyOut<'a> {
    fn from(f: &'a FamilyInfo) -> Self {
        Self {
            name: &f.name,
            id: f.id,
            version: f.version,
            hdrsize: f.hdrsize,
            maxattr: f.maxattr,
            ops: f
                .ops
                .iter()
                .map(|o| OpOut {
                    id: o.id,
                    flags: o.flags,
                    caps: op_caps(o.flags),
                })
                .collect(),
            mcast_groups: f
                .mcast_groups
                .iter()
                .map(|g| GroupOut {
                    name: &g.name,
                    id: g.id,
                })
                .collect(),
        }
    }
}

fn family_json(f: &FamilyInfo) -> Value {
    serde_json::to_value(FamilyOut::from(f)).unwrap_or(Value::Null)
}

export_plugin!(Nlctrl);

#[cfg(test)]
mod tests {
    use super::*;
    use genl_plugin_sdk::testing::{FakeKernel, RequestKind};
    use genl_plugin_sdk::{KernelError, McastGroup, OpInfo};

    fn plugin() -> Nlctrl {
        Nlctrl::init(Config::new()).unwrap()
    }

    fn family(name: &str, id: u16) -> FamilyInfo {
        FamilyInfo {
            name: name.into(),
            id,
            version: 1,
            hdrsize: 0,
            maxattr: 4,
            ops: vec![OpInfo {
                id: 1,
                flags: GENL_CMD_CAP_DO | GENL_ADMIN_PERM,
            }],
            mcast_groups: vec![McastGroup {
                name: "events".into(),
                id: 9,
            }],
        }
    }

    #[test]
    fn list_decodes_every_family_of_the_dump() {
        let kernel = FakeKernel::new(family("nlctrl", 0x10));
        kernel.on_dump(CTRL_CMD_GETFAMILY, |_| {
            Ok(vec![
                Message::new(CTRL_CMD_NEWFAMILY, family("nlctrl", 0x10).encode()),
                Message::new(CTRL_CMD_NEWFAMILY, family("netdev", 0x19).encode()),
            ])
        });
        let out = plugin().call("list", Value::Null).unwrap();
        let names: Vec<_> = out
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].clone())
            .collect();
        assert_eq!(names, [json!("nlctrl"), json!("netdev")]);
        assert_eq!(out[1]["id"], 0x19);
        assert_eq!(out[1]["ops"][0]["caps"], json!(["do", "admin-perm"]));
        assert_eq!(out[1]["mcast_groups"][0], json!({"name": "events", "id": 9}));
    }

    #[test]
    fn get_sends_the_name_and_maps_enoent_to_not_found() {
        let kernel = FakeKernel::new(family("nlctrl", 0x10));
        kernel.on_do(CTRL_CMD_GETFAMILY, |req| {
            let name = Attrs::new(&req.payload)
                .find(2)
                .unwrap()
                .unwrap()
                .str()
                .unwrap()
                .to_owned();
            if name == "netdev" {
                Ok(vec![Message::new(
                    CTRL_CMD_NEWFAMILY,
                    family("netdev", 0x19).encode(),
                )])
            } else {
                Err(RequestError::Kernel(KernelError {
                    errno: 2,
                    message: None,
                    offset: None,
                }))
            }
        });
        let mut p = plugin();
        assert_eq!(p.call("get", json!({"name": "netdev"})).unwrap()["id"], 0x19);
        let err = p.call("get", json!({"name": "nope"})).unwrap_err();
        assert_eq!(err.code, "not-found");
        assert_eq!(p.call("get", json!({})).unwrap_err().code, "bad-input");
        assert_eq!(p.call("frobnicate", Value::Null).unwrap_err().code, "unknown-op");
        assert!(kernel.requests().iter().all(|r| r.kind == RequestKind::Do));
    }

    #[test]
    fn policy_dumps_getpolicy_and_decodes_it() {
        let kernel = FakeKernel::new(family("nlctrl", 0x10));
        kernel.on_dump(CTRL_CMD_GETPOLICY, |req| {
            let attrs: Vec<_> = Attrs::new(&req.payload).map(|a| a.unwrap().kind()).collect();
            assert_eq!(attrs, [CTRL_ATTR_FAMILY_NAME, CTRL_ATTR_OP]);
            // op 1 uses policy 0; policy 0 has attribute 1 of type u32 (4).
            let mut w = AttrWriter::new();
            let ops = w.begin_nested(9);
            let op = w.begin_nested(1);
            w.put_u32(1, 0);
            w.end_nested(op).unwrap();
            w.end_nested(ops).unwrap();
            let pol = w.begin_nested(8);
            let set = w.begin_nested(0);
            let a = w.begin_nested(1);
            w.put_u32(1, 4);
            w.end_nested(a).unwrap();
            w.end_nested(set).unwrap();
            w.end_nested(pol).unwrap();
            Ok(vec![Message::new(CTRL_CMD_GETPOLICY, w.finish())])
        });
        let v = plugin()
            .call("policy", json!({"name": "netdev", "op": 1}))
            .unwrap();
        assert_eq!(v["ops"]["1"], json!({"do": 0, "dump": null}));
        assert_eq!(v["sets"]["0"]["1"]["type"], "u32");
        assert_eq!(
            plugin().call("policy", json!({"op": 1})).unwrap_err().code,
            "bad-input"
        );
    }

    #[test]
    fn notifications_become_family_events() {
        let kernel = FakeKernel::new(family("nlctrl", 0x10));
        let mut p = plugin();
        p.on_notification(
            "notify",
            Message::new(CTRL_CMD_NEWFAMILY, family("genl_test", 0x20).encode()),
        );
        p.on_notification("notify", Message::new(CTRL_CMD_DELFAMILY, vec![1, 2, 3]));
        let events = kernel.events();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0, "family");
        assert_eq!(events[0].1["action"], "family-added");
        assert_eq!(events[0].1["family"]["name"], "genl_test");
        assert_eq!(kernel.logs().len(), 1, "the truncated notification is logged");
    }

    /// Every member of every enum in linux/HEADER of the kernel source
    /// scripts/setup.sh extracts, with its value.
    fn uapi_enums(header: &str) -> Vec<(String, u16)> {
        genl_plugin_sdk::uapi::members(header)
            .into_iter()
            .filter_map(|(n, v)| Some((n, u16::try_from(v).ok()?)))
            .collect()
    }

    #[test]
    fn the_specs_attribute_numbers_are_the_kernel_headers() {
        let spec = Spec::load(SPEC).unwrap();
        let mut headers = uapi_enums("genetlink.h");
        headers.extend(uapi_enums("netlink.h"));
        let value = |c_name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == c_name)
                .map(|(_, v)| *v)
                .unwrap_or_else(|| panic!("{c_name} not in the headers"))
        };
        // The bug the bundled spec corrects: upstream has MASK=11, PAD=12.
        let policy = spec.set("policy-attrs").unwrap();
        assert_eq!(
            policy.by_name("pad").unwrap().value,
            value("NL_POLICY_TYPE_ATTR_PAD")
        );
        assert_eq!(
            policy.by_name("mask").unwrap().value,
            value("NL_POLICY_TYPE_ATTR_MASK")
        );
        let mut checked = 0;
        for (set, prefix) in [
            ("ctrl-attrs", "CTRL_ATTR_"),
            ("op-attrs", "CTRL_ATTR_OP_"),
            ("mcast-group-attrs", "CTRL_ATTR_MCAST_GRP_"),
            ("policy-attrs", "NL_POLICY_TYPE_ATTR_"),
            ("op-policy-attrs", "CTRL_ATTR_POLICY_"),
        ] {
            for attr in &spec.set(set).unwrap().attrs {
                let c_name = format!("{prefix}{}", attr.name.to_uppercase().replace('-', "_"));
                assert_eq!(attr.value, value(&c_name), "{set}.{} vs {c_name}", attr.name);
                checked += 1;
            }
        }
        // 10 ctrl, 2 op, 2 mcast-group, 12 policy-type, 2 op-policy.
        assert_eq!(checked, 28, "attributes checked");
    }

    #[test]
    fn the_specs_operations_are_offered_beside_list_get_and_policy() {
        let names: Vec<String> = plugin().describe().ops.into_iter().map(|o| o.name).collect();
        for op in [
            "list",
            "get",
            "policy",
            "getfamily",
            "getfamily-dump",
            "getpolicy-dump",
        ] {
            assert!(names.iter().any(|n| n == op), "{op}: {names:?}");
        }
        let kernel = FakeKernel::new(family("nlctrl", 0x10));
        let getfamily = u8::try_from(
            uapi_enums("genetlink.h")
                .into_iter()
                .find(|(n, _)| n == "CTRL_CMD_GETFAMILY")
                .unwrap()
                .1,
        )
        .unwrap();
        kernel.on_do(getfamily, |_| {
            Ok(vec![Message::new(
                CTRL_CMD_NEWFAMILY,
                family("netdev", 0x19).encode(),
            )])
        });
        let v = plugin()
            .call("getfamily", json!({"family-name": "netdev"}))
            .unwrap();
        assert_eq!(v["family-name"], "netdev");
        assert_eq!(v["family-id"], 0x19);
        assert_eq!(v["ops"][0]["flags"], json!(["admin-perm", "cmd-cap-do"]));
    }
}
