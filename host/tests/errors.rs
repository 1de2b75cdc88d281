//! The error model against sources outside the code: docs/api.md's tables,
//! the kernel's errno headers, libc's constants, and the gateway's answers
//! on the wire.

mod common;

use std::collections::BTreeMap;

use common::{Gateway, NLCTRL, Netns, TestConfig, http, workspace};
use genl_gateway::api::{ErrorCode, errno_statuses};
use serde_json::Value;

/// `#define ENAME number` lines of the kernel's errno headers.
fn kernel_errnos() -> BTreeMap<String, i32> {
    let mut out = BTreeMap::new();
    for file in [
        "/usr/include/asm-generic/errno-base.h",
        "/usr/include/asm-generic/errno.h",
    ] {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("{file}: {e} (scripts/setup.sh installs linux-libc-dev)"));
        for line in text.lines() {
            let mut it = line.split_whitespace();
            if let (Some("#define"), Some(name), Some(num)) = (it.next(), it.next(), it.next())
                && let Ok(n) = num.parse()
            {
                out.insert(name.to_owned(), n);
            }
        }
    }
    assert!(out.len() > 100, "{out:?}");
    out
}

/// The rows of the markdown table that follows `heading` in docs/api.md,
/// as cells.
fn table_after(heading: &str, first_header_cell: &str) -> Vec<Vec<String>> {
    let doc = std::fs::read_to_string(workspace().join("docs/api.md")).unwrap();
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading} in docs/api.md"));
    let rest = &doc[start..];
    let table = rest
        .find(&format!("| {first_header_cell} |"))
        .unwrap_or_else(|| panic!("no table under {heading}"));
    rest[table..]
        .lines()
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_owned())
                .collect()
        })
        .collect()
}

