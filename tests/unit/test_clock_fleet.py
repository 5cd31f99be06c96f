import pytest

from controller.clock import ClockEstimate
from controller.fleet import Fleet
from tests.records import packet


def test_min_rtt_sample_wins_and_maps_times():
    c = ClockEstimate()
    true_offset = 5_000_000_000  # the probe's clock reads 5 s more
    # (t0, one-way out, one-way back): the 2nd sample is symmetric and fastest
    for t0, out, back in ((0, 3_000_000, 1_000_000), (10_000_000, 100_000, 100_000), (20_000_000, 50_000, 900_000)):
        c.add(t0, t0 + out + true_offset, t0 + out + back)
    # the offset lies in every exchange's [T3 - T4, T2 - T1]: the 2nd (100 us back) bounds it
    # from below at -100 us, the 3rd (50 us out) from above at +50 us: the estimate is the
    # centre, -25 us, known to +-75 us
    assert c.rtt_ns == 200_000 and c.uncertainty_ns == 75_000
    assert c.offset_ns == true_offset - 25_000
    assert c.to_controller(true_offset + 42) == 42 + 25_000
    c.add(100, 0, 50)  # a negative round trip is ignored
    assert c.samples == 3


def test_events_are_acknowledged_contiguously_and_duplicates_dropped():
    fleet = Fleet()
    link = fleet.hello("thinkpad", {"pid": 1, "lab_ip": "10.90.0.1"})
    assert link.receive(1) and link.upto == 1
    assert link.receive(3) and link.upto == 1          # 2 is missing: no ack past the gap
    assert not link.receive(3) and link.duplicates == 1
    assert link.receive(2) and link.upto == 3          # the resend fills the gap
    assert not link.receive(2)
    link.give_up_below(6)                               # the probe gave up 4 and 5
    assert link.upto == 5 and link.receive(6) and link.upto == 6


def test_a_restarted_probe_starts_counting_again():
    fleet = Fleet()
    fleet.hello("thinkpad", {"pid": 1, "session": "1" * 32}).receive(1)
    assert fleet.hello("thinkpad", {"pid": 1, "session": "1" * 32}).upto == 1   # same process says hello again
    assert fleet.hello("thinkpad", {"pid": 1, "session": "2" * 32}).upto == 0   # a new process, the same pid
    assert [h for h in ["thinkpad", "raspberrypi"] if not fleet.connected(h)] == ["raspberrypi"]


def test_causal_shift_moves_a_clock_only_as_far_as_the_packets_demand():
    from controller.clock import causal_shift

    a, b = "10.90.0.1:9090", "10.90.0.2:4000"
    recs = [packet(1.000, "raspberrypi", "out", b, ["SYN"]), packet(0.990, "thinkpad", "in", b, ["SYN"]),
            packet(1.500, "thinkpad", "out", a, ["SYN", "ACK"]), packet(1.530, "raspberrypi", "in", a, ["SYN", "ACK"])]
    fix = causal_shift(recs, "thinkpad", "raspberrypi")
    # raspberrypi's SYN left at 1.000 but arrived at 0.990: raspberrypi must move back >= 10 ms,
    # and the SYN-ACK (1.500 -> 1.530) allows at most 30 ms back
    assert fix["lo_s"] == pytest.approx(-0.03) and fix["hi_s"] == pytest.approx(-0.01)
    assert fix["shift_s"] == pytest.approx(-0.01)
    assert causal_shift(recs[2:], "thinkpad", "raspberrypi")["shift_s"] == 0.0  # consistent: untouched
