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
    fallback_ready() { "$GW" family genl_test --socket "$S" 2>/dev/null | grep -qi "fallback"; }
    retry 600 fallback_ready || fail "genl_test's description does not say it is the policy fallback: $("$GW" family genl_test --socket "$S")"
    # The module echoes GENL_TEST_ATTR_MSG (1) of command GENL_TEST_C_MSG (1).
    # The fallback names operations after their command number; accept the
    # spellings its design allows.
    served=
    for op in cmd-1 1 msg; do
        if call genl_test "$op" '{"1": "hello through the policy"}' &&
            grep -qF '"1": "hello through the policy"' /tmp/out.json; then
            served=$op
            break
        fi
    done
    [ -n "$served" ] || fail "no echo through the policy fallback (tried cmd-1, 1, msg): $(cat /tmp/out.json)"
    echo "VMTEST: genl_test's command 1 served as op '$served' by the policy fallback"
    dmesg | grep -q "genl_test: message from port .*hello through the policy" ||
        fail "the module did not log the fallback's message"
fi
