"""The ``tcplab`` command line itself: --version, and subcommands handed to their own modules."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version

from controller import cli


def test_version_is_the_installed_distributions(capsys) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"tcplab {version('tcplab')}\n"


def test_version_from_the_installed_entry_point() -> None:
    out = subprocess.run([sys.executable, "-m", "controller.cli", "-V"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"tcplab {version('tcplab')}"


def test_every_delegated_subcommand_has_a_main() -> None:
    import importlib
    for name, module in cli.DELEGATED.items():
        assert callable(importlib.import_module(module).main), name


def _control_server(home, answer, frames: int = 1):
    """A controller's control socket (ROUTER on ipc in ``home``) in a thread: answers the first
    ``frames`` frames, each with ``answer(env)``, then closes."""
    import threading

    import zmq

    from tcplab import wire

    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    from controller import controlsock

    controlsock.prepare(controlsock.path(home))
    sock.bind(f"ipc://{controlsock.path(home)}")
    controlsock.secure(controlsock.path(home))
    got: list[dict] = []

    def serve() -> None:
        session = wire.Session("controller")
        try:
            while len(got) < frames and sock.poll(10_000):
                ident, frame = sock.recv_multipart()
                got.append(session.decode(frame))
                for reply in answer(got[-1]):  # (type, body), or raw bytes
                    if isinstance(reply, bytes):
                        sock.send_multipart([ident, reply])
                    else:
                        session.send_blocking(sock, *reply, to=ident)
        finally:
            sock.close()
            ctx.term()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread, got


def test_status_asks_the_control_socket_through_a_session(tmp_path, capsys) -> None:
    clock = {"offset_ns": 1_500_000, "uncertainty_ns": 20_000}
    thread, got = _control_server(tmp_path, lambda env: [("state", {"running": None, "probes": {
        "thinkpad": {"alive": True, "lab_ip": "10.90.0.1", "clock": clock}}})])
    assert cli.main(["status", "--controller-home", str(tmp_path)]) == 0
    thread.join(5)
    assert [(e["type"], e["host"], e["seq"]) for e in got] == [("status", "cli", 1)]
    assert capsys.readouterr().out == ("running: no run\n"
                                       "thinkpad: alive at 10.90.0.1, clock offset 1.500 ms ± 0.020 ms\n")


def test_run_prints_progress_and_exits_1_on_a_failed_run(tmp_path, capsys) -> None:
    (tmp_path / "s.yml").write_text("name: t\nsteps:\n  - action: listen\n    host: thinkpad\n")
    thread, got = _control_server(tmp_path, lambda env: [
        ("progress", {"event": "step", "index": 1, "total": 1, "action": "listen", "target": "thinkpad",
                      "status": "failed", "error": "thinkpad refused"}),
        ("done", {"ok": False, "error": "thinkpad refused"})])
    assert cli.main(["run", str(tmp_path / "s.yml"), "--controller-home", str(tmp_path), "--timeout", "10"]) == 1
    thread.join(5)
    assert got[0]["type"] == "run" and got[0]["body"]["scenario"]["name"] == "t"
    out = capsys.readouterr()
    assert out.out == "[1/1] listen on thinkpad: failed — thinkpad refused\n"
    assert out.err == "tcplab: run failed: thinkpad refused\n"


def test_no_control_socket_exits_3(tmp_path, capsys) -> None:
    assert cli.main(["status", "--controller-home", str(tmp_path)]) == 3
    assert "no controller control socket" in capsys.readouterr().err


def test_a_bad_frame_from_the_controller_is_skipped_and_the_next_one_read(tmp_path, capsys) -> None:
    state = ("state", {"running": None, "probes": {}})
    clock = {"offset_ns": 0, "uncertainty_ns": None}
    bad_body = ("state", {"running": None, "probes": {"thinkpad": {"alive": "yes", "lab_ip": "10.90.0.1",
                                                                   "clock": clock}}})
    thread, _ = _control_server(tmp_path, lambda env: [b"\xc1", _frame(*bad_body), state])
    assert cli.main(["status", "--controller-home", str(tmp_path)]) == 0
    thread.join(5)
    out = capsys.readouterr()
    assert out.out == "running: no run\n"
    assert out.err == ("tcplab: a bad frame from the controller, skipped: frame is not valid msgpack: FormatError\n"
                       "tcplab: a bad frame from the controller, skipped: state body field 'probes' entry "
                       "'thinkpad' field 'alive' must be true or false, got str 'yes'\n")


def test_only_bad_frames_from_the_controller_exit_3_at_the_timeout(tmp_path, capsys) -> None:
    thread, _ = _control_server(tmp_path, lambda env: [b"\xc1"])
    assert cli.main(["status", "--controller-home", str(tmp_path)]) == 3
    thread.join(5)
    assert capsys.readouterr().err.splitlines()[-1] == "tcplab: the controller did not answer within 5 s"


def _frame(type_: str, body: dict) -> bytes:
    """A frame whose envelope is right and whose body is not (made without the body check)."""
    from tcplab import wire
    return wire.encode(wire.make(type_, "controller", 1, body))
