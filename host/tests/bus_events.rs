//! Plugin events to JetStream, none lost (issue 16, item 2), against real
//! NATS servers: a three-node cluster on loopback with a replicated stream,
//! five gateways as five hosts (each in its own network namespace with its
//! own ifb devices). Expected values come from outside the gateway: the
//! devices iproute2 made (`ip -j link`), the stream as the NATS server
//! returns it message by message, and what each host's local SSE
//! subscriber saw.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::nats::NatsCluster;
use common::{Gateway, Netns, Subscription, TestConfig};
use serde_json::Value;

/// netdev with its `mgmt` group joined and only device adds and deletes
/// sent to the bus (its `dev` and `dev-change-ntf` topics stay local).
const NETDEV_BUS: &str = "family = \"netdev\"\nplugin = \"netdev.wasm\"\ngroups = [\"mgmt\"]\n\
[commands]\ndo = [1]\ndump = [1]\n[bus]\ntopics = [\"dev-add-ntf\", \"dev-del-ntf\"]\n";
const TOPICS: &str = "dev-add-ntf,dev-del-ntf";
const STREAM: &str = "GENL_EVENTS";

fn wait_for(secs: u64, what: &str, mut done: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not after {secs} s\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn bus_state(gw: &Gateway) -> String {
    gw.health()["bus"]["state"]
        .as_str()
        .unwrap_or("absent")
        .to_owned()
}

/// One host: a namespace, a config and (while running) its gateway.
struct Host {
    name: String,
    ns: Netns,
    config: TestConfig,
    gw: Option<Gateway>,
}

impl Host {
    fn new(nats: &NatsCluster, name: &str, events: &[&str]) -> Self {
        let ns = Netns::new(name);
        let config = TestConfig::new();
        config
            .netns(&ns)
            .family("netdev.toml", NETDEV_BUS)
            .set("bus", &nats.urls_toml())
            .set("bus", &format!("host = \"{name}\""))
            .set("bus", "max_reconnect_delay_ms = 500");
        for line in events {
            config.set("bus.events", line);
        }
        let gw = Some(Gateway::start(&config));
        Host {
            name: name.to_owned(),
            ns,
            config,
            gw,
        }
    }

    fn gw(&self) -> &Gateway {
        self.gw.as_ref().expect("the host's gateway runs")
    }

    /// Create `n` ifb devices, then delete them; returns their ifindexes
    /// as iproute2 reported them, in creation order.
    fn churn(&self, tag: &str, n: usize) -> Vec<u64> {
        let names: Vec<String> = (0..n).map(|i| format!("ev{tag}{i}")).collect();
        let adds: String = names.iter().map(|d| format!("link add {d} type ifb\n")).collect();
        self.ns.ip_batch(&adds);
        let out = self.ns.exec(&["ip", "-j", "link", "show", "type", "ifb"]);
        let links: Vec<Value> = serde_json::from_slice(&out.stdout).expect("ip -j link");
        let by_name: BTreeMap<&str, u64> = links
            .iter()
            .filter_map(|l| Some((l["ifname"].as_str()?, l["ifindex"].as_u64()?)))
            .collect();
        let indexes: Vec<u64> = names
            .iter()
            .map(|d| {
                *by_name
                    .get(d.as_str())
                    .unwrap_or_else(|| panic!("ip does not list {d}"))
            })
            .collect();
        let dels: String = names.iter().map(|d| format!("link del {d}\n")).collect();
        self.ns.ip_batch(&dels);
        indexes
    }

    fn subscribe(&self, count: u64) -> Subscription {
        self.gw().subscribe("netdev", TOPICS, count)
    }
}

/// What churning `indexes` must publish: each device's add, then each
/// device's delete.
fn expected(indexes: &[u64]) -> Vec<(String, u64)> {
    let adds = indexes.iter().map(|&i| ("dev-add-ntf".to_owned(), i));
    let dels = indexes.iter().map(|&i| ("dev-del-ntf".to_owned(), i));
    adds.chain(dels).collect()
}

/// A message of the stream as the server returns it.
#[derive(Debug)]
struct Stored {
    stream_seq: u64,
    subject: String,
    headers: BTreeMap<String, String>,
    payload: Value,
}

/// Every message of the stream, read one by one by stream sequence.
fn read_stream(urls: &[String]) -> (Vec<Stored>, usize) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = async_nats::ConnectOptions::new()
            .connect(urls.to_vec())
            .await
            .expect("connect to NATS");
        let js = async_nats::jetstream::new(client);
        let stream = js.get_stream(STREAM).await.expect("the events stream exists");
        let info = stream.get_info().await.expect("stream info");
        let mut out = Vec::new();
        for seq in info.state.first_sequence..=info.state.last_sequence {
            let m = stream.get_raw_message(seq).await.expect("get message");
            let headers = m
                .headers
                .iter()
                .map(|(k, v)| {
                    let v = v.first().map(|v| v.as_str().to_owned()).unwrap_or_default();
                    (k.to_string(), v)
                })
                .collect();
            out.push(Stored {
                stream_seq: m.sequence,
                subject: m.subject.to_string(),
                headers,
                payload: serde_json::from_slice(&m.payload).expect("payload is JSON"),
            });
        }
        (out, info.config.num_replicas)
    })
}

