"""The test helper NetnsThread ends what its loop started before the loop closes."""

from __future__ import annotations

import asyncio
import os

from tests.nsthread import NetnsThread


def test_a_child_left_running_is_killed_and_reaped_before_the_loop_closes(netns_pair):
    with NetnsThread(netns_pair.a.ns) as ta:
        proc = ta.run(asyncio.create_subprocess_exec("sleep", "30"))
        pid = proc.pid
    assert proc.returncode == -9  # the loop saw its exit: no transport is left to poll this pid later
    assert not os.path.exists(f"/proc/{pid}")
