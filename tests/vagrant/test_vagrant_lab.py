"""The Vagrant target for real (``make test-vagrant``): two Debian 12 VMs with kernels of their own.

What the embedded lab cannot show, because its two hosts share one kernel (without netem) and one
clock: the seed's own tc layout (prio 1:0, netem 20:0 on 1:2, u32 sport/dport filters) shaping
the lab port and nothing else; the probes as systemd units; two clocks estimated separately.

The VMs come from the local box (``make box``) under qemu's software emulation, on a private
network of the project's own (192.168.56.0/24, no route out). They are destroyed afterwards
whatever happened (the fixture's finally, and the Makefile's trap for a signal pytest cannot catch).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from controller.trace import load
from controller.vmlab import __main__ as lab
from tests.netns import require_root
from tests.seedcheck import assert_every_lab_packet_was_shaped, assert_seed_storyline

pytestmark = pytest.mark.vagrant

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INVENTORY = REPO / "inventory" / "vagrant.yml"
HOSTS = yaml.safe_load(INVENTORY.read_text())["all"]["children"]["lab"]["hosts"]
ADDR = {name: h["ansible_host"] for name, h in HOSTS.items()}
# the controller's home on this machine and the probes' on the VMs: apart from the embedded lab's
HOME = "/var/lib/tcplab-vagrant"
PORT = 9090
DELAY = 0.3


def ssh(host: str, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``command`` as root on a VM exactly as Ansible reaches it: its key, checked host keys."""
    vdir = REPO / ".vagrant"
    return subprocess.run(
        ["ssh", "-i", str(vdir / "machines" / host / "libvirt" / "private_key"),
         "-o", f"UserKnownHostsFile={vdir / 'tcplab_known_hosts'}", "-o", "StrictHostKeyChecking=yes",
         "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "ConnectTimeout=20",
         f"vagrant@{ADDR[host]}", f"sudo sh -c {shlex.quote(command)}"],
        capture_output=True, text=True, timeout=timeout)


