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
}
