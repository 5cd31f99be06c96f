"""bench.fuzz_wire's short run: 20,000 fuzzed frames at each of a real controller's probe ROUTER (as
a keyed probe), its control socket (as the CLI) and a real probe's DEALER (as its controller); after
every 5,000 each still answers a valid frame, and neither daemon logged a traceback or an exception."""

import pytest

from bench.fuzz_wire import fuzz
from tests.netns import require_root

pytestmark = pytest.mark.integration

FRAMES = 20_000


def test_twenty_thousand_fuzzed_frames_at_each_receiver_leave_every_daemon_answering(tmp_path):
    require_root()
    res = fuzz(FRAMES, 5_000, seed=7, names=["controller", "control", "probe"], root=tmp_path)
    assert res["targets"] == {name: {"thrown": FRAMES, "survived": FRAMES, "failure": None}
                              for name in ("controller", "control", "probe")}
    assert res["bugs"] == []
    counters = res["controller_counters"]
    # most frames did not fit and were refused, counted, not taken: the receivers did see them
    assert counters["probe_frames"]["refused"] > FRAMES // 2 and counters["control_frames"]["refused"] > FRAMES // 2
    assert res["probe_refused"] > FRAMES // 2
