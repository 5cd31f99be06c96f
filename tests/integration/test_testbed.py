"""The embedded testbed, built for real: namespaces, bridge, sshd, ssh and Ansible.

Each test gets its own TCPLAB_HOME (tmp_path) and tears the testbed down afterwards. The
testbed uses the lab's fixed names (tcplab-thinkpad, tcplab0, ...), so a test skips rather
than touch a testbed somebody else has up on this machine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import structlog

from controller.testbed import TestbedSpec, down, purge, status, up
from controller.testbed import processes
from tests.netns import require_root

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
NAMESPACES = ("tcplab-thinkpad", "tcplab-raspberrypi")
LINKS = ("tcplab0", "tcplab1", "tcplab2")


def cli(*args: str, home: Path, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "controller.testbed.cli", *args, "--home", str(home)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def kernel_namespaces() -> set[str]:
    return {n for n in os.listdir("/run/netns") if n in NAMESPACES} if os.path.isdir("/run/netns") else set()


def kernel_links() -> set[str]:
    return {n for n in os.listdir("/sys/class/net") if n in LINKS}


def ssh(spec: TestbedSpec, ip: str, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh", *spec.ssh_args(), "-o", "ConnectTimeout=5", f"root@{ip}", *cmd],
                          capture_output=True, text=True, timeout=30)


def assert_nothing_left(spec: TestbedSpec, pids: list[int]) -> None:
    assert kernel_namespaces() == set()
    assert kernel_links() == set()
    assert [p for p in pids if processes.cmdline(p) is not None] == []
    assert not spec.dir.exists() and not (spec.home / "hosts").exists()


@pytest.fixture
def spec(tmp_path):
    require_root()
    if kernel_namespaces() or kernel_links():
        pytest.skip("a tcplab testbed is already up on this machine (run `tcplab lab down`)")
    spec = TestbedSpec(home=tmp_path / "home")
    try:
        yield spec
    finally:
        down(spec)
        assert kernel_namespaces() == set() and kernel_links() == set()


def sshd_pids(spec: TestbedSpec) -> list[int]:
    return [h["sshd_pid"] for h in status(spec)["hosts"].values()]


def test_up_gives_two_hosts_reachable_over_strict_ssh(spec):
    out = json.loads(cli("up", "--json", home=spec.home).stdout)
    assert out["changed"] is True
    assert set(out["hosts"]) == {"thinkpad", "raspberrypi"}
    for name, ip in (("thinkpad", "10.90.0.1"), ("raspberrypi", "10.90.0.2")):
        r = ssh(spec, ip, "hostname")
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == name
    known = spec.known_hosts.read_text()
    assert "10.90.0.1,thinkpad ssh-ed25519 " in known and "10.90.0.2,raspberrypi ssh-ed25519 " in known


def test_namespaces_have_no_default_route_and_talk_to_each_other(spec):
    up(spec)
    for ns in NAMESPACES:
        routes = subprocess.run(["ip", "netns", "exec", ns, "ip", "route"],
                                capture_output=True, text=True, check=True).stdout
        assert "default" not in routes and "10.90.0.0/24 dev eth0" in routes
    st = status(spec)
    assert st["up"] is True
    assert st["bridge"]["addresses"] == ["10.90.0.254/24"]
    server = subprocess.Popen(["ip", "netns", "exec", "tcplab-thinkpad", "nc", "-l", "10.90.0.1", "9091"],
                              stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 5
        while True:  # wait for the listener, then send one line across the bridge
            client = subprocess.run(["ip", "netns", "exec", "tcplab-raspberrypi", "nc", "-N", "-w", "2",
                                     "10.90.0.1", "9091"], input="hello thinkpad\n", text=True,
                                    capture_output=True)
            if client.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert client.returncode == 0, client.stderr
        assert server.communicate(timeout=5)[0] == "hello thinkpad\n"
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_second_up_changes_nothing_and_restarts_nothing(spec):
    first = up(spec)
    pids = sshd_pids(spec)
    with structlog.testing.capture_logs() as logs:
        second = up(spec)
    assert first["changed"] is True and second["changed"] is False
    assert sshd_pids(spec) == pids
    assert not [e for e in logs if e["event"] in ("testbed_sshd_started", "testbed_namespace_created")]
    assert json.loads(cli("up", "--json", home=spec.home).stdout)["changed"] is False


def test_up_repairs_a_killed_sshd(spec):
    up(spec)
    old = status(spec)["hosts"]["raspberrypi"]["sshd_pid"]
    os.kill(old, signal.SIGKILL)
    with structlog.testing.capture_logs() as logs:
        again = up(spec)
    assert again["changed"] is True
    started = [e for e in logs if e["event"] == "testbed_sshd_started"]
    assert [e["host"] for e in started] == ["raspberrypi"]
    new = status(spec)["hosts"]["raspberrypi"]["sshd_pid"]
    assert new and new != old
    assert ssh(spec, "10.90.0.2", "hostname").stdout.strip() == "raspberrypi"


def test_down_removes_everything_and_twice_is_fine(spec):
    spec.home.mkdir(parents=True)
    up(spec)
    pids = sshd_pids(spec)
    # a probe and an nc endpoint as Ansible and the probe would record them
    hostdir = spec.home / "hosts" / "thinkpad"
    hostdir.mkdir(parents=True)
    nc = subprocess.Popen(["ip", "netns", "exec", "tcplab-thinkpad", "nc", "-l", "10.90.0.1", "9092"],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    time.sleep(0.2)
    (hostdir / "nc-server.pid").write_text(f"{nc.pid}\n")
    (hostdir / "probe.pid").write_text("999999\n")  # stale: must be ignored, not fail
    assert json.loads(cli("down", "--json", home=spec.home).stdout)["changed"] is True
    nc.wait(timeout=5)
    assert_nothing_left(spec, pids + [nc.pid])
    assert not spec.home.exists()  # nothing else lived there
    assert json.loads(cli("down", "--json", home=spec.home).stdout)["changed"] is False


def test_down_keeps_the_probe_cache_and_purge_removes_it(spec, tmp_path):
    spec = dataclasses.replace(spec, probe_cache=tmp_path / "cache" / "probes")
    up(spec)
    venv = spec.probe_cache / "thinkpad" / "venv"
    venv.mkdir(parents=True)
    (venv / "tcplab-install.json").write_text("{}\n")
    assert down(spec)["changed"] is True
    assert kernel_namespaces() == set() and (venv / "tcplab-install.json").exists()
    assert purge(spec)["changed"] is True
    assert not spec.probe_cache.exists() and not spec.probe_cache.parent.exists()
    assert purge(spec)["changed"] is False


def test_a_command_over_ssh_does_not_run_roots_bashrc(spec):
    """sshd hands its sessions SHLVL=1, so bash skips ~/.bashrc (0.1 s per command here: pyenv init)."""
    up(spec)
    r = ssh(spec, "10.90.0.1", 'echo "$SHLVL ${PYENV_ROOT-unset}"')
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["2", "unset"]


def test_down_removes_the_controller_home_but_keeps_what_others_put_in_home(spec):
    up(spec)
    (spec.home / "controller").mkdir()
    (spec.home / "controller" / "controller.yml").write_text("bind: tcp://10.90.0.254:5555\n")
    (spec.home / "notes.txt").write_text("not the lab's\n")
    down(spec)
    assert not (spec.home / "controller").exists() and not spec.dir.exists()
    assert (spec.home / "notes.txt").exists()


def test_down_after_crash_with_state_dir_gone(spec):
    up(spec)
    pids = sshd_pids(spec)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(spec.dir)
    assert down(spec)["changed"] is True
    assert_nothing_left(spec, pids)


def test_down_after_crash_with_sshd_alive_but_pid_files_lost(spec):
    up(spec)
    pids = sshd_pids(spec)
    shutil.rmtree(spec.home)  # lost state, processes still running inside the namespaces
    assert down(spec)["changed"] is True
    assert_nothing_left(spec, pids)


def test_cli_usage_errors_exit_2():
    from controller.testbed.cli import main
    assert main([]) == 2
    assert main(["sideways"]) == 2


def test_ansible_pings_both_hosts_over_ssh(spec, tmp_path):
    up(spec)
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(json.dumps({"all": {
        "hosts": {"thinkpad": {"ansible_host": "10.90.0.1"},
                  "raspberrypi": {"ansible_host": "10.90.0.2"}},
        "vars": {"ansible_user": "root",
                 "ansible_ssh_private_key_file": str(spec.client_key),
                 "ansible_ssh_common_args": f"-o UserKnownHostsFile={spec.known_hosts} "
                                            "-o StrictHostKeyChecking=yes",
                 "ansible_python_interpreter": "/usr/bin/python3"}}}))
    env = dict(os.environ, ANSIBLE_HOST_KEY_CHECKING="True", ANSIBLE_HOME=str(tmp_path / "ansible"),
               ANSIBLE_SSH_ARGS="-o ControlMaster=no", ANSIBLE_CONFIG=str(tmp_path / "none.cfg"),
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-tmp"))
    r = subprocess.run([str(VENV_BIN / "ansible"), "-i", str(inventory), "all", "-m", "ping", "-o"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "thinkpad | SUCCESS" in r.stdout and "raspberrypi | SUCCESS" in r.stdout


def test_up_with_another_home_fails_fast_with_one_line(spec, tmp_path):
    up(spec)
    t0 = time.monotonic()
    r = cli("up", home=tmp_path / "other", check=False)
    assert r.returncode == 1
    assert time.monotonic() - t0 < 8
    err = r.stderr.strip().splitlines()[-1]
    assert "already served by another sshd" in err and str(spec.home) in err
    other = TestbedSpec(home=tmp_path / "other")
    assert not other.sshd_dir.exists() and spec.authorized_keys.exists()  # nothing of the failed up left in /run
