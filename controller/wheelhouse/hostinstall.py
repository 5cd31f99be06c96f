"""Install the probe on a lab host from what the control node sent: no index, no internet, no compiler.

Run by the host's own python (standard library only; Ansible's ``script`` module sends it):

    python3 hostinstall.py --bundle install-set.tar --home DIR --venv DIR [--python /usr/bin/python3]

Steps, each only when needed, so a second run with the same files changes nothing:
1. unpack the bundle into ``DIR/install`` (when its sha256 differs from the last install's);
2. apt-get the manifest's packages the host lacks from the bundle's flat repository, through a
   ``file:`` source and lists of our own (the host's sources and lists are not touched or needed);
3. make the virtualenv (``--system-site-packages`` where Debian's python3-* packages stand in for
   wheels PyPI lacks), recreating it if that choice changed;
4. ``pip install --no-index`` (pip run from the archive's pip wheel) the requirements when they
   changed, and the project's wheel when it changed (``--force-reinstall --no-deps``: same version,
   new code); into a new virtualenv, both in one pip run.
It records what it installed in ``VENV/tcplab-install.json`` and prints one JSON line:
``{"changed": bool, "steps": [...]}``; exit 1 with one line on stderr when a step fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

STAMP = "tcplab-install.json"


class InstallError(Exception):
    pass


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run(cmd: list[str], what: str, env: dict | None = None) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr + r.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith(("E:", "ERROR"))] or lines[-1:] or ["no output"]
        raise InstallError(f"{what} failed (exit {r.returncode}): {errors[0]}")


def unpack(bundle: Path, dest: Path) -> dict:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tarfile.open(bundle) as tar:
        for m in tar.getmembers():
            if m.name.startswith("/") or ".." in Path(m.name).parts or not (m.isfile() or m.isdir()):
                raise InstallError(f"{bundle.name}: unexpected member {m.name!r}")
        tar.extractall(dest)
    return json.loads((dest / "manifest.json").read_text())


def missing_packages(names: list[str]) -> list[str]:
    out = []
    for name in names:
        r = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", name], capture_output=True, text=True)
        if r.stdout.strip() != "installed":
            out.append(name)
    return out


def apt_install(repo: Path, names: list[str]) -> None:
    state = repo.parent / "apt-lists"
    (state / "partial").mkdir(parents=True, exist_ok=True)
    sources = repo.parent / "tcplab-local.list"
    sources.write_text(f"deb [trusted=yes] file:{repo} ./\n")
    opts = ["-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=/nonexistent",
            "-o", f"Dir::State::Lists={state}", "-o", "Dir::Cache::pkgcache=",
            "-o", "Dir::Cache::srcpkgcache=", "-o", "APT::Install-Recommends=false",
            "-o", "Acquire::Languages=none"]
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "-qq", *opts, "update"], "apt-get update from the local repository", env)
    run(["apt-get", "-qq", "-y", *opts, "install", *names], f"apt-get install {' '.join(names)}", env)


def venv_matches(venv: Path, system_site: bool) -> bool:
    cfg = venv / "pyvenv.cfg"
    if not (venv / "bin" / "python").exists() or not cfg.is_file():
        return False
    want = "true" if system_site else "false"
    return any(ln.replace(" ", "") == f"include-system-site-packages={want}" for ln in cfg.read_text().splitlines())


def pip_command(venv: Path, wheels: Path) -> list[str]:
    """pip run from the archive's own pip wheel (the venv is made without pip: ensurepip takes
    seconds, and the probe never needs pip at run time), with no index and no .pyc compiling."""
    ours = sorted(wheels.glob("pip-*.whl"))
    if not ours:
        raise InstallError(f"no pip wheel in {wheels}")
    return [str(venv / "bin" / "python"), str(ours[-1] / "pip"), "install", "--quiet", "--no-compile",
            "--disable-pip-version-check", "--no-index", "--find-links", str(wheels)]


def install(bundle: Path, home: Path, venv: Path, python: str) -> dict:
    stamp_path = venv / STAMP
    try:
        stamp = json.loads(stamp_path.read_text())
    except (OSError, ValueError):
        stamp = {}
    archive_sha = sha256_of(bundle)
    workdir = home / "install"
    steps: list[str] = []
    manifest_path = workdir / "manifest.json"
    if stamp.get("archive") != archive_sha or not manifest_path.is_file():
        manifest = unpack(bundle, workdir)
        steps.append("unpack")
    else:
        manifest = json.loads(manifest_path.read_text())
    missing = missing_packages(manifest.get("apt", []))
    if missing:
        apt_install(workdir / "debs", missing)
        steps.append("apt:" + ",".join(missing))
    system_site = bool(manifest.get("system_site_packages"))
    if not venv_matches(venv, system_site):
        if venv.exists():
            shutil.rmtree(venv)
        args = ["--without-pip"] + (["--system-site-packages"] if system_site else [])
        run([python, "-m", "venv", *args, str(venv)], "python3 -m venv")
        steps.append("venv")
    pip = pip_command(venv, workdir / "wheels")
    wheel = workdir / "project" / manifest["wheel"]
    requirements = ["-r", str(workdir / "requirements.txt")]
    if "venv" in steps:  # a new venv: everything in one pip run
        run(pip + requirements + [str(wheel)], f"pip install of {wheel.name} and its dependencies")
        steps += ["dependencies", "project"]
    else:
        if stamp.get("deps") != manifest.get("fingerprint"):
            run(pip + requirements, "pip install of the dependencies")
            steps.append("dependencies")
        if stamp.get("wheel") != manifest.get("wheel_sha256") or "dependencies" in steps:
            run(pip + ["--force-reinstall", "--no-deps", str(wheel)], f"pip install of {wheel.name}")
            steps.append("project")
    if steps:
        stamp_path.write_text(json.dumps({"archive": archive_sha, "deps": manifest.get("fingerprint"),
                                          "wheel": manifest.get("wheel_sha256"), "set": manifest.get("set")}) + "\n")
    return {"changed": bool(steps), "steps": steps, "set": manifest.get("set")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hostinstall.py", description="install the tcplab probe offline")
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--home", type=Path, required=True, help="the probe's home (holds install/)")
    ap.add_argument("--venv", type=Path, required=True)
    ap.add_argument("--python", default=sys.executable, help="the python the virtualenv is made with")
    args = ap.parse_args(argv)
    try:
        out = install(args.bundle, args.home, args.venv, args.python)
    except (InstallError, OSError, tarfile.TarError) as e:
        print(f"tcplab-hostinstall: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
