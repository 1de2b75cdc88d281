//! genl-bench: the same workloads, in one run, through raw netlink (the
//! floor), the gateway's plugin path in process, the HTTP API on its Unix
//! socket (one keep-alive connection), and pyroute2; one table of rates,
//! latencies and ratios to raw. Run it with `scripts/bench.sh` (as root).

mod fleet;
mod fleet_calls;
mod raw;
mod server_load;
mod stats;

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use genl_gateway::config::GatewayConfig;
use genl_gateway::gateway::Gateway;
use genl_gateway::netlink::{Requester, SocketOptions};
use genl_wire::GenlHeader;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use raw::Raw;
use serde_json::Value;
use stats::{Row, Tally, in_rounds, measure_async, summarise};

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Opts {
    quick: bool,
    python: Option<PathBuf>,
    gateway_bin: PathBuf,
    plugins: PathBuf,
    out: PathBuf,
    /// Sections to run (`--only do,dump`); all when empty.
    only: Vec<String>,
}

impl Opts {
    /// Whether section `name` runs: `do`, `server`, `dump`, `decode`,
    /// `big-dump`, `notify`, `fleet-events`, `startup`, `fleet-calls`.
    fn wants(&self, name: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == name)
    }
}

fn parse_args() -> anyhow::Result<Opts> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("bench/ has a parent")?
        .to_owned();
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    let mut o = Opts {
        quick: false,
        python: None,
        gateway_bin: target.join("release/genl-gateway"),
        plugins: root.join("target/plugins"),
        out: root.join("target/bench/results.md"),
        only: Vec::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--python" => o.python = args.next().map(PathBuf::from),
            "--gateway" => o.gateway_bin = args.next().map(PathBuf::from).context("--gateway PATH")?,
            "--out" => o.out = args.next().map(PathBuf::from).context("--out PATH")?,
            "--only" => {
                let list = args.next().context("--only SECTION[,SECTION...]")?;
                o.only = list.split(',').map(str::to_owned).collect();
            }
            "--profile-plugin-do"
            | "--profile-raw-do"
            | "--profile-plugin-minimal"
            | "--profile-plugin-ping"
            | "--profile-plugin-requests"
            | "--profile-plugin-dump"
            | "--profile-http"
            | "--profile-http-dump"
            | "--fleet-calls-only" => {}
            other => {
                bail!(
                    "unknown argument {other}; use --quick, --python PATH, --gateway PATH, --out PATH, --only SECTIONS"
                )
            }
        }
    }
    Ok(o)
}

fn sh(cmd: &str, args: &[&str]) -> anyhow::Result<()> {
    let s = Command::new(cmd)
        .args(args)
        .status()
        .with_context(|| format!("running {cmd}"))?;
    if !s.success() {
        bail!("{cmd} {args:?} failed");
    }
    Ok(())
}

/// A private namespace with `n` ifb devices (plus lo).
fn netns_with_ifbs(n: usize) -> anyhow::Result<Netns> {
    let name = format!("genl-bench-{}", std::process::id());
    sh("ip", &["netns", "add", &name])?;
    let ns = Netns(name);
    sh("ip", &["-n", &ns.0, "link", "set", "lo", "up"])?;
    let mut child = Command::new("ip")
        .args(["-n", &ns.0, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()?;
    let batch: String = (0..n).map(|i| format!("link add ifb{i} type ifb\n")).collect();
    use std::io::Write;
    child.stdin.take().context("stdin")?.write_all(batch.as_bytes())?;
    if !child.wait()?.success() {
        bail!("creating ifb devices failed");
    }
    Ok(ns)
}

/// A config directory for the gateway with the given family files.
fn config(
    dir: &Path,
    plugins: &Path,
    netns: Option<&str>,
    families: &[(&str, &str)],
    cache: &Path,
) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir.join("families.d"))?;
    let mut text = format!(
        "[api]\nsocket = \"api.sock\"\nevent_backlog = 65536\n[plugins]\ndir = \"{}\"\nfamilies_dir = \"families.d\"\ncache_dir = \"{}\"\nwatch = false\n",
        plugins.display(),
        cache.display()
    );
    if let Some(ns) = netns {
        text.push_str(&format!("[netlink]\nnetns = \"{ns}\"\n"));
    }
    std::fs::write(dir.join("gateway.toml"), text)?;
    for (file, body) in families {
        std::fs::write(dir.join("families.d").join(file), body)?;
    }
    Ok(dir.join("gateway.toml"))
}