/// The stream's messages of `host`, in stream order.
fn of_host<'a>(stored: &'a [Stored], host: &str) -> Vec<&'a Stored> {
    let prefix = format!("genl.{host}.");
    stored.iter().filter(|m| m.subject.starts_with(&prefix)).collect()
}

fn ifindex(payload: &Value) -> u64 {
    payload["ifindex"]
        .as_u64()
        .unwrap_or_else(|| panic!("no ifindex in {payload}"))
}

#[test]
fn every_event_of_every_host_reaches_the_replicated_stream_once_and_in_order() {
    const N: usize = 8;
    let mut nats = NatsCluster::start(3, "");
    let common_events = ["replicas = 3", "ack_timeout_ms = 2000"];
    let mut hosts: Vec<Host> = (0..4)
        .map(|i| Host::new(&nats, &format!("h{i}"), &common_events))
        .collect();
    // h4 spools: it is restarted while the whole bus is down.
    let mut spooled = common_events.to_vec();
    spooled.push("spool_dir = \"spool\"");
    hosts.push(Host::new(&nats, "h4", &spooled));
    for h in &hosts {
        wait_for(
            60,
            &format!("{} connected", h.name),
            || bus_state(h.gw()) == "connected",
            || h.gw().log_text(),
        );
    }

    // Each host's local subscriber; h4's first one ends at its restart.
    let mut subs: Vec<Subscription> = hosts[..4].iter().map(|h| h.subscribe(6 * N as u64)).collect();
    let h4_first = hosts[4].subscribe(4 * N as u64);
    let mut want: Vec<Vec<(String, u64)>> = vec![Vec::new(); hosts.len()];

    // Phase 1: one NATS node crashes and comes back while hosts churn.
    nats.kill(0);
    for (i, h) in hosts.iter().enumerate() {
        want[i].extend(expected(&h.churn("a", N)));
    }
    nats.restart(0);

    // Phase 2: the whole bus is down for 10 s; h4 is restarted meanwhile.
    let down = Instant::now();
    nats.kill_all();
    for (i, h) in hosts.iter().enumerate() {
        want[i].extend(expected(&h.churn("b", N)));
    }
    let h4_seen_first = common::wait_output(h4_first, 60, "h4's subscriber before its restart");
    assert_eq!(h4_seen_first.len(), 4 * N);
    {
        let h4 = &hosts[4];
        // Stopped only once its publisher holds (and spooled) every event
        // its subscriber saw, so the restart tests the spool, not a race.
        wait_for(
            60,
            "h4 queued every event",
            || h4.gw().metric("genl_gateway_bus_events_queued_total") == 4 * N as u64,
            || h4.gw().log_text(),
        );
        assert!(h4.gw().metric("genl_gateway_bus_events_buffered") >= N as u64);
    }
    hosts[4].gw = None;
    hosts[4].gw = Some(Gateway::start(&hosts[4].config));
    let restarted = hosts[4].gw();
    assert!(
        restarted.metric("genl_gateway_bus_events_buffered") >= 2 * N as u64,
        "the restarted gateway must hold phase 2's spooled events:\n{}",
        restarted.log_text()
    );
    assert!(restarted.log_text().contains("spooled before the restart"));
    let h4_second = hosts[4].subscribe(2 * N as u64);
    std::thread::sleep(Duration::from_secs(10).saturating_sub(down.elapsed()));
    nats.restart_all();

    // Phase 3: the bus is back; hosts churn while their backlog drains.
    for (i, h) in hosts.iter().enumerate() {
        want[i].extend(expected(&h.churn("c", N)));
    }

    let mut seen: Vec<Vec<Value>> = subs
        .drain(..)
        .enumerate()
        .map(|(i, s)| common::wait_output(s, 120, &format!("h{i}'s subscriber")))
        .collect();
    let mut h4_seen = h4_seen_first;
    h4_seen.extend(common::wait_output(h4_second, 120, "h4's second subscriber"));
    seen.push(h4_seen);

    for h in &hosts {
        wait_for(
            180,
            &format!("{}'s events all acknowledged", h.name),
            || h.gw().metric("genl_gateway_bus_events_buffered") == 0,
            || format!("{}\n{}", h.gw().log_text(), nats.log(0)),
        );
        assert_eq!(
            h.gw().metric("genl_gateway_bus_events_lost_total"),
            0,
            "{}",
            h.name
        );
        eprintln!(
            "{}: retries {}, duplicates dropped by id {}",
            h.name,
            h.gw().metric("genl_gateway_bus_events_retries_total"),
            h.gw().metric("genl_gateway_bus_events_duplicates_total")
        );
    }

    let (stored, replicas) = read_stream(&nats.urls());
    assert_eq!(replicas, 3, "the stream is replicated on the three nodes");
    assert_eq!(
        stored.len(),
        hosts.len() * 6 * N,
        "every event once, nothing else"
    );
    for (i, h) in hosts.iter().enumerate() {
        let mine = of_host(&stored, &h.name);
        // In order, each once: the per-host sequence counts 1, 2, 3, ...
        // in one epoch (h4's spool keeps its epoch across the restart).
        let seqs: Vec<u64> = mine
            .iter()
            .map(|m| m.headers["Genl-Seq"].parse().expect("Genl-Seq"))
            .collect();
        assert_eq!(seqs, (1..=(6 * N) as u64).collect::<Vec<_>>(), "{}", h.name);
        let epochs: std::collections::BTreeSet<&str> =
            mine.iter().map(|m| m.headers["Genl-Epoch"].as_str()).collect();
        assert_eq!(epochs.len(), 1, "{}: {epochs:?}", h.name);
        // What iproute2 did, in the order it did it.
        let got: Vec<(String, u64)> = mine
            .iter()
            .map(|m| (m.headers["Genl-Topic"].clone(), ifindex(&m.payload)))
            .collect();
        assert_eq!(got, want[i], "{}", h.name);
        for m in &mine {
            let topic = &m.headers["Genl-Topic"];
            assert_eq!(m.subject, format!("genl.{}.netdev.{topic}", h.name));
            assert_eq!(m.headers["Genl-Host"], h.name);
            assert_eq!(m.headers["Genl-Family"], "netdev");
        }
        // What the host's local subscriber saw, in the same order.
        let local: Vec<(&str, &Value)> = seen[i]
            .iter()
            .map(|e| (e["topic"].as_str().unwrap_or_default(), &e["payload"]))
            .collect();
        let on_bus: Vec<(&str, &Value)> = mine
            .iter()
            .map(|m| (m.headers["Genl-Topic"].as_str(), &m.payload))
            .collect();
        assert_eq!(local, on_bus, "{}", h.name);
    }
    // Stream sequences are the stream's own order; nothing sits between.
    assert!(stored.windows(2).all(|w| w[0].stream_seq < w[1].stream_seq));

    // `fleet events` replays one host's events as the stream holds them.
    let out = std::process::Command::new(common::binary())
        .args(["fleet", "events", "netdev", "--host", "h1", "--count"])
        .arg((6 * N).to_string())
        .arg("--config")
        .arg(hosts[1].config.path())
        .output()
        .expect("run fleet events");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let mine = of_host(&stored, "h1");
    assert_eq!(lines.len(), mine.len());
    for (line, m) in lines.iter().zip(mine) {
        assert_eq!(line["host"], "h1");
        assert_eq!(line["family"], "netdev");
        assert_eq!(line["topic"].as_str(), Some(m.headers["Genl-Topic"].as_str()));
        assert_eq!(line["sequence"].to_string(), m.headers["Genl-Seq"]);
        assert_eq!(line["stream_sequence"], m.stream_seq);
        assert_eq!(line["payload"], m.payload);
    }
}

