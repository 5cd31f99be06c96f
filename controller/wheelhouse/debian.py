"""Debian packages for another host, fetched with an apt of tcplab's own: a local apt repository.

The control node runs ``apt-get`` with every directory (sources, lists, status, cache) in a temporary
directory under the wheelhouse and ``APT::Architecture`` set to the host's: the system's dpkg
architectures, sources and lists are never touched, and nothing needs root.

What to download: the closure of the requested packages *beyond Debian's required set* (Priority:
required, which every Debian system has, debootstrap's minbase included). The status file apt sees
lists exactly those packages as installed, so ``apt-get install --download-only`` fetches the rest.
The result is a flat repository (``Packages`` beside the .debs) that the host's apt reads through a
``file:`` source with no network; its apt installs only what that host lacks, never downgrades.

The mirror is the control node's own (its apt sources' Debian and Debian security URIs), or
``TCPLAB_DEBIAN_MIRROR`` / ``TCPLAB_DEBIAN_SECURITY_MIRROR``; the keyring is debian-archive-keyring's.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import structlog

from controller.wheelhouse import WheelhouseError, run
from controller.wheelhouse.hostinstall import sha256_of

log = structlog.get_logger("tcplab.wheelhouse")

KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


def mirrors(sources=SOURCES) -> tuple[str, str | None]:
    """(Debian mirror, Debian security mirror) from the environment or this machine's apt sources."""
    main, security = os.environ.get("TCPLAB_DEBIAN_MIRROR"), os.environ.get("TCPLAB_DEBIAN_SECURITY_MIRROR")
    for uri, suite in _source_entries(sources):
        if suite.endswith("-security"):
            security = security or uri
        elif "-" not in suite and uri.rstrip("/").endswith("/debian"):
            main = main or uri
    if not main:
        raise WheelhouseError(
            "no Debian mirror in this machine's apt sources: set TCPLAB_DEBIAN_MIRROR to one"
        )
    return main.rstrip("/"), security.rstrip("/") if security else None


def _source_entries(sources) -> list[tuple[str, str]]:
    files: list[Path] = []
    for p in sources:
        files += sorted(p.glob("*.sources")) + sorted(p.glob("*.list")) if p.is_dir() else [p]
    out = []
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        if f.suffix == ".sources":
            for stanza in text.split("\n\n"):
                fields = dict(re.findall(r"(?m)^([A-Za-z-]+):\s*(.*)$", stanza))
                if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
                    out += [(u, s) for u in fields.get("URIs", "").split() for s in fields.get("Suites", "").split()]
        else:
            for line in text.splitlines():
                m = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line.strip())
                if m:
                    out.append((m[1], m[2]))
    return out


def stanzas(text: str) -> list[dict[str, str]]:
    """A Packages or status file as a list of {field: value} (continuation lines kept)."""
    out = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields:
            out.append(fields)
    return out


def render(stanza: dict[str, str]) -> str:
    return "".join(f"{k}: {v}\n" for k, v in stanza.items())


def fetch_repo(release: str, arch: str, packages: list[str], dest: Path, workdir: Path) -> list[Path]:
    """Download ``packages`` and their closure for Debian ``release``/``arch`` into ``dest``,
    a flat apt repository (``dest/Packages``). Returns the .deb files."""
    if not KEYRING.is_file():
        raise WheelhouseError(f"{KEYRING} is missing: install debian-archive-keyring")
    main, security = mirrors()
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"tcplab-apt-{release}-{arch}-", dir=workdir) as tmp:
        apt = _PrivateApt(Path(tmp), arch)
        lines = [f"deb [signed-by={KEYRING}] {main} {release} {release}-updates main"]
        if security:
            lines.append(f"deb [signed-by={KEYRING}] {security} {release}-security main")
        apt.sources.write_text("\n".join(lines) + "\n")
        try:
            apt.run("update")
        except WheelhouseError as e:
            if not (security and security in str(e)):
                raise
            # a security index the mirror serves inconsistently must not stop an offline install
            log.warning("debian_security_unavailable", release=release, arch=arch, error=str(e))
            apt.sources.write_text(lines[0] + "\n")
            apt.run("update")
        index = apt.index()
        status = [{"Package": s["Package"], "Status": "install ok installed",
                   **{k: v for k, v in s.items() if k not in ("Package", "Filename", "Size")}}
                  for s in base_system(index)]
        apt.status.write_text("\n".join(render(s) for s in status))
        apt.run("install", "--download-only", "--yes", *packages)
        by_sha = {s.get("SHA256"): s for s in index}
        debs, repo = [], []
        for deb in sorted(apt.archives.glob("*.deb")):
            stanza = by_sha.get(sha256_of(deb))
            if stanza is None:
                raise WheelhouseError(f"{deb.name} is in no index apt read: the mirror changed under us")
            shutil.copy(deb, dest / deb.name)
            repo.append({**stanza, "Filename": f"./{deb.name}"})
            debs.append(dest / deb.name)
    (dest / "Packages").write_text("\n".join(render(s) for s in repo))
    log.info("debian_packages_fetched", release=release, arch=arch, asked=packages, debs=len(debs))
    return debs


