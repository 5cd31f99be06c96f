"""Real, isolated lab hosts for tests: two network namespaces built from the testbed's own spec.

A :class:`NetnsPair` is a small embedded lab (controller.testbed: a TestbedSpec built by
LabNetwork, as ``tcplab lab up`` builds the real one): hosts ``a`` (10.90.0.1) and ``b``
(10.90.0.2), each ``eth0`` cabled to a bridge, with the real lab's link settings (offloads off so
captured segments look like a NIC's, IPv6 off, no default route). What differs is only what must:
random names (``tcplab-t<tag>a``, bridge ``tcplabt<tag>``, veths ``tcplab<tag>1``), so pairs and the
real lab stand side by side, and no address in the root namespace (``controller_host=None``), so
the same subnet is never routed twice there. Deleted afterwards even when the test fails.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass

from controller.testbed.network import LabNetwork
from controller.testbed.spec import TestbedSpec


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


def pair_spec(tag: str | None = None) -> TestbedSpec:
    """The spec of a throw-away two-host lab named by ``tag`` (4 hex digits, random by default)."""
    tag = tag or secrets.token_hex(2)
    return TestbedSpec(hosts=(f"t{tag}a", f"t{tag}b"), bridge=f"tcplabt{tag}", link_prefix=f"tcplab{tag}",
                       controller_host=None)


class NetnsPair:
    """Two hosts, ``a`` (10.90.0.1) and ``b`` (10.90.0.2), on one bridge of their own."""

    def __init__(self) -> None:
        self.spec = pair_spec()
        self.network = LabNetwork(self.spec)
        self.a, self.b = (Host(h.netns, h.ip, h.ifname) for h in self.spec.host_specs())

    def __enter__(self) -> "NetnsPair":
        try:
            self.network.ensure()
        except BaseException:
            self.network.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.network.remove()


def require_root() -> None:
    import pytest
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
