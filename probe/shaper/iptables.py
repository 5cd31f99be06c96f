"""The NFQUEUE rule of backend 2: a chain of ours in mangle OUTPUT, driven by the iptables binary.

Chain ``TCPLAB-SHAPE-<port>`` holds two rules (``-o IF -p tcp --sport PORT`` and
``--dport PORT``, both ``-j NFQUEUE --queue-num Q --queue-bypass``) and is jumped to
from the top of mangle OUTPUT. ``--queue-bypass`` lets packets through unshaped when no
program listens on the queue, so a killed probe never blackholes the port.

Every change is checked first with ``-C`` (idempotent) and argument lists are passed to
``subprocess.run`` (no shell). iptables-nft is the Debian default; the NFQUEUE xt target
runs through nft_compat. Rules are per network namespace.
"""

from __future__ import annotations

import shutil
import subprocess

from probe.shaper.errors import ShaperError

TABLE = "mangle"
HOOK = "OUTPUT"
CHAIN_PREFIX = "TCPLAB-SHAPE-"


def chain_name(port: int) -> str:
    return f"{CHAIN_PREFIX}{port}"


def rules(ifname: str, port: int, queue_num: int) -> list[list[str]]:
    """The rule specs (after ``-A CHAIN``) that send the port's egress packets to the queue."""
    target = ["-j", "NFQUEUE", "--queue-num", str(queue_num), "--queue-bypass"]
    return [["-o", ifname, "-p", "tcp", "-m", "tcp", f"--{field}", str(port), *target]
            for field in ("sport", "dport")]


class QueueRule:
    """Our chain and the jump to it; ensure() and remove() are idempotent."""

    def __init__(self, ifname: str, port: int, queue_num: int):
        self.ifname, self.port, self.queue_num = ifname, port, queue_num
        self.chain = chain_name(port)

    def ensure(self) -> None:
        if not _ok("-N", self.chain) and not _ok("-L", self.chain, "-n"):
            raise ShaperError(f"iptables: cannot create chain {self.chain}")
        for spec in rules(self.ifname, self.port, self.queue_num):
            if not _ok("-C", self.chain, *spec):
                _run("-A", self.chain, *spec)
        if not _ok("-C", HOOK, "-j", self.chain):
            _run("-I", HOOK, "1", "-j", self.chain)
        # read back: the kernel now holds the jump and both rules
        missing = [s for s in rules(self.ifname, self.port, self.queue_num) if not _ok("-C", self.chain, *s)]
        if missing or not _ok("-C", HOOK, "-j", self.chain):
            raise ShaperError(f"iptables: rules of {self.chain} missing after insert")

    def remove(self) -> bool:
        return remove_chain(self.chain)


def remove_chain(chain: str) -> bool:
    """Delete every jump to ``chain`` from OUTPUT, flush and delete it. False if absent (also when
    iptables is not installed: then no chain of ours can exist)."""
    if shutil.which("iptables") is None:
        return False
    while _ok("-D", HOOK, "-j", chain):
        pass
    if not _ok("-F", chain):
        return False
    _run("-X", chain)
    return True


def our_chains() -> list[str]:
    """Names of the TCPLAB-SHAPE-* chains in the mangle table (any port); none without iptables."""
    if shutil.which("iptables-save") is None:
        return []
    out = _iptables_save()
    return [line[1:].split()[0] for line in out.splitlines() if line.startswith(":" + CHAIN_PREFIX)]


def _iptables_save() -> str:
    exe = shutil.which("iptables-save")
    if exe is None:
        raise ShaperError("iptables-save not found")
    res = subprocess.run([exe, "-t", TABLE], capture_output=True, text=True, timeout=30)
    if res.returncode != 0:
        raise ShaperError(f"iptables-save failed: {res.stderr.strip()}")
    return res.stdout


def _iptables(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("iptables")
    if exe is None:
        raise ShaperError("iptables not found")
    return subprocess.run([exe, "-w", "5", "-t", TABLE, *args], capture_output=True, text=True, timeout=30)


def _ok(*args: str) -> bool:
    return _iptables(*args).returncode == 0


def _run(*args: str) -> None:
    res = _iptables(*args)
    if res.returncode != 0:
        msg = res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"exit {res.returncode}"
        raise ShaperError(f"iptables {' '.join(args[:2])}: {msg}")
