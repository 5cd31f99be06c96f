"""The probe's configuration file (YAML, written by the Ansible role ``probe``).

``keys_dir``: the CurveZMQ keys (``HOST.key_secret`` and ``controller.key``, tcplab.wire.curve);
without it the probe speaks plain ZeroMQ, which only a controller no other machine could be
(ipc://, tcp on loopback) may be: a tcp controller on any other address without keys is refused.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from tcplab import wire
from tcplab.configfile import ConfigError, check_endpoint, read_yaml
from tcplab.wire import curve as wire_curve
from tcplab.wire.curve import Keys

__all__ = ["ConfigError", "ProbeConfig", "load"]


@dataclass(frozen=True)
class ProbeConfig:
    path: Path
    host: str
    controller: str
    lab_ip: str
    lab_iface: str = "eth0"
    port: int = 9090
    home: Path = Path("/var/lib/tcplab/hosts/unknown")
    nc: str = "/usr/bin/nc"
    poll_hz: float = 50.0
    shaper_backend: str = "auto"  # auto (netem, else the NFQUEUE delay line), netem or nfqueue
    curve: Keys | None = None  # keys_dir's keys: own pair, the controller's public (None: no CurveZMQ)

    @property
    def pid_path(self) -> Path:
        return self.home / "probe.pid"

    @property
    def status_path(self) -> Path:
        return self.home / "probe.status"

    @property
    def log_path(self) -> Path:
        return self.home / "probe.log"

    @property
    def spill_dir(self) -> Path:
        """Where the transport spills unacknowledged event batches beyond its memory bound."""
        return self.home / "spill"


def load(path: Path) -> ProbeConfig:
    path = Path(path).resolve()
    data = read_yaml(path)
    known = {"host", "controller", "lab_ip", "lab_iface", "port", "home", "nc", "poll_hz", "shaper_backend", "keys_dir"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    for key in ("host", "controller", "lab_ip"):
        if key not in data:
            raise ConfigError(f"{path}: missing setting {key!r}")
    host = data["host"]
    if not isinstance(host, str) or not wire.HOST_RE.match(host):
        raise ConfigError(f"{path}: host must be a simple name, got {host!r}")
    try:
        ipaddress.IPv4Address(str(data["lab_ip"]))
    except ValueError as e:
        raise ConfigError(f"{path}: lab_ip is not an IPv4 address: {data['lab_ip']!r}") from e
    port = data.get("port", 9090)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ConfigError(f"{path}: port must be 1..65535, got {port!r}")
    poll_hz = data.get("poll_hz", 50.0)
    if not isinstance(poll_hz, (int, float)) or not 1 <= poll_hz <= 1000:
        raise ConfigError(f"{path}: poll_hz must be 1..1000, got {poll_hz!r}")
    backend = data.get("shaper_backend", "auto")
    if backend not in ("auto", "netem", "nfqueue"):
        raise ConfigError(f"{path}: shaper_backend must be auto, netem or nfqueue, got {backend!r}")
    controller = check_endpoint(path, data["controller"], "controller")
    keys = wire_curve.from_config(path, data.get("keys_dir"), controller, "controller",
                                  lambda d: wire_curve.load_probe_keys(d, host))
    return ProbeConfig(
        path=path, host=host, controller=controller, curve=keys,
        lab_ip=str(data["lab_ip"]), lab_iface=str(data.get("lab_iface", "eth0")), port=port,
        home=Path(data.get("home", f"/var/lib/tcplab/hosts/{host}")), nc=str(data.get("nc", "/usr/bin/nc")),
        poll_hz=float(poll_hz), shaper_backend=backend,
    )
