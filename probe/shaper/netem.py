"""Backend 1: the seed's tc layout through pyroute2 (netlink), applied like ``ensure()``.

Layout on the interface (what the seed's script builds with ``tc``)::

    root prio 1:0, priomap all 0  -> every priority goes to band 0 (class 1:1)
    netem 20:0 on parent 1:2      -> the impairment (tcplab.impairment: delay, jitter, loss, ...)
    u32 filters on parent 1:0, protocol ip, ``ip sport PORT`` / ``ip dport PORT`` -> flowid 1:2

Only packets of the lab port reach 1:2, so SSH, Ansible and ZeroMQ keep band 0.

The filters get fixed handles 800::800 (sport) and 800::801 (dport) at pref 1 so that
``replace-filter`` is idempotent (a replace without a handle would add a second node).
pyroute2 normalises a u32 key to its first masked byte: ``ip dport P`` is sent as
``P<<16/0xffff0000 at 22`` where tc sends ``P/0x0000ffff at 20`` -- the same match.

:func:`layout` is the pure description (no kernel); :class:`NetemBackend` executes it:
add -> EEXIST becomes change, delete -> ENOENT is success, then the kernel state is read
back. A kernel without sch_prio/sch_netem answers ENOENT "Specified qdisc kind is
unknown": that raises :class:`NetemUnavailable` after everything half-made is removed.
"""

from __future__ import annotations

import errno
import struct
from typing import Any, NamedTuple

import structlog
from pyroute2 import IPRoute, protocols
from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_NEWQDISC, TC_H_ROOT
from pyroute2.netlink.rtnl.tcmsg import sched_netem, tcmsg
from pyroute2.netlink.rtnl.tcmsg.common import percent2u32, tick_in_usec

from probe.shaper.errors import NetemUnavailable, ShaperError
from tcplab.impairment import Impairment

log = structlog.get_logger(__name__)

PRIO_HANDLE = 0x10000  # 1:0
BAND_CLASS = 0x10002  # 1:2
NETEM_HANDLE = 0x200000  # 20:0
FILTER_PREF = 1
SPORT_FILTER = 0x80000800  # 800::800
DPORT_FILTER = 0x80000801  # 800::801
SOL_NETLINK = 270
NETLINK_EXT_ACK = 11


class TcRequest(NamedTuple):
    command: str
    kind: str
    args: dict


def port_key(port: int, field: str) -> str:
    """The u32 key of ``match ip sport|dport PORT 0xffff`` (IP header without options)."""
    offset = {"sport": 20, "dport": 22}[field]
    return f"0x{port << 16:08x}/0xffff0000+{offset}"


def layout(port: int, imp: Impairment | int = 0) -> list[TcRequest]:
    """The requests that build the seed's layout, in order (the netem one: :func:`netem_message`)."""
    imp = imp if isinstance(imp, Impairment) else Impairment(delay_ms=imp)
    filt = dict(parent=PRIO_HANDLE, prio=FILTER_PREF, protocol=protocols.ETH_P_IP, target=BAND_CLASS)
    return [
        TcRequest("add", "prio", dict(handle=PRIO_HANDLE, parent=TC_H_ROOT, bands=3, priomap=[0] * 16)),
        TcRequest("add", "netem", {"impairment": imp}),
        TcRequest("replace-filter", "u32", dict(filt, handle=SPORT_FILTER, keys=[port_key(port, "sport")])),
        TcRequest("replace-filter", "u32", dict(filt, handle=DPORT_FILTER, keys=[port_key(port, "dport")])),
    ]


