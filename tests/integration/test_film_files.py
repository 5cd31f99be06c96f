"""The film's files of a real seed run (0.3 s, TIME_WAIT included), made by the controller at the end
of the run and made again by `tcplab render` from trace.jsonl alone, byte for byte."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

import pytest

from controller.trace import load
from tests.daemons import VENV_BIN

pytestmark = pytest.mark.integration

FILM_FILES = ("ladder.svg", "ladder.png", "film.html", "story.md")


def test_every_film_file_is_made_and_rendered_again_byte_for_byte(seed_run, tmp_path):
    made = {name: (seed_run / name).read_bytes() for name in FILM_FILES}
    copy = tmp_path / "run"
    copy.mkdir()
    (copy / "trace.jsonl").write_bytes((seed_run / "trace.jsonl").read_bytes())
    res = subprocess.run([VENV_BIN / "tcplab", "render", str(copy)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in copy.iterdir()) == sorted(FILM_FILES + ("trace.jsonl",))
    for name in FILM_FILES:
        assert (copy / name).read_bytes() == made[name], name


def test_ladder_has_one_arrow_per_captured_segment(seed_run):
    recs = load(seed_run / "trace.jsonl")
    arrows = [e for e in ET.fromstring((seed_run / "ladder.svg").read_bytes()).iter("{http://www.w3.org/2000/svg}line")
              if e.get("class", "").startswith("segment")]
    out = sum(1 for r in recs if r["kind"] == "packet" and r["dir"] == "out")
    assert out >= 11 and len(arrows) == out  # every segment was captured leaving its sender
    assert (seed_run / "ladder.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_story_names_every_transition_of_both_hosts(seed_run):
    recs = load(seed_run / "trace.jsonl")
    story = (seed_run / "story.md").read_text()
    states = [r for r in recs if r["kind"] == "state"]
    assert {r["host"] for r in states} == {"thinkpad", "raspberrypi"}
    for r in states:
        assert f"**{r['host']}: {r['from']} → {r['to']}**" in story, r
    assert "**thinkpad: TIME_WAIT → CLOSED**" in story and "TIME_WAIT timer" in story
