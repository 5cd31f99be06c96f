"""The film play (playbooks/film.yml) shows this run's summary and never an older run's.

A real ansible-playbook runs the play on localhost against a stand-in ``tcplab`` that prints what a
run prints (or nothing, as a run that died early does), next to an older run's directory that the
play used to fall back to (the newest one) when the run printed none.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OLD_SUMMARY = "tcplab run 20200101-000000-seed: OK - an older run"


@pytest.fixture
def film(tmp_path: Path):
    runs = tmp_path / "runs"
    old = runs / "20200101-000000-seed"
    old.mkdir(parents=True)
    (old / "summary.txt").write_text(OLD_SUMMARY + "\n")
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"all": {"children": {"control": {"hosts": {"localhost": {
        "ansible_connection": "local", "ansible_python_interpreter": sys.executable}}}}}}))

    def play(script: str) -> subprocess.CompletedProcess:
        tcplab = tmp_path / "venv" / "bin" / "tcplab"
        tcplab.write_text("#!/bin/sh\n" + script)
        tcplab.chmod(0o755)
        extra = {"tcplab_venv": str(tmp_path / "venv"), "tcplab_runs_dir": str(runs),
                 "tcplab_home": str(tmp_path / "home")}
        return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(inventory), "playbooks/film.yml",
                               "-e", json.dumps(extra)], cwd=REPO, capture_output=True, text=True, timeout=120)

    return runs, play


def test_a_run_that_printed_no_directory_shows_no_older_summary(film) -> None:
    runs, play = film
    r = play("echo 'tcplab: cannot reach the controller' >&2\nexit 1\n")
    assert r.returncode != 0, r.stdout
    assert "run directory: (none: the run printed no run directory)" in r.stdout, r.stdout
    assert OLD_SUMMARY not in r.stdout and "20200101-000000-seed" not in r.stdout
    assert "tcplab run exited 1: tcplab: cannot reach the controller" in r.stdout


def test_a_run_shows_its_own_summary(film) -> None:
    runs, play = film
    new = runs / "20261201-120000-seed"
    new.mkdir()
    (new / "summary.txt").write_text("tcplab run 20261201-120000-seed: OK - this run\n")
    # the run's directory is older on disk than the old one: only the printed name counts
    subprocess.run(["touch", "-d", "2019-01-01", str(new)], check=True)
    r = play(f"echo 'run 20261201-120000-seed finished: every step succeeded'\necho 'run files: {new}'\n")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"run directory: {new}" in r.stdout and "this run" in r.stdout
    assert OLD_SUMMARY not in r.stdout
