"""The probe's status file (probe/link.py StatusFile): what Ansible's probe role and the tests wait on."""

from __future__ import annotations

import asyncio

from probe.link import StatusFile

ENDPOINT = "tcp://10.90.0.254:5555"


def test_written_whole_read_back_and_removed(tmp_path):
    status = StatusFile(tmp_path / "probe.status", ENDPOINT)
    assert status.read() is None
    status.write("connecting")
    assert (tmp_path / "probe.status").read_text() == f"connecting {ENDPOINT}\n"
    assert status.read() == "connecting"
    assert [p.name for p in tmp_path.iterdir()] == ["probe.status"]  # no temporary file left beside it
    status.remove()
    status.remove()  # twice: nothing there is not an error
    assert not (tmp_path / "probe.status").exists()


def test_follows_the_welcome_both_ways(tmp_path):
    status = StatusFile(tmp_path / "probe.status", ENDPOINT)
    seen: list[str | None] = []

    async def scenario() -> None:
        welcomed = asyncio.Event()
        status.write("connecting")
        task = asyncio.create_task(status.follow(welcomed, every_s=0.01))
        await asyncio.sleep(0.05)
        seen.append(status.read())
        welcomed.set()  # the controller's welcome
        await asyncio.sleep(0.05)
        seen.append(status.read())
        welcomed.clear()  # the controller fell silent
        await asyncio.sleep(0.05)
        seen.append(status.read())
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert seen == ["connecting", "connected", "connecting"]
