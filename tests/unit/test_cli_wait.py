"""``tcplab run`` waiting on a controller that went away: against a real control socket (a ROUTER on
ipc in a thread), the CLI asks the status when the controller has been quiet and gives up on a run
the controller no longer runs (exit 1) or on a controller that answers nothing (exit 3)."""

from __future__ import annotations

import time

from controller import cli
from tests.unit.test_cli import _control_server as _server

RUN_ID = "20261201-160000-t"


def _started(env) -> list:
    if env["type"] == "run":
        return [("progress", {"run": RUN_ID, "event": "run_started", "dir": "/tmp/x", "steps": 1})]
    return [("state", {"probes": {}, "running": None})]  # a controller started again: it runs nothing


def _scenario(tmp_path) -> str:
    (tmp_path / "s.yml").write_text("name: t\nsteps:\n  - action: listen\n    host: thinkpad\n")
    return str(tmp_path / "s.yml")


def test_a_run_the_controller_no_longer_runs_ends_the_wait_as_a_failed_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "QUIET_S", 0.3)
    thread, got = _server(tmp_path, _started, frames=3)
    t0 = time.monotonic()
    code = cli.main(["run", _scenario(tmp_path), "--controller-home", str(tmp_path)])
    thread.join(5)
    assert code == 1 and time.monotonic() - t0 < 5
    assert [e["type"] for e in got][:2] == ["run", "status"]
    assert f"the controller no longer runs {RUN_ID}" in capsys.readouterr().err


def test_a_controller_that_answers_nothing_any_more_is_unreachable(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "QUIET_S", 0.3)
    thread, got = _server(tmp_path, _started, frames=1)  # the run's first progress, then gone
    t0 = time.monotonic()
    code = cli.main(["run", _scenario(tmp_path), "--controller-home", str(tmp_path)])
    thread.join(5)
    assert code == 3 and time.monotonic() - t0 < 5
    assert "did not answer" in capsys.readouterr().err
