//! A hostile component with many linear memories (issue 11: 9 memories
//! gave +800 MiB under a 128 MiB limit; 504 extra memories took every slot
//! of the engine's pool, so no other family could load). The component is
//! built here: a core module in WAT with N memories, wrapped for the
//! plugin world of `wit/gateway.wit` by wit-component, loaded through the
//! normal path (a family file, the gateway binary). Expected values come
//! from the family files and /proc, never from the gateway's own tables.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Gateway, NLCTRL, TestConfig, http};
use serde_json::Value;

/// Where the canonical ABI finds things in memory 0 of the hog.
const INIT_RESULT: u32 = 256; // result<_, string>: all zero is `ok`
const CALL_RESULT: u32 = 512; // result<call-output, call-error>; ok = document(string)
const DESCRIPTION: u32 = 1024; // plugin-description, 32 bytes
const OPS: u32 = 1100; // two op-descriptions, 44 bytes each
const STRINGS: u32 = 2048;
/// The bump allocator's arena in memory 0 (pages 1..16).
const HEAP: u32 = 65536;
const HEAP_END: u32 = 16 * 65536;

/// Little static data for memory 0: strings and the records pointing at
/// them, laid out as the canonical ABI reads them.
struct Data {
    bytes: Vec<u8>,
}

impl Data {
    fn new() -> Self {
        Self {
            bytes: vec![0; STRINGS as usize],
        }
    }

