"""The host around the kernel, for :mod:`probe.doctor`: its clock and its packages. Standard library only.

- ``clock()``: the clock source (``/sys/devices/system/clocksource``) and whether the clock is
  synchronised. The kernel's own word decides (``adjtimex``: ``STA_UNSYNC`` clear and not
  ``TIME_ERROR``, which ntpd, chrony and systemd-timesyncd maintain); ``timedatectl`` and ``chronyc``
  are asked too where they exist, and their answers are reported beside it.
- ``packages(names)``: which are not installed, by dpkg where the host has it, else by the command
  each package provides.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

CLOCKSOURCE = Path("/sys/devices/system/clocksource/clocksource0")
STA_UNSYNC = 0x0040
TIME_ERROR = 5
# without dpkg: a command each package provides
COMMANDS = {"netcat-openbsd": "nc", "iproute2": "tc", "iptables": "iptables", "tcpdump": "tcpdump",
            "python3-venv": None, "python3-setuptools": None}


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):  # struct timex of <sys/timex.h>
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
                ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
                ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
                ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long),
                ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int), ("_reserved", ctypes.c_int * 11)]


def adjtimex() -> dict:
    """The kernel's NTP state (read only: modes 0)."""
    tx = _Timex()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError) as e:
        return {"ok": False, "detail": str(e)}
    if state < 0:
        return {"ok": False, "detail": f"adjtimex failed (errno {ctypes.get_errno()})"}
    return {"ok": True, "state": state, "unsync": bool(tx.status & STA_UNSYNC),
            "synchronised": not (tx.status & STA_UNSYNC) and state != TIME_ERROR,
            "maxerror_us": tx.maxerror, "esterror_us": tx.esterror}


def _ask(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout if res.returncode == 0 else None


def parse_timedatectl(text: str) -> dict:
    """``timedatectl show`` -> its NTP and NTPSynchronized answers."""
    kv = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {"ntp": kv.get("NTP") == "yes", "synchronised": kv.get("NTPSynchronized") == "yes"}


def parse_chrony(text: str) -> dict:
    """``chronyc -n tracking`` -> its leap status (``Normal`` once chrony is synchronised)."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Leap status":
            return {"leap": value.strip(), "synchronised": value.strip() != "Not synchronised"}
    return {"leap": None, "synchronised": None}


def clock() -> dict:
    def read(name: str) -> str | None:
        try:
            return (CLOCKSOURCE / name).read_text().strip()
        except OSError:
            return None
    kernel = adjtimex()
    out = {"source": read("current_clocksource"), "available": (read("available_clocksource") or "").split(),
           "adjtimex": kernel, "synchronised": kernel.get("synchronised") if kernel["ok"] else None}
    tdc = _ask(["timedatectl", "show"])
    if tdc is not None:
        out["timedatectl"] = parse_timedatectl(tdc)
    chrony = _ask(["chronyc", "-n", "tracking"])
    if chrony is not None:
        out["chrony"] = parse_chrony(chrony)
    return out


def packages(names: tuple[str, ...]) -> dict:
    if shutil.which("dpkg-query"):
        res = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${db:Status-Abbrev}\n", *names],
                             capture_output=True, text=True, timeout=30)
        installed = {line.split()[0] for line in res.stdout.splitlines() if line.split()[1:2] == ["ii"]}
        return {"by": "dpkg", "missing": [n for n in names if n not in installed]}
    missing = [n for n in names if COMMANDS.get(n) and shutil.which(COMMANDS[n]) is None]
    return {"by": "commands", "missing": missing}
