"""The userspace delay line of backend 2: hold NFQUEUE packets and give each its verdict when the
impairment says (:class:`tcplab.impairment.Impairment`, with netem's meaning of every parameter).

Two daemon threads per line: the *reader* iterates fnfqueue's Connection (itself fed by fnfqueue's
own receive thread), decides each packet's fate on arrival as netem does at enqueue (loss, then
duplication, corruption, reordering) and files it in a heap by the time it is due; the *releaser*
sleeps on a condition until the earliest is due and gives it NF_ACCEPT. Without jitter, reordering or
a rate every packet waits the same delay, so the heap keeps the order of arrival; with jitter a later
packet may be due first, as in netem. A rate serialises: a packet is due only when the one before it
has gone out at that rate (netem's ``rate``: ``max(tail, now + delay) + frame bits / rate``). A new
impairment re-times the packets already held (each keeps its own draw of the jitter).

- a duplicate is a copy of the packet's bytes sent through a raw socket with :data:`COPY_MARK`; it
  comes back through the queue, where the mark lets it pass at once (it was delayed already);
- a corrupted packet has one bit of its TCP segment flipped (the IP header is kept, so the peer's TCP
  sees it and drops it for its checksum; NFQUEUE hands a locally made packet to userspace with its
  checksum filled in) and is accepted with the new payload.

fnfqueue was checked to allow this: a Packet can be kept and verdicted later from another thread
(``set_verdict`` only uses the socket and the packet's own buffer; the buffer goes back to the pool
under fnfqueue's lock). Packets are copied as metadata only (COPY_META) unless the impairment needs
their bytes (duplicate, corrupt, rate). The kernel queue holds ``maxlen`` packets (default 16384,
i.e. ~5400 packets/s at 3 s); beyond that the kernel drops, as a full netem queue would. When the
socket closes, the kernel drops what is still queued; ``stop()`` therefore accepts every held packet
before closing.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import heapq
import random
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Deque, Optional

import fnfqueue
import structlog

from probe.shaper.errors import ShaperError
from tcplab.impairment import Impairment

log = structlog.get_logger(__name__)

RCVBUF_BYTES = 8 << 20
COPY_MARK = 0x7C1AB  # the fwmark of a duplicate the line sent itself
SO_MARK = 36
ETH_HEADER = 14      # netem's rate counts the frame; NFQUEUE hands us the IP packet


@dataclass(order=True)
class Held:
    due: float
    seq: int
    arrival: float = field(compare=False)
    draw: Optional[float] = field(compare=False)  # the jitter's draw in [-1, 1]; None: reordered, sent at once
    size: int = field(compare=False)              # the frame's bytes, for the rate
    packet: object = field(compare=False)         # an fnfqueue Packet, or the bytes of a duplicate
    mangled: bool = field(compare=False, default=False)


def needs_bytes(imp: Impairment) -> bool:
    return bool(imp.duplicate_pct or imp.corrupt_pct or imp.rate_kbit)


def flip_a_bit(data: bytes, rng: random.Random) -> bytes:
    """``data`` (an IPv4 packet) with one random bit of what follows its IP header flipped."""
    ihl = (data[0] & 0x0F) * 4 if data else 0
    if len(data) <= ihl:
        return data
    at = rng.randrange(ihl, len(data))
    return data[:at] + bytes([data[at] ^ (1 << rng.randrange(8))]) + data[at + 1:]


class DelayLine:
    def __init__(self, queue_num: int, imp: Impairment | int = 0, loss_pct: float = 0, maxlen: int = 16384,
                 rng: random.Random | None = None):
        self.queue_num = queue_num
        self.maxlen = maxlen
        self._imp = imp if isinstance(imp, Impairment) else Impairment(imp, loss_pct=loss_pct)
        self._held: list[Held] = []
        self._seq = 0
        self._tail = 0.0  # when the rate's last scheduled packet has gone out
        self._cond = threading.Condition()
        self._stopping = False
        self._conn: fnfqueue.Connection | None = None
        self._queue = None
        self._raw: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._rng = rng or random.Random()
        self.counts = collections.Counter()
        self.lateness: Deque[float] = collections.deque(maxlen=4096)  # seconds late at verdict

    def start(self) -> None:
        try:
            conn = fnfqueue.Connection(packet_size=4096)
        except OSError as e:
            raise ShaperError(f"nfqueue: cannot open netlink socket: {e.strerror}") from e
        try:
            queue = conn.bind(self.queue_num)
            self._queue = queue
            self._set_mode()
            queue.set_maxlen(self.maxlen)
            _grow_rcvbuf(conn)
        except OSError as e:
            conn.close()
            why = "queue in use" if e.errno == errno.EBUSY else e.strerror
            raise ShaperError(f"nfqueue: cannot bind queue {self.queue_num}: {why}") from e
        self._conn = conn
        for name, target in (("reader", self._read), ("releaser", self._release)):
            t = threading.Thread(target=target, name=f"tcplab-delayline-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("delayline_started", queue_num=self.queue_num, **self._imp.args())

    @property
    def delay_ms(self) -> int:
        return self._imp.delay_ms

    @property
    def impairment(self) -> Impairment:
        return self._imp

    @property
    def held(self) -> int:
        return len(self._held)

    def accepted(self) -> dict:
        """The line's parameters now (what it does is exactly what it was given)."""
        return asdict(self._imp)

    def set(self, imp: Impairment | int, loss_pct: float = 0) -> None:
        imp = imp if isinstance(imp, Impairment) else Impairment(imp, loss_pct=loss_pct)
        with self._cond:
            try:  # the copy mode first: an impairment that needs the bytes never runs without them
                self._set_mode(imp)
            except (OSError, fnfqueue.BufferOverflowException) as e:
                raise ShaperError(f"nfqueue: cannot set the copy mode of queue {self.queue_num}: {e}") from e
            self._imp = imp
            self._tail = 0.0
            held = sorted(self._held, key=lambda h: (h.arrival, h.seq))
            for h in held:
                h.due = self._due(h.arrival, h.draw, h.size)
            heapq.heapify(held)
            self._held = held
            self._cond.notify()

    def stop(self, timeout: float = 5.0) -> None:
        """Accept every held packet now, stop both threads, close the queue socket."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        releaser = self._threads[1] if len(self._threads) > 1 else None
        if releaser is not None:
            releaser.join(timeout)
        if self._conn is not None:
            self._conn.close()  # ends the reader's iteration
        for t in self._threads:
            t.join(timeout)
        self._threads = []
        self._conn = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        log.info("delayline_stopped", queue_num=self.queue_num, **dict(self.counts))

    def _set_mode(self, imp: Impairment | None = None) -> None:
        if self._queue is not None:
            wanted = needs_bytes(imp or self._imp)
            self._queue.set_mode(0xFFFF, fnfqueue.COPY_PACKET if wanted else fnfqueue.COPY_META)

    def _due(self, arrival: float, draw: Optional[float], size: int) -> float:
        """When a packet that arrived at ``arrival`` leaves (under the lock: it moves the rate's tail)."""
        imp = self._imp
        if draw is None:
            return arrival
        due = arrival + max(0.0, imp.delay_ms + draw * imp.jitter_ms) / 1000.0
        if imp.rate_kbit:
            due = max(self._tail, due) + (size + ETH_HEADER) * 8 / (imp.rate_kbit * 1000.0)
            self._tail = due
        return due

    def _hold(self, now: float, packet: object, size: int, mangled: bool = False) -> bool:
        """File a packet by its due time; False when the line is stopping (the caller lets it go)."""
        imp, rng = self._imp, self._rng
        if imp.reorder_pct and rng.random() * 100.0 < imp.reorder_pct:
            draw = None
            self.counts["reordered"] += 1
        else:
            draw = rng.uniform(-1.0, 1.0) if imp.jitter_ms else 0.0
        with self._cond:
            if self._stopping:
                return False
            self._seq += 1
            h = Held(self._due(now, draw, size), self._seq, now, draw, size, packet, mangled)
            heapq.heappush(self._held, h)
            if self._held[0] is h:
                self._cond.notify()
        return True

    def _arrive(self, packet) -> None:
        """One packet from the queue: netem's order of decisions (loss, duplicate, corrupt, delay)."""
        now = time.monotonic()
        try:
            if packet.mark == COPY_MARK:  # our own duplicate, back from the raw socket: delayed already
                self.counts["copies_passed"] += 1
                self._verdict(packet)
                return
        except fnfqueue.NoSuchAttributeException:
            pass
        imp, rng = self._imp, self._rng
        self.counts["queued"] += 1
        # netem_enqueue's order: a duplicate is decided first, and a loss takes one copy away
        copies = 1 + bool(imp.duplicate_pct and rng.random() * 100.0 < imp.duplicate_pct) \
            - bool(imp.loss_pct and rng.random() * 100.0 < imp.loss_pct)
        if copies == 0:
            packet.drop()
            self.counts["dropped"] += 1
            return
        data, mangled = None, False
        if needs_bytes(imp):
            try:
                data = packet.payload
            except fnfqueue.NoSuchAttributeException:  # queued before the mode changed
                data = None
        if data is not None and copies == 2:
            self.counts["duplicated"] += 1
            if not (imp.loss_pct and rng.random() * 100.0 < imp.loss_pct):  # netem: the copy is enqueued anew
                self._hold(now, bytes(data), len(data))
        if data is not None and imp.corrupt_pct and rng.random() * 100.0 < imp.corrupt_pct:
            packet.payload = flip_a_bit(data, rng)
            mangled = True
            self.counts["corrupted"] += 1
        if not self._hold(now, packet, len(data) if data is not None else 0, mangled):
            self._verdict(packet)

    def _read(self) -> None:
        conn = self._conn
        while True:
            try:
                for packet in conn:
                    try:
                        self._arrive(packet)
                    except Exception as e:  # one packet's trouble is not the line's: let it pass
                        self.counts["arrival_errors"] += 1
                        log.warning("delayline_arrival_failed", queue_num=self.queue_num, error=repr(e))
                        self._verdict(packet)
                return
            except fnfqueue.BufferOverflowException:
                self.counts["overflows"] += 1
                log.warning("delayline_overflow", queue_num=self.queue_num)
                conn.reset()
            except Exception as e:  # the reader is gone: close the queue, so --queue-bypass lets the port through
                log.error("delayline_reader_failed", queue_num=self.queue_num, error=repr(e))
                if not self._stopping:
                    self.counts["reader_failed"] += 1
                    with contextlib.suppress(Exception):
                        conn.close()
                return

    def _release(self) -> None:
        while True:
            final = False
            with self._cond:
                while True:
                    if self._stopping:  # decided under the lock: what is held now is the last of it
                        due, self._held, final = sorted(self._held), [], True
                        break
                    if self._held:
                        late = time.monotonic() - self._held[0].due
                        if late >= 0:
                            due = self._pop_due()
                            break
                        self._cond.wait(-late)
                    else:
                        self._cond.wait()
            for h in due:
                self._verdict(h.packet, h.mangled)
            if final:
                return

    def _pop_due(self) -> list[Held]:
        now, due = time.monotonic(), []
        while self._held and now >= self._held[0].due:
            h = heapq.heappop(self._held)
            self.lateness.append(now - h.due)
            due.append(h)
        return due

    def _verdict(self, packet, mangled: bool = False) -> None:
        try:
            if isinstance(packet, bytes):
                self._send_copy(packet)
                self.counts["copies_sent"] += 1
                return
            if mangled:
                packet.mangle()
            else:
                packet.accept()
            self.counts["accepted"] += 1
        except (OSError, fnfqueue.PacketInvalidException) as e:
            self.counts["verdict_errors"] += 1
            log.warning("delayline_verdict_failed", queue_num=self.queue_num, error=str(e))

    def _send_copy(self, data: bytes) -> None:
        """A duplicate out through a raw socket (IP_HDRINCL), marked so the queue lets it pass."""
        if self._raw is None:
            raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
            raw.setsockopt(socket.SOL_SOCKET, SO_MARK, COPY_MARK)
            self._raw = raw
        self._raw.sendto(data, (socket.inet_ntoa(data[16:20]), 0))


def _grow_rcvbuf(conn: fnfqueue.Connection) -> None:
    """A burst of thousands of packets must not overflow the netlink socket."""
    sock = socket.socket(fileno=conn._conn.fd)  # same socket; detach so it stays open
    try:
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF_BYTES)  # SO_RCVBUFFORCE (root)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
    finally:
        sock.detach()
