//! `fleet call` latency: one request on `PREFIX.all.call...` until every
//! gateway has answered, for 1, 5 and 50 gateways on one local
//! `nats-server` (the 50 share five namespaces). Discovery (`$SRV.PING`)
//! runs once before the measured calls: its window is a fixed wait, not
//! part of a call's latency.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use genl_gateway::config::GatewayConfig;
use genl_gateway::fleet::calls::CallAccess;
use genl_gateway::fleet::fleet_cli::{FleetCall, FleetClient};

use super::fleet::{free_port, start_nats};
use super::stats::{Row, summarise};
use super::{Netns, Proc, sh, spawn_gateway};

const FAMILIES: &[(&str, &str)] = &[
    (
        "nlctrl.toml",
        "family = \"nlctrl\"\nplugin = \"nlctrl.wasm\"\n[commands]\ndo = [3]\ndump = [3]\n",
    ),
    (
        "netdev.toml",
        "family = \"netdev\"\nplugin = \"netdev.wasm\"\n[commands]\ndo = [1]\ndump = [1]\n",
    ),
];

/// The rows: `fleet call netdev dev-dump` over 1, 5 and 50 gateways.
pub fn rows(
    gateway_bin: &Path,
    plugins: &Path,
    quick: bool,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<Vec<Row>> {
    let tmp = tempfile::tempdir()?;
    let port = free_port()?;
    let _nats = start_nats(port, None, &tmp.path().join("nats.log"))?;
    let url = format!("nats://127.0.0.1:{port}");
    let namespaces: Vec<Netns> = (0..5)
        .map(|i| {
            let ns = Netns(format!("genl-bench-fleet-{}-{i}", std::process::id()));
            sh("ip", &["netns", "add", &ns.0])?;
            sh("ip", &["-n", &ns.0, "link", "add", "ifb0", "type", "ifb"])?;
            anyhow::Ok(ns)
        })
        .collect::<Result<_, _>>()?;
    let cache = tmp.path().join("cache");
    let bus = |host: &str| format!("[bus]\nurls = [\"{url}\"]\nhost = \"{host}\"\n");

    let operator = tmp.path().join("operator.toml");
    std::fs::write(
        &operator,
        format!(
            "{}[api]\nsocket = \"op.sock\"\n[plugins]\ndir = \"{}\"\nfamilies_dir = \"families.d\"\n",
            bus("operator"),
            plugins.display()
        ),
    )?;
    let op_bus = GatewayConfig::load(&operator)?
        .bus
        .context("the operator's [bus]")?;

    let mut gateways: Vec<Proc> = Vec::new();
    let mut rows = Vec::new();
    let n = if quick { 30 } else { 200 };
    for count in [1usize, 5, 50] {
        eprintln!("fleet call: starting gateways up to {count}");
        while gateways.len() < count {
            let i = gateways.len();
            let dir = tmp.path().join(format!("gw{i}"));
            let cfg = super::config(&dir, plugins, Some(&namespaces[i % 5].0), FAMILIES, &cache)?;
            let mut text = std::fs::read_to_string(&cfg)?;
            text.push_str(&bus(&format!("h{i:02}")));
            std::fs::write(&cfg, text)?;
            gateways.push(spawn_gateway(gateway_bin, &cfg)?.0);
        }
        let (samples, total) = rt.block_on(async {
            let client = FleetClient::connect(&op_bus).await?;
            // Every gateway connects in the background: wait for all.
            let deadline = Instant::now() + Duration::from_secs(120);
            let known = loop {
                let hosts = client.hosts(Duration::from_millis(1000)).await?;
                if hosts.len() >= count {
                    break hosts;
                }
                if Instant::now() > deadline {
                    bail!("only {} of {count} gateways on the bus", hosts.len());
                }
            };
            let request = FleetCall {
                prefix: &op_bus.prefix,
                family: "netdev",
                op: "dev-dump",
                input: "null",
                glob: "*",
                expect: &[],
                access: CallAccess::Read,
                timeout: Duration::from_secs(10),
            };
            let mut samples = Vec::with_capacity(n);
            let mut start = Instant::now();
            // The first five warm the plugins and connections, unmeasured.
            for i in 0..n + 5 {
                if i == 5 {
                    samples.clear();
                    start = Instant::now();
                }
                let t = Instant::now();
                let summary = client.call(&request, &known, |_| {}).await?;
                if !summary.all_ok() || summary.answered.len() != count {
                    bail!("a fleet call was not answered by all {count}: {summary:?}");
                }
                samples.push(t.elapsed());
            }
            anyhow::Ok((samples, start.elapsed()))
        })?;
        let mut samples = samples;
        let (rate, p50, p99) = summarise(&mut samples, total, n as f64);
        rows.push(Row {
            workload: "fleet call: netdev dev-dump".into(),
            path: format!("bus, {count} gateway(s)"),
            rate,
            unit: "calls/s",
            p50: Some(p50),
            p99: Some(p99),
            note: format!("{count} answer(s) per call, one nats-server; discovery excluded"),
        });
    }
    Ok(rows)
}
