# genl_test (kmod/genl_test) with its own plugin: appears, is served,
# goes away, comes back. Sourced by init.

# Plugins load in the background: wait for the family to be configured.
retry 900 present_is false || fail "genl_test should be configured and absent before insmod"

step "two subscribers"
timeout 120 "$GW" events genl_test --count 8 --socket "$S" > /tmp/sub1 2>&1 &
P1=$!
timeout 120 "$GW" events genl_test --count 8 --socket "$S" > /tmp/sub2 2>&1 &
P2=$!
sleep 1

step "load the module; the gateway picks the family up"
insmod /lib/genl_test.ko period_ms=300 || fail "insmod failed"
retry 300 send "hello from the vm" || fail "send never succeeded: $(cat /tmp/send.json)"
grep -q '"echo": "hello from the vm"' /tmp/send.json || fail "no echo: $(cat /tmp/send.json)"
dmesg | grep -q "genl_test: message from port" || fail "the module did not log the message"

step "each subscriber gets every group"
wait "$P1"; wait "$P2"
for f in /tmp/sub1 /tmp/sub2; do
    for g in 0 1 2; do
        grep -q "\"topic\":\"genl_mcgrp$g\"" "$f" || fail "$f has no event of genl_mcgrp$g: $(cat "$f")"
    done
done

step "unload: the family is absent and calls fail clearly"
rmmod genl_test || fail "rmmod failed"
retry 300 present_is false || fail "genl_test still present after rmmod"
send "into the void" && fail "send succeeded without the module"
grep -q '"code": "family-absent"' /tmp/send.json || fail "expected family-absent: $(cat /tmp/send.json)"

step "load again: served again, its groups joined again"
timeout 120 "$GW" events genl_test --count 8 --socket "$S" > /tmp/sub3 2>&1 &
P3=$!
sleep 1
insmod /lib/genl_test.ko period_ms=300 || fail "second insmod failed"
retry 300 send "hello again" || fail "send after reload failed: $(cat /tmp/send.json)"
grep -q '"echo": "hello again"' /tmp/send.json || fail "no echo after reload"
present_is true || fail "genl_test not present after reload"
wait "$P3"
for g in 0 1 2; do
    grep -q "\"topic\":\"genl_mcgrp$g\"" /tmp/sub3 || fail "no genl_mcgrp$g event after reload: $(cat /tmp/sub3)"
done

