"""``tcplab replay`` in a real terminal: a tmux pane (the issue's "works in a tmux pane").

Each test starts its own tmux server on a private socket (``tmux -L tcplab-test-<pid>-<n>``, no user
configuration), runs the replay in a detached session's pane, reads the screen with
``capture-pane -p`` and kills that server, by its socket, at the end. No namespaces: the first
tests replay tests/data/seed-0.3s.trace.jsonl; the last one (root, marked integration) replays a
real run made by the ``seed_run`` fixture.
"""

from __future__ import annotations

import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_n = itertools.count()


@pytest.fixture(autouse=True)
def _tmux_installed():
    if shutil.which("tmux") is None:  # a missing tool fails, it does not skip: make test installs it
        pytest.fail("tmux is not installed (make apt-test installs it)")


class Pane:
    """A detached tmux session of its own server, ``width`` x ``height``, running ``command``."""

    def __init__(self, command: str, width: int, height: int):
        self.socket = f"tcplab-test-{os.getpid()}-{next(_n)}"
        # the pane stays after the command, so its last screen and exit status can be read
        script = f"{command}; echo EXIT=$?; sleep 600"
        self.tmux("new-session", "-d", "-x", str(width), "-y", str(height), script)

    def tmux(self, *args: str) -> str:
        res = subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args], capture_output=True,
                             text=True, timeout=10)
        assert res.returncode == 0, res.stderr
        return res.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def wait_for(self, pattern: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if re.search(pattern, text) or time.monotonic() > deadline:
                return text
            time.sleep(0.2)

    def close(self) -> None:
        path = subprocess.run(["tmux", "-L", self.socket, "display", "-p", "#{socket_path}"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=10)
        if path:
            Path(path).unlink(missing_ok=True)


def replay_command(run_dir: Path, *args: str) -> str:
    argv = [sys.executable, "-m", "controller.cli", "replay", str(run_dir), *args]
    return f"cd {shlex.quote(str(REPO))} && {shlex.join(argv)}"


@pytest.fixture
def run_dir(seed_data_run):
    return seed_data_run


def state_line(screen: str) -> str:
    start = screen.index("thinkpad · server")
    return next(line for line in screen[start:].splitlines()[1:] if re.search(r"[A-Z]{4,}", line))


def check_final_screen(screen: str) -> None:
    assert "EXIT=0" in screen, screen
    assert "thinkpad · server" in screen and "raspberrypi · client" in screen
    left, right = state_line(screen).split("│ │")
    assert "CLOSED" in left and "CLOSED" in right, screen
    assert "TIME_WAIT → CLOSED" in screen and "9/9 steps" in screen
    assert "netstat -nao" in screen and "packets" in screen
    assert "\x1b" not in screen


@pytest.mark.parametrize("width,height", [(120, 50), (80, 24)])
def test_replay_in_a_tmux_pane_ends_on_both_hosts_final_states(run_dir, width, height):
    pane = Pane(replay_command(run_dir, "--speed", "20"), width, height)
    try:
        screen = pane.wait_for(r"EXIT=\d+", timeout=60)
        check_final_screen(screen)
        assert pane.tmux("display", "-p", "#{cursor_flag}").strip() == "1"   # the cursor is back
    finally:
        pane.close()


def test_ctrl_c_in_a_tmux_pane_exits_130_and_restores_the_cursor(run_dir):
    pane = Pane(replay_command(run_dir, "--speed", "0.5"), 120, 50)
    try:
        assert "thinkpad · server" in pane.wait_for("thinkpad · server", timeout=30)
        assert pane.tmux("display", "-p", "#{cursor_flag}").strip() == "0"   # Live hides it while playing
        pane.tmux("send-keys", "C-c")
        screen = pane.wait_for(r"EXIT=\d+", timeout=30)
        assert "EXIT=130" in screen, screen
        assert pane.tmux("display", "-p", "#{cursor_flag}").strip() == "1"
    finally:
        pane.close()


@pytest.mark.integration
def test_replay_of_a_real_run_in_a_tmux_pane(seed_run, tmp_path):
    """The run made by a real controller and probes (tests/integration/conftest.py), replayed."""
    copy = tmp_path / seed_run.name
    shutil.copytree(seed_run, copy)
    pane = Pane(replay_command(copy, "--speed", "20"), 120, 50)
    try:
        check_final_screen(pane.wait_for(r"EXIT=\d+", timeout=60))
    finally:
        pane.close()
