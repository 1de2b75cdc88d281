//! The client API over its real sockets: auth and scopes on TCP, error
//! answers, event streams with fast and slow subscribers, /metrics, and
//! `check` on bad configurations.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{Gateway, NLCTRL, Netns, TestConfig, binary, free_port, http, wait_output};
use serde_json::Value;

const READ_NLCTRL: &str = "read-token-nlctrl-0001";
const WRITE_ALL: &str = "write-token-all-00002";
const ADMIN: &str = "admin-token-all-000003";
const READ_MPTCP: &str = "read-token-mptcp-00004";
const ADMIN_NLCTRL: &str = "admin-token-nlctrl-005";

fn chaos_family() -> &'static str {
    "family = \"TASKSTATS\"\nplugin = \"chaos.wasm\"\n"
}

fn json_of(body: &[u8]) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

#[test]
fn tcp_tokens_are_checked_and_scoped() {
    let ns = Netns::new("auth");
    let port = free_port();
    let config = TestConfig::new();
    config
        .netns(&ns)
        .set("api", &format!("tcp = \"127.0.0.1:{port}\""));
    let tokens = format!(
        "tcp = \"127.0.0.1:{port}\"\n[[api.tokens]]\nname = \"reader\"\ntoken = \"{READ_NLCTRL}\"\nfamilies = [\"nlctrl\"]\naccess = \"read\"\n\
         [[api.tokens]]\nname = \"writer\"\ntoken = \"{WRITE_ALL}\"\naccess = \"write\"\n\
         [[api.tokens]]\nname = \"admin\"\ntoken = \"{ADMIN}\"\naccess = \"admin\"\n\
         [[api.tokens]]\nname = \"mptcp-reader\"\ntoken = \"{READ_MPTCP}\"\nfamilies = [\"mptcp_pm\"]\naccess = \"read\"\n\
         [[api.tokens]]\nname = \"nlctrl-admin\"\ntoken = \"{ADMIN_NLCTRL}\"\nfamilies = [\"nlctrl\"]\naccess = \"admin\""
    );
    config.set("api", &tokens);
    config.family("nlctrl.toml", NLCTRL).family(
        "mptcp_pm.toml",
        "family = \"mptcp_pm\"\nplugin = \"mptcp_pm.wasm\"\n[commands]\ndo = [3, 6]\ndump = [3]\n",
    );
    let gw = Gateway::start(&config);
    let tcp = format!("127.0.0.1:{port}");
    let bearer = |t: &str| format!("Bearer {t}");
    let post = |path: &str, token: Option<&str>| {
        let auth = token.map(bearer);
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        http(&tcp, "POST", path, &headers, b"")
    };

    // No token, a wrong token: 401 with a JSON body.
    let (status, body) = post("/v1/families/nlctrl/ops/list", None);
    assert_eq!(status, 401);
    assert_eq!(json_of(&body)["error"]["code"], "unauthorized");
    assert_eq!(
        post("/v1/families/nlctrl/ops/list", Some("not-a-real-token-at-all")).0,
        401
    );
    // /healthz needs none; the Unix socket needs none.
    assert_eq!(http(&tcp, "GET", "/healthz", &[], b"").0, 200);
    assert_eq!(
        http(
            gw.socket.to_str().unwrap(),
            "POST",
            "/v1/families/nlctrl/ops/list",
            &[],
            b""
        )
        .0,
        200
    );

    // The reader: read ops of nlctrl only.
    assert_eq!(post("/v1/families/nlctrl/ops/list", Some(READ_NLCTRL)).0, 200);
    let (status, body) = post("/v1/families/mptcp_pm/ops/endpoint-dump", Some(READ_NLCTRL));
    assert_eq!(status, 403);
    assert!(
        json_of(&body)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not cover family 'mptcp_pm'")
    );
    // The writer reaches every family, including ops that write (which the
    // allowlist then refuses: tokens and allowlists are separate locks).
    assert_eq!(
        post("/v1/families/mptcp_pm/ops/endpoint-dump", Some(WRITE_ALL)).0,
        200
    );
    let (status, body) = post("/v1/families/mptcp_pm/ops/endpoint-add", Some(WRITE_ALL));
    assert_ne!(status, 403, "{}", String::from_utf8_lossy(&body));
    let (status, body) = post("/v1/plugins/nlctrl/reload", Some(WRITE_ALL));
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    // A write op with a read token that covers the family: 403 from the
    // access level, before the plugin runs; its read op passes.
    assert_eq!(
        post("/v1/families/mptcp_pm/ops/endpoint-dump", Some(READ_MPTCP)).0,
        200
    );
    let (status, body) = post("/v1/families/mptcp_pm/ops/endpoint-add", Some(READ_MPTCP));
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(
        json_of(&body)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("has Read access; this needs Write"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    // Admin may reload.
    assert_eq!(post("/v1/plugins/nlctrl/reload", Some(ADMIN)).0, 200);
    // Reloading everything touches every family: a family-scoped admin may
    // reload its own family only.
    assert_eq!(post("/v1/plugins/nlctrl/reload", Some(ADMIN_NLCTRL)).0, 200);
    let (status, body) = post("/v1/reload", Some(ADMIN_NLCTRL));
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert_eq!(post("/v1/reload", Some(ADMIN)).0, 200);
}

#[test]
fn listings_show_a_scoped_token_only_its_families() {
    let port = free_port();
    let config = TestConfig::new();
    config.set(
        "api",
        &format!(
            "tcp = \"127.0.0.1:{port}\"\n[[api.tokens]]\nname = \"reader\"\ntoken = \"{READ_NLCTRL}\"\nfamilies = [\"nlctrl\"]\naccess = \"read\"\n\
             [[api.tokens]]\nname = \"all\"\ntoken = \"{WRITE_ALL}\"\naccess = \"write\""
        ),
    );
    config
        .family("nlctrl.toml", NLCTRL)
        .family("chaos.toml", chaos_family())
        .family("broken.toml", "family = [\n");
    let _gw = Gateway::start(&config);
    let tcp = format!("127.0.0.1:{port}");
    let get = |path: &str, auth: &str| {
        let (status, body) = http(&tcp, "GET", path, &[("authorization", auth)], b"");
        (status, body)
    };
    let scoped = format!("Bearer {READ_NLCTRL}");
    // The scheme is case-insensitive.
    let all = format!("bearer {WRITE_ALL}");

    let names = |v: &Value, key: &str| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p[key].as_str().map(str::to_owned))
            .collect()
    };
    let (status, body) = get("/v1/plugins", &scoped);
    assert_eq!(status, 200);
    let v = json_of(&body);
    assert_eq!(names(&v["plugins"], "family"), ["nlctrl"], "{v}");
    assert_eq!(v["broken_files"], Value::Array(vec![]), "{v}");
    let (status, body) = get("/v1/plugins", &all);
    assert_eq!(status, 200);
    let v = json_of(&body);
    assert_eq!(names(&v["plugins"], "family"), ["TASKSTATS", "nlctrl"], "{v}");
    assert_eq!(v["broken_files"].as_array().unwrap().len(), 1, "{v}");

    let (status, body) = get("/v1/families", &scoped);
    assert_eq!(status, 200);
    assert_eq!(names(&json_of(&body), "name"), ["nlctrl"]);
    let (_, body) = get("/v1/families", &all);
    let every = names(&json_of(&body), "name");
    assert!(
        every.len() > 2 && every.contains(&"TASKSTATS".to_owned()),
        "{every:?}"
    );

    // /metrics shows every family: it needs a "*" token.
    assert_eq!(get("/metrics", &scoped).0, 403);
    assert_eq!(get("/metrics", &all).0, 200);

    // Two Authorization headers: refused, never "first wins".
    let (status, body) = http(
        &tcp,
        "GET",
        "/v1/plugins",
        &[("authorization", &all), ("authorization", &scoped)],
        b"",
    );
    assert_eq!(status, 401);
    assert!(
        json_of(&body)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than one Authorization header")
    );
}

