"""Event-driven TCP states from the kernel: a tracefs instance of the probe's own.

``KernelStates(host, port, lab_ip, owned_pids).open()`` makes the instance
``tcplab-<host>-<pid>`` under ``<tracefs>/instances`` (mounting tracefs at /sys/kernel/tracing when
it is not mounted, e.g. under ``ip netns exec`` which remounts /sys), with ``trace_clock`` = ``mono``,
``buffer_percent`` = 0 (wake the reader on every event) and the events ``sock/inet_sock_set_state``,
``tcp/tcp_retransmit_skb``, ``tcp/tcp_retransmit_synack``, ``tcp/tcp_send_reset``,
``tcp/tcp_receive_reset``, each with a kernel ``filter`` on the lab port (and on AF_INET/IPPROTO_TCP
where the event has those fields). ``read(timeout)`` returns the new events; ``close()`` removes the
instance (and unmounts tracefs if this object mounted it). ``sweep()`` (called by ``open``) removes
instances ``tcplab-*-<pid>`` whose pid is dead.

Why ``trace_pipe_raw`` (binary, one file per CPU) rather than the text ``trace_pipe``: the text prints
microseconds only, and ``inet_sock_set_state`` prints no socket address, while ``CLOSE->SYN_SENT``
is traced before the kernel picks the local port (``sport=0``): only the raw record's ``skaddr`` links
it to the socket's later events. The raw pages are decoded by :mod:`probe.tracefs_raw`, with the
page layout read from ``events/header_page`` and each event's fields from its own ``format`` (read by
name: 6.1's ``tcp_retransmit_skb`` has no ``err``; a 32-bit kernel's ``skaddr`` is 4 bytes). A kernel
event whose format lacks a field the decoder needs is left out (``tracepoint_unusable``); without
the state tracepoint's fields the instance is not used at all (:class:`KStatesError`).

Times: tracefs ``mono`` is CLOCK_MONOTONIC of the kernel, without any time-namespace offset; the
monotonic offset of /proc/self/timens_offsets is added so ``t_ns`` is on the probe's own
CLOCK_MONOTONIC (``time.monotonic_ns()``), also under ``unshare --time --monotonic N``.

Whose socket: the namespaces of the embedded testbed share one kernel, so every probe sees every
host's events. A connection socket is this host's when its local address is ``lab_ip``. A listener
(``0.0.0.0:port``) has no address of its own: it is this host's when the task that changed its state
(``common_pid``: listen() and the final close run in the process) is one ``owned_pids()`` returns (the
nc processes this probe started); its later events follow its ``skaddr``. Its first event may be read
before the spawn returned the pid, so it waits up to ``UNDECIDED_NS`` to be decided. A listener of a
process the probe did not start is left to inet_diag, which only sees this host's namespace.
Two namespaces with the same addresses (test sessions side by side) still look alike: every event
says ``owned`` when its task is one of ours, and :mod:`probe.statemerge` keeps a socket only once
inet_diag or an owned event vouched for it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import select
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Collection

import structlog

from tcplab import pidfile, tcpstates
from tcplab.errors import TcplabError
from probe.tracefs_raw import (HEADER_64, TCP_EVENTS, Format, FormatError, PageHeader,
                               parse_format, parse_header_page, parse_page, sockaddr)

log = structlog.get_logger(__name__)

TRACEFS = Path("/sys/kernel/tracing")
# Where tracefs is mounted; only the default place is mounted when missing. Tests point it at a
# directory without tracefs to run a probe on inet_diag alone.
ROOT_ENV = "TCPLAB_TRACEFS"
INSTANCE_RE = re.compile(r"^tcplab-(?P<host>.+)-(?P<pid>\d+)$")
UNDECIDED_NS = 500_000_000  # how long a listener's event waits for its task to be known as ours
BUFFER_KB = 1024  # per CPU: ~14,000 state records between two reads
class KStatesError(TcplabError, OSError):
    """tracefs cannot be used: not mountable, no permission, or the tracepoints are missing."""


def timens_offset_ns() -> int:
    """The monotonic offset of this process's time namespace (0 outside one)."""
    try:
        for line in Path("/proc/self/timens_offsets").read_text().splitlines():
            parts = line.split()
            if parts and parts[0] in ("monotonic", "1"):
                return int(parts[1]) * 1_000_000_000 + int(parts[2])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def sweep(root: Path = TRACEFS, host: str | None = None) -> list[str]:
    """Remove the ``tcplab-<host>-<pid>`` instances whose pid is dead (only ``host``'s, if given);
    return their names.

    An instance whose reader is alive cannot be removed anyway (rmdir answers EBUSY while its
    ``trace_pipe_raw`` is open), which also protects a probe whose pid this one cannot see."""
    removed = []
    try:
        names = os.listdir(root / "instances")
    except OSError:
        return removed
    for name in names:
        m = INSTANCE_RE.match(name)
        if not m or (host is not None and m.group("host") != host) or pidfile.running(int(m.group("pid"))):
            continue
        try:
            os.rmdir(root / "instances" / name)
            removed.append(name)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("tracefs_instance_not_removed", instance=name, error=e.strerror)
    return removed


