"""The nc application of a lab host (netcat-openbsd), with its console.

``Endpoint`` runs one nc at a time: ``listen(port)`` is the seed's server ``nc -l 9090``, ``connect(ip,
port)`` its client ``nc <server> 9090``. Every argv ends nc's options with ``--`` before the host and
port (``nc -l -- 9090``, ``nc -- 10.90.0.1 9090``: netcat-openbsd takes both), the port is 1..65535,
and a connect's address must be a plain IPv4 address, inside this host's lab network when
``connect`` is told its lab interface and address (:mod:`probe.labnet`): otherwise no nc starts. ``send(text)`` types a line into nc's stdin; every line nc prints
reaches ``on_console(line, "stdout"|"stderr")`` (without its newline), and a typed line reaches
``on_console(text, "stdin")``. ``close()`` ends the application as the seed's user does (Ctrl-C = SIGINT),
``abort()`` kills it (a FIN) and ``reset()`` kills it with its connection reset (an RST: SO_LINGER 0 set
on its socket from outside, probe/linger.py). While nc runs its pid (and its identity: boot id and start time) is in
``pid_dir/nc.pid``; ``sweep(pid_dir)`` kills what a killed probe left behind.

How netcat-openbsd 1.219 (Debian 12) behaves, observed in the lab namespaces:
- ``nc -l 9090`` listens on 0.0.0.0:9090 (IPv4 only). After accepting one connection it keeps the
  listening socket open while it serves that connection (netstat shows LISTEN and ESTABLISHED, as in the
  seed's "two sockets open on the server side") and closes both when it ends; without ``-k`` it serves
  only that one connection. A second ``nc -l`` on the same port does not fail (nc sets SO_REUSEPORT):
  both listen, so ``listen()`` refuses to start a second nc on one Endpoint but cannot detect a stray one.
  ``nc -l 99999`` does not fail either: it listens on some other port (``listen()`` then warns
  ``nc_listen_not_seen`` after its bounded wait and returns).
- nc has no SIGINT handler: SIGINT kills it and the kernel closes its socket, which sends the FIN
  (FIN_WAIT1 on this side, CLOSE_WAIT on the peer). That is how the seed's server ends, so ``close()``
  sends SIGINT. (Were unread data left in the receive queue the kernel would send RST instead; nc reads
  everything as it comes, so in practice it is a FIN.)
- EOF on stdin does nothing by default (Debian's ``-q`` defaults to "wait forever", no ``-N``): no FIN,
  nc keeps running. So closing stdin is not a way to end the application.
- When the peer's FIN arrives nc does not exit while its stdin is open: the socket stays in CLOSE_WAIT
  until the application is ended, exactly the seed's client. (With stdin already at EOF it exits.)
- A refused connection makes the client nc exit with status 1 and print nothing (no ``-v``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Callable

import structlog

from probe import labnet, linger, sockets
from tcplab.errors import TcplabError
from tcplab.files import atomic_write

log = structlog.get_logger(__name__)

PID_FILE = "nc.pid"
NC_NAMES = ("nc", "nc.openbsd", "netcat")


class EndpointError(TcplabError, RuntimeError):
    """nc could not be started, or the operation needs a running (or stopped) nc."""


class Endpoint:
    def __init__(self, on_console: Callable[[str, str], None], nc: str = "/usr/bin/nc",
                 pid_dir: Path | None = None):
        self.on_console = on_console
        self.nc = nc
        self.pid_dir = Path(pid_dir) if pid_dir is not None else None
        self._proc: asyncio.subprocess.Process | None = None
        self._readers: list[asyncio.Task] = []
        self._reaper: asyncio.Task | None = None
        self.returncode: int | None = None
        self.stopped = False  # nc held with SIGSTOP: it reads nothing (read off)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def listen(self, port: int, wait: float = 2.0) -> None:
        """Run ``nc -l -- PORT``; return once the kernel shows the listening socket (or after ``wait`` s)."""
        await self._spawn("-l", "--", _port(port))
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and self.running:
            if sockets.listening(port):
                log.info("nc_listening", port=port, pid=self.pid)
                return
            await asyncio.sleep(0.005)
        if not self.running:
            await self._finish_readers()
            raise EndpointError(f"nc -l {port} exited with status {self.returncode}")
        log.warning("nc_listen_not_seen", port=port, pid=self.pid, waited_s=wait)

    async def connect(self, ip: str, port: int, lab: tuple[str, str] | None = None) -> None:
        """Run ``nc -- IP PORT``; returns at once (the handshake goes on in the kernel). ``lab``: this
        host's lab interface and address, whose network ``ip`` must be in (LabAddressError if not)."""
        ip = labnet.check_peer(ip, *lab) if lab is not None else str(labnet.plain_ipv4(ip))
        await self._spawn("--", ip, _port(port))

    async def send(self, text: str) -> None:
        """Type one line into nc's stdin."""
        if not self.running or self._proc is None or self._proc.stdin is None:
            raise EndpointError("nc is not running")
        line = text.rstrip("\n")
        self._proc.stdin.write((line + "\n").encode())
        try:
            await self._proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as e:
            raise EndpointError("nc's stdin is closed") from e
        self.on_console(line, "stdin")

    async def read(self, on: bool) -> None:
        """A slow reader: ``on=False`` stops nc (SIGSTOP), so it reads nothing and what arrives stays in
        its socket's receive buffer until the window closes; ``on=True`` lets it go on (SIGCONT)."""
        if not self.running:
            raise EndpointError("nc is not running")
        self._signal(signal.SIGCONT if on else signal.SIGSTOP)
        self.stopped = not on
        log.info("nc_reading", pid=self.pid, reading=on)

    async def send_bytes(self, count: int, line: int = 1000) -> None:
        """Type ``count`` bytes into nc's stdin at once, as lines of ``x`` of ``line`` bytes (the last
        one shorter); one console record says what was typed."""
        if not self.running or self._proc is None or self._proc.stdin is None:
            raise EndpointError("nc is not running")
        self._proc.stdin.write(bulk(count, line))
        self.on_console(bulk_words(count, line), "stdin")
        try:
            await self._proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as e:
            raise EndpointError("nc's stdin is closed") from e

    async def close(self, timeout: float = 5.0) -> int | None:
        """End the application like Ctrl-C (SIGINT); SIGTERM, then SIGKILL if it lingers. Returns its status."""
        if self.stopped and self.running:  # a stopped nc would not see the SIGINT until it goes on
            self._signal(signal.SIGCONT)
        self.stopped = False
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if not self.running:
                break
            self._signal(sig)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._wait()), timeout)
        return await self._wait()

    async def abort(self) -> int | None:
        """Kill nc at once (SIGKILL): the kernel closes its connection in order (a FIN)."""
        if self.running:
            self._signal(signal.SIGKILL)
        return await self._wait()

    async def shutdown(self) -> int:
        """Half-close: shut the sending side of nc's connection (a FIN) while nc goes on reading and
        printing (probe.linger). How many connections; EndpointError when nc runs none."""
        if not self.running or self.pid is None:
            raise EndpointError("nc is not running")
        try:
            done = await asyncio.to_thread(linger.shutdown_write, self.pid)
        except OSError as e:
            raise EndpointError(f"cannot shut down nc's connection: {e.strerror or e}") from e
        if not done:
            raise EndpointError("nc has no connection to shut down yet")
        log.info("nc_shutdown_write", pid=self.pid, connections=done)
        return done

    async def keepalive(self, idle_s: int, interval_s: int, probes: int) -> int:
        """TCP keepalive on nc's connection, with these timers (probe.linger); how many connections."""
        if not self.running or self.pid is None:
            raise EndpointError("nc is not running")
        try:
            done = await asyncio.to_thread(linger.keepalive_all, self.pid, idle_s, interval_s, probes)
        except OSError as e:
            raise EndpointError(f"cannot set keepalive on nc's connection: {e.strerror or e}") from e
        if not done:
            raise EndpointError("nc has no connection to keep alive yet")
        log.info("nc_keepalive", pid=self.pid, connections=done, idle_s=idle_s, interval_s=interval_s, probes=probes)
        return done

    async def reset(self) -> bool | None:
        """End nc with its connection reset (RST), not a FIN: its sockets get SO_LINGER 0
        (probe.linger), then SIGKILL. True when they did, False when the kernel would not let us
        (then it is a FIN, logged), None when no nc ran."""
        if not self.running or self.pid is None:
            await self._wait()
            return None
        try:
            await asyncio.to_thread(linger.linger_zero, self.pid)
            reset = True
        except OSError as e:
            log.warning("nc_reset_not_possible", pid=self.pid, error=str(e), ends_with="FIN")
            reset = False
        await self.abort()
        return reset

    # -- internals ------------------------------------------------------------------------------------

    async def _spawn(self, *args: str) -> None:
        if self.running:
            raise EndpointError(f"nc already running (pid {self.pid})")
        await self._wait()  # reap a previous one completely
        try:
            proc = await asyncio.create_subprocess_exec(
                self.nc, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE)
        except OSError as e:
            raise EndpointError(f"cannot run {self.nc}: {e}") from e
        self._proc, self.returncode = proc, None
        self._write_pid(proc.pid)
        self._readers = [asyncio.ensure_future(self._read(proc.stdout, "stdout")),
                         asyncio.ensure_future(self._read(proc.stderr, "stderr"))]
        self._reaper = asyncio.ensure_future(self._reap(proc))
        log.info("nc_started", argv=[self.nc, *args], pid=proc.pid)

    async def _read(self, stream: asyncio.StreamReader | None, name: str) -> None:
        if stream is None:
            return
        while True:
            line = await stream.readline()
            if not line:
                return
            try:
                self.on_console(line.decode("utf-8", errors="replace").rstrip("\n"), name)
            except Exception as e:
                log.error("console_callback_failed", error=repr(e))

    async def _reap(self, proc: asyncio.subprocess.Process) -> None:
        rc = await proc.wait()
        self.returncode = rc
        self._remove_pid(proc.pid)
        log.info("nc_exited", pid=proc.pid, returncode=rc)

    async def _wait(self) -> int | None:
        if self._reaper is not None:
            await self._reaper
        await self._finish_readers()
        return self.returncode

    async def _finish_readers(self) -> None:
        if self._reaper is not None:
            await self._reaper
        readers, self._readers = self._readers, []
        for r in readers:  # nc is gone; its pipes reach EOF unless a grandchild holds them
            try:
                await asyncio.wait_for(r, 1.0)
            except asyncio.TimeoutError:
                pass

    def _signal(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(sig)
        log.info("nc_signalled", pid=self._proc.pid, signal=sig.name)

    def _write_pid(self, pid: int) -> None:
        if self.pid_dir is None:
            return
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(self.pid_dir / PID_FILE, f"{pid} {_identity(pid) or '-'}\n")

    def _remove_pid(self, pid: int) -> None:
        if self.pid_dir is None:
            return
        path = self.pid_dir / PID_FILE
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            if int(path.read_text().split()[0]) == pid:
                path.unlink()


def bulk(count: int, line: int) -> bytes:
    """``count`` bytes as lines of ``x`` of ``line`` bytes with their newline (the last one shorter)."""
    full, rest = divmod(count, line)
    return (b"x" * (line - 1) + b"\n") * full + (b"x" * (rest - 1) + b"\n" if rest else b"")


def bulk_words(count: int, line: int) -> str:
    """The console record of :meth:`Endpoint.send_bytes`: what was typed, in a line."""
    full, rest = divmod(count, line)
    return f"[{count} bytes: {full} lines of {line - 1} x" + (f" and one of {rest - 1}" if rest else "") + "]"


def _port(port: object) -> str:
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise EndpointError(f"nc port {port!r} is not a port (1..65535)")
    return str(port)


def _is_nc(pid: int) -> bool:
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return False
    return os.path.basename(argv0) in NC_NAMES


def _identity(pid: int) -> str | None:
    """``<boot id>:<start time>`` of process ``pid``: another process that got the pid later (or
    after a reboot: the pid file is on disk) has another. None when there is no such process."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]  # field 22
    except (OSError, IndexError):
        return None
    return f"{boot}:{start}"


def sweep(pid_dir: Path, timeout: float = 2.0) -> list[int]:
    """Kill the nc a killed probe left behind: the pid in ``pid_dir``'s pid file, only while that
    pid is still the process recorded (its identity, when the file has one) and still nc."""
    path = Path(pid_dir) / PID_FILE
    try:
        fields = path.read_text().split()
        pid = int(fields[0])
    except (FileNotFoundError, ValueError, IndexError):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return []
    recorded = fields[1] if len(fields) > 1 and fields[1] != "-" else None
    killed = []
    if _is_nc(pid) and (recorded is None or _identity(pid) == recorded):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            log.info("nc_swept", pid=pid)
        deadline = time.monotonic() + timeout
        while _is_nc(pid) and time.monotonic() < deadline:  # a zombie keeps its cmdline empty
            time.sleep(0.01)
    path.unlink(missing_ok=True)
    return killed
