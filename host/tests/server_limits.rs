//! The API server's limits against hostile clients: connections that send
//! their headers a byte a second, a huge declared body, a body that never
//! arrives. Waits are generous bounds, never timing assertions.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use common::{Gateway, NLCTRL, TestConfig, http};
use serde_json::Value;

fn limited_gateway() -> (TestConfig, Gateway) {
    let config = TestConfig::new();
    config
        .set("api", "max_connections = 4")
        .set("api", "header_timeout_ms = 1000")
        .set("api", "body_timeout_ms = 1000")
        .set("api", "max_body_bytes = 1024")
        .family("nlctrl.toml", NLCTRL);
    let gw = Gateway::start(&config);
    (config, gw)
}

/// Send `head` (and nothing more), then read whatever the gateway answers
/// until it closes; bounded by a generous read timeout.
fn answer_to(socket: &Path, head: &[u8]) -> (u16, Value) {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(head).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    // Until the answer is complete (the JSON body ends the response).
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no answer ({e}); got so far: {:?}", String::from_utf8_lossy(&raw)),
        }
        let text = String::from_utf8_lossy(&raw);
        if let Some((_, body)) = text.split_once("\r\n\r\n")
            && serde_json::from_str::<Value>(body).is_ok()
        {
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn a_huge_declared_body_is_refused_before_reading() {
    let (_config, gw) = limited_gateway();
    let (status, v) = answer_to(
        &gw.socket,
        b"POST /v1/families/nlctrl/ops/get HTTP/1.1\r\nhost: gw\r\ncontent-length: 10000000000\r\n\r\n",
    );
    assert_eq!(status, 413, "{v}");
    assert_eq!(v["error"]["code"], "body-too-large");
}

#[test]
fn a_body_that_never_arrives_is_cut_off() {
    let (_config, gw) = limited_gateway();
    let (status, v) = answer_to(
        &gw.socket,
        b"POST /v1/families/nlctrl/ops/get HTTP/1.1\r\nhost: gw\r\ncontent-length: 100\r\n\r\n{\"name\"",
    );
    assert_eq!(status, 408, "{v}");
    assert_eq!(v["error"]["code"], "body-timeout");
}

#[test]
fn slow_header_connections_cannot_starve_a_normal_client() {
    let (_config, gw) = limited_gateway();
    // Three times the cap, each sending its headers a byte a second.
    let slow: Vec<_> = (0..12)
        .map(|_| {
            let mut s = UnixStream::connect(&gw.socket).unwrap();
            std::thread::spawn(move || {
                let head = b"GET /healthz HTTP/1.1\r\nhost: gw\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
                let mut closed_by_gateway = false;
                for b in head {
                    if s.write_all(&[*b]).is_err() {
                        closed_by_gateway = true;
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
                closed_by_gateway
            })
        })
        .collect();
    // A normal client is served, once the slow ones time out.
    let sock = gw.socket.to_str().unwrap().to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(http(&sock, "POST", "/v1/families/nlctrl/ops/list", &[], b"").0);
    });
    let status = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("a normal client was not served within 60 s");
    assert_eq!(status, 200);
    // The gateway closed the slow connections (the header-read timeout),
    // rather than waiting for their ~60 s of headers.
    for t in slow {
        assert!(t.join().unwrap(), "a slow connection was never closed");
    }
    let log = gw.log_text();
    assert!(log.contains("API connection limit reached"), "{log}");
}

/// One answer on a keep-alive connection (its body by `Content-Length`):
/// its status.
fn read_answer(s: &mut UnixStream) -> u16 {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).expect("an answer"), 1, "closed before its head");
        raw.push(byte[0]);
    }
    let (_, head) = common::response_head(&raw);
    let mut body = vec![0u8; common::content_length(&head).expect("a Content-Length")];
    s.read_exact(&mut body).expect("the whole body");
    head.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("a status")
}

