//! Attribute policies as JSON for `GET /v1/families/{family}`.

use genl_wire::policy::{AttrPolicy, Policies};
use serde_json::{Map, Value, json};

fn attr_json(p: &AttrPolicy) -> Value {
    let mut v = json!({"type": p.kind.name()});
    let mut put = |k: &str, x: Option<Value>| {
        if let Some(x) = x {
            v[k] = x;
        }
    };
    put("min", p.min_s.map(Value::from).or(p.min_u.map(Value::from)));
    put("max", p.max_s.map(Value::from).or(p.max_u.map(Value::from)));
    put("min-len", p.min_len.map(Value::from));
    put("max-len", p.max_len.map(Value::from));
    put("policy", p.policy_idx.map(Value::from));
    put("policy-maxtype", p.policy_maxtype.map(Value::from));
    put("bitfield32-mask", p.bitfield32_mask.map(Value::from));
    put("mask", p.mask.map(Value::from));
    v
}

/// `{"ops": {"1": {"do": 0, "dump": 1}}, "sets": {"0": {"1": {"type": "u32", ...}}}}`
pub fn to_json(p: &Policies) -> Value {
    let ops: Map<String, Value> = p
        .ops
        .iter()
        .map(|(op, o)| (op.to_string(), json!({"do": o.do_idx, "dump": o.dump_idx})))
        .collect();
    let sets: Map<String, Value> = p
        .sets
        .iter()
        .map(|(idx, attrs)| {
            let attrs: Map<String, Value> = attrs
                .iter()
                .map(|(a, pol)| (a.to_string(), attr_json(pol)))
                .collect();
            (idx.to_string(), Value::Object(attrs))
        })
        .collect();
    json!({"ops": ops, "sets": sets})
}
