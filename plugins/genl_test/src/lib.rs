//! The genl_test plugin: the project's own kernel module (kmod/genl_test),
//! compatible with the classic generic netlink example: family `genl_test`,
//! command MSG = 1 with a string attribute MSG = 1, and three multicast
//! groups `genl_mcgrp0..2` fed by a kernel timer.
//!
//! Operations: `send {"message": "..."}` (the module logs it, echoes it
//! back and multicasts it to group 0; needs command 1 allowed). Events: one
//! topic per group (`genl_mcgrp0`, `genl_mcgrp1`, `genl_mcgrp2`), payload
//! `{"message": "..."}`.

use genl_plugin_sdk::prelude::*;

const CMD_MSG: u8 = 1;
const ATTR_MSG: u16 = 1;
/// The module's policy: at most 256 bytes.
const MAX_MESSAGE: usize = 256;
const GROUPS: [&str; 3] = ["genl_mcgrp0", "genl_mcgrp1", "genl_mcgrp2"];

/// Serves genl_test.
pub struct GenlTest;

fn message_of(m: &Message) -> Option<String> {
    m.attrs()
        .find(ATTR_MSG)
        .ok()
        .flatten()
        .and_then(|a| a.str().ok())
        .map(str::to_owned)
}

impl Plugin for GenlTest {
    fn init(_config: Config) -> Result<Self, String> {
        Ok(GenlTest)
    }

    fn describe(&self) -> PluginDescription {
        let mut d = PluginDescription::new("genl_test")
            .version(env!("CARGO_PKG_VERSION"))
            .op(
                "send",
                "Send {\"message\": \"...\"} (at most 256 bytes); returns the module's echo",
                true,
            );
        for g in GROUPS {
            d = d.topic(g);
        }
        d
    }

    fn call(&mut self, op: &str, input: Value) -> Result<Value, CallError> {
        match op {
            "send" => {
                let msg = input
                    .get("message")
                    .and_then(Value::as_str)
                    .ok_or_else(|| CallError::bad_input("expected {\"message\": \"...\"}"))?;
                if msg.len() > MAX_MESSAGE {
                    return Err(CallError::bad_input(format!(
                        "message is {} bytes; the module takes at most {MAX_MESSAGE}",
                        msg.len()
                    )));
                }
                let mut w = AttrWriter::new();
                w.put_str(ATTR_MSG, msg)
                    .map_err(|e| CallError::bad_input(e.to_string()))?;
                let replies = kernel::do_request(CMD_MSG, &w.finish())?;
                let echo = replies.first().and_then(message_of);
                Ok(json!({"echo": echo}))
            }
            _ => Err(CallError::unknown_op(op)),
        }
    }

    fn on_notification(&mut self, group: &str, message: Message) {
        match message_of(&message) {
            Some(text) => events::publish(group, &json!({"message": text})),
            None => log::warn(&format!("genl_test notification on {group} without a message")),
        }
    }
}

export_plugin!(GenlTest);

#[cfg(test)]
mod tests {
    use super::*;
    use genl_plugin_sdk::FamilyInfo;
    use genl_plugin_sdk::testing::FakeKernel;

    fn msg(text: &str) -> Vec<u8> {
        let mut w = AttrWriter::new();
        w.put_str(ATTR_MSG, text).unwrap();
        w.finish()
    }

    #[test]
    fn send_returns_the_echo_and_limits_the_length() {
        let kernel = FakeKernel::new(FamilyInfo::default());
        kernel.on_do(CMD_MSG, |req| {
            Ok(vec![Message::new(CMD_MSG, req.payload.clone())])
        });
        assert_eq!(
            GenlTest.call("send", json!({"message": "hello"})).unwrap(),
            json!({"echo": "hello"})
        );
        let long = "x".repeat(257);
        assert_eq!(
            GenlTest.call("send", json!({"message": long})).unwrap_err().code,
            "bad-input"
        );
    }

    #[test]
    fn each_group_is_a_topic() {
        let kernel = FakeKernel::new(FamilyInfo::default());
        for g in GROUPS {
            GenlTest.on_notification(g, Message::new(CMD_MSG, msg(&format!("Hello group {g}"))));
        }
        let topics: Vec<_> = kernel
            .events()
            .into_iter()
            .map(|(t, v)| (t, v["message"].clone()))
            .collect();
        assert_eq!(
            topics[2],
            ("genl_mcgrp2".into(), json!("Hello group genl_mcgrp2"))
        );
    }
}