def base_system(index: list[dict[str, str]]) -> list[dict[str, str]]:
    """What every Debian system has: the Priority: required packages and apt, with their dependencies
    (debootstrap's minbase). The first stanza of a name wins: the release's own list comes first."""
    first: dict[str, dict[str, str]] = {}
    provides: dict[str, str] = {}
    for s in index:
        first.setdefault(s["Package"], s)
        for p in _names(s.get("Provides", "")):
            provides.setdefault(p, s["Package"])
    todo = [n for n, s in first.items() if s.get("Priority") == "required"] + ["apt"]
    chosen: dict[str, dict[str, str]] = {}
    while todo:
        name = todo.pop()
        name = name if name in first else provides.get(name, name)
        if name in chosen or name not in first:
            continue
        chosen[name] = first[name]
        for field in ("Pre-Depends", "Depends"):
            todo += _names(first[name].get(field, ""), first_alternative=True)
    return sorted(chosen.values(), key=lambda s: s["Package"])


def _names(relation: str, first_alternative: bool = False) -> list[str]:
    out = []
    for clause in filter(None, (c.strip() for c in relation.split(","))):
        alts = [a.strip() for a in clause.split("|")]
        for alt in alts[:1] if first_alternative else alts:
            out.append(re.split(r"[\s(:\[]", alt, maxsplit=1)[0])
    return out


class _PrivateApt:
    """apt-get with every path of its own, for one foreign architecture."""

    def __init__(self, root: Path, arch: str):
        self.root, self.arch = root, arch
        for d in ("lists/partial", "archives/partial", "cache", "empty", "log"):
            (root / d).mkdir(parents=True, exist_ok=True)
        self.sources = root / "sources.list"
        self.status = root / "status"
        self.status.write_text("")
        self.archives = root / "archives"

    def options(self) -> list[str]:
        r = self.root
        opts = {
            "APT::Architecture": self.arch,
            "APT::Architectures": self.arch,
            "APT::Install-Recommends": "false",
            "APT::Install-Suggests": "false",
            "Dir::Etc::SourceList": str(self.sources),
            "Dir::Etc::SourceParts": str(r / "empty"),
            "Dir::Etc::Preferences": str(r / "preferences"),
            "Dir::Etc::PreferencesParts": str(r / "empty"),
            "Dir::State": str(r),
            "Dir::State::Lists": str(r / "lists"),
            "Dir::State::status": str(self.status),
            "Dir::Cache": str(r / "cache"),
            "Dir::Cache::Archives": str(self.archives),
            "Dir::Cache::pkgcache": "",
            "Dir::Cache::srcpkgcache": "",
            "Dir::Log": str(r / "log"),
            "Acquire::GzipIndexes": "false",
            "Acquire::Languages": "none",
            "Acquire::By-Hash": "force",
            "Debug::NoLocking": "true",
        }
        return [arg for k, v in opts.items() for arg in ("-o", f"{k}={v}")]

    def run(self, *args: str) -> None:
        run(["apt-get", "--quiet", "--quiet", *self.options(), *args], f"apt-get {args[0]} for {self.arch}",
            {"DEBIAN_FRONTEND": "noninteractive"})

    def index(self) -> list[dict[str, str]]:
        lists = sorted(self.root.joinpath("lists").glob("*_Packages"), key=lambda p: ("-" in p.name.split("_dists_")[-1].split("_")[0], p.name))
        if not lists:
            raise WheelhouseError(f"apt-get update for {self.arch} left no Packages list")
        return [s for p in lists for s in stanzas(p.read_text(errors="replace"))]

