"""Console text from the network reaches a terminal with its control characters made visible:
tcplab replay (terminal and plain), tcplab watch, story.md, film.html's console (controller/film/visible.py)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from controller.film import html, model, playback, story, term
from controller.film.visible import visible
from controller.trace import load
from tests.unit.test_watch import RUN, controller

REPO = Path(__file__).resolve().parents[2]
SEED = REPO / "tests" / "data" / "seed-0.3s.trace.jsonl"
# what a stranger's nc can print: clear the screen, set the window title (OSC ... BEL), go back to the
# line's start and overwrite it (CR), a C1 CSI (0x9b) colour, DEL, a right-to-left override
HOSTILE = "Hello\x1b[2J\x1b]0;pwned\x07\rEVIL\x9b31m\x7f\u202egnp.exe\ttab"
SHOWN = "Hello\\x1b[2J\\x1b]0;pwned\\x07\\rEVIL\\x9b31m\\x7f\\u202egnp.exe\ttab"
RAW = ("\x1b[2J", "\x1b]0;", "\x07", "\rEVIL", "\x9b", "\x7f", "\u202e")  # (rich's Live moves with \r itself)


def hostile_records() -> list[dict]:
    records = [dict(r) for r in load(SEED)]
    for r in records:
        if r["kind"] == "console":
            r["text"] = HOSTILE
    return records


def test_visible_writes_out_every_control_character_and_keeps_tabs_and_text():
    assert visible(HOSTILE) == SHOWN
    assert visible("a\nb\x00\x1f\x80\x9f\u2028\u2066é ü €") == "a\\nb\\x00\\x1f\\x80\\x9f\\u2028\\u2066é ü €"
    assert visible(SHOWN) == SHOWN  # made visible once is visible


def _no_raw(out: str) -> None:
    for raw in RAW:
        assert raw not in out, repr(raw)


def test_the_terminal_frame_shows_the_sequences_and_obeys_none():
    film = model.build(hostile_records())
    buf = io.StringIO()
    Console(file=buf, width=160, color_system=None, force_terminal=True).print(term.snapshot(film, film.records[-1]["t"]))
    out = buf.getvalue()
    _no_raw(out)
    assert "\x1b" not in out and "\r" not in out and "Hello\\x1b[2J\\x1b]0;pwned\\x07\\rEVIL\\x9b31m" in out


@pytest.mark.parametrize("terminal", [True, False])
def test_replay_shows_the_sequences_visibly(terminal):
    film = model.build(hostile_records())
    buf = io.StringIO()
    console = Console(file=buf, width=160, height=60, force_terminal=terminal, color_system="standard")
    assert playback.replay(film, speed=20.0, max_gap=0.05, console=console) == 0
    out = buf.getvalue()
    _no_raw(out)
    assert "\\x1b[2J\\x1b]0;pwned\\x07\\rEVIL\\x9b31m" in out
    if not terminal:  # the plain lines: no escape code at all
        assert "\x1b" not in out and "\r" not in out


def test_watch_prints_the_sequences_visibly(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    watch = subprocess.Popen([sys.executable, "-m", "controller.cli", "watch", "--runs", str(runs), "--since-now"],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = watch.stdout.readline()  # it is watching: only now does the run begin (a loaded machine
        assert first.startswith("waiting for a run")  # may take longer to start it than the run takes)
        writer = controller(runs, hostile_records(), delay=0.0)
        out, err = watch.communicate(timeout=60)
        writer.join(5)
    finally:
        watch.kill()
        watch.wait()
    assert watch.returncode == 0, err
    _no_raw(out)
    assert "\x1b" not in out and "\\x1b[2J\\x1b]0;pwned\\x07\\rEVIL" in out
    assert out.rstrip().endswith(f"{RUN}: finished")


def test_story_and_the_page_show_the_sequences_visibly():
    records = hostile_records()
    md = story.render(records)
    _no_raw(md)
    assert "\r" not in md and "\\u001b[2J" in md and "\\x9b31m" in md and "\\u202e" in md  # JSON's \u001b
    page = html.render(records)
    assert "\x9b" not in page and "\u202e" not in page and "\x7f" not in page
    data = json.loads(page.split('<script type="application/json" id="film-data">', 1)[1].split("</script>", 1)[0])
    assert {c["text"] for c in data["console"]} == {SHOWN}
