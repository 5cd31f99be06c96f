"""The run: its expectation waits (met, met late, unmet at the timeout, only since the step began),
its steps' records, the probes' counters kept out of the trace, and its end (align, trace.jsonl)."""

from __future__ import annotations

import asyncio

import pytest

from controller.clock import ClockEstimate
from controller.run import Run
from controller.scenario import Expectation, Step
from controller.scenario import _expectation as scenario_expectation
from controller.trace import load

LISTEN = Expectation("thinkpad", state="LISTEN")
HELLO = Expectation("raspberrypi", text="hello")


class Probe:
    """A probe's clock that is the controller's (no offset), and its events as the bus hands them in."""

    def __init__(self, run: Run):
        self.run, self.clock = run, ClockEstimate()

    def ns(self, t: float) -> int:
        return self.run.start_ns + round(t * 1e9)

    async def state(self, host: str, t: float, to: str, remote: str = "0.0.0.0:*") -> None:
        await self.run.add_event(host, {"kind": "state", "t_ns": self.ns(t), "local": "0.0.0.0:9090",
                                        "remote": remote, "from": "CLOSED", "to": to, "source": "tracepoint"},
                                 self.clock)

    async def prints(self, host: str, t: float, text: str, stream: str = "stdout") -> None:
        await self.run.add_event(host, {"kind": "console", "t_ns": self.ns(t), "text": text + "\n",
                                        "stream": stream}, self.clock)


@pytest.fixture
def run(tmp_path):
    r = Run(tmp_path / "run", ("thinkpad", "raspberrypi"))
    yield r
    r.close()


def test_expectations_already_met_return_at_once(run):
    async def go():
        probe = Probe(run)
        await probe.state("thinkpad", 0.01, "LISTEN")
        await probe.prints("raspberrypi", 0.02, "hello")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        unmet = await run.wait_for((LISTEN, HELLO), since=0.0, timeout=5.0)
        return unmet, loop.time() - t0
    unmet, took = asyncio.run(go())
    assert unmet == [] and took < 0.5


def test_expectations_met_late_wake_the_wait(run):
    async def go():
        probe = Probe(run)

        async def later():
            await asyncio.sleep(0.1)
            await probe.state("thinkpad", 0.1, "LISTEN")
            await asyncio.sleep(0.1)
            await probe.prints("raspberrypi", 0.2, "hello")
        task = asyncio.create_task(later())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        unmet = await run.wait_for((LISTEN, HELLO), since=0.0, timeout=5.0)
        await task
        return unmet, loop.time() - t0
    unmet, took = asyncio.run(go())
    assert unmet == [] and 0.15 < took < 2.0


def test_at_the_timeout_the_unmet_ones_are_returned_and_observed_says_what_happened(run):
    async def go():
        probe = Probe(run)
        await probe.state("thinkpad", 0.01, "LISTEN")
        await probe.prints("raspberrypi", 0.02, "bye")
        await probe.prints("raspberrypi", 0.03, "hello", stream="stderr")   # not stdout: not printed
        return await run.wait_for((LISTEN, HELLO), since=0.0, timeout=0.2)
    assert asyncio.run(go()) == [HELLO]
    assert run.observed("raspberrypi", 0.0) == "raspberrypi: no connection state change; printed 'bye'"


def test_only_what_happened_since_the_step_began_counts(run):
    async def go():
        probe = Probe(run)
        await probe.state("thinkpad", 0.01, "LISTEN")
        await probe.state("thinkpad", 0.02, "SYN_SENT", remote="10.90.0.2:4000")  # not a listener
        early = await run.wait_for((LISTEN,), since=0.5, timeout=0.1)
        await probe.state("thinkpad", 0.6, "LISTEN")
        late = await run.wait_for((LISTEN,), since=0.5, timeout=0.1)
        wrong_socket = await run.wait_for((Expectation("thinkpad", state="SYN_SENT"),), since=0.0, timeout=0.1)
        return early, late, wrong_socket
    early, late, wrong_socket = asyncio.run(go())
    assert early == [LISTEN] and late == [] and wrong_socket == []


def test_steps_counters_and_the_final_trace(run):
    async def go():
        probe = Probe(run)
        step = Step(1, "listen", ("thinkpad",), expect=(LISTEN,))
        start = await run.add_step(step, "start")
        await probe.state("thinkpad", start["t"] + 0.01, "LISTEN")
        await run.add_event("thinkpad", {"kind": "counters", "t_ns": probe.ns(0.02),
                                         "counters": {"statemerge_dropped_foreign": 2, "bad": "x"}}, probe.clock)
        await asyncio.sleep(0.05)
        await run.add_step(step, "failed", error="no")
        return start
    start = asyncio.run(go())
    assert start["kind"] == "step" and start["status"] == "start" and start["target"] == "thinkpad"
    assert run.counters == {"thinkpad": {"statemerge_dropped_foreign": 2}}
    out = run.align({})
    index = run.finish_trace()
    recs = load(run.dir / "trace.jsonl")
    assert recs == index.records and [r["kind"] for r in recs] == ["step", "state", "step"]
    assert recs[-1]["error"] == "no" and out["raspberrypi"]["causal"]["pairs"] == 0
    with pytest.raises(ValueError):
        asyncio.run(run.add_step(Step(2, "close"), "done"))   # not a step status