    fn put_u32(&mut self, at: u32, v: u32) {
        let at = at as usize;
        self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Append `s`; returns (pointer, length).
    fn string(&mut self, s: &str) -> (u32, u32) {
        let ptr = self.bytes.len() as u32;
        self.bytes.extend_from_slice(s.as_bytes());
        (ptr, s.len() as u32)
    }

    fn string_at(&mut self, at: u32, s: &str) {
        let (p, l) = self.string(s);
        self.put_u32(at, p);
        self.put_u32(at + 4, l);
    }

    /// The data as a WAT string literal.
    fn wat_literal(&self) -> String {
        self.bytes.iter().map(|b| format!("\\{b:02x}")).collect()
    }
}

/// The WAT of a plugin with `memories` linear memories (memory 0 for the
/// canonical ABI, the others of at most `max_mib` each, only grown). `grow`
/// grows every extra memory a MiB at a time until refused (or at its
/// maximum, then the next), writing a byte to every 4 KiB page so the
/// memory is really resident; `ping` answers `{"pong":true}`.
fn hog_wat(memories: usize, max_mib: u32) -> String {
    let mut data = Data::new();
    // plugin-description { family, version, ops, topics }
    data.string_at(DESCRIPTION, "hog");
    data.string_at(DESCRIPTION + 8, "1.0.0");
    data.put_u32(DESCRIPTION + 16, OPS);
    data.put_u32(DESCRIPTION + 20, 2);
    // op-description { name, summary, writes: bool @16, input-schema:
    // option<string> @20, output-schema @32 }: both schemas `none`.
    data.string_at(OPS, "grow");
    data.string_at(OPS + 8, "Grow every memory until refused");
    data.string_at(OPS + 44, "ping");
    data.string_at(OPS + 44 + 8, "Answer");
    let (grown_ptr, grown_len) = data.string(r#"{"grown":true}"#);
    let (pong_ptr, pong_len) = data.string(r#"{"pong":true}"#);
    assert!(data.bytes.len() < HEAP as usize);

    let extra: String = (1..memories)
        .map(|i| format!("(memory $m{i} 0 {})\n", max_mib * 16))
        .collect();
    let grow: String = (1..memories)
        .map(|i| {
            format!(
                r#"
    (block $done{i}
      (loop $more{i}
        (local.set $old (memory.grow $m{i} (i32.const 16)))
        (br_if $done{i} (i32.eq (local.get $old) (i32.const -1)))
        (local.set $a (i32.shl (local.get $old) (i32.const 16)))
        (local.set $end (i32.add (local.get $a) (i32.const 1048576)))
        (loop $touch{i}
          (i32.store8 $m{i} (local.get $a) (i32.const 1))
          (local.set $a (i32.add (local.get $a) (i32.const 4096)))
          (br_if $touch{i} (i32.lt_u (local.get $a) (local.get $end))))
        (br $more{i})))"#
            )
        })
        .collect();
    format!(
        r#"(module
  (memory $m0 (export "memory") 16)
  {extra}
  (global $heap (mut i32) (i32.const {HEAP}))
  (data (memory $m0) (i32.const 0) "{data}")

  (func (export "cabi_realloc") (param $old i32) (param $old_size i32) (param $align i32) (param $size i32) (result i32)
    (local $p i32)
    (if (i32.gt_u (local.get $size) (i32.const {arena})) (then unreachable))
    (local.set $p (i32.and
      (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
      (i32.xor (i32.sub (local.get $align) (i32.const 1)) (i32.const -1))))
    (if (i32.gt_u (i32.add (local.get $p) (local.get $size)) (i32.const {HEAP_END}))
      (then (local.set $p (i32.const {HEAP}))))
    (global.set $heap (i32.add (local.get $p) (local.get $size)))
    (local.get $p))

  (func (export "init") (param i32 i32) (result i32)
    (i32.const {INIT_RESULT}))

  (func (export "describe") (result i32)
    (i32.const {DESCRIPTION}))

  (func (export "on-notification") (param i32 i32 i32 i32 i32 i32 i32 i32 i32))

  (func (export "on-events-lost"))

  (func (export "call") (param $op i32) (param $op_len i32) (param $in i32) (param $in_len i32) (result i32)
    (local $old i32) (local $a i32) (local $end i32)
    (i32.store8 (i32.const {CALL_RESULT}) (i32.const 0))
    (i32.store8 (i32.const {CALL_OUTPUT_TAG}) (i32.const 0))
    (if (i32.eq (i32.load8_u (local.get $op)) (i32.const 0x67))
      (then {grow}
        (i32.store (i32.const {CALL_RESULT_PTR}) (i32.const {grown_ptr}))
        (i32.store (i32.const {CALL_RESULT_LEN}) (i32.const {grown_len})))
      (else
        (i32.store (i32.const {CALL_RESULT_PTR}) (i32.const {pong_ptr}))
        (i32.store (i32.const {CALL_RESULT_LEN}) (i32.const {pong_len}))))
    (i32.const {CALL_RESULT}))
)"#,
        data = data.wat_literal(),
        arena = HEAP_END - HEAP,
        CALL_OUTPUT_TAG = CALL_RESULT + 4,
        CALL_RESULT_PTR = CALL_RESULT + 8,
        CALL_RESULT_LEN = CALL_RESULT + 12,
    )
}

/// The hog as a component of the plugin world, written to `path`, with
/// `instances` more core instances of a module with one memory of a page
/// (the issue's second case: memories spread over instances).
fn write_hog(path: &Path, memories: usize, max_mib: u32, instances: u32) {
    let mut module = wat::parse_str(hog_wat(memories, max_mib)).expect("the hog's WAT");
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_path(common::workspace().join("wit"))
        .expect("wit/gateway.wit");
    let world = resolve
        .select_world(&[package], Some("plugin"))
        .expect("the plugin world");
    wit_component::embed_component_metadata(
        &mut module,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .expect("embed the world");
    let component = wit_component::ComponentEncoder::default()
        .module(&module)
        .expect("the hog module")
        .validate(true)
        .encode()
        .expect("the hog component");
    std::fs::write(path, with_instances(component, instances)).expect("write the hog");
}

fn leb128(mut n: u32, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// `component` with a core module of one memory appended and instantiated
/// `n` times. Appended sections only add indices at the end of their index
/// spaces, so nothing the component refers to moves (component binary
/// format: section 1 is a core module, 2 core instances, each `0x00
/// module-index args`).
fn with_instances(mut component: Vec<u8>, n: u32) -> Vec<u8> {
    if n == 0 {
        return component;
    }
    // The new module's index: the core modules at the top level so far.
    // Every module and component starts with a version and ends with an
    // end, so the top level is depth 1.
    let (mut modules, mut depth) = (0u32, 0u32);
    for payload in wasmparser::Parser::new(0).parse_all(&component) {
        match payload.expect("the hog component parses") {
            wasmparser::Payload::Version { .. } => depth += 1,
            wasmparser::Payload::ModuleSection { .. } if depth == 1 => modules += 1,
            wasmparser::Payload::End(_) => depth -= 1,
            _ => {}
        }
    }
    let memory = wat::parse_str("(module (memory 1))").expect("one-memory module");
    component.push(1);
    leb128(memory.len() as u32, &mut component);
    component.extend_from_slice(&memory);
    let mut instances = Vec::new();
    leb128(n, &mut instances);
    for _ in 0..n {
        instances.push(0x00);
        leb128(modules, &mut instances);
        leb128(0, &mut instances);
    }
    component.push(2);
    leb128(instances.len() as u32, &mut component);
    component.extend_from_slice(&instances);
    component
}

fn plugins_json(gw: &Gateway) -> Value {
    let out = gw.cli(&["plugins", "--json"]);
    serde_json::from_slice(&out.stdout).expect("plugins JSON")
}

/// /proc/PID/status field `key` (VmRSS, VmHWM) in KiB.
fn status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{key} in /proc/{pid}/status"))
}

/// nlctrl `get` until stopped (and at least three times), from another
/// thread; returns how many answered and the failures.
fn bystander(gw: &Gateway, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    let socket = gw.socket.to_string_lossy().into_owned();
    std::thread::spawn(move || {
        let (mut ok, mut failed) = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) || ok + failed.len() < 3 {
            let (status, body) = http(&socket, "POST", "/v1/families/nlctrl/ops/list", &[], b"null");
            if status == 200 {
                ok += 1;
            } else {
                failed.push(format!("{status}: {}", String::from_utf8_lossy(&body)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        (ok, failed)
    })
}

/// Reload `family` through the CLI; it must succeed.
fn reload(gw: &Gateway, family: &str) {
    let out = gw.cli(&["reload", family]);
    assert!(
        out.status.success(),
        "reload {family}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        gw.log_text()
    );
}

/// Add chaos as the plugin of `family` with a family file, reload, and
/// check it answers: the pool still has room for another plugin.
fn another_family_loads(config: &TestConfig, gw: &Gateway, family: &str) {
    config.family(
        &format!("{family}.toml"),
        &format!("family = \"{family}\"\nplugin = \"chaos.wasm\"\n"),
    );
    let _ = gw.cli(&["reload"]);
    gw.wait_loaded(60);
    let (ok, v) = gw.call(family, "ping", "null");
    assert!(ok, "{family} did not load after the hog: {v}\n{}", gw.log_text());
}

#[test]
fn a_component_over_the_memory_cap_is_refused_and_the_pool_stays_usable() {
    let config = TestConfig::new();
    let plugins = config.private_plugins();
    // The issue's two cases: 9 memories in one module, and 1 + 504 in as
    // many instances (enough for every slot of the old pool).
    write_hog(&plugins.join("hog9.wasm"), 9, 64, 0);
    write_hog(&plugins.join("hog505.wasm"), 1, 64, 504);
    config
        .family("nlctrl.toml", NLCTRL)
        .family(
            "hog9.toml",
            "family = \"thermal\"\nplugin = \"hog9.wasm\"\n[limits]\nmemory_mib = 128\n",
        )
        .family(
            "hog505.toml",
            "family = \"acpi_event\"\nplugin = \"hog505.wasm\"\n[limits]\nmemory_mib = 128\n",
        );
    let gw = Gateway::start(&config);
    let v = plugins_json(&gw);
    assert_eq!(v["engine"]["pooling_allocator"], true, "{v}");
    for (family, count) in [("thermal", 9), ("acpi_event", 505)] {
        let p = v["plugins"]
            .as_array()
            .expect("plugins")
            .iter()
            .find(|p| p["family"] == family)
            .unwrap_or_else(|| panic!("no entry for {family}: {v}"));
        assert_eq!(p["state"], "failed", "{family} was not refused: {p}");
        // The refusal names the hog's count (9 memories; 505 memories in
        // as many core instances) and the cap it exceeds.
        let error = p["last_error"].as_str().unwrap_or_default();
        assert!(
            error.contains(&count.to_string())
                && ["limit", "maximum", "at most"].iter().any(|w| error.contains(w)),
            "{family}: {error}"
        );
    }
    for family in ["thermal", "acpi_event"] {
        let (ok, v) = gw.call(family, "ping", "null");
        assert!(!ok, "{family} serves the refused hog: {v}");
    }
    // The bystander and the pool: nlctrl serves and reloads, and a family
    // added now loads.
    assert!(gw.call("nlctrl", "list", "null").0);
    for _ in 0..3 {
        reload(&gw, "nlctrl");
    }
    assert!(gw.call("nlctrl", "list", "null").0);
    another_family_loads(&config, &gw, "TASKSTATS");
}

#[test]
fn many_memories_within_the_cap_share_one_budget() {
    const BUDGET_MIB: u64 = 64;
    let config = TestConfig::new();
    let plugins = config.private_plugins();
    // Four memories, the most a plugin may have; the three grown ones may
    // each reach 7/8 of the budget: under a budget per memory the hog
    // would hold 3 x 56 MiB.
    write_hog(&plugins.join("hog4.wasm"), 4, BUDGET_MIB as u32 * 7 / 8, 0);
    config.family("nlctrl.toml", NLCTRL).family(
        "hog4.toml",
        &format!("family = \"thermal\"\nplugin = \"hog4.wasm\"\n[limits]\nmemory_mib = {BUDGET_MIB}\ncall_timeout_ms = 30000\n"),
    );
    let gw = Gateway::start(&config);
    let (ok, v) = gw.call("thermal", "ping", "null");
    assert!(ok, "the hog does not serve: {v}");

    let pid = gw.child.id();
    // Reset the peak RSS (proc(5), clear_refs: 5) so VmHWM is the peak of
    // the attack alone.
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
    let before = status_kib(pid, "VmRSS");
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = bystander(&gw, stop.clone());
    let started = Instant::now();
    let (ok, v) = gw.call("thermal", "grow", "null");
    eprintln!("grow answered after {:?}: {v}", started.elapsed());
    stop.store(true, Ordering::Relaxed);
    let peak = status_kib(pid, "VmHWM");
    let grown_mib = peak.saturating_sub(before) / 1024;
    eprintln!("VmRSS before {before} KiB, VmHWM during the attack {peak} KiB: +{grown_mib} MiB");
    // The budget from the family file, plus a margin for the host's own
    // work meanwhile (the bystander, the call).
    assert!(
        grown_mib < BUDGET_MIB + 32,
        "the gateway grew by {grown_mib} MiB under a {BUDGET_MIB} MiB budget"
    );
    assert!(!ok, "the hog grew every memory unhindered: {v}");
    assert_eq!(v["error"]["code"], "plugin-crashed", "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("limits.memory_mib"), "{msg}");
    let (answered, failed) = watcher.join().expect("bystander");
    assert!(
        answered >= 3 && failed.is_empty(),
        "bystander: {answered} answered, failed {failed:?}"
    );

    // The hog restarts from a fresh instance; the pool serves reloads and
    // new families.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !gw.call("thermal", "ping", "null").0 {
        assert!(Instant::now() < deadline, "the hog did not restart");
        std::thread::sleep(Duration::from_millis(100));
    }
    reload(&gw, "thermal");
    reload(&gw, "nlctrl");
    another_family_loads(&config, &gw, "TASKSTATS");
}
