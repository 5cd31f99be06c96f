"""The userspace delay line of backend 2: hold NFQUEUE packets, accept each DELAY ms later.

Two daemon threads per line: the *reader* iterates fnfqueue's Connection (itself fed by
fnfqueue's own receive thread) and appends (arrival time, packet) to a FIFO; the
*releaser* sleeps on a condition until the head is due and gives it NF_ACCEPT. One delay
applies to all held packets at any moment, so deadlines (arrival + delay) are monotonic
and the FIFO keeps the order; a new delay re-times packets already held. Loss is decided
on arrival (NF_DROP at once), as netem does at enqueue.

fnfqueue was checked to allow this: a Packet can be kept and verdicted later from another
thread (``set_verdict`` only uses the socket and the packet's own buffer; the buffer goes
back to the pool under fnfqueue's lock). Packets are copied as metadata only (COPY_META),
so a held packet costs one small buffer. The kernel queue holds ``maxlen`` packets
(default 16384, i.e. ~5400 packets/s at 3 s); beyond that the kernel drops, as a full
netem queue would. When the socket closes, the kernel drops what is still queued;
``stop()`` therefore accepts every held packet before closing.
"""

from __future__ import annotations

import collections
import errno
import random
import socket
import threading
import time
from typing import Deque, Tuple

import fnfqueue
import structlog

from probe.shaper.errors import ShaperError

log = structlog.get_logger(__name__)

RCVBUF_BYTES = 8 << 20


class DelayLine:
    def __init__(self, queue_num: int, delay_ms: int, loss_pct: float = 0, maxlen: int = 16384):
        self.queue_num = queue_num
        self.maxlen = maxlen
        self._delay = delay_ms / 1000.0
        self._loss = float(loss_pct)
        self._held: Deque[Tuple[float, object]] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._conn: fnfqueue.Connection | None = None
        self._threads: list[threading.Thread] = []
        self.counts = collections.Counter()
        self.lateness: Deque[float] = collections.deque(maxlen=4096)  # seconds late at verdict

    def start(self) -> None:
        try:
            conn = fnfqueue.Connection(packet_size=4096)
        except OSError as e:
            raise ShaperError(f"nfqueue: cannot open netlink socket: {e.strerror}") from e
        try:
            queue = conn.bind(self.queue_num)
            queue.set_mode(0xFFFF, fnfqueue.COPY_META)
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
        log.info("delayline_started", queue_num=self.queue_num, delay_ms=self.delay_ms, loss_pct=self._loss)

    @property
    def delay_ms(self) -> int:
        return round(self._delay * 1000)

    @property
    def held(self) -> int:
        return len(self._held)

    def set(self, delay_ms: int, loss_pct: float = 0) -> None:
        with self._cond:
            self._delay, self._loss = delay_ms / 1000.0, float(loss_pct)
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
        log.info("delayline_stopped", queue_num=self.queue_num, **dict(self.counts))

    def _read(self) -> None:
        conn = self._conn
        while True:
            try:
                for packet in conn:
                    now = time.monotonic()
                    self.counts["queued"] += 1
                    if self._loss and random.random() * 100.0 < self._loss:
                        packet.drop()
                        self.counts["dropped"] += 1
                        continue
                    with self._cond:
                        held = not self._stopping
                        if held:
                            self._held.append((now, packet))
                            if len(self._held) == 1:
                                self._cond.notify()
                    if not held:
                        self._verdict(packet)
                return
            except fnfqueue.BufferOverflowException:
                self.counts["overflows"] += 1
                log.warning("delayline_overflow", queue_num=self.queue_num)
                conn.reset()
            except (OSError, fnfqueue.PacketInvalidException) as e:
                log.error("delayline_reader_failed", queue_num=self.queue_num, error=str(e))
                return

    def _release(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        due, self._held = list(self._held), collections.deque()
                        break
                    if self._held:
                        late = time.monotonic() - (self._held[0][0] + self._delay)
                        if late >= 0:
                            due = self._pop_due()
                            break
                        self._cond.wait(-late)
                    else:
                        self._cond.wait()
            for _, packet in due:
                self._verdict(packet)
            if self._stopping:
                return

    def _pop_due(self) -> list:
        now, due = time.monotonic(), []
        while self._held and now - (self._held[0][0] + self._delay) >= 0:
            queued_at, packet = self._held.popleft()
            self.lateness.append(now - queued_at - self._delay)
            due.append((queued_at, packet))
        return due

    def _verdict(self, packet) -> None:
        try:
            packet.accept()
            self.counts["accepted"] += 1
        except (OSError, fnfqueue.PacketInvalidException) as e:
            self.counts["verdict_errors"] += 1
            log.warning("delayline_verdict_failed", queue_num=self.queue_num, error=str(e))


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
