//! The API socket's set-up: mode and group as configured (read back with
//! stat), a live gateway's socket and non-socket files never replaced, a
//! stale socket replaced, a world-writable directory warned about.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::process::Command;

use common::{Gateway, NLCTRL, TestConfig, binary, http};

/// Run `serve`, which must fail; its stderr.
fn serve_fails(config: &TestConfig) -> String {
    let out = Command::new(binary())
        .args(["serve", "--config"])
        .arg(config.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve should fail");
    String::from_utf8(out.stderr).unwrap()
}

/// The id of group `name`, from `getent group` (not the gateway's lookup).
fn gid_of(name: &str) -> u32 {
    let out = Command::new("getent").args(["group", name]).output().unwrap();
    assert!(out.status.success(), "no group {name}");
    String::from_utf8(out.stdout)
        .unwrap()
        .split(':')
        .nth(2)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_socket_gets_its_mode_and_group() {
    let config = TestConfig::new();
    config
        .set("api", "socket_mode = \"0640\"")
        .set("api", "socket_group = \"daemon\"")
        .family("nlctrl.toml", NLCTRL);
    let gw = Gateway::start(&config);
    let meta = std::fs::symlink_metadata(&gw.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(meta.gid(), gid_of("daemon"));
    // No private directory is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(config.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_file_at_the_socket_path_is_never_deleted() {
    let config = TestConfig::new();
    config.family("nlctrl.toml", NLCTRL);
    std::fs::write(config.socket(), b"precious").unwrap();
    let err = serve_fails(&config);
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read(config.socket()).unwrap(), b"precious");

    // A symlink there (to a file whose mode must not change) likewise.
    let victim = config.dir.path().join("victim");
    std::fs::write(&victim, b"x").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::remove_file(config.socket()).unwrap();
    std::os::unix::fs::symlink(&victim, config.socket()).unwrap();
    let err = serve_fails(&config);
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::metadata(&victim).unwrap().mode() & 0o7777, 0o600);
    assert!(
        std::fs::symlink_metadata(config.socket())
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn a_live_gateways_socket_is_not_taken_and_a_stale_one_is_replaced() {
    let config = TestConfig::new();
    config.family("nlctrl.toml", NLCTRL);
    // A socket left by a process that is gone.
    drop(std::os::unix::net::UnixListener::bind(config.socket()).unwrap());
    // Until every child that another test forked meanwhile has exec'd, it
    // holds a copy of the listener, which still answers: the gateway would
    // take it for a live one, or the harness for the gateway (a CI run saw
    // the harness connect, then be refused once the copy closed).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(config.socket()).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stale socket still answers"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let gw = Gateway::start(&config);
    let sock = gw.socket.to_str().unwrap().to_owned();
    assert_eq!(http(&sock, "GET", "/healthz", &[], b"").0, 200);

    let err = serve_fails(&config);
    assert!(err.contains("another gateway is serving"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    // The first still serves on its socket.
    assert_eq!(http(&sock, "GET", "/healthz", &[], b"").0, 200);
}

#[test]
fn a_world_writable_socket_directory_is_warned_about() {
    let config = TestConfig::new();
    let shared = config.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    config
        .set("api", "socket = \"shared/api.sock\"")
        .family("nlctrl.toml", NLCTRL);
    let log_path = config.dir.path().join("gateway.log");
    let mut child = Command::new(binary())
        .args(["serve", "--config"])
        .arg(config.path())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let socket = shared.join("api.sock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "gateway exited");
        assert!(std::time::Instant::now() < deadline, "no socket");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.contains("world-writable without the sticky bit"), "{log}");
}
