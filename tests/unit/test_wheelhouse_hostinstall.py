"""The host's installer, for real on this machine: a venv, pip with no index, each step only when needed."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import zipfile
from pathlib import Path

from controller.wheelhouse import hostinstall


def make_wheel(d: Path, name: str, version: str, code: str) -> Path:
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}_mod.py": code,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{dist}/RECORD"] = "".join(f"{n},,\n" for n in files) + f"{dist}/RECORD,,\n"
    path = d / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for n, text in files.items():
            z.writestr(n, text)
    return path


PIP_WHEEL = sorted(Path("/usr/share/python-wheels").glob("pip-*.whl"))[-1]  # python3-venv brings it


def make_bundle(d: Path, dep: Path, wheel: Path, deps: str) -> Path:
    """An archive laid out as bundle.py writes it (a toy dependency, Debian's pip wheel)."""
    manifest = {"set": "x86_64-py3.11-bookworm", "apt": ["dpkg"], "system_site_packages": False,
                "fingerprint": deps, "wheel": wheel.name, "wheel_sha256": hostinstall.sha256_of(wheel)}
    members = {"manifest.json": json.dumps(manifest), "requirements.txt": "tcplabdep>=1\n"}
    path = d / "install-set.tar"
    with tarfile.open(path, "w") as tar:
        for n, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(n)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        tar.add(dep, arcname=f"wheels/{dep.name}")
        tar.add(PIP_WHEEL, arcname=f"wheels/{PIP_WHEEL.name}")
        tar.add(wheel, arcname=f"project/{wheel.name}")
    return path


def installed_code(venv: Path) -> str:
    return subprocess.run([venv / "bin/python", "-c", "import tcplab_mod, tcplabdep_mod; print(tcplab_mod.X)"],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_install_then_nothing_then_only_what_changed(tmp_path):
    src, home = tmp_path / "src", tmp_path / "home"
    src.mkdir()
    venv = home / "venv"
    dep = make_wheel(src, "tcplabdep", "1.0", "Y = 1\n")
    bundle = make_bundle(src, dep, make_wheel(src, "tcplab", "0.0.1", "X = 'first'\n"), deps="d1")

    first = hostinstall.install(bundle, home, venv, "/usr/bin/python3")
    assert first["changed"] and first["steps"] == ["unpack", "venv", "dependencies", "project"]
    assert installed_code(venv) == "first"
    cfg = (venv / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg and not (venv / "bin/pip").exists()

    assert hostinstall.install(bundle, home, venv, "/usr/bin/python3") == {
        "changed": False, "steps": [], "set": "x86_64-py3.11-bookworm"}

    bundle = make_bundle(src, dep, make_wheel(src, "tcplab", "0.0.1", "X = 'same version, new code'\n"), deps="d1")
    assert hostinstall.install(bundle, home, venv, "/usr/bin/python3")["steps"] == ["unpack", "project"]
    assert installed_code(venv) == "same version, new code"

    bundle = make_bundle(src, dep, make_wheel(src, "tcplab", "0.0.2", "X = 'newer'\n"), deps="d2")
    steps = hostinstall.install(bundle, home, venv, "/usr/bin/python3")["steps"]
    assert steps == ["unpack", "dependencies", "project"]
    assert installed_code(venv) == "newer"
    assert [p.name for p in (home / "install/project").iterdir()] == ["tcplab-0.0.2-py3-none-any.whl"]


def test_a_bundle_with_a_path_outside_is_refused_on_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        info = tarfile.TarInfo("../escape")
        tar.addfile(info, io.BytesIO(b""))
    rc = hostinstall.main(["--bundle", str(bad), "--home", str(tmp_path / "h"), "--venv", str(tmp_path / "h/venv")])
    err = capsys.readouterr().err
    assert rc == 1 and err.count("\n") == 1 and "unexpected member '../escape'" in err
