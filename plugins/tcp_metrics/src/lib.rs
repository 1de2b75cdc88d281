//! The tcp_metrics plugin: the kernel's per-destination TCP metrics cache
//! (RTT, cwnd, ssthresh, TCP Fast Open data), served from the kernel's own
//! spec (`ynl-specs/tcp_metrics.yaml`) through the SDK's YNL engine: no
//! attribute table of its own.
//!
//! What it adds to the spec is `ip tcp_metrics`'s units: `age` in seconds
//! (with `age-ms`, the kernel's milliseconds), `vals.rtt-us` and
//! `vals.rttvar-us` in microseconds. The kernel keeps RTT scaled by 8 and
//! its variance by 4 (TCP's srtt_us/mdev_us) and reports them so; like
//! iproute2, the plugin divides, and leaves out the kernel's millisecond
//! `rtt`/`rttvar` (the same scaled values, rounded). The spec's misspelt
//! `reodering` is shown as `reordering`, as iproute2 names it.
//!
//! Operations:
//! - `get {"addr": "192.0.2.1", "saddr"?}` (or the spec's `addr-ipv4`,
//!   `addr-ipv6`, `saddr-ipv4`, `saddr-ipv6`): one entry, in iproute2's units;
//! - `dump`: every entry, in iproute2's units;
//! - `delete {"addr"}` or `{}` for all: changes kernel state, so the family
//!   file must allow command 2;
//! - the spec's own `get-dump` and `del`, with the YNL CLI's JSON (the
//!   kernel's raw units).

use std::net::IpAddr;

use genl_plugin_sdk::prelude::*;
use genl_plugin_sdk::ynl::{Service, Spec};
use serde_json::Map;

/// The kernel's tcp_metrics spec (SPDX line kept in the file).
const SPEC: &str = include_str!("../../../ynl-specs/tcp_metrics.yaml");

/// ESRCH: the kernel's answer for an address it has no metrics for.
const ESRCH: i32 = 3;

/// Serves the tcp_metrics family.
pub struct TcpMetrics {
    service: Service,
}

/// `{"addr": "...", "saddr": "..."}` as the spec's request keys; the
/// spec's own keys pass through for the engine to check.
fn key(input: &Value) -> Result<Value, CallError> {
    let mut out = Map::new();
    let Value::Object(map) = input else {
        return match input {
            Value::Null => Ok(Value::Object(out)),
            _ => Err(CallError::bad_input("expected {\"addr\": \"<ip>\", \"saddr\"?}")),
        };
    };
    for (k, v) in map {
        let prefix = match k.as_str() {
            "addr" => "addr",
            "saddr" => "saddr",
            _ => {
                out.insert(k.clone(), v.clone());
                continue;
            }
        };
        let ip: IpAddr = v
            .as_str()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| CallError::bad_input(format!("'{k}' must be an IP address")))?;
        let family = if ip.is_ipv4() { "ipv4" } else { "ipv6" };
        out.insert(format!("{prefix}-{family}"), json!(ip.to_string()));
    }
    Ok(Value::Object(out))
}

/// An RTT in microseconds from the kernel's scaled values: the `_US`
/// attribute shifted right by `shift`, else (older kernels) the millisecond
/// one times 1000, shifted; as iproute2's tcp_metrics.c computes it.
fn unscaled_us(us: Option<u64>, ms: Option<u64>, shift: u32) -> Option<u64> {
    us.map(|v| v >> shift).or_else(|| ms.map(|v| (v * 1000) >> shift))
}

/// The metrics with RTT and RTT variance unscaled to microseconds.
fn vals_in_ip_units(mut vals: Map<String, Value>) -> Value {
    let mut take = |k: &str| vals.remove(k).and_then(|v| v.as_u64());
    let rtt = unscaled_us(take("rtt-us"), take("rtt"), 3);
    let rttvar = unscaled_us(take("rttvar-us"), take("rttvar"), 2);
    if let Some(v) = vals.remove("reodering") {
        vals.insert("reordering".into(), v);
    }
    if let Some(rtt) = rtt {
        vals.insert("rtt-us".into(), json!(rtt));
    }
    if let Some(rttvar) = rttvar {
        vals.insert("rttvar-us".into(), json!(rttvar));
    }
    Value::Object(vals)
}

/// One entry, as the spec decodes it, in `ip tcp_metrics`'s units.
fn in_ip_units(entry: Value) -> Value {
    let Value::Object(mut out) = entry else {
        return entry;
    };
    if let Some(ms) = out.get("age").and_then(Value::as_u64) {
        // Seconds, as iproute2 prints it; the exact milliseconds beside it.
        out.insert("age".into(), json!(ms as f64 / 1000.0));
        out.insert("age-ms".into(), json!(ms));
    }
    if let Some(Value::Object(vals)) = out.remove("vals") {
        out.insert("vals".into(), vals_in_ip_units(vals));
    }
    Value::Object(out)
}

impl TcpMetrics {
    fn get(&self, input: &Value) -> Result<Value, CallError> {
        let k = key(input)?;
        if !["addr-ipv4", "addr-ipv6"].iter().any(|a| k.get(a).is_some()) {
            return Err(CallError::bad_input("expected {\"addr\": \"<ip>\"}"));
        }
        let not_found = || CallError::not_found("no metrics cached for that address");
        match self.service.call("get", &k) {
            Err(e) if e.kernel.as_ref().is_some_and(|k| k.errno == ESRCH) => Err(not_found()),
            Err(e) => Err(e),
            Ok(Value::Null) => Err(not_found()),
            Ok(v) => Ok(in_ip_units(v)),
        }
    }
}

impl Plugin for TcpMetrics {
    fn init(_config: Config) -> Result<Self, String> {
        let spec = Spec::load(SPEC).map_err(|e| format!("the bundled tcp_metrics spec: {e}"))?;
        Ok(TcpMetrics {
            service: Service::new(spec),
        })
    }

    fn describe(&self) -> PluginDescription {
        let mut d = self.service.describe().version(env!("CARGO_PKG_VERSION"));
        d.ops.retain(|o| o.name != "get");
        d.op(
            "get",
            "One destination, in ip tcp_metrics' units: {\"addr\": \"192.0.2.1\", \"saddr\"?}",
            false,
        )
        .op(
            "dump",
            "Every cached destination, in ip tcp_metrics' units",
            false,
        )
        .op(
            "delete",
            "Forget one destination {\"addr\"}, or all with {}",
            true,
        )
    }

    fn call(&mut self, op: &str, input: Value) -> Result<Value, CallError> {
        match op {
            "get" => self.get(&input),
            "dump" => self.service.serve_mapped("get-dump", &input, in_ip_units),
            "delete" => {
                self.service.call("del", &key(&input)?)?;
                Ok(json!({"deleted": true}))
            }
            _ => self.service.serve(op, &input),
        }
    }
}

export_plugin!(TcpMetrics);

#[cfg(test)]
mod tests;
