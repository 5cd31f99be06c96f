"""Socket states of the lab port, as ``ss -tano`` and ``netstat -nao`` see them (inet_diag).

``SocketWatcher(port).poll()`` makes one inet_diag dump of the TCP/IPv4 sockets of the namespace it was
built in, keeps those whose local or remote port is the lab port, and returns the state changes since
the previous poll plus the netstat rows of now. Keys are ``(local, remote)``: a request socket
(SYN_RECEIVED) and the full socket that replaces it share a key, so the handshake reads as one socket.

Why not ``pyroute2.DiagSocket`` itself: in pyroute2 0.9 it is a sync wrapper that runs its own asyncio
loop, and it raises "Cannot run the event loop while another loop is running" when called from the
probe daemon's loop. A dump costs ~0.5 ms, cheap enough to do inline, so we keep pyroute2's message
classes (``inet_diag_req`` / ``inet_diag_msg`` with its ``tcp_info`` decoder) and do the send/recv on a
plain blocking netlink socket: usable from any thread or coroutine.

Timers follow ``netstat -o`` (net-tools reads /proc/net/tcp): ``name (expires/retransmits/probes)``
where name is off, on (retransmit or SYN-ACK timer), keepalive (also the orphan FIN_WAIT2 timer of a
full socket), timewait, probe (zero-window probe); retransmits is ``icsk_retransmits`` and probes is
``icsk_probes_out`` whatever the timer (from tcp_info; inet_diag's own ``idiag_retrans`` holds one or the
other depending on the timer). Expiry is printed in seconds truncated to 1/100 s like /proc does.
Netstat's Send-Q of a listener is 0 (ss shows the backlog there instead).
"""

from __future__ import annotations

import errno
import socket
import struct
import time

from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NETLINK_SOCK_DIAG
from pyroute2.netlink.diag import SOCK_DIAG_BY_FAMILY, inet_diag_msg, inet_diag_req

from tcplab import tcpstates
from tcplab.errors import TcplabError

INET_DIAG_INFO_EXT = 1 << (2 - 1)  # ask for INET_DIAG_INFO (struct tcp_info)
TIMER_NAMES = {0: "off", 1: "on", 2: "keepalive", 3: "timewait", 4: "probe"}
ANY_REMOTE = "0.0.0.0:*"
_LISTEN = 10
_SYN_RECV = 3
_CLOSE = 7


class SocketWatchError(TcplabError, OSError):
    """The inet_diag dump failed."""


