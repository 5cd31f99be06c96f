"""TCP sysctls of the lab host for one run, restored afterwards, also after a crash.

A scenario may change a host's TCP knobs for its run (``tcp_syn_retries`` for a connect that gives
up quickly, ``tcp_rmem`` for a small receive window). Only the per-network-namespace TCP knobs of
:data:`ALLOWED` (``/proc/sys/net/ipv4/tcp_*``; in the embedded lab each host's namespace has its
own, on a real host they are the host's, every connection's, for the run's length), whole numbers
within their bounds (the kernel checks again and its refusal is the error).

The first change of a knob writes its value as it was to ``<home>/sysctls.saved.json`` before the
kernel's is changed; :meth:`Sysctls.restore` writes every saved value back and removes the file.
The sequencer's cleanup, the dead-man switch and the probe's shutdown restore; a probe killed with
-9 leaves the file, and its successor's start-up sweep (:func:`sweep`) restores from it.
"""

from __future__ import annotations

import json
from pathlib import Path

import structlog

from tcplab.files import atomic_write
from tcplab.tcpknobs import ALLOWED, SysctlError, check

log = structlog.get_logger(__name__)

PROC = Path("/proc/sys/net/ipv4")
SAVED = "sysctls.saved.json"
def read(name: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in (PROC / name).read_text().split())
    except FileNotFoundError:
        raise SysctlError(f"this kernel has no net.ipv4.{name}") from None


def write(name: str, values: tuple[int, ...]) -> None:
    try:
        (PROC / name).write_text("\t".join(str(v) for v in values) + "\n")
    except FileNotFoundError:
        raise SysctlError(f"this kernel has no net.ipv4.{name}") from None
    except OSError as e:
        raise SysctlError(f"the kernel refused net.ipv4.{name} = {' '.join(map(str, values))}: "
                          f"{e.strerror}") from None


def shown(values: tuple[int, ...] | list[int]) -> int | list[int]:
    return values[0] if len(values) == 1 else list(values)


class Sysctls:
    def __init__(self, home: Path):
        self.path = Path(home) / SAVED
        self.saved: dict[str, tuple[int, ...]] = {}  # name -> its value before the run changed it

    def set(self, values: dict) -> dict[str, dict]:
        """Change each knob (saved first); ``{name: {"was": [...], "now": [...]}}``, the numbers as the
        kernel reads them back before and after."""
        wanted = {name: check(name, value) for name, value in values.items()}
        out = {}
        for name, numbers in wanted.items():
            was = read(name)
            first = name not in self.saved
            if first:
                self.saved[name] = was
                self._persist()
            try:
                write(name, numbers)
            except SysctlError:
                if first:  # unchanged: nothing to put back
                    del self.saved[name]
                    self._persist()
                raise
            out[name] = {"was": list(was), "now": list(read(name))}
            log.info("sysctl_set", name=name, was=shown(was), now=shown(out[name]["now"]))
        return out

    def restore(self) -> dict[str, dict]:
        """Every saved knob back to its value before the run; what was restored (as :meth:`set` says)."""
        out, failed = {}, None
        for name, numbers in list(self.saved.items()):  # each on its own: one that fails does not keep the others
            try:
                now = read(name)
                write(name, numbers)
                out[name] = {"was": list(now), "now": list(read(name))}
            except SysctlError as e:
                log.error("sysctl_not_restored", name=name, error=str(e))
                failed = failed or e
                continue
            del self.saved[name]
            self._persist()
        if failed is not None and not out:
            raise failed
        if out:
            log.info("sysctls_restored", restored=out)
        return out

    def _persist(self) -> None:
        if self.saved:
            atomic_write(self.path, json.dumps({k: list(v) for k, v in self.saved.items()}))
        else:
            self.path.unlink(missing_ok=True)


def sweep(home: Path) -> list[str]:
    """Restore what a killed probe changed (its saved file); one line per knob."""
    path = Path(home) / SAVED
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except ValueError:
        path.unlink(missing_ok=True)
        return [f"an unreadable {SAVED} (removed)"]
    done = []
    for name, numbers in saved.items() if isinstance(saved, dict) else ():
        # the host's own value, whatever it was (no range check), but only a knob a run may change
        if name not in ALLOWED or not isinstance(numbers, list) or not numbers \
                or not all(type(n) is int and 0 <= n < 2**31 for n in numbers):
            log.error("sysctl_not_restored", name=name, error="not a saved knob")
            continue
        try:
            write(name, tuple(numbers))
            done.append(f"net.ipv4.{name} back to {' '.join(map(str, numbers))}")
        except SysctlError as e:
            log.error("sysctl_not_restored", name=name, error=str(e))
    path.unlink(missing_ok=True)
    return done
