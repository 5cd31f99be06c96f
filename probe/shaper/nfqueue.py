"""Backend 2, for kernels without netem: an iptables NFQUEUE rule plus a userspace delay line.

The queue is bound before the rule goes in and the rule comes out before held packets are
released, so no packet of the port is ever queued with nobody reading (and with
``--queue-bypass`` a dead reader means "unshaped", never "blackholed").
The queue number defaults to the port itself: one queue per shaped port, easy to read in
``iptables-save``.
"""

from __future__ import annotations

import structlog

from probe.shaper.delayline import DelayLine
from probe.shaper.iptables import QueueRule
from tcplab.impairment import Impairment

log = structlog.get_logger(__name__)


class NfqueueBackend:
    name = "nfqueue"

    def __init__(self, ifname: str, port: int, queue_num: int | None = None):
        self.ifname = ifname
        self.port = port
        self.queue_num = port if queue_num is None else queue_num
        self.rule = QueueRule(ifname, port, self.queue_num)
        self.line: DelayLine | None = None

    def apply(self, imp: Impairment) -> None:
        if self.line is None:
            line = DelayLine(self.queue_num, imp)
            line.start()
            try:
                self.rule.ensure()
            except BaseException:
                self.rule.remove()
                line.stop()
                raise
            self.line = line
        else:
            self.line.set(imp)
            self.rule.ensure()
        log.info("nfqueue_applied", ifname=self.ifname, port=self.port, queue_num=self.queue_num, **imp.args())

    def accepted(self) -> dict:
        return self.line.accepted() if self.line is not None else {}

    def counters(self) -> dict:
        """What the delay line did so far: packets queued to it (only the lab port's reach it)."""
        counts = dict(self.line.counts) if self.line is not None else {}
        return {"shaped_packets": counts.get("queued", 0), "shaped_drops": counts.get("dropped", 0),
                **{k: v for k, v in counts.items() if k not in ("queued", "dropped")}}

    def clear(self) -> bool:
        removed = self.rule.remove()
        if self.line is not None:
            self.line.stop()
            self.line = None
            removed = True
        if removed:
            log.info("nfqueue_cleared", ifname=self.ifname, port=self.port)
        return removed
