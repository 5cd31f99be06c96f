"""TCP state names as the seed's storyline (and netstat) spells them.

The kernel numbers its states in include/net/tcp_states.h; inet_diag and the
``sock/inet_sock_set_state`` tracepoint report those numbers. The trace uses the names below.
"""

from __future__ import annotations

# kernel number -> trace name
KERNEL = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECEIVED",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSED",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "SYN_RECEIVED",  # TCP_NEW_SYN_RECV: a request socket, what SYN_RECEIVED is since Linux 4.4
}

NAMES = ("CLOSED", "LISTEN", "SYN_SENT", "SYN_RECEIVED", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2",
         "CLOSE_WAIT", "CLOSING", "LAST_ACK", "TIME_WAIT")

# A listening socket's remote address, as inet_diag (and netstat) name it: the trace's ``remote`` of
# a listener's state records, and what the probe's observers write for it.
LISTENER_REMOTE = "0.0.0.0:*"

# netstat -nao spells two of them differently; the netstat panes use netstat's words.
NETSTAT = {"SYN_RECEIVED": "SYN_RECV", "CLOSED": "CLOSE"}

# The tracepoint prints names like TCP_SYN_RECV; accept those too.
_ALIASES = {"SYN_RECV": "SYN_RECEIVED", "NEW_SYN_RECV": "SYN_RECEIVED", "CLOSE": "CLOSED",
            "FIN_WAIT_1": "FIN_WAIT1", "FIN_WAIT_2": "FIN_WAIT2"}

# Bitmask of every state for inet_diag's idiag_states (1 << kernel number).
ALL_STATES_MASK = sum(1 << n for n in KERNEL)


def name(state: int | str) -> str:
    """Map a kernel state number or a kernel/netstat spelling to the trace name."""
    if isinstance(state, int):
        try:
            return KERNEL[state]
        except KeyError:
            raise ValueError(f"unknown kernel TCP state {state}") from None
    s = state.upper()
    if s.startswith("TCP_"):
        s = s[4:]
    s = _ALIASES.get(s, s)
    if s not in NAMES:
        raise ValueError(f"unknown TCP state name {state!r}")
    return s


def netstat_name(trace_name: str) -> str:
    return NETSTAT.get(trace_name, trace_name)
