"""Pid files and daemonizing, shared by the probe and the controller daemons.

A pid file holds one line, the pid. A pid is only trusted while ``/proc/PID/cmdline`` still
contains the marker the owner recorded (its config path), so a recycled pid is never signalled.
Nothing here kills by name.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Callable

from tcplab.files import atomic_write


def read(path: Path) -> int | None:
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not ended (a zombie, ended but not reaped, has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def alive(path: Path, marker: str) -> int | None:
    """The pid in ``path`` if that process is running and its command line contains ``marker``."""
    pid = read(path)
    if pid is None or pid <= 0:
        return None
    line = cmdline(pid)
    if not line or marker not in line:
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    return None if state == "Z" else pid


def write(path: Path, pid: int | None = None) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, f"{pid or os.getpid()}\n")


def remove(path: Path, pid: int | None = None) -> None:
    """Remove ``path`` (only if it still names ``pid``, when given)."""
    if pid is not None and read(path) != pid:
        return
    try:
        Path(path).unlink()
    except FileNotFoundError:
        pass


def stop(path: Path, marker: str, timeout: float = 10.0) -> bool:
    """SIGTERM the process in ``path``, wait, then SIGKILL. True if something was stopped."""
    pid = alive(path, marker)
    if pid is None:
        remove(path)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive(path, marker) != pid:
            break
        time.sleep(0.05)
    else:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        while alive(path, marker) == pid:
            time.sleep(0.02)
    remove(path, pid)
    return True


def spawn(run: "Callable[[], int]", pid_path: Path, marker: str, log_path: Path,
          timeout: float = 15.0) -> int:
    """Run ``run()`` in a daemon (double fork, new session, stdio on ``log_path``).

    The daemon writes ``pid_path`` before calling ``run`` and removes it when ``run`` returns.
    This process waits until the pid file names a live daemon and returns its pid; it raises
    RuntimeError naming the log when the daemon died first. ``marker`` must appear in this
    process's command line (the config path does), since the daemon inherits it.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:  # intermediate: new session, fork the daemon, leave at once
        try:
            os.setsid()
            if os.fork() > 0:
                os._exit(0)
            os.chdir("/")
            devnull = os.open(os.devnull, os.O_RDONLY)
            log = os.open(str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(devnull, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            write(pid_path)
            code = 1
            try:
                code = run()
            finally:
                remove(pid_path, os.getpid())
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        except BaseException:
            os._exit(1)
    os.waitpid(child, 0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = alive(pid_path, marker)
        if pid:
            return pid
        time.sleep(0.02)
    raise RuntimeError(f"daemon did not come up within {timeout:.0f} s; see {log_path}")


def command(action: str, *, config: str, canonical: Path, module: str, pid_path: Path, log_path: Path,
            serve: Callable[[], int], prog: str) -> int:
    """``start`` / ``stop`` / ``run`` of a daemon whose identity is its config file.

    ``start`` and ``stop`` print ``{"changed": bool, ...}`` for Ansible. A config named another way
    than ``canonical`` (relative, through a link) is run again under its canonical path, since a pid
    is trusted only while its command line names that path.
    """
    marker = str(canonical)
    if config != marker:
        os.execv(sys.executable, [sys.executable, "-m", module, action, "--config", marker])
    if action == "stop":
        print(json.dumps({"changed": stop(pid_path, marker)}))
        return 0
    if action == "run":
        write(pid_path)
        try:
            return serve()
        finally:
            remove(pid_path, os.getpid())
    pid = alive(pid_path, marker)
    if pid:
        print(json.dumps({"changed": False, "pid": pid}))
        return 0
    try:
        pid = spawn(serve, pid_path, marker, log_path)
    except RuntimeError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    print(json.dumps({"changed": True, "pid": pid}))
    return 0


def main(prog: str, module: str, argv: list[str] | None, load: Callable, serve: Callable, prepare=None) -> int:
    """``PROG start|stop|run --config PATH``: load the config (a bad one: one line, exit 2), then
    :func:`command` with ``serve(cfg)``. ``prepare(cfg)`` runs first (e.g. make the home)."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=f"{prog} daemon")
    parser.add_argument("command", choices=("start", "stop", "run"))
    parser.add_argument("--config", required=True, help="YAML configuration")
    args = parser.parse_args(argv)
    try:
        cfg = load(args.config)
    except ValueError as e:  # ConfigError
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    if prepare is not None:
        prepare(cfg)
    return command(args.command, config=args.config, canonical=cfg.path, module=module, pid_path=cfg.pid_path,
                   log_path=cfg.log_path, serve=lambda: serve(cfg), prog=prog)
