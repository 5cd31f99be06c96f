"""The testbed's wiring: namespaces, a bridge and veth cables, built through pyroute2.

Why pyroute2 and not ``ip``: it is already a project dependency (the shaper and the socket
watcher use it), it answers with parsed netlink messages we can read back without scraping
text, and it raises typed ``NetlinkError`` with the errno, so "ensure" is a lookup then an
add or a set (pyroute2's own ``ensure()`` idea). One thing is still done with a command:
the per-namespace IPv6 sysctls (``ip netns exec NS sysctl``), as netlink cannot set them.

Lab-link choices, each aimed at a capture that looks like a real NIC's and a lab that talks
only to itself:

- Bridge ``tcplab0`` with STP off and ``forward_delay 0``: ports forward the moment they
  are up, no 15 s listening/learning wait. ``nf_call_iptables 0`` so a host firewall
  (Docker's FORWARD DROP) never sees bridged lab frames.
- IPv6 disabled on the lab links (both namespaces and the root-side ports): no router
  solicitations, MLD reports or DAD probes in the captures, and nothing to leak.
- veth offloads off (tx checksum, TSO/GSO, GRO), set on both ends before one is moved into
  its namespace (features survive the move): captured segments are at most one MSS and
  carry correct checksums, as on a real wire. With them on, tcpdump inside a namespace
  reports "incorrect cksum" on every outgoing packet and a bulk send shows 16 KiB segments
  (measured: 300 kB through nc; with offloads off every data segment is 1448 bytes, MSS).
- No default route in the namespaces: only the connected 10.90.0.0/24 route exists.
"""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any, Optional

import structlog
from pyroute2 import IPRoute, netns
from pyroute2.ethtool import Ethtool
from pyroute2.netlink.exceptions import NetlinkError

from controller.testbed.spec import HostSpec, TestbedError, TestbedSpec

log = structlog.get_logger(__name__)

IFF_UP = 0x1
OFFLOADS_OFF = ("tx-checksum-ip-generic", "tx-checksum-ipv4", "tx-checksum-ipv6",
                "tx-tcp-segmentation", "tx-tcp6-segmentation", "tx-tcp-ecn-segmentation",
                "tx-tcp-mangleid-segmentation", "tx-generic-segmentation", "rx-gro")
IPV6_SYSCTLS = ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6")


def namespace_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def namespace_inode(name: str) -> Optional[int]:
    try:
        return Path("/run/netns", name).stat().st_ino
    except OSError:
        return None


