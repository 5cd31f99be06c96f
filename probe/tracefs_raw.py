"""The raw format of tracefs: an event's ``format`` file, ``events/header_page`` and the
ring-buffer pages of ``trace_pipe_raw``.

Pure decoding with the standard library only (no I/O), so :mod:`probe.doctor` can use it on a host
where nothing is installed yet. A page is a header (timestamp, commit) then 32-bit event headers with
time deltas and extends; an event's fields sit at the offsets its ``format`` file gives.

Nothing is assumed about a kernel's layout: the page header's offsets and sizes come from
``events/header_page`` (a 32-bit kernel's ``local_t commit`` is 4 bytes and its data starts at 12, a
64-bit kernel's at 16), and an event's fields come from its own ``format`` file, decoded by name:
Linux 6.1's ``tcp_retransmit_skb`` has no ``err``, 6.10+'s ``tcp_send_reset`` carries sockaddrs instead
of ports. :data:`TCP_EVENTS` says which fields the probe needs of each tracepoint it reads.
"""

from __future__ import annotations

import re
import socket
import struct
from dataclasses import dataclass

from tcplab.errors import TcplabError

_MS_AF_INET = socket.AF_INET
_TYPE_PADDING, _TYPE_TIME_EXTEND, _TYPE_TIME_STAMP = 29, 30, 31
# The kernel's flags in a page's commit word (RB_MISSED_EVENTS, RB_MISSED_STORED); the rest is the length.
_MISSED_EVENTS = 1 << 31
_MISSED_STORED = 1 << 30
_FIELD_RE = re.compile(r"field:([^;]*?)\s*([A-Za-z_][A-Za-z0-9_]*)(\[\d+\])?;\s*offset:(\d+);\s*size:(\d+);"
                       r"(?:\s*signed:(\d+);)?")

# The tracepoints the probe reads: kind, and the fields without which it cannot decode the event.
# tcp_send_reset's saddr/daddr are 4-byte addresses with sport/dport before 6.10, sockaddrs after.
STATE_EVENT = "sock/inet_sock_set_state"
TCP_EVENTS = {
    STATE_EVENT: ("state", ("skaddr", "oldstate", "newstate", "sport", "dport", "saddr", "daddr")),
    "tcp/tcp_retransmit_skb": ("retransmit_skb", ("skaddr", "sport", "dport", "saddr", "daddr")),
    "tcp/tcp_retransmit_synack": ("retransmit_synack", ("skaddr", "sport", "dport", "saddr", "daddr")),
    "tcp/tcp_send_reset": ("send_reset", ("saddr", "daddr")),
    "tcp/tcp_receive_reset": ("receive_reset", ("skaddr", "sport", "dport", "saddr", "daddr")),
}
COMMON_FIELDS = ("common_type", "common_pid")


class FormatError(TcplabError, ValueError):
    """A ``format`` or ``header_page`` file this decoder cannot read."""


@dataclass(frozen=True)
class Format:
    name: str
    fields: dict  # name -> (offset, size)
    signed: frozenset = frozenset()  # names of the signed fields

    def u(self, data: bytes, field: str) -> int:
        off, size = self.fields[field]
        return int.from_bytes(data[off:off + size], "little", signed=field in self.signed)

    def get(self, data: bytes, field: str, default=None):
        """The field's value, or ``default`` when this kernel's event has no such field."""
        return self.u(data, field) if field in self.fields else default

    def ip(self, data: bytes, field: str) -> str:
        off, _ = self.fields[field]
        return socket.inet_ntoa(bytes(data[off:off + 4]))

    def missing(self, names) -> list[str]:
        return [n for n in names if n not in self.fields]


@dataclass(frozen=True)
class PageHeader:
    """Where a ring-buffer page keeps its timestamp, commit word and data (``events/header_page``)."""
    ts_offset: int = 0
    ts_size: int = 8
    commit_offset: int = 8
    commit_size: int = 8
    data_offset: int = 16


HEADER_64 = PageHeader()


def _fields(text: str) -> dict:
    return {m.group(2): (int(m.group(4)), int(m.group(5)), m.group(6) == "1") for m in _FIELD_RE.finditer(text)}


