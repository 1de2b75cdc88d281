"""The pyroute2 side of genl-bench: the same workloads through pyroute2's
generic netlink socket. Prints one JSON object per workload.

usage: pyroute2_bench.py getfamily N | dev-get N IFINDEX | dump N

BENCH_START_AT (seconds since the epoch) delays the timed part until
then, so several processes started together measure the same interval.
"""
import json
import os
import sys
import time

from pyroute2.netlink import NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, genlmsg
from pyroute2.netlink.generic import GenericNetlinkSocket
from pyroute2.netlink.nlsocket import NetlinkSocket  # noqa: F401  (import check)
from pyroute2.netlink.generic import ctrlmsg
from pyroute2.netlink import GENL_ID_CTRL


class netdevmsg(genlmsg):
    # netdev's `dev` attribute set (Documentation/netlink/specs/netdev.yaml).
    nla_map = (
        ("NETDEV_A_DEV_UNSPEC", "none"),
        ("NETDEV_A_DEV_IFINDEX", "uint32"),
        ("NETDEV_A_DEV_PAD", "none"),
        ("NETDEV_A_DEV_XDP_FEATURES", "uint64"),
        ("NETDEV_A_DEV_XDP_ZC_MAX_SEGS", "uint32"),
        ("NETDEV_A_DEV_XDP_RX_METADATA_FEATURES", "uint64"),
        ("NETDEV_A_DEV_XSK_FEATURES", "uint64"),
    )


def timed(n, op):
    start_at = os.environ.get("BENCH_START_AT")
    if start_at:
        time.sleep(max(0.0, float(start_at) - time.time()))
    lat = []
    start = time.perf_counter()
    count = 0
    for _ in range(n):
        t = time.perf_counter()
        count += op()
        lat.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    lat.sort()
    return {
        "ops": n,
        "units": count,
        "seconds": total,
        "p50_us": lat[len(lat) // 2] * 1e6,
        "p99_us": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e6,
    }


def main():
    what, n = sys.argv[1], int(sys.argv[2])
    s = GenericNetlinkSocket()
    if what == "getfamily":
        def op():
            msg = ctrlmsg()
            msg["cmd"] = 3  # CTRL_CMD_GETFAMILY
            msg["version"] = 1
            msg["attrs"] = [("CTRL_ATTR_FAMILY_NAME", "nlctrl")]
            return len(s.nlm_request(msg, msg_type=GENL_ID_CTRL, msg_flags=NLM_F_REQUEST))
        out = timed(n, op)
    else:
        s.bind("netdev", netdevmsg)
        if what == "dev-get":
            ifindex = int(sys.argv[3])

            def op():
                msg = netdevmsg()
                msg["cmd"] = 1
                msg["version"] = 1
                msg["attrs"] = [("NETDEV_A_DEV_IFINDEX", ifindex)]
                return len(s.nlm_request(msg, msg_type=s.prid, msg_flags=NLM_F_REQUEST | NLM_F_ACK))
            out = timed(n, op)
        else:
            def op():
                msg = netdevmsg()
                msg["cmd"] = 1
                msg["version"] = 1
                return len(s.nlm_request(msg, msg_type=s.prid, msg_flags=NLM_F_REQUEST | NLM_F_DUMP))
            out = timed(n, op)
            out["per_dump"] = out["units"] / n
    print(json.dumps(out))


if __name__ == "__main__":
    main()
