//! The tcp_metrics plugin: the kernel's per-destination TCP metrics cache
//! (RTT, cwnd, ssthresh, TCP Fast Open data), in the units `ip tcp_metrics`
//! shows: `age` in seconds (with `age-ms`, the kernel's milliseconds),
//! `vals.rtt-us` and `vals.rttvar-us` in microseconds. The kernel keeps RTT
//! scaled by 8 and its variance by 4 (TCP's srtt_us/mdev_us) and reports them
//! so; like iproute2, the plugin divides, and leaves out the kernel's
//! millisecond `rtt`/`rttvar` (the same scaled values, rounded).
//!
//! Written with the SDK's typed attribute sets, as docs/plugin-guide.md
//! walks through. Operations:
//! - `get {"addr": "192.0.2.1"}` (and optionally `"saddr"`): one entry;
//! - `dump`: every entry;
//! - `delete {"addr"}` or `{}` for all: changes kernel state, so the family
//!   file must allow command 2.

use std::net::IpAddr;

use genl_plugin_sdk::attr_set;
use genl_plugin_sdk::prelude::*;
use genl_plugin_sdk::typed::{AttrSet, Binary};

/// TCP_METRICS_CMD_GET.
const CMD_GET: u8 = 1;
/// TCP_METRICS_CMD_DEL.
const CMD_DEL: u8 = 2;

attr_set! {
    /// TCP_METRICS_ATTR_VALS: the metrics, numbered TCP_METRIC_* + 1.
    pub struct Vals {
        1 => rtt: u32,
        2 => rttvar: u32,
        3 => ssthresh: u32,
        4 => cwnd: u32,
        5 => reordering: u32,
        6 => rtt_us: u32,
        7 => rttvar_us: u32,
    }
}

attr_set! {
    /// One cache entry (TCP_METRICS_ATTR_*).
    pub struct Entry {
        1 => addr_ipv4: std::net::Ipv4Addr,
        2 => addr_ipv6: std::net::Ipv6Addr,
        3 => age: u64,
        4 => tw_tsval: u32,
        5 => tw_ts_stamp: i32,
        6 => vals: Vals,
        7 => fopen_mss: u16,
        8 => fopen_syn_drops: u16,
        9 => fopen_syn_drop_ts: u64,
        10 => fopen_cookie: Binary,
        11 => saddr_ipv4: std::net::Ipv4Addr,
        12 => saddr_ipv6: std::net::Ipv6Addr,
    }
}

/// Serves the tcp_metrics family.
pub struct TcpMetrics;

/// `{"addr": "...", "saddr": "..."}` as request attributes.
fn key(input: &Value) -> Result<Entry, CallError> {
    let ip = |field: &str| -> Result<Option<IpAddr>, CallError> {
        match input.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_str()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or_else(|| CallError::bad_input(format!("'{field}' must be an IP address"))),
        }
    };
    let mut e = Entry::default();
    match ip("addr")? {
        Some(IpAddr::V4(a)) => e.addr_ipv4 = Some(a),
        Some(IpAddr::V6(a)) => e.addr_ipv6 = Some(a),
        None => {}
    }
    match ip("saddr")? {
        Some(IpAddr::V4(a)) => e.saddr_ipv4 = Some(a),
        Some(IpAddr::V6(a)) => e.saddr_ipv6 = Some(a),
        None => {}
    }
    Ok(e)
}

fn encode(e: &Entry) -> Result<Vec<u8>, CallError> {
    e.to_bytes().map_err(|err| CallError::bad_input(err.to_string()))
}

fn to_value(v: &impl genl_plugin_sdk::serde::Serialize) -> Result<Value, CallError> {
    serde_json::to_value(v).map_err(|e| CallError::new("internal", e.to_string()))
}

/// An RTT in microseconds from the kernel's scaled values: the `_US`
/// attribute shifted right by `shift`, else (older kernels) the millisecond
/// one times 1000, shifted; as iproute2's tcp_metrics.c computes it.
fn unscaled_us(us: Option<u32>, ms: Option<u32>, shift: u32) -> Option<u64> {
    us.map(|v| u64::from(v) >> shift)
        .or_else(|| ms.map(|v| (u64::from(v) * 1000) >> shift))
}

/// The metrics with RTT and RTT variance unscaled to microseconds.
fn vals_json(mut vals: Vals) -> Result<Value, CallError> {
    let rtt = unscaled_us(vals.rtt_us.take(), vals.rtt.take(), 3);
    let rttvar = unscaled_us(vals.rttvar_us.take(), vals.rttvar.take(), 2);
    let mut out = to_value(&vals)?;
    if let Some(rtt) = rtt {
        out["rtt-us"] = json!(rtt);
    }
    if let Some(rttvar) = rttvar {
        out["rttvar-us"] = json!(rttvar);
    }
    Ok(out)
}

/// One entry as JSON, in `ip tcp_metrics`'s units.
fn to_json(msg: &Message) -> Result<Value, CallError> {
    let mut entry = Entry::decode(&msg.payload)?;
    let age_ms = entry.age.take();
    let vals = entry.vals.take();
    let mut out = to_value(&entry)?;
    if let Some(ms) = age_ms {
        // Seconds, as iproute2 prints it; the exact milliseconds beside it.
        out["age"] = json!(ms as f64 / 1000.0);
        out["age-ms"] = json!(ms);
    }
    if let Some(vals) = vals {
        out["vals"] = vals_json(vals)?;
    }
    Ok(out)
}

impl Plugin for TcpMetrics {
    fn init(_config: Config) -> Result<Self, String> {
        Ok(TcpMetrics)
    }

