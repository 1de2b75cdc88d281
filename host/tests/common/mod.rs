//! Shared test fixtures: a real gateway process with a private config.

#![allow(dead_code)]

pub mod nats;

/// A free TCP port on loopback for a server a test starts, below the
/// kernel's range of ephemeral ports (`ip_local_port_range`): a port from
/// that range, bound and released, could be given to any connection's
/// source port before the server binds it (a NATS node's monitor port
/// was, and the node could not start). Each port is handed out once per
/// test binary, so tests running side by side never share one.
pub fn free_port() -> u16 {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    const LOWEST: u32 = 10_000;
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .expect("/proc/sys/net/ipv4/ip_local_port_range");
    let ephemeral: u32 = range
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("the first ephemeral port");
    let span = ephemeral
        .checked_sub(LOWEST)
        .filter(|&n| n >= 1000)
        .unwrap_or_else(|| panic!("ephemeral ports start at {ephemeral}: no room below for test servers"));
    // Test binaries run one after another; a per-process start spreads them.
    let start = std::process::id().wrapping_mul(7919) % span;
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for i in 0..span {
        let port = u16::try_from(LOWEST + (start + i) % span).expect("a port number");
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free loopback port between {LOWEST} and {ephemeral}");
}

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_owned()
}

/// The built plugin `name`, or a panic that says how to build it.
pub fn plugin(name: &str) -> PathBuf {
    let p = workspace().join("target/plugins").join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: run scripts/build-plugins.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

/// The gateway binary.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_genl-gateway")
}

/// A config directory with `gateway.toml` and `families.d/`.
pub struct TestConfig {
    pub dir: tempfile::TempDir,
    sections: std::cell::RefCell<std::collections::BTreeMap<String, Vec<String>>>,
}

impl TestConfig {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("families.d")).expect("families.d");
        let config = Self {
            dir,
            sections: Default::default(),
        };
        config
            .set("api", "socket = \"api.sock\"")
            .set(
                "plugins",
                &format!("dir = \"{}\"", workspace().join("target/plugins").display()),
            )
            .set("plugins", "families_dir = \"families.d\"")
            .set("plugins", "watch = false");
        config
    }

    /// Set `line` (`key = value`) in `[section]`, replacing that key.
    pub fn set(&self, section: &str, line: &str) -> &Self {
        let key = line.split('=').next().unwrap_or_default().trim().to_owned();
        {
            let mut sections = self.sections.borrow_mut();
            let lines = sections.entry(section.to_owned()).or_default();
            lines.retain(|l| l.split('=').next().unwrap_or_default().trim() != key);
            lines.push(line.to_owned());
        }
        let text: String = self
            .sections
            .borrow()
            .iter()
            .map(|(s, lines)| format!("[{s}]\n{}\n", lines.join("\n")))
            .collect();
        std::fs::write(self.path(), text).expect("gateway.toml");
        // It may hold inline tokens, which the gateway refuses in a file
        // others can read.
        std::fs::set_permissions(self.path(), std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod gateway.toml");
        self
    }

    /// Point the gateway at network namespace `ns`.
    pub fn netns(&self, ns: &Netns) -> &Self {
        self.set("netlink", &format!("netns = \"{}\"", ns.name))
    }

    /// Serve plugins from a private copy of the built ones, which the test
    /// may then change; returns that directory.
    pub fn private_plugins(&self) -> PathBuf {
        let dir = self.dir.path().join("plugins");
        std::fs::create_dir_all(&dir).expect("plugins dir");
        for name in ["nlctrl", "netdev", "chaos"] {
            std::fs::copy(plugin(name), dir.join(format!("{name}.wasm"))).expect("copy plugin");
        }
        self.set("plugins", &format!("dir = \"{}\"", dir.display()));
        dir
    }

    pub fn family(&self, file: &str, text: &str) -> &Self {
        std::fs::write(self.dir.path().join("families.d").join(file), text).expect("family file");
        self
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("gateway.toml")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }
}

