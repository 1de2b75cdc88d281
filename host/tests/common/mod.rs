//! Shared test fixtures: a real gateway process with a private config.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_owned()
}

/// The built plugin `name`, or a panic that says how to build it.
pub fn plugin(name: &str) -> PathBuf {
    let p = workspace()
        .join("target/plugins")
        .join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: run scripts/build-plugins.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

/// The gateway binary.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_genl-gateway")
}

/// A config directory with `gateway.toml` and `families.d/`.
pub struct TestConfig {
    pub dir: tempfile::TempDir,
}

impl TestConfig {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("families.d")).expect("families.d");
        let gateway = format!(
            "[api]\nsocket = \"api.sock\"\n[plugins]\ndir = \"{}\"\nfamilies_dir = \"families.d\"\n",
            workspace().join("target/plugins").display()
        );
        std::fs::write(dir.path().join("gateway.toml"), gateway).expect("gateway.toml");
        Self { dir }
    }

    pub fn family(&self, file: &str, text: &str) -> &Self {
        std::fs::write(self.dir.path().join("families.d").join(file), text).expect("family file");
        self
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("gateway.toml")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }
}

/// A running gateway; killed on drop.
pub struct Gateway {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Gateway {
    /// Start `serve` with `config` and wait until its socket answers.
    pub fn start(config: &TestConfig) -> Self {
        let log = config.dir.path().join("gateway.log");
        let child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(config.path())
            .env("GENL_GATEWAY_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn gateway");
        let mut gw = Gateway {
            child,
            socket: config.socket(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = gw.child.try_wait().expect("try_wait") {
                panic!("gateway exited with {status}:\n{}", gw.log_text());
            }
            if std::os::unix::net::UnixStream::connect(&gw.socket).is_ok() {
                return gw;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("gateway did not listen within 60 s:\n{}", gw.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run the CLI against this gateway.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .args(args)
            .arg("--socket")
            .arg(&self.socket)
            .output()
            .expect("run cli")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The nlctrl family file as bundled.
pub const NLCTRL: &str =
    "family = \"nlctrl\"\nplugin = \"nlctrl.wasm\"\n[commands]\ndo = [3]\ndump = [3]\n";
