"""The controller's configuration file (YAML, written by the Ansible role ``controller``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tcplab import wire
from tcplab.configfile import ConfigError, check_endpoint, read_yaml

__all__ = ["ConfigError", "ControllerConfig", "load"]


@dataclass(frozen=True)
class ControllerConfig:
    path: Path
    bind: str
    home: Path
    runs_dir: Path
    hosts: tuple[str, ...] = ()  # the inventory's lab hosts: the only probes admitted (empty: any)

    @property
    def pid_path(self) -> Path:
        return self.home / "controller.pid"

    @property
    def log_path(self) -> Path:
        return self.home / "controller.log"

    @property
    def control_path(self) -> Path:
        return self.home / "control.sock"


def load(path: str | Path) -> ControllerConfig:
    path = Path(path).resolve()
    data = read_yaml(path)
    unknown = sorted(str(k) for k in set(data) - {"bind", "home", "runs_dir", "hosts"})
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}")
    for key in ("bind", "home", "runs_dir"):
        if key not in data:
            raise ConfigError(f"{path}: missing setting {key!r}")
    hosts = data.get("hosts") or []
    if not isinstance(hosts, list) or not all(isinstance(h, str) and wire.HOST_RE.match(h) for h in hosts):
        raise ConfigError(f"{path}: hosts must be a list of host names")
    home = Path(data["home"])
    if len(str(home / "control.sock")) > 100:  # ipc:// paths must fit a sockaddr_un
        raise ConfigError(f"{path}: home {home} is too long for a control socket path")
    return ControllerConfig(path=path, bind=check_endpoint(path, data["bind"], "bind"), home=home,
                            runs_dir=Path(data["runs_dir"]), hosts=tuple(hosts))
