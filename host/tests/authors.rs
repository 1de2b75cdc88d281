//! Plugin authors' tools against the real gateway: the native harness
//! (`FakeKernel`) refuses what a family file does not allow with the very
//! message the gateway gives, family name hints, and `check` on allowlists.

mod common;

use common::{Gateway, Netns, TestConfig};
use genl_plugin_sdk::testing::FakeKernel;
use genl_plugin_sdk::{CallError, FamilyInfo, kernel};

#[test]
fn fake_kernel_refuses_what_the_family_file_does_not_allow_as_the_gateway_does() {
    // chaos serves tcp_metrics with GET (1) allowed only as a `do`; its
    // `request` op sends any command, so the gateway's refusal is real.
    let family_file = "family = \"tcp_metrics\"\nplugin = \"chaos.wasm\"\n[commands]\ndo = [1]\n";
    let ns = Netns::new("harness");
    let config = TestConfig::new();
    config.netns(&ns).family("chaos.toml", family_file);
    let gw = Gateway::start(&config);

    for (input, dump) in [(r#"{"cmd": 2}"#, false), (r#"{"cmd": 1, "dump": true}"#, true)] {
        let (ok, v) = gw.call("tcp_metrics", "request", input);
        assert!(!ok, "{v}");
        assert_eq!(v["error"]["code"], "denied", "{v}");
        let gateway_message = v["error"]["message"].as_str().unwrap().to_owned();

        let fake = FakeKernel::new(FamilyInfo::default());
        fake.load_family_file(config.dir.path().join("families.d/chaos.toml"))
            .unwrap();
        fake.on_do(2, |_| Ok(vec![])).on_dump(1, |_| Ok(vec![]));
        let refused = if dump {
            kernel::dump_request(1, &[])
        } else {
            kernel::do_request(2, &[])
        };
        let err = CallError::from(refused.unwrap_err());
        assert_eq!(err.code, "denied");
        assert_eq!(err.message, gateway_message);
        assert!(
            fake.requests().is_empty(),
            "a refused request never reaches the kernel"
        );
    }

    // What the file allows still reaches the fake's handler.
    let fake = FakeKernel::new(FamilyInfo::default());
    fake.load_family_file(config.dir.path().join("families.d/chaos.toml"))
        .unwrap();
    fake.on_do(1, |_| Ok(vec![]));
    assert!(kernel::do_request(1, &[]).is_ok());
    assert_eq!(fake.requests().len(), 1);
}