#[test]
fn an_overflow_beyond_the_buffer_is_a_counted_gap_in_the_stream() {
    const DEVICES: usize = 10;
    const BUFFER: usize = 5;
    let mut nats = NatsCluster::start(1, "");
    let h = Host::new(&nats, "solo", &["buffer_events = 5"]);
    let gw = h.gw();
    wait_for(60, "connected", || bus_state(gw) == "connected", || gw.log_text());
    // The stream exists before the bus goes away.
    wait_for(
        60,
        "stream created",
        || gw.log_text().contains("created the events stream"),
        || gw.log_text(),
    );
    nats.kill_all();
    wait_for(
        60,
        "disconnected",
        || bus_state(gw) == "disconnected",
        || gw.log_text(),
    );

    let sub = h.subscribe(2 * DEVICES as u64);
    let indexes = h.churn("o", DEVICES);
    let seen = common::wait_output(sub, 60, "the local subscriber");
    assert_eq!(seen.len(), 2 * DEVICES, "SSE is not limited by the bus buffer");
    let lost = (seen.len() - BUFFER) as u64;
    wait_for(
        60,
        "overflow counted",
        || gw.metric("genl_gateway_bus_events_lost_total") == lost,
        || gw.log_text(),
    );
    assert!(gw.log_text().contains("events buffer is full"));

    nats.restart_all();
    wait_for(
        120,
        "backlog and gap published",
        || {
            gw.metric("genl_gateway_bus_events_buffered") == 0
                && gw.metric("genl_gateway_bus_events_gaps_total") == 1
        },
        || gw.log_text(),
    );
    let (stored, _) = read_stream(&nats.urls());
    assert_eq!(stored.len(), BUFFER + 1, "{stored:#?}");
    let first: Vec<(String, u64)> = stored[..BUFFER]
        .iter()
        .map(|m| (m.headers["Genl-Topic"].clone(), ifindex(&m.payload)))
        .collect();
    assert_eq!(first, expected(&indexes)[..BUFFER]);
    let gap = &stored[BUFFER];
    assert_eq!(gap.subject, "genl.solo.netdev._gap");
    assert_eq!(gap.payload["lost"], lost);
    assert_eq!(gap.payload["reason"], "buffer-full");
    assert_eq!(gap.headers["Genl-Seq"], (BUFFER + 1).to_string());

    // `fleet events --since SEQ` starts at that stream sequence.
    let out = std::process::Command::new(common::binary())
        .args(["fleet", "events", "netdev", "--since"])
        .arg(gap.stream_seq.to_string())
        .args(["--count", "1", "--config"])
        .arg(h.config.path())
        .output()
        .expect("run fleet events");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(line["topic"], "_gap");
    assert_eq!(line["payload"]["lost"], lost);
}