def netem_options(imp: Impairment) -> dict:
    """netem's TCA_OPTIONS for ``imp``, every optional attribute included even at zero.

    netem_change() keeps a reorder, corrupt or rate attribute's old value when a request leaves it
    out, and pyroute2 leaves out those that are zero, so turning corruption off in place would not
    turn it off. So the qopt comes from pyroute2 (its units: microseconds, percent) and the three
    attributes are always sent; ``gap`` 1 with a reorder is tc's own default (every packet may be
    the one sent at once)."""
    opts = sched_netem.get_parameters(dict(delay=imp.delay_ms * 1000, jitter=imp.jitter_ms * 1000,
                                           loss=imp.loss_pct, duplicate=imp.duplicate_pct))
    opts["gap"] = 1 if imp.reorder_pct else 0
    opts["attrs"] = [
        ["TCA_NETEM_REORDER", {"prob_reorder": percent2u32(imp.reorder_pct), "corr_reorder": 0}],
        ["TCA_NETEM_CORRUPT", {"prob_corrupt": percent2u32(imp.corrupt_pct), "corr_corrupt": 0}],
        ["TCA_NETEM_RATE", {"rate": imp.rate_kbit * 1000 // 8, "packet_overhead": 0, "cell_size": 0,
                            "cell_overhead": 0}],
    ]
    return opts


def netem_message(index: int, imp: Impairment) -> tcmsg:
    """The RTM_NEWQDISC body that puts netem 20: with ``imp`` on band 1:2 of interface ``index``."""
    msg = tcmsg()
    msg["index"], msg["handle"], msg["parent"] = index, NETEM_HANDLE, BAND_CLASS
    msg["attrs"] = [["TCA_KIND", "netem"], ["TCA_OPTIONS", netem_options(imp)]]
    return msg


def accepted(opts: Any) -> dict:
    """What a netem qdisc's read-back TCA_OPTIONS hold, in :class:`Impairment`'s units (the kernel's
    word for what it does, rounded to what its fields can say)."""
    def pct(u32: int) -> float:
        return round(u32 * 100 / 0xFFFFFFFF, 4)

    def attr(name: str, key: str) -> int:
        a = opts.get_attr(name)
        return int(a[key]) if a is not None else 0

    return {"delay_ms": round(opts["delay"] / tick_in_usec / 1000, 3),
            "jitter_ms": round(opts["jitter"] / tick_in_usec / 1000, 3),
            "loss_pct": pct(opts["loss"]), "duplicate_pct": pct(opts["duplicate"]),
            "reorder_pct": pct(attr("TCA_NETEM_REORDER", "prob_reorder")) if opts["gap"] else 0.0,
            "corrupt_pct": pct(attr("TCA_NETEM_CORRUPT", "prob_corrupt")),
            "rate_kbit": attr("TCA_NETEM_RATE", "rate") * 8 / 1000, "limit": int(opts["limit"]),
            "gap": int(opts["gap"])}


def u32_keys(sel: Any) -> list[tuple[int, int, int]]:
    """(off, mask, val) of each key of a decoded TCA_U32_SEL, read from its raw bytes.

    pyroute2 0.9.7 decodes the keys 4 bytes too early, so they are read here."""
    start = sel.offset + 4 + 16  # nla header + tc_u32_sel fields
    keys = []
    for i in range(sel["nkeys"]):
        mask, val = struct.unpack_from(">II", sel.data, start + 16 * i)
        (off,) = struct.unpack_from("=i", sel.data, start + 16 * i + 8)
        keys.append((off, mask, val))
    return keys


def kind_unknown(err: NetlinkError, parent_exists: bool = True) -> bool:
    """True when the kernel refused a qdisc because it does not know its kind."""
    if err.code != errno.ENOENT:
        return False
    text = str(err.args[1] if len(err.args) > 1 else err).lower()
    if "kind is unknown" in text:
        return True
    return parent_exists and "find" not in text  # no extack: ENOENT with a known parent


