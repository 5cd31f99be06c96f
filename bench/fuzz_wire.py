"""Fuzz the wire against live daemons: a real controller and a real probe, and frames that do not fit.

    .venv/bin/python -m bench.fuzz_wire [--frames N] [--batch B] [--seed S] [--targets controller,control,probe]

Starts a real ``tcplab-controller`` (its probe ROUTER a Curve server with its authenticator, its
control socket) and a real ``tcplab-probe`` (in a network namespace of its own, ``unshare --net``,
on a veth pair of its own; it connects to this script, which plays its controller with the controller's
key), then throws N frames at each target (:mod:`bench.fuzz_frames`: random bytes, valid frames
mutated byte by byte and field by field, valid ones now and then):

- ``controller``: the controller's probe ROUTER, as the keyed probe ``thinkpad``;
- ``control``:    the controller's control socket, as the CLI;
- ``probe``:      the probe's DEALER, as its controller.

After every batch of B frames each target must answer a valid frame (a hello its welcome, a status
its state, a ping its pong) within 10 s, and both daemons must still run. Prints, per target, the
frames thrown, the frames survived (those thrown before the last check it answered), frames/s, and
what the daemons counted as refused; the exit code is 1 if a daemon stopped answering or logged a
bug (a traceback, an event with an exception). Needs root (the probe's namespace and capture). Everything lives in one temporary directory,
removed at the end; the daemons are stopped by pid.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
import zmq

from bench.fuzz_frames import Frames
from controller.keys import make_keys
from tcplab import wire
from tcplab.wire import curve

BIN = Path(sys.executable).parent
HOSTS = {"thinkpad": "10.90.0.1", "raspberrypi": "10.90.0.2"}
PROBE = "raspberrypi"  # the real probe; the fuzzer speaks as thinkpad to the controller
IFACE = "tcplab-fz0"
ANSWER_S = 10.0


class Daemons:
    """The controller and the probe, in ``root``; :meth:`close` stops both by pid."""

    def __init__(self, root: Path):
        self.root = root
        self.keys = root / "keys"
        make_keys(self.keys, [curve.CONTROLLER, *HOSTS])
        self.probes_endpoint = f"ipc://{root}/probes.sock"    # the real controller's
        self.fake_endpoint = f"ipc://{root}/fake-controller.sock"  # where the probe connects: us
        self.procs: dict[str, subprocess.Popen] = {}

    def keys_dir(self, name: str, secret: str, publics) -> str:
        d = self.root / name / "keys"
        d.mkdir(mode=0o700, parents=True)
        for src in [curve.secret_path(self.keys, secret), *(curve.public_path(self.keys, p) for p in publics)]:
            (d / src.name).write_bytes(src.read_bytes())
            (d / src.name).chmod(0o600)
        return str(d)

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def start_controller(self) -> None:
        cfg = self.root / "controller.yml"
        cfg.write_text(yaml.safe_dump({"bind": self.probes_endpoint, "home": str(self.root / "controller"),
                                       "runs_dir": str(self.root / "runs"), "hosts": HOSTS,
                                       "keys_dir": self.keys_dir("controller", curve.CONTROLLER, list(HOSTS))}))
        self._spawn("controller", [str(BIN / "tcplab-controller"), "run", "--config", str(cfg)])
        self.control_path = self._wait_for(lambda: next((self.root / "controller").rglob("control.sock"), None))

    def start_probe(self) -> None:
        cfg = self.root / "probe.yml"
        cfg.write_text(yaml.safe_dump({"host": PROBE, "controller": self.fake_endpoint, "lab_ip": HOSTS[PROBE],
                                       "lab_iface": IFACE, "port": 9090, "home": str(self.root / "probe"),
                                       "keys_dir": self.keys_dir("probe", PROBE, [curve.CONTROLLER])}))
        net = (f"ip link add {IFACE} type veth peer name {IFACE}p && ip link set {IFACE}p up && ip addr add {HOSTS[PROBE]}/24 dev {IFACE} && "
               f"ip link set {IFACE} up && ip link set lo up && exec {BIN / 'tcplab-probe'} run --config {cfg}")
        self._spawn("probe", ["unshare", "--net", "--", "sh", "-c", net])

    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.log(name), "wb") as out:
            self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)

    def _wait_for(self, find, timeout: float = 20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = find()
            if found:
                return found
            if any(p.poll() is not None for p in self.procs.values()):
                break
            time.sleep(0.05)
        raise RuntimeError(f"the daemons did not come up: {self.tail()}")

    def alive(self, name: str | None = None) -> bool:
        """Both daemons run (or the one named)."""
        return all(p.poll() is None for n, p in self.procs.items() if name in (None, n))

    def tail(self) -> dict[str, str]:
        return {n: self.log(n).read_text(errors="replace")[-1500:] for n in self.procs if self.log(n).exists()}

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def counted(self) -> dict:
        """What each daemon's log says it refused, its error events by name (a fuzzed ``run`` may
        really start a run, which then fails: errors of their own), and its bugs: a line that is
        not a log event (a traceback) or an event with an exception."""
        out: dict = {"bugs": [], "errors": {}}
        for name in self.procs:
            refused = 0
            for line in self.log(name).read_text(errors="replace").splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    out["bugs"].append(f"{name}: {line[:200]}")
                    continue
                if "exception" in ev or ev.get("level") == "critical":
                    out["bugs"].append(f"{name}: {line[:300]}")
                if ev.get("level") == "error":
                    key = f"{name} {ev.get('event')}"
                    out["errors"][key] = out["errors"].get(key, 0) + 1
                if "refused" in str(ev.get("event")):  # logged sampled, each saying how many so far
                    n = ev.get("refused")
                    refused = max(refused, n if isinstance(n, int) and not isinstance(n, bool) else refused + 1)
                if ev.get("event") == "controller_stopped":
                    out["controller_counters"] = {"probe_frames": ev.get("probe_frames"),
                                                  "control_frames": ev.get("control_frames")}
            out[f"{name}_refused"] = refused
        return out


class Target:
    """One receiver: a socket of ours to it, how to throw a frame at it, and the valid frame it must answer."""

    def __init__(self, name: str, sock: zmq.Socket, ask, answered, peer: bytes | None = None):
        self.name, self.sock, self.ask, self.answered, self.peer = name, sock, ask, answered, peer
        self.daemon = "probe" if name == "probe" else "controller"
        self.thrown = self.survived = 0
        self.failure: str | None = None

    def send(self, frame: bytes) -> None:
        while True:
            try:
                if self.peer is None:
                    self.sock.send(frame, zmq.NOBLOCK)
                else:
                    self.sock.send_multipart([self.peer, frame], zmq.NOBLOCK)
                return
            except zmq.Again:  # its queue is full: read what it sent us, then wait a little
                self.drain()
                self.sock.poll(50, zmq.POLLOUT)

    def drain(self) -> None:
        while self.sock.poll(0):
            self.sock.recv_multipart()

    def answers_or_gone(self, n: int) -> bool:
        try:
            return self.answers(n)
        except zmq.ZMQError as e:  # EHOSTUNREACH: the probe is not connected any more
            self.failure = f"{e} after {self.thrown} frames"
            return False

    def answers(self, n: int) -> bool:
        """Does it answer a valid frame (``n`` makes it unique) within ANSWER_S?"""
        session = wire.Session("controller" if self.name == "probe" else "thinkpad" if self.name == "controller"
                               else "cli")
        self.send(session.frame(*self.ask(n)))
        deadline = time.monotonic() + ANSWER_S
        while time.monotonic() < deadline:
            if self.sock.poll(100):
                try:
                    env = session.decode(self.sock.recv_multipart()[-1])
                except wire.ProtocolError:
                    continue
                if self.answered(env, n):
                    return True
        return False


def targets(ctx: zmq.Context, d: Daemons, fake: zmq.Socket) -> dict[str, Target]:
    ctl = ctx.socket(zmq.DEALER)
    ctl.setsockopt(zmq.ROUTING_ID, b"thinkpad")
    curve.client(ctl, curve.load_probe_keys(d.keys, "thinkpad"))
    cli = ctx.socket(zmq.DEALER)
    for s in (ctl, cli):
        s.setsockopt(zmq.LINGER, 0)
    ctl.connect(d.probes_endpoint)
    cli.connect(f"ipc://{d.control_path}")
    hello = {"pid": 4242, "lab_ip": HOSTS["thinkpad"], "port": 9090}
    return {
        "controller": Target("controller", ctl, lambda n: ("hello", hello),
                             lambda env, n: env["type"] == "welcome"),
        "control": Target("control", cli, lambda n: ("status", {}), lambda env, n: env["type"] == "state"),
        "probe": Target("probe", fake, lambda n: ("ping", {"id": n}),
                        lambda env, n: env["type"] == "pong" and env["body"].get("id") == n, peer=PROBE.encode()),
    }


def fake_controller(ctx: zmq.Context, d: Daemons) -> zmq.Socket:
    """The probe's controller: a ROUTER with the controller's key (a Curve server without ZAP: it
    takes any client, as only the real probe connects here)."""
    sock = ctx.socket(zmq.ROUTER)
    keys = curve.load_keys(d.keys, curve.CONTROLLER, [])
    sock.setsockopt(zmq.CURVE_SERVER, 1)
    sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.public)
    sock.setsockopt(zmq.CURVE_SECRETKEY, keys.secret)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(d.fake_endpoint)
    return sock


def fuzz(frames: int, batch: int, seed: int, names: list[str], root: Path) -> dict:
    d = Daemons(root)
    ctx = zmq.Context()
    fake = fake_controller(ctx, d)
    try:
        d.start_controller()
        d.start_probe()
        all_targets = targets(ctx, d, fake)
        chosen = [all_targets[n] for n in names]
        if not fake.poll(30_000):  # the probe's hello: it is up and connected to us
            raise RuntimeError(f"the probe did not connect: {d.tail()}")
        for t in chosen:  # each answers before the first bad frame (the probe: once it is connected)
            if not any(t.answers(0) for _ in range(3)):
                raise RuntimeError(f"{t.name} does not answer a valid frame at the start: {d.tail()}")
        gens = {t.name: Frames(t.name, {"probe": "controller", "controller": "thinkpad"}.get(t.name, "cli"),
                               seed + i) for i, t in enumerate(chosen)}
        started = time.monotonic()
        for start in range(0, frames, batch):
            live = [t for t in chosen if t.failure is None]
            if not live:
                break
            for t in live:
                gen = gens[t.name]
                try:
                    for i in range(min(batch, frames - start)):
                        t.send(next(gen))
                        t.thrown += 1
                        if i % 256 == 0:
                            t.drain()
                except zmq.ZMQError as e:  # EHOSTUNREACH: the probe is gone from its connection
                    t.failure = f"{e} after {t.thrown} frames (the {t.daemon} running: {d.alive(t.daemon)})"
            for t in live:
                if t.failure is not None:
                    continue
                t.drain()
                if not d.alive(t.daemon):
                    t.failure = f"the {t.daemon} exited: {d.tail()[t.daemon][-600:]}"
                elif not t.answers_or_gone(start // batch + 1):
                    t.failure = f"no answer after {t.thrown} frames"
                else:
                    t.survived = t.thrown
        elapsed = time.monotonic() - started
    finally:
        d.close()
        for s in (fake, *(t.sock for t in locals().get("all_targets", {}).values())):
            s.close(0)
        ctx.term()
    total = sum(t.thrown for t in chosen)
    return {"targets": {t.name: {"thrown": t.thrown, "survived": t.survived, "failure": t.failure} for t in chosen},
            "seconds": round(elapsed, 1), "frames_per_s": round(total / elapsed) if elapsed else 0,
            "seed": seed, **d.counted()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.fuzz_wire", description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=1_000_000, help="frames thrown at each target")
    p.add_argument("--batch", type=int, default=10_000, help="frames between two checks that a target answers")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--targets", default="controller,control,probe")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (the daemons' logs)")
    args = p.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="tcplab-fuzz-"))
    try:
        res = fuzz(args.frames, args.batch, args.seed, args.targets.split(","), root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    for name, t in res["targets"].items():
        print(f"{name:10s} thrown {t['thrown']:>9,}  survived {t['survived']:>9,}"
              + (f"  FAILED: {t['failure'][:300]}" if t["failure"] else ""))
    print(f"{sum(t['thrown'] for t in res['targets'].values()):,} frames in {res['seconds']} s: "
          f"{res['frames_per_s']:,} frames/s (seed {res['seed']})")
    print(f"refused (as logged, sampled): controller >= {res.get('controller_refused'):,}, probe >= "
          f"{res.get('probe_refused'):,}; the controller's counters at its stop: {res.get('controller_counters')}")
    if res["errors"]:
        print("error events logged: " + ", ".join(f"{k} x{n}" for k, n in sorted(res["errors"].items())))
    for line in res["bugs"][:20]:
        print(f"BUG: {line}")
    ok = all(t["survived"] == t["thrown"] and not t["failure"] for t in res["targets"].values()) and not res["bugs"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
