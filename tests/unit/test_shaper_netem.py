"""The tc messages of the netem backend, encoded by pyroute2 and decoded back, no kernel needed."""

from __future__ import annotations

import socket
import struct

import pytest
from pyroute2 import IPBatch, protocols
from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import RTM_NEWQDISC, RTM_NEWTFILTER
from pyroute2.netlink.rtnl.tcmsg import common, tcmsg

from probe.shaper import Shaper, ShaperError, iptables, netem
from tcplab.impairment import Impairment, ImpairmentError

PORT = 9090


def encode(port: int = PORT, delay_ms: int = 3000, loss_pct: float = 0, imp: Impairment | None = None) -> list:
    """Run the layout through pyroute2's request pipeline into bytes and decode them (the netem
    request is netem.netem_message, sent as RTM_NEWQDISC)."""
    imp = imp or Impairment(delay_ms, loss_pct=loss_pct)
    batch = IPBatch()
    data = b""
    for req in netem.layout(port, imp):
        if req.kind == "netem":
            msg = netem.netem_message(7, req.args["impairment"])
            msg["header"]["type"] = RTM_NEWQDISC
            msg.encode()
            data += bytes(batch.batch) + msg.data
            batch.reset()
        else:
            batch.tc(req.command, req.kind, index=7, **req.args)
    data += bytes(batch.batch)
    msgs, off = [], 0
    while off < len(data):
        msg = tcmsg(data[off:])
        msg.decode()
        msgs.append(msg)
        off += msg["header"]["length"]
    batch.close()
    return msgs


def test_prio_root_sends_every_priority_to_band_0():
    prio = encode()[0]
    assert prio["header"]["type"] == RTM_NEWQDISC
    assert prio["header"]["flags"] & (NLM_F_CREATE | NLM_F_EXCL) == NLM_F_CREATE | NLM_F_EXCL
    assert prio.get_attr("TCA_KIND") == "prio"
    assert (prio["index"], prio["handle"], prio["parent"]) == (7, 0x10000, 0xFFFFFFFF)
    opts = prio.get_attr("TCA_OPTIONS")
    assert opts["bands"] == 3
    assert tuple(opts["priomap"]) == (0,) * 16


@pytest.mark.parametrize("delay_ms,loss_pct,loss_u32", [(3000, 0, 0), (200, 100, 2**32 - 1), (10, 50, 2**31 - 1)])
def test_netem_on_band_1_2_carries_delay_and_loss(delay_ms, loss_pct, loss_u32):
    qd = encode(delay_ms=delay_ms, loss_pct=loss_pct)[1]
    assert qd.get_attr("TCA_KIND") == "netem"
    assert (qd["handle"], qd["parent"]) == (0x200000, 0x10002)  # 20:0 on 1:2
    opts = qd.get_attr("TCA_OPTIONS")
    # pyroute2 sends the delay in psched ticks (tc_netem_qopt.latency), the loss scaled to u32
    assert opts["delay"] == int(delay_ms * 1000 * common.tick_in_usec)
    assert opts["loss"] == loss_u32
    assert opts["limit"] == 1000


def test_netem_delay_in_ticks_is_the_delay_in_nanoseconds_over_64():
    # the kernel turns ticks into ns with PSCHED_TICKS2NS (<< 6) on every current kernel
    if common.tick_in_usec != 15.625:
        pytest.skip("unusual /proc/net/psched")
    assert encode(delay_ms=3000)[1].get_attr("TCA_OPTIONS")["delay"] << 6 == 3_000_000_000


ALL = Impairment(delay_ms=200, jitter_ms=50, loss_pct=5, duplicate_pct=1, reorder_pct=25, corrupt_pct=0.5,
                 rate_kbit=2000)


def test_every_impairment_reaches_netems_own_fields():
    opts = encode(imp=ALL)[1].get_attr("TCA_OPTIONS")
    assert opts["delay"] == int(200_000 * common.tick_in_usec) and opts["jitter"] == int(50_000 * common.tick_in_usec)
    assert opts["loss"] == common.percent2u32(5) and opts["duplicate"] == common.percent2u32(1)
    assert opts["gap"] == 1  # tc's default with a reorder: any packet may be the one sent at once
    assert opts.get_attr("TCA_NETEM_REORDER")["prob_reorder"] == common.percent2u32(25)
    assert opts.get_attr("TCA_NETEM_CORRUPT")["prob_corrupt"] == common.percent2u32(0.5)
    assert opts.get_attr("TCA_NETEM_RATE")["rate"] == 2_000_000 // 8  # bytes per second
    # and what the probe reports the kernel accepted, read from such options, is what was asked
    got = netem.accepted(opts)
    assert {k: got[k] for k in ("delay_ms", "jitter_ms", "rate_kbit")} == {"delay_ms": 200, "jitter_ms": 50,
                                                                           "rate_kbit": 2000}
    for key in ("loss_pct", "duplicate_pct", "reorder_pct", "corrupt_pct"):
        assert got[key] == pytest.approx(getattr(ALL, key), abs=1e-6), key