fn codes_in(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

#[test]
fn the_documented_status_table_is_the_code_table() {
    let mut documented = BTreeMap::new();
    for row in table_after("## Errors", "status") {
        let status: u16 = row[0].parse().unwrap_or_else(|_| panic!("status {row:?}"));
        for code in codes_in(&row[1]) {
            assert!(
                documented.insert(code.clone(), status).is_none(),
                "{code} documented twice"
            );
        }
    }
    let table: BTreeMap<String, u16> = ErrorCode::ALL
        .iter()
        .map(|c| (c.as_str().to_owned(), c.status().as_u16()))
        .collect();
    assert_eq!(documented, table);
}

#[test]
fn the_documented_errno_table_is_the_errno_table_and_client_mistakes_are_4xx() {
    let kernel = kernel_errnos();
    let documented: BTreeMap<i32, u16> = table_after("errno's status from this table", "errno")
        .iter()
        .map(|row| {
            let name = &codes_in(&row[0])[0];
            let n = *kernel
                .get(name)
                .unwrap_or_else(|| panic!("{name} is no kernel errno"));
            (n, row[1].parse().unwrap())
        })
        .collect();
    let table: BTreeMap<i32, u16> = errno_statuses().collect();
    assert_eq!(documented, table);
    // The client mistakes the issue names, by the kernel's numbering.
    for name in [
        "EINVAL",
        "ERANGE",
        "E2BIG",
        "ENAMETOOLONG",
        "EADDRNOTAVAIL",
        "EAFNOSUPPORT",
        "EPROTONOSUPPORT",
        "EMSGSIZE",
    ] {
        let status = table[&kernel[name]];
        assert!((400..500).contains(&status), "{name} answers {status}");
    }
}

#[test]
fn every_kernel_errno_has_its_name() {
    for (name, n) in kernel_errnos() {
        let got = genl_wire::errno_name(n);
        // EWOULDBLOCK and EDEADLOCK are aliases (defined by name, so not
        // numeric here); every numeric define is the number's one name.
        assert_eq!(got, Some(name.as_str()), "errno {n}");
    }
    for (n, name) in [
        (libc::EADDRNOTAVAIL, "EADDRNOTAVAIL"),
        (libc::EPROTONOSUPPORT, "EPROTONOSUPPORT"),
        (libc::ENOTCONN, "ENOTCONN"),
        (libc::EHWPOISON, "EHWPOISON"),
        (libc::EAGAIN, "EAGAIN"),
        (libc::ENOTSUP, "EOPNOTSUPP"),
    ] {
        assert_eq!(genl_wire::errno_name(n), Some(name));
    }
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

/// GENL_NAMSIZ from the kernel's uapi header.
fn genl_namsiz() -> usize {
    let text = std::fs::read_to_string("/usr/include/linux/genetlink.h").unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("#define GENL_NAMSIZ"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("GENL_NAMSIZ in linux/genetlink.h")
}

/// Method, path, body, expected status, code, and words in the message.
type Case<'a> = (&'a str, String, &'a [u8], u16, &'a str, &'a str);

#[test]
fn malformed_requests_get_documented_json_errors() {
    let config = TestConfig::new();
    config.family("nlctrl.toml", NLCTRL);
    let gw = Gateway::start(&config);
    let sock = gw.socket.to_str().unwrap().to_owned();
    let too_long = "a".repeat(genl_namsiz());
    let fifteen = "a".repeat(genl_namsiz() - 1);
    let cases: Vec<Case> = vec![
        // axum's own rejections, in JSON.
        ("GET", "/v1/families/%FF%FE".into(), b"", 400, "bad-path", ""),
        (
            "GET",
            "/v1/families/nlctrl/events?topic=a&topic=b".into(),
            b"",
            400,
            "bad-query",
            "",
        ),
        // Duplicate keys and NULs in the body.
        (
            "POST",
            "/v1/families/nlctrl/ops/get".into(),
            br#"{"name": "nlctrl", "name": "netdev"}"#,
            400,
            "bad-json",
            "duplicate key \"name\"",
        ),
        (
            "POST",
            "/v1/families/nlctrl/ops/get".into(),
            br#"{"name": "nlctrl\u0000x"}"#,
            400,
            "bad-json",
            "NUL",
        ),
        // Family names no kernel family can have.
        (
            "GET",
            "/v1/families/nlctrl%00xxxxxxx".into(),
            b"",
            400,
            "bad-family-name",
            "",
        ),
        (
            "GET",
            format!("/v1/families/{too_long}"),
            b"",
            400,
            "bad-family-name",
            "15 bytes",
        ),
        (
            "POST",
            "/v1/families/nl%01ctrl/ops/list".into(),
            b"",
            400,
            "bad-family-name",
            "",
        ),
        // The longest legal name is looked up, not refused.
        (
            "GET",
            format!("/v1/families/{fifteen}"),
            b"",
            404,
            "unknown-family",
            "",
        ),
    ];
    for (method, path, body, status, code, needle) in cases {
        let (got, resp) = http(&sock, method, &path, &[], body);
        let v = json_of(&resp);
        assert_eq!(got, status, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], code, "{method} {path}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{method} {path}: {v}"
        );
    }
    assert_eq!(
        http(&sock, "POST", "/v1/families/nlctrl/ops/list", &[], b"").0,
        200
    );
}

#[test]
fn a_request_the_kernels_policy_refuses_answers_400() {
    let ns = Netns::new("errpolicy");
    let config = TestConfig::new();
    config.netns(&ns).family(
        "netdev.toml",
        "family = \"netdev\"\nplugin = \"netdev.wasm\"\n[commands]\ndo = [1, 10]\ndump = [1]\n",
    );
    let gw = Gateway::start(&config);
    // A queue type given as a number passes the spec's schema (an enum
    // takes a name or a number), but the kernel's queue-get policy caps
    // NETDEV_A_QUEUE_TYPE (attribute 3) at 1 (tx): the host's check against
    // the kernel's own policy refuses it before sending.
    let (status, body) = http(
        gw.socket.to_str().unwrap(),
        "POST",
        "/v1/families/netdev/ops/queue-get",
        &[],
        br#"{"ifindex": 1, "id": 0, "type": 2}"#,
    );
    let v = json_of(&body);
    assert_eq!(v["error"]["code"], "invalid-request", "{v}");
    assert_eq!(status, 400, "{v}");
}
