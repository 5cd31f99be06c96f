"""The ``tcplab`` command.

    tcplab run SCENARIO [--delay SECONDS] [--controller-home DIR] [--timeout S]
    tcplab status [--controller-home DIR]
    tcplab lab up|down|purge|status [--json] [--home DIR]  (the embedded two-namespace testbed)
    tcplab film [ansible-playbook options...]           (lab.yml through ansible-runner)
    tcplab render RUN_DIR                               (the film's files again, from trace.jsonl alone)
    tcplab replay RUN_DIR [--speed X] [--slow] [--max-gap S]   (the run played again in the terminal)
    tcplab watch [--runs DIR] [--since-now] [--until-pid PID]  (the terminal film of a run being filmed)
    tcplab diff RUN_A RUN_B [--json]                    (what differs between two runs, step by step)
    tcplab doctor [-i INVENTORY] [--json]               (what each lab host's kernel offers the lab)
    tcplab check FILE... [-i INVENTORY]                 (scenario files checked whole; nothing runs)
    tcplab --version

Exit codes: 0 success; 1 the run or the action failed (or the controller no longer runs it: it was
started again mid-run); 2 bad input (a flag, a scenario file); 3 the controller is not reachable (or
stopped answering during the run); 130 interrupted (Ctrl-C; 143 for SIGTERM): ``tcplab run`` asked
the controller to cancel the run (its steps stop, every host's nc ended and shaping cleared, run.json
``cancelled``) and waited for its ``done``, up to :data:`CANCEL_WAIT_S` (a second signal waits no more).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import zmq

from controller import controlsock, scenario
from controller.film.gaps import LONG_GAP_S, SLOW_MIN_S
from controller.film.summary import unmet_lines
from controller.film.visible import visible
from tcplab import wire
from tcplab.errors import TcplabError

DEFAULT_HOME = Path(os.environ.get("TCPLAB_HOME", "/var/lib/tcplab")) / "controller"
CANCEL_WAIT_S = 30.0  # after Ctrl-C, for the controller's done (its cleanup and the run's finish)
QUIET_S = 5.0         # a run's controller silent this long is asked its status (is it still there?)
INTERRUPTED = 128     # + the signal: what a shell reports for a command a signal ended (130 for Ctrl-C)
REPEAT_S = 1.0        # a SIGINT this soon after the first is the same Ctrl-C (ansible's worker passes it on twice)


class Unreachable(TcplabError):
    """The controller's control socket is missing or silent (exit code 3)."""


class ControlClient:
    """A DEALER on the controller's ipc control socket; frames through one wire Session ("cli")."""

    def __init__(self, home: Path):
        self.path = controlsock.path(home)
        try:
            controlsock.check(self.path)  # the controller's own, open to nobody else
        except controlsock.ControlSocketError as e:
            raise Unreachable(str(e)) from None
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        wire.limit(self.sock)
        self.sock.connect(f"ipc://{self.path}")
        self.session = wire.Session("cli")

    def send(self, type_: str, body: dict) -> None:
        self.session.send_blocking(self.sock, type_, body)

    def recv(self, timeout_s: float) -> dict:
        """The next frame that follows the wire. One that does not is counted (``session.counters``),
        named on stderr and skipped, as every receiver does; Unreachable when none comes in time."""
        deadline = time.monotonic() + timeout_s
        while self.sock.poll(max(0, int((deadline - time.monotonic()) * 1000))):
            try:
                return self.session.decode(self.sock.recv())
            except wire.ProtocolError as e:
                print(f"tcplab: a bad frame from the controller, skipped: {e}", file=sys.stderr)
        raise Unreachable(f"the controller did not answer within {timeout_s:g} s")

    def close(self) -> None:
        self.sock.close()
        self.ctx.term()


def _run(args: argparse.Namespace) -> int:
    try:
        scn = scenario.load(args.scenario)
        if args.delay is not None:
            scn = scn.with_delay(args.delay)
    except scenario.ScenarioError as e:
        print(f"tcplab: {e}", file=sys.stderr)
        return 2
    client = ControlClient(Path(args.controller_home))
    seen: dict = {"signum": signal.SIGINT}  # the run's id, once a progress frame named it; what interrupted
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def terminated(signum: int, frame: object) -> None:  # SIGTERM asks what Ctrl-C asks: a cancel
        seen["signum"] = signum
        raise KeyboardInterrupt

    try:
        try:
            signal.signal(signal.SIGTERM, terminated)
            client.send("run", {"scenario": scn.to_dict(), "delay": scn.delay})
            body = _until_done(client, args.timeout, seen)
        except KeyboardInterrupt:
            return _cancel(client, seen, seen["signum"])
        if body.get("ok"):
            print(f"run {body.get('run')} finished: every step succeeded")
        else:
            print(visible(f"tcplab: run failed: {body.get('error')}"), file=sys.stderr)
            for line in _unmet(body.get("dir")):
                print(visible(line), file=sys.stderr)
        if body.get("dir"):
            print(f"run files: {body['dir']}")
        return 0 if body.get("ok") else 1
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
        client.close()