#[test]
fn bad_requests_get_json_errors_with_stable_codes() {
    let config = TestConfig::new();
    config.set("api", "max_body_bytes = 1024");
    config.family("nlctrl.toml", NLCTRL);
    let gw = Gateway::start(&config);
    let sock = gw.socket.to_str().unwrap().to_owned();
    let cases: [(&str, &str, Vec<u8>, u16, &str); 6] = [
        (
            "POST",
            "/v1/families/nlctrl/ops/get",
            b"{not json".to_vec(),
            400,
            "bad-json",
        ),
        (
            "POST",
            "/v1/families/nlctrl/ops/get",
            vec![b' '; 4096],
            413,
            "body-too-large",
        ),
        (
            "POST",
            "/v1/families/nope/ops/list",
            b"".to_vec(),
            404,
            "unknown-family",
        ),
        (
            "POST",
            "/v1/families/nlctrl/ops/nope",
            b"".to_vec(),
            404,
            "unknown-op",
        ),
        (
            "GET",
            "/v1/families/nlctrl/ops/list",
            b"".to_vec(),
            405,
            "method-not-allowed",
        ),
        ("GET", "/v2/whatever", b"".to_vec(), 404, "no-such-endpoint"),
    ];
    for (method, path, body, status, code) in cases {
        let (got, resp) = http(&sock, method, path, &[], &body);
        assert_eq!(got, status, "{method} {path}: {}", String::from_utf8_lossy(&resp));
        assert_eq!(json_of(&resp)["error"]["code"], code, "{method} {path}");
    }
    // Still serving after all that.
    assert_eq!(
        http(&sock, "POST", "/v1/families/nlctrl/ops/list", &[], b"").0,
        200
    );
}

