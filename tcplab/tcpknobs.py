"""The TCP knobs a run may change on a host (``net.ipv4.tcp_*``, each per network namespace) and the
values each takes: one list for the scenario's check, the wire's and the probe's (probe/sysctls.py)."""

from __future__ import annotations

from tcplab.errors import TcplabError

BIG = 2**31 - 1
# name -> (lo, hi) of each number; tcp_rmem and tcp_wmem take three (min, default, max bytes)
ALLOWED: dict[str, tuple[int, int]] = {
    "tcp_syn_retries": (1, 127), "tcp_synack_retries": (0, 255), "tcp_syn_linear_timeouts": (0, 255),
    "tcp_retries1": (0, 255), "tcp_retries2": (0, 255), "tcp_orphan_retries": (0, 255),
    "tcp_fin_timeout": (1, 3600), "tcp_keepalive_time": (1, 32767), "tcp_keepalive_intvl": (1, 32767),
    "tcp_keepalive_probes": (1, 127), "tcp_sack": (0, 1), "tcp_dsack": (0, 1), "tcp_timestamps": (0, 2),
    "tcp_window_scaling": (0, 1), "tcp_ecn": (0, 2), "tcp_early_retrans": (0, 4), "tcp_frto": (0, 2),
    "tcp_recovery": (0, 7), "tcp_slow_start_after_idle": (0, 1), "tcp_moderate_rcvbuf": (0, 1),
    "tcp_no_metrics_save": (0, 1), "tcp_reordering": (1, 300), "tcp_mtu_probing": (0, 2),
    "tcp_rmem": (1, BIG), "tcp_wmem": (1, BIG),
}
TRIPLES = ("tcp_rmem", "tcp_wmem")


class SysctlError(TcplabError, ValueError):
    pass


def check(name: object, value: object) -> tuple[int, ...]:
    """``value`` for knob ``name`` as the numbers written, or SysctlError naming what is wrong."""
    if name not in ALLOWED:
        raise SysctlError(f"sysctl {name!r} is not one a run may change (one of: {', '.join(sorted(ALLOWED))})")
    lo, hi = ALLOWED[name]  # type: ignore[index]
    want = 3 if name in TRIPLES else 1
    values = value if isinstance(value, list) else [value]
    if len(values) != want or any(isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi
                                  for v in values):
        what = "three whole numbers (min, default, max bytes)" if want == 3 else "a whole number"
        raise SysctlError(f"sysctl {name} must be {what} from {lo} to {hi}, got {value!r}")
    return tuple(values)


