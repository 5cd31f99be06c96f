"""The probe's status file: one line saying whether the controller has welcomed it.

``<home>/probe.status`` reads ``connecting <endpoint>`` from the start until the controller's
welcome, ``connected <endpoint>`` while the controller answers, ``connecting`` again when it falls
silent, and is removed when the probe stops. Ansible's probe role and the tests wait on it. It is
written whole (:func:`tcplab.files.atomic_write`), so a reader never sees half a line.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tcplab.files import atomic_write

CHECK_EVERY_S = 0.2


class StatusFile:
    def __init__(self, path: Path, controller: str):
        self.path = Path(path)
        self.controller = controller

    def write(self, state: str) -> None:
        atomic_write(self.path, f"{state} {self.controller}\n")

    def read(self) -> str | None:
        """The state written (``connecting`` or ``connected``), None without a file."""
        try:
            return self.path.read_text().split(" ", 1)[0]
        except (OSError, IndexError):
            return None

    async def follow(self, welcomed: asyncio.Event, every_s: float = CHECK_EVERY_S) -> None:
        """The reporter task: ``connected`` while ``welcomed`` is set, ``connecting`` while not."""
        while True:
            await welcomed.wait()
            self.write("connected")
            while welcomed.is_set():
                await asyncio.sleep(every_s)
            self.write("connecting")

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