class DiagDumper:
    """One blocking NETLINK_SOCK_DIAG socket in the namespace where it is created."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def dump(self, states: int = tcpstates.ALL_STATES_MASK, extensions: int = INET_DIAG_INFO_EXT) -> list:
        self._seq += 1
        req = inet_diag_req()
        req["header"]["type"] = SOCK_DIAG_BY_FAMILY
        req["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
        req["header"]["sequence_number"] = self._seq
        req["sdiag_family"] = socket.AF_INET
        req["sdiag_protocol"] = socket.IPPROTO_TCP
        req["idiag_states"] = states
        req["idiag_ext"] = extensions
        req.encode()
        self._sock.send(req.data)
        out = []
        while True:
            data = self._sock.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, mtype, _flags, seq = struct.unpack_from("IHHI", data, offset)
                if length < 16:
                    raise SocketWatchError(errno.EPROTO, "truncated netlink message")
                if seq == self._seq:
                    if mtype == NLMSG_DONE:
                        return out
                    if mtype == NLMSG_ERROR:
                        code = -struct.unpack_from("i", data, offset + 16)[0]
                        raise SocketWatchError(code, f"inet_diag dump failed: {errno.errorcode.get(code, code)}")
                    msg = inet_diag_msg(data, offset=offset)
                    msg.decode()
                    out.append(msg)
                offset += (length + 3) & ~3


def _addr(ip: str, port: int) -> str:
    return f"{ip}:{port if port else '*'}"


def _timer(msg) -> str:
    code = msg["idiag_timer"]
    info = msg.get_attr("INET_DIAG_INFO")
    if info is not None:
        retr, probes = info["tcpi_retransmits"], info["tcpi_probes"]
    elif code == 1:
        retr, probes = msg["idiag_retrans"], 0  # request socket: SYN-ACK retransmits
    elif code in (2, 4):
        retr, probes = 0, msg["idiag_retrans"]
    else:
        retr, probes = 0, 0
    if code == 0:
        return f"off (0.00/{retr}/{probes})"
    secs = (msg["idiag_expires"] // 10) / 100  # /proc prints centiseconds, truncated
    return f"{TIMER_NAMES.get(code, f'unkn-{code}')} ({secs:.2f}/{retr}/{probes})"


def row_of(msg) -> dict:
    """The netstat -nao row of one inet_diag message."""
    state = msg["idiag_state"]
    listen = state == _LISTEN
    return {
        "proto": "tcp",
        "recv_q": msg["idiag_rqueue"],
        "send_q": 0 if listen else msg["idiag_wqueue"],
        "local": _addr(msg["idiag_src"], msg["idiag_sport"]),
        "foreign": ANY_REMOTE if listen else _addr(msg["idiag_dst"], msg["idiag_dport"]),
        "state": tcpstates.netstat_name(tcpstates.name(state)),
        "timer": _timer(msg),
    }


class SocketWatcher:
    """Diff successive inet_diag dumps of one TCP port into state changes.

    Build it inside the lab host's namespace (its netlink socket stays there); poll from anywhere.
    """

    def __init__(self, port: int):
        self.port = port
        self._dumper = DiagDumper()
        self._known: dict[tuple[str, str], str] = {}
        self.last_dump_ns: tuple[int, int] | None = None  # when the last poll's dump began and ended

    def close(self) -> None:
        self._dumper.close()

    def __enter__(self) -> "SocketWatcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def dump(self) -> list:
        """The raw inet_diag messages of the sockets on the port, in kernel (netstat) order."""
        try:
            msgs = self._dumper.dump()
        except OSError as e:
            if isinstance(e, SocketWatchError):
                raise
            raise SocketWatchError(e.errno, f"inet_diag dump failed: {e}") from e
        return [m for m in msgs if self.port in (m["idiag_sport"], m["idiag_dport"])]

    def poll(self, now_ns: int | None = None) -> tuple[list[dict], list[dict]]:
        """One dump: the state changes since the previous poll, and the netstat rows of now."""
        before = time.monotonic_ns()
        msgs = self.dump()
        after = time.monotonic_ns()
        self.last_dump_ns = (before, after)  # a dump of many sockets takes ms: a state was seen in there
        if now_ns is None:
            now_ns = (before + after) // 2
        rows = [row_of(m) for m in msgs]
        current = snapshot(msgs, rows)
        changes = diff(self._known, current, now_ns)
        self._known = {key: state for key, (state, _) in current.items()}
        return changes, rows


def snapshot(msgs: list, rows: list[dict]) -> dict[tuple[str, str], tuple[str, str]]:
    """``(local, remote) -> (state, the state it came from if it is new)`` for one dump.

    A socket first seen came from CLOSED, except a SYN_RECEIVED one whose port has a listener: LISTEN.
    Sockets in the kernel's CLOSE state (an fd still holds them) count as gone.
    """
    listening_ports = {m["idiag_sport"] for m in msgs if m["idiag_state"] == _LISTEN}
    out = {}
    for m, row in zip(msgs, rows):
        if m["idiag_state"] == _CLOSE:
            continue
        came = "LISTEN" if m["idiag_state"] == _SYN_RECV and m["idiag_sport"] in listening_ports else "CLOSED"
        out[(row["local"], row["foreign"])] = (tcpstates.name(m["idiag_state"]), came)
    return out


def diff(known: dict[tuple[str, str], str], current: dict[tuple[str, str], tuple[str, str]],
         t_ns: int) -> list[dict]:
    """State-change events from the previous states to a new snapshot."""
    changes = []
    for key, (state, came) in current.items():
        old = known.get(key)
        if old != state:
            changes.append(_change(t_ns, key, old or came, state))
    for key, old in known.items():
        if key not in current:
            changes.append(_change(t_ns, key, old, "CLOSED"))
    return changes


def _change(t_ns: int, key: tuple[str, str], frm: str, to: str) -> dict:
    return {"kind": "state", "t_ns": t_ns, "local": key[0], "remote": key[1], "from": frm, "to": to,
            "source": "inet_diag"}


def listening(port: int) -> bool:
    """True when a socket of this namespace listens on ``port`` (one dump)."""
    d = DiagDumper()
    try:
        return any(m["idiag_sport"] == port for m in d.dump(states=1 << _LISTEN, extensions=0))
    finally:
        d.close()