/// A client that asks for a large answer and never reads it is closed once
/// the answer has waited `write_timeout_ms` on it, so clients that stop
/// reading cannot hold every connection slot (an adversarial probe held
/// all 512 with the OpenAPI document and locked every other client out).
#[test]
fn clients_that_never_read_their_answers_are_closed_and_others_are_served() {
    let ns = common::Netns::new("stalled");
    let config = TestConfig::new();
    config
        .netns(&ns)
        .set("api", "max_connections = 4")
        .set("api", "write_timeout_ms = 1000")
        .family("nlctrl.toml", NLCTRL)
        // chaos answers `big-output` with a string as long as asked.
        .family(
            "chaos.toml",
            "family = \"netdev\"\nplugin = \"chaos.wasm\"\n[limits]\noutput_kib = 4096\ncall_timeout_ms = 60000\n",
        );
    let gw = Gateway::start(&config);
    // Every slot: a request for a 2 MiB answer (far more than a Unix
    // socket's buffers hold), never read.
    let body = r#"{"bytes": 2097152}"#;
    let stalled: Vec<UnixStream> = (0..4)
        .map(|_| {
            let mut s = UnixStream::connect(&gw.socket).unwrap();
            let req = format!(
                "POST /v1/families/netdev/ops/big-output HTTP/1.1\r\nhost: gw\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).unwrap();
            s
        })
        .collect();
    // Each answer has started: its head is read, and then nothing more,
    // so from here on every slot holds an answer no one reads.
    let mut stalled: Vec<(UnixStream, Vec<u8>)> = stalled
        .into_iter()
        .map(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let mut raw = Vec::new();
            while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                assert_eq!(s.read(&mut byte).expect("the answer started within 60 s"), 1);
                raw.push(byte[0]);
            }
            (s, raw)
        })
        .collect();
    // As many normal clients as there are slots are all served, each
    // keeping its connection open until all are: slots were freed.
    let (answered, statuses) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = std::sync::Arc::new(std::sync::Mutex::new(released));
    for _ in 0..4 {
        let (sock, answered, released) = (gw.socket.clone(), answered.clone(), released.clone());
        std::thread::spawn(move || {
            let mut c = UnixStream::connect(&sock).unwrap();
            c.write_all(b"GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n").unwrap();
            let _ = answered.send(read_answer(&mut c));
            // Hold the connection (and its slot) until the test is done.
            let _ = released.lock().map(|r| r.recv());
        });
    }
    for _ in 0..4 {
        let status = statuses
            .recv_timeout(Duration::from_secs(60))
            .expect("normal clients were not all served at once within 60 s");
        assert_eq!(status, 200);
    }
    drop(release);
    // Each stalled client got part of its answer, then the end: the
    // gateway closed every stalled connection mid-answer.
    for (s, raw) in &mut stalled {
        s.read_to_end(raw)
            .expect("the gateway closed the connection (not a read timeout)");
        let (head_end, head) = common::response_head(raw);
        let length = common::content_length(&head).expect("the answer's length");
        assert!(
            raw.len() - head_end < length,
            "the whole answer arrived: {} of {length} bytes",
            raw.len() - head_end
        );
    }
    let log = gw.log_text();
    assert!(log.contains("read nothing of its answer"), "{log}");
    // Each stalled client is counted once, on the listener it used.
    assert_eq!(
        gw.metric("genl_gateway_api_connections_closed_not_reading_total{listener=\"unix\"}"),
        stalled.len() as u64
    );
}