def sweep_host(host: str, root: Path | None = None) -> list[str]:
    """The probe's start-up sweep: ``host``'s instances left by a killed probe, with tracefs mounted
    for the look if it is not (and unmounted again: the sweep leaves no mount behind)."""
    root = Path(root if root is not None else os.environ.get(ROOT_ENV) or TRACEFS)
    if (root / "instances").is_dir():
        return sweep(root, host)
    if root != TRACEFS or not root.is_dir():
        return []
    try:
        _mount_tracefs(root)
    except KStatesError as e:
        log.warning("tracefs_sweep_skipped", error=str(e))
        return []
    try:
        return sweep(root, host)
    finally:
        _umount(root)


def _mount_tracefs(root: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", str(root).encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise KStatesError(err, f"cannot mount tracefs on {root}: {os.strerror(err)}")


def _umount(root: Path) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.umount2(str(root).encode(), 2)  # MNT_DETACH


class KernelStates:
    def __init__(self, host: str, port: int, lab_ip: str,
                 owned_pids: Callable[[], Collection[int]] = frozenset, root: Path | None = None):
        self.host, self.port, self.lab_ip = host, port, lab_ip
        self.owned_pids = owned_pids
        self.root = Path(root if root is not None else os.environ.get(ROOT_ENV) or TRACEFS)
        self.name = f"tcplab-{host}-{os.getpid()}"
        self.path = self.root / "instances" / self.name
        self.offset_ns = timens_offset_ns()
        self.missed_pages = 0
        self._mounted = False
        self._fds: list[int] = []
        self._poll = select.poll()
        self._formats: dict[int, Format] = {}
        self._kinds: dict[int, str] = {}
        self._sk_owned: dict[int, int] = {}  # skaddr -> the time from which that socket is ours
        self._page = 4096
        self._header: PageHeader = HEADER_64
        self._type_field = (0, 2)  # common_type: where every record says which event it is
        self._pid_field = (4, 4)
        self._undecided: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()  # the reader thread and a sync/close may read at once

    # --- set up / tear down ------------------------------------------------------------------
    def open(self) -> "KernelStates":
        if not (self.root / "instances").is_dir():
            if self.root != TRACEFS or not self.root.is_dir():
                raise KStatesError(errno.ENOENT, f"no tracefs at {self.root}")
            _mount_tracefs(self.root)
            self._mounted = True
        swept = sweep(self.root)
        if swept:
            log.warning("tracefs_instances_swept", removed=swept)
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        log.info("tracefs_instance_created", instance=self.name, cpus=len(self._fds), offset_ns=self.offset_ns)
        return self

    def _setup(self) -> None:
        try:
            os.mkdir(self.path)
        except FileExistsError:
            pass
        except OSError as e:
            raise KStatesError(e.errno, f"cannot create tracefs instance {self.path}: {e.strerror}") from e
        self._write("trace_clock", "mono")
        self._write("buffer_percent", "0")
        self._write("buffer_size_kb", str(BUFFER_KB))
        try:
            self._page = int((self.path / "buffer_subbuf_size_kb").read_text()) * 1024
        except (OSError, ValueError):
            self._page = os.sysconf("SC_PAGESIZE")
        try:
            self._header = parse_header_page((self.root / "events" / "header_page").read_text())
        except (OSError, FormatError) as e:
            raise KStatesError(errno.EINVAL, f"cannot read {self.root}/events/header_page: {e}") from e
        for event, (kind, needed) in TCP_EVENTS.items():
            d = self.path / "events" / event
            try:
                text = (d / "format").read_text()
            except OSError as e:
                raise KStatesError(e.errno, f"tracepoint {event} missing: {e.strerror}") from e
            try:
                ev_id, fmt = parse_format(text, event)
            except FormatError as e:
                raise KStatesError(errno.EINVAL, str(e)) from e
            missing = fmt.missing(needed)
            if missing and kind == "state":
                raise KStatesError(errno.EINVAL, f"tracepoint {event} has no field {', '.join(missing)}")
            if missing:
                log.warning("tracepoint_unusable", tracepoint=event, missing=missing)
                continue
            self._type_field, self._pid_field = fmt.fields["common_type"], fmt.fields["common_pid"]
            self._formats[ev_id] = fmt
            self._kinds[ev_id] = kind
            self._write(f"events/{event}/filter", self.filter_of(fmt))
            self._write(f"events/{event}/enable", "1")
        for cpu in sorted(os.listdir(self.path / "per_cpu")):
            fd = os.open(self.path / "per_cpu" / cpu / "trace_pipe_raw", os.O_RDONLY | os.O_NONBLOCK)
            self._fds.append(fd)
            self._poll.register(fd, select.POLLIN)

    def filter_of(self, fmt: Format) -> str:
        """The kernel filter of an event: the lab port, IPv4, TCP, as far as the event has the fields.

        (``tcp_send_reset`` carries sockaddrs instead of ports since Linux 6.10: only the family test
        is left there and the port is checked here.)"""
        parts = []
        if "sport" in fmt.fields:
            parts.append(f"(sport == {self.port} || dport == {self.port})")
        if "family" in fmt.fields:
            parts.append(f"family == {socket.AF_INET}")
        if "protocol" in fmt.fields:
            parts.append(f"protocol == {socket.IPPROTO_TCP}")
        return " && ".join(parts) if parts else "0"

    def _write(self, rel: str, value: str) -> None:
        try:
            (self.path / rel).write_text(value + "\n")
        except OSError as e:
            raise KStatesError(e.errno, f"cannot set {self.path / rel}: {e.strerror}") from e

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        for fd in self._fds:
            try:
                self._poll.unregister(fd)
            except KeyError:
                pass
            os.close(fd)
        self._fds.clear()
        # A read() in another thread may still be inside poll() (up to its timeout, 0.1 s in the
        # daemon) and so still hold a trace_pipe_raw file: the kernel then refuses the rmdir with
        # EBUSY. Wait that out rather than leave the instance behind.
        for attempt in range(40):
            try:
                os.rmdir(self.path)  # disables the events of the instance with it
                log.info("tracefs_instance_removed", instance=self.name, attempts=attempt + 1)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno == errno.EBUSY and attempt < 39:
                    time.sleep(0.025)
                    continue
                log.warning("tracefs_instance_not_removed", instance=self.name, error=e.strerror)
            break
        if self._mounted:
            _umount(self.root)
            self._mounted = False

    def __enter__(self) -> "KernelStates":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- reading -----------------------------------------------------------------------------
    def read(self, timeout: float = 0.0) -> list[dict]:
        """The events read now (waiting up to ``timeout`` s for the first), in time order."""
        if not self._fds:
            return []
        if self._undecided:  # decide those again soon: the pid is known moments after the spawn
            timeout = min(timeout, 0.01)
        if timeout > 0 and not self._poll.poll(int(timeout * 1000)):
            with self._lock:
                return self._decide([])
        with self._lock:
            return self._read()

    def _read(self) -> list[dict]:
        records = []
        for fd in self._fds:
            while True:
                try:
                    page = os.read(fd, self._page)
                except BlockingIOError:
                    break
                except OSError as e:
                    if e.errno in (errno.EAGAIN, errno.EINTR):
                        break
                    raise
                if not page:
                    break
                recs, missed = parse_page(page, self._header)
                if missed:
                    self.missed_pages += 1
                    log.warning("tracefs_events_lost", instance=self.name)
                records.extend(recs)
        records.sort(key=lambda r: r[0])
        return self._decide([(ts, data) for ts, data in records])

    def _decide(self, records: list) -> list[dict]:
        """Decode new records, and listener records whose owner was not known yet."""
        out = []
        undecided, self._undecided = self._undecided, []
        for ts, data in undecided + records:
            ev = self.decode(ts, data)
            if ev is not None:
                out.append(ev)
        out.sort(key=lambda e: e["t_ns"])
        return out

    def decode(self, ts: int, data: bytes) -> dict | None:
        """One raw record as an event of this host, or None (another host's, or another port)."""
        (type_off, type_size), (pid_off, pid_size) = self._type_field, self._pid_field
        if len(data) < max(type_off + type_size, pid_off + pid_size):
            return None
        ev_id = int.from_bytes(data[type_off:type_off + type_size], "little")
        fmt = self._formats.get(ev_id)
        if fmt is None:
            return None
        pid = fmt.u(data, "common_pid")
        t_ns = ts + self.offset_ns
        kind = self._kinds[ev_id]
        if kind == "send_reset" and "sport" not in fmt.fields:
            local, remote = sockaddr(data, fmt, "saddr"), sockaddr(data, fmt, "daddr")
            if local is None or remote is None or self.port not in (local[1], remote[1]):
                return None
        else:
            local = (fmt.ip(data, "saddr"), fmt.u(data, "sport"))
            remote = (fmt.ip(data, "daddr"), fmt.u(data, "dport"))
        sk = fmt.get(data, "skaddr", 0)
        ours = self._ours(local[0], sk, pid, ts)
        if ours is None and ts + UNDECIDED_NS > time.monotonic_ns() - self.offset_ns:
            self._undecided.append((ts, data))
        if not ours:
            return None
        body = {"t_ns": t_ns, "local": f"{local[0]}:{local[1]}", "remote": _remote(remote, local),
                "owned": ours is True and (local[0] == "0.0.0.0" or pid in self.owned_pids())}
        if kind == "state":
            old, new = fmt.u(data, "oldstate"), fmt.u(data, "newstate")
            if new == 7 and sk and self._sk_owned.get(sk, ts) <= ts:  # TCP_CLOSE: the pointer may be reused
                self._sk_owned.pop(sk, None)
            return {"kind": "tracepoint", **body, "from": tcpstates.name(old), "to": tcpstates.name(new),
                    "sk": sk, "pid": pid}
        body["sk"] = sk
        state = fmt.get(data, "state")
        if kind == "retransmit_synack":
            state = 3
        return {"kind": "kernel", "event": kind, **body,
                "state": tcpstates.name(state) if state in tcpstates.KERNEL else None}

    def _ours(self, local_ip: str, sk: int, pid: int, ts: int) -> bool | None:
        """This host's socket? None: a listener whose task is not (yet) known as ours.

        A listener's event is ours by its ``skaddr`` only from the time that address became a socket
        of ours: a freed socket's address is soon another's, and an undecided event decided again
        later must not be taken by the next socket at that address (another host's listener closing,
        read again after this host's next client socket got its memory)."""
        if local_ip == self.lab_ip:
            if sk:
                self._sk_owned.setdefault(sk, ts)
            return True
        if local_ip != "0.0.0.0":
            return False
        if sk and self._sk_owned.get(sk, ts + 1) <= ts:
            return True
        if pid in self.owned_pids():
            if sk:
                self._sk_owned.setdefault(sk, ts)
            return True
        return None


def _remote(remote: tuple[str, int], local: tuple[str, int]) -> str:
    if remote[1] == 0 and remote[0] == "0.0.0.0":
        return "0.0.0.0:*"  # a listener, as inet_diag names it
    return f"{remote[0]}:{remote[1]}"
