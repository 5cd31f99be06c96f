"""Impair the egress TCP packets of one port on one interface of this host (delay, jitter, loss,
duplication, reordering, corruption, rate: :class:`tcplab.impairment.Impairment`).

``Shaper(ifname, port).apply(Impairment(...))`` (or ``apply(delay_ms, loss_pct)``) tries backend 1 (tc: the seed's prio +
netem + u32 layout, see :mod:`probe.shaper.netem`) and, when the kernel has no
sch_prio/sch_netem, falls back to backend 2 (iptables NFQUEUE + a userspace delay line,
see :mod:`probe.shaper.nfqueue`). Either way only packets with the port as source or
destination are touched, so SSH, Ansible and ZeroMQ are never slowed.
Everything works in the network namespace of the calling process.

``Shaper(..., backend="nfqueue")`` skips netem even where the kernel has it (``"netem"`` refuses
the fallback): the same kernel filmed with each backend tells what the backend changes and what
the kernel does (docs/backends.md). The default, ``"auto"``, is the order above.

``sweep()`` is for probe start: it removes what a killed probe left behind.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Optional, Union

import structlog

from probe.shaper import iptables, netem
from probe.shaper.errors import NetemUnavailable, ShaperError
from probe.shaper.netem import NetemBackend
from tcplab.impairment import Impairment, ImpairmentError

if TYPE_CHECKING:
    from probe.shaper.nfqueue import NfqueueBackend

__all__ = ["Shaper", "ShaperError", "NetemUnavailable", "sweep"]

log = structlog.get_logger(__name__)


class Shaper:
    """Shaping of ``port`` on ``ifname``; nothing is touched until :meth:`apply`."""

    BACKENDS = ("auto", "netem", "nfqueue")

    def __init__(self, ifname: str, port: int, queue_num: Optional[int] = None, backend: str = "auto"):
        if not (isinstance(port, int) and 0 < port < 65536):
            raise ShaperError(f"bad port {port!r}")
        if backend not in self.BACKENDS:
            raise ShaperError(f"bad shaper backend {backend!r} (one of {', '.join(self.BACKENDS)})")
        self.choice = backend
        if not ifname or len(ifname) > 15:
            raise ShaperError(f"bad interface name {ifname!r}")
        self.ifname = ifname
        self.port = port
        self.queue_num = queue_num
        self._impl: Union[NetemBackend, "NfqueueBackend", None] = None

    @property
    def backend(self) -> Optional[str]:
        return None if self._impl is None else self._impl.name

    def apply(self, impairment: Impairment | int, loss_pct: float = 0) -> str:
        """Shape now, or update the running shaping in place. Returns the backend name.
        ``impairment``: an Impairment, or a delay in ms (with ``loss_pct``)."""
        try:
            imp = impairment if isinstance(impairment, Impairment) else Impairment(impairment, loss_pct=loss_pct)
        except ImpairmentError as e:
            raise ShaperError(f"bad impairment: {e}") from None
        try:
            socket.if_nametoindex(self.ifname)
        except OSError as e:
            raise ShaperError(f"no interface {self.ifname}") from e
        if self._impl is not None:
            self._impl.apply(imp)
            return self._impl.name
        impl: Union[NetemBackend, "NfqueueBackend", None] = None
        if self.choice == "nfqueue":
            reason = "the configuration asks for nfqueue"
        else:
            impl = NetemBackend(self.ifname, self.port)
            try:
                impl.apply(imp)
                reason = "kernel has prio and netem" if self.choice == "auto" else "the configuration asks for netem"
            except NetemUnavailable as e:
                if self.choice == "netem":
                    raise
                impl, reason = None, str(e)
        if impl is None:
            # imported here: fnfqueue is x86_64-only and kernels with netem never need it
            from probe.shaper.nfqueue import NfqueueBackend

            impl = NfqueueBackend(self.ifname, self.port, self.queue_num)
            impl.apply(imp)
        self._impl = impl
        log.info("shaper_backend_chosen", backend=impl.name, reason=reason, ifname=self.ifname, port=self.port)
        return impl.name

    def accepted(self) -> dict:
        """The impairment as the backend now holds it (netem: read back from the kernel; the delay
        line: its own parameters), or {} when nothing is shaped."""
        return {} if self._impl is None else self._impl.accepted()

    def clear(self) -> dict:
        """Remove everything this shaper made; safe to call any number of times. Returns the
        backend's counters read just before (``shaped_packets``: the lab port's packets that went
        through the delay; netem also ``all_packets``, everything the interface sent), or {}."""
        impl, self._impl = self._impl, None
        if impl is None:
            return {}
        try:
            counters = impl.counters()
        except Exception as e:  # counters are evidence, not a reason to leave the delay on
            log.warning("shaper_counters_unreadable", backend=impl.name, error=str(e))
            counters = {}
        impl.clear()
        return counters

    def __enter__(self) -> "Shaper":
        return self

    def __exit__(self, *exc) -> None:
        self.clear()


def sweep(ifname: str, port: int) -> list[str]:
    """Remove leftovers of a killed probe: our qdisc layout on ``ifname`` and every
    TCPLAB-SHAPE-* chain (whatever port it was made for). Returns what was removed."""
    removed = netem.sweep(ifname)
    chains = set(iptables.our_chains()) | {iptables.chain_name(port)}
    for chain in sorted(chains):
        if iptables.remove_chain(chain):
            removed.append(f"iptables {iptables.TABLE} chain {chain}")
    log.info("shaper_swept", ifname=ifname, port=port, removed=removed)
    return removed
