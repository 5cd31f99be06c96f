"""Install sets: which host an archive is for, named so the name is the whole description.

A set's name is ``<machine>-py<X.Y>-<release>[-offline]``, e.g. ``armv7l-py3.11-bookworm-offline``:

- ``machine`` is what ``uname -m`` (Ansible's ``ansible_facts.architecture``) says: ``x86_64``,
  ``aarch64`` (Raspberry Pi OS 64-bit) or ``armv7l`` (Raspberry Pi OS 32-bit on a Pi 2 or newer);
- ``X.Y`` the host's python (bookworm's is 3.11): wheels are chosen for that CPython ABI;
- ``release`` the host's Debian release (``bookworm``, ``trixie``) or ``other`` (not Debian): only a
  Debian host can receive Debian packages;
- ``offline``: the host has no internet, so the system packages the probe drives come in the archive
  too, as a local apt repository, with every package they need beyond Debian's *required* set.

Where PyPI has no wheel for a CPU (armv7l: pyzmq, msgpack, pyyaml), the archive carries Debian's
package instead (``python3-zmq`` ...) and the probe's virtualenv sees the system's site-packages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from controller.wheelhouse import WheelhouseError

# uname -m -> Debian architecture, and the wheel platform suffix PyPI uses.
MACHINES = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "armhf",
}
# Debian releases whose glibc we know (manylinux_2_N wheels up to N run there) and their python.
RELEASES = {
    "bullseye": {"glibc": 31, "python": "3.9"},
    "bookworm": {"glibc": 36, "python": "3.11"},
    "trixie": {"glibc": 41, "python": "3.13"},
}
# PyPI projects with no wheel for a CPU, and the Debian package that provides them instead.
DEBIAN_INSTEAD = {
    "armv7l": {"pyzmq": "python3-zmq", "msgpack": "python3-msgpack", "pyyaml": "python3-yaml"},
}

_NAME = re.compile(r"^(?P<machine>[a-z0-9_]+)-py(?P<python>3\.\d+)-(?P<release>[a-z]+)(?P<offline>-offline)?$")


@dataclass(frozen=True)
class Target:
    machine: str
    python: str
    release: str
    offline: bool = False
    debian_instead: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def name(self) -> str:
        return f"{self.machine}-py{self.python}-{self.release}" + ("-offline" if self.offline else "")

    @property
    def debian_arch(self) -> str:
        return MACHINES[self.machine]

    @property
    def is_debian(self) -> bool:
        return self.release in RELEASES

    @property
    def abi(self) -> str:
        return "cp" + self.python.replace(".", "")

    def pip_platforms(self) -> list[str]:
        """Every platform tag a wheel for this host may carry (pip 23 does not expand manylinux_2_N)."""
        # not Debian: assume a glibc of 2.28 or newer (Ubuntu 20.04 has 2.31, EL8 2.28)
        glibc = RELEASES.get(self.release, {"glibc": 28})["glibc"]
        tags = [f"manylinux_2_{n}_{self.machine}" for n in range(glibc, 16, -1)]
        return tags + [f"manylinux2014_{self.machine}", f"linux_{self.machine}"]

    def marker_environment(self) -> dict[str, str]:
        """What a requirement's environment marker sees on this host (pip would evaluate ours)."""
        return {
            "platform_machine": self.machine,
            "python_version": self.python,
            "python_full_version": self.python + ".0",
            "implementation_name": "cpython",
            "platform_python_implementation": "CPython",
            "sys_platform": "linux",
            "platform_system": "Linux",
            "os_name": "posix",
        }

    def ships_debs(self) -> bool:
        return self.offline or bool(self.debian_instead)


def parse(name: str) -> Target:
    """The target a set's name describes; a one-line WheelhouseError for a name we cannot serve."""
    m = _NAME.match(name)
    if not m:
        raise WheelhouseError(f"install set {name!r} is not <machine>-py<X.Y>-<release>[-offline]")
    machine, python, release = m["machine"], m["python"], m["release"]
    if machine not in MACHINES:
        raise WheelhouseError(
            f"install set {name!r}: no probe install for CPU {machine!r} (known: {', '.join(MACHINES)};"
            " a Pi Zero or Pi 1 is armv6l, which Debian's armhf packages do not run on)"
        )
    instead = DEBIAN_INSTEAD.get(machine, {})
    target = Target(machine, python, release, bool(m["offline"]), dict(instead))
    if target.ships_debs() and not target.is_debian:
        why = "it has no internet" if target.offline else f"PyPI has no {machine} wheel of {', '.join(instead)}"
        raise WheelhouseError(
            f"install set {name!r}: {why}, so it needs Debian packages, but {release!r} is not a Debian "
            f"release tcplab knows ({', '.join(RELEASES)})"
        )
    if target.is_debian and RELEASES[release]["python"] != python and instead:
        raise WheelhouseError(
            f"install set {name!r}: Debian {release}'s python3-* packages are for python "
            f"{RELEASES[release]['python']}, not {python}"
        )
    return target