/// Start `genl-gateway serve`; returns it once its socket answers, and how long that took.
fn spawn_gateway(bin: &Path, config: &Path) -> anyhow::Result<(Proc, Duration)> {
    let sock = config.parent().context("config dir")?.join("api.sock");
    let _ = std::fs::remove_file(&sock);
    let start = Instant::now();
    let child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(config)
        .env("GENL_GATEWAY_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (build it: cargo build --release -p genl-gateway)",
                bin.display()
            )
        })?;
    let p = Proc(child);
    // Started means serving every plugin: the API answers at once and
    // plugins load in the background, so wait until none is loading.
    while start.elapsed() < Duration::from_secs(60) {
        if loaded(&sock) {
            return Ok((p, start.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    bail!("the gateway did not start within 60 s")
}

/// Whether the gateway on `sock` answers /healthz with no family loading.
fn loaded(sock: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) else {
        return false;
    };
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.contains("\"families_loading\":0")
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(sock: &Path) -> anyhow::Result<Sender> {
    let stream = tokio::net::UnixStream::connect(sock).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn post(s: &mut Sender, path: &str, body: &str) -> anyhow::Result<Bytes> {
    // Keep-alive: the previous exchange must have finished.
    s.ready().await?;
    let req = hyper::Request::post(path)
        .header("host", "gw")
        .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))?;
    let resp = s.send_request(req).await?;
    let ok = resp.status().is_success();
    let bytes = resp.into_body().collect().await?.to_bytes();
    if !ok {
        bail!("{path}: {}", String::from_utf8_lossy(&bytes));
    }
    Ok(bytes)
}

/// Follow the SSE stream at `path` until `done`, handing each event block
/// (up to its blank line) to `on_block`.
async fn follow_sse(
    sock: &Path,
    path: &str,
    done: &AtomicBool,
    mut on_block: impl FnMut(&str) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut s = connect(sock).await?;
    s.ready().await?;
    let req = hyper::Request::get(path)
        .header("host", "gw")
        .body(Full::new(Bytes::new()))?;
    let mut body = s.send_request(req).await?.into_body();
    let mut text = String::new();
    while !done.load(Ordering::Relaxed) {
        let Ok(Some(frame)) = tokio::time::timeout(Duration::from_millis(100), body.frame()).await else {
            continue;
        };
        let Some(data) = frame?.into_data().ok() else {
            continue;
        };
        text.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            on_block(&block)?;
        }
    }
    Ok(())
}

/// One `do` request, measured through every path.
struct DoWorkload<'a> {
    label: &'static str,
    /// Family id, command, version, attributes, for the raw socket.
    raw: (u16, u8, u8, &'a [u8]),
    family: &'static str,
    op: &'static str,
    input: &'static str,
    /// pyroute2_bench.py's workload name and arguments (the count is added).
    pyroute2: &'static [&'static str],
}

impl DoWorkload<'_> {
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        o: &Opts,
        rt: &tokio::runtime::Runtime,
        raw: &mut Raw,
        gw: &Gateway,
        sock: &Path,
        netns: &str,
        n: usize,
    ) -> anyhow::Result<Vec<Row>> {
        let w = self.label;
        let (family_id, cmd, version, attrs) = self.raw;
        let path = format!("/v1/families/{}/ops/{}", self.family, self.op);
        let (client, mut conn) = own_thread_client(sock, &path, self.input, 50)?;
        for _ in 0..500 {
            raw.do_request(family_id, cmd, version, attrs)?;
        }
        let mut raw_do = async || Ok(raw.do_request(family_id, cmd, version, attrs)?);
        let mut call = async || {
            gw.call(self.family, self.op, self.input)
                .await
                .map(drop)
                .map_err(|e| anyhow::anyhow!("{e:?}"))
        };
        let mut http = async || post(&mut conn, &path, self.input).await;
        rt.block_on(async {
            for _ in 0..500 {
                call().await?;
            }
            anyhow::Ok(())
        })?;
        let [mut t_raw, mut t_plugin, mut t_http] = [Tally::default(), Tally::default(), Tally::default()];
        in_rounds(n, |share| {
            rt.block_on(turn(share, &mut t_raw, &mut raw_do, |_| 1.0))?;
            rt.block_on(turn(share, &mut t_plugin, &mut call, |_| 1.0))?;
            client.block_on(turn((share / 2).max(1), &mut t_http, &mut http, |_| 1.0))
        })?;
        let mut rows = vec![
            row(w, "raw", "op/s", t_raw.summary(), String::new()),
            row(
                w,
                "plugin (in process)",
                "op/s",
                t_plugin.summary(),
                String::new(),
            ),
            row(
                w,
                "HTTP API (unix, keep-alive)",
                "op/s",
                t_http.summary(),
                String::new(),
            ),
        ];
        if let Some(py) = &o.python {
            let count = (n / 4).to_string();
            let mut args = vec![self.pyroute2[0], count.as_str()];
            args.extend_from_slice(&self.pyroute2[1..]);
            let v = pyroute2(py, netns, &args)?;
            rows.push(py_row(w, "op/s", &v, String::new()));
        }
        Ok(rows)
    }
}

/// The attributes of netdev's dev-get for `lo`: NETDEV_A_DEV_IFINDEX (1)
/// = 1, as raw sends them and the minimal plugin op forwards them.
fn dev_get_lo_attrs() -> Vec<u8> {
    let mut w = genl_wire::AttrWriter::new();
    w.put_u32(1, 1);
    w.finish()
}

