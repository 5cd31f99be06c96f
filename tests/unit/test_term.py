"""The terminal film (controller/film/term.py, playback.py, lines.py) on a real trace.

tests/data/seed-0.3s.trace.jsonl is the seed at 0.3 s with TIME_WAIT's expiry (make film). Frames are
rendered to a recording rich Console 120 columns wide and read back as text.
"""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from controller import cli
from controller.film import lines, model, playback, term
from controller.trace import load

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "tests" / "data" / "seed-0.3s.trace.jsonl"


@pytest.fixture(scope="module")
def film():
    return model.build(load(SEED))


@pytest.fixture
def run_dir(seed_data_run):
    return seed_data_run


def text(renderable, width: int = 120) -> str:
    console = Console(record=True, width=width, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def state_record(film, host, to):
    return next(r for r in film.records if r["kind"] == "state" and r["host"] == host and r["to"] == to
                and r["remote"] != model.LISTENER_REMOTE)


def conn_state(film, host, t):
    """The host's connection state at t, straight from its state records."""
    state = "CLOSED"
    for r in film.records:
        if r["kind"] == "state" and r["host"] == host and r["remote"] != model.LISTENER_REMOTE and r["t"] <= t:
            state = r["to"]
    return state


def state_line(frame: str) -> str:
    """The line of the two big state blocks: the first line after the host panels' titles with a state."""
    start = frame.index("thinkpad · server")
    return next(line for line in frame[start:].splitlines()[1:] if re.search(r"[A-Z]{4,}", line))


def test_time_wait_moment_shows_each_hosts_state(film):
    t = state_record(film, "thinkpad", "TIME_WAIT")["t"]
    frame = text(term.snapshot(film, t, run="seed"))
    left, right = state_line(frame).split("│ │")
    assert "TIME_WAIT" in left
    peer = conn_state(film, "raspberrypi", t)
    assert peer in ("LAST_ACK", "CLOSED") and peer in right
    assert "FIN_WAIT2 → TIME_WAIT" in frame and "(rcv FIN / snd ACK)" in frame
    assert "FIN, ACK arrived" in frame          # the cause: the peer's FIN
    assert "CLOSE_WAIT → LAST_ACK" in frame and "step 7: the application closes its socket" in frame


def test_colours_blue_red_and_green_when_both_agree(film):
    tw = film.records.index(state_record(film, "thinkpad", "TIME_WAIT"))
    assert term.colours(film, tw) == {"thinkpad": "blue", "raspberrypi": "red"}
    est = film.records.index(state_record(film, "thinkpad", "ESTABLISHED"))
    assert term.colours(film, est) == {"thinkpad": "green", "raspberrypi": "green"}
    assert term.colours(film, len(film.records) - 1) == {"thinkpad": "green", "raspberrypi": "green"}


def test_last_packets_step_and_progress(film):
    t = state_record(film, "thinkpad", "TIME_WAIT")["t"]
    frame = text(term.snapshot(film, t))
    shown = [p for p in film.packets if p["t"] <= t][-term.PACKET_ROWS:]
    rows = [line for line in frame.splitlines() if re.match(r"^\s*\d+\s+\d+\.\d{3}\s", line)]
    assert [int(r.split()[0]) for r in rows] == [p["no"] for p in shown]
    for p, row in zip(shown, rows):
        assert p["info"] in row and p["host"] in row
    assert "[7/9] close on raspberrypi" in frame
    assert "6/9 steps" in frame
    assert f"t = {t:7.3f} s" in frame


def test_before_anything_and_at_the_end(film):
    first = text(term.snapshot(film, 0.0))
    assert "before the first step" in first and "0/9 steps" in first and "no transition yet" in first
    end = text(term.snapshot(film, film.records[-1]["t"]))
    assert "9/9 steps" in end and "[9/9] shape on thinkpad and raspberrypi ✓" in end
    left, right = state_line(end).split("│ │")
    assert "CLOSED" in left and "CLOSED" in right
    assert "TIME_WAIT → CLOSED" in end and "the TIME_WAIT timer" in end


def test_netstat_timer_counts_down(film):
    rows = [r for r in film.records if r["kind"] == "netstat" and r["host"] == "thinkpad"
            and any(x["timer"].startswith("timewait") for x in r["rows"])]
    rec = rows[len(rows) // 2]
    after = [r for r in film.records if r["kind"] == "netstat" and r["host"] == "thinkpad" and r["t"] > rec["t"]]
    assert after and after[0]["t"] > rec["t"] + 0.3
    value = float(re.search(r"timewait \((\d+\.\d+)/", rec["rows"][0]["timer"]).group(1))
    frames = [text(term.snapshot(film, rec["t"] + d)) for d in (0.0, 0.25)]
    for d, frame in zip((0.0, 0.25), frames):
        assert f"timewait ({value - d:.2f}/0/0)" in frame
    assert term.countdown("timewait (0.10/0/0)", 1.0) == "timewait (0.00/0/0)"
    assert term.countdown("off (0.00/0/0)", 5.0) == "off (0.00/0/0)"
    assert term.countdown("keepalive (7190.01/0/0)", 0.01) == "keepalive (7190.00/0/0)"


def test_retransmissions_are_dim(film):
    records = [dict(r) for r in film.records]
    i = next(i for i, r in enumerate(records) if r["kind"] == "packet" and r["flags"] == ["SYN"])
    records[i]["analysis"] = ["retransmission"]
    again = model.build(records)
    console = Console(record=True, width=120, file=io.StringIO(), force_terminal=True, color_system="standard")
    console.print(term.snapshot(again, records[i]["t"], upto=i + 3))
    styled = console.export_text(styles=True)
    row = next(line for line in styled.splitlines() if "[TCP Retransmission]" in line)
    assert "\x1b[2" in row                       # SGR 2: dim


def test_total_steps_passed_in_wins_while_running(film):
    partial = model.build([r for r in film.records if r["t"] < 1.0])
    assert "2/3 steps" in text(term.snapshot(partial, 0.9))
    assert "2/9 steps" in text(term.snapshot(partial, 0.9, total_steps=9))


@pytest.mark.parametrize("width,height", [(80, 23), (100, 30), (120, 40)])
def test_frames_fit_small_panes(film, width, height):
    for t in (0.5, 1.1, 2.8415, 30.0, 64.9):
        frame = text(term.snapshot(film, t, height=height, width=width), width=width)
        assert len(frame.rstrip("\n").splitlines()) <= height
        assert "thinkpad · server" in frame and "netstat -nao" in frame and "steps" in frame


def test_plain_lines_one_per_moment(film):
    out = [lines.line(film, i) for i in film.moments]
    assert len(out) == len(film.moments)
    tw = next(line for line in out if "FIN_WAIT2 -> TIME_WAIT" in line)
    assert "thinkpad TIME_WAIT · raspberrypi LAST_ACK" in tw and "[7/9] close on raspberrypi" in tw
    assert any("raspberrypi prints 'Hello'" in line for line in out)
    assert not any("\x1b" in line for line in out)


def test_schedule_real_time_cut_and_slow(film):
    beats = playback.schedule(film, speed=1.0)
    assert [b.moment for b in beats] == film.moments
    long = [b for b in beats if b.gap > playback.MAX_GAP_S]
    assert len(long) == 1 and long[0].hold == pytest.approx(playback.MAX_GAP_S)
    assert "61.3 s of quiet (thinkpad in TIME_WAIT)" in long[0].note
    short = [b for b in beats if b.gap <= playback.MAX_GAP_S]
    assert all(b.hold == pytest.approx(b.gap) for b in short)
    fast = playback.schedule(film, speed=20.0)
    assert sum(b.hold for b in fast) == pytest.approx(sum(b.hold for b in beats) / 20)
    slow = playback.schedule(film, speed=2.0, slow=True)
    assert all(b.hold >= playback.SLOW_MIN_S / 2 for b in slow[:-1])
    assert sum(b.hold for b in playback.schedule(film, max_gap=0)) == pytest.approx(
        film.records[-1]["t"] - film.records[film.moments[0]]["t"])
    with pytest.raises(ValueError):
        playback.schedule(film, speed=25)


def test_replay_to_the_end_not_a_terminal(run_dir):
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "controller.cli", "replay", str(run_dir), "--speed", "20"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - started < 20
    out = res.stdout.splitlines()
    assert len(out) == len(model.build(load(SEED)).moments)
    assert "\x1b" not in res.stdout
    assert "thinkpad CLOSED · raspberrypi CLOSED" in out[-1]
    assert res.stderr == ""


def test_replay_in_a_terminal_draws_live_frames(film):
    console = Console(file=io.StringIO(), force_terminal=True, width=100, height=30, color_system="standard")
    assert playback.replay(film, speed=20, run="seed", console=console) == 0
    out = console.file.getvalue()
    assert "\x1b[" in out and "TIME_WAIT" in out and "9/9 steps" in out


def test_replay_slow_at_top_speed_completes(run_dir):
    res = subprocess.run([sys.executable, "-m", "controller.cli", "replay", str(run_dir), "--speed", "20", "--slow"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("args,what", [
    (["/nonexistent/run"], "does not exist"),
    (["{tmp}"], "has no trace.jsonl"),
    (["{bad}"], "is not a trace"),
    (["{run}", "--speed", "50"], "--speed 50 is out of range"),
    (["{run}", "--speed", "0.05"], "--speed 0.05 is out of range"),
    (["{run}", "--max-gap", "-1"], "--max-gap -1 is negative"),
])
def test_bad_input_exit_2_one_line(tmp_path, run_dir, capsys, args, what):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("this is not json\n")
    (tmp_path / "empty").mkdir()
    argv = ["replay"] + [a.format(tmp=tmp_path / "empty", bad=bad, run=run_dir) for a in args]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and what in err and err.startswith("tcplab: ")


def test_ctrl_c_exits_130(run_dir):
    proc = subprocess.Popen([sys.executable, "-m", "controller.cli", "replay", str(run_dir), "--speed", "0.1"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline()           # it is playing
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_crashed_runs_partial_trace_cut_mid_line_replays(run_dir):
    from controller.film.tracefile import open_run

    text = (run_dir / "trace.jsonl").read_text()
    (run_dir / "trace.jsonl").unlink()
    (run_dir / "trace.partial.jsonl").write_text(text[: len(text) - 40])  # the last line half-written
    records, run_id, finished = open_run(run_dir)
    assert not finished and len(records) == text.count("\n") - 1
    res = subprocess.run([sys.executable, "-m", "controller.cli", "replay", str(run_dir), "--speed", "20",
                          "--max-gap", "0.1"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
