//! A plugin that misbehaves on request, for the sandbox tests: it loops,
//! grows memory without bound, panics, traps, spams its log and asks for
//! commands it was not allowed. It serves whatever family it is configured
//! for and is never part of the default configuration.
//!
//! Config: `init` = "panic" | "trap" | "fail" makes `init` misbehave,
//! "sleep" makes it take `sleep_ms` milliseconds;
//! `tag` is echoed by `ping` (to tell versions apart in reload tests).

use genl_plugin_sdk::prelude::*;

/// The misbehaving plugin.
pub struct Chaos {
    tag: String,
}

#[cfg(target_arch = "wasm32")]
fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> ! {
    panic!("trap (native stand-in)")
}

impl Plugin for Chaos {
    fn init(config: Config) -> Result<Self, String> {
        match config.get("init").map(String::as_str) {
            Some("panic") => panic!("chaos: panic in init"),
            Some("trap") => trap(),
            Some("fail") => return Err("chaos: init refuses this configuration".into()),
            // A slow start (e.g. a plugin waiting on the kernel): sleeps
            // `sleep_ms` (default 10 s) without spinning.
            Some("sleep") => {
                let ms = config
                    .get("sleep_ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(10_000);
                std::thread::sleep(std::time::Duration::from_millis(ms));
            }
            _ => {}
        }
        Ok(Chaos {
            tag: config.get("tag").cloned().unwrap_or_else(|| "v1".into()),
        })
    }

    fn describe(&self) -> PluginDescription {
        PluginDescription::new("chaos")
            .version(env!("CARGO_PKG_VERSION"))
            .op("ping", "Answer with the configured tag", false)
            .op("loop", "Spin forever", false)
            .op("grow", "Allocate memory until stopped", false)
            .op("panic", "Panic", false)
            .op("trap", "Execute unreachable", false)
            .op("spam", "Print {\"lines\": N} lines", false)
            .op(
                "request",
                "Send {\"cmd\": N, \"dump\": bool} on the plugin's family",
                false,
            )
    }

    fn call(&mut self, op: &str, input: Value) -> Result<Value, CallError> {
        match op {
            "ping" => Ok(json!({"pong": self.tag})),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "grow" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "panic" => panic!("chaos: panic in call"),
            "trap" => trap(),
            "spam" => {
                let lines = input.get("lines").and_then(Value::as_u64).unwrap_or(100);
                for i in 0..lines {
                    println!("chaos spam line {i}");
                    log::info(&format!("chaos log line {i}"));
                }
                Ok(json!({"printed": lines}))
            }
            "request" => {
                let cmd = input
                    .get("cmd")
                    .and_then(Value::as_u64)
                    .and_then(|c| u8::try_from(c).ok())
                    .ok_or_else(|| CallError::bad_input("expected {\"cmd\": 0..255}"))?;
                let replies = if input.get("dump").and_then(Value::as_bool).unwrap_or(false) {
                    kernel::dump_request(cmd, &[])?
                } else {
                    kernel::do_request(cmd, &[])?
                };
                Ok(json!({"replies": replies.len()}))
            }
            "burst" => {
                let n = input.get("n").and_then(Value::as_u64).unwrap_or(100);
                let pace = std::time::Duration::from_micros(
                    input.get("pace_us").and_then(Value::as_u64).unwrap_or(0),
                );
                let every = input.get("every").and_then(Value::as_u64).unwrap_or(1).max(1);
                for seq in 0..n {
                    events::publish("burst", &json!({"seq": seq}));
                    if !pace.is_zero() && (seq + 1) % every == 0 {
                        std::thread::sleep(pace);
                    }
                }
                Ok(json!({"published": n}))
            }
            _ => Err(CallError::unknown_op(op)),
        }
    }
}

export_plugin!(Chaos);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_refuses_and_ping_echoes_the_tag() {
        let bad: Config = [("init".to_string(), "fail".to_string())].into();
        assert!(Chaos::init(bad).is_err());
        let tagged: Config = [("tag".to_string(), "v9".to_string())].into();
        assert_eq!(
            Chaos::init(tagged).unwrap().call("ping", Value::Null).unwrap(),
            json!({"pong": "v9"})
        );
    }
}
