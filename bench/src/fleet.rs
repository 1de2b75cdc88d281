//! Fleet: events per second from one gateway into JetStream (each one
//! acknowledged) against the local SSE rate, measured side by side on the
//! same burst of kernel events (netdev device adds), and the rate at which
//! it drains a backlog the bus was down for.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{Netns, Proc, config, follow_sse, sh, spawn_gateway};
use crate::stats::Row;

/// GET `path` on the gateway's socket; the body.
fn get(sock: &Path, path: &str) -> String {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) else {
        return String::new();
    };
    if write!(s, "GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").is_err() {
        return String::new();
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body
}

fn metric(sock: &Path, name: &str) -> u64 {
    get(sock, "/metrics")
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

/// A free TCP port on loopback.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Debian's `nats-server` on loopback `port`, with JetStream storing in
/// `store` if given, its log in `log`; returned once it listens.
pub(crate) fn start_nats(port: u16, store: Option<&Path>, log: &Path) -> anyhow::Result<Proc> {
    let mut cmd = Command::new("nats-server");
    cmd.args(["-a", "127.0.0.1", "-p", &port.to_string()]);
    if let Some(store) = store {
        cmd.arg("-js").arg("-sd").arg(store);
    }
    let p = Proc(
        cmd.stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .context("nats-server (scripts/setup.sh installs Debian's nats-server)")?,
    );
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(30) {
            bail!("nats-server did not listen within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(p)
}

fn ip_batch(ns: &Netns, batch: &str) -> anyhow::Result<()> {
    let mut ip = Command::new("ip")
        .args(["-n", &ns.0, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()?;
    ip.stdin.take().context("stdin")?.write_all(batch.as_bytes())?;
    if !ip.wait()?.success() {
        bail!("ip -batch failed");
    }
    Ok(())
}

/// The events rows: local SSE and JetStream, one burst.
pub(crate) fn events_to_jetstream(
    o: &super::Opts,
    rt: &tokio::runtime::Runtime,
    tmp: &Path,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let devices = if o.quick { 500 } else { 2000 };
    let devices = devices as u64;
    eprintln!("fleet: netdev events to SSE and to JetStream");
    let port = free_port()?;
    let store = tmp.join("nats-js");
    let nats = start_nats(port, Some(&store), &tmp.join("nats.log"))?;
    let name = format!("genl-bench-fleet-{}", std::process::id());
    sh("ip", &["netns", "add", &name])?;
    let ns = Netns(name);
    let cfg = config(
        &tmp.join("fleet"),
        &o.plugins,
        Some(&ns.0),
        &[(
            "netdev.toml",
            "family = \"netdev\"\nplugin = \"netdev.wasm\"\ngroups = [\"mgmt\"]\nqueue = 65536\n[commands]\ndo = [1]\ndump = [1]\n\
             [bus]\ntopics = [\"dev-add-ntf\", \"dev-del-ntf\"]\n",
        )],
        &tmp.join("cache"),
    )?;
    let mut text = std::fs::read_to_string(&cfg)?;
    text.push_str(&format!(
        "[bus]\nurls = [\"nats://127.0.0.1:{port}\"]\nhost = \"bench\"\n[bus.events]\nbuffer_events = 1000000\n"
    ));
    std::fs::write(&cfg, text)?;
    let (_gw, _) = spawn_gateway(&o.gateway_bin, &cfg)?;
    let sock = cfg.parent().context("dir")?.join("api.sock");
    let start = Instant::now();
    while !get(&sock, "/healthz").contains("\"stream\":\"GENL_EVENTS\"")
        || !get(&sock, "/healthz").contains("\"state\":\"connected\"")
    {
        if start.elapsed() > Duration::from_secs(30) {
            bail!("the gateway did not reach nats-server within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The stream is made by the publisher's first step; let it finish.
    std::thread::sleep(Duration::from_millis(500));

    let seen = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sse = {
        let (seen, done, sock) = (seen.clone(), done.clone(), sock.clone());
        rt.spawn(async move {
            follow_sse(
                &sock,
                "/v1/families/netdev/events?topic=dev-add-ntf,dev-del-ntf",
                &done,
                |block| {
                    if block.contains("event: dev-") {
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                },
            )
            .await
        })
    };
    std::thread::sleep(Duration::from_millis(300));

    // Live: a burst of device adds (the kernel makes ~1k/s; deletes are
    // ~50/s, too slow to load anything), to SSE and JetStream at once.
    let acked_before = metric(&sock, "genl_gateway_bus_events_acked_total");
    let t0 = Instant::now();
    ip_batch(
        &ns,
        &(0..devices)
            .map(|i| format!("link add fl{i} type ifb\n"))
            .collect::<String>(),
    )?;
    let (mut t_sse, mut t_js) = (None, None);
    while t_sse.is_none() || t_js.is_none() {
        if t0.elapsed() > Duration::from_secs(300) {
            bail!(
                "not every event arrived: SSE {} of {devices}",
                seen.load(Ordering::Relaxed)
            );
        }
        if t_sse.is_none() && seen.load(Ordering::Relaxed) >= devices {
            t_sse = Some(t0.elapsed());
        }
        if t_js.is_none() && metric(&sock, "genl_gateway_bus_events_acked_total") - acked_before >= devices {
            t_js = Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(2));
    }

    // Backlog: the same burst while the bus is down, then the time the
    // publisher takes to drain it once the server is back: its ceiling.
    drop(nats);
    while !get(&sock, "/healthz").contains("\"state\":\"disconnected\"") {
        std::thread::sleep(Duration::from_millis(20));
    }
    let queued = metric(&sock, "genl_gateway_bus_events_queued_total");
    ip_batch(
        &ns,
        &(0..devices)
            .map(|i| format!("link add fb{i} type ifb\n"))
            .collect::<String>(),
    )?;
    while metric(&sock, "genl_gateway_bus_events_queued_total") < queued + devices {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _nats = start_nats(port, Some(&store), &tmp.join("nats.log"))?;
    let acked = metric(&sock, "genl_gateway_bus_events_acked_total");
    let wait = Instant::now();
    while metric(&sock, "genl_gateway_bus_events_acked_total") == acked {
        if wait.elapsed() > Duration::from_secs(60) {
            bail!("the gateway did not publish after nats-server restarted");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let t1 = Instant::now();
    let first = metric(&sock, "genl_gateway_bus_events_acked_total");
    while metric(&sock, "genl_gateway_bus_events_acked_total") < acked + devices {
        if t1.elapsed() > Duration::from_secs(300) {
            bail!("the backlog did not drain");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let t_drain = t1.elapsed();
    let drained = acked + devices - first;
    done.store(true, Ordering::Relaxed);
    rt.block_on(sse)??;
    let lost = metric(&sock, "genl_gateway_bus_events_lost_total");
    let dups = metric(&sock, "genl_gateway_bus_events_duplicates_total");
    let w = format!("fleet events: netdev dev-add-ntf, {devices}-device burst");
    let rate = |n: u64, t: Option<Duration>| n as f64 / t.unwrap_or_default().as_secs_f64();
    for (path, r, note) in [
        (
            "HTTP SSE, 1 subscriber",
            rate(devices, t_sse),
            format!("{devices} events, live"),
        ),
        (
            "JetStream, acknowledged (1 node, R1)",
            rate(devices, t_js),
            format!("{devices} events, live, same burst"),
        ),
        (
            "JetStream, acknowledged, backlog drain",
            rate(drained, Some(t_drain)),
            format!("{devices} events buffered while the bus was down; {lost} lost, {dups} duplicates"),
        ),
    ] {
        rows.push(Row {
            workload: w.clone(),
            path: path.into(),
            rate: r,
            unit: "ev/s",
            p50: None,
            p99: None,
            note,
        });
    }
    Ok(())
}