/// A client holding connections to the Unix socket (a path) or loopback
/// TCP (`127.0.0.1:PORT`) as a given local user: a python3 process under
/// that uid, driven line by line (`open N`: open N
/// connections, ask each `/healthz` and print its status and error code,
/// keeping those answered 200 open; `close`: close one kept).
struct UserClient {
    child: std::process::Child,
    input: std::process::ChildStdin,
    output: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

const USER_CLIENT: &str = r#"
import json, socket, sys
held = []
def ask(target):
    if target.startswith("/"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(30)
        s.connect(target)
    else:
        host, port = target.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(b"GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n")
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = s.recv(4096)
        if not chunk:
            # Closed unanswered (past the gateway's refusal bound): status 0.
            return s, 0, None
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    length = 0
    for l in lines[1:]:
        k, _, v = l.partition(":")
        if k.strip().lower() == "content-length":
            length = int(v)
    while len(body) < length:
        chunk = s.recv(4096)
        if not chunk:
            break
        body += chunk
    status = int(lines[0].split()[1])
    code = None if status == 200 else json.loads(body)["error"]["code"]
    return s, status, code
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "open":
        for _ in range(int(cmd[1])):
            s, status, code = ask(sys.argv[1])
            if status == 200:
                held.append(s)
            else:
                s.close()
            print(json.dumps({"status": status, "code": code}), flush=True)
    elif cmd[0] == "close":
        held.pop().close()
        print(json.dumps({"closed": True}), flush=True)
"#;

impl UserClient {
    fn start(uid: u32, target: impl AsRef<std::ffi::OsStr>) -> Self {
        use std::io::BufRead;
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("python3")
            .args(["-c", USER_CLIENT])
            .arg(target)
            .uid(uid)
            .gid(uid)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 (installed by scripts/setup.sh) runs as another user; the tests run as root");
        let input = child.stdin.take().expect("piped stdin");
        let output = std::io::BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Self { child, input, output }
    }

    /// Open `n` connections; the (status, error code) of each answer.
    fn open(&mut self, n: usize) -> Vec<(u64, Option<String>)> {
        writeln!(self.input, "open {n}").unwrap();
        (0..n)
            .map(|_| {
                let line = self.output.next().expect("an answer line").unwrap();
                let v: Value = serde_json::from_str(&line).unwrap();
                (
                    v["status"].as_u64().unwrap(),
                    v["code"].as_str().map(str::to_owned),
                )
            })
            .collect()
    }

    fn close_one(&mut self) {
        writeln!(self.input, "close").unwrap();
        let line = self.output.next().expect("a line").unwrap();
        assert!(line.contains("closed"), "{line}");
    }
}

/// A gateway whose Unix socket other users may reach, with `max`
/// connections and `per_user` of them per user; idle keep-alive
/// connections stay open for the whole test.
fn gateway_for_other_users(max: usize, per_user: usize) -> (TestConfig, Gateway) {
    use std::os::unix::fs::PermissionsExt;
    let config = TestConfig::new();
    config
        .set("api", &format!("max_connections = {max}"))
        .set("api", &format!("max_connections_per_user = {per_user}"))
        .set("api", "header_timeout_ms = 120000")
        .set("api", "socket_mode = \"0666\"")
        .family("nlctrl.toml", NLCTRL);
    // Other users reach the socket through the test's directory.
    std::fs::set_permissions(config.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let gw = Gateway::start(&config);
    (config, gw)
}

impl Drop for UserClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One local user cannot hold every connection of the Unix socket (an
/// adversarial probe held all 512 with idle event streams): past its share
/// its connections are answered 429 `too-many-connections`, while another
/// user, and root, are still served, and a slot it gives back is its again.
#[test]
fn one_local_user_cannot_hold_every_connection_of_the_unix_socket() {
    let (_config, gw) = gateway_for_other_users(6, 2);
    let ok = (200, None);
    let refused = (429, Some("too-many-connections".to_owned()));

    let mut first = UserClient::start(60_001, &gw.socket);
    assert_eq!(
        first.open(4),
        [ok.clone(), ok.clone(), refused.clone(), refused.clone()]
    );
    // Another user has a share of its own, and root is not counted: 2 + 2
    // + 1 fill the listener's 6 slots but one.
    let mut second = UserClient::start(60_002, &gw.socket);
    assert_eq!(second.open(2), [ok.clone(), ok.clone()]);
    let roots: Vec<UnixStream> = (0..1)
        .map(|_| {
            let mut c = UnixStream::connect(&gw.socket).unwrap();
            c.write_all(b"GET /healthz HTTP/1.1\r\nhost: gw\r\n\r\n").unwrap();
            assert_eq!(read_answer(&mut c), 200);
            c
        })
        .collect();
    // The first user's refused connections took none of the listener's
    // slots: the last one is still free, for root's `/metrics` below.
    assert_eq!(
        gw.metric("genl_gateway_api_connections_refused_total{listener=\"unix\"}"),
        2
    );
    // A connection the first user closes is its to open again, once the
    // gateway has seen it close.
    first.close_one();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = first.open(1).remove(0);
        if answer == ok {
            break;
        }
        assert_eq!(answer, refused);
        assert!(
            std::time::Instant::now() < deadline,
            "the first user's closed connection was not given back within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(roots);
}

/// A user with a range of subordinate uids (rootless containers) counts as
/// that many users, and a probe's four filled every slot, root's too. A
/// few slots are kept for root, so the operator can always connect.
#[test]
fn root_can_connect_when_other_users_hold_every_other_slot() {
    // A sixteenth of 16 kept for root: one slot.
    let (_config, gw) = gateway_for_other_users(16, 8);
    let ok = (200, None);
    let mut first = UserClient::start(60_011, &gw.socket);
    assert_eq!(first.open(8), vec![ok.clone(); 8]);
    let mut second = UserClient::start(60_012, &gw.socket);
    let answers = second.open(8);
    assert_eq!(answers[..7], vec![ok.clone(); 7]);
    assert_eq!(answers[7], (429, Some("too-many-connections".to_owned())));
    // Root takes the slot kept for it.
    let (status, _) = http(&gw.socket.display().to_string(), "GET", "/healthz", &[], b"");
    assert_eq!(status, 200);
    assert_eq!(
        gw.metric("genl_gateway_api_connections_refused_total{listener=\"unix\"}"),
        1
    );
}

/// Every event of a family is matched against each subscriber's topics in
/// the fan-out all families share: a probe's 128 subscriptions naming
/// 32,700 topics each delayed another user's event by 58 s. A subscription
/// names at most 64.
#[test]
fn a_subscription_names_at_most_64_topics() {
    let (_config, gw) = limited_gateway();
    let socket = gw.socket.display().to_string();
    let topics = |n: usize| (0..n).map(|i| format!("t{i}")).collect::<Vec<_>>().join(",");
    let (status, body) = http(
        &socket,
        "GET",
        &format!("/v1/families/nlctrl/events?topic={}", topics(65)),
        &[],
        b"",
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad-query")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than 64 topics"),
        "{v}"
    );
    // The same topic many times is one topic.
    let same = vec!["t"; 1000].join(",");
    let mut s = UnixStream::connect(&gw.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET /v1/families/nlctrl/events?topic={same} HTTP/1.1\r\nhost: gw\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(s.read(&mut byte).expect("the stream's head"), 1);
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
}

/// Loopback TCP clients get the same share per user as the Unix socket's
/// (the kernel's socket diagnostics name a client's owner): a probe held
/// the TCP listener with 3,500 slow-header connections and no token.
#[test]
fn one_local_user_cannot_hold_every_connection_of_the_tcp_listener() {
    let port = common::free_port();
    let config = TestConfig::new();
    config
        .set("api", "max_connections = 6")
        .set("api", "max_connections_per_user = 2")
        .set("api", "header_timeout_ms = 120000")
        // Last: the tokens' tables end the [api] section.
        .set(
            "api",
            &format!(
                "tcp = \"127.0.0.1:{port}\"\n[[api.tokens]]\nname = \"admin\"\ntoken = \"admin-token-limits-0001\"\naccess = \"admin\""
            ),
        )
        .family("nlctrl.toml", NLCTRL);
    let gw = Gateway::start(&config);
    let tcp = format!("127.0.0.1:{port}");
    let ok = (200, None);
    let mut first = UserClient::start(60_021, &tcp);
    assert_eq!(
        first.open(3),
        [
            ok.clone(),
            ok.clone(),
            (429, Some("too-many-connections".to_owned()))
        ]
    );
    let mut second = UserClient::start(60_022, &tcp);
    assert_eq!(second.open(2), [ok.clone(), ok.clone()]);
    // Root, on the slot left.
    assert_eq!(http(&tcp, "GET", "/healthz", &[], b"").0, 200);
    assert_eq!(
        gw.metric("genl_gateway_api_connections_refused_total{listener=\"tcp\"}"),
        1
    );
}
