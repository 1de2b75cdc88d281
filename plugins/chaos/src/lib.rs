//! A plugin that misbehaves on request, for the sandbox tests: it loops,
//! sleeps in host calls, grows memory without bound, panics, traps, spams
//! and forges its log, floods events, hoards host resources, answers with
//! oversized or unusable output, fails after streaming items, and asks for
//! commands (and flags) it was not allowed. It serves whatever family it
//! is configured for and is never part of the default configuration.
//!
//! Config: `init` = "panic" | "trap" | "fail" | "sleep" | "spin" makes
//! `init` misbehave (`sleep_ms` for how long; `init_error` is the text a
//! failing `init` returns); `notify` = "spin" | "sleep"
//! | "panic" does the same in `on-notification`; `claim` is the family name
//! `describe` claims; `tag` is echoed by `ping` (to tell versions apart in
//! reload tests); `schema` (JSON text) adds an op with that input schema,
//! named `schema_op` (default `schema`).
//!
//! `wait-for` blocks until the kernel answers a request, so a test can hold
//! a call inside one instance for as long as it likes (it creates the
//! object the request asks for when it is done); `hold` keeps memory in the
//! instance's own state, to show that instances do not share a budget.

use genl_plugin_sdk::prelude::*;

/// The misbehaving plugin.
pub struct Chaos {
    tag: String,
    claim: String,
    notify: Option<String>,
    sleep_ms: u64,
    notifications: u64,
    held: Vec<Vec<u8>>,
    /// Dumps started and never finished, kept across calls.
    hoarded: Vec<kernel::Dump>,
    /// The name (`schema_op`, default `schema`) and input schema of an op
    /// with a schema, from the config.
    schema: Option<(String, Value)>,
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn sleep_ms(ms: u64) {
    // A WASI clock poll: time the host spends, not wasm.
    std::thread::sleep(std::time::Duration::from_millis(ms));
}

/// A new stdout stream from the host, never dropped: each is a host
/// resource (a stream with its buffer) held until the instance goes.
#[cfg(target_arch = "wasm32")]
fn leak_stdout_handle() {
    #[link(wasm_import_module = "wasi:cli/stdout@0.2.0")]
    unsafe extern "C" {
        #[link_name = "get-stdout"]
        fn get_stdout() -> i32;
    }
    // SAFETY: get-stdout takes nothing and returns a handle (an i32) the
    // plugin owns; leaking it is the point.
    std::hint::black_box(unsafe { get_stdout() });
}

#[cfg(not(target_arch = "wasm32"))]
fn leak_stdout_handle() {}

/// Ask WASI for `len` random bytes in one call; how many came back.
#[cfg(target_arch = "wasm32")]
fn random_bytes(len: u64) -> usize {
    #[link(wasm_import_module = "wasi:random/random@0.2.0")]
    unsafe extern "C" {
        #[link_name = "get-random-bytes"]
        fn get_random_bytes(len: i64, ret: *mut usize);
    }
    // The canonical ABI returns a list as (pointer, length) in the return
    // area; the pointer is the plugin's to free, and leaking it is fine
    // here (the instance is discarded after a trap anyway).
    let mut ret = [0usize; 2];
    // SAFETY: `ret` is two aligned words, the return area the lowered
    // signature of get-random-bytes writes its list's pointer and length to.
    unsafe { get_random_bytes(len as i64, ret.as_mut_ptr()) };
    ret[1]
}

#[cfg(not(target_arch = "wasm32"))]
fn random_bytes(len: u64) -> usize {
    len as usize
}

/// Send one batch of `n` items that all point at the same `bytes` bytes
/// of this instance's memory: the host copies each one, so a small plugin
/// asks for `n` times its memory. Returns whether the host took the batch.
#[cfg(target_arch = "wasm32")]
fn aliased_items(bytes: usize, n: usize) -> bool {
    // The package's version in wit/gateway.wit: bumped with it.
    #[link(wasm_import_module = "genl:gateway/output@0.3.1")]
    unsafe extern "C" {
        #[link_name = "items"]
        fn items(list: *const u32, len: usize, ret: *mut u32);
    }
    let text = vec![b'1'; bytes];
    // A list<string> is an array of (pointer, length) pairs of 32 bits.
    let pairs: Vec<u32> = (0..n)
        .flat_map(|_| [text.as_ptr() as u32, bytes as u32])
        .collect();
    let mut ret = [0u32; 3];
    // SAFETY: `pairs` holds `n` (pointer, length) pairs, each naming
    // `text`, which outlives the call; `ret` is the three aligned words the
    // lowered result<_, string> is written to.
    unsafe { items(pairs.as_ptr(), n, ret.as_mut_ptr()) };
    ret[0] == 0
}

#[cfg(not(target_arch = "wasm32"))]
fn aliased_items(_bytes: usize, _n: usize) -> bool {
    true
}

/// Bytes written as hex, two digits a byte (the attributes a test built
/// from the UAPI numbers).
fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

fn arg(input: &Value, key: &str, default: u64) -> u64 {
    input.get(key).and_then(Value::as_u64).unwrap_or(default)
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
            Some("fail") => {
                return Err(config
                    .get("init_error")
                    .cloned()
                    .unwrap_or_else(|| "chaos: init refuses this configuration".into()));
            }
            _ => {}
        }
        let sleep = config
            .get("sleep_ms")
            .and_then(|s| s.parse().ok())
            .unwrap_or(60_000);
        match config.get("init").map(String::as_str) {
            Some("sleep") => sleep_ms(sleep),
            Some("spin") => spin(),
            _ => {}
        }
        Ok(Chaos {
            tag: config.get("tag").cloned().unwrap_or_else(|| "v1".into()),
            claim: config.get("claim").cloned().unwrap_or_else(|| "chaos".into()),
            notify: config.get("notify").cloned(),
            sleep_ms: sleep,
            notifications: 0,
            held: Vec::new(),
            hoarded: Vec::new(),
            schema: config
                .get("schema")
                .and_then(|s| serde_json::from_str(s).ok())
                .map(|s| {
                    let name = config
                        .get("schema_op")
                        .cloned()
                        .unwrap_or_else(|| "schema".into());
                    (name, s)
                }),
        })
    }

    fn on_notification(&mut self, _group: &str, _message: Message) {
        self.notifications += 1;
        match self.notify.as_deref() {
            Some("spin") => spin(),
            Some("sleep") => sleep_ms(self.sleep_ms),
            Some("panic") => panic!("chaos: panic in on-notification"),
            _ => {}
        }
    }

    fn describe(&self) -> PluginDescription {
        let with_schema = match &self.schema {
            Some((name, schema)) => PluginDescription::new(&self.claim).op_with_schema(
                name,
                "Answer {} to input its configured input schema accepts",
                false,
                Some(schema),
                None,
            ),
            None => PluginDescription::new(&self.claim),
        };
        with_schema
            .version(env!("CARGO_PKG_VERSION"))
            .op("ping", "Answer with the configured tag", false)
            .op("loop", "Spin forever", false)
            .op("grow", "Allocate memory until stopped", false)
            .op("panic", "Panic", false)
            .op("trap", "Execute unreachable", false)
            .op("spam", "Print {\"lines\": N} lines", false)
            .op(
                "request",
                "Send {\"cmd\": N, \"dump\": bool, \"flags\": F, \"payload\": hex, \"n\": times} on the plugin's family",
                false,
            )
            .op("sleep", "Sleep {\"ms\": N} in a host call", false)
            .op(
                "forge-log",
                "Log a line that pretends to be the gateway's, and a huge one",
                false,
            )
            .op("big-output", "Answer with a string of {\"bytes\": N}", false)
            .op("bad-code", "Fail with the error code {\"code\": C}", false)
            .op(
                "event",
                "Publish {\"n\"} events on {\"topic\"} with {\"bytes\"} of payload",
                false,
            )
            .op("handles", "Hoard {\"n\": N} host stdout streams", false)
            .op("random", "Ask WASI for {\"bytes\": N} random bytes in one call", false)
            .op(
                "aliased",
                "Stream {\"n\"} items that all name the same {\"bytes\"} bytes of memory",
                false,
            )
            .op(
                "stream",
                "Stream {\"batches\"} batches of {\"per\"} items, then fail if {\"fail\": true}",
                false,
            )
            .op(
                "joined",
                "Send {\"text\"} as it is as one batch of joined items (output.items-joined)",
                false,
            )
            .op("notifications", "How many notifications arrived", false)
            .op(
                "wait-for",
                "Repeat the do request {\"cmd\"} with the u32 attribute {\"attr\": {\"type\", \"value\"}} until the kernel answers it",
                false,
            )
            .op(
                "hold",
                "Keep {\"mib\": N} more MiB in this instance's state; answer the total held",
                false,
            )
            .op(
                "hoard-dumps",
                "Start {\"n\"} dumps of {\"cmd\"}, read {\"parts\"} parts of each and keep them open across calls ({\"release\": true} drops them)",
                false,
            )
    }

    fn call(&mut self, op: &str, input: Value) -> Result<Value, CallError> {
        match op {
            "ping" => Ok(json!({"pong": self.tag})),
            "loop" => spin(),
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
                let flags = u16::try_from(arg(&input, "flags", 0))
                    .map_err(|_| CallError::bad_input("flags are 16 bits"))?;
                let dump = input.get("dump").and_then(Value::as_bool).unwrap_or(false);
                let payload = hex(input.get("payload").and_then(Value::as_str).unwrap_or(""))
                    .ok_or_else(|| CallError::bad_input("payload is hex: two digits a byte"))?;
                let mut replies = 0;
                for _ in 0..arg(&input, "n", 1) {
                    replies = if dump {
                        kernel::dump_request(cmd, &payload)?
                    } else {
                        kernel::do_request_with_flags(cmd, flags, &payload)?
                    }
                    .len();
                }
                Ok(json!({"replies": replies}))
            }
            "sleep" => {
                sleep_ms(arg(&input, "ms", 60_000));
                Ok(json!({"slept": true}))
            }
            "forge-log" => {
                let forged =
                    "chaos says hi\n2030-01-01T00:00:00.000000Z ERROR genl_gateway::api: FORGED-BY-PLUGIN";
                log::error(forged);
                println!("{forged}");
                let huge = "H".repeat(usize::try_from(arg(&input, "bytes", 1 << 20)).unwrap_or(1 << 20));
                log::info(&huge);
                println!("{huge}");
                Ok(json!({"forged": true}))
            }
            "stream" => {
                let per = arg(&input, "per", 2);
                let mut items = genl_plugin_sdk::output::Items::new();
                for batch in 0..arg(&input, "batches", 3) {
                    items.send((0..per).map(|i| json!({"batch": batch, "i": i})).collect())?;
                }
                if input.get("fail") == Some(&Value::Bool(true)) {
                    return Err(CallError::new("chaos", "chaos: failed after streaming"));
                }
                Ok(items.finish())
            }
            "joined" => {
                // `text` as it is, as a batch of joined items: a plugin
                // that writes anything there.
                let text = input.get("text").and_then(Value::as_str).unwrap_or_default();
                let mut items = genl_plugin_sdk::output::Items::new();
                items.send_joined(text)?;
                Ok(items.finish())
            }
            "big-output" => {
                let n = usize::try_from(arg(&input, "bytes", 1 << 20)).unwrap_or(1 << 20);
                Ok(Value::String("B".repeat(n)))
            }
            "bad-code" => {
                let code = input.get("code").and_then(Value::as_str).unwrap_or("x");
                Err(CallError::new(code, "chaos: an error with a code of its own"))
            }
            "event" => {
                let topic = input.get("topic").and_then(Value::as_str).unwrap_or("burst");
                let bytes = usize::try_from(arg(&input, "bytes", 10)).unwrap_or(10);
                let payload = Value::String("E".repeat(bytes));
                let n = arg(&input, "n", 1);
                for _ in 0..n {
                    events::publish(topic, &payload);
                }
                Ok(json!({"published": n}))
            }
            "handles" => {
                let n = arg(&input, "n", 100_000);
                for _ in 0..n {
                    leak_stdout_handle();
                }
                Ok(json!({"hoarded": n}))
            }
            "random" => Ok(json!({"got": random_bytes(arg(&input, "bytes", 16))})),
            "aliased" => {
                let size = |key, default| usize::try_from(arg(&input, key, default)).unwrap_or(usize::MAX);
                let taken = aliased_items(size("bytes", 1 << 20), size("n", 1));
                Ok(json!({"taken": taken}))
            }
            op if self.schema.as_ref().is_some_and(|(name, _)| name == op) => Ok(json!({})),
            "notifications" => Ok(json!({"received": self.notifications})),
            "wait-for" => {
                let cmd =
                    u8::try_from(arg(&input, "cmd", 1)).map_err(|_| CallError::bad_input("cmd is 0..255"))?;
                let attr = input.get("attr").cloned().unwrap_or(Value::Null);
                let kind = u16::try_from(arg(&attr, "type", 1))
                    .map_err(|_| CallError::bad_input("attr.type is 16 bits"))?;
                let value = u32::try_from(arg(&attr, "value", 0))
                    .map_err(|_| CallError::bad_input("attr.value is 32 bits"))?;
                // One netlink attribute: length 8, type, u32 in host order.
                let mut payload = Vec::with_capacity(8);
                payload.extend_from_slice(&8u16.to_ne_bytes());
                payload.extend_from_slice(&kind.to_ne_bytes());
                payload.extend_from_slice(&value.to_ne_bytes());
                let mut polls: u64 = 0;
                // The call's deadline ends the wait if the answer never comes.
                loop {
                    polls += 1;
                    if kernel::do_request(cmd, &payload).is_ok() {
                        return Ok(json!({"polls": polls}));
                    }
                    sleep_ms(5);
                }
            }
            "hoard-dumps" => {
                if input.get("release").and_then(Value::as_bool) == Some(true) {
                    let n = self.hoarded.len();
                    self.hoarded.clear();
                    return Ok(json!({"released": n}));
                }
                let cmd =
                    u8::try_from(arg(&input, "cmd", 1)).map_err(|_| CallError::bad_input("cmd is 0..255"))?;
                for _ in 0..arg(&input, "n", 1) {
                    let mut dump = kernel::dump_start(cmd, &[])?;
                    for _ in 0..arg(&input, "parts", 2) {
                        dump.next_part()?;
                    }
                    self.hoarded.push(dump);
                }
                Ok(json!({"hoarded": self.hoarded.len()}))
            }
            "hold" => {
                let mib = usize::try_from(arg(&input, "mib", 1)).unwrap_or(1);
                self.held.push(vec![1u8; mib << 20]);
                let total: usize = self.held.iter().map(Vec::len).sum();
                Ok(json!({"held_mib": total >> 20}))
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
    fn payloads_are_hex_two_digits_a_byte() {
        assert_eq!(hex("0c00ff"), Some(vec![0x0c, 0x00, 0xff]));
        assert_eq!(hex(""), Some(vec![]));
        assert_eq!(hex("0"), None);
        assert_eq!(hex("zz"), None);
    }

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
