"""The CLI's control socket: HOME/control/control.sock, the directory 0700 and the socket 0600 whatever
the umask (a real tcplab-controller started under umask 000); the CLI talks only to a private one,
and prints what the controller relays with its control characters visible."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from controller import cli, controlsock
from tests.unit.test_cli import _control_server

BIN = Path(sys.executable).parent


def _config(tmp_path: Path) -> Path:
    cfg = tmp_path / "controller.yml"
    cfg.write_text(yaml.safe_dump({"bind": f"ipc://{tmp_path}/probes.sock", "home": str(tmp_path / "home"),
                                   "runs_dir": str(tmp_path / "runs")}))
    return cfg


def _mode(path: Path) -> tuple[int, int]:
    st = os.lstat(path)
    return st.st_uid, stat.S_IMODE(st.st_mode)


@pytest.mark.parametrize("left", ["nothing", "a lax directory"])
def test_under_umask_000_the_directory_is_0700_and_the_socket_0600(tmp_path, left):
    sock = controlsock.path(tmp_path / "home")
    if left == "a lax directory":  # ours, from an older controller or a hand: made private, not refused
        sock.parent.mkdir(parents=True)
        sock.parent.chmod(0o777)
    proc = subprocess.Popen([BIN / "tcplab-controller", "run", "--config", _config(tmp_path)], umask=0,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while not sock.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert sock.exists(), proc.stderr.read() if proc.poll() is not None else "no socket"
        assert _mode(sock.parent) == (os.geteuid(), 0o700)
        assert _mode(sock) == (os.geteuid(), 0o600) and stat.S_ISSOCK(os.lstat(sock).st_mode)
        assert cli.main(["status", "--controller-home", str(tmp_path / "home")]) == 0
    finally:
        proc.terminate()
        proc.wait(20)
    assert not sock.exists()


def test_a_symlink_in_the_directorys_place_is_refused_and_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o755)
    (tmp_path / "home").mkdir()
    controlsock.path(tmp_path / "home").parent.symlink_to(target)
    res = subprocess.run([BIN / "tcplab-controller", "run", "--config", _config(tmp_path)], capture_output=True,
                         text=True, timeout=60, umask=0)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    failed = [json.loads(ln) for ln in res.stderr.splitlines() if "controller_start_failed" in ln]
    assert len(failed) == 1 and "is not a directory of ours" in failed[0]["error"]
    assert list(target.iterdir()) == [] and _mode(target)[1] == 0o755


@pytest.mark.parametrize("what, mode", [("directory", 0o755), ("socket", 0o666)])
def test_the_cli_talks_only_to_a_private_socket(tmp_path, capsys, what, mode):
    thread, got = _control_server(tmp_path, lambda env: [("state", {"running": None, "probes": {}})])
    sock = controlsock.path(tmp_path)
    (sock.parent if what == "directory" else sock).chmod(mode)
    assert cli.main(["status", "--controller-home", str(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not private to the controller's user; not talking to it" in err
    assert f"mode {mode:04o}" in err and got == []
    sock.parent.chmod(0o700)
    sock.chmod(0o600)
    assert cli.main(["status", "--controller-home", str(tmp_path)]) == 0  # the server still waits: it answers
    thread.join(5)


def test_the_cli_shows_relayed_text_with_its_control_characters_visible(tmp_path, capsys):
    (tmp_path / "s.yml").write_text("name: t\nsteps:\n  - action: listen\n    host: thinkpad\n")
    evil = "refused\x1b[2J\x1b]0;pwned\x07\rOK\x9b31m"
    thread, _ = _control_server(tmp_path, lambda env: [
        ("progress", {"event": "step", "index": 1, "total": 1, "action": "listen", "target": "thinkpad",
                      "status": "failed", "error": evil}),
        ("done", {"ok": False, "error": evil})])
    assert cli.main(["run", str(tmp_path / "s.yml"), "--controller-home", str(tmp_path), "--timeout", "10"]) == 1
    thread.join(5)
    out = capsys.readouterr()
    shown = "refused\\x1b[2J\\x1b]0;pwned\\x07\\rOK\\x9b31m"
    assert out.out == f"[1/1] listen on thinkpad: failed — {shown}\n"
    assert out.err == f"tcplab: run failed: {shown}\n"