/// A private network namespace made by the test; deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "gwt-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME args...`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        run("ip", &all);
    }

    /// Feed `ip -n NAME -batch -` these lines.
    pub fn ip_batch(&self, lines: &str) {
        use std::io::Write;
        let mut child = Command::new("ip")
            .args(["-n", &self.name, "-batch", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("spawn ip -batch");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(lines.as_bytes())
            .expect("write batch");
        assert!(child.wait().expect("wait ip").success(), "ip -batch failed");
    }

    /// Add `n` ifb devices, `ifb0` to `ifb{n-1}`, in one iproute2 batch.
    pub fn add_ifbs(&self, n: usize) {
        let lines: String = (0..n).map(|i| format!("link add ifb{i} type ifb\n")).collect();
        self.ip_batch(&lines);
    }

    /// Run a command inside the namespace; returns its output.
    pub fn exec(&self, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .expect("ip netns exec")
    }

    /// The ifindexes of every link in the namespace, from iproute2.
    pub fn ifindexes(&self) -> Vec<u64> {
        let out = Command::new("ip")
            .args(["-n", &self.name, "-o", "link"])
            .output()
            .expect("ip link");
        let mut v: Vec<u64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(':').next()?.trim().parse().ok())
            .collect();
        v.sort_unstable();
        v
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running gateway; killed on drop.
pub struct Gateway {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Gateway {
    /// One sample of `/metrics`, by its full name with labels.
    pub fn metric(&self, sample: &str) -> u64 {
        self.metric_if_any(sample)
            .unwrap_or_else(|text| panic!("no sample {sample} in /metrics:\n{text}"))
    }

    /// One sample of `/metrics`, or the whole text if it has none (a
    /// counter by label appears only once it is first counted).
    pub fn metric_if_any(&self, sample: &str) -> Result<u64, String> {
        let (status, body) = http(&self.socket.display().to_string(), "GET", "/metrics", &[], b"");
        assert_eq!(status, 200);
        let text = String::from_utf8(body).expect("metrics are text");
        text.lines()
            .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
            .ok_or(text)
    }

    /// Start `serve` with `config` and wait until its socket answers and
    /// every plugin has loaded (plugins load in the background).
    pub fn start(config: &TestConfig) -> Self {
        let gw = Self::start_loading(config);
        gw.wait_loaded(60);
        gw
    }

    /// `GET /healthz` as JSON.
    pub fn health(&self) -> serde_json::Value {
        let (status, body) = http(&self.socket.display().to_string(), "GET", "/healthz", &[], b"");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("healthz JSON")
    }

    /// Wait up to `secs` until no plugin is loading.
    pub fn wait_loaded(&self, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let loading = self.health()["families_loading"]
                .as_u64()
                .expect("healthz reports families_loading");
            if loading == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "plugins still loading after {secs} s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start `serve` with `config` and wait only until its socket answers;
    /// plugins may still be loading.
    pub fn start_loading(config: &TestConfig) -> Self {
        let log = config.dir.path().join("gateway.log");
        let child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(config.path())
            .env("GENL_GATEWAY_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn gateway");
        let mut gw = Gateway {
            child,
            socket: config.socket(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = gw.child.try_wait().expect("try_wait") {
                panic!("gateway exited with {status}:\n{}", gw.log_text());
            }
            if std::os::unix::net::UnixStream::connect(&gw.socket).is_ok() {
                return gw;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gateway did not listen within 60 s:\n{}", gw.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Call `family op input` through the CLI; returns (success, JSON).
    pub fn call(&self, family: &str, op: &str, input: &str) -> (bool, serde_json::Value) {
        let out = self.cli(&["call", family, op, input]);
        let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "call {family} {op}: not JSON ({e}): {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                self.log_text()
            )
        });
        (out.status.success(), v)
    }

    /// Start `events family --count n` in the background; its stdout (one
    /// JSON line per event) is read on a thread so the pipe never fills.
    pub fn subscribe(&self, family: &str, topic: &str, count: u64) -> Subscription {
        let before = self.subscribers(family);
        let mut child = Command::new(binary())
            .args([
                "events",
                family,
                "--topic",
                topic,
                "--count",
                &count.to_string(),
                "--socket",
            ])
            .arg(&self.socket)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn events");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Live once the gateway counts it among the family's subscribers.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.subscribers(family) <= before {
            assert!(
                Instant::now() < deadline,
                "the subscription to {family} never became live"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Subscription { child, lines }
    }

    /// The event subscribers of `family` now, as the gateway reports them.
    pub fn subscribers(&self, family: &str) -> u64 {
        let (status, body) = http(
            self.socket.to_str().expect("UTF-8 socket path"),
            "GET",
            &format!("/v1/families/{family}"),
            &[],
            b"",
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).expect("family JSON");
        v["events"]["subscribers"].as_u64().expect("events.subscribers")
    }

    /// Run the CLI against this gateway.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .expect("run cli")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nlctrl family file as bundled.
pub const NLCTRL: &str = "family = \"nlctrl\"\nplugin = \"nlctrl.wasm\"\n[commands]\ndo = [3]\ndump = [3]\n";

/// A running `events` subscriber.
pub struct Subscription {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Subscription {
    /// Collect events until `done` holds for those collected so far (or
    /// the subscriber exits); panics after `secs`. Stops the subscriber.
    pub fn until(
        mut self,
        secs: u64,
        what: &str,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut events = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => events.push(
                    serde_json::from_str(&l).unwrap_or_else(|e| panic!("{what}: bad JSON line {l:?}: {e}")),
                ),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            }
            if done(&events) {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "{what}: timed out after {} events; last: {:?}",
                    events.len(),
                    events.last()
                );
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        events
    }
}

/// Wait up to `secs` for the subscriber to reach its `--count` and exit.
pub fn wait_output(sub: Subscription, secs: u64, what: &str) -> Vec<serde_json::Value> {
    sub.until(secs, what, |_| false)
}

/// One HTTP/1.1 request over a Unix socket path or a TCP `host:port`, with
/// extra headers; returns status and body. Written by hand so the tests
/// check the wire, not a client library's view of it.
pub fn http(target: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Vec<u8>) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut raw = Vec::new();
    let mut send = |s: &mut dyn ReadWrite| {
        s.write_all(req.as_bytes()).expect("write request");
        // The gateway may answer (413) and close before the body is sent,
        // so a failed body write or a reset after the answer is not fatal.
        let _ = s.write_all(body);
        let _ = s.read_to_end(&mut raw);
    };
    if target.contains('/') {
        send(&mut std::os::unix::net::UnixStream::connect(target).expect("connect unix"));
    } else {
        send(&mut std::net::TcpStream::connect(target).expect("connect tcp"));
    }
    let text = String::from_utf8_lossy(&raw);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let (head_end, head) = response_head(&raw);
    let mut payload = raw[head_end..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        payload = dechunk(&payload);
    }
    (status, payload)
}

/// Where a response's head ends in `raw` (after its blank line), and the
/// head, lower-cased.
pub fn response_head(raw: &[u8]) -> (usize, String) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers")
        + 4;
    (end, String::from_utf8_lossy(&raw[..end]).to_lowercase())
}

/// A lower-cased head's `Content-Length`.
pub fn content_length(head: &str) -> Option<usize> {
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
}

trait ReadWrite: std::io::Read + std::io::Write {}
impl<T: std::io::Read + std::io::Write> ReadWrite for T {}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(String::from_utf8_lossy(&data[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
    out
}

pub fn oracle_dir() -> PathBuf {
    std::env::var("GENL_ORACLE_DIR")
        .unwrap_or_else(|_| "/usr/local/share/genl-gateway/linux-source-6.12".into())
        .into()
}

pub fn spec_path(name: &str) -> PathBuf {
    workspace().join("ynl-specs").join(format!("{name}.yaml"))
}

/// The kernel's YNL CLI (Debian's linux-source-6.12, `tools/net/ynl`) in
/// `ns` with the bundled spec `spec`; `Ok(json)` or `Err(its error text)`.
pub fn ynl_cli(
    ns: &Netns,
    spec: &str,
    mode: &str,
    op: &str,
    input: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    let cli = oracle_dir().join("tools/net/ynl/cli.py");
    assert!(
        cli.is_file(),
        "{} is missing: run scripts/setup.sh",
        cli.display()
    );
    let spec = spec_path(spec);
    let input = input.to_string();
    let mut args = vec![
        "python3",
        cli.to_str().expect("path"),
        "--spec",
        spec.to_str().expect("path"),
        "--no-schema",
        "--output-json",
        mode,
        op,
    ];
    if input != "null" {
        args.extend(["--json", input.as_str()]);
    }
    let out = ns.exec(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)));
    }
    // A dump the kernel partly refused prints "Netlink warning" lines (the
    // extended ack) before the JSON, which is the last line.
    let json = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with(['[', '{']))
        .unwrap_or_default();
    serde_json::from_str(json).map_err(|e| format!("YNL CLI printed no JSON ({e}): {stdout}"))
}

/// Sets of names come out of the CLI in any order: sort lists of strings.
/// The 6.12 library wraps indexed-array items as `{"<index>": item}`: unwrap.
pub fn normalise(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Array(items) => {
            let mut items: Vec<serde_json::Value> = items
                .iter()
                .map(|i| match i {
                    serde_json::Value::Object(o)
                        if o.len() == 1 && o.keys().all(|k| k.parse::<u32>().is_ok()) =>
                    {
                        normalise(o.values().next().unwrap_or(&serde_json::Value::Null))
                    }
                    other => normalise(other),
                })
                .collect();
            if items.iter().all(serde_json::Value::is_string) {
                items.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
            serde_json::Value::Array(items)
        }
        serde_json::Value::Object(o) => {
            serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), normalise(v))).collect())
        }
        other => other.clone(),
    }
}