def stop_controller() -> None:
    """A failed film leaves the controller up for inspection (film.yml): this module's is stopped
    with the VMs, or the next `make test-vagrant` would find it holding the port."""
    config = Path(HOME) / "controller" / "controller.yml"
    if config.exists():
        subprocess.run([str(BIN / "tcplab-controller"), "stop", "--config", str(config)],
                       capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def vms():
    require_root()
    state = None
    t0 = time.monotonic()
    stop_controller()  # one a killed earlier run left behind
    try:
        state = lab.up()
        print(f"vagrant up: {time.monotonic() - t0:.0f} s", file=sys.stderr)
        yield
    finally:
        stop_controller()
        shutil.rmtree(HOME, ignore_errors=True)  # the controller's home on this machine (the VMs go whole)
        undone = lab.down(state)
        print(f"vagrant destroyed and the host restored: {undone}", file=sys.stderr)


@pytest.fixture(scope="module")
def film(vms):
    """``ansible-playbook -i inventory/vagrant.yml lab.yml`` with the seed at 0.3 s: the run's dir."""
    extra = json.dumps({"tcplab_delay": DELAY, "tcplab_home": HOME})
    t0 = time.monotonic()
    res = subprocess.run([str(BIN / "ansible-playbook"), "-i", str(INVENTORY), "lab.yml", "-e", extra],
                         cwd=REPO, capture_output=True, text=True, timeout=2400)
    print(f"lab.yml on the VMs: {time.monotonic() - t0:.0f} s", file=sys.stderr)
    if res.returncode != 0:  # the VMs are destroyed next: keep what their probes said
        journals = {h: ssh(h, f"systemctl status tcplab-probe-{h} --no-pager; "
                              f"journalctl -u tcplab-probe-{h} --no-pager -o cat | tail -n 40").stdout
                    for h in ADDR}
        pytest.fail(res.stdout[-6000:] + res.stderr[-2000:] + "".join(
            f"\n--- {h}'s probe ---\n{j}" for h, j in journals.items()))
    found = re.findall(r"run directory: ([^\s'\"]+)", res.stdout)
    assert found, res.stdout[-3000:]
    return Path(found[-1])


def test_the_vms_answer_with_the_host_keys_vagrant_recorded(vms):
    for host in ADDR:
        r = ssh(host, "hostname; uname -r; cat /etc/machine-id")
        assert r.returncode == 0, r.stderr
        name, kernel, machine_id = r.stdout.split()
        assert name == host and kernel.startswith("6.")
        assert re.fullmatch(r"[0-9a-f]{32}", machine_id)
    ids = {ssh(h, "cat /etc/machine-id").stdout for h in ADDR}
    assert len(ids) == 2  # two VMs from one image, each its own id


def test_the_seed_films_on_two_kernels_with_tc_netem(film):
    recs = load(film / "trace.jsonl")
    info = json.loads((film / "run.json").read_text())
    assert info["ok"], info.get("error")
    assert {h: v["shaper_backend"] for h, v in info["hosts"].items()} == {h: "netem" for h in ADDR}

    assert_seed_storyline(recs, delay=DELAY)
    assert info["causality"]["violations"] == []
    for name in ("film.html", "story.md", "ladder.svg", "ladder.png", "merged.pcapng"):
        assert (film / name).stat().st_size > 1000, name


def test_netem_slowed_the_lab_port_and_nothing_else(film):
    """tc's own counters, read by the probe just before it removed the layout: band 1:2 (netem 20:)
    carried exactly the lab port's packets the capture saw leave; the root also carried SSH and
    ZeroMQ, which never went through netem."""
    recs = load(film / "trace.jsonl")
    info = json.loads((film / "run.json").read_text())
    assert_every_lab_packet_was_shaped(recs, info)
    for host, facts in info["hosts"].items():
        counters = facts["shaper_counters"]
        assert counters["all_packets"] > counters["shaped_packets"], (host, counters)


def test_the_probes_ran_as_systemd_units_and_logged_to_journald(film):
    for host in ADDR:
        unit = f"tcplab-probe-{host}.service"
        r = ssh(host, f"journalctl -u {unit} --no-pager -o cat")
        assert r.returncode == 0, r.stderr
        events = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
        names = [e.get("event") for e in events]
        assert "probe_started" in names and "probe_stopped" in names, names[-20:]
        assert all(e.get("host") == host for e in events if "host" in e)
        # teardown stopped and disabled it
        assert ssh(host, f"systemctl is-active {unit}").stdout.strip() in ("inactive", "failed")
        assert ssh(host, f"systemctl is-enabled {unit}").stdout.strip() != "enabled"


def test_two_clocks_were_estimated_apart(film):
    info = json.loads((film / "run.json").read_text())
    clocks = {h: v["clock"] for h, v in info["hosts"].items()}
    for host, c in clocks.items():
        assert c["samples"] >= 5 and c["uncertainty_ns"] is not None, (host, c)
        assert c["uncertainty_ns"] < 50_000_000, (host, c)  # 50 ms, under software emulation
    # each VM's monotonic clock started at its own boot, one VM after the other
    offsets = [c["offset_ns"] for c in clocks.values()]
    assert abs(offsets[0] - offsets[1]) > 1_000_000_000, clocks


def test_the_seed_layout_is_what_tc_reads_back(film):
    """The probe's netem backend on a real kernel, read back with tc itself: the seed's layout, only
    port 9090 delayed (a refused connect waits for the delayed RST; another port's does not)."""
    venv = f"{HOME}/hosts/thinkpad/venv/bin/python"
    apply = ssh("thinkpad", f"{venv} -c \"from probe.shaper import Shaper; print(Shaper('eth1', {PORT}).apply(300))\"")
    try:
        assert apply.returncode == 0 and apply.stdout.strip().splitlines()[-1] == "netem", apply.stderr
        qdiscs = ssh("thinkpad", "tc qdisc show dev eth1").stdout
        assert re.search(r"qdisc prio 1: root refcnt \d+ bands 3 priomap( 0){16}", qdiscs), qdiscs
        assert re.search(r"qdisc netem 20: parent 1:2 limit \d+ delay 300ms", qdiscs), qdiscs
        filters = ssh("thinkpad", "tc filter show dev eth1 parent 1:").stdout
        assert filters.count("flowid 1:2") == 2, filters
        assert f"match {PORT:04x}0000/ffff0000 at 20" in filters  # ip sport 9090
        assert f"match 0000{PORT:04x}/0000ffff at 20" in filters or f"match {PORT:04x}0000/ffff0000 at 22" in filters
        probe = ("python3 -c \"import socket,time,sys\nfor p in (9090, 9091):\n t=time.monotonic()\n"
                 " try: socket.create_connection(('%s', p), timeout=5)\n except OSError: pass\n"
                 " print(p, round(time.monotonic()-t, 3))\"" % ADDR["thinkpad"])
        times = dict(line.split() for line in ssh("raspberrypi", probe).stdout.splitlines())
        assert float(times["9090"]) >= 0.29 and float(times["9091"]) < 0.2, times
    finally:
        swept = ssh("thinkpad", f"{venv} -c \"from probe.shaper import sweep; print(sweep('eth1', {PORT}))\"")
    assert swept.returncode == 0 and "netem" in swept.stdout, swept.stderr
    assert "prio" not in ssh("thinkpad", "tc qdisc show dev eth1").stdout


IMPAIR = """
import json
from probe.shaper import Shaper, sweep
from tcplab.impairment import Impairment
s = Shaper('eth1', PORT)
out = {}
try:
    out['backend'] = s.apply(Impairment(200, jitter_ms=50, loss_pct=5, duplicate_pct=1, reorder_pct=25,
                                        corrupt_pct=0.5, rate_kbit=2000))
    out['all'] = s.accepted()
    import subprocess
    out['tc_all'] = subprocess.run(['tc', 'qdisc', 'show', 'dev', 'eth1'], capture_output=True, text=True).stdout
    s.apply(Impairment(100))  # changed in place: every other parameter off
    out['plain'] = s.accepted()
    out['tc_plain'] = subprocess.run(['tc', 'qdisc', 'show', 'dev', 'eth1'], capture_output=True, text=True).stdout
finally:
    sweep('eth1', PORT)
print(json.dumps(out))
"""


def test_every_impairment_is_netems_own_and_a_change_turns_the_others_off(film):
    """netem on a real kernel takes every parameter (tc shows them) and the probe reports what it
    holds; a change in place to a plain delay leaves no corruption, rate or reorder behind (netem_change
    keeps an attribute a request leaves out: the probe sends them at zero)."""
    venv = f"{HOME}/hosts/thinkpad/venv/bin/python"
    r = ssh("thinkpad", f"{venv} -c {shlex.quote(IMPAIR.replace('PORT', str(PORT)))}")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["backend"] == "netem"
    got = out["all"]
    assert (got["delay_ms"], got["jitter_ms"], got["rate_kbit"], got["gap"]) == (200, 50, 2000, 1), got
    for key, pct in (("loss_pct", 5), ("duplicate_pct", 1), ("reorder_pct", 25), ("corrupt_pct", 0.5)):
        assert abs(got[key] - pct) < 1e-3, (key, got)
    tc = out["tc_all"]
    assert re.search(r"netem 20: parent 1:2 limit \d+ delay 200ms\s+50ms", tc), tc
    for words in ("loss 5%", "duplicate 1%", "reorder 25%", "corrupt 0.5%", "rate 2Mbit"):
        assert words in tc, (words, tc)
    plain = out["plain"]
    assert plain["delay_ms"] == 100 and not any(plain[k] for k in ("jitter_ms", "loss_pct", "duplicate_pct",
                                                                    "reorder_pct", "corrupt_pct", "rate_kbit"))
    assert not any(w in out["tc_plain"] for w in ("corrupt", "rate", "reorder", "loss", "duplicate")), out["tc_plain"]


def test_doctor_reports_both_vms_ready_for_netem(vms):
    """``tcplab doctor`` against the VMs' inventory: both can run the lab on netem, and it reads the
    6.1 kernel's own tracepoint formats (tcp_retransmit_skb has no ``err`` field there)."""
    r = subprocess.run([str(BIN / "tcplab"), "doctor", "-i", str(INVENTORY), "--json", "-e",
                        json.dumps({"tcplab_home": HOME})], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    report = json.loads(r.stdout)
    for host in ADDR:
        h = report["hosts"][host]
        assert h["verdict"]["can_run"] and h["verdict"]["backend"] == "netem", h["verdict"]
        assert h["kernel"]["release"].startswith("6.1.")
        rtx = h["kernel"]["tracefs"]["tracepoints"]["tcp/tcp_retransmit_skb"]
        assert rtx["present"] and "err" not in rtx["fields"] and "skaddr" in rtx["fields"]


def test_netem_and_the_delay_line_film_the_same_connection(film):
    """``tcplab diff`` between this run (netem, two kernels) and a real run of the same seed at the
    same delay on the embedded lab (the NFQUEUE delay line, tests/data): every step, state change,
    segment (flags, relative Seq/Ack, length, retransmission), kernel event and console line must
    agree; only the times may differ (a VM under software emulation answers a command later) and
    the shaper's backend (docs/backends.md)."""
    netns = REPO / "tests" / "data" / "seed-0.3s.trace.jsonl"
    r = subprocess.run([str(BIN / "tcplab"), "diff", str(netns), str(film), "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stderr
    report = json.loads(r.stdout)
    structural = [d for d in report["differences"] if d["what"] != "time"
                  and not (d["kind"] == "shaper" and d["a"]["backend"] == "nfqueue" and d["b"]["backend"] == "netem"
                           and d["a"]["delay_ms"] == d["b"]["delay_ms"])]
    assert structural == [], [d["text"] for d in structural]
    shapers = [d for d in report["differences"] if d["kind"] == "shaper" and d["what"] == "changed"]
    assert {d["role"] for d in shapers} == {"server", "client"}  # the backends did differ
