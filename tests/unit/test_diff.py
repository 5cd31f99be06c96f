"""tcplab diff on the real seed traces (0.3 s and 3 s of delay) and on traces derived from them."""

import json
import re
import subprocess
import sys

import pytest

from controller import cli
from controller.diff import digest
from controller.diff.compare import compare
from controller.film import model
from controller.trace import load
from tests.conftest import DATA

FAST, SLOW = DATA / "seed-0.3s.trace.jsonl", DATA / "seed-3s.trace.jsonl"


def write_run(tmp_path, name: str, records: list[dict]):
    d = tmp_path / name
    d.mkdir()
    with open(d / "trace.jsonl", "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return d


def diff(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["diff", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out, out.err


def as_json(capsys, a, b, *more) -> tuple[int, dict]:
    code, out, _ = diff(capsys, a, b, "--json", *more)
    return code, json.loads(out)


def rows(report: dict, kind: str) -> list[dict]:
    return [r for s in report["steps"] for r in s["rows"] if r["kind"] == kind]


# --- the two real runs ----------------------------------------------------------------------------
def test_two_delays_agree_on_every_state_and_differ_in_time(capsys):
    code, report = as_json(capsys, FAST, SLOW)
    assert code == 1 and report["same"] is False
    states = rows(report, "state")
    assert len(states) == 13 and all(r["a"] and r["b"] for r in states)  # the same sequence on both sides
    assert {r["what"] for r in states} == {"same", "time"}
    syn_recv = next(r for r in states if r["a"]["to"] == "SYN_RECEIVED")
    assert syn_recv["a"]["t"] == pytest.approx(0.312, abs=0.01) and syn_recv["b"]["t"] == pytest.approx(3.014, abs=0.01)
    assert syn_recv["dt"] == pytest.approx(2.70, abs=0.01)
    # the 3 s run's SYN and SYN+ACK retransmissions and the kernel's retransmit events are B's alone
    only_b = [r for s in report["steps"] for r in s["rows"] if r["what"] == "only_b"]
    assert {r["kind"] for r in only_b} == {"segment", "kernel"}
    assert sum(1 for r in only_b if "retransmission" in r["b"].get("analysis", [])) == 4
    assert sum(1 for r in only_b if r["kind"] == "kernel") == 8
    assert not [r for s in report["steps"] for r in s["rows"] if r["what"] == "only_a"]
    shapers = [r for r in rows(report, "shaper") if r["what"] == "changed"]
    assert [(r["a"]["delay_ms"], r["b"]["delay_ms"]) for r in shapers] == [(300, 3000), (300, 3000)]


def test_a_run_agrees_with_itself(capsys, tmp_path):
    code, out, err = diff(capsys, FAST, FAST)
    assert (code, err) == (0, "") and out.rstrip().endswith("no differences")
    assert "the same: 1 item (1 state)" in out


def test_the_text_names_each_step_and_difference(capsys):
    code, out, _ = diff(capsys, FAST, SLOW)
    assert code == 1
    assert "Step 3 connect on client: A ok, B ok" in out
    line = next(x for x in out.splitlines() if "LISTEN → SYN_RECEIVED" in x)
    assert line.lstrip().startswith("! state    server") and line.endswith("B +2.702 s")
    assert re.search(r"\[SYN\] Seq=0 Ack=0 Len=0 \(retransmission\) +\+6\.058→\+6\.058  only in B", out)
    assert out.rstrip().splitlines()[-1] == "37 differences: 14 only in B, 2 changed, 21 time"
    code, everything, _ = diff(capsys, FAST, SLOW, "--all")
    assert "  state    client         CLOSED → SYN_SENT" in everything  # an agreeing row, shown with --all


# --- derived traces: each kind of difference --------------------------------------------------------
def derived(tmp_path, change) -> tuple:
    records = load(SLOW)
    changed = change([dict(r) for r in records])
    return write_run(tmp_path, "a", records), write_run(tmp_path, "b", changed)


def test_other_addresses_ports_and_host_names_are_the_same_run(capsys, tmp_path):
    names = {"thinkpad": "vm-one", "raspberrypi": "vm-two"}

    def move(records):
        text = json.dumps(records).replace("10.90.0.1", "192.168.56.11").replace("10.90.0.2", "192.168.56.12")
        text = text.replace(":53528", ":41000").replace(":9090", ":9191")
        for old, new in names.items():
            text = text.replace(old, new)
        return json.loads(text)
    a, b = derived(tmp_path, move)
    code, out, _ = diff(capsys, a, b)
    assert code == 0, out
    assert "server vm-one, client vm-two" in out


def test_a_dropped_retransmission_is_reported(capsys, tmp_path):
    def drop(records):
        return [r for r in records if not (r["kind"] == "packet" and r["flags"] == ["SYN"]
                                           and "retransmission" in r["analysis"])]
    a, b = derived(tmp_path, drop)
    code, report = as_json(capsys, a, b)
    assert code == 1 and report["counts"] == {"only_a": 1}
    (d,) = report["differences"]
    assert (d["step"], d["kind"], d["role"], d["what"]) == (3, "segment", "client", "only_a")
    assert d["a"]["direction"] == "client→server" and d["a"]["analysis"] == ["retransmission"]
    assert d["text"] == "step 3: segment client→server [SYN] Seq=0 Ack=0 Len=0 (retransmission) at " \
                        "+6.058→+6.058 s only in A"


def test_a_changed_state_and_a_missing_kernel_event_are_reported(capsys, tmp_path):
    def change(records):
        st = next(r for r in records if r["kind"] == "state" and r["to"] == "FIN_WAIT2")
        st["to"] = "CLOSING"
        first = next(i for i, r in enumerate(records) if r["kind"] == "kernel" and r["event"] == "retransmit_synack")
        return records[:first] + records[first + 1:]
    a, b = derived(tmp_path, change)
    code, report = as_json(capsys, a, b)
    assert code == 1
    found = {(d["step"], d["kind"], d["role"], d["what"]) for d in report["differences"]}
    assert found == {(6, "state", "server", "only_a"), (6, "state", "server", "only_b"),
                     (3, "kernel", "server", "only_a")}
    texts = [d["text"] for d in report["differences"]]
    assert "step 6: state server FIN_WAIT1 → CLOSING at +6.045 s only in B" in texts


def test_other_analysis_of_the_same_segment_is_a_change(capsys, tmp_path):
    def no_dup_ack(records):
        for r in records:
            if r["kind"] == "packet" and "duplicate_ack" in r["analysis"]:
                r["analysis"] = []
        return records
    a, b = derived(tmp_path, no_dup_ack)
    code, report = as_json(capsys, a, b)
    assert code == 1 and report["counts"] == {"changed": 2}
    assert all(d["a"]["analysis"] == ["duplicate_ack"] and d["b"]["analysis"] == [] for d in report["differences"])


def test_times_are_compared_from_the_step_start_with_a_tolerance(capsys, tmp_path):
    def later(records):
        step7 = next(i for i, r in enumerate(records) if r["kind"] == "step" and r["index"] == 7)
        for r in records[step7:]:  # a whole step later: nothing within it moves relative to its start
            r["t"] += 5.0
        st = next(r for r in records if r["kind"] == "state" and r["to"] == "LAST_ACK")
        st["t"] += 0.05  # within the default tolerance of 0.1 s
        return records
    a, b = derived(tmp_path, later)
    assert diff(capsys, a, b)[0] == 0
    code, report = as_json(capsys, a, b, "--time-tolerance", "0.01")
    assert code == 1 and report["counts"] == {"time": 1} and report["tolerance_s"] == 0.01
    (d,) = report["differences"]
    assert (d["step"], d["kind"], d["role"], d["b"]["to"]) == (7, "state", "client", "LAST_ACK")
    assert d["dt"] == pytest.approx(0.05, abs=1e-6)


def test_a_failed_step_is_a_step_difference(capsys, tmp_path):
    def fail(records):
        end = next(r for r in records if r["kind"] == "step" and r["index"] == 8 and r["status"] == "ok")
        end.update(status="failed", error="step 8 (wait on -): after 90 s still waiting for thinkpad CLOSED")
        return records
    a, b = derived(tmp_path, fail)
    code, report = as_json(capsys, a, b)
    assert code == 1 and report["counts"] == {"step": 1}
    assert report["differences"][0]["text"] == "step 8: A wait on -: ok, B wait on -: failed"
    code, out, _ = diff(capsys, a, b)
    assert "! Step 8 wait on -: A ok, B failed" in out and "B's error: step 8 (wait on -)" in out


def test_the_json_names_every_difference(capsys):
    code, report = as_json(capsys, FAST, SLOW)
    assert sum(report["counts"].values()) == len(report["differences"]) == 37
    for d in report["differences"]:
        assert d["what"] in ("only_a", "only_b", "changed", "time", "step") and d["kind"] and d["text"]
        assert d["text"].startswith(f"step {d['step']}: ")
    assert report["a"]["hosts"] == {"server": "thinkpad", "client": "raspberrypi"}


def test_digest_counts_each_segment_once():
    records = load(SLOW)
    d = digest.digest(records, model.build(records))
    segments = [x for s in d.steps for x in s.items if x.kind == "segment"]
    assert len(segments) == sum(1 for r in records if r["kind"] == "packet") // 2
    assert all(x.data["captured_by"] == "both" and x.t2 is not None for x in segments)
    assert compare(d, d, 0.0).same


# --- bad input --------------------------------------------------------------------------------------
def test_bad_input_exits_2_with_one_line_naming_the_file(capsys, tmp_path):
    code, out, err = diff(capsys, tmp_path / "nope", FAST)
    assert (code, out) == (2, "") and err == f"tcplab diff: {tmp_path / 'nope'} does not exist\n"
    empty = tmp_path / "empty-run"
    empty.mkdir()
    code, _, err = diff(capsys, FAST, empty)
    assert code == 2 and err == f"tcplab diff: {empty} has no trace.jsonl (is it a run directory?)\n"
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "trace.jsonl").write_text('{"t": 0, "host": "x", "kind": "step"}\nnot json\n')
    code, _, err = diff(capsys, junk, FAST)
    assert code == 2 and err.count("\n") == 1 and f"{junk / 'trace.jsonl'} is not a trace: line 2" in err
    one_host = write_run(tmp_path, "one-host", [r for r in load(FAST) if r["host"] in ("controller", "thinkpad")])
    code, _, err = diff(capsys, one_host, FAST)
    assert code == 2 and err.count("\n") == 1 and str(one_host) in err and "fewer than two hosts" in err


def test_the_command_line_exit_codes(tmp_path):
    def run(*argv):
        return subprocess.run([sys.executable, "-m", "controller.cli", "diff", *map(str, argv)],
                              capture_output=True, text=True, timeout=60)
    assert run(FAST, FAST).returncode == 0
    assert run(FAST, SLOW).returncode == 1
    bad = run(FAST, SLOW, "--time-tolerance", "-1")
    assert bad.returncode == 2 and "--time-tolerance" in bad.stderr
    assert run(FAST).returncode == 2


def test_a_run_cut_short_has_its_missing_steps_reported(capsys, tmp_path):
    cut = write_run(tmp_path, "cut", load(SLOW)[:80])  # ends inside step 5 (a crashed controller's trace)
    code, out, _ = diff(capsys, SLOW, cut)
    assert code == 1
    assert "! Step 5 send on client: A ok, B not finished" in out and "! Step 9 shape on server,client: A ok, B absent" in out
    code, report = as_json(capsys, SLOW, cut)
    assert report["counts"]["step"] == 5 and "only_b" not in report["counts"]
