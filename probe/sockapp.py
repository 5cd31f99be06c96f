"""The probe's own TCP application, for what one nc cannot do: many connections at once.

nc serves one connection (``nc -l`` accepts one, a client nc makes one). A ``listen`` or ``connect``
step with ``count`` above 1 runs this instead (:mod:`probe.endpoints` chooses), with nc's console
behaviour as probe/endpoint.py records it:

- ``listen(port, count)``: one listening socket on 0.0.0.0:PORT (SO_REUSEADDR, as nc sets), backlog
  ``count``; it accepts up to ``count`` connections and keeps the listener open while it serves
  them (netstat shows LISTEN beside the ESTABLISHED ones), as ``nc -l`` does for its one.
- ``connect(ip, port, count)``: ``count`` connections to ``ip:port``, all started at once; it returns
  as soon as every ``connect()`` is under way (the handshakes go on in the kernel, as nc's do). One
  that fails is logged (``app_connect_failed``); nc prints nothing on a refusal either.
- Every line a connection receives reaches ``on_console(line, "stdout", local, remote)``; the socket
  is read as data comes, so ending it sends a FIN, not a reset for unread data.
- A peer's FIN does not close the connection: it stays in CLOSE_WAIT until :meth:`close`, as nc with
  its stdin open (the seed's client).
- ``send(text)``: the line is written on every open connection; ``on_console(text, "stdin")`` once,
  as one typed line.
- ``close()``: the listener and every connection closed in order (FINs), what nc's Ctrl-C does;
  ``abort()`` at once, every connection reset (SO_LINGER 0: an RST), as the abort step asks
  (``abort(reset=False)``: at once, with FINs, as killing nc would).

The sockets live in the probe's process: a killed probe's kernel closes them, so nothing of this
outlives it and the start-up sweep has nothing to look for. The listener's state changes are made by
the probe's own (main) thread, so the tracepoint's owner filter counts the probe's pid as the
application's (:attr:`pid`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import Callable

import structlog

from probe import labnet, linger
from probe.endpoint import bulk, bulk_words
from probe.linger import LINGER_ZERO
from tcplab.actions.listen import MAX_CONNECTIONS
from tcplab.errors import TcplabError

log = structlog.get_logger(__name__)

READ = 65_536
MAX_LINE = 65_536       # a longer line is printed in pieces, as nc's 64 KiB reads would


class AppError(TcplabError, RuntimeError):
    """The application cannot do this now (already running, nothing to send on, a bad count)."""


Console = Callable[..., None]  # (text, stream, local=None, remote=None)


def _addr(sa: tuple) -> str:
    return f"{sa[0]}:{sa[1]}"


class Conn:
    """One connection of the application, with the task reading it."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.local = _addr(sock.getsockname())
        self.remote = _addr(sock.getpeername())
        self.reader: asyncio.Task | None = None
        self.eof = False