def _until_done(client: ControlClient, timeout: float, seen: dict, show=None) -> dict:
    """Show the run's progress (``show``, default :func:`_print_progress`) until its ``done``; the
    done's body. ``seen["run"]``: the run's id, once a progress frame named it.

    A controller quiet for :data:`QUIET_S` is asked its status: no answer within QUIET_S more is
    Unreachable (exit 3); an answer naming no run or another (a controller started again after the
    one running the run was killed) and no done within QUIET_S ends the wait as a failed run."""
    deadline = time.monotonic() + timeout
    asked = gone = None  # when the status was asked; when it said the run is not running
    while True:
        now = time.monotonic()
        if gone is not None and now - gone > QUIET_S:
            return {"ok": False, "run": seen.get("run"),
                    "error": f"the controller no longer runs {seen.get('run')} (it ended during the run?)"}
        try:
            msg = client.recv(max(0.1, min(deadline - now, QUIET_S)))
        except Unreachable:
            if asked is not None or time.monotonic() >= deadline:
                raise
            client.send("status", {})
            asked = time.monotonic()
            continue
        if msg["type"] == "state":
            asked = None
            if seen.get("run") and msg["body"].get("running") != seen["run"] and gone is None:
                gone = time.monotonic()
        elif msg["type"] == "progress":
            if msg["body"].get("run"):
                seen["run"] = msg["body"]["run"]
            (show or _print_progress)(msg["body"])
        elif msg["type"] == "done":
            return msg["body"]


def _cancel(client: ControlClient, seen: dict, signum: int) -> int:
    """Ctrl-C (or SIGTERM): ask the controller to cancel the run and wait for its done (a second
    signal: not). Output may have nowhere to go any more (the parent that read it was interrupted too)."""
    first = time.monotonic()

    def again(signum, frame) -> None:  # under ansible one Ctrl-C comes twice: the first second is one
        if time.monotonic() - first > REPEAT_S:
            raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, again)
    client.send("cancel", {"run": seen["run"]} if seen.get("run") else {})
    _say(f"tcplab: interrupted: cancelling run {seen.get('run') or '(starting)'}, clearing the shaping and "
         "ending every endpoint")
    try:
        body = _until_done(client, CANCEL_WAIT_S, seen, show=_quiet_progress)
    except KeyboardInterrupt:
        _say("tcplab: interrupted again: not waiting for the controller")
    except Unreachable as e:
        _say(f"tcplab: {e}")
    else:
        _say(visible(f"tcplab: run cancelled: {body.get('error')}")
             + (f"\nrun files: {body['dir']}" if body.get("dir") else ""))
    return INTERRUPTED + signum


def _quiet_progress(body: dict) -> None:
    try:
        _print_progress(body)
    except OSError:
        pass


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:  # a closed pipe
        pass


def _unmet(run_dir: object) -> list[str]:
    """Expected against observed for every expectation of the failed step (its run.json)."""
    try:
        info = json.loads((Path(str(run_dir)) / "run.json").read_text())
    except (OSError, ValueError):
        return []
    return unmet_lines(info) if isinstance(info, dict) else []


def _print_progress(body: dict) -> None:
    if body.get("event") == "run_started":
        print(visible(f"run {body.get('run')} started: {body.get('steps')} steps, files in {body.get('dir')}"),
              flush=True)
    elif body.get("event") == "step":
        status = body.get("status")
        line = f"[{body.get('index')}/{body.get('total')}] {body.get('action')} on {body.get('target')}: {status}"
        if body.get("error"):
            line += f" — {body['error']}"
        print(visible(line), flush=True)  # a step's error holds what a probe said


def _status(args: argparse.Namespace) -> int:
    client = ControlClient(Path(args.controller_home))
    try:
        client.send("status", {})
        body = client.recv(5.0)["body"]
    finally:
        client.close()
    print(visible(f"running: {body.get('running') or 'no run'}"))
    for host, p in body.get("probes", {}).items():
        print(visible(f"{host}: {'alive' if p['alive'] else 'silent'} at {p['lab_ip']}, clock offset "
                      f"{p['clock']['offset_ns'] / 1e6:.3f} ms ± {(p['clock']['uncertainty_ns'] or 0) / 1e6:.3f} ms"))
    if body.get("omitted"):
        print(f"and {body['omitted']} more probes (the reply holds what fits)")
    return 0