def test_align_maps_again_with_the_final_fit_and_says_how_far_the_live_times_moved(run):
    live, final = ClockEstimate(), ClockEstimate()
    t0 = run.start_ns
    live.add(t0, t0 + 1_000_000, t0 + 2_000)             # offset about +1 ms, known at arrival
    final.add(t0, t0 + 1_200_000, t0 + 2_000)            # the run's final fit: +1.2 ms

    async def go():
        await run.add_event("raspberrypi", {"kind": "console", "t_ns": t0 + 501_000_000, "text": "x",
                                            "stream": "stdout"}, live)
    asyncio.run(go())
    (rec,) = run.trace.records
    assert rec["t"] == pytest.approx(0.5, abs=2e-6)      # what the live view shows
    out = run.align({"raspberrypi": final})
    assert rec["t"] == pytest.approx(0.4998, abs=2e-6)
    assert out["raspberrypi"]["realigned_max_s"] == pytest.approx(200e-6, abs=2e-6)


def test_a_probes_deadman_and_sweep_are_trace_records(run):
    """What a probe's dead-man switch and start-up sweep said (probe/deadman.py, probe/leftovers.py)."""
    async def go():
        probe = Probe(run)
        await run.add_event("thinkpad", {"kind": "sweep", "t_ns": probe.ns(0.01),
                                         "removed": ["iptables mangle chain TCPLAB-SHAPE-9090", "nc pid 7"]}, probe.clock)
        await run.add_event("raspberrypi", {"kind": "deadman", "t_ns": probe.ns(0.02), "silent_s": 5.1,
                                            "cleared": ["shaping netem on eth0 port 9090"]}, probe.clock)
    asyncio.run(go())
    run.align({})
    run.finish_trace()
    recs = load(run.dir / "trace.jsonl")
    assert [(r["kind"], r["host"]) for r in recs] == [("sweep", "thinkpad"), ("deadman", "raspberrypi")]
    assert recs[0]["removed"] == ["iptables mangle chain TCPLAB-SHAPE-9090", "nc pid 7"]
    assert recs[1]["silent_s"] == 5.1 and recs[1]["cleared"] == ["shaping netem on eth0 port 9090"]


def test_a_counted_expectation_needs_that_many_distinct_connections_or_lines(run):
    established = Expectation("thinkpad", state="ESTABLISHED", count=3)
    bye = Expectation("thinkpad", text="Bye", count=3)

    async def go():
        probe = Probe(run)
        for port in (4000, 4001):
            await probe.state("thinkpad", 0.01, "ESTABLISHED", remote=f"10.90.0.2:{port}")
        await probe.state("thinkpad", 0.02, "ESTABLISHED", remote="10.90.0.2:4001")  # the same one again
        for _ in range(2):
            await probe.prints("thinkpad", 0.03, "Bye")
        before = await run.wait_for((established, bye), since=0.0, timeout=0.1)
        await probe.state("thinkpad", 0.04, "ESTABLISHED", remote="10.90.0.2:4002")
        await probe.prints("thinkpad", 0.05, "Bye")
        after = await run.wait_for((established, bye), since=0.0, timeout=0.1)
        return before, after
    assert asyncio.run(go()) == ([established, bye], [])
    assert str(established) == "thinkpad ESTABLISHED x3" and str(bye) == "thinkpad prints Bye x3"


def test_observed_counts_each_transition_and_stays_short_with_many_connections(run):
    async def go():
        probe = Probe(run)
        for port in range(4000, 4200):
            await probe.state("raspberrypi", 0.01, "SYN_SENT", remote=f"10.90.0.1:{port}")
        for _ in range(50):
            await probe.prints("raspberrypi", 0.02, "Hello")
    asyncio.run(go())
    said = run.observed("raspberrypi", 0.0)
    assert said == "raspberrypi: states CLOSED->SYN_SENT x200; printed 50 lines, the last 'Hello', 'Hello', 'Hello'"


def test_a_finished_run_releases_its_records(run):
    async def go():
        probe = Probe(run)
        await probe.state("thinkpad", 0.01, "LISTEN")
    asyncio.run(go())
    run.finish_trace()
    assert len(load(run.dir / "trace.jsonl")) == 1
    run.release()
    assert run.trace.records == [] and run.index is None and run.states_since("thinkpad", 0.0) == []