/// The dev-get request through a plugin op that does as little as a
/// plugin can: the chaos plugin's `request` sends the request's bytes as
/// the client gives them (hex) and answers with the number of replies, so
/// no attribute is encoded or decoded and the output is a dozen bytes. The
/// kernel's work is raw's; the rest is the two crossings of the sandbox
/// (the call and its `do-request`), the gateway's request path, the SDK's
/// parse of the input into a `Value` and the output check: what the YNL
/// plugin's encoding and decoding can be measured against. Requests are
/// not checked against the kernel's policy, as in the dev-get rows.
///
/// A second row calls the same plugin's `ping`, which asks the kernel
/// nothing and answers a constant: the cost of one call into a plugin and
/// back, the part of every plugin `do` no plugin can remove. A third
/// makes the request 100 times in one call: the cost of one `do-request`
/// from inside the sandbox, kernel included. `rows` picks the rows: all
/// three, or for a profile the minimal op alone or `ping` alone (untimed,
/// no row).
fn minimal_plugin_op(
    rt: &tokio::runtime::Runtime,
    plugins: &Path,
    netns: &str,
    tmp: &Path,
    n: usize,
    rows: MinimalRows,
) -> anyhow::Result<Vec<Row>> {
    eprintln!("do: a minimal plugin op (chaos request)");
    let families: &[(&str, &str)] = &[(
        "netdev.toml",
        "family = \"netdev\"\nplugin = \"chaos.wasm\"\nvalidate_requests = false\n[commands]\ndo = [1]\n[config]\nclaim = \"netdev\"\n",
    )];
    let cfg = config(
        &tmp.join("minimal-op"),
        plugins,
        Some(netns),
        families,
        &tmp.join("minimal-op-cache"),
    )?;
    rt.block_on(async {
        let gw = Gateway::start(GatewayConfig::load(&cfg)?).await?;
        gw.until_loaded().await;
        let hex: String = dev_get_lo_attrs().iter().map(|b| format!("{b:02x}")).collect();
        let input = format!(r#"{{"cmd":1,"payload":"{hex}"}}"#);
        let input = input.as_str();
        let answer = gw
            .call("netdev", "request", input)
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        anyhow::ensure!(
            answer.contains(r#""replies":1"#),
            "the minimal op's request got {answer}"
        );
        // The same request made REPEAT times inside one call: the cost of
        // a `do-request` from the plugin, the call's crossing spread thin.
        const REPEAT: usize = 100;
        let repeated = format!(r#"{{"cmd":1,"payload":"{hex}","n":{REPEAT}}}"#);
        let profiled = match rows {
            MinimalRows::PingOnly => Some(("ping", "null", n)),
            MinimalRows::RepeatedOnly => Some(("request", repeated.as_str(), n / REPEAT)),
            MinimalRows::RequestOnly | MinimalRows::All => None,
        };
        if let Some((op, input, calls)) = profiled {
            // Untimed, as the other profile loops are: the profile holds
            // the calls alone.
            eprintln!("profile: {calls} calls of chaos `{op}`");
            for _ in 0..calls {
                gw.call("netdev", op, input)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            }
            return anyhow::Ok(Vec::new());
        }
        let mut rows_out = vec![row(
            "do: netdev dev-get (lo)",
            "plugin, minimal op (in process, no encoding or decoding)",
            "op/s",
            plugin_rate(&gw, n, "netdev", "request", input).await?,
            "chaos `request`: bytes in, count out".into(),
        )];
        if rows == MinimalRows::RequestOnly {
            return anyhow::Ok(rows_out);
        }
        eprintln!("do: a call with no kernel work (chaos ping), requests inside one call");
        rows_out.push(row(
            "call: no kernel work",
            "plugin (in process)",
            "op/s",
            plugin_rate(&gw, n, "netdev", "ping", "null").await?,
            "chaos `ping`: a call with no kernel work".into(),
        ));
        let (rate, p50, p99) = plugin_rate(&gw, (n / REPEAT).max(1), "netdev", "request", &repeated).await?;
        let per = u32::try_from(REPEAT)?;
        rows_out.push(row(
            "do: netdev dev-get (lo)",
            "plugin, do-request alone (100 in one call)",
            "op/s",
            (rate * REPEAT as f64, p50 / per, p99 / per),
            "chaos `request` with n = 100; p50/p99 of a 100-request call, divided by 100".into(),
        ));
        anyhow::Ok(rows_out)
    })
}

/// Which rows [`minimal_plugin_op`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MinimalRows {
    /// The minimal op only.
    RequestOnly,
    /// A call with no kernel work only, for a profile of the crossing.
    PingOnly,
    /// Calls making 100 requests each only, for a profile of `do-request`.
    RepeatedOnly,
    /// The minimal op, a call with no kernel work, and one request's share
    /// of a call making 100.
    All,
}

/// Raw's dev-get through the gateway's own request path, with no plugin:
/// a [`Requester`] (its socket pool, sequence check and reply collection),
/// as a plugin's `do-request` reaches it. What it adds to raw is the
/// host's share of a plugin `do` that the sandbox's crossings are not.
fn requester_row(
    rt: &tokio::runtime::Runtime,
    ns_file: &File,
    netdev: u16,
    attrs: &[u8],
    n: usize,
) -> anyhow::Result<Row> {
    eprintln!("do: the gateway's requester alone");
    let m = rt.block_on(async {
        let requester = Requester::open(SocketOptions {
            netns: Some(Arc::new(ns_file.try_clone()?)),
            timeout: Duration::from_secs(5),
            // The gateway's request sockets ask for 4 MiB.
            receive_buffer: 4 << 20,
            ..SocketOptions::default()
        })?;
        let genl = GenlHeader { cmd: 1, version: 1 };
        measure_async(n, || async {
            let replies = requester.do_request(netdev, genl, 0, attrs).await?;
            anyhow::ensure!(replies.len() == 1, "dev-get of lo got {} replies", replies.len());
            Ok(())
        })
        .await
    })?;
    Ok(row(
        "do: netdev dev-get (lo)",
        "gateway's requester (in process, no plugin)",
        "op/s",
        m,
        "the host's netlink path a plugin's do-request takes".into(),
    ))
}

/// N calls of `family`'s `op` through the in-process gateway.
async fn plugin_rate(
    gw: &Gateway,
    n: usize,
    family: &str,
    op: &str,
    input: &str,
) -> anyhow::Result<(f64, Duration, Duration)> {
    measure_async(n, || async {
        gw.call(family, op, input)
            .await
            .map(drop)
            .map_err(|e| anyhow::anyhow!("{e:?}"))
    })
    .await
}

/// One path's turn in a round (`in_rounds`): one call of `op` it does not
/// time, so the path does not pay for the caches the path before it left,
/// then `share` timed calls, each result's `units` counted outside its time.
async fn turn<T>(
    share: usize,
    tally: &mut Tally,
    op: &mut impl AsyncFnMut() -> anyhow::Result<T>,
    units: impl Fn(&T) -> f64,
) -> anyhow::Result<()> {
    op().await?;
    for _ in 0..share {
        let t = Instant::now();
        let out = op().await?;
        let took = t.elapsed();
        tally.add(took, units(&out));
    }
    Ok(())
}

/// A client on a thread of its own, as `on_own_thread` runs one, with one
/// keep-alive connection warmed by `warm` calls of `path`: for rows that
/// take turns with others (`in_rounds`), so the connection outlives a turn.
fn own_thread_client(
    sock: &Path,
    path: &str,
    body: &str,
    warm: usize,
) -> anyhow::Result<(tokio::runtime::Runtime, Sender)> {
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let conn = client.block_on(async {
        let mut s = connect(sock).await?;
        for _ in 0..warm {
            post(&mut s, path, body).await?;
        }
        anyhow::Ok(s)
    })?;
    Ok((client, conn))
}

/// Run `client` on a thread of its own (a current-thread runtime), as a
/// single-connection client such as curl runs: with the connection driven
/// on a worker of a multi-thread runtime, every body frame woke the
/// waiting thread from another one, work the gateway is not doing.
fn on_own_thread<T>(client: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(client)
}

/// N calls over one keep-alive connection (run it [`on_own_thread`]).
async fn http_rate(
    sock: &Path,
    n: usize,
    path: &str,
    body: &str,
    units: impl Fn(&Bytes) -> f64,
) -> anyhow::Result<(f64, Duration, Duration, f64)> {
    let mut s = connect(sock).await?;
    for _ in 0..n.min(200) / 4 {
        post(&mut s, path, body).await?;
    }
    let mut samples = Vec::with_capacity(n);
    let mut total_units = 0.0;
    // Counting the units of an answer (parsing a dump's JSON) is the
    // benchmark's own work, not the gateway's: kept out of the rate.
    let mut counting = Duration::ZERO;
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        let b = post(&mut s, path, body).await?;
        samples.push(t.elapsed());
        let c = Instant::now();
        total_units += units(&b);
        counting += c.elapsed();
    }
    let (rate, p50, p99) = summarise(
        &mut samples,
        start.elapsed().saturating_sub(counting),
        total_units,
    );
    Ok((rate, p50, p99, total_units / n as f64))
}

fn pyroute2(python: &Path, netns: &str, args: &[&str]) -> anyhow::Result<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pyroute2_bench.py");
    let out = Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(python)
        .arg(script)
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("pyroute2: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn py_row(workload: &str, unit: &'static str, v: &Value, note: String) -> Row {
    let units = v["units"].as_f64().unwrap_or(0.0);
    let seconds = v["seconds"].as_f64().unwrap_or(1.0);
    Row {
        workload: workload.into(),
        path: "pyroute2 0.9.7".into(),
        rate: if unit == "msg/s" {
            units / seconds
        } else {
            v["ops"].as_f64().unwrap_or(0.0) / seconds
        },
        unit,
        p50: v["p50_us"].as_f64().map(|u| Duration::from_secs_f64(u / 1e6)),
        p99: v["p99_us"].as_f64().map(|u| Duration::from_secs_f64(u / 1e6)),
        note,
    }
}

fn row(
    workload: &str,
    path: &str,
    unit: &'static str,
    (rate, p50, p99): (f64, Duration, Duration),
    note: String,
) -> Row {
    Row {
        workload: workload.into(),
        path: path.into(),
        rate,
        unit,
        p50: Some(p50),
        p99: Some(p99),
        note,
    }
}

fn vm_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    // The fork helper: a fresh, small process forks far faster than this
    // one, whose address space holds the wasm engine's reservations.
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some("--fork-storm") {
        let secs: f64 = args
            .next()
            .and_then(|s| s.parse().ok())
            .context("--fork-storm SECONDS")?;
        let pids = fork_storm(secs);
        let mut out = String::with_capacity(pids.len() * 8);
        for p in pids {
            out.push_str(&p.to_string());
            out.push('\n');
        }
        print!("{out}");
        return Ok(());
    }
    let o = parse_args()?;
    let n = if o.quick { 2_000 } else { 20_000 };
    // A dump row's rate is a mean: with 300 dumps one dump stalled for a
    // millisecond or two moves it by a few µs.
    let dumps = if o.quick { 20 } else { 300 };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let tmp = tempfile::tempdir()?;
    let mut rows = Vec::new();
    if std::env::args().any(|a| a == "--fleet-calls-only") {
        println!(
            "{}",
            stats::table(&fleet_calls::rows(&o.gateway_bin, &o.plugins, o.quick, &rt)?)
        );
        return Ok(());
    }

    eprintln!("setting up a namespace with 1000 ifb devices");
    let ns = netns_with_ifbs(1000)?;
    let ns_file = File::open(format!("/run/netns/{}", ns.0))?;
    let families: &[(&str, &str)] = &[
        (
            "nlctrl.toml",
            "family = \"nlctrl\"\nplugin = \"nlctrl.wasm\"\n[commands]\ndo = [3]\ndump = [3]\n",
        ),
        (
            "netdev.toml",
            "family = \"netdev\"\nplugin = \"netdev.wasm\"\nvalidate_requests = false\n[commands]\ndo = [1]\ndump = [1]\n",
        ),
    ];
    let cfg = config(
        &tmp.path().join("ns"),
        &o.plugins,
        Some(&ns.0),
        families,
        &tmp.path().join("cache"),
    )?;
    let gw = rt.block_on(async {
        let gw = Gateway::start(GatewayConfig::load(&cfg)?).await?;
        // Plugins load in the background; measure them loaded.
        gw.until_loaded().await;
        anyhow::Ok(gw)
    })?;
    let (_server, _) = spawn_gateway(&o.gateway_bin, &cfg)?;
    let sock = cfg.parent().context("dir")?.join("api.sock");

    // `--profile-http`: only HTTP load on the gateway process (pid on
    // stderr), for `perf record -p`.
    if std::env::args().any(|a| a == "--profile-http") {
        eprintln!("gateway pid {}", _server.0.id());
        std::thread::sleep(Duration::from_secs(3));
        return server_load::profile_http(&rt, &sock);
    }

    // `--profile-http-dump`: only the 1001-device dump over HTTP (gateway
    // pid on stderr), for `perf record -p` or a system-wide trace.
    if std::env::args().any(|a| a == "--profile-http-dump") {
        eprintln!("gateway pid {}", _server.0.id());
        let m = on_own_thread(http_rate(
            &sock,
            3_000,
            "/v1/families/netdev/ops/dev-dump",
            "null",
            |_| 1.0,
        ))?;
        eprintln!("dump over HTTP: p50 {:?}", m.1);
        return Ok(());
    }

    // `--profile-plugin-do`: only the plugin path's dev-get, for a profiler.
    if std::env::args().any(|a| a == "--profile-plugin-do") {
        rt.block_on(async {
            for _ in 0..300_000 {
                gw.call("netdev", "dev-get", r#"{"ifindex":1}"#)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            }
            anyhow::Ok(())
        })?;
        return Ok(());
    }
    // `--profile-plugin-minimal`: only the minimal plugin op (see
    // `minimal_plugin_op`); `--profile-plugin-ping`: only a call with no
    // kernel work (chaos `ping`); `--profile-plugin-requests`: only calls
    // making 100 requests each (3M requests), `do-request`'s own cost.
    for (flag, n, rows) in [
        ("--profile-plugin-minimal", 300_000, MinimalRows::RequestOnly),
        ("--profile-plugin-ping", 3_000_000, MinimalRows::PingOnly),
        ("--profile-plugin-requests", 3_000_000, MinimalRows::RepeatedOnly),
    ] {
        if std::env::args().any(|a| a == flag) {
            minimal_plugin_op(&rt, &o.plugins, &ns.0, tmp.path(), n, rows)?;
            return Ok(());
        }
    }
    // `--profile-plugin-dump`: only the plugin path's 1001-device dump.
    if std::env::args().any(|a| a == "--profile-plugin-dump") {
        rt.block_on(async {
            for _ in 0..3_000 {
                gw.call("netdev", "dev-dump", "null")
                    .await
                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            }
            anyhow::Ok(())
        })?;
        return Ok(());
    }
    let mut raw = Raw::open(Some(&ns_file))?;
    let netdev = raw.family_id("netdev")?;
    let lo_attrs = dev_get_lo_attrs();
    // `--profile-raw-do`: only raw's dev-get, the kernel's share to set
    // beside `--profile-plugin-do`'s.
    if std::env::args().any(|a| a == "--profile-raw-do") {
        for _ in 0..300_000 {
            raw.do_request(netdev, 1, 1, &lo_attrs)?;
        }
        return Ok(());
    }
    let nlctrl_attrs = genl_wire::ctrl::getfamily_by_name("nlctrl").map_err(|e| anyhow::anyhow!("{e}"))?;

    // --- do round trips: the same request through every path.
    let getfamily = DoWorkload {
        label: "do: nlctrl GETFAMILY",
        raw: (0x10, 3, 2, &nlctrl_attrs),
        family: "nlctrl",
        op: "get",
        input: r#"{"name":"nlctrl"}"#,
        pyroute2: &["getfamily"],
    };
    let dev_get = DoWorkload {
        label: "do: netdev dev-get (lo)",
        raw: (netdev, 1, 1, &lo_attrs),
        family: "netdev",
        op: "dev-get",
        input: r#"{"ifindex":1}"#,
        pyroute2: &["dev-get", "1"],
    };
    for w in [getfamily, dev_get] {
        if o.wants("do") {
            eprintln!("{}", w.label);
            rows.extend(w.run(&o, &rt, &mut raw, &gw, &sock, &ns.0, n)?);
        }
    }
    if o.wants("do") {
        rows.push(requester_row(&rt, &ns_file, netdev, &lo_attrs, n)?);
        rows.extend(minimal_plugin_op(
            &rt,
            &o.plugins,
            &ns.0,
            tmp.path(),
            n,
            MinimalRows::All,
        )?);
    }
    if o.wants("server") {
        server_rows(&o, &rt, &mut raw, netdev, &sock, &ns.0, n, &mut rows)?;
    }
    if o.wants("dump") {
        dump_rows(&o, &rt, &mut raw, netdev, &gw, &sock, &ns.0, dumps, &mut rows)?;
    }
    if o.wants("decode") {
        decode_rows(&mut raw, netdev, &mut rows)?;
    }
    drop(raw);
    drop(gw);

    // --- a 10,000-device dump, with the gateway's peak memory
    let big = if o.quick { 3_000 } else { 10_000 };
    if o.wants("big-dump") {
        rows.extend(server_load::big_dump_rows(&o, &rt, tmp.path(), big)?);
    }

    // --- notifications
    if o.wants("notify") {
        notifications(&o, &rt, tmp.path(), &mut rows)?;
    }
    if o.wants("fleet-events") {
        fleet::events_to_jetstream(&o, &rt, tmp.path(), &mut rows)?;
    }

    // --- start-up and memory
    if o.wants("startup") {
        startup(&o, tmp.path(), &mut rows)?;
    }

    server_load::server_ratios(&mut rows);
    // --- fleet: calls over a NATS bus
    if o.wants("fleet-calls") {
        rows.extend(fleet_calls::rows(&o.gateway_bin, &o.plugins, o.quick, &rt)?);
    }

    let table = stats::table(&rows);
    println!("\n{table}");
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&o.out, &table)?;
    eprintln!("written to {}", o.out.display());
    Ok(())
}

/// The 1001-device dump through every path.
#[allow(clippy::too_many_arguments)]
fn dump_rows(
    o: &Opts,
    rt: &tokio::runtime::Runtime,
    raw: &mut Raw,
    netdev: u16,
    gw: &Gateway,
    sock: &Path,
    netns: &str,
    dumps: usize,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    eprintln!("dump: netdev dev-get over 1001 devices");
    let w = "dump: netdev dev-get, 1001 devices";
    let path = "/v1/families/netdev/ops/dev-dump";
    let (client, mut conn) = own_thread_client(sock, path, "", 5)?;
    let mut raw_dump = async || Ok(raw.dump(netdev, 1, 1, &[])?);
    let mut dump = async || {
        gw.call("netdev", "dev-dump", "null")
            .await
            .map_err(|e| anyhow::anyhow!("{e:?}"))
    };
    let mut http = async || post(&mut conn, path, "").await;
    // Warmed up alike: the first dumps through a plugin took 750-870 µs
    // against ~470 µs after (session 10).
    rt.block_on(async {
        for _ in 0..5 {
            raw_dump().await?;
            dump().await?;
        }
        anyhow::Ok(())
    })?;
    // Parsing an answer to count its devices is the benchmark's own work,
    // outside each timed call, as raw's count is.
    let devices = |json: &[u8]| {
        serde_json::from_slice::<Value>(json)
            .ok()
            .and_then(|v| v.as_array().map(|a| a.len() as f64))
            .unwrap_or(0.0)
    };
    let [mut t_raw, mut t_plugin, mut t_http] = [Tally::default(), Tally::default(), Tally::default()];
    in_rounds(dumps, |share| {
        rt.block_on(turn(share, &mut t_raw, &mut raw_dump, |&got| got as f64))?;
        rt.block_on(turn(share, &mut t_plugin, &mut dump, |out| {
            devices(out.as_bytes())
        }))?;
        client.block_on(turn(share, &mut t_http, &mut http, |out| devices(out)))
    })?;
    for (path, t) in [
        ("raw", &mut t_raw),
        ("plugin (in process)", &mut t_plugin),
        ("HTTP API (unix, keep-alive)", &mut t_http),
    ] {
        let note = format!("{:.0} devices", t.units_per_op());
        rows.push(row(w, path, "msg/s", t.summary(), note));
    }
    if let Some(py) = &o.python {
        let v = pyroute2(py, netns, &["dump", &(dumps / 2).to_string()])?;
        let per = v["per_dump"].as_f64().unwrap_or(0.0);
        rows.push(py_row(w, "msg/s", &v, format!("{per:.0} devices (of 1001)")));
    }
    Ok(())
}

/// The server rows of the `do` workloads (1, 8 and 64 HTTP clients,
/// pyroute2 per core) and the batch of mixed calls.
#[allow(clippy::too_many_arguments)]
fn server_rows(
    o: &Opts,
    rt: &tokio::runtime::Runtime,
    raw: &mut Raw,
    netdev: u16,
    sock: &Path,
    netns: &str,
    n: usize,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let loads = [
        server_load::DoLoad {
            label: "do: nlctrl GETFAMILY",
            path: "/v1/families/nlctrl/ops/get".into(),
            body: r#"{"name":"nlctrl"}"#,
            pyroute2: ("getfamily", &[]),
        },
        server_load::DoLoad {
            label: "do: netdev dev-get (lo)",
            path: "/v1/families/netdev/ops/dev-get".into(),
            body: r#"{"ifindex":1}"#,
            pyroute2: ("dev-get", &["1"]),
        },
    ];
    for w in &loads {
        rows.extend(server_load::do_rows(o, rt, sock, netns, n, w)?);
    }
    rows.extend(server_load::batch_rows(rt, raw, netdev, sock, n)?);
    Ok(())
}

/// Decoding a 1001-device netdev dump to JSON, the same kernel bytes
/// through the YNL engine (from the kernel's spec) and through the
/// hand-written table codec the engine replaces (the netdev plugin's
/// former `DEV` table, kept here as the baseline). The two alternate in
/// short rounds, so load from elsewhere on a shared machine falls on both
/// alike instead of on whichever happened to run second.
fn decode_rows(raw: &mut Raw, netdev: u16, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    use genl_plugin_sdk::schema::{Field, Kind, decode};
    const DEV: &[Field] = &[
        Field::new(1, "ifindex", Kind::U32),
        Field::new(3, "xdp-features", Kind::U64),
        Field::new(4, "xdp-zc-max-segs", Kind::U32),
        Field::new(5, "xdp-rx-metadata-features", Kind::U64),
        Field::new(6, "xsk-features", Kind::U64),
    ];
    const ROUNDS: usize = 20;
    const PER_ROUND: usize = 10;
    eprintln!("decode: netdev dev-get dump, engine vs table");
    let w = "decode: 1001-device netdev dump to JSON";
    let payloads = raw.dump_payloads(netdev, 1, 1)?;
    let devices = payloads.len() as f64;
    let spec = genl_plugin_sdk::ynl::bundled::load("netdev")
        .ok_or_else(|| anyhow::anyhow!("no bundled netdev spec"))??;
    let table = || {
        let out: Vec<serde_json::Value> = payloads.iter().filter_map(|p| decode(p, DEV).ok()).collect();
        serde_json::to_vec(&out).map_or(0, |b| b.len())
    };
    // What the engine's serving path does: each message written as JSON
    // text, the items of one array.
    let engine = || {
        let mut out = String::from("[");
        for p in &payloads {
            if out.len() > 1 {
                out.push(',');
            }
            if spec.write_attrs("dev", p, &mut out).is_err() && out.ends_with(',') {
                out.pop();
            }
        }
        out.push(']');
        out.len()
    };
    let mut bytes = (0, 0);
    for _ in 0..PER_ROUND {
        bytes = (table(), engine());
    }
    let mut samples: (Vec<Duration>, Vec<Duration>) = Default::default();
    let timed = |op: &dyn Fn() -> usize, into: &mut Vec<Duration>| {
        for _ in 0..PER_ROUND {
            let t = Instant::now();
            std::hint::black_box(op());
            into.push(t.elapsed());
        }
    };
    for _ in 0..ROUNDS {
        timed(&table, &mut samples.0);
        timed(&engine, &mut samples.1);
    }
    for (path, samples, bytes, note) in [
        (
            "hand table (schema::decode)",
            &mut samples.0,
            bytes.0,
            "flags as numbers",
        ),
        (
            "YNL engine (Spec::write_attrs)",
            &mut samples.1,
            bytes.1,
            "flags named",
        ),
    ] {
        let total = samples.iter().sum();
        let units = samples.len() as f64 * devices;
        rows.push(row(
            w,
            path,
            "msg/s",
            summarise(samples, total, units),
            format!("{bytes} B of JSON; {note}"),
        ));
    }
    Ok(())
}

/// Run the fork helper for `secs`; returns the pids of its children and
/// how long it forked.
fn fork_helper(secs: f64) -> anyhow::Result<(HashSet<u32>, Duration)> {
    let start = Instant::now();
    let out = Command::new(std::env::current_exe()?)
        .args(["--fork-storm", &secs.to_string()])
        .output()?;
    let elapsed = start.elapsed();
    let pids = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    Ok((pids, elapsed))
}

/// Fork children that exit at once, as fast as possible, for `secs`;
/// returns their pids.
fn fork_storm(secs: f64) -> HashSet<u32> {
    let mut pids = HashSet::new();
    let until = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < until {
        // SAFETY: the child calls only _exit, async-signal-safe.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: terminate the child at once.
            unsafe { libc::_exit(0) };
        }
        if pid > 0 {
            pids.insert(pid as u32);
            let mut status = 0;
            // SAFETY: reap our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
    }
    pids
}

fn notifications(
    o: &Opts,
    rt: &tokio::runtime::Runtime,
    tmp: &Path,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let secs = if o.quick { 1.0 } else { 3.0 };
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mask = format!("0-{}", cpus - 1);
    let w = "notify: TASKSTATS exit records";

    eprintln!("notifications: raw listener");
    let mut raw = Raw::open(None)?;
    let id = raw.family_id("TASKSTATS")?;
    raw.taskstats_listen(id, &mask)?;
    let stop = Arc::new(AtomicBool::new(false));
    let receiver = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                seen.extend(raw.recv_exits(Duration::from_millis(100)).unwrap_or_default());
            }
            seen
        })
    };
    let (children, elapsed) = fork_helper(secs)?;
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let seen: HashSet<u32> = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))?
        .into_iter()
        .collect();
    let ours = children.iter().filter(|p| seen.contains(p)).count();
    rows.push(Row {
        workload: w.into(),
        path: "raw".into(),
        rate: ours as f64 / elapsed.as_secs_f64(),
        unit: "ev/s",
        p50: None,
        p99: None,
        note: format!("{} forked, {} missed", children.len(), children.len() - ours),
    });

    let cfg = config(
        &tmp.join("ts"),
        &o.plugins,
        None,
        &[(
            "taskstats.toml",
            "family = \"TASKSTATS\"\nplugin = \"taskstats.wasm\"\nqueue = 65536\n[commands]\ndo = [1]\n",
        )],
        &tmp.join("cache"),
    )?;
    let (_gw, _) = spawn_gateway(&o.gateway_bin, &cfg)?;
    let sock = cfg.parent().context("dir")?.join("api.sock");
    rt.block_on(async {
        let mut s = connect(&sock).await?;
        post(
            &mut s,
            "/v1/families/TASKSTATS/ops/listen",
            &format!("{{\"cpumask\":\"{mask}\"}}"),
        )
        .await?;
        anyhow::Ok(())
    })?;
    for subscribers in [1usize, 4] {
        eprintln!("notifications: {subscribers} SSE subscriber(s)");
        let counts: Vec<Arc<std::sync::Mutex<HashSet<u32>>>> =
            (0..subscribers).map(|_| Arc::default()).collect();
        let done = Arc::new(AtomicBool::new(false));
        let lagged = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for c in &counts {
            let (c, done, lagged, sock) = (c.clone(), done.clone(), lagged.clone(), sock.clone());
            tasks.push(rt.spawn(async move {
                follow_sse(
                    &sock,
                    "/v1/families/TASKSTATS/events?topic=exit",
                    &done,
                    |block| {
                        if block.contains("event: lagged") {
                            lagged.fetch_add(1, Ordering::Relaxed);
                        }
                        // "payload":{"pid":123,...
                        if let Some(i) = block.find("\"payload\":{\"pid\":") {
                            let digits: String =
                                block[i + 17..].chars().take_while(char::is_ascii_digit).collect();
                            if let Ok(pid) = digits.parse() {
                                c.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.insert(pid);
                            }
                        }
                        Ok(())
                    },
                )
                .await
            }));
        }
        std::thread::sleep(Duration::from_millis(300));
        let (children, elapsed) = fork_helper(secs)?;
        std::thread::sleep(Duration::from_millis(1500));
        done.store(true, Ordering::Relaxed);
        for t in tasks {
            rt.block_on(t)??;
        }
        let delivered: Vec<usize> = counts
            .iter()
            .map(|c| {
                c.lock()
                    .map(|s| children.iter().filter(|p| s.contains(p)).count())
                    .unwrap_or(0)
            })
            .collect();
        let min = delivered.iter().copied().min().unwrap_or(0);
        rows.push(Row {
            workload: w.into(),
            path: format!("HTTP SSE, {subscribers} subscriber(s)"),
            rate: min as f64 / elapsed.as_secs_f64(),
            unit: "ev/s",
            p50: None,
            p99: None,
            note: format!(
                "{} forked, {} missed by the slowest subscriber, {} cut off",
                children.len(),
                children.len() - min,
                lagged.load(Ordering::Relaxed)
            ),
        });
    }
    Ok(())
}