def parse_format(text: str, name: str) -> tuple[int, Format]:
    """The event id and field offsets of an event's tracefs ``format`` file."""
    m = re.search(r"^ID:\s*(\d+)", text, re.M)
    if not m:
        raise FormatError(f"no ID in the format of {name}")
    fields = _fields(text)
    missing = [f for f in COMMON_FIELDS if f not in fields]
    if missing:
        raise FormatError(f"the format of {name} has no {', '.join(missing)}")
    return int(m.group(1)), Format(name, {k: (o, s) for k, (o, s, _) in fields.items()},
                                   frozenset(k for k, (_, _, signed) in fields.items() if signed))


def parse_header_page(text: str) -> PageHeader:
    """The page layout ``events/header_page`` describes (``timestamp``, ``commit``, ``data``)."""
    fields = _fields(text)
    missing = [f for f in ("timestamp", "commit", "data") if f not in fields]
    if missing:
        raise FormatError(f"header_page has no {', '.join(missing)}")
    (ts_off, ts_size, _), (c_off, c_size, _), (d_off, _, _) = (fields[f] for f in ("timestamp", "commit", "data"))
    if ts_size not in (4, 8) or c_size not in (4, 8):
        raise FormatError(f"header_page: timestamp of {ts_size} bytes, commit of {c_size}: not a layout this reads")
    return PageHeader(ts_off, ts_size, c_off, c_size, d_off)


def parse_page(page: bytes, header: PageHeader = HEADER_64):
    """``(timestamp, record bytes)`` of each event in one ring-buffer page (``trace_pipe_raw``), and
    whether the kernel lost events before it."""
    if len(page) < header.data_offset:
        return [], False
    ts = int.from_bytes(page[header.ts_offset:header.ts_offset + header.ts_size], "little")
    commit = int.from_bytes(page[header.commit_offset:header.commit_offset + header.commit_size], "little")
    start = header.data_offset
    end = min(len(page), start + (commit & (_MISSED_STORED - 1)))
    missed = bool(commit & _MISSED_EVENTS)
    out = []
    off = start
    while off + 4 <= end:
        hdr, = struct.unpack_from("<I", page, off)
        type_len, delta = hdr & 0x1F, hdr >> 5
        off += 4
        if type_len == _TYPE_PADDING:
            if delta == 0:
                break  # the rest of the page is padding
            # a discarded event (a filter refused it after it was reserved): the writer's clock moved
            # past it, so the next delta counts from it and its own delta is counted, as the
            # kernel's own page check does (ring_buffer.c, rb_read_data_buffer/check_buffer): except
            # a delta of 1, which marks a discarded event whose delta was 0. Dropping every one (as
            # before) put the page's later events early by that delta: the likely cause of a 1.57 ms
            # error against the kernel's time, seen once.
            length, = struct.unpack_from("<I", page, off)
            if delta != 1:
                ts += delta
            off += length
        elif type_len == _TYPE_TIME_EXTEND:
            ext, = struct.unpack_from("<I", page, off)
            ts += (ext << 27) | delta
            off += 4
        elif type_len == _TYPE_TIME_STAMP:
            ext, = struct.unpack_from("<I", page, off)
            ts = (ext << 27) | delta | (ts & (0x1F << 59))
            off += 4
        elif type_len == 0:
            length, = struct.unpack_from("<I", page, off)  # counts itself
            if length < 4:
                break  # not a record: a torn page
            ts += delta
            out.append((ts, page[off + 4:off + length]))
            off += length
        else:
            ts += delta
            out.append((ts, page[off:off + 4 * type_len]))
            off += 4 * type_len
    return out, missed


def sockaddr(data: bytes, fmt: Format, field: str) -> tuple[str, int] | None:
    off, _ = fmt.fields[field]
    family, = struct.unpack_from("<H", data, off)
    if family != _MS_AF_INET:
        return None
    port, = struct.unpack_from(">H", data, off + 2)
    return socket.inet_ntoa(bytes(data[off + 4:off + 8])), port
