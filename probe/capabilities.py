"""What this host's kernel offers the lab, asked of the kernel itself. Standard library only.

Each check returns a plain dict (JSON as it stands) and never raises for a missing feature: a feature
is ``ok`` True/False, with ``detail`` saying what was seen. :mod:`probe.doctor` assembles them.

- **tc kinds** (prio, netem, u32) and the **NFQUEUE** target are *tried*: the seed's exact layout is
  built with ``tc`` and the NFQUEUE rule with ``iptables`` in a throwaway network namespace
  (:func:`try_shaping`, run by ``probe.doctor --inner`` under ``unshare --net``), so nothing is left
  behind and the kernel's own answer decides (it loads a module on demand as it would for the probe).
  Module files (``/proc/modules``, ``modules.builtin``, ``modules.dep``) are reported beside it, and
  decide alone when the tools are not installed yet.
- **nfnetlink_queue** is tried by binding a queue over netlink (what the delay line does first).
- **inet_diag** by a real TCP dump request, **capture** by an AF_PACKET socket with TPACKET_V3.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import struct
import subprocess
from pathlib import Path

TC_LAYOUT_PORT = 9090  # only a match value in the throwaway namespace: no traffic is sent
MODULES = {"prio": "sch_prio", "netem": "sch_netem", "u32": "cls_u32",
           "nfqueue_target": "xt_NFQUEUE", "nfnetlink_queue": "nfnetlink_queue", "inet_diag": "tcp_diag"}


def _run(argv: list[str], timeout: float = 10) -> tuple[bool, str]:
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"{argv[0]}: {e}"
    err = (res.stderr or res.stdout).strip().splitlines()
    return res.returncode == 0, (err[-1] if err else f"exit {res.returncode}") if res.returncode else ""


@functools.lru_cache(maxsize=8)
def _module_stems(listing: str) -> frozenset[str] | None:
    """The module names a modules.builtin/modules.dep file lists (read once: they are fixed for a
    kernel release, and modules.dep is hundreds of KB); None when it cannot be read."""
    try:
        text = Path(listing).read_text()
    except OSError:
        return None
    return frozenset(line.split(":", 1)[0].rsplit("/", 1)[-1].split(".ko", 1)[0].replace("-", "_")
                     for line in text.splitlines())


def module_status(name: str, release: str | None = None) -> str:
    """``loaded``, ``builtin``, ``loadable``, ``absent`` or ``no-modules`` (a kernel without module
    support, where only what is built in exists and nothing says what is)."""
    release = release or os.uname().release
    mod = name.replace("-", "_")
    try:
        loaded = Path("/proc/modules").read_text()
    except OSError:
        loaded = None
    if loaded is not None and any(line.split(" ", 1)[0] == mod for line in loaded.splitlines()):
        return "loaded"
    base = Path("/lib/modules") / release
    for listing, found in (("modules.builtin", "builtin"), ("modules.dep", "loadable")):
        stems = _module_stems(str(base / listing))
        if stems is not None and mod in stems:
            return found
    if loaded is None:
        return "no-modules"
    return "absent"


def xt_targets() -> set[str]:
    """The iptables targets the kernel has registered now (loaded or built in)."""
    names: set[str] = set()
    for path in ("/proc/net/ip_tables_targets", "/proc/net/ip6_tables_targets"):
        try:
            names.update(Path(path).read_text().split())
        except OSError:
            pass
    return names


def try_tc(port: int = TC_LAYOUT_PORT) -> dict:
    """Build the seed's layout on ``lo`` (call only inside a throwaway network namespace).

    Each kind is tried on its own where the layout cannot be built: netem as the root qdisc, u32
    under an ingress qdisc."""
    tc = shutil.which("tc")
    if tc is None:
        return {"tried": False, "detail": "tc not installed (iproute2)"}
    out: dict = {"tried": True}
    dev = ["dev", "lo"]
    prio = _run([tc, "qdisc", "add", *dev, "root", "handle", "1:", "prio", "bands", "3",
                 "priomap", *["0"] * 16])
    out["prio"] = {"ok": prio[0], "detail": prio[1]}
    if prio[0]:
        netem = _run([tc, "qdisc", "add", *dev, "parent", "1:2", "handle", "20:", "netem", "delay", "1ms"])
        u32 = [_run([tc, "filter", "add", *dev, "parent", "1:", "protocol", "ip", "prio", "1", "u32",
                     "match", "ip", field, str(port), "0xffff", "flowid", "1:2"]) for field in ("sport", "dport")]
        u32_ok = all(ok for ok, _ in u32)
        u32_detail = "; ".join(d for _, d in u32 if d)
    else:
        netem = _run([tc, "qdisc", "add", *dev, "root", "handle", "20:", "netem", "delay", "1ms"])
        ingress = _run([tc, "qdisc", "add", *dev, "ingress"])
        if ingress[0]:
            u32_ok, u32_detail = _run([tc, "filter", "add", *dev, "parent", "ffff:", "protocol", "ip", "prio", "1",
                                       "u32", "match", "ip", "dport", str(port), "0xffff", "flowid", "1:2"])
        else:
            u32_ok, u32_detail = None, f"not tried: no qdisc to attach it to (ingress: {ingress[1]})"
    out["netem"] = {"ok": netem[0], "detail": netem[1]}
    out["u32"] = {"ok": u32_ok, "detail": u32_detail}
    out["layout"] = bool(prio[0] and netem[0] and u32_ok)
    return out


def try_nfqueue_rule(port: int = TC_LAYOUT_PORT) -> dict:
    """Insert the shaper's NFQUEUE rule (call only inside a throwaway network namespace)."""
    ipt = shutil.which("iptables")
    if ipt is None:
        return {"tried": False, "ok": None, "detail": "iptables not installed"}
    ok, detail = _run([ipt, "-w", "5", "-t", "mangle", "-A", "OUTPUT", "-o", "lo", "-p", "tcp", "-m", "tcp",
                       "--dport", str(port), "-j", "NFQUEUE", "--queue-num", str(port), "--queue-bypass"])
    return {"tried": True, "ok": ok, "detail": detail}


