//! What the gateway does as a server: many keep-alive HTTP clients at once
//! (1, 8, 64), pyroute2 with one process and with one process per core, a
//! batch of mixed calls, and a 10,000-device dump through HTTP with the
//! gateway's peak memory against its idle memory. Ratios between these
//! rows are computed from the same run (`server_ratios`).

use std::fs::File;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

use super::raw::Raw;
use super::stats::{Row, measure, summarise};
use super::{Netns, Opts, config, connect, post, py_row, row, spawn_gateway};

/// Concurrent clients of the HTTP rows.
pub const CLIENTS: [usize; 3] = [1, 8, 64];

/// One call of a workload: path and body.
type Call = (String, String);

/// `total` calls spread over `clients` keep-alive connections running at
/// once, each client cycling through `calls`; rate over all of them and
/// the latency of one call.
async fn http_clients(
    sock: &Path,
    clients: usize,
    total: usize,
    calls: &[Call],
) -> anyhow::Result<(f64, Duration, Duration)> {
    let per = (total / clients).max(20);
    let mut senders = Vec::with_capacity(clients);
    for _ in 0..clients {
        let mut s = connect(sock).await?;
        // Warm: the connection, the pool's instances, the caches.
        for (path, body) in calls.iter().cycle().take(calls.len().max(4)) {
            post(&mut s, path, body).await?;
        }
        senders.push(s);
    }
    let calls: Arc<[Call]> = calls.into();
    let barrier = Arc::new(tokio::sync::Barrier::new(clients));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(clients);
    for (i, mut s) in senders.into_iter().enumerate() {
        let (calls, barrier) = (calls.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut samples = Vec::with_capacity(per);
            // Each client starts at another place of the mix.
            for (path, body) in calls.iter().cycle().skip(i).take(per) {
                let t = Instant::now();
                post(&mut s, path, body).await?;
                samples.push(t.elapsed());
            }
            anyhow::Ok(samples)
        }));
    }
    let mut all = Vec::with_capacity(per * clients);
    for t in tasks {
        all.extend(t.await??);
    }
    let elapsed = start.elapsed();
    let n = all.len() as f64;
    Ok(summarise(&mut all, elapsed, n))
}

