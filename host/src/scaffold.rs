//! `genl-gateway new-plugin NAME FAMILY`: a plugin crate that builds, tests
//! and loads as it is, to start a new family's plugin from; and
//! `genl-gateway build-plugin DIR --config FILE`: build that one crate's
//! component and install it, with its family file, where the config looks.

use std::path::{Path, PathBuf};

/// Why the crate could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// NAME is not usable as a crate and file name.
    #[error(
        "'{0}' is not a plugin name: use lower-case letters, digits, '_' and '-', starting with a letter"
    )]
    BadName(String),
    /// The target directory exists.
    #[error("{0} already exists; choose another name or --dir")]
    Exists(PathBuf),
    /// No plugin SDK was found to depend on.
    #[error("cannot find plugin-sdk/ above {0}; pass --sdk PATH to the genl-gateway checkout's plugin-sdk")]
    NoSdk(PathBuf),
    /// `--spec` names no bundled spec and no readable file, or it does not load.
    #[error("--spec {spec}: {message}")]
    Spec {
        /// What was given.
        spec: String,
        /// What is wrong.
        message: String,
    },
    /// The crate has no usable family.toml.
    #[error("{path}: {message} (new-plugin writes one: family = \"NAME\", plugin = \"NAME.wasm\")")]
    FamilyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// cargo failed or built no component.
    #[error("building {dir}: {message}")]
    Build {
        /// The crate.
        dir: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The gateway configuration could not be read.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Writing failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What was created.
#[derive(Debug)]
pub struct Scaffolded {
    /// The crate's directory.
    pub dir: PathBuf,
    /// Whether it landed inside the gateway's workspace (plugins/).
    pub in_workspace: bool,
}

fn valid_name(name: &str) -> bool {
    name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn camel(name: &str) -> String {
    name.split(['_', '-'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The crate's name, in cargo's usual form: `tcp_metrics` -> `tcp-metrics-plugin`.
pub fn crate_name(name: &str) -> String {
    format!("{}-plugin", name.replace('_', "-"))
}

/// Walk up from `from` to a directory holding `plugin-sdk/Cargo.toml`.
fn find_checkout(from: &Path) -> Option<PathBuf> {
    from.ancestors()
        .find(|d| d.join("plugin-sdk/Cargo.toml").is_file())
        .map(Path::to_owned)
}

/// `to` relative to `from` (both absolute), for a portable path dependency.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

/// Create the crate for plugin `name` serving `family`.
///
/// With `spec` (a bundled spec's name or a `.yaml` file), the crate embeds
/// that YNL spec and serves every operation of it through the SDK's
/// `ynl::Service`, ready for behaviour of its own; `family.toml` allows the
/// spec's read operations (its `*-get` do requests and its dumps).
pub fn new_plugin(
    name: &str,
    family: &str,
    dir: Option<&Path>,
    sdk: Option<&Path>,
    spec: Option<&str>,
) -> Result<Scaffolded, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::BadName(name.to_owned()));
    }
    let spec = spec.map(load_spec).transpose()?;
    let cwd = std::env::current_dir().map_err(|source| ScaffoldError::Io {
        path: PathBuf::from("."),
        source,
    })?;
    let checkout = find_checkout(&cwd);
    let dir = match (dir, &checkout) {
        (Some(d), _) => cwd.join(d),
        (None, Some(root)) => root.join("plugins").join(name),
        (None, None) => cwd.join(name),
    };
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir));
    }
    let sdk = match (sdk, &checkout) {
        (Some(s), _) => cwd.join(s),
        (None, Some(root)) => root.join("plugin-sdk"),
        (None, None) => return Err(ScaffoldError::NoSdk(cwd)),
    };
    let in_workspace = checkout
        .as_ref()
        .is_some_and(|root| dir.parent() == Some(&root.join("plugins")));
    let sdk_rel = relative(&dir, &sdk.canonicalize().unwrap_or(sdk.clone()));
    let ty = camel(name);
    let write = |rel: &str, text: String| {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ScaffoldError::Io {
                path: parent.to_owned(),
                source,
            })?;
        }
        std::fs::write(&path, text).map_err(|source| ScaffoldError::Io { path, source })
    };
    // Outside the gateway's workspace the crate is a workspace of its own.
    let workspace = if in_workspace { "" } else { "\n[workspace]\n" };
    write(
        "Cargo.toml",
        format!(
            r#"[package]
name = "{crate_name}"
version = "0.1.0"
edition = "2024"
description = "genl-gateway plugin for the {family} generic netlink family."
publish = false

[lib]
# cdylib: the wasm32-wasip2 component; rlib: native unit tests.
crate-type = ["cdylib", "rlib"]

[dependencies]
genl-plugin-sdk = {{ path = "{sdk}" }}
serde_json = "1"
{workspace}"#,
            sdk = sdk_rel.display(),
            crate_name = crate_name(name),
        ),
    )?;
    let template = if spec.is_some() { TEMPLATE_SPEC } else { TEMPLATE };
    write(
        "src/lib.rs",
        template
            .replace("{{NAME}}", name)
            .replace("{{FAMILY}}", family)
            .replace("{{TYPE}}", &ty),
    )?;
    let (groups, do_cmds, dump_cmds) = match &spec {
        Some((text, parsed)) => {
            write("spec.yaml", text.clone())?;
            read_grants(parsed)
        }
        None => (String::new(), String::new(), String::new()),
    };
    write(
        "family.toml",
        format!(
            "# Copy to the gateway's families.d/{name}.toml.\nfamily = \"{family}\"\nplugin = \"{name}.wasm\"\n# Multicast groups to deliver to on_notification.\ngroups = [{groups}]\n\n[commands]\n# Command numbers the plugin may send. List only what it needs.\ndo = [{do_cmds}]\ndump = [{dump_cmds}]\n"
        ),
    )?;
    Ok(Scaffolded { dir, in_workspace })
}

