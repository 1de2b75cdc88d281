//! Fake kernel messages are built with the numbers of the kernel's UAPI
//! header (read at test time), never from the spec the plugin uses.

use super::*;
use genl_plugin_sdk::testing::FakeKernel;
use genl_plugin_sdk::{FamilyInfo, KernelError};

/// The value of enum member `name` in linux/mptcp_pm.h of the kernel
/// source scripts/setup.sh extracts.
fn uapi(name: &str) -> u16 {
    u16::try_from(genl_plugin_sdk::uapi::value("mptcp_pm.h", name)).expect("a UAPI number")
}

fn cmd(name: &str) -> u8 {
    u8::try_from(uapi(name)).expect("command")
}

fn plugin() -> MptcpPm {
    MptcpPm::init(Config::new()).unwrap()
}

#[test]
fn endpoint_add_fills_the_family_and_maps_kernel_errors() {
    let kernel = FakeKernel::new(FamilyInfo::default());
    kernel.on_do(cmd("MPTCP_PM_CMD_ADD_ADDR"), |req| {
        let addr = Attrs::new(&req.payload)
            .find(uapi("MPTCP_PM_ATTR_ADDR"))
            .unwrap()
            .unwrap();
        let inner = |name| Attrs::new(addr.bytes()).find(uapi(name)).unwrap().unwrap();
        assert_eq!(inner("MPTCP_PM_ADDR_ATTR_FAMILY").u16().unwrap(), 2);
        assert_eq!(inner("MPTCP_PM_ADDR_ATTR_ADDR4").bytes(), [192, 0, 2, 1]);
        assert_eq!(inner("MPTCP_PM_ADDR_ATTR_ID").u8().unwrap(), 1);
        Err(RequestError::Kernel(KernelError {
            errno: 22,
            message: Some("address already in use".into()),
            offset: None,
        }))
    });
    let err = plugin()
        .call("endpoint-add", json!({"addr4": "192.0.2.1", "id": 1}))
        .unwrap_err();
    assert_eq!(err.code, "kernel");
    assert_eq!(
        err.kernel.unwrap().message.as_deref(),
        Some("address already in use")
    );
    let err = plugin()
        .call("endpoint-add", json!({"addr4": "nope"}))
        .unwrap_err();
    assert_eq!(err.code, "bad-input");
}

fn endpoint(id: u8, addr: [u8; 4]) -> Vec<u8> {
    let mut w = AttrWriter::new();
    let nest = w.begin_nested(uapi("MPTCP_PM_ATTR_ADDR"));
    w.put_u16(uapi("MPTCP_PM_ADDR_ATTR_FAMILY"), 2)
        .put_u8(uapi("MPTCP_PM_ADDR_ATTR_ID"), id)
        .put_bytes(uapi("MPTCP_PM_ADDR_ATTR_ADDR4"), &addr)
        .unwrap();
    w.end_nested(nest).unwrap();
    w.finish()
}

#[test]
fn dumps_unwrap_addr_both_ways_and_events_are_named() {
    let kernel = FakeKernel::new(FamilyInfo::default());
    let get = cmd("MPTCP_PM_CMD_GET_ADDR");
    kernel.on_dump(get, move |_| {
        Ok(vec![Message::new(get, endpoint(3, [10, 0, 0, 1]))])
    });
    let mut p = plugin();
    let v = p.call("endpoint-dump", Value::Null).unwrap();
    assert_eq!(v, json!([{"family": 2, "id": 3, "addr4": "10.0.0.1"}]));
    // The spec's own op: the YNL CLI's JSON, addr4 a big-endian u32.
    let v = p.call("get-addr-dump", Value::Null).unwrap();
    assert_eq!(v, json!([{"addr": {"family": 2, "id": 3, "addr4": 0x0a00_0001}}]));

    let mut w = AttrWriter::new();
    w.put_u32(uapi("MPTCP_ATTR_TOKEN"), 9)
        .put_bytes(uapi("MPTCP_ATTR_SADDR4"), &[10, 0, 0, 2])
        .unwrap();
    p.on_notification(
        "mptcp_pm_events",
        Message::new(cmd("MPTCP_EVENT_ESTABLISHED"), w.finish()),
    );
    let (topic, ev) = &kernel.events()[0];
    assert_eq!(topic, "connection");
    assert_eq!(ev["event"], "established");
    assert_eq!(ev["attrs"], json!({"token": 9, "saddr4": "10.0.0.2"}));
}