def frame(flags: str, seq: int, payload: bytes = b"", sport: int = 40000, dport: int = 9090) -> bytes:
    from scapy.layers.inet import IP, TCP
    from scapy.layers.l2 import Ether
    return bytes(Ether() / IP(src="10.90.0.2", dst="10.90.0.1") / TCP(sport=sport, dport=dport, flags=flags, seq=seq)
                 / payload)


async def segment(probe: Probe, host: str, t: float, flags: list[str], seq: int, payload: bytes = b"",
                  direction: str = "out") -> None:
    raw = frame("".join(f[0] for f in flags), seq, payload)
    await probe.run.add_event(host, {"kind": "packet", "t_ns": probe.ns(t), "wall_ns": 1_000_000_000 + probe.ns(t),
                                     "dir": direction, "src": "10.90.0.2:40000", "dst": "10.90.0.1:9090",
                                     "flags": flags, "seq": seq, "ack": 0, "len": len(payload),
                                     "payload": payload.decode(), "win": 8192, "frame_len": len(raw), "raw": raw,
                                     "linktype": 1}, probe.clock)


def test_a_packet_expectation_counts_the_segments_and_their_analysis_as_they_arrive(run):
    from controller.scenario import _expectation
    retrans = _expectation("raspberrypi sends SYN retransmission x2", "f")
    hello = _expectation('raspberrypi sends data "Hello"', "f")
    wrong_way = _expectation("raspberrypi receives SYN", "f")

    async def go():
        probe = Probe(run)
        await segment(probe, "raspberrypi", 0.0, ["SYN"], 1000)
        first = await run.wait_for((retrans,), since=0.0, timeout=0.05)
        await segment(probe, "raspberrypi", 1.0, ["SYN"], 1000)  # the same SYN again: Wireshark's retransmission
        second = await run.wait_for((retrans,), since=0.0, timeout=0.05)
        await segment(probe, "raspberrypi", 3.0, ["SYN"], 1000)
        third = await run.wait_for((retrans, wrong_way), since=0.0, timeout=0.05)
        await segment(probe, "raspberrypi", 3.5, ["PSH", "ACK"], 1001, b"Hello\n")
        data = await run.wait_for((hello,), since=0.0, timeout=0.05)
        return first, second, third, data
    first, second, third, data = asyncio.run(go())
    assert first == [retrans] and second == [retrans] and third == [wrong_way] and data == []
    # for a failed step: the expectation against what was seen, with the records it looked at
    told = run.explain(retrans, 0.0)
    assert told["expected"] == "raspberrypi sends SYN retransmission x2"
    assert told["observed"] == "2 of 2 among 4 segments sent"
    assert told["records"][0].startswith("  t=0.000 s 10.90.0.2:40000 > 10.90.0.1:9090 [SYN] seq=1000 len=0")
    assert told["records"][1].startswith("* t=1.000 s") and told["records"][1].endswith("(retransmission)")
    assert run.explain(wrong_way, 0.0) == {"expected": "raspberrypi receives SYN",
                                           "observed": "0 of 1 among 0 segments received", "records": []}
    assert run.explain(HELLO, 0.0)["observed"] == "0 of 1 lines printed"


def test_a_timed_expectation_holds_only_at_its_time_and_a_missed_one_fails_at_once(run):
    from controller.scenario import _expectation
    on_time = _expectation("thinkpad LISTEN at 0.3", "f")
    loose = _expectation("thinkpad LISTEN at 0.5±0.25", "f")
    early = _expectation("thinkpad LISTEN at 1.5", "f")

    async def go():
        probe = Probe(run)
        await probe.state("thinkpad", 0.3, "LISTEN")
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        unmet = await run.wait_for((on_time, loose, early), since=0.0, timeout=5.0)
        return unmet, loop.time() - t0
    unmet, took = asyncio.run(go())
    assert unmet == [early] and took < 1.0  # it came 1.2 s too early: no need to wait for the timeout
    assert run.tolerance(on_time) == pytest.approx(0.05) and run.tolerance(early) == pytest.approx(0.075)
    told = run.explain(early, 0.0)
    assert told["observed"] == ("1 of 1 reached LISTEN; the first at 0.300 s after the step began, "
                                "expected at 1.5 ± 0.075 s")
    run.jitter_s = 0.1  # the scenario's jitter widens the default
    assert run.tolerance(on_time) == pytest.approx(0.25)


def test_a_time_in_delays_is_of_the_runs_delay(run):
    twice = scenario_expectation("thinkpad LISTEN at 2d", "test")

    async def go():
        probe = Probe(run)
        await probe.state("thinkpad", 0.62, "LISTEN")
        run.delay_s = 0.3
        at_short = run.verdict(twice, 0.0)
        run.delay_s = 3.0
        return at_short, run.verdict(twice, 0.0), run.explain(twice, 0.0)["observed"]
    at_short, at_long, observed = asyncio.run(go())
    assert at_short is True and at_long is False  # 0.62 s is two delays of 0.3 s, not of 3 s
    assert "expected at 6 (2 x the delay of 3 s) ± 0.3 s" in observed
