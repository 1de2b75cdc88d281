//! `genl-gateway new-plugin NAME FAMILY`: a plugin crate that builds, tests
//! and loads as it is, to start a new family's plugin from.

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
pub fn new_plugin(
    name: &str,
    family: &str,
    dir: Option<&Path>,
    sdk: Option<&Path>,
) -> Result<Scaffolded, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::BadName(name.to_owned()));
    }
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
    write(
        "src/lib.rs",
        TEMPLATE
            .replace("{{NAME}}", name)
            .replace("{{FAMILY}}", family)
            .replace("{{TYPE}}", &ty),
    )?;
    write(
        "family.toml",
        format!(
            "# Copy to the gateway's families.d/{name}.toml.\nfamily = \"{family}\"\nplugin = \"{name}.wasm\"\n# Multicast groups to deliver to on_notification.\ngroups = []\n\n[commands]\n# Command numbers the plugin may send. List only what it needs.\ndo = []\ndump = []\n"
        ),
    )?;
    Ok(Scaffolded { dir, in_workspace })
}

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
        let _kernel = FakeKernel::new(FamilyInfo {
            name: "{{FAMILY}}".into(),
            id: 42,
            version: 1,
            ..Default::default()
        });
        let out = {{TYPE}}::init(Config::new()).unwrap().call("info", Value::Null).unwrap();
        assert_eq!(out["name"], "{{FAMILY}}");
        assert_eq!(out["id"], 42);
    }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

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