class NetemBackend:
    name = "netem"

    def __init__(self, ifname: str, port: int):
        self.ifname = ifname
        self.port = port

    def apply(self, imp: Impairment) -> None:
        with _ipr() as ipr:
            index = _index(ipr, self.ifname)
            created = False
            try:
                for req in layout(self.port, imp):
                    created |= self._ensure(ipr, index, req)
                self._verify(ipr, index, imp)
            except BaseException:
                if created:
                    _delete_root(ipr, index)
                raise
        log.info("netem_applied", ifname=self.ifname, port=self.port, **imp.args())

    def accepted(self) -> dict:
        """The netem qdisc's parameters as the kernel now holds them (:func:`accepted`)."""
        with _ipr() as ipr:
            netem = {q["handle"]: q for q in ipr.get_qdiscs(index=_index(ipr, self.ifname))}.get(NETEM_HANDLE)
        if netem is None:
            raise ShaperError(f"read-back: no netem 20: on {self.ifname}")
        return accepted(netem.get_attr("TCA_OPTIONS"))

    def clear(self) -> bool:
        with _ipr() as ipr:
            index = _index(ipr, self.ifname)
            removed = is_ours(ipr, index) and _delete_root(ipr, index)
        if removed:
            log.info("netem_cleared", ifname=self.ifname, port=self.port)
        return removed

    def counters(self) -> dict:
        """What went through the layout so far, as ``tc -s qdisc`` counts it: the root prio 1: saw
        every packet the interface sent, netem 20: (band 1:2) only the lab port's."""
        with _ipr() as ipr:
            stats = qdisc_stats(ipr, _index(ipr, self.ifname))
        root, lab = stats.get(PRIO_HANDLE, {}), stats.get(NETEM_HANDLE, {})
        return {"all_packets": root.get("packets", 0), "all_bytes": root.get("bytes", 0),
                "shaped_packets": lab.get("packets", 0), "shaped_bytes": lab.get("bytes", 0),
                "shaped_drops": lab.get("drops", 0)}


    def _ensure(self, ipr: IPRoute, index: int, req: TcRequest) -> bool:
        """Run one request like ensure(); True when it created our root qdisc."""
        try:
            if req.kind == "netem":
                _new_netem(ipr, index, req.args["impairment"], NLM_F_CREATE | NLM_F_EXCL)
            else:
                ipr.tc(req.command, req.kind, index=index, **req.args)
            return req.kind == "prio"
        except NetlinkError as e:
            if e.code == errno.EEXIST and req.kind == "prio":
                if is_ours(ipr, index, need_netem=False):
                    return False
                raise ShaperError(f"{self.ifname} already has a root qdisc that is not tcplab's") from e
            if e.code == errno.EEXIST and req.kind == "netem":
                _new_netem(ipr, index, req.args["impairment"], 0)  # tc qdisc change
                return False
            if req.kind in ("prio", "netem") and kind_unknown(e):
                raise NetemUnavailable(f"kernel refused qdisc {req.kind}: {e.args[-1]}") from e
            raise ShaperError(f"tc {req.command} {req.kind} on {self.ifname} failed: {e.args[-1]}") from e

    def _verify(self, ipr: IPRoute, index: int, imp: Impairment) -> None:
        qdiscs = {q["handle"]: q for q in ipr.get_qdiscs(index=index)}
        prio, netem = qdiscs.get(PRIO_HANDLE), qdiscs.get(NETEM_HANDLE)
        if prio is None or prio.get_attr("TCA_KIND") != "prio" or prio["parent"] != TC_H_ROOT:
            raise ShaperError(f"read-back: no prio 1: at the root of {self.ifname}")
        if tuple(prio.get_attr("TCA_OPTIONS")["priomap"]) != (0,) * 16:
            raise ShaperError("read-back: prio 1: priomap is not all zero")
        if netem is None or netem.get_attr("TCA_KIND") != "netem" or netem["parent"] != BAND_CLASS:
            raise ShaperError(f"read-back: no netem 20: on 1:2 of {self.ifname}")
        sent = netem_options(imp)
        got = netem.get_attr("TCA_OPTIONS")
        for key in ("delay", "jitter", "loss", "duplicate", "gap"):
            if got[key] != sent[key]:
                raise ShaperError(f"read-back: netem {key} is {got[key]}, {sent[key]} was sent")
        for name, fields in sent["attrs"]:
            have = got.get_attr(name)
            for key, value in fields.items():
                if (have[key] if have is not None else 0) != value:
                    raise ShaperError(f"read-back: netem {name} {key} is "
                                      f"{have[key] if have is not None else 'absent'}, {value} was sent")
        if read_port_filters(ipr, index) != {SPORT_FILTER: (20, 0xFFFF0000, self.port << 16),
                                             DPORT_FILTER: (22, 0xFFFF0000, self.port << 16)}:
            raise ShaperError(f"read-back: u32 filters for port {self.port} missing on {self.ifname}")


