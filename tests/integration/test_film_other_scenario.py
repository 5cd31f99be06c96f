"""The film of a scenario other than the seed's: scenarios/client-closes-first.yml, run for real at 0.3 s.

The client ends first, so FIN_WAIT1, FIN_WAIT2 and TIME_WAIT are the client's and CLOSE_WAIT and
LAST_ACK the server's. The renderers know no storyline: story.md must still name every transition
of both hosts, film.html must still agree with the trace at every moment, and the roles must stay.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controller.film import model
from controller.trace import load
from tests.daemons import run_in_fresh_lab
from tests.integration.test_film_html import moments_of, step_through

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client_first_run(tmp_path_factory):
    scenario = yaml.safe_load((REPO / "scenarios" / "client-closes-first.yml").read_text())
    # TIME_WAIT's 60 s are the seed run's to wait out; here the run ends with the client in it
    scenario["steps"] = [s for s in scenario["steps"] if s["action"] != "wait"]
    scenario.update(delay=0.3)
    return run_in_fresh_lab(tmp_path_factory.mktemp("client-first"), scenario, timeout=120)


def test_the_film_knows_who_closed_first(client_first_run):
    records = load(client_first_run / "trace.jsonl")
    film = model.build(records)
    assert film.roles == {"thinkpad": "server", "raspberrypi": "client"}
    path = {h: [t.to for t in film.transitions if t.host == h] for h in film.hosts}
    assert path["raspberrypi"] == ["SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"]
    assert path["thinkpad"] == ["LISTEN", "SYN_RECEIVED", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    assert all(t.rfc and t.cause in ("packet", "call") for t in film.transitions)
    story = (client_first_run / "story.md").read_text()
    for r in records:
        if r["kind"] == "state":
            assert f"**{r['host']}: {r['from']} → {r['to']}**" in story, r


def test_film_html_agrees_with_the_trace_at_every_moment(browser, client_first_run, tmp_path):
    records = load(client_first_run / "trace.jsonl")
    shots = step_through(browser, client_first_run, records, moments_of(records), tmp_path, prefix="client-first")
    assert {"handshake", "data", "time_wait"} <= set(shots)
