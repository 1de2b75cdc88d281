//! Fake kernel replies are built with the numbers of the kernel's UAPI
//! header (read at test time), never from the spec the plugin decodes with.

use super::*;
use genl_plugin_sdk::testing::{FakeKernel, RequestKind};
use genl_plugin_sdk::{FamilyInfo, KernelError};

/// The value of enum member `name` in linux/tcp_metrics.h of the kernel
/// source scripts/setup.sh extracts.
fn uapi(name: &str) -> u16 {
    u16::try_from(genl_plugin_sdk::uapi::value(HEADER, name)).expect("a UAPI number")
}

const HEADER: &str = "tcp_metrics.h";

fn cmd(name: &str) -> u8 {
    u8::try_from(uapi(name)).expect("command")
}

/// A metric's attribute: netlink carries TCP_METRIC_* + 1.
fn metric(name: &str) -> u16 {
    uapi(name) + 1
}

/// An entry as the kernel sends it for `addr`, source 127.0.0.1.
fn entry(addr: [u8; 4], cwnd: u32) -> Vec<u8> {
    let mut w = AttrWriter::new();
    w.put_bytes(uapi("TCP_METRICS_ATTR_ADDR_IPV4"), &addr).unwrap();
    w.put_u64(uapi("TCP_METRICS_ATTR_AGE"), 328);
    let vals = w.begin_nested(uapi("TCP_METRICS_ATTR_VALS"));
    w.put_u32(metric("TCP_METRIC_RTT"), 2)
        .put_u32(metric("TCP_METRIC_RTTVAR"), 2)
        .put_u32(metric("TCP_METRIC_CWND"), cwnd)
        .put_u32(metric("TCP_METRIC_REORDERING"), 3)
        .put_u32(metric("TCP_METRIC_RTT_US"), 2008)
        .put_u32(metric("TCP_METRIC_RTTVAR_US"), 1824);
    w.end_nested(vals).unwrap();
    w.put_bytes(uapi("TCP_METRICS_ATTR_SADDR_IPV4"), &[127, 0, 0, 1])
        .unwrap();
    w.finish()
}

fn plugin() -> TcpMetrics {
    TcpMetrics::init(Config::new()).unwrap()
}

#[test]
fn get_sends_the_address_and_decodes_the_entry_in_ip_units() {
    let kernel = FakeKernel::new(FamilyInfo::default());
    let get = cmd("TCP_METRICS_CMD_GET");
    kernel.on_do(get, move |req| {
        let addr = Attrs::new(&req.payload)
            .find(uapi("TCP_METRICS_ATTR_ADDR_IPV4"))
            .unwrap()
            .unwrap();
        assert_eq!(addr.bytes(), [127, 0, 0, 1]);
        Ok(vec![Message::new(get, entry([127, 0, 0, 1], 13))])
    });
    let mut p = plugin();
    let expected = json!({"addr-ipv4": "127.0.0.1", "age": 0.328, "age-ms": 328,
           "vals": {"cwnd": 13, "reordering": 3, "rtt-us": 251, "rttvar-us": 456},
           "saddr-ipv4": "127.0.0.1"});
    for input in [json!({"addr": "127.0.0.1"}), json!({"addr-ipv4": "127.0.0.1"})] {
        assert_eq!(p.call("get", input).unwrap(), expected);
    }
    assert_eq!(
        p.call("get", json!({"addr": "nope"})).unwrap_err().code,
        "bad-input"
    );
    assert_eq!(p.call("get", json!({})).unwrap_err().code, "bad-input");
    let err = p.call("get", json!({"addr": "::1", "cwnd": 1})).unwrap_err();
    assert!(err.message.contains("cwnd"), "{}", err.message);
}

#[test]
fn a_missing_entry_is_not_found_and_delete_all_sends_no_address() {
    let kernel = FakeKernel::new(FamilyInfo::default());
    kernel.on_do(cmd("TCP_METRICS_CMD_GET"), |_| {
        Err(RequestError::Kernel(KernelError {
            errno: 3,
            message: None,
            offset: None,
        }))
    });
    kernel.on_do(cmd("TCP_METRICS_CMD_DEL"), |req| {
        assert!(req.payload.is_empty());
        Ok(vec![])
    });
    let mut p = plugin();
    assert_eq!(
        p.call("get", json!({"addr": "::1"})).unwrap_err().code,
        "not-found"
    );
    assert_eq!(p.call("delete", json!({})).unwrap(), json!({"deleted": true}));
    assert_eq!(kernel.requests().last().unwrap().kind, RequestKind::Do);
}

#[test]
fn dumps_in_ip_units_and_as_the_spec_has_them() {
    let kernel = FakeKernel::new(FamilyInfo::default());
    let get = cmd("TCP_METRICS_CMD_GET");
    kernel.on_dump(get, move |_| {
        let mut with_new = entry([10, 0, 0, 2], 10);
        // An attribute a newer kernel might add.
        with_new.extend_from_slice(&[8, 0, 99, 0, 1, 0, 0, 0]);
        Ok(vec![
            Message::new(get, entry([10, 0, 0, 1], 10)),
            Message::new(get, with_new),
        ])
    });
    let mut p = plugin();
    let out = p.call("dump", Value::Null).unwrap();
    assert_eq!(out.as_array().unwrap().len(), 2);
    assert_eq!(out[0]["vals"]["rtt-us"], 251);
    assert!(out[1].get("attr-99").is_some(), "{}", out[1]);
    let raw = p.call("get-dump", Value::Null).unwrap();
    assert_eq!(raw[0]["age"], 328);
    assert_eq!(raw[0]["vals"]["rtt-us"], 2008);
}

#[test]
fn without_the_us_attributes_rtt_comes_from_the_scaled_milliseconds() {
    let mut vals = Map::new();
    vals.insert("rtt".into(), json!(2));
    vals.insert("rttvar".into(), json!(2));
    // (2 * 1000) >> 3 and (2 * 1000) >> 2, as iproute2 computes them.
    assert_eq!(vals_in_ip_units(vals), json!({"rtt-us": 250, "rttvar-us": 500}));
}
