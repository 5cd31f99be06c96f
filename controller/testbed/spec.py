"""What the embedded testbed looks like: a pure description, no I/O (mininet's ``topo.py``).

:class:`TestbedSpec` names the bridge, the lab subnet, the controller's address and the
lab hosts; :class:`HostSpec` gives each host its namespace, address, root-side veth and the
paths of its sshd. ``network.py`` and ``sshd.py`` build what this describes.

The defaults are the embedded lab's fixed names. Tests build throw-away labs from the same spec
(tests/netns.py): their own host names, bridge and veth prefix, and ``controller_host=None`` (the
root namespace takes no address, so such a lab can stand beside the real one, same subnet).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Tuple

from tcplab.errors import TcplabError

DEFAULT_HOME = "/var/lib/tcplab"
# The probes' code on the embedded lab (inventory/netns.yml's tcplab_probe_install_dir, one directory
# per host): kept by `down`, so the next film reuses it; removed by `purge`.
PROBE_CACHE = "/var/cache/tcplab/probes"
# root's own directory for what must not sit below a directory others can write to, wherever the
# home is: the testbed's lock and the sshds' authorized_keys (sshd's StrictModes yes accepts no
# group/world-writable directory on its way, not even a sticky /tmp)
RUNTIME = Path("/run/tcplab")
HOST_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


class TestbedError(TcplabError):
    """The testbed could not be built, inspected or removed; the message is one line."""

    __test__ = False  # not a pytest test class


def default_home() -> Path:
    return Path(os.environ.get("TCPLAB_HOME") or DEFAULT_HOME)


@dataclass(frozen=True)
class HostSpec:
    """One lab host: namespace ``tcplab-<name>`` with ``eth0`` cabled to root-side ``veth``."""

    name: str
    index: int  # 1-based: address .index, root-side veth <link_prefix><index>
    ip: str
    prefixlen: int
    home: Path
    link_prefix: str = "tcplab"

    @property
    def netns(self) -> str:
        return f"tcplab-{self.name}"

    @property
    def veth(self) -> str:
        return f"{self.link_prefix}{self.index}"

    @property
    def ifname(self) -> str:
        return "eth0"

    @property
    def dir(self) -> Path:
        return self.home / "testbed" / self.name

    @property
    def sshd_config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def pid_file(self) -> Path:
        return self.dir / "sshd.pid"

    @property
    def log_file(self) -> Path:
        return self.dir / "sshd.log"


@dataclass(frozen=True)
class TestbedSpec:
    """The whole embedded testbed. Defaults are the lab's fixed names (see DESIGN.md)."""

    __test__ = False

    hosts: Tuple[str, ...] = ("thinkpad", "raspberrypi")
    subnet: str = "10.90.0.0/24"
    bridge: str = "tcplab0"
    controller_host: int | None = 254  # the root namespace's address on the bridge: .254; None: none
    home: Path = field(default_factory=default_home)
    probe_cache: Path = Path(PROBE_CACHE)
    link_prefix: str = "tcplab"  # the root-side veths: <link_prefix>1, <link_prefix>2, ...

    def __post_init__(self) -> None:
        object.__setattr__(self, "home", Path(self.home).absolute())
        net = self.network
        if not self.hosts or len(set(self.hosts)) != len(self.hosts):
            raise TestbedError(f"hosts must be distinct and non-empty: {self.hosts!r}")
        for name in self.hosts:
            if not HOST_NAME_RE.match(name):
                raise TestbedError(f"bad host name {name!r}: want [a-z][a-z0-9-]*, at most 31 chars")
            if len(f"tcplab-{name}") > 40:
                raise TestbedError(f"host name {name!r} too long")
        if len(self.hosts) >= min(self.controller_host or net.num_addresses, net.num_addresses - 2):
            raise TestbedError(f"subnet {self.subnet} too small for {len(self.hosts)} hosts")
        if not self.bridge.startswith("tcplab") or len(self.bridge) > 15:
            raise TestbedError(f"bridge name {self.bridge!r} must start with tcplab, max 15 chars")
        longest = f"{self.link_prefix}{len(self.hosts)}p"  # the namespace end's name before its move
        if not self.link_prefix.startswith("tcplab") or len(longest) > 15:
            raise TestbedError(f"veth prefix {self.link_prefix!r} must start with tcplab, {longest} max 15 chars")
        if self.bridge in {h.veth for h in self.host_specs()}:
            raise TestbedError(f"bridge name {self.bridge!r} is one of the veths' names")

    @property
    def network(self) -> ipaddress.IPv4Network:
        try:
            net = ipaddress.IPv4Network(self.subnet)
        except ValueError as e:
            raise TestbedError(f"bad subnet {self.subnet!r}: {e}") from e
        return net

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen

    @property
    def controller_ip(self) -> str | None:
        """The root namespace's address on the bridge (None: it has none)."""
        return None if self.controller_host is None else str(self.network[self.controller_host])

    @property
    def dir(self) -> Path:
        return self.home / "testbed"

    @property
    def client_key(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def sshd_dir(self) -> Path:
        """The sshds' own directory under :data:`RUNTIME`, one per home (``down`` removes it)."""
        return RUNTIME / f"testbed-{hashlib.sha256(str(self.home).encode()).hexdigest()[:12]}"

    @property
    def authorized_keys(self) -> Path:
        return self.sshd_dir / "authorized_keys"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    def host_specs(self) -> list[HostSpec]:
        net = self.network
        return [HostSpec(name, i, str(net[i]), net.prefixlen, self.home, self.link_prefix)
                for i, name in enumerate(self.hosts, start=1)]

    def link_names(self) -> list[str]:
        """Every root-namespace link this testbed owns."""
        return [self.bridge] + [h.veth for h in self.host_specs()]

    def ssh_args(self) -> list[str]:
        """ssh options that reach the hosts with strict host key checking."""
        return ["-i", str(self.client_key), "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes"]
