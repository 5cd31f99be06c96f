"""The testbed against a hostile local user (uid nobody): a planted symlink, a world-writable home, a
held lock. Each is refused with one line, nothing is followed and nothing is built."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from controller.testbed import TestbedSpec, down, lock, up
from controller.testbed.safepath import RUNTIME, UnsafePath, ensure_dir
from tests.integration.test_testbed import kernel_links, kernel_namespaces
from tests.netns import require_root

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534


def as_nobody(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups", *argv],
                          capture_output=True, text=True, timeout=30)


def lab(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "controller.testbed.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def sticky():
    """A directory like /tmp (root's, mode 1777) where anyone may plant a name."""
    require_root()
    if kernel_namespaces() or kernel_links():
        pytest.skip("a tcplab testbed is already up on this machine (run `tcplab lab down`)")
    d = Path("/tmp") / f"tcplab-sticky-{secrets.token_hex(3)}"
    d.mkdir(mode=0o700)
    d.chmod(0o1777)
    try:
        yield d
    finally:
        shutil.rmtree(d)
        assert kernel_namespaces() == set() and kernel_links() == set()


def test_a_planted_symlink_home_is_refused_and_not_followed(sticky, tmp_path):
    victim = tmp_path / "victim"          # root's: what the link tries to make root write into
    victim.mkdir()
    home = sticky / "home"
    assert as_nobody("ln", "-s", str(victim), str(home)).returncode == 0
    with pytest.raises(UnsafePath, match=rf"^{home} is a symlink owned by uid {NOBODY}$"):
        up(TestbedSpec(home=home), wait=5)
    r = lab("up", "--home", str(home), "--wait", "5")
    assert r.returncode == 1 and r.stderr == f"tcplab lab up: {home} is a symlink owned by uid {NOBODY}\n"
    assert list(victim.iterdir()) == [] and kernel_namespaces() == set()
    # a name taken inside the home's way: the same
    assert as_nobody("mkdir", str(sticky / "theirs")).returncode == 0
    with pytest.raises(UnsafePath, match=f"^{sticky}/theirs is owned by uid {NOBODY}, not root"):
        up(TestbedSpec(home=sticky / "theirs" / "home"), wait=5)
    assert list((sticky / "theirs").iterdir()) == []


def test_down_with_a_planted_home_removes_nothing_below_it(sticky, tmp_path):
    victim = tmp_path / "victim"
    (victim / "testbed").mkdir(parents=True)
    (victim / "testbed" / "precious").write_text("root's\n")
    (victim / "hosts" / "thinkpad").mkdir(parents=True)
    (victim / "hosts" / "thinkpad" / "probe.pid").write_text(f"{os.getpid()}\n")  # would name this process
    home = sticky / "home"
    assert as_nobody("ln", "-s", str(victim), str(home)).returncode == 0
    with pytest.raises(UnsafePath, match="removed the namespaces and links, left .* alone"):
        down(TestbedSpec(home=home), wait=5)
    assert (victim / "testbed" / "precious").read_text() == "root's\n"
    assert (victim / "hosts" / "thinkpad" / "probe.pid").exists()


def test_a_home_others_can_write_to_is_refused(sticky, tmp_path):
    open_home = tmp_path / "open"
    open_home.mkdir()
    open_home.chmod(0o777)
    with pytest.raises(UnsafePath, match=rf"^{open_home} is writable by others \(mode 0777\)$"):
        up(TestbedSpec(home=open_home), wait=5)
    assert list(open_home.iterdir()) == []
    # a world-writable parent that is not sticky: anyone could swap the home
    with pytest.raises(UnsafePath, match=rf"^{open_home} is writable by others \(mode 0777\)$"):
        up(TestbedSpec(home=open_home / "home"), wait=5)
    assert not (open_home / "home").exists()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, NOBODY, NOBODY)
    r = lab("up", "--home", str(theirs), "--wait", "5")
    assert r.returncode == 1 and r.stderr == f"tcplab lab up: {theirs} is owned by uid {NOBODY}, not root (mode 0755)\n"
    assert kernel_namespaces() == set()


def test_a_held_lock_is_waited_for_then_refused_naming_its_holder(sticky, tmp_path):
    with lock.held("test"):   # the lock file exists, root's, 0600
        pass
    st = os.lstat(lock.LOCK_FILE)
    assert (st.st_uid, st.st_mode & 0o777) == (0, 0o600) and os.lstat(RUNTIME).st_mode & 0o022 == 0
    # nobody else can even open it to hold it
    r = as_nobody("flock", "-n", str(lock.LOCK_FILE), "true")
    assert r.returncode != 0 and "Permission denied" in r.stderr
    holder = subprocess.Popen(["flock", "-o", str(lock.LOCK_FILE), "sleep", "30"], start_new_session=True)
    try:
        deadline = time.monotonic() + 5
        while str(holder.pid) not in Path("/proc/locks").read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        started = time.monotonic()
        r = lab("up", "--home", str(tmp_path / "home"), "--wait", "1.5")
        waited = time.monotonic() - started
        assert r.returncode == 1
        assert r.stderr == (f"tcplab lab up: the testbed is locked by pid {holder.pid} (flock -o {lock.LOCK_FILE} sleep 30); "
                            f"waited 1.5 s for {lock.LOCK_FILE}\n")
        assert 1.5 <= waited < 10 and not (tmp_path / "home").exists() and kernel_namespaces() == set()
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # flock and its sleep (its own session)
        holder.wait()
    with lock.held("test", wait=2):  # free again
        assert Path(lock.LOCK_FILE).read_text() == f"{os.getpid()} test\n"


def test_a_symlink_in_the_locks_place_is_not_followed(tmp_path):
    require_root()
    target = tmp_path / "target"
    ensure_dir(tmp_path / "locks", 0o755)
    (tmp_path / "locks" / "testbed.lock").symlink_to(target)
    with pytest.raises(UnsafePath, match="cannot open the lock .*: Too many levels of symbolic links"):
        with lock.held("test", wait=1, path=tmp_path / "locks" / "testbed.lock"):
            pass
    assert not target.exists()