/// One generic netlink socket as the kernel's /proc/net/netlink shows it.
#[derive(Debug, Clone, Copy)]
pub struct SocketRow {
    /// A dump is in progress on it (`Dump` column).
    pub dumping: bool,
    /// Bytes queued in its receive buffer (`Rmem` column).
    pub queued: u64,
}

/// The namespace's generic netlink sockets (protocol 16) from the
/// kernel's own table, less the kernel's own (port id 0).
pub fn socket_rows(ns: &str) -> Vec<SocketRow> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "cat", "/proc/net/netlink"])
        .output()
        .expect("ip netns exec");
    assert!(
        out.status.success(),
        "reading /proc/net/netlink in the namespace failed"
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header line").split_whitespace().collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|c| *c == name)
            .unwrap_or_else(|| panic!("a {name} column"))
    };
    let (eth, pid, dump, rmem) = (column("Eth"), column("Pid"), column("Dump"), column("Rmem"));
    lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| cols.get(eth) == Some(&"16") && cols.get(pid) != Some(&"0"))
        .map(|cols| SocketRow {
            dumping: cols.get(dump) != Some(&"0"),
            queued: cols
                .get(rmem)
                .and_then(|v| v.parse().ok())
                .expect("a numeric Rmem"),
        })
        .collect()
}
