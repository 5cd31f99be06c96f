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
- Named connections (tcplab.actions.conn): ``connect_one(ip, port)`` adds one connection to those a
  client application already has, and returns its address pair (the kernel picks the local port at
  ``connect()``). ``send``, ``send_bytes``, ``read``, ``shutdown``, ``keepalive``, ``close`` and
  ``abort`` with ``conn=(local, remote)`` act on that connection alone; closing or aborting one
  leaves the others and the listener as they are.

The sockets live in the probe's process: a killed probe's kernel closes them, so nothing of this
outlives it and the start-up sweep has nothing to look for. The listener's state changes are made by
the probe's own (main) thread, so the tracepoint's owner filter counts the probe's pid as the
application's (:attr:`pid`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
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
Pair = tuple[str, str]         # a connection as this host sees it: ("IP:PORT" local, "IP:PORT" remote)


def _addr(sa: tuple) -> str:
    return f"{sa[0]}:{sa[1]}"


class Conn:
    """One connection of the application, with the tasks reading it, writing to it and (a named one
    still in its handshake) connecting it."""

    def __init__(self, sock: socket.socket, reading: bool = True, remote: str | None = None):
        self.sock = sock
        self.local = _addr(sock.getsockname())
        self.remote = remote or _addr(sock.getpeername())
        self.reader: asyncio.Task | None = None
        self.dialling: asyncio.Task | None = None  # a named connection's handshake, while it lasts
        self.sending: set[asyncio.Task] = set()    # send_bytes' writes still under way
        self.eof = False
        self.reading = asyncio.Event()  # cleared: a slow reader, nothing is read from it (read off)
        if reading:
            self.reading.set()