#[test]
fn several_subscribers_receive_the_same_events() {
    let config = TestConfig::new();
    config.family("chaos.toml", chaos_family());
    let gw = Gateway::start(&config);
    let subs: Vec<_> = (0..3).map(|_| gw.subscribe("TASKSTATS", "burst", 300)).collect();
    let (ok, v) = gw.call("TASKSTATS", "burst", r#"{"n": 300}"#);
    assert!(ok, "{v}");
    for (i, s) in subs.into_iter().enumerate() {
        let events = wait_output(s, 20, "subscriber");
        let seqs: Vec<u64> = events
            .iter()
            .map(|e| e["payload"]["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs, (0..300).collect::<Vec<_>>(), "subscriber {i}");
        assert_eq!(events[0]["family"], "TASKSTATS");
    }
}

#[test]
fn a_slow_subscriber_is_cut_off_and_the_others_keep_receiving() {
    let config = TestConfig::new();
    // Margins, not timing: fast subscribers may stall for ~400 ms (2048
    // events at ~5k/s) before they are cut off; the one that never reads
    // overflows its socket buffer (~200 KB, ~2.5k events) plus the backlog
    // well before 8000 events.
    config.set("api", "event_backlog = 2048");
    config.family(
        "chaos.toml",
        &format!("{}[limits]\ncall_timeout_ms = 60000\n", chaos_family()),
    );
    let gw = Gateway::start(&config);

    // The slow one subscribes and then reads nothing.
    let mut slow = std::os::unix::net::UnixStream::connect(&gw.socket).unwrap();
    slow.write_all(b"GET /v1/families/TASKSTATS/events HTTP/1.1\r\nhost: gw\r\n\r\n")
        .unwrap();
    let fast: Vec<_> = (0..2).map(|_| gw.subscribe("TASKSTATS", "burst", 8000)).collect();

    let (ok, v) = gw.call(
        "TASKSTATS",
        "burst",
        r#"{"n": 8000, "pace_us": 2000, "every": 10}"#,
    );
    assert!(ok, "{v}");
    for s in fast {
        let events = wait_output(s, 30, "fast subscriber");
        assert_eq!(events.len(), 8000, "a fast subscriber lost events");
        assert_eq!(events.last().unwrap()["payload"]["seq"], 7999);
    }

    // It was cut off while the family published, not when it next read:
    // counted already.
    let sock = gw.socket.to_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, m) = http(&sock, "GET", "/metrics", &[], b"");
        if String::from_utf8_lossy(&m).contains("genl_gateway_event_subscribers_cut_off_total 1") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slow subscriber was not cut off before it read"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The slow one, when it finally reads, finds it was cut off.
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut text = Vec::new();
    let _ = slow.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("event: lagged"),
        "no lagged event for the slow subscriber"
    );
    let (_, metrics) = http(gw.socket.to_str().unwrap(), "GET", "/metrics", &[], b"");
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("genl_gateway_event_subscribers_cut_off_total 1"),
        "{metrics}"
    );
}

