"""A Shaper driven over stdin/stdout, run inside a lab namespace by the shaper tests.

Shaping is per network namespace (qdiscs, iptables, nfqueue), so the tests run this
process with ``ip netns exec`` and send it one JSON request per line; it answers one
JSON line each. EOF on stdin clears the shaper and exits; SIGKILL leaves everything.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys

from structlog.testing import capture_logs

from probe.shaper import Shaper, ShaperError, netem, sweep
from probe.shaper.errors import NetemUnavailable
from tcplab import logs
from tcplab.impairment import Impairment


def u32_on_htb(ifname: str, port: int) -> dict:
    """Attach our u32 filter requests to an htb root 1: with class 1:2 and read them back."""
    with netem._ipr() as ipr:
        index = netem._index(ipr, ifname)
        ipr.tc("add", "htb", index=index, handle=netem.PRIO_HANDLE, default=0)
        try:
            ipr.tc("add-class", "htb", index=index, handle=netem.BAND_CLASS, parent=netem.PRIO_HANDLE,
                   rate="1000mbit")
            for req in netem.layout(port, 100):
                if req.kind == "u32":
                    for _ in range(2):  # twice: replace must not duplicate
                        ipr.tc(req.command, req.kind, index=index, **req.args)
            found = netem.read_port_filters(ipr, index)
            count = sum(1 for f in ipr.get_filters(index=index, parent=netem.PRIO_HANDLE)
                        if f.get_attr("TCA_OPTIONS") and f.get_attr("TCA_OPTIONS").get_attr("TCA_U32_SEL"))
        finally:
            ipr.tc("del", index=index, handle=netem.PRIO_HANDLE, parent=0xFFFFFFFF)
    return {"filters": {str(h): list(k) for h, k in found.items()}, "nodes": count}


def handle(shaper: Shaper, req: dict) -> dict:
    op = req["op"]
    if op == "apply":
        with capture_logs() as events:
            backend = shaper.apply(Impairment.from_args(req))
        return {"backend": backend, "accepted": shaper.accepted(),
                "events": [{k: str(v) for k, v in e.items()} for e in events]}
    if op == "clear":
        counters = shaper.clear()
        return {"backend": shaper.backend, "counters": counters}
    if op == "sweep":
        return {"removed": sweep(shaper.ifname, shaper.port)}
    if op == "stats":
        line = shaper._impl.line
        late = sorted(x * 1000 for x in line.lateness)
        return {"counts": dict(line.counts), "held": line.held, "n": len(late),
                "late_ms_median": statistics.median(late) if late else None,
                "late_ms_max": max(late) if late else None}
    if op == "netem_only":
        try:
            netem.NetemBackend(shaper.ifname, shaper.port).apply(Impairment(req["delay_ms"]))
            return {"unavailable": False}
        except NetemUnavailable as e:
            return {"unavailable": True, "message": str(e)}
    if op == "u32_on_htb":
        return u32_on_htb(shaper.ifname, shaper.port)
    raise ValueError(f"unknown op {op}")


def main() -> None:
    ifname, port = sys.argv[1], int(sys.argv[2])
    backend = sys.argv[3] if len(sys.argv) > 3 else "auto"
    logs.configure_cli(logging.DEBUG)  # stdout is ours
    shaper = Shaper(ifname, port, backend=backend)
    try:
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            try:
                reply = handle(shaper, json.loads(line))
            except (ShaperError, ValueError, OSError) as e:
                reply = {"error": type(e).__name__, "message": str(e)}
            print(json.dumps(reply), flush=True)
    finally:
        shaper.clear()


if __name__ == "__main__":
    main()
