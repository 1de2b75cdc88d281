//! The thermal plugin: thermal zones, trip points and cooling devices.
//!
//! Operations (read): `zones` (every thermal zone id and name), `temp
//! {"id"}`. Events: topic `event` (zone created, deleted, enabled, trip
//! crossed, cooling device updated, ...) from the `event` group, topic
//! `sampling` (temperatures) from the `sampling` group. Machines without
//! thermal zones never fire them; the decoding is tested on messages built
//! by hand from the numbers of the kernel's thermal.h, read at test time.

use genl_plugin_sdk::ops::do_json;
use genl_plugin_sdk::output::Items;
use genl_plugin_sdk::prelude::*;
use genl_plugin_sdk::schema::{Field, Kind, decode};

// Numbers from include/uapi/linux/thermal.h; the tests read that header and
// check every one.

/// THERMAL_GENL_CMD_TZ_GET_ID: a dump of every zone's id and name.
const CMD_TZ_GET_ID: u8 = 1;
/// THERMAL_GENL_CMD_TZ_GET_TEMP: one zone's temperature.
const CMD_TZ_GET_TEMP: u8 = 3;
/// THERMAL_GENL_SAMPLING_TEMP: the one command of the `sampling` group.
const SAMPLING_TEMP: u8 = 0;

/// THERMAL_GENL_ATTR_TZ: the nest TZ_GET_ID packs every zone into.
const ATTR_TZ: u16 = 1;
/// THERMAL_GENL_ATTR_TZ_ID.
const ATTR_TZ_ID: u16 = 2;
/// THERMAL_GENL_ATTR_TZ_NAME.
const ATTR_TZ_NAME: u16 = 10;

