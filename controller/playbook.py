"""Run ``lab.yml`` through ansible-runner: what ``tcplab film`` calls.

ansible-runner (rather than a subprocess of ``ansible-playbook``) hands us every task result as a
structured event while the playbook runs, and keeps a copy of them under the private data dir's
``artifacts/``. We turn each event that matters into a structlog event and return the exit status.

    from controller.playbook import run_lab
    rc = run_lab(extravars={"tcplab_delay": 0.3})    # or, from the shell: tcplab film -e tcplab_delay=0.3
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Mapping, Optional

import structlog

from tcplab import logs
from tcplab.errors import TcplabError

log = structlog.get_logger("tcplab.playbook")

REPO = Path(__file__).resolve().parent.parent

# ansible-runner event names -> (log level, our event name)
_TASK_EVENTS = {
    "runner_on_ok": ("info", "task_ok"),
    "runner_on_failed": ("error", "task_failed"),
    "runner_on_unreachable": ("error", "host_unreachable"),
    "runner_on_skipped": ("debug", "task_skipped"),
}


class PlaybookError(TcplabError):
    """ansible-runner could not start the playbook at all (bad path, missing ansible-playbook)."""


def run_lab(
    playbook: str = "lab.yml",
    inventory: Optional[str] = None,
    extravars: Optional[Mapping[str, Any]] = None,
    repo: Path = REPO,
    private_data_dir: Optional[Path] = None,
    quiet: bool = True,
    cmdline: str = "",
) -> int:
    """Run ``playbook`` (relative to ``repo``) and return its exit status (0 = every play succeeded).

    ``inventory`` is a path relative to ``repo`` (default: the one ansible.cfg names, netns).
    ``quiet=False`` also prints ansible-playbook's own output, as the command line would.
    ``cmdline`` holds further ansible-playbook options, as one shell-quoted string.
    """
    import ansible_runner  # imported late: the probes never need it

    private = Path(private_data_dir or repo / ".cache" / "ansible-runner")
    private.mkdir(parents=True, exist_ok=True)
    bindir = str(Path(sys.executable).parent)
    envvars = {
        "ANSIBLE_CONFIG": str(repo / "ansible.cfg"),
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
    }
    kwargs: dict[str, Any] = dict(
        private_data_dir=str(private),
        project_dir=str(repo),
        playbook=playbook,
        envvars=envvars,
        extravars=dict(extravars or {}),
        event_handler=_log_event,
        quiet=quiet,
        rotate_artifacts=5,
    )
    if inventory:
        kwargs["inventory"] = str(repo / inventory)
    if cmdline:
        kwargs["cmdline"] = cmdline
    log.info("playbook_start", playbook=playbook, inventory=inventory, extravars=kwargs["extravars"])
    try:
        runner = ansible_runner.run(**kwargs)
    except Exception as e:  # ansible-runner raises ConfigurationError and friends before running
        raise PlaybookError(f"ansible-runner could not run {playbook}: {e}") from e
    rc = int(runner.rc if runner.rc is not None else 1)
    log.info("playbook_end", playbook=playbook, status=runner.status, rc=rc)
    return rc


def _log_event(event: Mapping[str, Any]) -> bool:
    """Log one ansible-runner event; return True so ansible-runner keeps it in its artifacts."""
    name = event.get("event", "")
    data = event.get("event_data") or {}
    if name == "playbook_on_play_start":
        log.info("play_start", play=data.get("play"))
    elif name in _TASK_EVENTS:
        level, ours = _TASK_EVENTS[name]
        res = data.get("res") or {}
        fields = dict(host=data.get("host"), task=data.get("task"), changed=bool(res.get("changed")))
        if name in ("runner_on_failed", "runner_on_unreachable"):
            fields["msg"] = res.get("msg") or res.get("stderr") or ""
        getattr(log, level)(ours, **fields)
    elif name == "playbook_on_stats":
        log.info("playbook_recap", changed=data.get("changed", {}), failures=data.get("failures", {}),
                 unreachable=data.get("dark", {}), ok=data.get("ok", {}))
    return True


def main(argv: Optional[list[str]] = None) -> int:
    """``tcplab film [ansible-playbook options...]``: lab.yml with events logged on stderr.

    The options go to ansible-playbook unchanged, e.g. ``tcplab film -i inventory/vagrant.yml
    -e tcplab_delay=0.3``; ansible-playbook's own output is printed as usual.
    """
    import shlex

    args = sys.argv[1:] if argv is None else argv
    logs.configure_cli()
    try:
        return run_lab(cmdline=shlex.join(args), quiet=False)
    except PlaybookError as e:
        print(f"tcplab film: {e}", file=sys.stderr)
        return 2
