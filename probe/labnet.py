"""The probe's lab network as its kernel has it, and the one check of an address before nc dials it.

A connect's address comes from the controller (the inventory's address of the target host, never
what a probe says of itself), but the probe runs nc as root and checks it again on its own side:

- a plain dotted-quad IPv4 address (``str(IPv4Address(x)) == x``): no name for nc to resolve, no
  option (``-lk``), no leading zero, no space;
- inside the network of the probe's own lab address on its lab interface: the prefix is the
  interface's netmask (``SIOCGIFNETMASK``, stdlib only: the probe's netlink calls belong to its
  worker thread) applied to the configured lab address, so ``8.8.8.8`` is never dialled;
- neither that network's own address nor its broadcast (for prefixes up to /30).

The netmask is that of the interface's primary IPv4 address; a lab address added as a secondary one
with another prefix would be judged by the primary's (the testbeds' hosts have one address each).
"""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

from tcplab.actions.connect import unicast_ipv4
from tcplab.errors import TcplabError

SIOCGIFNETMASK = 0x891B  # linux/sockios.h


class LabAddressError(TcplabError, ValueError):
    """An address nc must not be given: not a plain IPv4 address, or outside this host's lab network."""


def plain_ipv4(value: object) -> ipaddress.IPv4Address:
    """``value`` as an IPv4 address if it is a unicast one written plainly; LabAddressError otherwise."""
    if not unicast_ipv4(value):
        raise LabAddressError(f"{value!r} is not a plain unicast IPv4 address")
    return ipaddress.IPv4Address(value)


def network(iface: str, own_ip: str) -> ipaddress.IPv4Network:
    """The lab network: ``own_ip`` with the netmask the kernel holds for ``iface``."""
    if not iface or len(iface.encode()) > 15 or "/" in iface or "\0" in iface:
        raise LabAddressError(f"lab interface {iface!r} is not an interface name")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            reply = fcntl.ioctl(s.fileno(), SIOCGIFNETMASK, struct.pack("256s", iface.encode()))
        except OSError as e:
            raise LabAddressError(f"lab interface {iface} has no IPv4 netmask ({e.strerror})") from e
    mask = socket.inet_ntoa(reply[20:24])
    return ipaddress.IPv4Interface(f"{plain_ipv4(own_ip)}/{mask}").network


def check_peer(ip: object, iface: str, own_ip: str) -> str:
    """``ip`` if nc may dial it from this host (see the module's rules); LabAddressError, one line, if not."""
    addr = plain_ipv4(ip)
    net = network(iface, own_ip)
    if addr not in net:
        raise LabAddressError(f"{ip} is outside this host's lab network {net} ({iface})")
    if net.prefixlen <= 30 and addr in (net.network_address, net.broadcast_address):
        raise LabAddressError(f"{ip} is the lab network {net}'s own address, not a host's")
    return str(addr)
