"""A probe that cannot shape says so in its hello, and the controller refuses a run that shapes it,
naming the host and the reason, before anything starts (issue 8 item 5).

This kernel has no netem, so the probes shape with the NFQUEUE fallback; the raspberrypi probe is
started with PATH=/usr/bin:/bin, as a non-root login shell of Debian has it: iptables (in /usr/sbin) is
then not installed as far as the probe can tell, so nothing can shape there. Real probes, a real
controller, real namespaces; no iptables is removed from the machine."""

from __future__ import annotations

import json

import pytest

from tests.daemons import Lab, storyline
from tests.netns import NetnsPair, require_root

NO_SBIN = "PATH=/usr/bin:/bin"


def log_events(path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


@pytest.mark.integration
def test_a_host_that_cannot_shape_is_refused_before_the_run(tmp_path, monkeypatch):
    require_root()
    with NetnsPair() as pair:
        start_probe = pair.b.run

        def run_without_sbin(*args, **kw):
            if args and str(args[0]).endswith("tcplab-probe") and args[1:2] == ("start",):
                args = ("env", NO_SBIN, *args)
            return start_probe(*args, **kw)

        monkeypatch.setattr(pair.b, "run", run_without_sbin)
        lab = Lab(pair, tmp_path)
        try:
            lab.start()
            res, _ = lab.run_scenario(storyline("refused", 0.1))
            assert res.returncode == 1
            assert "raspberrypi cannot shape" in res.stderr, res.stderr
            assert "iptables not installed" in res.stderr and "thinkpad cannot" not in res.stderr
            assert not lab.runs.exists() or not list(lab.runs.iterdir())  # no run was started

            # each probe said at start what it will use
            said = {h: [e for e in log_events(tmp_path / "hosts" / h / "probe.log")
                        if e.get("event") in ("shaping_unavailable", "shaping_backend_expected")]
                    for h in ("thinkpad", "raspberrypi")}
            assert [(e["event"], e.get("backend")) for e in said["thinkpad"]] == \
                [("shaping_backend_expected", "nfqueue")]
            assert [e["event"] for e in said["raspberrypi"]] == ["shaping_unavailable"]

            # the same lab runs a scenario that shapes nothing
            res, run_dir = lab.run_scenario(storyline("unshaped", 0.1, shape=False))
            assert res.returncode == 0, res.stderr + res.stdout
            assert (run_dir / "trace.jsonl").exists()
        finally:
            lab.close()