def test_an_impairment_turned_off_is_sent_as_zero_not_left_out():
    # netem_change keeps a reorder, corrupt or rate attribute that a change leaves out: an in-place
    # change to "no corruption, no rate" must carry them at zero
    opts = encode(imp=Impairment(100))[1].get_attr("TCA_OPTIONS")
    assert opts["gap"] == 0 and opts["jitter"] == 0 and opts["duplicate"] == 0
    assert opts.get_attr("TCA_NETEM_REORDER")["prob_reorder"] == 0
    assert opts.get_attr("TCA_NETEM_CORRUPT")["prob_corrupt"] == 0
    assert opts.get_attr("TCA_NETEM_RATE")["rate"] == 0
    assert netem.accepted(opts)["reorder_pct"] == 0 and netem.accepted(opts)["rate_kbit"] == 0


def headers(sport: int, dport: int) -> bytes:
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0,
                     socket.inet_aton("10.90.0.1"), socket.inet_aton("10.90.0.2"))
    return ip + struct.pack("!HHIIBBHHH", sport, dport, 0, 0, 0x50, 0x02, 1024, 0, 0)


def matches(key: tuple, packet: bytes) -> bool:
    off, mask, val = key
    return struct.unpack_from("!I", packet, off)[0] & mask == val


@pytest.mark.parametrize("i,field,off,handle", [(2, "sport", 20, 0x80000800), (3, "dport", 22, 0x80000801)])
def test_u32_filter_matches_the_port_and_sends_it_to_1_2(i, field, off, handle):
    flt = encode()[i]
    assert flt["header"]["type"] == RTM_NEWTFILTER
    assert flt["header"]["flags"] & (NLM_F_CREATE | NLM_F_REPLACE) == NLM_F_CREATE | NLM_F_REPLACE
    assert flt.get_attr("TCA_KIND") == "u32"
    assert (flt["parent"], flt["handle"]) == (0x10000, handle)
    assert flt["info"] == (1 << 16) | socket.htons(protocols.ETH_P_IP)  # pref 1, protocol ip
    opts = flt.get_attr("TCA_OPTIONS")
    assert opts.get_attr("TCA_U32_CLASSID") == 0x10002
    sel = opts.get_attr("TCA_U32_SEL")
    assert sel["nkeys"] == 1 and sel["flags"] == 1  # TC_U32_TERMINAL
    key = netem.u32_keys(sel)[0]
    assert key == (off, 0xFFFF0000, PORT << 16)
    ports = {"sport": (PORT, 40000), "dport": (40000, PORT)}[field]
    assert matches(key, headers(*ports))
    assert not matches(key, headers(22, 40000)) and not matches(key, headers(40000, 22))
    assert not matches(key, headers(PORT + 1, PORT + 1))


@pytest.mark.parametrize("err,unknown", [
    (NetlinkError(2, "Specified qdisc kind is unknown"), True),
    (NetlinkError(2, "No such file or directory"), True),  # no extack, parent known to exist
    (NetlinkError(2, "Failed to find specified qdisc"), False),
    (NetlinkError(19, "No such device"), False),
    (NetlinkError(1, "Operation not permitted"), False),
])
def test_refusals_recognised_as_netem_unavailable(err, unknown):
    assert netem.kind_unknown(err) is unknown


def test_iptables_rules_match_the_port_both_ways_and_bypass_a_dead_queue():
    assert iptables.chain_name(9090) == "TCPLAB-SHAPE-9090"
    tail = ["-j", "NFQUEUE", "--queue-num", "9090", "--queue-bypass"]
    assert iptables.rules("eth0", 9090, 9090) == [
        ["-o", "eth0", "-p", "tcp", "-m", "tcp", "--sport", "9090", *tail],
        ["-o", "eth0", "-p", "tcp", "-m", "tcp", "--dport", "9090", *tail],
    ]


def test_shaper_touches_nothing_until_applied_and_checks_its_arguments():
    s = Shaper(ifname="eth0", port=9090)
    assert s.backend is None
    s.clear()  # nothing applied: nothing to do
    with pytest.raises(ShaperError):
        Shaper(ifname="eth0", port=70000)
    with pytest.raises(ShaperError):
        Shaper(ifname="x" * 16, port=9090)
    with pytest.raises(ShaperError):
        s.apply(-1)
    with pytest.raises(ShaperError):
        s.apply(10, loss_pct=101)
    with pytest.raises(ImpairmentError, match="jitter_ms 20 is larger than delay_ms 10"):
        Impairment(10, jitter_ms=20)
    with pytest.raises(ShaperError, match="no interface"):
        Shaper(ifname="tcplabnothere", port=9090).apply(10)


def test_a_backend_can_be_chosen_and_a_bad_choice_is_named():
    assert Shaper(ifname="eth0", port=9090, backend="nfqueue").choice == "nfqueue"
    with pytest.raises(ShaperError, match="bad shaper backend 'tc'"):
        Shaper(ifname="eth0", port=9090, backend="tc")


def test_the_probe_config_takes_the_backend_choice(tmp_path):
    from probe import config
    path = tmp_path / "probe.yml"
    base = "host: thinkpad\ncontroller: tcp://127.0.0.1:5555\nlab_ip: 10.90.0.1\n"  # loopback: no keys needed
    path.write_text(base)
    assert config.load(path).shaper_backend == "auto"
    path.write_text(base + "shaper_backend: nfqueue\n")
    assert config.load(path).shaper_backend == "nfqueue"
    path.write_text(base + "shaper_backend: tbf\n")
    with pytest.raises(config.ConfigError, match="shaper_backend must be auto, netem or nfqueue, got 'tbf'"):
        config.load(path)
