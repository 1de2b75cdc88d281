//! The netdev plugin: network devices' XDP features, queues, NAPI
//! instances, page pools and queue statistics (`netdev` genl family).
//!
//! Operations (read-only): `dev-get {"ifindex"}`, `dev-dump`,
//! `queue-get {"ifindex", "id", "type"}`, `queue-dump [{"ifindex"}]`,
//! `napi-dump [{"ifindex"}]`, `page-pool-dump`, `qstats-dump [{"ifindex", "scope"}]`.
//!
//! Events: topic `dev` (`added`, `deleted`, `changed`) from the `mgmt`
//! group, topic `page-pool` from the `page-pool` group, and topic `resync`
//! with a fresh device count after notifications were lost.

use genl_plugin_sdk::ops::{do_json, dump_json};
use genl_plugin_sdk::prelude::*;
use genl_plugin_sdk::schema::{Field, Kind, decode};

const DEV_GET: u8 = 1;
const DEV_ADD_NTF: u8 = 2;
const DEV_DEL_NTF: u8 = 3;
const DEV_CHANGE_NTF: u8 = 4;
const PAGE_POOL_GET: u8 = 5;
const PAGE_POOL_ADD_NTF: u8 = 6;
const PAGE_POOL_DEL_NTF: u8 = 7;
const PAGE_POOL_CHANGE_NTF: u8 = 8;
const QUEUE_GET: u8 = 10;
const NAPI_GET: u8 = 11;
const QSTATS_GET: u8 = 12;

/// The `dev` attribute set.
pub const DEV: &[Field] = &[
    Field::new(1, "ifindex", Kind::U32),
    Field::new(3, "xdp-features", Kind::U64),
    Field::new(4, "xdp-zc-max-segs", Kind::U32),
    Field::new(5, "xdp-rx-metadata-features", Kind::U64),
    Field::new(6, "xsk-features", Kind::U64),
];

/// The `page-pool` attribute set.
pub const PAGE_POOL: &[Field] = &[
    Field::new(1, "id", Kind::Uint),
    Field::new(2, "ifindex", Kind::U32),
    Field::new(3, "napi-id", Kind::Uint),
    Field::new(4, "inflight", Kind::Uint),
    Field::new(5, "inflight-mem", Kind::Uint),
    Field::new(6, "detach-time", Kind::Uint),
    Field::new(7, "dmabuf", Kind::U32),
];

/// The `queue` attribute set.
pub const QUEUE: &[Field] = &[
    Field::new(1, "id", Kind::U32),
    Field::new(2, "ifindex", Kind::U32),
    Field::new(3, "type", Kind::U32),
    Field::new(4, "napi-id", Kind::U32),
    Field::new(5, "dmabuf", Kind::U32),
];

/// The `napi` attribute set.
pub const NAPI: &[Field] = &[
    Field::new(1, "ifindex", Kind::U32),
    Field::new(2, "id", Kind::U32),
    Field::new(3, "irq", Kind::U32),
    Field::new(4, "pid", Kind::U32),
    Field::new(5, "defer-hard-irqs", Kind::U32),
    Field::new(6, "gro-flush-timeout", Kind::Uint),
    Field::new(7, "irq-suspend-timeout", Kind::Uint),
    Field::new(8, "threaded", Kind::U32),
];

/// The `qstats` attribute set (the counters most devices report).
pub const QSTATS: &[Field] = &[
    Field::new(1, "ifindex", Kind::U32),
    Field::new(2, "queue-type", Kind::U32),
    Field::new(3, "queue-id", Kind::U32),
    Field::new(4, "scope", Kind::Uint),
    Field::new(8, "rx-packets", Kind::Uint),
    Field::new(9, "rx-bytes", Kind::Uint),
    Field::new(10, "tx-packets", Kind::Uint),
    Field::new(11, "tx-bytes", Kind::Uint),
    Field::new(12, "rx-alloc-fail", Kind::Uint),
    Field::new(13, "rx-hw-drops", Kind::Uint),
];

/// Serves the netdev family.
pub struct Netdev;

impl Plugin for Netdev {
    fn init(_config: Config) -> Result<Self, String> {
        Ok(Netdev)
    }

    fn describe(&self) -> PluginDescription {
        PluginDescription::new("netdev")
            .version(env!("CARGO_PKG_VERSION"))
            .op("dev-get", "One device: {\"ifindex\": N}", false)
            .op("dev-dump", "Every device", false)
            .op(
                "queue-get",
                "One queue: {\"ifindex\", \"id\", \"type\" (0 rx, 1 tx)}",
                false,
            )
            .op("queue-dump", "Every queue, optionally {\"ifindex\": N}", false)
            .op(
                "napi-dump",
                "Every NAPI instance, optionally {\"ifindex\": N}",
                false,
            )
            .op("page-pool-dump", "Every page pool", false)
            .op(
                "qstats-dump",
                "Queue statistics, optionally {\"ifindex\": N, \"scope\": 1}",
                false,
            )
            .topic("dev")
            .topic("page-pool")
            .topic("resync")
    }

