"""The controller's configuration file (YAML, written by the Ansible role ``controller``).

``hosts`` is the inventory's lab hosts, each with its lab address (``{name: IPv4}``, from the role's
hostvars): the only probes admitted, and the only addresses a ``connect`` goes to (never what a probe
says of itself in its hello). A plain list of names admits those hosts but gives no address, so a
connect to one of them is refused.

``roles``: the host each role a scenario may name is (``{server: thinkpad, client: raspberrypi}``,
from the inventory's ``tcplab_role``); a role it leaves out is the seed's (controller.scenario.DEFAULT_ROLES).

``keys_dir``: the CurveZMQ keys (``controller.key_secret`` and each host's ``NAME.key``,
tcplab.wire.curve); without it the bus speaks plain ZeroMQ, which only a bind that no other machine
reaches (ipc://, tcp on loopback) may do: a tcp bind on any other address without keys is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from controller import controlsock
from tcplab import wire
from tcplab.actions.connect import unicast_ipv4
from tcplab.configfile import ConfigError, check_endpoint, read_yaml
from tcplab.wire import curve as wire_curve
from tcplab.wire.curve import Keys

__all__ = ["ConfigError", "ControllerConfig", "load"]


@dataclass(frozen=True)
class ControllerConfig:
    path: Path
    bind: str
    home: Path
    runs_dir: Path
    hosts: tuple[str, ...] = ()  # the inventory's lab hosts: the only probes admitted (empty: any)
    addresses: Mapping[str, str] = field(default_factory=dict)  # each lab host's address (the inventory's)
    curve: Keys | None = None  # keys_dir's keys: own pair, each host's public (None: no CurveZMQ)
    roles: Mapping[str, str] = field(default_factory=dict)  # role (server, client) -> the host bound to it

    @property
    def pid_path(self) -> Path:
        return self.home / "controller.pid"

    @property
    def log_path(self) -> Path:
        return self.home / "controller.log"

    @property
    def control_path(self) -> Path:
        return controlsock.path(self.home)  # HOME/control/control.sock


def load(path: str | Path) -> ControllerConfig:
    path = Path(path).resolve()
    data = read_yaml(path)
    unknown = sorted(str(k) for k in set(data) - {"bind", "home", "runs_dir", "hosts", "keys_dir", "roles"})
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    for key in ("bind", "home", "runs_dir"):
        if key not in data:
            raise ConfigError(f"{path}: missing setting {key!r}")
    hosts = data.get("hosts") or []
    addresses = _addresses(path, hosts) if isinstance(hosts, dict) else {}
    if not isinstance(hosts, (list, dict)) or not all(isinstance(h, str) and wire.HOST_RE.match(h) for h in hosts):
        raise ConfigError(f"{path}: hosts must map host names to lab addresses")
    home = Path(data["home"])
    if len(str(controlsock.path(home))) > 100:  # ipc:// paths must fit a sockaddr_un
        raise ConfigError(f"{path}: home {home} is too long for a control socket path")
    bind = check_endpoint(path, data["bind"], "bind")
    if data.get("keys_dir") is not None and not hosts:
        raise ConfigError(f"{path}: keys_dir needs hosts (the probes whose keys are admitted)")
    keys = wire_curve.from_config(path, data.get("keys_dir"), bind, "bind",
                                  lambda d: wire_curve.load_controller_keys(d, hosts))
    return ControllerConfig(path=path, bind=bind, home=home, runs_dir=Path(data["runs_dir"]), hosts=tuple(hosts),
                            addresses=addresses, curve=keys, roles=_roles(path, data.get("roles"), hosts))


def _roles(path: Path, roles: object, hosts: object) -> dict[str, str]:
    """``roles``: each role a scenario may name (server, client) and the lab host it is."""
    if roles is None:
        return {}
    if not isinstance(roles, dict) or not all(r in ("server", "client") for r in roles):
        raise ConfigError(f"{path}: roles must map server and client to lab hosts, got {roles!r}")
    for role, host in roles.items():
        if not isinstance(host, str) or (hosts and host not in hosts):
            raise ConfigError(f"{path}: role {role} is {host!r}, which is not one of the hosts")
    if len(set(roles.values())) != len(roles):
        raise ConfigError(f"{path}: one host for two roles: {roles!r}")
    return dict(roles)


def _addresses(path: Path, hosts: dict) -> dict[str, str]:
    """Each host's lab address: a plain unicast IPv4 address, each host its own."""
    out: dict[str, str] = {}
    for name, value in hosts.items():
        if not unicast_ipv4(value):
            raise ConfigError(f"{path}: hosts: {name}'s lab address is not a unicast IPv4 address: {value!r}")
        if value in out.values():
            raise ConfigError(f"{path}: hosts: {name} has the lab address of another host ({value})")
        out[str(name)] = value
    return out
