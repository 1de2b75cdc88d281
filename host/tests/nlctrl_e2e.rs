//! The foundation slice end to end: the real gateway binary, the real nlctrl
//! plugin, the real kernel, checked against independent sources.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use common::{Gateway, NLCTRL, TestConfig};
use serde_json::Value;

/// An independent GETFAMILY dump: raw socket calls and hand-parsed
/// attributes, sharing no code with the gateway.
fn raw_family_dump() -> BTreeMap<String, u16> {
    // SAFETY: plain socket calls on a descriptor this function owns and closes.
    unsafe {
        let fd = libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 16);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // nlmsghdr(16) + genlmsghdr(4): GENL_ID_CTRL, REQUEST|DUMP, cmd 3 v1.
        let mut req = Vec::new();
        req.extend_from_slice(&20u32.to_ne_bytes());
        req.extend_from_slice(&0x10u16.to_ne_bytes());
        req.extend_from_slice(&(0x1u16 | 0x300).to_ne_bytes());
        req.extend_from_slice(&1u32.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.extend_from_slice(&[3, 1, 0, 0]);
        let mut addr: libc::sockaddr_nl = std::mem::zeroed();
        addr.nl_family = libc::AF_NETLINK as u16;
        let sent = libc::sendto(
            fd,
            req.as_ptr().cast(),
            req.len(),
            0,
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        );
        assert_eq!(sent as usize, req.len());
        let mut out = BTreeMap::new();
        let mut buf = vec![0u8; 65536];
        'recv: loop {
            let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
            assert!(n > 0, "recv: {}", std::io::Error::last_os_error());
            let mut off = 0usize;
            while off + 16 <= n as usize {
                let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
                if kind == 3 {
                    break 'recv;
                }
                assert_ne!(kind, 2, "kernel answered the dump with an error");
                let (mut name, mut id) = (String::new(), 0u16);
                let mut a = off + 20;
                while a + 4 <= off + len {
                    let alen = u16::from_ne_bytes(buf[a..a + 2].try_into().unwrap()) as usize;
                    let atype = u16::from_ne_bytes(buf[a + 2..a + 4].try_into().unwrap()) & 0x3fff;
                    let payload = &buf[a + 4..a + alen];
                    match atype {
                        1 => id = u16::from_ne_bytes(payload.try_into().unwrap()),
                        2 => name = String::from_utf8_lossy(payload).trim_end_matches('\0').to_owned(),
                        _ => {}
                    }
                    a += (alen + 3) & !3;
                }
                out.insert(name, id);
                off += (len + 3) & !3;
            }
        }
        libc::close(fd);
        out
    }
}

/// What iproute2's `genl ctrl list` says. `genl` must run and succeed
/// (scripts/setup.sh installs iproute2): a missing tool fails the test.
fn iproute2_families() -> BTreeMap<String, u16> {
    let out = Command::new("genl")
        .args(["ctrl", "list"])
        .output()
        .expect("run genl (iproute2; scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "genl ctrl list failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("genl prints UTF-8");
    let mut families = BTreeMap::new();
    let mut name = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("Name: ") {
            name = Some(n.to_owned());
        } else if let Some(rest) = line.strip_prefix("ID: ") {
            let hex = rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_start_matches("0x");
            let id = u16::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("genl ID {rest:?}: {e}"));
            let name = name
                .take()
                .unwrap_or_else(|| panic!("genl printed an ID before a Name: {text}"));
            families.insert(name, id);
        }
    }
    assert!(
        families.contains_key("nlctrl"),
        "no nlctrl in genl ctrl list: {text}"
    );
    families
}

fn as_map(list: &Value) -> BTreeMap<String, u16> {
    list.as_array()
        .expect("list answers an array")
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().to_owned(),
                f["id"].as_u64().unwrap() as u16,
            )
        })
        .collect()
}

#[test]
fn nlctrl_list_matches_the_kernel() {
    let config = TestConfig::new();
    config.family("nlctrl.toml", NLCTRL);
    let gw = Gateway::start(&config);

    let out = gw.cli(&["call", "nlctrl", "list"]);
    assert!(
        out.status.success(),
        "call failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        gw.log_text()
    );
    let listed: Value = serde_json::from_slice(&out.stdout).expect("the CLI prints JSON");
    let via_gateway = as_map(&listed);

    let raw = raw_family_dump();
    assert!(
        raw.contains_key("nlctrl") && raw.len() >= 5,
        "raw dump looks wrong: {raw:?}"
    );
    assert_eq!(via_gateway, raw, "gateway and raw GETFAMILY dump disagree");
    assert_eq!(
        via_gateway,
        iproute2_families(),
        "gateway and `genl ctrl list` disagree"
    );

    // Ops and groups come through decoded: nlctrl has GETFAMILY (3) with
    // do and dump, and its `notify` group.
    let nlctrl = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "nlctrl")
        .unwrap();
    let getfamily = nlctrl["ops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["id"] == 3)
        .unwrap();
    assert!(
        getfamily["caps"]
            .as_array()
            .unwrap()
            .contains(&Value::from("dump"))
    );
    assert_eq!(nlctrl["mcast_groups"][0]["name"], "notify");

    // `get` by name agrees with the list, and an unknown name is a 404-style error.
    let out = gw.cli(&["call", "nlctrl", "get", r#"{"name": "nlctrl"}"#]);
    assert!(out.status.success());
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["id"], 0x10);
    let out = gw.cli(&["call", "nlctrl", "get", r#"{"name": "no_such_family"}"#]);
    assert_eq!(out.status.code(), Some(2));
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["error"]["code"], "not-found");

    // The families endpoint shows the kernel's families with the serving plugin.
    let out = gw.cli(&["families", "--json"]);
    assert!(out.status.success());
    let families: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(as_map(&families), raw);
    let served: Vec<_> = families
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["plugin"]["state"] == "ready")
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(served, ["nlctrl"]);
    assert_eq!(families[0]["plugin"]["description"]["ops"][0]["name"], "list");
}

#[test]
fn plugin_requests_outside_the_allowlist_are_refused() {
    let config = TestConfig::new();
    // GETFAMILY allowed as a dump only: `get` (a do request) must be refused
    // by the host before anything reaches the kernel.
    config.family(
        "nlctrl.toml",
        "family = \"nlctrl\"\nplugin = \"nlctrl.wasm\"\n[commands]\ndump = [3]\n",
    );
    let gw = Gateway::start(&config);
    let out = gw.cli(&["call", "nlctrl", "get", r#"{"name": "nlctrl"}"#]);
    assert_eq!(out.status.code(), Some(2));
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["error"]["code"], "denied", "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[commands] do"),
        "{err}"
    );
    assert!(gw.cli(&["call", "nlctrl", "list"]).status.success());
}