def read_port_filters(ipr: IPRoute, index: int, parent: int = PRIO_HANDLE) -> dict[int, tuple]:
    """{handle: (off, mask, val)} of the single-key u32 filters on ``parent`` that send to 1:2."""
    found = {}
    for f in ipr.get_filters(index=index, parent=parent):
        opts = f.get_attr("TCA_OPTIONS")
        sel = opts.get_attr("TCA_U32_SEL") if opts else None
        if sel is None or opts.get_attr("TCA_U32_CLASSID") != BAND_CLASS:
            continue
        keys = u32_keys(sel)
        if len(keys) == 1:
            found[f["handle"]] = keys[0]
    return found


def qdisc_stats(ipr: IPRoute, index: int) -> dict[int, dict]:
    """{handle: {packets, bytes, drops}} of every qdisc on the interface (``tc -s qdisc show``)."""
    out = {}
    for q in ipr.get_qdiscs(index=index):
        st = q.get_attr("TCA_STATS") or {}
        out[q["handle"]] = {k: int(st.get(k, 0)) for k in ("packets", "bytes", "drops")}
    return out


def is_ours(ipr: IPRoute, index: int, need_netem: bool = True) -> bool:
    """The root qdisc is prio 1: (and, if asked, carries netem 20: on 1:2)."""
    qdiscs = {q["handle"]: q for q in ipr.get_qdiscs(index=index)}
    root = qdiscs.get(PRIO_HANDLE)
    if root is None or root["parent"] != TC_H_ROOT or root.get_attr("TCA_KIND") != "prio":
        return False
    netem = qdiscs.get(NETEM_HANDLE)
    return not need_netem or (netem is not None and netem.get_attr("TCA_KIND") == "netem")


def sweep(ifname: str) -> list[str]:
    """Remove our layout (root prio 1: carrying netem 20:) left on ``ifname``."""
    with _ipr() as ipr:
        try:
            index = _index(ipr, ifname)
        except ShaperError:
            return []
        if is_ours(ipr, index) and _delete_root(ipr, index):
            return [f"qdisc prio 1: with netem 20: on {ifname}"]
    return []


def _delete_root(ipr: IPRoute, index: int) -> bool:
    try:
        ipr.tc("del", index=index, handle=PRIO_HANDLE, parent=TC_H_ROOT)
        return True
    except NetlinkError as e:
        if e.code in (errno.ENOENT, errno.EINVAL):
            return False
        raise ShaperError(f"tc del root qdisc failed: {e.args[-1]}") from e


def _new_netem(ipr: IPRoute, index: int, imp: Impairment, flags: int) -> None:
    """RTM_NEWQDISC with :func:`netem_message`: ``flags`` CREATE|EXCL adds, 0 changes in place.

    Sent through the socket's asyncore (the coroutine API every sync IPRoute call runs on): pyroute2
    0.9's sync ``IPRoute.nlm_request`` reads a status key only its asyncore has (KeyError
    'nlm_generator'), which make test-vagrant found on the VMs' netem."""
    async def send() -> list:
        answers = await ipr.asyncore.nlm_request(netem_message(index, imp), msg_type=RTM_NEWQDISC,
                                                 msg_flags=NLM_F_REQUEST | NLM_F_ACK | flags)
        return [m async for m in answers]  # the ACK, or the kernel's error raised as NetlinkError
    ipr.asyncore.event_loop.run_until_complete(send())


def _ipr() -> IPRoute:
    ipr = IPRoute()
    ipr.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)  # errors carry the kernel's reason
    return ipr


def _index(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise ShaperError(f"no interface {ifname}")
    return found[0]
