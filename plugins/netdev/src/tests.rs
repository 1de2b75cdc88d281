//! Fake kernel replies are built from the kernel's UAPI header (numbers
//! read at test time), never from the spec the plugin decodes with.

use super::*;
use genl_plugin_sdk::FamilyInfo;
use genl_plugin_sdk::testing::FakeKernel;

/// The value of enum member `name` in the kernel's `linux/netdev.h`.
fn uapi(name: &str) -> u64 {
    u64::try_from(genl_plugin_sdk::uapi::value("netdev.h", name)).expect("a UAPI number")
}

fn cmd(name: &str) -> u8 {
    u8::try_from(uapi(name)).expect("command number")
}

fn attr(name: &str) -> u16 {
    u16::try_from(uapi(name)).expect("attribute number")
}

/// A device as the kernel sends it: ifindex, and XDP features basic and
/// redirect.
fn dev(ifindex: u32) -> Vec<u8> {
    let features = uapi("NETDEV_XDP_ACT_BASIC") | uapi("NETDEV_XDP_ACT_REDIRECT");
    let mut w = AttrWriter::new();
    w.put_u32(attr("NETDEV_A_DEV_IFINDEX"), ifindex)
        .put_u64(attr("NETDEV_A_DEV_XDP_FEATURES"), features)
        .put_u32(attr("NETDEV_A_DEV_XDP_ZC_MAX_SEGS"), 1);
    w.finish()
}

#[test]
fn dev_get_and_both_dump_names_decode_devices() {
    let kernel = FakeKernel::new(FamilyInfo::default());
    let get = cmd("NETDEV_CMD_DEV_GET");
    kernel.on_do(get, move |req| {
        let ifindex = Attrs::new(&req.payload)
            .find(attr("NETDEV_A_DEV_IFINDEX"))
            .unwrap()
            .unwrap()
            .u32()
            .unwrap();
        Ok(vec![Message::new(get, dev(ifindex))])
    });
    kernel.on_dump(get, move |_| {
        Ok((1..=3).map(|i| Message::new(get, dev(i))).collect())
    });
    let mut p = Netdev::init(Config::new()).unwrap();
    let one = p.call("dev-get", json!({"ifindex": 7})).unwrap();
    assert_eq!(
        one,
        json!({"ifindex": 7, "xdp-features": ["basic", "redirect"], "xdp-zc-max-segs": 1})
    );
    for op in ["dev-dump", "dev-get-dump"] {
        assert_eq!(p.call(op, Value::Null).unwrap().as_array().unwrap().len(), 3);
    }
    let err = p.call("dev-get", json!({"ifindex": "x"})).unwrap_err();
    assert_eq!(err.code, "bad-input");
    let err = p.call("dev-get", json!({"ifindex": 1, "bogus": 1})).unwrap_err();
    assert!(err.message.contains("bogus"), "{}", err.message);
    assert_eq!(p.call("frob", Value::Null).unwrap_err().code, "unknown-op");
}

#[test]
fn notifications_and_loss_become_events() {
    let kernel = FakeKernel::new(FamilyInfo::default());
    let get = cmd("NETDEV_CMD_DEV_GET");
    kernel.on_dump(get, move |_| {
        Ok(vec![Message::new(get, dev(1)), Message::new(get, dev(2))])
    });
    let mut p = Netdev::init(Config::new()).unwrap();
    p.on_notification("mgmt", Message::new(cmd("NETDEV_CMD_DEV_ADD_NTF"), dev(5)));
    p.on_notification("mgmt", Message::new(cmd("NETDEV_CMD_DEV_DEL_NTF"), dev(5)));
    p.on_events_lost();
    let events = kernel.events();
    let dev5 = json!({"ifindex": 5, "xdp-features": ["basic", "redirect"], "xdp-zc-max-segs": 1});
    assert_eq!(events[0], ("dev".into(), json!({"action": "added", "dev": dev5})));
    assert_eq!(events[1], ("dev-add-ntf".into(), dev5));
    assert_eq!(events[2].1["action"], "deleted");
    assert_eq!(events[3].0, "dev-del-ntf");
    assert_eq!(
        events[4],
        (
            "resync".into(),
            json!({"reason": "notifications lost", "devices": 2})
        )
    );
}

#[test]
fn every_spec_operation_is_offered() {
    let p = Netdev::init(Config::new()).unwrap();
    let names: Vec<String> = p.describe().ops.into_iter().map(|o| o.name).collect();
    for op in [
        "dev-get",
        "dev-get-dump",
        "page-pool-get",
        "queue-get-dump",
        "qstats-get-dump",
        "napi-set",
        "dev-dump",
        "qstats-dump",
    ] {
        assert!(names.iter().any(|n| n == op), "{op} missing: {names:?}");
    }
}