/// Run pyroute2_bench.py in `procs` processes at once (each `count`
/// operations of `args`), started together; the rate over all of them,
/// the median of their medians and the worst p99.
fn pyroute2_parallel(python: &Path, netns: &str, procs: usize, args: &[String]) -> anyhow::Result<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("pyroute2_bench.py");
    // Python and pyroute2 take a while to import; all start timing at once.
    let start_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64()
        + 3.0;
    let children = (0..procs)
        .map(|_| {
            Command::new("ip")
                .args(["netns", "exec", netns])
                .arg(python)
                .arg(&script)
                .args(args)
                .env("BENCH_START_AT", start_at.to_string())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut outs = Vec::with_capacity(procs);
    for c in children {
        let out = c.wait_with_output()?;
        if !out.status.success() {
            bail!("pyroute2: {}", String::from_utf8_lossy(&out.stderr));
        }
        outs.push(serde_json::from_slice::<Value>(&out.stdout)?);
    }
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(0.0);
    let ops: f64 = outs.iter().map(|v| f(v, "ops")).sum();
    let units: f64 = outs.iter().map(|v| f(v, "units")).sum();
    let seconds = outs.iter().map(|v| f(v, "seconds")).fold(0.0, f64::max);
    let mut p50s: Vec<f64> = outs.iter().map(|v| f(v, "p50_us")).collect();
    p50s.sort_by(f64::total_cmp);
    let p99 = outs.iter().map(|v| f(v, "p99_us")).fold(0.0, f64::max);
    Ok(serde_json::json!({
        "ops": ops,
        "units": units,
        "seconds": seconds,
        "p50_us": p50s.get(p50s.len() / 2).copied().unwrap_or(0.0),
        "p99_us": p99,
    }))
}

/// A `do` workload for the server rows.
pub struct DoLoad {
    /// The workload's label (the same as its raw row's).
    pub label: &'static str,
    /// API path.
    pub path: String,
    /// Request body.
    pub body: &'static str,
    /// pyroute2_bench.py's workload and arguments after the count.
    pub pyroute2: (&'static str, &'static [&'static str]),
}

/// The HTTP API with 1, 8 and 64 clients, and pyroute2 in one process per
/// core, for one `do` workload.
pub fn do_rows(
    o: &Opts,
    rt: &tokio::runtime::Runtime,
    sock: &Path,
    netns: &str,
    n: usize,
    w: &DoLoad,
) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    let calls = [(w.path.clone(), w.body.to_owned())];
    for clients in CLIENTS {
        eprintln!("{}: HTTP, {clients} client(s)", w.label);
        let m = rt.block_on(http_clients(sock, clients, n, &calls))?;
        rows.push(row(
            w.label,
            &format!("HTTP API, {clients} keep-alive client(s)"),
            "op/s",
            m,
            String::new(),
        ));
    }
    if let Some(py) = &o.python {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        eprintln!("{}: pyroute2, {cores} processes", w.label);
        let mut args = vec![w.pyroute2.0.to_owned(), (n / 4 / cores).max(50).to_string()];
        args.extend(w.pyroute2.1.iter().map(|a| (*a).to_owned()));
        let v = pyroute2_parallel(py, netns, cores, &args)?;
        let mut r = py_row(w.label, "op/s", &v, String::new());
        r.path = format!("pyroute2 0.9.7, {cores} processes (one per core)");
        rows.push(r);
    }
    Ok(rows)
}

/// The mix of the batch row: lookups by name, device gets and a family
/// list, as a dashboard polling the gateway asks them.
fn mix() -> Vec<Call> {
    let get = ("/v1/families/nlctrl/ops/get", r#"{"name":"nlctrl"}"#);
    let dev = ("/v1/families/netdev/ops/dev-get", r#"{"ifindex":1}"#);
    let list = ("/v1/families/nlctrl/ops/list", "");
    [get, dev, get, dev, get, dev, get, dev, list, dev]
        .iter()
        .map(|(p, b)| ((*p).to_owned(), (*b).to_owned()))
        .collect()
}

/// A batch of mixed calls: the same mix through raw netlink (one socket,
/// in turn) and through the HTTP API with 8 clients.
pub fn batch_rows(
    rt: &tokio::runtime::Runtime,
    raw: &mut Raw,
    netdev: u16,
    sock: &Path,
    n: usize,
) -> anyhow::Result<Vec<Row>> {
    let w = "batch: 4 GETFAMILY, 5 dev-get, 1 family list";
    eprintln!("{w}");
    let getfamily = genl_wire::ctrl::getfamily_by_name("nlctrl").map_err(|e| anyhow::anyhow!("{e}"))?;
    let lo = {
        let mut a = genl_wire::AttrWriter::new();
        a.put_u32(1, 1);
        a.finish()
    };
    let mix = mix();
    let batches = (n / mix.len()).max(10);
    let m = measure(
        batches,
        5,
        || mix.len() as f64,
        || {
            for _ in 0..4 {
                raw.do_request(0x10, 3, 2, &getfamily).expect("raw GETFAMILY");
            }
            for _ in 0..5 {
                raw.do_request(netdev, 1, 1, &lo).expect("raw dev-get");
            }
            raw.dump(0x10, 3, 2, &[]).expect("raw family dump");
        },
    );
    // One sample is a batch of 10 calls here.
    let mut rows = vec![row(w, "raw", "call/s", m, "p50/p99 of a batch of 10".into())];
    let m = rt.block_on(http_clients(sock, 8, n, &mix))?;
    rows.push(row(
        w,
        "HTTP API, 8 keep-alive clients",
        "call/s",
        m,
        "p50/p99 of one call".into(),
    ));
    Ok(rows)
}

/// HTTP load only, for a profiler attached to the gateway: the mixed
/// batch from 8 clients, then dev-get from 64.
pub fn profile_http(rt: &tokio::runtime::Runtime, sock: &Path) -> anyhow::Result<()> {
    let m = rt.block_on(http_clients(sock, 8, 100_000, &mix()))?;
    eprintln!("mix, 8 clients: {:.0} call/s", m.0);
    let dev = [(
        "/v1/families/netdev/ops/dev-get".to_owned(),
        r#"{"ifindex":1}"#.to_owned(),
    )];
    let m = rt.block_on(http_clients(sock, 64, 100_000, &dev))?;
    eprintln!("dev-get, 64 clients: {:.0} op/s", m.0);
    Ok(())
}

/// `VmRSS` and `VmHWM` (peak) of `pid`, in KiB, from /proc.
fn rss_and_peak(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .with_context(|| format!("{name} in /proc/{pid}/status"))
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// A netdev dump of `devices` ifb devices (plus lo) through raw netlink
/// and through the HTTP API of a fresh gateway, with the gateway's peak
/// RSS during the HTTP dumps (VmHWM, reset first through clear_refs)
/// against its RSS idle.
pub fn big_dump_rows(
    o: &Opts,
    rt: &tokio::runtime::Runtime,
    tmp: &Path,
    devices: usize,
) -> anyhow::Result<Vec<Row>> {
    let w = format!("dump: netdev dev-get, {} devices", devices + 1);
    eprintln!("setting up a namespace with {devices} ifb devices");
    let name = format!("genl-bench-big-{}", std::process::id());
    super::sh("ip", &["netns", "add", &name])?;
    let ns = Netns(name);
    let batch: String = (0..devices)
        .map(|i| format!("link add ifb{i} type ifb\n"))
        .collect();
    let mut child = Command::new("ip")
        .args(["-n", &ns.0, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        child.stdin.take().context("stdin")?.write_all(batch.as_bytes())?;
    }
    if !child.wait()?.success() {
        bail!("creating {devices} ifb devices failed");
    }
    let ns_file = File::open(format!("/run/netns/{}", ns.0))?;
    let mut raw = Raw::open(Some(&ns_file))?;
    let netdev = raw.family_id("netdev")?;
    let dumps = if o.quick { 3 } else { 10 };
    let mut got = 0;
    let m = measure(
        dumps,
        1,
        || (devices + 1) as f64,
        || {
            got = raw.dump(netdev, 1, 1, &[]).expect("raw dump");
        },
    );
    let mut rows = vec![row(&w, "raw", "msg/s", m, format!("{got} devices"))];

    // A fresh gateway: its peak RSS is this workload's, not an earlier one's.
    let cfg = config(
        &tmp.join("big"),
        &o.plugins,
        Some(&ns.0),
        &[(
            "netdev.toml",
            "family = \"netdev\"\nplugin = \"netdev.wasm\"\nvalidate_requests = false\n[commands]\ndo = [1]\ndump = [1]\n[limits]\noutput_kib = 65536\nreply_mib = 256\nmemory_mib = 512\n",
        )],
        &tmp.join("cache"),
    )?;
    let (gw, _) = spawn_gateway(&o.gateway_bin, &cfg)?;
    let sock = cfg.parent().context("dir")?.join("api.sock");
    let pid = gw.0.id();
    let path = "/v1/families/netdev/ops/dev-dump";
    rt.block_on(async {
        let mut s = connect(&sock).await?;
        post(&mut s, "/v1/families/netdev/ops/dev-get", r#"{"ifindex":1}"#).await?;
        anyhow::Ok(())
    })?;
    std::thread::sleep(Duration::from_millis(300));
    let (idle, _) = rss_and_peak(pid)?;
    // "5" resets the peak RSS (proc(5), /proc/pid/clear_refs).
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")?;
    let count = |b: &[u8]| {
        serde_json::from_slice::<Value>(b)
            .ok()
            .and_then(|v| v.as_array().map(Vec::len))
            .unwrap_or(0)
    };
    let (m, per) = rt.block_on(async {
        let mut s = connect(&sock).await?;
        let mut samples = Vec::with_capacity(dumps);
        let mut total = 0;
        // Parsing each answer to count it is the benchmark's own work:
        // kept out of the rate.
        let mut counting = Duration::ZERO;
        let start = Instant::now();
        for _ in 0..dumps {
            let t = Instant::now();
            let b = post(&mut s, path, "").await?;
            samples.push(t.elapsed());
            let c = Instant::now();
            total += count(&b);
            counting += c.elapsed();
        }
        anyhow::Ok((
            summarise(
                &mut samples,
                start.elapsed().saturating_sub(counting),
                total as f64,
            ),
            total / dumps,
        ))
    })?;
    let (_, peak) = rss_and_peak(pid)?;
    let bound = 2 * idle + 16 * 1024;
    rows.push(row(
        &w,
        "HTTP API (fresh gateway, 1 client)",
        "msg/s",
        m,
        format!(
            "{per} devices; gateway peak RSS {} MiB, idle {} MiB; target peak < 2x idle + 16 MiB = {} MiB: {}",
            peak / 1024,
            idle / 1024,
            bound / 1024,
            if peak < bound { "met" } else { "MISSED" }
        ),
    ));
    drop(gw);
    drop(raw);
    Ok(rows)
}

/// Notes from the same run: the HTTP rows against pyroute2, and the p99
/// target of 64 clients.
pub fn server_ratios(rows: &mut [Row]) {
    for i in 0..rows.len() {
        let (w, path) = (rows[i].workload.clone(), rows[i].path.clone());
        let one = rows
            .iter()
            .find(|r| r.workload == w && r.path == "pyroute2 0.9.7")
            .map(|r| r.rate);
        let many = rows
            .iter()
            .find(|r| r.workload == w && r.path.starts_with("pyroute2 0.9.7,"))
            .map(|r| r.rate);
        let r = &mut rows[i];
        if path == "HTTP API, 8 keep-alive client(s)" {
            let mut notes = Vec::new();
            if let Some(one) = one.filter(|x| *x > 0.0) {
                notes.push(format!("{:.1}x pyroute2 (target >= 5x)", r.rate / one));
            }
            if let Some(many) = many.filter(|x| *x > 0.0) {
                notes.push(format!("{:.1}x pyroute2 per core (target >= 2x)", r.rate / many));
            }
            r.note = notes.join("; ");
        }
        if path == "HTTP API, 64 keep-alive client(s)"
            && let Some(p99) = r.p99
        {
            r.note = format!(
                "p99 target < 2 ms: {}",
                if p99 < Duration::from_millis(2) {
                    "met"
                } else {
                    "MISSED"
                }
            );
        }
    }
}