def try_queue_bind(queue_num: int = TC_LAYOUT_PORT) -> dict:
    """Bind an NFQUEUE queue over netlink (NFQNL_CFG_CMD_BIND) and let go of it at once."""
    netlink_netfilter, nfnl_subsys_queue, nfqnl_msg_config, nfqa_cfg_cmd = 12, 3, 2, 1
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink_netfilter)
    except OSError as e:
        return {"ok": False, "detail": f"netlink netfilter socket: {e.strerror}"}
    with sock:
        attr = struct.pack("=HHBxH", 8, nfqa_cfg_cmd, 1, 0)  # command BIND, pf AF_UNSPEC
        body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue_num)) + attr
        msg = struct.pack("=IHHII", 16 + len(body), (nfnl_subsys_queue << 8) | nfqnl_msg_config,
                          0x1 | 0x4, 1, 0) + body  # NLM_F_REQUEST | NLM_F_ACK
        return _netlink_ack(sock, msg)


def _netlink_ack(sock: socket.socket, msg: bytes) -> dict:
    sock.settimeout(2)
    try:
        sock.send(msg)
        reply = sock.recv(65536)
    except OSError as e:
        return {"ok": False, "detail": f"netlink: {e.strerror or e}"}
    _, kind, _, _, _ = struct.unpack_from("=IHHII", reply, 0)
    if kind == 2:  # NLMSG_ERROR: 0 is the ack
        err, = struct.unpack_from("=i", reply, 16)
        return {"ok": err == 0, "detail": "" if err == 0 else os.strerror(-err)}
    return {"ok": True, "detail": ""}


def inet_diag() -> dict:
    """Ask for a dump of this namespace's TCP sockets, as the SocketWatcher does."""
    netlink_sock_diag, sock_diag_by_family = 4, 20
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink_sock_diag)
    except OSError as e:
        return {"ok": False, "detail": f"netlink sock_diag socket: {e.strerror}"}
    with sock:
        req = struct.pack("=BBBxI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0xFFFFFFFF) + b"\0" * 48
        msg = struct.pack("=IHHII", 16 + len(req), sock_diag_by_family, 0x1 | 0x300, 1, 0) + req  # REQUEST|DUMP
        return _netlink_ack(sock, msg)  # a dump answers with data (ok) or NLMSG_ERROR


def packet_capture() -> dict:
    """An AF_PACKET socket with a TPACKET_V3 ring, as the capture opens (needs root)."""
    sol_packet, packet_version, tpacket_v3 = 263, 10, 2
    try:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003)) as s:
            s.setsockopt(sol_packet, packet_version, tpacket_v3)
    except OSError as e:
        return {"ok": False, "detail": f"AF_PACKET/TPACKET_V3: {e.strerror}"}
    return {"ok": True, "detail": ""}