/// One sample: metric name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// A strict reading of the Prometheus text format: every sample belongs to
/// a declared metric family, names and labels are well formed, values parse.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut declared: Vec<(String, String)> = Vec::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (name, kind) = (it.next().unwrap(), it.next().unwrap());
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            declared.push((name.to_owned(), kind.to_owned()));
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (
                n,
                l.strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line}")),
            ),
            None => (series, ""),
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "{line}"
        );
        let family = declared
            .iter()
            .find(|(d, kind)| {
                name == d
                    || (kind == "histogram"
                        && [format!("{d}_bucket"), format!("{d}_sum"), format!("{d}_count")]
                            .contains(&name.to_owned()))
            })
            .unwrap_or_else(|| panic!("sample of an undeclared metric: {line}"));
        assert!(!family.0.is_empty());
        let labels: Vec<(String, String)> = if labels.is_empty() {
            Vec::new()
        } else {
            labels
                .split("\",")
                .map(|kv| {
                    let (k, v) = kv
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    (k.to_owned(), v.trim_end_matches('"').to_owned())
                })
                .collect()
        };
        samples.push((name.to_owned(), labels, value));
    }
    samples
}

fn metric(samples: &[Sample], name: &str, family: &str) -> f64 {
    samples
        .iter()
        .find(|(n, l, _)| n == name && l.iter().any(|(k, v)| k == "family" && v == family))
        .map(|s| s.2)
        .unwrap_or_else(|| panic!("no {name} for {family}"))
}

