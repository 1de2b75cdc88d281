# genl_test, which has no YNL spec, read through the policy fallback: the
# bundled ynl.wasm with `spec = "kernel-policy"`, attributes keyed by
# number. Sourced by init with genl_test's module loaded. FALLBACK (from
# /etc/vmtest/expected, set by scripts/vm-test.sh) is 1 when the gateway
# handles "kernel-policy".

if [ "$FALLBACK" != 1 ]; then
    echo "VMTEST SKIP: genl_test through the policy fallback (the gateway has no \"kernel-policy\" yet; GENL_VM_FALLBACK=1 requires it)"
else
    step "genl_test through the policy fallback (spec = \"kernel-policy\")"
    cp /etc/vmtest/genl_test-policy.toml /etc/genl-gateway/families.d/genl_test.toml
    "$GW" reload genl_test --socket "$S" > /tmp/reload.json 2>&1 || fail "reload genl_test: $(cat /tmp/reload.json)"
    # The module echoes GENL_TEST_ATTR_MSG (1) of command GENL_TEST_C_MSG
    # (1); the fallback names operations cmd-N and attributes by number. The
    # old plugin serves (and knows no cmd-1) until the new one is loaded.
    retry 300 call genl_test cmd-1 '{"1": "hello through the policy"}' ||
        fail "genl_test cmd-1 through the policy fallback: $(cat /tmp/out.json)"
    expect '"1": "hello through the policy"' "the module's echo, attribute 1"
    "$GW" family genl_test --socket "$S" > /tmp/out.json 2>&1
    grep -qiE "fallback|kernel-policy|GETPOLICY" /tmp/out.json ||
        fail "genl_test's description does not say it is the policy fallback: $(cat /tmp/out.json)"
    dmesg | grep -q "genl_test: message from port .*hello through the policy" ||
        fail "the module did not log the fallback's message"
fi
