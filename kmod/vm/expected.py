#!/usr/bin/env python3
"""The VM test's expected values, computed on the host by code other than
the gateway's, printed as shell assignments for kmod/vm/init.

- WireGuard keys: a fresh private key (clamped, as `wg genkey` makes them)
  and its public key, derived here with the `cryptography` package's X25519;
  the kernel derives its own from the private key the gateway sets, so the
  two meet only if the gateway carried the key intact. A peer's public key.
- FOU_ENCAP_DIRECT from the UAPI header linux/fou.h (fou.yaml gives the
  attribute `type` no enum, so it goes in and comes out as a number).
- Team options: the device-wide (not per-port) option names from the
  kernel's own team.c (`team_options[]`) of the release the VM boots.

Usage: expected.py PATH/TO/team.c
"""

import os
import re
import sys

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def genkey() -> bytes:
    """A Curve25519 private key, clamped as RFC 7748 and `wg genkey` do."""
    key = bytearray(os.urandom(32))
    key[0] &= 248
    key[31] &= 127
    key[31] |= 64
    return bytes(key)


def public(private: bytes) -> bytes:
    key = X25519PrivateKey.from_private_bytes(private)
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def team_options(team_c: str) -> list[str]:
    """Names of the entries of team_options[] that are not per port."""
    text = open(team_c, encoding="utf-8").read()
    start = text.index("static const struct team_option team_options[]")
    table = text[start : text.index("\n};", start)]
    names = []
    for entry in re.findall(r"\{(.*?)\}", table, re.S):
        name = re.search(r'\.name\s*=\s*"([^"]+)"', entry)
        if name and not re.search(r"\.per_port\s*=\s*true", entry):
            names.append(name.group(1))
    if not names:
        sys.exit(f"expected.py: no device-wide options found in {team_c}")
    return names


def uapi_enum_value(header: str, name: str) -> int:
    """The value of enumerator NAME in an anonymous, implicitly numbered
    UAPI enum (as fou.h's encapsulation types are)."""
    text = open(header, encoding="utf-8").read()
    for body in re.findall(r"enum\s*\{(.*?)\}", text, re.S):
        names = [e.strip() for e in body.split(",") if e.strip()]
        if name in names:
            if any("=" in n for n in names):
                sys.exit(f"expected.py: {header}'s enum with {name} has explicit values")
            return names.index(name)
    sys.exit(f"expected.py: no {name} in {header}")


def shown(key: bytes) -> str:
    """Bytes as the gateway (and the kernel's YNL CLI) shows display-hint
    hex: two digits a byte, separated by spaces. Also accepted as input."""
    return " ".join(f"{b:02x}" for b in key)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    private = genkey()
    print(f"WG_PRIV='{shown(private)}'")
    print(f"WG_PUB='{shown(public(private))}'")
    print(f"WG_PEER='{shown(public(genkey()))}'")
    print(f"FOU_ENCAP_DIRECT={uapi_enum_value('/usr/include/linux/fou.h', 'FOU_ENCAP_DIRECT')}")
    print(f"TEAM_OPTIONS='{' '.join(team_options(sys.argv[1]))}'")


if __name__ == "__main__":
    main()
