"""The raw format of tracefs: an event's ``format`` file and the ring-buffer pages of ``trace_pipe_raw``.

Pure decoding, no I/O (split out of :mod:`probe.kstates`, which runs the instance). A page is a
header (timestamp, commit) then 32-bit event headers with time deltas and extends; an event's fields
sit at the offsets its ``format`` file gives.
"""

from __future__ import annotations

import re
import socket
import struct
from dataclasses import dataclass

_MS_AF_INET = socket.AF_INET
_TYPE_PADDING, _TYPE_TIME_EXTEND, _TYPE_TIME_STAMP = 29, 30, 31
_COMMIT_MASK = (1 << 27) - 1
_MISSED_EVENTS = 1 << 31


class FormatError(ValueError):
    """A ``format`` file this decoder cannot read."""


@dataclass(frozen=True)
class Format:
    name: str
    fields: dict  # name -> (offset, size)

    def u(self, data: bytes, field: str) -> int:
        off, size = self.fields[field]
        return int.from_bytes(data[off:off + size], "little")

    def ip(self, data: bytes, field: str) -> str:
        off, _ = self.fields[field]
        return socket.inet_ntoa(bytes(data[off:off + 4]))


def parse_format(text: str, name: str) -> tuple[int, Format]:
    """The event id and field offsets of an event's tracefs ``format`` file."""
    m = re.search(r"^ID:\s*(\d+)", text, re.M)
    if not m:
        raise FormatError(f"no ID in the format of {name}")
    fields = {}
    for fm in re.finditer(r"field:([^;]*?)\s*([A-Za-z_][A-Za-z0-9_]*)(\[\d+\])?;\s*offset:(\d+);\s*size:(\d+);", text):
        fields[fm.group(2)] = (int(fm.group(4)), int(fm.group(5)))
    return int(m.group(1)), Format(name, fields)


def parse_page(page: bytes):
    """``(timestamp, record bytes)`` of each event in one ring-buffer page (``trace_pipe_raw``), and
    whether the kernel lost events before it."""
    ts, commit = struct.unpack_from("<QQ", page, 0)
    end = 16 + (commit & _COMMIT_MASK)
    missed = bool(commit & _MISSED_EVENTS)
    out = []
    off = 16
    while off + 4 <= end:
        hdr, = struct.unpack_from("<I", page, off)
        type_len, delta = hdr & 0x1F, hdr >> 5
        off += 4
        if type_len == _TYPE_PADDING:
            if delta == 0:
                break  # the rest of the page is padding
            length, = struct.unpack_from("<I", page, off)
            off += length  # a discarded event: its delta is not counted
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