    fn call(&mut self, op: &str, input: Value) -> Result<Value, CallError> {
        match op {
            "dev-get" => do_json(DEV_GET, &input, DEV, DEV),
            "dev-dump" => dump_json(DEV_GET, &input, DEV, DEV),
            "queue-get" => do_json(QUEUE_GET, &input, QUEUE, QUEUE),
            "queue-dump" => dump_json(QUEUE_GET, &input, QUEUE, QUEUE),
            "napi-dump" => dump_json(NAPI_GET, &input, NAPI, NAPI),
            "page-pool-dump" => dump_json(PAGE_POOL_GET, &input, PAGE_POOL, PAGE_POOL),
            "qstats-dump" => dump_json(QSTATS_GET, &input, QSTATS, QSTATS),
            _ => Err(CallError::unknown_op(op)),
        }
    }

    fn on_notification(&mut self, _group: &str, message: Message) {
        let (topic, action, fields) = match message.cmd {
            DEV_ADD_NTF => ("dev", "added", DEV),
            DEV_DEL_NTF => ("dev", "deleted", DEV),
            DEV_CHANGE_NTF => ("dev", "changed", DEV),
            PAGE_POOL_ADD_NTF => ("page-pool", "added", PAGE_POOL),
            PAGE_POOL_DEL_NTF => ("page-pool", "deleted", PAGE_POOL),
            PAGE_POOL_CHANGE_NTF => ("page-pool", "changed", PAGE_POOL),
            other => {
                log::debug(&format!("ignoring netdev notification {other}"));
                return;
            }
        };
        match decode(&message.payload, fields) {
            Ok(v) => events::publish(topic, &json!({"action": action, topic: v})),
            Err(e) => log::warn(&format!("malformed netdev notification: {e}")),
        }
    }

    fn on_events_lost(&mut self) {
        // Subscribers cannot trust an incremental view any more: tell them,
        // with the device count from a fresh dump so they can re-read.
        let devices = dump_json(DEV_GET, &Value::Null, DEV, DEV)
            .map(|v| v.as_array().map_or(0, Vec::len))
            .ok();
        log::warn("netdev notifications were lost; published a resync event");
        events::publish(
            "resync",
            &json!({"reason": "notifications lost", "devices": devices}),
        );
    }
}

export_plugin!(Netdev);

#[cfg(test)]
mod tests {
    use super::*;
    use genl_plugin_sdk::FamilyInfo;
    use genl_plugin_sdk::testing::FakeKernel;

    fn dev(ifindex: u32) -> Vec<u8> {
        let mut w = AttrWriter::new();
        w.put_u32(1, ifindex).put_u64(3, 0x7f).put_u32(4, 1);
        w.finish()
    }

    #[test]
    fn dev_get_and_dump_decode_devices() {
        let kernel = FakeKernel::new(FamilyInfo::default());
        kernel.on_do(DEV_GET, |req| {
            let ifindex = Attrs::new(&req.payload).find(1).unwrap().unwrap().u32().unwrap();
            Ok(vec![Message::new(DEV_GET, dev(ifindex))])
        });
        kernel.on_dump(DEV_GET, |_| {
            Ok((1..=3).map(|i| Message::new(DEV_GET, dev(i))).collect())
        });
        let mut p = Netdev::init(Config::new()).unwrap();
        let one = p.call("dev-get", json!({"ifindex": 7})).unwrap();
        assert_eq!(
            one,
            json!({"ifindex": 7, "xdp-features": 0x7f, "xdp-zc-max-segs": 1})
        );
        assert_eq!(
            p.call("dev-dump", Value::Null).unwrap().as_array().unwrap().len(),
            3
        );
        assert_eq!(
            p.call("dev-get", json!({"ifindex": "x"})).unwrap_err().code,
            "bad-input"
        );
    }

    #[test]
    fn notifications_and_loss_become_events() {
        let kernel = FakeKernel::new(FamilyInfo::default());
        kernel.on_dump(DEV_GET, |_| {
            Ok(vec![Message::new(DEV_GET, dev(1)), Message::new(DEV_GET, dev(2))])
        });
        let mut p = Netdev::init(Config::new()).unwrap();
        p.on_notification("mgmt", Message::new(DEV_ADD_NTF, dev(5)));
        p.on_notification("mgmt", Message::new(DEV_DEL_NTF, dev(5)));
        p.on_events_lost();
        let events = kernel.events();
        assert_eq!(
            events[0],
            (
                "dev".into(),
                json!({"action": "added", "dev": {"ifindex": 5, "xdp-features": 0x7f, "xdp-zc-max-segs": 1}})
            )
        );
        assert_eq!(events[1].1["action"], "deleted");
        assert_eq!(
            events[2],
            (
                "resync".into(),
                json!({"reason": "notifications lost", "devices": 2})
            )
        );
    }
}
