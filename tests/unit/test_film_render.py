"""Every film file from a real trace alone, byte-identical when rendered again (controller/film/render.py)."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from controller.film import html
from controller.film.render import render_all
from controller.trace import load

DATA = Path(__file__).resolve().parent.parent / "data"
TCPLAB = Path(sys.executable).parent / "tcplab"


@pytest.fixture(params=["seed-0.3s", "seed-3s"])
def run_dir(request, tmp_path) -> Path:
    shutil.copy(DATA / f"{request.param}.trace.jsonl", tmp_path / "trace.jsonl")
    return tmp_path


def test_render_all_writes_every_file_and_again_byte_for_byte(run_dir):
    written, errors = render_all(run_dir)
    assert errors == []
    names = {p.name for p in written}
    assert names == {"ladder.svg", "ladder.png", "film.html", "story.md"}
    first = {n: (run_dir / n).read_bytes() for n in names}
    for n in names:
        (run_dir / n).unlink()
    res = subprocess.run([TCPLAB, "render", str(run_dir)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert {n: (run_dir / n).read_bytes() for n in names} == first
    assert not list(run_dir.glob("*.tmp"))


def test_ladder_png_is_the_svg_rasterized(run_dir):
    render_all(run_dir)
    png = (run_dir / "ladder.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    svg = (run_dir / "ladder.svg").read_text()
    svg_w, svg_h = (float(v) for v in re.search(r'width="([\d.]+)" height="([\d.]+)"', svg).groups())
    assert (width, height) == (round(svg_w * 1.5), pytest.approx(round(svg_h * 1.5), abs=1))


def test_film_html_embeds_the_film_data(run_dir):
    records = load(run_dir / "trace.jsonl")
    page = html.render(records)
    blob = re.search(r'<script type="application/json" id="film-data">(.*?)</script>', page, re.S).group(1)
    data = json.loads(blob)
    assert data == json.loads(json.dumps(html.data(records)))
    assert data["hosts"] == ["thinkpad", "raspberrypi"] and data["port"] == "9090"
    assert len(data["packets"]) == sum(r["kind"] == "packet" for r in records)
    assert data["netstat"]["thinkpad"] and data["commands"]["raspberrypi"][0]["text"] == "nc 10.90.0.1 9090"


def test_text_from_the_wire_cannot_break_out_of_the_page(run_dir):
    records = load(run_dir / "trace.jsonl")
    hello = next(r for r in records if r["kind"] == "console")
    hello["text"] = "</script><script>alert(1)</script><!--"
    page = html.render(records)
    assert "alert(1)</script>" not in page and page.count("</script>") == 2  # the data's and the code's
    blob = re.search(r'id="film-data">(.*?)</script>', page, re.S).group(1)
    assert any(c["text"] == hello["text"] for c in json.loads(blob)["console"])


def test_render_bad_input_is_one_line_and_exit_2(tmp_path):
    res = subprocess.run([TCPLAB, "render", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "trace.jsonl does not exist" in res.stderr
    (tmp_path / "trace.jsonl").write_text("{not json\n")
    res = subprocess.run([TCPLAB, "render", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "is not a trace" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.jsonl"]  # nothing half-made left behind


def test_a_trace_with_one_host_renders_nothing_and_says_why(tmp_path):
    (tmp_path / "trace.jsonl").write_text(json.dumps({"t": 0.0, "host": "thinkpad", "kind": "state",
                                                      "local": "0.0.0.0:9090", "remote": "0.0.0.0:*",
                                                      "from": "CLOSED", "to": "LISTEN", "source": "tracepoint"}) + "\n")
    res = subprocess.run([TCPLAB, "render", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 1 and "fewer than two hosts" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trace.jsonl"]


def test_placeholder_text_in_the_trace_stays_text(run_dir):
    records = load(run_dir / "trace.jsonl")
    next(r for r in records if r["kind"] == "console")["text"] = "@SCRIPT@ @DATA@"
    page = html.render(records)
    blob = re.search(r'id="film-data">(.*?)</script>', page, re.S).group(1)
    assert any(c["text"] == "@SCRIPT@ @DATA@" for c in json.loads(blob)["console"])


def test_one_renderer_crashing_leaves_the_others(run_dir, monkeypatch):
    from controller.film import story

    def broken(records):  # a bug we cannot cause with a real trace: the others must still be written
        raise KeyError("error")

    monkeypatch.setattr(story, "render", broken)
    written, errors = render_all(run_dir)
    assert {p.name for p in written} == {"ladder.svg", "ladder.png", "film.html"}
    assert errors == ["story.md: KeyError: 'error'"]


def _run_json(run_dir: Path, counters: dict) -> None:
    from controller import report
    info = {"run_id": run_dir.name, "ok": True, "status": "ok", "error": None, "scenario": {"name": "seed"},
            "delay_s": 3.0, "hosts": {"thinkpad": {"shaper_backend": "netem", "counters": counters,
                                                   "capture": {"kernel_drops": 0}},
                                      "raspberrypi": {"shaper_backend": "netem", "counters": {},
                                                      "capture": {"kernel_drops": 0}}}}
    report.write(run_dir, info, load(run_dir / "trace.jsonl"))


def test_render_rebuilds_summary_txt_byte_for_byte_from_the_trace_and_run_json(run_dir):
    _run_json(run_dir, {"statemerge_dropped_foreign": 0, "transport_dropped": 0, "transport_sent": 80})
    written, errors = render_all(run_dir)
    assert errors == [] and run_dir / "summary.txt" in written
    first = (run_dir / "summary.txt").read_bytes()
    assert b"FIN_WAIT2 -> TIME_WAIT" in first and b"thinkpad: netem" in first and b"dropped, missed or refused" not in first
    (run_dir / "summary.txt").unlink()
    res = subprocess.run([TCPLAB, "render", str(run_dir)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (run_dir / "summary.txt").read_bytes() == first
    assert str(run_dir / "summary.txt") in res.stdout.splitlines()


def test_summary_says_when_a_counter_is_not_zero(run_dir):
    _run_json(run_dir, {"statemerge_dropped_foreign": 2, "transport_dropped": 0, "kstates_missed_pages": 1,
                        "transport_sent": 80, "link_given_up": 3, "link_restarts": 1})
    render_all(run_dir)
    lines = (run_dir / "summary.txt").read_text().splitlines()
    assert lines[2] == ("dropped, missed or refused on thinkpad: kstates_missed_pages 1, link_given_up 3, "
                        "statemerge_dropped_foreign 2")   # not the frames sent, nor a restart
    assert not any(line.startswith("dropped, missed or refused on raspberrypi") for line in lines)


def test_summary_tells_the_hosts_in_the_scenarios_order_not_run_jsons_sorted_keys(run_dir):
    from controller import report, scenario
    scn = scenario.load(Path(__file__).resolve().parents[2] / "scenarios/seed.yml").bound()
    assert scn.hosts == ("thinkpad", "raspberrypi")
    info = {"run_id": run_dir.name, "ok": True, "status": "ok", "error": None, "scenario": scn.to_dict(),
            "delay_s": 3.0, "hosts": {h: {"shaper_backend": b, "counters": {}} for h, b in
                                      (("thinkpad", "netem"), ("raspberrypi", "nfqueue"))}}
    report.write(run_dir, info, load(run_dir / "trace.jsonl"))
    assert list(json.loads((run_dir / "run.json").read_text())["hosts"]) == ["raspberrypi", "thinkpad"]
    render_all(run_dir)
    text = (run_dir / "summary.txt").read_text()
    assert "shaping backend: thinkpad: netem, raspberrypi: nfqueue" in text
    assert text.index("\nthinkpad: states") < text.index("\nraspberrypi: states")


def test_the_console_says_which_application_ran():
    from controller.film import model
    from tests.unit.test_story import many_connections
    seed = html._commands(model.build(load(DATA / "seed-0.3s.trace.jsonl")))
    assert [c["text"] for c in seed["thinkpad"]] == ["nc -l 9090"]  # the seed's own command lines
    assert [c["text"] for c in seed["raspberrypi"]] == ["nc 10.90.0.1 9090"]
    many = html._commands(model.build(many_connections(20)))  # the probe's own application: no nc ran
    assert [c["text"] for c in many["raspberrypi"]] == [
        "# the probe's application connects to 10.90.0.1 9090 (20 connections)"]
