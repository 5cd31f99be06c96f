"""The probe's outgoing events: numbered into batches, held until acknowledged, bounded by bytes.

No socket here (probe/transport.py sends what this holds); one :class:`Outbox` per transport.

- :meth:`Outbox.add` packs each event once (:func:`tcplab.wire.envelope.pack_event`) and cuts the
  events into batches of at most :data:`tcplab.wire.MAX_BATCH` events and ``batch_bytes`` bytes;
  each batch takes its range of the session's gapless event numbers (``Session.batch_packed``). An
  event that cannot be packed or is bigger than a frame takes no number (so it leaves no gap): it
  is counted (``refused``) and logged.
- The *window*: batches in memory, in order, up to ``max_bytes`` of frames. These are the ones sent
  (and sent again after a stall): what is in flight is bounded, whatever the controller does.
- Beyond the window, batches go to the :class:`~probe.spill.Spill` on disk (counted, ``spilled``)
  and come back into the window, in order, as acknowledgements free room.
- When the spill is full too, the *oldest* batches are dropped (counted, ``dropped``): the
  heartbeat's ``oldest`` then tells the controller to stop waiting for them, and it writes a
  ``loss`` record. Dropping the newest instead would leave a hole in the middle of the numbers,
  which a cumulative acknowledgement can never pass.
- :attr:`Outbox.queue` is what is to be sent, in order: new batches, and the window's batches again
  when the transport decides they are overdue (:meth:`Outbox.overdue`) or a welcome asks for them.
  Only batches in the window are ever queued, so the resends are bounded by the window too.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path

import structlog

from probe.spill import Spill
from tcplab import wire
from tcplab.wire.envelope import pack_event

log = structlog.get_logger("probe.outbox")

ENVELOPE_BYTES = 256  # the envelope around a batch's events, at most (host name, numbers, keys)
DROP_LOG_S = 1.0      # events_dropped is logged at most this often


class Batch:
    __slots__ = ("first", "count", "frame", "sent", "queued", "gone")

    def __init__(self, first: int, count: int, frame: bytes):
        self.first, self.count, self.frame = first, count, frame
        self.sent: float | None = None  # when it last went to the socket
        self.queued = False             # in Outbox.queue
        self.gone = False               # acknowledged or dropped: not to be sent

    @property
    def last(self) -> int:
        return self.first + self.count - 1


class Outbox:
    def __init__(self, session: wire.Session, spill_dir: Path | str, *, max_bytes: int, max_spill: int,
                 batch_bytes: int):
        self.session = session
        self.max_bytes = max_bytes
        self.batch_bytes = batch_bytes
        self.window: deque[Batch] = deque()
        self.window_bytes = 0
        self.spill = Spill(spill_dir, max_spill)
        self.queue: deque[Batch] = deque()
        self.dropped = 0  # events dropped at the bounds (numbered: the heartbeat's oldest moves past them)
        self.spilled = 0  # events that went to disk
        self.refused = 0  # events that could not be packed or were bigger than a frame (no number)
        self._dropped_logged = -DROP_LOG_S

    # --- in ---------------------------------------------------------------------------------------
    def add(self, bodies: list[dict]) -> int:
        """Number and hold ``bodies`` in order; returns how many batches they made."""
        made, packed, size = 0, [], 0
        for body in bodies:
            item = self._pack(body)
            if item is None:
                continue
            if packed and (len(packed) == wire.MAX_BATCH or size + len(item) > self.batch_bytes):
                made += self._batch(packed)
                packed, size = [], 0
            packed.append(item)
            size += len(item)
        if packed:
            made += self._batch(packed)
        return made

    def _batch(self, packed: list[bytes]) -> int:
        try:
            first, frame = self.session.batch_packed(packed)
        except wire.ProtocolError as e:  # not expected (each event fits a frame): counted, and no number taken
            log.error("events_refused", events=len(packed), reason=str(e))
            self.refused += len(packed)
            return 0
        self._hold(first, frame, len(packed))
        return 1

    def _pack(self, body: dict) -> bytes | None:
        try:
            item = pack_event(body)
        except (TypeError, ValueError, OverflowError) as e:
            log.error("event_refused", kind=str(body.get("kind"))[:32], reason=f"{e.__class__.__name__}: {e}")
            self.refused += 1
            return None
        if len(item) > wire.MAX_FRAME - ENVELOPE_BYTES:
            log.error("event_refused", kind=str(body.get("kind"))[:32], reason="bigger than a frame", bytes=len(item))
            self.refused += 1
            return None
        return item

    def _hold(self, first: int, frame: bytes, count: int) -> None:
        batch = Batch(first, count, frame)
        while True:
            if not self.spill and self._room(len(frame)):
                self._to_window(batch)
                return
            if self.spill.fits(len(frame)):
                try:
                    self.spill.append(first, count, frame)
                except OSError as e:  # a full or failing disk: the spill takes no more, the oldest go
                    log.error("spill_failed", dir=str(self.spill.dir), error=str(e), spill_bytes=self.spill.bytes)
                    self.spill.max_bytes = self.spill.bytes
                    continue
                self.spilled += count
                return
            if not self.window and not self.spill:  # nothing left to wait for: the window takes it
                self._to_window(batch)
                return
            self._drop_oldest()  # both bounds reached: the oldest go, until the new batch has a place

    def _room(self, size: int) -> bool:
        return not self.window or self.window_bytes + size <= self.max_bytes

    def _to_window(self, batch: Batch) -> None:
        self.window.append(batch)
        self.window_bytes += len(batch.frame)
        batch.queued = True
        self.queue.append(batch)

    def _drop_oldest(self) -> None:
        if self.window:
            batch = self.window.popleft()
            self.window_bytes -= len(batch.frame)
            batch.gone = True
            first, count = batch.first, batch.count
            self._refill()
        else:
            first, count, _ = self.spill.pop()
        self.dropped += count
        now = time.monotonic()
        if now - self._dropped_logged >= DROP_LOG_S:  # a long overflow is a line a second, not one a batch
            self._dropped_logged = now
            log.warning("events_dropped", upto=first + count - 1, dropped=self.dropped,
                        reason="unacknowledged in memory and spill full")

    def _refill(self) -> None:
        """Batches back from the spill, in order, while the window has room."""
        while self.spill and self.window_bytes < self.max_bytes:  # may pass the bound by one batch
            first, count, frame = self.spill.pop()
            self._to_window(Batch(first, count, frame))

    # --- acknowledgements and resends -------------------------------------------------------------
    def acknowledge(self, upto: int) -> bool:
        """Every event up to ``upto`` is held by the controller: True if that freed a batch."""
        moved = False
        while self.window and self.window[0].last <= upto:
            batch = self.window.popleft()
            self.window_bytes -= len(batch.frame)
            batch.gone = True
            moved = True
        if moved:
            self._refill()
        return moved

    def overdue(self, now: float, older_than: float) -> int:
        """Queue again the window's batches last sent ``older_than`` seconds ago or more (and those
        never sent); returns how many events that is."""
        events = 0
        for batch in self.window:
            if not batch.queued and (batch.sent is None or now - batch.sent >= older_than):
                batch.queued = True
                self.queue.append(batch)
                events += batch.count
        return events

    def next(self) -> Batch | None:
        """The next batch to send (taken off the queue by :meth:`sent`), None when none is due."""
        while self.queue and self.queue[0].gone:
            self.queue.popleft().queued = False
        return self.queue[0] if self.queue else None

    def sent(self, batch: Batch, now: float) -> None:
        """``batch``, which :meth:`next` gave, went to the socket: off the queue unless it is off
        already (a second sender took it meanwhile: an empty queue's popleft ended the probe's
        receiver, found by bench.fuzz_wire after 400,000 frames)."""
        if self.queue and self.queue[0] is batch:
            self.queue.popleft()
        batch.queued = False
        batch.sent = now

    # --- what is held -----------------------------------------------------------------------------
    @property
    def oldest(self) -> int:
        """The number of the oldest event held: every one below it was acknowledged or dropped."""
        if self.window:
            return self.window[0].first
        if self.spill:
            return self.spill.index[0][0]
        return self.session.event_seq + 1

    @property
    def held(self) -> int:
        """Events held (in memory and spilled), not acknowledged."""
        return sum(b.count for b in self.window) + self.spill.events

    def numbers(self) -> list[int]:
        """The number of every event held, in order."""
        spans = [(b.first, b.count) for b in self.window] + list(self.spill.index)
        return [seq for first, count in spans for seq in range(first, first + count)]

    def __bool__(self) -> bool:
        return bool(self.window) or bool(self.spill)

    def clear(self) -> None:
        """At exit: the spill's files removed."""
        self.spill.clear()
