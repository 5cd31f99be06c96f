"""The clock estimate: NTP's four stamps, drift, the hard bound, and the causal correction."""

import random

import pytest

from controller.clock import ClockEstimate, Exchange, best_per_window, causal_shift, fit
from tests.records import packet

S = 1_000_000_000
US = 1_000


def exchange(c1, offset, drift, out, proc, back):
    """An exchange sent at controller time c1 to a probe whose clock reads offset + drift * c."""
    def probe(c):
        return round(c + offset + drift * c)
    t2 = probe(c1 + out)
    return Exchange(c1, t2, t2 + proc, c1 + out + round(proc / (1 + drift)) + back)


def feed(est, exchanges):
    for ex in exchanges:
        est.add(ex.t1, ex.t3, ex.t4, ex.t2)


def test_the_probes_busy_time_between_its_stamps_is_no_part_of_the_round_trip():
    est = ClockEstimate()
    feed(est, [exchange(10 * S, 5000 * S, 0, 40 * US, 3_000 * US, 40 * US)])  # the probe took 3 ms
    assert est.rtt_ns == 80 * US and est.uncertainty_ns == 40 * US
    assert est.offset_ns == 5000 * S
    est.add(1, 2, 0)  # received before it was sent: ignored
    assert est.samples == 1


def test_an_older_probe_with_one_stamp_still_counts():
    est = ClockEstimate()
    est.add(0, 5000 * S + 50 * US, 100 * US)
    assert est.offset_ns == 5000 * S and est.uncertainty_ns == 50 * US


def test_drift_is_fitted_and_events_are_mapped_at_their_own_time():
    rng = random.Random(3)
    offset, drift = 5000 * S, 20e-6  # 20 ppm: 1.2 ms over the minute
    exchanges = [exchange(c, offset, drift, rng.randint(40, 400) * US, 10 * US, rng.randint(40, 400) * US)
                 for c in range(S, 61 * S, S // 2)]
    est = ClockEstimate()
    feed(est, exchanges)
    f = est.fit()
    assert f.consistent and f.drift == pytest.approx(drift, abs=0.5e-6)
    for c in (S, 30 * S, 60 * S):
        probe_ns = round(c + offset + drift * c)
        assert abs(est.to_controller(probe_ns) - c) <= est.uncertainty_ns + 30 * US
    d = est.as_dict(at_ns=0)
    assert d["drift_ppm"] == pytest.approx(20, abs=0.5) and d["samples"] == len(exchanges)
    assert abs(d["offset_ns"] - offset) < 60 * US and d["at_ns"] == 0


def test_without_drift_the_bound_always_holds_the_truth():
    rng = random.Random(7)
    for trial in range(20):
        est = ClockEstimate()
        feed(est, [exchange(c, -123 * S, 0, rng.randint(20, 2000) * US, rng.randint(1, 500) * US,
                            rng.randint(20, 2000) * US) for c in range(S, 30 * S, S // 3)])
        assert abs(est.offset_ns + 123 * S) <= est.uncertainty_ns
        assert est.fit().drift == pytest.approx(0, abs=10e-6)  # delays jitter by 2 ms over 30 s


def test_no_drift_is_guessed_from_a_short_burst():
    est = ClockEstimate()
    feed(est, [exchange(S + k * 300 * US, 7 * S, 0, (50 + 30 * k) * US, 5 * US, 50 * US) for k in range(8)])
    assert est.fit().drift == 0.0 and est.as_dict()["drift_ppm"] == 0.0


def test_a_stepped_clock_is_reported_inconsistent_with_a_wider_bound():
    est = ClockEstimate()
    feed(est, [exchange(c, 0, 0, 50 * US, 5 * US, 50 * US) for c in range(S, 5 * S, S // 2)])
    feed(est, [exchange(c, 2_000 * US, 0, 50 * US, 5 * US, 50 * US) for c in range(5 * S, 8 * S, S // 2)])
    f = est.fit()
    assert not f.consistent and est.uncertainty_ns > 1_000 * US
    assert est.as_dict()["consistent"] is False


def test_the_best_exchange_of_each_window_is_kept():
    exs = [exchange(c, 0, 0, out * US, 0, 50 * US) for c, out in ((S, 300), (2 * S, 60), (5 * S, 90), (6 * S, 70))]
    assert [ex.t1 for ex in best_per_window(exs)] == [2 * S, 6 * S]
    assert fit(exs).rtt_ns == 110 * US


def test_the_causal_correction_reports_its_bound():
    a, b = "10.90.0.1:9090", "10.90.0.2:4000"
    recs = [packet(1.000, "raspberrypi", "out", b, ["SYN"]), packet(1.0001, "thinkpad", "in", b, ["SYN"]),
            packet(1.500, "thinkpad", "out", a, ["SYN", "ACK"]), packet(1.5003, "raspberrypi", "in", a, ["SYN", "ACK"])]
    fix = causal_shift(recs, "thinkpad", "raspberrypi", bound_s=200e-6)
    # the packets allow a shift in [-300 us, +100 us]; the pings +-200 us: [-200 us, +100 us]
    assert fix["pairs"] == 2 and fix["shift_s"] == 0.0
    assert fix["interval_s"] == pytest.approx([-200e-6, 100e-6])
    assert fix["uncertainty_s"] == pytest.approx(200e-6)
    assert causal_shift(recs[:2], "thinkpad", "raspberrypi")["uncertainty_s"] is None  # one side only