class LabNetwork:
    """Builds, reads back and removes the namespaces, bridge and veths a spec describes."""

    def __init__(self, spec: TestbedSpec):
        self.spec = spec

    # -- build -------------------------------------------------------------------------------
    def ensure(self) -> bool:
        changed = False
        try:
            with IPRoute() as ipr:
                changed |= self._ensure_bridge(ipr)
                for host in self.spec.host_specs():
                    changed |= self._ensure_host(ipr, host)
        except NetlinkError as e:
            raise TestbedError(f"netlink: {e}") from e
        return changed

    def _ensure_bridge(self, ipr: IPRoute) -> bool:
        name, changed = self.spec.bridge, False
        link = _link(ipr, name)
        if link is None:
            ipr.link("add", ifname=name, kind="bridge", br_forward_delay=0, br_stp_state=0,
                     br_nf_call_iptables=0)
            _disable_ipv6_root(name)
            link = _link(ipr, name)
            log.info("testbed_bridge_created", ifname=name)
            changed = True
        info = link.get_attr("IFLA_LINKINFO")
        if info is None or info.get_attr("IFLA_INFO_KIND") != "bridge":
            raise TestbedError(f"link {name} exists but is not a bridge; remove it first")
        data = info.get_attr("IFLA_INFO_DATA")
        if data.get_attr("IFLA_BR_FORWARD_DELAY") != 0 or data.get_attr("IFLA_BR_STP_STATE") != 0:
            ipr.link("set", index=link["index"], kind="bridge", br_forward_delay=0, br_stp_state=0)
            changed = True
        if self.spec.controller_ip is not None:
            changed |= _ensure_addr(ipr, link["index"], self.spec.controller_ip, self.spec.prefixlen)
        changed |= _ensure_up(ipr, link)
        return changed

    def _ensure_host(self, ipr: IPRoute, host: HostSpec) -> bool:
        changed = False
        if not namespace_exists(host.netns):
            netns.create(host.netns)
            log.info("testbed_namespace_created", netns=host.netns)
            changed = True
        changed |= _ensure_ns_sysctls(host.netns)
        with IPRoute(netns=host.netns) as nsr:
            root, inner = _link(ipr, host.veth), _link(nsr, host.ifname)
            if root is None or inner is None:  # half a cable is no cable: lay a new one
                for r, link in ((ipr, root), (nsr, inner)):
                    if link is not None:
                        r.link("del", index=link["index"])
                self._lay_cable(ipr, nsr, host)
                root, inner = _link(ipr, host.veth), _link(nsr, host.ifname)
                changed = True
            bridge = ipr.link_lookup(ifname=self.spec.bridge)[0]
            if root.get("master") != bridge:
                ipr.link("set", index=root["index"], master=bridge)
                changed = True
            changed |= _ensure_up(ipr, root)
            changed |= _ensure_addr(nsr, inner["index"], host.ip, host.prefixlen)
            changed |= _ensure_up(nsr, inner)
            changed |= _ensure_up(nsr, _link(nsr, "lo"))
        return changed

    def _lay_cable(self, ipr: IPRoute, nsr: IPRoute, host: HostSpec) -> None:
        peer = f"{host.veth}p"  # the namespace end's name until it is moved and renamed
        if _link(ipr, peer) is not None:
            ipr.link("del", ifname=peer)
        ipr.link("add", ifname=host.veth, kind="veth", peer=peer)
        offloads = {n: _offloads_off(n) for n in (host.veth, peer)}
        _disable_ipv6_root(host.veth)
        ipr.link("set", index=ipr.link_lookup(ifname=peer)[0], net_ns_fd=host.netns)
        nsr.link("set", index=nsr.link_lookup(ifname=peer)[0], ifname=host.ifname)
        log.info("testbed_cable_laid", netns=host.netns, veth=host.veth, ifname=host.ifname,
                 offloads_still_on=offloads)

    # -- remove ------------------------------------------------------------------------------
    def remove(self) -> bool:
        """Delete our namespaces and links (exact names only); true if anything was there."""
        changed = False
        for host in self.spec.host_specs():
            if namespace_exists(host.netns):
                netns.remove(host.netns)
                log.info("testbed_namespace_deleted", netns=host.netns)
                changed = True
        extra = [f"{h.veth}p" for h in self.spec.host_specs()]
        with IPRoute() as ipr:
            for name in self.spec.link_names() + extra:
                if _link(ipr, name) is not None:
                    try:
                        ipr.link("del", ifname=name)
                    except NetlinkError as e:
                        if e.code != 19:  # ENODEV: its veth peer's deletion took it along
                            raise TestbedError(f"cannot delete link {name}: {e}") from e
                    log.info("testbed_link_deleted", ifname=name)
                    changed = True
        return changed

    # -- read back ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        with IPRoute() as ipr:
            br = _link(ipr, self.spec.bridge)
            out: dict[str, Any] = {"bridge": {
                "name": self.spec.bridge, "exists": br is not None,
                "up": bool(br and br["flags"] & IFF_UP),
                "addresses": _addrs(ipr, br["index"]) if br else []}, "hosts": {}}
            for host in self.spec.host_specs():
                veth = _link(ipr, host.veth)
                h: dict[str, Any] = {"netns": host.netns, "netns_exists": namespace_exists(host.netns),
                                     "veth_exists": veth is not None,
                                     "veth_on_bridge": bool(br and veth and veth.get("master") == br["index"]),
                                     "eth0_up": False, "addresses": [], "default_route": False}
                if h["netns_exists"]:
                    with IPRoute(netns=host.netns) as nsr:
                        eth = _link(nsr, host.ifname)
                        if eth is not None:
                            h["eth0_up"] = bool(eth["flags"] & IFF_UP)
                            h["addresses"] = _addrs(nsr, eth["index"])
                        h["default_route"] = any(r["dst_len"] == 0 for r in
                                                 nsr.get_routes(family=socket.AF_INET, table=254))
                out["hosts"][host.name] = h
        return out


def _link(ipr: IPRoute, ifname: str):
    idx = ipr.link_lookup(ifname=ifname)
    if not idx:
        return None
    try:
        return ipr.get_links(idx[0])[0]
    except NetlinkError as e:
        if e.code == 19:  # ENODEV: gone between lookup and get (a namespace's removal takes its veths)
            return None
        raise


def _addrs(ipr: IPRoute, index: int) -> list[str]:
    return [f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}"
            for a in ipr.get_addr(index=index, family=socket.AF_INET)]


def _ensure_addr(ipr: IPRoute, index: int, ip: str, prefixlen: int) -> bool:
    if f"{ip}/{prefixlen}" in _addrs(ipr, index):
        return False
    ipr.addr("add", index=index, address=ip, prefixlen=prefixlen)
    return True


def _ensure_up(ipr: IPRoute, link) -> bool:
    if link["flags"] & IFF_UP:
        return False
    ipr.link("set", index=link["index"], state="up")
    return True


def _offloads_off(ifname: str) -> list[str]:
    """Switch the offloads off on ``ifname``; return the ones the kernel kept on."""
    with Ethtool() as eth:
        feats = eth.get_features(ifname)
        for name in OFFLOADS_OFF:
            f = feats.features.get(name)
            if f is not None and f.available:
                f.enable = False
        eth.set_features(ifname, feats)
        after = eth.get_features(ifname).features
    return [n for n in OFFLOADS_OFF if n in after and after[n].enable]


def _disable_ipv6_root(ifname: str) -> None:
    path = Path("/proc/sys/net/ipv6/conf", ifname, "disable_ipv6")
    if path.exists():
        path.write_text("1\n")


def _ensure_ns_sysctls(ns: str) -> bool:
    if not Path("/proc/sys/net/ipv6").exists():
        return False
    cur = _ns_run(ns, "sysctl", "-n", *IPV6_SYSCTLS).split()
    if cur == ["1"] * len(IPV6_SYSCTLS):
        return False
    _ns_run(ns, "sysctl", "-q", "-w", *(f"{k}=1" for k in IPV6_SYSCTLS))
    return True


def _ns_run(ns: str, *argv: str) -> str:
    proc = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise TestbedError(f"{' '.join(argv)} in {ns} failed: {proc.stderr.strip()}")
    return proc.stdout
