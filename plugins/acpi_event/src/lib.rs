//! The acpi_event plugin: ACPI events (power button, lid, AC adapter,
//! battery, thermal) that the kernel multicasts on `acpi_mc_group`, as
//! `acpi_listen` shows them. It offers no operations; virtual machines
//! rarely fire these, so the decoding is tested on hand-built messages.

use genl_plugin_sdk::prelude::*;

const CMD_EVENT: u8 = 1;
const ATTR_EVENT: u16 = 1;

/// Serves acpi_event.
pub struct AcpiEvent;

/// `struct acpi_genl_event`: device_class[20], bus_id[15], then (aligned)
/// u32 type and u32 data.
fn decode_event(b: &[u8]) -> Option<Value> {
    let text = |r: std::ops::Range<usize>| {
        let s = b.get(r)?;
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        Some(String::from_utf8_lossy(&s[..end]).into_owned())
    };
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|x| u32::from_ne_bytes([x[0], x[1], x[2], x[3]]))
    };
    Some(json!({
        "device_class": text(0..20)?,
        "bus_id": text(20..35)?,
        "type": u32_at(36)?,
        "data": u32_at(40)?,
    }))
}

impl Plugin for AcpiEvent {
    fn init(_config: Config) -> Result<Self, String> {
        Ok(AcpiEvent)
    }

    fn describe(&self) -> PluginDescription {
        PluginDescription::new("acpi_event")
            .version(env!("CARGO_PKG_VERSION"))
            .topic("acpi")
    }

    fn call(&mut self, op: &str, _input: Value) -> Result<Value, CallError> {
        Err(CallError::unknown_op(op))
    }

    fn on_notification(&mut self, _group: &str, message: Message) {
        if message.cmd != CMD_EVENT {
            return;
        }
        let event = message
            .attrs()
            .find(ATTR_EVENT)
            .ok()
            .flatten()
            .and_then(|a| decode_event(a.bytes()));
        match event {
            Some(e) => events::publish("acpi", &e),
            None => log::warn("malformed ACPI event"),
        }
    }
}

export_plugin!(AcpiEvent);

#[cfg(test)]
mod tests {
    use super::*;
    use genl_plugin_sdk::FamilyInfo;
    use genl_plugin_sdk::testing::FakeKernel;

    #[test]
    fn a_power_button_event_is_decoded() {
        let kernel = FakeKernel::new(FamilyInfo::default());
        let mut ev = vec![0u8; 44];
        ev[..13].copy_from_slice(b"button/power\0");
        ev[20..25].copy_from_slice(b"PWRF\0");
        ev[36..40].copy_from_slice(&0x80u32.to_ne_bytes());
        ev[40..44].copy_from_slice(&1u32.to_ne_bytes());
        let mut w = AttrWriter::new();
        w.put_bytes(ATTR_EVENT, &ev).unwrap();
        AcpiEvent.on_notification("acpi_mc_group", Message::new(CMD_EVENT, w.finish()));
        AcpiEvent.on_notification(
            "acpi_mc_group",
            Message::new(CMD_EVENT, vec![8, 0, 1, 0, 1, 2, 3, 4]),
        );
        let events = kernel.events();
        assert_eq!(events.len(), 1, "the truncated one is logged, not published");
        assert_eq!(
            events[0].1,
            json!({"device_class": "button/power", "bus_id": "PWRF", "type": 128, "data": 1})
        );
    }
}
