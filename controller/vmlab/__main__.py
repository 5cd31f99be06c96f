"""``python -m controller.vmlab box|up|down``: the Vagrant two-VM lab on this machine.

    box    build the local box (or reuse the cached one) and print its path
    up     libvirt's daemons and pool, the box added to Vagrant, ``vagrant up`` of both VMs
    down   ``vagrant destroy -f``, the libvirt networks, libvirt's new iptables chains, and the
           daemons ``up`` started (what ``up`` changed is recorded in the cache's host-state.json)

The VMs run the local box under qemu's software emulation unless TCPLAB_VAGRANT_BOX /
TCPLAB_VAGRANT_DRIVER say otherwise (see the Vagrantfile). Exit codes: 0 done, 1 failed (one line
on stderr), 2 bad usage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from controller.vmlab import box, libvirt
from tcplab import logs

REPO = Path(__file__).resolve().parents[2]


def lab_env() -> dict[str, str]:
    cache = box.cache_dir().parent
    return {**libvirt.vagrant_env(cache), "TCPLAB_VAGRANT_BOX": os.environ.get("TCPLAB_VAGRANT_BOX", libvirt.BOX),
            "TCPLAB_VAGRANT_DRIVER": os.environ.get("TCPLAB_VAGRANT_DRIVER", "qemu"),
            "TCPLAB_VAGRANT_POOL": os.environ.get("TCPLAB_VAGRANT_POOL", libvirt.POOL)}


def _state_file() -> Path:
    return box.cache_dir().parent / "host-state.json"


def log_path() -> Path:
    return box.cache_dir().parent / "vagrant.log"


def vagrant(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run vagrant with the lab's environment; its output goes to the cache's vagrant.log (to
    follow a slow boot: ``tail -f /var/cache/tcplab/vagrant.log``) and comes back in ``stdout``."""
    path = log_path()
    with open(path, "a") as f:
        f.write(f"$ vagrant {' '.join(args)}\n")
        f.flush()
        start = f.tell()
        r = subprocess.run(["vagrant", *args], cwd=REPO, env={**os.environ, **lab_env()},
                           stdout=f, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    with open(path) as f:
        f.seek(start)
        return subprocess.CompletedProcess(r.args, r.returncode, f.read(), "")


def _saved_state() -> libvirt.HostState | None:
    try:
        saved = json.loads(_state_file().read_text())
        return libvirt.HostState(saved["started_pids"], {tuple(c) for c in saved["chains_before"]})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def up() -> libvirt.HostState:
    # an earlier `up` that was never taken down knows what it started: keep that, not today's view
    state = _saved_state() or libvirt.HostState()
    libvirt.prepare(state)
    _state_file().write_text(json.dumps({**asdict(state), "chains_before": sorted(state.chains_before)}))
    env = lab_env()
    if env["TCPLAB_VAGRANT_BOX"] == libvirt.BOX:
        built = box.build()
        libvirt.ensure_pool(box.cache_dir().parent / "pool")
        libvirt.ensure_box(built, box.recipe(), env)
    r = vagrant("up", "--provider=libvirt", "--no-parallel")
    if r.returncode != 0:
        raise libvirt.VmLabError(f"vagrant up failed (exit {r.returncode}; all of it in {log_path()}): "
                                 f"{' | '.join(r.stdout.strip().splitlines()[-4:])}")
    return state


def down(state: libvirt.HostState | None = None) -> list[str]:
    if state is None:
        state = _saved_state() or libvirt.HostState(chains_before=libvirt.libvirt_chains())
    r = vagrant("destroy", "-f", timeout=300)
    undone = ["vagrant destroy"] if r.returncode == 0 else []
    undone += libvirt.restore(state)
    _state_file().unlink(missing_ok=True)
    return undone


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv not in (["box"], ["up"], ["down"]):
        print("usage: python -m controller.vmlab box|up|down", file=sys.stderr)
        return 2
    logs.configure_cli()  # events on stderr: stdout is the box's path, or what down removed
    try:
        if argv == ["box"]:
            print(box.build())
        elif argv == ["up"]:
            up()
        else:
            for line in down():
                print(line)
    except (box.BoxError, libvirt.VmLabError, subprocess.TimeoutExpired) as e:
        print(f"tcplab vmlab: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