/// A TCP proxy to one NATS server that, once, forwards the first complete
/// event publish (`HPUB genl.`) to the server and then cuts the
/// connection before the server's acknowledgement can come back: the
/// event is stored, its acknowledgement lost. Later connections pass.
fn ack_losing_proxy(server_port: u16) -> u16 {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let port = listener.local_addr().expect("proxy address").port();
    let tripped = Arc::new(AtomicBool::new(false));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let Ok(mut server) = TcpStream::connect(("127.0.0.1", server_port)) else {
                continue;
            };
            let cut = Arc::new(AtomicBool::new(false));
            let (mut s_read, mut c_write) = (
                server.try_clone().expect("clone"),
                client.try_clone().expect("clone"),
            );
            let cut_back = cut.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                while let Ok(n) = s_read.read(&mut buf) {
                    // After the cut the acknowledgement is swallowed.
                    if n == 0 || cut_back.load(Ordering::SeqCst) || c_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
            let tripped = tripped.clone();
            std::thread::spawn(move || {
                let mut pending: Vec<u8> = Vec::new();
                let mut buf = [0u8; 16384];
                loop {
                    let n = match client.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if tripped.load(Ordering::SeqCst) {
                        if server.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        continue;
                    }
                    pending.extend_from_slice(&buf[..n]);
                    let Some(start) = find(&pending, b"HPUB genl.") else {
                        if server.write_all(&pending).is_err() {
                            break;
                        }
                        pending.clear();
                        continue;
                    };
                    // Forward up to the end of that whole message, then cut.
                    let Some(line_end) = find(&pending[start..], b"\r\n").map(|i| start + i + 2) else {
                        continue;
                    };
                    let line = String::from_utf8_lossy(&pending[start..line_end - 2]).into_owned();
                    let total: usize = line
                        .split_whitespace()
                        .last()
                        .and_then(|t| t.parse().ok())
                        .expect("HPUB total length");
                    let end = line_end + total + 2;
                    if pending.len() < end {
                        continue;
                    }
                    tripped.store(true, Ordering::SeqCst);
                    cut.store(true, Ordering::SeqCst);
                    let _ = server.write_all(&pending[..end]);
                    let _ = client.shutdown(Shutdown::Both);
                    // Let the server read and store it before it sees the end.
                    std::thread::sleep(Duration::from_millis(500));
                    let _ = server.shutdown(Shutdown::Write);
                    std::thread::sleep(Duration::from_millis(500));
                    break;
                }
            });
        }
    });
    port
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn a_retried_publish_whose_acknowledgement_was_lost_is_stored_once() {
    let nats = NatsCluster::start(1, "");
    let proxy = ack_losing_proxy(nats.nodes[0].client_port);
    let ns = Netns::new("dedup");
    let config = TestConfig::new();
    config
        .netns(&ns)
        .family("netdev.toml", NETDEV_BUS)
        .set("bus", &format!("urls = [\"nats://127.0.0.1:{proxy}\"]"))
        .set("bus", "host = \"dd\"")
        .set("bus", "max_reconnect_delay_ms = 200")
        .set("bus.events", "ack_timeout_ms = 1000");
    let h = Host {
        name: "dd".into(),
        gw: Some(Gateway::start(&config)),
        ns,
        config,
    };
    let gw = h.gw();
    wait_for(
        60,
        "stream created",
        || gw.log_text().contains("created the events stream"),
        || gw.log_text(),
    );
    let indexes = h.churn("d", 1);
    wait_for(
        60,
        "both events acknowledged",
        || gw.metric("genl_gateway_bus_events_acked_total") == 2,
        || gw.log_text(),
    );
    // The first publish was stored and its acknowledgement lost: the retry
    // was acknowledged as a duplicate (JetStream's word, not ours).
    assert!(gw.metric("genl_gateway_bus_events_retries_total") >= 1);
    assert_eq!(gw.metric("genl_gateway_bus_events_duplicates_total"), 1);
    let (stored, _) = read_stream(&nats.urls());
    let got: Vec<(String, u64)> = stored
        .iter()
        .map(|m| (m.headers["Genl-Topic"].clone(), ifindex(&m.payload)))
        .collect();
    assert_eq!(got, expected(&indexes), "each event once");
}