class SocketApp:
    def __init__(self, on_console: Console):
        self.on_console = on_console
        self._listener: socket.socket | None = None
        self._acceptor: asyncio.Task | None = None
        self._connecting: list[asyncio.Task] = []
        self.conns: list[Conn] = []
        self.reading = True  # a new connection is read from (False: the application stopped reading)
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
        socks = [s for s in (self._dial(ip, port) for _ in range(count)) if s is not None]
        self._connecting = [asyncio.ensure_future(self._connect(sock, ip, port)) for sock in socks]
        log.info("app_connecting", ip=ip, port=port, count=count)

    async def connect_one(self, ip: str, port: int, lab: tuple[str, str] | None = None) -> Pair:
        """One more connection (a named one) beside those this client application has; its pair."""
        ip = labnet.check_peer(ip, *lab) if lab is not None else str(labnet.plain_ipv4(ip))
        if self._listener is not None:
            raise AppError("the probe's application listens here: a named connection starts on a host that does not")
        if len(self.conns) + len(self._connecting) >= MAX_CONNECTIONS:
            raise AppError(f"the probe's application has {MAX_CONNECTIONS} connections already")
        self._connecting = [t for t in self._connecting if not t.done()]
        if not self.running:
            self.failed = 0
        sock = self._dial(ip, port)
        if sock is None:
            raise AppError(f"cannot connect to {ip}:{port}")
        named = Conn(sock, self.reading, remote=f"{ip}:{port}")  # the application's from its SYN on
        named.dialling = asyncio.ensure_future(self._connect(sock, ip, port, named))
        self.conns.append(named)
        log.info("app_connecting", ip=ip, port=port, local=named.local)
        return named.local, named.remote

    def _open(self, conn: Pair | None, dialling: bool = False) -> list[Conn]:
        """The open connections a call acts on: every one, or the one ``conn`` names; one still in its
        handshake only when ``dialling`` (a close, an abort or a read may act on it, a send may not)."""
        open_ = [c for c in self.conns if c.sock.fileno() != -1 and (conn is None or (c.local, c.remote) == conn)
                 and (dialling or c.dialling is None)]
        if not open_:
            still = [c for c in self.conns if conn is not None and (c.local, c.remote) == conn and c.dialling]
            raise AppError(f"connection {conn[0]} -> {conn[1]} is still in its handshake (no SYN+ACK yet)" if still
                           else "the probe's application has no open connection" +
                           (f" {conn[0]} -> {conn[1]}" if conn is not None else ""))
        return open_

    async def send(self, text: str, typed: str | None = None, conn: Pair | None = None) -> int:
        """Write ``text`` as one line on every open connection (or the one); how many took it. ``typed``:
        the console record's words for it (default: the text)."""
        open_ = self._open(conn)
        data = (text.rstrip("\n") + "\n").encode()
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(*(loop.sock_sendall(c.sock, data) for c in open_), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if len(errors) == len(open_):
            raise AppError(f"no connection took the line: {errors[0]!r}")
        if errors:
            log.warning("app_send_failed", connections=len(errors), error=repr(errors[0]))
        self._typed(typed if typed is not None else text.rstrip("\n"), open_, conn)
        return len(open_) - len(errors)

    def _typed(self, text: str, open_: list[Conn], conn: Pair | None) -> None:
        """The console record of a typed line: on its connection when the line went to one."""
        if conn is None:
            self.on_console(text, "stdin")
        else:
            self.on_console(text, "stdin", open_[0].local, open_[0].remote)

    async def read(self, on: bool, conn: Pair | None = None) -> None:
        """Stop reading every connection, and those to come (``on=False``: the windows fill), or go on;
        with ``conn``, that connection alone."""
        if not self.running:
            raise AppError("the probe's application is not running")
        if conn is None:
            self.reading = on
        for c in self._open(conn, dialling=True) if conn is not None else self.conns:
            (c.reading.set if on else c.reading.clear)()

    async def send_bytes(self, count: int, line: int = 1000, conn: Pair | None = None) -> int:
        """``count`` bytes, as lines of ``x``, on every open connection (or the one, as Endpoint.send_bytes),
        handed to the kernel in the background: a peer that does not read must not hold the probe's commands."""
        open_ = self._open(conn)
        data, loop = bulk(count, line), asyncio.get_running_loop()
        for c in open_:
            task = loop.create_task(loop.sock_sendall(c.sock, data))
            task.add_done_callback(_logged)
            c.sending.add(task)
            task.add_done_callback(c.sending.discard)
        self._typed(bulk_words(count, line), open_, conn)
        return len(open_)

    async def keepalive(self, idle_s: int, interval_s: int, probes: int, conn: Pair | None = None) -> int:
        """TCP keepalive on every open connection (or the one); how many."""
        done = sum(linger.keepalive(c.sock, idle_s, interval_s, probes) for c in self._open(conn))
        if not done:
            raise AppError("the probe's application has no open connection")
        return done

    async def shutdown(self, conn: Pair | None = None) -> int:
        """Half-close every open connection, or the one (shutdown SHUT_WR: a FIN; reading goes on); how many."""
        done = 0
        for c in self._open(conn):
            try:
                c.sock.shutdown(socket.SHUT_WR)
                done += 1
            except OSError as e:
                log.warning("app_shutdown_failed", error=repr(e))
        if not done:
            raise AppError("the probe's application has no open connection")
        return done

    async def close(self, conn: Pair | None = None) -> None:
        """End the application: the listener and every connection, each after what it had to read;
        with ``conn``, that connection alone."""
        if conn is not None:
            await self._finish(self._take(conn), drain=True, reset=False)
            return
        await self._end(drain=True)

    async def abort(self, reset: bool = True, conn: Pair | None = None) -> None:
        """End at once: every connection reset (SO_LINGER 0: an RST), or with ``reset=False`` closed
        as a killed process's are (a FIN); the listener closed. With ``conn``, that connection alone."""
        if conn is not None:
            await self._finish(self._take(conn), drain=False, reset=reset)
            return
        await self._end(drain=False, reset=reset)

    def _take(self, conn: Pair) -> list[Conn]:
        """The connection ``conn`` names (also in its handshake), no longer the application's."""
        taken = self._open(conn, dialling=True)
        self.conns = [c for c in self.conns if c not in taken]
        return taken

    # -- internals ------------------------------------------------------------------------------------

    def _check_idle(self, count: object) -> None:
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_CONNECTIONS:
            raise AppError(f"count {count!r} is outside 1..{MAX_CONNECTIONS}")
        if self.running:
            raise AppError(f"{self.describe()} already runs")

    async def _accept(self, sock: socket.socket, count: int) -> None:
        loop = asyncio.get_running_loop()
        accepted = 0
        while accepted < count:
            try:
                csock, _ = await loop.sock_accept(sock)
            except OSError as e:
                log.warning("app_accept_failed", error=str(e))
                return
            self._serve(csock)
            accepted += 1
        log.info("app_accepted_all", count=count)

    def _dial(self, ip: str, port: int) -> socket.socket | None:
        """A socket whose ``connect()`` is under way (the SYN is out), or None when it failed at once."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        err = sock.connect_ex((ip, port))
        if err in (0, errno.EINPROGRESS):
            return sock
        sock.close()
        self._connect_failed(ip, port, os.strerror(err))
        return None

    def _connect_failed(self, ip: str, port: int, why: str) -> None:
        self.failed += 1
        if self.failed in (1, 10, 100):  # one line for a refused storm, with the count so far
            log.warning("app_connect_failed", ip=ip, port=port, error=why, failed=self.failed)

    async def _connect(self, sock: socket.socket, ip: str, port: int, named: Conn | None = None) -> None:
        """Wait for the handshake of a dialled socket (writable once it is made or has failed); then
        serve it (a named one, already the application's, is read from now on)."""
        try:
            await _ready(sock, write=True)
        except asyncio.CancelledError:
            sock.close()
            raise
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            sock.close()
            self._connect_failed(ip, port, os.strerror(err))
            if named is not None and named in self.conns:
                self.conns.remove(named)
            return
        if named is None:
            self._serve(sock)
        else:
            named.dialling = None
            named.reader = asyncio.ensure_future(self._read(named))

    def _serve(self, sock: socket.socket) -> None:
        try:
            conn = Conn(sock, self.reading)
        except OSError:  # reset before we looked: nothing to serve
            sock.close()
            return
        conn.reader = asyncio.ensure_future(self._read(conn))
        self.conns.append(conn)

    async def _read(self, conn: Conn) -> None:
        """Print what ``conn`` receives, line by line, while it reads. It waits for data without
        taking it (readable), then takes it only if it still reads: a reader stopped while it waits
        leaves what comes in the kernel's buffer, where it closes the window."""
        pending = b""
        while True:
            await conn.reading.wait()
            await _ready(conn.sock, write=False)
            if not conn.reading.is_set():
                continue
            try:
                data = conn.sock.recv(READ)
            except BlockingIOError:
                continue
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
        self.reading = True  # the next application reads again
        tasks = [t for t in (self._acceptor, *self._connecting) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._acceptor, self._connecting = None, []
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        conns, self.conns = self.conns, []
        await self._finish(conns, drain, reset)

    async def _finish(self, conns: list[Conn], drain: bool, reset: bool) -> None:
        """End these connections: each after what it had to read (``drain``), reset or with a FIN; what
        was still being sent on them, or their handshake, is cancelled first (before the fd is closed)."""
        pending = [t for c in conns for t in (*c.sending, c.dialling) if t is not None]
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for c in conns:
            if c.dialling is not None:
                continue  # its socket closed with its handshake's task
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


async def _ready(sock: socket.socket, write: bool) -> None:
    """Until ``sock`` is writable (a connect made or failed) or readable (data, a FIN, a reset);
    nothing is read or written, so a cancel here loses nothing."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    fd = sock.fileno()
    add, remove = (loop.add_writer, loop.remove_writer) if write else (loop.add_reader, loop.remove_reader)
    add(fd, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        remove(fd)


def _logged(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("app_send_bytes_failed", error=repr(task.exception()))