class SocketApp:
    def __init__(self, on_console: Console):
        self.on_console = on_console
        self._listener: socket.socket | None = None
        self._acceptor: asyncio.Task | None = None
        self._connecting: list[asyncio.Task] = []
        self.conns: list[Conn] = []
        self._sending: set[asyncio.Task] = set()  # send_bytes' writes still under way
        self.reading = asyncio.Event()  # cleared: a slow reader, nothing is read (read off)
        self.reading.set()
        self.failed = 0   # connects that did not succeed (this application's)

    @property
    def running(self) -> bool:
        return self._listener is not None or bool(self.conns) or any(not t.done() for t in self._connecting)

    @property
    def pid(self) -> int | None:
        """The process whose thread makes the listener's state changes: the probe's own."""
        return os.getpid() if self.running else None

    def describe(self) -> str:
        parts = [f"{len(self.conns)} connection(s)"]
        if self._listener is not None:
            parts.insert(0, "a listener")
        return "the probe's application: " + " and ".join(parts)

    async def listen(self, port: int, count: int) -> None:
        self._check_idle(count)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("0.0.0.0", port))
            sock.listen(count)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            raise AppError(f"cannot listen on port {port}: {e.strerror or e}") from e
        self._listener = sock
        self._acceptor = asyncio.ensure_future(self._accept(sock, count))
        log.info("app_listening", port=port, count=count)

    async def connect(self, ip: str, port: int, count: int, lab: tuple[str, str] | None = None) -> None:
        ip = labnet.check_peer(ip, *lab) if lab is not None else str(labnet.plain_ipv4(ip))
        self._check_idle(count)
        self.failed = 0
        self._connecting = [asyncio.ensure_future(self._connect(ip, port)) for _ in range(count)]
        await asyncio.sleep(0)  # each task's connect() is issued at its first step
        log.info("app_connecting", ip=ip, port=port, count=count)

    async def send(self, text: str, typed: str | None = None) -> int:
        """Write ``text`` as one line on every open connection; how many took it. ``typed``: the console
        record's words for it (default: the text)."""
        open_ = [c for c in self.conns if c.sock.fileno() != -1]
        if not open_:
            raise AppError("the probe's application has no open connection")
        data = (text.rstrip("\n") + "\n").encode()
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(*(loop.sock_sendall(c.sock, data) for c in open_), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if len(errors) == len(open_):
            raise AppError(f"no connection took the line: {errors[0]!r}")
        if errors:
            log.warning("app_send_failed", connections=len(errors), error=repr(errors[0]))
        self.on_console(typed if typed is not None else text.rstrip("\n"), "stdin")
        return len(open_) - len(errors)

    async def read(self, on: bool) -> None:
        """Stop reading every connection (``on=False``: the windows fill), or go on."""
        if not self.running:
            raise AppError("the probe's application is not running")
        (self.reading.set if on else self.reading.clear)()

    async def send_bytes(self, count: int, line: int = 1000) -> int:
        """``count`` bytes, as lines of ``x``, on every open connection (as Endpoint.send_bytes), handed
        to the kernel in the background: a peer that does not read must not hold the probe's commands."""
        open_ = [c for c in self.conns if c.sock.fileno() != -1]
        if not open_:
            raise AppError("the probe's application has no open connection")
        data, loop = bulk(count, line), asyncio.get_running_loop()
        for c in open_:
            task = loop.create_task(loop.sock_sendall(c.sock, data))
            task.add_done_callback(_logged)
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        self.on_console(bulk_words(count, line), "stdin")
        return len(open_)

    async def keepalive(self, idle_s: int, interval_s: int, probes: int) -> int:
        """TCP keepalive on every open connection; how many."""
        done = sum(linger.keepalive(c.sock, idle_s, interval_s, probes) for c in self.conns if c.sock.fileno() != -1)
        if not done:
            raise AppError("the probe's application has no open connection")
        return done

    async def shutdown(self) -> int:
        """Half-close every open connection (shutdown SHUT_WR: a FIN; reading goes on); how many."""
        done = 0
        for c in self.conns:
            if c.sock.fileno() == -1:
                continue
            try:
                c.sock.shutdown(socket.SHUT_WR)
                done += 1
            except OSError as e:
                log.warning("app_shutdown_failed", error=repr(e))
        if not done:
            raise AppError("the probe's application has no open connection")
        return done

    async def close(self) -> None:
        """End the application: the listener and every connection, each after what it had to read."""
        await self._end(drain=True)

    async def abort(self, reset: bool = True) -> None:
        """End at once: every connection reset (SO_LINGER 0: an RST), or with ``reset=False`` closed
        as a killed process's are (a FIN); the listener closed."""
        await self._end(drain=False, reset=reset)

    # -- internals ------------------------------------------------------------------------------------

    def _check_idle(self, count: object) -> None:
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_CONNECTIONS:
            raise AppError(f"count {count!r} is outside 1..{MAX_CONNECTIONS}")
        if self.running:
            raise AppError(f"{self.describe()} already runs")

    async def _accept(self, sock: socket.socket, count: int) -> None:
        loop = asyncio.get_running_loop()
        while len(self.conns) < count:
            try:
                csock, _ = await loop.sock_accept(sock)
            except OSError as e:
                log.warning("app_accept_failed", error=str(e))
                return
            self._serve(csock)
        log.info("app_accepted_all", count=count)

    async def _connect(self, ip: str, port: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(sock, (ip, port))
        except OSError as e:
            sock.close()
            self.failed += 1
            if self.failed in (1, 10, 100):  # one line for a refused storm, with the count so far
                log.warning("app_connect_failed", ip=ip, port=port, error=e.strerror or str(e), failed=self.failed)
            return
        except asyncio.CancelledError:
            sock.close()
            raise
        self._serve(sock)

    def _serve(self, sock: socket.socket) -> None:
        try:
            conn = Conn(sock)
        except OSError:  # reset before we looked: nothing to serve
            sock.close()
            return
        conn.reader = asyncio.ensure_future(self._read(conn))
        self.conns.append(conn)

    async def _read(self, conn: Conn) -> None:
        loop = asyncio.get_running_loop()
        pending = b""
        while True:
            await self.reading.wait()
            try:
                data = await loop.sock_recv(conn.sock, READ)
            except OSError as e:
                log.info("app_connection_error", local=conn.local, remote=conn.remote, error=e.strerror or str(e))
                data = b""
            if not data:  # the peer's FIN (or a reset): stay open, as nc does while its stdin is
                if pending:
                    self._print(conn, pending)
                conn.eof = True
                return
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self._print(conn, line)
            while len(pending) >= MAX_LINE:
                self._print(conn, pending[:MAX_LINE])
                pending = pending[MAX_LINE:]

    def _print(self, conn: Conn, line: bytes) -> None:
        try:
            self.on_console(line.decode("utf-8", errors="replace"), "stdout", conn.local, conn.remote)
        except Exception as e:
            log.error("console_callback_failed", error=repr(e))

    async def _end(self, drain: bool, reset: bool = False) -> None:
        self.reading.set()  # the next application reads again
        for task in list(self._sending):
            task.cancel()
        tasks = [t for t in (self._acceptor, *self._connecting) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._acceptor, self._connecting = None, []
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        conns, self.conns = self.conns, []
        for c in conns:
            if drain and not c.eof:  # what already arrived is read (and printed) first: a FIN, not a reset
                self._drain(c)
            if c.reader is not None:
                c.reader.cancel()
        await asyncio.gather(*(c.reader for c in conns if c.reader is not None), return_exceptions=True)
        for c in conns:
            if reset:
                with contextlib.suppress(OSError):
                    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
            c.sock.close()
        if conns:
            log.info("app_ended", connections=len(conns), aborted=not drain)

    def _drain(self, conn: Conn) -> None:
        with contextlib.suppress(OSError):
            while True:
                data = conn.sock.recv(READ)
                if not data:
                    return
                for line in data.rstrip(b"\n").split(b"\n"):
                    self._print(conn, line)


def _logged(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("app_send_bytes_failed", error=repr(task.exception()))
