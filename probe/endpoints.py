"""The lab host's application: nc for one connection, the probe's own for many.

A ``listen`` or ``connect`` of one connection runs nc (:class:`probe.endpoint.Endpoint`), the seed's
own tool, exactly as its user typed it. One of ``count`` > 1 runs the probe's socket application
(:class:`probe.sockapp.SocketApp`), which nc cannot be: ``nc -l`` accepts one connection. One
application at a time per host: a second listen or connect while one runs is refused. ``send``,
``read`` (on or off: a slow reader), ``shutdown`` (a half-close), ``keepalive``, ``close`` and ``abort``
go to whichever runs (abort and close to both: nothing is left running);
``abort`` resets the connections (an RST), ``close`` ends them in order (a FIN).

Named connections (tcplab.actions.conn) are the probe's application's: a connect with ``app`` adds
one connection to it (a host may hold several, each from its own step) and returns its address
pair; a listen with ``app`` runs it even for one connection. A command with ``conn`` (that pair, as
this host sees it) acts on that connection alone, and a close or an abort of one leaves the others
and the listener running.
"""

from __future__ import annotations

from probe.endpoint import Endpoint, EndpointError
from probe.sockapp import Pair, SocketApp


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

    async def listen(self, port: int, count: int = 1, app: bool = False) -> None:
        self._check_idle()
        await (self.app.listen(port, count) if app or count > 1 else self.nc.listen(port))

    async def connect(self, ip: str, port: int, lab: tuple[str, str] | None = None, count: int = 1,
                      app: bool = False) -> tuple[str, str] | None:
        """Start the connection(s); with ``app``, one more of the probe's application, whose pair
        (local, remote) it returns."""
        if app:
            if self.nc.running:
                raise EndpointError(f"{self.describe()} already runs: a named connection is the probe's application's")
            return await self.app.connect_one(ip, port, lab=lab)
        self._check_idle()
        await (self.nc.connect(ip, port, lab=lab) if count == 1 else self.app.connect(ip, port, count, lab=lab))
        return None

    @property
    def _running(self) -> Endpoint | SocketApp:
        """Whichever application runs (nc when none does: its calls say that nothing runs)."""
        return self.app if self.app.running else self.nc

    def _serving(self, conn: Pair | None) -> tuple[Endpoint | SocketApp, dict]:
        """Who acts on ``conn`` (None: every connection of whichever runs), and how to tell it which."""
        if conn is None:
            return self._running, {}
        if not self.app.running:
            raise EndpointError(f"no connection {conn[0]} -> {conn[1]}: the probe's application does not run")
        return self.app, {"conn": conn}

    async def send(self, text: str, conn: Pair | None = None) -> None:
        app, which = self._serving(conn)
        await app.send(text, **which)

    async def shutdown(self, conn: Pair | None = None) -> int:
        """Half-close the application's connections (or the one); how many."""
        app, which = self._serving(conn)
        return await app.shutdown(**which)

    async def read(self, on: bool, conn: Pair | None = None) -> None:
        app, which = self._serving(conn)
        await app.read(on, **which)

    async def send_bytes(self, count: int, conn: Pair | None = None) -> None:
        app, which = self._serving(conn)
        await app.send_bytes(count, **which)

    async def keepalive(self, idle_s: int, interval_s: int, probes: int, conn: Pair | None = None) -> int:
        app, which = self._serving(conn)
        return await app.keepalive(idle_s, interval_s, probes, **which)

    async def close(self, conn: Pair | None = None) -> None:
        """End the application in order; with ``conn``, only that connection (a FIN)."""
        if conn is not None:
            app, which = self._serving(conn)
            await app.close(**which)
            return
        await self.app.close()
        await self.nc.close()

    async def abort(self, reset: bool = True, conn: Pair | None = None) -> bool | None:
        """End whatever runs at once: its connections reset (RST), or with ``reset=False`` closed by
        the kernel as a killed process's are (FIN); with ``conn``, only that connection. Whether they
        were reset (None: nothing ran; False: not asked, or nc's could not be, probe.linger)."""
        if conn is not None:
            app, which = self._serving(conn)
            await app.abort(reset=reset, **which)
            return reset
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