fn startup(o: &Opts, tmp: &Path, rows: &mut Vec<Row>) -> anyhow::Result<()> {
    eprintln!("start-up: every bundled plugin, cold and warm");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("root")?;
    let bundled: Vec<(String, String)> = std::fs::read_dir(root.join("config/families.d"))?
        .flatten()
        .map(|e| {
            Ok((
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path())?,
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let refs: Vec<(&str, &str)> = bundled.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let cache = tmp.join("startup-cache");
    let cfg = config(&tmp.join("all"), &o.plugins, None, &refs, &cache)?;
    let mut runs = Vec::new();
    for label in ["cold (compile)", "warm (cached)"] {
        let (p, ready) = spawn_gateway(&o.gateway_bin, &cfg)?;
        // Ready means the API answers; every plugin is loaded by then.
        std::thread::sleep(Duration::from_millis(300));
        let rss = vm_rss_kib(p.0.id());
        runs.push((label, ready, rss));
        drop(p);
    }
    let empty = config(&tmp.join("none"), &o.plugins, None, &[], &cache)?;
    let (p, _) = spawn_gateway(&o.gateway_bin, &empty)?;
    std::thread::sleep(Duration::from_millis(300));
    let base = vm_rss_kib(p.0.id());
    drop(p);
    for (label, ready, rss) in runs {
        rows.push(Row {
            workload: format!("start-up: {} bundled plugins", bundled.len()),
            path: label.into(),
            rate: 1.0 / ready.as_secs_f64(),
            unit: "start/s",
            p50: Some(ready),
            p99: None,
            note: format!(
                "RSS {} MiB; {:.1} MiB per plugin over an empty gateway ({} MiB)",
                rss / 1024,
                (rss.saturating_sub(base)) as f64 / 1024.0 / bundled.len() as f64,
                base / 1024
            ),
        });
    }
    Ok(())
}
