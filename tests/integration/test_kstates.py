"""Kernel-timestamped states (probe/kstates.py) in real probes, real nc, real kernel TCP, at zero delay.

A witness instance of the test's own records what the kernel did on the lab port; the trace must
hold every one of those transitions, with the kernel's times.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from controller.trace import load
from probe.kstates import TRACEFS, KernelStates, KStatesError, parse_page
from tests.daemons import VENV_BIN, Lab

pytestmark = pytest.mark.integration

SEED_AT_ZERO = {
    "name": "seed-at-zero", "port": 9090, "delay": 0.0,
    "steps": [
        {"action": "listen", "host": "thinkpad", "expect": ["thinkpad LISTEN"]},
        {"action": "connect", "host": "raspberrypi", "to": "thinkpad",
         "expect": ["raspberrypi ESTABLISHED", "thinkpad ESTABLISHED"]},
        {"action": "send", "host": "thinkpad", "text": "Hello", "expect": ["raspberrypi prints Hello"]},
        {"action": "close", "host": "thinkpad", "expect": ["thinkpad FIN_WAIT2", "raspberrypi CLOSE_WAIT"]},
        {"action": "close", "host": "raspberrypi", "expect": ["raspberrypi CLOSED", "thinkpad TIME_WAIT"]},
    ],
}


class Everyone:
    def __contains__(self, pid) -> bool:
        return True


@pytest.fixture(scope="module", autouse=True)
def tracefs_mounted():
    """The test reads tracefs from this (the root) mount namespace: mount it where the machine did not
    (the probes mount their own inside each host's namespace, as `ip netns exec` gives a fresh /sys),
    and unmount it afterwards if this module mounted it."""
    if (TRACEFS / "instances").is_dir():
        yield
        return
    subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", str(TRACEFS)], check=False)


def instances() -> set[str]:
    return {n for n in os.listdir(TRACEFS / "instances") if n.startswith("tcplab-")}


@pytest.fixture
def lab(netns_pair, tmp_path):
    lab = Lab(netns_pair, tmp_path)
    try:
        yield lab
    finally:
        lab.close()


def run_seed(lab, tmp_path):
    res, run_dir = lab.run_scenario(SEED_AT_ZERO)
    assert res.returncode == 0, res.stderr + res.stdout
    return load(run_dir / "trace.jsonl")


def conn_states(recs, host, port=None):
    """Connection states of a host; with ``port``, of the connection of that client port only (other
    test sessions may run connections between the same addresses in namespaces of their own, and the
    tracepoint, like the addresses, cannot tell namespaces apart)."""
    return [r for r in recs if r["kind"] == "state" and r["host"] == host and r["remote"] != "0.0.0.0:*"
            and (port is None or port in (r["local"], r["remote"]))]


def client_port(recs):
    return next(r["local"] for r in recs if r["kind"] == "state" and r["host"] == "raspberrypi"
                and r["remote"] == "10.90.0.1:9090")


def own_instances(lab) -> set[str]:
    return {f"tcplab-{h}-{lab.probe_pid(h)}" for h in lab.hosts}


def test_at_zero_delay_every_kernel_transition_is_in_the_trace_with_its_kernel_time(lab, tmp_path, netns_pair):
    witness = {h.ip: KernelStates(f"witness{i}", 9090, h.ip, Everyone).open()
               for i, h in enumerate((netns_pair.a, netns_pair.b))}
    try:
        lab.start()
        ours = own_instances(lab)
        assert ours <= instances()
        recs = run_seed(lab, tmp_path)
        kernel = {ip: w.read(0.2) for ip, w in witness.items()}
    finally:
        for w in witness.values():
            w.close()
    port = client_port(recs)
    client, server = conn_states(recs, "raspberrypi", port), conn_states(recs, "thinkpad", port)
    assert [r["to"] for r in client] == ["SYN_SENT", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    assert [r["to"] for r in server] == ["SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"]
    assert all(r["source"] == "tracepoint" for r in client)
    assert all(r["source"] == "tracepoint" for r in server[:4])
    assert server[4]["source"] in ("inet_diag", "tracepoint+inet_diag")
    assert server[0]["from"] == "LISTEN" and client[0]["local"] != "10.90.0.2:0"
    listen = [r for r in recs if r["kind"] == "state" and r["host"] == "thinkpad" and r["remote"] == "0.0.0.0:*"]
    assert [(r["to"], r["source"]) for r in listen][:1] == [("LISTEN", "tracepoint")]
    assert not [r for r in recs if r["kind"] == "state" and r["host"] == "raspberrypi" and r["remote"] == "0.0.0.0:*"]

    # every transition of the kernel's record (but the swap for a timewait socket) is in the trace
    for host, ip in (("thinkpad", "10.90.0.1"), ("raspberrypi", "10.90.0.2")):
        sks = {e["sk"] for e in kernel[ip] if e["kind"] == "tracepoint" and port in (e["local"], e["remote"])}
        want = [(e["remote"], e["to"]) for e in kernel[ip] if e["kind"] == "tracepoint" and e["sk"] in sks and not (e["to"] == "CLOSED" and e["from"] in ("FIN_WAIT2", "CLOSING"))]
        got = [(r["remote"], r["to"]) for r in conn_states(recs, host, port) if r["source"] != "inet_diag"]
        assert want == got, (host, want, got)
    # ... with the kernel's times: the gaps between transitions are the kernel's to the microsecond
    k = [e for e in kernel["10.90.0.1"] if e["kind"] == "tracepoint" and e["remote"] == port]
    k_gap = (k[1]["t_ns"] - k[0]["t_ns"]) / 1e9
    assert abs((server[1]["t"] - server[0]["t"]) - k_gap) < 2e-6, (server[:2], k[:2])
    sk = next(e["sk"] for e in kernel["10.90.0.2"] if e["kind"] == "tracepoint" and e["local"] == port)
    c = [e for e in kernel["10.90.0.2"] if e["kind"] == "tracepoint" and e["sk"] == sk]
    # (the client's records also pass the controller's clock mapping for a second host, which can
    # move single records by its uncertainty, ~20 us here: checked loosely)
    assert abs((client[1]["t"] - client[0]["t"]) - (c[1]["t_ns"] - c[0]["t_ns"]) / 1e9) < 1e-4

    lab.close()
    assert not ours & instances()


def test_a_probe_killed_with_sigkill_leaves_an_instance_the_next_start_removes(lab, tmp_path):
    lab.start()
    pid = lab.probe_pid("thinkpad")
    old = f"tcplab-thinkpad-{pid}"
    assert old in instances()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert old in instances()  # nobody removed it
    lab.hosts["thinkpad"].run(str(VENV_BIN / "tcplab-probe"), "start", "--config", str(lab.probe_cfgs["thinkpad"]),
                              timeout=30)
    new_pid = lab.probe_pid("thinkpad")
    assert new_pid and new_pid != pid
    deadline = time.monotonic() + 10
    while f"tcplab-thinkpad-{new_pid}" not in instances() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"tcplab-thinkpad-{new_pid}" in instances() and old not in instances()
    # the start-up sweep of a killed probe's leftovers removed it and said so (probe/leftovers.py)
    swept = [line for line in (tmp_path / "hosts" / "thinkpad" / "probe.log").read_text().splitlines()
             if '"leftovers_swept"' in line]
    assert len(swept) == 1 and old in swept[0]


def test_without_tracefs_the_probe_says_so_once_and_runs_on_inet_diag(lab, tmp_path, monkeypatch):
    monkeypatch.setenv("TCPLAB_TRACEFS", str(tmp_path / "no-tracefs"))  # inherited by the probes
    lab.start()
    assert not own_instances(lab) & instances()
    recs = run_seed(lab, tmp_path)
    server = conn_states(recs, "thinkpad", client_port(recs))
    assert {r["source"] for r in server} == {"inet_diag"}
    assert [r["to"] for r in server][-1] == "TIME_WAIT" and "ESTABLISHED" in [r["to"] for r in server]
    for host in ("thinkpad", "raspberrypi"):
        assert (tmp_path / "hosts" / host / "probe.log").read_text().count("tracefs_unavailable") == 1


def test_a_missing_tracefs_is_a_typed_error(tmp_path):
    with pytest.raises(KStatesError):
        KernelStates("x", 9090, "10.90.0.1", root=tmp_path / "none").open()


def test_ring_buffer_pages_decode_deltas_extends_and_long_records():
    def hdr(type_len, delta):
        return struct.pack("<I", (delta << 5) | type_len)
    rec = b"\x01\x00" + b"\x00" * 6  # 8 bytes
    body = (hdr(2, 10) + rec                                   # small record, +10 ns
            + hdr(30, 5) + struct.pack("<I", 1)                # time extend: +(1 << 27) + 5
            + hdr(0, 3) + struct.pack("<I", 12) + rec          # long record (length counts itself), +3
            + hdr(29, 1) + struct.pack("<I", 8) + b"\0" * 4  # discarded (8 bytes, counted from the word itself): no time
            + hdr(2, 2) + rec)
    page = struct.pack("<QQ", 1000, len(body)) + body + b"\x00" * 64
    out, missed = parse_page(page)
    assert [t for t, _ in out] == [1010, 1010 + (1 << 27) + 5 + 3, 1010 + (1 << 27) + 5 + 3 + 2]
    assert all(len(d) == 8 for _, d in out) and not missed


def test_close_while_another_thread_reads_still_removes_the_instance(netns_pair):
    """The daemon's reader thread can be inside poll() when shutdown closes the instance: the
    kernel then answers the rmdir with EBUSY until the poll lets go of its file."""
    import threading

    from tests.nsthread import NetnsThread

    with NetnsThread(netns_pair.a.ns) as ta:
        ks = ta.call(lambda: KernelStates("racer", 9090, netns_pair.a.ip).open())
        name = ks.name
        reader = threading.Thread(target=ks.read, args=(0.3,))
        reader.start()
        time.sleep(0.05)  # the reader is now blocked in poll() on the instance's pipes
        ks.close()
        reader.join()
    assert name not in os.listdir(TRACEFS / "instances")
