"""Real, isolated lab hosts for tests: a pair of network namespaces joined by a veth cable.

Each pair is fresh (random name, tcplab prefix), has no default route, and is deleted
afterwards even when the test fails. Addresses are inside the lab subnet only.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass


def sh(*args: str, check: bool = True, ns: str | None = None, **kw) -> subprocess.CompletedProcess:
    cmd = list(args)
    if ns:
        cmd = ["ip", "netns", "exec", ns, *cmd]
    return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)


@dataclass
class Host:
    ns: str
    ip: str
    ifname: str = "eth0"

    def run(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        return sh(*args, check=check, ns=self.ns, **kw)

    def popen(self, *args: str, **kw) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", self.ns, *args], **kw)


class NetnsPair:
    """Two hosts, ``a`` (10.90.0.1) and ``b`` (10.90.0.2), on one veth cable."""

    def __init__(self, a_ip: str = "10.90.0.1", b_ip: str = "10.90.0.2", prefix: int = 24):
        tag = secrets.token_hex(2)
        self.a = Host(f"tcplab-t{tag}a", a_ip)
        self.b = Host(f"tcplab-t{tag}b", b_ip)
        self._veth = (f"tcplab{tag}a", f"tcplab{tag}b")
        self.prefix = prefix

    def __enter__(self) -> "NetnsPair":
        try:
            for h in (self.a, self.b):
                sh("ip", "netns", "add", h.ns)
            va, vb = self._veth
            sh("ip", "link", "add", va, "type", "veth", "peer", "name", vb)
            for h, v in ((self.a, va), (self.b, vb)):
                sh("ip", "link", "set", v, "netns", h.ns)
                h.run("ip", "link", "set", v, "name", h.ifname)
                h.run("ip", "addr", "add", f"{h.ip}/{self.prefix}", "dev", h.ifname)
                h.run("ip", "link", "set", h.ifname, "up")
                h.run("ip", "link", "set", "lo", "up")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for h in (self.a, self.b):
            sh("ip", "netns", "del", h.ns, check=False)
        for v in self._veth:  # only exists if creation stopped half-way
            sh("ip", "link", "del", v, check=False)


def require_root() -> None:
    import pytest
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
