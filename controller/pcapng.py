"""pcapng files with nanosecond timestamps and one interface per lab host.

Written by hand (Section Header, Interface Description and Enhanced Packet Blocks, as the pcapng
specification, draft-ietf-opsawg-pcapng, lays them out), because scapy 2.8's ``RawPcapNgWriter``
stamps packets in microseconds from a float and has no ``if_tsresol`` option: it would lose the
nanoseconds the trace is made of.

- ``PcapngWriter(path, interfaces)``: a file with one interface per name (``if_name``,
  ``if_tsresol`` = 9, i.e. nanoseconds); ``write(iface_index, frame, ts_ns, direction)`` appends an
  Enhanced Packet Block, with ``epb_flags`` inbound/outbound when the direction is known.
- ``PcapngFiles(run_dir)``: ``<host>.pcapng`` per host, written as packets arrive (one interface,
  named after the host).
- ``write_merged(path, hosts, packets)``: ``merged.pcapng``, every host's packets in the order given.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Iterable, Sequence

from tcplab.files import replacing

LINKTYPE_ETHERNET = 1
SNAPLEN = 262144
_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_OPT_END, _OPT_COMMENT = 0, 1
_IF_NAME, _IF_TSRESOL = 2, 9
_EPB_FLAGS = 2
_DIRECTION = {"in": 0b01, "out": 0b10}  # epb_flags bits 0-1


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + b"\0" * (-len(value) % 4)


def _block(kind: int, body: bytes, options: bytes = b"") -> bytes:
    if options:
        options += struct.pack("<HH", _OPT_END, 0)
    body = body + b"\0" * (-len(body) % 4) + options
    length = 12 + len(body)
    return struct.pack("<II", kind, length) + body + struct.pack("<I", length)


_EPB_HEAD = struct.Struct("<IIIIIII")  # block type and length, interface, timestamp high and low, lengths
_U32 = struct.Struct("<I")
_PAD = (b"", b"\0", b"\0\0", b"\0\0\0")
_EPB_OPTIONS = {d: _option(_EPB_FLAGS, struct.pack("<I", bits)) + struct.pack("<HH", _OPT_END, 0)
                for d, bits in _DIRECTION.items()}


class PcapngWriter:
    def __init__(self, path: Path | str, interfaces: Sequence[str], linktype: int = LINKTYPE_ETHERNET,
                 comment: str | None = None):
        self.path = Path(path)
        self._f = open(self.path, "wb")
        shb_opts = _option(_OPT_COMMENT, comment.encode()) if comment else b""
        self._f.write(_block(_SHB, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1), shb_opts))
        for name in interfaces:
            opts = _option(_IF_NAME, name.encode()) + _option(_IF_TSRESOL, b"\x09")
            self._f.write(_block(_IDB, struct.pack("<HHI", linktype, 0, SNAPLEN), opts))
        self.interfaces = tuple(interfaces)
        self._f.flush()

    def write(self, iface: int, frame: bytes, ts_ns: int, direction: str | None = None) -> None:
        """One Enhanced Packet Block (what :func:`_block` would make of it, in one pack: this is the
        controller's event path, once per packet)."""
        if not 0 <= iface < len(self.interfaces):
            raise ValueError(f"no interface {iface} in {self.path.name}")
        ts = max(0, int(ts_ns))
        tail = _PAD[-len(frame) % 4] + _EPB_OPTIONS.get(direction, b"")
        length = _EPB_HEAD.size + len(frame) + len(tail) + 4
        self._f.write(_EPB_HEAD.pack(_EPB, length, iface, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame))
                      + frame + tail + _U32.pack(length))

    def flush(self) -> None:
        """What was written, to the file (the run flushes once per batch of events, not per packet)."""
        self._f.flush()

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()

    def __enter__(self) -> "PcapngWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PcapngFiles:
    """``<host>.pcapng`` per host (interface named after the host), written as packets arrive."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._writers: dict[str, PcapngWriter] = {}

    def _writer(self, host: str) -> PcapngWriter:
        w = self._writers.get(host)
        if w is None:
            w = self._writers[host] = PcapngWriter(self.run_dir / f"{host}.pcapng", [host])
        return w

    def write(self, host: str, raw: bytes, wall_ns: int, direction: str | None = None) -> None:
        self._writer(host).write(0, raw, wall_ns, direction)

    def ensure(self, hosts: Iterable[str]) -> None:
        for h in hosts:
            self._writer(h)

    def flush(self) -> None:
        for w in self._writers.values():
            w.flush()

    def close(self) -> None:
        for w in self._writers.values():
            w.close()


def write_merged(path: Path, hosts: Sequence[str], packets: Iterable[tuple[str, bytes, int, str | None]]) -> int:
    """Write ``(host, frame, ts_ns, direction)`` in the order given, one interface per host.

    Written to a temporary file and renamed into place. Returns the number of packets written.
    """
    path = Path(path)
    index = {h: i for i, h in enumerate(hosts)}
    n = 0
    with replacing(path) as tmp, \
            PcapngWriter(tmp, list(hosts), comment="tcplab: every host's packets on the controller's clock") as w:
        for host, frame, ts_ns, direction in packets:
            w.write(index[host], frame, ts_ns, direction)
            n += 1
    return n