/// THERMAL_GENL_ATTR_* (the ones events and replies carry). Temperatures
/// and hysteresis are the kernel's `int` put with nla_put_u32: signed.
const TZ: &[Field] = &[
    Field::new(2, "tz-id", Kind::U32),
    Field::new(3, "tz-temp", Kind::S32),
    Field::new(5, "tz-trip-id", Kind::U32),
    Field::new(6, "tz-trip-type", Kind::U32),
    Field::new(7, "tz-trip-temp", Kind::S32),
    Field::new(8, "tz-trip-hyst", Kind::S32),
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

/// THERMAL_GENL_EVENT_*, the commands of the `event` group.
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

/// The zones of TZ_GET_ID replies. The kernel does not nest each zone: it
/// opens one THERMAL_GENL_ATTR_TZ nest and puts TZ_ID, TZ_NAME for every
/// zone in turn (drivers/thermal/thermal_netlink.c), so a zone starts at
/// each TZ_ID.
fn zones(replies: &[Message]) -> Result<Vec<Value>, CallError> {
    let mut zones = Vec::new();
    for reply in replies {
        for attr in reply.attrs() {
            let attr = attr?;
            if attr.kind() != ATTR_TZ {
                continue;
            }
            for inner in attr.nested() {
                let inner = inner?;
                match inner.kind() {
                    ATTR_TZ_ID => zones.push(json!({"tz-id": inner.u32()?})),
                    ATTR_TZ_NAME => match zones.last_mut() {
                        Some(zone) => zone["tz-name"] = json!(inner.str()?),
                        None => return Err(CallError::new("decode", "a zone name before any zone id")),
                    },
                    _ => {}
                }
            }
        }
    }
    Ok(zones)
}

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
            .op(
                "temp",
                "A zone's temperature in millidegrees (signed): {\"id\": N}",
                false,
            )
            .topic("event")
            .topic("sampling")
    }

    fn call(&mut self, op: &str, input: Value) -> Result<Value, CallError> {
        match op {
            "zones" => {
                // A message lists several zones: stream them a part at a time.
                let mut dump = kernel::dump_start(CMD_TZ_GET_ID, &[])?;
                let mut items = Items::new();
                while let Some(part) = dump.next_part()? {
                    let messages = part
                        .messages()
                        .map(|m| m.map(|m| m.to_owned()))
                        .collect::<Result<Vec<_>, _>>()?;
                    items.send(zones(&messages)?)?;
                }
                Ok(items.finish())
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
    use genl_plugin_sdk::testing::FakeKernel;
    use std::collections::BTreeMap;

    /// Every member of thermal.h's enums, by name.
    fn thermal_h() -> BTreeMap<String, i64> {
        genl_plugin_sdk::uapi::members("thermal.h").into_iter().collect()
    }

    /// One attribute, built by hand: length, type, payload, padding.
    fn attr(kind: i64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&u16::try_from(4 + payload.len()).unwrap().to_ne_bytes());
        out.extend_from_slice(&u16::try_from(kind).unwrap().to_ne_bytes());
        out.extend_from_slice(payload);
        out.resize(out.len().next_multiple_of(4), 0);
        out
    }

    fn cmd(h: &BTreeMap<String, i64>, name: &str) -> u8 {
        u8::try_from(h[name]).unwrap()
    }

    #[test]
    fn every_number_is_the_one_in_thermal_h() {
        let h = thermal_h();
        assert_eq!(
            h.get("THERMAL_GENL_ATTR_TZ_NAME"),
            Some(&10),
            "header parsed wrong: {h:?}"
        );
        for f in TZ.iter().chain(GOV) {
            let name = format!("THERMAL_GENL_ATTR_{}", f.name.to_uppercase().replace('-', "_"));
            assert_eq!(h.get(&name), Some(&i64::from(f.id)), "{}", f.name);
        }
        assert_eq!(h["THERMAL_GENL_ATTR_TZ"], i64::from(ATTR_TZ));
        assert_eq!(h["THERMAL_GENL_ATTR_TZ_ID"], i64::from(ATTR_TZ_ID));
        assert_eq!(h["THERMAL_GENL_ATTR_TZ_NAME"], i64::from(ATTR_TZ_NAME));
        for (n, event) in EVENTS {
            let name = format!("THERMAL_GENL_EVENT_{}", event.to_uppercase().replace('-', "_"));
            assert_eq!(h.get(&name), Some(&i64::from(*n)), "{event}");
        }
        assert_eq!(h["THERMAL_GENL_SAMPLING_TEMP"], i64::from(SAMPLING_TEMP));

        // What the ops send, seen from the outside.
        let kernel = FakeKernel::new(FamilyInfo::default());
        for c in 0..=u8::MAX {
            kernel.on_do(c, |_| Ok(vec![]));
            kernel.on_dump(c, |_| Ok(vec![]));
        }
        Thermal.call("zones", Value::Null).unwrap();
        Thermal.call("temp", json!({"id": 0})).unwrap();
        let sent: Vec<u8> = kernel.requests().iter().map(|r| r.cmd).collect();
        assert_eq!(
            sent,
            [
                cmd(&h, "THERMAL_GENL_CMD_TZ_GET_ID"),
                cmd(&h, "THERMAL_GENL_CMD_TZ_GET_TEMP")
            ]
        );

        // The bundled family file allows exactly those.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../config/families.d/thermal.toml"
        );
        let file: toml::Table = std::fs::read_to_string(path).unwrap().parse().unwrap();
        let allowed = |kind: &str| -> Vec<i64> {
            file["commands"][kind]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_integer().unwrap())
                .collect()
        };
        assert_eq!(allowed("do"), [h["THERMAL_GENL_CMD_TZ_GET_TEMP"]]);
        assert_eq!(allowed("dump"), [h["THERMAL_GENL_CMD_TZ_GET_ID"]]);
    }

    #[test]
    fn zones_are_the_id_name_pairs_of_one_nest() {
        let h = thermal_h();
        let (id, name) = (h["THERMAL_GENL_ATTR_TZ_ID"], h["THERMAL_GENL_ATTR_TZ_NAME"]);
        // As thermal_netlink.c builds it: one TZ nest, the pairs in turn.
        let mut pairs = Vec::new();
        pairs.extend(attr(id, &0u32.to_ne_bytes()));
        pairs.extend(attr(name, b"acpitz\0"));
        pairs.extend(attr(id, &1u32.to_ne_bytes()));
        pairs.extend(attr(name, b"x86_pkg_temp\0"));
        let body = attr(h["THERMAL_GENL_ATTR_TZ"], &pairs);
        let get_id = cmd(&h, "THERMAL_GENL_CMD_TZ_GET_ID");
        let kernel = FakeKernel::new(FamilyInfo::default());
        kernel.on_dump(get_id, move |_| Ok(vec![Message::new(get_id, body.clone())]));
        let z = Thermal.call("zones", Value::Null).unwrap();
        assert_eq!(
            z,
            json!([{"tz-id": 0, "tz-name": "acpitz"}, {"tz-id": 1, "tz-name": "x86_pkg_temp"}])
        );
        // No zones: the kernel still sends the (empty) nest.
        let empty = attr(h["THERMAL_GENL_ATTR_TZ"], &[]);
        kernel.on_dump(get_id, move |_| Ok(vec![Message::new(get_id, empty.clone())]));
        assert_eq!(Thermal.call("zones", Value::Null).unwrap(), json!([]));
    }

    #[test]
    fn temperatures_are_signed_and_samples_are_the_sampling_command() {
        let h = thermal_h();
        let (id, temp) = (h["THERMAL_GENL_ATTR_TZ_ID"], h["THERMAL_GENL_ATTR_TZ_TEMP"]);
        let mut sample = attr(id, &3u32.to_ne_bytes());
        sample.extend(attr(temp, &(-5000i32).to_ne_bytes()));

        let kernel = FakeKernel::new(FamilyInfo::default());
        let sampling = cmd(&h, "THERMAL_GENL_SAMPLING_TEMP");
        Thermal.on_notification("sampling", Message::new(sampling, sample.clone()));
        let trip_up = cmd(&h, "THERMAL_GENL_EVENT_TZ_TRIP_UP");
        let mut trip = sample.clone();
        trip.extend(attr(h["THERMAL_GENL_ATTR_TZ_TRIP_ID"], &2u32.to_ne_bytes()));
        Thermal.on_notification("event", Message::new(trip_up, trip));
        let get_temp = cmd(&h, "THERMAL_GENL_CMD_TZ_GET_TEMP");
        kernel.on_do(get_temp, move |_| {
            Ok(vec![Message::new(get_temp, sample.clone())])
        });
        let reply = Thermal.call("temp", json!({"id": 3})).unwrap();

        let ev = kernel.events();
        assert_eq!(ev[0], ("sampling".into(), json!({"tz-id": 3, "tz-temp": -5000})));
        assert_eq!(ev[1].0, "event");
        assert_eq!(ev[1].1["event"], "tz-trip-up");
        assert_eq!(
            ev[1].1["attrs"],
            json!({"tz-id": 3, "tz-temp": -5000, "tz-trip-id": 2})
        );
        assert_eq!(reply, json!({"tz-id": 3, "tz-temp": -5000}));
    }
}