    fn describe(&self) -> PluginDescription {
        PluginDescription::new("tcp_metrics")
            .version(env!("CARGO_PKG_VERSION"))
            .op(
                "get",
                "One destination: {\"addr\": \"192.0.2.1\", \"saddr\"?}",
                false,
            )
            .op("dump", "Every cached destination", false)
            .op(
                "delete",
                "Forget one destination {\"addr\"}, or all with {}",
                true,
            )
    }

    fn call(&mut self, op: &str, input: Value) -> Result<Value, CallError> {
        match op {
            "get" => {
                let k = key(&input)?;
                if k.addr_ipv4.is_none() && k.addr_ipv6.is_none() {
                    return Err(CallError::bad_input("expected {\"addr\": \"<ip>\"}"));
                }
                let replies = match kernel::do_request(CMD_GET, &encode(&k)?) {
                    Err(RequestError::Kernel(e)) if e.errno == 3 => {
                        return Err(CallError::not_found("no metrics cached for that address"));
                    }
                    other => other?,
                };
                replies
                    .first()
                    .map(to_json)
                    .unwrap_or_else(|| Err(CallError::not_found("no metrics cached for that address")))
            }
            "dump" => kernel::dump_request(CMD_GET, &[])?
                .iter()
                .map(to_json)
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            "delete" => {
                kernel::do_request(CMD_DEL, &encode(&key(&input)?)?)?;
                Ok(json!({"deleted": true}))
            }
            _ => Err(CallError::unknown_op(op)),
        }
    }
}

export_plugin!(TcpMetrics);

#[cfg(test)]
mod tests {
    use super::*;
    use genl_plugin_sdk::testing::{FakeKernel, RequestKind};
    use genl_plugin_sdk::{FamilyInfo, KernelError};

    fn entry(addr: [u8; 4], cwnd: u32) -> Vec<u8> {
        Entry {
            addr_ipv4: Some(addr.into()),
            age: Some(328),
            vals: Some(Vals {
                cwnd: Some(cwnd),
                rtt: Some(2),
                rtt_us: Some(2008),
                rttvar: Some(2),
                rttvar_us: Some(1824),
                ..Default::default()
            }),
            saddr_ipv4: Some([127, 0, 0, 1].into()),
            ..Default::default()
        }
        .to_bytes()
        .unwrap()
    }

    #[test]
    fn get_sends_the_address_and_decodes_the_entry() {
        let kernel = FakeKernel::new(FamilyInfo::default());
        kernel.on_do(CMD_GET, |req| {
            let asked = Entry::decode(&req.payload).unwrap();
            assert_eq!(asked.addr_ipv4, Some([127, 0, 0, 1].into()));
            Ok(vec![Message::new(CMD_GET, entry([127, 0, 0, 1], 13))])
        });
        let out = TcpMetrics.call("get", json!({"addr": "127.0.0.1"})).unwrap();
        assert_eq!(
            out,
            json!({"addr-ipv4": "127.0.0.1", "age": 0.328, "age-ms": 328,
                   "vals": {"cwnd": 13, "rtt-us": 251, "rttvar-us": 456}, "saddr-ipv4": "127.0.0.1"})
        );
        assert_eq!(
            TcpMetrics.call("get", json!({"addr": "nope"})).unwrap_err().code,
            "bad-input"
        );
        assert_eq!(TcpMetrics.call("get", json!({})).unwrap_err().code, "bad-input");
    }

    #[test]
    fn a_missing_entry_is_not_found_and_delete_all_sends_no_address() {
        let kernel = FakeKernel::new(FamilyInfo::default());
        kernel.on_do(CMD_GET, |_| {
            Err(RequestError::Kernel(KernelError {
                errno: 3,
                message: None,
                offset: None,
            }))
        });
        kernel.on_do(CMD_DEL, |req| {
            assert!(req.payload.is_empty());
            Ok(vec![])
        });
        assert_eq!(
            TcpMetrics.call("get", json!({"addr": "::1"})).unwrap_err().code,
            "not-found"
        );
        assert_eq!(
            TcpMetrics.call("delete", json!({})).unwrap(),
            json!({"deleted": true})
        );
        assert_eq!(kernel.requests().last().unwrap().kind, RequestKind::Do);
    }

    #[test]
    fn dump_decodes_every_entry_and_keeps_unknown_attributes() {
        let kernel = FakeKernel::new(FamilyInfo::default());
        kernel.on_dump(CMD_GET, |_| {
            let mut with_new = entry([10, 0, 0, 2], 10);
            // An attribute a newer kernel might add.
            with_new.extend_from_slice(&[8, 0, 99, 0, 1, 0, 0, 0]);
            Ok(vec![
                Message::new(CMD_GET, entry([10, 0, 0, 1], 10)),
                Message::new(CMD_GET, with_new),
            ])
        });
        let out = TcpMetrics.call("dump", Value::Null).unwrap();
        assert_eq!(out.as_array().unwrap().len(), 2);
        assert_eq!(out[1]["unknown"], json!({"99": ["01000000"]}));
    }

    #[test]
    fn without_the_us_attributes_rtt_comes_from_the_scaled_milliseconds() {
        let vals = Vals {
            rtt: Some(2),
            rttvar: Some(2),
            ..Default::default()
        };
        // (2 * 1000) >> 3 and (2 * 1000) >> 2, as iproute2 computes them.
        assert_eq!(vals_json(vals).unwrap(), json!({"rtt-us": 250, "rttvar-us": 500}));
    }
}