#[test]
fn metrics_are_valid_prometheus_text_and_move() {
    let config = TestConfig::new();
    config
        .family("nlctrl.toml", NLCTRL)
        .family("chaos.toml", chaos_family());
    let gw = Gateway::start(&config);
    let sock = gw.socket.to_str().unwrap().to_owned();
    let scrape = || {
        let (status, body) = http(&sock, "GET", "/metrics", &[], b"");
        assert_eq!(status, 200);
        parse_prometheus(&String::from_utf8(body).unwrap())
    };
    let before = scrape();
    for _ in 0..3 {
        assert!(gw.call("nlctrl", "list", "null").0);
    }
    let _ = gw.call("nlctrl", "get", r#"{"name": "no_such"}"#);
    let _ = gw.call("TASKSTATS", "panic", "null");
    let after = scrape();
    let calls = |s: &[_]| metric(s, "genl_gateway_plugin_calls_total", "nlctrl");
    assert_eq!(calls(&after) - calls(&before), 4.0);
    assert_eq!(
        after
            .iter()
            .find(|(n, l, _)| n == "genl_gateway_plugin_call_errors_total"
                && l.contains(&("code".into(), "not-found".into())))
            .map(|s| s.2),
        Some(1.0)
    );
    assert_eq!(
        metric(&after, "genl_gateway_plugin_traps_total", "TASKSTATS"),
        1.0
    );
    assert_eq!(
        metric(
            &after,
            "genl_gateway_plugin_call_duration_seconds_count",
            "nlctrl"
        ),
        4.0
    );
    assert_eq!(metric(&after, "genl_gateway_family_present", "nlctrl"), 1.0);
}

#[test]
fn check_catches_each_kind_of_bad_config() {
    let run_check = |config: &TestConfig| {
        let out = std::process::Command::new(binary())
            .args(["check", "--json", "--config"])
            .arg(config.path())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    let good = TestConfig::new();
    good.family("nlctrl.toml", NLCTRL);
    let (code, out, _) = run_check(&good);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(json_of(out.as_bytes())["ok"], true);

    let cases = [
        ("bad.toml", "family = \"netdev\"\nplugin = [\n", "bad.toml"),
        (
            "typo.toml",
            "family = \"netdev\"\nplugin = \"netdev.wasm\"\ngroupz = []\n",
            "unknown field `groupz`",
        ),
        (
            "missing.toml",
            "family = \"netdev\"\nplugin = \"nope.wasm\"\n",
            "nope.wasm does not exist",
        ),
        (
            "init.toml",
            "family = \"netdev\"\nplugin = \"chaos.wasm\"\n[config]\ninit = \"fail\"\n",
            "init refuses",
        ),
        (
            "dup.toml",
            "family = \"nlctrl\"\nplugin = \"nlctrl.wasm\"\n",
            "already configured",
        ),
    ];
    for (file, text, needle) in cases {
        let config = TestConfig::new();
        config.family("nlctrl.toml", NLCTRL).family(file, text);
        let (code, out, err) = run_check(&config);
        assert_eq!(code, Some(1), "{file}: {out}{err}");
        let v = json_of(out.as_bytes());
        assert_eq!(v["ok"], false);
        let errors: Vec<&str> = v["families"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["error"].as_str())
            .collect();
        assert!(errors.iter().any(|e| e.contains(needle)), "{file}: {errors:?}");
    }

    // A broken .wasm.
    let config = TestConfig::new();
    let plugins = config.private_plugins();
    std::fs::write(plugins.join("netdev.wasm"), b"garbage").unwrap();
    config.family("netdev.toml", "family = \"netdev\"\nplugin = \"netdev.wasm\"\n");
    let (code, out, _) = run_check(&config);
    assert_eq!(code, Some(1));
    assert!(out.contains("not a usable genl:gateway@0.3.1 component"), "{out}");

    // A broken gateway.toml: one line on stderr, exit 1.
    let config = TestConfig::new();
    config.set("limits", "memory_mib = 0");
    let (code, _, err) = run_check(&config);
    assert_eq!(code, Some(1));
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("limits.memory_mib"), "{err}");
}

#[test]
fn a_busy_family_never_cuts_off_a_quiet_familys_subscribers() {
    let config = TestConfig::new();
    // A small backlog: a shared one would overflow many times over.
    config.set("api", "event_backlog = 16");
    config
        .family(
            "chaos.toml",
            &format!("{}[limits]\ncall_timeout_ms = 60000\n", chaos_family()),
        )
        .family("quiet.toml", "family = \"nlctrl\"\nplugin = \"chaos.wasm\"\n");
    let gw = Gateway::start(&config);
    let quiet = gw.subscribe("nlctrl", "burst", 1);
    let (ok, v) = gw.call("TASKSTATS", "burst", r#"{"n": 5000}"#);
    assert!(ok, "{v}");
    let (ok, v) = gw.call("nlctrl", "burst", r#"{"n": 1}"#);
    assert!(ok, "{v}");
    let events = wait_output(quiet, 30, "quiet subscriber");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0]["family"],
        "nlctrl",
        "{events:?}\n{}",
        gw.log_text()
            .lines()
            .filter(|l| l.contains("WARN"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(events[0]["payload"]["seq"], 0);
}

#[test]
fn a_subscribers_queue_is_bounded_in_bytes_too() {
    let config = TestConfig::new();
    // The count bound is out of reach: only the byte bound can cut it off.
    config
        .set("api", "event_backlog = 100000")
        .set("api", "event_backlog_bytes = 1024");
    config.family(
        "chaos.toml",
        &format!("{}[limits]\ncall_timeout_ms = 60000\n", chaos_family()),
    );
    let gw = Gateway::start(&config);
    let mut slow = std::os::unix::net::UnixStream::connect(&gw.socket).unwrap();
    slow.write_all(b"GET /v1/families/TASKSTATS/events HTTP/1.1\r\nhost: gw\r\n\r\n")
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while gw.subscribers("TASKSTATS") == 0 {
        assert!(std::time::Instant::now() < deadline, "never subscribed");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Far more than a socket buffer of events, far fewer than 100000.
    let (ok, v) = gw.call("TASKSTATS", "burst", r#"{"n": 20000}"#);
    assert!(ok, "{v}");
    let sock = gw.socket.to_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, m) = http(&sock, "GET", "/metrics", &[], b"");
        if String::from_utf8_lossy(&m).contains("genl_gateway_event_subscribers_cut_off_total 1") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not cut off");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(gw.subscribers("TASKSTATS"), 0);
}
