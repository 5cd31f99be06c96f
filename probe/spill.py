"""The transport's spill: event batches beyond its in-memory bound, on disk, read back in order.

The transport keeps the batches the controller has not acknowledged in memory up to a bound in
bytes (probe/transport.py). Beyond it, new batches (numbered, not yet sent) are appended here, and
read back, oldest first, as acknowledgements free room in memory: a controller that is unreachable
for a while costs disk, not memory. The files:

- ``<dir>/spill-NNNNNN.bin``, append-only segments of up to :data:`SEGMENT_BYTES`; each record is
  a 16-byte header (first event number u64, event count u32, frame length u32, little-endian) and
  the frame's bytes, exactly what goes on the wire.
- A segment is removed once every batch in it was read back (the transport holds them from then on,
  until they are acknowledged); every segment is removed by :meth:`Spill.clear` (the probe's exit).
  Segments a killed probe left are removed when a spill opens in the directory: they belonged to
  another session, whose numbers the controller will never see again.

The directory is created 0700 (events can carry console text); nothing is followed through a symlink
(``O_NOFOLLOW`` on every file opened for writing). A write that fails (a full disk) raises OSError
with nothing of the batch left on disk: the outbox then takes the spill for full.
"""

from __future__ import annotations

import errno
import os
import struct
from collections import deque
from pathlib import Path

import structlog

from tcplab.files import private_dir

log = structlog.get_logger("probe.spill")

SEGMENT_BYTES = 4 << 20
HEADER = struct.Struct("<QII")  # first event number, event count, frame length
PATTERN = "spill-*.bin"


class Spill:
    def __init__(self, directory: Path | str, max_bytes: int):
        self.dir = Path(directory)
        self.max_bytes = max_bytes
        self.bytes = 0  # on disk and not read back yet (headers included)
        self.index: deque[tuple[int, int]] = deque()  # (first, count) of each batch not read back, in order
        self._segments: deque[Path] = deque()  # oldest first; the last one is written
        self._writer: int | None = None  # fd of the last segment
        self._written = 0                # bytes in the last segment
        self._reader = None              # file of the first segment, at the next batch
        self._serial = 0
        self._opened = False

    def __len__(self) -> int:
        return len(self.index)

    def fits(self, size: int) -> bool:
        return self.bytes + HEADER.size + size <= self.max_bytes

    @property
    def events(self) -> int:
        return sum(count for _, count in self.index)

    def append(self, first: int, count: int, frame: bytes) -> None:
        """Append one batch (after every batch appended before it)."""
        self._open()
        if self._writer is None or self._written >= SEGMENT_BYTES:
            self._new_segment()
        record = HEADER.pack(first, count, len(frame)) + frame
        written = os.write(self._writer, record)  # one write: a batch is whole on disk or not there
        if written != len(record):  # a full disk: what part of it went is taken back
            os.ftruncate(self._writer, self._written)
            raise OSError(errno.ENOSPC, f"short write to {self._segments[-1]} ({written} of {len(record)} bytes)")
        self._written += len(record)
        self.bytes += len(record)
        self.index.append((first, count))

    def pop(self) -> tuple[int, int, bytes] | None:
        """The oldest batch not read back (first, count, frame), or None when the spill is empty."""
        if not self.index:
            return None
        if self._reader is None:
            self._reader = open(self._segments[0], "rb")
        head = self._reader.read(HEADER.size)
        if len(head) < HEADER.size:  # this segment is read whole: the next one
            self._finish_segment()
            return self.pop()
        first, count, length = HEADER.unpack(head)
        frame = self._reader.read(length)
        self.index.popleft()
        self.bytes -= HEADER.size + length
        if not self.index:  # everything read back: no file is left behind
            self.clear()
        elif len(self._segments) > 1 and self._reader.tell() >= os.fstat(self._reader.fileno()).st_size:
            self._finish_segment()  # a segment no longer written, read whole: removed now
        return first, count, frame

    def clear(self) -> None:
        """Remove every segment (what was not read back is gone)."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._writer is not None:
            os.close(self._writer)
            self._writer = None
        while self._segments:
            self._segments.popleft().unlink(missing_ok=True)
        self.index.clear()
        self.bytes = self._written = 0

    # --- files ----------------------------------------------------------------------------------
    def _open(self) -> None:
        if self._opened:
            return
        private_dir(self.dir, "spill directory")  # an OSError: the spill counts as full
        stale = sorted(self.dir.glob(PATTERN))
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            log.info("spill_stale_removed", dir=str(self.dir), files=len(stale))
        self._opened = True

    def _new_segment(self) -> None:
        if self._writer is not None:
            os.close(self._writer)
        self._serial += 1
        path = self.dir / f"spill-{self._serial:06d}.bin"
        self._writer = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        self._written = 0
        self._segments.append(path)

    def _finish_segment(self) -> None:
        self._reader.close()
        self._reader = None
        done = self._segments.popleft()
        if not self._segments:  # it was the one being written: the next append starts a new one
            os.close(self._writer)
            self._writer = None
        done.unlink(missing_ok=True)