def _render(args: argparse.Namespace) -> int:
    from controller.film.render import render_all
    from controller.trace import load

    run_dir = Path(args.run_dir)
    trace = run_dir / "trace.jsonl"
    if not trace.is_file():
        print(f"tcplab: {trace} does not exist (is {run_dir} a run directory?)", file=sys.stderr)
        return 2
    try:
        records = load(trace)
    except ValueError as e:  # json.JSONDecodeError
        print(f"tcplab: {trace} is not a trace: {e}", file=sys.stderr)
        return 2
    written, errors = render_all(run_dir, records)
    for path in written:
        print(path)
    for line in errors:
        print(f"tcplab: cannot make {run_dir}/{line}", file=sys.stderr)
    return 1 if errors else 0


def _replay(args: argparse.Namespace) -> int:
    from controller.film import playback
    return playback.main(args.run_dir, args.speed, args.slow, args.max_gap)


def _watch(args: argparse.Namespace) -> int:
    from controller.film import watch
    return watch.main(args.runs, args.since_now, args.until_pid, args.steps, args.scenario)


# Subcommands with a command line of their own: the module's main(argv) parses the rest.
DELEGATED = {
    "lab": "controller.testbed.cli",
    "film": "controller.playbook",
    "diff": "controller.diff",
    "doctor": "controller.doctor",
    "check": "controller.check",
}


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version
    try:
        return dist_version("tcplab")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["--version"], ["-V"]):
        print(f"tcplab {version()}")
        return 0
    if argv[:1] and argv[0] in DELEGATED:
        import importlib
        return importlib.import_module(DELEGATED[argv[0]]).main(argv[1:])
    parser = argparse.ArgumentParser(prog="tcplab", description="Film a TCP connection in slow motion.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario on the running controller")
    run.add_argument("scenario", help="scenario YAML file, e.g. scenarios/seed.yml")
    run.add_argument("--delay", type=float, help="egress delay in seconds (overrides the scenario's)")
    run.add_argument("--timeout", type=float, default=1800.0, help="give up waiting after this many seconds")
    status = sub.add_parser("status", help="which probes the controller sees")
    for p in (run, status):
        p.add_argument("--controller-home", default=str(DEFAULT_HOME), help="the controller's home directory")
    sub.add_parser("lab", help="the embedded testbed: lab up|down|purge|status")
    sub.add_parser("film", help="run lab.yml (testbed, provisioning, film) through ansible-runner")
    sub.add_parser("diff", help="compare two runs step by step: states, segments, kernel events")
    sub.add_parser("doctor", help="what each lab host's kernel offers: shaping backends, tracepoints, clock")
    sub.add_parser("check", help="check scenario files (and against an inventory with -i); run nothing")
    parser.add_argument("--version", "-V", action="store_true", help="print tcplab's version")
    render = sub.add_parser("render", help="make a run's film files again from its trace.jsonl alone")
    render.add_argument("run_dir", help="a run directory, e.g. runs/20261123-210231-seed")
    replay = sub.add_parser("replay", help="play a run again in the terminal, moment by moment")
    replay.add_argument("run_dir", help="a run directory, e.g. runs/20261123-210231-seed")
    replay.add_argument("--speed", type=float, default=1.0, help="0.1 to 20; 1 is real time (default)")
    replay.add_argument("--slow", action="store_true",
                        help=f"slow motion: every moment stays at least {SLOW_MIN_S:g} s")
    replay.add_argument("--max-gap", type=float, default=LONG_GAP_S,
                        help="a quiet stretch longer than this (TIME_WAIT's 60 s) is played in this many seconds; "
                             f"0 keeps every gap (default {LONG_GAP_S:g})")
    watch = sub.add_parser("watch", help="the terminal film of the next run, live, until its trace.jsonl is written")
    watch.add_argument("--runs", default="runs", help="the runs directory (default: runs)")
    watch.add_argument("--since-now", action="store_true", help="only a run directory created after the watch began")
    watch.add_argument("--until-pid", type=int, help="give up when this process ends (make film's ansible-playbook)")
    watch.add_argument("--steps", type=int, help="the scenario's number of steps, for the progress bar")
    watch.add_argument("--scenario", help="the scenario file, for the progress bar (used when the run's name matches)")
    args = parser.parse_args(argv)
    if args.command == "render":
        return _render(args)
    if args.command in ("replay", "watch"):
        return _replay(args) if args.command == "replay" else _watch(args)
    try:
        return _run(args) if args.command == "run" else _status(args)
    except Unreachable as e:
        print(f"tcplab: {e}", file=sys.stderr)
        return 3
    except wire.ProtocolError as e:
        print(f"tcplab: the controller sent a bad frame: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
