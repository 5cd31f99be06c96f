"""tcplab.files (the one atomic writer) and tcplab.logs (the one logging set-up)."""

from __future__ import annotations

import json
import os

import pytest
import structlog

from tcplab import logs
from tcplab.files import atomic_write, replacing


def test_atomic_write_str_bytes_and_replace_leave_only_the_file(tmp_path):
    p = tmp_path / "run.json"
    assert atomic_write(p, "héllo\n") == p
    assert p.read_bytes() == "héllo\n".encode()
    atomic_write(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"
    assert [q.name for q in tmp_path.iterdir()] == ["run.json"]


def test_atomic_write_mode_and_default_mode_under_umask(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a", "x")
        atomic_write(tmp_path / "b", "x", mode=0o600)
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o600


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "trace.jsonl"
    atomic_write(p, "old\n")
    with pytest.raises(RuntimeError):
        with replacing(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer died")
    assert p.read_text() == "old\n"
    assert [q.name for q in tmp_path.iterdir()] == ["trace.jsonl"]


def test_replacing_a_streamed_file_and_two_writers_never_share_a_temporary(tmp_path):
    p = tmp_path / "merged.pcapng"
    with replacing(p) as a, replacing(p) as b:
        assert a != b and a.parent == b.parent == tmp_path
        a.write_bytes(b"A")
        b.write_bytes(b"B")
    assert p.read_bytes() == b"A"  # the outer block ended last
    with pytest.raises(FileNotFoundError):  # the writer wrote nothing: nothing replaced
        with replacing(p):
            pass
    assert p.read_bytes() == b"A"


@pytest.fixture
def fresh_structlog():
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


def test_daemon_logging_is_json_on_stderr_with_host_and_component(fresh_structlog, capsys):
    logs.configure(host="thinkpad", component="probe")
    structlog.get_logger("x").info("netem_applied", delay_ms=300)
    structlog.get_logger("x").debug("routine")
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    ev = json.loads(line)
    assert (ev["event"], ev["host"], ev["component"], ev["delay_ms"], ev["level"]) == \
        ("netem_applied", "thinkpad", "probe", 300, "info")


def test_cli_logging_is_for_a_person_on_stderr_and_keeps_a_set_up_it_finds(fresh_structlog, capsys):
    logs.configure_cli()
    structlog.get_logger("x").info("testbed_up", hosts=2)
    structlog.get_logger("x").debug("routine")
    out, err = capsys.readouterr()
    assert out == "" and "testbed_up" in err and "hosts=2" in err and "routine" not in err
    with structlog.testing.capture_logs() as cap:
        logs.configure_cli()  # a test's (or an outer command's) set-up is kept
        structlog.get_logger("x").info("kept")
    assert [e["event"] for e in cap] == ["kept"]
