//! The `genl-gateway` command: the daemon and its CLI.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use genl_gateway::config::GatewayConfig;
use genl_gateway::gateway::Gateway;
use genl_gateway::{api, client};
use hyper::Method;
use serde_json::Value;

const DEFAULT_CONFIG: &str = "/etc/genl-gateway/gateway.toml";
const DEFAULT_SOCKET: &str = "/run/genl-gateway/api.sock";

#[derive(Parser)]
#[command(
    name = "genl-gateway",
    version,
    about = "Generic netlink gateway: WebAssembly plugins per family, HTTP/JSON for applications",
    after_help = "Examples:\n  genl-gateway serve --config config/gateway.toml\n  genl-gateway check --config config/gateway.toml\n  genl-gateway new-plugin tcpm tcp_metrics\n  genl-gateway build-plugin plugins/tcpm --config config/gateway.toml\n  genl-gateway call nlctrl list\n  genl-gateway call nlctrl get '{\"name\": \"netdev\"}'\n  genl-gateway families\n  genl-gateway family netdev\n  genl-gateway events netdev --topic dev\n  genl-gateway plugins\n  genl-gateway reload netdev\n  genl-gateway fleet hosts\n  genl-gateway fleet call netdev dev-dump --hosts 'web*'"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The gateway configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Log as JSON lines instead of human-readable text.
        #[arg(long)]
        log_json: bool,
    },
    /// Validate the configuration and load every plugin without serving:
    /// one line a family, non-zero exit on any error.
    Check {
        /// The gateway configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Print JSON instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Create a plugin crate for FAMILY that builds, tests and loads as it is.
    NewPlugin {
        /// The plugin's name (crate NAME-plugin, component NAME.wasm).
        name: String,
        /// The generic netlink family it serves, e.g. tcp_metrics.
        family: String,
        /// Where to create it (default: plugins/NAME in a checkout, else ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The plugin SDK to depend on (default: found above the current directory).
        #[arg(long)]
        sdk: Option<PathBuf>,
        /// Start from a YNL spec: a bundled spec's name (e.g. netdev) or a .yaml file.
        /// The plugin embeds it and serves every operation of it.
        #[arg(long)]
        spec: Option<String>,
    },
    /// Build one plugin crate (wasm32-wasip2) and install its component and
    /// family file where the gateway configuration looks.
    BuildPlugin {
        /// The plugin crate (with its family.toml), e.g. the one new-plugin made.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The gateway configuration whose plugin and families directories
        /// receive it.
        #[arg(long, short, env = "GENL_GATEWAY_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Call an operation of a family's plugin and print its JSON answer.
    Call {
        /// The family, e.g. nlctrl.
        family: String,
        /// The operation, e.g. list.
        op: String,
        /// The JSON input (default: none).
        input: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show an operation's input fields (from its input schema), or with
    /// --json its input and output JSON Schemas.
    Op {
        /// The family, e.g. netdev.
        family: String,
        /// The operation, e.g. dev-get.
        op: String,
        /// Print the schemas as JSON instead of a field list.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Follow a family's events, one JSON line each.
    Events {
        /// The family, e.g. netdev.
        family: String,
        /// Only these topics (repeatable).
        #[arg(long)]
        topic: Vec<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List the plugins with their state, hash, limits and restarts.
    Plugins {
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Reload one family's plugin, or every family file when none is named.
    Reload {
        /// The family to reload.
        family: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one family: ids, ops, groups, policy, plugin and listener state.
    Family {
        /// The family.
        family: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List every family the kernel has and the plugin serving it.
    Families {
        /// Print the raw JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// The fleet on the NATS bus (`[bus]` in the gateway config).
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
}

#[derive(Subcommand)]
enum FleetCommand {
    /// Replay a family's events of every host (or one) from the JetStream
    /// stream, then follow it: one JSON line per event.
    Events {
        /// The family, e.g. netdev.
        family: String,
        /// Only this topic (gap markers are topic `_gap`).
        #[arg(long)]
        topic: Option<String>,
        /// Only this host.
        #[arg(long)]
        host: Option<String>,
        /// Start at a stream sequence (e.g. 1042) or an RFC 3339 time
        /// (default: the stream's oldest event).
        #[arg(long)]
        since: Option<genl_gateway::fleet::replay::Since>,
        /// Stop after this many events instead of following.
        #[arg(long)]
        count: Option<u64>,
        /// The gateway configuration whose `[bus]` names the servers.
        #[arg(long, short, env = "GENL_GATEWAY_CONFIG", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// List the gateways on the bus (NATS `$SRV.PING`): one line each.
    Hosts {
        /// How long to wait for gateways to answer, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        wait_ms: u64,
        /// Print one JSON object a line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        bus: BusArgs,
    },
    /// Call FAMILY OP on the gateways matching --hosts: one JSON line per
    /// host, then a summary line of who answered, failed and was silent.
    Call {
        /// The family, e.g. netdev.
        family: String,
        /// The operation, e.g. dev-dump.
        op: String,
        /// The JSON input (default: none); each host checks it.
        input: Option<String>,
        /// Which hosts: a glob over their names on the bus.
        #[arg(long, default_value = "*")]
        hosts: String,
        /// How long to wait for answers, in milliseconds.
        #[arg(long, default_value_t = 5000)]
        timeout: u64,
        /// How long discovery (`$SRV.PING`) waits, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        discover_ms: u64,
        /// Call on the write subject (needed for ops that change kernel
        /// state; NATS permissions grant it separately).
        #[arg(long)]
        write: bool,
        /// Hosts that must answer even if discovery misses them (e.g. from
        /// an inventory), comma-separated or repeated: silent if they don't.
        #[arg(long, value_delimiter = ',')]
        expect: Vec<String>,
        #[command(flatten)]
        bus: BusArgs,
    },
}

#[derive(clap::Args)]
struct BusArgs {
    /// The configuration whose [bus] gives the NATS servers, prefix and credentials.
    #[arg(long, short, env = "GENL_GATEWAY_CONFIG", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

#[derive(clap::Args)]
struct Conn {
    /// The gateway's API socket.
    #[arg(long, env = "GENL_GATEWAY_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

/// Exit code of a usage error (sysexits' EX_USAGE), distinct from 2,
/// which means the gateway answered with an error.
const EXIT_USAGE: u8 = 64;

/// `op`'s answer as a person reads it: the summary, then one line a field.
fn print_op_fields(body: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        print_json(body);
        return;
    };
    let name = v["op"].as_str().unwrap_or_default();
    emit(&format!(
        "{name}: {}\n",
        v["summary"].as_str().unwrap_or_default()
    ));
    if v["writes"].as_bool() == Some(true) {
        emit("(may change kernel state: needs a write token on TCP)\n");
    }
    match v.get("input").filter(|i| !i.is_null()) {
        None => emit("input: not described by the plugin (it checks its input itself)\n"),
        Some(schema) => {
            let lines = client::input_fields(schema);
            if lines.is_empty() {
                emit("input: none\n");
            } else {
                emit("input fields:\n");
                for l in lines {
                    emit(&format!("  {l}\n"));
                }
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors.
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { config, log_json } => {
            init_logging(log_json);
            let config = GatewayConfig::load(&config)?;
            // Before loading any plugin: a second gateway given a live
            // one's socket stops at once.
            api::ensure_free(&config.api.socket)?;
            let gateway = Gateway::start(config).await?;
            tokio::spawn(reload_on_sighup(gateway.clone()));
            tokio::select! {
                r = api::serve(gateway) => r?,
                _ = shutdown_signal() => tracing::info!("shutting down"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config, json } => check(&config, json).await,
        Command::NewPlugin {
            name,
            family,
            dir,
            sdk,
            spec,
        } => {
            let made = genl_gateway::scaffold::new_plugin(
                &name,
                &family,
                dir.as_deref(),
                sdk.as_deref(),
                spec.as_deref(),
            )?;
            let d = made.dir.display();
            emit(&format!(
                "created {d}\n\nnext:\n  cd {d}\n  cargo test                                                # native, with the SDK's fake kernel\n  genl-gateway build-plugin . --config <gateway.toml>       # build {name}.wasm, install it and family.toml\n  genl-gateway reload {family}                              # if the gateway is running without watch\n"
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::BuildPlugin { dir, config } => {
            let done = genl_gateway::scaffold::build_plugin(&dir, &config)?;
            emit(&format!(
                "installed {}\n{} {}\n\nnext:\n  genl-gateway check --config {}\n  genl-gateway reload {}        # or let the gateway's watch pick it up\n",
                done.component.display(),
                if done.family_file_written {
                    "installed"
                } else {
                    "kept the existing"
                },
                done.family_file.display(),
                config.display(),
                done.family
            ));
            Ok(ExitCode::SUCCESS)
        }
        Command::Call {
            family,
            op,
            input,
            conn,
        } => {
            if let Some(input) = &input {
                serde_json::from_str::<Value>(input).context("the input is not JSON")?;
            }
            let path = format!("/v1/families/{family}/ops/{op}");
            let (status, body) = client::request(&conn.socket, Method::POST, &path, input).await?;
            print_json(&body);
            Ok(if status.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Op {
            family,
            op,
            json,
            conn,
        } => {
            let path = format!("/v1/families/{family}/ops/{op}/schema");
            let (status, body) = client::request(&conn.socket, Method::GET, &path, None).await?;
            if json || !status.is_success() {
                print_json(&body);
            } else {
                print_op_fields(&body);
            }
            Ok(if status.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Events {
            family,
            topic,
            count,
            conn,
        } => {
            let mut path = format!("/v1/families/{family}/events");
            if !topic.is_empty() {
                path.push_str(&format!("?topic={}", topic.join(",")));
            }
            let mut seen = 0u64;
            let mut lagged = false;
            let failed = client::follow_events(&conn.socket, &path, |name, data| {
                emit(&format!("{data}\n"));
                if name == "lagged" {
                    lagged = true;
                    return false;
                }
                seen += 1;
                count.is_none_or(|c| seen < c)
            })
            .await?;
            if let Some((_, body)) = failed {
                print_json(&body);
                return Ok(ExitCode::from(2));
            }
            Ok(if lagged {
                ExitCode::from(3)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Plugins { json, conn } => {
            let (status, body) = client::request(&conn.socket, Method::GET, "/v1/plugins", None).await?;
            if json || !status.is_success() {
                print_json(&body);
            } else {
                print_plugin_table(&body);
            }
            Ok(if status.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Reload { family, conn } => {
            let path = match &family {
                Some(f) => format!("/v1/plugins/{f}/reload"),
                None => "/v1/reload".to_owned(),
            };
            let (status, body) = client::request(&conn.socket, Method::POST, &path, None).await?;
            print_json(&body);
            Ok(if status.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Family { family, conn } => {
            let (status, body) =
                client::request(&conn.socket, Method::GET, &format!("/v1/families/{family}"), None).await?;
            print_json(&body);
            Ok(if status.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Command::Fleet { command } => fleet(command).await,
        Command::Families { json, conn } => {
            let (status, body) = client::request(&conn.socket, Method::GET, "/v1/families", None).await?;
            if json || !status.is_success() {
                print_json(&body);
            } else {
                print_family_table(&body);
            }
            Ok(if status.is_success() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
    }
}

/// `fleet hosts` and `fleet call`.
async fn fleet(command: FleetCommand) -> anyhow::Result<ExitCode> {
    use genl_gateway::fleet::calls::CallAccess;
    use genl_gateway::fleet::fleet_cli::{FleetCall, FleetClient};
    use std::time::Duration;
    let bus_of = |path: &PathBuf| -> anyhow::Result<genl_gateway::fleet::BusConfig> {
        GatewayConfig::load(path)?.bus.with_context(|| {
            format!(
                "{} has no [bus]: add one with the NATS servers (docs/fleet.md)",
                path.display()
            )
        })
    };
    match command {
        FleetCommand::Events {
            family,
            topic,
            host,
            since,
            count,
            config,
        } => {
            let config = GatewayConfig::load(&config)?;
            let Some(bus) = config.bus else {
                anyhow::bail!(
                    "{} has no [bus]: fleet commands need the NATS servers (see docs/fleet.md)",
                    config.path.display()
                );
            };
            let query = genl_gateway::fleet::replay::Query {
                family,
                topic,
                host,
                since: since.unwrap_or(genl_gateway::fleet::replay::Since::Start),
                limit: count,
            };
            genl_gateway::fleet::replay::run(bus, query, &mut std::io::stdout().lock()).await?;
            Ok(ExitCode::SUCCESS)
        }
        FleetCommand::Hosts { wait_ms, json, bus } => {
            let config = bus_of(&bus.config)?;
            let client = FleetClient::connect(&config).await?;
            let hosts = client.hosts(Duration::from_millis(wait_ms)).await?;
            for h in &hosts {
                if json {
                    emit(&format!("{}\n", serde_json::to_string(h)?));
                } else {
                    emit(&format!(
                        "{:<24} {:<8} calls={:<6} prefix={} id={}\n",
                        h.host, h.version, h.calls, h.prefix, h.id
                    ));
                }
            }
            if !json {
                eprintln!("{} gateway(s) answered within {wait_ms} ms", hosts.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        FleetCommand::Call {
            family,
            op,
            input,
            hosts,
            timeout,
            discover_ms,
            write,
            expect,
            bus,
        } => {
            let config = bus_of(&bus.config)?;
            let client = FleetClient::connect(&config).await?;
            let known = client.hosts(Duration::from_millis(discover_ms)).await?;
            let request = FleetCall {
                prefix: &config.prefix,
                family: &family,
                op: &op,
                input: input.as_deref().unwrap_or(""),
                glob: &hosts,
                expect: &expect,
                access: if write {
                    CallAccess::Write
                } else {
                    CallAccess::Read
                },
                timeout: Duration::from_millis(timeout),
            };
            let summary = client
                .call(&request, &known, |answer| {
                    emit(&format!("{answer}\n"));
                })
                .await?;
            emit(&format!("{}\n", serde_json::json!({ "summary": summary })));
            if summary.answered.is_empty() && summary.failed.is_empty() && summary.silent.is_empty() {
                eprintln!(
                    "no gateway matched --hosts '{hosts}' ({} found by discovery; `genl-gateway fleet hosts` lists them)",
                    known.len()
                );
            }
            Ok(if summary.all_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
    }
}

/// Write to stdout; a closed pipe (`| head`) ends output quietly.
fn emit(text: &str) {
    use std::io::Write;
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// `check`: start the gateway's loading path (no API, no watching) and
/// report what became of each family file.
/// The family file's grants, each with what the kernel says of it now
/// (`kernel_admin`: its op flags carry GENL_ADMIN_PERM or
/// GENL_UNS_ADMIN_PERM; absent while the family is).
fn granted(
    config: &genl_gateway::config::FamilyConfig,
    kernel: Option<&genl_wire::FamilyInfo>,
) -> serde_json::Value {
    use genl_wire::consts::{GENL_ADMIN_PERM, GENL_UNS_ADMIN_PERM};
    let rows = config.grants().into_iter().map(|g| {
        let mut v = serde_json::to_value(&g).unwrap_or_default();
        if let Some(info) = kernel {
            let admin = info
                .ops
                .iter()
                .find(|o| o.id == u32::from(g.cmd))
                .map(|o| o.flags & (GENL_ADMIN_PERM | GENL_UNS_ADMIN_PERM) != 0);
            v["kernel_admin"] = admin.into();
        }
        v
    });
    serde_json::Value::Array(rows.collect())
}

async fn check(path: &std::path::Path, json: bool) -> anyhow::Result<ExitCode> {
    let mut config = GatewayConfig::load(path)?;
    config.watch = false;
    let gateway = Gateway::start(config).await?;
    gateway.until_loaded().await;
    let mut ok = true;
    let mut rows = Vec::new();
    // The kernel's names, for a hint when a configured one is absent
    // (family names are case-sensitive: IOAM6, TASKSTATS).
    let mut kernel_names: Option<Vec<String>> = None;
    for (name, entry) in gateway.families() {
        let file = entry.config.path.display().to_string();
        let info = gateway.resolver.cached(&name);
        let present = info.is_some();
        let mut warnings = Vec::new();
        match &info {
            Some(info) => warnings.extend(unknown_commands(&name, &entry.config, info)),
            None => {
                if kernel_names.is_none() {
                    kernel_names = Some(
                        gateway
                            .resolver
                            .list()
                            .await
                            .map(|l| l.into_iter().map(|f| f.name).collect())
                            .unwrap_or_default(),
                    );
                }
                let names = kernel_names.as_deref().unwrap_or_default();
                if let Some(h) = genl_gateway::hints::did_you_mean(&name, names.iter().map(String::as_str)) {
                    warnings.push(format!(
                        "the kernel has no family '{name}' but has '{h}': family names are case-sensitive; write family = \"{h}\""
                    ));
                }
            }
        }
        let row = match &entry.plugin {
            Ok(p) => serde_json::json!({
                "family": name, "file": file, "status": "ok", "present": present,
                "plugin": entry.config.plugin.display().to_string(),
                "ops": p.description().ops.len(), "topics": p.description().topics.len(),
                "granted": granted(&entry.config, gateway.resolver.cached(&name).as_deref()),
                "warnings": warnings,
            }),
            Err(e) => {
                ok = false;
                serde_json::json!({"family": name, "file": file, "status": "error", "error": e})
            }
        };
        rows.push(row);
    }
    // Files that do not parse are read again here rather than taken from
    // the background load, which may not have recorded them yet.
    let mut broken = gateway.broken_files();
    if let Ok(files) = gateway.config.load_families() {
        for e in files.into_iter().filter_map(Result::err) {
            broken.entry(e.path().to_owned()).or_insert_with(|| e.to_string());
        }
    }
    for (file, error) in broken {
        ok = false;
        rows.push(serde_json::json!({"file": file.display().to_string(), "status": "error", "error": error}));
    }
    if json {
        emit(&format!("{}\n", serde_json::json!({"ok": ok, "families": rows})));
    } else {
        let mut out = String::new();
        for r in &rows {
            let line = match r["status"].as_str() {
                Some("ok") => format!(
                    "ok     {:<14} {} ops, {} topics{}  ({})",
                    r["family"].as_str().unwrap_or("?"),
                    r["ops"],
                    r["topics"],
                    if r["present"] == true {
                        ""
                    } else {
                        "; family absent from the kernel now"
                    },
                    r["file"].as_str().unwrap_or("?"),
                ),
                _ => format!("error  {}", r["error"].as_str().unwrap_or("?")),
            };
            out.push_str(&line);
            out.push('\n');
            // What the operator granted, as the family's spec names it.
            for g in r["granted"].as_array().into_iter().flatten() {
                let what = match g["op"].as_str() {
                    Some(op) if g["in_spec"] == true => op.to_owned(),
                    Some(op) => format!(
                        "{op} (the spec has no {} of it)",
                        g["kind"].as_str().unwrap_or("?")
                    ),
                    None => "(no spec names it)".to_owned(),
                };
                let admin = match (g["kernel_admin"].as_bool(), g["admin_perm"] == true) {
                    (Some(true), _) => "  [the kernel requires CAP_NET_ADMIN (admin-perm)]",
                    (None, true) => "  [the spec says admin-perm: CAP_NET_ADMIN]",
                    _ => "",
                };
                out.push_str(&format!(
                    "         {:<4} {:>3} {what}{admin}\n",
                    g["kind"].as_str().unwrap_or("?"),
                    g["cmd"]
                ));
            }
            for w in r["warnings"].as_array().into_iter().flatten() {
                out.push_str(&format!(
                    "warn   {:<14} {}\n",
                    r["family"].as_str().unwrap_or("?"),
                    w.as_str().unwrap_or("?")
                ));
            }
        }
        out.push_str(if ok {
            "configuration OK\n"
        } else {
            "configuration has errors\n"
        });
        emit(&out);
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Allowlisted commands the family, as the kernel registered it, does not
/// have: the plugin could never use them, so the file is likely wrong.
fn unknown_commands(
    name: &str,
    config: &genl_gateway::config::FamilyConfig,
    info: &genl_wire::FamilyInfo,
) -> Vec<String> {
    let has = |cmd: u8| info.ops.iter().any(|o| o.id == u32::from(cmd));
    let known: Vec<String> = info.ops.iter().map(|o| o.id.to_string()).collect();
    [("do", &config.allow_do), ("dump", &config.allow_dump)]
        .into_iter()
        .flat_map(|(kind, list)| list.iter().map(move |c| (kind, *c)))
        .filter(|(_, c)| !has(*c))
        .map(|(kind, c)| {
            format!(
                "[commands] {kind} allows command {c}, which family {name} does not have (its commands: {})",
                known.join(", ")
            )
        })
        .collect()
}

fn print_json(body: &[u8]) {
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(&v).unwrap_or_default()
        )),
        Err(_) => emit(&format!("{}\n", String::from_utf8_lossy(body))),
    }
}

fn print_family_table(body: &[u8]) {
    let Ok(Value::Array(families)) = serde_json::from_slice::<Value>(body) else {
        print_json(body);
        return;
    };
    let mut out = format!(
        "{:<16} {:>6} {:>4} {:>4} {:>7}  PLUGIN\n",
        "NAME", "ID", "VER", "OPS", "GROUPS"
    );
    for f in families {
        let count = |k: &str| f[k].as_array().map_or(0, Vec::len);
        let id = if f["present"] == true {
            f["id"].to_string()
        } else {
            "absent".into()
        };
        let plugin = match &f["plugin"] {
            Value::Null => "-".to_owned(),
            p => p["state"].as_str().unwrap_or("?").to_owned(),
        };
        out.push_str(&format!(
            "{:<16} {:>6} {:>4} {:>4} {:>7}  {}\n",
            f["name"].as_str().unwrap_or("?"),
            id,
            f["version"].as_u64().map(|v| v.to_string()).unwrap_or_default(),
            count("ops"),
            count("mcast_groups"),
            plugin
        ));
    }
    emit(&out);
}

/// Text for one table cell, on one line: a newline would start a row of
/// its own, an escape sequence or a bidi override would reach the
/// terminal. The gateway's own escaping for plugin text, never cut.
fn printable(text: &str) -> String {
    genl_gateway::plugin::one_line(text, usize::MAX)
}

/// A plugin's LAST ERROR cell: a failed reload first (what is loaded is
/// not what its files now hold), then its own last error.
fn last_error(p: &Value) -> String {
    match (p["failed_reload"].as_str(), p["last_error"].as_str()) {
        (Some(why), None) => format!("reload failed, the previous version stays: {why}"),
        (Some(why), Some(last)) => {
            format!("reload failed, the previous version stays: {why}; its last error: {last}")
        }
        (None, last) => last.unwrap_or_default().to_owned(),
    }
}

fn print_plugin_table(body: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        print_json(body);
        return;
    };
    let mut out = format!(
        "{:<16} {:<10} {:>8} {:>9} {:>11}  {:<12} LAST ERROR\n",
        "FAMILY", "STATE", "RESTARTS", "INSTANCES", "MEM", "SHA256"
    );
    for p in v["plugins"].as_array().into_iter().flatten() {
        let mib = |v: &Value| v.as_u64().map(|b| format!("{}M", b >> 20)).unwrap_or_default();
        // Memory per instance and for the whole pool; instances live of size.
        let pool = &p["pool"];
        let mem = format!(
            "{}/{}",
            mib(&pool["memory_bytes_per_instance"]),
            mib(&pool["memory_bytes_total"])
        );
        let instances = format!(
            "{}/{}",
            pool["live"].as_u64().unwrap_or(0),
            pool["size"].as_u64().unwrap_or(0)
        );
        out.push_str(&format!(
            "{:<16} {:<10} {:>8} {:>9} {:>11}  {:<12} {}\n",
            p["family"].as_str().unwrap_or("?"),
            p["state"].as_str().unwrap_or("?"),
            p["restarts"].as_u64().unwrap_or(0),
            instances,
            mem,
            p["sha256"].as_str().map(|h| &h[..h.len().min(12)]).unwrap_or("-"),
            printable(&last_error(p))
        ));
    }
    for b in v["broken_files"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "broken: {}\n",
            printable(b["error"].as_str().unwrap_or("?"))
        ));
    }
    if let Some(bus) = v.get("bus").filter(|b| !b.is_null()) {
        out.push_str(&format!(
            "bus: {} as host {} (prefix {})\n",
            bus["state"].as_str().unwrap_or("?"),
            bus["host"].as_str().unwrap_or("?"),
            bus["prefix"].as_str().unwrap_or("?")
        ));
    }
    emit(&out);
}

fn init_logging(json: bool) {
    let spec = std::env::var("GENL_GATEWAY_LOG").unwrap_or_else(|_| "info".into());
    let mut filter = tracing_subscriber::EnvFilter::try_new(&spec).unwrap_or_else(|e| {
        eprintln!("warning: GENL_GATEWAY_LOG={spec:?} is not a valid filter ({e}); using info");
        tracing_subscriber::EnvFilter::new("info")
    });
    // At debug level wasmtime logs every byte a plugin writes to stdout and
    // every function it compiles: that would bypass the plugins' log rate
    // limit. Keep its internals quiet unless the operator asks for them.
    if !spec.contains("wasmtime") && !spec.contains("cranelift") {
        for quiet in [
            "wasmtime_wasi=info",
            "wasmtime_internal_cranelift=info",
            "cranelift_codegen=info",
            "wasmtime=info",
        ] {
            if let Ok(d) = quiet.parse() {
                filter = filter.add_directive(d);
            }
        }
    }
    // Colours only on a terminal: in a file or the journal the escape
    // sequences are noise, and would hide an escape a plugin smuggled in.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// SIGHUP re-reads every family file, as `POST /v1/reload` does.
async fn reload_on_sighup(gateway: std::sync::Arc<Gateway>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot handle SIGHUP; reload through the API instead");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading");
        for o in gateway.reload().await {
            genl_gateway::gateway::log_outcome(&o);
        }
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
