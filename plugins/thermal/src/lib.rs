//! The thermal plugin: thermal zones, trip points and cooling devices.
//!
//! Operations (read): `zones` (every thermal zone id and name), `temp
//! {"id"}`. Events: topic `event` (zone created, deleted, enabled, trip
//! crossed, cooling device updated, ...) from the `event` group, topic
//! `sampling` (temperatures) from the `sampling` group. Machines without
//! thermal zones never fire them; the decoding is tested on hand-built
//! messages.

use genl_plugin_sdk::ops::{do_json, dump_json};
use genl_plugin_sdk::prelude::*;
use genl_plugin_sdk::schema::{Field, Kind, decode};

const CMD_TZ_GET_ID: u8 = 1;
const CMD_TZ_GET_TEMP: u8 = 3;
const SAMPLING_TEMP: u8 = 1;

/// THERMAL_GENL_ATTR_* (the ones events and replies carry).
const TZ: &[Field] = &[
    Field::new(2, "tz-id", Kind::U32),
    Field::new(3, "tz-temp", Kind::U32),
    Field::new(5, "tz-trip-id", Kind::U32),
    Field::new(6, "tz-trip-type", Kind::U32),
    Field::new(7, "tz-trip-temp", Kind::U32),
    Field::new(8, "tz-trip-hyst", Kind::U32),
    Field::new(9, "tz-mode", Kind::U32),
    Field::new(10, "tz-name", Kind::Str),
    Field::new(12, "tz-gov", Kind::Nested(GOV)),
    Field::new(13, "tz-gov-name", Kind::Str),
    Field::new(15, "cdev-id", Kind::U32),
    Field::new(16, "cdev-cur-state", Kind::U32),
    Field::new(17, "cdev-max-state", Kind::U32),
    Field::new(18, "cdev-name", Kind::Str),
    Field::new(19, "gov-name", Kind::Str),
];
const GOV: &[Field] = &[Field::new(19, "gov-name", Kind::Str)];
/// A zone list: THERMAL_GENL_ATTR_TZ (1) entries, each a nested zone.
const ZONES: &[Field] = &[Field::new(1, "tz", Kind::Nested(TZ)).multi()];

const EVENTS: &[(u8, &str)] = &[
    (1, "tz-create"),
    (2, "tz-delete"),
    (3, "tz-disable"),
    (4, "tz-enable"),
    (5, "tz-trip-up"),
    (6, "tz-trip-down"),
    (7, "tz-trip-change"),
    (8, "tz-trip-add"),
    (9, "tz-trip-delete"),
    (10, "cdev-add"),
    (11, "cdev-delete"),
    (12, "cdev-state-update"),
    (13, "tz-gov-change"),
    (14, "cpu-capability-change"),
];

/// Serves the thermal family.
pub struct Thermal;

impl Plugin for Thermal {
    fn init(_config: Config) -> Result<Self, String> {
        Ok(Thermal)
    }

    fn describe(&self) -> PluginDescription {
        PluginDescription::new("thermal")
            .version(env!("CARGO_PKG_VERSION"))
            .op("zones", "Every thermal zone: id and name", false)
            .op("temp", "A zone's temperature in millidegrees: {\"id\": N}", false)
            .topic("event")
            .topic("sampling")
    }

    fn call(&mut self, op: &str, input: Value) -> Result<Value, CallError> {
        match op {
            "zones" => {
                let replies = dump_json(CMD_TZ_GET_ID, &Value::Null, TZ, ZONES)?;
                let zones: Vec<Value> = replies
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|r| r["tz"].as_array().cloned().unwrap_or_default())
                    .collect();
                Ok(Value::Array(zones))
            }
            "temp" => {
                let id = input
                    .get("id")
                    .cloned()
                    .ok_or_else(|| CallError::bad_input("expected {\"id\": N}"))?;
                do_json(CMD_TZ_GET_TEMP, &json!({"tz-id": id}), TZ, TZ)
            }
            _ => Err(CallError::unknown_op(op)),
        }
    }

    fn on_notification(&mut self, group: &str, message: Message) {
        let attrs = match decode(&message.payload, TZ) {
            Ok(v) => v,
            Err(e) => return log::warn(&format!("malformed thermal notification: {e}")),
        };
        if group == "sampling" && message.cmd == SAMPLING_TEMP {
            events::publish("sampling", &attrs);
        } else {
            let name = EVENTS
                .iter()
                .find(|(c, _)| *c == message.cmd)
                .map_or("unknown", |(_, n)| n);
            events::publish(
                "event",
                &json!({"event": name, "cmd": message.cmd, "attrs": attrs}),
            );
        }
    }
}

export_plugin!(Thermal);

#[cfg(test)]
mod tests {
    use super::*;
    use genl_plugin_sdk::FamilyInfo;
    use genl_plugin_sdk::schema::encode;
    use genl_plugin_sdk::testing::FakeKernel;

    #[test]
    fn trip_crossings_and_samples_become_events() {
        let kernel = FakeKernel::new(FamilyInfo::default());
        let trip = encode(&json!({"tz-id": 1, "tz-trip-id": 2, "tz-temp": 85000}), TZ).unwrap();
        Thermal.on_notification("event", Message::new(5, trip));
        let sample = encode(&json!({"tz-id": 1, "tz-temp": 41000}), TZ).unwrap();
        Thermal.on_notification("sampling", Message::new(SAMPLING_TEMP, sample));
        let ev = kernel.events();
        assert_eq!(ev[0].0, "event");
        assert_eq!(ev[0].1["event"], "tz-trip-up");
        assert_eq!(ev[0].1["attrs"]["tz-temp"], 85000);
        assert_eq!(ev[1], ("sampling".into(), json!({"tz-id": 1, "tz-temp": 41000})));
    }

    #[test]
    fn zones_flattens_the_dump() {
        let kernel = FakeKernel::new(FamilyInfo::default());
        kernel.on_dump(CMD_TZ_GET_ID, |_| {
            let body = encode(
                &json!({"tz": [{"tz-id": 0, "tz-name": "acpitz"}, {"tz-id": 1, "tz-name": "x86_pkg_temp"}]}),
                ZONES,
            )
            .unwrap();
            Ok(vec![Message::new(CMD_TZ_GET_ID, body)])
        });
        let z = Thermal.call("zones", Value::Null).unwrap();
        assert_eq!(
            z,
            json!([{"tz-id": 0, "tz-name": "acpitz"}, {"tz-id": 1, "tz-name": "x86_pkg_temp"}])
        );
    }
}