#[test]
fn a_kernel_overrun_is_marked_in_the_stream_like_an_overflow() {
    const DEVICES: usize = 500;
    let nats = NatsCluster::start(1, "");
    let ns = Netns::new("kover");
    let config = TestConfig::new();
    // The smallest receive buffer the kernel allows: a burst overruns it.
    config
        .netns(&ns)
        .family("netdev.toml", &format!("receive_buffer_kib = 1\n{NETDEV_BUS}"))
        .set("bus", &nats.urls_toml())
        .set("bus", "host = \"ko\"");
    let gw = Gateway::start(&config);
    wait_for(
        60,
        "stream created",
        || gw.log_text().contains("created the events stream"),
        || gw.log_text(),
    );
    let batch: String = (0..DEVICES)
        .map(|i| format!("link add ko{i} type ifb\n"))
        .collect();
    ns.ip_batch(&batch);
    // iproute2 made every device; if the stream has fewer adds, the kernel
    // dropped some, and then a marker must say so.
    assert_eq!(ns.ifindexes().len(), DEVICES + 1);
    let mut stored = Vec::new();
    wait_for(
        60,
        "a kernel-overrun gap in the stream",
        || {
            if gw.metric("genl_gateway_bus_events_buffered") != 0 {
                return false;
            }
            stored = read_stream(&nats.urls()).0;
            stored.iter().any(|m| m.subject == "genl.ko.netdev._gap")
        },
        || gw.log_text(),
    );
    let adds = stored
        .iter()
        .filter(|m| m.subject == "genl.ko.netdev.dev-add-ntf")
        .count();
    assert!(
        adds < DEVICES,
        "the burst was expected to overrun a 1 KiB buffer ({adds} adds)"
    );
    let gap = stored
        .iter()
        .find(|m| m.subject == "genl.ko.netdev._gap")
        .expect("gap marker");
    assert_eq!(gap.payload["reason"], "kernel-overrun");
    assert_eq!(
        gap.payload["lost"],
        Value::Null,
        "the kernel does not say how many"
    );
    assert_eq!(
        gw.metric("genl_gateway_bus_events_lost_total"),
        0,
        "nothing lost by the buffer"
    );
}
