"""Debian bookworm chroots of another CPU (arm64, armhf) under qemu-user-static, for install tests.

A chroot is built once with debootstrap (minbase + python3 + python3-venv: what a fresh Raspberry Pi
OS has at least) under /var/cache/tcplab/tcplab-bookworm-<arch> and reused by later runs; it is
rebuilt when absent. Each test runs in a throwaway overlay on top of it (``Overlay``), inside a mount
namespace of its own (the overlay and /proc vanish with it) and a network namespace with nothing but
``lo``: whatever the install needs must already be in the chroot or the files handed in.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from controller.wheelhouse import debian

CACHE = Path("/var/cache/tcplab")
BINFMT = Path("/proc/sys/fs/binfmt_misc")
QEMU = {"arm64": "qemu-aarch64", "armhf": "qemu-arm"}


class ChrootError(RuntimeError):
    pass


def ensure_binfmt(arch: str) -> None:
    """Make the kernel run ``arch`` binaries through qemu-user-static (mount binfmt_misc, enable)."""
    entry = BINFMT / QEMU[arch]
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], check=True)
    if not entry.exists() or "enabled" not in entry.read_text():
        subprocess.run(["update-binfmts", "--enable", QEMU[arch]], check=True, capture_output=True)
    text = entry.read_text()
    if "enabled" not in text or "F" not in text.split("flags:")[1].split()[0]:
        raise ChrootError(f"{entry}: not enabled with the fix-binary flag: {text.splitlines()[:3]}")


def ensure_chroot(arch: str, release: str = "bookworm") -> Path:
    """The cached minbase chroot for ``arch``, built with debootstrap when absent (about 3 minutes)."""
    ensure_binfmt(arch)
    root = CACHE / f"tcplab-{release}-{arch}"
    if (root / "usr/bin/python3").exists() and (root / ".tcplab-complete").exists():
        return root
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    mirror, _ = debian.mirrors()
    r = subprocess.run(
        ["debootstrap", f"--arch={arch}", "--variant=minbase", "--include=python3,python3-venv",
         release, str(partial), mirror],
        capture_output=True, text=True,
    )
    if r.returncode != 0:
        raise ChrootError(f"debootstrap {arch} failed: {(r.stdout + r.stderr).strip().splitlines()[-1:]}")
    (partial / ".tcplab-complete").write_text("debootstrap minbase python3 python3-venv\n")
    partial.rename(root)
    return root


class Overlay:
    """A writable throwaway view of a cached chroot, with files copied in under /tmp/tcplab."""

    def __init__(self, lower: Path):
        self.lower = lower
        self.tmp = Path(tempfile.mkdtemp(prefix="tcplab-overlay-"))
        self.upper, self.work, self.merged = self.tmp / "upper", self.tmp / "work", self.tmp / "merged"
        for d in (self.upper, self.work, self.merged):
            d.mkdir()
        self.inside = self.upper / "tmp/tcplab"  # seen in the chroot as /tmp/tcplab
        self.inside.mkdir(parents=True)

    def __enter__(self) -> "Overlay":
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def put(self, src: Path, name: str | None = None) -> str:
        dest = self.inside / (name or src.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest)
        return "/tmp/tcplab/" + (name or src.name)

    def run(self, script: str, timeout: float = 900) -> subprocess.CompletedProcess:
        """Run a shell ``script`` inside the chroot with no network (only ``lo``, and down)."""
        m = self.merged
        outer = (
            f"mount -t overlay overlay -o lowerdir={self.lower},upperdir={self.upper},workdir={self.work} {m}"
            f" && mount -t proc proc {m}/proc && exec chroot {m} /bin/sh -c \"$0\""
        )
        return subprocess.run(["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c", outer, script],
                              capture_output=True, text=True, timeout=timeout)
