# Families this machine lacks, served by the bundled ynl.wasm from the
# kernel's YNL specs with no family-specific code (kmod/vm/families.d/).
# Each answer is checked against a view the gateway has no part in: sysfs,
# /proc/net/udp, keys derived on the host, the kernel source's own tables
# (/etc/vmtest/expected). Sourced by init; the modules are loaded.

# A UDP socket bound to PORT (decimal) exists: /proc/net/udp's local
# address column ends in :PORT in upper-case hex.
udp_bound() { grep -q ":$(printf %04X "$1") 00000000:0000 07" /proc/net/udp; }

step "wireguard: set a key, a listen port and a peer through the gateway"
ip link add wg0 type wireguard || fail "ip link add wg0 type wireguard failed"
ip link set wg0 up || fail "ip link set wg0 up failed"
WG_IFINDEX=$(cat /sys/class/net/wg0/ifindex)
WG_SET='{"ifname": "wg0", "private-key": "'$WG_PRIV'", "listen-port": 51820,
  "peers": [{"public-key": "'$WG_PEER'", "persistent-keepalive-interval": 25,
             "allowedips": [{"family": 2, "ipaddr": "10.9.0.2", "cidr-mask": 32}]}]}'
# The first call also waits for the plugin's background load (a compile).
call_loaded wireguard set-device "$WG_SET" || fail "wireguard set-device: $(cat /tmp/out.json)"
# ynl.wasm is compiled and cached now: add the other families, which load it
# from the cache instead of compiling it once each.
cp /etc/vmtest/families.d/*.toml /etc/genl-gateway/families.d/
"$GW" reload --socket "$S" > /tmp/reload.json 2>&1 || fail "reload: $(cat /tmp/reload.json)"
call wireguard get-device-dump '{"ifname": "wg0"}' || fail "wireguard get-device-dump: $(cat /tmp/out.json)"
expect "\"ifindex\": $WG_IFINDEX" "wg0's ifindex (sysfs)"
expect "\"private-key\": \"$WG_PRIV\"" "the private key set"
# The kernel derived it from the private key; the host derived it too.
expect "\"public-key\": \"$WG_PUB\"" "the public key derived on the host"
expect "\"listen-port\": 51820" "the listen port"
expect "\"public-key\": \"$WG_PEER\"" "the peer's key"
expect "\"ipaddr\": \"10.9.0.2\"" "the peer's allowed IP"
expect "\"cidr-mask\": 32" "the peer's allowed IP's mask"
expect "\"persistent-keepalive-interval\": 25" "the peer's keepalive"
udp_bound 51820 || fail "no UDP socket on port 51820 in /proc/net/udp: $(cat /proc/net/udp)"

step "openvswitch: ovs_datapath new and get, ovs_vport get (ovs-header fixed header)"
call_loaded ovs_datapath new '{"dp-ifindex": 0, "name": "vmdp", "upcall-pid": 0}' ||
    fail "ovs_datapath new: $(cat /tmp/out.json)"
# The datapath's local port is an internal device of the same name.
[ -e /sys/class/net/vmdp/ifindex ] || fail "no device vmdp after ovs_datapath new"
DP_IFINDEX=$(cat /sys/class/net/vmdp/ifindex)
call ovs_datapath get '{"dp-ifindex": 0, "name": "vmdp"}' || fail "ovs_datapath get: $(cat /tmp/out.json)"
expect "\"dp-ifindex\": $DP_IFINDEX" "the datapath's ifindex in the fixed header (sysfs)"
expect '"name": "vmdp"' "the datapath's name"
call ovs_datapath get-dump '{"dp-ifindex": 0}' || fail "ovs_datapath get-dump: $(cat /tmp/out.json)"
expect '"name": "vmdp"' "the datapath in the dump"
call_loaded ovs_vport get "{\"dp-ifindex\": $DP_IFINDEX, \"name\": \"vmdp\"}" ||
    fail "ovs_vport get: $(cat /tmp/out.json)"
expect "\"dp-ifindex\": $DP_IFINDEX" "the vport's datapath (sysfs)"
expect '"port-no": 0' "the local port's number (OVSP_LOCAL)"
expect '"type": "internal"' "the local port's type"
expect '"name": "vmdp"' "the local port's name"

step "team: options-get and port-list-get of a new team device"
ip link add vmteam type team || fail "ip link add vmteam type team failed"
TEAM_IFINDEX=$(cat /sys/class/net/vmteam/ifindex)
call_loaded team options-get "{\"team-ifindex\": $TEAM_IFINDEX}" || fail "team options-get: $(cat /tmp/out.json)"
expect "\"team-ifindex\": $TEAM_IFINDEX" "the team's ifindex (sysfs)"
n=0
for o in $TEAM_OPTIONS; do
    expect "\"name\": \"$o\"" "option $o of team.c's team_options[]"
    n=$((n + 1))
done
[ "$(grep -c '"name": ' /tmp/out.json)" -eq "$n" ] ||
    fail "team.c has $n device-wide options ($TEAM_OPTIONS); the gateway listed: $(cat /tmp/out.json)"
call team port-list-get "{\"team-ifindex\": $TEAM_IFINDEX}" || fail "team port-list-get: $(cat /tmp/out.json)"
expect "\"team-ifindex\": $TEAM_IFINDEX" "the team's ifindex in port-list-get"

step "fou: add a receive port through the gateway, read it back"
call_loaded fou add "{\"port\": 5555, \"ipproto\": 4, \"type\": $FOU_ENCAP_DIRECT}" || fail "fou add: $(cat /tmp/out.json)"
# port is big-endian on the wire: a byte-order slip would bind 45845.
udp_bound 5555 || fail "no UDP socket on port 5555 in /proc/net/udp: $(cat /proc/net/udp)"
call fou get-dump '{}' || fail "fou get-dump: $(cat /tmp/out.json)"
expect '"port": 5555' "the fou port"
expect '"ipproto": 4' "the fou protocol (IPIP)"
expect "\"type\": $FOU_ENCAP_DIRECT" "the fou encapsulation (FOU_ENCAP_DIRECT)"

step "devlink: netdevsim's device, port and driver info"
echo "1 1" > /sys/bus/netdevsim/new_device || fail "netdevsim new_device failed"
call_loaded devlink get-dump '{}' || fail "devlink get-dump: $(cat /tmp/out.json)"
n=0
for d in /sys/bus/netdevsim/devices/*; do
    expect "\"dev-name\": \"$(basename "$d")\"" "netdevsim device $d"
    n=$((n + 1))
done
[ "$n" -eq 1 ] || fail "expected one netdevsim device in sysfs, found $n"
[ "$(grep -c '"bus-name": "netdevsim"' /tmp/out.json)" -eq "$n" ] ||
    fail "sysfs has $n netdevsim devices; devlink get-dump: $(cat /tmp/out.json)"
call devlink port-get-dump '{}' || fail "devlink port-get-dump: $(cat /tmp/out.json)"
for nd in /sys/bus/netdevsim/devices/netdevsim1/net/*; do
    name=$(basename "$nd")
    expect "\"port-netdev-name\": \"$name\"" "the port's netdev (sysfs)"
    expect "\"port-netdev-ifindex\": $(cat "$nd/ifindex")" "the port's netdev ifindex (sysfs)"
done
call devlink info-get '{"bus-name": "netdevsim", "dev-name": "netdevsim1"}' ||
    fail "devlink info-get: $(cat /tmp/out.json)"
expect "\"info-driver-name\": \"$(basename "$(readlink /sys/bus/netdevsim/devices/netdevsim1/driver)")\"" \
    "the device's driver (sysfs)"
