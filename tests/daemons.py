"""A real controller daemon and one real probe daemon per namespace, for integration tests.

The controller runs in the root namespace; each probe is started with ``ip netns exec`` so it
lives in its host's namespace like on a real host. They talk over ZeroMQ ``ipc://`` sockets
(Unix sockets are not bound to a network namespace), so no bridge is needed. Every socket between
them is CurveZMQ, as in production: the keys are made here (controller.keys) and each daemon's
configuration names its keys_dir.
Everything lives under one temporary directory and is stopped by pid in ``close``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import yaml

from controller.keys import install_keys, make_keys
from tcplab import pidfile
from tcplab.wire import curve
from tests.netns import NetnsPair

VENV_BIN = Path(sys.executable).parent
HOSTS = ("thinkpad", "raspberrypi")


def storyline(name: str, delay: float, shape: bool = True) -> dict:
    """The seed's storyline as a scenario dict, without waiting out TIME_WAIT's 60 s."""
    steps = [
        {"action": "listen", "host": "thinkpad", "expect": ["thinkpad LISTEN"]},
        {"action": "connect", "host": "raspberrypi", "to": "thinkpad",
         "expect": ["raspberrypi ESTABLISHED", "thinkpad ESTABLISHED"]},
        {"action": "send", "host": "thinkpad", "text": "Hello", "expect": ["raspberrypi prints Hello"]},
        {"action": "send", "host": "raspberrypi", "text": "Bye", "expect": ["thinkpad prints Bye"]},
        {"action": "close", "host": "thinkpad", "expect": ["thinkpad FIN_WAIT2", "raspberrypi CLOSE_WAIT"]},
        {"action": "close", "host": "raspberrypi", "expect": ["raspberrypi CLOSED", "thinkpad TIME_WAIT"]},
    ]
    if shape:
        steps.insert(0, {"action": "shape", "host": list(HOSTS)})
    return {"name": name, "port": 9090, "delay": delay, "steps": steps}


class Lab:
    def __init__(self, pair: NetnsPair, root: Path, port: int = 9090, clock_offsets: dict[str, int] | None = None,
                 roles: dict[str, str] | None = None):
        """``clock_offsets``: seconds by which a host's CLOCK_MONOTONIC runs ahead (a time namespace);
        ``roles``: the controller's (role -> host), none by default (the seed's)."""
        self.roles = roles
        self.pair = pair
        self.clock_offsets = dict(clock_offsets or {})
        self.root = root
        self.port = port
        self.controller_home = root / "controller"
        self.runs = root / "runs"
        self.controller_cfg = root / "controller.yml"
        self.keys = root / "keys"  # every pair; each daemon's keys_dir holds only what it needs
        self.probe_cfgs: dict[str, Path] = {}
        self.hosts = dict(zip(HOSTS, (pair.a, pair.b)))

    def key_dir(self, name: str, secret: str, publics: list[str]) -> str:
        """``name``'s keys_dir: ``secret``'s pair and the public keys of ``publics``, 0600 in a 0700 dir."""
        return str(install_keys(self.keys, self.root / name / "keys", secret, publics))

    def start(self) -> "Lab":
        endpoint = f"ipc://{self.root}/probes.sock"
        make_keys(self.keys, [curve.CONTROLLER, *HOSTS])
        self.controller_cfg.write_text(yaml.safe_dump({
            "bind": endpoint, "home": str(self.controller_home), "runs_dir": str(self.runs),
            "hosts": {n: h.ip for n, h in self.hosts.items()},
            "keys_dir": self.key_dir("controller", curve.CONTROLLER, list(HOSTS)),
            **({"roles": self.roles} if self.roles else {})}))
        subprocess.run([VENV_BIN / "tcplab-controller", "start", "--config", self.controller_cfg], check=True,
                       capture_output=True, timeout=30)
        for name, host in self.hosts.items():
            cfg = self.root / f"{name}.yml"
            cfg.write_text(yaml.safe_dump({
                "host": name, "controller": endpoint, "lab_ip": host.ip, "lab_iface": host.ifname,
                "port": self.port, "home": str(self.root / "hosts" / name),
                "keys_dir": self.key_dir(f"hosts/{name}", name, [curve.CONTROLLER])}))
            self.probe_cfgs[name] = cfg
            cmd = [str(VENV_BIN / "tcplab-probe"), "start", "--config", str(cfg)]
            if self.clock_offsets.get(name):
                # A time namespace holds the unsharing process's children, not itself: --fork runs
                # `start` in it, and the daemon it forks stays there (offset known exactly).
                cmd = ["unshare", "--time", f"--monotonic={self.clock_offsets[name]}", "--fork", *cmd]
            host.run(*cmd, timeout=30)
        self.wait_connected()
        return self

    def status_path(self, name: str) -> Path:
        return self.root / "hosts" / name / "probe.status"

    def probe_pid(self, name: str) -> int | None:
        return pidfile.alive(self.root / "hosts" / name / "probe.pid", str(self.probe_cfgs[name]))

    def wait_connected(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.status_path(n).exists() and self.status_path(n).read_text().startswith("connected")
                   for n in self.hosts):
                return
            time.sleep(0.1)
        logs = {n: (self.root / "hosts" / n / "probe.log").read_text()[-2000:]
                for n in self.hosts if (self.root / "hosts" / n / "probe.log").exists()}
        raise AssertionError(f"probes did not connect within {timeout} s: {logs}")

    def tcplab(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([VENV_BIN / "tcplab", *args, "--controller-home", str(self.controller_home)],
                              capture_output=True, text=True, timeout=timeout)

    def run_scenario(self, scenario: dict, timeout: float = 120) -> tuple[subprocess.CompletedProcess, Path]:
        """Write ``scenario`` to a file, ``tcplab run`` it, return the result and the newest run directory."""
        path = self.root / f"{scenario['name']}.yml"
        path.write_text(yaml.safe_dump(scenario))
        res = self.tcplab("run", str(path), timeout=timeout)
        runs = sorted(self.runs.iterdir(), key=lambda d: d.stat().st_mtime) if self.runs.is_dir() else []
        return res, (runs[-1] if runs else self.runs)

    def close(self) -> None:
        for name, cfg in self.probe_cfgs.items():
            self.hosts[name].run(str(VENV_BIN / "tcplab-probe"), "stop", "--config", str(cfg), check=False,
                                 timeout=30)
        subprocess.run([VENV_BIN / "tcplab-controller", "stop", "--config", self.controller_cfg],
                       capture_output=True, timeout=30)


def run_in_fresh_lab(root: Path, scenario: dict, timeout: float = 240) -> Path:
    """Run ``scenario`` once on a fresh pair of namespaces with a real controller and probes; the run
    directory. Everything is stopped and the namespaces deleted before returning; a failed run fails."""
    from tests.netns import NetnsPair, require_root

    require_root()
    with NetnsPair() as pair:
        lab = Lab(pair, root)
        try:
            lab.start()
            res, run_dir = lab.run_scenario(scenario, timeout=timeout)
        finally:
            lab.close()
    assert res.returncode == 0, res.stderr + res.stdout
    return run_dir
