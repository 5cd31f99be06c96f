"""The lab host's application: nc for one connection, the probe's own for many.

A ``listen`` or ``connect`` of one connection runs nc (:class:`probe.endpoint.Endpoint`), the seed's
own tool, exactly as its user typed it. One of ``count`` > 1 runs the probe's socket application
(:class:`probe.sockapp.SocketApp`), which nc cannot be: ``nc -l`` accepts one connection. One
application at a time per host: a second listen or connect while one runs is refused. ``send``,
``read`` (on or off: a slow reader), ``shutdown`` (a half-close), ``keepalive``, ``close`` and ``abort``
go to whichever runs (abort and close to both: nothing is left running);
``abort`` resets the connections (an RST), ``close`` ends them in order (a FIN).
"""

from __future__ import annotations

from probe.endpoint import Endpoint, EndpointError
from probe.sockapp import SocketApp


class Endpoints:
    def __init__(self, nc: Endpoint, app: SocketApp):
        self.nc = nc
        self.app = app

    @property
    def running(self) -> bool:
        return self.nc.running or self.app.running

    @property
    def pid(self) -> int | None:
        """The application's process (the tracepoint's owner filter): nc's, or the probe's own."""
        return self.nc.pid if self.nc.running else self.app.pid

    def describe(self) -> str:
        """What runs, in words (the dead-man switch's record names what it ended)."""
        if self.nc.running:
            return f"nc pid {self.nc.pid}"
        return self.app.describe() if self.app.running else "nothing"

    async def listen(self, port: int, count: int = 1) -> None:
        self._check_idle()
        await (self.nc.listen(port) if count == 1 else self.app.listen(port, count))

    async def connect(self, ip: str, port: int, lab: tuple[str, str] | None = None, count: int = 1) -> None:
        self._check_idle()
        await (self.nc.connect(ip, port, lab=lab) if count == 1 else self.app.connect(ip, port, count, lab=lab))

    @property
    def _running(self) -> Endpoint | SocketApp:
        """Whichever application runs (nc when none does: its calls say that nothing runs)."""
        return self.app if self.app.running else self.nc

    async def send(self, text: str) -> None:
        await self._running.send(text)

    async def shutdown(self) -> int:
        """Half-close the application's connections; how many."""
        return await self._running.shutdown()

    async def read(self, on: bool) -> None:
        await self._running.read(on)

    async def send_bytes(self, count: int) -> None:
        await self._running.send_bytes(count)

    async def keepalive(self, idle_s: int, interval_s: int, probes: int) -> int:
        return await self._running.keepalive(idle_s, interval_s, probes)

    async def close(self) -> None:
        await self.app.close()
        await self.nc.close()

    async def abort(self, reset: bool = True) -> bool | None:
        """End whatever runs at once: its connections reset (RST), or with ``reset=False`` closed by
        the kernel as a killed process's are (FIN). Whether they were reset (None: nothing ran;
        False: not asked, or nc's could not be, probe.linger)."""
        ran = self.app.running or self.nc.running
        await self.app.abort(reset=reset)
        if not reset:
            await self.nc.abort()
            return False if ran else None
        done = await self.nc.reset()
        return True if ran and done is None else done

    def _check_idle(self) -> None:
        if self.running:
            raise EndpointError(f"{self.describe()} already runs: one application at a time on a host")
