"""A scenario names roles, the lab binds them: the same file films the Pi as the server when the
controller's roles say so (the inventory's tcplab_role, rendered into controller.yml by Ansible)."""

from __future__ import annotations

import pytest

from controller.trace import load
from tests.daemons import Lab
from tests.netns import NetnsPair, require_root

pytestmark = pytest.mark.integration

SCENARIO = {"name": "roles", "port": 9090, "delay": 0.0, "steps": [
    {"action": "listen", "host": "server", "expect": ["server LISTEN"]},
    {"action": "connect", "host": "client", "to": "server", "expect": ["client ESTABLISHED", "server ESTABLISHED"]},
    {"action": "close", "host": "client", "expect": ["client FIN_WAIT2", "server CLOSED"]}]}


@pytest.mark.parametrize("roles, server, client", [(None, "thinkpad", "raspberrypi"),
                                                   ({"server": "raspberrypi", "client": "thinkpad"},
                                                    "raspberrypi", "thinkpad")])
def test_the_roles_of_a_scenario_are_the_labs_hosts(tmp_path, roles, server, client):
    require_root()
    with NetnsPair() as pair:
        lab = Lab(pair, tmp_path, roles=roles)
        try:
            lab.start()
            res, run_dir = lab.run_scenario(SCENARIO)
        finally:
            lab.close()
    assert res.returncode == 0, res.stdout + res.stderr
    recs = load(run_dir / "trace.jsonl")
    states = [(r["host"], r["to"]) for r in recs if r["kind"] == "state"]
    assert states[0] == (server, "LISTEN") and (client, "SYN_SENT") in states
    assert [r["target"] for r in recs if r["kind"] == "step" and r["status"] == "start"] == [server, client, client]
    assert "step 1 listen on " + server in (run_dir / "summary.txt").read_text()