/// The spec's text and the loaded spec, from a bundled name or a file.
fn load_spec(spec: &str) -> Result<(String, genl_plugin_sdk::ynl::Spec), ScaffoldError> {
    let err = |message: String| ScaffoldError::Spec {
        spec: spec.to_owned(),
        message,
    };
    let text = match genl_plugin_sdk::ynl::bundled::text(spec) {
        Some(t) => t.to_owned(),
        None => std::fs::read_to_string(spec).map_err(|e| {
            err(format!(
                "neither a bundled spec ({}) nor a readable file: {e}",
                genl_plugin_sdk::ynl::bundled::names()
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?,
    };
    let parsed = genl_plugin_sdk::ynl::Spec::load(&text).map_err(|e| err(e.to_string()))?;
    Ok((text, parsed))
}

/// The family file's starting grants from a spec: every multicast group,
/// the `*-get` do requests and every dump, each number commented with its
/// operation's name. State-changing operations are left for the operator.
fn read_grants(spec: &genl_plugin_sdk::ynl::Spec) -> (String, String, String) {
    let groups = spec
        .mcast_groups
        .iter()
        .map(|g| format!("\"{g}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let list = |dump: bool| {
        let items: Vec<String> = spec
            .ops
            .iter()
            .filter(|o| {
                if dump {
                    o.dump.is_some()
                } else {
                    o.do_.is_some() && o.name.ends_with("-get")
                }
            })
            .filter_map(|o| Some(format!("\n    {}, # {}", o.request_value?, o.name)))
            .collect();
        if items.is_empty() {
            String::new()
        } else {
            format!("{}\n", items.concat())
        }
    };
    (groups, list(false), list(true))
}

const TEMPLATE_SPEC: &str = r#"//! The {{NAME}} plugin: serves the `{{FAMILY}}` generic netlink family from
//! its YNL spec (`spec.yaml`, embedded at build time). Every operation of the
//! spec is offered (`NAME` for a do, `NAME-dump` for a dump) and every
//! notification published under its operation's name; add behaviour of
//! your own (derived fields, friendlier operations) around it.

use genl_plugin_sdk::prelude::*;
use genl_plugin_sdk::ynl::{Service, Spec};

const SPEC: &str = include_str!("../spec.yaml");

/// The plugin: the spec's service, plus whatever state your own ops need.
pub struct {{TYPE}} {
    ynl: Service,
}

impl Plugin for {{TYPE}} {
    fn init(_config: Config) -> Result<Self, String> {
        let spec = Spec::load(SPEC).map_err(|e| e.to_string())?;
        Ok({{TYPE}} { ynl: Service::new(spec) })
    }

    fn describe(&self) -> PluginDescription {
        // Add your own operations with `.op(name, summary, writes)`.
        self.ynl.describe().version(env!("CARGO_PKG_VERSION"))
    }

    fn call(&mut self, op: &str, input: Value) -> Result<Value, CallError> {
        // Match your own operations first; the rest are the spec's.
        self.ynl.serve(op, &input)
    }

    fn on_notification(&mut self, _group: &str, message: Message) {
        match self.ynl.notification(&message) {
            Some((topic, Ok(payload))) => events::publish(&topic, &payload),
            Some((topic, Err(e))) => log::warn(&format!("{topic}: {}", e.message)),
            None => {}
        }
    }
}

export_plugin!({{TYPE}});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_loads_and_its_operations_are_offered() {
        let plugin = {{TYPE}}::init(Config::new()).unwrap();
        assert!(!plugin.describe().ops.is_empty());
    }
}
"#;

const TEMPLATE: &str = r#"//! The {{NAME}} plugin: serves the `{{FAMILY}}` generic netlink family.
//!
//! Operations:
//! - `info`: the family as the kernel registered it (needs no commands).

use genl_plugin_sdk::prelude::*;

/// The plugin's state lives here; `init` builds it from the family file's
/// `[config]` table.
pub struct {{TYPE}};

impl Plugin for {{TYPE}} {
    fn init(_config: Config) -> Result<Self, String> {
        Ok({{TYPE}})
    }

    fn describe(&self) -> PluginDescription {
        PluginDescription::new("{{FAMILY}}")
            .version(env!("CARGO_PKG_VERSION"))
            .op("info", "The family as the kernel registered it", false)
    }

    fn call(&mut self, op: &str, _input: Value) -> Result<Value, CallError> {
        match op {
            "info" => {
                let f = kernel::family()?;
                Ok(json!({
                    "name": f.name,
                    "id": f.id,
                    "version": f.version,
                    "ops": f.ops.iter().map(|o| o.id).collect::<Vec<_>>(),
                    "groups": f.mcast_groups.iter().map(|g| g.name.clone()).collect::<Vec<_>>(),
                }))
            }
            _ => Err(CallError::unknown_op(op)),
        }
    }
}

export_plugin!({{TYPE}});

#[cfg(test)]
mod tests {
    use super::*;
    use genl_plugin_sdk::testing::FakeKernel;

    #[test]
    fn info_describes_the_family() {
        let kernel = FakeKernel::new(FamilyInfo {
            name: "{{FAMILY}}".into(),
            id: 42,
            version: 1,
            ..Default::default()
        });
        // Requests the family file does not allow are refused here as the
        // gateway refuses them.
        kernel.family_file("family.toml", include_str!("../family.toml")).unwrap();
        let out = {{TYPE}}::init(Config::new()).unwrap().call("info", Value::Null).unwrap();
        assert_eq!(out["name"], "{{FAMILY}}");
        assert_eq!(out["id"], 42);
    }
}
"#;

/// What `build-plugin` installed.
#[derive(Debug)]
pub struct Installed {
    /// The family the plugin serves.
    pub family: String,
    /// The component, in the config's plugin directory.
    pub component: PathBuf,
    /// The family file in the config's families directory.
    pub family_file: PathBuf,
    /// Whether that family file was copied now (an existing one is the
    /// operator's and is left as it is).
    pub family_file_written: bool,
}

/// Build the plugin crate in `dir` for wasm32-wasip2 and install it where
/// the gateway configured by `config` looks: the component as the file its
/// `family.toml` names (`plugin = "NAME.wasm"`) in the plugin directory, and
/// `family.toml` as `NAME.toml` in the families directory unless one is
/// there already.
pub fn build_plugin(dir: &Path, config: &Path) -> Result<Installed, ScaffoldError> {
    let family_toml = dir.join("family.toml");
    let bad = |message: String| ScaffoldError::FamilyFile {
        path: family_toml.clone(),
        message,
    };
    let text = std::fs::read_to_string(&family_toml).map_err(|e| bad(e.to_string()))?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| bad(e.message().to_owned()))?;
    let field = |k: &str| {
        table
            .get(k)
            .and_then(toml::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| bad(format!("no `{k}` string")))
    };
    let family = field("family")?;
    let plugin = field("plugin")?;
    let plugin_file = Path::new(&plugin)
        .file_name()
        .map(PathBuf::from)
        .filter(|f| f.extension().is_some_and(|e| e == "wasm"))
        .ok_or_else(|| bad(format!("plugin = \"{plugin}\" is not a NAME.wasm file name")))?;
    let gateway = crate::config::GatewayConfig::load(config)?;

    let built = cargo_build(dir)?;
    let copy = |from: &Path, to: &Path| {
        std::fs::copy(from, to)
            .map(drop)
            .map_err(|source| ScaffoldError::Io {
                path: to.to_owned(),
                source,
            })
    };
    let component = gateway.plugin_dir.join(&plugin_file);
    // Write then rename, so a watching gateway never loads half a file.
    let partial = gateway
        .plugin_dir
        .join(format!(".{}.partial", plugin_file.display()));
    copy(&built, &partial)?;
    std::fs::rename(&partial, &component).map_err(|source| ScaffoldError::Io {
        path: component.clone(),
        source,
    })?;
    let stem = plugin_file.with_extension("");
    let family_file = gateway.families_dir.join(stem.with_extension("toml"));
    let family_file_written = !family_file.exists();
    if family_file_written {
        copy(&family_toml, &family_file)?;
    }
    Ok(Installed {
        family,
        component,
        family_file,
        family_file_written,
    })
}

/// `cargo build --release --target wasm32-wasip2` of the crate in `dir`;
/// the component cargo reports for it, wherever the target directory is.
fn cargo_build(dir: &Path) -> Result<PathBuf, ScaffoldError> {
    let build = |message: String| ScaffoldError::Build {
        dir: dir.to_owned(),
        message,
    };
    let manifest = dir
        .join("Cargo.toml")
        .canonicalize()
        .map_err(|e| build(format!("no Cargo.toml: {e}")))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--message-format=json-render-diagnostics")
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| build(format!("cannot run cargo: {e}")))?;
    if !out.status.success() {
        return Err(build(format!(
            "cargo build failed ({}); is the target installed? rustup target add wasm32-wasip2",
            out.status
        )));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter(|m| m["manifest_path"].as_str().map(Path::new) == Some(manifest.as_path()))
        .filter(|m| {
            m["target"]["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "cdylib"))
        })
        .flat_map(|m| {
            m["filenames"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|f| f.as_str().map(PathBuf::from))
        })
        .find(|f| f.extension().is_some_and(|e| e == "wasm"))
        .ok_or_else(|| {
            build("cargo built no .wasm component (the crate needs crate-type = [\"cdylib\", ...])".into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_started_from_a_spec_embeds_it_and_allows_its_reads() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("nd");
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
        let made = new_plugin("nd", "netdev", Some(&dir), Some(&sdk), Some("netdev")).expect("scaffold");
        let spec = std::fs::read_to_string(made.dir.join("spec.yaml")).expect("spec.yaml");
        assert_eq!(Some(spec.as_str()), genl_plugin_sdk::ynl::bundled::text("netdev"));
        let lib = std::fs::read_to_string(made.dir.join("src/lib.rs")).expect("lib.rs");
        assert!(lib.contains("Service::new(spec)") && lib.contains("include_str!(\"../spec.yaml\")"));
        let family: toml::Table =
            toml::from_str(&std::fs::read_to_string(made.dir.join("family.toml")).expect("family.toml"))
                .expect("family.toml is TOML");
        // linux/netdev.h: NETDEV_CMD_DEV_GET = 1, NETDEV_CMD_QSTATS_GET = 12
        // (dump only), NETDEV_CMD_BIND_RX = 13 (a write: not granted).
        let list = |k: &str| -> Vec<i64> {
            family["commands"][k]
                .as_array()
                .expect("list")
                .iter()
                .filter_map(toml::Value::as_integer)
                .collect()
        };
        assert!(list("do").contains(&1) && !list("do").contains(&12) && !list("do").contains(&13));
        assert!(list("dump").contains(&1) && list("dump").contains(&12));
        assert_eq!(
            family["groups"].as_array().map(Vec::len),
            Some(2),
            "mgmt, page-pool"
        );
        let e = new_plugin(
            "nd2",
            "netdev",
            Some(&tmp.path().join("nd2")),
            Some(&sdk),
            Some("no-such-spec"),
        )
        .expect_err("unknown spec");
        assert!(e.to_string().contains("netdev"), "lists the bundled specs: {e}");
    }

    #[test]
    fn names_and_paths() {
        assert!(valid_name("tcp_metrics") && valid_name("a1-b"));
        assert!(!valid_name("Bad") && !valid_name("1x") && !valid_name("a/b") && !valid_name(""));
        assert_eq!(camel("tcp_metrics"), "TcpMetrics");
        assert_eq!(
            relative(Path::new("/a/b/plugins/x"), Path::new("/a/b/plugin-sdk")),
            PathBuf::from("../../plugin-sdk")
        );
    }
}
