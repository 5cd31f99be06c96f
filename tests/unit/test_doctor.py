"""The doctor's verdict (probe/doctor.py), its table and exit codes (controller/doctor*.py), from a real
report: tests/data/doctor/netns-thinkpad.json is what `tcplab doctor --json` printed for the embedded lab's
thinkpad on this machine (kernel 6.18 without sch_prio/sch_netem). Other kernels are that report changed
in the one place that differs."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

from controller import doctor
from controller.doctor_table import render
from controller.readiness import cannot_shape
from controller.scenario import parse
from probe import doctor as host_doctor
from probe.hostinfo import parse_chrony, parse_timedatectl

DATA = Path(__file__).resolve().parents[1] / "data" / "doctor"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def report() -> dict:
    return json.loads((DATA / "netns-thinkpad.json").read_text())


def with_netem(k: dict) -> dict:
    k = copy.deepcopy(k)
    for kind in ("prio", "netem", "u32"):
        k["tc"][kind] = {"ok": True, "detail": ""}
    k["tc"]["layout"] = True
    return k


def test_this_machines_kernel_shapes_with_nfqueue(report):
    v = host_doctor.verdict(report["kernel"], [], report["clock"])
    assert v["can_run"] and v["backend"] == "nfqueue" and v["backend_tested"]
    assert "Specified qdisc kind is unknown" in v["why_not"]["netem"]
    assert v["observers"][0] == "tracefs"


def test_a_kernel_with_the_seeds_layout_shapes_with_netem(report):
    v = host_doctor.verdict(with_netem(report["kernel"]), [], report["clock"])
    assert v["backend"] == "netem" and v["can_run"]


def test_an_arm_kernel_without_netem_cannot_run_the_lab(report):
    k = dict(report["kernel"], machine="armv7l")
    v = host_doctor.verdict(k, [], report["clock"])
    assert not v["can_run"] and v["backend"] is None
    assert "fnfqueue has no wheel for armv7l" in v["problems"][0]
    # the same Pi with netem is fine
    assert host_doctor.verdict(with_netem(k), [], report["clock"])["backend"] == "netem"


def test_without_the_nfqueue_target_nothing_can_shape(report):
    k = copy.deepcopy(report["kernel"])
    k["nfqueue_rule"] = {"tried": True, "ok": False, "detail": "iptables: No chain/target/match by that name."}
    v = host_doctor.verdict(k, [], report["clock"])
    assert v["backend"] is None and "No chain/target/match" in v["why_not"]["nfqueue"]


def test_before_provisioning_the_module_files_answer_for_a_missing_tc(report):
    k = copy.deepcopy(report["kernel"])
    k["tc"] = {"tried": False, "detail": "tc not installed (iproute2)"}
    k["modules"].update(prio="loadable", netem="loadable", u32="builtin")
    assert host_doctor.shaping(k, tools_required=False)["backend"] == "netem"
    # the probe shapes through netlink, not tc: the module files answer for it too
    assert host_doctor.shaping(k, tools_required=True)["backend"] == "netem"


def test_the_probe_needs_iptables_now_the_doctor_does_not(report):
    k = copy.deepcopy(report["kernel"])
    k["nfqueue_rule"] = {"tried": False, "ok": None, "detail": "iptables not installed"}
    k["iptables"] = None
    assert host_doctor.shaping(k, tools_required=False)["backend"] == "nfqueue"  # the target is registered
    now = host_doctor.shaping(k, tools_required=True)
    assert now["backend"] is None and now["why_not"]["nfqueue"] == "NFQUEUE rule: iptables not installed"


def test_missing_packages_and_an_unsynchronised_clock_are_warnings(report):
    v = host_doctor.verdict(report["kernel"], ["tcpdump"], {"synchronised": False})
    assert v["can_run"]
    assert any("tcpdump" in w for w in v["warnings"]) and any("clock" in w for w in v["warnings"])


def test_no_inet_diag_means_the_host_cannot_run_the_lab(report):
    k = dict(report["kernel"], inet_diag={"ok": False, "detail": "Operation not supported"})
    assert not host_doctor.verdict(k, [], report["clock"])["can_run"]


def test_the_table_has_a_column_per_host_and_every_tracepoints_fields(report):
    text = render({"thinkpad": report, "raspberrypi": {"error": "unreachable: connection refused"}})
    header = text.splitlines()[0]
    assert header.split() == ["host", "raspberrypi", "thinkpad"]
    assert "nfqueue" in text and "UNKNOWN" in text and "raspberrypi: problem: unreachable" in text
    assert "tcp/tcp_retransmit_skb: skbaddr skaddr state sport dport family saddr daddr saddr_v6 daddr_v6 err" in text


def test_exit_codes(report):
    cannot = copy.deepcopy(report)
    cannot["verdict"]["can_run"] = False
    assert doctor.exit_code({"a": report, "b": report}) == 0
    assert doctor.exit_code({"a": report, "b": cannot}) == 1
    assert doctor.exit_code({"a": cannot, "b": {"error": "unreachable"}}) == 3


def test_clock_answers_of_timedatectl_and_chrony():
    assert parse_timedatectl("Timezone=UTC\nNTP=yes\nNTPSynchronized=no\n") == {"ntp": True, "synchronised": False}
    tracking = "Reference ID    : 00000000 ()\nStratum         : 0\nLeap status     : Not synchronised\n"
    assert parse_chrony(tracking)["synchronised"] is False
    assert parse_chrony(tracking.replace("Not synchronised", "Normal"))["synchronised"] is True


@pytest.mark.parametrize("argv,message", [
    (["-i", "inventory/none.yml"], "no inventory file inventory/none.yml"),
    (["--frobnicate"], "unrecognized arguments"),
])
def test_bad_input_is_exit_2_with_one_line(argv, message):
    r = subprocess.run([sys.executable, "-m", "controller.cli", "doctor", *argv], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and message in r.stderr


def test_an_inventory_without_lab_hosts_is_bad_input(tmp_path):
    inv = tmp_path / "inv.yml"
    inv.write_text("all:\n  hosts:\n    localhost:\n      ansible_connection: local\n")
    r = subprocess.run([sys.executable, "-m", "controller.cli", "doctor", "-i", str(inv)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "has no host in group lab" in r.stderr


def test_the_controller_refuses_a_scenario_that_shapes_a_host_that_cannot():
    scn = parse({"name": "s", "steps": [{"action": "shape", "host": ["a", "b"]},
                                        {"action": "listen", "host": "c"}]}, source="s")
    fine = {"shaping": {"backend": "nfqueue", "reason": "netem: prio unknown"}}
    cannot = {"shaping": {"backend": None, "reason": "nfqueue: NFQUEUE rule: iptables not installed"}}
    assert cannot_shape(scn, {"a": fine, "b": fine, "c": cannot}) is None  # c is never shaped
    assert cannot_shape(scn, {"a": fine, "b": cannot}) == \
        "scenario s shapes a host that cannot: b cannot shape (nfqueue: NFQUEUE rule: iptables not installed)"
    assert cannot_shape(scn, {"a": {}, "b": {"pid": 1}}) is None  # older probes say nothing: let through


def test_in_a_sandbox_without_namespaces_the_probe_trusts_the_kernels_own_lists(report):
    """systemd's RestrictNamespaces= (the probe's unit) refuses unshare: nothing is tried, and the
    registered NFQUEUE target with iptables on PATH is enough."""
    k = copy.deepcopy(report["kernel"])
    why = "no throwaway namespace (unshare: unshare failed: Operation not permitted)"
    k["tc"] = {"tried": False, "detail": why}
    k["nfqueue_rule"] = {"tried": False, "ok": None, "detail": why}
    k["queue_bind"] = {"ok": None, "detail": why}
    k["iptables"] = "/usr/sbin/iptables"
    assert host_doctor.shaping(k, tools_required=True)["backend"] == "nfqueue"
    k["modules"].update(prio="loadable", netem="loadable", u32="loaded")
    assert host_doctor.shaping(k, tools_required=True)["backend"] == "netem"


def test_the_configured_backend_is_the_one_answered_for(report):
    """A probe with shaper_backend netem on a kernel without netem cannot shape (the Shaper will not
    fall back), and one with nfqueue answers for the delay line even where netem would work."""
    k = copy.deepcopy(report["kernel"])  # this machine's: no netem, the NFQUEUE fallback works
    assert host_doctor.shaping(k, tools_required=True)["backend"] == "nfqueue"
    forced = host_doctor.shaping(k, tools_required=True, choice="netem")
    assert forced["backend"] is None and set(forced["why_not"]) == {"netem"}
    k["modules"].update(prio="loadable", netem="loadable", u32="builtin")
    k["tc"] = {"tried": False, "detail": "no throwaway namespace"}
    assert host_doctor.shaping(k, tools_required=True)["backend"] == "netem"
    nfq = host_doctor.shaping(k, tools_required=True, choice="nfqueue")
    assert nfq["backend"] == "nfqueue" and nfq["why_not"] == {"netem": "the configuration asks for nfqueue"}
