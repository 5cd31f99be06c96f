"""film.html in Chromium on cases a seed run does not have, built from a real trace (tests/data):
both hosts taking the same edge (a simultaneous close), and the address changed while playing."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from controller.film import html
from controller.trace import load, sort_key
from tests.integration.test_film_html import Page, moments_of

pytestmark = pytest.mark.integration

SEED = Path(__file__).resolve().parents[1] / "data" / "seed-0.3s.trace.jsonl"


def simultaneous_close() -> list[dict]:
    """The seed until both are ESTABLISHED, then both close at once: each goes ESTABLISHED -> FIN_WAIT1."""
    records = [r for r in load(SEED) if r["t"] < 1.7]
    est = next(r for r in records if r["kind"] == "state" and r["host"] == "raspberrypi" and r["to"] == "ESTABLISHED")
    for host, t in (("thinkpad", 1.70), ("raspberrypi", 1.71)):
        r = copy.deepcopy(next(x for x in records if x["kind"] == "state" and x["host"] == host and x["to"] == "ESTABLISHED"))
        r.update(t=t, **{"from": "ESTABLISHED", "to": "FIN_WAIT1"})
        records.append(r)
    assert est
    return sorted(records, key=sort_key)


def stroke(page: Page, frm: str, to: str) -> str:
    return page.page.evaluate(f"""getComputedStyle(document.querySelector(
        '#state-diagram .edge[data-from="{frm}"][data-to="{to}"] line')).stroke""")


def test_an_edge_both_hosts_took_is_green(browser, tmp_path):
    records = simultaneous_close()
    html.write(tmp_path, records)
    moments = moments_of(records)
    page = Page(browser, tmp_path / "film.html").open(f"#m={len(moments)}")
    green = page.page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--both').trim()")
    box = page.page.evaluate("""getComputedStyle(document.querySelector(
        '#state-diagram .state[data-state="FIN_WAIT1"] rect')).fill""")
    assert stroke(page, "ESTABLISHED", "FIN_WAIT1") == box  # the edge is drawn in the box's green
    assert green and "both" in page.page.get_attribute('#state-diagram .state[data-state="FIN_WAIT1"]', "class")
    assert page.errors == [] and page.requests == []


def test_a_new_address_while_playing_stops_there(browser, tmp_path):
    records = load(SEED)
    html.write(tmp_path, records)
    page = Page(browser, tmp_path / "film.html").open()
    p = page.page
    p.keyboard.press(" ")
    p.wait_for_function("Number(document.body.dataset.moment) >= 2", timeout=10_000)
    p.evaluate("location.hash = '#m=5'")
    p.wait_for_timeout(400)
    assert page.moment() == 4 and p.text_content("#play") == "▶"
    assert page.errors == [] and page.requests == []
